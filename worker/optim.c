/* optim.c: see optim.h. */
#include "worker/optim.h"
#include "kernels/cpu/ops.h"
#include "err.h"

#include <math.h>
#include <stdlib.h>

optim_t *optim_new(const params_t *p, const optim_config_t *c)
{
	optim_t *o = calloc(1, sizeof *o);
	size_t n = params_numel(p, 1), off = 0;

	if (!o || !(o->m = calloc((size_t)p->n + 1, sizeof *o->m)) ||
	    !(o->v = calloc((size_t)p->n + 1, sizeof *o->v)) ||
	    !(o->mem = calloc(2 * n + 1, sizeof(float)))) {
		optim_destroy(&o);
		return err_set("out of memory for the optimizer state of %zu parameters", n), NULL;
	}
	o->cfg = *c;
	o->params = p;
	for (int i = 0; i < p->n; i++) {
		if (!p->v[i].grad)
			continue;
		o->m[i] = o->mem + off, off += p->v[i].n;
		o->v[i] = o->mem + off, off += p->v[i].n;
	}
	return o;
}

void optim_destroy(optim_t **po)
{
	optim_t *o = po ? *po : NULL;

	if (!o)
		return;
	free(o->m);
	free(o->v);
	free(o->mem);
	free(o);
	*po = NULL;
}

float optim_lr(const optim_config_t *c, long step)
{
	double min = c->lr * c->min_lr_ratio, span, x;

	if (step < c->warmup)
		return (float)(c->lr * (double)(step + 1) / (double)c->warmup);
	span = (double)(c->total_steps - c->warmup);
	x = span > 0 ? (double)(step - c->warmup) / span : 1.0;
	if (x > 1.0)
		x = 1.0;
	return (float)(min + (c->lr - min) * 0.5 * (1.0 + cos(M_PI * x)));
}

float optim_clip(optim_t *o)
{
	const params_t *p = o->params;
	double ss = 0.0;
	float norm;

	for (int i = 0; i < p->n; i++) {
		const float *g = p->v[i].grad;
		for (size_t j = 0; g && j < p->v[i].n; j++)
			ss += (double)g[j] * g[j];
	}
	norm = (float)sqrt(ss);
	if (o->cfg.clip > 0.0f && norm > o->cfg.clip) {
		float s = o->cfg.clip / (norm + 1e-6f);
		for (int i = 0; i < p->n; i++) {
			float *g = p->v[i].grad;
			for (size_t j = 0; g && j < p->v[i].n; j++)
				g[j] *= s;
		}
	}
	return norm;
}

void optim_step(optim_t *o, float lr)
{
	const params_t *p = o->params;
	const optim_config_t *c = &o->cfg;
	long t = ++o->step;
	float bc1 = 1.0f - powf(c->beta1, (float)t), bc2 = 1.0f - powf(c->beta2, (float)t);
	float decay = 1.0f - lr * c->weight_decay;

	for (int i = 0; i < p->n; i++) {
		float *w = p->v[i].data, *g = p->v[i].grad, *m = o->m[i], *v = o->v[i];
		size_t n = p->v[i].n;
		if (!g)
			continue;
		#pragma omp parallel for simd schedule(static) if(n >= OPS_PARALLEL_MIN)
		for (size_t j = 0; j < n; j++) {
			m[j] = c->beta1 * m[j] + (1.0f - c->beta1) * g[j];
			v[j] = c->beta2 * v[j] + (1.0f - c->beta2) * g[j] * g[j];
			float mh = m[j] / bc1, vh = v[j] / bc2;
			w[j] = w[j] * decay - lr * mh / (sqrtf(vh) + c->eps);
		}
	}
}
