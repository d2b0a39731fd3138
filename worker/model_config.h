/* model_config.h: a LLaMA-family model's shape, read from and written to a
 * Hugging Face config.json (LlamaForCausalLM, Qwen2ForCausalLM,
 * MistralForCausalLM field names).
 *
 * Loading validates what the engine relies on (positive sizes, heads
 * dividing the model width when head_dim is not given, kv heads dividing
 * heads, ...) and says which field is wrong. Not a general transformers
 * config reader: rope scaling, sliding windows and the like are ignored.
 */
#ifndef MODULA_MODEL_CONFIG_H
#define MODULA_MODEL_CONFIG_H

typedef struct model_config {
	char arch[32];          /* "llama", "qwen2" or "mistral" (model_type) */
	int vocab_size;
	int dim;                /* hidden_size */
	int n_layers;           /* num_hidden_layers */
	int n_heads;            /* num_attention_heads */
	int n_kv_heads;         /* num_key_value_heads (default n_heads) */
	int head_dim;           /* head_dim (default dim / n_heads) */
	int ffn_dim;            /* intermediate_size */
	int max_seq;            /* max_position_embeddings */
	float rms_eps;          /* rms_norm_eps (default 1e-6) */
	float rope_theta;       /* rope_theta (default 10000) */
	int tie_embeddings;     /* tie_word_embeddings (default 0; qwen2: 0 too) */
	int qkv_bias;           /* q/k/v projections have biases (qwen2: 1;
	                         * llama: attention_bias) */
	int bos_id, eos_id, pad_id; /* -1 when absent; eos: first of a list */
} model_config_t;

/* Read and validate a config.json. 0, or -1 via err_set() naming the file
 * and the field ("'config.json': 'num_key_value_heads' = 3 does not divide
 * 'num_attention_heads' = 8"). `out` is left zeroed on failure. */
int model_config_load(const char *config_json_path, model_config_t *out);

/* Check a config built in code (the same rules as loading). 0 or -1. */
int model_config_check(const model_config_t *c);

/* Write a config.json that transformers accepts (architectures, model_type,
 * torch_dtype "float32", the fields above), atomically. 0 or -1. */
int model_config_save(const model_config_t *c, const char *path);

#endif
