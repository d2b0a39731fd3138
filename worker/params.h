/* params.h: a list of named fp32 tensors with optional gradients.
 *
 * The one view of "what can be trained and saved" that the optimizer,
 * checkpoints and the savers share: the model lists its base weights under
 * their Hugging Face names, adapters list theirs. The list points into
 * memory its owner keeps; it owns only the names. Not an allocator.
 */
#ifndef MODULA_PARAMS_H
#define MODULA_PARAMS_H

#include <stddef.h>
#include <stdint.h>

typedef struct param {
	char *name;
	float *data;
	float *grad;            /* NULL when frozen */
	int ndim;               /* 1 or 2 */
	int64_t shape[2];
	size_t n;               /* elements */
} param_t;

typedef struct params {
	param_t *v;
	int n, cap;
} params_t;

/* Append a tensor (the name is copied). 0, or -1 via err_set(). */
int params_add(params_t *p, const char *name, float *data, float *grad, int ndim,
	       const int64_t *shape);
/* The entry named `name`, or NULL. */
param_t *params_find(const params_t *p, const char *name);
/* Zero every gradient. */
void params_zero_grad(const params_t *p);
/* Total elements of the tensors (with gradients only, when `trainable`). */
size_t params_numel(const params_t *p, int trainable);
/* Free the names and the array; the list is empty afterwards. */
void params_clear(params_t *p);

#endif
