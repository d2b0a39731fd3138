/* probe.cu: find out whether a CUDA device and cuBLAS answer.
 * Not a benchmark and not a kernel: it only asks the runtime. */
#include "kernels/cuda/kcuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int kcuda_probe(char *info, size_t n)
{
	int count = 0, dev = 0;
	cudaDeviceProp prop;
	size_t free_b = 0, total_b = 0;
	cublasHandle_t h;
	cudaError_t e = cudaGetDeviceCount(&count);

	if (e != cudaSuccess) {
		snprintf(info, n, "no CUDA device: %s", cudaGetErrorString(e));
		return -1;
	}
	if (count == 0) {
		snprintf(info, n, "no CUDA device found");
		return -1;
	}
	e = cudaGetDeviceProperties(&prop, dev);
	if (e == cudaSuccess)
		e = cudaMemGetInfo(&free_b, &total_b);
	if (e != cudaSuccess) {
		snprintf(info, n, "CUDA device 0 does not answer: %s", cudaGetErrorString(e));
		return -1;
	}
	if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
		snprintf(info, n, "cuBLAS failed to start on %s", prop.name);
		return -1;
	}
	cublasDestroy(h);
	snprintf(info, n, "%s, sm_%d%d, %.1f GiB free of %.1f GiB", prop.name, prop.major,
		 prop.minor, free_b / 1073741824.0, total_b / 1073741824.0);
	return 0;
}
