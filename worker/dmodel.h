/* dmodel.h: the LLaMA-family decoder of model.h written once against the op
 * table of kernels/device.h, so that it runs on the GPU (the CUDA table,
 * bf16 storage, fp32 accumulation) and, for tests, on the CPU table.
 *
 * Adapter mode only: the base weights are frozen (no weight gradient is
 * ever computed for them) and the adapters train. Two adapter kinds per
 * linear layer, taken from the host descriptions the CPU engine already
 * builds (lora.h, moe.h), so names, initialisation and files are the same:
 *   LoRA         y = W0 x + s0 B0 A0 x
 *   MoDULA-Res   h = s0 B0 A0 x;  y = W0 x + h + sum_i s_i sd B_i LeakyReLU(A_i h),
 *                s = softmax(W_R x)  (-nores: without "+ h")
 * The domain experts of a Res layer are stacked: A [E*r, out] and B^T
 * [E*r, out], so the experts cost two products and one fused router
 * kernel whatever E is (docs/cuda.md). B is kept transposed on the device;
 * the host copies keep PEFT's [out, r].
 *
 * Trainable tensors have an fp32 master, a copy in the storage type that
 * the ops read, an fp32 gradient and the AdamW moments, all on the device.
 * dmodel_sync_to_host() brings masters and moments back into the host
 * params and optimizer (for checkpoints and the savers);
 * dmodel_sync_from_host() sends them (after a resume).
 *
 * Not here: full-parameter training, LoRA dropout, MoLoRA/Flan routing,
 * fixed routing other than the stages' (universal alone, Res domain
 * experts), a KV cache. Those run on the CPU engine.
 */
#ifndef MODULA_DMODEL_H
#define MODULA_DMODEL_H

#include "kernels/device.h"
#include "worker/lora.h"
#include "worker/model.h"
#include "worker/moe.h"
#include "worker/optim.h"

typedef struct dmodel dmodel_t;

/* The backend of --device NAME and --dtype TYPE: "cpu" gives *K = NULL (the
 * CPU engine of model.c, not this path); "cuda" the CUDA table in TYPE
 * (bf16 by default, f16, f32), or an error saying why there is no GPU;
 * "auto" CUDA when a GPU answers, else NULL; "table" this path over the CPU
 * table (f32; for testing the GPU path's logic without a GPU). TYPE may be
 * NULL. 0, or -1 via err_set(). */
int dmodel_backend(const char *device, const char *dtype, const struct kdevice_ops **K);
/* The same from options `--device D` and `--dtype T` in argv[first..argc)
 * (each at most once, nothing else); *device gets D (or NULL). 0; -2 via
 * err_set() for an argument that is not one of them (a usage error); -1
 * when the backend cannot be had. */
int dmodel_backend_args(int argc, char **argv, int first, const char **device,
			const struct kdevice_ops **K);

/* DIR/config.json and its safetensors straight into the backend's memory:
 * on CUDA a bf16 (or fp16, fp32) tensor is copied as it is stored and
 * converted on the device to the storage type. NULL via err_set(). */
dmodel_t *dmodel_load(const char *dir, const struct kdevice_ops *K);
/* The same from a host model's weights (random models, tests). */
dmodel_t *dmodel_from_host(const model_t *hm, const struct kdevice_ops *K);
void dmodel_destroy(dmodel_t **m);

const model_config_t *dmodel_config(const dmodel_t *m);

/* Put the adapters of a host description on the device: every tensor of
 * lo->params (or of mo's experts and routers) is copied; those listed in
 * `train` (the optimizer's list, whose moments dmodel_sync_* move) train,
 * the others are frozen. The host description must have been
 * attached to a model of the same configuration (model_shape() is
 * enough). 0, or -1 via err_set() for what the device path cannot run. */
int dmodel_attach_lora(dmodel_t *m, const lora_t *lo, const params_t *train);
int dmodel_attach_moe(dmodel_t *m, const moe_t *mo, const params_t *train);

/* Room for batches up to [b, t]. 0 or -1. */
int dmodel_reserve(dmodel_t *m, int b, int t);

/* Forward over host tokens[b,t]. Without targets only the logits are made
 * (dmodel_logits reads them). With targets, *loss is the mean cross-entropy
 * over the positions with a target; when gscale > 0 the gradient of
 * gscale * loss is prepared for dmodel_backward (and the logits are
 * overwritten by it). 0, or -1 via err_set(). */
int dmodel_forward(dmodel_t *m, const int *tokens, const int *targets, int b, int t, float gscale,
		   double *loss);
/* Accumulate the adapters' gradients of the last forward. 0 or -1. */
int dmodel_backward(dmodel_t *m);
/* One training micro-batch: dmodel_forward with targets and gscale > 0,
 * then dmodel_backward, with *loss as dmodel_forward gives it. On a
 * backend with CUDA graphs the ops of the pair are recorded once per batch
 * shape (the second micro-batch of that shape, after a direct first) and
 * replayed after: one launch instead of thousands. The same results as
 * the pair, to the bit. 0, or -1 via err_set(). */
int dmodel_train_micro(dmodel_t *m, const int *tokens, const int *targets, int b, int t,
		       float gscale, double *loss);
/* Graphs on (the default) or off for this model; MODULA_CUDA_GRAPHS=0 in
 * the environment turns them off for every model. */
void dmodel_graphs(dmodel_t *m, int on);
/* Groups of plain LoRAs whose adapters run as one (q, k, v; gate, up:
 * their A adjacent, as dmodel_attach_lora places training ones), counted
 * over the layers at the last dmodel_reserve. */
int dmodel_adapter_groups(const dmodel_t *m);
/* The groups folded into their base products at attach (the adapters' B
 * and the biases inside the products' weights: docs/cuda.md): those plain
 * LoRA groups, and Res, Flan or MoLoRA layers on all of q, k, v or gate, up;
 * MODULA_FOLD=0 in the environment at load turns folding off. */
int dmodel_folded_groups(const dmodel_t *m);
/* The o and down projections whose adapter's A is folded into their
 * weight for the backward (dx = [dy | du] [W; A]: docs/cuda.md). */
int dmodel_folded_tail(const dmodel_t *m);
/* Micro-batches so far that replayed a graph (the first replay included). */
long dmodel_graph_replays(const dmodel_t *m);
/* Greedy decoding of one sequence (eval's exact match): decode_feed runs
 * ids[0..n) after what was fed since decode_reset (the earlier positions'
 * queries, keys and values kept on the device; the reservation's
 * [b, t] must have t >= the sequence's length) and writes the last one's
 * logits [V] as fp32 to host memory. A forward or a training step in
 * between ends the sequence (reset then). 0, or -1 via err_set(). */
void dmodel_decode_reset(dmodel_t *m);
int dmodel_decode_feed(dmodel_t *m, const int *ids, int n, float *logits);
int dmodel_decode_pos(const dmodel_t *m);
/* The router probabilities of the adapted layer (layer, slot) in the last
 * forward ([b*t, *ne] fp32, to host memory; *ne: the router's outputs).
 * 0, or -1 via err_set() when that layer has no router. */
int dmodel_route_probs(dmodel_t *m, int layer, int slot, float *out, int *ne);
/* Positions with a target in the last forward. */
int dmodel_target_count(const dmodel_t *m);
/* The last forward's logits [b*t, V] as fp32 into host memory. 0 or -1. */
int dmodel_logits(dmodel_t *m, float *out);

/* Fixed routing of MoDULA-Res's domain stage (the mixture attached with
 * every segment routed to a domain expert): sequence j of the next
 * forwards ([nseq, t]) goes to domain expert expert[j] (1..n). 0 or -1. */
int dmodel_route_rows(dmodel_t *m, const int *expert, int nseq, int t);
/* Per-sequence gradient weights for the next forwards: a target in
 * sequence j gets gscale * w[j] instead of gscale / (all targets) (each
 * stage group normalised by its own count). NULL goes back. 0 or -1. */
int dmodel_seq_weights(dmodel_t *m, const float *w, int nseq);
/* The last forward's per-position losses (host, [b*t]; 0 without a target). */
const float *dmodel_row_losses(const dmodel_t *m);

/* Zero the adapters' gradients. 0 or -1. */
int dmodel_zero_grad(dmodel_t *m);
/* Clip by global norm (c->clip) and one AdamW update number `step` (from
 * 1) at learning rate lr, as optim_clip + optim_step. *norm gets the norm
 * before clipping (may be NULL). 0 or -1. */
int dmodel_step(dmodel_t *m, const optim_config_t *c, float lr, long step, float *norm);

/* The same over the trainable tensors listed in `group` only (its own
 * clipping norm): a stage's groups, each with its own optimizer. */
int dmodel_step_group(dmodel_t *m, const optim_config_t *c, float lr, long step,
		      const params_t *group);

/* Masters (and, when opt is not NULL, the moments) device -> host, and
 * back. 0 or -1. */
int dmodel_sync_to_host(dmodel_t *m, optim_t *opt);
int dmodel_sync_from_host(dmodel_t *m, const optim_t *opt);

/* The adapters' gradients device -> host (param->grad of the host
 * descriptions), for the tests and `modula-engine grads`. 0 or -1. */
int dmodel_grads_to_host(dmodel_t *m);

/* Profiling (modula-engine bench --profile): with it on, every group of
 * ops synchronises and its time is charged to its kind; the report gives a
 * kind's name and its seconds since dmodel_profile(m, 1). */
enum { DMODEL_PROF_BASE, DMODEL_PROF_ADAPTERS, DMODEL_PROF_ATTENTION, DMODEL_PROF_NORMS,
       DMODEL_PROF_POINTWISE, DMODEL_PROF_CROSS_ENTROPY, DMODEL_PROF_OPTIMIZER, DMODEL_PROF_N };
void dmodel_profile(dmodel_t *m, int on);
const char *dmodel_profile_report(dmodel_t *m, int kind, double *seconds);

/* Wait for queued work (a kernel fault shows here). 0 or -1. */
int dmodel_sync(dmodel_t *m);
/* One line on the backend's memory (CUDA: held now, peak, free). */
void dmodel_memory(const dmodel_t *m, char *buf, size_t n);

#endif
