/* flash.cu: causal grouped-query attention as tiled kernels on the tensor
 * cores (WMMA, 16x16x16 bf16/fp16 products with fp32 accumulation), the
 * scores never leaving the streaming multiprocessor: FlashAttention-2's
 * scheme, written from the paper (Dao 2023), not from its code.
 *
 * Same contract as attention.cu's cuBLAS path (kcuda_attention_forward and
 * _backward call in here when kc_flash_usable): [B,T,H,HS] tensors, scale
 * 1/sqrt(HS), lse of the scaled scores saved per (b, h, i) row, gradients
 * added into dq, dk, dv. For the 16-bit storage types and HS of 64 or 128.
 *
 * Forward (k_flash_fwd), a block per (64 query rows, b, h), 4 warps of 16
 * rows; per tile of 64 keys up to the diagonal:
 *     S = Q K^T                    (WMMA, fp32, staged in the warp's shared rows)
 *     m' = max(m, rowmax(scale S)); P = exp(scale S - m'); l = l e^(m-m') + rowsum P
 *     O = O e^(m-m') + P V         (P rounded to the storage type, as the cuBLAS path does)
 * and at the end O / l, lse = m + log l. A lane owns columns lane + 32c of
 * its warp's 16 rows, so the row statistics are warp reductions and the
 * running O lives in registers.
 *
 * Backward, from D = rowsum(dO o O) (k_flash_dot), in two kernels so that
 * no two blocks add into the same output (deterministic, no atomics):
 *   k_flash_dq   a block per (64 query rows, b, h): per key tile,
 *                S = Q K^T, dP = dO V^T, dS = P (dP - D), dQ += scale dS K;
 *   k_flash_dkv  a block per (64 keys, b, h), per query tile from the
 *                diagonal: S^T = K Q^T, dP^T = V dO^T, dV_h += P^T dO,
 *                dK_h += dS^T Q, into fp32 per-query-head partials;
 *   k_flash_gqa  dK += scale sum_h dK_h, dV += sum_h dV_h over the query
 *                heads of each kv head, in head order.
 * S and dP are computed twice (once per kernel): 7 products for the
 * backward's 5, bought for determinism and a grid of B x NH blocks wide.
 *
 * Tiles of Q, K, V and dO go to shared memory through 16-byte loads, rows
 * beyond T as zeros (a zero V row keeps 0 x garbage out of P V); masked
 * scores are -inf, so their P is exactly 0.
 */
#include "kernels/cuda/kc.cuh"

#include <float.h>
#include <math.h>
#include <mma.h>

namespace wm = nvcuda::wmma;

#define FL_TILE 64    /* query rows of a block, and keys of a tile */
#define FL_WARPS 4    /* 16 rows each */
#define FL_THREADS (32 * FL_WARPS)

int kc_flash = -1; /* kc.cuh; -1 until set or read from the environment */

/* The per-kernel layout of shared memory, in elements: 16-bit tiles have
 * rows of HS + 8 (a 16-byte pad against bank conflicts; WMMA wants the
 * row stride a multiple of 8 and tiles 32-byte aligned, which 16 rows of
 * these strides keep), fp32 rows FL_TILE + 4 or HS + 4. */
template <int HS> struct fl_shape {
	enum {
		LD = HS + 8,                                    /* 16-bit tile rows */
		PLD = FL_TILE + 8,                              /* 16-bit [16, 64] rows */
		SLD = (HS > FL_TILE ? HS : FL_TILE) + 4,        /* fp32 [16, max(64, HS)] rows */
		DLD = FL_TILE + 4,                              /* fp32 [16, 64] rows */
		TILE = FL_TILE * LD,                            /* one 16-bit tile */
	};
};

/* Rows r0 .. r0 + 63 of one head ([B,T,H,HS] from element (b, 0, h, 0),
 * rows `stride` elements apart) into a [64, LD] tile; rows >= t zero. */
template <typename T, int HS>
static __device__ __forceinline__ void fl_tile(T *dst, const T *head, size_t stride, int r0, int t)
{
	constexpr int VPR = HS * (int)sizeof(T) / 16; /* 16-byte vectors per row */
	for (int e = threadIdx.x; e < FL_TILE * VPR; e += FL_THREADS) {
		int r = e / VPR, c = e % VPR;
		int4 x = make_int4(0, 0, 0, 0);
		if (r0 + r < t)
			x = reinterpret_cast<const int4 *>(head + (size_t)(r0 + r) * stride)[c];
		reinterpret_cast<int4 *>(dst + r * fl_shape<HS>::LD)[c] = x;
	}
}

typedef wm::fragment<wm::accumulator, 16, 16, 16, float> fl_acc;
template <typename T> using fl_a = wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major>;
template <typename T> using fl_bc = wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::col_major>;
template <typename T> using fl_br = wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::row_major>;

/* out [16, 64] fp32 (row stride ld) = A [16, HS] (fragments) X^T, X the
 * [64, HS] tile (rows LD apart): scores of 16 rows against 64 keys. */
template <typename T, int HS>
static __device__ __forceinline__ void fl_abt(float *out, int ld, const fl_a<T> *a, const T *x)
{
#pragma unroll
	for (int n = 0; n < FL_TILE / 16; n++) {
		fl_acc c;
		wm::fill_fragment(c, 0.0f);
#pragma unroll
		for (int d = 0; d < HS / 16; d++) {
			fl_bc<T> b;
			wm::load_matrix_sync(b, x + n * 16 * fl_shape<HS>::LD + d * 16, fl_shape<HS>::LD);
			wm::mma_sync(c, a[d], b, c);
		}
		wm::store_matrix_sync(out + n * 16, c, ld, wm::mem_row_major);
	}
}

/* acc[n] (+)= P [16, 64] (16-bit, rows PLD apart) X, X a [64, HS] tile. */
template <typename T, int HS>
static __device__ __forceinline__ void fl_pv(fl_acc *acc, const T *p, const T *x)
{
	fl_a<T> a[FL_TILE / 16];
#pragma unroll
	for (int k = 0; k < FL_TILE / 16; k++)
		wm::load_matrix_sync(a[k], p + k * 16, fl_shape<HS>::PLD);
#pragma unroll
	for (int n = 0; n < HS / 16; n++) {
#pragma unroll
		for (int k = 0; k < FL_TILE / 16; k++) {
			fl_br<T> b;
			wm::load_matrix_sync(b, x + k * 16 * fl_shape<HS>::LD + n * 16, fl_shape<HS>::LD);
			wm::mma_sync(acc[n], a[k], b, acc[n]);
		}
	}
}

/* The warp's [16, HS] accumulators into its fp32 staging rows (row stride
 * SLD), between warp barriers: the lanes read them back by row and column. */
template <int HS>
static __device__ __forceinline__ void fl_stage(float *ss, const fl_acc *acc)
{
	__syncwarp();
#pragma unroll
	for (int n = 0; n < HS / 16; n++)
		wm::store_matrix_sync(ss + n * 16, acc[n], fl_shape<HS>::SLD, wm::mem_row_major);
	__syncwarp();
}

/* The warp's 16 rows of a [64, HS] tile as matrix_a fragments. */
template <typename T, int HS>
static __device__ __forceinline__ void fl_rows(fl_a<T> *a, const T *tile, int warp)
{
#pragma unroll
	for (int d = 0; d < HS / 16; d++)
		wm::load_matrix_sync(a[d], tile + warp * 16 * fl_shape<HS>::LD + d * 16, fl_shape<HS>::LD);
}

template <typename T, int HS>
__global__ void __launch_bounds__(FL_THREADS)
k_flash_fwd(T *out, float *lse, const T *q, const T *k, const T *v, int t, int nh, int nkv,
	    float scale)
{
	typedef fl_shape<HS> S;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	T *sq = (T *)fl_smem, *sk = sq + S::TILE, *sv = sk + S::TILE;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	float *ss = (float *)(sv + S::TILE) + warp * 16 * S::SLD;
	T *sp = (T *)((float *)(sv + S::TILE) + FL_WARPS * 16 * S::SLD) + warp * 16 * S::PLD;
	const int qb = gridDim.x - 1 - blockIdx.x; /* the longest rows first */
	const int b = blockIdx.y / nh, h = blockIdx.y % nh, kvh = h / (nh / nkv);
	const size_t qs = (size_t)nh * HS, ks = (size_t)nkv * HS;
	const T *kh = k + (size_t)b * t * ks + kvh * HS, *vh = v + (size_t)b * t * ks + kvh * HS;
	const int i0 = qb * FL_TILE + warp * 16;
	fl_a<T> fq[HS / 16];
	float m[16], l[16], o[16][HS / 32];

	fl_tile<T, HS>(sq, q + (size_t)b * t * qs + h * HS, qs, qb * FL_TILE, t);
	__syncthreads();
	fl_rows<T, HS>(fq, sq, warp);
#pragma unroll
	for (int r = 0; r < 16; r++) {
		m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
		for (int c = 0; c < HS / 32; c++)
			o[r][c] = 0.0f;
	}
	for (int kb = 0; kb <= qb; kb++) {
		const int j0 = kb * FL_TILE;
		float alpha[16];
		fl_acc acc[HS / 16];

		__syncthreads(); /* the last tile's readers are done */
		fl_tile<T, HS>(sk, kh, ks, j0, t);
		fl_tile<T, HS>(sv, vh, ks, j0, t);
		__syncthreads();
		fl_abt<T, HS>(ss, S::SLD, fq, sk);
		__syncwarp();
#pragma unroll
		for (int r = 0; r < 16; r++) {
			int i = i0 + r, ja = j0 + lane, jb = ja + 32;
			float s0 = ja <= i && ja < t ? scale * ss[r * S::SLD + lane] : -INFINITY;
			float s1 = jb <= i && jb < t ? scale * ss[r * S::SLD + lane + 32] : -INFINITY;
			/* key j0 <= i is always in: mx is finite */
			float mx = fmaxf(m[r], kc_warp_max(fmaxf(s0, s1)));
			float p0 = expf(s0 - mx), p1 = expf(s1 - mx);
			alpha[r] = expf(m[r] - mx);
			l[r] = l[r] * alpha[r] + kc_warp_sum(p0 + p1);
			m[r] = mx;
			sp[r * S::PLD + lane] = kc_st<T>(p0);
			sp[r * S::PLD + lane + 32] = kc_st<T>(p1);
		}
		__syncwarp();
#pragma unroll
		for (int n = 0; n < HS / 16; n++)
			wm::fill_fragment(acc[n], 0.0f);
		fl_pv<T, HS>(acc, sp, sv);
		fl_stage<HS>(ss, acc);
#pragma unroll
		for (int r = 0; r < 16; r++)
#pragma unroll
			for (int c = 0; c < HS / 32; c++)
				o[r][c] = o[r][c] * alpha[r] + ss[r * S::SLD + lane + 32 * c];
		__syncwarp();
	}
#pragma unroll
	for (int r = 0; r < 16; r++) {
		int i = i0 + r;
		if (i >= t)
			continue;
		T *orow = out + ((size_t)b * t + i) * qs + h * HS;
		float inv = 1.0f / l[r];
#pragma unroll
		for (int c = 0; c < HS / 32; c++)
			orow[lane + 32 * c] = kc_st<T>(o[r][c] * inv);
		if (lane == 0)
			lse[((size_t)b * nh + h) * t + i] = m[r] + logf(l[r]);
	}
}

/* D[(b, h, i)] = sum_d dO o O over row (b, i, h): one warp a row. */
template <typename T>
__global__ void k_flash_dot(float *dd, const T *dout, const T *out, size_t rows, int t, int nh,
			    int hs)
{
	size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	float s = 0.0f;

	if (r >= rows)
		return;
	for (int d = lane; d < hs; d += 32)
		s += kc_ld(dout[r * hs + d]) * kc_ld(out[r * hs + d]);
	s = kc_warp_sum(s);
	if (lane == 0) {
		size_t bi = r / nh; /* b * t + i */
		int h = (int)(r % nh), i = (int)(bi % t), b = (int)(bi / t);
		dd[((size_t)b * nh + h) * t + i] = s;
	}
}

template <typename T, int HS>
__global__ void __launch_bounds__(FL_THREADS)
k_flash_dq(T *dq, const T *dout, const float *lse, const float *dd, const T *q, const T *k,
	   const T *v, int t, int nh, int nkv, float scale, int add)
{
	typedef fl_shape<HS> S;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	T *sk = (T *)fl_smem, *sv = sk + S::TILE;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	float *ss = (float *)(sv + S::TILE) + warp * 16 * S::SLD;
	float *sdp = (float *)(sv + S::TILE) + FL_WARPS * 16 * S::SLD + warp * 16 * S::DLD;
	T *sds = (T *)((float *)(sv + S::TILE) + FL_WARPS * 16 * (S::SLD + S::DLD)) +
		 warp * 16 * S::PLD;
	const int qb = gridDim.x - 1 - blockIdx.x;
	const int b = blockIdx.y / nh, h = blockIdx.y % nh, kvh = h / (nh / nkv);
	const size_t qs = (size_t)nh * HS, ks = (size_t)nkv * HS;
	const T *kh = k + (size_t)b * t * ks + kvh * HS, *vh = v + (size_t)b * t * ks + kvh * HS;
	const size_t rowl = ((size_t)b * nh + h) * t; /* lse and D of (b, h, 0) */
	const int i0 = qb * FL_TILE + warp * 16;
	fl_a<T> fq[HS / 16], fdo[HS / 16];
	fl_acc acc[HS / 16];
	float lr[16], dr[16];

	/* Q's and dO's rows through the K and V tiles */
	fl_tile<T, HS>(sk, q + (size_t)b * t * qs + h * HS, qs, qb * FL_TILE, t);
	fl_tile<T, HS>(sv, dout + (size_t)b * t * qs + h * HS, qs, qb * FL_TILE, t);
	__syncthreads();
	fl_rows<T, HS>(fq, sk, warp);
	fl_rows<T, HS>(fdo, sv, warp);
#pragma unroll
	for (int r = 0; r < 16; r++) {
		int i = i0 + r;
		lr[r] = i < t ? lse[rowl + i] : 0.0f;
		dr[r] = i < t ? dd[rowl + i] : 0.0f;
	}
#pragma unroll
	for (int n = 0; n < HS / 16; n++)
		wm::fill_fragment(acc[n], 0.0f);
	for (int kb = 0; kb <= qb; kb++) {
		const int j0 = kb * FL_TILE;

		__syncthreads();
		fl_tile<T, HS>(sk, kh, ks, j0, t);
		fl_tile<T, HS>(sv, vh, ks, j0, t);
		__syncthreads();
		fl_abt<T, HS>(ss, S::SLD, fq, sk);
		fl_abt<T, HS>(sdp, S::DLD, fdo, sv);
		__syncwarp();
#pragma unroll
		for (int r = 0; r < 16; r++) {
			int i = i0 + r;
#pragma unroll
			for (int c = 0; c < 2; c++) {
				int j = j0 + lane + 32 * c;
				float p = j <= i && j < t && i < t
					? expf(scale * ss[r * S::SLD + lane + 32 * c] - lr[r]) : 0.0f;
				sds[r * S::PLD + lane + 32 * c] =
					kc_st<T>(p * (sdp[r * S::DLD + lane + 32 * c] - dr[r]));
			}
		}
		__syncwarp();
		fl_pv<T, HS>(acc, sds, sk);
	}
	fl_stage<HS>(ss, acc);
#pragma unroll
	for (int r = 0; r < 16; r++) {
		int i = i0 + r;
		if (i >= t)
			continue;
		T *row = dq + ((size_t)b * t + i) * qs + h * HS;
#pragma unroll
		for (int c = 0; c < HS / 32; c++) {
			int d = lane + 32 * c;
			row[d] = kc_st<T>((add ? kc_ld(row[d]) : 0.0f) + scale * ss[r * S::SLD + d]);
		}
	}
}

/* The keys' side for one query head: dK_h, dV_h (fp32, [B,T,NH,HS],
 * unscaled) of the 64 keys of the block. */
template <typename T, int HS>
__global__ void __launch_bounds__(FL_THREADS)
k_flash_dkv(float *pk, float *pv, const T *dout, const float *lse, const float *dd, const T *q,
	    const T *k, const T *v, int t, int nh, int nkv)
{
	typedef fl_shape<HS> S;
	extern __shared__ __align__(128) unsigned char fl_smem[];
	T *sq = (T *)fl_smem, *sdo = sq + S::TILE;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	float *ss = (float *)(sdo + S::TILE) + warp * 16 * S::SLD;
	float *sdp = (float *)(sdo + S::TILE) + FL_WARPS * 16 * S::SLD + warp * 16 * S::DLD;
	float *sl = (float *)(sdo + S::TILE) + FL_WARPS * 16 * (S::SLD + S::DLD); /* lse, D [64] */
	float *sd = sl + FL_TILE;
	T *spt = (T *)(sd + FL_TILE) + warp * 2 * 16 * S::PLD, *sdst = spt + 16 * S::PLD;
	const int kb = blockIdx.x; /* the most query tiles first */
	const int b = blockIdx.y / nh, h = blockIdx.y % nh, kvh = h / (nh / nkv);
	const size_t qs = (size_t)nh * HS, ks = (size_t)nkv * HS;
	const T *qh = q + (size_t)b * t * qs + h * HS, *dh = dout + (size_t)b * t * qs + h * HS;
	const size_t rowl = ((size_t)b * nh + h) * t;
	const int j0 = kb * FL_TILE + warp * 16, nqb = (t + FL_TILE - 1) / FL_TILE;
	fl_a<T> fk[HS / 16], fv[HS / 16];
	fl_acc dk[HS / 16], dv[HS / 16];
	const float scale = 1.0f / sqrtf((float)HS);

	/* K's and V's rows through the Q and dO tiles */
	fl_tile<T, HS>(sq, k + (size_t)b * t * ks + kvh * HS, ks, kb * FL_TILE, t);
	fl_tile<T, HS>(sdo, v + (size_t)b * t * ks + kvh * HS, ks, kb * FL_TILE, t);
	__syncthreads();
	fl_rows<T, HS>(fk, sq, warp);
	fl_rows<T, HS>(fv, sdo, warp);
#pragma unroll
	for (int n = 0; n < HS / 16; n++) {
		wm::fill_fragment(dk[n], 0.0f);
		wm::fill_fragment(dv[n], 0.0f);
	}
	for (int qb = kb; qb < nqb; qb++) {
		const int q0 = qb * FL_TILE;

		__syncthreads();
		fl_tile<T, HS>(sq, qh, qs, q0, t);
		fl_tile<T, HS>(sdo, dh, qs, q0, t);
		for (int e = threadIdx.x; e < FL_TILE; e += FL_THREADS) {
			sl[e] = q0 + e < t ? lse[rowl + q0 + e] : 0.0f;
			sd[e] = q0 + e < t ? dd[rowl + q0 + e] : 0.0f;
		}
		__syncthreads();
		fl_abt<T, HS>(ss, S::SLD, fk, sq);   /* S^T: the warp's keys x 64 queries */
		fl_abt<T, HS>(sdp, S::DLD, fv, sdo); /* dP^T */
		__syncwarp();
#pragma unroll
		for (int r = 0; r < 16; r++) {
			int j = j0 + r;
#pragma unroll
			for (int c = 0; c < 2; c++) {
				int col = lane + 32 * c, i = q0 + col;
				float p = j <= i && i < t && j < t
					? expf(scale * ss[r * S::SLD + col] - sl[col]) : 0.0f;
				spt[r * S::PLD + col] = kc_st<T>(p);
				sdst[r * S::PLD + col] = kc_st<T>(p * (sdp[r * S::DLD + col] - sd[col]));
			}
		}
		__syncwarp();
		fl_pv<T, HS>(dv, spt, sdo);
		fl_pv<T, HS>(dk, sdst, sq);
	}
	/* the partials, rows < t; the fp32 staging rows are the warp's ss */
#pragma unroll
	for (int pass = 0; pass < 2; pass++) {
		float *dst = pass ? pv : pk;
		fl_stage<HS>(ss, pass ? dv : dk);
#pragma unroll
		for (int r = 0; r < 16; r++) {
			int j = j0 + r;
			if (j >= t)
				continue;
			float *row = dst + ((size_t)b * t + j) * qs + h * HS;
#pragma unroll
			for (int c = 0; c < HS / 32; c++)
				row[lane + 32 * c] = ss[r * S::SLD + lane + 32 * c];
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
	typedef fl_shape<HS> S;
	return 3 * S::TILE * es + FL_WARPS * 16 * (S::SLD * sizeof(float) + S::PLD * es);
}

template <int HS> static size_t fl_dq_smem(size_t es)
{
	typedef fl_shape<HS> S;
	return 2 * S::TILE * es + FL_WARPS * 16 * ((S::SLD + S::DLD) * sizeof(float) + S::PLD * es);
}

template <int HS> static size_t fl_dkv_smem(size_t es)
{
	typedef fl_shape<HS> S;
	return 2 * S::TILE * es + FL_WARPS * 16 * (S::SLD + S::DLD) * sizeof(float) +
	       2 * FL_TILE * sizeof(float) + FL_WARPS * 2 * 16 * S::PLD * es;
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

/* The most dynamic shared memory a block may ask for on this GPU (0 when
 * it cannot be read: then no flash). */
static size_t fl_smem_limit(void)
{
	static int limit = -1;

	if (limit < 0) {
		int dev = 0, v = 0;
		if (cudaGetDevice(&dev) != cudaSuccess ||
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
	/* sm_86/89 give less than dK/dV's kernel asks at head size 128: the
	 * cuBLAS path runs there */
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

	if (!cx || !(dd = s_fl_scratch(rows + (dk || dv ? 2 * nq : 0))))
		return -1;
	pk = dd + rows, pv = pk + nq;
	k_flash_dot<T><<<kc_warp_blocks(rows), KC_THREADS, 0, cx->stream>>>(
		dd, (const T *)dout, (const T *)out, rows, t, nh, HS);
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
