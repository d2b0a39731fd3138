/* optim.cu: the optimizer's arithmetic on the GPU, the same formulas as
 * worker/optim.c (PyTorch's AdamW, clipping by global norm): the sum of
 * squares behind the norm, the clipping scale, and the AdamW update fused
 * with the refresh of the storage-type copy the forward reads.
 *
 * Deterministic: the sum of squares uses a fixed grid and a fixed reduction
 * tree in double, summed on the host in block order. Not an optimizer
 * object: the engine keeps the moments and the step count and calls these
 * per trainable tensor, as optim.c loops over its params list.
 */
#include "kernels/cuda/kc.cuh"

#include <math.h>

#define KC_SUMSQ_BLOCKS 256

__global__ void k_sumsq(double *part, const float *x, size_t n)
{
	__shared__ double s[KC_THREADS];
	double acc = 0.0;

	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		acc += (double)x[i] * x[i];
	s[threadIdx.x] = acc;
	__syncthreads();
	for (int k = KC_THREADS / 2; k > 0; k >>= 1) {
		if ((int)threadIdx.x < k)
			s[threadIdx.x] += s[threadIdx.x + k];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		part[blockIdx.x] = s[0];
}

extern "C" int kcuda_sumsq(const float *x, size_t n, double *out)
{
	double part[KC_SUMSQ_BLOCKS], *d;
	cudaError_t e;

	KC_CTX(cx);
	*out = 0.0;
	if (n == 0)
		return 0;
	if (!(d = (double *)kc_alloc(sizeof part)))
		return -1;
	k_sumsq<<<KC_SUMSQ_BLOCKS, KC_THREADS, 0, cx->stream>>>(d, x, n);
	e = cudaGetLastError();
	if (e == cudaSuccess)
		e = cudaMemcpyAsync(part, d, sizeof part, cudaMemcpyDeviceToHost, cx->stream);
	if (e == cudaSuccess)
		e = cudaStreamSynchronize(cx->stream);
	kc_free(d);
	if (e != cudaSuccess)
		return err_set("CUDA sum of squares of %zu values failed: %s", n, cudaGetErrorString(e));
	for (int i = 0; i < KC_SUMSQ_BLOCKS; i++)
		*out += part[i];
	return 0;
}

__global__ void k_scale(float *x, float s, size_t n)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		x[i] *= s;
}

extern "C" int kcuda_scale(float *x, float s, size_t n)
{
	KC_CTX(cx);
	if (n == 0)
		return 0;
	k_scale<<<kc_blocks(n), KC_THREADS, 0, cx->stream>>>(x, s, n);
	KC_LAUNCHED("scale");
	return 0;
}

/* optim.c's loop body, plus the copy in T when wdt is given. */
template <typename T>
__global__ void k_adamw(float *w, T *wdt, const float *g, float *m, float *v, size_t n, float lr,
			float b1, float b2, float eps, float decay, float bc1, float bc2)
{
	for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n;
	     j += (size_t)gridDim.x * blockDim.x) {
		float mj = b1 * m[j] + (1.0f - b1) * g[j];
		float vj = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
		float mh = mj / bc1, vh = vj / bc2;
		float wj = w[j] * decay - lr * mh / (sqrtf(vh) + eps);
		m[j] = mj;
		v[j] = vj;
		w[j] = wj;
		if (wdt)
			wdt[j] = kc_st<T>(wj);
	}
}

extern "C" int kcuda_adamw(int dt, float *w, void *wdt, const float *g, float *m, float *v,
			   size_t n, float lr, float beta1, float beta2, float eps,
			   float weight_decay, long step)
{
	/* the bias corrections and decay as optim.c computes them, on the host */
	float bc1 = 1.0f - powf(beta1, (float)step), bc2 = 1.0f - powf(beta2, (float)step);
	float decay = 1.0f - lr * weight_decay;

	KC_CTX(cx);
	if (step < 1)
		return err_set("adamw: step %ld: updates count from 1", step);
	if (n == 0)
		return 0;
	KC_DISPATCH(dt, T, k_adamw<T><<<kc_blocks(n), KC_THREADS, 0, cx->stream>>>(
		w, (T *)wdt, g, m, v, n, lr, beta1, beta2, eps, decay, bc1, bc2));
	KC_LAUNCHED("adamw");
	return 0;
}
