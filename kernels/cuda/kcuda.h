/* kcuda.h: the C face of the CUDA backend (the .cu files in kernels/cuda).
 *
 * Every function here is callable from C whether or not the build has CUDA:
 * without HAVE_CUDA the stubs in kernels/cuda/none.c report that the build
 * has no CUDA backend. Every CUDA call and kernel launch inside is checked;
 * failures come back as negative returns (or NULL) with err_set() messages,
 * never as exits.
 *
 * The ops mirror kernels/cpu/ops.h one for one: same names after the prefix,
 * same semantics (forward overwrites, backward ACCUMULATES into every
 * gradient it is given, a NULL gradient is skipped), same argument order,
 * with two additions: the first argument `dt` is the storage type of the
 * activation-like tensors, and every op returns 0 or -1. All pointers are
 * device pointers unless a comment says "host".
 *
 * Storage (DESIGN.md: bf16 storage, fp32 accumulation):
 *   - tensors in `dt` (enum kcuda_dtype): inputs, outputs, weights, and
 *     activation gradients (dinp, dout, dq, dlogits...);
 *   - always fp32 (float *): per-row statistics (rstd, lse, losses,
 *     dlosses, router probabilities) and WEIGHT gradients (dw, db, dwte,
 *     LoRA and router gradients), which feed an fp32 optimizer;
 *   - token ids and targets: int32.
 * Kernels load to fp32, compute and accumulate in fp32 and round once on
 * store; matrix products run on cuBLAS with fp32 accumulation (tensor cores
 * for bf16/fp16; plain fp32, no TF32, for KCUDA_F32).
 *
 * Differences from the CPU ops, on purpose:
 *   - attention saves lse[B,NH,T] (log-sum-exp of each score row) instead
 *     of the probabilities att[B,NH,T,T]; backward recomputes them (what
 *     is kept between forward and backward is O(T) per row; the scores
 *     exist only inside each call, see attention.cu);
 *   - kcuda_crossentropy_fused does forward and backward in one pass and
 *     writes dlogits over the logits, so the vocabulary-sized buffer exists
 *     once;
 *   - embedding_backward adds with atomics: not bit-reproducible run to run
 *     (the rest is, for a given GPU and cuBLAS version).
 *
 * Not thread-safe: one host thread drives the backend. Not a model: the
 * engine (worker/) calls these in order and owns the buffers.
 */
#ifndef MODULA_KCUDA_H
#define MODULA_KCUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kcuda_dtype { KCUDA_F32 = 0, KCUDA_BF16 = 1, KCUDA_F16 = 2, KCUDA_I32 = 3 };

/* Bytes per element of a storage type (0 for an unknown one). */
size_t kcuda_dtype_size(int dt);
const char *kcuda_dtype_name(int dt);

/* 0 when a CUDA device answers and cuBLAS starts; `info` then describes it
 * ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.6 GiB free of 79.6 GiB").
 * Otherwise -1 and `info` says why: no NVIDIA driver or GPU on this
 * machine, a driver older than the runtime, a GPU older than sm_80 (no bf16
 * tensor cores), or cuBLAS failing to start. */
int kcuda_probe(char *info, size_t n);

/* ---- device memory -------------------------------------------------- */

/* Device memory from the stream-ordered pool; NULL with err_set() when the
 * GPU is missing or out of memory (the message gives the size asked, what
 * is free and what modula holds). kcuda_free accepts NULL. */
void *kcuda_malloc(size_t bytes);
void kcuda_free(void *p);
int kcuda_memset0(void *p, size_t bytes);

/* Copies with conversion: n elements of type sdt at src to type ddt at dst.
 * F32/BF16/F16 convert into each other (round to nearest even); I32 copies
 * only to I32. h2d: src is host memory; d2h: dst is host memory; both
 * return once the host side may be reused. d2d: both on the device. */
int kcuda_copy_h2d(void *dst, int ddt, const void *src, int sdt, size_t n);
int kcuda_copy_d2h(void *dst, int ddt, const void *src, int sdt, size_t n);
int kcuda_copy_d2d(void *dst, int ddt, const void *src, int sdt, size_t n);

/* Wait for all queued work; a fault inside an earlier kernel shows here. */
int kcuda_sync(void);

/* One line on memory: held by modula now and at peak (the pool's counters,
 * plus what CUDA graphs hold for their own allocations), free and total on
 * the device. */
void kcuda_memory_report(char *buf, size_t n);

/* ---- CUDA graphs ------------------------------------------------------ */

/* Record the work queued between graph_begin and graph_end on the
 * backend's stream as a CUDA graph instead of running it; graph_end
 * instantiates it into *exec (NULL on failure, with err_set() saying why:
 * an op that cannot be captured, such as a copy to the host). Between the
 * two nothing runs. graph_launch queues one replay: the same kernels with
 * the same arguments and pointers; it returns 1, queueing nothing, when
 * the graph is stale (the batched products' pointer arrays it reads were
 * freed since: record it again). graph_free takes NULL. */
int kcuda_graph_begin(void);
int kcuda_graph_end(void **exec);
int kcuda_graph_launch(void *exec);
void kcuda_graph_free(void *exec);
/* 1 while a capture is open (the ops refuse what a graph cannot hold). */
int kcuda_capturing(void);

/* The 16-byte (vectorised) kernels of RMSNorm, residual and SwiGLU: on
 * by default (MODULA_CUDA_VEC=0 in the environment turns them off at
 * start); the scalar kernels run where shapes or alignment do not allow
 * them. */
void kcuda_set_vector(int on);
int kcuda_vector(void);

/* Attention as the tiled tensor-core kernels of flash.cu (bf16 and f16,
 * head sizes 64 and 128; the cuBLAS path elsewhere): on by default
 * (MODULA_CUDA_FLASH=0 in the environment turns them off at start). */
void kcuda_set_flash(int on);
int kcuda_flash(void);

/* The adapters' weight gradients as kcuda_gemm_wgrad's one kernel
 * (wgrad.cu) instead of a cuBLAS split-K product and reduction each: off
 * by default until a GPU has timed it (MODULA_CUDA_WGRAD=1 in the
 * environment turns it on at start). */
void kcuda_set_wgrad(int on);
int kcuda_wgrad(void);

/* bf16 and f16 products on cuBLASLt, each shape's algorithm the fastest
 * of cuBLASLt's candidates, timed on this GPU the first time the shape
 * comes and kept in a tune file (MODULA_CUDA_TUNE_FILE, else
 * ~/.cache/modula/cublaslt.tsv; "none": no file), so that later
 * processes run the same algorithms: on by default; MODULA_CUDA_LT=0 in
 * the environment keeps cublasGemmEx's own choice. kcuda_lt_report says
 * how this process's shapes were chosen. */
void kcuda_set_lt(int on);
int kcuda_lt(void);
void kcuda_lt_report(char *buf, size_t n);

/* ---- timing on the stream --------------------------------------------- */

/* Record a CUDA event on the backend's stream (a timestamp when the GPU
 * gets there, without waiting for it); -1 via err_set() when the pool of
 * KCUDA_TIMER_MARKS is full. kcuda_timer_read waits for the stream, writes
 * the milliseconds between consecutive marks (ms[i]: mark i to i + 1, n - 1
 * of them for n marks) and empties the pool. */
#define KCUDA_TIMER_MARKS 16384
int kcuda_timer_mark(void);
int kcuda_timer_read(float *ms, int n);

/* ---- the ops of kernels/cpu/ops.h ------------------------------------ */

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, as op_gemm; all in dt. */
int kcuda_gemm(int dt, void *c, const void *a, const void *b, int m, int n, int k,
	       int ta, int tb, float alpha, float beta);

/* The same with C in type cdt, which may be KCUDA_F32 whatever dt is (an
 * fp32 weight gradient from products of bf16 activations). */
int kcuda_gemm_mixed(int dt, int cdt, void *c, const void *a, const void *b, int m, int n, int k,
		     int ta, int tb, float alpha, float beta);
/* The same with the row strides (leading dimensions) of C, A and B given,
 * so that each may be a block of columns of a wider row-major matrix. */
int kcuda_gemm_ld(int dt, int cdt, void *c, int ldc, const void *a, int lda, const void *b, int ldb,
		  int m, int n, int k, int ta, int tb, float alpha, float beta);

/* count products of one shape, all matrices contiguous row-major in dt:
 * C_i = alpha op(A_i) op(B_i) + beta C_i; c, a, b host arrays of device
 * pointers. One cuBLAS launch. */
int kcuda_gemm_batched(int dt, void *const *c, const void *const *a, const void *const *b,
		       int count, int m, int n, int k, int ta, int tb, float alpha, float beta);

/* Weight gradients over the same K rows (a batch's tokens), several in one
 * call: for each of count <= KCUDA_WGRAD_MAX products,
 *   c[M,N] (fp32, rows ldc apart) = alpha a^T b + beta c,
 * a [K,M] and b [K,N] in dt, rows lda and ldb apart (columns of wider
 * matrices). With kcuda_wgrad on, the bf16 and f16 ones with M <= 64,
 * 16-byte aligned a and b and lda, ldb multiples of 8 run as one kernel
 * (deterministic: the same bits whatever the order its blocks run in);
 * the others, and all when it is off, as one kcuda_gemm_ld each. */
#define KCUDA_WGRAD_MAX 4
struct kcuda_wgrad {
	float *c;
	int ldc;
	const void *a;
	int lda;
	const void *b;
	int ldb;
	int m, n;
	float alpha, beta;
};
int kcuda_gemm_wgrad(int dt, const struct kcuda_wgrad *p, int count, int k);

/* out[N,C] = wte[tok[n], :]; wte [V,C]. Tokens must be in [0, V). */
int kcuda_embedding_forward(int dt, void *out, const int *tok, const void *wte, int n, int c);
/* dwte[V,C] (fp32) += rows of dout[N,C] by token (atomics, see above). */
int kcuda_embedding_backward(int dt, float *dwte, const void *dout, const int *tok, int n, int c);

/* out[N,OC] = inp[N,C] w[OC,C]^T + b[OC] (b may be NULL). */
int kcuda_matmul_forward(int dt, void *out, const void *inp, const void *w, const void *b,
			 int n, int c, int oc);
/* out = res + inp W^T (no bias): the linear layer with the residual added
 * in the product (on cuBLASLt its epilogue reads res; on cublasGemmEx res
 * is copied into out first; out and res distinct). */
int kcuda_matmul_forward_res(int dt, void *out, const void *res, const void *inp, const void *w,
			     int n, int c, int oc);
/* dinp[N,C] += dout w (dt); dw[OC,C] += dout^T inp, db[OC] += sum_n dout
 * (fp32). Any of dinp, dw, db may be NULL. */
int kcuda_matmul_backward(int dt, void *dinp, float *dw, float *db, const void *dout,
			  const void *inp, const void *w, int n, int c, int oc);

/* out[N,C] = w * inp / sqrt(mean(inp^2) + eps); rstd[N] (fp32) saved. */
int kcuda_rmsnorm_forward(int dt, void *out, float *rstd, const void *inp, const void *w,
			  int n, int c, float eps);
/* dinp[N,C] (dt) and dw[C] (fp32) accumulate; either may be NULL. */
int kcuda_rmsnorm_backward(int dt, void *dinp, float *dw, const void *dout, const void *inp,
			   const void *w, const float *rstd, int n, int c);
/* The same with out's (dinp's, dout's) rows ldo (ldi, ldd) >= C elements
 * apart: the first C columns of a wider matrix (dmodel's folded adapters). */
int kcuda_rmsnorm_forward_ld(int dt, void *out, int ldo, float *rstd, const void *inp,
			     const void *w, int n, int c, float eps);
int kcuda_rmsnorm_backward_ld(int dt, void *dinp, int ldi, float *dw, const void *dout, int ldd,
			      const void *inp, const void *w, const float *rstd, int n, int c);

/* cosv, sinv [T, HS/2] fp32, as op_rope_table (fp32 angles, as Hugging Face). */
int kcuda_rope_table(float *cosv, float *sinv, int t, int hs, int pos0, float theta);
/* x[B,T,NH,HS] rotated in place (Hugging Face rotate-half), and back. */
int kcuda_rope_forward(int dt, void *x, const float *cosv, const float *sinv, int b, int t,
		       int nh, int hs);
int kcuda_rope_backward(int dt, void *dx, const float *cosv, const float *sinv, int b, int t,
			int nh, int hs);

/* Causal grouped-query attention, q[B,T,NH,HS], k, v [B,T,NKV,HS],
 * out[B,T,NH,HS], scale 1/sqrt(HS); lse[B,NH,T] (fp32) saved instead of the
 * probabilities. Needs up to 1 GiB of scratch (or one sequence's 6 NH T^2
 * bytes when more) inside the call. */
int kcuda_attention_forward(int dt, void *out, float *lse, const void *q, const void *k,
			    const void *v, int b, int t, int nh, int nkv, int hs);
/* dq, dk, dv += ... (any may be NULL); needs the forward's lse (out is
 * accepted for the CPU op's shape and not read). */
int kcuda_attention_backward(int dt, void *dq, void *dk, void *dv, const void *dout,
			     const void *out, const float *lse, const void *q, const void *k,
			     const void *v, int b, int t, int nh, int nkv, int hs);
/* The same, writing dq, dk, dv instead of adding into them (nothing read:
 * the caller need not zero them first). */
int kcuda_attention_backward_set(int dt, void *dq, void *dk, void *dv, const void *dout,
				 const void *out, const float *lse, const void *q, const void *k,
				 const void *v, int b, int t, int nh, int nkv, int hs);

/* out[N] = silu(gate) * up, and its backward (dgate, dup may be NULL):
 * _backward adds into dgate and dup, _backward_set overwrites them (no
 * zeroing before, no read of them). */
int kcuda_swiglu_forward(int dt, void *out, const void *gate, const void *up, size_t n);
int kcuda_swiglu_backward(int dt, void *dgate, void *dup, const void *dout, const void *gate,
			  const void *up, size_t n);
int kcuda_swiglu_backward_set(int dt, void *dgate, void *dup, const void *dout, const void *gate,
			      const void *up, size_t n);

/* out[N] = a + b; da += dout, db += dout (either may be NULL). */
int kcuda_residual_forward(int dt, void *out, const void *a, const void *b, size_t n);
int kcuda_residual_backward(int dt, void *da, void *db, const void *dout, size_t n);

/* out[N] = x > 0 ? x : slope * x, and its backward. */
int kcuda_leakyrelu_forward(int dt, void *out, const void *inp, float slope, size_t n);
int kcuda_leakyrelu_backward(int dt, void *dinp, const void *dout, const void *inp, float slope,
			     size_t n);

/* out[N,K] = softmax(inp[N,K]); dinp += out * (dout - sum(out * dout)). */
int kcuda_softmax_forward(int dt, void *out, const void *inp, int n, int k);
int kcuda_softmax_backward(int dt, void *dinp, const void *dout, const void *out, int n, int k);

/* losses[N], lse[N] (fp32) from logits[N,V]; targets < 0 give loss 0. */
int kcuda_crossentropy_forward(int dt, float *losses, float *lse, const void *logits,
			       const int *targets, int n, int v);
/* dlogits[N,V] += dlosses[n] * (softmax(logits[n]) - onehot(targets[n])). */
int kcuda_crossentropy_backward(int dt, void *dlogits, const float *dlosses, const void *logits,
				const float *lse, const int *targets, int n, int v);
/* Both at once, in place: losses[N] from logits, then logits[N,V] is
 * OVERWRITTEN by dlosses[n] * (softmax - onehot) (rows with a negative
 * target or dlosses[n] == 0 become zero). dlosses holds the loss mask and
 * the mean's normaliser, so it is known before the forward. */
int kcuda_crossentropy_fused(int dt, float *losses, void *logits, const float *dlosses,
			     const int *targets, int n, int v);

/* ---- adapters: routers and LoRA expert groups (METHOD.md) ------------ */

/* The router softmax fused with the weighting of the experts' outputs:
 * s[N,E] = softmax(rlogits[N,E]) (fp32, saved) and uw = scale_i s[n,i]
 * u[n, columns of expert i], where the w = r0 + e*r columns of u (rows w
 * apart) are a head expert of rank r0 with scale s0 when r0 > 0
 * (MoDULA-Flan's universal expert, under the router too), then e experts
 * of rank r with scale `scale`; E = e + (r0 > 0) <= 32. uw's rows are `ld`
 * elements apart (0: w), so it may be the right-hand columns of a wider
 * matrix; rlogits' ldr (0: E) and u's ldu (0: w), so that both may be
 * columns of one product's output. r0 = 0: e equal experts (MoLoRA). */
int kcuda_router_weight_forward(int dt, void *uw, int ld, float *s, const void *rlogits, int ldr,
				const void *u, int ldu, int n, int e, int r, float scale, int r0,
				float s0);
/* du[N,w] += scale_i * s_i * duw; drlogits[N,E] += softmax backward of
 * ds[n,i] = scale_i * sum over expert i's columns of u * duw (duw's rows
 * `ld` apart, 0: w; drlogits' ldr, 0: E; u's and du's ldu, 0: w). Either
 * gradient may be NULL. */
int kcuda_router_weight_backward(int dt, void *drlogits, int ldr, void *du, const void *duw,
				 int ld, const float *s, const void *u, int ldu, int n, int e, int r,
				 float scale, int r0, float s0);

/* MoDULA-Res's per-row work between its products, fused (worker/dmodel.c):
 * ur = [u0 | rl] [N, r0+E] (x [A0; W_R]^T), mab = M = A B0 [E*R, r0]:
 *   cat[:, :r0] = s0 u0, z = s0 u0 M^T, zl = LeakyReLU(z), s = softmax(rl),
 *   cat[:, r0:] = sd s_i zl    (z, zl [N, E*R]).
 * Backward, with dcat = dy [B0^T; B^T]^T on entry: reads dzw = dcat[:, r0:]
 * and writes dz (overwritten), dcat[:, r0:r0+E] = the router logits'
 * gradient and dcat[:, :r0] *= s0. cat's and dcat's rows are ld apart (0:
 * r0 + E*R; more: columns of a wider matrix, as a folded group's X), ur's
 * ldu (0: r0 + E; the engine pads them to 16 bytes, which cuBLAS's fast
 * kernels want of the product that writes ur). E <= 32. */
int kcuda_res_forward(int dt, void *cat, int ld, void *z, void *zl, float *s, const void *ur,
		      int ldu, const void *mab, int n, int r0, int e, int r, float s0, float sd,
		      float slope);
/* mab not NULL: dcat[:, :r0] = s0 (dcat[:, :r0] (nores: 0) + dz mab) too,
 * the product that follows it fused (mab's rows read by every row). */
int kcuda_res_backward(int dt, void *dcat, int ld, void *dz, const float *s, const void *z,
		       const void *zl, const void *mab, int nores, int n, int r0, int e, int r,
		       float s0, float sd, float slope);

/* A soft-routed LoRA expert group on one linear layer, as two products over
 * the stacked experts (MoLoRA, MoDULA-Flan; plain LoRA is E = 1 without a
 * router):
 *   u[N,E*R] = x[N,C] a[E*R,C]^T            (A_i stacked by rows)
 *   uw = scale * s[n,i] * u (router) or scale * u (rlogits NULL)
 *   y[N,OC] += uw b[OC,E*R]^T               (B_i stacked by columns)
 * u, uw [N,E*R] and s[N,E] (fp32) are saved for backward; without a router
 * uw and s are unused (may be NULL). */
int kcuda_lora_group_forward(int dt, void *y, void *u, void *uw, float *s, const void *x,
			     const void *a, const void *b, const void *rlogits, int n, int c,
			     int oc, int e, int r, float scale);
/* dx[N,C] += ...; da[E*R,C], db[OC,E*R] (fp32) += ...; drlogits[N,E] += ...
 * s NULL means the group had no router (as rlogits NULL in the forward).
 * Any gradient may be NULL (frozen experts: da, db NULL; stage 3 trains
 * only the router). */
int kcuda_lora_group_backward(int dt, void *dx, float *da, float *db, void *drlogits,
			      const void *dy, const void *x, const void *u, const void *uw,
			      const float *s, const void *a, const void *b, int n, int c, int oc,
			      int e, int r, float scale);

/* Concurrent domain experts in one batch (segmented, SGMV-style): rows
 * seg[i] .. seg[i+1]-1 of x belong to expert i, whose A is a[i] [R,C] and
 * B is b[i] [OC,R] (device pointers in HOST arrays; seg is a host array of
 * nseg+1 row offsets, seg[0] = 0, seg[nseg] = N):
 *   u[rows of i] = x a[i]^T;  y[rows of i] += scale * u b[i]^T. */
int kcuda_lora_segments_forward(int dt, void *y, void *u, const void *x, const void *const *a,
				const void *const *b, const int *seg, int nseg, int c, int oc,
				int r, float scale);
/* dx += ...; da[i] [R,C] and db[i] [OC,R] (fp32) += ... (dx, da, db or any
 * entry of da, db may be NULL). */
int kcuda_lora_segments_backward(int dt, void *dx, float *const *da, float *const *db,
				 const void *dy, const void *x, const void *u, const void *const *a,
				 const void *const *b, const int *seg, int nseg, int c, int oc,
				 int r, float scale);

/* ---- the optimizer (worker/optim.c's formulas) ----------------------- */

/* *out = sum of x[i]^2 over n fp32 values, in double (deterministic). */
int kcuda_sumsq(const float *x, size_t n, double *out);
/* x[i] *= s (gradient clipping). */
int kcuda_scale(float *x, float s, size_t n);
/* One AdamW update of the fp32 master weights w with gradient g and moments
 * m, v (all fp32, n each), as optim_step: step is the update's number from
 * 1; weight decay is decoupled (w *= 1 - lr wd). When wdt is not NULL the
 * updated weights are also written there in type dt (the copy the forward
 * reads), in the same pass. */
int kcuda_adamw(int dt, float *w, void *wdt, const float *g, float *m, float *v, size_t n,
		float lr, float beta1, float beta2, float eps, float weight_decay, long step);

#ifdef __cplusplus
}
#endif

#endif
