/* none.c: the CUDA entry points of a build configured --without-cuda.
 * Each says plainly that this build has no CUDA backend; none touches its
 * arguments. The signatures are kcuda.h's, so the compiler checks them. */
#include "config.h"
#include "kernels/cuda/kcuda.h"
#include "err.h"

#include <stdio.h>

#define NOCUDA_MSG "this build of modula has no CUDA backend (configured --without-cuda)"
#define NOCUDA(name, ...) \
	int name(__VA_ARGS__) { return err_set(NOCUDA_MSG); }

int kcuda_probe(char *info, size_t n)
{
	snprintf(info, n, NOCUDA_MSG);
	return -1;
}

size_t kcuda_dtype_size(int dt)
{
	return dt == KCUDA_BF16 || dt == KCUDA_F16 ? 2 : dt == KCUDA_F32 || dt == KCUDA_I32 ? 4 : 0;
}

const char *kcuda_dtype_name(int dt)
{
	static const char *names[] = { "f32", "bf16", "f16", "i32" };
	return dt >= 0 && dt <= KCUDA_I32 ? names[dt] : "unknown";
}

void *kcuda_malloc(size_t bytes)
{
	err_set(NOCUDA_MSG);
	return NULL;
}

void kcuda_free(void *p)
{
}

void kcuda_memory_report(char *buf, size_t n)
{
	snprintf(buf, n, "GPU memory: %s", NOCUDA_MSG);
}

NOCUDA(kcuda_memset0, void *p, size_t bytes)
NOCUDA(kcuda_graph_begin, void)
NOCUDA(kcuda_timer_mark, void)
NOCUDA(kcuda_timer_read, float *ms, int n)
NOCUDA(kcuda_graph_end, void **exec)
NOCUDA(kcuda_graph_launch, void *exec)

void kcuda_graph_free(void *exec)
{
}

void kcuda_set_vector(int on)
{
}

int kcuda_vector(void)
{
	return 0;
}

void kcuda_set_flash(int on)
{
}

void kcuda_set_lt(int on)
{
}

int kcuda_lt(void)
{
	return 0;
}

void kcuda_lt_report(char *buf, size_t n)
{
	snprintf(buf, n, "%s", NOCUDA_MSG);
}

int kcuda_flash(void)
{
	return 0;
}

void kcuda_set_wgrad(int on)
{
}

int kcuda_wgrad(void)
{
	return 0;
}

int kcuda_capturing(void)
{
	return 0;
}

NOCUDA(kcuda_copy_h2d, void *dst, int ddt, const void *src, int sdt, size_t n)
NOCUDA(kcuda_copy_d2h, void *dst, int ddt, const void *src, int sdt, size_t n)
NOCUDA(kcuda_copy_d2d, void *dst, int ddt, const void *src, int sdt, size_t n)
NOCUDA(kcuda_sync, void)
NOCUDA(kcuda_gemm, int dt, void *c, const void *a, const void *b, int m, int n, int k, int ta,
       int tb, float alpha, float beta)
NOCUDA(kcuda_gemm_mixed, int dt, int cdt, void *c, const void *a, const void *b, int m, int n,
       int k, int ta, int tb, float alpha, float beta)
NOCUDA(kcuda_gemm_ld, int dt, int cdt, void *c, int ldc, const void *a, int lda, const void *b,
       int ldb, int m, int n, int k, int ta, int tb, float alpha, float beta)
NOCUDA(kcuda_gemm_batched, int dt, void *const *c, const void *const *a, const void *const *b,
       int count, int m, int n, int k, int ta, int tb, float alpha, float beta)
NOCUDA(kcuda_gemm_wgrad, int dt, const struct kcuda_wgrad *p, int count, int k)
NOCUDA(kcuda_embedding_forward, int dt, void *out, const int *tok, const void *wte, int n, int c)
NOCUDA(kcuda_embedding_backward, int dt, float *dwte, const void *dout, const int *tok, int n,
       int c)
NOCUDA(kcuda_matmul_forward_res, int dt, void *out, const void *res, const void *inp,
       const void *w, int n, int c, int oc)
NOCUDA(kcuda_matmul_forward, int dt, void *out, const void *inp, const void *w, const void *b,
       int n, int c, int oc)
NOCUDA(kcuda_matmul_backward, int dt, void *dinp, float *dw, float *db, const void *dout,
       const void *inp, const void *w, int n, int c, int oc)
NOCUDA(kcuda_rmsnorm_forward, int dt, void *out, float *rstd, const void *inp, const void *w,
       int n, int c, float eps)
NOCUDA(kcuda_rmsnorm_backward, int dt, void *dinp, float *dw, const void *dout, const void *inp,
       const void *w, const float *rstd, int n, int c)
NOCUDA(kcuda_rmsnorm_forward_ld, int dt, void *out, int ldo, float *rstd, const void *inp,
       const void *w, int n, int c, float eps)
NOCUDA(kcuda_rmsnorm_backward_ld, int dt, void *dinp, int ldi, float *dw, const void *dout,
       int ldd, const void *inp, const void *w, const float *rstd, int n, int c)
NOCUDA(kcuda_rope_table, float *cosv, float *sinv, int t, int hs, int pos0, float theta)
NOCUDA(kcuda_rope_forward, int dt, void *x, const float *cosv, const float *sinv, int b, int t,
       int nh, int hs)
NOCUDA(kcuda_rope_backward, int dt, void *dx, const float *cosv, const float *sinv, int b, int t,
       int nh, int hs)
NOCUDA(kcuda_attention_forward, int dt, void *out, float *lse, const void *q, const void *k,
       const void *v, int b, int t, int nh, int nkv, int hs)
NOCUDA(kcuda_attention_backward, int dt, void *dq, void *dk, void *dv, const void *dout,
       const void *out, const float *lse, const void *q, const void *k, const void *v, int b,
       int t, int nh, int nkv, int hs)
NOCUDA(kcuda_attention_backward_set, int dt, void *dq, void *dk, void *dv, const void *dout,
       const void *out, const float *saved, const void *q, const void *k, const void *v, int b,
       int t, int nh, int nkv, int hs)
NOCUDA(kcuda_swiglu_forward, int dt, void *out, const void *gate, const void *up, size_t n)
NOCUDA(kcuda_swiglu_backward, int dt, void *dgate, void *dup, const void *dout, const void *gate,
       const void *up, size_t n)
NOCUDA(kcuda_swiglu_backward_set, int dt, void *dgate, void *dup, const void *dout,
       const void *gate, const void *up, size_t n)
NOCUDA(kcuda_residual_forward, int dt, void *out, const void *a, const void *b, size_t n)
NOCUDA(kcuda_residual_backward, int dt, void *da, void *db, const void *dout, size_t n)
NOCUDA(kcuda_leakyrelu_forward, int dt, void *out, const void *inp, float slope, size_t n)
NOCUDA(kcuda_leakyrelu_backward, int dt, void *dinp, const void *dout, const void *inp,
       float slope, size_t n)
NOCUDA(kcuda_softmax_forward, int dt, void *out, const void *inp, int n, int k)
NOCUDA(kcuda_softmax_backward, int dt, void *dinp, const void *dout, const void *out, int n, int k)
NOCUDA(kcuda_crossentropy_forward, int dt, float *losses, float *lse, const void *logits,
       const int *targets, int n, int v)
NOCUDA(kcuda_crossentropy_backward, int dt, void *dlogits, const float *dlosses,
       const void *logits, const float *lse, const int *targets, int n, int v)
NOCUDA(kcuda_crossentropy_fused, int dt, float *losses, void *logits, const float *dlosses,
       const int *targets, int n, int v)
NOCUDA(kcuda_router_weight_forward, int dt, void *uw, int ld, float *s, const void *rlogits,
       int ldr, const void *u, int ldu, int n, int e, int r, float scale, int r0, float s0)
NOCUDA(kcuda_router_weight_backward, int dt, void *drlogits, int ldr, void *du, const void *duw,
       int ld, const float *s, const void *u, int ldu, int n, int e, int r, float scale, int r0,
       float s0)
NOCUDA(kcuda_res_forward, int dt, void *cat, int ld, void *z, void *zl, float *s, const void *ur,
       int ldu, const void *mab, int n, int r0, int e, int r, float s0, float sd, float slope)
NOCUDA(kcuda_res_backward, int dt, void *dcat, int ld, void *dz, const float *s, const void *z,
       const void *zl, const void *mab, int nores, int n, int r0, int e, int r, float s0, float sd, float slope)
NOCUDA(kcuda_lora_group_forward, int dt, void *y, void *u, void *uw, float *s, const void *x,
       const void *a, const void *b, const void *rlogits, int n, int c, int oc, int e, int r,
       float scale)
NOCUDA(kcuda_lora_group_backward, int dt, void *dx, float *da, float *db, void *drlogits,
       const void *dy, const void *x, const void *u, const void *uw, const float *s,
       const void *a, const void *b, int n, int c, int oc, int e, int r, float scale)
NOCUDA(kcuda_lora_segments_forward, int dt, void *y, void *u, const void *x, const void *const *a,
       const void *const *b, const int *seg, int nseg, int c, int oc, int r, float scale)
NOCUDA(kcuda_lora_segments_backward, int dt, void *dx, float *const *da, float *const *db,
       const void *dy, const void *x, const void *u, const void *const *a, const void *const *b,
       const int *seg, int nseg, int c, int oc, int r, float scale)
NOCUDA(kcuda_sumsq, const float *x, size_t n, double *out)
NOCUDA(kcuda_scale, float *x, float s, size_t n)
NOCUDA(kcuda_adamw, int dt, float *w, void *wdt, const float *g, float *m, float *v, size_t n,
       float lr, float beta1, float beta2, float eps, float weight_decay, long step)
