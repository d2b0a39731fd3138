/* moe.h: the mixture adapter of the MoDULA methods (../shared/METHOD.md),
 * one per adapted linear layer, behind the model's adapter hook (adapter.h).
 *
 * Experts are LoRA pairs (A [r, a_in], B [out, r], scale alpha/r or
 * alpha/sqrt(r)). Expert 0 is the universal expert `*` (rank 0: none),
 * experts 1..n the domain experts. A router W_R [n_route, in] per layer
 * gives token-level weights s = softmax(W_R x). Per method:
 *   lora           y += B0 A0 x                              (no router)
 *   molora         y += sum_{i=1..n} s_i Bi Ai x             (rows: experts 1..n)
 *   modula-flan    y += sum_{i=0..n} s_i Bi Ai x             (rows: experts 0..n)
 *   modula-res     h = B0 A0 x; y += h + sum_{i=1..n} s_i Bi LeakyReLU(Ai h)
 *   modula-res-nores  the same without "+ h"
 * (scales folded into B). Res domain experts read h: their A is [r, out].
 * molora may keep only the top-k weights of each token (renormalised over
 * the k) and add the MixLoRA/Switch load-balancing loss
 *   aux = aux_weight * n_route * sum_i f_i P_i
 * (f_i the fraction of rows whose top-k holds i, P_i the mean router
 * probability), averaged over the adapted layers, over every row of the
 * batch (padding included).
 *
 * Routing is soft (the router decides) or fixed: the batch's sequences are
 * cut into contiguous segments, each given to one expert with weight 1 and
 * no router, as the stages need (stage 1: expert 0 alone, which for Res is
 * y += h; stage 2: domain expert i, Flan y += Bi Ai x, Res y += h + Bi
 * LeakyReLU(Ai h), nores y += Bi LeakyReLU(Ai h)). Several segments train
 * several domain experts over one pass of the base.
 *
 * Freezing is per expert and for the routers: a frozen tensor gets no
 * weight gradient computed, but gradients flow through it to the input.
 * Tensor names are PEFT's, per expert (expert files are PEFT-shaped):
 *   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
 * and the routers' base_model.model.model.layers.N.self_attn.q_proj.router.weight
 * (schema/bundle.md). `train` lists the trainable ones as "EXPERT/NAME" and
 * "router/NAME" for the optimizer and checkpoints.
 *
 * Not a general MoE: no capacity factor, no token dropping, no dropout.
 */
#ifndef MODULA_MOE_H
#define MODULA_MOE_H

#include "worker/lora.h"
#include "worker/model.h"
#include "worker/params.h"

#include <stdint.h>

enum moe_method { MOE_BASE, MOE_LORA, MOE_MOLORA, MOE_FLAN, MOE_RES, MOE_RES_NORES, MOE_NMETHODS };

#define MOE_MAX_EXPERTS 64
#define MOE_NAME_MAX 64

typedef struct moe_config {
	int method;             /* enum moe_method, not MOE_BASE */
	int n_domain;           /* domain experts (molora: its n experts) */
	lora_config_t universal;/* rank/alpha/rslora of expert 0; its targets are the layers */
	lora_config_t domain;   /* rank/alpha/rslora of experts 1..n */
	float slope;            /* LeakyReLU negative slope (0.01) */
	int top_k;              /* molora: 0 keeps every weight */
	float aux_weight;       /* molora with top_k: load-balancing weight */
} moe_config_t;

typedef struct moe_expert {
	char name[MOE_NAME_MAX];/* "universal", or the domain's name */
	int rank;               /* 0: absent */
	float alpha;
	int rslora;
	int reads_h;            /* a Res domain expert: A is [r, out] */
	int trainable;
	params_t params;        /* lora_A/lora_B per adapted layer, PEFT names */
} moe_expert_t;

/* One segment of fixed routing: sequences [seq_lo, seq_hi) use `expert`. */
typedef struct moe_seg {
	int expert, seq_lo, seq_hi;
} moe_seg_t;

typedef struct moe_layer moe_layer_t;

typedef struct moe {
	moe_config_t cfg;
	int n_exp;              /* 1 + n_domain */
	moe_expert_t *exp;      /* [n_exp] */
	int route_base;         /* router row j weighs expert j + route_base */
	int n_route;            /* router rows (0: no router) */
	params_t router;        /* one [n_route, in] per adapted layer */
	int router_trainable;
	params_t train;         /* trainable tensors, "EXPERT/NAME", "router/NAME" */
	moe_layer_t **layers;   /* the hooks (owned by the model) */
	int n_layers;
	int fixed;              /* 1: segments below, 0: the router */
	moe_seg_t seg[MOE_MAX_EXPERTS];
	int nseg, nseq;
	float aux_scale;        /* multiplies the aux gradient (1/accum) */
} moe_t;

/* "lora", "molora", ... and back; -1 via err_set() for an unknown name. */
const char *moe_method_name(int method);
int moe_method_parse(const char *name, int *method);

/* Hook a fresh mixture on every targeted layer of `m` (replacing adapters
 * there): A Kaiming-uniform (bound 1/sqrt(a_in)) from `seed`, B zero,
 * routers zero (uniform weights); an expert's draws depend on (seed, its
 * name, layer, slot) only. `domains` names experts 1..n. Everything
 * trainable, soft routing. NULL via err_set(). */
moe_t *moe_attach(model_t *m, const moe_config_t *c, const char *const *domains, uint64_t seed);

/* Free the description; the hooks stay with the model (which frees them)
 * but may not run any more. Either may be destroyed first. */
void moe_destroy(moe_t **mo);

/* Expert index by name ("universal" is 0), or -1. */
int moe_expert_index(const moe_t *mo, const char *name);

/* Choose what trains: bit e of `experts` for expert e, and the routers;
 * rebuilds mo->train. 0, or -1 via err_set(). */
int moe_set_trainable(moe_t *mo, uint64_t experts, int router);

/* Soft routing (the method's full forward). */
void moe_route_soft(moe_t *mo);

/* Fixed routing over batches of `nseq` sequences. 0, or -1 via err_set()
 * when segments overlap, leave [0, nseq) or name a missing expert. */
int moe_route_fixed(moe_t *mo, const moe_seg_t *seg, int nseg, int nseq);

/* The load-balancing loss of the last forward (0 without top-k). */
float moe_aux_loss(const moe_t *mo);

/* The routing weights of each router row over rows [lo, hi) of the last
 * soft-routed forward, summed into sum[n_route], for adapted layer `k`
 * (0..n_layers-1); where that layer hangs goes to *layer, *slot. */
void moe_route_sum(const moe_t *mo, int k, int lo, int hi, double *sum, int *layer, int *slot);

#endif
