/* probe.cu: find out whether a CUDA device and cuBLAS answer, and say why
 * not in words a person can act on. Not a benchmark and not a kernel: it
 * only asks the runtime. */
#include "kernels/cuda/kcuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>

/* Why cudaGetDeviceCount failed, told apart by what the driver reports. */
static void s_why_none(char *info, size_t n, cudaError_t e)
{
	int drv = 0, rt = 0;

	cudaDriverGetVersion(&drv);
	cudaRuntimeGetVersion(&rt);
	if (drv == 0 || e == cudaErrorNoDevice)
		snprintf(info, n, "no NVIDIA driver or GPU on this machine");
	else if (e == cudaErrorInsufficientDriver)
		snprintf(info, n, "the NVIDIA driver supports CUDA %d.%d, older than this build's "
			 "runtime %d.%d: update the driver", drv / 1000, drv % 1000 / 10,
			 rt / 1000, rt % 1000 / 10);
	else
		snprintf(info, n, "no usable CUDA device: %s", cudaGetErrorString(e));
}

extern "C" int kcuda_probe(char *info, size_t n)
{
	int count = 0, dev = 0;
	cudaDeviceProp prop;
	size_t free_b = 0, total_b = 0;
	cublasHandle_t h;
	cublasStatus_t s;
	cudaError_t e = cudaGetDeviceCount(&count);

	if (e != cudaSuccess || count == 0) {
		s_why_none(info, n, e == cudaSuccess ? cudaErrorNoDevice : e);
		return -1;
	}
	e = cudaGetDeviceProperties(&prop, dev);
	if (e == cudaSuccess)
		e = cudaMemGetInfo(&free_b, &total_b);
	if (e != cudaSuccess) {
		snprintf(info, n, "CUDA device 0 does not answer: %s", cudaGetErrorString(e));
		return -1;
	}
	if (prop.major < 8) {
		snprintf(info, n, "%s is sm_%d%d: the CUDA backend needs sm_80 or newer (bf16 tensor "
			 "cores); use --device cpu", prop.name, prop.major, prop.minor);
		return -1;
	}
	s = cublasCreate(&h);
	if (s != CUBLAS_STATUS_SUCCESS) {
		snprintf(info, n, "cuBLAS failed to start on %s: %s (is libcublas.so.13 the "
			 "toolkit's?)", prop.name, cublasGetStatusString(s));
		return -1;
	}
	cublasDestroy(h);
	snprintf(info, n, "%s, sm_%d%d, %d SMs, %.1f GiB free of %.1f GiB", prop.name, prop.major,
		 prop.minor, prop.multiProcessorCount, free_b / 1073741824.0,
		 total_b / 1073741824.0);
	return 0;
}
