/* lora.cu: the adapter ops of METHOD.md on the GPU: the router softmax
 * fused with the weighting of each expert's rank-R output, a soft-routed
 * group of LoRA experts as two products over the stacked experts, and
 * concurrent domain experts as segmented (SGMV-style) products.
 *
 * Stacking: E experts of rank R on a [OC, C] layer are A [E*R, C] (A_i in
 * rows i*R..) and B [OC, E*R] (B_i in columns i*R..), so sum_i s_i B_i A_i x
 * is one product x A^T, a per-expert weighting, and one product with B^T:
 * two large cuBLAS calls instead of 2E small ones.
 *
 * Not a model: which experts run where (universal, domain, residual) is the
 * engine's business; these are the building blocks. The segmented products
 * are a loop of cuBLAS calls, one pair per segment (a handful of concurrent
 * experts); cublasGemmGroupedBatchedEx would fold them into one launch.
 */
#include "kernels/cuda/kc.cuh"

#include <float.h>

#define KC_ROUTER_MAX_E 32

/* Column col of the w = r0 + e*r weighted outputs belongs to expert
 * (col < r0 ? 0 : h + (col - r0) / r), h = (r0 > 0): the head expert of
 * rank r0 (MoDULA-Flan's universal expert), then e experts of rank r. */
static __device__ __forceinline__ int kc_router_expert(int col, int r0, int r)
{
	return col < r0 ? 0 : (r0 > 0) + (col - r0) / r;
}

/* One warp per row: lane i < E = e + h owns expert i's logit and
 * probability. */
template <typename T>
__global__ void k_router_fwd(T *uw, int ld, float *s, const T *rlogits, int ldr, const T *u,
			     int ldu, int n, int e, int r, float scale, int r0, float s0)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	int ne = e + (r0 > 0), w = r0 + e * r;
	if (row >= n)
		return;
	float x = lane < ne ? kc_ld(rlogits[(size_t)row * ldr + lane]) : -FLT_MAX;
	float m = kc_warp_max(x);
	float p = lane < ne ? expf(x - m) : 0.0f;
	p /= kc_warp_sum(p);
	if (lane < ne)
		s[(size_t)row * ne + lane] = p;
	for (int c0 = 0; c0 < w; c0 += 32) { /* every lane takes part in the shuffle */
		int col = c0 + lane;
		float pw = __shfl_sync(0xffffffffu, p, kc_router_expert(min(col, w - 1), r0, r));
		if (col < w)
			uw[(size_t)row * ld + col] = kc_st<T>((col < r0 ? s0 : scale) * pw *
							      kc_ld(u[(size_t)row * ldu + col]));
	}
}

/* ds_i = scale_i sum over expert i's columns of u duw; drlogits += s (ds -
 * s . ds); du += scale_i s_i duw. */
template <typename T>
__global__ void k_router_bwd(T *drlogits, int ldr, T *du, const T *duw, int ld, const float *s,
			     const T *u, int ldu, int n, int e, int r, float scale, int r0, float s0)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	int h = r0 > 0, ne = e + h, w = r0 + e * r;
	if (row >= n)
		return;
	size_t o = (size_t)row * ldu, og = (size_t)row * ld;
	float si = lane < ne ? s[(size_t)row * ne + lane] : 0.0f, dsi = 0.0f;

	if (drlogits) {
		for (int i = 0; i < ne; i++) {
			int lo = i < h ? 0 : r0 + (i - h) * r, len = i < h ? r0 : r;
			float part = 0.0f;
			for (int j = lane; j < len; j += 32)
				part += kc_ld(u[o + lo + j]) * kc_ld(duw[og + lo + j]);
			part = kc_warp_sum(part) * (i < h ? s0 : scale);
			if (lane == i)
				dsi = part;
		}
		float dot = kc_warp_sum(si * dsi);
		if (lane < ne) {
			size_t ro = (size_t)row * ldr + lane;
			drlogits[ro] = kc_st<T>(kc_ld(drlogits[ro]) + si * (dsi - dot));
		}
	}
	if (!du)
		return;
	for (int c0 = 0; c0 < w; c0 += 32) {
		int col = c0 + lane;
		float pw = __shfl_sync(0xffffffffu, si, kc_router_expert(min(col, w - 1), r0, r));
		if (col < w)
			du[o + col] = kc_st<T>(kc_ld(du[o + col]) +
					       (col < r0 ? s0 : scale) * pw * kc_ld(duw[og + col]));
	}
}

static int s_check_router(int e, int r, int r0)
{
	int ne = e + (r0 > 0);

	if (ne < 1 || ne > KC_ROUTER_MAX_E || (e > 0 && r < 1) || r0 < 0)
		return err_set("router: %d experts of rank %d (and a head of rank %d) not supported "
			       "(1 to %d experts)", e, r, r0, KC_ROUTER_MAX_E);
	return 0;
}

/* rows ld apart (0: w) hold w columns */
static int s_check_ld(const char *what, int ld, int w)
{
	if (ld != 0 && ld < w)
		return err_set("%s: rows %d apart, narrower than their %d columns", what, ld, w);
	return 0;
}

extern "C" int kcuda_router_weight_forward(int dt, void *uw, int ld, float *s, const void *rlogits,
					   int ldr, const void *u, int ldu, int n, int e, int r,
					   float scale, int r0, float s0)
{
	int ne = e + (r0 > 0), w = r0 + e * r;

	KC_CTX(cx);
	if (s_check_router(e, r, r0) < 0)
		return -1;
	if (s_check_ld("router_weight_forward", ld, w) < 0 ||
	    s_check_ld("router_weight_forward's logits", ldr, ne) < 0 ||
	    s_check_ld("router_weight_forward's u", ldu, w) < 0)
		return -1;
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_router_fwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
		(T *)uw, ld ? ld : w, s, (const T *)rlogits, ldr ? ldr : ne, (const T *)u,
		ldu ? ldu : w, n, e, r, scale, r0, s0));
	KC_LAUNCHED("router_weight_forward");
	return 0;
}

extern "C" int kcuda_router_weight_backward(int dt, void *drlogits, int ldr, void *du,
					    const void *duw, int ld, const float *s, const void *u,
					    int ldu, int n, int e, int r, float scale, int r0, float s0)
{
	int ne = e + (r0 > 0), w = r0 + e * r;

	KC_CTX(cx);
	if (s_check_router(e, r, r0) < 0)
		return -1;
	if (s_check_ld("router_weight_backward", ld, w) < 0 ||
	    s_check_ld("router_weight_backward's logits", ldr, ne) < 0 ||
	    s_check_ld("router_weight_backward's u", ldu, w) < 0)
		return -1;
	if (n == 0 || (!drlogits && !du))
		return 0;
	KC_DISPATCH(dt, T, k_router_bwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
		(T *)drlogits, ldr ? ldr : ne, (T *)du, (const T *)duw, ld ? ld : w, s,
		(const T *)u, ldu ? ldu : w, n, e, r, scale, r0, s0));
	KC_LAUNCHED("router_weight_backward");
	return 0;
}

/* ---- MoDULA-Res: the per-row work between the products, fused --------- */

/* One warp per row. ur = [u0 | rl] ([N, r0+e], rows ldu apart); cat = [s0
 * u0 | zw] rows ld apart; z = s0 u0 M^T, zl = LeakyReLU(z), s =
 * softmax(rl), zw = sd s_i zl. */
template <typename T>
__global__ void k_res_fwd(T *cat, int ld, T *z, T *zl, float *s, const T *ur, int ldu,
			  const T *mab, int n, int r0, int e, int r, float s0, float sd, float slope)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	int er = e * r;
	if (row >= n)
		return;
	const T *u = ur + (size_t)row * ldu;
	T *c = cat + (size_t)row * ld;
	float x = lane < e ? kc_ld(u[r0 + lane]) : -FLT_MAX;
	float mx = kc_warp_max(x);
	float p = lane < e ? expf(x - mx) : 0.0f;
	p /= kc_warp_sum(p);
	if (lane < e)
		s[(size_t)row * e + lane] = p;
	for (int k = lane; k < r0; k += 32)
		c[k] = kc_st<T>(s0 * kc_ld(u[k]));
	for (int j0 = 0; j0 < er; j0 += 32) {
		int j = j0 + lane;
		float acc = 0.0f;
		for (int k = 0; k < r0 && j < er; k++)
			acc += kc_ld(u[k]) * kc_ld(mab[(size_t)j * r0 + k]);
		float zv = s0 * acc, lv = zv > 0.0f ? zv : slope * zv;
		float pw = __shfl_sync(0xffffffffu, p, min(j, er - 1) / r);
		if (j < er) {
			z[(size_t)row * er + j] = kc_st<T>(zv);
			zl[(size_t)row * er + j] = kc_st<T>(lv);
			c[r0 + j] = kc_st<T>(sd * pw * lv);
		}
	}
}

/* dcat [N, w] (rows ld apart) holds dy [B0^T; B^T]^T on entry. Reads dzw
 * = dcat[:, r0:], then writes dcat[:, :r0] *= s0, dcat[:, r0:r0+e] = drl
 * and dz [N, er] (both overwritten). With mab: dcat[:, :r0] = s0
 * (dcat[:, :r0] (nores: 0) + dz mab), from dz as stored (rounded). */
template <typename T>
__global__ void k_res_bwd(T *dcat, int ld, T *dz, const float *s, const T *z, const T *zl,
			  const T *mab, int nores, int n, int r0, int e, int r, float s0, float sd,
			  float slope)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	int er = e * r;
	if (row >= n)
		return;
	T *d = dcat + (size_t)row * ld;
	float si = lane < e ? s[(size_t)row * e + lane] : 0.0f, dsi = 0.0f;
	/* ds_i = sd sum_j zl_ij dzw_ij; dzl = sd s_i dzw; dz = dzl LeakyReLU'(z) */
	for (int i = 0; i < e; i++) {
		float part = 0.0f;
		for (int j = lane; j < r; j += 32)
			part += kc_ld(zl[(size_t)row * er + i * r + j]) * kc_ld(d[r0 + i * r + j]);
		part = kc_warp_sum(part) * sd;
		if (lane == i)
			dsi = part;
	}
	for (int j0 = 0; j0 < er; j0 += 32) {
		int j = j0 + lane;
		float pw = __shfl_sync(0xffffffffu, si, min(j, er - 1) / r);
		if (j < er) {
			float g = sd * pw * kc_ld(d[r0 + j]), zv = kc_ld(z[(size_t)row * er + j]);
			dz[(size_t)row * er + j] = kc_st<T>(zv > 0.0f ? g : slope * g);
		}
	}
	float dot = kc_warp_sum(si * dsi);
	__syncwarp();
	if (lane < e)
		d[r0 + lane] = kc_st<T>(si * (dsi - dot));
	if (!mab) {
		for (int k = lane; k < r0; k += 32)
			d[k] = kc_st<T>(kc_ld(d[k]) * s0);
		return;
	}
	/* dz mab: dz_j from the lane that stored it (shuffled), mab's column
	 * k by lane k */
	for (int k0 = 0; k0 < r0; k0 += 32) {
		int k = k0 + lane;
		float acc = 0.0f;
		for (int j0 = 0; j0 < er; j0 += 32) {
			float v = j0 + lane < er ? kc_ld(dz[(size_t)row * er + j0 + lane]) : 0.0f;
			for (int jj = 0; jj < 32 && j0 + jj < er; jj++) {
				float vj = __shfl_sync(0xffffffffu, v, jj);
				if (k < r0)
					acc += vj * kc_ld(mab[(size_t)(j0 + jj) * r0 + k]);
			}
		}
		if (k < r0)
			d[k] = kc_st<T>((nores ? 0.0f : kc_ld(d[k]) * s0) + s0 * acc);
	}
}

extern "C" int kcuda_res_forward(int dt, void *cat, int ld, void *z, void *zl, float *s,
				 const void *ur, int ldu, const void *mab, int n, int r0, int e,
				 int r, float s0, float sd, float slope)
{
	KC_CTX(cx);
	if (s_check_router(e, r, 0) < 0)
		return -1;
	if (s_check_ld("res_forward", ld, r0 + e * r) < 0 ||
	    s_check_ld("res_forward's ur", ldu, r0 + e) < 0)
		return -1;
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_res_fwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
		(T *)cat, ld ? ld : r0 + e * r, (T *)z, (T *)zl, s, (const T *)ur,
		ldu ? ldu : r0 + e, (const T *)mab, n, r0, e, r, s0, sd, slope));
	KC_LAUNCHED("res_forward");
	return 0;
}

extern "C" int kcuda_res_backward(int dt, void *dcat, int ld, void *dz, const float *s,
				  const void *z, const void *zl, const void *mab, int nores, int n,
				  int r0, int e, int r, float s0, float sd, float slope)
{
	KC_CTX(cx);
	if (s_check_router(e, r, 0) < 0)
		return -1;
	if (s_check_ld("res_backward", ld, r0 + e * r) < 0)
		return -1;
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_res_bwd<T><<<kc_warp_blocks(n), KC_THREADS, 0, cx->stream>>>(
		(T *)dcat, ld ? ld : r0 + e * r, (T *)dz, s, (const T *)z, (const T *)zl,
		(const T *)mab, nores, n, r0, e, r, s0, sd, slope));
	KC_LAUNCHED("res_backward");
	return 0;
}

/* ---- a soft-routed group of stacked experts --------------------------- */

extern "C" int kcuda_lora_group_forward(int dt, void *y, void *u, void *uw, float *s,
					const void *x, const void *a, const void *b,
					const void *rlogits, int n, int c, int oc, int e, int r,
					float scale)
{
	int er = e * r;

	if (kc_gemm(dt, dt, u, x, a, n, er, c, 0, 1, 1.0f, 0.0f) < 0)
		return -1;
	if (!rlogits)
		return kc_gemm(dt, dt, y, u, b, n, oc, er, 0, 1, scale, 1.0f);
	if (kcuda_router_weight_forward(dt, uw, 0, s, rlogits, 0, u, 0, n, e, r, scale, 0, 0.0f) < 0)
		return -1;
	return kc_gemm(dt, dt, y, uw, b, n, oc, er, 0, 1, 1.0f, 1.0f);
}

/* With a router the second product's input is uw and du comes out of the
 * router's backward; without one it is u, and du = scale * dy B folds the
 * scale into the products' alpha. */
extern "C" int kcuda_lora_group_backward(int dt, void *dx, float *da, float *db, void *drlogits,
					 const void *dy, const void *x, const void *u,
					 const void *uw, const float *s, const void *a,
					 const void *b, int n, int c, int oc, int e, int r,
					 float scale)
{
	int er = e * r, routed = s != NULL;
	float fb = routed ? 1.0f : scale, fa = routed ? 1.0f : scale;
	size_t bytes = (size_t)n * er * kcuda_dtype_size(dt);
	void *duw = NULL, *du = NULL;
	int rc = -1;

	if (!kc_get())
		return -1;
	if (db && kc_gemm(dt, KCUDA_F32, db, dy, routed ? uw : u, oc, er, n, 1, 0, fb, 1.0f) < 0)
		return -1;
	if (!dx && !da && !(routed && drlogits))
		return 0;
	if (!(duw = kc_alloc(bytes)))
		return -1;
	if (kc_gemm(dt, dt, duw, dy, b, n, er, oc, 0, 0, 1.0f, 0.0f) < 0)
		goto out;
	du = duw;
	if (routed) {
		if (dx || da) {
			if (!(du = kc_alloc(bytes)) || kcuda_memset0(du, bytes) < 0)
				goto out;
		} else {
			du = NULL;
		}
		if (kcuda_router_weight_backward(dt, drlogits, 0, du, duw, 0, s, u, 0, n, e, r, scale,
						 0, 0.0f) < 0)
			goto out;
	}
	if (da && kc_gemm(dt, KCUDA_F32, da, du, x, er, c, n, 1, 0, fa, 1.0f) < 0)
		goto out;
	if (dx && kc_gemm(dt, dt, dx, du, a, n, c, er, 0, 0, fa, 1.0f) < 0)
		goto out;
	rc = 0;
out:
	if (du != duw)
		kc_free(du);
	kc_free(duw);
	return rc;
}

/* ---- concurrent domain experts: segmented products -------------------- */

static int s_check_segments(const int *seg, int nseg)
{
	for (int i = 0; i < nseg; i++)
		if (seg[i] < 0 || seg[i + 1] < seg[i])
			return err_set("lora segments: offsets %d..%d of segment %d are not increasing",
				       seg[i], seg[i + 1], i);
	return 0;
}

/* Element `row * width` of a dt matrix, as a byte pointer. */
#define KC_ROWS(p, dt, row, width) ((char *)(p) + (size_t)(row) * (width) * kcuda_dtype_size(dt))

extern "C" int kcuda_lora_segments_forward(int dt, void *y, void *u, const void *x,
					   const void *const *a, const void *const *b,
					   const int *seg, int nseg, int c, int oc, int r,
					   float scale)
{
	if (s_check_segments(seg, nseg) < 0)
		return -1;
	for (int i = 0; i < nseg; i++) {
		int st = seg[i], m = seg[i + 1] - seg[i];
		void *ui = KC_ROWS(u, dt, st, r);
		if (m == 0)
			continue;
		if (kc_gemm(dt, dt, ui, KC_ROWS(x, dt, st, c), a[i], m, r, c, 0, 1, 1.0f, 0.0f) < 0 ||
		    kc_gemm(dt, dt, KC_ROWS(y, dt, st, oc), ui, b[i], m, oc, r, 0, 1, scale, 1.0f) < 0)
			return err_prefix("lora segment %d", i);
	}
	return 0;
}

extern "C" int kcuda_lora_segments_backward(int dt, void *dx, float *const *da, float *const *db,
					    const void *dy, const void *x, const void *u,
					    const void *const *a, const void *const *b,
					    const int *seg, int nseg, int c, int oc, int r,
					    float scale)
{
	void *du;
	int rc = 0;

	if (s_check_segments(seg, nseg) < 0 || !kc_get())
		return -1;
	if (!(du = kc_alloc((size_t)seg[nseg] * r * kcuda_dtype_size(dt))))
		return -1;
	for (int i = 0; i < nseg && rc == 0; i++) {
		int st = seg[i], m = seg[i + 1] - seg[i];
		const void *dyi = KC_ROWS(dy, dt, st, oc), *xi = KC_ROWS(x, dt, st, c);
		void *dui = KC_ROWS(du, dt, st, r);
		float *dai = da ? da[i] : NULL, *dbi = db ? db[i] : NULL;
		if (m == 0)
			continue;
		if ((dbi && kc_gemm(dt, KCUDA_F32, dbi, dyi, KC_ROWS(u, dt, st, r), oc, r, m, 1, 0,
				    scale, 1.0f) < 0) ||
		    ((dai || dx) && kc_gemm(dt, dt, dui, dyi, b[i], m, r, oc, 0, 0, 1.0f, 0.0f) < 0) ||
		    (dai && kc_gemm(dt, KCUDA_F32, dai, dui, xi, r, c, m, 1, 0, scale, 1.0f) < 0) ||
		    (dx && kc_gemm(dt, dt, KC_ROWS(dx, dt, st, c), dui, a[i], m, c, r, 0, 0, scale,
				   1.0f) < 0))
			rc = err_prefix("lora segment %d", i);
	}
	kc_free(du);
	return rc;
}
