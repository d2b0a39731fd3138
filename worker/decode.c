/* decode.c: the KV-cache forward; see decode.h. The layer is model.c's
 * forward for one sequence, with attention over the cache. */
#include "config.h"
#include "worker/decode.h"
#include "kernels/cpu/ops.h"
#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct decode {
	model_t *m;
	int max_t, pos;
	float **kc, **vc;       /* [L][max_t, KD] keys (after RoPE) and values */
	float *x, *ln, *q, *k, *v, *y, *tmp, *gate, *up, *sw; /* [max_t, ...] */
	float *rstd, *cosv, *sinv, *att, *logits;
	float *mem;
};

static size_t s_layout(decode_t *d, const model_config_t *g, int T)
{
	size_t C = g->dim, QD = (size_t)g->n_heads * g->head_dim, KD = (size_t)g->n_kv_heads * g->head_dim;
	size_t F = g->ffn_dim, off = 0;

#define TAKE(p, n) do { (p) = d->mem ? d->mem + off : NULL; off += (size_t)(n); } while (0)
	for (int l = 0; l < g->n_layers; l++) {
		TAKE(d->kc[l], T * KD);
		TAKE(d->vc[l], T * KD);
	}
	TAKE(d->x, T * C); TAKE(d->ln, T * C); TAKE(d->q, T * QD); TAKE(d->k, T * KD);
	TAKE(d->v, T * KD); TAKE(d->y, T * QD); TAKE(d->tmp, T * C); TAKE(d->gate, T * F);
	TAKE(d->up, T * F); TAKE(d->sw, T * F); TAKE(d->rstd, T);
	TAKE(d->cosv, T * g->head_dim / 2); TAKE(d->sinv, T * g->head_dim / 2);
	TAKE(d->att, (size_t)g->n_heads * T * T); TAKE(d->logits, g->vocab_size);
#undef TAKE
	return off;
}

decode_t *decode_new(model_t *m, int max_t)
{
	decode_t *d;
	size_t n;

	if (max_t <= 0 || max_t > m->cfg.max_seq)
		return err_set("decode length %d out of range (max sequence %d)", max_t, m->cfg.max_seq), NULL;
	if (model_reserve(m, m->max_b > 0 ? m->max_b : 1, max_t > m->max_t ? max_t : m->max_t) < 0)
		return NULL;
	if (!(d = calloc(1, sizeof *d)) || !(d->kc = calloc((size_t)m->cfg.n_layers, sizeof *d->kc)) ||
	    !(d->vc = calloc((size_t)m->cfg.n_layers, sizeof *d->vc)))
		goto oom;
	d->m = m, d->max_t = max_t;
	n = s_layout(d, &m->cfg, max_t);
	if (!(d->mem = calloc(n, sizeof(float))))
		goto oom;
	s_layout(d, &m->cfg, max_t);
	return d;
oom:
	decode_destroy(&d);
	return err_set("out of memory for a KV cache of %d tokens", max_t), NULL;
}

void decode_destroy(decode_t **pd)
{
	decode_t *d = pd ? *pd : NULL;

	if (!d)
		return;
	free(d->kc);
	free(d->vc);
	free(d->mem);
	free(d);
	*pd = NULL;
}

void decode_reset(decode_t *d)
{
	d->pos = 0;
}

int decode_pos(const decode_t *d)
{
	return d->pos;
}

static void s_lin(const model_linear_t *lin, float *out, const float *inp, int n)
{
	op_matmul_forward(out, inp, lin->w, lin->b, n, lin->in, lin->out);
	if (lin->ad)
		lin->ad->ops->forward(lin->ad, out, inp, n, 0, 0);
}

/* y[n, NH*HS] for the new rows at positions pos0.. over cached k, v. */
static void s_attend(decode_t *d, int l, int n, int pos0)
{
	const model_config_t *g = &d->m->cfg;
	int NH = g->n_heads, HS = g->head_dim, KD = g->n_kv_heads * HS, grp = g->n_heads / g->n_kv_heads;
	float sc = 1.0f / sqrtf((float)HS);

	#pragma omp parallel for collapse(2) schedule(static)
	for (int i = 0; i < n; i++)
		for (int h = 0; h < NH; h++) {
			const float *q = d->q + ((size_t)i * NH + h) * HS;
			float *a = d->att + ((size_t)h * d->max_t + i) * d->max_t, *y = d->y + ((size_t)i * NH + h) * HS;
			int last = pos0 + i, kh = h / grp;
			float mx = -INFINITY, sum = 0.0f;
			for (int j = 0; j <= last; j++) {
				const float *k = d->kc[l] + (size_t)j * KD + (size_t)kh * HS;
				float s = 0.0f;
				for (int c = 0; c < HS; c++)
					s += q[c] * k[c];
				a[j] = s * sc;
				mx = fmaxf(mx, a[j]);
			}
			for (int j = 0; j <= last; j++)
				a[j] = expf(a[j] - mx), sum += a[j];
			memset(y, 0, (size_t)HS * sizeof *y);
			for (int j = 0; j <= last; j++) {
				const float *v = d->vc[l] + (size_t)j * KD + (size_t)kh * HS;
				float w = a[j] / sum;
				for (int c = 0; c < HS; c++)
					y[c] += w * v[c];
			}
		}
}

const float *decode_feed(decode_t *d, const int *ids, int n)
{
	model_t *m = d->m;
	const model_config_t *g = &m->cfg;
	int C = g->dim, KD = g->n_kv_heads * g->head_dim, pos0 = d->pos;

	if (n <= 0 || pos0 + n > d->max_t)
		return err_set("decoding past %d tokens", d->max_t), NULL;
	op_embedding_forward(d->x, ids, m->wte, n, C);
	op_rope_table(d->cosv, d->sinv, n, g->head_dim, pos0, g->rope_theta);
	for (int l = 0; l < g->n_layers; l++) {
		const model_layer_t *L = &m->layers[l];
		op_rmsnorm_forward(d->ln, d->rstd, d->x, L->ln1, n, C, g->rms_eps);
		s_lin(&L->lin[MODEL_Q], d->q, d->ln, n);
		s_lin(&L->lin[MODEL_K], d->k, d->ln, n);
		s_lin(&L->lin[MODEL_V], d->v, d->ln, n);
		op_rope_forward(d->q, d->cosv, d->sinv, 1, n, g->n_heads, g->head_dim);
		op_rope_forward(d->k, d->cosv, d->sinv, 1, n, g->n_kv_heads, g->head_dim);
		memcpy(d->kc[l] + (size_t)pos0 * KD, d->k, (size_t)n * KD * sizeof(float));
		memcpy(d->vc[l] + (size_t)pos0 * KD, d->v, (size_t)n * KD * sizeof(float));
		s_attend(d, l, n, pos0);
		s_lin(&L->lin[MODEL_O], d->tmp, d->y, n);
		op_residual_forward(d->x, d->x, d->tmp, (size_t)n * C);
		op_rmsnorm_forward(d->ln, d->rstd, d->x, L->ln2, n, C, g->rms_eps);
		s_lin(&L->lin[MODEL_GATE], d->gate, d->ln, n);
		s_lin(&L->lin[MODEL_UP], d->up, d->ln, n);
		op_swiglu_forward(d->sw, d->gate, d->up, (size_t)n * g->ffn_dim);
		s_lin(&L->lin[MODEL_DOWN], d->tmp, d->sw, n);
		op_residual_forward(d->x, d->x, d->tmp, (size_t)n * C);
	}
	const float *last = d->x + (size_t)(n - 1) * C;
	op_rmsnorm_forward(d->ln, d->rstd, last, m->norm, 1, C, g->rms_eps);
	op_matmul_forward(d->logits, d->ln, m->head, NULL, 1, C, g->vocab_size);
	d->pos += n;
	return d->logits;
}
