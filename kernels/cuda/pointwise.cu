/* pointwise.cu: the element-by-element ops (residual, SwiGLU, LeakyReLU),
 * RoPE and the token embedding. Memory-bound: one pass over the data, fp32
 * arithmetic in registers, grid-stride loops. Not fused with the products
 * around them yet (cuBLASLt epilogues could take the bias and residual).
 */
#include "kernels/cuda/kc.cuh"

#include <math.h>

#define KC_FOR(i, n)                                                                   \
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);       \
	     i += (size_t)gridDim.x * blockDim.x)

/* Launch `kernel<T>` over n items with the storage type dt. */
#define KC_POINTWISE(dt, n, name, kernel, ...)                                        \
	do {                                                                          \
		KC_CTX(cx);                                                           \
		if ((n) == 0)                                                         \
			return 0;                                                     \
		KC_DISPATCH(dt, T, kernel<T><<<kc_blocks(n), KC_THREADS, 0, cx->stream>>>(__VA_ARGS__)); \
		KC_LAUNCHED(name);                                                    \
		return 0;                                                             \
	} while (0)

/* The same over 16-byte vectors (kc_vector): `kernel_v<T>` over n / N
 * vectors when n is a multiple of N and `aligned` holds, else `kernel<T>`
 * over n elements; the other arguments are the same. */
#define KC_POINTWISE_V(dt, n, aligned, name, kernel, kernel_v, ...)                  \
	do {                                                                          \
		KC_CTX(cx);                                                           \
		if ((n) == 0)                                                         \
			return 0;                                                     \
		KC_DISPATCH(dt, T,                                                    \
			if (kc_vector > 0 && (n) % kc_vec<T>::N == 0 && (aligned))        \
				kernel_v<T><<<kc_blocks((n) / kc_vec<T>::N), KC_THREADS, 0, \
					      cx->stream>>>(__VA_ARGS__, (n) / kc_vec<T>::N); \
			else                                                          \
				kernel<T><<<kc_blocks(n), KC_THREADS, 0, cx->stream>>>(   \
					__VA_ARGS__, (n)));                                   \
		KC_LAUNCHED(name);                                                    \
		return 0;                                                             \
	} while (0)

#define KC_V(T) kc_vec<T>::N

/* ---- residual --------------------------------------------------------- */

template <typename T>
__global__ void k_residual_fwd(T *out, const T *a, const T *b, size_t n)
{
	KC_FOR(i, n)
		out[i] = kc_st<T>(kc_ld(a[i]) + kc_ld(b[i]));
}

template <typename T>
__global__ void k_residual_fwd_v(T *out, const T *a, const T *b, size_t nv)
{
	KC_FOR(i, nv) {
		float x[KC_V(T)], y[KC_V(T)];
		kc_ldv(x, a + i * KC_V(T));
		kc_ldv(y, b + i * KC_V(T));
#pragma unroll
		for (int j = 0; j < KC_V(T); j++)
			x[j] += y[j];
		kc_stv(out + i * KC_V(T), x);
	}
}

/* p[0..N) += d[0..N) over one 16-byte vector. */
template <typename T>
static __device__ __forceinline__ void kc_accv(T *p, const float *d)
{
	float x[KC_V(T)];

	kc_ldv(x, p);
#pragma unroll
	for (int j = 0; j < KC_V(T); j++)
		x[j] += d[j];
	kc_stv(p, x);
}

template <typename T>
__global__ void k_residual_bwd_v(T *da, T *db, const T *dout, size_t nv)
{
	KC_FOR(i, nv) {
		float d[KC_V(T)];
		kc_ldv(d, dout + i * KC_V(T));
		if (da)
			kc_accv(da + i * KC_V(T), d);
		if (db)
			kc_accv(db + i * KC_V(T), d);
	}
}

template <typename T>
__global__ void k_residual_bwd(T *da, T *db, const T *dout, size_t n)
{
	KC_FOR(i, n) {
		float d = kc_ld(dout[i]);
		if (da)
			da[i] = kc_st<T>(kc_ld(da[i]) + d);
		if (db)
			db[i] = kc_st<T>(kc_ld(db[i]) + d);
	}
}

extern "C" int kcuda_residual_forward(int dt, void *out, const void *a, const void *b, size_t n)
{
	KC_POINTWISE_V(dt, n, kc_al16(out) && kc_al16(a) && kc_al16(b), "residual_forward",
		       k_residual_fwd, k_residual_fwd_v, (T *)out, (const T *)a, (const T *)b);
}

extern "C" int kcuda_residual_backward(int dt, void *da, void *db, const void *dout, size_t n)
{
	KC_POINTWISE_V(dt, n, kc_al16(da) && kc_al16(db) && kc_al16(dout), "residual_backward",
		       k_residual_bwd, k_residual_bwd_v, (T *)da, (T *)db, (const T *)dout);
}

/* ---- SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g) ---------- */

template <typename T>
__global__ void k_swiglu_fwd(T *out, const T *gate, const T *up, size_t n)
{
	KC_FOR(i, n) {
		float g = kc_ld(gate[i]);
		out[i] = kc_st<T>(g / (1.0f + expf(-g)) * kc_ld(up[i]));
	}
}

/* d silu(g)/dg = sig(g) (1 + g (1 - sig(g))). add: dgate, dup += the
 * gradients (the op); 0: = them (the _set op: nothing read, so the caller
 * need not zero the buffers first). */
template <typename T>
__global__ void k_swiglu_bwd(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
			     int add, size_t n)
{
	KC_FOR(i, n) {
		float g = kc_ld(gate[i]), d = kc_ld(dout[i]);
		float sig = 1.0f / (1.0f + expf(-g));
		if (dgate)
			dgate[i] = kc_st<T>((add ? kc_ld(dgate[i]) : 0.0f) +
					    d * kc_ld(up[i]) * sig * (1.0f + g * (1.0f - sig)));
		if (dup)
			dup[i] = kc_st<T>((add ? kc_ld(dup[i]) : 0.0f) + d * g * sig);
	}
}

template <typename T>
__global__ void k_swiglu_fwd_v(T *out, const T *gate, const T *up, size_t nv)
{
	KC_FOR(i, nv) {
		float g[KC_V(T)], u[KC_V(T)];
		kc_ldv(g, gate + i * KC_V(T));
		kc_ldv(u, up + i * KC_V(T));
#pragma unroll
		for (int j = 0; j < KC_V(T); j++)
			g[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
		kc_stv(out + i * KC_V(T), g);
	}
}

template <typename T>
__global__ void k_swiglu_bwd_v(T *dgate, T *dup, const T *dout, const T *gate, const T *up,
			       int add, size_t nv)
{
	KC_FOR(i, nv) {
		float g[KC_V(T)], u[KC_V(T)], d[KC_V(T)], x[KC_V(T)] = { 0.0f };
		size_t o = i * KC_V(T);
		kc_ldv(g, gate + o);
		kc_ldv(u, up + o);
		kc_ldv(d, dout + o);
		if (dgate) {
			if (add)
				kc_ldv(x, dgate + o);
#pragma unroll
			for (int j = 0; j < KC_V(T); j++) {
				float sig = 1.0f / (1.0f + expf(-g[j]));
				x[j] = (add ? x[j] : 0.0f) + d[j] * u[j] * sig * (1.0f + g[j] * (1.0f - sig));
			}
			kc_stv(dgate + o, x);
		}
		if (dup) {
			if (add)
				kc_ldv(x, dup + o);
#pragma unroll
			for (int j = 0; j < KC_V(T); j++)
				x[j] = (add ? x[j] : 0.0f) + d[j] * g[j] / (1.0f + expf(-g[j]));
			kc_stv(dup + o, x);
		}
	}
}

extern "C" int kcuda_swiglu_forward(int dt, void *out, const void *gate, const void *up, size_t n)
{
	KC_POINTWISE_V(dt, n, kc_al16(out) && kc_al16(gate) && kc_al16(up), "swiglu_forward",
		       k_swiglu_fwd, k_swiglu_fwd_v, (T *)out, (const T *)gate, (const T *)up);
}

static int s_swiglu_bwd(int dt, void *dgate, void *dup, const void *dout, const void *gate,
			const void *up, int add, size_t n)
{
	KC_POINTWISE_V(dt, n,
		       kc_al16(dgate) && kc_al16(dup) && kc_al16(dout) && kc_al16(gate) && kc_al16(up),
		       add ? "swiglu_backward" : "swiglu_backward_set", k_swiglu_bwd, k_swiglu_bwd_v,
		       (T *)dgate, (T *)dup, (const T *)dout, (const T *)gate, (const T *)up, add);
}

extern "C" int kcuda_swiglu_backward(int dt, void *dgate, void *dup, const void *dout,
				     const void *gate, const void *up, size_t n)
{
	return s_swiglu_bwd(dt, dgate, dup, dout, gate, up, 1, n);
}

extern "C" int kcuda_swiglu_backward_set(int dt, void *dgate, void *dup, const void *dout,
					 const void *gate, const void *up, size_t n)
{
	return s_swiglu_bwd(dt, dgate, dup, dout, gate, up, 0, n);
}

/* ---- LeakyReLU -------------------------------------------------------- */

template <typename T>
__global__ void k_leakyrelu_fwd(T *out, const T *inp, float slope, size_t n)
{
	KC_FOR(i, n) {
		float x = kc_ld(inp[i]);
		out[i] = kc_st<T>(x > 0.0f ? x : slope * x);
	}
}

template <typename T>
__global__ void k_leakyrelu_bwd(T *dinp, const T *dout, const T *inp, float slope, size_t n)
{
	KC_FOR(i, n) {
		float d = kc_ld(dout[i]);
		dinp[i] = kc_st<T>(kc_ld(dinp[i]) + (kc_ld(inp[i]) > 0.0f ? d : slope * d));
	}
}

extern "C" int kcuda_leakyrelu_forward(int dt, void *out, const void *inp, float slope, size_t n)
{
	KC_POINTWISE(dt, n, "leakyrelu_forward", k_leakyrelu_fwd, (T *)out, (const T *)inp,
		     slope, n);
}

extern "C" int kcuda_leakyrelu_backward(int dt, void *dinp, const void *dout, const void *inp,
					float slope, size_t n)
{
	KC_POINTWISE(dt, n, "leakyrelu_backward", k_leakyrelu_bwd, (T *)dinp, (const T *)dout,
		     (const T *)inp, slope, n);
}

/* ---- RoPE (Hugging Face rotate-half) ---------------------------------- */

/* As Hugging Face (and op_rope_table) compute it: inv_freq rounded to fp32,
 * the angle a product in fp32, then its cosine and sine. */
__global__ void k_rope_table(float *cosv, float *sinv, int t, int hs, int pos0, float theta)
{
	int half = hs / 2;

	KC_FOR(i, (size_t)t * half) {
		int p = (int)(i / half), j = (int)(i % half);
		float inv = (float)(1.0 / pow((double)theta, (double)(2 * j) / hs));
		float ang = (float)(pos0 + p) * inv;
		cosv[i] = cosf(ang);
		sinv[i] = sinf(ang);
	}
}

extern "C" int kcuda_rope_table(float *cosv, float *sinv, int t, int hs, int pos0, float theta)
{
	size_t n = (size_t)t * (hs / 2);

	KC_CTX(cx);
	if (n == 0)
		return 0;
	k_rope_table<<<kc_blocks(n), KC_THREADS, 0, cx->stream>>>(cosv, sinv, t, hs, pos0, theta);
	KC_LAUNCHED("rope_table");
	return 0;
}

/* One thread per rotated pair (x_j, x_{j+h}) of one head at one position;
 * dir = +1 rotates by the angle (forward), -1 by its opposite (backward). */
template <typename T>
__global__ void k_rope(T *x, const float *cosv, const float *sinv, int b, int t, int nh, int hs,
		       float dir)
{
	int half = hs / 2;

	KC_FOR(i, (size_t)b * t * nh * half) {
		int j = (int)(i % half);
		size_t row = i / half; /* (b, t, h) */
		int p = (int)(row / nh % t);
		T *xr = x + row * hs;
		float c = cosv[(size_t)p * half + j], s = dir * sinv[(size_t)p * half + j];
		float x0 = kc_ld(xr[j]), x1 = kc_ld(xr[j + half]);
		xr[j] = kc_st<T>(x0 * c - x1 * s);
		xr[j + half] = kc_st<T>(x1 * c + x0 * s);
	}
}

/* The same over 16-byte vectors: a thread rotates N pairs (x_j..x_{j+N-1}
 * with x_{j+h}..), the angles' cosines and sines read as float4s; the same
 * arithmetic as k_rope. Needs hs / 2 a multiple of N and 16-byte aligned x,
 * cosv and sinv (the rows of the tables are then aligned too). */
template <typename T>
__global__ void k_rope_v(T *x, const float *cosv, const float *sinv, int b, int t, int nh, int hs,
			 float dir)
{
	const int N = KC_V(T);
	int half = hs / 2, nv = half / N;

	KC_FOR(i, (size_t)b * t * nh * nv) {
		int j = (int)(i % nv) * N;
		size_t row = i / nv; /* (b, t, h) */
		int p = (int)(row / nh % t);
		T *xr = x + row * hs;
		const float4 *cp = reinterpret_cast<const float4 *>(cosv + (size_t)p * half + j);
		const float4 *sp = reinterpret_cast<const float4 *>(sinv + (size_t)p * half + j);
		float x0[KC_V(T)], x1[KC_V(T)], c[KC_V(T)], sn[KC_V(T)];
		kc_ldv(x0, xr + j);
		kc_ldv(x1, xr + j + half);
#pragma unroll
		for (int e = 0; e < N / 4; e++) {
			float4 cv = cp[e], sv = sp[e];
			c[4 * e] = cv.x, c[4 * e + 1] = cv.y, c[4 * e + 2] = cv.z, c[4 * e + 3] = cv.w;
			sn[4 * e] = sv.x, sn[4 * e + 1] = sv.y, sn[4 * e + 2] = sv.z, sn[4 * e + 3] = sv.w;
		}
#pragma unroll
		for (int e = 0; e < N; e++) {
			float s = dir * sn[e], y0 = x0[e] * c[e] - x1[e] * s;
			x1[e] = x1[e] * c[e] + x0[e] * s;
			x0[e] = y0;
		}
		kc_stv(xr + j, x0);
		kc_stv(xr + j + half, x1);
	}
}

static int s_rope(int dt, void *x, const float *cosv, const float *sinv, int b, int t, int nh,
		  int hs, float dir)
{
	size_t n = (size_t)b * t * nh * (hs / 2);
	int wide = kc_vector > 0 && kc_al16(x) && kc_al16(cosv) && kc_al16(sinv);

	KC_CTX(cx);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T,
		if (wide && (hs / 2) % KC_V(T) == 0)
			k_rope_v<T><<<kc_blocks(n / KC_V(T)), KC_THREADS, 0, cx->stream>>>(
				(T *)x, cosv, sinv, b, t, nh, hs, dir);
		else
			k_rope<T><<<kc_blocks(n), KC_THREADS, 0, cx->stream>>>(
				(T *)x, cosv, sinv, b, t, nh, hs, dir));
	KC_LAUNCHED(dir > 0 ? "rope_forward" : "rope_backward");
	return 0;
}

extern "C" int kcuda_rope_forward(int dt, void *x, const float *cosv, const float *sinv, int b,
				  int t, int nh, int hs)
{
	return s_rope(dt, x, cosv, sinv, b, t, nh, hs, 1.0f);
}

extern "C" int kcuda_rope_backward(int dt, void *dx, const float *cosv, const float *sinv, int b,
				   int t, int nh, int hs)
{
	return s_rope(dt, dx, cosv, sinv, b, t, nh, hs, -1.0f);
}

/* ---- token embedding -------------------------------------------------- */

template <typename T>
__global__ void k_embedding_fwd(T *out, const int *tok, const T *wte, int n, int c)
{
	KC_FOR(i, (size_t)n * c)
		out[i] = wte[(size_t)tok[i / c] * c + i % c];
}

template <typename T>
__global__ void k_embedding_bwd(float *dwte, const T *dout, const int *tok, int n, int c)
{
	KC_FOR(i, (size_t)n * c)
		atomicAdd(&dwte[(size_t)tok[i / c] * c + i % c], kc_ld(dout[i]));
}

extern "C" int kcuda_embedding_forward(int dt, void *out, const int *tok, const void *wte, int n,
				       int c)
{
	size_t len = (size_t)n * c;

	KC_POINTWISE(dt, len, "embedding_forward", k_embedding_fwd, (T *)out, tok,
		     (const T *)wte, n, c);
}

extern "C" int kcuda_embedding_backward(int dt, float *dwte, const void *dout, const int *tok,
					int n, int c)
{
	size_t len = (size_t)n * c;

	KC_POINTWISE(dt, len, "embedding_backward", k_embedding_bwd, dwte, (const T *)dout, tok,
		     n, c);
}
