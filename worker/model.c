/* model.c: the LLaMA-family decoder, forward and backward over the
 * kernels of kernels/cpu/ops.h. See model.h. */
#include "config.h"
#include "worker/model.h"
#include "worker/rng.h"
#include "worker/safetensors.h"
#include "kernels/cpu/ops.h"
#include "err.h"
#include "fsx.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_slot_names[MODEL_NSLOTS] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
};

const char *model_slot_name(int slot)
{
	return s_slot_names[slot];
}

const char *model_slot_module(int slot)
{
	return slot <= MODEL_O ? "self_attn" : "mlp";
}

/* Activations of one layer, kept from forward for backward. */
typedef struct layer_acts {
	float *ln1, *rstd1;     /* [N,C], [N] */
	float *q, *k, *v;       /* [N,QD], [N,KD], [N,KD], after RoPE */
	float *att;             /* [B,NH,T,T] */
	float *y;               /* [N,QD] attention output, o_proj input */
	float *mid;             /* [N,C] residual after attention */
	float *ln2, *rstd2;     /* [N,C], [N] */
	float *gate, *up, *sw;  /* [N,F] */
} layer_acts_t;

struct model_acts {
	layer_acts_t *l;
	float **res;            /* [L+1][N,C]: res[0] embeddings, res[l+1] layer l out */
	float *lnf, *rstdf;     /* [N,C], [N] */
	float *logits, *lse, *losses, *dlosses; /* [N,V], [N], [N], [N] */
	int *tokens, *targets;  /* [N] */
	int ntargets;
	float *tmp;             /* [N,C] a linear output before its residual add */
	/* backward scratch, reused by every layer */
	float *dres, *dln, *dq, *dk, *dv, *dy, *dgate, *dup, *dsw, *dlogits, *dscratch;
	float *rope_cos, *rope_sin; /* [max_t, HS/2] */
	float *mem;
};

/* Walks the weight block in a fixed order: counts when base is NULL,
 * assigns pointers (and lists names) otherwise. */
typedef struct cursor {
	float *base, *gbase;
	size_t off;
	params_t *list;
	int failed;
} cursor_t;

static float *s_take(cursor_t *c, float **grad, const char *name, int64_t d0, int64_t d1)
{
	int64_t shape[2] = { d0, d1 };
	size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
	float *p = c->base ? c->base + c->off : NULL;

	if (grad)
		*grad = c->gbase ? c->gbase + c->off : NULL;
	if (c->list && params_add(c->list, name, p, c->gbase ? c->gbase + c->off : NULL,
				  d1 ? 2 : 1, shape) < 0)
		c->failed = 1;
	c->off += (n + 15) & ~(size_t)15;    /* keep every tensor 64-byte aligned */
	return p;
}

static void s_layout(model_t *m, cursor_t *c)
{
	const model_config_t *g = &m->cfg;
	int64_t C = g->dim, QD = (int64_t)g->n_heads * g->head_dim, KD = (int64_t)g->n_kv_heads * g->head_dim;
	int64_t F = g->ffn_dim, V = g->vocab_size;
	char name[128];

	m->wte = s_take(c, &m->dwte, "model.embed_tokens.weight", V, C);
	for (int l = 0; l < g->n_layers; l++) {
		model_layer_t *L = &m->layers[l];
		int64_t dims[MODEL_NSLOTS][2] = {
			{ QD, C }, { KD, C }, { KD, C }, { C, QD }, { F, C }, { F, C }, { C, F }
		};
		snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
		L->ln1 = s_take(c, &L->dln1, name, C, 0);
		snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
		L->ln2 = s_take(c, &L->dln2, name, C, 0);
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			model_linear_t *lin = &L->lin[s];
			lin->out = (int)dims[s][0], lin->in = (int)dims[s][1];
			snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l,
				 model_slot_module(s), model_slot_name(s));
			lin->w = s_take(c, &lin->dw, name, dims[s][0], dims[s][1]);
			lin->b = lin->db = NULL;
			if (g->qkv_bias && s <= MODEL_V) {
				snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l,
					 model_slot_name(s));
				lin->b = s_take(c, &lin->db, name, dims[s][0], 0);
			}
		}
	}
	m->norm = s_take(c, &m->dnorm, "model.norm.weight", C, 0);
	if (g->tie_embeddings)
		m->head = m->wte, m->dhead = m->dwte;
	else
		m->head = s_take(c, &m->dhead, "lm_head.weight", V, C);
}

static float *s_alloc(size_t n)
{
	size_t bytes = ((n * sizeof(float)) + 63) & ~(size_t)63;
	float *p = aligned_alloc(64, bytes ? bytes : 64);

	if (p)
		memset(p, 0, bytes);
	return p;
}

/* (Re)assign pointers into mem/gmem and relist the parameters. */
static int s_bind(model_t *m)
{
	cursor_t c = { .base = m->mem, .gbase = m->gmem, .list = &m->params };

	params_clear(&m->params);
	s_layout(m, &c);
	return c.failed ? -1 : 0;
}

model_t *model_new(const model_config_t *cfg)
{
	model_t *m;
	cursor_t count = { 0 };

	if (model_config_check(cfg) < 0)
		return NULL;
	if (!(m = calloc(1, sizeof *m)))
		goto oom;
	m->cfg = *cfg;
	if (!(m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers)))
		goto oom;
	s_layout(m, &count);
	m->n_params = count.off;
	if (!(m->mem = s_alloc(m->n_params)))
		goto oom;
	if (s_bind(m) < 0)
		goto err;
	return m;
oom:
	err_set("out of memory creating a model with %d layers of width %d", cfg->n_layers, cfg->dim);
err:
	model_destroy(&m);
	return NULL;
}

model_t *model_shape(const model_config_t *cfg)
{
	model_t *m;
	cursor_t count = { 0 };

	if (model_config_check(cfg) < 0)
		return NULL;
	if (!(m = calloc(1, sizeof *m)) || !(m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers))) {
		free(m);
		err_set("out of memory describing a model with %d layers", cfg->n_layers);
		return NULL;
	}
	m->cfg = *cfg;
	s_layout(m, &count);
	m->n_params = count.off;
	return m;
}

static void s_acts_free(model_t *m)
{
	if (!m->acts)
		return;
	free(m->acts->l);
	free(m->acts->res);
	free(m->acts->tokens);
	free(m->acts->targets);
	free(m->acts->mem);
	free(m->acts);
	m->acts = NULL;
}

void model_destroy(model_t **pm)
{
	model_t *m = pm ? *pm : NULL;

	if (!m)
		return;
	for (int l = 0; m->layers && l < m->cfg.n_layers; l++)
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			adapter_t *ad = m->layers[l].lin[s].ad;
			if (ad)
				ad->ops->destroy(ad);
		}
	s_acts_free(m);
	params_clear(&m->params);
	free(m->layers);
	free(m->mem);
	free(m->gmem);
	free(m);
	*pm = NULL;
}

void model_init_random(model_t *m, uint64_t seed)
{
	rng_t r;

	rng_seed(&r, seed);
	for (int i = 0; i < m->params.n; i++) {
		param_t *p = &m->params.v[i];
		float fill = strstr(p->name, "norm.weight") ? 1.0f : 0.0f;
		for (size_t j = 0; j < p->n; j++)
			p->data[j] = p->ndim == 2 ? 0.02f * rng_normal(&r) : fill;
	}
}

model_t *model_load(const char *dir)
{
	char path[4096];
	model_config_t cfg;
	model_t *m = NULL;
	st_set_t *set = NULL;

	snprintf(path, sizeof path, "%s/config.json", dir);
	if (model_config_load(path, &cfg) < 0)
		return NULL;
	if (!(m = model_new(&cfg)))
		return NULL;
	if (!(set = st_set_open(dir)))
		goto err;
	for (int i = 0; i < m->params.n; i++) {
		param_t *p = &m->params.v[i];
		const st_tensor_t *t = st_set_need(set, p->name, p->ndim, p->shape);
		if (!t || st_to_f32(t, p->data) < 0)
			goto err;
	}
	st_set_close(&set);
	return m;
err:
	err_prefix("loading model '%s'", dir);
	st_set_close(&set);
	model_destroy(&m);
	return NULL;
}

int model_save(const model_t *m, const char *dir)
{
	char path[4096];
	st_writer_t *w = NULL;

	if (fsx_mkdirs(dir, 0755) < 0)
		return -1;
	snprintf(path, sizeof path, "%s/config.json", dir);
	if (model_config_save(&m->cfg, path) < 0)
		return -1;
	if (!(w = st_writer_new()))
		return -1;
	for (int i = 0; i < m->params.n; i++) {
		const param_t *p = &m->params.v[i];
		if (st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, p->data) < 0)
			goto err;
	}
	if (st_writer_meta(w, "format", "pt") < 0)
		goto err;
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (st_writer_write(w, path) < 0)
		goto err;
	st_writer_destroy(&w);
	return 0;
err:
	st_writer_destroy(&w);
	return -1;
}

int model_enable_grads(model_t *m)
{
	if (m->gmem)
		return 0;
	if (!(m->gmem = s_alloc(m->n_params)))
		return err_set("out of memory for the gradients of %zu parameters", m->n_params);
	return s_bind(m);
}

/* Carve the activation block: counts when a->mem is NULL. */
static size_t s_acts_layout(model_t *m, model_acts_t *a, int b, int t)
{
	const model_config_t *g = &m->cfg;
	size_t N = (size_t)b * t, C = g->dim, QD = (size_t)g->n_heads * g->head_dim;
	size_t KD = (size_t)g->n_kv_heads * g->head_dim, F = g->ffn_dim, V = g->vocab_size;
	size_t off = 0;
	int nthreads = omp_get_max_threads();

#define TAKE(ptr, n) do { (ptr) = a->mem ? a->mem + off : NULL; off += ((size_t)(n) + 15) & ~(size_t)15; } while (0)
	for (int l = 0; l < g->n_layers; l++) {
		layer_acts_t *la = &a->l[l];
		TAKE(la->ln1, N * C); TAKE(la->rstd1, N);
		TAKE(la->q, N * QD); TAKE(la->k, N * KD); TAKE(la->v, N * KD);
		TAKE(la->att, (size_t)b * g->n_heads * t * t);
		TAKE(la->y, N * QD); TAKE(la->mid, N * C);
		TAKE(la->ln2, N * C); TAKE(la->rstd2, N);
		TAKE(la->gate, N * F); TAKE(la->up, N * F); TAKE(la->sw, N * F);
	}
	for (int l = 0; l <= g->n_layers; l++)
		TAKE(a->res[l], N * C);
	TAKE(a->lnf, N * C); TAKE(a->rstdf, N);
	TAKE(a->logits, N * V); TAKE(a->lse, N); TAKE(a->losses, N); TAKE(a->dlosses, N);
	TAKE(a->tmp, N * C);
	TAKE(a->dres, N * C); TAKE(a->dln, N * C);
	TAKE(a->dq, N * QD); TAKE(a->dk, N * KD); TAKE(a->dv, N * KD); TAKE(a->dy, N * QD);
	TAKE(a->dgate, N * F); TAKE(a->dup, N * F); TAKE(a->dsw, N * F);
	TAKE(a->dlogits, N * V);
	TAKE(a->dscratch, (size_t)nthreads * t * t);
	TAKE(a->rope_cos, (size_t)t * g->head_dim / 2); TAKE(a->rope_sin, (size_t)t * g->head_dim / 2);
#undef TAKE
	return off;
}

int model_reserve(model_t *m, int b, int t)
{
	model_acts_t *a;
	size_t n;

	if (b <= 0 || t <= 0 || t > m->cfg.max_seq)
		return err_set("batch shape [%d, %d] out of range (max sequence %d)", b, t, m->cfg.max_seq);
	if (m->acts && b <= m->max_b && t <= m->max_t)
		return 0;
	s_acts_free(m);
	if (!(a = m->acts = calloc(1, sizeof *a)) ||
	    !(a->l = calloc((size_t)m->cfg.n_layers, sizeof *a->l)) ||
	    !(a->res = calloc((size_t)m->cfg.n_layers + 1, sizeof *a->res)) ||
	    !(a->tokens = calloc((size_t)b * t, sizeof(int))) ||
	    !(a->targets = calloc((size_t)b * t, sizeof(int))))
		goto oom;
	n = s_acts_layout(m, a, b, t);
	if (!(a->mem = s_alloc(n)))
		goto oom;
	s_acts_layout(m, a, b, t);
	op_rope_table(a->rope_cos, a->rope_sin, t, m->cfg.head_dim, 0, m->cfg.rope_theta);
	m->max_b = b, m->max_t = t;
	for (int l = 0; l < m->cfg.n_layers; l++)
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			adapter_t *ad = m->layers[l].lin[s].ad;
			if (ad && ad->ops->reserve(ad, b * t) < 0)
				return -1;
		}
	return 0;
oom:
	s_acts_free(m);
	return err_set("out of memory for activations of a [%d, %d] batch", b, t);
}

static void s_lin_forward(const model_linear_t *lin, float *out, const float *inp, int n,
			  uint64_t key, int train)
{
	op_matmul_forward(out, inp, lin->w, lin->b, n, lin->in, lin->out);
	if (lin->ad)
		lin->ad->ops->forward(lin->ad, out, inp, n, key, train);
}

/* dinp may be NULL: then only weight and adapter gradients are made. */
static void s_lin_backward(const model_linear_t *lin, float *dinp, const float *dout,
			   const float *inp, int n)
{
	op_matmul_backward(dinp, lin->dw, lin->db, dout, inp, lin->w, n, lin->in, lin->out);
	if (lin->ad)
		lin->ad->ops->backward(lin->ad, dinp, dout, inp, n);
}

float model_forward(model_t *m, const int *tokens, const int *targets, int b, int t,
		    uint64_t key, int train)
{
	const model_config_t *g = &m->cfg;
	model_acts_t *a = m->acts;
	int N = b * t, C = g->dim, NH = g->n_heads, NKV = g->n_kv_heads, HS = g->head_dim;
	double sum = 0.0;

	m->b = b, m->t = t, m->logits = a->logits;
	memcpy(a->tokens, tokens, (size_t)N * sizeof(int));
	op_embedding_forward(a->res[0], tokens, m->wte, N, C);
	for (int l = 0; l < g->n_layers; l++) {
		const model_layer_t *L = &m->layers[l];
		layer_acts_t *la = &a->l[l];
		op_rmsnorm_forward(la->ln1, la->rstd1, a->res[l], L->ln1, N, C, g->rms_eps);
		s_lin_forward(&L->lin[MODEL_Q], la->q, la->ln1, N, key, train);
		s_lin_forward(&L->lin[MODEL_K], la->k, la->ln1, N, key, train);
		s_lin_forward(&L->lin[MODEL_V], la->v, la->ln1, N, key, train);
		op_rope_forward(la->q, a->rope_cos, a->rope_sin, b, t, NH, HS);
		op_rope_forward(la->k, a->rope_cos, a->rope_sin, b, t, NKV, HS);
		op_attention_forward(la->y, la->att, la->q, la->k, la->v, b, t, NH, NKV, HS);
		s_lin_forward(&L->lin[MODEL_O], a->tmp, la->y, N, key, train);
		op_residual_forward(la->mid, a->res[l], a->tmp, (size_t)N * C);
		op_rmsnorm_forward(la->ln2, la->rstd2, la->mid, L->ln2, N, C, g->rms_eps);
		s_lin_forward(&L->lin[MODEL_GATE], la->gate, la->ln2, N, key, train);
		s_lin_forward(&L->lin[MODEL_UP], la->up, la->ln2, N, key, train);
		op_swiglu_forward(la->sw, la->gate, la->up, (size_t)N * g->ffn_dim);
		s_lin_forward(&L->lin[MODEL_DOWN], a->tmp, la->sw, N, key, train);
		op_residual_forward(a->res[l + 1], la->mid, a->tmp, (size_t)N * C);
	}
	op_rmsnorm_forward(a->lnf, a->rstdf, a->res[g->n_layers], m->norm, N, C, g->rms_eps);
	op_matmul_forward(a->logits, a->lnf, m->head, NULL, N, C, g->vocab_size);
	a->ntargets = 0;
	if (!targets)
		return 0.0f;
	memcpy(a->targets, targets, (size_t)N * sizeof(int));
	op_crossentropy_forward(a->losses, a->lse, a->logits, targets, N, g->vocab_size);
	for (int i = 0; i < N; i++)
		if (targets[i] >= 0)
			sum += a->losses[i], a->ntargets++;
	return a->ntargets ? (float)(sum / a->ntargets) : 0.0f;
}

int model_target_count(const model_t *m)
{
	return m->acts ? m->acts->ntargets : 0;
}

static void s_zero(float *p, size_t n)
{
	memset(p, 0, n * sizeof(float));
}

void model_backward(model_t *m, float scale)
{
	const model_config_t *g = &m->cfg;
	model_acts_t *a = m->acts;
	int b = m->b, t = m->t, N = b * t, C = g->dim, NH = g->n_heads, NKV = g->n_kv_heads;
	int HS = g->head_dim, V = g->vocab_size;
	size_t NC = (size_t)N * C, NF = (size_t)N * g->ffn_dim;
	size_t NQ = (size_t)N * NH * HS, NK = (size_t)N * NKV * HS;

	if (!a->ntargets)
		return;
	for (int i = 0; i < N; i++)
		a->dlosses[i] = a->targets[i] >= 0 ? scale / (float)a->ntargets : 0.0f;
	s_zero(a->dlogits, (size_t)N * V);
	op_crossentropy_backward(a->dlogits, a->dlosses, a->logits, a->lse, a->targets, N, V);
	s_zero(a->dln, NC);
	op_matmul_backward(a->dln, m->dhead, NULL, a->dlogits, a->lnf, m->head, N, C, V);
	s_zero(a->dres, NC);
	op_rmsnorm_backward(a->dres, m->dnorm, a->dln, a->res[g->n_layers], m->norm, a->rstdf, N, C);
	for (int l = g->n_layers - 1; l >= 0; l--) {
		const model_layer_t *L = &m->layers[l];
		layer_acts_t *la = &a->l[l];
		/* Below layer 0 only the embedding wants a gradient. */
		int need_dx = l > 0 || m->dwte;

		/* res[l+1] = mid + down(swiglu(gate(ln2), up(ln2))) */
		s_zero(a->dsw, NF);
		s_lin_backward(&L->lin[MODEL_DOWN], a->dsw, a->dres, la->sw, N);
		s_zero(a->dgate, NF);
		s_zero(a->dup, NF);
		op_swiglu_backward(a->dgate, a->dup, a->dsw, la->gate, la->up, NF);
		s_zero(a->dln, NC);
		s_lin_backward(&L->lin[MODEL_GATE], a->dln, a->dgate, la->ln2, N);
		s_lin_backward(&L->lin[MODEL_UP], a->dln, a->dup, la->ln2, N);
		op_rmsnorm_backward(a->dres, L->dln2, a->dln, la->mid, L->ln2, la->rstd2, N, C);
		/* mid = res[l] + o(attention(rope(q(ln1)), rope(k(ln1)), v(ln1))) */
		s_zero(a->dy, NQ);
		s_lin_backward(&L->lin[MODEL_O], a->dy, a->dres, la->y, N);
		s_zero(a->dq, NQ);
		s_zero(a->dk, NK);
		s_zero(a->dv, NK);
		op_attention_backward(a->dq, a->dk, a->dv, a->dscratch, a->dy, la->att,
				      la->q, la->k, la->v, b, t, NH, NKV, HS);
		op_rope_backward(a->dq, a->rope_cos, a->rope_sin, b, t, NH, HS);
		op_rope_backward(a->dk, a->rope_cos, a->rope_sin, b, t, NKV, HS);
		s_zero(a->dln, NC);
		s_lin_backward(&L->lin[MODEL_Q], need_dx ? a->dln : NULL, a->dq, la->ln1, N);
		s_lin_backward(&L->lin[MODEL_K], need_dx ? a->dln : NULL, a->dk, la->ln1, N);
		s_lin_backward(&L->lin[MODEL_V], need_dx ? a->dln : NULL, a->dv, la->ln1, N);
		if (need_dx || L->dln1)
			op_rmsnorm_backward(need_dx ? a->dres : NULL, L->dln1, a->dln, a->res[l],
					    L->ln1, la->rstd1, N, C);
	}
	if (m->dwte)
		op_embedding_backward(m->dwte, a->dres, a->tokens, N, C);
}
