/* spec_stage.c: the one place that maps a run of a spec onto engine jobs:
 * which jobs a method has, what each job's JSON holds (the format is in
 * docs/specs.md, "Stage jobs"), and what it depends on. When the engine's
 * job format changes, this file (and that section) change with it.
 *
 * A job's JSON is exactly what the engine reads (`modula-engine data |
 * train | stage | eval JOB.json`, the job kind is the command) plus one
 * member the worker consumes: "inputs", {"in/rel/path": REF}, the files to
 * put in the job's folder first. REF is an artifact sha256, or
 * {"key": CONTENT_KEY, "output": NAME}: output NAME of the succeeded job
 * with that content key, a parent in the DAG; the daemon replaces it by
 * the sha256 when it leases the job (spec_inputs_resolve()). So a job's
 * content key covers its parents' keys, and everything that decides its
 * result is in its JSON and only there. The universal stage names the
 * method modula-flan for every MoDULA method (the stage trains the
 * universal expert alone, the same way for all), so MoDULA-Flan and -Res
 * share their universal expert.
 *
 * Not here: grids and deduplication (spec_expand.c), checking (spec.c).
 */
#include "config.h"
#include "daemon/spec_int.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

#define S_MAX_DEPS (2 * SPEC_MAX_DOMAINS + 8)

/* Pretraining of the embedded base model (full-parameter, plain text). */
#define S_PRETRAIN_BATCH 16
#define S_PRETRAIN_SEQ 64
#define S_PRETRAIN_LR 0.003

/* One run being built. */
struct point {
	struct spec_builder *b;
	const spec_t *s;
	const struct spec_method *m;
	const cJSON *params;
	long long seed;
	size_t base;      /* pretrain job index, when has_base */
	size_t corpus;    /* corpus data job index, when has_base */
	int has_base;
};

/* A job under construction: its JSON, its "inputs", its dependencies. */
struct job {
	cJSON *o, *in;
	size_t deps[S_MAX_DEPS];
	size_t ndeps;
};

static void s_job_init(struct job *j)
{
	j->o = cJSON_CreateObject();
	j->in = cJSON_AddObjectToObject(j->o, "inputs");
	j->ndeps = 0;
}

static void s_dep(struct job *j, size_t idx)
{
	for (size_t i = 0; i < j->ndeps; i++)
		if (j->deps[i] == idx)
			return;
	if (j->ndeps < S_MAX_DEPS)
		j->deps[j->ndeps++] = idx;
}

/* inputs[rel] = output `name` of job `idx`. */
static void s_in(const struct point *pt, struct job *j, const char *rel, size_t idx, const char *name)
{
	cJSON *r = cJSON_CreateObject();

	cJSON_AddStringToObject(r, "key", spec_builder_key(pt->b, idx));
	cJSON_AddStringToObject(r, "output", name);
	cJSON_AddItemToObject(j->in, rel, r);
	s_dep(j, idx);
}

static int s_add(const struct point *pt, const char *kind, struct job *j, size_t *idx)
{
	if (!cJSON_GetArraySize(j->in))
		cJSON_DeleteItemFromObjectCaseSensitive(j->o, "inputs");
	return spec_builder_add(pt->b, kind, j->o, j->deps, j->ndeps, idx);
}

static double s_num(const struct point *pt, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(pt->params, name);

	return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static void s_copy(const struct point *pt, cJSON *o, const char *name, const char *as)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(pt->params, name);

	if (v)
		cJSON_AddItemToObject(o, as ? as : name, cJSON_Duplicate(v, 1));
}

/* The local path of `domain`'s `split` ("train" or "test") for job `j`:
 * a suite data job's output, a registry artifact or an absolute path. */
static int s_data(const struct point *pt, struct job *j, const char *domain, const char *split, char *rel,
		  size_t n)
{
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(pt->s->data, domain);
	const cJSON *su = cJSON_GetObjectItemCaseSensitive(d, "suite");
	const cJSON *rg = cJSON_GetObjectItemCaseSensitive(d, "registry");
	const cJSON *pa = cJSON_GetObjectItemCaseSensitive(d, "path");
	char name[96];

	snprintf(rel, n, "in/data/%s.%s.jsonl", domain, split);
	if (su) {
		const char *sd = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(su, "domain"));
		struct job dj;
		cJSON *g;
		size_t idx;
		s_job_init(&dj);
		g = cJSON_AddObjectToObject(dj.o, "suite");
		for (const char *const *k = (const char *const[]){ "seed", "train", "test", "level", NULL }; *k; k++)
			cJSON_AddItemToObject(g, *k, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(su, *k), 1));
		cJSON_AddItemToArray(cJSON_AddArrayToObject(g, "domains"), cJSON_CreateString(sd ? sd : domain));
		if (s_add(pt, "data", &dj, &idx) < 0)
			return -1;
		snprintf(name, sizeof name, "%s.%s", sd ? sd : domain, split);
		s_in(pt, j, rel, idx, name);
	} else if (rg) {
		const char *sha = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rg, split));
		if (!sha || !sha[0])
			return err_set("datasets.%s: the registry has no %s split", domain, split);
		cJSON_AddStringToObject(j->in, rel, sha);
	} else if (pa) {
		snprintf(rel, n, "%s", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pa, split)));
	} else {
		return err_set("datasets.%s: no data", domain);
	}
	return 0;
}

/* "data": the train files of universal (when `universal`) and `domains`. */
static int s_train_data(const struct point *pt, struct job *j, int universal, const cJSON *domains)
{
	cJSON *a = cJSON_AddArrayToObject(j->o, "data");
	const cJSON *it;
	char rel[512];

	if (universal) {
		if (s_data(pt, j, "universal", "train", rel, sizeof rel) < 0)
			return -1;
		cJSON_AddItemToArray(a, cJSON_CreateString(rel));
	}
	cJSON_ArrayForEach(it, domains) {
		if (s_data(pt, j, it->valuestring, "train", rel, sizeof rel) < 0)
			return -1;
		cJSON_AddItemToArray(a, cJSON_CreateString(rel));
	}
	return 0;
}

/* "model": the pretrained embedded model (in/base) or the spec's folder. */
static int s_model(const struct point *pt, struct job *j)
{
	const cJSON *bm = pt->s->base_model, *p = cJSON_GetObjectItemCaseSensitive(bm, "path");

	if (pt->has_base) {
		cJSON_AddStringToObject(j->o, "model", "in/base");
		s_in(pt, j, "in/base/config.json", pt->base, "model_config");
		s_in(pt, j, "in/base/model.safetensors", pt->base, "model_weights");
		return 0;
	}
	if (cJSON_IsString(p)) {
		cJSON_AddStringToObject(j->o, "model", p->valuestring);
		return 0;
	}
	/* A registry model's artifact is its weights file; the engine also
	 * needs a config.json beside it, which the registry does not hand out
	 * yet (docs/specs.md). */
	p = cJSON_GetObjectItemCaseSensitive(bm, "artifact");
	if (!cJSON_IsString(p))
		return err_set("base_model: expected an embedded, 'path' or 'registry' model");
	cJSON_AddStringToObject(j->o, "model", "in/base");
	cJSON_AddStringToObject(j->in, "in/base/model.safetensors", p->valuestring);
	return 0;
}

/* The common members of a training job: model, schedule, seed, out_dir. */
static int s_train_common(const struct point *pt, struct job *j, const char *steps, const char *lr)
{
	double n = s_num(pt, steps);

	if (s_model(pt, j) < 0)
		return -1;
	s_copy(pt, j->o, steps, "steps");
	s_copy(pt, j->o, "batch", NULL);
	s_copy(pt, j->o, "seq_len", NULL);
	s_copy(pt, j->o, lr, "lr");
	s_copy(pt, j->o, "weight_decay", NULL);
	s_copy(pt, j->o, "warmup", NULL);
	s_copy(pt, j->o, "grad_clip", "clip");
	cJSON_AddNumberToObject(j->o, "seed", (double)pt->seed);
	cJSON_AddNumberToObject(j->o, "progress_every", n >= 50 ? (int)(n / 50) : 1);
	cJSON_AddStringToObject(j->o, "out_dir", ".");
	return 0;
}

/* {"rank", "alpha"[, "targets"]} of an expert kind. */
static void s_rank(const struct point *pt, cJSON *o, const char *key, const char *rank, int targets)
{
	cJSON *r = cJSON_AddObjectToObject(o, key);

	s_copy(pt, r, rank, "rank");
	s_copy(pt, r, "alpha", NULL);
	if (targets)
		s_copy(pt, r, "targets", NULL);
}

static double s_slope(const struct point *pt)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(pt->params, "activation");

	return cJSON_IsString(a) && !strcmp(a->valuestring, "identity") ? 1.0 : 0.01;
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

/* The corpus (when the model is embedded), then the pretraining job. */
static int s_pretrain(struct point *pt)
{
	const cJSON *emb = cJSON_GetObjectItemCaseSensitive(pt->s->base_model, "embedded");
	const cJSON *steps = cJSON_GetObjectItemCaseSensitive(emb, "steps");
	const cJSON *seed = cJSON_GetObjectItemCaseSensitive(emb, "seed");
	struct job j;
	cJSON *c;

	s_job_init(&j);
	c = cJSON_AddObjectToObject(j.o, "corpus");
	cJSON_AddNumberToObject(c, "seed", 1);
	cJSON_AddNumberToObject(c, "record_bytes", S_PRETRAIN_SEQ);
	if (s_add(pt, "data", &j, &pt->corpus) < 0)
		return -1;
	s_job_init(&j);
	cJSON_AddStringToObject(j.o, "model", "random");
	cJSON_AddStringToObject(j.o, "tokenizer", "bytes");
	cJSON_AddItemToArray(cJSON_AddArrayToObject(j.o, "data"), cJSON_CreateString("in/corpus.jsonl"));
	s_in(pt, &j, "in/corpus.jsonl", pt->corpus, "records");
	cJSON_AddStringToObject(j.o, "mode", "full");
	cJSON_AddItemToObject(j.o, "steps", cJSON_Duplicate(steps, 1));
	cJSON_AddNumberToObject(j.o, "batch", S_PRETRAIN_BATCH);
	cJSON_AddNumberToObject(j.o, "seq_len", S_PRETRAIN_SEQ);
	cJSON_AddNumberToObject(j.o, "lr", S_PRETRAIN_LR);
	cJSON_AddNumberToObject(j.o, "warmup", 20);
	cJSON_AddItemToObject(j.o, "seed", cJSON_Duplicate(seed, 1));
	cJSON_AddNumberToObject(j.o, "progress_every",
				cJSON_IsNumber(steps) && steps->valuedouble >= 50 ? (int)(steps->valuedouble / 50) : 1);
	cJSON_AddStringToObject(j.o, "out_dir", ".");
	if (s_add(pt, "train", &j, &pt->base) < 0)
		return -1;
	pt->has_base = 1;
	return 0;
}

/* A MoDULA stage job with its method (and slope for the Res variants). */
static void s_stage_head(const struct point *pt, struct job *j, const char *stage, int universal)
{
	s_job_init(j);
	cJSON_AddStringToObject(j->o, "stage", stage);
	cJSON_AddStringToObject(j->o, "method", universal ? "modula-flan" : spec_method_names[pt->m->id]);
	if (!universal && pt->m->id != SPEC_FLAN)
		cJSON_AddNumberToObject(j->o, "slope", s_slope(pt));
}

/* Where job `idx`'s expert `name` goes in a job: in/experts/NAME.safetensors. */
static void s_expert_in(const struct point *pt, struct job *j, cJSON *arr, size_t idx, const char *name)
{
	char rel[128];
	cJSON *e = cJSON_CreateObject();

	snprintf(rel, sizeof rel, "in/experts/%s.safetensors", name);
	s_in(pt, j, rel, idx, name);
	cJSON_AddStringToObject(e, "name", name);
	cJSON_AddStringToObject(e, "path", rel);
	cJSON_AddItemToArray(arr, e);
}

/* Domain experts of `domains` (after the universal job `u`), then a router
 * over every expert of `all_domains` (`experts`: job index per domain,
 * being filled), started from the router of `init` when not NULL. */
static int s_experts_router(const struct point *pt, size_t u, const cJSON *domains, size_t *experts,
			    const cJSON *all_domains, const size_t *init, size_t *router)
{
	const cJSON *it;
	struct job j;
	cJSON *ex;
	size_t k = 0, first = (size_t)(cJSON_GetArraySize(all_domains) - cJSON_GetArraySize(domains));
	char rel[512];

	cJSON_ArrayForEach(it, domains) {
		cJSON *d, *one;
		s_stage_head(pt, &j, "domain", 0);
		if (s_train_common(pt, &j, "steps", "lr") < 0)
			goto err;
		s_rank(pt, j.o, "domain", "domain_rank", 0);
		s_expert_in(pt, &j, cJSON_AddArrayToObject(j.o, "experts"), u, "universal");
		if (s_data(pt, &j, it->valuestring, "train", rel, sizeof rel) < 0)
			goto err;
		d = cJSON_AddArrayToObject(j.o, "domains");
		one = cJSON_CreateObject();
		cJSON_AddStringToObject(one, "name", it->valuestring);
		cJSON_AddStringToObject(one, "data", rel);
		cJSON_AddItemToArray(d, one);
		if (s_add(pt, "stage", &j, &experts[first + k++]) < 0)
			return -1;
	}
	s_stage_head(pt, &j, "router", 0);
	if (s_train_common(pt, &j, "router_steps", "router_lr") < 0)
		goto err;
	ex = cJSON_AddArrayToObject(j.o, "experts");
	s_expert_in(pt, &j, ex, u, "universal");
	k = 0;
	cJSON_ArrayForEach(it, all_domains)
		s_expert_in(pt, &j, ex, experts[k++], it->valuestring);
	if (init) {
		cJSON_AddStringToObject(j.o, "router", "in/router_init.safetensors");
		s_in(pt, &j, "in/router_init.safetensors", *init, "router");
	}
	if (s_train_data(pt, &j, 1, all_domains) < 0)
		goto err;
	return s_add(pt, "stage", &j, router);
err:
	cJSON_Delete(j.o);
	return -1;
}

/* The bundle of a router or joint job `idx` for the eval job `j`, its
 * expert files taken from the jobs that trained them (bytes identical:
 * bundle.h writes experts deterministically). */
static void s_bundle_in(const struct point *pt, struct job *j, size_t idx, int router)
{
	s_in(pt, j, "in/bundle/modula.json", idx, "bundle");
	if (router)
		s_in(pt, j, "in/bundle/router.safetensors", idx, "router");
	cJSON_AddStringToObject(j->o, "adapter", "in/bundle");
}

static void s_bundle_expert(const struct point *pt, struct job *j, size_t idx, const char *name)
{
	char rel[128];

	snprintf(rel, sizeof rel, "in/bundle/experts/%s.safetensors", name);
	s_in(pt, j, rel, idx, name);
}

/* universal -> domain experts -> router (-> new experts -> router). */
static int s_modula(const struct point *pt, struct job *ev)
{
	size_t u, experts[SPEC_MAX_DOMAINS], router, router0, k = 0;
	cJSON *all = s_run_domains(pt);
	const cJSON *it;
	struct job j;
	int rc = -1;

	s_stage_head(pt, &j, "universal", 1);
	if (s_train_common(pt, &j, "steps", "lr") < 0 || s_train_data(pt, &j, 1, NULL) < 0) {
		cJSON_Delete(j.o);
		goto out;
	}
	s_rank(pt, j.o, "universal", "universal_rank", 1);
	if (s_add(pt, "stage", &j, &u) < 0)
		goto out;
	if (pt->m->scope == SPEC_SCOPE_EXTEND) {
		if (s_experts_router(pt, u, pt->s->domains, experts, pt->s->domains, NULL, &router0) < 0 ||
		    s_experts_router(pt, u, pt->s->add_domains, experts, all, &router0, &router) < 0)
			goto out;
	} else if (s_experts_router(pt, u, all, experts, all, NULL, &router) < 0) {
		goto out;
	}
	s_bundle_in(pt, ev, router, 1);
	s_bundle_expert(pt, ev, u, "universal");
	cJSON_ArrayForEach(it, all)
		s_bundle_expert(pt, ev, experts[k++], it->valuestring);
	rc = 0;
out:
	cJSON_Delete(all);
	return rc;
}

/* lora or molora: one joint stage on the mixture. */
static int s_joint(const struct point *pt, const cJSON *domains, struct job *ev)
{
	int molora = pt->m->id == SPEC_MOLORA;
	int n = molora ? (int)s_num(pt, "experts") : 0;
	struct job j;
	size_t idx;

	if (molora && n < 1)
		n = cJSON_GetArraySize(domains);
	s_job_init(&j);
	cJSON_AddStringToObject(j.o, "stage", "joint");
	cJSON_AddStringToObject(j.o, "method", spec_method_names[pt->m->id]);
	if (s_train_common(pt, &j, "steps", "lr") < 0 || s_train_data(pt, &j, 1, domains) < 0) {
		cJSON_Delete(j.o);
		return -1;
	}
	if (molora) {
		cJSON_AddNumberToObject(j.o, "n_experts", n);
		s_copy(pt, j.o, "top_k", NULL);
		s_copy(pt, j.o, "load_balance", "aux_weight");
		s_rank(pt, j.o, "domain", "rank", 0);
		cJSON *t = cJSON_AddObjectToObject(j.o, "universal");
		s_copy(pt, t, "targets", NULL);
	} else {
		s_rank(pt, j.o, "universal", "rank", 1);
	}
	if (s_add(pt, "stage", &j, &idx) < 0)
		return -1;
	if (!molora) {
		cJSON_AddStringToObject(ev->o, "adapter", "in/adapter");
		s_in(pt, ev, "in/adapter/adapter_config.json", idx, "adapter_config");
		s_in(pt, ev, "in/adapter/adapter_model.safetensors", idx, "adapter_weights");
		return 0;
	}
	s_bundle_in(pt, ev, idx, 1);
	for (int i = 1; i <= n; i++) {
		char name[16];
		snprintf(name, sizeof name, "e%d", i);
		s_bundle_expert(pt, ev, idx, name);
	}
	return 0;
}

int spec_stage_run(struct spec_builder *b, const spec_t *s, const struct spec_method *m, const cJSON *params,
		   long long seed)
{
	struct point pt = { b, s, m, params, seed, 0, 0, 0 };
	cJSON *domains = NULL, *doms, *ev_set = s->eval;
	const cJSON *it, *mx;
	struct job ev = { 0 };
	size_t idx;
	char rel[512];
	int rc = -1;

	if (s->pretrain && s_pretrain(&pt) < 0)
		return -1;
	domains = s_run_domains(&pt);
	s_job_init(&ev);
	if (s_model(&pt, &ev) < 0)
		goto out;
	if (m->id == SPEC_LORA || m->id == SPEC_MOLORA) {
		if (s_joint(&pt, domains, &ev) < 0)
			goto out;
	} else if (m->id != SPEC_BASE && s_modula(&pt, &ev) < 0) {
		goto out;
	}
	doms = cJSON_AddArrayToObject(ev.o, "domains");
	for (int k = -1; k < cJSON_GetArraySize(domains); k++) {
		const char *name = k < 0 ? "universal" : cJSON_GetArrayItem(domains, k)->valuestring;
		cJSON *d = cJSON_CreateObject();
		cJSON_AddItemToArray(doms, d);
		if (s_data(&pt, &ev, name, "test", rel, sizeof rel) < 0)
			goto out;
		cJSON_AddStringToObject(d, "name", name);
		cJSON_AddStringToObject(d, "data", rel);
	}
	cJSON_AddStringToObject(ev.o, "general", "universal");
	if (pt.has_base && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev_set, "general"))) {
		cJSON_AddStringToObject(ev.o, "text", "in/holdout.txt");
		s_in(&pt, &ev, "in/holdout.txt", pt.corpus, "holdout");
	}
	if ((mx = cJSON_GetObjectItemCaseSensitive(ev_set, "max_examples")))
		cJSON_AddItemToObject(ev.o, "max_records", cJSON_Duplicate(mx, 1));
	if ((it = cJSON_GetObjectItemCaseSensitive(ev_set, "batch")))
		cJSON_AddItemToObject(ev.o, "batch", cJSON_Duplicate(it, 1));
	s_copy(&pt, ev.o, "seq_len", NULL);
	/* The label in the output's name keeps each run's evaluation its own,
	 * even when two labels of a sweep end in the same trained bundle. */
	snprintf(rel, sizeof rel, "eval-%s.json", m->label);
	for (char *c = rel + 5; *c; c++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", *c))
			*c = '_';
	cJSON_AddStringToObject(ev.o, "out", rel);
	rc = s_add(&pt, "eval", &ev, &idx);
	ev.o = NULL;
out:
	cJSON_Delete(ev.o);
	cJSON_Delete(domains);
	return rc;
}
