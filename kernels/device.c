/* device.c: see device.h. The op tables are thin: each entry calls its
 * ops.h or kcuda.h namesake and nothing else. */
#include "config.h"
#include "kernels/device.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/kcuda.h"
#include "err.h"

#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kdevice_parse(const char *name, int *out)
{
	if (strcmp(name, "cpu") == 0)
		*out = KDEV_CPU;
	else if (strcmp(name, "cuda") == 0)
		*out = KDEV_CUDA;
	else if (strcmp(name, "auto") == 0)
		*out = -1;
	else
		return err_set("unknown device '%s': use cpu, cuda or auto", name);
	return 0;
}

int kdevice_resolve(int request, enum kdevice *out)
{
	char why[256];

	if (request == KDEV_CPU) {
		*out = KDEV_CPU;
		return 0;
	}
	if (kcuda_probe(why, sizeof why) == 0) {
		*out = KDEV_CUDA;
		return 0;
	}
	if (request == KDEV_CUDA)
		return err_set("--device cuda: %s", why);
	*out = KDEV_CPU;
	return 0;
}

void kdevice_describe(char *buf, size_t n)
{
	char why[256];
	size_t k = (size_t)snprintf(buf, n, "cpu: always available\n");

	if (k >= n)
		return;
	if (kcuda_probe(why, sizeof why) == 0)
		snprintf(buf + k, n - k, "cuda: %s\n", why);
	else
		snprintf(buf + k, n - k, "cuda: unavailable (%s)\n", why);
}

const char *kdevice_name(enum kdevice d)
{
	return d == KDEV_CUDA ? "cuda" : "cpu";
}

/* ---- the CPU's table: ops.h over host memory -------------------------- */

static void *s_cpu_alloc(size_t n, int dt)
{
	void *p;

	if (dt != KCUDA_F32 && dt != KCUDA_I32) {
		err_set("the CPU backend stores f32 and i32, not %s", kcuda_dtype_name(dt));
		return NULL;
	}
	if (!(p = calloc(n ? n : 1, 4)))
		err_set("out of memory: %zu MiB", n * 4 >> 20);
	return p;
}

static int s_cpu_zero(void *p, size_t n, int dt)
{
	memset(p, 0, n * kcuda_dtype_size(dt));
	return 0;
}

static int s_cpu_copy(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	if (ddt != sdt || (ddt != KCUDA_F32 && ddt != KCUDA_I32))
		return err_set("the CPU backend copies f32 and i32 without conversion, not %s to %s",
			       kcuda_dtype_name(sdt), kcuda_dtype_name(ddt));
	if (dst != src)
		memcpy(dst, src, n * 4);
	return 0;
}

static int s_cpu_sync(void)
{
	return 0;
}

static size_t s_cpu_att_saved(int b, int t, int nh)
{
	return (size_t)b * nh * t * t;
}

static int s_cpu_gemm(void *c, int cdt, const void *a, const void *b, int m, int n, int k, int ta,
		      int tb, float alpha, float beta)
{
	op_gemm(c, a, b, m, n, k, ta, tb, alpha, beta);
	return 0;
}

static int s_cpu_gemm_f32(float *c, const float *a, const float *b, int m, int n, int k, int ta,
			  int tb, float alpha, float beta)
{
	op_gemm(c, a, b, m, n, k, ta, tb, alpha, beta);
	return 0;
}

static int s_cpu_gemm_ld(void *c, int cdt, int ldc, const void *a, int lda, const void *b, int ldb,
			 int m, int n, int k, int ta, int tb, float alpha, float beta)
{
	op_gemm_ld(c, ldc, a, lda, b, ldb, m, n, k, ta, tb, alpha, beta);
	return 0;
}

static int s_cpu_gemm_wgrad(const struct kcuda_wgrad *p, int count, int k)
{
	if (count < 0 || count > KCUDA_WGRAD_MAX)
		return err_set("gemm_wgrad: %d products (0 to %d)", count, KCUDA_WGRAD_MAX);
	for (int i = 0; i < count; i++)
		op_gemm_ld(p[i].c, p[i].ldc, p[i].a, p[i].lda, p[i].b, p[i].ldb, p[i].m, p[i].n, k, 1,
			   0, p[i].alpha, p[i].beta);
	return 0;
}

static int s_cpu_gemm_batched(int dt, void *const *c, const void *const *a, const void *const *b,
			      int count, int m, int n, int k, int ta, int tb, float alpha, float beta)
{
	(void)dt;
	for (int i = 0; i < count; i++)
		op_gemm(c[i], a[i], b[i], m, n, k, ta, tb, alpha, beta);
	return 0;
}

static int s_cpu_embedding_forward(void *out, const int *tok, const void *wte, int n, int c)
{
	op_embedding_forward(out, tok, wte, n, c);
	return 0;
}

static int s_cpu_embedding_backward(float *dwte, const void *dout, const int *tok, int n, int c)
{
	op_embedding_backward(dwte, dout, tok, n, c);
	return 0;
}

static int s_cpu_matmul_forward(void *out, const void *inp, const void *w, const void *b, int n,
				int c, int oc)
{
	op_matmul_forward(out, inp, w, b, n, c, oc);
	return 0;
}

static int s_cpu_matmul_forward_res(void *out, const void *res, const void *inp, const void *w,
				    int n, int c, int oc)
{
	if (out == res)
		return err_set("matmul_forward_res: out and res must be different buffers");
	memcpy(out, res, (size_t)n * oc * sizeof(float));
	op_gemm(out, inp, w, n, oc, c, 0, 1, 1.0f, 1.0f);
	return 0;
}

static int s_cpu_matmul_backward(void *dinp, float *dw, float *db, const void *dout,
				 const void *inp, const void *w, int n, int c, int oc)
{
	op_matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc);
	return 0;
}

static int s_cpu_rmsnorm_forward(void *out, float *rstd, const void *inp, const void *w, int n,
				 int c, float eps)
{
	op_rmsnorm_forward(out, rstd, inp, w, n, c, eps);
	return 0;
}

static int s_cpu_rmsnorm_backward(void *dinp, float *dw, const void *dout, const void *inp,
				  const void *w, const float *rstd, int n, int c)
{
	op_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, n, c);
	return 0;
}

/* The strided ones row by row (the ops take contiguous rows). */
static int s_cpu_rmsnorm_forward_ld(void *out, int ldo, float *rstd, const void *inp,
				    const void *w, int n, int c, float eps)
{
	if (ldo < c)
		return err_set("rmsnorm_forward: output rows %d apart, narrower than %d", ldo, c);
	if (ldo == c)
		return s_cpu_rmsnorm_forward(out, rstd, inp, w, n, c, eps);
	for (int i = 0; i < n; i++)
		op_rmsnorm_forward((float *)out + (size_t)i * ldo, rstd + i,
				   (const float *)inp + (size_t)i * c, w, 1, c, eps);
	return 0;
}

static int s_cpu_rmsnorm_backward_ld(void *dinp, int ldi, float *dw, const void *dout, int ldd,
				     const void *inp, const void *w, const float *rstd, int n,
				     int c)
{
	if (ldd < c || ldi < c)
		return err_set("rmsnorm_backward: gradient rows %d and %d apart, narrower than %d", ldi,
			       ldd, c);
	if (ldd == c && ldi == c)
		return s_cpu_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, n, c);
	for (int i = 0; i < n; i++)
		op_rmsnorm_backward(dinp ? (float *)dinp + (size_t)i * ldi : NULL, dw,
				    (const float *)dout + (size_t)i * ldd,
				    (const float *)inp + (size_t)i * c, w, rstd + i, 1, c);
	return 0;
}

static int s_cpu_rope_table(float *cosv, float *sinv, int t, int hs, int pos0, float theta)
{
	op_rope_table(cosv, sinv, t, hs, pos0, theta);
	return 0;
}

static int s_cpu_rope_forward(void *x, const float *cosv, const float *sinv, int b, int t, int nh,
			      int hs)
{
	op_rope_forward(x, cosv, sinv, b, t, nh, hs);
	return 0;
}

static int s_cpu_rope_backward(void *dx, const float *cosv, const float *sinv, int b, int t,
			       int nh, int hs)
{
	op_rope_backward(dx, cosv, sinv, b, t, nh, hs);
	return 0;
}

static int s_cpu_attention_forward(void *out, float *saved, const void *q, const void *k,
				   const void *v, int b, int t, int nh, int nkv, int hs)
{
	op_attention_forward(out, saved, q, k, v, b, t, nh, nkv, hs);
	return 0;
}

static int s_cpu_attention_backward(void *dq, void *dk, void *dv, const void *dout,
				    const void *out, const float *saved, const void *q,
				    const void *k, const void *v, int b, int t, int nh, int nkv,
				    int hs)
{
	float *scratch = malloc((size_t)t * t * omp_get_max_threads() * sizeof(float));

	if (!scratch)
		return err_set("out of memory");
	op_attention_backward(dq, dk, dv, scratch, dout, saved, q, k, v, b, t, nh, nkv, hs);
	free(scratch);
	return 0;
}

/* the _set op: the gradients given are written, not added to */
static void s_zero_att_grads(void *dq, void *dk, void *dv, int b, int t, int nh, int nkv, int hs)
{
	if (dq)
		memset(dq, 0, (size_t)b * t * nh * hs * sizeof(float));
	if (dk)
		memset(dk, 0, (size_t)b * t * nkv * hs * sizeof(float));
	if (dv)
		memset(dv, 0, (size_t)b * t * nkv * hs * sizeof(float));
}

static int s_cpu_attention_backward_set(void *dq, void *dk, void *dv, const void *dout,
					const void *out, const float *saved, const void *q,
					const void *k, const void *v, int b, int t, int nh, int nkv,
					int hs)
{
	s_zero_att_grads(dq, dk, dv, b, t, nh, nkv, hs);
	return s_cpu_attention_backward(dq, dk, dv, dout, out, saved, q, k, v, b, t, nh, nkv, hs);
}

static int s_cpu_swiglu_forward(void *out, const void *gate, const void *up, size_t n)
{
	op_swiglu_forward(out, gate, up, n);
	return 0;
}

static int s_cpu_swiglu_backward(void *dgate, void *dup, const void *dout, const void *gate,
				 const void *up, size_t n)
{
	op_swiglu_backward(dgate, dup, dout, gate, up, n);
	return 0;
}

static int s_cpu_swiglu_backward_set(void *dgate, void *dup, const void *dout, const void *gate,
				     const void *up, size_t n)
{
	if (dgate)
		memset(dgate, 0, n * sizeof(float));
	if (dup)
		memset(dup, 0, n * sizeof(float));
	op_swiglu_backward(dgate, dup, dout, gate, up, n);
	return 0;
}

static int s_cpu_residual_forward(void *out, const void *a, const void *b, size_t n)
{
	op_residual_forward(out, a, b, n);
	return 0;
}

static int s_cpu_residual_backward(void *da, void *db, const void *dout, size_t n)
{
	op_residual_backward(da, db, dout, n);
	return 0;
}

static int s_cpu_leakyrelu_forward(void *out, const void *inp, float slope, size_t n)
{
	op_leakyrelu_forward(out, inp, slope, n);
	return 0;
}

static int s_cpu_leakyrelu_backward(void *dinp, const void *dout, const void *inp, float slope,
				    size_t n)
{
	op_leakyrelu_backward(dinp, dout, inp, slope, n);
	return 0;
}

static int s_cpu_softmax_forward(void *out, const void *inp, int n, int k)
{
	op_softmax_forward(out, inp, n, k);
	return 0;
}

static int s_cpu_softmax_backward(void *dinp, const void *dout, const void *out, int n, int k)
{
	op_softmax_backward(dinp, dout, out, n, k);
	return 0;
}

static int s_cpu_crossentropy_forward(float *losses, float *lse, const void *logits,
				      const int *targets, int n, int v)
{
	op_crossentropy_forward(losses, lse, logits, targets, n, v);
	return 0;
}

static int s_cpu_crossentropy_backward(void *dlogits, const float *dlosses, const void *logits,
				       const float *lse, const int *targets, int n, int v)
{
	op_crossentropy_backward(dlogits, dlosses, logits, lse, targets, n, v);
	return 0;
}

/* The fused form on the CPU: the forward, then dlogits over the logits. */
static int s_cpu_crossentropy_fused(float *losses, void *logits, const float *dlosses,
				    const int *targets, int n, int v)
{
	float *lse = malloc((size_t)(n ? n : 1) * sizeof(float)), *x = logits;

	if (!lse)
		return err_set("out of memory");
	op_crossentropy_forward(losses, lse, x, targets, n, v);
	#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++) {
		float *row = x + (size_t)i * v, d = dlosses[i];
		int t = targets[i];
		for (int j = 0; j < v; j++)
			row[j] = t < 0 || d == 0.0f ? 0.0f : d * (expf(row[j] - lse[i]) - (j == t ? 1.0f : 0.0f));
	}
	free(lse);
	return 0;
}

/* Column j's expert among e + (r0 > 0): the head (rank r0) first. */
static int s_router_expert(int j, int r0, int r)
{
	return j < r0 ? 0 : (r0 > 0) + (j - r0) / r;
}

static int s_cpu_router_weight_forward(void *uw, int ld, float *s, const void *rlogits, int ldr,
				       const void *u, int ldu, int n, int e, int r, float scale,
				       int r0, float s0)
{
	float *o = uw, *rl = NULL;
	const float *x = u;
	int ne = e + (r0 > 0), w = r0 + e * r;

	ld = ld ? ld : w, ldr = ldr ? ldr : ne, ldu = ldu ? ldu : w;
	if (ld < w || ldr < ne || ldu < w)
		return err_set("router_weight_forward: rows %d, %d, %d apart, narrower than %d, %d, %d",
			       ld, ldr, ldu, w, ne, w);
	if (ldr != ne) { /* the logits as contiguous rows for the softmax */
		if (!(rl = calloc((size_t)n * ne + 1, sizeof *rl)))
			return err_set("out of memory");
		for (int i = 0; i < n; i++)
			memcpy(rl + (size_t)i * ne, (const float *)rlogits + (size_t)i * ldr,
			       (size_t)ne * sizeof *rl);
	}
	op_softmax_forward(s, rl ? rl : rlogits, n, ne);
	free(rl);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < w; j++)
			o[(size_t)i * ld + j] = (j < r0 ? s0 : scale) *
						s[(size_t)i * ne + s_router_expert(j, r0, r)] *
						x[(size_t)i * ldu + j];
	return 0;
}

/* du += scale_i s_i duw; drlogits += softmax backward of ds_i = scale_i
 * sum over expert i's columns of u duw. */
static int s_cpu_router_weight_backward(void *drlogits, int ldr, void *du, const void *duw, int ld,
					const float *s, const void *u, int ldu, int n, int e, int r,
					float scale, int r0, float s0)
{
	const float *g = duw, *x = u;
	int ne = e + (r0 > 0), w = r0 + e * r;
	float *ds, *d = du, *dr = NULL;

	ld = ld ? ld : w, ldr = ldr ? ldr : ne, ldu = ldu ? ldu : w;
	if (ld < w || ldr < ne || ldu < w)
		return err_set("router_weight_backward: rows %d, %d, %d apart, narrower than %d, %d, %d",
			       ld, ldr, ldu, w, ne, w);
	if (!(ds = calloc((size_t)n * ne + 1, sizeof(float))))
		return err_set("out of memory");
	for (int i = 0; i < n; i++)
		for (int j = 0; j < w; j++) {
			size_t o = (size_t)i * ldu + j, og = (size_t)i * ld + j;
			size_t k = (size_t)i * ne + s_router_expert(j, r0, r);
			float sc = j < r0 ? s0 : scale;
			ds[k] += sc * x[o] * g[og];
			if (d)
				d[o] += sc * s[k] * g[og];
		}
	if (drlogits && ldr == ne) {
		op_softmax_backward(drlogits, ds, s, n, ne);
	} else if (drlogits) { /* added through contiguous rows */
		if (!(dr = calloc((size_t)n * ne + 1, sizeof *dr))) {
			free(ds);
			return err_set("out of memory");
		}
		op_softmax_backward(dr, ds, s, n, ne);
		for (int i = 0; i < n; i++)
			for (int k = 0; k < ne; k++)
				((float *)drlogits)[(size_t)i * ldr + k] += dr[(size_t)i * ne + k];
		free(dr);
	}
	free(ds);
	return 0;
}

static int s_cpu_res_forward(void *cat, int ld, void *z, void *zl, float *s, const void *ur,
			     int ldu, const void *mab, int n, int r0, int e, int r, float s0,
			     float sd, float slope)
{
	if (ld && ld < r0 + e * r)
		return err_set("res_forward: rows %d apart, narrower than %d columns", ld, r0 + e * r);
	if (ldu && ldu < r0 + e)
		return err_set("res_forward: ur's rows %d apart, narrower than %d columns", ldu, r0 + e);
	op_res_forward(cat, ld, z, zl, s, ur, ldu, mab, n, r0, e, r, s0, sd, slope);
	return 0;
}

static int s_cpu_res_backward(void *dcat, int ld, void *dz, const float *s, const void *z,
			      const void *zl, const void *mab, int nores, int n, int r0, int e,
			      int r, float s0, float sd, float slope)
{
	if (e > OPS_RES_MAX_EXPERTS)
		return err_set("res_backward: %d experts (at most %d)", e, OPS_RES_MAX_EXPERTS);
	if (ld && ld < r0 + e * r)
		return err_set("res_backward: rows %d apart, narrower than %d columns", ld, r0 + e * r);
	op_res_backward(dcat, ld, dz, s, z, zl, mab, nores, n, r0, e, r, s0, sd, slope);
	return 0;
}

static int s_cpu_sumsq(const float *x, size_t n, double *out)
{
	double ss = 0.0;

	for (size_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	*out = ss;
	return 0;
}

static int s_cpu_scale(float *x, float s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] *= s;
	return 0;
}

static int s_cpu_adamw(float *w, void *wdt, const float *g, float *m, float *v, size_t n, float lr,
		       float beta1, float beta2, float eps, float weight_decay, long step)
{
	float bc1 = 1.0f - powf(beta1, (float)step), bc2 = 1.0f - powf(beta2, (float)step);
	float decay = 1.0f - lr * weight_decay, *copy = wdt;

	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t j = 0; j < n; j++) {
		m[j] = beta1 * m[j] + (1.0f - beta1) * g[j];
		v[j] = beta2 * v[j] + (1.0f - beta2) * g[j] * g[j];
		float mh = m[j] / bc1, vh = v[j] / bc2;
		w[j] = w[j] * decay - lr * mh / (sqrtf(vh) + eps);
		if (copy && copy != w)
			copy[j] = w[j];
	}
	return 0;
}

static void s_cpu_memory_report(char *buf, size_t n)
{
	snprintf(buf, n, "host memory (the CPU backend)");
}

static const struct kdevice_ops s_cpu_ops = {
	.dev = KDEV_CPU, .dt = KCUDA_F32,
	.alloc = s_cpu_alloc, .free = free, .zero = s_cpu_zero, .upload = s_cpu_copy,
	.download = s_cpu_copy, .sync = s_cpu_sync, .attention_saved = s_cpu_att_saved,
	.gemm = s_cpu_gemm, .gemm_ld = s_cpu_gemm_ld, .gemm_f32 = s_cpu_gemm_f32,
	.gemm_batched = s_cpu_gemm_batched, .gemm_wgrad = s_cpu_gemm_wgrad,
	.embedding_forward = s_cpu_embedding_forward, .embedding_backward = s_cpu_embedding_backward,
	.matmul_forward = s_cpu_matmul_forward, .matmul_forward_res = s_cpu_matmul_forward_res,
	.matmul_backward = s_cpu_matmul_backward,
	.rmsnorm_forward = s_cpu_rmsnorm_forward, .rmsnorm_backward = s_cpu_rmsnorm_backward,
	.rmsnorm_forward_ld = s_cpu_rmsnorm_forward_ld,
	.rmsnorm_backward_ld = s_cpu_rmsnorm_backward_ld,
	.rope_table = s_cpu_rope_table, .rope_forward = s_cpu_rope_forward,
	.rope_backward = s_cpu_rope_backward,
	.attention_forward = s_cpu_attention_forward, .attention_backward = s_cpu_attention_backward,
	.attention_backward_set = s_cpu_attention_backward_set,
	.swiglu_forward = s_cpu_swiglu_forward, .swiglu_backward = s_cpu_swiglu_backward,
	.swiglu_backward_set = s_cpu_swiglu_backward_set,
	.residual_forward = s_cpu_residual_forward, .residual_backward = s_cpu_residual_backward,
	.leakyrelu_forward = s_cpu_leakyrelu_forward, .leakyrelu_backward = s_cpu_leakyrelu_backward,
	.softmax_forward = s_cpu_softmax_forward, .softmax_backward = s_cpu_softmax_backward,
	.crossentropy_forward = s_cpu_crossentropy_forward,
	.crossentropy_backward = s_cpu_crossentropy_backward,
	.crossentropy_fused = s_cpu_crossentropy_fused,
	.router_weight_forward = s_cpu_router_weight_forward,
	.router_weight_backward = s_cpu_router_weight_backward,
	.res_forward = s_cpu_res_forward, .res_backward = s_cpu_res_backward,
	.convert = s_cpu_copy, .sumsq = s_cpu_sumsq, .scale = s_cpu_scale, .adamw = s_cpu_adamw,
	.memory_report = s_cpu_memory_report,
};

/* ---- the CPU's table with rounded storage ------------------------------
 * The CPU ops in fp32, every store to a buffer of type dt rounded to dt
 * (bf16 or f16) as the GPU's kernels store their fp32 results: the GPU
 * path's numerics, reproducible without a GPU (tests/gpu/ops.c checks the
 * kernels; this checks what the storage type costs a whole step). Buffers
 * stay 4-byte floats holding dt's values. */

#define D_TRY(x) do { if ((x) < 0) return -1; } while (0)

static int s_emu_dt = KCUDA_BF16;

static float s_round_dt(float x, int dt)
{
	if (dt == KCUDA_F16)
		return (float)(_Float16)x;
	if (dt == KCUDA_BF16 && isfinite(x)) {
		uint32_t u;
		memcpy(&u, &x, 4);
		u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
		memcpy(&x, &u, 4);
	}
	return x;
}

/* Round rows x cols floats at p (rows ld apart) when type dt is rounded. */
static void s_emu_round(void *p, int dt, size_t rows, size_t cols, size_t ld)
{
	float *x = p;

	if (!p || dt == KCUDA_F32 || dt == KCUDA_I32)
		return;
	for (size_t i = 0; i < rows; i++)
		for (size_t j = 0; j < cols; j++)
			x[i * ld + j] = s_round_dt(x[i * ld + j], dt);
}

#define EMU_N(p, n) s_emu_round((p), s_emu_dt, 1, (n), (n))

static void *s_emu_alloc(size_t n, int dt)
{
	return s_cpu_alloc(n, dt == KCUDA_I32 ? dt : KCUDA_F32);
}

static int s_emu_zero(void *p, size_t n, int dt)
{
	(void)dt;
	memset(p, 0, n * 4);
	return 0;
}

/* Host to "device": f32, bf16 or f16 in, dt's values out (in place too). */
static int s_emu_copy(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	float *d = dst;

	if (sdt == KCUDA_I32 || ddt == KCUDA_I32) {
		if (sdt != ddt)
			return err_set("the CPU backend copies i32 to i32 only");
		memmove(dst, src, n * 4);
		return 0;
	}
	if (sdt == KCUDA_BF16 || sdt == KCUDA_F16) {
		const uint16_t *h = src;
		if (dst == src)
			return err_set("a 2-byte host tensor cannot convert in place");
		for (size_t i = 0; i < n; i++) {
			if (sdt == KCUDA_BF16) {
				uint32_t u = (uint32_t)h[i] << 16;
				memcpy(&d[i], &u, 4);
			} else {
				_Float16 f;
				memcpy(&f, &h[i], 2);
				d[i] = (float)f;
			}
		}
	} else if (dst != src) {
		memmove(dst, src, n * 4);
	}
	s_emu_round(dst, ddt, 1, n, n);
	return 0;
}

static int s_emu_download(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	(void)sdt;
	if (ddt != KCUDA_F32 && ddt != KCUDA_I32)
		return err_set("the emulated table downloads f32 and i32, not %s", kcuda_dtype_name(ddt));
	memmove(dst, src, n * 4);
	return 0;
}

static int s_emu_gemm(void *c, int cdt, const void *a, const void *b, int m, int n, int k, int ta,
		      int tb, float alpha, float beta)
{
	s_cpu_gemm(c, cdt, a, b, m, n, k, ta, tb, alpha, beta);
	s_emu_round(c, cdt, (size_t)m, (size_t)n, (size_t)n);
	return 0;
}

static int s_emu_gemm_ld(void *c, int cdt, int ldc, const void *a, int lda, const void *b, int ldb,
			 int m, int n, int k, int ta, int tb, float alpha, float beta)
{
	s_cpu_gemm_ld(c, cdt, ldc, a, lda, b, ldb, m, n, k, ta, tb, alpha, beta);
	s_emu_round(c, cdt, (size_t)m, (size_t)n, (size_t)ldc);
	return 0;
}

static int s_emu_gemm_batched(int dt, void *const *c, const void *const *a, const void *const *b,
			      int count, int m, int n, int k, int ta, int tb, float alpha, float beta)
{
	s_cpu_gemm_batched(dt, c, a, b, count, m, n, k, ta, tb, alpha, beta);
	for (int i = 0; i < count; i++)
		s_emu_round(c[i], dt, (size_t)m, (size_t)n, (size_t)n);
	return 0;
}

static int s_emu_embedding_forward(void *out, const int *tok, const void *wte, int n, int c)
{
	s_cpu_embedding_forward(out, tok, wte, n, c);
	EMU_N(out, (size_t)n * c);
	return 0;
}

static int s_emu_matmul_forward(void *out, const void *inp, const void *w, const void *b, int n,
				int c, int oc)
{
	s_cpu_matmul_forward(out, inp, w, b, n, c, oc);
	EMU_N(out, (size_t)n * oc);
	return 0;
}

/* the product and the residual in fp32, rounded once (as cuBLASLt's epilogue) */
static int s_emu_matmul_forward_res(void *out, const void *res, const void *inp, const void *w,
				    int n, int c, int oc)
{
	D_TRY(s_cpu_matmul_forward_res(out, res, inp, w, n, c, oc));
	EMU_N(out, (size_t)n * oc);
	return 0;
}

static int s_emu_matmul_backward(void *dinp, float *dw, float *db, const void *dout,
				 const void *inp, const void *w, int n, int c, int oc)
{
	D_TRY(s_cpu_matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc));
	EMU_N(dinp, (size_t)n * c);
	return 0;
}

static int s_emu_rmsnorm_forward(void *out, float *rstd, const void *inp, const void *w, int n,
				 int c, float eps)
{
	s_cpu_rmsnorm_forward(out, rstd, inp, w, n, c, eps);
	EMU_N(out, (size_t)n * c);
	return 0;
}

static int s_emu_rmsnorm_backward(void *dinp, float *dw, const void *dout, const void *inp,
				  const void *w, const float *rstd, int n, int c)
{
	s_cpu_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, n, c);
	EMU_N(dinp, (size_t)n * c);
	return 0;
}

static int s_emu_rmsnorm_forward_ld(void *out, int ldo, float *rstd, const void *inp,
				    const void *w, int n, int c, float eps)
{
	if (s_cpu_rmsnorm_forward_ld(out, ldo, rstd, inp, w, n, c, eps) < 0)
		return -1;
	s_emu_round(out, s_emu_dt, (size_t)n, (size_t)c, (size_t)ldo);
	return 0;
}

static int s_emu_rmsnorm_backward_ld(void *dinp, int ldi, float *dw, const void *dout, int ldd,
				     const void *inp, const void *w, const float *rstd, int n,
				     int c)
{
	if (s_cpu_rmsnorm_backward_ld(dinp, ldi, dw, dout, ldd, inp, w, rstd, n, c) < 0)
		return -1;
	s_emu_round(dinp, s_emu_dt, (size_t)n, (size_t)c, (size_t)ldi);
	return 0;
}

static int s_emu_rope_forward(void *x, const float *cosv, const float *sinv, int b, int t, int nh,
			      int hs)
{
	s_cpu_rope_forward(x, cosv, sinv, b, t, nh, hs);
	EMU_N(x, (size_t)b * t * nh * hs);
	return 0;
}

static int s_emu_rope_backward(void *dx, const float *cosv, const float *sinv, int b, int t, int nh,
			       int hs)
{
	s_cpu_rope_backward(dx, cosv, sinv, b, t, nh, hs);
	EMU_N(dx, (size_t)b * t * nh * hs);
	return 0;
}

static int s_emu_attention_forward(void *out, float *saved, const void *q, const void *k,
				   const void *v, int b, int t, int nh, int nkv, int hs)
{
	D_TRY(s_cpu_attention_forward(out, saved, q, k, v, b, t, nh, nkv, hs));
	EMU_N(out, (size_t)b * t * nh * hs);
	return 0;
}

static int s_emu_attention_backward(void *dq, void *dk, void *dv, const void *dout, const void *out,
				    const float *saved, const void *q, const void *k, const void *v,
				    int b, int t, int nh, int nkv, int hs)
{
	D_TRY(s_cpu_attention_backward(dq, dk, dv, dout, out, saved, q, k, v, b, t, nh, nkv, hs));
	EMU_N(dq, (size_t)b * t * nh * hs);
	EMU_N(dk, (size_t)b * t * nkv * hs);
	EMU_N(dv, (size_t)b * t * nkv * hs);
	return 0;
}

static int s_emu_attention_backward_set(void *dq, void *dk, void *dv, const void *dout,
					const void *out, const float *saved, const void *q,
					const void *k, const void *v, int b, int t, int nh, int nkv,
					int hs)
{
	s_zero_att_grads(dq, dk, dv, b, t, nh, nkv, hs);
	return s_emu_attention_backward(dq, dk, dv, dout, out, saved, q, k, v, b, t, nh, nkv, hs);
}

static int s_emu_swiglu_forward(void *out, const void *gate, const void *up, size_t n)
{
	s_cpu_swiglu_forward(out, gate, up, n);
	EMU_N(out, n);
	return 0;
}

static int s_emu_swiglu_backward(void *dgate, void *dup, const void *dout, const void *gate,
				 const void *up, size_t n)
{
	s_cpu_swiglu_backward(dgate, dup, dout, gate, up, n);
	EMU_N(dgate, n);
	EMU_N(dup, n);
	return 0;
}

static int s_emu_swiglu_backward_set(void *dgate, void *dup, const void *dout, const void *gate,
				     const void *up, size_t n)
{
	s_cpu_swiglu_backward_set(dgate, dup, dout, gate, up, n);
	EMU_N(dgate, n);
	EMU_N(dup, n);
	return 0;
}

static int s_emu_residual_forward(void *out, const void *a, const void *b, size_t n)
{
	s_cpu_residual_forward(out, a, b, n);
	EMU_N(out, n);
	return 0;
}

static int s_emu_residual_backward(void *da, void *db, const void *dout, size_t n)
{
	s_cpu_residual_backward(da, db, dout, n);
	EMU_N(da, n);
	if (db != da)
		EMU_N(db, n);
	return 0;
}

static int s_emu_leakyrelu_forward(void *out, const void *inp, float slope, size_t n)
{
	s_cpu_leakyrelu_forward(out, inp, slope, n);
	EMU_N(out, n);
	return 0;
}

static int s_emu_leakyrelu_backward(void *dinp, const void *dout, const void *inp, float slope,
				    size_t n)
{
	s_cpu_leakyrelu_backward(dinp, dout, inp, slope, n);
	EMU_N(dinp, n);
	return 0;
}

static int s_emu_softmax_forward(void *out, const void *inp, int n, int k)
{
	s_cpu_softmax_forward(out, inp, n, k);
	EMU_N(out, (size_t)n * k);
	return 0;
}

static int s_emu_softmax_backward(void *dinp, const void *dout, const void *out, int n, int k)
{
	s_cpu_softmax_backward(dinp, dout, out, n, k);
	EMU_N(dinp, (size_t)n * k);
	return 0;
}

static int s_emu_crossentropy_backward(void *dlogits, const float *dlosses, const void *logits,
				       const float *lse, const int *targets, int n, int v)
{
	s_cpu_crossentropy_backward(dlogits, dlosses, logits, lse, targets, n, v);
	EMU_N(dlogits, (size_t)n * v);
	return 0;
}

static int s_emu_crossentropy_fused(float *losses, void *logits, const float *dlosses,
				    const int *targets, int n, int v)
{
	D_TRY(s_cpu_crossentropy_fused(losses, logits, dlosses, targets, n, v));
	EMU_N(logits, (size_t)n * v);
	return 0;
}

static int s_emu_router_weight_forward(void *uw, int ld, float *s, const void *rlogits, int ldr,
				       const void *u, int ldu, int n, int e, int r, float scale,
				       int r0, float s0)
{
	size_t w = (size_t)r0 + (size_t)e * r;

	D_TRY(s_cpu_router_weight_forward(uw, ld, s, rlogits, ldr, u, ldu, n, e, r, scale, r0, s0));
	s_emu_round(uw, s_emu_dt, (size_t)n, w, ld ? (size_t)ld : w);
	return 0;
}

static int s_emu_router_weight_backward(void *drlogits, int ldr, void *du, const void *duw,
					int ld, const float *s, const void *u, int ldu, int n, int e,
					int r, float scale, int r0, float s0)
{
	size_t w = (size_t)r0 + (size_t)e * r, ne = (size_t)e + (r0 > 0);

	D_TRY(s_cpu_router_weight_backward(drlogits, ldr, du, duw, ld, s, u, ldu, n, e, r, scale, r0,
					   s0));
	if (drlogits)
		s_emu_round(drlogits, s_emu_dt, (size_t)n, ne, ldr ? (size_t)ldr : ne);
	if (du)
		s_emu_round(du, s_emu_dt, (size_t)n, w, ldu ? (size_t)ldu : w);
	return 0;
}

static int s_emu_res_forward(void *cat, int ld, void *z, void *zl, float *s, const void *ur,
			     int ldu, const void *mab, int n, int r0, int e, int r, float s0,
			     float sd, float slope)
{
	size_t w = (size_t)r0 + (size_t)e * r;

	D_TRY(s_cpu_res_forward(cat, ld, z, zl, s, ur, ldu, mab, n, r0, e, r, s0, sd, slope));
	s_emu_round(cat, s_emu_dt, (size_t)n, w, ld ? (size_t)ld : w);
	EMU_N(z, (size_t)n * e * r);
	EMU_N(zl, (size_t)n * e * r);
	return 0;
}

static int s_emu_res_backward(void *dcat, int ld, void *dz, const float *s, const void *z,
			      const void *zl, const void *mab, int nores, int n, int r0, int e,
			      int r, float s0, float sd, float slope)
{
	size_t w = (size_t)r0 + (size_t)e * r;

	D_TRY(s_cpu_res_backward(dcat, ld, dz, s, z, zl, mab, nores, n, r0, e, r, s0, sd, slope));
	s_emu_round(dcat, s_emu_dt, (size_t)n, w, ld ? (size_t)ld : w);
	EMU_N(dz, (size_t)n * e * r);
	return 0;
}

static int s_emu_adamw(float *w, void *wdt, const float *g, float *m, float *v, size_t n, float lr,
		       float beta1, float beta2, float eps, float weight_decay, long step)
{
	s_cpu_adamw(w, wdt, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step);
	if (wdt && wdt != w)
		EMU_N(wdt, n);
	return 0;
}

static void s_emu_memory_report(char *buf, size_t n)
{
	snprintf(buf, n, "host memory (the CPU backend, %s storage emulated)", kcuda_dtype_name(s_emu_dt));
}

/* The CPU's table with the entries that store a dt buffer replaced. */
static struct kdevice_ops s_emu_ops;

const struct kdevice_ops *kdevice_emulated(int dt)
{
	struct kdevice_ops *o = &s_emu_ops;

	if (dt != KCUDA_BF16 && dt != KCUDA_F16 && dt != KCUDA_F32) {
		err_set("the emulated table rounds to bf16, f16 or f32, not %s", kcuda_dtype_name(dt));
		return NULL;
	}
	*o = s_cpu_ops;
	o->alloc = s_emu_alloc, o->zero = s_emu_zero, o->upload = s_emu_copy, o->convert = s_emu_copy;
	o->download = s_emu_download;
	o->gemm = s_emu_gemm, o->gemm_ld = s_emu_gemm_ld, o->gemm_batched = s_emu_gemm_batched;
	o->embedding_forward = s_emu_embedding_forward;
	o->matmul_forward = s_emu_matmul_forward, o->matmul_backward = s_emu_matmul_backward;
	o->matmul_forward_res = s_emu_matmul_forward_res;
	o->rmsnorm_forward = s_emu_rmsnorm_forward, o->rmsnorm_backward = s_emu_rmsnorm_backward;
	o->rmsnorm_forward_ld = s_emu_rmsnorm_forward_ld;
	o->rmsnorm_backward_ld = s_emu_rmsnorm_backward_ld;
	o->rope_forward = s_emu_rope_forward, o->rope_backward = s_emu_rope_backward;
	o->attention_forward = s_emu_attention_forward;
	o->attention_backward = s_emu_attention_backward;
	o->attention_backward_set = s_emu_attention_backward_set;
	o->swiglu_forward = s_emu_swiglu_forward, o->swiglu_backward = s_emu_swiglu_backward;
	o->swiglu_backward_set = s_emu_swiglu_backward_set;
	o->residual_forward = s_emu_residual_forward, o->residual_backward = s_emu_residual_backward;
	o->leakyrelu_forward = s_emu_leakyrelu_forward;
	o->leakyrelu_backward = s_emu_leakyrelu_backward;
	o->softmax_forward = s_emu_softmax_forward, o->softmax_backward = s_emu_softmax_backward;
	o->crossentropy_backward = s_emu_crossentropy_backward;
	o->crossentropy_fused = s_emu_crossentropy_fused;
	o->router_weight_forward = s_emu_router_weight_forward;
	o->router_weight_backward = s_emu_router_weight_backward;
	o->res_forward = s_emu_res_forward, o->res_backward = s_emu_res_backward;
	o->adamw = s_emu_adamw;
	o->memory_report = s_emu_memory_report;
	s_emu_dt = o->dt = dt;
	return o;
}

/* ---- the CUDA table: kcuda.h with the storage type of the process ----- */

static int s_dt = KCUDA_BF16; /* the CUDA table's dt, set by kdevice_ops() */

static void *s_cuda_alloc(size_t n, int dt)
{
	void *p = kcuda_malloc(n * kcuda_dtype_size(dt));

	if (p && kcuda_memset0(p, n * kcuda_dtype_size(dt)) < 0) {
		kcuda_free(p);
		return NULL;
	}
	return p;
}

static int s_cuda_zero(void *p, size_t n, int dt)
{
	return kcuda_memset0(p, n * kcuda_dtype_size(dt));
}

static size_t s_cuda_att_saved(int b, int t, int nh)
{
	return (size_t)b * nh * t;
}

static int s_cuda_gemm(void *c, int cdt, const void *a, const void *b, int m, int n, int k, int ta,
		       int tb, float alpha, float beta)
{
	return kcuda_gemm_mixed(s_dt, cdt, c, a, b, m, n, k, ta, tb, alpha, beta);
}

static int s_cuda_embedding_forward(void *out, const int *tok, const void *wte, int n, int c)
{
	return kcuda_embedding_forward(s_dt, out, tok, wte, n, c);
}

static int s_cuda_embedding_backward(float *dwte, const void *dout, const int *tok, int n, int c)
{
	return kcuda_embedding_backward(s_dt, dwte, dout, tok, n, c);
}

static int s_cuda_matmul_forward(void *out, const void *inp, const void *w, const void *b, int n,
				 int c, int oc)
{
	return kcuda_matmul_forward(s_dt, out, inp, w, b, n, c, oc);
}

static int s_cuda_matmul_forward_res(void *out, const void *res, const void *inp, const void *w,
				     int n, int c, int oc)
{
	return kcuda_matmul_forward_res(s_dt, out, res, inp, w, n, c, oc);
}

static int s_cuda_matmul_backward(void *dinp, float *dw, float *db, const void *dout,
				  const void *inp, const void *w, int n, int c, int oc)
{
	return kcuda_matmul_backward(s_dt, dinp, dw, db, dout, inp, w, n, c, oc);
}

static int s_cuda_rmsnorm_forward(void *out, float *rstd, const void *inp, const void *w, int n,
				  int c, float eps)
{
	return kcuda_rmsnorm_forward(s_dt, out, rstd, inp, w, n, c, eps);
}

static int s_cuda_rmsnorm_backward(void *dinp, float *dw, const void *dout, const void *inp,
				   const void *w, const float *rstd, int n, int c)
{
	return kcuda_rmsnorm_backward(s_dt, dinp, dw, dout, inp, w, rstd, n, c);
}

static int s_cuda_rmsnorm_forward_ld(void *out, int ldo, float *rstd, const void *inp,
				     const void *w, int n, int c, float eps)
{
	return kcuda_rmsnorm_forward_ld(s_dt, out, ldo, rstd, inp, w, n, c, eps);
}

static int s_cuda_rmsnorm_backward_ld(void *dinp, int ldi, float *dw, const void *dout, int ldd,
				      const void *inp, const void *w, const float *rstd, int n,
				      int c)
{
	return kcuda_rmsnorm_backward_ld(s_dt, dinp, ldi, dw, dout, ldd, inp, w, rstd, n, c);
}

static int s_cuda_rope_forward(void *x, const float *cosv, const float *sinv, int b, int t, int nh,
			       int hs)
{
	return kcuda_rope_forward(s_dt, x, cosv, sinv, b, t, nh, hs);
}

static int s_cuda_rope_backward(void *dx, const float *cosv, const float *sinv, int b, int t,
				int nh, int hs)
{
	return kcuda_rope_backward(s_dt, dx, cosv, sinv, b, t, nh, hs);
}

static int s_cuda_attention_forward(void *out, float *saved, const void *q, const void *k,
				    const void *v, int b, int t, int nh, int nkv, int hs)
{
	return kcuda_attention_forward(s_dt, out, saved, q, k, v, b, t, nh, nkv, hs);
}

static int s_cuda_attention_backward(void *dq, void *dk, void *dv, const void *dout,
				     const void *out, const float *saved, const void *q,
				     const void *k, const void *v, int b, int t, int nh, int nkv,
				     int hs)
{
	return kcuda_attention_backward(s_dt, dq, dk, dv, dout, out, saved, q, k, v, b, t, nh, nkv,
					hs);
}

static int s_cuda_attention_backward_set(void *dq, void *dk, void *dv, const void *dout,
					 const void *out, const float *saved, const void *q,
					 const void *k, const void *v, int b, int t, int nh, int nkv,
					 int hs)
{
	return kcuda_attention_backward_set(s_dt, dq, dk, dv, dout, out, saved, q, k, v, b, t, nh,
					    nkv, hs);
}

static int s_cuda_swiglu_forward(void *out, const void *gate, const void *up, size_t n)
{
	return kcuda_swiglu_forward(s_dt, out, gate, up, n);
}

static int s_cuda_swiglu_backward(void *dgate, void *dup, const void *dout, const void *gate,
				  const void *up, size_t n)
{
	return kcuda_swiglu_backward(s_dt, dgate, dup, dout, gate, up, n);
}

static int s_cuda_swiglu_backward_set(void *dgate, void *dup, const void *dout, const void *gate,
				      const void *up, size_t n)
{
	return kcuda_swiglu_backward_set(s_dt, dgate, dup, dout, gate, up, n);
}

static int s_cuda_residual_forward(void *out, const void *a, const void *b, size_t n)
{
	return kcuda_residual_forward(s_dt, out, a, b, n);
}

static int s_cuda_residual_backward(void *da, void *db, const void *dout, size_t n)
{
	return kcuda_residual_backward(s_dt, da, db, dout, n);
}

static int s_cuda_leakyrelu_forward(void *out, const void *inp, float slope, size_t n)
{
	return kcuda_leakyrelu_forward(s_dt, out, inp, slope, n);
}

static int s_cuda_leakyrelu_backward(void *dinp, const void *dout, const void *inp, float slope,
				     size_t n)
{
	return kcuda_leakyrelu_backward(s_dt, dinp, dout, inp, slope, n);
}

static int s_cuda_softmax_forward(void *out, const void *inp, int n, int k)
{
	return kcuda_softmax_forward(s_dt, out, inp, n, k);
}

static int s_cuda_softmax_backward(void *dinp, const void *dout, const void *out, int n, int k)
{
	return kcuda_softmax_backward(s_dt, dinp, dout, out, n, k);
}

static int s_cuda_crossentropy_forward(float *losses, float *lse, const void *logits,
				       const int *targets, int n, int v)
{
	return kcuda_crossentropy_forward(s_dt, losses, lse, logits, targets, n, v);
}

static int s_cuda_crossentropy_backward(void *dlogits, const float *dlosses, const void *logits,
					const float *lse, const int *targets, int n, int v)
{
	return kcuda_crossentropy_backward(s_dt, dlogits, dlosses, logits, lse, targets, n, v);
}

static int s_cuda_crossentropy_fused(float *losses, void *logits, const float *dlosses,
				     const int *targets, int n, int v)
{
	return kcuda_crossentropy_fused(s_dt, losses, logits, dlosses, targets, n, v);
}

static int s_cuda_router_weight_forward(void *uw, int ld, float *s, const void *rlogits, int ldr,
					const void *u, int ldu, int n, int e, int r, float scale,
					int r0, float s0)
{
	return kcuda_router_weight_forward(s_dt, uw, ld, s, rlogits, ldr, u, ldu, n, e, r, scale,
					   r0, s0);
}

static int s_cuda_router_weight_backward(void *drlogits, int ldr, void *du, const void *duw,
					 int ld, const float *s, const void *u, int ldu, int n,
					 int e, int r, float scale, int r0, float s0)
{
	return kcuda_router_weight_backward(s_dt, drlogits, ldr, du, duw, ld, s, u, ldu, n, e, r,
					    scale, r0, s0);
}

static int s_cuda_res_forward(void *cat, int ld, void *z, void *zl, float *s, const void *ur,
			      int ldu, const void *mab, int n, int r0, int e, int r, float s0,
			      float sd, float slope)
{
	return kcuda_res_forward(s_dt, cat, ld, z, zl, s, ur, ldu, mab, n, r0, e, r, s0, sd,
				 slope);
}

static int s_cuda_res_backward(void *dcat, int ld, void *dz, const float *s, const void *z,
			       const void *zl, const void *mab, int nores, int n, int r0, int e,
			       int r, float s0, float sd, float slope)
{
	return kcuda_res_backward(s_dt, dcat, ld, dz, s, z, zl, mab, nores, n, r0, e, r, s0, sd,
				  slope);
}

static int s_cuda_gemm_f32(float *c, const float *a, const float *b, int m, int n, int k, int ta,
			   int tb, float alpha, float beta)
{
	return kcuda_gemm(KCUDA_F32, c, a, b, m, n, k, ta, tb, alpha, beta);
}

static int s_cuda_gemm_ld(void *c, int cdt, int ldc, const void *a, int lda, const void *b,
			  int ldb, int m, int n, int k, int ta, int tb, float alpha, float beta)
{
	return kcuda_gemm_ld(s_dt, cdt, c, ldc, a, lda, b, ldb, m, n, k, ta, tb, alpha, beta);
}

static int s_cuda_gemm_wgrad(const struct kcuda_wgrad *p, int count, int k)
{
	return kcuda_gemm_wgrad(s_dt, p, count, k);
}

static int s_cuda_gemm_batched(int dt, void *const *c, const void *const *a, const void *const *b,
			       int count, int m, int n, int k, int ta, int tb, float alpha,
			       float beta)
{
	return kcuda_gemm_batched(dt == KCUDA_F32 ? KCUDA_F32 : s_dt, c, a, b, count, m, n, k, ta,
				  tb, alpha, beta);
}

static int s_cuda_adamw(float *w, void *wdt, const float *g, float *m, float *v, size_t n,
			float lr, float beta1, float beta2, float eps, float weight_decay, long step)
{
	return kcuda_adamw(s_dt, w, wdt, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step);
}

static struct kdevice_ops s_cuda_ops = {
	.dev = KDEV_CUDA, .dt = KCUDA_BF16,
	.alloc = s_cuda_alloc, .free = kcuda_free, .zero = s_cuda_zero, .upload = kcuda_copy_h2d,
	.download = kcuda_copy_d2h, .sync = kcuda_sync, .attention_saved = s_cuda_att_saved,
	.gemm = s_cuda_gemm, .gemm_ld = s_cuda_gemm_ld, .gemm_f32 = s_cuda_gemm_f32,
	.gemm_batched = s_cuda_gemm_batched, .gemm_wgrad = s_cuda_gemm_wgrad,
	.embedding_forward = s_cuda_embedding_forward,
	.embedding_backward = s_cuda_embedding_backward,
	.matmul_forward = s_cuda_matmul_forward, .matmul_forward_res = s_cuda_matmul_forward_res,
	.matmul_backward = s_cuda_matmul_backward,
	.rmsnorm_forward = s_cuda_rmsnorm_forward, .rmsnorm_backward = s_cuda_rmsnorm_backward,
	.rmsnorm_forward_ld = s_cuda_rmsnorm_forward_ld,
	.rmsnorm_backward_ld = s_cuda_rmsnorm_backward_ld,
	.rope_table = kcuda_rope_table, .rope_forward = s_cuda_rope_forward,
	.rope_backward = s_cuda_rope_backward,
	.attention_forward = s_cuda_attention_forward,
	.attention_backward = s_cuda_attention_backward,
	.attention_backward_set = s_cuda_attention_backward_set,
	.swiglu_forward = s_cuda_swiglu_forward, .swiglu_backward = s_cuda_swiglu_backward,
	.swiglu_backward_set = s_cuda_swiglu_backward_set,
	.residual_forward = s_cuda_residual_forward, .residual_backward = s_cuda_residual_backward,
	.leakyrelu_forward = s_cuda_leakyrelu_forward,
	.leakyrelu_backward = s_cuda_leakyrelu_backward,
	.softmax_forward = s_cuda_softmax_forward, .softmax_backward = s_cuda_softmax_backward,
	.crossentropy_forward = s_cuda_crossentropy_forward,
	.crossentropy_backward = s_cuda_crossentropy_backward,
	.crossentropy_fused = s_cuda_crossentropy_fused,
	.router_weight_forward = s_cuda_router_weight_forward,
	.router_weight_backward = s_cuda_router_weight_backward,
	.res_forward = s_cuda_res_forward, .res_backward = s_cuda_res_backward,
	.convert = kcuda_copy_d2d, .sumsq = kcuda_sumsq, .scale = kcuda_scale, .adamw = s_cuda_adamw,
	.memory_report = kcuda_memory_report,
	.graph_begin = kcuda_graph_begin, .graph_end = kcuda_graph_end,
	.graph_launch = kcuda_graph_launch, .graph_free = kcuda_graph_free,
	.timer_mark = kcuda_timer_mark, .timer_read = kcuda_timer_read,
};

const struct kdevice_ops *kdevice_ops(enum kdevice d, int dt)
{
	if (d == KDEV_CPU)
		return &s_cpu_ops;
	s_dt = s_cuda_ops.dt = dt;
	return &s_cuda_ops;
}
