/* tests/cuda-emu/emu_api.h: the CUDA runtime, cuBLAS and cuBLASLt names
 * kernels/cuda/ uses, as the emulation (emu.h, emu.cc) provides them, and
 * the warp-level matrix instructions (ldmatrix, mma.sync, cp.async) that
 * kernels/cuda/kc_mma.cuh writes as inline PTX on a GPU. The fake
 * <cuda_runtime.h>, <cublas_v2.h>, <cublasLt.h>, <cuda_bf16.h> and
 * <cuda_fp16.h> in include/ all come here; only what the backend calls is
 * declared, with the real headers' spelling. */
#ifndef MODULA_CUDA_EMU_API_H
#define MODULA_CUDA_EMU_API_H

#include "emu.h"

/* ---- runtime ------------------------------------------------------------ */

enum cudaError_t {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInsufficientDriver = 35,
	cudaErrorNoDevice = 100,
	cudaErrorNotSupported = 801,
	cudaErrorLaunchFailure = 719,
	cudaErrorInvalidConfiguration = 9,
};
typedef struct kc_emu_stream *cudaStream_t;
typedef struct kc_emu_event *cudaEvent_t;
typedef struct kc_emu_pool *cudaMemPool_t;
typedef struct kc_emu_graph *cudaGraph_t;
typedef struct kc_emu_graph_exec *cudaGraphExec_t;
enum cudaMemcpyKind {
	cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
	cudaMemcpyDeviceToDevice, cudaMemcpyDefault
};
enum cudaMemPoolAttr {
	cudaMemPoolAttrReleaseThreshold, cudaMemPoolAttrUsedMemCurrent, cudaMemPoolAttrUsedMemHigh
};
enum cudaGraphMemAttributeType { cudaGraphMemAttrReservedMemCurrent, cudaGraphMemAttrReservedMemHigh };
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal };
enum cudaFuncAttribute {
	cudaFuncAttributeMaxDynamicSharedMemorySize, cudaFuncAttributePreferredSharedMemoryCarveout
};
#define cudaSharedmemCarveoutMaxShared 100
enum cudaDeviceAttr {
	cudaDevAttrMaxSharedMemoryPerBlockOptin, cudaDevAttrComputeCapabilityMajor,
	cudaDevAttrMultiProcessorCount
};
#define cudaStreamNonBlocking 1u

struct cudaDeviceProp {
	char name[256];
	int major, minor, multiProcessorCount;
	size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int dev);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v);
cudaError_t cudaDeviceGetGraphMemAttribute(int dev, cudaGraphMemAttributeType a, void *v);
cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
			      size_t height, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode m);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t kc_emu_func_set_attribute_for(const void *k, cudaFuncAttribute a, int v);
template <typename F> static inline cudaError_t cudaFuncSetAttribute(F *k, cudaFuncAttribute a, int v)
{
	return kc_emu_func_set_attribute_for((const void *)k, a, v);
}

/* ---- cuBLAS ------------------------------------------------------------- */

enum cublasStatus_t {
	CUBLAS_STATUS_SUCCESS = 0,
	CUBLAS_STATUS_NOT_INITIALIZED = 1,
	CUBLAS_STATUS_ALLOC_FAILED = 3,
	CUBLAS_STATUS_INVALID_VALUE = 7,
	CUBLAS_STATUS_ARCH_MISMATCH = 8,
	CUBLAS_STATUS_EXECUTION_FAILED = 13,
	CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
typedef cudaDataType_t cudaDataType;
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 };
typedef struct kc_emu_blas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			    int n, int k, const void *alpha, const void *a, cudaDataType_t at, int lda,
			    const void *b, cudaDataType_t bt, int ldb, const void *beta, void *c,
			    cudaDataType_t ct, int ldc, cublasComputeType_t comp, cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
				   int m, int n, int k, const void *alpha, const void *const a[],
				   cudaDataType_t at, int lda, const void *const b[], cudaDataType_t bt,
				   int ldb, const void *beta, void *const c[], cudaDataType_t ct,
				   int ldc, int count, cublasComputeType_t comp, cublasGemmAlgo_t algo);

/* ---- cuBLASLt ----------------------------------------------------------- */

typedef struct kc_emu_lt *cublasLtHandle_t;
typedef struct kc_emu_lt_op *cublasLtMatmulDesc_t;
typedef struct kc_emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct kc_emu_lt_pref *cublasLtMatmulPreference_t;
typedef struct {
	uint64_t data[8];
} cublasLtMatmulAlgo_t;
typedef struct {
	cublasLtMatmulAlgo_t algo;
	size_t workspaceSize;
	cublasStatus_t state;
	float wavesCount;
	int reserved[4];
} cublasLtMatmulHeuristicResult_t;
enum cublasLtMatmulDescAttributes_t { CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4 };
enum cublasLtMatmulPreferenceAttributes_t {
	CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,
	CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
	CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK = 3,
	CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
	CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
	CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
	CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
};
enum cublasLtReductionScheme_t {
	CUBLASLT_REDUCTION_SCHEME_NONE = 0,
	CUBLASLT_REDUCTION_SCHEME_INPLACE = 1,
	CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE = 2,
	CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE = 4,
	CUBLASLT_REDUCTION_SCHEME_MASK = 7,
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
size_t cublasLtGetVersion(void);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
					cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
					      cublasLtMatmulDescAttributes_t a, const void *v,
					      size_t n);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
					  uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
						    cublasLtMatmulPreferenceAttributes_t a,
						    const void *v, size_t n);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
					      cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
					      cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
					      cublasLtMatmulPreference_t p, int want,
					      cublasLtMatmulHeuristicResult_t *res, int *got);
cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
				       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
				       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
				       const cublasLtMatmulAlgo_t *algo,
				       cublasLtMatmulHeuristicResult_t *res);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
			      const void *a, cublasLtMatrixLayout_t al, const void *b,
			      cublasLtMatrixLayout_t bl, const void *beta, const void *c,
			      cublasLtMatrixLayout_t cl, void *d, cublasLtMatrixLayout_t dl,
			      const cublasLtMatmulAlgo_t *algo, void *ws, size_t wsbytes,
			      cudaStream_t s);

/* ---- the warp-level matrix instructions (kernels/cuda/kc_mma.cuh) -------- */

/* On a GPU these are inline PTX (ldmatrix, mma.sync m16n8k16); here each
 * is a warp operation over the lanes' registers with the layouts the PTX
 * manual gives, so a kernel that puts a value in the wrong lane or
 * register computes wrong numbers here as it would there. Lanes exchange
 * registers through a per-warp buffer between two __syncwarp()s (all 32
 * lanes must take part, as the instructions ask). */
namespace kc_emu {
enum { G_LDSM = 1, G_LDSM_T, G_MMA }; /* the instruction of a warp_gather */

/* every lane's n (<= 32) bytes at `mine` into all[32][n], for the
 * instruction `op`: lanes at another instruction, or a lane that has
 * exited (its slot would hold an older instruction's bytes), fail the
 * launch */
static inline void warp_gather(const void *mine, size_t n, void *all, int op)
{
	static unsigned char buf[32][32][32]; /* warps x lanes x bytes */
	static unsigned long long seq[32][32]; /* the gathers each lane has made */
	const uint3 &t = threadIdx;
	int w = (int)((t.x + t.y * blockDim.x + t.z * blockDim.x * blockDim.y) / 32), l = lane();
	unsigned long long mine_seq = ++seq[w][l];

	if (n > sizeof buf[w][l])
		kernel_fault("warp_gather: %zu bytes a lane, at most %zu", n, sizeof buf[w][l]);
	memcpy(buf[w][l], mine, n < sizeof buf[w][l] ? n : sizeof buf[w][l]);
	exchange(0xffffffffu, 0, X_GATHER, 0, op);
	for (int i = 0; i < 32; i++) {
		if (seq[w][i] != mine_seq)
			kernel_fault("a warp-level matrix instruction without lane %d of warp %d (it has "
				     "exited, or is at another one)", i, w);
		memcpy((unsigned char *)all + (size_t)i * n, buf[w][i], n);
	}
	exchange(0xffffffffu, 0, X_GATHER, 0, op);
}

static inline float b16(uint32_t r, int hi, const __nv_bfloat16 *)
{
	return __bfloat162float(__nv_bfloat16{ (uint16_t)(hi ? r >> 16 : r & 0xffff) });
}
static inline float b16(uint32_t r, int hi, const __half *)
{
	__half h;
	h.raw = (uint16_t)(hi ? r >> 16 : r & 0xffff);
	return __half2float(h);
}

/* ldmatrix .x4: lane i gives the address of row i % 8 of matrix i / 8
 * (16 bytes, 16-byte aligned); each lane gets, of each matrix m, r[m] =
 * (row lane / 4, columns 2 (lane % 4) and +1), or with trans, (rows
 * 2 (lane % 4) and +1, column lane / 4); the first in the low half. */
static inline void ldsm4(uint32_t (&r)[4], const void *row, int trans)
{
	const void *rows[32];

	if ((uintptr_t)row % 16)
		kernel_fault("ldmatrix: row address %p not 16-byte aligned", row);
	warp_gather(&row, sizeof row, rows, trans ? G_LDSM_T : G_LDSM);
	int l = lane(), g = l / 4, c = 2 * (l % 4);
	for (int m = 0; m < 4; m++) {
		uint16_t lo, hi;
		if (trans) {
			memcpy(&lo, (const uint16_t *)rows[8 * m + c] + g, 2);
			memcpy(&hi, (const uint16_t *)rows[8 * m + c + 1] + g, 2);
		} else {
			memcpy(&lo, (const uint16_t *)rows[8 * m + g] + c, 2);
			memcpy(&hi, (const uint16_t *)rows[8 * m + g] + c + 1, 2);
		}
		r[m] = lo | (uint32_t)hi << 16;
	}
}

/* mma.sync m16n8k16 .row.col, fp32 accumulators: d += a b, with lane
 * (g = lane / 4, c = 2 (lane % 4)) holding a: (g, c..c+1), (g+8, c..),
 * (g, c+8..), (g+8, c+8..) of A [16, 16]; b: (k c..c+1, n g), (k c+8..c+9,
 * n g) of B [16, 8]; d: (g, c), (g, c+1), (g+8, c), (g+8, c+1). The
 * products are summed in fp32 in k order. */
template <typename T> static inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
	uint32_t mine[6] = { a[0], a[1], a[2], a[3], b0, b1 }, all[32][6];
	const T *tag = nullptr;
	int l = lane(), g = l / 4, c = 2 * (l % 4);
	float A[2][16], B[16][2]; /* this lane's rows g, g + 8 and columns c, c + 1 */

	warp_gather(mine, sizeof mine, all, G_MMA);
	for (int q = 0; q < 4; q++) { /* lanes 4g + q hold A's rows g, g + 8 */
		const uint32_t *x = all[4 * g + q];
		for (int h = 0; h < 2; h++) {
			A[0][2 * q + h] = b16(x[0], h, tag);
			A[1][2 * q + h] = b16(x[1], h, tag);
			A[0][2 * q + 8 + h] = b16(x[2], h, tag);
			A[1][2 * q + 8 + h] = b16(x[3], h, tag);
		}
		for (int n = 0; n < 2; n++) { /* lanes 4 (c + n) + q hold B's column c + n */
			const uint32_t *y = all[4 * (c + n) + q];
			for (int h = 0; h < 2; h++) {
				B[2 * q + h][n] = b16(y[4], h, tag);
				B[2 * q + 8 + h][n] = b16(y[5], h, tag);
			}
		}
	}
	for (int e = 0; e < 4; e++) {
		float s = d[e];
		for (int k = 0; k < 16; k++)
			s += A[e / 2][k] * B[k][e % 2];
		d[e] = s;
	}
}
} // namespace kc_emu

#endif
