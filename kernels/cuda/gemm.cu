/* gemm.cu: matrix products on cuBLAS (tensor cores for bf16/fp16, fp32
 * accumulation), the linear layer's forward and backward, and the
 * deterministic column sums behind bias gradients.
 *
 * Row-major C[M,N] is column-major C^T[N,M], so C = op(A) op(B) is computed
 * as C^T = op(B)^T op(A)^T: cuBLAS gets B first. Not a GEMM of our own:
 * cuBLAS picks the kernels (HGMMA on Hopper). bf16 and f16 products go
 * to cuBLASLt with an algorithm timed per shape (tune.cu) unless
 * MODULA_CUDA_LT=0; f32 and the batched products stay on cublasGemmEx.
 */
#include "kernels/cuda/kc.cuh"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static cudaDataType_t s_cuda_type(int dt)
{
	switch (dt) {
	case KCUDA_BF16: return CUDA_R_16BF;
	case KCUDA_F16: return CUDA_R_16F;
	default: return CUDA_R_32F;
	}
}

/* C = alpha op(A) op(B) + beta (cin ? cin : C); cin has C's leading
 * dimension and must not overlap C. cublasGemmEx has no separate C: there
 * cin is copied into C first. */
static int s_gemm(int dt, int cdt, void *c, int ldc, const void *cin, const void *a, int lda,
		  const void *b, int ldb, int m, int n, int k, int ta, int tb, float alpha,
		  float beta)
{
	KC_CTX(cx);
	if (!kc_is_float(dt) || !kc_is_float(cdt))
		return err_set("gemm: unsupported storage types %s x %s", kcuda_dtype_name(dt),
			       kcuda_dtype_name(cdt));
	if (cdt != dt && cdt != KCUDA_F32)
		return err_set("gemm: %s inputs cannot produce %s", kcuda_dtype_name(dt),
			       kcuda_dtype_name(cdt));
	if (m == 0 || n == 0)
		return 0;
	if (kc_lt_gemm(cx, dt, cdt, c, ldc, cin, a, lda, b, ldb, m, n, k, ta, tb, alpha, beta))
		return 0;
	if (cin && beta != 0.0f) {
		size_t e = kcuda_dtype_size(cdt);
		KC_CK(cudaMemcpy2DAsync(c, (size_t)ldc * e, cin, (size_t)ldc * e, (size_t)n * e, m,
					cudaMemcpyDeviceToDevice, cx->stream));
	}
	KC_CKB(cublasGemmEx(cx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
			    n, m, k, &alpha, b, s_cuda_type(dt), ldb, a, s_cuda_type(dt), lda, &beta,
			    c, s_cuda_type(cdt), ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
	return 0;
}

int kc_gemm(int dt, int cdt, void *c, const void *a, const void *b, int m, int n, int k,
	    int ta, int tb, float alpha, float beta)
{
	return s_gemm(dt, cdt, c, n, NULL, a, ta ? m : k, b, tb ? k : n, m, n, k, ta, tb, alpha,
		      beta);
}

extern "C" int kcuda_gemm_ld(int dt, int cdt, void *c, int ldc, const void *a, int lda,
			     const void *b, int ldb, int m, int n, int k, int ta, int tb, float alpha,
			     float beta)
{
	return s_gemm(dt, cdt, c, ldc, NULL, a, lda, b, ldb, m, n, k, ta, tb, alpha, beta);
}

extern "C" int kcuda_gemm(int dt, void *c, const void *a, const void *b, int m, int n, int k,
			  int ta, int tb, float alpha, float beta)
{
	return kc_gemm(dt, dt, c, a, b, m, n, k, ta, tb, alpha, beta);
}

/* The device copies of batched products' pointer arrays, by content. A
 * step makes the same few hundred arrays (attention's heads, chunk by
 * chunk) every time; copying each from pageable host memory before its
 * product may synchronise the host with the stream (CUDA's rules for
 * pageable copies), so the host could not queue work ahead of the GPU. An
 * array seen before is on the device already: no copy at all. Bounded:
 * when full, the stream is synchronised and the table emptied. */
#define PC_SLOTS 2048
#define PC_MAX_USED 1536

struct pc_entry {
	uint64_t key;
	int n;                 /* pointers (3 x count); 0: empty */
	const void **host;     /* the array, to compare */
	const void **dev;
};

static struct pc_entry s_pc[PC_SLOTS];
static int s_pc_used;
unsigned long kc_pc_epoch;

static uint64_t s_pc_hash(const void *const *p, int n)
{
	uint64_t h = 1469598103934665603ull;

	for (int i = 0; i < n; i++) {
		h ^= (uint64_t)(uintptr_t)p[i];
		h *= 1099511628211ull;
		h ^= h >> 29;
	}
	return h ^ (uint64_t)n;
}

static int s_pc_flush(struct kc_ctx *cx)
{
	KC_CK(cudaStreamSynchronize(cx->stream));
	for (int i = 0; i < PC_SLOTS; i++) {
		if (s_pc[i].n) {
			kc_free((void *)s_pc[i].dev);
			free(s_pc[i].host);
		}
		s_pc[i] = (struct pc_entry){ 0 };
	}
	s_pc_used = 0;
	kc_pc_epoch++;
	return 0;
}

/* The device array holding the n pointers of h, copied once. */
static const void **s_pc_get(struct kc_ctx *cx, const void *const *h, int n)
{
	uint64_t key = s_pc_hash(h, n);
	size_t bytes = (size_t)n * sizeof(void *);
	struct pc_entry *e;
	cudaError_t ce;

	for (int i = 0; i < PC_SLOTS; i++) {
		e = &s_pc[(key + (uint64_t)i) % PC_SLOTS];
		if (!e->n)
			break;
		if (e->key == key && e->n == n && !memcmp(e->host, h, bytes))
			return e->dev;
	}
	if (kcuda_capturing()) {
		/* a copy from the host cannot be part of a CUDA graph: the
		 * step runs once before its capture, so every array is here */
		err_set("a batched product's pointers were not seen before the CUDA graph capture");
		return NULL;
	}
	if (s_pc_used >= PC_MAX_USED) {
		if (s_pc_flush(cx) < 0)
			return NULL;
		e = &s_pc[key % PC_SLOTS];
	}
	if (!(e->host = (const void **)malloc(bytes))) {
		err_set("out of memory");
		return NULL;
	}
	if (!(e->dev = (const void **)kc_alloc(bytes))) {
		free(e->host);
		return NULL;
	}
	memcpy(e->host, h, bytes);
	/* from the table's own copy, which lives as long as the entry */
	ce = cudaMemcpyAsync(e->dev, e->host, bytes, cudaMemcpyHostToDevice, cx->stream);
	if (ce != cudaSuccess) {
		kc_free((void *)e->dev);
		free(e->host);
		err_set("CUDA call failed: copying %d product pointers: %s", n, cudaGetErrorString(ce));
		return NULL;
	}
	e->key = key, e->n = n;
	s_pc_used++;
	return e->dev;
}

int kc_gemm_batched(int dt, int cdt, void *const *c, const void *const *a, const void *const *b,
		    int count, int m, int n, int k, int ta, int tb, int lda, int ldb, int ldc,
		    float alpha, float beta)
{
	size_t bytes = 3 * (size_t)count * sizeof(void *);
	const void **h, **d;
	cublasStatus_t st;

	KC_CTX(cx);
	if (!kc_is_float(dt) || !kc_is_float(cdt) || (cdt != dt && cdt != KCUDA_F32))
		return err_set("gemm: unsupported storage types %s x %s", kcuda_dtype_name(dt),
			       kcuda_dtype_name(cdt));
	if (count == 0 || m == 0 || n == 0)
		return 0;
	if (!(h = (const void **)malloc(bytes)))
		return err_set("out of memory");
	/* cuBLAS is column-major: it gets B first (see kc_gemm) */
	memcpy(h, b, count * sizeof(void *));
	memcpy(h + count, a, count * sizeof(void *));
	memcpy(h + 2 * count, c, count * sizeof(void *));
	d = s_pc_get(cx, h, 3 * count);
	free(h);
	if (!d)
		return -1;
	st = cublasGemmBatchedEx(cx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
				 ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, d, s_cuda_type(dt),
				 ldb, d + count, s_cuda_type(dt), lda, &beta,
				 (void *const *)(d + 2 * count), s_cuda_type(cdt), ldc, count,
				 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	if (st != CUBLAS_STATUS_SUCCESS)
		return err_set("cuBLAS call failed: cublasGemmBatchedEx (%d products of %dx%dx%d): %s",
			       count, m, n, k, cublasGetStatusString(st));
	return 0;
}

extern "C" int kcuda_gemm_batched(int dt, void *const *c, const void *const *a,
				  const void *const *b, int count, int m, int n, int k, int ta, int tb,
				  float alpha, float beta)
{
	return kc_gemm_batched(dt, dt, c, a, b, count, m, n, k, ta, tb, ta ? m : k, tb ? k : n, n,
			       alpha, beta);
}

extern "C" int kcuda_gemm_mixed(int dt, int cdt, void *c, const void *a, const void *b, int m,
				int n, int k, int ta, int tb, float alpha, float beta)
{
	return kc_gemm(dt, cdt, c, a, b, m, n, k, ta, tb, alpha, beta);
}

/* ---- column sums (deterministic: fixed chunks, fixed order) ------------ */

#define KC_COLSUM_ROWS 64

/* part[chunk, col] = sum of in[rows of chunk, col]; in is T [rows, cols]. */
template <typename T>
__global__ void k_colsum_part(float *part, const T *in, int rows, int cols)
{
	int col = blockIdx.x * blockDim.x + threadIdx.x;
	int r0 = blockIdx.y * KC_COLSUM_ROWS;
	int r1 = min(rows, r0 + KC_COLSUM_ROWS);
	float s = 0.0f;

	if (col >= cols)
		return;
	for (int r = r0; r < r1; r++)
		s += kc_ld(in[(size_t)r * cols + col]);
	part[(size_t)blockIdx.y * cols + col] = s;
}

__global__ void k_colsum_final(float *out, const float *part, int chunks, int cols)
{
	int col = blockIdx.x * blockDim.x + threadIdx.x;
	float s = 0.0f;

	if (col >= cols)
		return;
	for (int i = 0; i < chunks; i++)
		s += part[(size_t)i * cols + col];
	out[col] += s;
}

int kc_colsum(float *out, const float *in, int rows, int cols)
{
	KC_CTX(cx);
	k_colsum_final<<<kc_blocks(cols), KC_THREADS, 0, cx->stream>>>(out, in, rows, cols);
	KC_LAUNCHED("colsum_final");
	return 0;
}

/* out[col] += sum_rows in[row, col] for `in` in storage type dt, through
 * per-chunk partial sums in fp32. */
static int s_colsum(int dt, float *out, const void *in, int rows, int cols)
{
	int chunks = (rows + KC_COLSUM_ROWS - 1) / KC_COLSUM_ROWS;
	float *part;
	dim3 grid((cols + KC_THREADS - 1) / KC_THREADS, chunks);
	cudaError_t e;
	int rc;

	KC_CTX(cx);
	if (!kc_is_float(dt))
		return err_set("unknown CUDA storage type %d", dt);
	if (rows == 0 || cols == 0)
		return 0;
	if (!(part = (float *)kc_alloc((size_t)chunks * cols * sizeof(float))))
		return -1;
	KC_DISPATCH(dt, T, k_colsum_part<T><<<grid, KC_THREADS, 0, cx->stream>>>(
		part, (const T *)in, rows, cols));
	e = cudaGetLastError();
	rc = e == cudaSuccess ? kc_colsum(out, part, chunks, cols)
			      : err_set("CUDA kernel 'colsum_part' failed to launch: %s",
					cudaGetErrorString(e));
	kc_free(part);
	return rc;
}

/* ---- the linear layer ------------------------------------------------- */

template <typename T>
__global__ void k_add_bias(T *out, const T *b, size_t n, int oc)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		out[i] = kc_st<T>(kc_ld(out[i]) + kc_ld(b[i % oc]));
}

extern "C" int kcuda_matmul_forward(int dt, void *out, const void *inp, const void *w,
				    const void *b, int n, int c, int oc)
{
	size_t len = (size_t)n * oc;

	KC_CTX(cx);
	if (kc_gemm(dt, dt, out, inp, w, n, oc, c, 0, 1, 1.0f, 0.0f) < 0)
		return -1;
	if (!b)
		return 0;
	KC_DISPATCH(dt, T, k_add_bias<T><<<kc_blocks(len), KC_THREADS, 0, cx->stream>>>(
		(T *)out, (const T *)b, len, oc));
	KC_LAUNCHED("add_bias");
	return 0;
}

extern "C" int kcuda_matmul_forward_res(int dt, void *out, const void *res, const void *inp,
					const void *w, int n, int c, int oc)
{
	if (out == res)
		return err_set("matmul_forward_res: out and res must be different buffers");
	return s_gemm(dt, dt, out, oc, res, inp, c, w, c, n, oc, c, 0, 1, 1.0f, 1.0f);
}

extern "C" int kcuda_matmul_backward(int dt, void *dinp, float *dw, float *db, const void *dout,
				     const void *inp, const void *w, int n, int c, int oc)
{
	if (dinp && kc_gemm(dt, dt, dinp, dout, w, n, c, oc, 0, 0, 1.0f, 1.0f) < 0)
		return -1;
	if (dw && kc_gemm(dt, KCUDA_F32, dw, dout, inp, oc, c, n, 1, 0, 1.0f, 1.0f) < 0)
		return -1;
	if (db && s_colsum(dt, db, dout, n, oc) < 0)
		return -1;
	return 0;
}
