/* model_config.c: see model_config.h. */
#include "worker/model_config.h"
#include "err.h"
#include "jsonu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The architectures we read, with their transformers class names. */
static const struct {
	const char *type, *cls;
} s_archs[] = {
	{ "llama", "LlamaForCausalLM" },
	{ "qwen2", "Qwen2ForCausalLM" },
	{ "mistral", "MistralForCausalLM" },
};
#define N_ARCHS (sizeof s_archs / sizeof s_archs[0])

/* Upper bounds that keep every size product inside int64 and size_t. */
#define MAX_DIM (1 << 17)
#define MAX_LAYERS 4096
#define MAX_VOCAB (1 << 24)
#define MAX_SEQ (1 << 24)

static int s_arch_from_type(const char *type)
{
	for (size_t i = 0; i < N_ARCHS; i++)
		if (!strcmp(type, s_archs[i].type))
			return (int)i;
	return -1;
}

static int s_arch_from_class(const char *cls)
{
	for (size_t i = 0; i < N_ARCHS; i++)
		if (!strcmp(cls, s_archs[i].cls))
			return (int)i;
	return -1;
}

/* model_type when present, else the first of "architectures". */
static int s_arch(const cJSON *root)
{
	const char *type = NULL;
	const cJSON *archs, *first;
	int a;

	if (jsonu_opt_str(root, "model_type", NULL, &type) < 0)
		return -1;
	if (type) {
		if ((a = s_arch_from_type(type)) < 0)
			return err_set("'model_type': unsupported model type '%s' (expected llama, qwen2 or mistral)", type);
		return a;
	}
	archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
	if (!cJSON_IsArray(archs) || !(first = cJSON_GetArrayItem(archs, 0)) || !cJSON_IsString(first))
		return err_set("neither 'model_type' nor 'architectures' says what the model is");
	if ((a = s_arch_from_class(first->valuestring)) < 0)
		return err_set("'architectures': unsupported architecture '%s' (expected LlamaForCausalLM, Qwen2ForCausalLM or MistralForCausalLM)",
			       first->valuestring);
	return a;
}

/* An integer field in [lo, hi]; `def` when absent unless `required`. */
static int s_int(const cJSON *root, const char *key, int required, long long def, long long lo, long long hi, int *out)
{
	long long v;

	if ((required ? jsonu_req_int(root, key, &v) : jsonu_opt_int(root, key, def, &v)) < 0)
		return -1;
	if (v < lo || v > hi)
		return err_set("'%s': %lld is out of range [%lld, %lld]", key, v, lo, hi);
	*out = (int)v;
	return 0;
}

/* A token id: absent or null is -1; a list takes its first element. */
static int s_token_id(const cJSON *root, const char *key, int *out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
	double v;

	*out = -1;
	if (!it || cJSON_IsNull(it))
		return 0;
	if (cJSON_IsArray(it)) {
		if (cJSON_GetArraySize(it) == 0)
			return 0;
		it = cJSON_GetArrayItem(it, 0);
	}
	if (!cJSON_IsNumber(it))
		return err_set("'%s': expected a token id, got %s", key, jsonu_type_name(it));
	v = it->valuedouble;
	if (!(v >= 0 && v < MAX_VOCAB) || v != floor(v))
		return err_set("'%s': %g is not a token id", key, v);
	*out = (int)v;
	return 0;
}

/* A RoPE description of the plain kind: {"rope_type" or "type": "default"}. */
static int s_rope_default(const cJSON *o)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_type");

	if (!t)
		t = cJSON_GetObjectItemCaseSensitive(o, "type");
	return cJSON_IsObject(o) && cJSON_IsString(t) && !strcmp(t->valuestring, "default");
}

/* transformers 5 writes RoPE as "rope_parameters": {"rope_type":
 * "default", "rope_theta": X}; a top-level rope_theta (older files) wins. */
static int s_rope_parameters(const cJSON *root, double *theta)
{
	const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");

	if (!rp || cJSON_IsNull(rp))
		return 0;
	if (!cJSON_IsObject(rp))
		return err_set("'rope_parameters': expected an object, got %s", jsonu_type_name(rp));
	if (!s_rope_default(rp))
		return err_set("'rope_parameters': only the default RoPE is supported (rope_type "
			       "'default'), not scaled variants");
	if (cJSON_GetObjectItemCaseSensitive(root, "rope_theta"))
		return 0;
	return jsonu_opt_num(rp, "rope_theta", 10000.0, theta) < 0
		       ? err_prefix("'rope_parameters'") : 0;
}

static int s_parse(const cJSON *root, model_config_t *c)
{
	double eps, theta;
	int a, bias, mlp_bias;
	const cJSON *scaling;

	if (!cJSON_IsObject(root))
		return err_set("expected an object, got %s", jsonu_type_name(root));
	if ((a = s_arch(root)) < 0)
		return -1;
	snprintf(c->arch, sizeof c->arch, "%s", s_archs[a].type);
	if (s_int(root, "vocab_size", 1, 0, 1, MAX_VOCAB, &c->vocab_size) < 0 ||
	    s_int(root, "hidden_size", 1, 0, 1, MAX_DIM, &c->dim) < 0 ||
	    s_int(root, "intermediate_size", 1, 0, 1, 8 * MAX_DIM, &c->ffn_dim) < 0 ||
	    s_int(root, "num_hidden_layers", 1, 0, 1, MAX_LAYERS, &c->n_layers) < 0 ||
	    s_int(root, "num_attention_heads", 1, 0, 1, MAX_DIM, &c->n_heads) < 0 ||
	    s_int(root, "num_key_value_heads", 0, c->n_heads, 1, MAX_DIM, &c->n_kv_heads) < 0 ||
	    s_int(root, "max_position_embeddings", 0, 2048, 1, MAX_SEQ, &c->max_seq) < 0)
		return -1;
	if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(root, "head_dim")) && c->dim % c->n_heads)
		return err_set("'num_attention_heads' = %d does not divide 'hidden_size' = %d (give 'head_dim')",
			       c->n_heads, c->dim);
	if (s_int(root, "head_dim", 0, c->dim / c->n_heads, 1, MAX_DIM, &c->head_dim) < 0)
		return -1;
	if (jsonu_opt_num(root, "rms_norm_eps", 1e-6, &eps) < 0 ||
	    jsonu_opt_num(root, "rope_theta", 10000.0, &theta) < 0 || s_rope_parameters(root, &theta) < 0)
		return -1;
	c->rms_eps = (float)eps;
	c->rope_theta = (float)theta;
	if (jsonu_opt_bool(root, "tie_word_embeddings", 0, &c->tie_embeddings) < 0 ||
	    jsonu_opt_bool(root, "attention_bias", 0, &bias) < 0 ||
	    jsonu_opt_bool(root, "mlp_bias", 0, &mlp_bias) < 0)
		return -1;
	c->qkv_bias = !strcmp(c->arch, "qwen2") ? 1 : bias;
	if (mlp_bias)
		return err_set("'mlp_bias': MLP biases are not supported");
	scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
	if (scaling && !cJSON_IsNull(scaling) && !s_rope_default(scaling))
		return err_set("'rope_scaling': RoPE scaling is not supported (remove it or use a model without it)");
	if (s_token_id(root, "bos_token_id", &c->bos_id) < 0 ||
	    s_token_id(root, "eos_token_id", &c->eos_id) < 0 ||
	    s_token_id(root, "pad_token_id", &c->pad_id) < 0)
		return -1;
	return model_config_check(c);
}

int model_config_check(const model_config_t *c)
{
	if (s_arch_from_type(c->arch) < 0)
		return err_set("unsupported model type '%s' (expected llama, qwen2 or mistral)", c->arch);
	if (c->vocab_size < 1 || c->vocab_size > MAX_VOCAB)
		return err_set("'vocab_size' = %d is out of range [1, %d]", c->vocab_size, MAX_VOCAB);
	if (c->dim < 1 || c->dim > MAX_DIM || c->ffn_dim < 1 || c->ffn_dim > 8 * MAX_DIM)
		return err_set("'hidden_size' = %d or 'intermediate_size' = %d is out of range", c->dim, c->ffn_dim);
	if (c->n_layers < 1 || c->n_layers > MAX_LAYERS)
		return err_set("'num_hidden_layers' = %d is out of range [1, %d]", c->n_layers, MAX_LAYERS);
	if (c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 1 || c->n_heads > MAX_DIM ||
	    (long long)c->n_heads * c->head_dim > 8LL * MAX_DIM)
		return err_set("attention shape out of range: %d heads of %d, %d kv heads",
			       c->n_heads, c->head_dim, c->n_kv_heads);
	if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
		return err_set("'num_key_value_heads' = %d does not divide 'num_attention_heads' = %d",
			       c->n_kv_heads, c->n_heads);
	if (c->head_dim % 2)
		return err_set("'head_dim' = %d must be even for rotary embeddings", c->head_dim);
	if (!strcmp(c->arch, "qwen2") && !c->qkv_bias)
		return err_set("qwen2 models always have q/k/v biases ('qkv_bias' = 0)");
	if (c->max_seq < 1 || c->max_seq > MAX_SEQ)
		return err_set("'max_position_embeddings' = %d is out of range [1, %d]", c->max_seq, MAX_SEQ);
	if (!(c->rms_eps > 0 && c->rms_eps < 1))
		return err_set("'rms_norm_eps' = %g must be in (0, 1)", (double)c->rms_eps);
	if (!(c->rope_theta > 1 && isfinite(c->rope_theta)))
		return err_set("'rope_theta' = %g must be a finite number above 1", (double)c->rope_theta);
	if (c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size || c->pad_id >= c->vocab_size)
		return err_set("a special token id (bos %d, eos %d, pad %d) is not below 'vocab_size' = %d",
			       c->bos_id, c->eos_id, c->pad_id, c->vocab_size);
	return 0;
}

int model_config_load(const char *path, model_config_t *out)
{
	cJSON *root;
	int rc;

	memset(out, 0, sizeof *out);
	if (!(root = jsonu_read_file(path)))
		return -1;
	rc = s_parse(root, out);
	cJSON_Delete(root);
	if (rc < 0) {
		memset(out, 0, sizeof *out);
		return err_prefix("'%s'", path);
	}
	return 0;
}

/* The shortest decimal that reads back as the same float, so 1e-6f is
 * written "1e-06", not "9.99999997e-07". */
static double s_short(float f)
{
	char buf[32];

	for (int p = 1; p < 9; p++) {
		snprintf(buf, sizeof buf, "%.*g", p, (double)f);
		if ((float)strtod(buf, NULL) == f)
			return strtod(buf, NULL);
	}
	return (double)f;
}

static int s_add_id(cJSON *root, const char *key, int id)
{
	return (id < 0 ? cJSON_AddNullToObject(root, key) : cJSON_AddNumberToObject(root, key, id)) ? 0 : -1;
}

int model_config_save(const model_config_t *c, const char *path)
{
	cJSON *root = NULL, *archs;
	int a, rc = -1;

	if (model_config_check(c) < 0)
		return err_prefix("cannot write '%s'", path);
	a = s_arch_from_type(c->arch);
	if (!(root = cJSON_CreateObject()) || !(archs = cJSON_AddArrayToObject(root, "architectures")))
		goto oom;
	cJSON_AddItemToArray(archs, cJSON_CreateString(s_archs[a].cls));
	if (!cJSON_AddStringToObject(root, "model_type", c->arch) ||
	    !cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size) ||
	    !cJSON_AddNumberToObject(root, "hidden_size", c->dim) ||
	    !cJSON_AddNumberToObject(root, "intermediate_size", c->ffn_dim) ||
	    !cJSON_AddNumberToObject(root, "num_hidden_layers", c->n_layers) ||
	    !cJSON_AddNumberToObject(root, "num_attention_heads", c->n_heads) ||
	    !cJSON_AddNumberToObject(root, "num_key_value_heads", c->n_kv_heads) ||
	    !cJSON_AddNumberToObject(root, "head_dim", c->head_dim) ||
	    !cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_seq) ||
	    !cJSON_AddNumberToObject(root, "rms_norm_eps", s_short(c->rms_eps)) ||
	    !cJSON_AddNumberToObject(root, "rope_theta", s_short(c->rope_theta)) ||
	    !cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tie_embeddings) ||
	    !cJSON_AddStringToObject(root, "hidden_act", "silu") ||
	    !cJSON_AddStringToObject(root, "torch_dtype", "float32") ||
	    !cJSON_AddNumberToObject(root, "initializer_range", 0.02) ||
	    !cJSON_AddBoolToObject(root, "use_cache", 1) ||
	    s_add_id(root, "bos_token_id", c->bos_id) < 0 ||
	    s_add_id(root, "eos_token_id", c->eos_id) < 0 ||
	    s_add_id(root, "pad_token_id", c->pad_id) < 0)
		goto oom;
	/* Qwen2 always has q/k/v biases; the others say so. */
	if (strcmp(c->arch, "qwen2") && !cJSON_AddBoolToObject(root, "attention_bias", c->qkv_bias))
		goto oom;
	rc = jsonu_write_file(path, root);
	goto out;
oom:
	err_set("out of memory building '%s'", path);
out:
	cJSON_Delete(root);
	return rc;
}
