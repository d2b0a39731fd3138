/* device.h: choosing the compute backend at run time (--device cpu|cuda|auto),
 * and the chosen backend's ops behind one table.
 *
 * The CPU backend always exists. The CUDA backend exists when the build
 * found the toolkit (HAVE_CUDA) and, at run time, a GPU answers. The ops
 * live in kernels/cpu (ops.h) and kernels/cuda (kcuda.h); struct
 * kdevice_ops puts either set behind the same signatures so that a model is
 * written once: it allocates its buffers and calls its ops through the
 * table it was given. Not an autograd or a graph: the caller orders the ops
 * and keeps what backward needs, exactly as with ops.h.
 */
#ifndef MODULA_KERNELS_DEVICE_H
#define MODULA_KERNELS_DEVICE_H

#include <stddef.h>

enum kdevice { KDEV_CPU = 0, KDEV_CUDA = 1 };

struct kcuda_wgrad; /* kernels/cuda/kcuda.h */

/* Parse "cpu", "cuda" or "auto" into a request; "auto" gives -1 in *out
 * (resolved by kdevice_resolve). 0, or -1 via err_set(). */
int kdevice_parse(const char *name, int *out);

/* Resolve a request (KDEV_CPU, KDEV_CUDA or -1 for auto) to a backend.
 * "auto" picks CUDA when a GPU answers, else the CPU. An explicit "cuda"
 * without a usable GPU is an error: -1 via err_set() saying why. */
int kdevice_resolve(int request, enum kdevice *out);

/* Describe the devices this process sees, one per line, into buf. */
void kdevice_describe(char *buf, size_t n);

const char *kdevice_name(enum kdevice d);

/* One backend's memory and ops. Buffers are the backend's (host memory on
 * the CPU, device memory on CUDA). Types: activation-like tensors and
 * weights in `dt` (always KCUDA_F32 on the CPU; KCUDA_BF16 for training on
 * CUDA), per-row statistics and weight gradients in fp32 (float *), token
 * ids and targets int32 in the backend's memory. Every op has the
 * semantics and argument order of its ops.h namesake (forward overwrites,
 * backward accumulates, a NULL gradient is skipped) and returns 0, or -1
 * via err_set(). One difference: attention's `saved` holds
 * attention_saved(b, t, nh) floats (the CPU keeps the probabilities, CUDA
 * the log-sum-exp of each row), and its backward also takes the forward's
 * output. */
struct kdevice_ops {
	enum kdevice dev;
	int dt;
	/* n elements of type dt, zeroed; NULL via err_set(). free takes NULL. */
	void *(*alloc)(size_t n, int dt);
	void (*free)(void *p);
	int (*zero)(void *p, size_t n, int dt);
	/* Copies between host memory and the backend's, converting types
	 * (kcuda_copy_h2d / kcuda_copy_d2h; the CPU converts nothing). */
	int (*upload)(void *dst, int ddt, const void *src, int sdt, size_t n);
	int (*download)(void *dst, int ddt, const void *src, int sdt, size_t n);
	int (*sync)(void);
	size_t (*attention_saved)(int b, int t, int nh);

	/* c in type cdt: dt, or KCUDA_F32 for a weight gradient */
	int (*gemm)(void *c, int cdt, const void *a, const void *b, int m, int n, int k, int ta,
		    int tb, float alpha, float beta);
	/* every matrix fp32, whatever dt is (small products kept exact: MoDULA-
	 * Res's dz^T u0 against the fp32 masters) */
	int (*gemm_f32)(float *c, const float *a, const float *b, int m, int n, int k, int ta,
			int tb, float alpha, float beta);
	/* the same with row strides: each matrix may be columns of a wider one */
	int (*gemm_ld)(void *c, int cdt, int ldc, const void *a, int lda, const void *b, int ldb,
		       int m, int n, int k, int ta, int tb, float alpha, float beta);
	/* count products of one shape, C_i = alpha op(A_i) op(B_i) + beta C_i,
	 * every matrix contiguous and of type dt (the table's, or KCUDA_F32);
	 * c, a, b are host arrays of count pointers. One launch on CUDA: many
	 * small products (one per layer) cost one launch's time, not count. */
	int (*gemm_batched)(int dt, void *const *c, const void *const *a, const void *const *b,
			    int count, int m, int n, int k, int ta, int tb, float alpha, float beta);
	/* weight gradients over the same k rows (kcuda_gemm_wgrad): for each
	 * of count <= KCUDA_WGRAD_MAX, c (fp32) = alpha a^T b + beta c, a and
	 * b of type dt with row strides; on CUDA one launch for those the
	 * kernel takes when kcuda_wgrad is on, else a product each */
	int (*gemm_wgrad)(const struct kcuda_wgrad *p, int count, int k);
	int (*embedding_forward)(void *out, const int *tok, const void *wte, int n, int c);
	int (*embedding_backward)(float *dwte, const void *dout, const int *tok, int n, int c);
	int (*matmul_forward)(void *out, const void *inp, const void *w, const void *b, int n, int c,
			      int oc);
	int (*matmul_backward)(void *dinp, float *dw, float *db, const void *dout, const void *inp,
			       const void *w, int n, int c, int oc);
	/* out = res + inp W^T, no bias (the residual added in the product;
	 * out and res distinct): on CUDA one product, rounded once */
	int (*matmul_forward_res)(void *out, const void *res, const void *inp, const void *w, int n,
				  int c, int oc);
	int (*rmsnorm_forward)(void *out, float *rstd, const void *inp, const void *w, int n, int c,
			       float eps);
	int (*rmsnorm_backward)(void *dinp, float *dw, const void *dout, const void *inp,
				const void *w, const float *rstd, int n, int c);
	/* the same with out's (dinp's, dout's) rows ldo (ldi, ldd) >= c
	 * elements apart */
	int (*rmsnorm_forward_ld)(void *out, int ldo, float *rstd, const void *inp, const void *w,
				  int n, int c, float eps);
	int (*rmsnorm_backward_ld)(void *dinp, int ldi, float *dw, const void *dout, int ldd,
				   const void *inp, const void *w, const float *rstd, int n, int c);
	int (*rope_table)(float *cosv, float *sinv, int t, int hs, int pos0, float theta);
	int (*rope_forward)(void *x, const float *cosv, const float *sinv, int b, int t, int nh,
			    int hs);
	int (*rope_backward)(void *dx, const float *cosv, const float *sinv, int b, int t, int nh,
			     int hs);
	int (*attention_forward)(void *out, float *saved, const void *q, const void *k,
				 const void *v, int b, int t, int nh, int nkv, int hs);
	int (*attention_backward)(void *dq, void *dk, void *dv, const void *dout, const void *out,
				  const float *saved, const void *q, const void *k, const void *v,
				  int b, int t, int nh, int nkv, int hs);
	/* the same writing dq, dk, dv (nothing read: no zeroing first) */
	int (*attention_backward_set)(void *dq, void *dk, void *dv, const void *dout,
				      const void *out, const float *saved, const void *q,
				      const void *k, const void *v, int b, int t, int nh, int nkv,
				      int hs);
	int (*swiglu_forward)(void *out, const void *gate, const void *up, size_t n);
	int (*swiglu_backward)(void *dgate, void *dup, const void *dout, const void *gate,
			       const void *up, size_t n);
	/* the same with dgate and dup overwritten, not added to: the
	 * caller zeroes nothing first */
	int (*swiglu_backward_set)(void *dgate, void *dup, const void *dout, const void *gate,
				   const void *up, size_t n);
	int (*residual_forward)(void *out, const void *a, const void *b, size_t n);
	int (*residual_backward)(void *da, void *db, const void *dout, size_t n);
	int (*leakyrelu_forward)(void *out, const void *inp, float slope, size_t n);
	int (*leakyrelu_backward)(void *dinp, const void *dout, const void *inp, float slope,
				  size_t n);
	int (*softmax_forward)(void *out, const void *inp, int n, int k);
	int (*softmax_backward)(void *dinp, const void *dout, const void *out, int n, int k);
	int (*crossentropy_forward)(float *losses, float *lse, const void *logits,
				    const int *targets, int n, int v);
	int (*crossentropy_backward)(void *dlogits, const float *dlosses, const void *logits,
				     const float *lse, const int *targets, int n, int v);
	/* kcuda_crossentropy_fused: losses[N], then logits OVERWRITTEN by
	 * dlosses[n] * (softmax - onehot) (zero rows where the target is
	 * negative or dlosses is 0). */
	int (*crossentropy_fused)(float *losses, void *logits, const float *dlosses,
				  const int *targets, int n, int v);
	/* The router softmax with expert weighting (kcuda_router_weight_*):
	 * s = softmax(rlogits[N,E]) (fp32), uw[N,w] = scale_i s_i u over a
	 * head expert of rank r0 (scale s0; none when r0 = 0) and e experts of
	 * rank r, E = e + (r0 > 0), w = r0 + e*r; uw's and duw's rows are ld
	 * apart (0: w), rlogits' and drlogits' ldr (0: E), u's and du's ldu
	 * (0: w). */
	int (*router_weight_forward)(void *uw, int ld, float *s, const void *rlogits, int ldr,
				     const void *u, int ldu, int n, int e, int r, float scale, int r0,
				     float s0);
	int (*router_weight_backward)(void *drlogits, int ldr, void *du, const void *duw, int ld,
				      const float *s, const void *u, int ldu, int n, int e, int r,
				      float scale, int r0, float s0);
	/* MoDULA-Res's per-row work, fused (kcuda_res_forward/backward); cat's
	 * and dcat's rows ld apart (0: r0 + e*r), ur's ldu (0: r0 + e). */
	int (*res_forward)(void *cat, int ld, void *z, void *zl, float *s, const void *ur, int ldu,
			   const void *mab, int n, int r0, int e, int r, float s0, float sd,
			   float slope);
	/* (mab not NULL: dcat[:, :r0] = s0 (dcat[:, :r0] (nores: 0) + dz mab),
	 * the product after it fused; ops.h's op_res_backward) */
	int (*res_backward)(void *dcat, int ld, void *dz, const float *s, const void *z,
			    const void *zl, const void *mab, int nores, int n, int r0, int e, int r,
			    float s0, float sd, float slope);
	/* Copy n elements within the backend's memory, converting types. */
	int (*convert)(void *dst, int ddt, const void *src, int sdt, size_t n);
	/* The optimizer over fp32 tensors (worker/optim.c's formulas):
	 * *out = sum x^2 (double); x *= s; one AdamW update of master w with
	 * moments m, v, also writing the dt copy wdt when not NULL. */
	int (*sumsq)(const float *x, size_t n, double *out);
	int (*scale)(float *x, float s, size_t n);
	int (*adamw)(float *w, void *wdt, const float *g, float *m, float *v, size_t n, float lr,
		     float beta1, float beta2, float eps, float weight_decay, long step);
	/* One line on the memory the backend holds (CUDA: now, peak, free). */
	void (*memory_report)(char *buf, size_t n);
	/* CUDA graphs (kcuda_graph_*): the ops called between graph_begin and
	 * graph_end are recorded, not run; graph_launch replays them (1 when
	 * the graph is stale and must be recorded again). NULL in
	 * the CPU tables, whose ops run as they are called. */
	int (*graph_begin)(void);
	int (*graph_end)(void **exec);
	int (*graph_launch)(void *exec);
	void (*graph_free)(void *exec);
	/* Timestamps on the stream without waiting (kcuda_timer_*): mark
	 * returns the mark's index, read waits and gives the milliseconds
	 * between consecutive marks. NULL in the CPU tables. */
	int (*timer_mark)(void);
	int (*timer_read)(float *ms, int n);
};

/* The op table of backend d. For KDEV_CUDA, dt is the storage type of
 * activations and weights (KCUDA_BF16, KCUDA_F16 or KCUDA_F32; one per
 * process: the last asked for); the CPU ignores dt and computes in fp32.
 * The CUDA table exists in every build: without CUDA its calls fail with
 * kcuda's "no CUDA backend" message (resolve the device first). */
const struct kdevice_ops *kdevice_ops(enum kdevice d, int dt);

/* The CPU's table with the GPU's storage rounding: ops in fp32 on host
 * memory (4-byte buffers), every store to a buffer of type dt rounded to dt
 * (KCUDA_BF16 or KCUDA_F16; KCUDA_F32 is the plain CPU table's numerics).
 * For measuring what a storage type costs without a GPU (`--device table
 * --dtype bf16`). NULL via err_set() for another dt. */
const struct kdevice_ops *kdevice_emulated(int dt);

/* Bytes per element of a dt buffer in K's memory (the CPU's tables: 4). */
static inline size_t kdevice_elem_size(const struct kdevice_ops *K, size_t dt_size)
{
	return K->dev == KDEV_CPU ? 4 : dt_size;
}

#endif
