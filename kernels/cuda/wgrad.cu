/* wgrad.cu: the adapters' weight gradients, several at once.
 *
 * A LoRA's dA = du^T x and dB^T = s u^T dy (MoDULA's dA0, dW_R, P) are
 * products C[M, N] += A^T B over the batch's tokens: A [K, M] with M the
 * rank (16 to 64), B [K, N] with N the layer's width, K = B x T tokens
 * (thousands). cuBLAS runs each as a split-K product and a reduction
 * kernel: two launches of about 6 and 4 us for a few MB read (the H200's
 * kernel table, docs/cuda.md), ten such products a layer. Here one launch
 * takes up to KCUDA_WGRAD_MAX of them (the products of one adapter group
 * that are ready at the same point of the backward):
 *
 *   - a block per (product, 64 columns of N, split of K): 4 warps over the
 *     [M <= 64, 64] tile, each 16 columns, warp-level mma.sync m16n8k16
 *     (kc_mma.cuh: bf16/f16 in, fp32 accumulators) with both operands
 *     read by ldmatrix.trans from [32 tokens, columns] tiles that cp.async
 *     copies in, three stages deep (rows past the split, columns past M or
 *     N zero-filled);
 *   - each split writes its fp32 partial tile to a workspace; the last
 *     split of a tile to finish (a counter per tile) adds the partials in
 *     split order and writes C = alpha sum + beta C, then resets the
 *     counter: deterministic (the same bits whatever order the blocks run
 *     in), and no second kernel.
 *
 * Used when kc_wgrad is on (kcuda_set_wgrad; MODULA_CUDA_WGRAD=1 at start)
 * for bf16 and f16 with M <= 64, 16-byte aligned A and B and row strides
 * that are multiples of 8 elements; any other product of the call goes to
 * cuBLAS (kcuda_gemm_ld), as every one does when kc_wgrad is off.
 */
#include "kernels/cuda/kc.cuh"
#include "kernels/cuda/kc_mma.cuh"

#include <stdlib.h>
#include <string.h>

int kc_wgrad = -1; /* mem.cu reads MODULA_CUDA_WGRAD */

#define WG_BN 64       /* columns of N a block */
#define WG_BK 32       /* tokens a pipeline stage */
#define WG_STAGES 3    /* stages in flight: a block keeps 2 x 32 rows of copies going */
#define WG_MMAX 64     /* M up to */
#define WG_THREADS 128
#define WG_LDA (WG_MMAX + 8) /* shared rows padded 16 bytes: ldmatrix's 8 rows in other banks */
#define WG_LDB (WG_BN + 8)
#define WG_MAX_TILES 4096    /* counters */
#define WG_WS_BYTES ((size_t)16 << 20)

struct wg_prob {
	float *c;
	const void *a, *b;
	int ldc, lda, ldb, m, n, mt; /* mt: m rounded up to 16 */
	float alpha, beta;
	int tile0, ntn;              /* its first tile of the launch, its tiles */
	size_t ws;                   /* its partials' offset in the workspace (floats) */
};

struct wg_args {
	wg_prob p[KCUDA_WGRAD_MAX];
	int count, k, splits, chunk; /* chunk: tokens a split, a multiple of WG_BK */
	float *ws;
	unsigned *cnt;
};

/* Rows kb .. kb + WG_BK - 1 (those < k1) of A's first mt columns and of
 * B's columns n0 .. n0 + WG_BN - 1 into shared tiles, as cp.async copies
 * of 16 bytes (columns past m or n and rows from k1 on zero-filled, their
 * source address the matrix's first row, not read). */
template <typename T>
static __device__ __forceinline__ void wg_load(T *sa, T *sb, const wg_prob &p, int kb, int k1,
					       int n0)
{
	constexpr int E = 16 / (int)sizeof(T); /* elements a copy */
	const T *a = (const T *)p.a, *b = (const T *)p.b;
	int ca = p.mt / E, cb = WG_BN / E;

	for (int e = threadIdx.x; e < WG_BK * ca; e += WG_THREADS) {
		int r = e / ca, col = e % ca * E, kk = kb + r;
		int left = kk < k1 ? (p.m - col) * (int)sizeof(T) : 0;
		int bytes = left < 0 ? 0 : left > 16 ? 16 : left;
		kc_cp16(sa + r * WG_LDA + col, bytes ? a + (size_t)kk * p.lda + col : a, bytes);
	}
	for (int e = threadIdx.x; e < WG_BK * cb; e += WG_THREADS) {
		int r = e / cb, col = e % cb * E, kk = kb + r;
		int left = kk < k1 ? (p.n - n0 - col) * (int)sizeof(T) : 0;
		int bytes = left < 0 ? 0 : left > 16 ? 16 : left;
		kc_cp16(sb + r * WG_LDB + col, bytes ? b + (size_t)kk * p.ldb + n0 + col : b, bytes);
	}
}

template <typename T>
__global__ void __launch_bounds__(WG_THREADS) k_wgrad(wg_args g)
{
	__shared__ __align__(16) T sa[WG_STAGES][WG_BK * WG_LDA];
	__shared__ __align__(16) T sb[WG_STAGES][WG_BK * WG_LDB];
	__shared__ int s_last[1];
	int tile = blockIdx.x / g.splits, split = blockIdx.x % g.splits, pi = 0;
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

	while (pi + 1 < g.count && tile >= g.p[pi + 1].tile0)
		pi++;
	const wg_prob &p = g.p[pi];
	int t = tile - p.tile0, n0 = t * WG_BN, nm = p.mt / 16;
	int k0 = split * g.chunk, k1 = min(g.k, k0 + g.chunk);
	float acc[4][2][4];

#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int j = 0; j < 2; j++)
#pragma unroll
			for (int q = 0; q < 4; q++)
				acc[i][j][q] = 0.0f;
	/* this lane's ldmatrix rows: A's 8x8 matrices (m 0-7, k 0-7), (m 8-15,
	 * k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) stored k-major; B's (k 0-7,
	 * n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) */
	int ar = (lane & 7) + (lane >> 4) * 8, ac = (lane >> 3 & 1) * 8;
	int br = (lane & 7) + (lane >> 3 & 1) * 8, bc = warp * 16 + (lane >> 4) * 8;
	int buf = 0;

	/* stage s holds rows k0 + (i WG_STAGES + s) WG_BK; a group committed
	 * per stage, empty past k1 */
	for (int s = 0; s < WG_STAGES - 1; s++) {
		if (k0 + s * WG_BK < k1)
			wg_load<T>(sa[s], sb[s], p, k0 + s * WG_BK, k1, n0);
		kc_cp_commit();
	}
	for (int kb = k0; kb < k1; kb += WG_BK, buf = buf == WG_STAGES - 1 ? 0 : buf + 1) {
		int nk = kb + (WG_STAGES - 1) * WG_BK, nb = buf == 0 ? WG_STAGES - 1 : buf - 1;
		if (nk < k1)
			wg_load<T>(sa[nb], sb[nb], p, nk, k1, n0);
		kc_cp_commit();
		kc_cp_wait<WG_STAGES - 1>();
		__syncthreads();
#pragma unroll
		for (int ks = 0; ks < WG_BK; ks += 16) {
			uint32_t fb[4];
			kc_ldsm4t(fb, sb[buf] + (ks + br) * WG_LDB + bc);
#pragma unroll
			for (int i = 0; i < 4; i++) {
				if (i < nm) {
					uint32_t fa[4];
					kc_ldsm4t(fa, sa[buf] + (ks + ar) * WG_LDA + i * 16 + ac);
					kc_mma<T>(acc[i][0], fa, fb[0], fb[1]);
					kc_mma<T>(acc[i][1], fa, fb[2], fb[3]);
				}
			}
		}
		__syncthreads();
	}
	kc_cp_wait<0>();

	/* this lane's accumulators: rows 16 i + g (+8), columns warp 16 + 8 j +
	 * c (+1), with g = lane / 4, c = 2 (lane % 4) */
	int gr = lane / 4, gc = warp * 16 + 2 * (lane % 4);
	/* (loops unrolled with constant bounds: acc stays in registers) */
	if (g.splits == 1) {
#pragma unroll
		for (int i = 0; i < 4; i++)
#pragma unroll
			for (int j = 0; j < 2; j++)
#pragma unroll
				for (int q = 0; q < 4; q++) {
					int m = i * 16 + gr + (q >> 1) * 8, n = n0 + gc + j * 8 + (q & 1);
					if (i < nm && m < p.m && n < p.n) {
						float *c = p.c + (size_t)m * p.ldc + n;
						*c = p.alpha * acc[i][j][q] +
						     (p.beta != 0.0f ? p.beta * *c : 0.0f);
					}
				}
		return;
	}
	float *part = g.ws + p.ws + ((size_t)t * g.splits + split) * p.mt * WG_BN;
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int j = 0; j < 2; j++)
#pragma unroll
			for (int h = 0; h < 2; h++)
				if (i < nm)
					kc_st2f(part + (size_t)(i * 16 + gr + h * 8) * WG_BN + gc + j * 8,
						acc[i][j][2 * h], acc[i][j][2 * h + 1]);
	/* the last split of the tile to get here sums them all, in split order */
	__threadfence();
	__syncthreads();
	if (threadIdx.x == 0)
		s_last[0] = atomicAdd(g.cnt + tile, 1u) == (unsigned)g.splits - 1;
	__syncthreads();
	if (!s_last[0])
		return;
	__threadfence();
	const float *tp = g.ws + p.ws + (size_t)t * g.splits * p.mt * WG_BN;
	for (int e = threadIdx.x; e < p.mt * WG_BN; e += WG_THREADS) {
		int m = e / WG_BN, n = n0 + e % WG_BN;
		if (m >= p.m || n >= p.n)
			continue;
		float s = 0.0f;
		for (int sp = 0; sp < g.splits; sp++)
			s += __ldcg(tp + (size_t)sp * p.mt * WG_BN + e);
		float *c = p.c + (size_t)m * p.ldc + n;
		*c = p.alpha * s + (p.beta != 0.0f ? p.beta * *c : 0.0f);
	}
	if (threadIdx.x == 0)
		g.cnt[tile] = 0;
}

static float *s_ws;
static unsigned *s_cnt;
static int s_nsm;

/* Product p on cuBLAS. */
static int s_cublas(int dt, const struct kcuda_wgrad *p, int k)
{
	return kcuda_gemm_ld(dt, KCUDA_F32, p->c, p->ldc, p->a, p->lda, p->b, p->ldb, p->m, p->n, k,
			     1, 0, p->alpha, p->beta);
}

/* 1 when product p can run in k_wgrad. */
static int s_fits(int dt, const struct kcuda_wgrad *p)
{
	return kc_wgrad > 0 && (dt == KCUDA_BF16 || dt == KCUDA_F16) && p->m <= WG_MMAX &&
	       kc_al16(p->a) && kc_al16(p->b) && p->lda % 8 == 0 && p->ldb % 8 == 0 &&
	       p->lda >= p->m && p->ldb >= p->n && p->ldc >= p->n;
}

template <typename T> static int s_launch(struct kc_ctx *cx, const wg_args &g, int tiles)
{
	k_wgrad<T><<<tiles * g.splits, WG_THREADS, 0, cx->stream>>>(g);
	KC_LAUNCHED("wgrad");
	return 0;
}

extern "C" int kcuda_gemm_wgrad(int dt, const struct kcuda_wgrad *p, int count, int k)
{
	KC_CTX(cx);
	wg_args g;
	int tiles = 0, nsm = 0, splits, chunk, mine[KCUDA_WGRAD_MAX];
	size_t need = 0;

	if (count < 0 || count > KCUDA_WGRAD_MAX || k < 0)
		return err_set("gemm_wgrad: %d products over %d rows (0 to %d products)", count, k,
			       KCUDA_WGRAD_MAX);
	memset(&g, 0, sizeof g);
	for (int i = 0; i < count; i++) {
		if (p[i].m < 0 || p[i].n < 0)
			return err_set("gemm_wgrad: product %d is [%d, %d]", i, p[i].m, p[i].n);
		if (p[i].m == 0 || p[i].n == 0)
			continue;
		if (k == 0 || !s_fits(dt, &p[i])) {
			if (s_cublas(dt, &p[i], k) < 0)
				return -1;
			continue;
		}
		mine[g.count] = i;
		wg_prob *q = &g.p[g.count++];
		q->c = p[i].c, q->a = p[i].a, q->b = p[i].b;
		q->ldc = p[i].ldc, q->lda = p[i].lda, q->ldb = p[i].ldb;
		q->m = p[i].m, q->n = p[i].n, q->mt = (p[i].m + 15) / 16 * 16;
		q->alpha = p[i].alpha, q->beta = p[i].beta;
		q->tile0 = tiles, q->ntn = (p[i].n + WG_BN - 1) / WG_BN;
		tiles += q->ntn;
	}
	if (!g.count)
		return 0;
	if (tiles > WG_MAX_TILES)
		return err_set("gemm_wgrad: %d column tiles (at most %d)", tiles, WG_MAX_TILES);
	if (!s_nsm) /* once: the call is on the backward's path */
		KC_CK(cudaDeviceGetAttribute(&s_nsm, cudaDevAttrMultiProcessorCount, 0));
	nsm = s_nsm;
	/* about four blocks an SM; each at least 4 stages of tokens; the last
	 * block of a tile to sum at most 512 rows of partials (splits x M);
	 * the partials within the workspace */
	int mtmax = 16;
	for (int i = 0; i < g.count; i++)
		mtmax = g.p[i].mt > mtmax ? g.p[i].mt : mtmax;
	splits = (4 * nsm + tiles - 1) / tiles;
	splits = splits > k / (4 * WG_BK) ? k / (4 * WG_BK) : splits;
	splits = splits > 512 / mtmax ? 512 / mtmax : splits;
	splits = splits < 1 ? 1 : splits;
	for (;;) {
		chunk = ((k + splits - 1) / splits + WG_BK - 1) / WG_BK * WG_BK;
		splits = (k + chunk - 1) / chunk;
		need = 0;
		for (int i = 0; i < g.count; i++)
			need += (size_t)g.p[i].ntn * splits * g.p[i].mt * WG_BN;
		if (splits == 1 || need * sizeof(float) <= WG_WS_BYTES)
			break;
		splits /= 2;
	}
	if (splits > 1 && !s_ws && kcuda_capturing()) {
		/* no workspace yet, and none can be made inside a graph's capture
		 * (the engine runs a batch shape directly before it records it) */
		for (int i = 0; i < g.count; i++)
			if (s_cublas(dt, &p[mine[i]], k) < 0)
				return -1;
		return 0;
	}
	if (splits > 1 && !s_ws) {
		/* once: the workspace and the counters (zero), kept */
		float *ws = (float *)kc_alloc(WG_WS_BYTES);
		unsigned *cnt = ws ? (unsigned *)kc_alloc(WG_MAX_TILES * sizeof *cnt) : NULL;
		if (!cnt) {
			kc_free(ws);
			return -1;
		}
		KC_CK(cudaMemsetAsync(cnt, 0, WG_MAX_TILES * sizeof *cnt, cx->stream));
		s_ws = ws, s_cnt = cnt;
	}
	need = 0;
	for (int i = 0; i < g.count; i++) {
		g.p[i].ws = need;
		need += (size_t)g.p[i].ntn * splits * g.p[i].mt * WG_BN;
	}
	g.k = k, g.splits = splits, g.chunk = chunk, g.ws = s_ws, g.cnt = s_cnt;
	if (dt == KCUDA_BF16)
		return s_launch<__nv_bfloat16>(cx, g, tiles);
	return s_launch<__half>(cx, g, tiles);
}

extern "C" void kcuda_set_wgrad(int on)
{
	kc_wgrad = on;
}

extern "C" int kcuda_wgrad(void)
{
	return kc_wgrad > 0;
}
