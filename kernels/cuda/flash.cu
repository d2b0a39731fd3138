/* flash.cu: causal grouped-query attention as tiled kernels on the tensor
 * cores, the scores never leaving the registers: FlashAttention-2's scheme
 * (Dao 2023), written from the paper, not from its code.
 *
 * Same contract as attention.cu's cuBLAS path (kcuda_attention_forward and
 * _backward call in here when kc_flash_usable): [B,T,H,HS] tensors, scale
 * 1/sqrt(HS), lse of the scaled scores saved per (b, h, i) row, gradients
 * added into dq, dk, dv (or written: `add` 0). For the 16-bit storage types
 * and HS of 64 or 128.
 *
 * The products are warp-level mma.sync m16n8k16 (kc_mma.cuh: bf16/f16 in,
 * fp32 accumulators), their operands read from shared-memory tiles by
 * ldmatrix. A warp owns 16 rows of a block's 64; the [16, 64] scores of a
 * tile stay in the accumulators (lane: rows g and g + 8, columns 2 (lane %
 * 4) and +1 of each 8-wide column tile), whose layout is the A operand's of
 * the next product, so P (or dS) goes from scores to a product's input in
 * registers, rounded to the storage type as the cuBLAS path rounds it. Row
 * maxima and sums are over the 4 lanes of a row (two shuffles). Exponents
 * are base 2 of the scores times scale log2(e).
 *
 * Forward (k_flash_fwd), a block per (64 query rows, b, h), 4 warps; per
 * tile of 64 keys up to the diagonal:
 *     S = Q K^T; m' = max(m, rowmax S); P = 2^(S - m'); l = l 2^(m-m') + rowsum P
 *     O = O 2^(m-m') + P V
 * and at the end O / l, lse = (m + log2 l) ln 2.
 *
 * Backward, from D = rowsum(dO o O) (k_flash_dot), in two kernels so that
 * no two blocks add into the same output (deterministic, no atomics):
 *   k_flash_dq   a block per (64 query rows, b, h): per key tile,
 *                S = Q K^T, dP = dO V^T, dS = P (dP - D), dQ += scale dS K;
 *   k_flash_dkv  a block per (64 keys, b, h), per query tile from the
 *                diagonal: S^T = K Q^T, P^T, dV_h += P^T dO, dP^T = V dO^T,
 *                dS^T, dK_h += dS^T Q, into fp32 per-query-head partials;
 *   k_flash_gqa  dK += scale sum_h dK_h, dV += sum_h dV_h over the query
 *                heads of each kv head, in head order.
 * S and dP are computed twice (once per kernel): 7 products for the
 * backward's 5, bought for determinism and a grid of B x NH blocks wide.
 *
 * Tiles of Q, K, V and dO go to shared memory as 16-byte cp.async copies,
 * rows beyond T as zeros, the next tile's copies in flight while the
 * current one is computed (two buffers); masked scores are -inf in the
 * forward and their P exactly 0 in the backward. Registers are capped so
 * that 4 (forward, dQ) and 3 (dK/dV) blocks fit an SM at head size 64.
 */
#include "kernels/cuda/kc.cuh"
#include "kernels/cuda/kc_mma.cuh"

#include <float.h>
#include <math.h>

#define FL_TILE 64    /* query rows of a block, and keys of a tile */
#define FL_WARPS 4    /* 16 rows each */
#define FL_THREADS (32 * FL_WARPS)
#define FL_LOG2E 1.4426950408889634f
#define FL_LN2 0.6931471805599453f

int kc_flash = -1; /* kc.cuh; -1 until set or read from the environment */

/* Shared-memory tiles of 64 rows of HS 16-bit elements, rows HS + 8 apart:
 * the 16-byte pad puts ldmatrix's 8 rows in different banks. */
template <int HS> struct fl_shape {
	enum {
		LD = HS + 8,
		TILE = FL_TILE * LD,
	};
};

/* Rows r0 .. r0 + 63 of one head ([B,T,H,HS] from element (b, 0, h, 0),
 * rows `stride` elements apart) into a [64, LD] tile, as cp.async copies
 * (the group committed by the caller); rows >= t are zero-filled (their
 * source address is the head's row 0, not read). */
template <typename T, int HS>
static __device__ __forceinline__ void fl_tile_async(T *dst, const T *head, size_t stride, int r0,
						     int t)
{
	constexpr int VPR = HS * (int)sizeof(T) / 16;
	for (int e = threadIdx.x; e < FL_TILE * VPR; e += FL_THREADS) {
		int r = e / VPR, c = e % VPR, in = r0 + r < t;
		const T *src = head + (size_t)(in ? r0 + r : 0) * stride + c * (16 / (int)sizeof(T));
		kc_cp16(dst + r * fl_shape<HS>::LD + c * (16 / (int)sizeof(T)), src, in ? 16 : 0);
	}
}

/* The forward's and dQ's pipeline at key tile kb of 0 .. last: the K and
 * V tiles of kb + 1 copied into the other buffers of sk and sv (two tiles
 * each) while this thread's copies of kb are waited for (the caller's
 * barrier then makes every thread's visible). */
template <typename T, int HS>
static __device__ __forceinline__ void fl_kv_next(T *sk, T *sv, const T *kh, const T *vh,
						  size_t ks, int kb, int last, int t)
{
	if (kb < last) {
		int nb = (kb + 1) & 1;
		fl_tile_async<T, HS>(sk + nb * fl_shape<HS>::TILE, kh, ks, (kb + 1) * FL_TILE, t);
		fl_tile_async<T, HS>(sv + nb * fl_shape<HS>::TILE, vh, ks, (kb + 1) * FL_TILE, t);
		kc_cp_commit();
		kc_cp_wait<1>(); /* the next tile's copies fly while this one is computed */
	} else {
		kc_cp_wait<0>();
	}
}

/* s[8][4] += A X^T: A the warp's rows r0 .. r0 + 15 of tile `at`, X the
 * [64, HS] tile x (its rows the columns of s: s[j] holds columns 8j ..
 * 8j + 7). */
template <typename T, int HS>
static __device__ __forceinline__ void fl_abt(float (&s)[8][4], const T *at, int r0, const T *x)
{
	const int lane = threadIdx.x % 32;
#pragma unroll
	for (int kk = 0; kk < HS / 16; kk++) {
		uint32_t a[4];
		kc_ldsm4(a, at + (r0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * fl_shape<HS>::LD + kk * 16 +
				    8 * (lane >> 4));
#pragma unroll
		for (int np = 0; np < 4; np++) {
			uint32_t bb[4];
			kc_ldsm4(bb, x + (16 * np + (lane & 7) + 8 * (lane >> 4)) * fl_shape<HS>::LD +
					     kk * 16 + 8 * ((lane >> 3) & 1));
			kc_mma<T>(s[2 * np], a, bb[0], bb[1]);
			kc_mma<T>(s[2 * np + 1], a, bb[2], bb[3]);
		}
	}
}

/* acc[HS/8][4] += P Z: P [16, 64] as A fragments (pa[kk]: columns 16kk ..
 * 16kk + 15), Z the [64, HS] tile z (acc[d] holds columns 8d .. 8d + 7). */
template <typename T, int HS>
static __device__ __forceinline__ void fl_pz(float (&acc)[HS / 8][4], const uint32_t (&pa)[4][4],
					     const T *z)
{
	const int lane = threadIdx.x % 32;
#pragma unroll
	for (int kk = 0; kk < 4; kk++) {
#pragma unroll
		for (int dp = 0; dp < HS / 16; dp++) {
			uint32_t bb[4];
			kc_ldsm4t(bb, z + (16 * kk + (lane & 7) + 8 * ((lane >> 3) & 1)) * fl_shape<HS>::LD +
					      16 * dp + 8 * (lane >> 4));
			kc_mma<T>(acc[2 * dp], pa[kk], bb[0], bb[1]);
			kc_mma<T>(acc[2 * dp + 1], pa[kk], bb[2], bb[3]);
		}
	}
}

/* The accumulators of a [16, 64] product as the A fragments of the next,
 * rounded to T. */
template <typename T>
static __device__ __forceinline__ void fl_pack(uint32_t (&pa)[4][4], const float (&p)[8][4])
{
#pragma unroll
	for (int kk = 0; kk < 4; kk++) {
		pa[kk][0] = kc_pack2<T>(p[2 * kk][0], p[2 * kk][1]);
		pa[kk][1] = kc_pack2<T>(p[2 * kk][2], p[2 * kk][3]);
		pa[kk][2] = kc_pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
		pa[kk][3] = kc_pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
	}
}

template <int R, int C> static __device__ __forceinline__ void fl_zero(float (&a)[R][C])
{
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int c = 0; c < C; c++)
			a[r][c] = 0.0f;
}

template <typename T, int HS>
__global__ void __launch_bounds__(FL_THREADS, HS == 64 ? 4 : 2)
k_flash_fwd(T *out, float *lse, const T *q, const T *k, const T *v, int t, int nh, int nkv,
	    float scale)
{
	typedef fl_shape<HS> S;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	T *sq = (T *)fl_smem, *sk = sq + S::TILE, *sv = sk + 2 * S::TILE; /* K, V: two each */
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, c = 2 * (lane % 4);
	const int qb = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
	const int b = blockIdx.y / nh, h = blockIdx.y % nh, kvh = h / (nh / nkv);
	const size_t qs = (size_t)nh * HS, ks = (size_t)nkv * HS;
	const T *kh = k + (size_t)b * t * ks + kvh * HS, *vh = v + (size_t)b * t * ks + kvh * HS;
	const int r0 = warp * 16, i0 = qb * FL_TILE + r0 + lane / 4; /* rows i0, i0 + 8 */
	const float sl2 = scale * FL_LOG2E;
	float o[HS / 8][4], m[2] = { -INFINITY, -INFINITY }, l[2] = { 0.0f, 0.0f };

	fl_zero(o);
	fl_tile_async<T, HS>(sq, q + (size_t)b * t * qs + h * HS, qs, qb * FL_TILE, t);
	fl_tile_async<T, HS>(sk, kh, ks, 0, t);
	fl_tile_async<T, HS>(sv, vh, ks, 0, t);
	kc_cp_commit();
	for (int kb = 0; kb <= qb; kb++) {
		const int j0 = kb * FL_TILE;
		const T *ck = sk + (kb & 1) * S::TILE, *cv = sv + (kb & 1) * S::TILE;
		float s[8][4], mx[2] = { m[0], m[1] }, alpha[2];
		uint32_t pa[4][4];

		fl_kv_next<T, HS>(sk, sv, kh, vh, ks, kb, qb, t);
		__syncthreads();
		fl_zero(s);
		fl_abt<T, HS>(s, sq, r0, ck);
#pragma unroll
		for (int j = 0; j < 8; j++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = i0 + 8 * (e >> 1), jj = j0 + 8 * j + c + (e & 1);
				s[j][e] = jj <= i && jj < t ? s[j][e] * sl2 : -INFINITY;
				mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
			}
		/* key j0 <= i is always in: the maxima are finite */
#pragma unroll
		for (int r = 0; r < 2; r++) {
			mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
			mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
			alpha[r] = exp2f(m[r] - mx[r]);
			m[r] = mx[r];
			l[r] *= alpha[r];
		}
#pragma unroll
		for (int j = 0; j < 8; j++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				s[j][e] = exp2f(s[j][e] - mx[e >> 1]);
				l[e >> 1] += s[j][e];
			}
#pragma unroll
		for (int d = 0; d < HS / 8; d++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				o[d][e] *= alpha[e >> 1];
		fl_pack<T>(pa, s);
		fl_pz<T, HS>(o, pa, cv);
		__syncthreads(); /* this buffer's readers are done before it is refilled */
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		int i = i0 + 8 * r;
		l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
		l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
		if (i >= t)
			continue;
		T *orow = out + ((size_t)b * t + i) * qs + h * HS;
		float inv = 1.0f / l[r];
#pragma unroll
		for (int d = 0; d < HS / 8; d++)
			kc_st2(orow + 8 * d + c, kc_pack2<T>(o[d][2 * r] * inv, o[d][2 * r + 1] * inv));
		if (lane % 4 == 0)
			lse[((size_t)b * nh + h) * t + i] = (m[r] + log2f(l[r])) * FL_LN2;
	}
}

/* D[(b, h, i)] = sum_d dO o O over row (b, i, h): HS / 8 lanes a row, 16
 * bytes each. */
template <typename T, int HS>
__global__ void k_flash_dot(float *dd, const T *dout, const T *out, size_t rows, int t, int nh)
{
	constexpr int N = kc_vec<T>::N, L = HS / N; /* lanes per row */
	size_t r = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / L;
	int sub = threadIdx.x % L;
	float s = 0.0f;

	if (r < rows) {
		float a[N], o[N];
		kc_ldv(a, dout + r * HS + sub * N);
		kc_ldv(o, out + r * HS + sub * N);
#pragma unroll
		for (int i = 0; i < N; i++)
			s += a[i] * o[i];
	}
#pragma unroll
	for (int m = L / 2; m; m >>= 1) /* every lane, in range or not */
		s += __shfl_xor_sync(0xffffffffu, s, m, L);
	if (r < rows && sub == 0) {
		size_t bi = r / nh; /* b * t + i */
		int h = (int)(r % nh), i = (int)(bi % t), b = (int)(bi / t);
		dd[((size_t)b * nh + h) * t + i] = s;
	}
}

template <typename T, int HS>
__global__ void __launch_bounds__(FL_THREADS, HS == 64 ? 4 : 2)
k_flash_dq(T *dq, const T *dout, const float *lse, const float *dd, const T *q, const T *k,
	   const T *v, int t, int nh, int nkv, float scale, int add)
{
	typedef fl_shape<HS> S;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	T *sq = (T *)fl_smem, *sdo = sq + S::TILE, *sk = sdo + S::TILE, *sv = sk + 2 * S::TILE;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, c = 2 * (lane % 4);
	const int qb = gridDim.x - 1 - blockIdx.x;
	const int b = blockIdx.y / nh, h = blockIdx.y % nh, kvh = h / (nh / nkv);
	const size_t qs = (size_t)nh * HS, ks = (size_t)nkv * HS;
	const T *kh = k + (size_t)b * t * ks + kvh * HS, *vh = v + (size_t)b * t * ks + kvh * HS;
	const size_t rowl = ((size_t)b * nh + h) * t; /* lse and D of (b, h, 0) */
	const int r0 = warp * 16, i0 = qb * FL_TILE + r0 + lane / 4;
	const float sl2 = scale * FL_LOG2E;
	float acc[HS / 8][4], lr[2], dr[2];

	fl_tile_async<T, HS>(sq, q + (size_t)b * t * qs + h * HS, qs, qb * FL_TILE, t);
	fl_tile_async<T, HS>(sdo, dout + (size_t)b * t * qs + h * HS, qs, qb * FL_TILE, t);
	fl_tile_async<T, HS>(sk, kh, ks, 0, t);
	fl_tile_async<T, HS>(sv, vh, ks, 0, t);
	kc_cp_commit();
#pragma unroll
	for (int r = 0; r < 2; r++) {
		int i = i0 + 8 * r;
		lr[r] = i < t ? lse[rowl + i] * FL_LOG2E : 0.0f;
		dr[r] = i < t ? dd[rowl + i] : 0.0f;
	}
	fl_zero(acc);
	for (int kb = 0; kb <= qb; kb++) {
		const int j0 = kb * FL_TILE;
		const T *ck = sk + (kb & 1) * S::TILE, *cv = sv + (kb & 1) * S::TILE;
		float s[8][4], dp[8][4];
		uint32_t pa[4][4];

		fl_kv_next<T, HS>(sk, sv, kh, vh, ks, kb, qb, t);
		__syncthreads();
		fl_zero(s);
		fl_zero(dp);
		fl_abt<T, HS>(s, sq, r0, ck);
		fl_abt<T, HS>(dp, sdo, r0, cv);
#pragma unroll
		for (int j = 0; j < 8; j++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = i0 + 8 * (e >> 1), jj = j0 + 8 * j + c + (e & 1);
				float p = jj <= i && jj < t && i < t
					? exp2f(s[j][e] * sl2 - lr[e >> 1]) : 0.0f;
				s[j][e] = p * (dp[j][e] - dr[e >> 1]);
			}
		fl_pack<T>(pa, s);
		fl_pz<T, HS>(acc, pa, ck);
		__syncthreads();
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		int i = i0 + 8 * r;
		if (i >= t)
			continue;
		T *row = dq + ((size_t)b * t + i) * qs + h * HS;
#pragma unroll
		for (int d = 0; d < HS / 8; d++) {
			float x0 = scale * acc[d][2 * r], x1 = scale * acc[d][2 * r + 1];
			if (add)
				x0 += kc_ld(row[8 * d + c]), x1 += kc_ld(row[8 * d + c + 1]);
			kc_st2(row + 8 * d + c, kc_pack2<T>(x0, x1));
		}
	}
}

/* The keys' side for one query head: dK_h, dV_h (fp32, [B,T,NH,HS],
 * unscaled) of the 64 keys of the block. */
template <typename T, int HS>
__global__ void __launch_bounds__(FL_THREADS, HS == 64 ? 3 : 1)
k_flash_dkv(float *pk, float *pv, const T *dout, const float *lse, const float *dd, const T *q,
	    const T *k, const T *v, int t, int nh, int nkv)
{
	typedef fl_shape<HS> S;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	/* K, V; Q, dO, and lse (base 2) and D of their rows, two of each */
	T *sk = (T *)fl_smem, *sv = sk + S::TILE, *sq = sv + S::TILE, *sdo = sq + 2 * S::TILE;
	float *sl = (float *)(sdo + 2 * S::TILE), *sd = sl + 2 * FL_TILE;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, c = 2 * (lane % 4);
	const int kb = blockIdx.x; /* the most query tiles first */
	const int b = blockIdx.y / nh, h = blockIdx.y % nh, kvh = h / (nh / nkv);
	const size_t qs = (size_t)nh * HS, ks = (size_t)nkv * HS;
	const T *qh = q + (size_t)b * t * qs + h * HS, *dh = dout + (size_t)b * t * qs + h * HS;
	const size_t rowl = ((size_t)b * nh + h) * t;
	const int r0 = warp * 16, j0 = kb * FL_TILE + r0 + lane / 4; /* keys j0, j0 + 8 */
	const int nqb = (t + FL_TILE - 1) / FL_TILE;
	const float scale = 1.0f / sqrtf((float)HS), sl2 = scale * FL_LOG2E;
	float dk[HS / 8][4], dv[HS / 8][4];

	fl_tile_async<T, HS>(sk, k + (size_t)b * t * ks + kvh * HS, ks, kb * FL_TILE, t);
	fl_tile_async<T, HS>(sv, v + (size_t)b * t * ks + kvh * HS, ks, kb * FL_TILE, t);
	fl_tile_async<T, HS>(sq, qh, qs, kb * FL_TILE, t);
	fl_tile_async<T, HS>(sdo, dh, qs, kb * FL_TILE, t);
	kc_cp_commit();
	for (int e = threadIdx.x; e < FL_TILE; e += FL_THREADS) {
		int i = kb * FL_TILE + e;
		sl[e] = i < t ? lse[rowl + i] * FL_LOG2E : 0.0f;
		sd[e] = i < t ? dd[rowl + i] : 0.0f;
	}
	fl_zero(dk);
	fl_zero(dv);
	for (int qb = kb; qb < nqb; qb++) {
		const int q0 = qb * FL_TILE, cur = (qb - kb) & 1;
		const T *cq = sq + cur * S::TILE, *cdo = sdo + cur * S::TILE;
		const float *csl = sl + cur * FL_TILE, *csd = sd + cur * FL_TILE;
		float st[8][4], dpt[8][4];
		uint32_t pa[4][4];

		if (qb + 1 < nqb) {
			fl_tile_async<T, HS>(sq + (cur ^ 1) * S::TILE, qh, qs, q0 + FL_TILE, t);
			fl_tile_async<T, HS>(sdo + (cur ^ 1) * S::TILE, dh, qs, q0 + FL_TILE, t);
			kc_cp_commit();
			for (int e = threadIdx.x; e < FL_TILE; e += FL_THREADS) {
				int i = q0 + FL_TILE + e;
				sl[(cur ^ 1) * FL_TILE + e] = i < t ? lse[rowl + i] * FL_LOG2E : 0.0f;
				sd[(cur ^ 1) * FL_TILE + e] = i < t ? dd[rowl + i] : 0.0f;
			}
			kc_cp_wait<1>();
		} else {
			kc_cp_wait<0>();
		}
		__syncthreads();
		fl_zero(st);
		fl_zero(dpt);
		fl_abt<T, HS>(st, sk, r0, cq);   /* S^T: the warp's keys x 64 queries */
		fl_abt<T, HS>(dpt, sv, r0, cdo); /* dP^T */
#pragma unroll
		for (int j = 0; j < 8; j++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int key = j0 + 8 * (e >> 1), col = 8 * j + c + (e & 1), i = q0 + col;
				float p = key <= i && i < t && key < t
					? exp2f(st[j][e] * sl2 - csl[col]) : 0.0f;
				st[j][e] = p;
				dpt[j][e] = p * (dpt[j][e] - csd[col]);
			}
		fl_pack<T>(pa, st);
		fl_pz<T, HS>(dv, pa, cdo); /* dV_h += P^T dO */
		fl_pack<T>(pa, dpt);
		fl_pz<T, HS>(dk, pa, cq);  /* dK_h += dS^T Q */
		__syncthreads();
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		int j = j0 + 8 * r;
		if (j >= t)
			continue;
		float *rk = pk + ((size_t)b * t + j) * qs + h * HS, *rv = pv + ((size_t)b * t + j) * qs + h * HS;
#pragma unroll
		for (int d = 0; d < HS / 8; d++) {
			kc_st2f(rk + 8 * d + c, dk[d][2 * r], dk[d][2 * r + 1]);
			kc_st2f(rv + 8 * d + c, dv[d][2 * r], dv[d][2 * r + 1]);
		}
	}
}

/* dk[b, j, kvh] += scale sum_h pk[b, j, h], dv += sum_h pv, over the g
 * query heads h of kv head kvh, in order; one thread per element (add 0:
 * = instead of +=). */
template <typename T>
__global__ void k_flash_gqa(T *dk, T *dv, const float *pk, const float *pv, size_t n, int nkv,
			    int g, int hs, float scale, int add)
{
	for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
	     e += (size_t)gridDim.x * blockDim.x) {
		size_t bj = e / ((size_t)nkv * hs);
		int rest = (int)(e % ((size_t)nkv * hs)), kvh = rest / hs, d = rest % hs;
		const size_t src = (bj * nkv * g + (size_t)kvh * g) * hs + d;
		float sk = 0.0f, sv = 0.0f;
		for (int gh = 0; gh < g; gh++) {
			sk += pk[src + (size_t)gh * hs];
			sv += pv[src + (size_t)gh * hs];
		}
		if (dk)
			dk[e] = kc_st<T>((add ? kc_ld(dk[e]) : 0.0f) + scale * sk);
		if (dv)
			dv[e] = kc_st<T>((add ? kc_ld(dv[e]) : 0.0f) + sv);
	}
}

/* ---- host side ------------------------------------------------------- */

template <int HS> static size_t fl_fwd_smem(size_t es)
{
	return 5 * fl_shape<HS>::TILE * es;
}

template <int HS> static size_t fl_dq_smem(size_t es)
{
	return 6 * fl_shape<HS>::TILE * es;
}

template <int HS> static size_t fl_dkv_smem(size_t es)
{
	return 6 * fl_shape<HS>::TILE * es + 4 * FL_TILE * sizeof(float);
}

/* The most shared memory any of the three kernels asks for. */
template <int HS> static size_t fl_smem_max(size_t es)
{
	size_t a = fl_fwd_smem<HS>(es), b = fl_dq_smem<HS>(es), c = fl_dkv_smem<HS>(es);

	return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

/* Launch a flash kernel with `smem` bytes of dynamic shared memory (more
 * than the default 48 KiB is asked for once per kernel). */
template <typename K, typename... A>
static int fl_launch(K kernel, dim3 grid, size_t smem, const char *name, A... args)
{
	static const void *done[32]; /* the kernels whose limit is set */
	static size_t done_smem[32];
	struct kc_ctx *cx = kc_get();
	int i;

	if (!cx)
		return -1;
	for (i = 0; i < 32 && done[i] && done[i] != (const void *)kernel; i++)
		;
	if (i == 32 || !done[i] || done_smem[i] < smem) {
		KC_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
		/* as much of the SM's memory as shared memory as it gives: more
		 * blocks at once (these kernels go through no L1-cached loads) */
		KC_CK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
					   cudaSharedmemCarveoutMaxShared));
		if (i < 32)
			done[i] = (const void *)kernel, done_smem[i] = smem;
	}
	kernel<<<grid, FL_THREADS, smem, cx->stream>>>(args...);
	KC_LAUNCHED(name);
	return 0;
}

/* The backward's scratch: D [B NH T] and the per-query-head dK, dV
 * partials [B T NH HS] in fp32. Kept between calls like the cuBLAS path's
 * scores (a CUDA graph records these addresses); a growth marks recorded
 * graphs stale and is refused inside a capture. */
static float *s_fl_work;
static size_t s_fl_cap; /* floats */

static float *s_fl_scratch(size_t n)
{
	if (n > s_fl_cap) {
		size_t cap = n > s_fl_cap + s_fl_cap / 2 ? n : s_fl_cap + s_fl_cap / 2;
		if (kcuda_capturing()) {
			err_set("flash attention needs more scratch inside a CUDA graph capture");
			return NULL;
		}
		kc_free(s_fl_work);
		s_fl_work = NULL, s_fl_cap = 0;
		kc_pc_epoch++;
		if (!(s_fl_work = (float *)kc_alloc(cap * sizeof(float)))) {
			err_prefix("flash attention's backward scratch (%zu floats)", cap);
			return NULL;
		}
		s_fl_cap = cap;
	}
	return s_fl_work;
}

/* The most dynamic shared memory a block may ask for on this GPU: 0 when
 * it cannot be read or the GPU is older than sm_80 (no bf16 mma.sync, no
 * cp.async): then no flash. */
static size_t fl_smem_limit(void)
{
	static int limit = -1;

	if (limit < 0) {
		int dev = 0, v = 0, major = 0;
		if (cudaGetDevice(&dev) != cudaSuccess ||
		    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
		    major < 8 ||
		    cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
			v = 0;
		limit = v;
	}
	return (size_t)limit;
}

int kc_flash_usable(int dt, int b, int hs, int nh, int nkv, const void *const *ptrs, int nptrs)
{
	size_t need, es = kcuda_dtype_size(dt);

	if (kc_flash <= 0 || (dt != KCUDA_BF16 && dt != KCUDA_F16) || (hs != 64 && hs != 128) ||
	    nkv <= 0 || nh % nkv || (size_t)b * nh > 65535 /* grid.y */)
		return 0;
	for (int i = 0; i < nptrs; i++)
		if (ptrs[i] && !kc_al16(ptrs[i]))
			return 0;
	/* (103 KiB at head size 128: every GPU since sm_80 but sm_86/89 gives
	 * that; the cuBLAS path runs there) */
	need = hs == 64 ? fl_smem_max<64>(es) : fl_smem_max<128>(es);
	return need <= fl_smem_limit();
}

template <typename T, int HS>
static int fl_forward(void *out, float *lse, const void *q, const void *k, const void *v, int b,
		      int t, int nh, int nkv)
{
	dim3 grid((t + FL_TILE - 1) / FL_TILE, (unsigned)(b * nh));

	return fl_launch(k_flash_fwd<T, HS>, grid, fl_fwd_smem<HS>(sizeof(T)), "flash_attention_forward",
			 (T *)out, lse, (const T *)q, (const T *)k, (const T *)v, t, nh, nkv,
			 1.0f / sqrtf((float)HS));
}

template <typename T, int HS>
static int fl_backward(int add, void *dq, void *dk, void *dv, const void *dout, const void *out,
		       const float *lse, const void *q, const void *k, const void *v, int b, int t,
		       int nh, int nkv)
{
	size_t rows = (size_t)b * t * nh, nq = rows * HS, nk = (size_t)b * t * nkv * HS;
	int nt = (t + FL_TILE - 1) / FL_TILE;
	float scale = 1.0f / sqrtf((float)HS), *dd, *pk, *pv;
	struct kc_ctx *cx = kc_get();

	/* the partials 256-byte aligned whatever B T NH is: k_flash_dkv
	 * stores them as float2 */
	size_t rows_al = (rows + 63) & ~(size_t)63;

	if (!cx || !(dd = s_fl_scratch(rows_al + (dk || dv ? 2 * nq : 0))))
		return -1;
	pk = dd + rows_al, pv = pk + nq;
	k_flash_dot<T, HS><<<(unsigned)((rows * (HS / kc_vec<T>::N) + KC_THREADS - 1) / KC_THREADS),
			     KC_THREADS, 0, cx->stream>>>(
		dd, (const T *)dout, (const T *)out, rows, t, nh);
	KC_LAUNCHED("flash_attention_dot");
	if (dq && fl_launch(k_flash_dq<T, HS>, dim3(nt, (unsigned)(b * nh)), fl_dq_smem<HS>(sizeof(T)),
			    "flash_attention_dq", (T *)dq, (const T *)dout, (const float *)lse,
			    (const float *)dd, (const T *)q, (const T *)k, (const T *)v, t, nh, nkv,
			    scale, add) < 0)
		return -1;
	if (!dk && !dv)
		return 0;
	if (fl_launch(k_flash_dkv<T, HS>, dim3(nt, (unsigned)(b * nh)), fl_dkv_smem<HS>(sizeof(T)),
		      "flash_attention_dkv", pk, pv, (const T *)dout, (const float *)lse,
		      (const float *)dd, (const T *)q, (const T *)k, (const T *)v, t, nh, nkv) < 0)
		return -1;
	k_flash_gqa<T><<<kc_blocks(nk), KC_THREADS, 0, cx->stream>>>((T *)dk, (T *)dv, pk, pv, nk,
								    nkv, nh / nkv, HS, scale, add);
	KC_LAUNCHED("flash_attention_gqa");
	return 0;
}

#define FL_DISPATCH(dt, hs, call)                                                      \
	do {                                                                           \
		if ((dt) == KCUDA_BF16 && (hs) == 64) {                                \
			typedef __nv_bfloat16 T; enum { HS = 64 }; return call;          \
		} else if ((dt) == KCUDA_BF16 && (hs) == 128) {                        \
			typedef __nv_bfloat16 T; enum { HS = 128 }; return call;         \
		} else if ((dt) == KCUDA_F16 && (hs) == 64) {                          \
			typedef __half T; enum { HS = 64 }; return call;                 \
		} else if ((dt) == KCUDA_F16 && (hs) == 128) {                         \
			typedef __half T; enum { HS = 128 }; return call;                \
		}                                                                      \
		return err_set("flash attention: no kernel for storage type %d and head size %d", \
			       (dt), (hs));                                            \
	} while (0)

int kc_flash_forward(int dt, void *out, float *lse, const void *q, const void *k, const void *v,
		     int b, int t, int nh, int nkv, int hs)
{
	FL_DISPATCH(dt, hs, (fl_forward<T, HS>(out, lse, q, k, v, b, t, nh, nkv)));
}

int kc_flash_backward(int add, int dt, void *dq, void *dk, void *dv, const void *dout,
		      const void *out, const float *lse, const void *q, const void *k, const void *v,
		      int b, int t, int nh, int nkv, int hs)
{
	FL_DISPATCH(dt, hs,
		    (fl_backward<T, HS>(add, dq, dk, dv, dout, out, lse, q, k, v, b, t, nh, nkv)));
}
