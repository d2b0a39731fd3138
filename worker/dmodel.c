/* dmodel.c: the decoder over the op table; see dmodel.h. The order of the
 * ops is model.c's; what differs is where tensors live (the backend's
 * memory, in its storage type), that every op can fail, and that the base
 * is always frozen. */
#include "config.h"
#include "worker/dmodel.h"
#include "worker/safetensors.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/kcuda.h"
#include "err.h"
#include "log.h"
#include "mtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D_TRY(x) do { if ((x) < 0) return -1; } while (0)
#define D_PTR(x) do { if (!(x)) return -1; } while (0)

/* A group of adapter tensors in one allocation (stacked experts share one):
 * `cur` in the storage type (what the ops read), the fp32 master, and when
 * any member trains its gradient and moments. */
typedef struct dbuf {
	size_t n;
	int trains;
	void *cur;
	float *master, *grad, *m, *v;
} dbuf_t;

/* One host tensor inside a dbuf: elements [off, off + n). `transposed`:
 * the host holds [rows, cols] and the device [cols, rows] (B matrices). */
typedef struct dparam {
	param_t *host;
	dbuf_t *buf;
	size_t off;
	int transposed;
	int train_index;        /* in the optimizer's list, or -1 when frozen */
} dparam_t;

/* The adapter on one linear layer. */
typedef struct dad {
	int res, nores;
	int mol;                /* MoLoRA: e experts of rank r over x, soft-routed (r0 = 0):
				 * a0 = [A_1; ...; A_e; W_R], bcat = [B_1^T; ...], u0 = [x A^T
				 * | router logits] = x a0^T (one product; rows s_mol_ld
				 * apart), cat = sd s_i u_i; MoDULA-Flan the same with the
				 * universal expert (rank r0, scale s0) first in a0 and bcat
				 * and under the router */
	int in, out;
	int r0;                 /* the LoRA / universal expert */
	float s0;
	dbuf_t a0;              /* A0 [r0, in]; Res: [A0; W_R] [r0 + e, in] */
	dbuf_t bcat;            /* [B0^T; B_1^T; ...; B_e^T]: [r0 + e*r, out] */
	int e, r;               /* Res: domain experts of rank r */
	float sd, slope;
	dbuf_t a;               /* A [e*r, out] (A_i stacked) */
	void *mab;              /* M = A B0 [e*r, r0] (s_res_batched, forward) */
	float *p;               /* P = dz^T u0s [e*r, r0] (backward; s_res_batched) */
	void *u0;               /* LoRA: u0 [N, r0] */
	void *cat;              /* Res: [s0 u0 | zw] [N, r0 + e*r] */
	void *z, *zl;           /* Res: [N, e*r] */
	float *s;               /* router probabilities [N, E], E = e (Flan: e + 1) */
} dad_t;

#define DMODEL_GRAPHS 8   /* batch shapes with a recorded graph */

typedef struct dlin {
	void *w, *b;
	int in, out;
	int ka;                 /* o, down folded (s_tail_build): w is [W; A; 0], [ldr, in] */
	dad_t *ad;
} dlin_t;

/* Plain LoRAs of one rank on the projections that read the same input
 * (q, k, v of a1; gate, up of a2) whose A matrices lie one after the
 * other on the device (dmodel_attach_lora places them so when they
 * train): one product x [A_1; A_2; ...]^T gives every u_i (columns of u,
 * [N, ns r]), and in backward one product each gives every dA_i and the
 * whole dx += du A. Set by dmodel_reserve; ns 0 when not so. */
typedef struct dgroup {
	int ns, r, slot[3];
	void *u;                /* [N, ns r], kept for backward (not when folded) */
} dgroup_t;

/* A dgroup folded into its base products (s_fold_build; MODULA_FOLD=0
 * turns it off): the group's input is X = [x | s0 u_1 | ... | s0 u_ns | 1
 * | 0] ([N, ldx], ldx a multiple of 8; the column of ones only when a
 * member has a bias), and member i's weight is W'_i [ldx, out_i] = [W_i^T;
 * 0; B_i^T (rows C + i r ...); 0; b_i; 0], its B^T rows copied from the
 * adapter's whenever those change (s_fold_refresh). Then y_i = X W'_i is
 * the base product, the adapter's B product and the bias in one product
 * (y_i not read and written again), and in backward dy_i W'_i^T gives
 * [dx | ... dy_i B_i ...] at once (dy_i not read again for du). W_i and
 * b_i live only in W'_i then. MoDULA-Res (Flan, MoLoRA) layers on all of
 * a group's projections fold the same way with their cat = [s0 u0 | zw]
 * (the router op's weighted u; r0 + e r columns, copied into X after the
 * fused row kernel) in place of s0 u and their bcat = [B0^T; B_1^T; ...]
 * in W'_i (-nores: without B0^T). */
typedef struct dfold {
	int ldx;                /* 0: not folded */
	int one;                /* X's column of ones, or -1 (read only when ldx) */
	int ns, r, slot[3];     /* the dgroup's (r: a LoRA group's rank) */
	int res;                /* the members are Res, Flan or MoLoRA layers (a cat each) */
	int off[3], w[3];       /* member i's columns of X: C + off[i], w[i] of them */
	void *wt[3];
	/* Res members only, with m->direct: their a0 = [A0; W_R] rows
	 * stacked, member i's at rows off[i] of acat [wcat, C] (the rest
	 * zero), copied in with the B^T rows (s_fold_sets): one product gives
	 * every member's ur, one every member's dx += dcat a0 (soft routing) */
	void *acat;
	int wcat;
} dfold_t;

typedef struct dlayer {
	void *ln1, *ln2;
	dlin_t lin[MODEL_NSLOTS];
	dgroup_t grp[2];        /* 0: q, k, v; 1: gate, up */
	dfold_t fold[2];        /* the same groups folded (a1, a2 are their X) */
	/* activations kept for backward */
	void *a1, *q, *k, *v, *y, *mid, *a2, *gate, *up, *sw;
	float *rstd1, *rstd2, *att;
} dlayer_t;

struct dmodel {
	const struct kdevice_ops *K;
	model_config_t cfg;
	void *wte, *norm, *head;
	dlayer_t *l;
	dparam_t *p;
	int np, pcap;
	dbuf_t **bufs;
	int nbufs, bcap;
	/* The training buffers live in one span per kind (s_pack), so that
	 * the optimizer is one launch per kind when every member trains. */
	size_t ntrain;
	float *tmaster, *tgrad, *tm, *tv;
	void *tcur;
	int fused_step;         /* no frozen member inside a training buffer */
	int nres;               /* MoDULA-Res layers (s_res_batched) */
	void **owned;           /* everything allocated through K */
	int nowned, ocap;
	/* activations, reserved for [max_b, max_t] */
	int max_b, max_t, b, t, ntargets;
	void **res, *lnf, *logits, *tmp;
	float *rstdf, *losses, *lse, *dlosses, *cosv, *sinv;
	int *tok, *tgt;
	void *dres, *dln, *dq, *dk, *dv, *dy, *dgate, *dup, *dsw;
	void *x1, *x3, *xu;     /* adapter scratch */
	void *xg;               /* [N, ns r] of the widest dgroup: its du */
	int *htgt;
	float *hlosses, *hdl;
	void **acts;            /* the reservation's buffers */
	int nacts, acap;
	/* Fixed routing of the Res layers (the domain stage): each sequence
	 * to one domain expert, as router logits 0 / -1e30 (`fixed`, [N, e];
	 * Flan [N, e + 1]) copied into ur's router columns by a product with
	 * `eye` [e, e] (Res) or read by the router op (Flan). */
	int fixed, fixed_e;
	/* folded groups (dfold_t): 1 to fold at attach; the identity that
	 * copies du (Res: cat, dcat) between X's or dx's columns and a buffer
	 * of its own (eye_w, [eye_n, eye_n]); the copies of B^T into the W'
	 * as batched products, one per shape, each with its identity */
	int fold, nfolded, eye_n, nfset;
	/* 1 (MODULA_FOLD_DIRECT=0: 0): those copies not made where a product
	 * or row kernel can read or write the columns in place (u into X's
	 * columns, du and dcat read from dx's and dres's, cat written into
	 * X's): one launch fewer each, the same numbers */
	int direct;
	/* o and down folded in backward (s_tail_build): dres has ldr columns,
	 * the last ones holding the adapter's du (Res: dcat's [u0 | router]
	 * part) for dx = [dres | du] [W; A] */
	int ntail, ldr;
	void *eye_w;
	struct dfset {
		int out, r, n;  /* r rows of out; n copies */
		void *eye;      /* [r, r] */
		void **c;
		const void **a, **b;
	} *fset;
	int fixed_head;         /* Flan: a first logit column, the universal expert's (-1e30) */
	int dpos;               /* dmodel_decode_feed: tokens of the sequence so far */
	void *fixed_rl, *eye;
	float *seqw;            /* per-sequence gradient weights, or NULL */
	int prof;               /* dmodel_profile: time each kind of op */
	double prof_s[DMODEL_PROF_N], prof_last;
	int *prof_kind, nprof;  /* with a timer: the kind of each mark since the last read */
	/* CUDA graphs of the training micro-batch (dmodel_train_micro), one
	 * per batch shape, the least recently used replaced; `gen` counts the
	 * allocations, which a recorded graph would not see (all dropped). */
	int graphs;             /* 1: use graphs where the backend has them */
	int g_off;              /* captures failed: no more graphs */
	int g_fails;            /* captures that failed */
	unsigned gen, g_gen;
	unsigned long g_clock;
	long g_replays;         /* micro-batches that replayed a graph */
	struct dgraph {
		int b, t;
		int state;      /* 0: empty; 1: ran directly once; 2: exec replays */
		unsigned long used;
		void *exec;
	} g[DMODEL_GRAPHS];
};

static const char *const s_prof_names[DMODEL_PROF_N] = {
	"base_matmul", "adapters", "attention", "norms", "pointwise", "cross_entropy", "optimizer"
};

/* With profiling on, charge the time since the last mark to `kind` (-1:
 * to nothing). With the backend's timer (CUDA events) the marks are
 * timestamps on the stream, read in batches (s_prof_read), so nothing
 * waits and the kinds' times add up to the GPU's time (a gap while the GPU
 * waited for the host goes to the kind after it); without one each mark
 * synchronises and reads the host's clock. */
static int s_prof_read(dmodel_t *m)
{
	float *ms;

	if (!m->nprof)
		return 0;
	if (!(ms = malloc((size_t)m->nprof * sizeof *ms)))
		return err_set("out of memory");
	if (m->K->timer_read(ms, m->nprof) < 0) {
		free(ms);
		return -1;
	}
	for (int i = 1; i < m->nprof; i++)
		if (m->prof_kind[i] >= 0)
			m->prof_s[m->prof_kind[i]] += ms[i - 1] / 1e3;
	m->nprof = 0;
	free(ms);
	return 0;
}

static int s_mark(dmodel_t *m, int kind)
{
	double now;

	if (!m->prof)
		return 0;
	if (m->K->timer_mark) {
		/* a full pool is read (the interval across the read is lost:
		 * one in KCUDA_TIMER_MARKS, about 20 steps of the 0.5B model) */
		if (m->nprof == KCUDA_TIMER_MARKS && s_prof_read(m) < 0)
			return -1;
		D_TRY(m->K->timer_mark());
		m->prof_kind[m->nprof++] = kind;
		return 0;
	}
	if (m->K->sync() < 0)
		return -1;
	now = mtime_s();
	if (kind >= 0)
		m->prof_s[kind] += now - m->prof_last;
	m->prof_last = now;
	return 0;
}

void dmodel_profile(dmodel_t *m, int on)
{
	if (m->nprof)
		s_prof_read(m);      /* drops what was marked before */
	m->prof = on;
	m->prof_last = mtime_s();
	memset(m->prof_s, 0, sizeof m->prof_s);
	if (on && m->K->timer_mark && !m->prof_kind &&
	    !(m->prof_kind = malloc(KCUDA_TIMER_MARKS * sizeof *m->prof_kind)))
		m->prof = 0;
}

const char *dmodel_profile_report(dmodel_t *m, int kind, double *seconds)
{
	if (m->nprof && s_prof_read(m) < 0)
		fprintf(stderr, "dmodel: profile: %s\n", err_msg());
	*seconds = m->prof_s[kind];
	return s_prof_names[kind];
}

static size_t s_dts(const dmodel_t *m)
{
	return kdevice_elem_size(m->K, kcuda_dtype_size(m->K->dt));
}

static void *s_at(const dmodel_t *m, void *base, size_t off)
{
	return (char *)base + off * s_dts(m);
}

static int s_push(void ***v, int *n, int *cap, void *p)
{
	if (*n == *cap) {
		int nc = *cap ? 2 * *cap : 64;
		void **nv = realloc(*v, (size_t)nc * sizeof *nv);
		if (!nv)
			return err_set("out of memory");
		*v = nv, *cap = nc;
	}
	(*v)[(*n)++] = p;
	return 0;
}

/* n elements of type dt in the backend's memory, freed with the model. */
static void *s_alloc(dmodel_t *m, size_t n, int dt)
{
	void *p = m->K->alloc(n ? n : 1, dt);

	m->gen++;               /* a recorded graph would not know it */
	if (p && s_push(&m->owned, &m->nowned, &m->ocap, p) < 0) {
		m->K->free(p);
		return NULL;
	}
	return p;
}

/* The same for the reservation (freed when it grows). */
static void *s_act(dmodel_t *m, size_t n, int dt)
{
	void *p = m->K->alloc(n ? n : 1, dt);

	m->gen++;
	if (p && s_push(&m->acts, &m->nacts, &m->acap, p) < 0) {
		m->K->free(p);
		return NULL;
	}
	return p;
}

void dmodel_destroy(dmodel_t **pm)
{
	dmodel_t *m = pm ? *pm : NULL;

	if (!m)
		return;
	for (int i = 0; i < DMODEL_GRAPHS; i++)
		if (m->g[i].exec)
			m->K->graph_free(m->g[i].exec);
	for (int i = 0; i < m->nacts; i++)
		m->K->free(m->acts[i]);
	for (int i = 0; i < m->nowned; i++)
		m->K->free(m->owned[i]);
	for (int l = 0; m->l && l < m->cfg.n_layers; l++)
		for (int s = 0; s < MODEL_NSLOTS; s++)
			free(m->l[l].lin[s].ad);
	for (int i = 0; i < m->nfset; i++)
		free(m->fset[i].c), free(m->fset[i].a), free(m->fset[i].b);
	free(m->fset);
	free(m->bufs);          /* the dbufs live in the adapters */
	free(m->acts);
	free(m->owned);
	free(m->p);
	free(m->l);
	free(m->res);
	free(m->htgt);
	free(m->hlosses);
	free(m->hdl);
	free(m->seqw);
	free(m->prof_kind);
	free(m);
	*pm = NULL;
}

const model_config_t *dmodel_config(const dmodel_t *m)
{
	return &m->cfg;
}

/* ---- the base weights --------------------------------------------------- */

/* Calls fn(m, name, device tensor, ndim, shape, ctx) for every base weight,
 * in model.c's order and with its Hugging Face names. */
typedef int (*s_weight_fn)(dmodel_t *m, const char *name, void *dst, int ndim,
			   const int64_t *shape, void *ctx);

static int s_each_weight(dmodel_t *m, s_weight_fn fn, void *ctx)
{
	const model_config_t *g = &m->cfg;
	int64_t C = g->dim, V = g->vocab_size;
	char name[160];

	D_TRY(fn(m, "model.embed_tokens.weight", m->wte, 2, (int64_t[]){ V, C }, ctx));
	for (int l = 0; l < g->n_layers; l++) {
		dlayer_t *L = &m->l[l];
		snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
		D_TRY(fn(m, name, L->ln1, 1, (int64_t[]){ C, 0 }, ctx));
		snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
		D_TRY(fn(m, name, L->ln2, 1, (int64_t[]){ C, 0 }, ctx));
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			dlin_t *lin = &L->lin[s];
			snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l, model_slot_module(s),
				 model_slot_name(s));
			D_TRY(fn(m, name, lin->w, 2, (int64_t[]){ lin->out, lin->in }, ctx));
			if (lin->b) {
				snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.bias", l,
					 model_slot_name(s));
				D_TRY(fn(m, name, lin->b, 1, (int64_t[]){ lin->out, 0 }, ctx));
			}
		}
	}
	D_TRY(fn(m, "model.norm.weight", m->norm, 1, (int64_t[]){ C, 0 }, ctx));
	if (!g->tie_embeddings)
		D_TRY(fn(m, "lm_head.weight", m->head, 2, (int64_t[]){ V, C }, ctx));
	return 0;
}

static dmodel_t *s_new(const model_config_t *cfg, const struct kdevice_ops *K)
{
	model_t *shape = model_shape(cfg);
	dmodel_t *m = NULL;
	int dt = K->dt;
	size_t C = cfg->dim, V = cfg->vocab_size;

	if (!shape)
		return NULL;
	if (!(m = calloc(1, sizeof *m)) || !(m->l = calloc((size_t)cfg->n_layers, sizeof *m->l))) {
		err_set("out of memory");
		goto err;
	}
	m->K = K, m->cfg = *cfg;
	m->graphs = !getenv("MODULA_CUDA_GRAPHS") || strcmp(getenv("MODULA_CUDA_GRAPHS"), "0");
	m->fold = !getenv("MODULA_FOLD") || strcmp(getenv("MODULA_FOLD"), "0");
	m->direct = !getenv("MODULA_FOLD_DIRECT") || strcmp(getenv("MODULA_FOLD_DIRECT"), "0");
	if (!(m->wte = s_alloc(m, V * C, dt)) || !(m->norm = s_alloc(m, C, dt)))
		goto err;
	m->head = m->wte;
	if (!cfg->tie_embeddings && !(m->head = s_alloc(m, V * C, dt)))
		goto err;
	for (int l = 0; l < cfg->n_layers; l++) {
		dlayer_t *L = &m->l[l];
		if (!(L->ln1 = s_alloc(m, C, dt)) || !(L->ln2 = s_alloc(m, C, dt)))
			goto err;
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			const model_linear_t *hl = &shape->layers[l].lin[s];
			dlin_t *lin = &L->lin[s];
			lin->in = hl->in, lin->out = hl->out;
			if (!(lin->w = s_alloc(m, (size_t)hl->in * hl->out, dt)))
				goto err;
			if (cfg->qkv_bias && s <= MODEL_V && !(lin->b = s_alloc(m, (size_t)hl->out, dt)))
				goto err;
		}
	}
	model_destroy(&shape);
	return m;
err:
	model_destroy(&shape);
	dmodel_destroy(&m);
	return NULL;
}

static int s_kdt(enum st_dtype d)
{
	return d == ST_BF16 ? KCUDA_BF16 : d == ST_F16 ? KCUDA_F16 : d == ST_F32 ? KCUDA_F32 : -1;
}

static int s_load_one(dmodel_t *m, const char *name, void *dst, int ndim, const int64_t *shape,
		      void *ctx)
{
	const st_tensor_t *t = st_set_need(ctx, name, ndim, shape);
	size_t n = (size_t)shape[0] * (size_t)(ndim == 2 ? shape[1] : 1);

	if (!t)
		return -1;
	if (m->K->dev == KDEV_CPU)     /* (the emulated table: rounded to dt) */
		return st_to_f32(t, dst) < 0 ? -1 : m->K->convert(dst, m->K->dt, dst, KCUDA_F32, n);
	if (s_kdt(t->dtype) < 0)
		return err_set("tensor '%s' is %s: the GPU path reads F32, F16 and BF16", name,
			       st_dtype_name(t->dtype));
	return m->K->upload(dst, m->K->dt, t->data, s_kdt(t->dtype), n);
}

dmodel_t *dmodel_load(const char *dir, const struct kdevice_ops *K)
{
	char path[4096];
	model_config_t cfg;
	dmodel_t *m = NULL;
	st_set_t *set = NULL;

	snprintf(path, sizeof path, "%s/config.json", dir);
	if (model_config_load(path, &cfg) < 0)
		return NULL;
	if (!(m = s_new(&cfg, K)) || !(set = st_set_open(dir)) || s_each_weight(m, s_load_one, set) < 0 ||
	    K->sync() < 0) {
		err_prefix("loading model '%s' on %s", dir, kdevice_name(K->dev));
		dmodel_destroy(&m);
	}
	st_set_close(&set);
	return m;
}

static int s_copy_host(dmodel_t *m, const char *name, void *dst, int ndim, const int64_t *shape,
		       void *ctx)
{
	const param_t *p = params_find(ctx, name);

	if (!p)
		return err_set("host model has no tensor '%s'", name);
	return m->K->upload(dst, m->K->dt, p->data, KCUDA_F32, p->n);
}

dmodel_t *dmodel_from_host(const model_t *hm, const struct kdevice_ops *K)
{
	dmodel_t *m = s_new(&hm->cfg, K);

	if (m && (s_each_weight(m, s_copy_host, (void *)&hm->params) < 0 || K->sync() < 0))
		dmodel_destroy(&m);
	return m;
}

/* ---- adapters: placing the host tensors ------------------------------- */

/* Plan a buffer; s_pack allocates them all. */
static int s_buf_alloc(dmodel_t *m, dbuf_t *b, size_t n, int trains)
{
	b->n = n, b->trains = trains;
	return s_push((void ***)&m->bufs, &m->nbufs, &m->bcap, b);
}

/* The trainable params in the optimizer's order. */
static int s_by_train_index(const void *a, const void *b)
{
	const dparam_t *x = a, *y = b;

	return (x->train_index > y->train_index) - (x->train_index < y->train_index);
}

/* Allocate the planned buffers: the training ones as slices of five spans
 * (master, the dt copy, gradient, moments), the frozen ones of two. */
static int s_pack(dmodel_t *m)
{
	int dt = m->K->dt;
	size_t off = 0, foff = 0, nfrozen = 0;
	float *fmaster = NULL;
	void *fcur = NULL;

	m->ntrain = 0;
	for (int i = 0; i < m->nbufs; i++) {
		if (m->bufs[i]->trains)
			m->ntrain += m->bufs[i]->n;
		else
			nfrozen += m->bufs[i]->n;
	}
	/* the frozen ones in two spans too, in the same order, so that a
	 * layer's frozen plain LoRAs lie as dgroup_t wants (eval) */
	if (nfrozen) {
		D_PTR(fmaster = s_alloc(m, nfrozen, KCUDA_F32));
		fcur = fmaster;
		if (dt != KCUDA_F32)
			D_PTR(fcur = s_alloc(m, nfrozen, dt));
	}
	if (m->ntrain) {
		D_PTR((m->tmaster = s_alloc(m, m->ntrain, KCUDA_F32)) &&
		      (m->tgrad = s_alloc(m, m->ntrain, KCUDA_F32)) &&
		      (m->tm = s_alloc(m, m->ntrain, KCUDA_F32)) && (m->tv = s_alloc(m, m->ntrain, KCUDA_F32)));
		m->tcur = m->tmaster;
		if (dt != KCUDA_F32)
			D_PTR(m->tcur = s_alloc(m, m->ntrain, dt));
	}
	for (int i = 0; i < m->nbufs; i++) {
		dbuf_t *b = m->bufs[i];
		if (b->trains) {
			b->master = m->tmaster + off, b->grad = m->tgrad + off;
			b->m = m->tm + off, b->v = m->tv + off;
			b->cur = dt == KCUDA_F32 ? (void *)b->master : s_at(m, m->tcur, off);
			off += b->n;
			continue;
		}
		b->master = fmaster + foff;
		b->cur = dt == KCUDA_F32 ? (void *)b->master : s_at(m, fcur, foff);
		foff += b->n;
	}
	/* the optimizer walks the tensors in its list's order (its norm sums so) */
	qsort(m->p, (size_t)m->np, sizeof *m->p, s_by_train_index);
	m->fused_step = 1;
	for (int i = 0; i < m->np; i++)
		if (m->p[i].buf->trains && m->p[i].train_index < 0)
			m->fused_step = 0;
	return 0;
}

static int s_train_index(const params_t *train, const param_t *p)
{
	for (int i = 0; train && i < train->n; i++)
		if (train->v[i].data == p->data)
			return i;
	return -1;
}

static int s_add_param(dmodel_t *m, param_t *host, dbuf_t *b, size_t off, int transposed,
		       const params_t *train)
{
	dparam_t *d;

	if (m->np == m->pcap) {
		int nc = m->pcap ? 2 * m->pcap : 64;
		dparam_t *nv = realloc(m->p, (size_t)nc * sizeof *nv);
		if (!nv)
			return err_set("out of memory");
		m->p = nv, m->pcap = nc;
	}
	d = &m->p[m->np++];
	*d = (dparam_t){ host, b, off, transposed, s_train_index(train, host) };
	if (d->train_index >= 0 && !host->grad)
		return err_set("tensor '%s' is in the optimizer's list without a gradient", host->name);
	return 0;
}

static void s_peft_name(char *dst, size_t n, int layer, int slot, const char *what)
{
	snprintf(dst, n, "base_model.model.model.layers.%d.%s.%s.%s.weight", layer,
		 model_slot_module(slot), model_slot_name(slot), what);
}

static param_t *s_need(const params_t *p, int layer, int slot, const char *what, int64_t d0,
		       int64_t d1)
{
	char name[192];
	param_t *x;

	s_peft_name(name, sizeof name, layer, slot, what);
	if (!(x = params_find(p, name)) || x->ndim != 2 || x->shape[0] != d0 || x->shape[1] != d1) {
		err_set("adapter tensor '%s' missing or not [%lld, %lld]", name, (long long)d0,
			(long long)d1);
		return NULL;
	}
	return x;
}

static float s_scale(float alpha, int rank, int rslora)
{
	return alpha / (rslora ? sqrtf((float)rank) : (float)rank);
}

/* The universal/LoRA pair of one layer from host params; a0 gets room for
 * `ea` more rows (the Res router), bcat for `eb` more (the Res experts'
 * B^T), placed by the caller, who says whether they train. */
static int s_place_a(dmodel_t *m, dad_t *ad, const params_t *p, int layer, int slot,
		     const params_t *train, int ea, int ea_trains)
{
	param_t *a = s_need(p, layer, slot, "lora_A", ad->r0, ad->in);

	D_PTR(a);
	D_TRY(s_buf_alloc(m, &ad->a0, (size_t)(ad->r0 + ea) * ad->in,
			  s_train_index(train, a) >= 0 || ea_trains));
	return s_add_param(m, a, &ad->a0, 0, 0, train);
}

static int s_place_b(dmodel_t *m, dad_t *ad, const params_t *p, int layer, int slot,
		     const params_t *train, int eb, int eb_trains)
{
	param_t *b = s_need(p, layer, slot, "lora_B", ad->out, ad->r0);

	D_PTR(b);
	D_TRY(s_buf_alloc(m, &ad->bcat, (size_t)(ad->r0 + eb) * ad->out,
			  s_train_index(train, b) >= 0 || eb_trains));
	return s_add_param(m, b, &ad->bcat, 0, 1, train);
}

static int s_place_pair(dmodel_t *m, dad_t *ad, const params_t *p, int layer, int slot,
			const params_t *train, int ea, int ea_trains, int eb, int eb_trains)
{
	D_TRY(s_place_a(m, ad, p, layer, slot, train, ea, ea_trains));
	return s_place_b(m, ad, p, layer, slot, train, eb, eb_trains);
}

static dad_t *s_new_ad(dmodel_t *m, int layer, int slot)
{
	dlin_t *lin = &m->l[layer].lin[slot];
	dad_t *ad;

	if (lin->ad) {
		err_set("layer %d %s already carries an adapter", layer, model_slot_name(slot));
		return NULL;
	}
	if (!(ad = calloc(1, sizeof *ad))) {
		err_set("out of memory");
		return NULL;
	}
	ad->in = lin->in, ad->out = lin->out;
	lin->ad = ad;
	return ad;
}

static int s_fold_build(dmodel_t *m);

int dmodel_attach_lora(dmodel_t *m, const lora_t *lo, const params_t *train)
{
	if (m->nbufs)
		return err_set("the device model already carries adapters");
	if (lo->cfg.dropout > 0.0f)
		return err_set("LoRA dropout %g: the GPU path has no dropout yet (set it to 0, or "
			       "use --device cpu)", lo->cfg.dropout);
	/* a layer's A matrices first, in slot order, then its B matrices:
	 * training buffers pack in this order (s_pack), so the A of q, k, v
	 * (and of gate, up) are adjacent, as dgroup_t wants */
	for (int l = 0; l < m->cfg.n_layers; l++) {
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			dad_t *ad;
			if (!(lo->cfg.targets & (1u << s)))
				continue;
			D_PTR(ad = s_new_ad(m, l, s));
			ad->r0 = lo->cfg.rank;
			ad->s0 = s_scale(lo->cfg.alpha, lo->cfg.rank, lo->cfg.rslora);
			D_TRY(s_place_a(m, ad, &lo->params, l, s, train, 0, 0));
		}
		for (int s = 0; s < MODEL_NSLOTS; s++)
			if (lo->cfg.targets & (1u << s))
				D_TRY(s_place_b(m, m->l[l].lin[s].ad, &lo->params, l, s, train, 0, 0));
	}
	D_TRY(s_pack(m));
	D_TRY(dmodel_sync_from_host(m, NULL));
	return s_fold_build(m);
}

/* A layer's domain experts (A [r, ain], B [out, r]; whether any A, any B
 * trains) and its router [E, in] (E = e, or e + 1 for Flan's, which also
 * routes the universal expert); NULL via err_set(). */
static param_t *s_experts(const dad_t *ad, const moe_t *mo, int layer, int slot, int ain,
			  const params_t *train, int *trains_a, int *trains_b)
{
	int ne = ad->e + (ad->mol && ad->r0 > 0);
	char name[192];
	param_t *router;

	*trains_a = *trains_b = 0;
	for (int i = 1; i < mo->n_exp; i++) {
		param_t *a = s_need(&mo->exp[i].params, layer, slot, "lora_A", ad->r, ain);
		param_t *b = s_need(&mo->exp[i].params, layer, slot, "lora_B", ad->out, ad->r);
		if (!a || !b)
			return NULL;
		*trains_a |= s_train_index(train, a) >= 0, *trains_b |= s_train_index(train, b) >= 0;
	}
	s_peft_name(name, sizeof name, layer, slot, "router");
	if (!(router = params_find(&mo->router, name)) || router->n != (size_t)ne * ad->in) {
		err_set("router '%s' missing or not [%d, %d]", name, ne, ad->in);
		return NULL;
	}
	return router;
}

/* Expert i's A into abuf at a_off + (i - 1) r ain, its B^T into bcat at
 * b_off + (i - 1) r out. */
static int s_add_experts(dmodel_t *m, dad_t *ad, const moe_t *mo, int layer, int slot, int ain,
			 const params_t *train, dbuf_t *abuf, size_t a_off, size_t b_off)
{
	size_t na = (size_t)ad->r * ain, nb = (size_t)ad->r * ad->out;

	for (int i = 1; i < mo->n_exp; i++) {
		D_TRY(s_add_param(m, s_need(&mo->exp[i].params, layer, slot, "lora_A", ad->r, ain), abuf,
				  a_off + na * (i - 1), 0, train));
		D_TRY(s_add_param(m, s_need(&mo->exp[i].params, layer, slot, "lora_B", ad->out, ad->r),
				  &ad->bcat, b_off + nb * (i - 1), 1, train));
	}
	return 0;
}

/* A Res layer: the universal pair, the router below A0 in a0, the domain
 * experts (A stacked, B^T below B0^T in bcat). */
static int s_place_res(dmodel_t *m, dad_t *ad, const moe_t *mo, int layer, int slot,
		       const params_t *train)
{
	int trains_a, trains_b;
	param_t *router = s_experts(ad, mo, layer, slot, ad->out, train, &trains_a, &trains_b);

	D_PTR(router);
	D_TRY(s_place_pair(m, ad, &mo->exp[0].params, layer, slot, train, ad->e,
			   s_train_index(train, router) >= 0, ad->e * ad->r, trains_b));
	D_TRY(s_buf_alloc(m, &ad->a, (size_t)ad->r * ad->out * ad->e, trains_a));
	D_TRY(s_add_experts(m, ad, mo, layer, slot, ad->out, train, &ad->a, 0,
			    (size_t)ad->r0 * ad->out));
	return s_add_param(m, router, &ad->a0, (size_t)ad->r0 * ad->in, 0, train);
}

/* A MoDULA-Flan layer: the universal pair first, the domain experts' A
 * and the router below A0 in a0, their B^T below B0^T in bcat. */
static int s_place_flan(dmodel_t *m, dad_t *ad, const moe_t *mo, int layer, int slot,
			const params_t *train)
{
	int trains_a, trains_b, er = ad->e * ad->r;
	param_t *router = s_experts(ad, mo, layer, slot, ad->in, train, &trains_a, &trains_b);

	D_PTR(router);
	D_TRY(s_place_pair(m, ad, &mo->exp[0].params, layer, slot, train, er + ad->e + 1,
			   trains_a || s_train_index(train, router) >= 0, er, trains_b));
	D_TRY(s_add_experts(m, ad, mo, layer, slot, ad->in, train, &ad->a0,
			    (size_t)ad->r0 * ad->in, (size_t)ad->r0 * ad->out));
	return s_add_param(m, router, &ad->a0, ((size_t)ad->r0 + er) * ad->in, 0, train);
}

/* A MoLoRA layer: the experts' A stacked with the router below, their B^T
 * stacked. */
static int s_place_molora(dmodel_t *m, dad_t *ad, const moe_t *mo, int layer, int slot,
			  const params_t *train)
{
	int trains_a, trains_b;
	param_t *router = s_experts(ad, mo, layer, slot, ad->in, train, &trains_a, &trains_b);
	size_t na = (size_t)ad->r * ad->in * ad->e;

	D_PTR(router);
	D_TRY(s_buf_alloc(m, &ad->a0, na + (size_t)ad->e * ad->in,
			  trains_a || s_train_index(train, router) >= 0));
	D_TRY(s_buf_alloc(m, &ad->bcat, (size_t)ad->r * ad->out * ad->e, trains_b));
	D_TRY(s_add_experts(m, ad, mo, layer, slot, ad->in, train, &ad->a0, 0, 0));
	return s_add_param(m, router, &ad->a0, na, 0, train);
}

int dmodel_attach_moe(dmodel_t *m, const moe_t *mo, const params_t *train)
{
	const moe_config_t *c = &mo->cfg;
	const moe_expert_t *u = &mo->exp[0];
	int res = c->method == MOE_RES || c->method == MOE_RES_NORES;
	int mol = c->method == MOE_MOLORA, flan = c->method == MOE_FLAN;

	if (m->nbufs)
		return err_set("the device model already carries adapters");
	if (c->method != MOE_LORA && !res && !mol && !flan && !mo->fixed)
		return err_set("method %s: the GPU path runs lora, molora, modula-flan, modula-res "
			       "and modula-res-nores (use --device cpu)", moe_method_name(c->method));
	if (mo->fixed) {
		/* every row to expert 0 (the universal stage) is y += s0 B0 A0 x,
		 * a LoRA, for every method but MoLoRA; every row to a domain
		 * expert (the domain stage) runs for Res and Flan with one-hot
		 * routing (Flan's universal expert given weight 0) */
		int zero = 0;
		for (int i = 0; i < mo->nseg; i++)
			zero += mo->seg[i].expert == 0;
		if (c->method == MOE_MOLORA || (zero && zero < mo->nseg) || (!zero && !res && !flan))
			return err_set("fixed routing: the GPU path runs the universal expert alone, or "
				       "the domain experts of MoDULA-Res or -Flan");
		if (zero)
			res = 0, flan = 0;
		m->fixed = !zero;
		m->fixed_e = mo->n_exp - 1;
		m->fixed_head = flan;
	}
	if (c->top_k)
		return err_set("top-k routing: the GPU path runs dense soft routing only");
	if (!u->rank && !mol)
		return err_set("the GPU path needs a universal expert");
	if (mol && (mo->n_exp < 2 || mo->n_exp - 1 > 32 || mo->n_route != mo->n_exp - 1 ||
		    mo->route_base != 1))
		return err_set("molora on the GPU path needs 1 to 32 experts and a router over them");
	for (int i = 2; i < mo->n_exp; i++)
		if (mo->exp[i].rank != mo->exp[1].rank || mo->exp[i].alpha != mo->exp[1].alpha ||
		    mo->exp[i].rslora != mo->exp[1].rslora)
			return err_set("domain experts of different ranks or scales ('%s', '%s'): the GPU "
				       "path stacks them and needs one rank", mo->exp[1].name,
				       mo->exp[i].name);
	if (res && (mo->n_exp < 2 || mo->n_route != mo->n_exp - 1 || mo->route_base != 1))
		return err_set("modula-res on the GPU needs domain experts and a router over them");
	if (flan && (mo->n_exp < 2 || mo->n_exp > 32 || mo->n_route != mo->n_exp ||
		     mo->route_base != 0))
		return err_set("modula-flan on the GPU path needs 1 to 31 domain experts and a router "
			       "over them and the universal expert");
	for (int l = 0; l < m->cfg.n_layers; l++) {
		/* plain LoRAs (the universal stage, joint LoRA): a layer's A
		 * matrices first, its B matrices after the slots (deferred), as
		 * dmodel_attach_lora places them, so that groups form */
		int defer[MODEL_NSLOTS] = { 0 };
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			char name[192];
			dad_t *ad;
			s_peft_name(name, sizeof name, l, s, "lora_A");
			if (!params_find(&mo->exp[mol ? 1 : 0].params, name))
				continue;
			D_PTR(ad = s_new_ad(m, l, s));
			if (mol || flan) {
				ad->mol = 1, ad->e = mo->n_exp - 1, ad->r = mo->exp[1].rank;
				ad->sd = s_scale(mo->exp[1].alpha, ad->r, mo->exp[1].rslora);
				if (mol) {
					D_TRY(s_place_molora(m, ad, mo, l, s, train));
					continue;
				}
				ad->r0 = u->rank, ad->s0 = s_scale(u->alpha, u->rank, u->rslora);
				D_TRY(s_place_flan(m, ad, mo, l, s, train));
				continue;
			}
			ad->r0 = u->rank, ad->s0 = s_scale(u->alpha, u->rank, u->rslora);
			if (!res) {
				D_TRY(s_place_a(m, ad, &u->params, l, s, train, 0, 0));
				defer[s] = 1;
				continue;
			}
			ad->res = 1, ad->nores = c->method == MOE_RES_NORES;
			m->nres++;
			ad->e = mo->n_exp - 1, ad->r = mo->exp[1].rank, ad->slope = c->slope;
			ad->sd = s_scale(mo->exp[1].alpha, ad->r, mo->exp[1].rslora);
			D_TRY(s_place_res(m, ad, mo, l, s, train));
		}
		for (int s = 0; s < MODEL_NSLOTS; s++)
			if (defer[s])
				D_TRY(s_place_b(m, m->l[l].lin[s].ad, &u->params, l, s, train, 0, 0));
	}
	D_TRY(s_pack(m));
	D_TRY(dmodel_sync_from_host(m, NULL));
	return s_fold_build(m);
}

/* ---- host <-> device for the adapter tensors --------------------------- */

/* The device layout of host values `src` (for this param) into tmp. */
static const float *s_dev_layout(const dparam_t *d, const float *src, float *tmp)
{
	if (!d->transposed)
		return src;
	op_transpose(tmp, src, (size_t)d->host->shape[0], (size_t)d->host->shape[1]);
	return tmp;
}

static int s_up(dmodel_t *m, const dparam_t *d, float *dev, const float *src, float *tmp, int dt)
{
	return m->K->upload(dt == KCUDA_F32 ? (void *)(dev + d->off) : s_at(m, dev, d->off), dt,
			    s_dev_layout(d, src, tmp), KCUDA_F32, d->host->n);
}

static int s_down(dmodel_t *m, const dparam_t *d, const float *dev, float *dst, float *tmp)
{
	D_TRY(m->K->download(d->transposed ? tmp : dst, KCUDA_F32, dev + d->off, KCUDA_F32,
			     d->host->n));
	if (d->transposed)
		op_transpose(dst, tmp, (size_t)d->host->shape[1], (size_t)d->host->shape[0]);
	return 0;
}

static float *s_tmp(const dmodel_t *m)
{
	size_t n = 1;
	float *t;

	for (int i = 0; i < m->np; i++)
		n = m->p[i].host->n > n ? m->p[i].host->n : n;
	if (!(t = malloc(n * sizeof(float))))
		err_set("out of memory");
	return t;
}

static int s_fold_refresh(dmodel_t *m);

int dmodel_sync_from_host(dmodel_t *m, const optim_t *opt)
{
	float *tmp = s_tmp(m);
	int rc = -1;

	if (!tmp)
		return -1;
	for (int i = 0; i < m->np; i++) {
		const dparam_t *d = &m->p[i];
		if (s_up(m, d, d->buf->master, d->host->data, tmp, KCUDA_F32) < 0 ||
		    (d->buf->cur != d->buf->master &&
		     s_up(m, d, d->buf->cur, d->host->data, tmp, m->K->dt) < 0))
			goto out;
		if (opt && d->train_index >= 0 &&
		    (s_up(m, d, d->buf->m, opt->m[d->train_index], tmp, KCUDA_F32) < 0 ||
		     s_up(m, d, d->buf->v, opt->v[d->train_index], tmp, KCUDA_F32) < 0))
			goto out;
	}
	rc = s_fold_refresh(m) < 0 ? -1 : m->K->sync();
out:
	free(tmp);
	return rc;
}

int dmodel_sync_to_host(dmodel_t *m, optim_t *opt)
{
	float *tmp = s_tmp(m);
	int rc = -1;

	if (!tmp)
		return -1;
	for (int i = 0; i < m->np; i++) {
		const dparam_t *d = &m->p[i];
		if (d->train_index < 0)
			continue;
		if (s_down(m, d, d->buf->master, d->host->data, tmp) < 0)
			goto out;
		if (opt && (s_down(m, d, d->buf->m, opt->m[d->train_index], tmp) < 0 ||
			    s_down(m, d, d->buf->v, opt->v[d->train_index], tmp) < 0))
			goto out;
	}
	rc = 0;
out:
	free(tmp);
	return rc;
}

/* ---- reservation ------------------------------------------------------- */

static size_t s_max(size_t a, size_t b)
{
	return a > b ? a : b;
}

static const int s_group_slots[2][3] = { { MODEL_Q, MODEL_K, MODEL_V }, { MODEL_GATE, MODEL_UP, -1 } };

/* Group gi of layer L (dgroup_t) when its adapters allow it, else ns 0:
 * every slot a plain LoRA of the same rank and input, the A matrices
 * adjacent in that order and their gradients too (or none has one). */
static void s_group(const dmodel_t *m, const dlayer_t *L, dgroup_t *g, int gi)
{
	const dad_t *first = L->lin[s_group_slots[gi][0]].ad, *prev = NULL;
	size_t es = s_dts(m);
	int ns = 0;

	g->ns = 0, g->u = NULL;
	for (int i = 0; i < 3 && s_group_slots[gi][i] >= 0; i++, ns++) {
		const dad_t *ad = L->lin[s_group_slots[gi][i]].ad;
		if (!ad || ad->mol || ad->res || ad->r0 <= 0 || ad->r0 != first->r0 ||
		    ad->in != first->in || ad->a0.n != (size_t)ad->r0 * ad->in ||
		    !ad->a0.grad != !first->a0.grad)
			return;
		if (prev && ((char *)ad->a0.cur != (char *)prev->a0.cur + prev->a0.n * es ||
			     (ad->a0.grad && ad->a0.grad != prev->a0.grad + prev->a0.n)))
			return;
		g->slot[i] = s_group_slots[gi][i];
		prev = ad;
	}
	g->ns = ns, g->r = first->r0;
}

/* 1 when slot s of L runs its adapter inside a group. */
static int s_grouped(const dlayer_t *L, int s)
{
	for (int gi = 0; gi < 2; gi++)
		for (int i = 0; i < L->grp[gi].ns; i++)
			if (L->grp[gi].slot[i] == s)
				return 1;
	return 0;
}

/* 1 when slot s of L is a member of a folded Res (Flan, MoLoRA) group
 * and m->direct: its cat lives in the group's X, ad->cat is not needed. */
static int s_cat_in_x(const dmodel_t *m, const dlayer_t *L, int s)
{
	for (int gi = 0; m->direct && gi < 2; gi++)
		for (int i = 0; L->fold[gi].ldx && L->fold[gi].res && i < L->fold[gi].ns; i++)
			if (L->fold[gi].slot[i] == s)
				return 1;
	return 0;
}

/* ---- weight gradients ---------------------------------------------------- */

/* One more weight-gradient product for K->gemm_wgrad, which runs a
 * group's (those ready at one point of the backward) in one launch where
 * it can: c (fp32, rows ldc apart) = alpha a^T b + beta c, a [N, m] and b
 * [N, n] rows lda and ldb apart. */
static void s_wg(struct kcuda_wgrad *w, int *nw, float *c, int ldc, const void *a, int lda,
		 const void *b, int ldb, int m, int n, float alpha, float beta)
{
	w[(*nw)++] = (struct kcuda_wgrad){ c, ldc, a, lda, b, ldb, m, n, alpha, beta };
}

/* MoLoRA's and Flan's u0 = [x A^T | router logits] row stride, and that
 * of [du | drl]: w + E padded to 8 elements (16 bytes). */
static int s_mol_ld(const dad_t *ad)
{
	return (ad->r0 + ad->e * ad->r + ad->e + (ad->r0 > 0) + 7) / 8 * 8;
}

/* ur's row stride: r0 + e padded to 8 elements (16 bytes: an odd stride
 * keeps cuBLASLt off its fast kernels; run 3's tune file had the 20-wide
 * products at 12-22 us for 7-40 MB read). */
static int s_ur_ld(const dad_t *ad)
{
	return (ad->r0 + ad->e + 7) / 8 * 8;
}

/* The fused row kernel from ur (rows ldu apart): cat (rows ldc apart), z,
 * zl, s. */
static int s_res_rows(dmodel_t *m, dad_t *ad, void *cat, int ldc, const void *ur, int ldu, int n)
{
	return m->K->res_forward(cat, ldc, ad->z, ad->zl, ad->s, ur, ldu, ad->mab, n, ad->r0, ad->e,
				 ad->r, ad->s0, ad->sd, ad->slope);
}

/* ---- folded groups (dfold_t) ------------------------------------------- */

/* Free p, one of the model's own allocations (s_alloc). */
static void s_release(dmodel_t *m, void *p)
{
	for (int i = 0; p && i < m->nowned; i++)
		if (m->owned[i] == p) {
			m->K->free(p);
			m->owned[i] = m->owned[--m->nowned];
			m->gen++;
			return;
		}
}

/* Upload n host floats into a new buffer of the storage type; NULL via
 * err_set(). h is freed. */
static void *s_upload_new(dmodel_t *m, float *h, size_t n)
{
	void *d = h ? s_alloc(m, n, m->K->dt) : NULL;

	if (!h)
		err_set("out of memory");
	if (d && (m->K->upload(d, m->K->dt, h, KCUDA_F32, n) < 0 || m->K->sync() < 0))
		d = NULL;       /* freed with the model */
	free(h);
	return d;
}

/* An identity [n, n] in the storage type. */
static void *s_eye(dmodel_t *m, int n)
{
	float *h = calloc((size_t)n * n, sizeof *h);

	for (int i = 0; h && i < n; i++)
		h[(size_t)i * n + i] = 1.0f;
	return s_upload_new(m, h, (size_t)n * n);
}

/* W'_i of fold f from the member's W and b, which are freed. */
static int s_fold_weight(dmodel_t *m, dfold_t *f, int i, dlin_t *lin)
{
	const struct kdevice_ops *K = m->K;
	size_t C = (size_t)lin->in, O = (size_t)lin->out, nt = (size_t)f->ldx * O;
	float *h = calloc(nt, sizeof *h), *w = malloc(C * O * sizeof *w);
	int rc = -1;

	if (!h || !w) {
		err_set("out of memory");
		goto out;
	}
	if (K->download(w, KCUDA_F32, lin->w, K->dt, C * O) < 0 ||
	    (lin->b && K->download(h + (size_t)f->one * O, KCUDA_F32, lin->b, K->dt, O) < 0))
		goto out;
	for (size_t o = 0; o < O; o++)
		for (size_t j = 0; j < C; j++)
			h[j * O + o] = w[o * C + j];
	f->wt[i] = s_upload_new(m, h, nt);
	h = NULL;
	if (!f->wt[i])
		goto out;
	s_release(m, lin->w);
	s_release(m, lin->b);
	lin->w = lin->b = NULL;
	rc = 0;
out:
	free(h), free(w);
	return rc;
}

/* One more copy of B^T (or A) rows into a folded weight: rows [rows,
 * cols] from src to dst, in the set of that shape (made with its
 * identity when new). */
static int s_fold_copy(dmodel_t *m, int rows, int cols, void *dst, const void *src)
{
	int cap = 4 * 2 * m->cfg.n_layers;
	struct dfset *fs = NULL;

	for (int j = 0; j < m->nfset; j++)
		if (m->fset[j].out == cols && m->fset[j].r == rows)
			fs = &m->fset[j];
	if (!fs) {
		struct dfset *nv = realloc(m->fset, (size_t)(m->nfset + 1) * sizeof *nv);
		if (!nv)
			return err_set("out of memory");
		m->fset = nv;
		fs = &m->fset[m->nfset++];
		*fs = (struct dfset){ cols, rows, 0, NULL, NULL, NULL, NULL };
		if (!(fs->c = malloc((size_t)cap * sizeof *fs->c)) ||
		    !(fs->a = malloc((size_t)cap * sizeof *fs->a)) ||
		    !(fs->b = malloc((size_t)cap * sizeof *fs->b)))
			return err_set("out of memory");
		D_PTR(fs->eye = s_eye(m, rows));
	}
	if (fs->n == cap)
		return err_set("internal: more folded copies of one shape than layers allow");
	fs->c[fs->n] = dst;
	fs->a[fs->n] = fs->eye;
	fs->b[fs->n++] = src;
	return 0;
}

/* The batched copies of every folded member's B^T rows (a Res layer's
 * bcat; -nores: without B0^T) into its W', and of the A rows (Res: [A0;
 * W_R], without W_R under fixed routing) of o and down into theirs. */
static int s_fold_sets(dmodel_t *m)
{
	int C = m->cfg.dim;

	for (int l = 0; l < m->cfg.n_layers; l++) {
		for (int gi = 0; gi < 2; gi++) {
			const dfold_t *f = &m->l[l].fold[gi];
			for (int i = 0; f->ldx && i < f->ns; i++) {
				const dlin_t *lin = &m->l[l].lin[f->slot[i]];
				const dad_t *ad = lin->ad;
				int skip = f->res && ad->nores ? ad->r0 : 0;
				D_TRY(s_fold_copy(m, f->w[i] - skip, lin->out,
						  s_at(m, f->wt[i], (size_t)(C + f->off[i] + skip) * lin->out),
						  s_at(m, ad->bcat.cur, (size_t)skip * lin->out)));
				if (f->acat)
					D_TRY(s_fold_copy(m, ad->r0 + ad->e, C,
							  s_at(m, f->acat, (size_t)f->off[i] * C), ad->a0.cur));
			}
		}
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			const dlin_t *lin = &m->l[l].lin[s];
			if (lin->ka)
				D_TRY(s_fold_copy(m, lin->ka, lin->in,
						  s_at(m, lin->w, (size_t)lin->out * lin->in), lin->ad->a0.cur));
		}
	}
	return 0;
}

/* The rows of a0 that reach dx in backward: LoRA A0; Res [A0; W_R];
 * Flan, MoLoRA [A; W_R] (the router rows not under fixed routing). */
static int s_tail_rows(const dmodel_t *m, const dad_t *ad)
{
	if (ad->mol)
		return ad->r0 + ad->e * ad->r + (m->fixed ? 0 : ad->e + (ad->r0 > 0));
	return ad->res ? (m->fixed ? ad->r0 : ad->r0 + ad->e) : ad->r0;
}

/* o and down folded in backward: when every adapter on them is a plain
 * LoRA or a Res, Flan or MoLoRA layer (and there is one), each such
 * weight becomes [W; A; 0] ([ldr, in]; the forward reads its first rows,
 * W, as before), and dres gets ldr columns (s_tail_backward). */
static int s_tail_build(dmodel_t *m, int *wmax)
{
	int C = m->cfg.dim, kmax = 0;
	static const int slots[2] = { MODEL_O, MODEL_DOWN };

	for (int l = 0; l < m->cfg.n_layers; l++)
		for (int i = 0; i < 2; i++) {
			const dlin_t *lin = &m->l[l].lin[slots[i]];
			const dad_t *ad = lin->ad;
			int ka;
			if (!ad)
				continue;
			if ((!ad->mol && ad->r0 <= 0) || lin->out != C)
				return 0;
			ka = s_tail_rows(m, ad);
			kmax = ka > kmax ? ka : kmax;
		}
	if (!kmax)
		return 0;
	m->ldr = (C + kmax + 7) / 8 * 8;
	for (int l = 0; l < m->cfg.n_layers; l++)
		for (int i = 0; i < 2; i++) {
			dlin_t *lin = &m->l[l].lin[slots[i]];
			const dad_t *ad = lin->ad;
			void *w;
			if (!ad)
				continue;
			/* through the host, as s_fold_weight (the emulated tables'
			 * buffers are fp32 whatever dt says) */
			float *h = calloc((size_t)m->ldr * lin->in, sizeof *h);
			if (!h)
				return err_set("out of memory");
			if (m->K->download(h, KCUDA_F32, lin->w, m->K->dt, (size_t)lin->out * lin->in) < 0) {
				free(h);
				return -1;
			}
			D_PTR(w = s_upload_new(m, h, (size_t)m->ldr * lin->in));
			s_release(m, lin->w);
			lin->w = w;
			lin->ka = s_tail_rows(m, ad);
			m->ntail++;
		}
	*wmax = kmax > *wmax ? kmax : *wmax;
	return 0;
}

/* Whether group gi of L folds, and how (f's ns, slots, r or res, off, w,
 * ldx, one): a plain-LoRA dgroup of one scale, or Res, Flan or MoLoRA
 * layers on every projection of the group. */
static int s_fold_plan(dmodel_t *m, dlayer_t *L, int gi, dfold_t *f)
{
	int C = m->cfg.dim, hasb = 0, off = 0, ok = 1;
	dgroup_t gr;

	memset(f, 0, sizeof *f);
	s_group(m, L, &gr, gi);
	if (gr.ns) {
		for (int i = 0; ok && i < gr.ns; i++)
			ok = L->lin[gr.slot[i]].ad->s0 == L->lin[gr.slot[0]].ad->s0;
		if (!ok)
			return 0;
		f->ns = gr.ns, f->r = gr.r;
		memcpy(f->slot, gr.slot, sizeof f->slot);
		for (int i = 0; i < gr.ns; i++)
			f->off[i] = i * gr.r, f->w[i] = gr.r;
	} else {
		for (int i = 0; ok && i < 3 && s_group_slots[gi][i] >= 0; i++) {
			const dad_t *ad = L->lin[s_group_slots[gi][i]].ad;
			ok = ad && (ad->res || ad->mol);
			if (ok)
				f->slot[f->ns++] = s_group_slots[gi][i];
		}
		if (!ok)
			return 0;
		f->res = 1;
		for (int i = 0; i < f->ns; i++) {
			const dad_t *ad = L->lin[f->slot[i]].ad;
			f->off[i] = i ? f->off[i - 1] + f->w[i - 1] : 0;
			f->w[i] = ad->r0 + ad->e * ad->r;
		}
	}
	for (int i = 0; i < f->ns; i++) {
		hasb |= L->lin[f->slot[i]].b != NULL;
		if (L->lin[f->slot[i]].in != C)
			return 0;
		off = f->off[i] + f->w[i];
	}
	f->ldx = (C + off + hasb + 7) / 8 * 8;
	f->one = hasb ? C + off : -1;
	return 1;
}

/* A folded group of Res layers (not Flan or MoLoRA), with m->direct: its
 * stacked a0 rows (dfold_t's acat; zero until s_fold_sets' copies). */
static int s_fold_acat(dmodel_t *m, const dlayer_t *L, dfold_t *f)
{
	f->acat = NULL, f->wcat = 0;
	if (!f->res || !m->direct)
		return 0;
	for (int i = 0; i < f->ns; i++)
		if (!L->lin[f->slot[i]].ad->res)
			return 0;
	f->wcat = f->off[f->ns - 1] + f->w[f->ns - 1];
	D_PTR(f->acat = s_alloc(m, (size_t)f->wcat * m->cfg.dim, m->K->dt));
	return 0;
}

/* Fold every group that allows it (m->fold, s_fold_plan), and o and down
 * (s_tail_build). At attach, once: the adapters do not change. */
static int s_fold_build(dmodel_t *m)
{
	const model_config_t *g = &m->cfg;
	int wmax = 0;

	if (!m->fold)
		return 0;
	for (int l = 0; l < g->n_layers; l++) {
		dlayer_t *L = &m->l[l];
		for (int gi = 0; gi < 2; gi++) {
			dfold_t *f = &L->fold[gi];
			if (!s_fold_plan(m, L, gi, f)) {
				memset(f, 0, sizeof *f);
				continue;
			}
			for (int i = 0; i < f->ns; i++) {
				D_TRY(s_fold_weight(m, f, i, &L->lin[f->slot[i]]));
				wmax = f->w[i] > wmax ? f->w[i] : wmax;
			}
			D_TRY(s_fold_acat(m, L, f));
			if (!f->res)
				wmax = f->ns * f->r > wmax ? f->ns * f->r : wmax;
			m->nfolded++;
		}
	}
	D_TRY(s_tail_build(m, &wmax));
	if (!m->nfolded && !m->ntail)
		return 0;
	m->eye_n = wmax;
	D_PTR(m->eye_w = s_eye(m, wmax));
	/* a reservation made before (none of the callers does) has no X */
	m->max_b = m->max_t = 0;
	D_TRY(s_fold_sets(m));
	return s_fold_refresh(m);
}

/* Copy every folded member's B^T (Res, Flan, MoLoRA: bcat), and o's and
 * down's A, into the folded weights: wherever those change (the
 * optimizer's step, dmodel_sync_from_host, the fold itself), not before
 * each forward, so eval and decoding copy nothing and the optimizer,
 * outside the CUDA graphs, does it once per step. */
static int s_fold_refresh(dmodel_t *m)
{
	for (int i = 0; i < m->nfset; i++) {
		const struct dfset *fs = &m->fset[i];
		D_TRY(m->K->gemm_batched(m->K->dt, fs->c, fs->a, fs->b, fs->n, fs->r, fs->out, fs->r, 0,
					 0, 1.0f, 0.0f));
	}
	return 0;
}

/* X's column of ones (the biases' row of the W'), over n rows, and its
 * other columns zero: at reservation, before anything writes X. */
static int s_fold_ones(dmodel_t *m, void *x, const dfold_t *f, size_t n)
{
	size_t rows = 256, ld = (size_t)f->ldx;
	float *h;
	int rc = 0;

	if (!f->ldx || f->one < 0)
		return 0;
	if (!(h = calloc(rows * ld, sizeof *h)))
		return err_set("out of memory");
	for (size_t i = 0; i < rows; i++)
		h[i * ld + (size_t)f->one] = 1.0f;
	for (size_t r0 = 0; r0 < n && rc == 0; r0 += rows)
		rc = m->K->upload(s_at(m, x, r0 * ld), m->K->dt, h, KCUDA_F32,
				  (n - r0 < rows ? n - r0 : rows) * ld);
	if (rc == 0)
		rc = m->K->sync();
	free(h);
	return rc;
}

int dmodel_reserve(dmodel_t *m, int b, int t)
{
	const model_config_t *g = &m->cfg;
	const struct kdevice_ops *K = m->K;
	int dt = K->dt;
	size_t N = (size_t)b * t, C = g->dim, QD = (size_t)g->n_heads * g->head_dim;
	size_t KD = (size_t)g->n_kv_heads * g->head_dim, F = g->ffn_dim, V = g->vocab_size;
	size_t er = 1, e = 1, r0 = 1, wide = 1, xg = 1, dl = C, xur = 1;

	if (b <= 0 || t <= 0 || t > g->max_seq)
		return err_set("batch shape [%d, %d] out of range (max sequence %d)", b, t, g->max_seq);
	if (m->acts && b <= m->max_b && t <= m->max_t)
		return 0;
	for (int i = 0; i < m->nacts; i++)
		K->free(m->acts[i]);
	m->nacts = 0;
	free(m->res);
	free(m->htgt), free(m->hlosses), free(m->hdl);
	if (!(m->res = calloc((size_t)g->n_layers + 1, sizeof *m->res)) ||
	    !(m->htgt = malloc(N * sizeof(int))) || !(m->hlosses = malloc(N * sizeof(float))) ||
	    !(m->hdl = malloc(N * sizeof(float))))
		return err_set("out of memory");
	for (int l = 0; l < g->n_layers; l++) {
		dlayer_t *L = &m->l[l];
		size_t w1 = L->fold[0].ldx ? (size_t)L->fold[0].ldx : C;
		size_t w2 = L->fold[1].ldx ? (size_t)L->fold[1].ldx : C;
		dl = s_max(dl, s_max(w1, w2));
		D_PTR((L->a1 = s_act(m, N * w1, dt)) && (L->rstd1 = s_act(m, N, KCUDA_F32)) &&
		      (L->q = s_act(m, N * QD, dt)) && (L->k = s_act(m, N * KD, dt)) &&
		      (L->v = s_act(m, N * KD, dt)) &&
		      (L->att = s_act(m, K->attention_saved(b, t, g->n_heads), KCUDA_F32)) &&
		      (L->y = s_act(m, N * QD, dt)) && (L->mid = s_act(m, N * C, dt)) &&
		      (L->a2 = s_act(m, N * w2, dt)) && (L->rstd2 = s_act(m, N, KCUDA_F32)) &&
		      (L->gate = s_act(m, N * F, dt)) && (L->up = s_act(m, N * F, dt)) &&
		      (L->sw = s_act(m, N * F, dt)));
		for (int gi = 0; gi < 2; gi++) {
			dgroup_t *gr = &L->grp[gi];
			s_group(m, L, gr, gi);
			if (L->fold[gi].ldx && !L->fold[gi].res &&
			    (gr->ns != L->fold[gi].ns || gr->r != L->fold[gi].r))
				return err_set("layer %d: a folded adapter group no longer forms", l);
			if (gr->ns && !L->fold[gi].ldx)
				D_PTR(gr->u = s_act(m, N * gr->ns * gr->r, dt));
			if (gr->ns)
				xg = s_max(xg, (size_t)gr->ns * gr->r);
		}
		D_TRY(s_fold_ones(m, L->a1, &L->fold[0], N));
		D_TRY(s_fold_ones(m, L->a2, &L->fold[1], N));
		xur = s_max(xur, s_max((size_t)L->fold[0].wcat, (size_t)L->fold[1].wcat));
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			dad_t *ad = L->lin[s].ad;
			if (!ad)
				continue;
			r0 = s_max(r0, (size_t)ad->r0);
			ad->cat = NULL; /* (not made for every adapter) */
			if (s_grouped(L, s)) {
				ad->u0 = NULL; /* its u is columns of the group's */
				continue;
			}
			if (ad->mol) {
				size_t w = (size_t)ad->r0 + (size_t)ad->e * ad->r;
				size_t ne = (size_t)ad->e + (ad->r0 > 0);
				er = s_max(er, w), e = s_max(e, ne), wide = s_max(wide, w);
				size_t lu = (size_t)s_mol_ld(ad);
				er = s_max(er, lu);
				D_PTR((ad->u0 = s_act(m, N * lu, dt)) &&
				      (s_cat_in_x(m, L, s) || (ad->cat = s_act(m, N * w, dt))) &&
				      (ad->s = s_act(m, N * ne, KCUDA_F32)));
				continue;
			}
			if (!ad->res) {
				D_PTR(ad->u0 = s_act(m, N * ad->r0, dt));
				continue;
			}
			er = s_max(er, (size_t)ad->e * ad->r), e = s_max(e, (size_t)ad->e);
			wide = s_max(wide, (size_t)ad->r0 + (size_t)ad->e * ad->r);
			D_PTR((ad->mab = s_act(m, (size_t)ad->e * ad->r * ad->r0, dt)) &&
			      (ad->p = s_act(m, (size_t)ad->e * ad->r * ad->r0, KCUDA_F32)) &&
			      (s_cat_in_x(m, L, s) ||
			       (ad->cat = s_act(m, N * (ad->r0 + (size_t)ad->e * ad->r), dt))) &&
			      (ad->z = s_act(m, N * ad->e * ad->r, dt)) &&
			      (ad->zl = s_act(m, N * ad->e * ad->r, dt)) &&
			      (ad->s = s_act(m, N * ad->e, KCUDA_F32)));
		}
	}
	for (int l = 0; l <= g->n_layers; l++)
		D_PTR(m->res[l] = s_act(m, N * C, dt));
	D_PTR((m->lnf = s_act(m, N * C, dt)) && (m->rstdf = s_act(m, N, KCUDA_F32)) &&
	      (m->logits = s_act(m, N * V, dt)) && (m->losses = s_act(m, N, KCUDA_F32)) &&
	      (m->lse = s_act(m, N, KCUDA_F32)) && (m->dlosses = s_act(m, N, KCUDA_F32)) &&
	      (m->tok = s_act(m, N, KCUDA_I32)) && (m->tgt = s_act(m, N, KCUDA_I32)) &&
	      (m->tmp = s_act(m, N * C, dt)) &&
	      (m->dres = s_act(m, N * (m->ntail ? (size_t)m->ldr : C), dt)) &&
	      (m->dln = s_act(m, N * dl, dt)) && (m->dq = s_act(m, N * QD, dt)) &&
	      (m->dk = s_act(m, N * KD, dt)) && (m->dv = s_act(m, N * KD, dt)) &&
	      (m->dy = s_act(m, N * QD, dt)) && (m->dgate = s_act(m, N * F, dt)) &&
	      (m->dup = s_act(m, N * F, dt)) && (m->dsw = s_act(m, N * F, dt)) &&
	      (m->x1 = s_act(m, N * wide, dt)) && (m->x3 = s_act(m, N * er, dt)) &&
	      (m->xu = s_act(m, N * s_max(xur, s_max(r0, (r0 + e + 7) / 8 * 8)), dt)) &&
	      (m->xg = s_act(m, N * xg, dt)) &&
	      (m->cosv = s_act(m, (size_t)t * g->head_dim / 2, KCUDA_F32)) &&
	      (m->sinv = s_act(m, (size_t)t * g->head_dim / 2, KCUDA_F32)));
	D_TRY(K->rope_table(m->cosv, m->sinv, t, g->head_dim, 0, g->rope_theta));
	m->max_b = b, m->max_t = t;
	return 0;
}

/* ---- forward and backward ---------------------------------------------- */

/* MoDULA-Res without materialising h = s0 u0 B0^T ([N, out], as wide as
 * the layer): the experts read h only through z = h A^T = u0s (A B0)^T
 * with u0s = s0 u0 and M = A B0 [e*r, r0]. With a0 = [A0; W_R], cat =
 * [u0s | zw] and bcat = [B0^T; B^T], a layer is three products of its
 * width (x a0^T, cat bcat; in backward dy bcat^T, cat^T dy, d[u0 rl]^T x,
 * d[u0 rl] a0), products of N x (e*r) or smaller, and one fused row kernel
 * each way (res_forward/backward: softmax, weighting, LeakyReLU; the
 * backward's also du0s += dz M):
 *   dA = (dz^T u0s) B0^T, dB0^T += (dz^T u0s)^T A, du0s += dz M.
 * The same function of the weights as moe.c, rounded differently. */
/* ur = x [A0; W_R]^T (x's rows ldx apart; fixed routing: the fixed
 * logits in the router's columns) and the fused row kernel: cat (rows ldc
 * apart: ad->cat, 0, or a folded group's X), z, zl, s. */
static int s_res_cat(dmodel_t *m, dad_t *ad, const void *x, int ldx, int n, void *cat, int ldc)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt, r0 = ad->r0, ldu = s_ur_ld(ad);

	if (m->fixed) {
		D_TRY(K->gemm_ld(m->xu, dt, ldu, x, ldx, ad->a0.cur, ad->in, n, r0, ad->in, 0, 1, 1.0f,
				 0.0f));
		D_TRY(K->gemm_ld(s_at(m, m->xu, (size_t)r0), dt, ldu, m->fixed_rl, ad->e, m->eye, ad->e,
				 n, ad->e, ad->e, 0, 0, 1.0f, 0.0f));
	} else {
		D_TRY(K->gemm_ld(m->xu, dt, ldu, x, ldx, ad->a0.cur, ad->in, n, r0 + ad->e, ad->in, 0, 1,
				 1.0f, 0.0f));
	}
	return s_res_rows(m, ad, cat, ldc, m->xu, ldu, n);
}

static int s_res_forward(dmodel_t *m, dad_t *ad, void *y, const void *x, int n)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt, er = ad->e * ad->r, w = ad->r0 + er, out = ad->out, r0 = ad->r0;

	D_TRY(s_res_cat(m, ad, x, ad->in, n, ad->cat, 0));
	if (ad->nores)
		return K->gemm_ld(y, dt, out, s_at(m, ad->cat, (size_t)r0), w,
				  s_at(m, ad->bcat.cur, (size_t)r0 * out), out, n, out, er, 0, 0, 1.0f,
				  1.0f);
	return K->gemm_ld(y, dt, out, ad->cat, w, ad->bcat.cur, out, n, out, w, 0, 0, 1.0f, 1.0f);
}

/* x's and dx's rows are ldx apart, dy's ldy; the forward's cat is at cat,
 * rows ldc apart. dcat_in (a folded group's, with dx): dy bcat^T is
 * already in those columns of dx's rows (-nores: zero in the first r0):
 * worked on there, in place (m->direct), or copied out first. */
static int s_res_backward(dmodel_t *m, dad_t *ad, void *dx, int ldx, const void *dy, int ldy,
			  const void *x, int n, const void *cat, int ldc, void *dcat_in)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt, er = ad->e * ad->r, w = ad->r0 + er, out = ad->out, r0 = ad->r0, ldd = w;
	int ra = m->fixed ? r0 : r0 + ad->e;    /* fixed routing: no router gradient */
	void *dcat = m->x1, *dz = m->x3;
	float *db = ad->bcat.grad, *p = ad->p;
	struct kcuda_wgrad wg[3];
	int nwg = 0;

	if (dcat_in && m->direct) {
		dcat = dcat_in, ldd = ldx;
	} else if (dcat_in) {
		D_TRY(K->gemm_ld(dcat, dt, w, dcat_in, ldx, m->eye_w, m->eye_n, n, w, w, 0, 0, 1.0f,
				 0.0f));
	} else if (ad->nores) {
		D_TRY(K->gemm_ld(s_at(m, dcat, (size_t)r0), dt, w, dy, ldy,
				 s_at(m, ad->bcat.cur, (size_t)r0 * out), out, n, er, out, 0, 1, 1.0f, 0.0f));
	} else {
		D_TRY(K->gemm_ld(dcat, dt, w, dy, ldy, ad->bcat.cur, out, n, w, out, 0, 1, 1.0f, 0.0f));
	}
	/* dz; dcat[:, r0:r0+e] = d rl; dcat[:, :r0] = s0 du0s = s0 (direct +
	 * dz M) (-nores: no direct part), the product fused into the row kernel */
	D_TRY(K->res_backward(dcat, ldd, dz, ad->s, ad->z, ad->zl, ad->mab, ad->nores, n, r0, ad->e,
			      ad->r, ad->s0, ad->sd, ad->slope));
	/* the weight gradients, one launch: dB^T += cat^T dy (-nores: without
	 * B0's rows); P = dz^T u0s [er, r0] in fp32 (dA += P B0^T and dB0^T +=
	 * P^T A follow, against the fp32 masters, for every layer at once at
	 * the end of the backward: s_res_batched; these small products may
	 * cancel: in bf16 they cost A's gradient a tenth of its size); and
	 * [du0 | drl] = dcat[:, :r0+e] against a0 = [A0; W_R] */
	if (db && ad->nores)
		s_wg(wg, &nwg, db + (size_t)r0 * out, out, s_at(m, (void *)cat, (size_t)r0), ldc, dy,
		     ldy, er, out, 1.0f, 1.0f);
	else if (db)
		s_wg(wg, &nwg, db, out, cat, ldc, dy, ldy, w, out, 1.0f, 1.0f);
	if (ad->a.grad || db)
		s_wg(wg, &nwg, p, r0, dz, er, cat, ldc, er, r0, 1.0f, 0.0f);
	if (ad->a0.grad)
		s_wg(wg, &nwg, ad->a0.grad, ad->in, dcat, ldd, x, ldx, ra, ad->in, 1.0f, 1.0f);
	D_TRY(K->gemm_wgrad(wg, nwg, n));
	if (dx)
		D_TRY(K->gemm_ld(dx, dt, ldx, dcat, ldd, ad->a0.cur, ad->in, n, ad->in, ra, 0, 0, 1.0f,
				 1.0f));
	return 0;
}

/* The small products of the Res layers, one batched launch per shape
 * (a model's layers share a few): S_MAB, before the forward, M = A B0
 * [e*r, r0] of every layer; after the backward, S_DA: dA += P B0^T and
 * S_DB0: dB0^T += P^T A (fp32, against the masters) where they train. */
enum { S_MAB, S_DA, S_DB0 };

static int s_res_batched(dmodel_t *m, int kind)
{
	const struct kdevice_ops *K = m->K;
	int nv = 0, rc = -1, cap = m->cfg.n_layers * MODEL_NSLOTS;
	dad_t **v = malloc((size_t)cap * sizeof *v);
	void **c = malloc((size_t)cap * sizeof *c);
	const void **a = malloc((size_t)cap * sizeof *a), **b = malloc((size_t)cap * sizeof *b);

	if (!v || !c || !a || !b) {
		err_set("out of memory");
		goto out;
	}
	for (int l = 0; l < m->cfg.n_layers; l++)
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			dad_t *ad = m->l[l].lin[s].ad;
			if (ad && ad->res && (kind == S_MAB || (kind == S_DA ? ad->a.grad != NULL
										: ad->bcat.grad != NULL)))
				v[nv++] = ad;
		}
	while (nv > 0) {
		dad_t *f = v[0];
		int n = 0, keep = 0, er = f->e * f->r;
		for (int i = 0; i < nv; i++) {
			dad_t *ad = v[i];
			if (ad->out != f->out || ad->e * ad->r != er || ad->r0 != f->r0) {
				v[keep++] = ad;
				continue;
			}
			c[n] = kind == S_MAB ? ad->mab : kind == S_DA ? (void *)ad->a.grad
								  : (void *)ad->bcat.grad;
			a[n] = kind == S_MAB ? ad->a.cur : ad->p;
			b[n++] = kind == S_MAB ? ad->bcat.cur : kind == S_DA ? (void *)ad->bcat.master
									     : (void *)ad->a.master;
		}
		nv = keep;
		if ((kind == S_MAB && K->gemm_batched(K->dt, c, a, b, n, er, f->r0, f->out, 0, 1, 1.0f,
						      0.0f) < 0) ||
		    (kind == S_DA && K->gemm_batched(KCUDA_F32, c, a, b, n, er, f->out, f->r0, 0, 0,
						     1.0f, 1.0f) < 0) ||
		    (kind == S_DB0 && K->gemm_batched(KCUDA_F32, c, a, b, n, f->r0, f->out, er, 1, 0,
						      1.0f, 1.0f) < 0))
			goto out;
	}
	rc = 0;
out:
	free(v), free(c), free(a), free(b);
	return rc;
}

/* MoLoRA and MoDULA-Flan: u = x A^T over the w = r0 + e*r stacked rows
 * (Flan's universal expert of rank r0 first, none for MoLoRA), s =
 * softmax(x W_R^T) over E = e + (r0 > 0) (fixed routing: the one-hot
 * logits of dmodel_route_rows instead), y += (scale_i s_i u_i) B^T. */
/* u = x A^T, the router logits and the router op: cat (x's rows ldx
 * apart; cat's ldc: ad->cat, 0, or a folded group's X). */
static int s_mol_cat(dmodel_t *m, dad_t *ad, const void *x, int ldx, int n, void *cat, int ldc)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt, w = ad->r0 + ad->e * ad->r, ne = ad->e + (ad->r0 > 0), lu = s_mol_ld(ad);
	int nr = m->fixed ? w : w + ne; /* fixed routing: the fixed logits, not W_R's */

	D_TRY(K->gemm_ld(ad->u0, dt, lu, x, ldx, ad->a0.cur, ad->in, n, nr, ad->in, 0, 1, 1.0f,
			 0.0f));
	return K->router_weight_forward(cat, ldc, ad->s,
					m->fixed ? m->fixed_rl : s_at(m, ad->u0, (size_t)w),
					m->fixed ? 0 : lu, ad->u0, lu, n, ad->e, ad->r, ad->sd, ad->r0,
					ad->s0);
}

static int s_mol_forward(dmodel_t *m, dad_t *ad, void *y, const void *x, int n)
{
	int w = ad->r0 + ad->e * ad->r;

	D_TRY(s_mol_cat(m, ad, x, ad->in, n, ad->cat, 0));
	return m->K->gemm_ld(y, m->K->dt, ad->out, ad->cat, w, ad->bcat.cur, ad->out, n, ad->out, w,
			     0, 0, 1.0f, 1.0f);
}

/* duw = dy B; dB^T += uw^T dy; [du | drl] (side by side in m->x3, rows
 * s_mol_ld apart) from the router op; d[A; W_R] += [du | drl]^T x, dx +=
 * [du | drl] [A; W_R] (no router terms with fixed routing). x's and dx's
 * rows are ldx apart, dy's ldy; the forward's cat (uw) is at cat, rows
 * ldc apart. duw_in (a folded group's, with dx): dy B is already in those
 * columns of dx's rows (read there when m->direct, else copied out
 * first). */
static int s_mol_backward(dmodel_t *m, dad_t *ad, void *dx, int ldx, const void *dy, int ldy,
			  const void *x, int n, const void *cat, int ldc, const void *duw_in)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt, w = ad->r0 + ad->e * ad->r, ne = ad->e + (ad->r0 > 0), in = ad->in;
	int lu = s_mol_ld(ad), nr = m->fixed ? w : w + ne;
	void *du = m->x3, *drl = m->fixed ? NULL : s_at(m, m->x3, (size_t)w);
	const void *duw = m->x1;
	int ldw = w, nwg = 0;
	struct kcuda_wgrad wg[2];

	if (duw_in && m->direct)
		duw = duw_in, ldw = ldx;
	else if (duw_in)
		D_TRY(K->gemm_ld(m->x1, dt, w, duw_in, ldx, m->eye_w, m->eye_n, n, w, w, 0, 0, 1.0f,
				 0.0f));
	else
		D_TRY(K->gemm_ld(m->x1, dt, w, dy, ldy, ad->bcat.cur, ad->out, n, w, ad->out, 0, 1,
				 1.0f, 0.0f));
	D_TRY(K->zero(du, (size_t)n * lu, dt));
	D_TRY(K->router_weight_backward(drl, lu, du, duw, ldw, ad->s, ad->u0, lu, n, ad->e, ad->r,
					ad->sd, ad->r0, ad->s0));
	/* the weight gradients, one launch: dB^T += uw^T dy, d[A; W_R] +=
	 * [du | drl]^T x */
	if (ad->bcat.grad)
		s_wg(wg, &nwg, ad->bcat.grad, ad->out, cat, ldc, dy, ldy, w, ad->out, 1.0f, 1.0f);
	if (ad->a0.grad)
		s_wg(wg, &nwg, ad->a0.grad, in, du, lu, x, ldx, nr, in, 1.0f, 1.0f);
	D_TRY(K->gemm_wgrad(wg, nwg, n));
	if (dx)
		D_TRY(K->gemm_ld(dx, dt, ldx, du, lu, ad->a0.cur, in, n, in, nr, 0, 0, 1.0f, 1.0f));
	return 0;
}

/* y += s0 (x A0^T) B0^T, MoLoRA or MoDULA-Res. */
static int s_ad_forward(dmodel_t *m, dad_t *ad, void *y, const void *x, int n)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt;

	if (ad->mol)
		return s_mol_forward(m, ad, y, x, n);
	if (ad->res)
		return s_res_forward(m, ad, y, x, n);
	D_TRY(K->gemm(ad->u0, dt, x, ad->a0.cur, n, ad->r0, ad->in, 0, 1, 1.0f, 0.0f));
	return K->gemm(y, dt, ad->u0, ad->bcat.cur, n, ad->out, ad->r0, 0, 0, ad->s0, 1.0f);
}

/* dx (may be NULL) += J^T dy; adapter gradients += (where they train):
 * du = s0 dy B0, dB0^T += s0 u0^T dy, dA0 += du^T x, dx += du A0. */
static int s_ad_backward(dmodel_t *m, dad_t *ad, void *dx, const void *dy, const void *x, int n)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt, nwg = 0;
	void *du = m->xu;
	struct kcuda_wgrad wg[2];

	if (ad->mol)
		return s_mol_backward(m, ad, dx, ad->in, dy, ad->out, x, n, ad->cat,
				      ad->r0 + ad->e * ad->r, NULL);
	if (ad->res)
		return s_res_backward(m, ad, dx, ad->in, dy, ad->out, x, n, ad->cat,
				      ad->r0 + ad->e * ad->r, NULL);
	D_TRY(K->gemm(du, dt, dy, ad->bcat.cur, n, ad->r0, ad->out, 0, 1, ad->s0, 0.0f));
	if (ad->bcat.grad)
		s_wg(wg, &nwg, ad->bcat.grad, ad->out, ad->u0, ad->r0, dy, ad->out, ad->r0, ad->out,
		     ad->s0, 1.0f);
	if (ad->a0.grad)
		s_wg(wg, &nwg, ad->a0.grad, ad->in, du, ad->r0, x, ad->in, ad->r0, ad->in, 1.0f, 1.0f);
	D_TRY(K->gemm_wgrad(wg, nwg, n));
	if (dx)
		D_TRY(K->gemm(dx, dt, du, ad->a0.cur, n, ad->in, ad->r0, 0, 0, 1.0f, 1.0f));
	return 0;
}

static int s_lin_forward(dmodel_t *m, dlin_t *lin, void *out, const void *inp, int n)
{
	D_TRY(m->K->matmul_forward(out, inp, lin->w, lin->b, n, lin->in, lin->out));
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	if (lin->ad)
		D_TRY(s_ad_forward(m, lin->ad, out, inp, n));
	return s_mark(m, DMODEL_PROF_ADAPTERS);
}

/* out = res + the projection of inp (o and down onto the residual
 * stream): without a bias, the base product with res added in its
 * epilogue (matmul_forward_res: on cuBLASLt one product and no residual
 * kernel), then the adapter's part added into out. */
static int s_lin_forward_res(dmodel_t *m, dlin_t *lin, void *out, const void *res,
			     const void *inp, int n)
{
	if (lin->b) {
		D_TRY(s_lin_forward(m, lin, m->tmp, inp, n));
		D_TRY(m->K->residual_forward(out, res, m->tmp, (size_t)n * lin->out));
		return s_mark(m, DMODEL_PROF_POINTWISE);
	}
	D_TRY(m->K->matmul_forward_res(out, res, inp, lin->w, n, lin->in, lin->out));
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	if (lin->ad)
		D_TRY(s_ad_forward(m, lin->ad, out, inp, n));
	return s_mark(m, DMODEL_PROF_ADAPTERS);
}

/* dinp (may be NULL) = dout W + (add ? dinp : 0), then the adapter's
 * part added: overwriting spares the zeroing of dinp and a read of it. */
static int s_lin_backward(dmodel_t *m, dlin_t *lin, void *dinp, const void *dout, const void *inp,
			  int n, int add)
{
	if (dinp)
		D_TRY(m->K->gemm(dinp, m->K->dt, dout, lin->w, n, lin->in, lin->out, 0, 0, 1.0f,
				 add ? 1.0f : 0.0f));
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	if (lin->ad)
		D_TRY(s_ad_backward(m, lin->ad, dinp, dout, inp, n));
	return s_mark(m, DMODEL_PROF_ADAPTERS);
}

/* The projections of group gi of layer L over the same input x, into
 * ys[i]: each base product, then (a dgroup) one product for every u and
 * each y_i += s0 u_i B_i^T, or each adapter on its own. */
static int s_lins_forward(dmodel_t *m, dlayer_t *L, int gi, void *const *ys, const void *x, int n)
{
	const struct kdevice_ops *K = m->K;
	dgroup_t *g = &L->grp[gi];
	const int *slots = s_group_slots[gi];
	int dt = K->dt, w = g->ns * g->r;
	const dad_t *first;

	if (L->fold[gi].res) {
		/* x is X: each Res layer's cat into its columns (written there by
		 * its row kernel, or copied), then y_i = X W'_i */
		const dfold_t *f = &L->fold[gi];
		/* Res members under soft routing: every ur in one product */
		int stacked = f->acat && !m->fixed;
		if (stacked)
			D_TRY(K->gemm_ld(m->xu, dt, f->wcat, x, f->ldx, f->acat, m->cfg.dim, n, f->wcat,
					 m->cfg.dim, 0, 1, 1.0f, 0.0f));
		for (int i = 0; i < f->ns; i++) {
			dad_t *ad = L->lin[f->slot[i]].ad;
			void *xc = s_at(m, (void *)x, (size_t)(ad->in + f->off[i]));
			void *cat = m->direct ? xc : ad->cat;
			int ldc = m->direct ? f->ldx : 0;
			if (stacked)
				D_TRY(s_res_rows(m, ad, cat, ldc, s_at(m, m->xu, (size_t)f->off[i]), f->wcat,
						 n));
			else
				D_TRY(ad->res ? s_res_cat(m, ad, x, f->ldx, n, cat, ldc)
					      : s_mol_cat(m, ad, x, f->ldx, n, cat, ldc));
			if (!m->direct)
				D_TRY(K->gemm_ld(xc, dt, f->ldx, ad->cat, f->w[i], m->eye_w, m->eye_n, n,
						 f->w[i], f->w[i], 0, 0, 1.0f, 0.0f));
		}
		D_TRY(s_mark(m, DMODEL_PROF_ADAPTERS));
		for (int i = 0; i < f->ns; i++)
			D_TRY(K->gemm(ys[i], dt, x, f->wt[i], n, L->lin[f->slot[i]].out, f->ldx, 0, 0, 1.0f,
				      0.0f));
		return s_mark(m, DMODEL_PROF_BASE);
	}
	if (!g->ns) {
		for (int i = 0; i < 3 && slots[i] >= 0; i++)
			D_TRY(s_lin_forward(m, &L->lin[slots[i]], ys[i], x, n));
		return 0;
	}
	first = L->lin[g->slot[0]].ad;
	if (L->fold[gi].ldx) {
		/* x is X: its u columns first (written there by a product that
		 * reads X's first C columns, or, with MODULA_FOLD_DIRECT=0, made in
		 * m->xg and copied), then y_i = X W'_i */
		const dfold_t *f = &L->fold[gi];
		int C = first->in;
		void *xu = s_at(m, (void *)x, (size_t)C);
		if (m->direct) {
			D_TRY(K->gemm_ld(xu, dt, f->ldx, x, f->ldx, first->a0.cur, C, n, w, C, 0, 1,
					 first->s0, 0.0f));
		} else {
			D_TRY(K->gemm_ld(m->xg, dt, w, x, f->ldx, first->a0.cur, C, n, w, C, 0, 1,
					 first->s0, 0.0f));
			D_TRY(K->gemm_ld(xu, dt, f->ldx, m->xg, w, m->eye_w, m->eye_n, n, w, w, 0, 0,
					 1.0f, 0.0f));
		}
		D_TRY(s_mark(m, DMODEL_PROF_ADAPTERS));
		for (int i = 0; i < g->ns; i++)
			D_TRY(K->gemm(ys[i], dt, x, f->wt[i], n, L->lin[g->slot[i]].out, f->ldx, 0, 0, 1.0f,
				      0.0f));
		return s_mark(m, DMODEL_PROF_BASE);
	}
	for (int i = 0; i < g->ns; i++) {
		dlin_t *lin = &L->lin[g->slot[i]];
		D_TRY(K->matmul_forward(ys[i], x, lin->w, lin->b, n, lin->in, lin->out));
	}
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	D_TRY(K->gemm(g->u, dt, x, first->a0.cur, n, w, first->in, 0, 1, 1.0f, 0.0f));
	for (int i = 0; i < g->ns; i++) {
		const dad_t *ad = L->lin[g->slot[i]].ad;
		D_TRY(K->gemm_ld(ys[i], dt, ad->out, s_at(m, g->u, (size_t)i * g->r), w, ad->bcat.cur,
				 ad->out, n, ad->out, g->r, 0, 0, ad->s0, 1.0f));
	}
	return s_mark(m, DMODEL_PROF_ADAPTERS);
}

/* s_lins_backward of a folded group: x is X, dx (may be NULL; else [n,
 * ldx], overwritten: add must be 0) gets [dx | dy_1 B_1 | ... | junk] from
 * the base products, du = s0 (those columns) goes to m->xg, then as
 * unfolded. Without dx the du_i are products of their own. Res layers:
 * each one's dcat = dy_i bcat_i^T is in its columns, and s_res_backward
 * takes it from there. */
static int s_fold_backward(dmodel_t *m, dlayer_t *L, int gi, void *dx, const void *const *dys,
			   const void *x, int n, int add)
{
	const struct kdevice_ops *K = m->K;
	const dfold_t *f = &L->fold[gi];
	const dad_t *first = L->lin[f->slot[0]].ad;
	int dt = K->dt, w = f->ns * f->r, C = first->in, ldu = w, nwg = 0;
	void *du = m->xg;
	float su = 1.0f;
	struct kcuda_wgrad wg[4];

	if (add)
		return err_set("a folded adapter group's backward cannot add into dx");
	if (dx) {
		for (int i = 0; i < f->ns; i++)
			D_TRY(K->gemm(dx, dt, dys[i], f->wt[i], n, f->ldx, L->lin[f->slot[i]].out, 0, 1,
				      1.0f, i > 0 ? 1.0f : 0.0f));
		D_TRY(s_mark(m, DMODEL_PROF_BASE));
	}
	if (f->res) {
		/* Res members under soft routing: dx += their dcat a0 as one
		 * product (every dcat lies in dx's columns C.., against acat) */
		int stacked = f->acat && !m->fixed && dx;
		for (int i = 0; i < f->ns; i++) {
			dad_t *ad = L->lin[f->slot[i]].ad;
			size_t col = (size_t)(C + f->off[i]);
			void *in = dx ? s_at(m, dx, col) : NULL;
			const void *cat = m->direct ? s_at(m, (void *)x, col) : ad->cat;
			int ldc = m->direct ? f->ldx : f->w[i];
			D_TRY(ad->res ? s_res_backward(m, ad, stacked ? NULL : dx, f->ldx, dys[i], ad->out,
						       x, n, cat, ldc, in)
				      : s_mol_backward(m, ad, dx, f->ldx, dys[i], ad->out, x, n, cat, ldc,
						       in));
		}
		if (stacked)
			D_TRY(K->gemm_ld(dx, dt, f->ldx, s_at(m, dx, (size_t)C), f->ldx, f->acat, C, n, C,
					 f->wcat, 0, 0, 1.0f, 1.0f));
		return s_mark(m, DMODEL_PROF_ADAPTERS);
	}
	/* du = s0 (dx's columns C..): read there (m->direct: s0 in the
	 * products' alpha), or copied out into m->xg */
	if (dx && m->direct)
		du = s_at(m, dx, (size_t)C), ldu = f->ldx, su = first->s0;
	else if (dx)
		D_TRY(K->gemm_ld(du, dt, w, s_at(m, dx, (size_t)C), f->ldx, m->eye_w, m->eye_n, n, w,
				 w, 0, 0, first->s0, 0.0f));
	for (int i = 0; !dx && i < f->ns; i++) {
		const dad_t *ad = L->lin[f->slot[i]].ad;
		D_TRY(K->gemm_ld(s_at(m, du, (size_t)i * f->r), dt, w, dys[i], ad->out, ad->bcat.cur,
				 ad->out, n, f->r, ad->out, 0, 1, ad->s0, 0.0f));
	}
	/* the weight gradients, one launch: each dB_i^T += (s0 u_i)^T dy_i (X's
	 * columns), dA += du^T x */
	for (int i = 0; i < f->ns; i++) {
		const dad_t *ad = L->lin[f->slot[i]].ad;
		if (ad->bcat.grad)
			s_wg(wg, &nwg, ad->bcat.grad, ad->out,
			     s_at(m, (void *)x, (size_t)C + (size_t)i * f->r), f->ldx, dys[i], ad->out,
			     f->r, ad->out, 1.0f, 1.0f);
	}
	if (first->a0.grad)
		s_wg(wg, &nwg, first->a0.grad, C, du, ldu, x, f->ldx, w, C, su, 1.0f);
	D_TRY(K->gemm_wgrad(wg, nwg, n));
	if (dx)
		D_TRY(K->gemm_ld(dx, dt, f->ldx, du, ldu, first->a0.cur, C, n, C, w, 0, 0, su, 1.0f));
	return s_mark(m, DMODEL_PROF_ADAPTERS);
}

/* Backward of s_lins_forward: dx (may be NULL) = sum_i dys[i] W_i (+ dx
 * when add) + the adapters' parts; their gradients added. A dgroup: du_i
 * = s0 dy_i B_i into columns of m->xg, dB_i^T += s0 u_i^T dy_i, then one
 * product for every dA_i (du^T x) and one for dx += du [A_1; ...]. */
static int s_lins_backward(dmodel_t *m, dlayer_t *L, int gi, void *dx, const void *const *dys,
			   const void *x, int n, int add)
{
	const struct kdevice_ops *K = m->K;
	dgroup_t *g = &L->grp[gi];
	const int *slots = s_group_slots[gi];
	int dt = K->dt, w = g->ns * g->r, nwg = 0;
	void *du = m->xg;
	const dad_t *first;
	struct kcuda_wgrad wg[4];

	if (L->fold[gi].ldx)
		return s_fold_backward(m, L, gi, dx, dys, x, n, add);
	if (!g->ns) {
		for (int i = 0; i < 3 && slots[i] >= 0; i++)
			D_TRY(s_lin_backward(m, &L->lin[slots[i]], dx, dys[i], x, n, add || i > 0));
		return 0;
	}
	for (int i = 0; dx && i < g->ns; i++) {
		dlin_t *lin = &L->lin[g->slot[i]];
		D_TRY(K->gemm(dx, dt, dys[i], lin->w, n, lin->in, lin->out, 0, 0, 1.0f,
			      add || i > 0 ? 1.0f : 0.0f));
	}
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	for (int i = 0; i < g->ns; i++) {
		dad_t *ad = L->lin[g->slot[i]].ad;
		D_TRY(K->gemm_ld(s_at(m, du, (size_t)i * g->r), dt, w, dys[i], ad->out, ad->bcat.cur,
				 ad->out, n, g->r, ad->out, 0, 1, ad->s0, 0.0f));
		if (ad->bcat.grad)
			s_wg(wg, &nwg, ad->bcat.grad, ad->out, s_at(m, g->u, (size_t)i * g->r), w, dys[i],
			     ad->out, g->r, ad->out, ad->s0, 1.0f);
	}
	first = L->lin[g->slot[0]].ad;
	/* the weight gradients, one launch: each dB_i, and dA += du^T x */
	if (first->a0.grad)
		s_wg(wg, &nwg, first->a0.grad, first->in, du, w, x, first->in, w, first->in, 1.0f,
		     1.0f);
	D_TRY(K->gemm_wgrad(wg, nwg, n));
	if (dx)
		D_TRY(K->gemm(dx, dt, du, first->a0.cur, n, first->in, w, 0, 0, 1.0f, 1.0f));
	return s_mark(m, DMODEL_PROF_ADAPTERS);
}

/* Backward of o or down when folded (m->ntail): dy is dres, ldr columns.
 * The adapter's parts first (LoRA: du = s0 dy B, dB, dA; Res, Flan,
 * MoLoRA: their backward without dx), du (Res: dcat's first ka columns;
 * Flan, MoLoRA: du and the router logits' gradient) copied
 * into dres's columns C.., then dinp = [dres | du | 0] [W; A; 0]: the base
 * product and the adapter's dx += du A at once. No adapter: dinp = dres W. */
static int s_tail_backward(dmodel_t *m, dlin_t *lin, void *dinp, const void *x, int n)
{
	const struct kdevice_ops *K = m->K;
	dad_t *ad = lin->ad;
	int dt = K->dt, ldr = m->ldr, C = lin->out, in = lin->in;
	void *dy = m->dres;

	if (!lin->ka) {
		D_TRY(K->gemm_ld(dinp, dt, in, dy, ldr, lin->w, in, n, in, C, 0, 0, 1.0f, 0.0f));
		return s_mark(m, DMODEL_PROF_BASE);
	}
	if (ad->res) {
		D_TRY(s_res_backward(m, ad, NULL, in, dy, ldr, x, n, ad->cat, ad->r0 + ad->e * ad->r,
				     NULL));
		D_TRY(K->gemm_ld(s_at(m, dy, (size_t)C), dt, ldr, m->x1, ad->r0 + ad->e * ad->r,
				 m->eye_w, m->eye_n, n, lin->ka, lin->ka, 0, 0, 1.0f, 0.0f));
	} else if (ad->mol) {
		/* [du | the router logits' gradient] (ka columns) in m->x3 */
		int w = ad->r0 + ad->e * ad->r;
		D_TRY(s_mol_backward(m, ad, NULL, in, dy, ldr, x, n, ad->cat, w, NULL));
		D_TRY(K->gemm_ld(s_at(m, dy, (size_t)C), dt, ldr, m->x3, s_mol_ld(ad), m->eye_w,
				 m->eye_n, n, lin->ka, lin->ka, 0, 0, 1.0f, 0.0f));
	} else {
		/* du into dres's columns C.. (a product reading its first C), or
		 * (MODULA_FOLD_DIRECT=0) into m->xu and copied there */
		void *du = m->direct ? s_at(m, dy, (size_t)C) : m->xu;
		int ldu = m->direct ? ldr : ad->r0;
		D_TRY(K->gemm_ld(du, dt, ldu, dy, ldr, ad->bcat.cur, ad->out, n, ad->r0, ad->out, 0, 1,
				 ad->s0, 0.0f));
		struct kcuda_wgrad wg[2];
		int nwg = 0;
		/* the weight gradients, one launch */
		if (ad->bcat.grad)
			s_wg(wg, &nwg, ad->bcat.grad, ad->out, ad->u0, ad->r0, dy, ldr, ad->r0, ad->out,
			     ad->s0, 1.0f);
		if (ad->a0.grad)
			s_wg(wg, &nwg, ad->a0.grad, in, du, ldu, x, in, ad->r0, in, 1.0f, 1.0f);
		D_TRY(K->gemm_wgrad(wg, nwg, n));
		if (!m->direct)
			D_TRY(K->gemm_ld(s_at(m, dy, (size_t)C), dt, ldr, du, ad->r0, m->eye_w, m->eye_n,
					 n, ad->r0, ad->r0, 0, 0, 1.0f, 0.0f));
	}
	D_TRY(s_mark(m, DMODEL_PROF_ADAPTERS));
	D_TRY(K->gemm_ld(dinp, dt, in, dy, ldr, lin->w, in, n, in, ldr, 0, 0, 1.0f, 0.0f));
	return s_mark(m, DMODEL_PROF_BASE);
}

/* Check the batch and queue its inputs: the RoPE table when t changes,
 * the tokens, and with targets the targets and each position's gradient
 * weight (gscale > 0). */
static int s_inputs(dmodel_t *m, const int *tokens, const int *targets, int b, int t,
		    float gscale)
{
	const model_config_t *g = &m->cfg;
	const struct kdevice_ops *K = m->K;
	int N = b * t, V = g->vocab_size;

	if (!m->acts || b > m->max_b || t > m->max_t)
		return err_set("batch [%d, %d] larger than the reservation [%d, %d]", b, t, m->max_b,
			       m->max_t);
	for (int i = 0; i < N; i++)
		if (tokens[i] < 0 || tokens[i] >= V)
			return err_set("token id %d outside the vocabulary (%d)", tokens[i], V);
	if (t != m->t)
		D_TRY(K->rope_table(m->cosv, m->sinv, t, g->head_dim, 0, g->rope_theta));
	m->b = b, m->t = t, m->ntargets = 0;
	D_TRY(s_mark(m, -1));
	D_TRY(K->upload(m->tok, KCUDA_I32, tokens, KCUDA_I32, (size_t)N));
	if (!targets)
		return 0;
	for (int i = 0; i < N; i++)
		m->ntargets += targets[i] >= 0;
	for (int i = 0; i < N; i++)
		m->hdl[i] = targets[i] < 0 || gscale <= 0 ? 0.0f
			  : m->seqw ? gscale * m->seqw[i / t] : gscale / (float)m->ntargets;
	D_TRY(K->upload(m->tgt, KCUDA_I32, targets, KCUDA_I32, (size_t)N));
	if (gscale > 0)
		D_TRY(K->upload(m->dlosses, KCUDA_F32, m->hdl, KCUDA_F32, (size_t)N));
	return 0;
}

enum { S_LOGITS, S_LOSSES, S_GRADIENT }; /* what s_forward_ops ends with */

/* Layer l over n rows of m->res[l] into m->res[l + 1]. Its queries, keys
 * and values go to the layer's buffers from row pos, RoPE covers them as
 * [rb, rt] from position pos, attention runs over [ab, at] rows of those
 * buffers from row 0, and the output projection reads the attention's
 * rows from pos. The training forward: pos 0, [b, t] for both; decoding
 * (dmodel_decode_feed): the n new tokens at pos, attention over all. */
static int s_layer_forward(dmodel_t *m, int l, int n, int pos, int rb, int rt, int ab, int at)
{
	const model_config_t *g = &m->cfg;
	const struct kdevice_ops *K = m->K;
	dlayer_t *L = &m->l[l];
	int C = g->dim, NH = g->n_heads, NKV = g->n_kv_heads, HS = g->head_dim;
	size_t QD = (size_t)NH * HS, KD = (size_t)NKV * HS, rope = (size_t)pos * (HS / 2);
	void *q = s_at(m, L->q, (size_t)pos * QD), *k = s_at(m, L->k, (size_t)pos * KD);

	D_TRY(K->rmsnorm_forward_ld(L->a1, L->fold[0].ldx ? L->fold[0].ldx : C, L->rstd1, m->res[l],
				    L->ln1, n, C, g->rms_eps));
	D_TRY(s_mark(m, DMODEL_PROF_NORMS));
	{
		void *qkv[3] = { q, k, s_at(m, L->v, (size_t)pos * KD) };
		D_TRY(s_lins_forward(m, L, 0, qkv, L->a1, n));
	}
	D_TRY(K->rope_forward(q, m->cosv + rope, m->sinv + rope, rb, rt, NH, HS));
	D_TRY(K->rope_forward(k, m->cosv + rope, m->sinv + rope, rb, rt, NKV, HS));
	D_TRY(K->attention_forward(L->y, L->att, L->q, L->k, L->v, ab, at, NH, NKV, HS));
	D_TRY(s_mark(m, DMODEL_PROF_ATTENTION));
	D_TRY(s_lin_forward_res(m, &L->lin[MODEL_O], L->mid, m->res[l],
				s_at(m, L->y, (size_t)pos * QD), n));
	D_TRY(K->rmsnorm_forward_ld(L->a2, L->fold[1].ldx ? L->fold[1].ldx : C, L->rstd2, L->mid,
				    L->ln2, n, C, g->rms_eps));
	D_TRY(s_mark(m, DMODEL_PROF_NORMS));
	{
		void *gu[2] = { L->gate, L->up };
		D_TRY(s_lins_forward(m, L, 1, gu, L->a2, n));
	}
	D_TRY(K->swiglu_forward(L->sw, L->gate, L->up, (size_t)n * g->ffn_dim));
	D_TRY(s_mark(m, DMODEL_PROF_POINTWISE));
	return s_lin_forward_res(m, &L->lin[MODEL_DOWN], m->res[l + 1], L->mid, L->sw, n);
}

/* The forward's ops over the queued inputs, from the embedding to the
 * logits, then the losses, or the losses and the logits' gradient (fused
 * cross-entropy, written over the logits). Nothing is read back. */
static int s_forward_ops(dmodel_t *m, int upto)
{
	const model_config_t *g = &m->cfg;
	const struct kdevice_ops *K = m->K;
	int b = m->b, t = m->t, N = b * t, C = g->dim, V = g->vocab_size;

	if (m->nres)
		D_TRY(s_res_batched(m, S_MAB));
	D_TRY(K->embedding_forward(m->res[0], m->tok, m->wte, N, C));
	D_TRY(s_mark(m, DMODEL_PROF_POINTWISE));
	for (int l = 0; l < g->n_layers; l++)
		D_TRY(s_layer_forward(m, l, N, 0, b, t, b, t));
	D_TRY(K->rmsnorm_forward(m->lnf, m->rstdf, m->res[g->n_layers], m->norm, N, C, g->rms_eps));
	D_TRY(s_mark(m, DMODEL_PROF_NORMS));
	D_TRY(K->matmul_forward(m->logits, m->lnf, m->head, NULL, N, C, V));
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	if (upto == S_GRADIENT)
		D_TRY(K->crossentropy_fused(m->losses, m->logits, m->dlosses, m->tgt, N, V));
	else if (upto == S_LOSSES)
		D_TRY(K->crossentropy_forward(m->losses, m->lse, m->logits, m->tgt, N, V));
	return s_mark(m, upto == S_LOGITS ? -1 : DMODEL_PROF_CROSS_ENTROPY);
}

/* Read the per-position losses back; *loss = their mean over targets. */
static int s_losses(dmodel_t *m, const int *targets, double *loss)
{
	int N = m->b * m->t;
	double sum = 0.0;

	D_TRY(m->K->download(m->hlosses, KCUDA_F32, m->losses, KCUDA_F32, (size_t)N));
	for (int i = 0; i < N; i++)
		if (targets[i] >= 0)
			sum += m->hlosses[i];
	if (loss)
		*loss = m->ntargets ? sum / m->ntargets : 0.0;
	return 0;
}

int dmodel_forward(dmodel_t *m, const int *tokens, const int *targets, int b, int t, float gscale,
		   double *loss)
{
	D_TRY(s_inputs(m, tokens, targets, b, t, gscale));
	if (!targets) {
		D_TRY(s_forward_ops(m, S_LOGITS));
		return m->K->sync();
	}
	D_TRY(s_forward_ops(m, gscale > 0 ? S_GRADIENT : S_LOSSES));
	D_TRY(s_losses(m, targets, loss));
	if (gscale <= 0)
		m->ntargets = 0;        /* nothing for backward */
	return 0;
}

int dmodel_target_count(const dmodel_t *m)
{
	return m->ntargets;
}

int dmodel_logits(dmodel_t *m, float *out)
{
	return m->K->download(out, KCUDA_F32, m->logits, m->K->dt,
			      (size_t)m->b * m->t * m->cfg.vocab_size);
}

/* The backward's ops, from the logits' gradient the fused cross-entropy
 * left to the adapters' gradients (accumulated). */
static int s_backward_ops(dmodel_t *m)
{
	const model_config_t *g = &m->cfg;
	const struct kdevice_ops *K = m->K;
	int b = m->b, t = m->t, N = b * t, C = g->dim, NH = g->n_heads, NKV = g->n_kv_heads;
	int HS = g->head_dim, V = g->vocab_size, dt = K->dt, ldr = m->ntail ? m->ldr : C;
	size_t NF = (size_t)N * g->ffn_dim;

	D_TRY(s_mark(m, -1));
	/* the fused cross-entropy left dlogits in m->logits; dln = dlogits head */
	D_TRY(K->gemm(m->dln, dt, m->logits, m->head, N, C, V, 0, 0, 1.0f, 0.0f));
	D_TRY(s_mark(m, DMODEL_PROF_BASE));
	D_TRY(K->zero(m->dres, (size_t)N * ldr, dt));
	D_TRY(K->rmsnorm_backward_ld(m->dres, ldr, NULL, m->dln, C, m->res[g->n_layers], m->norm,
				     m->rstdf, N, C));
	D_TRY(s_mark(m, DMODEL_PROF_NORMS));
	for (int l = g->n_layers - 1; l >= 0; l--) {
		dlayer_t *L = &m->l[l];
		int need_dx = l > 0;
		if (m->ntail)
			D_TRY(s_tail_backward(m, &L->lin[MODEL_DOWN], m->dsw, L->sw, N));
		else
			D_TRY(s_lin_backward(m, &L->lin[MODEL_DOWN], m->dsw, m->dres, L->sw, N, 0));
		D_TRY(K->swiglu_backward_set(m->dgate, m->dup, m->dsw, L->gate, L->up, NF));
		D_TRY(s_mark(m, DMODEL_PROF_POINTWISE));
		{
			const void *dgu[2] = { m->dgate, m->dup };
			D_TRY(s_lins_backward(m, L, 1, m->dln, dgu, L->a2, N, 0));
		}
		D_TRY(K->rmsnorm_backward_ld(m->dres, ldr, NULL, m->dln,
					     L->fold[1].ldx ? L->fold[1].ldx : C, L->mid, L->ln2, L->rstd2,
					     N, C));
		D_TRY(s_mark(m, DMODEL_PROF_NORMS));
		if (m->ntail)
			D_TRY(s_tail_backward(m, &L->lin[MODEL_O], m->dy, L->y, N));
		else
			D_TRY(s_lin_backward(m, &L->lin[MODEL_O], m->dy, m->dres, L->y, N, 0));
		/* written, not added into zeroed buffers */
		D_TRY(K->attention_backward_set(m->dq, m->dk, m->dv, m->dy, L->y, L->att, L->q, L->k,
						L->v, b, t, NH, NKV, HS));
		D_TRY(K->rope_backward(m->dq, m->cosv, m->sinv, b, t, NH, HS));
		D_TRY(K->rope_backward(m->dk, m->cosv, m->sinv, b, t, NKV, HS));
		D_TRY(s_mark(m, DMODEL_PROF_ATTENTION));
		{
			const void *dqkv[3] = { m->dq, m->dk, m->dv };
			D_TRY(s_lins_backward(m, L, 0, need_dx ? m->dln : NULL, dqkv, L->a1, N, 0));
		}
		if (need_dx)
			D_TRY(K->rmsnorm_backward_ld(m->dres, ldr, NULL, m->dln,
						     L->fold[0].ldx ? L->fold[0].ldx : C, m->res[l],
						     L->ln1, L->rstd1, N, C));
		D_TRY(s_mark(m, DMODEL_PROF_NORMS));
	}
	if (m->nres) {
		D_TRY(s_res_batched(m, S_DA));
		D_TRY(s_res_batched(m, S_DB0));
		D_TRY(s_mark(m, DMODEL_PROF_ADAPTERS));
	}
	return 0;
}

int dmodel_backward(dmodel_t *m)
{
	return m->ntargets ? s_backward_ops(m) : 0;
}

/* ---- greedy decoding --------------------------------------------------- */

/* One sequence: the queries, keys and values of every layer stay in the
 * reservation's q, k, v rows (position p at row p), so a step runs the
 * linear layers on the new tokens alone; attention runs over all the
 * positions (the cached queries too: the op is the training one, causal,
 * and its earlier rows come out as before), then the new rows go on. */
void dmodel_decode_reset(dmodel_t *m)
{
	m->dpos = 0;
}

int dmodel_decode_feed(dmodel_t *m, const int *ids, int n, float *logits)
{
	const model_config_t *g = &m->cfg;
	const struct kdevice_ops *K = m->K;
	int pos = m->dpos, T = pos + n, C = g->dim, HS = g->head_dim, V = g->vocab_size;

	if (n < 1)
		return err_set("decode: nothing to feed");
	if (!m->acts || T > m->max_t || n > m->max_b * m->max_t)
		return err_set("decode: %d tokens, more than the %d reserved", T, m->max_t);
	for (int i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= V)
			return err_set("token id %d outside the vocabulary (%d)", ids[i], V);
	if (m->t != m->max_t) {         /* the RoPE table for every position */
		D_TRY(K->rope_table(m->cosv, m->sinv, m->max_t, HS, 0, g->rope_theta));
		m->t = m->max_t;
	}
	m->b = 1, m->ntargets = 0;
	if (m->nres)
		D_TRY(s_res_batched(m, S_MAB));
	D_TRY(K->upload(m->tok, KCUDA_I32, ids, KCUDA_I32, (size_t)n));
	D_TRY(K->embedding_forward(m->res[0], m->tok, m->wte, n, C));
	for (int l = 0; l < g->n_layers; l++)
		D_TRY(s_layer_forward(m, l, n, pos, 1, n, 1, T));
	/* the last token's logits only */
	D_TRY(K->rmsnorm_forward(m->lnf, m->rstdf, s_at(m, m->res[g->n_layers], (size_t)(n - 1) * C),
				 m->norm, 1, C, g->rms_eps));
	D_TRY(K->matmul_forward(m->logits, m->lnf, m->head, NULL, 1, C, V));
	D_TRY(K->download(logits, KCUDA_F32, m->logits, K->dt, (size_t)V));
	m->dpos = T;
	return 0;
}

int dmodel_decode_pos(const dmodel_t *m)
{
	return m->dpos;
}

int dmodel_route_probs(dmodel_t *m, int layer, int slot, float *out, int *ne)
{
	const dad_t *ad;

	if (layer < 0 || layer >= m->cfg.n_layers || slot < 0 || slot >= MODEL_NSLOTS ||
	    !(ad = m->l[layer].lin[slot].ad) || !(ad->res || ad->mol))
		return err_set("route_probs: layer %d %s has no router on the device", layer,
			       slot >= 0 && slot < MODEL_NSLOTS ? model_slot_name(slot) : "?");
	*ne = ad->e + (ad->mol && ad->r0 > 0);
	return m->K->download(out, KCUDA_F32, ad->s, KCUDA_F32, (size_t)m->b * m->t * *ne);
}

/* ---- a training micro-batch, as a CUDA graph ---------------------------- */

void dmodel_graphs(dmodel_t *m, int on)
{
	m->graphs = on;
}

static void s_graph_drop(dmodel_t *m, struct dgraph *g)
{
	if (g->exec)
		m->K->graph_free(g->exec);
	memset(g, 0, sizeof *g);
}

static int s_micro_ops(dmodel_t *m)
{
	D_TRY(s_forward_ops(m, S_GRADIENT));
	return s_backward_ops(m);
}

/* The graph slot of the current batch shape: found, or a free or the
 * least recently used one emptied for it. All are dropped when buffers
 * were allocated since they were recorded. */
static struct dgraph *s_graph_slot(dmodel_t *m)
{
	struct dgraph *g = NULL;

	if (m->g_gen != m->gen) {
		for (int i = 0; i < DMODEL_GRAPHS; i++)
			s_graph_drop(m, &m->g[i]);
		m->g_gen = m->gen;
	}
	for (int i = 0; i < DMODEL_GRAPHS; i++) {
		struct dgraph *c = &m->g[i];
		if (c->state && c->b == m->b && c->t == m->t) {
			g = c;
			break;
		}
		if (!g || (g->state && (!c->state || c->used < g->used)))
			g = c;
	}
	if (g->state && (g->b != m->b || g->t != m->t))
		s_graph_drop(m, g);
	g->b = m->b, g->t = m->t, g->used = ++m->g_clock;
	return g;
}

/* The micro-batch's ops with the inputs queued: the first time for a
 * batch shape directly (every lazily made thing, such as the batched
 * products' pointer arrays, is made then), the second time recorded as a
 * CUDA graph and replayed, then replayed. A capture that fails (an op the
 * graph cannot hold) leaves nothing run, so the ops run directly; after
 * three failures the model goes on without graphs and says why. */
static int s_micro_graph(dmodel_t *m)
{
	const struct kdevice_ops *K = m->K;
	struct dgraph *g = s_graph_slot(m);
	char why[512];
	int rc;

	if (g->state == 0) {
		D_TRY(s_micro_ops(m));
		g->state = 1;
		return 0;
	}
	if (g->state == 1) {
		/* a capture that cannot even start (a driver or setting that
		 * refuses it) counts as a failed one: the step runs directly */
		if (K->graph_begin() < 0) {
			rc = -1, snprintf(why, sizeof why, "%s", err_msg());
		} else {
			if ((rc = s_micro_ops(m)) < 0)
				snprintf(why, sizeof why, "%s", err_msg());
			if (K->graph_end(&g->exec) < 0 && rc == 0)
				rc = -1, snprintf(why, sizeof why, "%s", err_msg());
		}
		if (rc == 0 && m->g_gen != m->gen)
			rc = -1, snprintf(why, sizeof why, "buffers were allocated during the capture");
		if (rc < 0) {
			/* the next micro-batch of this shape tries again (what it
			 * misses, this direct run makes), up to three failures */
			s_graph_drop(m, g);
			if (++m->g_fails >= 3) {
				log_warn("training goes on without CUDA graphs: %s", why);
				for (int i = 0; i < DMODEL_GRAPHS; i++)
					s_graph_drop(m, &m->g[i]);
				m->g_off = 1;
			} else {
				log_warn("a CUDA graph capture failed (tried again later): %s", why);
			}
			return s_micro_ops(m);
		}
		g->state = 2;
	}
	if ((rc = K->graph_launch(g->exec)) == 1) {
		/* stale (see kdevice_ops): this micro-batch directly, the next
		 * one recorded again */
		K->graph_free(g->exec);
		g->exec = NULL, g->state = 1;
		return s_micro_ops(m);
	}
	m->g_replays += rc == 0;
	return rc;
}

int dmodel_adapter_groups(const dmodel_t *m)
{
	int n = 0;

	for (int l = 0; l < m->cfg.n_layers; l++)
		n += (m->l[l].grp[0].ns > 0) + (m->l[l].grp[1].ns > 0);
	return n;
}

int dmodel_folded_groups(const dmodel_t *m)
{
	return m->nfolded;
}

int dmodel_folded_tail(const dmodel_t *m)
{
	return m->ntail;
}

long dmodel_graph_replays(const dmodel_t *m)
{
	return m->g_replays;
}

int dmodel_train_micro(dmodel_t *m, const int *tokens, const int *targets, int b, int t,
		       float gscale, double *loss)
{
	if (!targets || gscale <= 0)
		return err_set("train_micro: a training micro-batch needs targets and gscale > 0");
	D_TRY(s_inputs(m, tokens, targets, b, t, gscale));
	if (!m->ntargets) {
		D_TRY(s_forward_ops(m, S_LOSSES));
		return s_losses(m, targets, loss);
	}
	if (m->graphs && !m->g_off && !m->prof && m->K->graph_begin)
		D_TRY(s_micro_graph(m));
	else
		D_TRY(s_micro_ops(m));
	return s_losses(m, targets, loss);
}

/* ---- the optimizer ----------------------------------------------------- */

int dmodel_zero_grad(dmodel_t *m)
{
	return m->ntrain ? m->K->zero(m->tgrad, m->ntrain, KCUDA_F32) : 0;
}


static int s_step_run(dmodel_t *m, const optim_config_t *c, float lr, long step, float *norm,
		      const params_t *group);

int dmodel_step(dmodel_t *m, const optim_config_t *c, float lr, long step, float *norm)
{
	D_TRY(s_mark(m, -1));
	D_TRY(s_step_run(m, c, lr, step, norm, NULL));
	D_TRY(s_fold_refresh(m));
	return s_mark(m, DMODEL_PROF_OPTIMIZER);
}

int dmodel_step_group(dmodel_t *m, const optim_config_t *c, float lr, long step,
		      const params_t *group)
{
	D_TRY(s_step_run(m, c, lr, step, NULL, group));
	return s_fold_refresh(m);
}

static int s_step_run(dmodel_t *m, const optim_config_t *c, float lr, long step, float *norm,
		      const params_t *group)
{
	const struct kdevice_ops *K = m->K;
	double ss = 0.0;
	float gn;

	if (m->fused_step && !group) {
		/* every member of the spans trains: one launch per kind */
		if (!m->ntrain)
			return 0;
		D_TRY(K->sumsq(m->tgrad, m->ntrain, &ss));
		gn = (float)sqrt(ss);
		if (norm)
			*norm = gn;
		if (c->clip > 0.0f && gn > c->clip)
			D_TRY(K->scale(m->tgrad, c->clip / (gn + 1e-6f), m->ntrain));
		return K->adamw(m->tmaster, m->tcur == m->tmaster ? NULL : m->tcur, m->tgrad, m->tm,
				m->tv, m->ntrain, lr, c->beta1, c->beta2, c->eps, c->weight_decay, step);
	}
	for (int i = 0; i < m->np; i++) {
		const dparam_t *d = &m->p[i];
		double part;
		if (d->train_index < 0 || (group && s_train_index(group, d->host) < 0))
			continue;
		D_TRY(K->sumsq(d->buf->grad + d->off, d->host->n, &part));
		ss += part;
	}
	gn = (float)sqrt(ss);
	if (norm)
		*norm = gn;
	for (int i = 0; i < m->np; i++) {
		const dparam_t *d = &m->p[i];
		dbuf_t *bf = d->buf;
		if (d->train_index < 0 || (group && s_train_index(group, d->host) < 0))
			continue;
		if (c->clip > 0.0f && gn > c->clip)
			D_TRY(K->scale(bf->grad + d->off, c->clip / (gn + 1e-6f), d->host->n));
		D_TRY(K->adamw(bf->master + d->off,
			       bf->cur == bf->master ? NULL : s_at(m, bf->cur, d->off),
			       bf->grad + d->off, bf->m + d->off, bf->v + d->off, d->host->n, lr,
			       c->beta1, c->beta2, c->eps, c->weight_decay, step));
	}
	return 0;
}

int dmodel_route_rows(dmodel_t *m, const int *expert, int nseq, int t)
{
	int e = m->fixed_e, ne = e + m->fixed_head;
	float *h;

	if (!m->fixed || !e)
		return err_set("route_rows: the device model has no fixed-routed mixture layers");
	if ((size_t)nseq * t > (size_t)m->max_b * m->max_t)
		return err_set("route_rows: %d x %d rows, more than reserved", nseq, t);
	if (!m->fixed_rl) {
		/* Res copies the logits with a product by eye; Flan reads them */
		float *id = m->fixed_head ? NULL : calloc((size_t)e * e, sizeof *id);
		if (!m->fixed_head && !id)
			return err_set("out of memory");
		for (int i = 0; id && i < e; i++)
			id[i * e + i] = 1.0f;
		m->eye = id ? s_alloc(m, (size_t)e * e, m->K->dt) : NULL;
		m->fixed_rl = s_alloc(m, (size_t)m->max_b * m->max_t * ne, m->K->dt);
		if ((id && !m->eye) || !m->fixed_rl ||
		    (id && m->K->upload(m->eye, m->K->dt, id, KCUDA_F32, (size_t)e * e) < 0)) {
			free(id);
			return -1;
		}
		free(id);
	}
	if (!(h = malloc((size_t)nseq * t * ne * sizeof *h)))
		return err_set("out of memory");
	for (int j = 0; j < nseq; j++) {
		if (expert[j] < 1 || expert[j] > e) {
			free(h);
			return err_set("route_rows: sequence %d to expert %d (domain experts are 1..%d)", j,
				       expert[j], e);
		}
		/* logit 0 for the sequence's expert, -1e30 (weight 0) for the others */
		for (int k = 0; k < t; k++)
			for (int i = 0; i < ne; i++)
				h[((size_t)j * t + k) * ne + i] =
					i == expert[j] - 1 + m->fixed_head ? 0.0f : -1e30f;
	}
	int rc = m->K->upload(m->fixed_rl, m->K->dt, h, KCUDA_F32, (size_t)nseq * t * ne);
	free(h);
	return rc;
}

int dmodel_seq_weights(dmodel_t *m, const float *w, int nseq)
{
	free(m->seqw);
	m->seqw = NULL;
	if (!w)
		return 0;
	if (!(m->seqw = malloc((size_t)nseq * sizeof *m->seqw)))
		return err_set("out of memory");
	memcpy(m->seqw, w, (size_t)nseq * sizeof *m->seqw);
	return 0;
}

const float *dmodel_row_losses(const dmodel_t *m)
{
	return m->hlosses;
}

int dmodel_grads_to_host(dmodel_t *m)
{
	float *tmp = s_tmp(m);
	int rc = -1;

	if (!tmp)
		return -1;
	for (int i = 0; i < m->np; i++) {
		const dparam_t *d = &m->p[i];
		if (d->train_index >= 0 && s_down(m, d, d->buf->grad, d->host->grad, tmp) < 0)
			goto out;
	}
	rc = 0;
out:
	free(tmp);
	return rc;
}

int dmodel_backend(const char *device, const char *dtype, const struct kdevice_ops **K)
{
	int req, dt = KCUDA_BF16;
	enum kdevice d;

	*K = NULL;
	if (dtype && strcmp(dtype, "bf16") && strcmp(dtype, "f16") && strcmp(dtype, "f32"))
		return err_set("unknown --dtype '%s': use bf16, f16 or f32", dtype);
	if (dtype)
		dt = !strcmp(dtype, "f32") ? KCUDA_F32 : !strcmp(dtype, "f16") ? KCUDA_F16 : KCUDA_BF16;
	if (!device || !strcmp(device, "cpu"))
		return 0;
	if (!strcmp(device, "table")) {   /* with --dtype: the GPU's storage rounding */
		*K = dtype ? kdevice_emulated(dt) : kdevice_ops(KDEV_CPU, KCUDA_F32);
		return *K ? 0 : -1;
	}
	D_TRY(kdevice_parse(device, &req));
	D_TRY(kdevice_resolve(req, &d));
	if (d == KDEV_CUDA)
		*K = kdevice_ops(KDEV_CUDA, dt);
	return 0;
}

int dmodel_backend_args(int argc, char **argv, int first, const char **device,
			const struct kdevice_ops **K)
{
	const char *dtype = NULL;

	*device = NULL;
	for (int i = first; i < argc; i += 2) {
		if (i + 1 == argc || (strcmp(argv[i], "--device") && strcmp(argv[i], "--dtype"))) {
			err_set("unexpected argument '%s'", argv[i]);
			return -2;
		}
		*(strcmp(argv[i], "--device") ? &dtype : device) = argv[i + 1];
	}
	return dmodel_backend(*device, dtype, K);
}

int dmodel_sync(dmodel_t *m)
{
	return m->K->sync();
}

void dmodel_memory(const dmodel_t *m, char *buf, size_t n)
{
	m->K->memory_report(buf, n);
}
