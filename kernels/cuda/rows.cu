/* rows.cu: the ops that reduce along a row: RMSNorm, softmax and the
 * softmax cross-entropy over the vocabulary. One warp per row where rows are
 * short (hidden size, experts), one block per row over the vocabulary.
 * Reductions run in a fixed order, so results repeat bit for bit.
 *
 * The cross-entropy never materialises probabilities: the forward keeps one
 * running (max, sum) pair per thread (online softmax) and saves the row's
 * log-sum-exp; the backward and the fused op recompute exp(logit - lse).
 * Not a general reduction library: each kernel is its op's, as in ops.h.
 */
#include "kernels/cuda/kc.cuh"

#include <float.h>

#define KC_ROW_WARP(row, lane, n)                                         \
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;      \
	int lane = threadIdx.x % 32;                                      \
	if (row >= (n))                                                   \
		return

/* ---- RMSNorm ---------------------------------------------------------- */

/* Rows of out are ldo apart (c when contiguous; wider when the output is
 * the first c columns of a wider matrix); in backward, dinp's are ldi and
 * dout's ldd. */
template <typename T>
__global__ void k_rmsnorm_fwd(T *out, int ldo, float *rstd, const T *inp, const T *w, int n,
			      int c, float eps)
{
	KC_ROW_WARP(row, lane, n);
	const T *x = inp + (size_t)row * c;
	T *y = out + (size_t)row * ldo;
	float ss = 0.0f, r;

	for (int i = lane; i < c; i += 32) {
		float v = kc_ld(x[i]);
		ss += v * v;
	}
	r = rsqrtf(kc_warp_sum(ss) / c + eps);
	if (lane == 0)
		rstd[row] = r;
	for (int i = lane; i < c; i += 32)
		y[i] = kc_st<T>(kc_ld(w[i]) * (kc_ld(x[i]) * r));
}

/* y = w x r, r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / C:
 * dx_j = r w_j dy_j - r^3 x_j / C * sum_i dy_i w_i x_i. */
template <typename T>
__global__ void k_rmsnorm_bwd(T *dinp, int ldi, const T *dout, int ldd, const T *inp,
			      const T *w, const float *rstd, int n, int c)
{
	KC_ROW_WARP(row, lane, n);
	const T *x = inp + (size_t)row * c, *dy = dout + (size_t)row * ldd;
	T *dx = dinp + (size_t)row * ldi;
	float r = rstd[row], dot = 0.0f, k;

	for (int i = lane; i < c; i += 32)
		dot += kc_ld(dy[i]) * kc_ld(w[i]) * kc_ld(x[i]);
	k = kc_warp_sum(dot) * r * r * r / c;
	for (int i = lane; i < c; i += 32)
		dx[i] = kc_st<T>(kc_ld(dx[i]) + r * kc_ld(w[i]) * kc_ld(dy[i]) - k * kc_ld(x[i]));
}

/* The same over 16-byte vectors (kc_vector; c and the row strides
 * multiples of N, rows and w 16-byte aligned): lane l takes elements
 * [l N, l N + N) of each 32 N. */
template <typename T>
__global__ void k_rmsnorm_fwd_v(T *out, int ldo, float *rstd, const T *inp, const T *w, int n,
				int c, float eps)
{
	KC_ROW_WARP(row, lane, n);
	const int N = kc_vec<T>::N;
	const T *x = inp + (size_t)row * c;
	T *y = out + (size_t)row * ldo;
	float ss = 0.0f, r, xv[kc_vec<T>::N], wv[kc_vec<T>::N];

	for (int i = lane * N; i < c; i += 32 * N) {
		kc_ldv(xv, x + i);
#pragma unroll
		for (int j = 0; j < N; j++)
			ss += xv[j] * xv[j];
	}
	r = rsqrtf(kc_warp_sum(ss) / c + eps);
	if (lane == 0)
		rstd[row] = r;
	for (int i = lane * N; i < c; i += 32 * N) {
		kc_ldv(xv, x + i);
		kc_ldv(wv, w + i);
#pragma unroll
		for (int j = 0; j < N; j++)
			xv[j] = wv[j] * (xv[j] * r);
		kc_stv(y + i, xv);
	}
}

template <typename T>
__global__ void k_rmsnorm_bwd_v(T *dinp, int ldi, const T *dout, int ldd, const T *inp,
				const T *w, const float *rstd, int n, int c)
{
	KC_ROW_WARP(row, lane, n);
	const int N = kc_vec<T>::N;
	const T *x = inp + (size_t)row * c, *dy = dout + (size_t)row * ldd;
	T *dx = dinp + (size_t)row * ldi;
	float r = rstd[row], dot = 0.0f, k;
	float xv[kc_vec<T>::N], wv[kc_vec<T>::N], gv[kc_vec<T>::N], dv[kc_vec<T>::N];

	for (int i = lane * N; i < c; i += 32 * N) {
		kc_ldv(xv, x + i);
		kc_ldv(wv, w + i);
		kc_ldv(gv, dy + i);
#pragma unroll
		for (int j = 0; j < N; j++)
			dot += gv[j] * wv[j] * xv[j];
	}
	k = kc_warp_sum(dot) * r * r * r / c;
	for (int i = lane * N; i < c; i += 32 * N) {
		kc_ldv(xv, x + i);
		kc_ldv(wv, w + i);
		kc_ldv(gv, dy + i);
		kc_ldv(dv, dx + i);
#pragma unroll
		for (int j = 0; j < N; j++)
			dv[j] = dv[j] + r * wv[j] * gv[j] - k * xv[j];
		kc_stv(dx + i, dv);
	}
}

#define KC_DW_ROWS 64

/* part[chunk, i] = sum over the chunk's rows of dy * x * rstd. */
template <typename T>
__global__ void k_rmsnorm_dw_part(float *part, const T *dout, int ldd, const T *inp,
				  const float *rstd, int n, int c)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	int r0 = blockIdx.y * KC_DW_ROWS, r1 = min(n, r0 + KC_DW_ROWS);
	float s = 0.0f;

	if (i >= c)
		return;
	for (int r = r0; r < r1; r++)
		s += kc_ld(dout[(size_t)r * ldd + i]) * kc_ld(inp[(size_t)r * c + i]) * rstd[r];
	part[(size_t)blockIdx.y * c + i] = s;
}

/* The same with the row in registers (a row of up to IT x 32 vectors: a
 * lane's IT vectors loaded at once, not in a loop of dependent rounds;
 * the backward keeps x, w and dy, and reads dx's for the output): the
 * same sums in the same order as the loops above, so the same bits. */
template <typename T, int IT>
__global__ void k_rmsnorm_fwd_r(T *out, int ldo, float *rstd, const T *inp, const T *w, int n,
				int c, float eps)
{
	KC_ROW_WARP(row, lane, n);
	const int N = kc_vec<T>::N;
	const T *x = inp + (size_t)row * c;
	T *y = out + (size_t)row * ldo;
	float ss = 0.0f, r, xv[IT][kc_vec<T>::N] = {}, wv[kc_vec<T>::N];

#pragma unroll
	for (int it = 0; it < IT; it++)
		if ((it * 32 + lane) * N < c)
			kc_ldv(xv[it], x + (it * 32 + lane) * N);
#pragma unroll
	for (int it = 0; it < IT; it++)
		if ((it * 32 + lane) * N < c)
#pragma unroll
			for (int j = 0; j < N; j++)
				ss += xv[it][j] * xv[it][j];
	r = rsqrtf(kc_warp_sum(ss) / c + eps);
	if (lane == 0)
		rstd[row] = r;
#pragma unroll
	for (int it = 0; it < IT; it++) {
		int i = (it * 32 + lane) * N;
		if (i < c) {
			kc_ldv(wv, w + i);
#pragma unroll
			for (int j = 0; j < N; j++)
				xv[it][j] = wv[j] * (xv[it][j] * r);
			kc_stv(y + i, xv[it]);
		}
	}
}

template <typename T, int IT>
__global__ void k_rmsnorm_bwd_r(T *dinp, int ldi, const T *dout, int ldd, const T *inp,
				const T *w, const float *rstd, int n, int c)
{
	KC_ROW_WARP(row, lane, n);
	const int N = kc_vec<T>::N;
	const T *x = inp + (size_t)row * c, *dy = dout + (size_t)row * ldd;
	T *dx = dinp + (size_t)row * ldi;
	float r = rstd[row], dot = 0.0f, k;
	/* (zeros: read only where loaded, which a host compiler cannot see) */
	float xv[IT][kc_vec<T>::N] = {}, wv[IT][kc_vec<T>::N] = {}, gv[IT][kc_vec<T>::N] = {};
	float dv[kc_vec<T>::N];

#pragma unroll
	for (int it = 0; it < IT; it++) {
		int i = (it * 32 + lane) * N;
		if (i < c) {
			kc_ldv(xv[it], x + i);
			kc_ldv(wv[it], w + i);
			kc_ldv(gv[it], dy + i);
		}
	}
#pragma unroll
	for (int it = 0; it < IT; it++)
		if ((it * 32 + lane) * N < c)
#pragma unroll
			for (int j = 0; j < N; j++)
				dot += gv[it][j] * wv[it][j] * xv[it][j];
	k = kc_warp_sum(dot) * r * r * r / c;
#pragma unroll
	for (int it = 0; it < IT; it++) {
		int i = (it * 32 + lane) * N;
		if (i < c) {
			kc_ldv(dv, dx + i);
#pragma unroll
			for (int j = 0; j < N; j++)
				dv[j] = dv[j] + r * wv[it][j] * gv[it][j] - k * xv[it][j];
			kc_stv(dx + i, dv);
		}
	}
}

/* Rounds of 32 vectors a row takes; the register kernels up to 4. */
template <typename T> static int s_rounds(int c)
{
	return (c + 32 * kc_vec<T>::N - 1) / (32 * kc_vec<T>::N);
}

template <typename T>
static void s_rms_fwd_v(cudaStream_t st, T *out, int ldo, float *rstd, const T *inp, const T *w,
			int n, int c, float eps)
{
	unsigned g = kc_warp_blocks(n);
	int it = s_rounds<T>(c);

	if (it <= 1)
		k_rmsnorm_fwd_r<T, 1><<<g, KC_THREADS, 0, st>>>(out, ldo, rstd, inp, w, n, c, eps);
	else if (it <= 2)
		k_rmsnorm_fwd_r<T, 2><<<g, KC_THREADS, 0, st>>>(out, ldo, rstd, inp, w, n, c, eps);
	else if (it <= 4)
		k_rmsnorm_fwd_r<T, 4><<<g, KC_THREADS, 0, st>>>(out, ldo, rstd, inp, w, n, c, eps);
	else
		k_rmsnorm_fwd_v<T><<<g, KC_THREADS, 0, st>>>(out, ldo, rstd, inp, w, n, c, eps);
}

template <typename T>
static void s_rms_bwd_v(cudaStream_t st, T *dinp, int ldi, const T *dout, int ldd, const T *inp,
			const T *w, const float *rstd, int n, int c)
{
	unsigned g = kc_warp_blocks(n);
	int it = s_rounds<T>(c);

	if (it <= 1)
		k_rmsnorm_bwd_r<T, 1><<<g, KC_THREADS, 0, st>>>(dinp, ldi, dout, ldd, inp, w, rstd, n,
								c);
	else if (it <= 2)
		k_rmsnorm_bwd_r<T, 2><<<g, KC_THREADS, 0, st>>>(dinp, ldi, dout, ldd, inp, w, rstd, n,
								c);
	else if (it <= 4)
		k_rmsnorm_bwd_r<T, 4><<<g, KC_THREADS, 0, st>>>(dinp, ldi, dout, ldd, inp, w, rstd, n,
								c);
	else
		k_rmsnorm_bwd_v<T><<<g, KC_THREADS, 0, st>>>(dinp, ldi, dout, ldd, inp, w, rstd, n, c);
}

extern "C" int kcuda_rmsnorm_forward_ld(int dt, void *out, int ldo, float *rstd, const void *inp,
					const void *w, int n, int c, float eps)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	if (ldo < c)
		return err_set("rmsnorm_forward: output rows %d apart, narrower than %d", ldo, c);
	KC_DISPATCH(dt, T,
		if (kc_vector > 0 && c % kc_vec<T>::N == 0 && ldo % kc_vec<T>::N == 0 &&
		    kc_al16(out) && kc_al16(inp) && kc_al16(w))
			s_rms_fwd_v<T>(cx->stream, (T *)out, ldo, rstd, (const T *)inp, (const T *)w, n,
				       c, eps);
		else
			k_rmsnorm_fwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
				(T *)out, ldo, rstd, (const T *)inp, (const T *)w, n, c, eps));
	KC_LAUNCHED("rmsnorm_forward");
	return 0;
}

extern "C" int kcuda_rmsnorm_forward(int dt, void *out, float *rstd, const void *inp,
				     const void *w, int n, int c, float eps)
{
	return kcuda_rmsnorm_forward_ld(dt, out, c, rstd, inp, w, n, c, eps);
}

extern "C" int kcuda_rmsnorm_backward_ld(int dt, void *dinp, int ldi, float *dw, const void *dout,
					 int ldd, const void *inp, const void *w, const float *rstd,
					 int n, int c)
{
	int chunks = (n + KC_DW_ROWS - 1) / KC_DW_ROWS;
	dim3 grid((c + KC_THREADS - 1) / KC_THREADS, chunks);
	float *part;
	cudaError_t e;
	int rc;

	KC_CTX(cx);
	if (n == 0)
		return 0;
	if (ldd < c || ldi < c)
		return err_set("rmsnorm_backward: gradient rows %d and %d apart, narrower than %d", ldi,
			       ldd, c);
	if (dinp) {
		KC_DISPATCH(dt, T,
			if (kc_vector > 0 && c % kc_vec<T>::N == 0 && ldd % kc_vec<T>::N == 0 &&
			    ldi % kc_vec<T>::N == 0 && kc_al16(dinp) && kc_al16(dout) && kc_al16(inp) &&
			    kc_al16(w))
				s_rms_bwd_v<T>(cx->stream, (T *)dinp, ldi, (const T *)dout, ldd,
					       (const T *)inp, (const T *)w, rstd, n, c);
			else
				k_rmsnorm_bwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
					(T *)dinp, ldi, (const T *)dout, ldd, (const T *)inp,
					(const T *)w, rstd, n, c));
		KC_LAUNCHED("rmsnorm_backward");
	}
	if (!dw)
		return 0;
	if (!kc_is_float(dt))
		return err_set("unknown CUDA storage type %d", dt);
	if (!(part = (float *)kc_alloc((size_t)chunks * c * sizeof(float))))
		return -1;
	KC_DISPATCH(dt, T, k_rmsnorm_dw_part<T><<<grid, KC_THREADS, 0, cx->stream>>>(
		part, (const T *)dout, ldd, (const T *)inp, rstd, n, c));
	e = cudaGetLastError();
	rc = e == cudaSuccess ? kc_colsum(dw, part, chunks, c)
			      : err_set("CUDA kernel 'rmsnorm_dw' failed to launch: %s",
					cudaGetErrorString(e));
	kc_free(part);
	return rc;
}

extern "C" int kcuda_rmsnorm_backward(int dt, void *dinp, float *dw, const void *dout,
				      const void *inp, const void *w, const float *rstd, int n,
				      int c)
{
	return kcuda_rmsnorm_backward_ld(dt, dinp, c, dw, dout, c, inp, w, rstd, n, c);
}

/* ---- softmax over short rows ------------------------------------------ */

template <typename T>
__global__ void k_softmax_fwd(T *out, const T *inp, int n, int k)
{
	KC_ROW_WARP(row, lane, n);
	const T *x = inp + (size_t)row * k;
	float m = -FLT_MAX, s = 0.0f;

	for (int i = lane; i < k; i += 32)
		m = fmaxf(m, kc_ld(x[i]));
	m = kc_warp_max(m);
	for (int i = lane; i < k; i += 32)
		s += expf(kc_ld(x[i]) - m);
	s = 1.0f / kc_warp_sum(s);
	for (int i = lane; i < k; i += 32)
		out[(size_t)row * k + i] = kc_st<T>(expf(kc_ld(x[i]) - m) * s);
}

template <typename T>
__global__ void k_softmax_bwd(T *dinp, const T *dout, const T *out, int n, int k)
{
	KC_ROW_WARP(row, lane, n);
	size_t o = (size_t)row * k;
	float dot = 0.0f;

	for (int i = lane; i < k; i += 32)
		dot += kc_ld(out[o + i]) * kc_ld(dout[o + i]);
	dot = kc_warp_sum(dot);
	for (int i = lane; i < k; i += 32)
		dinp[o + i] = kc_st<T>(kc_ld(dinp[o + i]) +
				       kc_ld(out[o + i]) * (kc_ld(dout[o + i]) - dot));
}

extern "C" int kcuda_softmax_forward(int dt, void *out, const void *inp, int n, int k)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_softmax_fwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
		(T *)out, (const T *)inp, n, k));
	KC_LAUNCHED("softmax_forward");
	return 0;
}

extern "C" int kcuda_softmax_backward(int dt, void *dinp, const void *dout, const void *out, int n,
				      int k)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_softmax_bwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
		(T *)dinp, (const T *)dout, (const T *)out, n, k));
	KC_LAUNCHED("softmax_backward");
	return 0;
}

/* ---- cross-entropy over the vocabulary -------------------------------- */

/* Merge two online-softmax states (max m, sum of exp(x - m) s). */
static __device__ __forceinline__ void kc_lse_merge(float *m, float *s, float m2, float s2)
{
	float mm = fmaxf(*m, m2);
	*s = *s * expf(*m - mm) + s2 * expf(m2 - mm);
	*m = mm;
}

/* Every thread's online-softmax state (m, s) merged over the block
 * (KC_THREADS), in a fixed order: the row's log-sum-exp, to every thread. */
static __device__ float kc_block_lse(float m, float s)
{
	__shared__ float sm[KC_THREADS / 32], ss[KC_THREADS / 32];
	int lane = threadIdx.x % 32, wid = threadIdx.x / 32;

	for (int o = 16; o > 0; o >>= 1) {
		float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
		kc_lse_merge(&m, &s, m2, s2);
	}
	if (lane == 0) {
		sm[wid] = m;
		ss[wid] = s;
	}
	__syncthreads();
	m = sm[0];
	s = ss[0];
	for (int w = 1; w < KC_THREADS / 32; w++)
		kc_lse_merge(&m, &s, sm[w], ss[w]);
	__syncthreads();
	return m + logf(s);
}

/* log-sum-exp of one row of v logits, by the whole block. */
template <typename T>
static __device__ float kc_row_lse(const T *x, int v)
{
	float m = -FLT_MAX, s = 0.0f;

	for (int i = threadIdx.x; i < v; i += blockDim.x) {
		float xi = kc_ld(x[i]);
		if (xi > m) {
			s = s * expf(m - xi) + 1.0f;
			m = xi;
		} else {
			s += expf(xi - m);
		}
	}
	return kc_block_lse(m, s);
}

/* The same over 16-byte vectors (kc_vector; v a multiple of N, x 16-byte
 * aligned): thread i takes elements [i N, i N + N) of each blockDim N, and
 * merges each vector's (max, sum) into its state. */
template <typename T>
static __device__ float kc_row_lse_v(const T *x, int v)
{
	const int N = kc_vec<T>::N;
	float m = -FLT_MAX, s = 0.0f, f[kc_vec<T>::N];

	for (int i = threadIdx.x * N; i < v; i += blockDim.x * N) {
		float mx = -FLT_MAX, e = 0.0f;
		kc_ldv(f, x + i);
#pragma unroll
		for (int j = 0; j < N; j++)
			mx = fmaxf(mx, f[j]);
#pragma unroll
		for (int j = 0; j < N; j++)
			e += expf(f[j] - mx);
		kc_lse_merge(&m, &s, mx, e);
	}
	return kc_block_lse(m, s);
}

/* V: the 16-byte kernels (as kc_row_lse_v; the caller checks v and x). */
template <typename T, int V>
__global__ void k_xent_fwd(float *losses, float *lse, const T *logits, const int *targets, int v)
{
	const T *x = logits + (size_t)blockIdx.x * v;
	int t = targets[blockIdx.x];
	float l = V ? kc_row_lse_v(x, v) : kc_row_lse(x, v);

	if (threadIdx.x == 0) {
		lse[blockIdx.x] = l;
		losses[blockIdx.x] = t < 0 ? 0.0f : l - kc_ld(x[t]);
	}
}

template <typename T>
__global__ void k_xent_bwd(T *dlogits, const float *dlosses, const T *logits, const float *lse,
			   const int *targets, int v)
{
	size_t o = (size_t)blockIdx.x * v;
	int t = targets[blockIdx.x];
	float d = dlosses[blockIdx.x], l = lse[blockIdx.x];

	if (t < 0 || d == 0.0f)
		return;
	for (int i = threadIdx.x; i < v; i += blockDim.x)
		dlogits[o + i] = kc_st<T>(kc_ld(dlogits[o + i]) +
					  d * (expf(kc_ld(logits[o + i]) - l) - (i == t ? 1.0f : 0.0f)));
}

/* The fused op: one read for the log-sum-exp, one read and one write for
 * the gradient (V: 16 bytes at a time). */
template <typename T, int V>
__global__ void k_xent_fused(float *losses, T *logits, const float *dlosses, const int *targets,
			     int v)
{
	const int N = V ? kc_vec<T>::N : 1;
	T *x = logits + (size_t)blockIdx.x * v;
	int t = targets[blockIdx.x];
	float d = dlosses[blockIdx.x], f[kc_vec<T>::N];
	float l = V ? kc_row_lse_v(x, v) : kc_row_lse(x, v);

	if (threadIdx.x == 0)
		losses[blockIdx.x] = t < 0 ? 0.0f : l - kc_ld(x[t]);
	__syncthreads(); /* x[t] is read above before anyone overwrites it */
	if (t < 0)
		d = 0.0f;
	for (int i = threadIdx.x * N; i < v; i += blockDim.x * N) {
		if (!V) {
			x[i] = kc_st<T>(d == 0.0f ? 0.0f
					: d * (expf(kc_ld(x[i]) - l) - (i == t ? 1.0f : 0.0f)));
			continue;
		}
		if (d == 0.0f) {
#pragma unroll
			for (int j = 0; j < kc_vec<T>::N; j++)
				f[j] = 0.0f;
		} else {
			kc_ldv(f, x + i);
#pragma unroll
			for (int j = 0; j < kc_vec<T>::N; j++)
				f[j] = d * (expf(f[j] - l) - (i + j == t ? 1.0f : 0.0f));
		}
		kc_stv(x + i, f);
	}
}

/* 1 when rows of v logits at p take the 16-byte kernels. */
#define KC_XENT_V(T, p, v) (kc_vector > 0 && (v) % kc_vec<T>::N == 0 && kc_al16(p))

extern "C" int kcuda_crossentropy_forward(int dt, float *losses, float *lse, const void *logits,
					  const int *targets, int n, int v)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T,
		if (KC_XENT_V(T, logits, v))
			k_xent_fwd<T, 1><<<n, KC_THREADS, 0, cx->stream>>>(
				losses, lse, (const T *)logits, targets, v);
		else
			k_xent_fwd<T, 0><<<n, KC_THREADS, 0, cx->stream>>>(
				losses, lse, (const T *)logits, targets, v));
	KC_LAUNCHED("crossentropy_forward");
	return 0;
}

extern "C" int kcuda_crossentropy_backward(int dt, void *dlogits, const float *dlosses,
					   const void *logits, const float *lse,
					   const int *targets, int n, int v)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_xent_bwd<T><<<n, KC_THREADS, 0, cx->stream>>>(
		(T *)dlogits, dlosses, (const T *)logits, lse, targets, v));
	KC_LAUNCHED("crossentropy_backward");
	return 0;
}

extern "C" int kcuda_crossentropy_fused(int dt, float *losses, void *logits, const float *dlosses,
					const int *targets, int n, int v)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T,
		if (KC_XENT_V(T, logits, v))
			k_xent_fused<T, 1><<<n, KC_THREADS, 0, cx->stream>>>(
				losses, (T *)logits, dlosses, targets, v);
		else
			k_xent_fused<T, 0><<<n, KC_THREADS, 0, cx->stream>>>(
				losses, (T *)logits, dlosses, targets, v));
	KC_LAUNCHED("crossentropy_fused");
	return 0;
}
