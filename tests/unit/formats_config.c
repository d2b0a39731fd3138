/* formats_config.c: Hugging Face config.json reading (LLaMA, Qwen2,
 * Mistral field names, defaults, validation messages) and writing. */
#include "config.h"
#include "worker/model_config.h"
#include "err.h"
#include "fsx.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_path[96];

static int s_load(const char *json, model_config_t *c)
{
	if (fsx_write_atomic(s_path, json, strlen(json)) < 0)
		return -1;
	return model_config_load(s_path, c);
}

/* Refused, with `want` in the message. */
static void s_refuse(const char *json, const char *want, const char *what)
{
	model_config_t c;
	int rc = s_load(json, &c);

	TAP_OK(rc < 0 && strstr(err_msg(), want) && strstr(err_msg(), s_path) && c.dim == 0, "refuses %s: %s", what,
	       rc < 0 ? err_msg() : "(accepted)");
}

#define BASE "\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"

int main(void)
{
	model_config_t c, d;
	char saved[128];

	snprintf(s_path, sizeof s_path, "/tmp/modula-cfg-%ld.json", (long)getpid());
	snprintf(saved, sizeof saved, "/tmp/modula-cfg-%ld-saved.json", (long)getpid());

	TAP_OK(s_load("{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\"," BASE
		      "\"num_attention_heads\":8,\"num_key_value_heads\":2,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,"
		      "\"max_position_embeddings\":131072,\"tie_word_embeddings\":true,\"bos_token_id\":1,"
		      "\"eos_token_id\":[2,3],\"attention_bias\":false,\"torch_dtype\":\"bfloat16\"}", &c) == 0,
	       "reads a LLaMA config %s", err_msg());
	TAP_OK(!strcmp(c.arch, "llama") && c.vocab_size == 1000 && c.dim == 64 && c.ffn_dim == 128 && c.n_layers == 2 &&
	       c.n_heads == 8 && c.n_kv_heads == 2 && c.head_dim == 8 && c.max_seq == 131072 && c.rms_eps == 1e-5f &&
	       c.rope_theta == 500000.0f && c.tie_embeddings && !c.qkv_bias && c.bos_id == 1 && c.eos_id == 2 && c.pad_id == -1,
	       "LLaMA fields, eos from a list, no pad");

	TAP_OK(s_load("{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE "\"num_attention_heads\":4,\"num_key_value_heads\":4,"
		      "\"head_dim\":32,\"sliding_window\":4096,\"use_sliding_window\":false,\"pad_token_id\":null}", &c) == 0 &&
	       !strcmp(c.arch, "qwen2") && c.qkv_bias && c.head_dim == 32 && c.rope_theta == 10000.0f && c.rms_eps == 1e-6f &&
	       c.max_seq == 2048 && !c.tie_embeddings && c.pad_id == -1,
	       "Qwen2 from architectures: q/k/v biases, explicit head_dim, defaults %s", err_msg());
	TAP_OK(s_load("{\"model_type\":\"mistral\"," BASE "\"num_attention_heads\":4,\"head_dim\":null}", &c) == 0 &&
	       !strcmp(c.arch, "mistral") && c.n_kv_heads == 4 && c.head_dim == 16 && !c.qkv_bias,
	       "Mistral: kv heads and a null head_dim default %s", err_msg());
	TAP_OK(s_load("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"attention_bias\":true}", &c) == 0 && c.qkv_bias,
	       "llama's attention_bias gives q/k/v biases");

	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":8,\"num_key_value_heads\":3}",
		 "'num_key_value_heads' = 3 does not divide 'num_attention_heads' = 8", "kv heads not dividing heads");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":6}",
		 "'num_attention_heads' = 6 does not divide 'hidden_size' = 64", "heads not dividing the width");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"head_dim\":15}", "must be even", "an odd head_dim");
	s_refuse("{\"model_type\":\"gpt2\"," BASE "\"num_attention_heads\":4}", "unsupported model type 'gpt2'", "an unknown model_type");
	s_refuse("{\"architectures\":[\"BertModel\"]," BASE "\"num_attention_heads\":4}", "unsupported architecture 'BertModel'",
		 "an unknown architecture");
	s_refuse("{\"num_attention_heads\":4," BASE "\"x\":1}", "neither 'model_type' nor 'architectures'", "no architecture");
	s_refuse("{\"model_type\":\"llama\",\"vocab_size\":1000,\"intermediate_size\":128,\"num_hidden_layers\":2,"
		 "\"num_attention_heads\":4}", "'hidden_size': missing", "a missing hidden_size");
	s_refuse("{\"model_type\":\"llama\",\"vocab_size\":\"1000\",\"hidden_size\":64,\"intermediate_size\":128,"
		 "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "'vocab_size': expected an integer, got a string",
		 "a string vocab_size");
	s_refuse("{\"model_type\":\"llama\",\"vocab_size\":1e300,\"hidden_size\":64,\"intermediate_size\":128,"
		 "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "'vocab_size'", "a huge vocab_size");
	s_refuse("{\"model_type\":\"llama\",\"vocab_size\":1000,\"hidden_size\":-64,\"intermediate_size\":128,"
		 "\"num_hidden_layers\":2,\"num_attention_heads\":4}", "'hidden_size': -64 is out of range", "a negative width");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":\"llama3\"}}",
		 "'rope_scaling': RoPE scaling is not supported", "rope_scaling");
	/* transformers 5: RoPE as rope_parameters, and a "default" rope_scaling */
	int rc5 = s_load("{\"model_type\":\"qwen2\"," BASE "\"num_attention_heads\":4,\"rope_parameters\":"
			 "{\"rope_type\":\"default\",\"rope_theta\":1000000.0},\"rope_scaling\":{\"type\":\"default\"}}",
			 &c);
	TAP_OK(rc5 == 0 && c.rope_theta == 1000000.0f,
	       "reads rope_theta from transformers 5's rope_parameters (%g)", (double)c.rope_theta);
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"rope_parameters\":"
		 "{\"rope_type\":\"yarn\",\"rope_theta\":10000}}", "only the default RoPE", "a scaled rope_parameters");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"eos_token_id\":1000}",
		 "not below 'vocab_size' = 1000", "an eos id outside the vocabulary");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"bos_token_id\":\"<s>\"}",
		 "'bos_token_id': expected a token id", "a string bos id");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"rms_norm_eps\":0}", "'rms_norm_eps' = 0",
		 "a zero epsilon");
	s_refuse("{\"model_type\":\"llama\"," BASE "\"num_attention_heads\":4,\"mlp_bias\":true}", "'mlp_bias'", "MLP biases");
	s_refuse("[1,2]", "expected an object, got an array", "an array");
	s_refuse("{\"model_type\":", "bad JSON", "truncated JSON");

	memset(&c, 0, sizeof c);
	snprintf(c.arch, sizeof c.arch, "qwen2");
	c.vocab_size = 151936, c.dim = 896, c.n_layers = 24, c.n_heads = 14, c.n_kv_heads = 2, c.head_dim = 64;
	c.ffn_dim = 4864, c.max_seq = 32768, c.rms_eps = 1e-6f, c.rope_theta = 1000000.0f, c.tie_embeddings = 1;
	c.qkv_bias = 1, c.bos_id = -1, c.eos_id = 151643, c.pad_id = -1;
	TAP_OK(model_config_save(&c, saved) == 0 && model_config_load(saved, &d) == 0 && !memcmp(&c, &d, sizeof c),
	       "a saved Qwen2 config reads back identical %s", err_msg());
	{
		char *text = NULL;
		size_t len;
		TAP_OK(fsx_read_all(saved, &text, &len) == 0 && strstr(text, "\"Qwen2ForCausalLM\"") &&
		       strstr(text, "\"torch_dtype\":") && strstr(text, "1e-06") && strstr(text, "\"bos_token_id\":\tnull"),
		       "the saved file names the class, torch_dtype, eps as 1e-06, a null bos");
		free(text);
	}
	c.n_kv_heads = 3;
	TAP_OK(model_config_save(&c, saved) < 0 && strstr(err_msg(), "does not divide"), "save refuses a bad config: %s",
	       err_msg());
	unlink(s_path);
	unlink(saved);
	return tap_done();
}
