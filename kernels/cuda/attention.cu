/* attention.cu: causal grouped-query attention with its products on the
 * tensor cores (cuBLAS batched products) and the softmax in fused row
 * kernels.
 *
 * Per (batch b, query head h), kv head kvh = h / (NH/NKV), scale 1/sqrt(HS):
 *   forward   S = scale Q_h K^T            (fp32, [T,T])
 *             P = causal softmax(S), lse    (P in the storage type, lse fp32)
 *             O_h = P V
 *   backward  S, P recomputed from lse (nothing T x T is kept in between)
 *             dV += P^T dO_h                (per query head of the group, in order)
 *             dP = dO_h V^T                 (fp32)
 *             dS = P (dP - rowsum(P dP))    (in place over P)
 *             dQ_h += scale dS K;  dK += scale dS^T Q_h
 * Q rows of head h are NH*HS elements apart, so each product reads the
 * heads in place ([B,T,H,HS] layout), no transposes.
 *
 * Memory: the scores of a group of sequences exist only inside one call
 * (S fp32 + P: 6 NH T^2 bytes per sequence in bf16, in chunks of sequences
 * capped at KC_ATT_CHUNK bytes); what forward saves for backward is lse,
 * O(T) per row, as in flash attention. The tiled kernels that keep S on
 * the chip (flash.cu: no T^2 traffic, the masked half of the products
 * skipped) take over for bf16 and f16 at head sizes 64 and 128 when
 * kc_flash is on (the default; MODULA_CUDA_FLASH=0 turns them off).
 * Deterministic: no atomics; the query heads of a group add into dK, dV
 * one after the other.
 */
#include "kernels/cuda/kc.cuh"

#include <float.h>
#include <stdlib.h>

#define KC_ATT_CHUNK ((size_t)1 << 30)

/* Row r of the scores of a chunk: query position i = r % t of the (b, h)
 * pair r / t; only columns j <= i exist (causal). One warp per row. */
#define KC_ATT_ROW(rows)                                                        \
	size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;   \
	int lane = threadIdx.x % 32;                                            \
	if (r >= (rows))                                                        \
		return;                                                         \
	int i = (int)(r % t);                                                   \
	const float *srow = s + r * t

/* P = softmax over j <= i of S, zero above the diagonal; lse saved. */
template <typename T>
__global__ void k_att_softmax(T *p, float *lse, const float *s, size_t rows, int t)
{
	KC_ATT_ROW(rows);
	T *prow = p + r * t;
	float m = -FLT_MAX, sum = 0.0f, l;

	for (int j = lane; j <= i; j += 32)
		m = fmaxf(m, srow[j]);
	m = kc_warp_max(m);
	for (int j = lane; j <= i; j += 32)
		sum += expf(srow[j] - m);
	l = m + logf(kc_warp_sum(sum));
	if (lane == 0)
		lse[r] = l;
	for (int j = lane; j < t; j += 32)
		prow[j] = kc_st<T>(j <= i ? expf(srow[j] - l) : 0.0f);
}

/* P again, from the saved lse. */
template <typename T>
__global__ void k_att_probs(T *p, const float *lse, const float *s, size_t rows, int t)
{
	KC_ATT_ROW(rows);
	T *prow = p + r * t;
	float l = lse[r];

	for (int j = lane; j < t; j += 32)
		prow[j] = kc_st<T>(j <= i ? expf(srow[j] - l) : 0.0f);
}

/* dS = P (dP - sum_j P dP), over P in place; s holds dP. */
template <typename T>
__global__ void k_att_dsoftmax(T *p, const float *s, size_t rows, int t)
{
	KC_ATT_ROW(rows);
	T *prow = p + r * t;
	float d = 0.0f;

	for (int j = lane; j <= i; j += 32)
		d += kc_ld(prow[j]) * srow[j];
	d = kc_warp_sum(d);
	for (int j = lane; j <= i; j += 32)
		prow[j] = kc_st<T>(kc_ld(prow[j]) * (srow[j] - d));
}

/* The pointer arrays of one chunk's batched products: entry e = (b, h) or,
 * for the per-group-head products, (b, kvh). */
struct att_ptrs {
	const void **a, **b;
	void **c;
};

struct att_shape {
	int b, t, nh, nkv, hs, g; /* g = nh / nkv */
	size_t es;                /* bytes per element of the storage type */
};

/* Element (b, i=0, h) of a [B,T,H,HS] tensor, as a byte pointer. */
static const char *s_head(const void *x, const struct att_shape *sh, int b, int h, int nheads)
{
	return (const char *)x + ((size_t)b * sh->t * nheads + h) * sh->hs * sh->es;
}

static int s_check_shape(int nh, int nkv, int hs)
{
	if (hs <= 0 || nkv <= 0 || nh % nkv)
		return err_set("attention: %d query heads do not split into %d kv heads of size %d",
			       nh, nkv, hs);
	return 0;
}

/* Sequences per chunk so that S (fp32) and P fit in KC_ATT_CHUNK. */
static int s_chunk(const struct att_shape *sh)
{
	size_t per = (size_t)sh->nh * sh->t * sh->t * (sizeof(float) + sh->es);
	size_t nb = KC_ATT_CHUNK / (per ? per : 1);

	return nb < 1 ? 1 : nb > (size_t)sh->b ? sh->b : (int)nb;
}

/* S[e] = scale Q_h K_kvh^T for the nb sequences from b0, e = (b - b0, h). */
static int s_scores(int dt, float *s, const void *q, const void *k, const struct att_shape *sh,
		    int b0, int nb, struct att_ptrs *pp)
{
	int n = 0;

	for (int b = b0; b < b0 + nb; b++) {
		for (int h = 0; h < sh->nh; h++, n++) {
			pp->a[n] = s_head(q, sh, b, h, sh->nh);
			pp->b[n] = s_head(k, sh, b, h / sh->g, sh->nkv);
			pp->c[n] = s + (size_t)n * sh->t * sh->t;
		}
	}
	return kc_gemm_batched(dt, KCUDA_F32, pp->c, pp->a, pp->b, n, sh->t, sh->t, sh->hs, 0, 1,
			       sh->nh * sh->hs, sh->nkv * sh->hs, sh->t,
			       1.0f / sqrtf((float)sh->hs), 0.0f);
}

/* For every (b, h) of the chunk: C_h (rows NC*HS apart) = alpha op(M_h) X_h
 * + beta C_h, M the [T,T] matrix of the pair (P or dS), X a head of x
 * (rows NX*HS apart); with `group_head` >= 0 only the heads h = kvh*g +
 * group_head, whose outputs are kv heads (distinct within the call). */
static int s_pv(int dt, void *c, int nc, const void *m, int tm, const void *x, int nx,
		const struct att_shape *sh, int b0, int nb, int group_head, float alpha,
		float beta, struct att_ptrs *pp)
{
	int n = 0;

	for (int b = b0; b < b0 + nb; b++) {
		for (int h = 0; h < sh->nh; h++) {
			int kvh = h / sh->g;
			if (group_head >= 0 && h % sh->g != group_head)
				continue;
			pp->a[n] = (const char *)m + (size_t)((b - b0) * sh->nh + h) * sh->t * sh->t * sh->es;
			pp->b[n] = s_head(x, sh, b, nx == sh->nh ? h : kvh, nx);
			pp->c[n] = (void *)s_head(c, sh, b, nc == sh->nh ? h : kvh, nc);
			n++;
		}
	}
	return kc_gemm_batched(dt, dt, pp->c, pp->a, pp->b, n, sh->t, sh->hs, sh->t, tm, 0, sh->t,
			       nx * sh->hs, nc * sh->hs, alpha, beta);
}

/* Scratch of one call: S (fp32), P (storage type), pointer arrays. */
struct att_work {
	float *s;
	void *p;
	struct att_ptrs pp;
	void *host;
};

/* S and P live on between calls, grown when a call needs more: their
 * addresses are inside the batched products' pointer arrays, which a CUDA
 * graph records, so they must be the same at every call of a shape. A
 * growth frees the old ones: graphs recorded before are stale then
 * (kc_pc_epoch), and inside a capture it is refused. */
static float *s_att_s;
static void *s_att_p;
static size_t s_att_cap; /* elements of each */

static int s_work_open(struct att_work *w, const struct att_shape *sh, int nb)
{
	size_t tt = (size_t)nb * sh->nh * sh->t * sh->t, n = (size_t)nb * sh->nh;

	w->s = NULL;
	w->p = NULL;
	if (!(w->host = malloc(3 * n * sizeof(void *))))
		return err_set("out of memory");
	w->pp.a = (const void **)w->host;
	w->pp.b = w->pp.a + n;
	w->pp.c = (void **)(w->pp.b + n);
	if (tt > s_att_cap) {
		/* grown by half again at least: decoding asks one more row at a time */
		size_t cap = tt > s_att_cap + s_att_cap / 2 ? tt : s_att_cap + s_att_cap / 2;
		if (kcuda_capturing())
			return err_set("attention scores of %d sequences of %d tokens need more scratch "
				       "inside a CUDA graph capture", nb, sh->t);
		kc_free(s_att_s);
		kc_free(s_att_p);
		s_att_s = NULL, s_att_p = NULL, s_att_cap = 0;
		kc_pc_epoch++;
		/* P sized for fp32, the widest storage type */
		if (!(s_att_s = (float *)kc_alloc(cap * sizeof(float))) ||
		    !(s_att_p = kc_alloc(cap * sizeof(float)))) {
			kc_free(s_att_s);
			s_att_s = NULL;
			return err_prefix("attention scores of %d sequences of %d tokens", nb, sh->t);
		}
		s_att_cap = cap;
	}
	w->s = s_att_s, w->p = s_att_p;
	return 0;
}

static void s_work_close(struct att_work *w)
{
	free(w->host);
}

/* Launch a row kernel over the chunk's rows with storage type dt. */
#define KC_ATT_ROWS(dt, rows, name, kernel, ...)                                            \
	do {                                                                                \
		KC_DISPATCH(dt, T, kernel<T><<<kc_warp_blocks(rows), KC_THREADS, 0,          \
				cx->stream>>>(__VA_ARGS__));                                \
		if (cudaGetLastError() != cudaSuccess) {                                    \
			err_set("CUDA kernel '%s' failed to launch", name);                 \
			goto out;                                                           \
		}                                                                           \
	} while (0)

extern "C" int kcuda_attention_forward(int dt, void *out, float *lse, const void *q,
				       const void *k, const void *v, int b, int t, int nh,
				       int nkv, int hs)
{
	struct att_shape sh = { b, t, nh, nkv, hs, nkv > 0 ? nh / nkv : 1, kcuda_dtype_size(dt) };
	struct att_work w;
	int nb, rc = -1;

	KC_CTX(cx);
	if (s_check_shape(nh, nkv, hs) < 0)
		return -1;
	if (!kc_is_float(dt))
		return err_set("unknown CUDA storage type %d", dt);
	if ((size_t)b * t == 0)
		return 0;
	{
		const void *ptrs[] = { out, q, k, v };
		if (kc_flash_usable(dt, b, hs, nh, nkv, ptrs, 4))
			return kc_flash_forward(dt, out, lse, q, k, v, b, t, nh, nkv, hs);
	}
	nb = s_chunk(&sh);
	if (s_work_open(&w, &sh, nb) < 0)
		goto out;
	for (int b0 = 0; b0 < b; b0 += nb) {
		int n = b - b0 < nb ? b - b0 : nb;
		size_t rows = (size_t)n * nh * t;
		if (s_scores(dt, w.s, q, k, &sh, b0, n, &w.pp) < 0)
			goto out;
		KC_ATT_ROWS(dt, rows, "attention_softmax", k_att_softmax, (T *)w.p,
			    lse + (size_t)b0 * nh * t, w.s, rows, t);
		if (s_pv(dt, out, nh, w.p, 0, v, nkv, &sh, b0, n, -1, 1.0f, 0.0f, &w.pp) < 0)
			goto out;
	}
	rc = 0;
out:
	s_work_close(&w);
	return rc;
}

/* add: dq, dk, dv += the gradients (the op); 0: = them (the _set op, so
 * the caller need not zero them: the first product into each overwrites). */
static int s_attention_backward(int add, int dt, void *dq, void *dk, void *dv, const void *dout,
				const void *out, const float *lse, const void *q, const void *k,
				const void *v, int b, int t, int nh, int nkv, int hs)
{
	struct att_shape sh = { b, t, nh, nkv, hs, nkv > 0 ? nh / nkv : 1, kcuda_dtype_size(dt) };
	float scale = 1.0f / sqrtf((float)hs);
	struct att_work w;
	int nb, rc = -1;

	/* here rowsum(dO O) is taken as rowsum(P dP), the same number; the
	 * flash kernels read out for it */
	KC_CTX(cx);
	if (s_check_shape(nh, nkv, hs) < 0)
		return -1;
	if (!kc_is_float(dt))
		return err_set("unknown CUDA storage type %d", dt);
	if ((size_t)b * t == 0 || (!dq && !dk && !dv))
		return 0;
	{
		const void *ptrs[] = { dq, dk, dv, dout, out, q, k, v };
		if (kc_flash_usable(dt, b, hs, nh, nkv, ptrs, 8) && out)
			return kc_flash_backward(add, dt, dq, dk, dv, dout, out, lse, q, k, v, b, t,
						 nh, nkv, hs);
	}
	nb = s_chunk(&sh);
	if (s_work_open(&w, &sh, nb) < 0)
		goto out;
	for (int b0 = 0; b0 < b; b0 += nb) {
		int n = b - b0 < nb ? b - b0 : nb;
		size_t rows = (size_t)n * nh * t;
		if (s_scores(dt, w.s, q, k, &sh, b0, n, &w.pp) < 0)
			goto out;
		KC_ATT_ROWS(dt, rows, "attention_probs", k_att_probs, (T *)w.p,
			    lse + (size_t)b0 * nh * t, w.s, rows, t);
		for (int gh = 0; dv && gh < sh.g; gh++)
			if (s_pv(dt, dv, nkv, w.p, 1, dout, nh, &sh, b0, n, gh, 1.0f,
				 add || gh ? 1.0f : 0.0f, &w.pp) < 0)
				goto out;
		if (!dq && !dk)
			continue;
		/* dP = dO_h V^T into S */
		{
			int e = 0;
			for (int bb = b0; bb < b0 + n; bb++) {
				for (int h = 0; h < nh; h++, e++) {
					w.pp.a[e] = s_head(dout, &sh, bb, h, nh);
					w.pp.b[e] = s_head(v, &sh, bb, h / sh.g, nkv);
					w.pp.c[e] = w.s + (size_t)e * t * t;
				}
			}
			if (kc_gemm_batched(dt, KCUDA_F32, w.pp.c, w.pp.a, w.pp.b, e, t, t, hs, 0, 1,
					    nh * hs, nkv * hs, t, 1.0f, 0.0f) < 0)
				goto out;
		}
		KC_ATT_ROWS(dt, rows, "attention_dsoftmax", k_att_dsoftmax, (T *)w.p, w.s, rows, t);
		if (dq && s_pv(dt, dq, nh, w.p, 0, k, nkv, &sh, b0, n, -1, scale, add ? 1.0f : 0.0f,
			       &w.pp) < 0)
			goto out;
		for (int gh = 0; dk && gh < sh.g; gh++)
			if (s_pv(dt, dk, nkv, w.p, 1, q, nh, &sh, b0, n, gh, scale,
				 add || gh ? 1.0f : 0.0f, &w.pp) < 0)
				goto out;
	}
	rc = 0;
out:
	s_work_close(&w);
	return rc;
}

extern "C" int kcuda_attention_backward(int dt, void *dq, void *dk, void *dv, const void *dout,
					const void *out, const float *lse, const void *q,
					const void *k, const void *v, int b, int t, int nh, int nkv,
					int hs)
{
	return s_attention_backward(1, dt, dq, dk, dv, dout, out, lse, q, k, v, b, t, nh, nkv, hs);
}

extern "C" int kcuda_attention_backward_set(int dt, void *dq, void *dk, void *dv,
					    const void *dout, const void *out, const float *lse,
					    const void *q, const void *k, const void *v, int b, int t,
					    int nh, int nkv, int hs)
{
	return s_attention_backward(0, dt, dq, dk, dv, dout, out, lse, q, k, v, b, t, nh, nkv, hs);
}
