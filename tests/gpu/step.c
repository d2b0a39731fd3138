/* step.c: tests/gpu-step, one whole LoRA training step (forward, loss,
 * backward) of a small LLaMA-shaped model, written once against the op
 * table of kernels/device.h and run on the CPU and on CUDA; the loss, the
 * logits, every LoRA gradient and the gradient reaching the embeddings are
 * compared tensor by tensor.
 *
 * The model: embeddings, L layers of RMSNorm, q/k/v (RoPE on q and k),
 * causal GQA attention, o, residual, RMSNorm, SwiGLU MLP, residual; final
 * RMSNorm and a tied head; every projection carries a LoRA (rank R, scale
 * alpha/R) and only the LoRAs are trained, as in the engine's adapter mode.
 * Both backends get the same weights, rounded to the CUDA storage type.
 *
 * Tolerance per tensor: max|cuda - cpu| <= tol * max|cpu|, with tol 1e-4 in
 * f32 (summation order only) and 5e-2 in bf16 (activations rounded to 8 bits
 * of mantissa at every op through the whole step). Without a GPU every check
 * prints as skipped. Not the engine's model (worker/model.c): a check that
 * the ops compose into correct gradients on the GPU, and the pattern the
 * engine's GPU path follows (docs/cuda.md).
 */
#include "config.h"
#include "kernels/cuda/kcuda.h"
#include "kernels/device.h"
#include "err.h"
#include "tap.h"
#include "gpu/probe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { B = 2, T = 16, C = 64, NH = 4, NKV = 2, HS = 16, F = 96, V = 97, L = 2, R = 4, N = B * T };
enum { QD = NH * HS, KD = NKV * HS };
enum { LQ, LK, LV, LO, LG, LU, LD, NLIN }; /* the projections */

static const int s_in[NLIN] = { C, C, C, QD, C, C, F };
static const int s_out[NLIN] = { QD, KD, KD, C, F, F, C };
static const float s_scale = 2.0f; /* alpha 8 / rank 4 */

/* Activation gradients, one buffer each (zeroed before every layer). */
enum { G_MID, G_D, G_H, G_G, G_UP, G_A2, G_O, G_Y, G_Q, G_K, G_V, G_A1, G_XIN, G_XF, G_LOGITS, NG };
static const size_t s_gsize[NG] = {
	(size_t)N * C, (size_t)N * C, (size_t)N * F, (size_t)N * F, (size_t)N * F, (size_t)N * C,
	(size_t)N * C, (size_t)N * QD, (size_t)N * QD, (size_t)N * KD, (size_t)N * KD, (size_t)N * C,
	(size_t)N * C, (size_t)N * C, (size_t)N * V,
};

/* One backend's model and activations: every buffer through the table. */
struct lin { void *w, *a, *b, *u; float *da, *db; };
struct layer {
	void *ln1, *ln2, *xin, *a1, *q, *k, *v, *y, *o, *xmid, *a2, *g, *up, *h, *d;
	float *rstd1, *rstd2, *att;
	struct lin lin[NLIN];
};
struct model {
	const struct kdevice_ops *K;
	void *wte, *lnf, *xout, *xf, *logits, *dx, *du, *gr[NG];
	float *rstdf, *cosv, *sinv, *losses, *lse, *dlosses;
	int *tok, *tgt;
	struct layer l[L];
	void *ptrs[256];
	int nptrs;
};

/* Host copies of the weights and inputs, shared by both backends. */
struct host {
	float *wte, *lnf, *ln[L][2], *w[L][NLIN], *a[L][NLIN], *b[L][NLIN];
	int tok[N], tgt[N];
	float dlosses[N];
};

static unsigned long long s_rng = 0x2545f4914f6cdd1dull;

static float s_uniform(void)
{
	s_rng ^= s_rng << 13;
	s_rng ^= s_rng >> 7;
	s_rng ^= s_rng << 17;
	return (float)((s_rng >> 40) / 16777216.0);
}

static float *s_hrand(size_t n, float lo, float hi)
{
	float *p = malloc(n * sizeof(float));

	if (!p) {
		fprintf(stderr, "gpu-step: out of memory\n");
		exit(99);
	}
	for (size_t i = 0; i < n; i++)
		p[i] = lo + (hi - lo) * s_uniform();
	return p;
}

static void *s_buf(struct model *m, size_t n, int dt)
{
	void *p;

	if (m->nptrs == (int)(sizeof m->ptrs / sizeof m->ptrs[0])) {
		err_set("gpu-step: out of buffer slots");
		return NULL;
	}
	if ((p = m->K->alloc(n, dt)))
		m->ptrs[m->nptrs++] = p;
	return p;
}

/* A buffer holding host data h (fp32) in type dt. */
static void *s_put(struct model *m, const float *h, size_t n, int dt)
{
	void *p = s_buf(m, n, dt);

	return p && m->K->upload(p, dt, h, KCUDA_F32, n) == 0 ? p : NULL;
}

static void s_model_free(struct model *m)
{
	while (m->nptrs)
		m->K->free(m->ptrs[--m->nptrs]);
}

#define S_TRY(x) do { if ((x) < 0) return -1; } while (0)
#define S_PTR(x) do { if (!(x)) return -1; } while (0)

static int s_model_load(struct model *m, const struct host *h)
{
	const struct kdevice_ops *K = m->K;
	int dt = K->dt;

	S_PTR(m->wte = s_put(m, h->wte, (size_t)V * C, dt));
	S_PTR(m->lnf = s_put(m, h->lnf, C, dt));
	for (int l = 0; l < L; l++) {
		struct layer *y = &m->l[l];
		S_PTR(y->ln1 = s_put(m, h->ln[l][0], C, dt));
		S_PTR(y->ln2 = s_put(m, h->ln[l][1], C, dt));
		S_PTR((y->xin = s_buf(m, (size_t)N * C, dt)) && (y->a1 = s_buf(m, (size_t)N * C, dt)) &&
		      (y->q = s_buf(m, (size_t)N * QD, dt)) && (y->k = s_buf(m, (size_t)N * KD, dt)) &&
		      (y->v = s_buf(m, (size_t)N * KD, dt)) && (y->y = s_buf(m, (size_t)N * QD, dt)) &&
		      (y->o = s_buf(m, (size_t)N * C, dt)) && (y->xmid = s_buf(m, (size_t)N * C, dt)) &&
		      (y->a2 = s_buf(m, (size_t)N * C, dt)) && (y->g = s_buf(m, (size_t)N * F, dt)) &&
		      (y->up = s_buf(m, (size_t)N * F, dt)) && (y->h = s_buf(m, (size_t)N * F, dt)) &&
		      (y->d = s_buf(m, (size_t)N * C, dt)) && (y->rstd1 = s_buf(m, N, KCUDA_F32)) &&
		      (y->rstd2 = s_buf(m, N, KCUDA_F32)) &&
		      (y->att = s_buf(m, K->attention_saved(B, T, NH), KCUDA_F32)));
		for (int s = 0; s < NLIN; s++) {
			struct lin *li = &y->lin[s];
			S_PTR(li->w = s_put(m, h->w[l][s], (size_t)s_out[s] * s_in[s], dt));
			S_PTR(li->a = s_put(m, h->a[l][s], (size_t)R * s_in[s], dt));
			S_PTR(li->b = s_put(m, h->b[l][s], (size_t)s_out[s] * R, dt));
			S_PTR(li->u = s_buf(m, (size_t)N * R, dt));
			S_PTR(li->da = s_buf(m, (size_t)R * s_in[s], KCUDA_F32));
			S_PTR(li->db = s_buf(m, (size_t)s_out[s] * R, KCUDA_F32));
		}
	}
	for (int i = 0; i < NG; i++)
		S_PTR(m->gr[i] = s_buf(m, s_gsize[i], dt));
	S_PTR((m->xout = s_buf(m, (size_t)N * C, dt)) && (m->xf = s_buf(m, (size_t)N * C, dt)) &&
	      (m->logits = s_buf(m, (size_t)N * V, dt)) && (m->dx = s_buf(m, (size_t)N * C, dt)) &&
	      (m->du = s_buf(m, (size_t)N * R, dt)) && (m->rstdf = s_buf(m, N, KCUDA_F32)) &&
	      (m->cosv = s_buf(m, (size_t)T * HS / 2, KCUDA_F32)) &&
	      (m->sinv = s_buf(m, (size_t)T * HS / 2, KCUDA_F32)) &&
	      (m->losses = s_buf(m, N, KCUDA_F32)) && (m->lse = s_buf(m, N, KCUDA_F32)) &&
	      (m->tok = s_buf(m, N, KCUDA_I32)) && (m->tgt = s_buf(m, N, KCUDA_I32)) &&
	      (m->dlosses = s_put(m, h->dlosses, N, KCUDA_F32)));
	S_TRY(K->upload(m->tok, KCUDA_I32, h->tok, KCUDA_I32, N));
	S_TRY(K->upload(m->tgt, KCUDA_I32, h->tgt, KCUDA_I32, N));
	return K->rope_table(m->cosv, m->sinv, T, HS, 0, 10000.0f);
}

/* out[N,o] = x W^T + scale (x A^T) B^T, u = x A^T kept. */
static int s_lin_fwd(struct model *m, struct lin *li, void *out, const void *x, int in, int o)
{
	const struct kdevice_ops *K = m->K;

	S_TRY(K->matmul_forward(out, x, li->w, NULL, N, in, o));
	S_TRY(K->gemm(li->u, K->dt, x, li->a, N, R, in, 0, 1, 1.0f, 0.0f));
	return K->gemm(out, K->dt, li->u, li->b, N, o, R, 0, 1, s_scale, 1.0f);
}

/* W frozen: dx += dy W + scale (dy B) A; dB += scale dy^T u; dA += scale (dy B)^T x. */
static int s_lin_bwd(struct model *m, struct lin *li, void *dx, const void *dy, const void *x,
		     int in, int o)
{
	const struct kdevice_ops *K = m->K;

	S_TRY(K->matmul_backward(dx, NULL, NULL, dy, x, li->w, N, in, o));
	S_TRY(K->gemm(li->db, KCUDA_F32, dy, li->u, o, R, N, 1, 0, s_scale, 1.0f));
	S_TRY(K->gemm(m->du, K->dt, dy, li->b, N, R, o, 0, 0, 1.0f, 0.0f));
	S_TRY(K->gemm(li->da, KCUDA_F32, m->du, x, R, in, N, 1, 0, s_scale, 1.0f));
	return K->gemm(dx, K->dt, m->du, li->a, N, in, R, 0, 0, s_scale, 1.0f);
}

static int s_forward(struct model *m)
{
	const struct kdevice_ops *K = m->K;

	S_TRY(K->embedding_forward(m->l[0].xin, m->tok, m->wte, N, C));
	for (int l = 0; l < L; l++) {
		struct layer *y = &m->l[l];
		struct lin *li = y->lin;
		S_TRY(K->rmsnorm_forward(y->a1, y->rstd1, y->xin, y->ln1, N, C, 1e-6f));
		S_TRY(s_lin_fwd(m, &li[LQ], y->q, y->a1, C, QD));
		S_TRY(s_lin_fwd(m, &li[LK], y->k, y->a1, C, KD));
		S_TRY(s_lin_fwd(m, &li[LV], y->v, y->a1, C, KD));
		S_TRY(K->rope_forward(y->q, m->cosv, m->sinv, B, T, NH, HS));
		S_TRY(K->rope_forward(y->k, m->cosv, m->sinv, B, T, NKV, HS));
		S_TRY(K->attention_forward(y->y, y->att, y->q, y->k, y->v, B, T, NH, NKV, HS));
		S_TRY(s_lin_fwd(m, &li[LO], y->o, y->y, QD, C));
		S_TRY(K->residual_forward(y->xmid, y->xin, y->o, (size_t)N * C));
		S_TRY(K->rmsnorm_forward(y->a2, y->rstd2, y->xmid, y->ln2, N, C, 1e-6f));
		S_TRY(s_lin_fwd(m, &li[LG], y->g, y->a2, C, F));
		S_TRY(s_lin_fwd(m, &li[LU], y->up, y->a2, C, F));
		S_TRY(K->swiglu_forward(y->h, y->g, y->up, (size_t)N * F));
		S_TRY(s_lin_fwd(m, &li[LD], y->d, y->h, F, C));
		S_TRY(K->residual_forward(l + 1 < L ? m->l[l + 1].xin : m->xout, y->xmid, y->d,
					  (size_t)N * C));
	}
	S_TRY(K->rmsnorm_forward(m->xf, m->rstdf, m->xout, m->lnf, N, C, 1e-6f));
	S_TRY(K->matmul_forward(m->logits, m->xf, m->wte, NULL, N, C, V));
	return K->crossentropy_forward(m->losses, m->lse, m->logits, m->tgt, N, V);
}

/* Backward of sum_n dlosses[n] * losses[n]; leaves the gradient at the
 * embeddings' output in m->dx (the tied head and all base weights frozen). */
static int s_backward(struct model *m)
{
	const struct kdevice_ops *K = m->K;
	void **g = m->gr;

	for (int i = 0; i < NG; i++)
		S_TRY(K->zero(g[i], s_gsize[i], K->dt));
	S_TRY(K->zero(m->dx, (size_t)N * C, K->dt));
	S_TRY(K->crossentropy_backward(g[G_LOGITS], m->dlosses, m->logits, m->lse, m->tgt, N, V));
	S_TRY(K->matmul_backward(g[G_XF], NULL, NULL, g[G_LOGITS], m->xf, m->wte, N, C, V));
	S_TRY(K->rmsnorm_backward(m->dx, NULL, g[G_XF], m->xout, m->lnf, m->rstdf, N, C));
	for (int l = L - 1; l >= 0; l--) {
		struct layer *y = &m->l[l];
		struct lin *li = y->lin;
		for (int i = 0; i < G_XF; i++)
			S_TRY(K->zero(g[i], s_gsize[i], K->dt));
		S_TRY(K->residual_backward(g[G_MID], g[G_D], m->dx, (size_t)N * C));
		S_TRY(s_lin_bwd(m, &li[LD], g[G_H], g[G_D], y->h, F, C));
		S_TRY(K->swiglu_backward(g[G_G], g[G_UP], g[G_H], y->g, y->up, (size_t)N * F));
		S_TRY(s_lin_bwd(m, &li[LG], g[G_A2], g[G_G], y->a2, C, F));
		S_TRY(s_lin_bwd(m, &li[LU], g[G_A2], g[G_UP], y->a2, C, F));
		S_TRY(K->rmsnorm_backward(g[G_MID], NULL, g[G_A2], y->xmid, y->ln2, y->rstd2, N, C));
		S_TRY(K->residual_backward(g[G_XIN], g[G_O], g[G_MID], (size_t)N * C));
		S_TRY(s_lin_bwd(m, &li[LO], g[G_Y], g[G_O], y->y, QD, C));
		S_TRY(K->attention_backward(g[G_Q], g[G_K], g[G_V], g[G_Y], y->y, y->att, y->q, y->k,
					    y->v, B, T, NH, NKV, HS));
		S_TRY(K->rope_backward(g[G_Q], m->cosv, m->sinv, B, T, NH, HS));
		S_TRY(K->rope_backward(g[G_K], m->cosv, m->sinv, B, T, NKV, HS));
		S_TRY(s_lin_bwd(m, &li[LQ], g[G_A1], g[G_Q], y->a1, C, QD));
		S_TRY(s_lin_bwd(m, &li[LK], g[G_A1], g[G_K], y->a1, C, KD));
		S_TRY(s_lin_bwd(m, &li[LV], g[G_A1], g[G_V], y->a1, C, KD));
		S_TRY(K->rmsnorm_backward(g[G_XIN], NULL, g[G_A1], y->xin, y->ln1, y->rstd1, N, C));
		S_TRY(K->zero(m->dx, (size_t)N * C, K->dt));
		S_TRY(K->residual_backward(m->dx, NULL, g[G_XIN], (size_t)N * C));
	}
	return K->sync();
}

/* ---- the comparison ---------------------------------------------------- */

/* Round host values to the CUDA storage type, so both sides start equal. */
static int s_round(const struct kdevice_ops *gpu, float *h, size_t n)
{
	void *d = gpu->alloc(n, gpu->dt);
	int rc = d && gpu->upload(d, gpu->dt, h, KCUDA_F32, n) == 0 &&
		 gpu->download(h, KCUDA_F32, d, gpu->dt, n) == 0 ? 0 : -1;

	gpu->free(d);
	return rc;
}

static int s_host_init(struct host *h, const struct kdevice_ops *gpu)
{
	int count = 0;

	h->wte = s_hrand((size_t)V * C, -0.5f, 0.5f);
	h->lnf = s_hrand(C, 0.8f, 1.2f);
	S_TRY(s_round(gpu, h->wte, (size_t)V * C));
	S_TRY(s_round(gpu, h->lnf, C));
	for (int l = 0; l < L; l++) {
		for (int j = 0; j < 2; j++) {
			h->ln[l][j] = s_hrand(C, 0.8f, 1.2f);
			S_TRY(s_round(gpu, h->ln[l][j], C));
		}
		for (int s = 0; s < NLIN; s++) {
			float bound = 1.0f / sqrtf((float)s_in[s]);
			h->w[l][s] = s_hrand((size_t)s_out[s] * s_in[s], -bound, bound);
			h->a[l][s] = s_hrand((size_t)R * s_in[s], -bound, bound);
			h->b[l][s] = s_hrand((size_t)s_out[s] * R, -0.2f, 0.2f);
			S_TRY(s_round(gpu, h->w[l][s], (size_t)s_out[s] * s_in[s]));
			S_TRY(s_round(gpu, h->a[l][s], (size_t)R * s_in[s]));
			S_TRY(s_round(gpu, h->b[l][s], (size_t)s_out[s] * R));
		}
	}
	for (int i = 0; i < N; i++) {
		h->tok[i] = (int)(s_uniform() * V);
		h->tgt[i] = i % 5 == 4 ? -100 : (int)(s_uniform() * V);
		count += h->tgt[i] >= 0;
	}
	for (int i = 0; i < N; i++)
		h->dlosses[i] = h->tgt[i] >= 0 ? 1.0f / count : 0.0f;
	return 0;
}

static void s_host_free(struct host *h)
{
	free(h->wte);
	free(h->lnf);
	for (int l = 0; l < L; l++) {
		free(h->ln[l][0]);
		free(h->ln[l][1]);
		for (int s = 0; s < NLIN; s++) {
			free(h->w[l][s]);
			free(h->a[l][s]);
			free(h->b[l][s]);
		}
	}
}

/* max|a - b| / max|b| of tensor t of both models (dt: its storage type). */
static int s_diff(const struct model *gm, const struct model *cm, const void *gt, const void *ct,
		  size_t n, int dt, float *rel)
{
	float *g = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float)), md = 0, mr = 0;
	int rc = -1;

	if (g && c && gm->K->download(g, KCUDA_F32, gt, dt == KCUDA_F32 ? KCUDA_F32 : gm->K->dt, n) == 0 &&
	    cm->K->download(c, KCUDA_F32, ct, KCUDA_F32, n) == 0) {
		for (size_t i = 0; i < n; i++) {
			float d = fabsf(g[i] - c[i]);
			md = d > md || d != d ? d : md;
			mr = fabsf(c[i]) > mr ? fabsf(c[i]) : mr;
		}
		*rel = mr > 0 ? md / mr : md;
		rc = 0;
	}
	free(g);
	free(c);
	return rc;
}

static const char *s_lin_names[NLIN] = { "q", "k", "v", "o", "gate", "up", "down" };

/* One line per compared group; returns -1 when a CUDA call failed. */
static int s_compare(const struct model *gm, const struct model *cm, float tol, const char *what)
{
	float rel, worst = 0;
	char where[64] = "all equal";
	int ok;

	S_TRY(s_diff(gm, cm, gm->losses, cm->losses, N, KCUDA_F32, &rel));
	TAP_OK(rel <= tol, "%s: losses max|d|/max|x| %.2e (tol %.0e)", what, rel, tol);
	S_TRY(s_diff(gm, cm, gm->logits, cm->logits, (size_t)N * V, -1, &rel));
	TAP_OK(rel <= tol, "%s: logits max|d|/max|x| %.2e (tol %.0e)", what, rel, tol);
	S_TRY(s_diff(gm, cm, gm->dx, cm->dx, (size_t)N * C, -1, &rel));
	TAP_OK(rel <= tol, "%s: gradient at the embeddings max|d|/max|x| %.2e (tol %.0e)", what, rel,
	       tol);
	for (int l = 0; l < L; l++) {
		for (int s = 0; s < NLIN; s++) {
			const struct lin *g = &gm->l[l].lin[s], *c = &cm->l[l].lin[s];
			float ra, rb;
			S_TRY(s_diff(gm, cm, g->da, c->da, (size_t)R * s_in[s], KCUDA_F32, &ra));
			S_TRY(s_diff(gm, cm, g->db, c->db, (size_t)s_out[s] * R, KCUDA_F32, &rb));
			if (ra > worst || rb > worst || ra != ra || rb != rb) {
				worst = ra > rb || rb != rb ? ra : rb;
				snprintf(where, sizeof where, "layer %d %s", l, s_lin_names[s]);
			}
		}
	}
	ok = worst <= tol;
	TAP_OK(ok, "%s: %d LoRA gradients (A and B), worst max|d|/max|x| %.2e at %s (tol %.0e)", what,
	       2 * L * NLIN, worst, where, tol);
	return 0;
}

/* The lines s_compare prints, for the skipped run. */
static const char *s_checks[] = { "losses", "logits", "gradient at the embeddings", "LoRA gradients" };

int main(void)
{
	static const struct { int dt; float tol; } runs[] = { { KCUDA_F32, 1e-4f }, { KCUDA_BF16, 5e-2f } };
	char why[512], skip[600], what[64];
	int gpu;

	gpu = gpu_probe(why, sizeof why, skip, sizeof skip);
	for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
		struct model cm = { .K = kdevice_ops(KDEV_CPU, KCUDA_F32) };
		struct model gm = { .K = kdevice_ops(KDEV_CUDA, runs[r].dt) };
		struct host h;
		/* tests/gpu-step-emu: the CPU emulation of CUDA (tests/cuda-emu) */
#ifdef MODULA_CUDA_EMU
		snprintf(what, sizeof what, "emulated: LoRA step %s", kcuda_dtype_name(runs[r].dt));
#else
		snprintf(what, sizeof what, "LoRA step %s", kcuda_dtype_name(runs[r].dt));
#endif
		if (!gpu) {
			for (size_t i = 0; i < sizeof s_checks / sizeof s_checks[0]; i++) {
				char line[128];
				snprintf(line, sizeof line, "%s: %s", what, s_checks[i]);
				tap_skip(skip, line);
			}
			continue;
		}
		memset(&h, 0, sizeof h);
		if (s_host_init(&h, gm.K) < 0 || s_model_load(&cm, &h) < 0 || s_model_load(&gm, &h) < 0 ||
		    s_forward(&cm) < 0 || s_backward(&cm) < 0 || s_forward(&gm) < 0 ||
		    s_backward(&gm) < 0 || s_compare(&gm, &cm, runs[r].tol, what) < 0)
			TAP_OK(0, "%s: %s", what, err_msg());
		s_model_free(&gm);
		s_model_free(&cm);
		s_host_free(&h);
	}
	return tap_done();
}
