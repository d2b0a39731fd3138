/* ops_attention.c: rotary position embedding (Hugging Face rotate-half
 * layout) and causal grouped-query attention. See ops.h for the
 * conventions. The products run per head as single-threaded sgemm calls
 * on strided blocks. Forward splits work by (batch, query head); backward by
 * (batch, kv head), so the query heads sharing one kv head add into dk, dv
 * one after the other, in head order, inside one thread. */
#include "kernels/cpu/ops.h"

#include <math.h>
#include <omp.h>

void op_rope_table(float *cosv, float *sinv, int t, int hs, int pos0, float theta)
{
	int h = hs / 2;

	for (int i = 0; i < h; i++) {
		/* inv_freq as Hugging Face computes it: fp32 of theta^(-2i/HS). */
		float inv = (float)(1.0 / pow((double)theta, (double)(2 * i) / hs));
		for (int p = 0; p < t; p++) {
			float ang = (float)(pos0 + p) * inv;
			cosv[(size_t)p * h + i] = cosf(ang);
			sinv[(size_t)p * h + i] = sinf(ang);
		}
	}
}

/* Rotate every head vector by +angle (dir = 1) or -angle (dir = -1). */
static void s_rope(float *x, const float *cosv, const float *sinv, int b, int t,
		   int nh, int hs, float dir)
{
	int h = hs / 2;

	#pragma omp parallel for collapse(2) schedule(static) if((size_t)b * t * nh * hs >= OPS_PARALLEL_MIN)
	for (int bi = 0; bi < b; bi++) {
		for (int p = 0; p < t; p++) {
			const float *c = cosv + (size_t)p * h, *s = sinv + (size_t)p * h;
			for (int hd = 0; hd < nh; hd++) {
				float *v = x + (((size_t)bi * t + p) * nh + hd) * hs;
				#pragma omp simd
				for (int i = 0; i < h; i++) {
					float x0 = v[i], x1 = v[i + h], sn = dir * s[i];
					v[i] = x0 * c[i] - x1 * sn;
					v[i + h] = x1 * c[i] + x0 * sn;
				}
			}
		}
	}
}

void op_rope_forward(float *x, const float *cosv, const float *sinv, int b, int t, int nh, int hs)
{
	s_rope(x, cosv, sinv, b, t, nh, hs, 1.0f);
}

void op_rope_backward(float *dx, const float *cosv, const float *sinv, int b, int t, int nh, int hs)
{
	s_rope(dx, cosv, sinv, b, t, nh, hs, -1.0f);
}

void op_attention_forward(float *out, float *att, const float *q, const float *k,
			  const float *v, int b, int t, int nh, int nkv, int hs)
{
	int qs = nh * hs, ks = nkv * hs, grp = nh / nkv;
	float scale = 1.0f / sqrtf((float)hs);

	/* Per (batch, head): S = scale Q K^T on the full square (one sgemm is
	 * faster than the triangle by hand), causal softmax by rows, Y = P V. */
	#pragma omp parallel for collapse(2) schedule(static) if((size_t)b * nh * t * t * hs >= OPS_PARALLEL_MIN)
	for (int bi = 0; bi < b; bi++) {
		for (int h = 0; h < nh; h++) {
			const float *qh = q + (size_t)bi * t * qs + (size_t)h * hs;
			const float *kh = k + (size_t)bi * t * ks + (size_t)(h / grp) * hs;
			const float *vh = v + (size_t)bi * t * ks + (size_t)(h / grp) * hs;
			float *a = att + ((size_t)bi * nh + h) * t * t;

			op_gemm_serial(a, t, qh, qs, kh, ks, t, t, hs, 0, 1, scale, 0.0f);
			for (int i = 0; i < t; i++) {
				float *row = a + (size_t)i * t, mx = -INFINITY, sum = 0.0f;
				for (int j = 0; j <= i; j++)
					mx = row[j] > mx ? row[j] : mx;
				for (int j = 0; j <= i; j++) {
					row[j] = expf(row[j] - mx);
					sum += row[j];
				}
				float inv = 1.0f / sum;
				for (int j = 0; j < t; j++)
					row[j] = j <= i ? row[j] * inv : 0.0f;
			}
			op_gemm_serial(out + (size_t)bi * t * qs + (size_t)h * hs, qs, a, t, vh, ks,
				       t, hs, t, 0, 0, 1.0f, 0.0f);
		}
	}
}

void op_attention_backward(float *dq, float *dk, float *dv, float *scratch,
			   const float *dout, const float *att, const float *q,
			   const float *k, const float *v, int b, int t, int nh, int nkv, int hs)
{
	int qs = nh * hs, ks = nkv * hs, grp = nh / nkv;
	float scale = 1.0f / sqrtf((float)hs);

	/* P = softmax(S), S = scale Q K^T: dP = dY V^T,
	 * dS = P (dP - rowsum(P dP)), dQ += scale dS K, dK += scale dS^T Q,
	 * dV += P^T dY. */
	#pragma omp parallel for collapse(2) schedule(static) if((size_t)b * nh * t * t * hs >= OPS_PARALLEL_MIN)
	for (int bi = 0; bi < b; bi++) {
		for (int kh = 0; kh < nkv; kh++) {
			float *ds = scratch + (size_t)omp_get_thread_num() * t * t;
			size_t kvo = (size_t)bi * t * ks + (size_t)kh * hs;
			for (int h = kh * grp; h < (kh + 1) * grp; h++) {
				size_t qo = (size_t)bi * t * qs + (size_t)h * hs;
				const float *a = att + ((size_t)bi * nh + h) * t * t;

				op_gemm_serial(ds, t, dout + qo, qs, v + kvo, ks, t, t, hs, 0, 1, 1.0f, 0.0f);
				for (int i = 0; i < t; i++) {
					const float *p = a + (size_t)i * t;
					float *d = ds + (size_t)i * t, dot = 0.0f;
					for (int j = 0; j <= i; j++)
						dot += p[j] * d[j];
					for (int j = 0; j < t; j++)
						d[j] = j <= i ? p[j] * (d[j] - dot) * scale : 0.0f;
				}
				op_gemm_serial(dq + qo, qs, ds, t, k + kvo, ks, t, hs, t, 0, 0, 1.0f, 1.0f);
				op_gemm_serial(dk + kvo, ks, ds, t, q + qo, qs, t, hs, t, 1, 0, 1.0f, 1.0f);
				op_gemm_serial(dv + kvo, ks, a, t, dout + qo, qs, t, hs, t, 1, 0, 1.0f, 1.0f);
			}
		}
	}
}
