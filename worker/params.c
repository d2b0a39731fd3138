/* params.c: see params.h. */
#include "worker/params.h"
#include "err.h"

#include <stdlib.h>
#include <string.h>

int params_add(params_t *p, const char *name, float *data, float *grad, int ndim,
	       const int64_t *shape)
{
	param_t *e;

	if (p->n == p->cap) {
		int cap = p->cap ? 2 * p->cap : 64;
		param_t *v = realloc(p->v, (size_t)cap * sizeof *v);
		if (!v)
			return err_set("out of memory listing tensor '%s'", name);
		p->v = v, p->cap = cap;
	}
	e = &p->v[p->n];
	memset(e, 0, sizeof *e);
	if (!(e->name = strdup(name)))
		return err_set("out of memory listing tensor '%s'", name);
	e->data = data, e->grad = grad, e->ndim = ndim, e->n = 1;
	for (int i = 0; i < ndim; i++)
		e->shape[i] = shape[i], e->n *= (size_t)shape[i];
	p->n++;
	return 0;
}

param_t *params_find(const params_t *p, const char *name)
{
	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->v[i].name, name))
			return &p->v[i];
	return NULL;
}

void params_zero_grad(const params_t *p)
{
	for (int i = 0; i < p->n; i++)
		if (p->v[i].grad)
			memset(p->v[i].grad, 0, p->v[i].n * sizeof(float));
}

size_t params_numel(const params_t *p, int trainable)
{
	size_t n = 0;

	for (int i = 0; i < p->n; i++)
		if (!trainable || p->v[i].grad)
			n += p->v[i].n;
	return n;
}

void params_clear(params_t *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->v[i].name);
	free(p->v);
	memset(p, 0, sizeof *p);
}
