/* spec_stage.c: the one place that maps a run of a spec onto engine jobs:
 * which stages a method has, what each stage job's JSON holds (the format
 * is in docs/specs.md, "Stage jobs"), and what it depends on. When the
 * engine's job format changes, this file (and that section) change with it.
 *
 * Everything that decides a stage's result is in its JSON, and only that:
 * a stage names its inputs by content key ("parents") or artifact hash,
 * carries only the hyper-parameters of its stage (so a router learning
 * rate grid reuses the experts) and the seed. The universal stage does not
 * name the method, so MoDULA-Flan and -Res share their universal expert.
 *
 * Not here: grids and deduplication (spec_expand.c), checking (spec.c).
 */
#include "config.h"
#include "daemon/spec_int.h"
#include "err.h"

#include <string.h>

/* One run being built. */
struct point {
	struct spec_builder *b;
	const spec_t *s;
	const struct spec_method *m;
	const cJSON *params;
	long long seed;
	size_t base;      /* pretrain job index, when has_base */
	int has_base;
};

static const char *s_arch(enum spec_method_id id)
{
	return id == SPEC_FLAN ? "flan" : id == SPEC_RES ? "res" : "res-nores";
}

/* A stage spec with the common members: the base model (and its pretrain
 * job as parent "base"), the parameters of `mask`, the seed when `seeded`. */
static cJSON *s_stage(const struct point *pt, const char *stage, unsigned mask, int seeded, cJSON **parents)
{
	cJSON *o = cJSON_CreateObject(), *p;

	cJSON_AddStringToObject(o, "stage", stage);
	cJSON_AddItemToObject(o, "base_model", cJSON_Duplicate(pt->s->base_model, 1));
	p = cJSON_AddObjectToObject(o, "params");
	for (const struct spec_param *sp = spec_params; sp->name; sp++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(pt->params, sp->name);
		if (v && (sp->stages & mask))
			cJSON_AddItemToObject(p, sp->name, cJSON_Duplicate(v, 1));
	}
	if (seeded)
		cJSON_AddNumberToObject(o, "seed", (double)pt->seed);
	*parents = cJSON_AddObjectToObject(o, "parents");
	if (pt->has_base)
		cJSON_AddStringToObject(*parents, "base", spec_builder_key(pt->b, pt->base));
	return o;
}

/* "data": the descriptors of universal (when `universal`) and `domains`. */
static void s_add_data(const struct point *pt, cJSON *o, int universal, const cJSON *domains)
{
	cJSON *a = cJSON_AddArrayToObject(o, "data");
	const cJSON *it;

	if (universal)
		cJSON_AddItemToArray(a, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(pt->s->data, "universal"), 1));
	cJSON_ArrayForEach(it, domains)
		cJSON_AddItemToArray(a, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(pt->s->data,
											 it->valuestring), 1));
}

/* Add a job whose deps are the pretrain job (if any) plus `deps`. */
static int s_add(const struct point *pt, const char *kind, cJSON *stage, const size_t *deps, size_t ndeps,
		 size_t *idx)
{
	size_t all[SPEC_MAX_DOMAINS + 4], n = 0;

	if (ndeps + 1 > sizeof all / sizeof all[0]) {
		cJSON_Delete(stage);
		return err_set("too many dependencies for one %s job", kind);
	}
	if (pt->has_base)
		all[n++] = pt->base;
	for (size_t i = 0; i < ndeps; i++)
		all[n++] = deps[i];
	return spec_builder_add(pt->b, kind, stage, all, n, idx);
}

/* The domains a run trains and evaluates: its scope decides. */
static cJSON *s_run_domains(const struct point *pt)
{
	cJSON *d = cJSON_Duplicate(pt->s->domains, 1);
	const cJSON *it;

	if (pt->m->scope != SPEC_SCOPE_BASE)
		cJSON_ArrayForEach(it, pt->s->add_domains)
			cJSON_AddItemToArray(d, cJSON_CreateString(it->valuestring));
	return d;
}

/* Domain experts of `domains` (after the universal job `u`), then a router
 * over every expert in `experts` (a {domain: job index} map being filled),
 * started from `init` when init_key is not NULL. */
static int s_experts_router(const struct point *pt, size_t u, const cJSON *domains, size_t *experts,
			    const cJSON *all_domains, const size_t *init, size_t *router)
{
	const cJSON *it;
	cJSON *st, *par, *ex;
	size_t deps[SPEC_MAX_DOMAINS + 2], n = 0, k = 0;

	cJSON_ArrayForEach(it, domains) {
		size_t di = (size_t)cJSON_GetArraySize(all_domains) - (size_t)cJSON_GetArraySize(domains) + k++;
		cJSON *one = cJSON_CreateArray();
		cJSON_AddItemToArray(one, cJSON_CreateString(it->valuestring));
		st = s_stage(pt, "domain", SPEC_ST_DOMAIN, 1, &par);
		cJSON_AddStringToObject(par, "universal", spec_builder_key(pt->b, u));
		cJSON_AddStringToObject(st, "domain", it->valuestring);
		cJSON_AddStringToObject(st, "arch", s_arch(pt->m->id));
		s_add_data(pt, st, 0, one);
		cJSON_Delete(one);
		if (s_add(pt, "domain", st, &u, 1, &experts[di]) < 0)
			return -1;
	}
	st = s_stage(pt, "router", SPEC_ST_ROUTER, 1, &par);
	cJSON_AddStringToObject(par, "universal", spec_builder_key(pt->b, u));
	ex = cJSON_AddObjectToObject(par, "experts");
	deps[n++] = u;
	k = 0;
	cJSON_ArrayForEach(it, all_domains) {
		cJSON_AddStringToObject(ex, it->valuestring, spec_builder_key(pt->b, experts[k]));
		deps[n++] = experts[k++];
	}
	if (init) {
		cJSON_AddStringToObject(par, "router_init", spec_builder_key(pt->b, *init));
		deps[n++] = *init;
	}
	cJSON_AddItemToObject(st, "domains", cJSON_Duplicate(all_domains, 1));
	cJSON_AddStringToObject(st, "arch", s_arch(pt->m->id));
	s_add_data(pt, st, 1, all_domains);
	return s_add(pt, "router", st, deps, n, router);
}

/* universal -> domain experts -> router (-> new experts -> router). */
static int s_modula(const struct point *pt, cJSON *eval_par, size_t *deps, size_t *ndeps)
{
	size_t u, experts[SPEC_MAX_DOMAINS], router, router0;
	cJSON *st, *par, *all = s_run_domains(pt), *ex;
	const cJSON *it;
	int rc = -1;
	size_t k = 0;

	st = s_stage(pt, "universal", SPEC_ST_UNIVERSAL, 1, &par);
	s_add_data(pt, st, 1, NULL);
	if (s_add(pt, "universal", st, NULL, 0, &u) < 0)
		goto out;
	if (pt->m->scope == SPEC_SCOPE_EXTEND) {
		if (s_experts_router(pt, u, pt->s->domains, experts, pt->s->domains, NULL, &router0) < 0 ||
		    s_experts_router(pt, u, pt->s->add_domains, experts, all, &router0, &router) < 0)
			goto out;
	} else if (s_experts_router(pt, u, all, experts, all, NULL, &router) < 0) {
		goto out;
	}
	cJSON_AddStringToObject(eval_par, "universal", spec_builder_key(pt->b, u));
	ex = cJSON_AddObjectToObject(eval_par, "experts");
	cJSON_ArrayForEach(it, all)
		cJSON_AddStringToObject(ex, it->valuestring, spec_builder_key(pt->b, experts[k++]));
	cJSON_AddStringToObject(eval_par, "router", spec_builder_key(pt->b, router));
	deps[(*ndeps)++] = router;
	rc = 0;
out:
	cJSON_Delete(all);
	return rc;
}

int spec_stage_run(struct spec_builder *b, const spec_t *s, const struct spec_method *m, const cJSON *params,
		   long long seed)
{
	struct point pt = { b, s, m, params, seed, 0, 0 };
	cJSON *st, *par, *eval, *epar, *domains = NULL;
	size_t deps[2], ndeps = 0, idx;
	int rc = -1;

	if (s->pretrain) {
		if (spec_builder_add(b, "pretrain", cJSON_Duplicate(s->pretrain, 1), NULL, 0, &pt.base) < 0)
			return -1;
		pt.has_base = 1;
	}
	domains = s_run_domains(&pt);
	eval = s_stage(&pt, "eval", SPEC_ST_EVAL, 0, &epar);
	cJSON_AddStringToObject(eval, "method", spec_method_names[m->id]);
	/* The label keeps each run's evaluation its own, even when two labels
	 * of a sweep end in the same trained bundle. */
	cJSON_AddStringToObject(eval, "label", m->label);
	if (m->id == SPEC_LORA || m->id == SPEC_MOLORA) {
		st = s_stage(&pt, "joint", SPEC_ST_JOINT, 1, &par);
		cJSON_AddStringToObject(st, "method", spec_method_names[m->id]);
		cJSON_AddItemToObject(st, "domains", cJSON_Duplicate(domains, 1));
		s_add_data(&pt, st, 1, domains);
		if (s_add(&pt, "joint", st, NULL, 0, &idx) < 0)
			goto out;
		cJSON_AddStringToObject(epar, "adapter", spec_builder_key(b, idx));
		deps[ndeps++] = idx;
	} else if (m->id != SPEC_BASE) {
		cJSON_AddStringToObject(eval, "arch", s_arch(m->id));
		if (s_modula(&pt, epar, deps, &ndeps) < 0)
			goto out;
	}
	cJSON_AddItemToObject(eval, "domains", cJSON_Duplicate(domains, 1));
	s_add_data(&pt, eval, 1, domains);
	cJSON_AddItemToObject(eval, "eval", cJSON_Duplicate(s->eval, 1));
	rc = s_add(&pt, "eval", eval, deps, ndeps, &idx);
	eval = NULL;
out:
	cJSON_Delete(eval);
	cJSON_Delete(domains);
	return rc;
}
