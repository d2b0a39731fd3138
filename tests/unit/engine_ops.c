/* engine_ops.c: every backward of kernels/cpu/ops.h against central finite
 * differences.
 *
 * Each op's output is reduced to a scalar L = sum(R * out) with a fixed
 * random R, summed in double; the op's backward gets dout = R. For each
 * input, up to 48 sampled elements get fd = (L(x+e) - L(x-e)) / 2e with
 * e = 5e-3 (the ops compute in fp32, the objective and the difference in
 * double). Tolerance: |fd - grad| <= 2e-3 + 2e-3 |grad| for every sampled
 * element (fp32 rounding of O(1) outputs over e, plus the O(e^2) truncation
 * term). The max absolute and relative errors are printed per op. Also
 * checks that the ops are bit-identical run to run.
 */
#include "kernels/cpu/ops.h"
#include "tap.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EPS 5e-3f
#define ATOL 2e-3
#define RTOL 2e-3

static uint64_t s_rng = 0x9e3779b97f4a7c15ull;

static float s_randf(void)
{
	s_rng ^= s_rng << 13;
	s_rng ^= s_rng >> 7;
	s_rng ^= s_rng << 17;
	return (float)((s_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *s_rand(size_t n, float scale)
{
	float *x = malloc(n * sizeof *x);

	for (size_t i = 0; i < n; i++)
		x[i] = s_randf() * scale;
	return x;
}

static float *s_zeros(size_t n)
{
	return calloc(n, sizeof(float));
}

/* One op under test: forward into out, then L = sum(r * out). */
typedef struct fdcase {
	void (*forward)(struct fdcase *c);
	float *out, *r;
	size_t nout;
	void *p[8];     /* op-specific pointers */
	int d[8];       /* op-specific sizes */
	float f;        /* op-specific scalar */
} fdcase_t;

static double s_loss(fdcase_t *c)
{
	double l = 0.0;

	c->forward(c);
	for (size_t i = 0; i < c->nout; i++)
		l += (double)c->r[i] * c->out[i];
	return l;
}

/* Compare grad (n elements) to finite differences of input x. */
static void s_check(const char *op, const char *input, fdcase_t *c, float *x,
		    const float *grad, size_t n)
{
	double maxabs = 0.0, maxrel = 0.0;
	int bad = 0;
	size_t step = n > 48 ? n / 48 : 1;

	for (size_t i = 0; i < n; i += step) {
		float keep = x[i];
		x[i] = keep + EPS;
		double lp = s_loss(c);
		x[i] = keep - EPS;
		double lm = s_loss(c);
		x[i] = keep;
		double fd = (lp - lm) / (2.0 * EPS), g = grad[i], e = fabs(fd - g);
		if (e > maxabs)
			maxabs = e;
		if (fabs(g) > 1e-2 && e / fabs(g) > maxrel)
			maxrel = e / fabs(g);
		if (e > ATOL + RTOL * fabs(g))
			bad++;
	}
	TAP_OK(!bad, "%s d%s: max abs err %.2e, max rel err %.2e (%d of %zu samples off)",
	       op, input, maxabs, maxrel, bad, (n + step - 1) / step);
}

static void s_case(fdcase_t *c, void (*fwd)(fdcase_t *), size_t nout)
{
	c->forward = fwd;
	c->nout = nout;
	c->out = s_zeros(nout);
	c->r = s_rand(nout, 1.0f);
}

static void s_case_free(fdcase_t *c)
{
	free(c->out);
	free(c->r);
}

/* ---- matmul: inp[N,C] w[OC,C] b[OC] ---- */
static void s_fwd_matmul(fdcase_t *c)
{
	op_matmul_forward(c->out, c->p[0], c->p[1], c->p[2], c->d[0], c->d[1], c->d[2]);
}

static void s_test_matmul(void)
{
	int n = 6, ci = 9, oc = 7;
	fdcase_t c = { 0 };
	float *inp = s_rand((size_t)n * ci, 1), *w = s_rand((size_t)oc * ci, 1), *b = s_rand(oc, 1);
	float *dinp = s_zeros((size_t)n * ci), *dw = s_zeros((size_t)oc * ci), *db = s_zeros(oc);

	s_case(&c, s_fwd_matmul, (size_t)n * oc);
	c.p[0] = inp, c.p[1] = w, c.p[2] = b, c.d[0] = n, c.d[1] = ci, c.d[2] = oc;
	s_loss(&c);
	op_matmul_backward(dinp, dw, db, c.r, inp, w, n, ci, oc);
	s_check("matmul", "inp", &c, inp, dinp, (size_t)n * ci);
	s_check("matmul", "w", &c, w, dw, (size_t)oc * ci);
	s_check("matmul", "b", &c, b, db, oc);
	s_case_free(&c);
	free(inp), free(w), free(b), free(dinp), free(dw), free(db);
}

/* ---- embedding: tok[N] wte[V,C] ---- */
static void s_fwd_embedding(fdcase_t *c)
{
	op_embedding_forward(c->out, c->p[0], c->p[1], c->d[0], c->d[1]);
}

static void s_test_embedding(void)
{
	int n = 8, ci = 5, v = 4, tok[8] = { 0, 3, 1, 3, 3, 2, 0, 1 };
	fdcase_t c = { 0 };
	float *wte = s_rand((size_t)v * ci, 1), *dwte = s_zeros((size_t)v * ci);

	s_case(&c, s_fwd_embedding, (size_t)n * ci);
	c.p[0] = tok, c.p[1] = wte, c.d[0] = n, c.d[1] = ci;
	s_loss(&c);
	op_embedding_backward(dwte, c.r, tok, n, ci);
	s_check("embedding", "wte", &c, wte, dwte, (size_t)v * ci);
	s_case_free(&c);
	free(wte), free(dwte);
}

/* ---- rmsnorm: inp[N,C] w[C] ---- */
static void s_fwd_rmsnorm(fdcase_t *c)
{
	op_rmsnorm_forward(c->out, c->p[2], c->p[0], c->p[1], c->d[0], c->d[1], 1e-5f);
}

static void s_test_rmsnorm(void)
{
	int n = 5, ci = 12;
	fdcase_t c = { 0 };
	float *inp = s_rand((size_t)n * ci, 1), *w = s_rand(ci, 1), *rstd = s_zeros(n);
	float *dinp = s_zeros((size_t)n * ci), *dw = s_zeros(ci);

	s_case(&c, s_fwd_rmsnorm, (size_t)n * ci);
	c.p[0] = inp, c.p[1] = w, c.p[2] = rstd, c.d[0] = n, c.d[1] = ci;
	s_loss(&c);
	op_rmsnorm_backward(dinp, dw, c.r, inp, w, rstd, n, ci);
	s_check("rmsnorm", "inp", &c, inp, dinp, (size_t)n * ci);
	s_check("rmsnorm", "w", &c, w, dw, ci);
	s_case_free(&c);
	free(inp), free(w), free(rstd), free(dinp), free(dw);
}

/* ---- rope: x[B,T,NH,HS], applied to a copy ---- */
static void s_fwd_rope(fdcase_t *c)
{
	memcpy(c->out, c->p[0], c->nout * sizeof(float));
	op_rope_forward(c->out, c->p[1], c->p[2], c->d[0], c->d[1], c->d[2], c->d[3]);
}

static void s_test_rope(void)
{
	int b = 2, t = 5, nh = 3, hs = 8;
	size_t n = (size_t)b * t * nh * hs;
	fdcase_t c = { 0 };
	float *x = s_rand(n, 1), *cs = s_zeros((size_t)t * hs / 2), *sn = s_zeros((size_t)t * hs / 2);
	float *dx = s_zeros(n);

	op_rope_table(cs, sn, t, hs, 3, 10000.0f);
	s_case(&c, s_fwd_rope, n);
	c.p[0] = x, c.p[1] = cs, c.p[2] = sn, c.d[0] = b, c.d[1] = t, c.d[2] = nh, c.d[3] = hs;
	s_loss(&c);
	memcpy(dx, c.r, n * sizeof(float));
	op_rope_backward(dx, cs, sn, b, t, nh, hs);
	s_check("rope", "x", &c, x, dx, n);
	s_case_free(&c);
	free(x), free(cs), free(sn), free(dx);
}

/* ---- attention: q[B,T,NH,HS], k, v [B,T,NKV,HS] ---- */
static void s_fwd_attention(fdcase_t *c)
{
	op_attention_forward(c->out, c->p[3], c->p[0], c->p[1], c->p[2],
			     c->d[0], c->d[1], c->d[2], c->d[3], c->d[4]);
}

static void s_test_attention(void)
{
	int b = 2, t = 6, nh = 4, nkv = 2, hs = 8;
	size_t nq = (size_t)b * t * nh * hs, nk = (size_t)b * t * nkv * hs;
	fdcase_t c = { 0 };
	float *q = s_rand(nq, 1), *k = s_rand(nk, 1), *v = s_rand(nk, 1);
	float *att = s_zeros((size_t)b * nh * t * t), *scratch = s_zeros((size_t)omp_get_max_threads() * t * t);
	float *dq = s_zeros(nq), *dk = s_zeros(nk), *dv = s_zeros(nk);

	s_case(&c, s_fwd_attention, nq);
	c.p[0] = q, c.p[1] = k, c.p[2] = v, c.p[3] = att;
	c.d[0] = b, c.d[1] = t, c.d[2] = nh, c.d[3] = nkv, c.d[4] = hs;
	s_loss(&c);
	op_attention_backward(dq, dk, dv, scratch, c.r, att, q, k, v, b, t, nh, nkv, hs);
	s_check("attention", "q", &c, q, dq, nq);
	s_check("attention", "k", &c, k, dk, nk);
	s_check("attention", "v", &c, v, dv, nk);
	s_case_free(&c);
	free(q), free(k), free(v), free(att), free(scratch), free(dq), free(dk), free(dv);
}

/* ---- swiglu: gate[N] up[N] ---- */
static void s_fwd_swiglu(fdcase_t *c)
{
	op_swiglu_forward(c->out, c->p[0], c->p[1], c->nout);
}

static void s_test_swiglu(void)
{
	size_t n = 40;
	fdcase_t c = { 0 };
	float *g = s_rand(n, 3), *u = s_rand(n, 1), *dg = s_zeros(n), *du = s_zeros(n);

	s_case(&c, s_fwd_swiglu, n);
	c.p[0] = g, c.p[1] = u;
	s_loss(&c);
	op_swiglu_backward(dg, du, c.r, g, u, n);
	s_check("swiglu", "gate", &c, g, dg, n);
	s_check("swiglu", "up", &c, u, du, n);
	s_case_free(&c);
	free(g), free(u), free(dg), free(du);
}

/* ---- residual: a[N] b[N] ---- */
static void s_fwd_residual(fdcase_t *c)
{
	op_residual_forward(c->out, c->p[0], c->p[1], c->nout);
}

static void s_test_residual(void)
{
	size_t n = 30;
	fdcase_t c = { 0 };
	float *a = s_rand(n, 1), *b = s_rand(n, 1), *da = s_zeros(n), *db = s_zeros(n);

	s_case(&c, s_fwd_residual, n);
	c.p[0] = a, c.p[1] = b;
	s_loss(&c);
	op_residual_backward(da, db, c.r, n);
	s_check("residual", "a", &c, a, da, n);
	s_check("residual", "b", &c, b, db, n);
	s_case_free(&c);
	free(a), free(b), free(da), free(db);
}

/* ---- leakyrelu: inp[N], kept away from the kink at 0 ---- */
static void s_fwd_leakyrelu(fdcase_t *c)
{
	op_leakyrelu_forward(c->out, c->p[0], c->f, c->nout);
}

static void s_test_leakyrelu(void)
{
	size_t n = 30;
	fdcase_t c = { 0 };
	float *x = s_rand(n, 1), *dx = s_zeros(n);

	for (size_t i = 0; i < n; i++)
		x[i] += x[i] < 0 ? -0.05f : 0.05f;
	s_case(&c, s_fwd_leakyrelu, n);
	c.p[0] = x, c.f = 0.01f;
	s_loss(&c);
	op_leakyrelu_backward(dx, c.r, x, c.f, n);
	s_check("leakyrelu", "inp", &c, x, dx, n);
	s_case_free(&c);
	free(x), free(dx);
}

/* ---- softmax: inp[N,K] ---- */
static void s_fwd_softmax(fdcase_t *c)
{
	op_softmax_forward(c->out, c->p[0], c->d[0], c->d[1]);
}

static void s_test_softmax(void)
{
	int n = 5, k = 4;
	fdcase_t c = { 0 };
	float *x = s_rand((size_t)n * k, 3), *dx = s_zeros((size_t)n * k);

	s_case(&c, s_fwd_softmax, (size_t)n * k);
	c.p[0] = x, c.d[0] = n, c.d[1] = k;
	s_loss(&c);
	op_softmax_backward(dx, c.r, c.out, n, k);
	s_check("softmax", "inp", &c, x, dx, (size_t)n * k);
	s_case_free(&c);
	free(x), free(dx);
}

/* ---- crossentropy: logits[N,V], targets with an ignore index, a masked
 * position (dlosses 0) ---- */
static void s_fwd_crossentropy(fdcase_t *c)
{
	op_crossentropy_forward(c->out, c->p[2], c->p[0], c->p[1], c->d[0], c->d[1]);
}

static void s_test_crossentropy(void)
{
	int n = 6, v = 11, tgt[6] = { 3, -100, 0, 10, 5, 5 };
	fdcase_t c = { 0 };
	float *x = s_rand((size_t)n * v, 3), *lse = s_zeros(n), *dx = s_zeros((size_t)n * v);

	s_case(&c, s_fwd_crossentropy, n);
	c.r[4] = 0.0f;
	c.p[0] = x, c.p[1] = tgt, c.p[2] = lse, c.d[0] = n, c.d[1] = v;
	s_loss(&c);
	op_crossentropy_backward(dx, c.r, x, lse, tgt, n, v);
	s_check("crossentropy", "logits", &c, x, dx, (size_t)n * v);
	TAP_OK(c.out[1] == 0.0f, "crossentropy: ignore index gives loss 0");
	s_case_free(&c);
	free(x), free(lse), free(dx);
}

/* Larger attention + matmul twice: outputs and gradients bit-identical. */
static void s_test_determinism(void)
{
	int b = 3, t = 37, nh = 4, nkv = 1, hs = 16;
	size_t nq = (size_t)b * t * nh * hs, nk = (size_t)b * t * nkv * hs;
	float *q = s_rand(nq, 1), *k = s_rand(nk, 1), *v = s_rand(nk, 1), *dout = s_rand(nq, 1);
	float *att = s_zeros((size_t)b * nh * t * t), *scratch = s_zeros((size_t)omp_get_max_threads() * t * t);
	float *o[2], *dk[2];

	for (int r = 0; r < 2; r++) {
		float *dq = s_zeros(nq), *dv = s_zeros(nk);
		o[r] = s_zeros(nq), dk[r] = s_zeros(nk);
		op_attention_forward(o[r], att, q, k, v, b, t, nh, nkv, hs);
		op_attention_backward(dq, dk[r], dv, scratch, dout, att, q, k, v, b, t, nh, nkv, hs);
		free(dq), free(dv);
	}
	TAP_OK(!memcmp(o[0], o[1], nq * sizeof(float)) && !memcmp(dk[0], dk[1], nk * sizeof(float)),
	       "attention forward/backward bit-identical run to run (%d threads)", omp_get_max_threads());
	for (int r = 0; r < 2; r++)
		free(o[r]), free(dk[r]);
	free(q), free(k), free(v), free(dout), free(att), free(scratch);
}

int main(void)
{
	s_test_matmul();
	s_test_embedding();
	s_test_rmsnorm();
	s_test_rope();
	s_test_attention();
	s_test_swiglu();
	s_test_residual();
	s_test_leakyrelu();
	s_test_softmax();
	s_test_crossentropy();
	s_test_determinism();
	return tap_done();
}
