/* optim.h: AdamW (Loshchilov & Hutter, PyTorch's torch.optim.AdamW update),
 * the learning-rate schedule (linear warmup, then cosine decay to
 * min_lr_ratio * lr) and gradient clipping by global norm.
 *
 * Works on the trainable entries of a params list (those with a gradient);
 * the moments m and v are kept in the same order, so checkpoints can save
 * and restore them by name. Deterministic: the norm is summed in double, in
 * list order. Not a parameter-group system: one lr and weight decay for all.
 */
#ifndef MODULA_OPTIM_H
#define MODULA_OPTIM_H

#include "worker/params.h"

typedef struct optim_config {
	float lr, min_lr_ratio;
	float beta1, beta2, eps, weight_decay;
	float clip;             /* max global grad norm; 0 disables */
	long warmup, total_steps;
} optim_config_t;

typedef struct optim {
	optim_config_t cfg;
	const params_t *params; /* not owned */
	float **m, **v;         /* per params entry; NULL for frozen ones */
	float *mem;
	long step;              /* updates done */
} optim_t;

/* NULL via err_set(). The moments start at zero, step at 0. */
optim_t *optim_new(const params_t *p, const optim_config_t *c);
void optim_destroy(optim_t **o);

/* The learning rate of update number `step` (0-based). */
float optim_lr(const optim_config_t *c, long step);

/* Global L2 norm of the gradients; scales them down to cfg.clip when it is
 * larger (and clip > 0). Returns the norm before clipping. */
float optim_clip(optim_t *o);

/* One AdamW update at learning rate lr; step++. */
void optim_step(optim_t *o, float lr);

#endif
