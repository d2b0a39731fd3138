/* kc.cuh: what the .cu files of the CUDA backend share, and nothing public.
 *
 * - the backend's one context (stream, cuBLAS handle, scratch), opened
 *   lazily by kc_get();
 * - the checking macros: every CUDA runtime call (KC_CK), cuBLAS call
 *   (KC_CKB) and kernel launch (KC_LAUNCHED) turns a failure into an
 *   err_set() message and a -1 return; nothing here exits;
 * - storage types: tensors are float, bf16 or fp16 in memory, every kernel
 *   loads them to float, computes and accumulates in float, and rounds once
 *   when it stores (kc_ld / kc_st). KC_DISPATCH instantiates a templated
 *   launch for the dtype given at run time.
 *
 * Not thread-safe: one host thread drives the backend (the engine is one
 * process per job).
 */
#ifndef MODULA_KC_CUH
#define MODULA_KC_CUH

#include "kernels/cuda/kcuda.h"

extern "C" {
#include "err.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

struct kc_ctx {
	cudaStream_t stream;
	cublasHandle_t blas;
	void *scratch; /* KC_SCRATCH_BYTES, for copies with conversion and reductions */
	void *blas_ws; /* cuBLAS workspace */
};

#define KC_SCRATCH_BYTES ((size_t)32 << 20)
#define KC_BLAS_WS_BYTES ((size_t)32 << 20)

/* The context, opened on first use; NULL with err_set() when no GPU. */
struct kc_ctx *kc_get(void);

/* Stream-ordered allocation from the device's pool (kcuda_malloc without
 * the public checks); NULL with err_set() naming the size when out of memory. */
void *kc_alloc(size_t bytes);
void kc_free(void *p);

/* The runtime keeps a failed call's error until cudaGetLastError reads it:
 * read here, or the next launch check would blame its kernel for it (a
 * sticky error, a fault, stays whatever is done). */
#define KC_CK(call)                                                                    \
	do {                                                                           \
		cudaError_t kc_e_ = (call);                                            \
		if (kc_e_ != cudaSuccess) {                                            \
			cudaGetLastError();                                            \
			return err_set("CUDA call failed: %s: %s (%s:%d)", #call,     \
				       cudaGetErrorString(kc_e_), __FILE__, __LINE__);  \
		}                                                                      \
	} while (0)

#define KC_CKB(call)                                                                   \
	do {                                                                           \
		cublasStatus_t kc_s_ = (call);                                         \
		if (kc_s_ != CUBLAS_STATUS_SUCCESS)                                    \
			return err_set("cuBLAS call failed: %s: %s (%s:%d)", #call,   \
				       cublasGetStatusString(kc_s_), __FILE__, __LINE__); \
	} while (0)

/* After a launch: the launch itself failed (bad configuration, no kernel
 * image for this GPU). Faults inside kernels surface at the next sync. */
#define KC_LAUNCHED(what)                                                              \
	do {                                                                           \
		cudaError_t kc_e_ = cudaGetLastError();                                \
		if (kc_e_ != cudaSuccess)                                              \
			return err_set("CUDA kernel '%s' failed to launch: %s", what, \
				       cudaGetErrorString(kc_e_));                      \
	} while (0)

/* Open the context into `cx` or return -1 from the calling function. */
#define KC_CTX(cx)                      \
	struct kc_ctx *cx = kc_get();   \
	if (!cx)                        \
		return -1

/* Run the statement with T the storage type named by dt. */
#define KC_DISPATCH(dt, T, ...)                                                       \
	do {                                                                          \
		switch (dt) {                                                         \
		case KCUDA_F32: { typedef float T; __VA_ARGS__; } break;              \
		case KCUDA_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break;     \
		case KCUDA_F16: { typedef __half T; __VA_ARGS__; } break;             \
		default: return err_set("unknown CUDA storage type %d", (int)(dt));  \
		}                                                                     \
	} while (0)

static __device__ __forceinline__ float kc_ld(float x) { return x; }
static __device__ __forceinline__ float kc_ld(__nv_bfloat16 x) { return __bfloat162float(x); }
static __device__ __forceinline__ float kc_ld(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T kc_st(float x);
template <> __device__ __forceinline__ float kc_st<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 kc_st<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half kc_st<__half>(float x) { return __float2half(x); }

static __device__ __forceinline__ float kc_warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

static __device__ __forceinline__ float kc_warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* 16-byte vectors of a storage type: N elements per load and store (the
 * memory-bound kernels' wide path, kc_vector). */
template <typename T> struct kc_vec {
	enum { N = 16 / sizeof(T) };
};

template <typename T>
static __device__ __forceinline__ void kc_ldv(float *f, const T *p)
{
	int4 raw = *reinterpret_cast<const int4 *>(p);
	const T *e = reinterpret_cast<const T *>(&raw);
#pragma unroll
	for (int i = 0; i < kc_vec<T>::N; i++)
		f[i] = kc_ld(e[i]);
}

template <typename T>
static __device__ __forceinline__ void kc_stv(T *p, const float *f)
{
	int4 raw;
	T *e = reinterpret_cast<T *>(&raw);
#pragma unroll
	for (int i = 0; i < kc_vec<T>::N; i++)
		e[i] = kc_st<T>(f[i]);
	*reinterpret_cast<int4 *>(p) = raw;
}

/* > 0 when the 16-byte kernels are on (the default; kcuda_set_vector,
 * MODULA_CUDA_VEC=0 at start turns them off): they run where every pointer
 * is 16-byte aligned and the row or element count a multiple of
 * kc_vec<T>::N, the scalar ones elsewhere. */
extern int kc_vector;

static inline int kc_al16(const void *p)
{
	return ((size_t)p & 15) == 0;
}

/* > 0 when attention runs as the tiled flash kernels of flash.cu
 * (kcuda_set_flash; on unless MODULA_CUDA_FLASH=0 at start); they take
 * bf16 and f16 with head sizes 64 and 128, 16-byte aligned tensors, B x NH
 * up to 65535 and a GPU with the shared memory they ask; the cuBLAS path of
 * attention.cu runs everything else. */
extern int kc_flash;
int kc_flash_usable(int dt, int b, int hs, int nh, int nkv, const void *const *ptrs, int nptrs);
int kc_flash_forward(int dt, void *out, float *lse, const void *q, const void *k, const void *v,
		     int b, int t, int nh, int nkv, int hs);
/* add: dq, dk, dv += the gradients; 0: = them */
int kc_flash_backward(int add, int dt, void *dq, void *dk, void *dv, const void *dout,
		      const void *out, const float *lse, const void *q, const void *k, const void *v,
		      int b, int t, int nh, int nkv, int hs);

/* > 0 when the adapters' weight gradients run as wgrad.cu's kernel
 * (kcuda_set_wgrad; off unless MODULA_CUDA_WGRAD=1 at start). */
extern int kc_wgrad;

/* > 0 when bf16 and f16 products run on cuBLASLt with the fastest of its
 * algorithms timed per shape (tune.cu; the default, kcuda_set_lt,
 * MODULA_CUDA_LT=0 at start keeps cublasGemmEx). kc_lt_gemm takes
 * s_gemm's arguments (cin: C's input when it is another matrix than the
 * output, else NULL) and returns 1 when it queued the product, 0 when
 * cublasGemmEx should. */
extern int kc_lt;
int kc_lt_gemm(struct kc_ctx *cx, int dt, int cdt, void *c, int ldc, const void *cin,
	       const void *a, int lda, const void *b, int ldb, int m, int n, int k, int ta, int tb,
	       float alpha, float beta);

/* 1 when dt is a floating storage type the kernels take. */
static inline int kc_is_float(int dt)
{
	return dt == KCUDA_F32 || dt == KCUDA_BF16 || dt == KCUDA_F16;
}

/* Blocks of KC_THREADS threads covering n items, capped for grid-stride loops. */
#define KC_THREADS 256
static inline unsigned kc_blocks(size_t n)
{
	size_t b = (n + KC_THREADS - 1) / KC_THREADS;
	return (unsigned)(b == 0 ? 1 : b > 65536 ? 65536 : b);
}

/* Blocks for one warp per row, 8 warps a block. */
static inline unsigned kc_warp_blocks(size_t rows)
{
	return (unsigned)((rows + 7) / 8);
}

/* cuBLAS product in row-major terms, as op_gemm:
 * C[M,N] = alpha op(A) op(B) + beta C; A, B in storage type dt, C in cdt. */
int kc_gemm(int dt, int cdt, void *c, const void *a, const void *b, int m, int n, int k,
	    int ta, int tb, float alpha, float beta);

/* Batched products C_i = alpha op(A_i) op(B_i) + beta C_i, row-major, each
 * matrix with its own row stride (lda, ldb, ldc: elements between rows);
 * the pointer arrays are host arrays of `count` device pointers. */
int kc_gemm_batched(int dt, int cdt, void *const *c, const void *const *a, const void *const *b,
		    int count, int m, int n, int k, int ta, int tb, int lda, int ldb, int ldc,
		    float alpha, float beta);

/* Counts what frees memory a recorded CUDA graph may read: a flush of
 * kc_gemm_batched's pointer-array table, a growth of attention's scratch
 * (whose addresses are in those arrays). A graph recorded before is stale
 * (kcuda_graph_launch returns 1). */
extern unsigned long kc_pc_epoch;

/* out[col] += sum over rows of in[row, col] (deterministic, fp32 result):
 * the column sums behind bias and norm-weight gradients. `in` is fp32. */
int kc_colsum(float *out, const float *in, int rows, int cols);

#endif
