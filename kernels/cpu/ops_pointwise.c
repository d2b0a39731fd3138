/* ops_pointwise.c: row-wise and element-wise ops: RMSNorm, SwiGLU,
 * LeakyReLU, softmax and softmax cross-entropy. See ops.h for the
 * conventions. Row reductions run inside one thread, in index order. */
#include "kernels/cpu/ops.h"

#include <math.h>

void op_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
			int n, int c, float eps)
{
	#pragma omp parallel for schedule(static) if((size_t)n * c >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++) {
		const float *x = inp + (size_t)i * c;
		float *o = out + (size_t)i * c;
		float ss = 0.0f;

		#pragma omp simd reduction(+:ss)
		for (int j = 0; j < c; j++)
			ss += x[j] * x[j];
		float r = 1.0f / sqrtf(ss / c + eps);
		for (int j = 0; j < c; j++)
			o[j] = w[j] * (x[j] * r);
		rstd[i] = r;
	}
}

void op_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
			 const float *w, const float *rstd, int n, int c)
{
	/* out = w * xhat, xhat = x r, r = (mean(x^2) + eps)^-1/2:
	 * dxhat = dout * w; dx = r (dxhat - xhat mean(dxhat xhat)); dw += dout xhat. */
	if (dinp) {
		#pragma omp parallel for schedule(static) if((size_t)n * c >= OPS_PARALLEL_MIN)
		for (int i = 0; i < n; i++) {
			const float *x = inp + (size_t)i * c, *g = dout + (size_t)i * c;
			float *dx = dinp + (size_t)i * c;
			float r = rstd[i], dot = 0.0f;

			#pragma omp simd reduction(+:dot)
			for (int j = 0; j < c; j++)
				dot += g[j] * w[j] * x[j] * r;
			dot /= c;
			for (int j = 0; j < c; j++)
				dx[j] += r * (g[j] * w[j] - x[j] * r * dot);
		}
	}
	if (dw) {
		#pragma omp parallel for schedule(static) if((size_t)n * c >= OPS_PARALLEL_MIN)
		for (int j0 = 0; j0 < c; j0 += 64) {
			int j1 = j0 + 64 < c ? j0 + 64 : c;
			for (int i = 0; i < n; i++) {
				const float *x = inp + (size_t)i * c, *g = dout + (size_t)i * c;
				for (int j = j0; j < j1; j++)
					dw[j] += g[j] * x[j] * rstd[i];
			}
		}
	}
}

void op_swiglu_forward(float *out, const float *gate, const float *up, size_t n)
{
	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < n; i++) {
		float g = gate[i];
		out[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

void op_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
			const float *up, size_t n)
{
	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < n; i++) {
		float g = gate[i], s = 1.0f / (1.0f + expf(-g));
		if (dgate) /* a NULL gradient is skipped */
			dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
		if (dup)
			dup[i] += dout[i] * g * s;
	}
}

void op_leakyrelu_forward(float *out, const float *inp, float slope, size_t n)
{
	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < n; i++)
		out[i] = inp[i] > 0.0f ? inp[i] : slope * inp[i];
}

void op_leakyrelu_backward(float *dinp, const float *dout, const float *inp, float slope, size_t n)
{
	#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < n; i++)
		dinp[i] += inp[i] > 0.0f ? dout[i] : slope * dout[i];
}

/* max and log(sum(exp(x - max))) + max of one row. */
static float s_logsumexp(const float *x, int k)
{
	float mx = x[0], sum = 0.0f;

	for (int j = 1; j < k; j++)
		mx = x[j] > mx ? x[j] : mx;
	for (int j = 0; j < k; j++)
		sum += expf(x[j] - mx);
	return mx + logf(sum);
}

void op_softmax_forward(float *out, const float *inp, int n, int k)
{
	#pragma omp parallel for schedule(static) if((size_t)n * k >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++) {
		const float *x = inp + (size_t)i * k;
		float *o = out + (size_t)i * k;
		float lse = s_logsumexp(x, k);

		for (int j = 0; j < k; j++)
			o[j] = expf(x[j] - lse);
	}
}

void op_softmax_backward(float *dinp, const float *dout, const float *out, int n, int k)
{
	#pragma omp parallel for schedule(static) if((size_t)n * k >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++) {
		const float *g = dout + (size_t)i * k, *p = out + (size_t)i * k;
		float *d = dinp + (size_t)i * k;
		float dot = 0.0f;

		for (int j = 0; j < k; j++)
			dot += p[j] * g[j];
		for (int j = 0; j < k; j++)
			d[j] += p[j] * (g[j] - dot);
	}
}

void op_crossentropy_forward(float *losses, float *lse, const float *logits,
			     const int *targets, int n, int v)
{
	#pragma omp parallel for schedule(static) if((size_t)n * v >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++) {
		const float *x = logits + (size_t)i * v;

		lse[i] = s_logsumexp(x, v);
		losses[i] = targets[i] < 0 ? 0.0f : lse[i] - x[targets[i]];
	}
}

void op_crossentropy_backward(float *dlogits, const float *dlosses, const float *logits,
			      const float *lse, const int *targets, int n, int v)
{
	#pragma omp parallel for schedule(static) if((size_t)n * v >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++) {
		const float *x = logits + (size_t)i * v;
		float *d = dlogits + (size_t)i * v;
		float g = dlosses[i], m = lse[i];

		if (targets[i] < 0 || g == 0.0f)
			continue;
		#pragma omp simd
		for (int j = 0; j < v; j++)
			d[j] += g * expf(x[j] - m);
		d[targets[i]] -= g;
	}
}

void op_res_forward(float *cat, int ld, float *z, float *zl, float *s, const float *ur, int ldu,
		    const float *mab, int n, int r0, int e, int r, float s0, float sd, float slope)
{
	int er = e * r, w = ld ? ld : r0 + er, wu = ldu ? ldu : r0 + e;

	#pragma omp parallel for schedule(static) if((size_t)n * er * r0 >= OPS_PARALLEL_MIN)
	for (int i = 0; i < n; i++) {
		const float *u = ur + (size_t)i * wu;
		float *c = cat + (size_t)i * w, *zi = z + (size_t)i * er, *li = zl + (size_t)i * er;
		float *si = s + (size_t)i * e, lse = s_logsumexp(u + r0, e);
		/* (not op_softmax_forward: an OpenMP region per row costs more
		 * than the row) */
		for (int k = 0; k < e; k++)
			si[k] = expf(u[r0 + k] - lse);
		for (int k = 0; k < r0; k++)
			c[k] = s0 * u[k];
		for (int j = 0; j < er; j++) {
			const float *mj = mab + (size_t)j * r0;
			float acc = 0.0f;
			for (int k = 0; k < r0; k++)
				acc += u[k] * mj[k];
			zi[j] = s0 * acc;
			li[j] = zi[j] > 0.0f ? zi[j] : slope * zi[j];
			c[r0 + j] = sd * si[j / r] * li[j];
		}
	}
}

void op_res_backward(float *dcat, int ld, float *dz, const float *s, const float *z,
		     const float *zl, const float *mab, int nores, int n, int r0, int e, int r,
		     float s0, float sd, float slope)
{
	int er = e * r, w = ld ? ld : r0 + er;

	#pragma omp parallel for schedule(static) if((size_t)n * er >= OPS_PARALLEL_MIN / 8)
	for (int i = 0; i < n; i++) {
		float *d = dcat + (size_t)i * w, *dzi = dz + (size_t)i * er;
		const float *si = s + (size_t)i * e, *zi = z + (size_t)i * er, *li = zl + (size_t)i * er;
		float ds[OPS_RES_MAX_EXPERTS] = { 0 }, dot = 0.0f;
		for (int j = 0; j < er; j++) {
			float g = sd * si[j / r] * d[r0 + j];
			ds[j / r] += sd * li[j] * d[r0 + j];
			dzi[j] = zi[j] > 0.0f ? g : slope * g;
		}
		for (int k = 0; k < e; k++)
			dot += si[k] * ds[k];
		for (int k = 0; k < e; k++)
			d[r0 + k] = si[k] * (ds[k] - dot);
		for (int k = 0; k < r0; k++) {
			float acc = 0.0f;
			for (int j = 0; mab && j < er; j++)
				acc += dzi[j] * mab[(size_t)j * r0 + k];
			d[k] = (mab && nores ? 0.0f : d[k] * s0) + s0 * acc;
		}
	}
}
