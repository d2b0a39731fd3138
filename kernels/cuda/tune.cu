/* tune.cu: the bf16 and f16 products on cuBLASLt, each shape with the
 * fastest of the algorithms cuBLASLt offers for it, timed on this GPU.
 *
 * cublasGemmEx takes cuBLAS's first guess for a shape. For the engine's
 * products that guess is often not the fastest: at 8 x 512 tokens of a
 * 0.5B model the outputs with 896 columns make 1.7 waves of 128 x 128
 * tiles on 132 SMs, where a smaller tile or a split over K fills the GPU.
 * So the first time a shape comes (outside a CUDA graph capture), up to
 * LT_CANDIDATES of cublasLtMatmulAlgoGetHeuristic's algorithms are run
 * and timed with events, and the fastest is kept for the shape: its
 * descriptors too, so a later call costs one cublasLtMatmul. A shape is
 * the storage types, transpositions, sizes, leading dimensions, whether
 * beta is zero and the pointers' alignments (which rule algorithms out).
 *
 * The choice is written to a tune file (one line per shape, keyed by the
 * GPU's name and cuBLASLt's version) and read back at start, so that later
 * processes run the same algorithms without timing them: two runs of one
 * job give the same bits, and the daemon's workers do not re-time. The
 * file is MODULA_CUDA_TUNE_FILE, else $XDG_CACHE_HOME/modula/cublaslt.tsv,
 * else ~/.cache/modula/cublaslt.tsv; "none" keeps nothing. An algorithm
 * that fails when called (one read from a file of another build, say)
 * sends its shape to cublasGemmEx from then on.
 *
 * Timing needs the GPU's results, so it synchronises: it happens in the
 * first steps (the benchmark's warm-up), once per shape and process at
 * most. When beta is zero the candidates write the real output (the last
 * call, with the chosen algorithm, writes it for good); otherwise into
 * scratch of the output's size (up to LT_SCRATCH_MAX; a larger output
 * takes the first guess untimed), unless C is another matrix than the
 * output D (D = alpha op(A) op(B) + beta C: the residual added in the
 * product's epilogue), when D is written and C only read.
 *
 * Not a GEMM of our own: every algorithm is cuBLASLt's.
 */
#include "kernels/cuda/kc.cuh"

#include <cublasLt.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int kc_lt = -1; /* kc.cuh */

#define LT_CANDIDATES 8
#define LT_REPS 3
#define LT_SLOTS 1024
#define LT_SCRATCH_MAX ((size_t)64 << 20)
/* products of fewer multiply-adds take the first guess untimed and are
 * not written to the tune file: timing them costs more than it can win,
 * and a decoding step's or an eval batch's odd row counts would each add
 * lines (they do take a slot of the table; when it is full, new shapes go
 * to cublasGemmEx) */
#define LT_TIME_MIN_MACS ((double)(1 << 26))
/* a tune file longer than this is read but not added to */
#define LT_FILE_MAX_LINES 4096

struct lt_key {
	int dt, cdt, ta, tb, m, n, k, lda, ldb, ldc, beta0, align; /* beta0: 1 beta is zero, 2 C
								      is another matrix than D */
};

struct lt_entry {
	int used;
	struct lt_key key;
	int ok;          /* 1: algo runs this shape; 0: cublasGemmEx does */
	int how;         /* 'T' timed here, 'F' from the file, 'G' a first guess */
	int seen;        /* called in this process (counted in the report) */
	float us;        /* the chosen algorithm's time, microseconds (0: not timed) */
	cublasLtMatmulAlgo_t algo;
	int descs;       /* the descriptors below are made */
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t la, lb, lc;
};

static struct lt_entry s_tab[LT_SLOTS];
static int s_used;
static cublasLtHandle_t s_lth;
static int s_state;            /* 0 not opened, 1 open, -1 cuBLASLt would not start */
static char s_file[4096];      /* "" when no file is kept */
static char s_gpu[320];        /* the GPU's name, tabs and newlines made spaces */
static size_t s_ver;           /* cublasLtGetVersion() */
static int s_timed, s_loaded, s_guessed, s_gemmex; /* shapes called, by how chosen */
static int s_file_lines;       /* lines in the tune file when it was read */

static cudaDataType_t s_type(int dt)
{
	return dt == KCUDA_BF16 ? CUDA_R_16BF : dt == KCUDA_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* log2 of a matrix's alignment, capped at 256 bytes (cuBLASLt's largest
 * ask): the pointer's and its rows' (an algorithm's alignment applies to
 * the leading dimension too). */
static int s_align_log2(const void *p, int ld, int dt)
{
	uintptr_t v = (uintptr_t)p | ((uintptr_t)ld * kcuda_dtype_size(dt));
	int l = 0;

	while (l < 8 && !(v & ((uintptr_t)1 << l)))
		l++;
	return l;
}

static uint64_t s_hash(const struct lt_key *k)
{
	const int *w = (const int *)k;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < sizeof *k / sizeof(int); i++) {
		h ^= (uint64_t)(unsigned)w[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 31);
}

/* The entry for key, or the empty slot where it goes (NULL when full). */
static struct lt_entry *s_find(const struct lt_key *k)
{
	uint64_t h = s_hash(k);

	for (int i = 0; i < LT_SLOTS; i++) {
		struct lt_entry *e = &s_tab[(h + (uint64_t)i) % LT_SLOTS];
		if (!e->used || !memcmp(&e->key, k, sizeof *k))
			return e;
	}
	return NULL;
}

static void s_default_file(void)
{
	const char *f = getenv("MODULA_CUDA_TUNE_FILE"), *base = getenv("XDG_CACHE_HOME");
	char dir[4000];

	s_file[0] = 0;
	if (f) {
		if (strcmp(f, "none") && strlen(f) < sizeof s_file)
			snprintf(s_file, sizeof s_file, "%s", f);
		return;
	}
	if (base && *base)
		snprintf(dir, sizeof dir, "%s/modula", base);
	else if (getenv("HOME") && *getenv("HOME"))
		snprintf(dir, sizeof dir, "%s/.cache/modula", getenv("HOME"));
	else
		return;
	/* the parent first (~/.cache may not exist yet); failures leave no file */
	{
		char parent[4000];
		char *slash;
		snprintf(parent, sizeof parent, "%s", dir);
		if ((slash = strrchr(parent, '/')) && slash != parent) {
			*slash = 0;
			mkdir(parent, 0755);
		}
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return;
	snprintf(s_file, sizeof s_file, "%s/cublaslt.tsv", dir);
}

/* A line: "v1 \t gpu \t version \t key (12 ints) \t ok \t us \t algo hex". */
static void s_load(void)
{
	char line[1024];
	FILE *f;

	if (!s_file[0] || !(f = fopen(s_file, "r")))
		return;
	while (fgets(line, sizeof line, f)) {
		char *field[7], *save = NULL, *p = line;
		s_file_lines++;
		struct lt_key k;
		struct lt_entry *e;
		int nf = 0, ok;
		float us;
		size_t ver;
		unsigned char raw[sizeof(cublasLtMatmulAlgo_t)];

		line[strcspn(line, "\n")] = 0;
		while (nf < 7 && (field[nf] = strtok_r(p, "\t", &save)))
			nf++, p = NULL;
		if (nf != 7 || strcmp(field[0], "v1") || strcmp(field[1], s_gpu) ||
		    sscanf(field[2], "%zu", &ver) != 1 || ver != s_ver)
			continue;
		if (sscanf(field[3], "%d %d %d %d %d %d %d %d %d %d %d %d", &k.dt, &k.cdt, &k.ta,
			   &k.tb, &k.m, &k.n, &k.k, &k.lda, &k.ldb, &k.ldc, &k.beta0, &k.align) != 12 ||
		    sscanf(field[4], "%d", &ok) != 1 || sscanf(field[5], "%f", &us) != 1 ||
		    strlen(field[6]) != 2 * sizeof raw)
			continue;
		for (size_t i = 0; i < sizeof raw; i++) {
			unsigned v;
			if (sscanf(field[6] + 2 * i, "%2x", &v) != 1)
				goto next;
			raw[i] = (unsigned char)v;
		}
		if (!(e = s_find(&k)) || e->used || s_used >= LT_SLOTS * 3 / 4)
			continue; /* the first line for a shape wins */
		memset(e, 0, sizeof *e);
		e->used = 1, e->key = k, e->ok = ok != 0, e->how = 'F', e->us = us;
		memcpy(&e->algo, raw, sizeof raw);
		s_used++;
	next:;
	}
	fclose(f);
}

/* Appended in one write, so that processes sharing the file do not
 * interleave their lines. */
static void s_save(const struct lt_entry *e)
{
	char line[1024], hex[2 * sizeof(cublasLtMatmulAlgo_t) + 1];
	const unsigned char *raw = (const unsigned char *)&e->algo;
	const struct lt_key *k = &e->key;
	FILE *f;
	int n;

	if (!s_file[0] || s_file_lines >= LT_FILE_MAX_LINES)
		return;
	s_file_lines++;
	for (size_t i = 0; i < sizeof e->algo; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	n = snprintf(line, sizeof line, "v1\t%s\t%zu\t%d %d %d %d %d %d %d %d %d %d %d %d\t%d\t%.2f\t%s\n",
		     s_gpu, s_ver, k->dt, k->cdt, k->ta, k->tb, k->m, k->n, k->k, k->lda, k->ldb,
		     k->ldc, k->beta0, k->align, e->ok, e->us, hex);
	if (n <= 0 || n >= (int)sizeof line || !(f = fopen(s_file, "a")))
		return;
	fwrite(line, 1, (size_t)n, f);
	fclose(f);
}

static int s_open(void)
{
	cudaDeviceProp prop;

	if (s_state)
		return s_state;
	s_state = -1;
	if (cublasLtCreate(&s_lth) != CUBLAS_STATUS_SUCCESS)
		return -1;
	if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
		cudaGetLastError();
		cublasLtDestroy(s_lth);
		return -1;
	}
	snprintf(s_gpu, sizeof s_gpu, "%s sm_%d%d %d SMs", prop.name, prop.major, prop.minor,
		 prop.multiProcessorCount);
	for (char *c = s_gpu; *c; c++)
		if (*c == '\t' || *c == '\n')
			*c = ' ';
	s_ver = cublasLtGetVersion();
	s_default_file();
	s_load();
	s_state = 1;
	return 1;
}

/* The product's descriptors. cuBLAS is column-major: row-major C[m,n] is
 * C^T[n,m], computed as op(B)^T op(A)^T (gemm.cu's s_gemm does the same
 * with cublasGemmEx): cuBLASLt's "A" is our b, its "B" our a. */
static int s_descs(struct lt_entry *e)
{
	const struct lt_key *k = &e->key;
	cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasOperation_t opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;

	if (e->descs)
		return 0;
	if (cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) !=
	    CUBLAS_STATUS_SUCCESS)
		return -1;
	if (cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa) ||
	    cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb) ||
	    cublasLtMatrixLayoutCreate(&e->la, s_type(k->dt), k->tb ? k->k : k->n,
				       k->tb ? k->n : k->k, k->ldb) ||
	    cublasLtMatrixLayoutCreate(&e->lb, s_type(k->dt), k->ta ? k->m : k->k,
				       k->ta ? k->k : k->m, k->lda) ||
	    cublasLtMatrixLayoutCreate(&e->lc, s_type(k->cdt), k->n, k->m, k->ldc)) {
		/* what was made is kept for the destroy below; zeroed handles are skipped */
		if (e->la)
			cublasLtMatrixLayoutDestroy(e->la);
		if (e->lb)
			cublasLtMatrixLayoutDestroy(e->lb);
		cublasLtMatmulDescDestroy(e->op);
		e->op = NULL, e->la = e->lb = e->lc = NULL;
		return -1;
	}
	e->descs = 1;
	return 0;
}

/* D = alpha op(A) op(B) + beta C; C is D when cin is NULL. */
static cublasStatus_t s_run(struct kc_ctx *cx, const struct lt_entry *e,
			    const cublasLtMatmulAlgo_t *algo, void *c, const void *cin, const void *a,
			    const void *b, float alpha, float beta)
{
	return cublasLtMatmul(s_lth, e->op, &alpha, b, e->la, a, e->lb, &beta, cin ? cin : c, e->lc,
			      c, e->lc, algo, cx->blas_ws, KC_BLAS_WS_BYTES, cx->stream);
}

/* Choose e's algorithm: cuBLASLt's candidates timed where that is allowed,
 * its first guess where not. 0; -1 when cuBLASLt has no algorithm for the
 * shape; -2 when a call failed (not worth remembering in the file). */
static int s_choose(struct kc_ctx *cx, struct lt_entry *e, void *c, const void *cin,
		    const void *a, const void *b, float alpha, float beta)
{
	const struct lt_key *k = &e->key;
	cublasLtMatmulPreference_t pref;
	cublasLtMatmulHeuristicResult_t res[LT_CANDIDATES];
	uint64_t ws = KC_BLAS_WS_BYTES;
	uint32_t al[3] = { 1u << (k->align & 15), 1u << ((k->align >> 4) & 15),
			   1u << ((k->align >> 8) & 15) };
	int nres = 0, best = 0;
	size_t celt = kcuda_dtype_size(k->cdt);
	size_t cbytes = ((size_t)(k->m - 1) * k->ldc + k->n) * celt;
	void *out = c, *scratch = NULL;
	cudaEvent_t ev[2] = { NULL, NULL };
	float best_ms = 0.0f;

	/* split-K partial sums are added in fp32 (the compute type), never in
	 * a 16-bit output type: a product's precision must not depend on which
	 * algorithm won the timing */
	uint32_t red = k->cdt == KCUDA_F32 ? (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK
					   : (uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
	cublasStatus_t hs;

	if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
		return -2;
	/* cuBLASLt's "A" is our b, "B" our a, "C" and "D" our c */
	if (cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
						 &ws, sizeof ws) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
						 &al[1], sizeof al[1]) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
						 &al[0], sizeof al[0]) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
						 &al[2], sizeof al[2]) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
						 &al[2], sizeof al[2]) ||
	    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
						 &red, sizeof red)) {
		cublasLtMatmulPreferenceDestroy(pref);
		return -2;
	}
	hs = cublasLtMatmulAlgoGetHeuristic(s_lth, e->op, e->la, e->lb, e->lc, e->lc, pref,
					    LT_CANDIDATES, res, &nres);
	cublasLtMatmulPreferenceDestroy(pref);
	if (hs != CUBLAS_STATUS_SUCCESS && hs != CUBLAS_STATUS_NOT_SUPPORTED)
		return -2;
	if (hs != CUBLAS_STATUS_SUCCESS)
		nres = 0;
	{
		int j = 0; /* keep what cuBLASLt says runs, in its order */
		for (int i = 0; i < nres; i++)
			if (res[i].state == CUBLAS_STATUS_SUCCESS && res[i].workspaceSize <= ws)
				res[j++] = res[i];
		nres = j;
	}
	if (nres == 0)
		return -1;
	e->algo = res[0].algo, e->how = 'G', e->us = 0.0f;
	if (nres == 1 || kcuda_capturing() || (!k->beta0 && cbytes > LT_SCRATCH_MAX) ||
	    (double)k->m * k->n * k->k < LT_TIME_MIN_MACS)
		return 0;
	/* beta 0, or C another matrix (beta0 2): the candidates may write the
	 * real D, which is not read */
	if (!k->beta0 && !(out = scratch = kc_alloc(cbytes))) {
		err_clear(); /* no room to time: the first guess */
		return 0;
	}
	if (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess) {
		cudaGetLastError();
		goto done;
	}
	for (int i = 0; i < nres; i++) {
		float ms = 0.0f;
		int bad = s_run(cx, e, &res[i].algo, out, cin, a, b, alpha, beta) !=
			  CUBLAS_STATUS_SUCCESS;
		bad = bad || cudaEventRecord(ev[0], cx->stream) != cudaSuccess;
		for (int r = 0; !bad && r < LT_REPS; r++)
			bad = s_run(cx, e, &res[i].algo, out, cin, a, b, alpha, beta) !=
			      CUBLAS_STATUS_SUCCESS;
		bad = bad || cudaEventRecord(ev[1], cx->stream) != cudaSuccess ||
		      cudaEventSynchronize(ev[1]) != cudaSuccess ||
		      cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess;
		if (bad) {
			cudaGetLastError();
			continue;
		}
		if (e->us == 0.0f || ms < best_ms)
			best = i, best_ms = ms, e->us = ms * 1e3f / LT_REPS;
	}
	e->algo = res[best].algo;
	e->how = e->us > 0.0f ? 'T' : 'G';
done:
	for (int i = 0; i < 2; i++)
		if (ev[i])
			cudaEventDestroy(ev[i]);
	if (scratch)
		kc_free(scratch);
	return 0;
}

/* C = alpha op(A) op(B) + beta C on cuBLASLt (the arguments of gemm.cu's
 * s_gemm), or, cin not NULL, C = alpha op(A) op(B) + beta cin (cin with
 * C's leading dimension). 1 when queued; 0 when the caller should use
 * cublasGemmEx: the switch is off, f32 (kept on cublasGemmEx, no TF32), no
 * algorithm for the shape, or one that failed to queue. */
int kc_lt_gemm(struct kc_ctx *cx, int dt, int cdt, void *c, int ldc, const void *cin,
	       const void *a, int lda, const void *b, int ldb, int m, int n, int k, int ta, int tb,
	       float alpha, float beta)
{
	struct lt_key key;
	struct lt_entry *e;

	if (kc_lt <= 0 || dt == KCUDA_F32 || k == 0 || s_open() < 0)
		return 0;
	memset(&key, 0, sizeof key);
	key.dt = dt, key.cdt = cdt, key.ta = ta, key.tb = tb, key.m = m, key.n = n, key.k = k;
	if (beta == 0.0f || cin == c)
		cin = NULL;
	key.lda = lda, key.ldb = ldb, key.ldc = ldc, key.beta0 = beta == 0.0f ? 1 : cin ? 2 : 0;
	key.align = s_align_log2(a, lda, dt) | s_align_log2(b, ldb, dt) << 4 |
		    s_align_log2(c, ldc, cdt) << 8;
	if (cin) { /* one alignment for C and D: the less aligned */
		int lc = s_align_log2(c, ldc, cdt), li = s_align_log2(cin, ldc, cdt);
		key.align = (key.align & 0xff) | (li < lc ? li : lc) << 8;
	}
	if (!(e = s_find(&key)))
		return 0; /* the table is full: cublasGemmEx */
	if (!e->used) {
		if (s_used >= LT_SLOTS * 3 / 4)
			return 0;
		memset(e, 0, sizeof *e);
		e->used = 1, e->key = key;
		s_used++;
		int rc = s_descs(e) < 0 ? -2 : s_choose(cx, e, c, cin, a, b, alpha, beta);
		e->ok = rc == 0;
		/* kept: timed choices and shapes cuBLASLt has no algorithm for; not
		 * a first guess (a later run times it) or a failed call */
		if (e->how == 'T' || rc == -1)
			s_save(e);
	} else if (e->ok && !e->seen) {
		/* a choice read from the file: the descriptors, and cuBLASLt's word
		 * that the algorithm runs this shape here within the workspace */
		cublasLtMatmulHeuristicResult_t r;
		e->ok = s_descs(e) == 0 &&
			cublasLtMatmulAlgoCheck(s_lth, e->op, e->la, e->lb, e->lc, e->lc, &e->algo,
						&r) == CUBLAS_STATUS_SUCCESS &&
			r.workspaceSize <= KC_BLAS_WS_BYTES;
	}
	if (!e->seen) {
		e->seen = 1;
		if (!e->ok)
			s_gemmex++;
		else if (e->how == 'T')
			s_timed++;
		else if (e->how == 'F')
			s_loaded++;
		else
			s_guessed++;
	}
	if (!e->ok)
		return 0;
	if (s_run(cx, e, &e->algo, c, cin, a, b, alpha, beta) != CUBLAS_STATUS_SUCCESS) {
		/* not queued: cublasGemmEx takes this call and the shape's next ones */
		e->ok = 0;
		return 0;
	}
	return 1;
}

extern "C" void kcuda_set_lt(int on)
{
	kc_lt = on;
}

extern "C" int kcuda_lt(void)
{
	return kc_lt > 0;
}

extern "C" void kcuda_lt_report(char *buf, size_t n)
{
	if (kc_lt <= 0) {
		snprintf(buf, n, "cublasGemmEx (MODULA_CUDA_LT=0)");
		return;
	}
	if (s_state == 0) {
		snprintf(buf, n, "cuBLASLt: no bf16 or f16 product yet (f32 stays on cublasGemmEx)");
		return;
	}
	if (s_state < 0) {
		snprintf(buf, n, "cublasGemmEx (cuBLASLt would not start)");
		return;
	}
	snprintf(buf, n, "cuBLASLt: %d shapes timed, %d from %s, %d first guesses, %d on cublasGemmEx",
		 s_timed, s_loaded, s_file[0] ? s_file : "no tune file", s_guessed, s_gemmex);
}
