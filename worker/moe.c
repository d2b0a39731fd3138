/* moe.c: the mixture adapter of the MoDULA methods; see moe.h.
 *
 * One forward/backward path serves every method and stage: a forward is a
 * list of "items" (expert e over rows [lo, hi), weighted by router column
 * `col` or by 1 when col < 0) plus, for Res, the universal output h over
 * all rows and the rows where h is added to y. Backward walks the same
 * items. MoDULA-Res with soft routing (the router and joint stages) takes
 * a fused path instead (s_fused_*), the same function computed without h
 * (tests/modula-torch.py checks both against PyTorch). */
#include "config.h"
#include "worker/moe.h"
#include "worker/rng.h"
#include "kernels/cpu/ops.h"
#include "err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_method_names[MOE_NMETHODS] = {
	"base", "lora", "molora", "modula-flan", "modula-res", "modula-res-nores"
};

/* One expert's tensors on one layer and its activations. */
typedef struct moe_w {
	float *a, *b, *da, *db; /* A [r, ain], B [out, r] and their grads */
	int r, ain;
	float scale;
	float *t, *g;           /* [cap, r]: A in, and LeakyReLU(A in) for Res domain experts */
} moe_w_t;

typedef struct item {
	int e, lo, hi, col;
} item_t;

struct moe_layer {
	adapter_t base;
	moe_t *mo;
	moe_w_t *w;             /* [n_exp] */
	float *wr, *dwr;        /* router [n_route, in] and its grad */
	float *z, *p, *s, *ds;  /* [cap, n_route]: logits, softmax, weights, dL/ds */
	float *h, *dh;          /* [cap, out]: the universal output (Res) */
	float *tmp, *dtmp;      /* [cap, rmax] */
	float *mem;             /* weights and grads */
	int n_exp, cap, rmax;
	int n;                  /* rows of the last forward */
	double aux;             /* load-balancing loss of the last forward */
	float *frac;            /* [n_route] f_i of the last forward */
	/* MoDULA-Res with soft routing, fused (s_fused_*): a0 = [A0; W_R],
	 * acat = the experts' A stacked, bcat = [B0^T; B_1^T; ...], m = acat B0,
	 * p = dz^T u0s, db = cat^T dy, da0 = d[u0 rl]^T x (weight-sized), and
	 * per row ur = [u0 | rl], cat = [s0 u0 | sd s_i zl_i], dcat, z, zl, dz */
	float *fmem;
	float *fa0, *facat, *fbcat, *fm, *fp, *fdb, *fda0;
	float *fur, *fcat, *fdcat, *fz, *fzl, *fdz;
};

const char *moe_method_name(int method)
{
	return method >= 0 && method < MOE_NMETHODS ? s_method_names[method] : "?";
}

int moe_method_parse(const char *name, int *method)
{
	for (int i = 0; i < MOE_NMETHODS; i++)
		if (!strcmp(name, s_method_names[i])) {
			*method = i;
			return 0;
		}
	return err_set("unknown method '%s' (use base, lora, molora, modula-flan, modula-res, "
		       "modula-res-nores)", name);
}

static int s_is_res(int method)
{
	return method == MOE_RES || method == MOE_RES_NORES;
}

/* The items of this forward, and where h is added ([*hlo, *hhi) and, for
 * fixed routing with nores, the universal segments). Returns the count. */
static int s_plan(const moe_t *mo, int n, item_t *it, item_t *hadd, int *nh)
{
	int k = 0, m = mo->cfg.method, res = s_is_res(m);

	*nh = 0;
	if (m == MOE_LORA) {
		it[k++] = (item_t){ 0, 0, n, -1 };
		return k;
	}
	if (res && m == MOE_RES)
		hadd[(*nh)++] = (item_t){ 0, 0, n, -1 };
	if (!mo->fixed) {
		for (int j = 0; j < mo->n_route; j++)
			it[k++] = (item_t){ j + mo->route_base, 0, n, j };
		return k;
	}
	int per = mo->nseq > 0 ? n / mo->nseq : 0;
	for (int i = 0; i < mo->nseg; i++) {
		const moe_seg_t *sg = &mo->seg[i];
		int lo = sg->seq_lo * per, hi = sg->seq_hi * per;
		if (mo->nseg == 1)
			lo = 0, hi = n;   /* one segment covers whatever comes (decoding) */
		if (res && sg->expert == 0) {
			if (m == MOE_RES_NORES)
				hadd[(*nh)++] = (item_t){ 0, lo, hi, -1 };
			continue;
		}
		it[k++] = (item_t){ sg->expert, lo, hi, -1 };
	}
	return k;
}

static float *s_falloc(size_t n)
{
	return calloc(n ? n : 1, sizeof(float));
}

/* ---- MoDULA-Res with soft routing, fused --------------------------------
 * The same function as the items below, as worker/dmodel.c computes it: h
 * = s0 B0 A0 x (as wide as the layer) is never made. The experts read h
 * only through z = h A^T = s0 u0 (A B0)^T, so a layer is two products of
 * its width forward (x [A0; W_R]^T, then cat [B0^T; B^T]) and four
 * backward, like LoRA's, with a larger inner size, plus products of N x
 * (e r) or smaller and one row kernel each way (kernels/cpu/ops.h
 * op_res_*). The items path reads and writes h once per expert. */

static int s_fusable(const moe_layer_t *L)
{
	const moe_t *mo = L->mo;
	int e = mo->n_route;

	if (!s_is_res(mo->cfg.method) || e < 1 || e > OPS_RES_MAX_EXPERTS || mo->route_base != 1 ||
	    !L->w[0].r)
		return 0;
	for (int i = 1; i <= e; i++)
		if (L->w[i].r != L->w[1].r || L->w[i].scale != L->w[1].scale || !L->w[i].r)
			return 0;
	return 1;
}

static int s_fused_alloc(moe_layer_t *L, int n)
{
	int e = L->mo->n_route, r0 = L->w[0].r, er = e * L->w[1].r, w = r0 + er;
	size_t in = (size_t)L->base.in, out = (size_t)L->base.out;
	size_t nw = (size_t)(r0 + e) * in * 2 + (size_t)er * out + (size_t)w * out * 2 +
		    (size_t)er * r0 * 2;
	size_t nr = (size_t)n * ((size_t)(r0 + e) + 2 * (size_t)w + 3 * (size_t)er);
	float *q;

	if (!(L->fmem = s_falloc(nw + nr)))
		return err_set("out of memory for mixture activations of %d rows", n);
	q = L->fmem;
	L->fa0 = q, q += (size_t)(r0 + e) * in;
	L->fda0 = q, q += (size_t)(r0 + e) * in;
	L->facat = q, q += (size_t)er * out;
	L->fbcat = q, q += (size_t)w * out;
	L->fdb = q, q += (size_t)w * out;
	L->fm = q, q += (size_t)er * r0;
	L->fp = q, q += (size_t)er * r0;
	L->fur = q, q += (size_t)n * (r0 + e);
	L->fcat = q, q += (size_t)n * w;
	L->fdcat = q, q += (size_t)n * w;
	L->fz = q, q += (size_t)n * er;
	L->fzl = q, q += (size_t)n * er;
	L->fdz = q;
	return 0;
}

/* dst[r, c] += src[c, r] for dst [rows, cols] */
static void s_add_transposed(float *dst, const float *src, int rows, int cols)
{
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++)
			dst[(size_t)i * cols + j] += src[(size_t)j * rows + i];
}

static void s_fused_forward(moe_layer_t *L, float *y, const float *x, int n)
{
	const moe_t *mo = L->mo;
	const moe_w_t *u = &L->w[0];
	int e = mo->n_route, r0 = u->r, r = L->w[1].r, er = e * r, w = r0 + er;
	int in = L->base.in, out = L->base.out, nores = mo->cfg.method == MOE_RES_NORES;

	memcpy(L->fa0, u->a, (size_t)r0 * in * sizeof(float));
	memcpy(L->fa0 + (size_t)r0 * in, L->wr, (size_t)e * in * sizeof(float));
	op_transpose(L->fbcat, u->b, out, r0);
	for (int i = 0; i < e; i++) {
		const moe_w_t *d = &L->w[1 + i];
		memcpy(L->facat + (size_t)i * r * out, d->a, (size_t)r * out * sizeof(float));
		op_transpose(L->fbcat + (size_t)(r0 + i * r) * out, d->b, out, r);
	}
	op_gemm(L->fm, L->facat, u->b, er, r0, out, 0, 0, 1.0f, 0.0f);
	op_gemm(L->fur, x, L->fa0, n, r0 + e, in, 0, 1, 1.0f, 0.0f);
	op_res_forward(L->fcat, 0, L->fz, L->fzl, L->s, L->fur, 0, L->fm, n, r0, e, r, u->scale,
		       L->w[1].scale, mo->cfg.slope);
	if (nores)
		op_gemm_ld(y, out, L->fcat + r0, w, L->fbcat + (size_t)r0 * out, out, n, out, er, 0, 0,
			   1.0f, 1.0f);
	else
		op_gemm(y, L->fcat, L->fbcat, n, out, w, 0, 0, 1.0f, 1.0f);
}

static void s_fused_backward(moe_layer_t *L, float *dx, const float *dy, const float *x, int n)
{
	const moe_t *mo = L->mo;
	moe_w_t *u = &L->w[0];
	int e = mo->n_route, r0 = u->r, r = L->w[1].r, er = e * r, w = r0 + er, k0 = 0;
	int in = L->base.in, out = L->base.out, nores = mo->cfg.method == MOE_RES_NORES;
	int any_b = 0;
	float s0 = u->scale;

	for (int i = 0; i < e; i++)
		any_b |= mo->exp[1 + i].trainable;
	/* dcat = dy bcat^T; db = cat^T dy (nores: the experts' columns only) */
	if (nores) {
		k0 = r0;
		memset(L->fdcat, 0, (size_t)n * w * sizeof(float));
		op_gemm_ld(L->fdcat + r0, w, dy, out, L->fbcat + (size_t)r0 * out, out, n, er, out, 0, 1,
			   1.0f, 0.0f);
	} else {
		op_gemm(L->fdcat, dy, L->fbcat, n, w, out, 0, 1, 1.0f, 0.0f);
	}
	if (any_b || (!nores && mo->exp[0].trainable))
		op_gemm_ld(L->fdb + (size_t)k0 * out, out, L->fcat + k0, w, dy, out, w - k0, out, n, 1, 0,
			   1.0f, 0.0f);
	if (!nores && mo->exp[0].trainable)
		s_add_transposed(u->db, L->fdb, out, r0);
	for (int i = 0; i < e; i++)
		if (mo->exp[1 + i].trainable)
			s_add_transposed(L->w[1 + i].db, L->fdb + (size_t)(r0 + i * r) * out, out, r);
	op_res_backward(L->fdcat, 0, L->fdz, L->s, L->fz, L->fzl, NULL, 0, n, r0, e, r, s0, L->w[1].scale,
			mo->cfg.slope);
	/* P = dz^T u0s: dA_i += P_i B0^T, dB0 += A^T P */
	if (any_b || mo->exp[0].trainable)
		op_gemm_ld(L->fp, r0, L->fdz, er, L->fcat, w, er, r0, n, 1, 0, 1.0f, 0.0f);
	for (int i = 0; i < e; i++)
		if (mo->exp[1 + i].trainable)
			op_gemm(L->w[1 + i].da, L->fp + (size_t)i * r * r0, u->b, r, out, r0, 0, 1, 1.0f,
				1.0f);
	if (mo->exp[0].trainable)
		op_gemm(u->db, L->facat, L->fp, out, r0, er, 1, 0, 1.0f, 1.0f);
	/* dcat[:, :r0] = s0 (du0s direct + dz M) */
	op_gemm_ld(L->fdcat, w, L->fdz, er, L->fm, r0, n, r0, er, 0, 0, s0, nores ? 0.0f : 1.0f);
	/* [du0 | drl] against x and a0 */
	if (mo->exp[0].trainable || mo->router_trainable) {
		op_gemm_ld(L->fda0, in, L->fdcat, w, x, in, r0 + e, in, n, 1, 0, 1.0f, 0.0f);
		if (mo->exp[0].trainable)
			op_residual_forward(u->da, u->da, L->fda0, (size_t)r0 * in);
		if (mo->router_trainable)
			op_residual_forward(L->dwr, L->dwr, L->fda0 + (size_t)r0 * in, (size_t)e * in);
	}
	if (dx)
		op_gemm_ld(dx, in, L->fdcat, w, L->fa0, in, n, in, r0 + e, 0, 0, 1.0f, 1.0f);
}

static int s_reserve(adapter_t *ad, int n)
{
	moe_layer_t *L = (moe_layer_t *)ad;
	const moe_t *mo = L->mo;
	int nr = mo->n_route > 0 ? mo->n_route : 1;

	if (n <= L->cap)
		return 0;
	free(L->z), free(L->p), free(L->s), free(L->ds), free(L->h), free(L->dh);
	free(L->tmp), free(L->dtmp), free(L->fmem);
	L->fmem = NULL;
	for (int e = 0; e < mo->n_exp; e++)
		free(L->w[e].t), free(L->w[e].g), L->w[e].t = L->w[e].g = NULL;
	L->cap = 0;
	if (s_fusable(L) && s_fused_alloc(L, n) < 0)
		return -1;
	L->z = s_falloc((size_t)n * nr), L->p = s_falloc((size_t)n * nr);
	L->s = s_falloc((size_t)n * nr), L->ds = s_falloc((size_t)n * nr);
	L->h = s_falloc((size_t)n * ad->out), L->dh = s_falloc((size_t)n * ad->out);
	L->tmp = s_falloc((size_t)n * L->rmax), L->dtmp = s_falloc((size_t)n * L->rmax);
	if (!L->z || !L->p || !L->s || !L->ds || !L->h || !L->dh || !L->tmp || !L->dtmp)
		return err_set("out of memory for mixture activations of %d rows", n);
	for (int e = 0; e < mo->n_exp; e++) {
		moe_w_t *w = &L->w[e];
		if (!w->r)
			continue;
		if (!(w->t = s_falloc((size_t)n * w->r)) ||
		    (mo->exp[e].reads_h && !(w->g = s_falloc((size_t)n * w->r))))
			return err_set("out of memory for mixture activations of %d rows", n);
	}
	L->cap = n;
	return 0;
}

/* z = x W_R^T, p = softmax(z), s = p or its top-k renormalised; the
 * load-balancing loss and f_i with top-k. */
static void s_route_forward(moe_layer_t *L, const float *x, int n)
{
	const moe_t *mo = L->mo;
	int nr = mo->n_route, k = mo->cfg.top_k, in = L->base.in;

	op_gemm(L->z, x, L->wr, n, nr, in, 0, 1, 1.0f, 0.0f);
	op_softmax_forward(L->p, L->z, n, nr);
	L->aux = 0.0;
	if (k <= 0 || k >= nr) {
		memcpy(L->s, L->p, (size_t)n * nr * sizeof(float));
		return;
	}
	memset(L->frac, 0, (size_t)nr * sizeof(float));
	for (int i = 0; i < n; i++) {
		const float *z = L->z + (size_t)i * nr;
		float *s = L->s + (size_t)i * nr, zmax = -INFINITY, sum = 0.0f;
		for (int j = 0; j < nr; j++)
			s[j] = 0.0f;
		/* pick k times the largest unpicked logit (lowest index on ties) */
		for (int c = 0; c < k; c++) {
			int best = -1;
			for (int j = 0; j < nr; j++)
				if (s[j] == 0.0f && (best < 0 || z[j] > z[best]))
					best = j;
			s[best] = 1.0f;
			zmax = fmaxf(zmax, z[best]);
		}
		for (int j = 0; j < nr; j++)
			if (s[j] != 0.0f) {
				s[j] = expf(z[j] - zmax), sum += s[j];
				L->frac[j] += 1.0f / (float)n;
			}
		for (int j = 0; j < nr; j++)
			s[j] /= sum;
	}
	if (mo->cfg.aux_weight > 0.0f) {
		double acc = 0.0;
		for (int j = 0; j < nr; j++) {
			double pm = 0.0;
			for (int i = 0; i < n; i++)
				pm += L->p[(size_t)i * nr + j];
			acc += L->frac[j] * pm / n;
		}
		L->aux = mo->cfg.aux_weight * nr * acc;
	}
}

static void s_forward(adapter_t *ad, float *y, const float *x, int n, uint64_t key, int train)
{
	moe_layer_t *L = (moe_layer_t *)ad;
	const moe_t *mo = L->mo;
	item_t it[MOE_MAX_EXPERTS + 1], hadd[MOE_MAX_EXPERTS + 1];
	int nh, ni = s_plan(mo, n, it, hadd, &nh), out = ad->out, nr = mo->n_route;

	(void)key, (void)train;
	L->n = n;
	L->aux = 0.0;
	if (L->fmem && !mo->fixed) {
		s_fused_forward(L, y, x, n);
		return;
	}
	if (!mo->fixed && nr > 0)
		s_route_forward(L, x, n);
	if (s_is_res(mo->cfg.method)) {
		moe_w_t *u = &L->w[0];
		op_gemm(u->t, x, u->a, n, u->r, ad->in, 0, 1, 1.0f, 0.0f);
		op_gemm(L->h, u->t, u->b, n, out, u->r, 0, 1, u->scale, 0.0f);
		for (int i = 0; i < nh; i++)
			op_residual_forward(y + (size_t)hadd[i].lo * out, y + (size_t)hadd[i].lo * out,
					    L->h + (size_t)hadd[i].lo * out, (size_t)(hadd[i].hi - hadd[i].lo) * out);
	}
	for (int i = 0; i < ni; i++) {
		moe_w_t *w = &L->w[it[i].e];
		int lo = it[i].lo, m = it[i].hi - lo, r = w->r;
		const float *inp = mo->exp[it[i].e].reads_h ? L->h + (size_t)lo * out : x + (size_t)lo * ad->in;
		const float *g = w->t + (size_t)lo * r;
		if (m <= 0)
			continue;
		op_gemm(w->t + (size_t)lo * r, inp, w->a, m, r, w->ain, 0, 1, 1.0f, 0.0f);
		if (w->g) {
			op_leakyrelu_forward(w->g + (size_t)lo * r, w->t + (size_t)lo * r, mo->cfg.slope, (size_t)m * r);
			g = w->g + (size_t)lo * r;
		}
		if (it[i].col >= 0) {
			for (int row = 0; row < m; row++) {
				float sw = L->s[(size_t)(lo + row) * nr + it[i].col];
				for (int c = 0; c < r; c++)
					L->tmp[(size_t)row * r + c] = g[(size_t)row * r + c] * sw;
			}
			g = L->tmp;
		}
		op_gemm(y + (size_t)lo * out, g, w->b, m, out, r, 0, 1, w->scale, 1.0f);
	}
}

static void s_backward(adapter_t *ad, float *dx, const float *dy, const float *x, int n)
{
	moe_layer_t *L = (moe_layer_t *)ad;
	const moe_t *mo = L->mo;
	item_t it[MOE_MAX_EXPERTS + 1], hadd[MOE_MAX_EXPERTS + 1];
	int nh, ni = s_plan(mo, n, it, hadd, &nh), out = ad->out, in = ad->in, nr = mo->n_route;
	int res = s_is_res(mo->cfg.method), routed = !mo->fixed && nr > 0;

	if (L->fmem && !mo->fixed) {
		s_fused_backward(L, dx, dy, x, n);
		return;
	}
	if (res) {
		memset(L->dh, 0, (size_t)n * out * sizeof(float));
		for (int i = 0; i < nh; i++)
			op_residual_backward(L->dh + (size_t)hadd[i].lo * out, NULL, dy + (size_t)hadd[i].lo * out,
					     (size_t)(hadd[i].hi - hadd[i].lo) * out);
	}
	if (routed)
		memset(L->ds, 0, (size_t)n * nr * sizeof(float));
	for (int i = 0; i < ni; i++) {
		moe_w_t *w = &L->w[it[i].e];
		int lo = it[i].lo, m = it[i].hi - lo, r = w->r, col = it[i].col;
		int trainable = mo->exp[it[i].e].trainable;
		const float *inp = mo->exp[it[i].e].reads_h ? L->h + (size_t)lo * out : x + (size_t)lo * in;
		const float *g = (w->g ? w->g : w->t) + (size_t)lo * r, *p = g;
		const float *dyl = dy + (size_t)lo * out;
		float *dg = L->dtmp;
		if (m <= 0)
			continue;
		/* y += scale (s * g) B^T:  dg = scale (dy B) * s, ds = scale (dy B) . g */
		op_gemm(dg, dyl, w->b, m, r, out, 0, 0, w->scale, 0.0f);
		if (col >= 0) {
			for (int row = 0; row < m; row++) {
				size_t o = (size_t)(lo + row) * nr + col;
				float sw = L->s[o], dot = 0.0f;
				for (int c = 0; c < r; c++) {
					size_t q = (size_t)row * r + c;
					dot += dg[q] * g[q];
					L->tmp[q] = g[q] * sw;
					dg[q] *= sw;
				}
				L->ds[o] += dot;
			}
			p = L->tmp;
		}
		if (trainable)
			op_gemm(w->db, dyl, p, out, r, m, 1, 0, w->scale, 1.0f);
		if (w->g) {
			/* dt = LeakyReLU'(t) dg, into tmp (p is used up) */
			memset(L->tmp, 0, (size_t)m * r * sizeof(float));
			op_leakyrelu_backward(L->tmp, dg, w->t + (size_t)lo * r, mo->cfg.slope, (size_t)m * r);
			dg = L->tmp;
		}
		if (trainable)
			op_gemm(w->da, dg, inp, r, w->ain, m, 1, 0, 1.0f, 1.0f);
		if (mo->exp[it[i].e].reads_h)
			op_gemm(L->dh + (size_t)lo * out, dg, w->a, m, out, r, 0, 0, 1.0f, 1.0f);
		else if (dx)
			op_gemm(dx + (size_t)lo * in, dg, w->a, m, in, r, 0, 0, 1.0f, 1.0f);
	}
	if (res) {
		/* h = scale t B^T, t = x A^T */
		moe_w_t *u = &L->w[0];
		op_gemm(L->dtmp, L->dh, u->b, n, u->r, out, 0, 0, u->scale, 0.0f);
		if (mo->exp[0].trainable) {
			op_gemm(u->db, L->dh, u->t, out, u->r, n, 1, 0, u->scale, 1.0f);
			op_gemm(u->da, L->dtmp, x, u->r, in, n, 1, 0, 1.0f, 1.0f);
		}
		if (dx)
			op_gemm(dx, L->dtmp, u->a, n, in, u->r, 0, 0, 1.0f, 1.0f);
	}
	if (routed) {
		float *dz = L->z;       /* the logits are used up */
		memset(dz, 0, (size_t)n * nr * sizeof(float));
		op_softmax_backward(dz, L->ds, L->s, n, nr);
		if (L->aux > 0.0) {
			/* d aux / d p[i][j] = aux_weight * nr * f_j / n, for every row */
			float c = mo->aux_scale * mo->cfg.aux_weight * nr / (float)n / (float)mo->n_layers;
			for (int i = 0; i < n; i++)
				for (int j = 0; j < nr; j++)
					L->ds[(size_t)i * nr + j] = c * L->frac[j];
			op_softmax_backward(dz, L->ds, L->p, n, nr);
		}
		if (mo->router_trainable)
			op_gemm(L->dwr, dz, x, nr, in, n, 1, 0, 1.0f, 1.0f);
		if (dx)
			op_gemm(dx, dz, L->wr, n, in, nr, 0, 0, 1.0f, 1.0f);
	}
}

static void s_destroy(adapter_t *ad)
{
	moe_layer_t *L = (moe_layer_t *)ad;

	for (int e = 0; L->w && e < L->n_exp; e++)
		free(L->w[e].t), free(L->w[e].g);
	free(L->w);
	free(L->z), free(L->p), free(L->s), free(L->ds), free(L->h), free(L->dh);
	free(L->tmp), free(L->dtmp), free(L->frac), free(L->mem), free(L->fmem);
	/* the moe description may outlive or predecease its hooks: unlink */
	for (int k = 0; L->mo && k < L->mo->n_layers; k++)
		if (L->mo->layers[k] == L)
			L->mo->layers[k] = NULL;
	free(L);
}

static const adapter_ops_t s_moe_ops = {
	.kind = "moe",
	.reserve = s_reserve,
	.forward = s_forward,
	.backward = s_backward,
	.destroy = s_destroy,
};

static void s_peft_name(char *dst, size_t n, int layer, int slot, const char *what)
{
	snprintf(dst, n, "base_model.model.model.layers.%d.%s.%s.%s.weight", layer,
		 model_slot_module(slot), model_slot_name(slot), what);
}

/* FNV-1a of an expert's name: its A draws depend on (seed, name, layer,
 * slot) only, so an expert starts the same whatever its position among
 * the domains. */
static uint64_t s_name_hash(const char *name)
{
	uint64_t h = 1469598103934665603ull;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return h;
}

static moe_layer_t *s_layer_new(moe_t *mo, const model_linear_t *lin, int li, int s, uint64_t seed)
{
	moe_layer_t *L = calloc(1, sizeof *L);
	size_t total = 0, off = 0;
	char name[200];

	if (!L || !(L->w = calloc((size_t)mo->n_exp, sizeof *L->w)) ||
	    !(L->frac = s_falloc((size_t)(mo->n_route > 0 ? mo->n_route : 1))))
		goto oom;
	L->base = (adapter_t){ &s_moe_ops, lin->in, lin->out, li, s };
	L->mo = mo;
	L->n_exp = mo->n_exp;
	for (int e = 0; e < mo->n_exp; e++) {
		const moe_expert_t *x = &mo->exp[e];
		L->w[e].r = x->rank;
		L->w[e].ain = x->reads_h ? lin->out : lin->in;
		L->w[e].scale = x->rank ? x->alpha / (x->rslora ? sqrtf((float)x->rank) : (float)x->rank) : 0.0f;
		total += 2 * ((size_t)x->rank * L->w[e].ain + (size_t)lin->out * x->rank);
		if (x->rank > L->rmax)
			L->rmax = x->rank;
	}
	total += 2 * (size_t)mo->n_route * lin->in;
	if (!(L->mem = s_falloc(total)))
		goto oom;
	for (int e = 0; e < mo->n_exp; e++) {
		moe_w_t *w = &L->w[e];
		size_t na = (size_t)w->r * w->ain, nb = (size_t)lin->out * w->r;
		int64_t sa[2] = { w->r, w->ain }, sb[2] = { lin->out, w->r };
		if (!w->r)
			continue;
		w->a = L->mem + off, off += na;
		w->da = L->mem + off, off += na;
		w->b = L->mem + off, off += nb;
		w->db = L->mem + off, off += nb;
		float bound = 1.0f / sqrtf((float)w->ain);
		rng_t rng;
		rng_seed(&rng, rng_hash(rng_hash(seed, s_name_hash(mo->exp[e].name)), (uint64_t)li * 64 + s));
		for (size_t i = 0; i < na; i++)
			w->a[i] = (2.0f * rng_uniform(&rng) - 1.0f) * bound;
		s_peft_name(name, sizeof name, li, s, "lora_A");
		if (params_add(&mo->exp[e].params, name, w->a, w->da, 2, sa) < 0)
			goto err;
		s_peft_name(name, sizeof name, li, s, "lora_B");
		if (params_add(&mo->exp[e].params, name, w->b, w->db, 2, sb) < 0)
			goto err;
	}
	if (mo->n_route > 0) {
		int64_t sr[2] = { mo->n_route, lin->in };
		L->wr = L->mem + off, off += (size_t)mo->n_route * lin->in;
		L->dwr = L->mem + off;
		s_peft_name(name, sizeof name, li, s, "router");
		if (params_add(&mo->router, name, L->wr, L->dwr, 2, sr) < 0)
			goto err;
	}
	return L;
oom:
	err_set("out of memory for the mixture adapters");
err:
	if (L) {
		L->mo = NULL;
		s_destroy(&L->base);
	}
	return NULL;
}

moe_t *moe_attach(model_t *m, const moe_config_t *c, const char *const *domains, uint64_t seed)
{
	moe_t *mo;
	int method = c->method, n = c->n_domain;

	if (method <= MOE_BASE || method >= MOE_NMETHODS)
		return err_set("method %d cannot be attached (use lora, molora, modula-flan, "
			       "modula-res, modula-res-nores)", method), NULL;
	if (n < 0 || n + 1 > MOE_MAX_EXPERTS || (method == MOE_LORA && n) ||
	    (method == MOE_MOLORA && n < 1))
		return err_set("%s with %d domain experts: lora takes none, molora at least one, "
			       "at most %d", moe_method_name(method), n, MOE_MAX_EXPERTS - 1), NULL;
	if ((method != MOE_MOLORA && c->universal.rank <= 0) || (n && c->domain.rank <= 0) ||
	    !c->universal.targets)
		return err_set("%s needs positive ranks and at least one target layer",
			       moe_method_name(method)), NULL;
	if (c->top_k && method != MOE_MOLORA)
		return err_set("'top_k' is for molora only"), NULL;
	if (!(mo = calloc(1, sizeof *mo)) || !(mo->exp = calloc((size_t)n + 1, sizeof *mo->exp)))
		goto oom;
	mo->cfg = *c;
	mo->n_exp = n + 1;
	mo->aux_scale = 1.0f;
	mo->route_base = method == MOE_FLAN ? 0 : 1;
	mo->n_route = method == MOE_LORA ? 0 : n + 1 - mo->route_base;
	if (method == MOE_FLAN && !n)
		mo->n_route = 0;        /* one expert: nothing to route */
	snprintf(mo->exp[0].name, MOE_NAME_MAX, "universal");
	if (method != MOE_MOLORA)
		mo->exp[0].rank = c->universal.rank, mo->exp[0].alpha = c->universal.alpha,
		mo->exp[0].rslora = c->universal.rslora;
	for (int e = 1; e <= n; e++) {
		moe_expert_t *x = &mo->exp[e];
		if (!domains[e - 1][0] || strlen(domains[e - 1]) >= MOE_NAME_MAX ||
		    strchr(domains[e - 1], '/') || !strcmp(domains[e - 1], "universal") ||
		    !strcmp(domains[e - 1], "router")) {
			err_set("bad expert name '%s': 1 to %d characters, no '/', not 'universal' "
				"or 'router'", domains[e - 1], MOE_NAME_MAX - 1);
			goto err;
		}
		for (int f = 1; f < e; f++)
			if (!strcmp(domains[f - 1], domains[e - 1])) {
				err_set("expert name '%s' given twice", domains[e - 1]);
				goto err;
			}
		snprintf(x->name, MOE_NAME_MAX, "%s", domains[e - 1]);
		x->rank = c->domain.rank, x->alpha = c->domain.alpha, x->rslora = c->domain.rslora;
		x->reads_h = s_is_res(method);
	}
	for (int li = 0; li < m->cfg.n_layers; li++)
		for (int s = 0; s < MODEL_NSLOTS; s++)
			mo->n_layers += !!(c->universal.targets & (1u << s));
	if (!(mo->layers = calloc((size_t)mo->n_layers, sizeof *mo->layers)))
		goto oom;
	int k = 0;
	for (int li = 0; li < m->cfg.n_layers; li++)
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			model_linear_t *lin = &m->layers[li].lin[s];
			moe_layer_t *L;
			if (!(c->universal.targets & (1u << s)))
				continue;
			if (!(L = s_layer_new(mo, lin, li, s, seed)))
				goto err;
			if (lin->ad)
				lin->ad->ops->destroy(lin->ad);
			lin->ad = &L->base;
			mo->layers[k++] = L;
			if (m->acts && s_reserve(&L->base, m->max_b * m->max_t) < 0)
				goto err;
		}
	if (moe_set_trainable(mo, ~(uint64_t)0, 1) < 0)
		goto err;
	return mo;
oom:
	err_set("out of memory for the mixture adapters");
err:
	moe_destroy(&mo);
	return NULL;
}

void moe_destroy(moe_t **pmo)
{
	moe_t *mo = pmo ? *pmo : NULL;

	if (!mo)
		return;
	for (int k = 0; mo->layers && k < mo->n_layers; k++)
		if (mo->layers[k])
			mo->layers[k]->mo = NULL;
	for (int e = 0; mo->exp && e < mo->n_exp; e++)
		params_clear(&mo->exp[e].params);
	params_clear(&mo->router);
	params_clear(&mo->train);
	free(mo->layers);
	free(mo->exp);
	free(mo);
	*pmo = NULL;
}

int moe_expert_index(const moe_t *mo, const char *name)
{
	for (int e = 0; e < mo->n_exp; e++)
		if (mo->exp[e].rank && !strcmp(mo->exp[e].name, name))
			return e;
	return -1;
}

static int s_list(params_t *dst, const params_t *src, const char *prefix)
{
	char name[300];

	for (int i = 0; i < src->n; i++) {
		const param_t *p = &src->v[i];
		snprintf(name, sizeof name, "%s/%s", prefix, p->name);
		if (params_add(dst, name, p->data, p->grad, p->ndim, p->shape) < 0)
			return -1;
	}
	return 0;
}

int moe_set_trainable(moe_t *mo, uint64_t experts, int router)
{
	params_clear(&mo->train);
	for (int e = 0; e < mo->n_exp; e++) {
		mo->exp[e].trainable = mo->exp[e].rank && (experts >> e & 1);
		if (mo->exp[e].trainable && s_list(&mo->train, &mo->exp[e].params, mo->exp[e].name) < 0)
			return -1;
	}
	mo->router_trainable = router && mo->n_route > 0;
	if (mo->router_trainable && s_list(&mo->train, &mo->router, "router") < 0)
		return -1;
	return 0;
}

void moe_route_soft(moe_t *mo)
{
	mo->fixed = 0;
	mo->nseg = 0;
}

int moe_route_fixed(moe_t *mo, const moe_seg_t *seg, int nseg, int nseq)
{
	if (nseg < 1 || nseg > MOE_MAX_EXPERTS)
		return err_set("%d routing segments: give 1 to %d", nseg, MOE_MAX_EXPERTS);
	for (int i = 0; i < nseg; i++) {
		int e = seg[i].expert;
		if (e < 0 || e >= mo->n_exp || !mo->exp[e].rank)
			return err_set("routing segment %d names expert %d, which this mixture lacks", i, e);
		if (seg[i].seq_lo < (i ? seg[i - 1].seq_hi : 0) || seg[i].seq_hi <= seg[i].seq_lo ||
		    seg[i].seq_hi > nseq)
			return err_set("routing segment %d [%d, %d) overlaps or leaves [0, %d)", i,
				       seg[i].seq_lo, seg[i].seq_hi, nseq);
	}
	memcpy(mo->seg, seg, (size_t)nseg * sizeof *seg);
	mo->nseg = nseg, mo->nseq = nseq, mo->fixed = 1;
	return 0;
}

float moe_aux_loss(const moe_t *mo)
{
	double sum = 0.0;

	for (int k = 0; k < mo->n_layers; k++)
		if (mo->layers[k])
			sum += mo->layers[k]->aux;
	return mo->n_layers ? (float)(sum / mo->n_layers) : 0.0f;
}

void moe_route_sum(const moe_t *mo, int k, int lo, int hi, double *sum, int *layer, int *slot)
{
	const moe_layer_t *L = mo->layers[k];

	*layer = L->base.layer, *slot = L->base.slot;
	if (mo->fixed || !mo->n_route)
		return;
	for (int i = lo; i < hi && i < L->n; i++)
		for (int j = 0; j < mo->n_route; j++)
			sum[j] += L->s[(size_t)i * mo->n_route + j];
}
