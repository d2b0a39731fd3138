/* ops_dense.c: matrix products (OpenBLAS), embedding and residual ops.
 * See ops.h for the conventions (outputs first, backward accumulates, NULL
 * gradients skipped, deterministic). */
#include "kernels/cpu/ops.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* OpenBLAS keeps to one thread (see op_gemm), from program start: its own
 * initialisation runs first, as a library the program depends on. */
__attribute__((constructor)) static void s_blas_single(void)
{
	openblas_set_num_threads(1);
}

void op_gemm_serial(float *c, int ldc, const float *a, int lda, const float *b, int ldb,
		    int m, int n, int k, int ta, int tb, float alpha, float beta)
{
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		    m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* The engine runs one thread pool, OpenMP's: OpenBLAS is kept to one
 * thread and each OpenMP thread multiplies its own block of rows of C (or
 * of columns, when C has few rows). Two pools spinning on the same cores
 * cost more than they bring. The split depends only on the shapes and the
 * thread count, so results are bit-identical run to run. */
void op_gemm_ld(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int m, int n,
		int k, int ta, int tb, float alpha, float beta)
{
	int nt = omp_get_max_threads();

	if (nt == 1 || (double)m * n * k < 16.0 * OPS_PARALLEL_MIN) {
		op_gemm_serial(c, ldc, a, lda, b, ldb, m, n, k, ta, tb, alpha, beta);
		return;
	}
	if (m >= 4 * nt) {
		#pragma omp parallel
		{
			int t = omp_get_thread_num(), p = omp_get_num_threads();
			int m0 = (int)((long)m * t / p), m1 = (int)((long)m * (t + 1) / p);
			if (m1 > m0)
				op_gemm_serial(c + (size_t)m0 * ldc, ldc, ta ? a + m0 : a + (size_t)m0 * lda,
					       lda, b, ldb, m1 - m0, n, k, ta, tb, alpha, beta);
		}
	} else {
		#pragma omp parallel
		{
			int t = omp_get_thread_num(), p = omp_get_num_threads();
			int n0 = (int)((long)n * t / p), n1 = (int)((long)n * (t + 1) / p);
			if (n1 > n0)
				op_gemm_serial(c + n0, ldc, a, lda, tb ? b + (size_t)n0 * ldb : b + n0, ldb,
					       m, n1 - n0, k, ta, tb, alpha, beta);
		}
	}
}

void op_gemm(float *c, const float *a, const float *b, int m, int n, int k,
	     int ta, int tb, float alpha, float beta)
{
	op_gemm_ld(c, n, a, ta ? m : k, b, tb ? k : n, m, n, k, ta, tb, alpha, beta);
}

void op_transpose(float *dst, const float *src, size_t rows, size_t cols)
{
	for (size_t i = 0; i < rows; i++)
		for (size_t j = 0; j < cols; j++)
			dst[j * rows + i] = src[i * cols + j];
}

void op_embedding_forward(float *out, const int *tok, const float *wte, int n, int c)
{
	#pragma omp parallel for if((size_t)n * c >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++)
		memcpy(out + (size_t)i * c, wte + (size_t)tok[i] * c, (size_t)c * sizeof(float));
}

void op_embedding_backward(float *dwte, const float *dout, const int *tok, int n, int c)
{
	/* Columns are split across threads; every thread walks the tokens in
	 * order, so each dwte element sums in a fixed order. */
	#pragma omp parallel if((size_t)n * c >= OPS_PARALLEL_MIN)
	{
		#pragma omp for schedule(static)
		for (int j0 = 0; j0 < c; j0 += 64) {
			int j1 = j0 + 64 < c ? j0 + 64 : c;
			for (int i = 0; i < n; i++) {
				float *d = dwte + (size_t)tok[i] * c;
				const float *g = dout + (size_t)i * c;
				for (int j = j0; j < j1; j++)
					d[j] += g[j];
			}
		}
	}
}

void op_matmul_forward(float *out, const float *inp, const float *w, const float *b,
		       int n, int c, int oc)
{
	if (b) {
		#pragma omp parallel for if((size_t)n * oc >= OPS_PARALLEL_MIN)
		for (int i = 0; i < n; i++)
			memcpy(out + (size_t)i * oc, b, (size_t)oc * sizeof(float));
	}
	op_gemm(out, inp, w, n, oc, c, 0, 1, 1.0f, b ? 1.0f : 0.0f);
}

void op_matmul_backward(float *dinp, float *dw, float *db, const float *dout,
			const float *inp, const float *w, int n, int c, int oc)
{
	if (dinp)
		op_gemm(dinp, dout, w, n, c, oc, 0, 0, 1.0f, 1.0f);
	if (dw)
		op_gemm(dw, dout, inp, oc, c, n, 1, 0, 1.0f, 1.0f);
	if (db) {
		#pragma omp parallel for schedule(static) if((size_t)n * oc >= OPS_PARALLEL_MIN)
		for (int o0 = 0; o0 < oc; o0 += 64) {
			int o1 = o0 + 64 < oc ? o0 + 64 : oc;
			for (int i = 0; i < n; i++) {
				const float *g = dout + (size_t)i * oc;
				for (int o = o0; o < o1; o++)
					db[o] += g[o];
			}
		}
	}
}

void op_residual_forward(float *out, const float *a, const float *b, size_t n)
{
	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] + b[i];
}

void op_residual_backward(float *da, float *db, const float *dout, size_t n)
{
	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < n; i++) {
		if (da)
			da[i] += dout[i];
		if (db)
			db[i] += dout[i];
	}
}
