/* model.h: the LLaMA-family decoder (LLaMA, Qwen2, Mistral) on the CPU.
 *
 *   x = wte[tokens]
 *   per layer: a = rmsnorm(x) ; q,k,v = linear(a) (+bias on Qwen2) ;
 *              rope(q), rope(k) ; y = gqa_causal_attention(q,k,v) ;
 *              x = x + o_proj(y) ;
 *              m = rmsnorm(x) ; x = x + down(silu(gate(m)) * up(m))
 *   logits = rmsnorm(x) lm_head^T   (lm_head = wte when tied)
 *
 * Weights live in one fp32 block, listed by their Hugging Face names in
 * `params`; activations for a batch of up to [max_b, max_t] are allocated
 * once by model_reserve() and kept for backward. Every linear layer may
 * carry an adapter (adapter.h) that adds its delta.
 *
 * Two training modes: full-parameter (model_enable_grads(): every weight
 * gets a gradient) and adapter mode (no base gradients allocated: backward
 * only pushes input gradients through the frozen layers and the adapters
 * collect theirs; no weight gradient is computed for a frozen matrix).
 *
 * Not an inference server: no KV cache here (greedy decoding comes with the
 * eval code), no mixed precision.
 */
#ifndef MODULA_MODEL_H
#define MODULA_MODEL_H

#include "worker/adapter.h"
#include "worker/model_config.h"
#include "worker/params.h"

#include <stdint.h>

enum model_slot { MODEL_Q, MODEL_K, MODEL_V, MODEL_O, MODEL_GATE, MODEL_UP, MODEL_DOWN, MODEL_NSLOTS };

/* "q_proj", "k_proj", ... and the module path "self_attn" or "mlp". */
const char *model_slot_name(int slot);
const char *model_slot_module(int slot);

typedef struct model_linear {
	float *w, *b;           /* [out,in] and [out] (b NULL without bias) */
	float *dw, *db;         /* NULL unless full-parameter training */
	int in, out;
	adapter_t *ad;          /* NULL, or the adapter that adds its delta */
} model_linear_t;

typedef struct model_layer {
	float *ln1, *ln2;       /* [C] input_layernorm, post_attention_layernorm */
	float *dln1, *dln2;
	model_linear_t lin[MODEL_NSLOTS];
} model_layer_t;

typedef struct model_acts model_acts_t;

typedef struct model {
	model_config_t cfg;
	float *mem, *gmem;      /* all weights; all weight grads (or NULL) */
	size_t n_params;
	float *wte, *dwte;      /* [V,C] */
	float *norm, *dnorm;    /* [C] */
	float *head, *dhead;    /* [V,C]: wte when tied */
	model_layer_t *layers;
	params_t params;        /* base weights by Hugging Face name */
	model_acts_t *acts;
	int max_b, max_t;
	int b, t;               /* shape of the last forward */
	float *logits;          /* [b,t,V] of the last forward */
} model_t;

/* A model with zeroed weights, or NULL via err_set(). */
model_t *model_new(const model_config_t *cfg);
void model_destroy(model_t **m);

/* A model of this configuration without weights: layer shapes only, for
 * hooking adapter descriptions whose compute runs elsewhere (dmodel.h).
 * It cannot run forward. NULL via err_set(). */
model_t *model_shape(const model_config_t *cfg);

/* Hugging Face initialisation: normal(0, 0.02) matrices and embeddings,
 * norms 1, biases 0, from a seeded generator. */
void model_init_random(model_t *m, uint64_t seed);

/* Load DIR/config.json and the safetensors weights (one file or shards;
 * F32, F16 or BF16). NULL via err_set() naming the file and the tensor. */
model_t *model_load(const char *dir);

/* Write DIR/config.json and DIR/model.safetensors (F32), each atomically;
 * DIR is created. 0, or -1 via err_set(). */
int model_save(const model_t *m, const char *dir);

/* Allocate weight gradients for full-parameter training. 0 or -1. */
int model_enable_grads(model_t *m);

/* Make room for batches up to [b, t] (t <= max_seq). 0 or -1. */
int model_reserve(model_t *m, int b, int t);

/* Forward over tokens[b,t] (b, t within the reservation; ids < vocab).
 * With targets[b,t] (a negative target is ignored), returns the mean
 * cross-entropy over the positions with a target (0 when there is none)
 * and remembers them for backward; without, returns 0. Logits are left in
 * m->logits. `key` seeds adapter dropout; `train` 0 disables dropout. */
float model_forward(model_t *m, const int *tokens, const int *targets, int b, int t,
		    uint64_t key, int train);

/* Backward of the last forward's mean loss times `scale` (1/accum for
 * gradient accumulation): accumulates into the weight gradients (full
 * mode) and the adapters' gradients. Needs targets in the forward. */
void model_backward(model_t *m, float scale);

/* Positions with a target in the last forward. */
int model_target_count(const model_t *m);

#endif
