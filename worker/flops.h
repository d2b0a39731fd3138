/* flops.h: the model FLOPs of training a LLaMA-family model (model.h),
 * counted from its shape once, then per batch.
 *
 * A matrix product [n,k] x [k,m] is 2 n k m FLOPs; nothing else counts
 * (norms, RoPE, softmax, the loss, optimizer updates are left out). Per
 * token, forward:
 *   - every linear layer: 2 in out (q, k, v, o, gate, up, down of each
 *     layer, and the lm_head 2 V C; the embedding lookup is no product);
 *   - attention: Q K^T and P V, 2 products of 2 T C_att each (C_att =
 *     n_heads head_dim), halved because attention is causal: 2 T C_att
 *     per layer;
 *   - adapters: each expert a token runs through, A (2 r a_in) and B
 *     (2 out r), a Res domain expert reading expert 0's output (a_in =
 *     out), and the router (2 rows in).
 * Backward, per product: the gradient of each operand that needs one, at
 * the cost of the forward product: a weight's when it trains, an
 * activation's when it depends on something that trains (autograd's
 * rule). So full-parameter training is 3x the forward; adapter training
 * computes no frozen weight gradient, and the input gradients below the
 * first adapted product are skipped. Experts run densely (top-k keeps k
 * weights, every expert is computed), and a mixture weight multiplies its
 * expert's output (tests/ref/moderef.py's formulation).
 *
 * Not a profiler: it says what the mathematics needs, not what a kernel
 * executed; tests/worker-flops.py checks it against PyTorch's
 * FlopCounterMode on the same computation.
 */
#ifndef MODULA_FLOPS_H
#define MODULA_FLOPS_H

#include "worker/model_config.h"

#define FLOPS_MAX_EXPERTS 65

/* One expert every token runs through, on each adapted linear layer. */
typedef struct flops_expert {
	int rank;
	int reads_h;            /* reads expert e[0]'s output (a Res domain expert) */
	int trains;
} flops_expert_t;

/* The adapters hooked on the model, as one token sees them. */
typedef struct flops_adapter {
	unsigned targets;       /* adapted slots: bit (1 << MODEL_Q) ... */
	int n;                  /* experts in e[] */
	flops_expert_t e[FLOPS_MAX_EXPERTS];
	int router_rows;        /* 0: no router */
	int router_trains;
} flops_adapter_t;

typedef struct flops {
	double token;           /* products per token, forward + backward */
	double attn;            /* attention per token and per position of T */
} flops_t;

/* The counts of a model `c`: `full` trains every base weight (then `ad`
 * must be NULL), else `ad` (NULL: no adapter, nothing trains: forward
 * only). */
void flops_count(flops_t *f, const model_config_t *c, int full, const flops_adapter_t *ad);

/* FLOPs of one forward and backward of `rows` sequences of length `t`. */
double flops_batch(const flops_t *f, long rows, int t);

#endif
