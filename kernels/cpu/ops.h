/* ops.h: the CPU reference kernels of the engine, llm.c style.
 *
 * Every op is a forward/backward pair over flat fp32 arrays, outputs first,
 * shapes in the comment above it (N rows = B*T positions, C channels). The
 * conventions, kept by every op:
 *   - forward overwrites its outputs;
 *   - backward ACCUMULATES (+=) into every gradient it is given, so callers
 *     zero gradient buffers once per step and several paths (residuals,
 *     adapters, gradient accumulation) simply add up;
 *   - a NULL gradient pointer means "not wanted" and that work is skipped
 *     (frozen weights get no weight gradient computed at all);
 *   - deterministic: work is split across OpenMP threads by rows, heads or
 *     columns, never reduced in an order that depends on the thread count or
 *     timing, so the same inputs give bit-identical outputs run to run.
 * Matrix products go through OpenBLAS (cblas_sgemm). Weights follow the
 * PyTorch nn.Linear layout [out, in].
 *
 * Not a graph or autograd engine: the model (worker/model.c) calls these in
 * order and keeps the activations backward needs.
 */
#ifndef MODULA_KERNELS_CPU_OPS_H
#define MODULA_KERNELS_CPU_OPS_H

#include <stddef.h>

/* Below this much work (elements touched, or multiply-adds) an op runs on
 * the calling thread: waking a team costs more than it saves. */
#define OPS_PARALLEL_MIN 32768

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major; op(A) is [M,K]
 * (A stored [K,M] when ta), op(B) is [K,N] (B stored [N,K] when tb). */
void op_gemm(float *c, const float *a, const float *b, int m, int n, int k,
	     int ta, int tb, float alpha, float beta);

/* The same product on one thread, with explicit leading dimensions, for
 * callers already inside an OpenMP parallel region (per-head blocks). */
void op_gemm_serial(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
		    int m, int n, int k, int ta, int tb, float alpha, float beta);
/* op_gemm with row strides (each matrix may be columns of a wider one),
 * split across OpenMP threads as op_gemm. */
void op_gemm_ld(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int m, int n,
		int k, int ta, int tb, float alpha, float beta);

/* dst[C,R] = src[R,C]^T. */
void op_transpose(float *dst, const float *src, size_t rows, size_t cols);

/* out[N,C] = wte[tok[n], :]; wte is [V,C]. */
void op_embedding_forward(float *out, const int *tok, const float *wte, int n, int c);
/* dwte[V,C] += rows of dout[N,C] by token. */
void op_embedding_backward(float *dwte, const float *dout, const int *tok, int n, int c);

/* out[N,OC] = inp[N,C] w[OC,C]^T + b[OC] (b may be NULL). */
void op_matmul_forward(float *out, const float *inp, const float *w, const float *b,
		       int n, int c, int oc);
/* dinp[N,C] += dout w; dw[OC,C] += dout^T inp; db[OC] += sum_n dout.
 * Any of dinp, dw, db may be NULL. */
void op_matmul_backward(float *dinp, float *dw, float *db, const float *dout,
			const float *inp, const float *w, int n, int c, int oc);

/* out[N,C] = w * inp / sqrt(mean(inp^2) + eps); rstd[N] saved. */
void op_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
			int n, int c, float eps);
/* dinp[N,C] and dw[C] (either may be NULL). */
void op_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
			 const float *w, const float *rstd, int n, int c);

/* Hugging Face rotate-half RoPE tables for positions pos0..pos0+T-1:
 * cosv, sinv are [T, HS/2]; angle(t, i) = (pos0 + t) * theta^(-2i/HS). */
void op_rope_table(float *cosv, float *sinv, int t, int hs, int pos0, float theta);
/* x[B,T,NH,HS] rotated in place: for i < HS/2, with h = HS/2,
 * (x_i, x_{i+h}) <- (x_i cos - x_{i+h} sin, x_{i+h} cos + x_i sin). */
void op_rope_forward(float *x, const float *cosv, const float *sinv, int b, int t, int nh, int hs);
/* dx[B,T,NH,HS] rotated back in place (the transpose rotation). */
void op_rope_backward(float *dx, const float *cosv, const float *sinv, int b, int t, int nh, int hs);

/* Causal grouped-query attention. q[B,T,NH,HS], k and v [B,T,NKV,HS]
 * (query head h reads kv head h / (NH/NKV)), out[B,T,NH,HS], the
 * probabilities att[B,NH,T,T] saved for backward (zero above the diagonal).
 * Scale 1/sqrt(HS). */
void op_attention_forward(float *out, float *att, const float *q, const float *k,
			  const float *v, int b, int t, int nh, int nkv, int hs);
/* dq, dk, dv += ...; scratch is [T*T] floats per thread (omp_get_max_threads()). */
void op_attention_backward(float *dq, float *dk, float *dv, float *scratch,
			   const float *dout, const float *att, const float *q,
			   const float *k, const float *v, int b, int t, int nh, int nkv, int hs);

/* out[N] = silu(gate) * up. */
void op_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void op_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
			const float *up, size_t n);

/* out[N] = a + b; backward: da += dout, db += dout (either may be NULL). */
void op_residual_forward(float *out, const float *a, const float *b, size_t n);
void op_residual_backward(float *da, float *db, const float *dout, size_t n);

/* out[N] = x > 0 ? x : slope * x. */
void op_leakyrelu_forward(float *out, const float *inp, float slope, size_t n);
void op_leakyrelu_backward(float *dinp, const float *dout, const float *inp, float slope, size_t n);

/* MoDULA-Res's per-row work (worker/dmodel.c and worker/moe.c, METHOD.md):
 * ur = [u0 | rl] [N, r0+e], mab = A B0 [e*r, r0]; forward writes s =
 * softmax(rl) [N, e], z = s0 u0 mab^T and zl = LeakyReLU(z) [N, e*r], and
 * cat = [s0 u0 | sd s_i zl_i] [N, r0+e*r]. Backward: dcat holds dy
 * [B0^T; B^T]^T on entry; it writes dz [N, e*r], dcat[:, r0:r0+e] = d rl
 * and dcat[:, :r0] *= s0, or, given mab, dcat[:, :r0] = s0 (dcat[:, :r0]
 * + dz mab) (nores: s0 dz mab), the product that follows it fused. cat's
 * and dcat's rows are ld apart (0: r0+e*r; columns of a wider matrix),
 * ur's ldu (0: r0+e). At most OPS_RES_MAX_EXPERTS experts. */
#define OPS_RES_MAX_EXPERTS 64
void op_res_forward(float *cat, int ld, float *z, float *zl, float *s, const float *ur, int ldu,
		    const float *mab, int n, int r0, int e, int r, float s0, float sd, float slope);
void op_res_backward(float *dcat, int ld, float *dz, const float *s, const float *z,
		     const float *zl, const float *mab, int nores, int n, int r0, int e, int r,
		     float s0, float sd, float slope);

/* Softmax over the last dimension: out[N,K] = softmax(inp[N,K]). */
void op_softmax_forward(float *out, const float *inp, int n, int k);
/* dinp[N,K] += out * (dout - sum(out * dout)). */
void op_softmax_backward(float *dinp, const float *dout, const float *out, int n, int k);

/* Softmax cross-entropy per position: losses[N] = logsumexp(logits[n]) -
 * logits[n, targets[n]]; a target < 0 (the ignore index) gives loss 0.
 * lse[N] is saved for backward. Targets must be < V. */
void op_crossentropy_forward(float *losses, float *lse, const float *logits,
			     const int *targets, int n, int v);
/* dlogits[N,V] += dlosses[n] * (softmax(logits[n]) - onehot(targets[n]));
 * rows with a negative target or dlosses[n] == 0 are left alone. The
 * per-position loss mask and the mean's normaliser live in dlosses. */
void op_crossentropy_backward(float *dlogits, const float *dlosses, const float *logits,
			      const float *lse, const int *targets, int n, int v);

#endif
