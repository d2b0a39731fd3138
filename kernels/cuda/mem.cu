/* mem.cu: the backend's context, device memory and copies with conversion.
 *
 * Memory comes from the device's stream-ordered pool (cudaMallocAsync) on
 * the backend's one stream; the pool keeps freed memory for reuse (release
 * threshold: unlimited, as PyTorch's caching allocator does) and counts
 * what is held now and at peak, which kcuda_memory_report prints.
 * Not an allocator of our own, and not a place for kernels other than the
 * dtype conversion the copies need.
 */
#include "kernels/cuda/kc.cuh"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

static struct kc_ctx s_ctx;
static int s_open; /* 1 once s_ctx is ready */
static int s_capturing; /* 1 between kcuda_graph_begin and kcuda_graph_end */
int kc_vector = -1;     /* kc.cuh; -1 until set or read from the environment */

static int s_open_ctx(void)
{
	char why[256];
	cudaMemPool_t pool;
	uint64_t keep = UINT64_MAX;

	if (kcuda_probe(why, sizeof why) < 0)
		return err_set("no CUDA backend: %s", why);
	KC_CK(cudaSetDevice(0));
	KC_CK(cudaStreamCreateWithFlags(&s_ctx.stream, cudaStreamNonBlocking));
	KC_CK(cudaDeviceGetDefaultMemPool(&pool, 0));
	KC_CK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
	KC_CKB(cublasCreate(&s_ctx.blas));
	KC_CKB(cublasSetStream(s_ctx.blas, s_ctx.stream));
	KC_CK(cudaMallocAsync(&s_ctx.scratch, KC_SCRATCH_BYTES, s_ctx.stream));
	KC_CK(cudaMallocAsync(&s_ctx.blas_ws, KC_BLAS_WS_BYTES, s_ctx.stream));
	KC_CKB(cublasSetWorkspace(s_ctx.blas, s_ctx.blas_ws, KC_BLAS_WS_BYTES));
	if (kc_vector < 0) /* on unless MODULA_CUDA_VEC=0 */
		kc_vector = !(getenv("MODULA_CUDA_VEC") && !strcmp(getenv("MODULA_CUDA_VEC"), "0"));
	if (kc_lt < 0) /* on unless MODULA_CUDA_LT=0 */
		kc_lt = !(getenv("MODULA_CUDA_LT") && !strcmp(getenv("MODULA_CUDA_LT"), "0"));
	if (kc_flash < 0) /* on unless MODULA_CUDA_FLASH=0 */
		kc_flash = !(getenv("MODULA_CUDA_FLASH") && !strcmp(getenv("MODULA_CUDA_FLASH"), "0"));
	if (kc_wgrad < 0) /* off unless MODULA_CUDA_WGRAD=1 */
		kc_wgrad = getenv("MODULA_CUDA_WGRAD") && !strcmp(getenv("MODULA_CUDA_WGRAD"), "1");
	return 0;
}

extern "C" void kcuda_set_flash(int on)
{
	kc_flash = on;
}

extern "C" int kcuda_flash(void)
{
	return kc_flash > 0;
}

extern "C" void kcuda_set_vector(int on)
{
	kc_vector = on;
}

extern "C" int kcuda_vector(void)
{
	return kc_vector > 0;
}

struct kc_ctx *kc_get(void)
{
	if (!s_open) {
		if (s_open_ctx() < 0)
			return NULL;
		s_open = 1;
	}
	return &s_ctx;
}

extern "C" size_t kcuda_dtype_size(int dt)
{
	switch (dt) {
	case KCUDA_F32: case KCUDA_I32: return 4;
	case KCUDA_BF16: case KCUDA_F16: return 2;
	default: return 0;
	}
}

extern "C" const char *kcuda_dtype_name(int dt)
{
	switch (dt) {
	case KCUDA_F32: return "f32";
	case KCUDA_BF16: return "bf16";
	case KCUDA_F16: return "f16";
	case KCUDA_I32: return "i32";
	default: return "unknown";
	}
}

static void s_pool_counts(uint64_t *now, uint64_t *peak)
{
	cudaMemPool_t pool;

	*now = *peak = 0;
	if (cudaDeviceGetDefaultMemPool(&pool, 0) != cudaSuccess)
		return;
	cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, now);
	cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, peak);
}

void *kc_alloc(size_t bytes)
{
	void *p = NULL;
	size_t free_b = 0, total_b = 0;
	uint64_t now, peak;
	cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 1, s_ctx.stream);

	if (e == cudaSuccess)
		return p;
	cudaGetLastError();
	cudaMemGetInfo(&free_b, &total_b);
	s_pool_counts(&now, &peak);
	err_set("out of GPU memory: cannot allocate %.1f MiB (%.2f GiB free of %.2f GiB, modula "
		"holds %.2f GiB): lower the batch size or the sequence length (%s)",
		bytes / 1048576.0, free_b / 1073741824.0, total_b / 1073741824.0,
		now / 1073741824.0, cudaGetErrorString(e));
	return NULL;
}

void kc_free(void *p)
{
	if (p)
		cudaFreeAsync(p, s_ctx.stream);
}

extern "C" void *kcuda_malloc(size_t bytes)
{
	if (!kc_get())
		return NULL;
	return kc_alloc(bytes);
}

extern "C" void kcuda_free(void *p)
{
	if (p && s_open)
		kc_free(p);
}

extern "C" int kcuda_memset0(void *p, size_t bytes)
{
	KC_CTX(cx);
	KC_CK(cudaMemsetAsync(p, 0, bytes, cx->stream));
	return 0;
}

extern "C" int kcuda_sync(void)
{
	KC_CTX(cx);
	KC_CK(cudaStreamSynchronize(cx->stream));
	return 0;
}

/* What CUDA graphs hold for the allocations inside them (their own pool,
 * outside the stream-ordered pool's counters): now and at peak. */
static void s_graph_counts(uint64_t *now, uint64_t *peak)
{
	*now = *peak = 0;
	if (cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemCurrent, now) != cudaSuccess ||
	    cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemHigh, peak) != cudaSuccess) {
		cudaGetLastError();
		*now = *peak = 0;
	}
}

extern "C" void kcuda_memory_report(char *buf, size_t n)
{
	size_t free_b = 0, total_b = 0;
	uint64_t now, peak, gnow, gpeak;

	if (!s_open || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
		snprintf(buf, n, "GPU memory: the CUDA backend is not open");
		return;
	}
	s_pool_counts(&now, &peak);
	s_graph_counts(&gnow, &gpeak);
	/* the peaks of the two pools may not coincide: their sum bounds it */
	snprintf(buf, n, "GPU memory: modula holds %.2f GiB (peak %.2f GiB, of which CUDA graphs "
		 "%.2f GiB); device %.2f GiB free of %.2f GiB", (now + gnow) / 1073741824.0,
		 (peak + gpeak) / 1073741824.0, gpeak / 1073741824.0, free_b / 1073741824.0,
		 total_b / 1073741824.0);
}

/* ---- timing on the stream --------------------------------------------- */

static cudaEvent_t s_marks[KCUDA_TIMER_MARKS];
static int s_nmarks, s_made;

extern "C" int kcuda_timer_mark(void)
{
	KC_CTX(cx);
	if (s_nmarks == KCUDA_TIMER_MARKS)
		return err_set("timer: more than %d marks before a read", KCUDA_TIMER_MARKS);
	if (s_nmarks == s_made) {
		KC_CK(cudaEventCreate(&s_marks[s_made]));
		s_made++;
	}
	KC_CK(cudaEventRecord(s_marks[s_nmarks], cx->stream));
	return s_nmarks++;
}

extern "C" int kcuda_timer_read(float *ms, int n)
{
	KC_CTX(cx);
	if (n > s_nmarks)
		return err_set("timer: %d marks asked for, %d recorded", n, s_nmarks);
	KC_CK(cudaStreamSynchronize(cx->stream));
	for (int i = 0; i + 1 < n; i++)
		KC_CK(cudaEventElapsedTime(&ms[i], s_marks[i], s_marks[i + 1]));
	s_nmarks = 0;
	return 0;
}

/* ---- CUDA graphs ------------------------------------------------------ */

extern "C" int kcuda_capturing(void)
{
	return s_capturing;
}

extern "C" int kcuda_graph_begin(void)
{
	KC_CTX(cx);
	if (s_capturing)
		return err_set("a CUDA graph capture is already open");
	/* thread-local: a call this thread makes that a graph cannot hold
	 * (a synchronising copy, say) fails the capture instead of running */
	KC_CK(cudaStreamBeginCapture(cx->stream, cudaStreamCaptureModeThreadLocal));
	s_capturing = 1;
	return 0;
}

/* An instantiated graph and the pointer-array epoch it was recorded in. */
struct kc_graph {
	cudaGraphExec_t exec;
	unsigned long epoch;
};

extern "C" int kcuda_graph_end(void **exec)
{
	cudaGraph_t g = NULL;
	cudaGraphExec_t ge = NULL;
	struct kc_graph *kg;
	cudaError_t e;

	KC_CTX(cx);
	*exec = NULL;
	if (!s_capturing)
		return err_set("no CUDA graph capture is open");
	s_capturing = 0;
	e = cudaStreamEndCapture(cx->stream, &g);
	if (e != cudaSuccess || !g) {
		cudaGetLastError(); /* the capture's failure is not sticky */
		if (g)
			cudaGraphDestroy(g);
		return err_set("CUDA graph capture failed: %s", cudaGetErrorString(e));
	}
	e = cudaGraphInstantiate(&ge, g, 0);
	cudaGraphDestroy(g);
	if (e != cudaSuccess) {
		cudaGetLastError();
		return err_set("CUDA graph instantiation failed: %s", cudaGetErrorString(e));
	}
	if (!(kg = (struct kc_graph *)malloc(sizeof *kg))) {
		cudaGraphExecDestroy(ge);
		return err_set("out of memory");
	}
	kg->exec = ge, kg->epoch = kc_pc_epoch;
	*exec = kg;
	return 0;
}

extern "C" int kcuda_graph_launch(void *exec)
{
	struct kc_graph *kg = (struct kc_graph *)exec;

	KC_CTX(cx);
	if (kg->epoch != kc_pc_epoch)
		return 1; /* its pointer arrays were freed: record it again */
	KC_CK(cudaGraphLaunch(kg->exec, cx->stream));
	return 0;
}

extern "C" void kcuda_graph_free(void *exec)
{
	struct kc_graph *kg = (struct kc_graph *)exec;

	if (!kg)
		return;
	if (s_open)
		cudaGraphExecDestroy(kg->exec);
	free(kg);
}

/* ---- copies with conversion ------------------------------------------ */

template <typename D, typename S>
__global__ void k_convert(D *dst, const S *src, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		dst[i] = kc_st<D>(kc_ld(src[i]));
}

/* dst (type ddt) = src (type sdt), both on the device, n elements. */
static int s_convert(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	KC_DISPATCH(ddt, D, KC_DISPATCH(sdt, S,
		k_convert<D, S><<<kc_blocks(n), KC_THREADS, 0, s_ctx.stream>>>(
			(D *)dst, (const S *)src, n)));
	KC_LAUNCHED("convert");
	return 0;
}

static int s_check_types(int ddt, int sdt)
{
	if (!kcuda_dtype_size(ddt) || !kcuda_dtype_size(sdt))
		return err_set("unknown CUDA storage type %d", !kcuda_dtype_size(ddt) ? ddt : sdt);
	if ((ddt == KCUDA_I32) != (sdt == KCUDA_I32))
		return err_set("cannot convert between %s and %s", kcuda_dtype_name(sdt),
			       kcuda_dtype_name(ddt));
	return 0;
}

/* Elements per chunk through the scratch buffer. */
static size_t s_chunk(int dt)
{
	return KC_SCRATCH_BYTES / kcuda_dtype_size(dt);
}

extern "C" int kcuda_copy_h2d(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	size_t ss, ds, at, len;

	KC_CTX(cx);
	if (s_capturing)
		return err_set("a copy from the host cannot be part of a CUDA graph capture");
	if (s_check_types(ddt, sdt) < 0)
		return -1;
	ss = kcuda_dtype_size(sdt);
	ds = kcuda_dtype_size(ddt);
	if (ddt == sdt) {
		KC_CK(cudaMemcpyAsync(dst, src, n * ss, cudaMemcpyHostToDevice, cx->stream));
		return 0;
	}
	for (at = 0; at < n; at += len) {
		len = n - at < s_chunk(sdt) ? n - at : s_chunk(sdt);
		KC_CK(cudaMemcpyAsync(cx->scratch, (const char *)src + at * ss, len * ss,
				      cudaMemcpyHostToDevice, cx->stream));
		if (s_convert((char *)dst + at * ds, ddt, cx->scratch, sdt, len) < 0)
			return -1;
	}
	return 0;
}

extern "C" int kcuda_copy_d2h(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	size_t ss, ds, at, len;

	KC_CTX(cx);
	if (s_capturing)
		return err_set("a copy to the host cannot be part of a CUDA graph capture");
	if (s_check_types(ddt, sdt) < 0)
		return -1;
	ss = kcuda_dtype_size(sdt);
	ds = kcuda_dtype_size(ddt);
	if (ddt == sdt) {
		KC_CK(cudaMemcpyAsync(dst, src, n * ss, cudaMemcpyDeviceToHost, cx->stream));
		KC_CK(cudaStreamSynchronize(cx->stream));
		return 0;
	}
	for (at = 0; at < n; at += len) {
		len = n - at < s_chunk(ddt) ? n - at : s_chunk(ddt);
		if (s_convert(cx->scratch, ddt, (const char *)src + at * ss, sdt, len) < 0)
			return -1;
		KC_CK(cudaMemcpyAsync((char *)dst + at * ds, cx->scratch, len * ds,
				      cudaMemcpyDeviceToHost, cx->stream));
		KC_CK(cudaStreamSynchronize(cx->stream));
	}
	return 0;
}

extern "C" int kcuda_copy_d2d(void *dst, int ddt, const void *src, int sdt, size_t n)
{
	KC_CTX(cx);
	if (s_check_types(ddt, sdt) < 0)
		return -1;
	if (ddt == sdt) {
		KC_CK(cudaMemcpyAsync(dst, src, n * kcuda_dtype_size(sdt), cudaMemcpyDeviceToDevice,
				      cx->stream));
		return 0;
	}
	return s_convert(dst, ddt, src, sdt, n);
}
