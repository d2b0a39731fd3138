/* lora.h: LoRA adapters (Hu et al. 2021) on a model's linear layers.
 *
 * For each adapted linear layer W0 (q, k, v, o, gate, up, down; every
 * layer of the model):  y = W0 x + s B A dropout(x), A [r,in] Kaiming-uniform
 * (PEFT's bound 1/sqrt(in)), B [out,r] zero, s = alpha/r or alpha/sqrt(r)
 * (rsLoRA). Each one is an adapter (adapter.h) hooked on the model's linear
 * layer; the model owns the hooks once attached. Dropout masks come from
 * rng_hash(seed, key, layer, slot, element), so they are reproducible and
 * independent of threads.
 *
 * Files are PEFT's: DIR/adapter_config.json + DIR/adapter_model.safetensors
 * with base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight ...
 * Not a general PEFT reader: only plain LoRA on every layer
 * (no layers_to_transform, rank_pattern, DoRA or biases).
 */
#ifndef MODULA_LORA_H
#define MODULA_LORA_H

#include "worker/model.h"
#include "worker/params.h"

#include <cjson/cJSON.h>
#include <stdint.h>

typedef struct lora_config {
	int rank;
	float alpha;
	int rslora;             /* scale alpha/sqrt(r) instead of alpha/r */
	float dropout;          /* in [0, 1) */
	unsigned targets;       /* bit (1 << MODEL_Q) ... (1 << MODEL_DOWN) */
} lora_config_t;

typedef struct lora {
	lora_config_t cfg;
	params_t params;        /* lora_A/lora_B of every adapted layer, PEFT names */
} lora_t;

/* Parse target names ("q", "q_proj", "k", ... "down_proj") from a JSON array
 * of strings into a bit set. 0, or -1 via err_set() naming the bad one. */
int lora_parse_targets(const cJSON *arr, unsigned *out);

/* Hook fresh adapters (A random from `seed`, B zero) on every targeted
 * layer of `m`, replacing any adapter there. NULL via err_set(). */
lora_t *lora_attach(model_t *m, const lora_config_t *c, uint64_t seed);

/* Attach adapters read from a PEFT folder, or from a .safetensors file with
 * adapter_config.json beside it. NULL via err_set() naming file and tensor. */
lora_t *lora_load(model_t *m, const char *path);

/* Write DIR/adapter_config.json and DIR/adapter_model.safetensors (F32),
 * atomically; DIR is created. 0, or -1 via err_set(). */
int lora_save(const lora_t *l, const char *dir);

/* Free the description (the hooks stay with the model, which frees them). */
void lora_destroy(lora_t **l);

#endif
