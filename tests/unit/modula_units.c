/* modula_units.c: invariants of the mixture adapter (worker/moe.h), the
 * KV-cache decoder (worker/decode.h) and the bundle files
 * (worker/bundle.h) on a small random model.
 *   - a fresh mixture (B = 0) leaves the logits bit-identical, every method;
 *   - central finite differences agree with the analytic gradients of
 *     modula-res (LeakyReLU path), modula-flan and molora (soft routing);
 *   - fixed routing refuses overlapping segments;
 *   - decoding with the KV cache gives the full forward's logits, and
 *     exact match accepts the greedy continuation and nothing else;
 *   - a bundle written and loaded again gives bit-identical logits, and a
 *     LoRA exported as PEFT and loaded by lora.c does too. */
#include "config.h"
#include "worker/bundle.h"
#include "worker/decode.h"
#include "worker/dmodel.h"
#include "worker/eval.h"
#include "worker/model.h"
#include "worker/moe.h"
#include "worker/rng.h"
#include "kernels/cuda/kcuda.h"
#include "err.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define B 2
#define T 10

static const char *const s_names[] = { "math", "code", "logic" };
static int s_tok[B * T], s_tgt[B * T];

static model_t *s_model(void)
{
	model_config_t c = {
		.arch = "llama", .vocab_size = 48, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
		.head_dim = 8, .ffn_dim = 40, .max_seq = 32, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
	};
	model_t *m = model_new(&c);

	if (m) {
		model_init_random(m, 7);
		/* larger weights than HF's 0.02 so the logits are not flat */
		for (size_t i = 0; i < m->n_params; i++)
			m->mem[i] *= 5.0f;
		for (int l = 0; l < c.n_layers; l++)
			for (int i = 0; i < c.dim; i++)
				m->layers[l].ln1[i] = m->layers[l].ln2[i] = 1.0f;
		for (int i = 0; i < c.dim; i++)
			m->norm[i] = 1.0f;
	}
	return m;
}

static moe_config_t s_cfg(int method, int nd, int topk)
{
	return (moe_config_t){
		.method = method, .n_domain = nd, .top_k = topk, .slope = 0.1f, .aux_weight = topk ? 0.1f : 0.0f,
		.universal = { .rank = 4, .alpha = 8, .targets = (1u << MODEL_NSLOTS) - 1 },
		.domain = { .rank = 3, .alpha = 6 },
	};
}

static void s_randomize(moe_t *mo, uint64_t seed)
{
	rng_t r;

	rng_seed(&r, seed);
	for (int e = 0; e < mo->n_exp; e++)
		for (int i = 0; i < mo->exp[e].params.n; i++)
			for (size_t j = 0; j < mo->exp[e].params.v[i].n; j++)
				mo->exp[e].params.v[i].data[j] = 0.2f * rng_normal(&r);
	for (int i = 0; i < mo->router.n; i++)
		for (size_t j = 0; j < mo->router.v[i].n; j++)
			mo->router.v[i].data[j] = 0.5f * rng_normal(&r);
}

static float *s_logits(model_t *m)
{
	size_t n = (size_t)B * T * m->cfg.vocab_size;
	float *out = malloc(n * sizeof *out);

	model_forward(m, s_tok, s_tgt, B, T, 0, 0);
	if (out)
		memcpy(out, m->logits, n * sizeof *out);
	return out;
}

static void s_fresh(void)
{
	static const int methods[] = { MOE_LORA, MOE_MOLORA, MOE_MOLORA, MOE_FLAN, MOE_RES, MOE_RES_NORES };
	model_t *m = s_model();
	float *base;

	model_reserve(m, B, T);
	base = s_logits(m);
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		int meth = methods[i], nd = meth == MOE_LORA ? 0 : 3, k = i == 2 ? 2 : 0;
		moe_config_t c = s_cfg(meth, nd, k);
		moe_t *mo = moe_attach(m, &c, s_names, 11);
		float *l = mo ? s_logits(m) : NULL;
		TAP_OK(l && !memcmp(l, base, (size_t)B * T * m->cfg.vocab_size * sizeof *l),
		       "a fresh %s mixture%s leaves the logits bit-identical", moe_method_name(meth),
		       k ? " (top-2)" : "");
		free(l);
		moe_destroy(&mo);
	}
	free(base);
	model_destroy(&m);
}

static double s_loss(model_t *m, const moe_t *mo)
{
	return model_forward(m, s_tok, s_tgt, B, T, 0, 0) + moe_aux_loss(mo);
}

/* Central differences on a few elements of the first and last adapted
 * layers' tensors; the error is relative to the largest gradient checked
 * (fp32 losses, and LeakyReLU's kink, make single elements noisy). */
static void s_fd(int method)
{
	model_t *m = s_model();
	moe_config_t c = s_cfg(method, 3, 0);
	moe_t *mo = moe_attach(m, &c, s_names, 3);
	double worst = 0.0, gmax = 0.0, fd[256], an[256];
	int n = 0;

	model_reserve(m, B, T);
	s_randomize(mo, 5);
	params_zero_grad(&mo->train);
	s_loss(m, mo);
	model_backward(m, 1.0f);
	for (int i = 0; i < mo->train.n; i++) {
		param_t *p = &mo->train.v[i];
		if (!strstr(p->name, "layers.0.self_attn.v_proj") && !strstr(p->name, "layers.1.mlp.down_proj"))
			continue;
		for (size_t j = 0; j < p->n && n < 256; j += p->n / 3 + 1) {
			float keep = p->data[j], h = 5e-3f;
			p->data[j] = keep + h;
			double lp = s_loss(m, mo);
			p->data[j] = keep - h;
			double lm = s_loss(m, mo);
			p->data[j] = keep;
			fd[n] = (lp - lm) / (2.0 * h), an[n] = p->grad[j];
			gmax = fmax(gmax, fabs(an[n]));
			n++;
		}
	}
	for (int i = 0; i < n; i++)
		worst = fmax(worst, fabs(fd[i] - an[i]) / gmax);
	TAP_OK(n > 10 && gmax > 0.0 && worst < 2e-2, "%s: %d finite differences, worst error %.2e of the "
	       "largest gradient %.2e", moe_method_name(method), n, worst, gmax);
	moe_destroy(&mo);
	model_destroy(&m);
}

static void s_routing_errors(void)
{
	model_t *m = s_model();
	moe_config_t c = s_cfg(MOE_RES, 3, 0);
	moe_t *mo = moe_attach(m, &c, s_names, 3);
	moe_seg_t bad[2] = { { 1, 0, 2 }, { 2, 1, 3 } }, out[1] = { { 1, 0, 5 } }, none[1] = { { 7, 0, 1 } };

	TAP_OK(moe_route_fixed(mo, bad, 2, 3) < 0 && strstr(err_msg(), "overlaps"),
	       "overlapping segments are refused: %s", err_msg());
	TAP_OK(moe_route_fixed(mo, out, 1, 3) < 0, "a segment past the batch is refused");
	TAP_OK(moe_route_fixed(mo, none, 1, 3) < 0 && strstr(err_msg(), "lacks"), "a missing expert is refused");
	moe_destroy(&mo);
	model_destroy(&m);
}

static void s_decode(void)
{
	model_t *m = s_model();
	moe_config_t c = s_cfg(MOE_RES, 3, 0);
	moe_t *mo = moe_attach(m, &c, s_names, 3);
	decode_t *d;
	double worst = 0.0;
	int V = m->cfg.vocab_size;

	s_randomize(mo, 9);
	model_reserve(m, B, T);
	model_forward(m, s_tok, NULL, 1, T, 0, 0);
	float *full = malloc((size_t)T * V * sizeof *full);
	memcpy(full, m->logits, (size_t)T * V * sizeof *full);
	d = decode_new(m, T);
	const float *l = decode_feed(d, s_tok, 4);
	for (int p = 3; l && p < T; p++) {
		for (int v = 0; v < V; v++)
			worst = fmax(worst, fabs(l[v] - full[(size_t)p * V + v]));
		l = p + 1 < T ? decode_feed(d, s_tok + p + 1, 1) : NULL;
	}
	TAP_OK(worst < 1e-4 && decode_pos(d) == T,
	       "KV-cache decoding matches the full forward (modula-res), max diff %.2e", worst);
	TAP_OK(!decode_feed(d, s_tok, 1), "decoding past the cache is refused: %s", err_msg());
	free(full);
	decode_destroy(&d);
	moe_destroy(&mo);
	model_destroy(&m);
}

/* The device path's decoding (dmodel_decode_feed over the CPU op table:
 * the code the GPU runs) against the CPU engine's full forward, for a
 * mixture method, soft-routed or with every row to domain expert `fixed`. */
static void s_decode_device(int method, int fixed)
{
	model_t *m = s_model();
	moe_config_t c = s_cfg(method, 3, 0);
	moe_t *mo = moe_attach(m, &c, s_names, 3);
	const struct kdevice_ops *K = kdevice_ops(KDEV_CPU, KCUDA_F32);
	params_t frozen = { 0 };
	dmodel_t *dm = NULL;
	int V = m->cfg.vocab_size, ex[1] = { fixed }, rc = 0;
	float *full = malloc((size_t)T * V * sizeof *full), *l = malloc((size_t)V * sizeof *l);
	double worst = 0.0;

	s_randomize(mo, 9);
	if (fixed) {
		moe_seg_t seg = { fixed, 0, 1 };
		moe_route_fixed(mo, &seg, 1, 1);
	}
	model_reserve(m, 1, T);
	model_forward(m, s_tok, NULL, 1, T, 0, 0);
	memcpy(full, m->logits, (size_t)T * V * sizeof *full);
	if (!(dm = dmodel_from_host(m, K)) || dmodel_attach_moe(dm, mo, &frozen) < 0 ||
	    dmodel_reserve(dm, 1, T) < 0 || (fixed && dmodel_route_rows(dm, ex, 1, T) < 0))
		rc = -1;
	/* the prompt in one feed, then a token at a time, twice over (reset) */
	for (int pass = 0; pass < 2 && rc == 0; pass++) {
		dmodel_decode_reset(dm);
		rc = dmodel_decode_feed(dm, s_tok, 4, l);
		for (int p = 3; rc == 0 && p < T; p++) {
			for (int v = 0; v < V; v++)
				worst = fmax(worst, fabs(l[v] - full[(size_t)p * V + v]));
			if (p + 1 < T)
				rc = dmodel_decode_feed(dm, s_tok + p + 1, 1, l);
		}
	}
	TAP_OK(rc == 0 && worst < 1e-4 && dmodel_decode_pos(dm) == T,
	       "device-path decoding matches the full forward (%s, %s), max diff %.2e%s%s",
	       moe_method_name(method), fixed ? "one domain expert" : "soft routing", worst,
	       rc ? ": " : "", rc ? err_msg() : "");
	TAP_OK(dm && dmodel_decode_feed(dm, s_tok, 1, l) < 0,
	       "device-path decoding past the reservation is refused: %s", err_msg());
	free(full);
	free(l);
	dmodel_destroy(&dm);
	moe_destroy(&mo);
	model_destroy(&m);
}

/* The argmax after ids[0..n) by the full forward. */
static int s_greedy(model_t *m, const int *ids, int n)
{
	int V = m->cfg.vocab_size, best = 0;
	const float *l;

	model_forward(m, ids, NULL, 1, n, 0, 0);
	l = m->logits + (size_t)(n - 1) * V;
	for (int v = 1; v < V; v++)
		if (l[v] > l[best])
			best = v;
	return best;
}

static void s_exact(void)
{
	model_t *m = s_model();
	moe_config_t c = s_cfg(MOE_RES, 3, 0);
	moe_t *mo = moe_attach(m, &c, s_names, 3);
	tokenizer_t *tok = tokenizer_bytes_new();
	int ids[12] = { 5, 9, 13 }, V = m->cfg.vocab_size;
	data_record_t rec = { ids, 8, 3 };
	decode_t *d;

	s_randomize(mo, 2);
	model_reserve(m, 1, 12);
	for (int k = 3; k < 8; k++)
		ids[k] = s_greedy(m, ids, k);
	d = decode_new(m, 12);
	TAP_OK(eval_exact(d, tok, V, &rec, ids[7]) == 1, "exact match accepts the greedy continuation");
	ids[4] = (ids[4] + 1) % V;
	TAP_OK(eval_exact(d, tok, V, &rec, ids[7]) == 0, "exact match refuses a different token");
	ids[4] = (ids[4] + V - 1) % V;
	/* (the answer must not end in a newline for the eos to be compared) */
	ids[7] = (ids[7] + 1) % V;
	TAP_OK(ids[6] != '\n' && eval_exact(d, tok, V, &rec, ids[7]) == 0,
	       "exact match refuses an answer the model does not end");
	decode_destroy(&d);
	tokenizer_destroy(&tok);
	moe_destroy(&mo);
	model_destroy(&m);
}

static void s_files(void)
{
	char dir[] = "/tmp/modula-units-XXXXXX", base[300], bdir[300], peft[300], cmd[700];
	model_t *m = s_model(), *m2 = NULL;
	moe_config_t c = s_cfg(MOE_RES, 3, 0), cl = s_cfg(MOE_LORA, 0, 0);
	moe_t *mo = NULL, *mo2 = NULL;
	lora_t *lo = NULL;
	float *l1 = NULL, *l2 = NULL;
	size_t nl = (size_t)B * T * m->cfg.vocab_size * sizeof(float);

	if (!mkdtemp(dir))
		return;
	snprintf(base, sizeof base, "%s/base", dir);
	snprintf(bdir, sizeof bdir, "%s/bundle", dir);
	snprintf(peft, sizeof peft, "%s/peft", dir);
	model_save(m, base);
	mo = moe_attach(m, &c, s_names, 3);
	s_randomize(mo, 4);
	model_reserve(m, B, T);
	l1 = s_logits(m);
	TAP_OK(bundle_write(mo, bdir, base) == 0, "bundle written");
	m2 = model_load(base);
	mo2 = m2 ? bundle_load(m2, bdir) : NULL;
	if (mo2 && model_reserve(m2, B, T) == 0)
		l2 = s_logits(m2);
	TAP_OK(l2 && !memcmp(l1, l2, nl), "a bundle loaded again gives bit-identical logits");
	free(l1), free(l2), l1 = l2 = NULL;
	moe_destroy(&mo), moe_destroy(&mo2), model_destroy(&m2);
	snprintf(cmd, sizeof cmd, "%s/experts/math.safetensors", bdir);
	TAP_OK(bundle_export_peft(cmd, peft) < 0 && strstr(err_msg(), "universal"),
	       "a modula-res domain expert is not exported as PEFT: %s", err_msg());
	mo = moe_attach(m, &cl, s_names, 3);
	s_randomize(mo, 6);
	l1 = s_logits(m);
	snprintf(cmd, sizeof cmd, "%s/u.safetensors", dir);
	m2 = model_load(base);
	if (bundle_save_expert(mo, 0, cmd) == 0 && bundle_export_peft(cmd, peft) == 0 && m2 &&
	    (lo = lora_load(m2, peft)) && model_reserve(m2, B, T) == 0)
		l2 = s_logits(m2);
	TAP_OK(l2 && !memcmp(l1, l2, nl), "an expert exported as PEFT, loaded as LoRA: bit-identical logits");
	free(l1), free(l2);
	lora_destroy(&lo);
	moe_destroy(&mo);
	model_destroy(&m2);
	model_destroy(&m);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
}

int main(void)
{
	for (int i = 0; i < B * T; i++) {
		s_tok[i] = (i * 7 + 3) % 48;
		s_tgt[i] = i % T < 4 || i % T == T - 1 ? -1 : (i * 11 + 5) % 48;
	}
	s_fresh();
	s_fd(MOE_RES);
	s_fd(MOE_FLAN);
	s_fd(MOE_MOLORA);
	s_routing_errors();
	s_decode();
	s_decode_device(MOE_RES, 0);
	s_decode_device(MOE_FLAN, 0);
	s_decode_device(MOE_MOLORA, 0);
	s_decode_device(MOE_RES_NORES, 2);
	s_decode_device(MOE_FLAN, 3);
	s_exact();
	s_files();
	return tap_done();
}
