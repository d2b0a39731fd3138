/* adapter.h: the hook an adapter hangs on one linear layer of the model.
 *
 * The model computes y = W0 x (+ b) for each of its linear layers (q, k, v,
 * o, gate, up, down) and, when the layer carries an adapter, lets it add its
 * delta:            forward:  y[N,out] += delta(x[N,in])
 *                   backward: dx[N,in] += J_delta(x)^T dy, parameter grads +=
 * The adapter keeps whatever its backward needs (sized by reserve()), owns
 * its parameters and lists them (params.h) for the optimizer and the
 * savers. LoRA (lora.c) is one kind; a mixture of experts with a router per
 * layer (the MoDULA methods) is another kind behind the same hook, so the
 * model's forward and backward never change when a method is added.
 *
 * Not a module system: no graph, no autograd; one hook per linear layer.
 */
#ifndef MODULA_ADAPTER_H
#define MODULA_ADAPTER_H

#include <stdint.h>

typedef struct adapter adapter_t;

typedef struct adapter_ops {
	const char *kind;
	/* Make room for N rows of activations. 0, or -1 via err_set(). */
	int (*reserve)(adapter_t *a, int n);
	/* y += delta(x). `key` seeds this call's randomness (dropout), the
	 * same key giving the same masks; `train` 0 disables dropout. */
	void (*forward)(adapter_t *a, float *y, const float *x, int n, uint64_t key, int train);
	/* dx += J^T dy (dx may be NULL when nobody needs it); x is the input
	 * given to the matching forward. */
	void (*backward)(adapter_t *a, float *dx, const float *dy, const float *x, int n);
	void (*destroy)(adapter_t *a);
} adapter_ops_t;

struct adapter {
	const adapter_ops_t *ops;
	int in, out;            /* the linear layer's sizes */
	int layer, slot;        /* where it hangs (model.h: MODEL_Q...) */
};

#endif
