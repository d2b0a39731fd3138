/* ops.c: tests/gpu-ops, every CUDA op (forward and backward) against the
 * CPU reference op of kernels/cpu/ops.h, in each storage type.
 *
 * Each case draws random inputs, rounds them to the storage type (so both
 * sides see the same numbers and only the arithmetic differs), runs the CPU
 * op in fp32 and the CUDA op, and compares every output tensor with
 *     |gpu - cpu| <= atol + rtol * |cpu|
 * the form of llm.c's dev/cuda checks: rtol is the storage type's rounding
 * (f32 1e-5 for summation order, bf16 2^-7, f16 2^-10) and atol is the
 * op's scale times a base per type (f32 1e-5, bf16 1e-2, f16 1e-3), the
 * table s_cases. Each line prints the max |difference| of every tensor.
 * The optimizer case checks kcuda_adamw against worker/optim.c itself, with
 * fp32 tolerances (atol 1e-6, rtol 1e-5) on the fp32 master weights and
 * moments. Gradients start from random values, so "+=" is checked too;
 * backward ops get the CPU forward's saved tensors rounded the same way, so
 * each op is checked on its own.
 *
 * Without a GPU (CI, a CPU-only build) every case is printed as skipped with
 * the reason: never as passed. Not a benchmark: tests/gpu/check.sh times.
 */
#include "config.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/kcuda.h"
#include "kernels/device.h"
#include "worker/optim.h"
#include "err.h"
#include "tap.h"
#include "gpu/probe.h"

#include <math.h>
#include <omp.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

/* ---- the harness ------------------------------------------------------ */

static int s_dt;            /* the storage type of the case running */
static float s_atol;        /* the case's absolute tolerance */
static char s_msg[4096];    /* the case's differences, or its error */
static int s_bad;           /* a tolerance was exceeded */
static unsigned long long s_rng = 0x9e3779b97f4a7c15ull;

#define S_MAXPTR 512
static void *s_host_ptrs[S_MAXPTR], *s_dev_ptrs[S_MAXPTR];
static int s_nhost, s_ndev;

static float s_rtol(int dt)
{
	return dt == KCUDA_BF16 ? 1.0f / 128 : dt == KCUDA_F16 ? 1.0f / 1024 : 1e-5f;
}

static float s_abase(int dt)
{
	return dt == KCUDA_BF16 ? 1e-2f : dt == KCUDA_F16 ? 1e-3f : 1e-5f;
}

/* Every buffer of a case is tracked and released when the case ends. */
static void *s_track_host(void *p)
{
	if (!p || s_nhost == S_MAXPTR) {
		fprintf(stderr, "gpu-ops: out of host buffers\n");
		exit(99);
	}
	return s_host_ptrs[s_nhost++] = p;
}

static void s_release(void)
{
	while (s_nhost)
		free(s_host_ptrs[--s_nhost]);
	while (s_ndev)
		kcuda_free(s_dev_ptrs[--s_ndev]);
}

static float s_uniform(void)
{
	s_rng ^= s_rng << 13;
	s_rng ^= s_rng >> 7;
	s_rng ^= s_rng << 17;
	return (float)((s_rng >> 40) / 16777216.0);
}

static float *s_zeros(size_t n)
{
	return s_track_host(calloc(n ? n : 1, sizeof(float)));
}

static float *s_rand(size_t n, float lo, float hi)
{
	float *p = s_zeros(n);

	for (size_t i = 0; i < n; i++)
		p[i] = lo + (hi - lo) * s_uniform();
	return p;
}

static int *s_ints(size_t n, int lo, int hi)
{
	int *p = s_track_host(malloc((n ? n : 1) * sizeof(int)));

	for (size_t i = 0; i < n; i++)
		p[i] = lo + (int)(s_uniform() * (hi - lo));
	return p;
}

static float *s_copy(const float *h, size_t n)
{
	float *p = s_zeros(n);

	memcpy(p, h, n * sizeof(float));
	return p;
}

/* A device copy of host h (n elements of type sdt) in type dt; NULL, with
 * err_set(), on failure. */
static void *s_dev_as(const void *h, size_t n, int dt, int sdt)
{
	void *d;

	if (s_ndev == S_MAXPTR)
		return err_set("out of device buffers"), NULL;
	if (!(d = kcuda_malloc((n ? n : 1) * kcuda_dtype_size(dt))))
		return NULL;
	s_dev_ptrs[s_ndev++] = d;
	if (h && kcuda_copy_h2d(d, dt, h, sdt, n) < 0)
		return NULL;
	return d;
}

#define S_DEV(h, n) s_dev_as(h, n, s_dt, KCUDA_F32)   /* in the case's type */
#define S_DEV32(h, n) s_dev_as(h, n, KCUDA_F32, KCUDA_F32)
#define S_DEVI(h, n) s_dev_as(h, n, KCUDA_I32, KCUDA_I32)

/* Round h in place to the case's storage type (through the GPU). */
static int s_round(float *h, size_t n)
{
	void *d = S_DEV(h, n);

	return d ? kcuda_copy_d2h(h, KCUDA_F32, d, s_dt, n) : -1;
}

/* Fill device buffer d (n elements of the case's type) with NaN: what an
 * op that writes its output (the _set ops) must never read. */
static int s_nan_fill(void *d, size_t n)
{
	float *h = s_zeros(n);

	for (size_t i = 0; i < n; i++)
		h[i] = NAN;
	return kcuda_copy_h2d(d, s_dt, h, KCUDA_F32, n);
}

/* Fresh random values already representable in the case's type. */
static float *s_rrand(size_t n, float lo, float hi)
{
	float *p = s_rand(n, lo, hi);

	return s_round(p, n) < 0 ? NULL : p;
}

/* Compare device tensor d (type dt) with the CPU's ref under
 * |d - ref| <= atol + rtol |ref|; note the max difference in s_msg and
 * whether the tolerance was exceeded. */
static int s_cmp_tol(const char *name, const void *d, int dt, const float *ref, size_t n,
		     float atol, float rtol)
{
	float *g = s_zeros(n), maxd = 0.0f;
	size_t at = strlen(s_msg), where = 0, first_bad = n;

	if (kcuda_sync() < 0 || kcuda_copy_d2h(g, KCUDA_F32, d, dt, n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		float diff = fabsf(g[i] - ref[i]);
		if (!(diff <= atol + rtol * fabsf(ref[i]))) {
			s_bad = 1;
			if (first_bad == n)
				first_bad = i;
		}
		if (diff > maxd || diff != diff)
			maxd = diff, where = i;
	}
	snprintf(s_msg + at, sizeof s_msg - at, "%s%s %.2e",
		 at && s_msg[at - 1] != ' ' ? ", " : "", name, maxd);
	/* where it went wrong, to find a kernel's bad index from one run */
	if (first_bad < n) {
		at = strlen(s_msg);
		snprintf(s_msg + at, sizeof s_msg - at, " (worst at element %zu: %g vs %g; first over "
			 "at %zu of %zu)", where, g[where], ref[where], first_bad, n);
	}
	return 0;
}

/* With the case's tolerances, for a tensor in the case's type or in fp32. */
#define S_CMP(name, d, ref, n) s_cmp_tol(name, d, s_dt, ref, n, s_atol, s_rtol(s_dt))
#define S_CMP32(name, d, ref, n) s_cmp_tol(name, d, KCUDA_F32, ref, n, s_atol, s_rtol(s_dt))
/* fp32 arithmetic on both sides from the same fp32 inputs (the optimizer). */
#define S_CMP32_STRICT(name, d, ref, n) s_cmp_tol(name, d, KCUDA_F32, ref, n, 1e-6f, 1e-5f)

/* Bail out of a case when a CUDA call failed (err_msg() says why). */
#define S_TRY(x) do { if ((x) < 0) return -1; } while (0)
#define S_PTR(p) do { if (!(p)) return -1; } while (0)

/* ---- the cases -------------------------------------------------------- */

static int case_gemm(void)
{
	int m = 37, n = 45, k = 70;

	for (int ta = 0; ta < 2; ta++) {
		for (int tb = 0; tb < 2; tb++) {
			float *a = s_rrand((size_t)m * k, -1, 1), *b = s_rrand((size_t)k * n, -1, 1);
			float *c = s_rrand((size_t)m * n, -1, 1);
			void *da, *db, *dc;
			char name[16];
			S_PTR(a && b && c);
			S_PTR((da = S_DEV(a, (size_t)m * k)) && (db = S_DEV(b, (size_t)k * n)) &&
			      (dc = S_DEV(c, (size_t)m * n)));
			op_gemm(c, a, b, m, n, k, ta, tb, 0.7f, 0.3f);
			S_TRY(kcuda_gemm(s_dt, dc, da, db, m, n, k, ta, tb, 0.7f, 0.3f));
			snprintf(name, sizeof name, "c[t%d%d]", ta, tb);
			S_TRY(S_CMP(name, dc, c, (size_t)m * n));
		}
	}
	return 0;
}

static int case_embedding(void)
{
	int n = 53, c = 96, v = 40;
	float *wte = s_rrand((size_t)v * c, -1, 1), *out = s_zeros((size_t)n * c);
	float *dout = s_rrand((size_t)n * c, -1, 1), *dwte = s_rand((size_t)v * c, -1, 1);
	int *tok = s_ints(n, 0, v);
	void *dw, *dt, *dout_d, *ddout, *ddwte;

	S_PTR(wte && dout);
	S_PTR((dw = S_DEV(wte, (size_t)v * c)) && (dt = S_DEVI(tok, n)) &&
	      (dout_d = S_DEV(NULL, (size_t)n * c)) && (ddout = S_DEV(dout, (size_t)n * c)) &&
	      (ddwte = S_DEV32(dwte, (size_t)v * c)));
	op_embedding_forward(out, tok, wte, n, c);
	op_embedding_backward(dwte, dout, tok, n, c);
	S_TRY(kcuda_embedding_forward(s_dt, dout_d, dt, dw, n, c));
	S_TRY(kcuda_embedding_backward(s_dt, ddwte, ddout, dt, n, c));
	S_TRY(S_CMP("out", dout_d, out, (size_t)n * c));
	return S_CMP32("dwte", ddwte, dwte, (size_t)v * c);
}

/* out = res + inp W^T in one product (kcuda_matmul_forward_res); res must
 * be left as it was. */
static int s_matmul_res(int n, int c, int oc)
{
	size_t ni = (size_t)n * c, no = (size_t)n * oc, nw = (size_t)oc * c;
	float *inp = s_rrand(ni, -1, 1), *w = s_rrand(nw, -1, 1), *res = s_rrand(no, -1, 1);
	float *out = s_zeros(no);
	void *di, *dwd, *dres, *dout;
	char name[32];

	S_PTR(inp && w && res);
	S_PTR((di = S_DEV(inp, ni)) && (dwd = S_DEV(w, nw)) && (dres = S_DEV(res, no)) &&
	      (dout = S_DEV(NULL, no)));
	op_matmul_forward(out, inp, w, NULL, n, c, oc);
	for (size_t i = 0; i < no; i++)
		out[i] += res[i];
	S_TRY(kcuda_matmul_forward_res(s_dt, dout, dres, di, dwd, n, c, oc));
	snprintf(name, sizeof name, "out (+res, %dx%dx%d)", n, c, oc);
	S_TRY(S_CMP(name, dout, out, no));
	return S_CMP("res (unchanged)", dres, res, no);
}

static int case_matmul(void)
{
	int n = 66, c = 96, oc = 80;
	size_t ni = (size_t)n * c, no = (size_t)n * oc, nw = (size_t)oc * c;
	float *inp = s_rrand(ni, -1, 1), *w = s_rrand(nw, -1, 1), *b = s_rrand(oc, -1, 1);
	float *out = s_zeros(no), *dout = s_rrand(no, -1, 1), *dinp = s_rrand(ni, -1, 1);
	float *dw = s_rand(nw, -1, 1), *db = s_rand(oc, -1, 1);
	void *di, *dwd, *dbd, *dod, *ddo, *ddi, *ddw, *ddb;

	S_PTR(inp && w && b && dout && dinp);
	S_PTR((di = S_DEV(inp, ni)) && (dwd = S_DEV(w, nw)) && (dbd = S_DEV(b, oc)) &&
	      (dod = S_DEV(NULL, no)) && (ddo = S_DEV(dout, no)) && (ddi = S_DEV(dinp, ni)) &&
	      (ddw = S_DEV32(dw, nw)) && (ddb = S_DEV32(db, oc)));
	op_matmul_forward(out, inp, w, b, n, c, oc);
	op_matmul_backward(dinp, dw, db, dout, inp, w, n, c, oc);
	S_TRY(kcuda_matmul_forward(s_dt, dod, di, dwd, dbd, n, c, oc));
	S_TRY(kcuda_matmul_backward(s_dt, ddi, ddw, ddb, ddo, di, dwd, n, c, oc));
	S_TRY(S_CMP("out", dod, out, no));
	S_TRY(S_CMP("dinp", ddi, dinp, ni));
	S_TRY(S_CMP32("dw", ddw, dw, nw));
	S_TRY(S_CMP32("db", ddb, db, oc));
	return s_matmul_res(n, c, oc);
}

/* Rows of 96, 392, 896 and 1096: the 16-byte kernels keep a row in
 * registers up to 4 x 32 vectors of a lane's (bf16: 1024 wide) and loop
 * over it beyond. */
static int s_rmsnorm(int c)
{
	int n = 66;
	size_t nc = (size_t)n * c;
	float *inp = s_rrand(nc, -2, 2), *w = s_rrand(c, 0.5f, 1.5f), *out = s_zeros(nc);
	float *rstd = s_zeros(n), *dout = s_rrand(nc, -1, 1), *dinp = s_rrand(nc, -1, 1);
	float *dw = s_rand(c, -1, 1);
	void *di, *dwd, *dod, *drs, *drs_cpu, *ddo, *ddi, *ddw;

	S_PTR(inp && w && dout && dinp);
	op_rmsnorm_forward(out, rstd, inp, w, n, c, 1e-6f);
	S_PTR((di = S_DEV(inp, nc)) && (dwd = S_DEV(w, c)) && (dod = S_DEV(NULL, nc)) &&
	      (drs = S_DEV32(NULL, n)) && (drs_cpu = S_DEV32(rstd, n)) && (ddo = S_DEV(dout, nc)) &&
	      (ddi = S_DEV(dinp, nc)) && (ddw = S_DEV32(dw, c)));
	op_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, n, c);
	S_TRY(kcuda_rmsnorm_forward(s_dt, dod, drs, di, dwd, n, c, 1e-6f));
	S_TRY(kcuda_rmsnorm_backward(s_dt, ddi, ddw, ddo, di, dwd, drs_cpu, n, c));
	S_TRY(S_CMP("out", dod, out, nc));
	S_TRY(S_CMP32("rstd", drs, rstd, n));
	S_TRY(S_CMP("dinp", ddi, dinp, nc));
	return S_CMP32("dw", ddw, dw, c);
}

static int case_rmsnorm(void)
{
	static const int cs[] = { 96, 392, 896, 1096 };

	for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
		size_t at = strlen(s_msg);
		snprintf(s_msg + at, sizeof s_msg - at, "[c %d] ", cs[i]);
		S_TRY(s_rmsnorm(cs[i]));
	}
	return 0;
}

/* RMSNorm with row strides (kcuda_rmsnorm_*_ld): out's, dinp's and
 * dout's rows ld apart, the columns past c of out and dinp untouched; ld
 * = c + 8 keeps the 16-byte kernels' alignment, c + 3 does not (the
 * scalar ones run). */
static int s_rmsnorm_ld(int ld)
{
	int n = 66, c = 96;
	size_t nc = (size_t)n * c, nl = (size_t)n * ld;
	float *inp = s_rrand(nc, -2, 2), *w = s_rrand(c, 0.5f, 1.5f), *out = s_zeros(nc);
	float *rstd = s_zeros(n), *doutl = s_rrand(nl, -1, 1), *dout = s_zeros(nc);
	float *dinpl = s_rrand(nl, -1, 1), *dinp = s_zeros(nc), *dw = s_rand(c, -1, 1);
	float *outl = s_zeros(nl);
	void *di, *dwd, *dod, *drs, *drs_cpu, *ddo, *ddi, *ddw;

	S_PTR(inp && w && out && rstd && doutl && dout && dinpl && dinp && dw && outl);
	for (size_t i = 0; i < nl; i++)
		outl[i] = 3.0f; /* what must stay past column c */
	for (int r = 0; r < n; r++) {
		memcpy(dout + (size_t)r * c, doutl + (size_t)r * ld, (size_t)c * sizeof *dout);
		memcpy(dinp + (size_t)r * c, dinpl + (size_t)r * ld, (size_t)c * sizeof *dinp);
	}
	op_rmsnorm_forward(out, rstd, inp, w, n, c, 1e-6f);
	S_PTR((di = S_DEV(inp, nc)) && (dwd = S_DEV(w, c)) && (dod = S_DEV(outl, nl)) &&
	      (drs = S_DEV32(NULL, n)) && (drs_cpu = S_DEV32(rstd, n)) && (ddo = S_DEV(doutl, nl)) &&
	      (ddi = S_DEV(dinpl, nl)) && (ddw = S_DEV32(dw, c)));
	op_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, n, c);
	for (int r = 0; r < n; r++) {
		memcpy(outl + (size_t)r * ld, out + (size_t)r * c, (size_t)c * sizeof *out);
		memcpy(dinpl + (size_t)r * ld, dinp + (size_t)r * c, (size_t)c * sizeof *dinp);
	}
	S_TRY(kcuda_rmsnorm_forward_ld(s_dt, dod, ld, drs, di, dwd, n, c, 1e-6f));
	S_TRY(kcuda_rmsnorm_backward_ld(s_dt, ddi, ld, ddw, ddo, ld, di, dwd, drs_cpu, n, c));
	S_TRY(S_CMP("out (strided)", dod, outl, nl));
	S_TRY(S_CMP32("rstd", drs, rstd, n));
	S_TRY(S_CMP("dinp (strided)", ddi, dinpl, nl));
	return S_CMP32("dw", ddw, dw, c);
}

static int case_rmsnorm_ld(void)
{
	S_TRY(s_rmsnorm_ld(96 + 8));
	return s_rmsnorm_ld(96 + 3);
}

static int case_rope(void)
{
	int b = 2, t = 37, nh = 3, hs = 64, pos0 = 5;
	size_t nx = (size_t)b * t * nh * hs, nt = (size_t)t * hs / 2;
	float *cosv = s_zeros(nt), *sinv = s_zeros(nt);
	float *x = s_rrand(nx, -1, 1), *dx = s_rrand(nx, -1, 1);
	void *dcos, *dsin, *dxd, *ddx;

	S_PTR(x && dx);
	S_PTR((dcos = S_DEV32(NULL, nt)) && (dsin = S_DEV32(NULL, nt)) && (dxd = S_DEV(x, nx)) &&
	      (ddx = S_DEV(dx, nx)));
	op_rope_table(cosv, sinv, t, hs, pos0, 1e6f);
	op_rope_forward(x, cosv, sinv, b, t, nh, hs);
	op_rope_backward(dx, cosv, sinv, b, t, nh, hs);
	S_TRY(kcuda_rope_table(dcos, dsin, t, hs, pos0, 1e6f));
	S_TRY(kcuda_rope_forward(s_dt, dxd, dcos, dsin, b, t, nh, hs));
	S_TRY(kcuda_rope_backward(s_dt, ddx, dcos, dsin, b, t, nh, hs));
	S_TRY(S_CMP32("cos", dcos, cosv, nt));
	S_TRY(S_CMP32("sin", dsin, sinv, nt));
	S_TRY(S_CMP("x", dxd, x, nx));
	return S_CMP("dx", ddx, dx, nx);
}

/* Gradients the attention backward is not asked for (NULL): bit 0 dq,
 * 1 dk, 2 dv; those are not compared. */
static int s_att_null;

/* One attention shape: forward, then backward from the CPU's rounded out. */
static int s_attention(int b, int t, int nh, int nkv, int hs)
{
	size_t nq = (size_t)b * t * nh * hs, nk = (size_t)b * t * nkv * hs;
	float *q = s_rrand(nq, -1, 1), *k = s_rrand(nk, -1, 1), *v = s_rrand(nk, -1, 1);
	float *out = s_zeros(nq), *att = s_zeros((size_t)b * nh * t * t);
	float *dout = s_rrand(nq, -1, 1), *dq = s_rrand(nq, -1, 1), *dk = s_rrand(nk, -1, 1);
	float *dv = s_rrand(nk, -1, 1), *scratch = s_zeros((size_t)t * t * omp_get_max_threads());
	void *dqd, *dkd, *dvd, *dod, *dlse, *dout_cpu, *ddo, *ddq, *ddk, *ddv;

	S_PTR(q && k && v && dout && dq && dk && dv);
	op_attention_forward(out, att, q, k, v, b, t, nh, nkv, hs);
	S_PTR((dqd = S_DEV(q, nq)) && (dkd = S_DEV(k, nk)) && (dvd = S_DEV(v, nk)) &&
	      (dod = S_DEV(NULL, nq)) && (dlse = S_DEV32(NULL, (size_t)b * nh * t)) &&
	      (ddo = S_DEV(dout, nq)) && (ddq = S_DEV(dq, nq)) && (ddk = S_DEV(dk, nk)) &&
	      (ddv = S_DEV(dv, nk)));
	S_TRY(kcuda_attention_forward(s_dt, dod, dlse, dqd, dkd, dvd, b, t, nh, nkv, hs));
	S_TRY(S_CMP("out", dod, out, nq));
	/* the CPU saves probabilities, the GPU log-sum-exps: the backward runs
	 * from the GPU's own lse and the CPU's out, rounded */
	S_TRY(s_round(out, nq));
	S_PTR(dout_cpu = S_DEV(out, nq));
	op_attention_backward(dq, dk, dv, scratch, dout, att, q, k, v, b, t, nh, nkv, hs);
	S_TRY(kcuda_attention_backward(s_dt, s_att_null & 1 ? NULL : ddq, s_att_null & 2 ? NULL : ddk,
				       s_att_null & 4 ? NULL : ddv, ddo, dout_cpu, dlse, dqd, dkd,
				       dvd, b, t, nh, nkv, hs));
	if (!(s_att_null & 1))
		S_TRY(S_CMP("dq", ddq, dq, nq));
	if (!(s_att_null & 2))
		S_TRY(S_CMP("dk", ddk, dk, nk));
	if (!(s_att_null & 4))
		S_TRY(S_CMP("dv", ddv, dv, nk));
	/* _set over buffers of NaN: their old values must not be read */
	memset(dq, 0, nq * sizeof *dq);
	memset(dk, 0, nk * sizeof *dk);
	memset(dv, 0, nk * sizeof *dv);
	op_attention_backward(dq, dk, dv, scratch, dout, att, q, k, v, b, t, nh, nkv, hs);
	S_TRY(s_nan_fill(ddq, nq));
	S_TRY(s_nan_fill(ddk, nk));
	S_TRY(s_nan_fill(ddv, nk));
	S_TRY(kcuda_attention_backward_set(s_dt, s_att_null & 1 ? NULL : ddq,
					   s_att_null & 2 ? NULL : ddk, s_att_null & 4 ? NULL : ddv,
					   ddo, dout_cpu, dlse, dqd, dkd, dvd, b, t, nh, nkv, hs));
	if (!(s_att_null & 1))
		S_TRY(S_CMP("dq (set)", ddq, dq, nq));
	if (!(s_att_null & 2))
		S_TRY(S_CMP("dk (set)", ddk, dk, nk));
	return s_att_null & 4 ? 0 : S_CMP("dv (set)", ddv, dv, nk);
}

static int case_attention(void)
{
	S_TRY(s_attention(2, 37, 4, 2, 64));
	return s_attention(1, 19, 6, 2, 160);
}

/* The tiled flash kernels (kcuda_set_flash): head sizes 64 and 128, one
 * tile and several, T a multiple of the 64-row tile and not, 1 to 4 query
 * heads per kv head, B T NH odd. They take bf16 and f16; f32 runs the cuBLAS path
 * here, said in the line. */
static int case_attention_flash(void)
{
	static const int shapes[][5] = { /* b, t, nh, nkv, hs */
		{ 2, 37, 4, 2, 64 }, { 1, 64, 2, 2, 64 }, { 2, 200, 6, 2, 64 }, { 1, 130, 4, 1, 128 },
		{ 3, 1, 4, 4, 64 }, { 1, 97, 8, 2, 128 },
		{ 1, 37, 3, 1, 64 }, /* B T NH odd: the dK/dV partials' alignment */
	};
	int rc = 0;

	if (s_dt == KCUDA_F32)
		snprintf(s_msg, sizeof s_msg, "the cuBLAS path in f32; ");
	kcuda_set_flash(1);
	for (size_t i = 0; rc >= 0 && i < sizeof shapes / sizeof shapes[0]; i++) {
		const int *x = shapes[i];
		size_t at = strlen(s_msg);
		snprintf(s_msg + at, sizeof s_msg - at, "%s[b %d t %d nh %d nkv %d hs %d] ",
			 i ? "; " : "", x[0], x[1], x[2], x[3], x[4]);
		rc = s_attention(x[0], x[1], x[2], x[3], x[4]);
	}
	/* without dq; without dk and dv */
	for (int null = 1; rc >= 0 && null <= 6; null += 5) {
		size_t at = strlen(s_msg);
		snprintf(s_msg + at, sizeof s_msg - at, "; [b 2 t 70 nh 4 nkv 2 hs 64, no %s] ",
			 null == 1 ? "dq" : "dk, dv");
		s_att_null = null;
		rc = s_attention(2, 70, 4, 2, 64);
		s_att_null = 0;
	}
	kcuda_set_flash(0);
	return rc;
}

static int case_swiglu(void)
{
	size_t n = 5000;
	float *g = s_rrand(n, -4, 4), *u = s_rrand(n, -2, 2), *out = s_zeros(n);
	float *dout = s_rrand(n, -1, 1), *dg = s_rrand(n, -1, 1), *du = s_rrand(n, -1, 1);
	void *dgd, *dud, *dod, *ddo, *ddg, *ddu;

	S_PTR(g && u && dout && dg && du);
	S_PTR((dgd = S_DEV(g, n)) && (dud = S_DEV(u, n)) && (dod = S_DEV(NULL, n)) &&
	      (ddo = S_DEV(dout, n)) && (ddg = S_DEV(dg, n)) && (ddu = S_DEV(du, n)));
	op_swiglu_forward(out, g, u, n);
	op_swiglu_backward(dg, du, dout, g, u, n);
	S_TRY(kcuda_swiglu_forward(s_dt, dod, dgd, dud, n));
	S_TRY(kcuda_swiglu_backward(s_dt, ddg, ddu, ddo, dgd, dud, n));
	S_TRY(S_CMP("out", dod, out, n));
	S_TRY(S_CMP("dgate", ddg, dg, n));
	S_TRY(S_CMP("dup", ddu, du, n));
	/* _set over buffers of NaN: their old values must not be read */
	memset(dg, 0, n * sizeof *dg);
	memset(du, 0, n * sizeof *du);
	op_swiglu_backward(dg, du, dout, g, u, n);
	S_TRY(s_nan_fill(ddg, n));
	S_TRY(s_nan_fill(ddu, n));
	S_TRY(kcuda_swiglu_backward_set(s_dt, ddg, ddu, ddo, dgd, dud, n));
	S_TRY(S_CMP("dgate (set)", ddg, dg, n));
	return S_CMP("dup (set)", ddu, du, n);
}

static int case_residual(void)
{
	size_t n = 5000;
	float *a = s_rrand(n, -1, 1), *b = s_rrand(n, -1, 1), *out = s_zeros(n);
	float *dout = s_rrand(n, -1, 1), *da = s_rrand(n, -1, 1), *db = s_rrand(n, -1, 1);
	void *dad, *dbd, *dod, *ddo, *dda, *ddb;

	S_PTR(a && b && dout && da && db);
	S_PTR((dad = S_DEV(a, n)) && (dbd = S_DEV(b, n)) && (dod = S_DEV(NULL, n)) &&
	      (ddo = S_DEV(dout, n)) && (dda = S_DEV(da, n)) && (ddb = S_DEV(db, n)));
	op_residual_forward(out, a, b, n);
	op_residual_backward(da, db, dout, n);
	S_TRY(kcuda_residual_forward(s_dt, dod, dad, dbd, n));
	S_TRY(kcuda_residual_backward(s_dt, dda, ddb, ddo, n));
	S_TRY(S_CMP("out", dod, out, n));
	S_TRY(S_CMP("da", dda, da, n));
	return S_CMP("db", ddb, db, n);
}

static int case_leakyrelu(void)
{
	size_t n = 5000;
	float *x = s_rrand(n, -1, 1), *out = s_zeros(n), *dout = s_rrand(n, -1, 1);
	float *dx = s_rrand(n, -1, 1);
	void *dxd, *dod, *ddo, *ddx;

	S_PTR(x && dout && dx);
	S_PTR((dxd = S_DEV(x, n)) && (dod = S_DEV(NULL, n)) && (ddo = S_DEV(dout, n)) &&
	      (ddx = S_DEV(dx, n)));
	op_leakyrelu_forward(out, x, 0.01f, n);
	op_leakyrelu_backward(dx, dout, x, 0.01f, n);
	S_TRY(kcuda_leakyrelu_forward(s_dt, dod, dxd, 0.01f, n));
	S_TRY(kcuda_leakyrelu_backward(s_dt, ddx, ddo, dxd, 0.01f, n));
	S_TRY(S_CMP("out", dod, out, n));
	return S_CMP("dinp", ddx, dx, n);
}

static int case_softmax(void)
{
	int n = 70, k = 5;
	size_t nk = (size_t)n * k;
	float *x = s_rrand(nk, -3, 3), *out = s_zeros(nk), *dout = s_rrand(nk, -1, 1);
	float *dx = s_rrand(nk, -1, 1);
	void *dxd, *dod, *dout_cpu, *ddo, *ddx;

	S_PTR(x && dout && dx);
	S_PTR((dxd = S_DEV(x, nk)) && (dod = S_DEV(NULL, nk)) && (ddo = S_DEV(dout, nk)) &&
	      (ddx = S_DEV(dx, nk)));
	op_softmax_forward(out, x, n, k);
	S_TRY(kcuda_softmax_forward(s_dt, dod, dxd, n, k));
	S_TRY(S_CMP("out", dod, out, nk));
	S_TRY(s_round(out, nk));
	S_PTR(dout_cpu = S_DEV(out, nk));
	op_softmax_backward(dx, dout, out, n, k);
	S_TRY(kcuda_softmax_backward(s_dt, ddx, ddo, dout_cpu, n, k));
	return S_CMP("dinp", ddx, dx, nk);
}

static int case_crossentropy(void)
{
	int n = 40, v = 1000;
	size_t nv = (size_t)n * v;
	float *logits = s_rrand(nv, -4, 4), *losses = s_zeros(n), *lse = s_zeros(n);
	float *dlosses = s_rand(n, 0, 0.1f), *dlogits = s_rrand(nv, -0.01f, 0.01f);
	float *fused = s_zeros(nv);
	int *targets = s_ints(n, 0, v);
	void *dl, *dt, *dloss, *dlse, *dlse_cpu, *ddl, *ddlog, *dfl, *dfloss;

	S_PTR(logits && dlogits);
	targets[3] = targets[17] = -100; /* the ignore index */
	dlosses[5] = 0.0f;               /* a masked position */
	op_crossentropy_forward(losses, lse, logits, targets, n, v);
	S_PTR((dl = S_DEV(logits, nv)) && (dt = S_DEVI(targets, n)) && (dloss = S_DEV32(NULL, n)) &&
	      (dlse = S_DEV32(NULL, n)) && (dlse_cpu = S_DEV32(lse, n)) &&
	      (ddl = S_DEV32(dlosses, n)) && (ddlog = S_DEV(dlogits, nv)) &&
	      (dfl = S_DEV(logits, nv)) && (dfloss = S_DEV32(NULL, n)));
	op_crossentropy_backward(dlogits, dlosses, logits, lse, targets, n, v);
	op_crossentropy_backward(fused, dlosses, logits, lse, targets, n, v);
	S_TRY(kcuda_crossentropy_forward(s_dt, dloss, dlse, dl, dt, n, v));
	S_TRY(kcuda_crossentropy_backward(s_dt, ddlog, ddl, dl, dlse_cpu, dt, n, v));
	S_TRY(kcuda_crossentropy_fused(s_dt, dfloss, dfl, ddl, dt, n, v));
	S_TRY(S_CMP32("losses", dloss, losses, n));
	S_TRY(S_CMP32("lse", dlse, lse, n));
	S_TRY(S_CMP("dlogits", ddlog, dlogits, nv));
	S_TRY(S_CMP32("fused losses", dfloss, losses, n));
	return S_CMP("fused dlogits", dfl, fused, nv);
}

/* Strided products (kcuda_gemm_ld): every matrix a block of columns of a
 * wider one, C at an odd offset; the columns outside must stay untouched. */
static int case_gemm_ld(void)
{
	int m = 37, n = 12, k = 70, off = 4;

	for (int ta = 0; ta < 2; ta++) {
		for (int tb = 0; tb < 2; tb++) {
			int lda = (ta ? m : k) + 6, ldb = (tb ? k : n) + 10, ldc = n + off + 4;
			size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb;
			size_t nc = (size_t)m * ldc;
			float *a = s_rrand(na, -1, 1), *b = s_rrand(nb, -1, 1), *c = s_rrand(nc, -1, 1);
			void *da, *db, *dc;
			char name[24];
			S_PTR(a && b && c);
			S_PTR((da = S_DEV(a, na)) && (db = S_DEV(b, nb)) && (dc = S_DEV(c, nc)));
			op_gemm_serial(c + off, ldc, a, lda, b, ldb, m, n, k, ta, tb, 0.7f, 0.3f);
			S_TRY(kcuda_gemm_ld(s_dt, s_dt, (char *)dc + off * kcuda_dtype_size(s_dt), ldc, da,
					    lda, db, ldb, m, n, k, ta, tb, 0.7f, 0.3f));
			snprintf(name, sizeof name, "c[t%d%d]", ta, tb);
			S_TRY(S_CMP(name, dc, c, nc));
		}
	}
	return 0;
}

/* Batched products of one shape (kcuda_gemm_batched): three products of
 * separate matrices in one launch, each against op_gemm, for every
 * transposition (the buffers reused: the case's pools are small). */
static int case_gemm_batched(void)
{
	enum { NB = 3 };
	int m = 24, n = 19, k = 33;
	size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
	float *a[NB], *b[NB], *c0[NB];
	void *da[NB], *db[NB], *dc[NB];

	for (int i = 0; i < NB; i++) {
		a[i] = s_rrand(na, -1, 1), b[i] = s_rrand(nb, -1, 1), c0[i] = s_rrand(nc, -1, 1);
		S_PTR(a[i] && b[i] && c0[i]);
		S_PTR((da[i] = S_DEV(a[i], na)) && (db[i] = S_DEV(b[i], nb)) &&
		      (dc[i] = S_DEV(NULL, nc)));
	}
	for (int ta = 0; ta < 2; ta++) {
		for (int tb = 0; tb < 2; tb++) {
			float *c[NB];
			char name[24];
			for (int i = 0; i < NB; i++) {
				S_PTR(c[i] = s_copy(c0[i], nc));
				S_TRY(kcuda_copy_h2d(dc[i], s_dt, c0[i], KCUDA_F32, nc));
				op_gemm(c[i], a[i], b[i], m, n, k, ta, tb, 0.7f, 0.3f);
			}
			S_TRY(kcuda_gemm_batched(s_dt, dc, (const void *const *)da,
						 (const void *const *)db, NB, m, n, k, ta, tb, 0.7f,
						 0.3f));
			for (int i = 0; i < NB; i++) {
				snprintf(name, sizeof name, "c%d[t%d%d]", i, ta, tb);
				S_TRY(S_CMP(name, dc[i], c[i], nc));
			}
		}
	}
	return 0;
}

/* The products on cuBLASLt with timed algorithms (kcuda_set_lt; tune.cu):
 * the small odd shapes of the gemm cases, strided ones, and products big
 * enough for cuBLASLt to offer several algorithms, with beta zero (the
 * candidates timed over the real output) and not (over scratch), in the
 * case's type and with an fp32 output (weight gradients). Each big product
 * runs twice, the second time on the algorithm kept for its shape: the
 * two results must be equal to the bit (on a GPU; on the CPU emulation
 * every algorithm is the same loop). f32 stays on cublasGemmEx. */
static int s_gemm_lt_big(int ta, int tb, float beta, int f32out)
{
	int m = 512, n = 384, k = 520, cdt = f32out ? KCUDA_F32 : s_dt;
	size_t nc = (size_t)m * n;
	float *a = s_rrand((size_t)m * k, -1, 1), *b = s_rrand((size_t)k * n, -1, 1);
	float *c0 = s_rrand(nc, -1, 1), *c, *g1, *g2;
	void *da, *db, *dc;
	char name[48];

	S_PTR(a && b && c0 && (c = s_copy(c0, nc)) && (g1 = s_zeros(nc)) && (g2 = s_zeros(nc)));
	S_PTR((da = S_DEV(a, (size_t)m * k)) && (db = S_DEV(b, (size_t)k * n)) &&
	      (dc = s_dev_as(c0, nc, cdt, KCUDA_F32)));
	op_gemm(c, a, b, m, n, k, ta, tb, 0.7f, beta);
	for (int run = 0; run < 2; run++) {
		S_TRY(kcuda_copy_h2d(dc, cdt, c0, KCUDA_F32, nc));
		S_TRY(kcuda_gemm_mixed(s_dt, cdt, dc, da, db, m, n, k, ta, tb, 0.7f, beta));
		S_TRY(kcuda_sync());
		S_TRY(kcuda_copy_d2h(run ? g2 : g1, KCUDA_F32, dc, cdt, nc));
	}
	snprintf(name, sizeof name, "c[t%d%d b%g%s]", ta, tb, beta, f32out ? " f32" : "");
	S_TRY(s_cmp_tol(name, dc, cdt, c, nc, s_atol, s_rtol(s_dt)));
	if (memcmp(g1, g2, nc * sizeof(float))) {
		size_t at = strlen(s_msg);
		s_bad = 1;
		snprintf(s_msg + at, sizeof s_msg - at, " (%s: the second run differs from the first)",
			 name);
	}
	return 0;
}

static int case_gemm_lt(void)
{
	int rc = 0;

	kcuda_set_lt(1);
	if (case_gemm() < 0 || case_gemm_ld() < 0 || case_matmul() < 0 ||
	    s_matmul_res(512, 640, 384) < 0)
		rc = -1;
	for (int ta = 0; rc == 0 && ta < 2; ta++)
		for (int tb = 0; rc == 0 && tb < 2; tb++)
			if (s_gemm_lt_big(ta, tb, 0.0f, 0) < 0 || s_gemm_lt_big(ta, tb, 0.5f, 0) < 0 ||
			    s_gemm_lt_big(ta, tb, 1.0f, 1) < 0)
				rc = -1;
	if (rc == 0) {
		char rep[4400];
		size_t at = strlen(s_msg);
		kcuda_lt_report(rep, sizeof rep);
		snprintf(s_msg + at, sizeof s_msg - at, "; %.1000s", rep);
	}
	kcuda_set_lt(0);
	return rc;
}

/* Column j's expert: a head of rank r0 (when r0 > 0), then experts of rank r. */
static int s_rexp(int j, int r0, int r)
{
	return j < r0 ? 0 : (r0 > 0) + (j - r0) / r;
}

/* The CPU reference of router weighting: s = softmax(rl) over e + (r0 > 0)
 * experts, uw = scale_i s_i u (scale s0 for the head's r0 columns). */
static void s_router_fwd(float *uw, float *s, const float *rl, const float *u, int n, int e,
			 int r, float scale, int r0, float s0)
{
	int ne = e + (r0 > 0), w = r0 + e * r;

	op_softmax_forward(s, rl, n, ne);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < w; j++)
			uw[(size_t)i * w + j] = (j < r0 ? s0 : scale) * s[(size_t)i * ne + s_rexp(j, r0, r)] *
						u[(size_t)i * w + j];
}

/* du += scale_i s_i duw; drl += softmax backward of ds_i = scale_i sum u duw. */
static void s_router_bwd(float *drl, float *du, const float *duw, const float *s, const float *u,
			 int n, int e, int r, float scale, int r0, float s0)
{
	int ne = e + (r0 > 0), w = r0 + e * r;
	float *ds = s_zeros((size_t)n * ne);

	for (int i = 0; i < n; i++) {
		for (int j = 0; j < w; j++) {
			size_t o = (size_t)i * w + j, k = (size_t)i * ne + s_rexp(j, r0, r);
			float sc = j < r0 ? s0 : scale;
			ds[k] += sc * u[o] * duw[o];
			if (du)
				du[o] += sc * s[k] * duw[o];
		}
	}
	if (drl)
		op_softmax_backward(drl, ds, s, n, ne);
}

static int case_router(void)
{
	int n = 66, e = 5, r = 8;
	size_t ne = (size_t)n * e, nu = (size_t)n * e * r;
	float *rl = s_rrand(ne, -2, 2), *u = s_rrand(nu, -1, 1), *uw = s_zeros(nu), *s = s_zeros(ne);
	float *duw = s_rrand(nu, -1, 1), *du = s_rrand(nu, -1, 1), *drl = s_rrand(ne, -1, 1);
	void *drld, *dud, *duwd, *dsd, *ds_cpu, *dduw, *ddu, *ddrl;

	S_PTR(rl && u && duw && du && drl);
	/* The gradients accumulate: both sides start from the same values. */
	S_PTR((ddu = S_DEV(du, nu)) && (ddrl = S_DEV(drl, ne)));
	s_router_fwd(uw, s, rl, u, n, e, r, 2.0f, 0, 0.0f);
	s_router_bwd(drl, du, duw, s, u, n, e, r, 2.0f, 0, 0.0f);
	S_PTR((drld = S_DEV(rl, ne)) && (dud = S_DEV(u, nu)) && (duwd = S_DEV(NULL, nu)) &&
	      (dsd = S_DEV32(NULL, ne)) && (ds_cpu = S_DEV32(s, ne)) && (dduw = S_DEV(duw, nu)));
	S_TRY(kcuda_router_weight_forward(s_dt, duwd, 0, dsd, drld, 0, dud, 0, n, e, r, 2.0f, 0,
					  0.0f));
	S_TRY(kcuda_router_weight_backward(s_dt, ddrl, 0, ddu, dduw, 0, ds_cpu, dud, 0, n, e, r, 2.0f,
					   0, 0.0f));
	S_TRY(S_CMP32("s", dsd, s, ne));
	S_TRY(S_CMP("uw", duwd, uw, nu));
	S_TRY(S_CMP("du", ddu, du, nu));
	S_TRY(S_CMP("drlogits", ddrl, drl, ne));
	/* uw and duw as the right-hand columns of a wider matrix (row stride
	 * ld, 4 columns before them), as the MoDULA-Res path keeps them */
	int ld = e * r + 4;
	size_t nw = (size_t)n * ld;
	float *wide = s_zeros(nw), *gwide = s_rrand(nw, -1, 1), *du2 = s_rrand(nu, -1, 1);
	float *drl2 = s_rrand(ne, -1, 1), *g = s_zeros(nu);
	void *dwide, *dgw, *ddu2, *ddrl2;
	S_PTR(wide && gwide && du2 && drl2 && g);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < e * r; j++)
			g[(size_t)i * e * r + j] = gwide[(size_t)i * ld + 4 + j];
	S_PTR((dwide = S_DEV(wide, nw)) && (dgw = S_DEV(gwide, nw)) && (ddu2 = S_DEV(du2, nu)) &&
	      (ddrl2 = S_DEV(drl2, ne)));
	s_router_bwd(drl2, du2, g, s, u, n, e, r, 2.0f, 0, 0.0f);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < e * r; j++)
			wide[(size_t)i * ld + 4 + j] = uw[(size_t)i * e * r + j];
	size_t sz = kcuda_dtype_size(s_dt);
	S_TRY(kcuda_router_weight_forward(s_dt, (char *)dwide + 4 * sz, ld, dsd, drld, 0, dud, 0, n,
					  e, r, 2.0f, 0, 0.0f));
	S_TRY(kcuda_router_weight_backward(s_dt, ddrl2, 0, ddu2, (char *)dgw + 4 * sz, ld, ds_cpu,
					   dud, 0, n, e, r, 2.0f, 0, 0.0f));
	S_TRY(S_CMP("uw strided", dwide, wide, nw));
	S_TRY(S_CMP("du strided", ddu2, du2, nu));
	return S_CMP("drlogits strided", ddrl2, drl2, ne);
}

/* The same with a head expert of another rank and scale under the router
 * (MoDULA-Flan's universal expert): e + 1 logits, r0 + e*r columns. */
static int case_router_head(void)
{
	int n = 45, e = 4, r = 6, r0 = 12, ne = e + 1, w = r0 + e * r;
	size_t nl = (size_t)n * ne, nu = (size_t)n * w;
	float *rl = s_rrand(nl, -2, 2), *u = s_rrand(nu, -1, 1), *uw = s_zeros(nu), *s = s_zeros(nl);
	float *duw = s_rrand(nu, -1, 1), *du = s_rrand(nu, -1, 1), *drl = s_rrand(nl, -1, 1);
	void *drld, *dud, *duwd, *dsd, *ds_cpu, *dduw, *ddu, *ddrl;

	S_PTR(rl && u && duw && du && drl);
	S_PTR((ddu = S_DEV(du, nu)) && (ddrl = S_DEV(drl, nl)));
	s_router_fwd(uw, s, rl, u, n, e, r, 2.0f, r0, 0.75f);
	s_router_bwd(drl, du, duw, s, u, n, e, r, 2.0f, r0, 0.75f);
	S_PTR((drld = S_DEV(rl, nl)) && (dud = S_DEV(u, nu)) && (duwd = S_DEV(NULL, nu)) &&
	      (dsd = S_DEV32(NULL, nl)) && (ds_cpu = S_DEV32(s, nl)) && (dduw = S_DEV(duw, nu)));
	S_TRY(kcuda_router_weight_forward(s_dt, duwd, 0, dsd, drld, 0, dud, 0, n, e, r, 2.0f, r0,
					  0.75f));
	S_TRY(kcuda_router_weight_backward(s_dt, ddrl, 0, ddu, dduw, 0, ds_cpu, dud, 0, n, e, r, 2.0f,
					   r0, 0.75f));
	S_TRY(S_CMP32("s", dsd, s, nl));
	S_TRY(S_CMP("uw", duwd, uw, nu));
	S_TRY(S_CMP("du", ddu, du, nu));
	S_TRY(S_CMP("drlogits", ddrl, drl, nl));
	/* u and the logits as columns of one product's output [u | rl | pad]
	 * (rows lb apart), du and their gradient the same way, as the engine's
	 * MoDULA-Flan and MoLoRA path keeps them */
	int lb = w + ne + 3;
	size_t nb = (size_t)n * lb;
	float *ub = s_zeros(nb), *gb = s_rand(nb, -1, 1), *gbe;
	void *dub, *dgb, *duw2;
	S_PTR(ub && gb);
	S_TRY(s_round(gb, nb));
	gbe = s_copy(gb, nb);
	float *du3 = s_zeros(nu), *drl3 = s_zeros(nl);
	S_PTR(gbe && du3 && drl3);
	for (int i = 0; i < n; i++) {
		memcpy(ub + (size_t)i * lb, u + (size_t)i * w, (size_t)w * sizeof(float));
		memcpy(ub + (size_t)i * lb + w, rl + (size_t)i * ne, (size_t)ne * sizeof(float));
		memcpy(du3 + (size_t)i * w, gb + (size_t)i * lb, (size_t)w * sizeof(float));
		memcpy(drl3 + (size_t)i * ne, gb + (size_t)i * lb + w, (size_t)ne * sizeof(float));
	}
	s_router_bwd(drl3, du3, duw, s, u, n, e, r, 2.0f, r0, 0.75f);
	for (int i = 0; i < n; i++) {
		memcpy(gbe + (size_t)i * lb, du3 + (size_t)i * w, (size_t)w * sizeof(float));
		memcpy(gbe + (size_t)i * lb + w, drl3 + (size_t)i * ne, (size_t)ne * sizeof(float));
	}
	size_t sz = kcuda_dtype_size(s_dt);
	S_PTR((dub = S_DEV(ub, nb)) && (dgb = S_DEV(gb, nb)) && (duw2 = S_DEV(NULL, nu)));
	S_TRY(kcuda_router_weight_forward(s_dt, duw2, 0, dsd, (char *)dub + w * sz, lb, dub, lb, n, e,
					  r, 2.0f, r0, 0.75f));
	S_TRY(kcuda_router_weight_backward(s_dt, (char *)dgb + w * sz, lb, dgb, dduw, 0, ds_cpu, dub,
					   lb, n, e, r, 2.0f, r0, 0.75f));
	S_TRY(S_CMP32("s (one buffer)", dsd, s, nl));
	S_TRY(S_CMP("uw (one buffer)", duw2, uw, nu));
	return S_CMP("[du | drlogits] (one buffer)", dgb, gbe, nb);
}

/* MoDULA-Res's fused row kernels against the CPU table's (kernels/device.c),
 * with cat and dcat rows r0 + e*r apart, or (wide) columns 3.. of rows ld
 * = r0 + e*r + 7 apart (a folded group's X and dx; and ur's rows padded
 * to 16): the columns around them must come out as they went in. fused:
 * the backward's dcat[:, :r0] = s0 (dcat[:, :r0] + dz M) in the kernel
 * (nores: without dcat[:, :r0]). */
static int s_res(int wide, int fused, int nores)
{
	const struct kdevice_ops *C = kdevice_ops(KDEV_CPU, KCUDA_F32);
	int n = 70, r0 = 8, e = 4, r = 6, er = e * r, w = r0 + er, ld = wide ? w + 7 : 0;
	int o = wide ? 3 : 0, ldu = wide ? 16 : 0;
	size_t nc = (size_t)n * (wide ? ld : w), nu = (size_t)n * (wide ? ldu : r0 + e);
	float *ur = s_rrand(nu, -1, 1), *mab = s_rrand((size_t)er * r0, -0.5f, 0.5f);
	float *cat = s_rrand(nc, -1, 1), *z = s_zeros((size_t)n * er), *zl = s_zeros((size_t)n * er);
	float *sp = s_zeros((size_t)n * e), *dcat = s_rrand(nc, -1, 1);
	float *dz = s_zeros((size_t)n * er);
	void *dur, *dmab, *dcatd, *dzd, *dzld, *dsd, *ddcat, *ddz;
	size_t sz = kcuda_dtype_size(s_dt);

	S_PTR(ur && mab && cat && z && zl && sp && dcat && dz);
	S_PTR((dur = S_DEV(ur, nu)) && (dmab = S_DEV(mab, (size_t)er * r0)) &&
	      (dcatd = S_DEV(cat, nc)) && (dzd = S_DEV(NULL, (size_t)n * er)) &&
	      (dzld = S_DEV(NULL, (size_t)n * er)) && (dsd = S_DEV32(NULL, (size_t)n * e)) &&
	      (ddcat = S_DEV(dcat, nc)) && (ddz = S_DEV(NULL, (size_t)n * er)));
	/* the columns outside cat as the device holds them */
	S_TRY(s_round(cat, nc));
	S_TRY(s_round(dcat, nc));
	S_TRY(C->res_forward(cat + o, ld, z, zl, sp, ur, ldu, mab, n, r0, e, r, 0.5f, 2.0f, 0.1f));
	S_TRY(kcuda_res_forward(s_dt, (char *)dcatd + o * sz, ld, dzd, dzld, dsd, dur, ldu, dmab, n,
				r0, e, r, 0.5f, 2.0f, 0.1f));
	S_TRY(S_CMP("cat", dcatd, cat, nc));
	S_TRY(S_CMP("z", dzd, z, (size_t)n * er));
	S_TRY(S_CMP("zl", dzld, zl, (size_t)n * er));
	S_TRY(S_CMP32("s", dsd, sp, (size_t)n * e));
	/* backward from the CPU's saved tensors, rounded to the storage type */
	S_TRY(s_round(z, (size_t)n * er));
	S_TRY(s_round(zl, (size_t)n * er));
	void *dz2, *dzl2, *ds2;
	S_PTR((dz2 = S_DEV(z, (size_t)n * er)) && (dzl2 = S_DEV(zl, (size_t)n * er)) &&
	      (ds2 = S_DEV32(sp, (size_t)n * e)));
	S_TRY(C->res_backward(dcat + o, ld, dz, sp, z, zl, fused ? mab : NULL, nores, n, r0, e, r,
			      0.5f, 2.0f, 0.1f));
	S_TRY(kcuda_res_backward(s_dt, (char *)ddcat + o * sz, ld, ddz, ds2, dz2, dzl2,
				 fused ? dmab : NULL, nores, n, r0, e, r, 0.5f, 2.0f, 0.1f));
	S_TRY(S_CMP("dcat", ddcat, dcat, nc));
	return S_CMP("dz", ddz, dz, (size_t)n * er);
}

static int case_res(void)
{
	return s_res(0, 0, 0);
}

static int case_res_wide(void)
{
	S_TRY(s_res(1, 1, 0));
	return s_res(1, 1, 1);
}

/* Weight gradients over the same K rows, four in one kcuda_gemm_wgrad call
 * with its kernel on (wgrad.cu; in f32 every product is cuBLAS's), each c
 * = alpha a^T b + beta c against op_gemm_serial, with a and b columns of
 * wider matrices: M 16, 20 (not a multiple of 8: zero-filled), 64 and 12,
 * N 200, 72 (tiles of 64 and a remainder), 64 and 24; one product with
 * beta 0 over a c of NaNs (not read), one that the kernel does not take (a
 * row stride of 13) run on cuBLAS in the same call. Then the same call
 * again from the same inputs: the same bits (the splits' partials are
 * summed in a fixed order). */
static int s_wgrad(int k)
{
	enum { NP = 4 };
	static const int shape[NP][8] = { /* m n lda aoff ldb boff ldc coff */
		{ 16, 200, 40, 8, 208, 0, 210, 3 }, { 20, 72, 24, 0, 88, 8, 72, 0 },
		{ 64, 64, 64, 0, 128, 64, 64, 0 }, { 12, 24, 13, 0, 24, 0, 24, 0 },
	};
	static const float ab[NP][2] = { { 0.5f, 1.0f }, { 1.0f, 1.0f }, { 2.0f, 0.0f },
					 { 1.0f, 1.0f } };
	struct kcuda_wgrad w[NP];
	float *ref[NP], *c0[NP];
	void *dc[NP], *dc2[NP];
	size_t es = kcuda_dtype_size(s_dt), nc[NP];

	for (int i = 0; i < NP; i++) {
		const int *x = shape[i];
		size_t na = (size_t)k * x[2], nb = (size_t)k * x[4];
		float *a = s_rrand(na, -1, 1), *b = s_rrand(nb, -1, 1);
		void *da, *db;
		nc[i] = (size_t)x[0] * x[6] + (size_t)x[7];
		c0[i] = s_rand(nc[i], -1, 1);
		S_PTR(a && b && c0[i]);
		if (ab[i][1] == 0.0f)
			for (size_t j = 0; j < nc[i]; j++)
				c0[i][j] = NAN;
		ref[i] = s_copy(c0[i], nc[i]);
		if (ab[i][1] == 0.0f)
			memset(ref[i], 0, nc[i] * sizeof(float));
		op_gemm_serial(ref[i] + x[7], x[6], a + x[3], x[2], b + x[5], x[4], x[0], x[1], k, 1, 0,
			       ab[i][0], ab[i][1]);
		S_PTR((da = S_DEV(a, na)) && (db = S_DEV(b, nb)) && (dc[i] = S_DEV32(c0[i], nc[i])) &&
		      (dc2[i] = S_DEV32(c0[i], nc[i])));
		w[i] = (struct kcuda_wgrad){ (float *)dc[i] + x[7], x[6], (char *)da + x[3] * es, x[2],
					     (char *)db + x[5] * es, x[4], x[0], x[1], ab[i][0],
					     ab[i][1] };
	}
	S_TRY(kcuda_gemm_wgrad(s_dt, w, NP, k));
	for (int i = 0; i < NP; i++) {
		char name[32];
		snprintf(name, sizeof name, "c%d[%dx%d k %d]", i, shape[i][0], shape[i][1], k);
		S_TRY(S_CMP32(name, dc[i], ref[i], nc[i]));
	}
	for (int i = 0; i < NP; i++)
		w[i].c = (float *)dc2[i] + shape[i][7];
	S_TRY(kcuda_gemm_wgrad(s_dt, w, NP, k));
	for (int i = 0; i < NP; i++) {
		float *g1 = s_zeros(nc[i]), *g2 = s_zeros(nc[i]);
		S_PTR(g1 && g2);
		S_TRY(kcuda_copy_d2h(g1, KCUDA_F32, dc[i], KCUDA_F32, nc[i]));
		S_TRY(kcuda_copy_d2h(g2, KCUDA_F32, dc2[i], KCUDA_F32, nc[i]));
		if (memcmp(g1, g2, nc[i] * sizeof(float)))
			return err_set("wgrad: product %d (k %d) not the same bits twice", i, k);
	}
	return 0;
}

static int case_wgrad(void)
{
	static const int ks[] = { 333, 1000, 40, 4096 };
	int on = kcuda_wgrad(), rc = 0;

	if (s_dt == KCUDA_F32)
		snprintf(s_msg, sizeof s_msg, "f32: every product on cuBLAS; ");
	kcuda_set_wgrad(1);
	for (size_t i = 0; rc >= 0 && i < sizeof ks / sizeof ks[0]; i++)
		rc = s_wgrad(ks[i]);
	kcuda_set_wgrad(on);
	return rc;
}

/* A LoRA group of e experts, routed or plain (e = 1, no router). The CPU
 * reference is the same two products with op_gemm and the router above,
 * its intermediates rounded where the GPU stores them. */
static int s_lora_group(int e, int routed)
{
	int n = 66, c = 96, oc = 80, r = 8, er = e * r;
	float scale = 0.5f, f = routed ? 1.0f : scale;
	size_t nx = (size_t)n * c, ny = (size_t)n * oc, nu = (size_t)n * er, ne = (size_t)n * e;
	size_t na = (size_t)er * c, nb = (size_t)oc * er;
	float *x = s_rrand(nx, -1, 1), *a = s_rrand(na, -0.3f, 0.3f), *b = s_rrand(nb, -0.3f, 0.3f);
	float *y = s_rrand(ny, -1, 1), *rl = s_rrand(ne, -2, 2), *u = s_zeros(nu), *uw = s_zeros(nu);
	float *s = s_zeros(ne), *dy = s_rrand(ny, -1, 1), *dx = s_rrand(nx, -1, 1);
	float *da = s_rand(na, -1, 1), *db = s_rand(nb, -1, 1), *drl = s_rrand(ne, -1, 1);
	float *duw = s_zeros(nu), *du = s_zeros(nu), *y0;
	void *dxd, *dad, *dbd, *dyd, *drld, *dud, *duwd, *dsd, *ddy, *ddx, *dda, *ddb, *ddrl;
	void *du_cpu, *duw_cpu, *ds_cpu;

	S_PTR(x && a && b && y && rl && dy && dx && drl);
	y0 = s_copy(y, ny);
	op_gemm(u, x, a, n, er, c, 0, 1, 1.0f, 0.0f);
	S_TRY(s_round(u, nu));
	if (routed) {
		s_router_fwd(uw, s, rl, u, n, e, r, scale, 0, 0.0f);
		S_TRY(s_round(uw, nu));
	}
	op_gemm(y, routed ? uw : u, b, n, oc, er, 0, 1, f, 1.0f);
	S_PTR((dxd = S_DEV(x, nx)) && (dad = S_DEV(a, na)) && (dbd = S_DEV(b, nb)) &&
	      (dyd = S_DEV(y0, ny)) && (drld = S_DEV(rl, ne)) && (dud = S_DEV(NULL, nu)) &&
	      (duwd = S_DEV(NULL, nu)) && (dsd = S_DEV32(NULL, ne)));
	S_TRY(kcuda_lora_group_forward(s_dt, dyd, dud, routed ? duwd : NULL, routed ? dsd : NULL,
				       dxd, dad, dbd, routed ? drld : NULL, n, c, oc, e, r, scale));
	S_TRY(S_CMP("y", dyd, y, ny));
	S_TRY(S_CMP("u", dud, u, nu));
	if (routed)
		S_TRY(S_CMP("uw", duwd, uw, nu));

	/* backward, from the CPU's saved tensors; gradients uploaded first */
	S_PTR((ddy = S_DEV(dy, ny)) && (ddx = S_DEV(dx, nx)) && (dda = S_DEV32(da, na)) &&
	      (ddb = S_DEV32(db, nb)) && (ddrl = S_DEV(drl, ne)) && (du_cpu = S_DEV(u, nu)) &&
	      (duw_cpu = S_DEV(uw, nu)) && (ds_cpu = S_DEV32(s, ne)));
	op_gemm(db, dy, routed ? uw : u, oc, er, n, 1, 0, f, 1.0f);
	op_gemm(duw, dy, b, n, er, oc, 0, 0, 1.0f, 0.0f);
	S_TRY(s_round(duw, nu));
	if (routed) {
		s_router_bwd(drl, du, duw, s, u, n, e, r, scale, 0, 0.0f);
		S_TRY(s_round(du, nu));
	}
	op_gemm(da, routed ? du : duw, x, er, c, n, 1, 0, f, 1.0f);
	op_gemm(dx, routed ? du : duw, a, n, c, er, 0, 0, f, 1.0f);
	S_TRY(kcuda_lora_group_backward(s_dt, ddx, dda, ddb, routed ? ddrl : NULL, ddy, dxd, du_cpu,
					routed ? duw_cpu : NULL, routed ? ds_cpu : NULL, dad, dbd,
					n, c, oc, e, r, scale));
	S_TRY(S_CMP("dx", ddx, dx, nx));
	S_TRY(S_CMP32("da", dda, da, na));
	S_TRY(S_CMP32("db", ddb, db, nb));
	return routed ? S_CMP("drlogits", ddrl, drl, ne) : 0;
}

static int case_lora_group(void)
{
	return s_lora_group(4, 1);
}

static int case_lora_plain(void)
{
	return s_lora_group(1, 0);
}

/* Three experts over segments of 20, 0 and 31 rows. */
static int case_lora_segments(void)
{
	enum { NSEG = 3 };
	int seg[NSEG + 1] = { 0, 20, 20, 51 }, n = 51, c = 96, oc = 80, r = 8;
	float scale = 2.0f;
	size_t nx = (size_t)n * c, ny = (size_t)n * oc, nu = (size_t)n * r;
	size_t na = (size_t)r * c, nb = (size_t)oc * r;
	float *x = s_rrand(nx, -1, 1), *y = s_rrand(ny, -1, 1), *u = s_zeros(nu);
	float *dy = s_rrand(ny, -1, 1), *dx = s_rrand(nx, -1, 1), *du = s_zeros(nu);
	float *a[NSEG], *b[NSEG], *da[NSEG], *db[NSEG];
	const void *ad[NSEG], *bd[NSEG];
	float *dad[NSEG], *dbd[NSEG];
	void *dxd, *dyd, *dud, *du_cpu, *ddy, *ddx;

	S_PTR(x && y && dy && dx);
	S_PTR((dxd = S_DEV(x, nx)) && (dyd = S_DEV(y, ny)) && (dud = S_DEV(NULL, nu)) &&
	      (ddy = S_DEV(dy, ny)) && (ddx = S_DEV(dx, nx)));
	for (int i = 0; i < NSEG; i++) {
		S_PTR((a[i] = s_rrand(na, -0.3f, 0.3f)) && (b[i] = s_rrand(nb, -0.3f, 0.3f)));
		da[i] = s_rand(na, -1, 1);
		db[i] = s_rand(nb, -1, 1);
		S_PTR((ad[i] = S_DEV(a[i], na)) && (bd[i] = S_DEV(b[i], nb)) &&
		      (dad[i] = S_DEV32(da[i], na)) && (dbd[i] = S_DEV32(db[i], nb)));
	}
	for (int i = 0; i < NSEG; i++) {
		int st = seg[i], m = seg[i + 1] - st;
		if (m == 0)
			continue;
		op_gemm(u + (size_t)st * r, x + (size_t)st * c, a[i], m, r, c, 0, 1, 1.0f, 0.0f);
		S_TRY(s_round(u + (size_t)st * r, (size_t)m * r));
		op_gemm(y + (size_t)st * oc, u + (size_t)st * r, b[i], m, oc, r, 0, 1, scale, 1.0f);
	}
	S_TRY(kcuda_lora_segments_forward(s_dt, dyd, dud, dxd, ad, bd, seg, NSEG, c, oc, r, scale));
	S_TRY(S_CMP("y", dyd, y, ny));
	S_TRY(S_CMP("u", dud, u, nu));
	S_PTR(du_cpu = S_DEV(u, nu));
	for (int i = 0; i < NSEG; i++) {
		int st = seg[i], m = seg[i + 1] - st;
		float *dui = du + (size_t)st * r;
		if (m == 0)
			continue;
		op_gemm(db[i], dy + (size_t)st * oc, u + (size_t)st * r, oc, r, m, 1, 0, scale, 1.0f);
		op_gemm(dui, dy + (size_t)st * oc, b[i], m, r, oc, 0, 0, 1.0f, 0.0f);
		S_TRY(s_round(dui, (size_t)m * r));
		op_gemm(da[i], dui, x + (size_t)st * c, r, c, m, 1, 0, scale, 1.0f);
		op_gemm(dx + (size_t)st * c, dui, a[i], m, c, r, 0, 0, scale, 1.0f);
	}
	S_TRY(kcuda_lora_segments_backward(s_dt, ddx, dad, dbd, ddy, dxd, du_cpu, ad, bd, seg, NSEG,
					   c, oc, r, scale));
	S_TRY(S_CMP("dx", ddx, dx, nx));
	for (int i = 0; i < NSEG; i++) {
		char name[16];
		snprintf(name, sizeof name, "da%d", i);
		S_TRY(S_CMP32(name, dad[i], da[i], na));
		snprintf(name, sizeof name, "db%d", i);
		S_TRY(S_CMP32(name, dbd[i], db[i], nb));
	}
	return 0;
}

/* Three AdamW updates with clipping of a two-tensor list: worker/optim.c on
 * the CPU, kcuda_sumsq / kcuda_scale / kcuda_adamw on the GPU. */
static int case_adamw(void)
{
	enum { NT = 2 };
	size_t n[NT] = { 1000, 77 };
	optim_config_t cfg = { .lr = 1e-2f, .min_lr_ratio = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f,
			       .eps = 1e-8f, .weight_decay = 0.1f, .clip = 1.0f, .total_steps = 3 };
	params_t p = { 0 };
	optim_t *o = NULL;
	float *w[NT], *g[NT];
	void *dw[NT], *dg[NT], *dm[NT], *dv[NT], *dwdt[NT];
	int rc = -1;

	for (int i = 0; i < NT; i++) {
		w[i] = s_rand(n[i], -1, 1);
		g[i] = s_rand(n[i], -1, 1);
		S_PTR((dw[i] = S_DEV32(w[i], n[i])) && (dg[i] = S_DEV32(g[i], n[i])) &&
		      (dm[i] = S_DEV32(s_zeros(n[i]), n[i])) && (dv[i] = S_DEV32(s_zeros(n[i]), n[i])) &&
		      (dwdt[i] = S_DEV(NULL, n[i])));
	}
	for (int i = 0; i < NT; i++) {
		int64_t shape = (int64_t)n[i];
		if (params_add(&p, i ? "b" : "a", w[i], g[i], 1, &shape) < 0)
			goto out;
	}
	if (!(o = optim_new(&p, &cfg)))
		goto out;
	for (long step = 1; step <= 3; step++) {
		float lr = optim_lr(&cfg, step - 1), norm_cpu = optim_clip(o), norm;
		double ss = 0.0, part;
		optim_step(o, lr);
		for (int i = 0; i < NT; i++) {
			if (kcuda_sumsq(dg[i], n[i], &part) < 0)
				goto out;
			ss += part;
		}
		norm = (float)sqrt(ss);
		for (int i = 0; cfg.clip > 0 && norm > cfg.clip && i < NT; i++)
			if (kcuda_scale(dg[i], cfg.clip / (norm + 1e-6f), n[i]) < 0)
				goto out;
		for (int i = 0; i < NT; i++)
			if (kcuda_adamw(s_dt, dw[i], dwdt[i], dg[i], dm[i], dv[i], n[i], lr, cfg.beta1,
					cfg.beta2, cfg.eps, cfg.weight_decay, step) < 0)
				goto out;
		if (fabsf(norm - norm_cpu) > 1e-5f * norm_cpu)
			s_bad = 1;
		if (step == 1)
			snprintf(s_msg, sizeof s_msg, "norm %.2e", fabsf(norm - norm_cpu) / norm_cpu);
	}
	for (int i = 0; i < NT; i++) {
		if (S_CMP32_STRICT(i ? "w1" : "w0", dw[i], w[i], n[i]) < 0 ||
		    S_CMP32_STRICT(i ? "m1" : "m0", dm[i], o->m[i], n[i]) < 0 ||
		    S_CMP32_STRICT(i ? "v1" : "v0", dv[i], o->v[i], n[i]) < 0 ||
		    S_CMP(i ? "w1 copy" : "w0 copy", dwdt[i], w[i], n[i]) < 0)
			goto out;
	}
	rc = 0;
out:
	optim_destroy(&o);
	params_clear(&p);
	return rc;
}

/* The memory-bound ops again with the 16-byte kernels on (kcuda_set_vector:
 * the cases' shapes are multiples of 8, so they take the wide path). */
static int s_vec(int (*run)(void))
{
	int rc;

	kcuda_set_vector(1);
	rc = run();
	kcuda_set_vector(0);
	return rc;
}

static int case_rmsnorm_v(void)
{
	return s_vec(case_rmsnorm);
}

static int case_rmsnorm_ld_v(void)
{
	return s_vec(case_rmsnorm_ld);
}

static int case_swiglu_v(void)
{
	return s_vec(case_swiglu);
}

static int case_residual_v(void)
{
	return s_vec(case_residual);
}

static int case_crossentropy_v(void)
{
	return s_vec(case_crossentropy);
}

static int case_rope_v(void)
{
	return s_vec(case_rope);
}

/* ---- the table and the driver ----------------------------------------- */

static const struct {
	const char *name;
	int (*run)(void);
	float ascale; /* atol = ascale * the type's base */
} s_cases[] = {
	{ "gemm", case_gemm, 4 },
	{ "embedding", case_embedding, 1 },
	{ "matmul", case_matmul, 4 },
	{ "rmsnorm", case_rmsnorm, 2 },
	{ "rmsnorm with row strides", case_rmsnorm_ld, 2 },
	{ "rope", case_rope, 1 },
	{ "attention", case_attention, 4 },
	{ "swiglu", case_swiglu, 1 },
	{ "residual", case_residual, 1 },
	{ "leakyrelu", case_leakyrelu, 1 },
	{ "softmax", case_softmax, 1 },
	{ "crossentropy", case_crossentropy, 2 },
	{ "gemm with row strides", case_gemm_ld, 4 },
	{ "batched gemm, one shape", case_gemm_batched, 4 },
	{ "gemm on cuBLASLt, algorithms timed", case_gemm_lt, 4 },
	{ "router softmax + expert weighting", case_router, 2 },
	{ "router with a head expert (flan)", case_router_head, 2 },
	{ "modula-res fused rows", case_res, 2 },
	{ "modula-res fused rows, columns of wider rows, dz M fused", case_res_wide, 2 },
	{ "weight gradients, four in one call (wgrad kernel)", case_wgrad, 4 },
	{ "lora group, 4 routed experts", case_lora_group, 4 },
	{ "lora group, plain", case_lora_plain, 4 },
	{ "lora segments (sgmv)", case_lora_segments, 4 },
	{ "adamw with clipping (vs worker/optim.c)", case_adamw, 1 },
	{ "rmsnorm, 16-byte kernels", case_rmsnorm_v, 2 },
	{ "rmsnorm with row strides, 16-byte kernels", case_rmsnorm_ld_v, 2 },
	{ "swiglu, 16-byte kernels", case_swiglu_v, 1 },
	{ "residual, 16-byte kernels", case_residual_v, 1 },
	{ "crossentropy, 16-byte kernels", case_crossentropy_v, 2 },
	{ "rope, 16-byte kernels", case_rope_v, 1 },
	{ "attention, flash kernels", case_attention_flash, 4 },
};

static const int s_types[] = { KCUDA_F32, KCUDA_BF16, KCUDA_F16 };

/* The shared libraries this process mapped: which cuBLAS, which libc. */
static void s_print_maps(void)
{
	char line[1024], last[1024] = "";
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char *path = strchr(line, '/');
		if (!path || !strstr(path, ".so") || !strcmp(path, last))
			continue;
		snprintf(last, sizeof last, "%s", path);
		path[strcspn(path, "\n")] = 0;
		tap_diag("loaded %s", path);
	}
	fclose(f);
}

/* gpu-ops time-attention [B T NH NKV HS [REPS]]: attention's forward and
 * backward (_set) at one shape in bf16, the cuBLAS path and the flash
 * kernels (HS 64 or 128, which they take; on a GPU older than sm_80 the
 * "flash" line is the cuBLAS path too), timed with CUDA events over REPS
 * (at most 64) calls after one warm-up; the
 * figures in ms per call and TFLOP/s of the causal products (forward 2,
 * backward 4 products of half the T x T scores). Not a test: it prints
 * figures and checks nothing (tests/gpu/check.sh runs it, and compute-
 * sanitizer-free profilers can wrap it). */
/* The timing commands' arguments: up to nx positive integers up to max
 * into x (the defaults left where fewer are given), the last (REPS) capped
 * at 64 (the timer marks they keep), and a GPU. 0, or 2 after saying why
 * on stderr. */
static int s_time_args(const char *cmd, const char *usage, int argc, char **argv, int *x, int nx,
		       long max)
{
	char why[512], skip[600];

	if (argc > nx) {
		fprintf(stderr, "gpu-ops %s: %d arguments, at most %d (%s)\n", cmd, argc, nx, usage);
		return 2;
	}
	for (int i = 0; i < argc; i++) {
		char *end;
		long val = strtol(argv[i], &end, 10);
		if (end == argv[i] || *end || val <= 0 || val > max) {
			fprintf(stderr, "gpu-ops %s: '%s' is not a positive integer up to %ld (%s)\n", cmd,
				argv[i], max, usage);
			return 2;
		}
		x[i] = (int)val;
	}
	if (x[nx - 1] > 64)
		x[nx - 1] = 64;
	if (!gpu_probe(why, sizeof why, skip, sizeof skip)) {
		fprintf(stderr, "gpu-ops %s: %s\n", cmd, skip);
		return 2;
	}
	return 0;
}

static int s_time_attention(int argc, char **argv)
{
	int x[6] = { 8, 512, 14, 2, 64, 20 }, flash0 = kcuda_flash();
	size_t nq, nk;
	void *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv;

	if (s_time_args("time-attention", "B T NH NKV HS [REPS]", argc, argv, x, 6, 1L << 24))
		return 2;
	if ((x[4] != 64 && x[4] != 128) || x[2] % x[3] || (long)x[0] * x[2] > 65535) {
		fprintf(stderr, "gpu-ops time-attention: the flash kernels take HS 64 or 128, NKV "
			"dividing NH and B x NH up to 65535, not B %d NH %d NKV %d HS %d\n", x[0], x[2],
			x[3], x[4]);
		return 2;
	}
	int b = x[0], t = x[1], nh = x[2], nkv = x[3], hs = x[4], reps = x[5];
	double flop_f = 2.0 * 2 * b * nh * ((double)t * (t + 1) / 2) * hs;
	s_dt = KCUDA_BF16;
	nq = (size_t)b * t * nh * hs, nk = (size_t)b * t * nkv * hs;
	if (!(q = S_DEV(s_rand(nq, -1, 1), nq)) || !(k = S_DEV(s_rand(nk, -1, 1), nk)) ||
	    !(v = S_DEV(s_rand(nk, -1, 1), nk)) || !(o = S_DEV(NULL, nq)) ||
	    !(lse = S_DEV32(NULL, (size_t)b * nh * t)) || !(dout = S_DEV(s_rand(nq, -1, 1), nq)) ||
	    !(dq = S_DEV(NULL, nq)) || !(dk = S_DEV(NULL, nk)) || !(dv = S_DEV(NULL, nk))) {
		fprintf(stderr, "gpu-ops time-attention: %s\n", err_msg());
		return 1;
	}
	printf("attention bf16, B %d T %d NH %d NKV %d HS %d, %d calls after 1 (ms per call, "
	       "TFLOP/s of the causal products)\n", b, t, nh, nkv, hs, reps);
	for (int flash = 0; flash <= 1; flash++) {
		float ms[2 * 64 + 1];
		double f = 0, bw = 0;
		kcuda_set_flash(flash);
		for (int r = -1; r < reps; r++) {
			if (r == 0 && kcuda_timer_mark() < 0)
				goto fail;
			if (kcuda_attention_forward(s_dt, o, lse, q, k, v, b, t, nh, nkv, hs) < 0 ||
			    (r >= 0 && kcuda_timer_mark() < 0) ||
			    kcuda_attention_backward_set(s_dt, dq, dk, dv, dout, o, lse, q, k, v, b, t,
							 nh, nkv, hs) < 0 ||
			    (r >= 0 && kcuda_timer_mark() < 0))
				goto fail;
		}
		if (kcuda_timer_read(ms, 2 * reps + 1) < 0)
			goto fail;
		for (int r = 0; r < reps; r++)
			f += ms[2 * r], bw += ms[2 * r + 1];
		f /= reps, bw /= reps;
		printf("  %-12s forward %.3f ms (%.1f TFLOP/s), backward %.3f ms (%.1f TFLOP/s), "
		       "both %.3f ms\n", flash ? "flash" : "cuBLAS path", f, flop_f / f / 1e9, bw,
		       2 * flop_f / bw / 1e9, f + bw);
	}
	kcuda_set_flash(flash0);
	s_release();
	return 0;
fail:
	fprintf(stderr, "gpu-ops time-attention: %s\n", err_msg());
	return 1;
}

/* gpu-ops time-wgrad [K [REPS]]: the weight-gradient groups of one layer
 * of the check's LoRA bench (Qwen2-0.5B shapes, rank 16, K = 8 x 512
 * tokens) as kcuda_gemm_wgrad calls, on cuBLAS (a split-K product each)
 * and on wgrad.cu's kernel, in bf16: ms per call and the rate of the
 * bytes they read. */
static int s_time_wgrad(int argc, char **argv)
{
	enum { NG = 4 };
	/* per group: products of {m, n, lda, ldb}; a and b columns of buffers
	 * [K, lda] and [K, ldb] */
	static const struct { const char *name; int np; int p[4][4]; } grp[NG] = {
		{ "q/k/v (dB q, k, v; dA)", 4,
		  { { 16, 896, 944, 896 }, { 16, 128, 944, 128 }, { 16, 128, 944, 128 },
		    { 48, 896, 944, 944 } } },
		{ "gate/up (dB gate, up; dA)", 3,
		  { { 16, 4864, 928, 4864 }, { 16, 4864, 928, 4864 }, { 32, 896, 928, 928 } } },
		{ "o (dB; dA)", 2, { { 16, 896, 16, 920 }, { 16, 896, 920, 896 } } },
		{ "down (dB; dA)", 2, { { 16, 896, 16, 920 }, { 16, 4864, 920, 4864 } } },
	};
	int x[2] = { 4096, 20 }, wg0 = kcuda_wgrad();

	if (s_time_args("time-wgrad", "K [REPS]", argc, argv, x, 2, 1L << 20))
		return 2;
	int k = x[0], reps = x[1];
	s_dt = KCUDA_BF16;
	printf("weight gradients bf16, K %d, %d calls after 1 (ms per call; GB/s of the bytes "
	       "read)\n", k, reps);
	for (int gi = 0; gi < NG; gi++) {
		struct kcuda_wgrad w[4];
		double bytes = 0, t[2];
		for (int i = 0; i < grp[gi].np; i++) {
			const int *q = grp[gi].p[i];
			size_t na = (size_t)k * q[2], nb = (size_t)k * q[3];
			void *a = S_DEV(s_rand(na, -1, 1), na), *b = S_DEV(s_rand(nb, -1, 1), nb);
			void *c = S_DEV32(NULL, (size_t)q[0] * q[1]);
			if (!a || !b || !c)
				goto fail;
			w[i] = (struct kcuda_wgrad){ (float *)c, q[1], a, q[2], b, q[3], q[0], q[1], 1.0f,
						     1.0f };
			bytes += 2.0 * k * (q[0] + q[1]);
		}
		for (int on = 0; on <= 1; on++) {
			float ms[64];
			kcuda_set_wgrad(on);
			for (int r = -1; r < reps; r++) {
				if ((r == 0 && kcuda_timer_mark() < 0) ||
				    kcuda_gemm_wgrad(s_dt, w, grp[gi].np, k) < 0 ||
				    (r >= 0 && kcuda_timer_mark() < 0))
					goto fail;
			}
			if (kcuda_timer_read(ms, reps + 1) < 0)
				goto fail;
			t[on] = 0;
			for (int r = 0; r < reps; r++)
				t[on] += ms[r];
			t[on] /= reps;
		}
		printf("  %-28s cuBLAS %.4f ms (%.0f GB/s), wgrad %.4f ms (%.0f GB/s): %.2fx\n",
		       grp[gi].name, t[0], bytes / t[0] / 1e6, t[1], bytes / t[1] / 1e6, t[0] / t[1]);
		s_release();
	}
	kcuda_set_wgrad(wg0);
	return 0;
fail:
	fprintf(stderr, "gpu-ops time-wgrad: %s\n", err_msg());
	return 1;
}

int main(int argc, char **argv)
{
	char why[512], skip[600], what[128];
	size_t ncases = sizeof s_cases / sizeof s_cases[0], ntypes = sizeof s_types / sizeof s_types[0];
	int gpu;
	/* a substring of the case names to run (the others skipped): check.sh's
	 * racecheck and synccheck runs of the flash case */
	const char *only = getenv("GPU_OPS_ONLY");
	int emulated;

	if (argc > 1 && !strcmp(argv[1], "time-attention"))
		return s_time_attention(argc - 2, argv + 2);
	if (argc > 1 && !strcmp(argv[1], "time-wgrad"))
		return s_time_wgrad(argc - 2, argv + 2);
	if (argc > 1) {
		fprintf(stderr, "usage: gpu-ops            every CUDA op against the CPU reference (TAP)\n"
			"       gpu-ops time-attention [B T NH NKV HS [REPS]]   attention's timings\n"
			"       gpu-ops time-wgrad [K [REPS]]   the weight-gradient kernel's against "
			"cuBLAS\n");
		return strcmp(argv[1], "--help") && strcmp(argv[1], "-h") ? 2 : 0;
	}

	gpu = gpu_probe(why, sizeof why, skip, sizeof skip);
#ifdef MODULA_CUDA_EMU
	/* tests/gpu-ops-emu: the same cases over the CPU emulation of CUDA
	 * (tests/cuda-emu), named so that no line reads as a GPU's; its
	 * cuBLASLt choices go to a fresh file of the build (so that every run
	 * times them), not to the user's cache */
	emulated = 1;
	unlink("tests/gpu-ops-emu-cublaslt.tsv");
	setenv("MODULA_CUDA_TUNE_FILE", "tests/gpu-ops-emu-cublaslt.tsv", 1);
#else
	emulated = 0;
#endif
	kcuda_set_vector(0);    /* the scalar kernels; the "16-byte" cases turn them on */
	kcuda_set_flash(0);     /* attention's cuBLAS path; the "flash" case turns them on */
	kcuda_set_lt(0);        /* cublasGemmEx; the "cuBLASLt" case turns it on */
	kcuda_set_wgrad(0);     /* cuBLAS; the "wgrad" case turns the kernel on */
	if (gpu)
		tap_diag("device: %s", why);
	for (size_t t = 0; t < ntypes; t++) {
		for (size_t c = 0; c < ncases; c++) {
			int rc;
			snprintf(what, sizeof what, "%s%s %s", emulated ? "emulated: " : "",
				 s_cases[c].name, kcuda_dtype_name(s_types[t]));
			if (!gpu) {
				tap_skip(skip, what);
				continue;
			}
			s_dt = s_types[t];
			s_atol = s_cases[c].ascale * s_abase(s_dt);
			s_msg[0] = 0;
			s_bad = 0;
			err_clear();
			if (only && !strstr(what, only)) {
				tap_skip("not selected (GPU_OPS_ONLY)", what);
				continue;
			}
			rc = s_cases[c].run();
			if (rc < 0)
				TAP_OK(0, "%s: %s", what, err_msg());
			else
				TAP_OK(!s_bad, "%s: max|d| %s (tol %.0e + %.1e|x|)", what, s_msg, s_atol,
				       s_rtol(s_dt));
			s_release();
		}
	}
	if (gpu) {
		kcuda_memory_report(why, sizeof why);
		tap_diag("%s", why);
		s_print_maps();
	}
	return tap_done();
}
