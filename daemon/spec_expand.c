/* spec_expand.c: a checked spec into a plan: each method's grid (the
 * Cartesian product of its list-valued parameters, in the parameter
 * table's order) times the seeds gives the runs; each run's DAG comes from
 * spec_stage.c, and jobs with equal content keys are kept once (owned by
 * the first run that needs them). Also the canonical JSON behind keys.
 *
 * Not here: the registry (spec_api.c); the content-key cache across
 * submissions is the queue's (a job whose key already succeeded is done
 * at once).
 */
#include "config.h"
#include "daemon/spec_int.h"
#include "err.h"
#include "sha256.h"
#include "version.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- canonical JSON ---------------------------------------------------------- */

static int s_key_cmp(const void *a, const void *b)
{
	return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

static void s_canon_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static int s_canon(FILE *f, const cJSON *it)
{
	const cJSON *c;
	const cJSON **kids;
	size_t n = 0, i;

	if (cJSON_IsNull(it)) {
		fputs("null", f);
	} else if (cJSON_IsBool(it)) {
		fputs(cJSON_IsTrue(it) ? "true" : "false", f);
	} else if (cJSON_IsNumber(it)) {
		double v = it->valuedouble;
		if (v == floor(v) && fabs(v) < 9007199254740992.0)
			fprintf(f, "%lld", (long long)v);
		else
			fprintf(f, "%.17g", v);
	} else if (cJSON_IsString(it)) {
		s_canon_str(f, it->valuestring);
	} else if (cJSON_IsArray(it)) {
		fputc('[', f);
		cJSON_ArrayForEach(c, it) {
			if (c != it->child)
				fputc(',', f);
			if (s_canon(f, c) < 0)
				return -1;
		}
		fputc(']', f);
	} else if (cJSON_IsObject(it)) {
		cJSON_ArrayForEach(c, it)
			n++;
		if (!(kids = calloc(n ? n : 1, sizeof *kids)))
			return err_set("out of memory");
		n = 0;
		cJSON_ArrayForEach(c, it)
			kids[n++] = c;
		qsort(kids, n, sizeof *kids, s_key_cmp);
		fputc('{', f);
		for (i = 0; i < n; i++) {
			if (i)
				fputc(',', f);
			s_canon_str(f, kids[i]->string);
			fputc(':', f);
			if (s_canon(f, kids[i]) < 0) {
				free(kids);
				return -1;
			}
		}
		fputc('}', f);
		free(kids);
	} else {
		return err_set("cannot hash an invalid JSON value");
	}
	return 0;
}

char *spec_canonical(const cJSON *item)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int rc;

	if (!f)
		return err_set("out of memory"), NULL;
	rc = s_canon(f, item);
	if (fclose(f) != 0 || rc < 0 || !buf) {
		free(buf);
		if (rc == 0)
			err_set("out of memory");
		return NULL;
	}
	return buf;
}

int spec_hash(const char *kind, const cJSON *stage, int numerics, char hex[65])
{
	char *text = spec_canonical(stage), *all;
	uint8_t d[SHA256_LEN];
	size_t n;
	int rc;

	if (!text)
		return -1;
	n = strlen("modula-job-v1") + strlen(kind) + strlen(text) + 32;
	if (!(all = malloc(n))) {
		free(text);
		return err_set("out of memory");
	}
	snprintf(all, n, "modula-job-v1\n%s\nnumerics %d\n%s", kind, numerics, text);
	rc = sha256_buf(all, strlen(all), d);
	free(all);
	free(text);
	if (rc < 0)
		return -1;
	sha256_hex(d, hex);
	return 0;
}

/* ---- a set of keys (hex) -> index ---------------------------------------------- */

struct keyset {
	size_t *slot;      /* index + 1; 0 = empty */
	size_t cap;        /* a power of two */
};

static size_t s_hash_hex(const char *hex)
{
	size_t h = 1469598103934665603ULL;

	for (; *hex; hex++)
		h = (h ^ (unsigned char)*hex) * 1099511628211ULL;
	return h;
}

/* The index for `key` in `keys` (an array of 65-byte strings at `stride`
 * bytes apart), or (size_t)-1 after recording `next` as its index. */
static size_t s_keyset_find(struct keyset *ks, const char *key, const char *base, size_t stride, size_t next)
{
	size_t i;

	if ((next + 1) * 2 > ks->cap) {
		size_t ncap = ks->cap ? ks->cap * 2 : 64, *ns = calloc(ncap, sizeof *ns);
		if (!ns)
			return (size_t)-2;
		for (size_t k = 0; k < ks->cap; k++) {
			if (!ks->slot[k])
				continue;
			i = s_hash_hex(base + (ks->slot[k] - 1) * stride) & (ncap - 1);
			while (ns[i])
				i = (i + 1) & (ncap - 1);
			ns[i] = ks->slot[k];
		}
		free(ks->slot);
		ks->slot = ns;
		ks->cap = ncap;
	}
	for (i = s_hash_hex(key) & (ks->cap - 1); ks->slot[i]; i = (i + 1) & (ks->cap - 1))
		if (strcmp(base + (ks->slot[i] - 1) * stride, key) == 0)
			return ks->slot[i] - 1;
	ks->slot[i] = next + 1;
	return (size_t)-1;
}

/* ---- the builder ----------------------------------------------------------------- */

struct spec_builder {
	spec_plan_t *p;
	size_t jcap, rcap;
	struct keyset jobs;
	struct keyset runs;
	char (*run_keys)[65];
	size_t cur;        /* the run being built */
};

const char *spec_builder_key(const struct spec_builder *b, size_t idx)
{
	return b->p->jobs[idx].key;
}

static int s_run_has(const struct spec_run *r, size_t idx)
{
	for (size_t i = 0; i < r->njobs; i++)
		if (r->jobs[i] == idx)
			return 1;
	return 0;
}

int spec_builder_add(struct spec_builder *b, const char *kind, cJSON *stage, const size_t *deps, size_t ndeps,
		     size_t *idx)
{
	spec_plan_t *p = b->p;
	struct spec_run *r = &p->runs[b->cur];
	struct spec_job *j;
	char key[65];
	size_t found, *nj;

	if (spec_hash(kind, stage, MODULA_ENGINE_NUMERICS, key) < 0)
		goto err;
	found = s_keyset_find(&b->jobs, key, p->jobs ? p->jobs[0].key : key, sizeof *p->jobs, p->njobs);
	if (found == (size_t)-2) {
		err_set("out of memory");
		goto err;
	}
	if (found != (size_t)-1) {
		cJSON_Delete(stage);
		*idx = found;
	} else {
		if (p->njobs >= SPEC_MAX_JOBS) {
			err_set("the spec expands to more than %d jobs", SPEC_MAX_JOBS);
			goto err;
		}
		if (p->njobs == b->jcap) {
			size_t ncap = b->jcap ? b->jcap * 2 : 64;
			struct spec_job *nj2 = realloc(p->jobs, ncap * sizeof *nj2);
			if (!nj2) {
				err_set("out of memory");
				goto err;
			}
			p->jobs = nj2;
			b->jcap = ncap;
		}
		j = &p->jobs[p->njobs];
		memset(j, 0, sizeof *j);
		snprintf(j->kind, sizeof j->kind, "%s", kind);
		memcpy(j->key, key, sizeof key);
		j->spec = stage;
		j->run = b->cur;
		if (ndeps && !(j->deps = malloc(ndeps * sizeof *j->deps))) {
			cJSON_Delete(stage);
			return err_set("out of memory");
		}
		if (ndeps)
			memcpy(j->deps, deps, ndeps * sizeof *deps);
		j->ndeps = ndeps;
		*idx = p->njobs++;
	}
	if (s_run_has(r, *idx))
		return 0;
	if (!(nj = realloc(r->jobs, (r->njobs + 1) * sizeof *nj)))
		return err_set("out of memory");
	r->jobs = nj;
	r->jobs[r->njobs++] = *idx;
	return 0;
err:
	cJSON_Delete(stage);
	return -1;
}

/* Start run (method, params (consumed), seed) unless an equal run exists:
 * 1 started (b->cur is it), 0 a duplicate, -1 via err_set(). */
static int s_run_begin(struct spec_builder *b, const struct spec_method *m, cJSON *params, long long seed)
{
	spec_plan_t *p = b->p;
	struct spec_run *r;
	cJSON *id = cJSON_CreateObject();
	size_t found;
	char key[65];

	cJSON_AddItemToObject(id, "params", cJSON_Duplicate(params, 1));
	cJSON_AddNumberToObject(id, "seed", (double)seed);
	if (spec_hash(m->label, id, MODULA_ENGINE_NUMERICS, key) < 0) {
		cJSON_Delete(id);
		cJSON_Delete(params);
		return -1;
	}
	cJSON_Delete(id);
	if (p->nruns == b->rcap) {
		size_t ncap = b->rcap ? b->rcap * 2 : 16;
		struct spec_run *nr = realloc(p->runs, ncap * sizeof *nr);
		char (*nk)[65] = realloc(b->run_keys, ncap * sizeof *nk);
		if (nr)
			p->runs = nr;
		if (nk)
			b->run_keys = nk;
		if (!nr || !nk) {
			cJSON_Delete(params);
			return err_set("out of memory");
		}
		b->rcap = ncap;
	}
	memcpy(b->run_keys[p->nruns], key, sizeof key);
	found = s_keyset_find(&b->runs, key, b->run_keys[0], sizeof b->run_keys[0], p->nruns);
	if (found != (size_t)-1) {
		cJSON_Delete(params);
		return found == (size_t)-2 ? err_set("out of memory") : 0;
	}
	if (p->nruns >= SPEC_MAX_RUNS) {
		cJSON_Delete(params);
		return err_set("the spec expands to more than %d runs: make the grid or the seeds smaller",
			       SPEC_MAX_RUNS);
	}
	r = &p->runs[p->nruns];
	memset(r, 0, sizeof *r);
	snprintf(r->method, sizeof r->method, "%s", spec_method_names[m->id]);
	r->seed = seed;
	r->params = cJSON_CreateObject();
	cJSON_AddStringToObject(r->params, "label", m->label);
	cJSON_AddStringToObject(r->params, "scope", spec_scope_names[m->scope]);
	while (params->child) {
		cJSON *c = cJSON_DetachItemViaPointer(params, params->child);
		cJSON_AddItemToObject(r->params, c->string, c);
	}
	cJSON_Delete(params);
	b->cur = p->nruns++;
	return 1;
}

/* Every run of method `m`: its grid points times the seeds. */
static int s_method(struct spec_builder *b, const spec_t *s, const struct spec_method *m)
{
	const struct spec_param *grid[64];
	size_t sizes[64], ng = 0, total = 1, nseeds = m->id == SPEC_BASE ? 1 : s->nseeds;

	for (const struct spec_param *p = spec_params; p->name && ng < 64; p++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(m->params, p->name);
		if (!v || !spec_param_is_grid(p, v))
			continue;
		grid[ng] = p;
		sizes[ng] = (size_t)cJSON_GetArraySize(v);
		if (total > SPEC_MAX_RUNS / sizes[ng])
			return err_set("method '%s': the grid has more than %d points", m->label, SPEC_MAX_RUNS);
		total *= sizes[ng++];
	}
	for (size_t k = 0; k < total; k++) {
		cJSON *point = cJSON_CreateObject(), *v;
		size_t rest = k, g = 0;
		for (const struct spec_param *p = spec_params; p->name; p++) {
			const cJSON *pv = cJSON_GetObjectItemCaseSensitive(m->params, p->name);
			if (!pv)
				continue;
			if (g < ng && grid[g] == p) {
				v = cJSON_Duplicate(cJSON_GetArrayItem(pv, (int)(rest % sizes[g])), 1);
				rest /= sizes[g++];
			} else {
				v = cJSON_Duplicate(pv, 1);
			}
			cJSON_AddItemToObject(point, p->name, v);
		}
		for (size_t si = 0; si < nseeds; si++) {
			int rc = s_run_begin(b, m, cJSON_Duplicate(point, 1), s->seeds[si]);
			if (rc > 0)
				rc = spec_stage_run(b, s, m, b->p->runs[b->cur].params, s->seeds[si]);
			if (rc < 0) {
				cJSON_Delete(point);
				return err_prefix("method '%s'", m->label);
			}
		}
		cJSON_Delete(point);
	}
	return 0;
}

spec_plan_t *spec_expand(const spec_t *s)
{
	struct spec_builder b = { 0 };

	if (!(b.p = calloc(1, sizeof *b.p)))
		return err_set("out of memory"), NULL;
	snprintf(b.p->name, sizeof b.p->name, "%s", s->name);
	b.p->priority = s->priority;
	b.p->backend = s->backend;
	for (size_t i = 0; i < s->nmethods; i++)
		if (s_method(&b, s, &s->methods[i]) < 0) {
			spec_plan_destroy(&b.p);
			break;
		}
	free(b.jobs.slot);
	free(b.runs.slot);
	free(b.run_keys);
	return b.p;
}

void spec_plan_destroy(spec_plan_t **pp)
{
	spec_plan_t *p = pp ? *pp : NULL;

	if (!p)
		return;
	for (size_t i = 0; i < p->njobs; i++) {
		cJSON_Delete(p->jobs[i].spec);
		free(p->jobs[i].deps);
	}
	for (size_t i = 0; i < p->nruns; i++) {
		cJSON_Delete(p->runs[i].params);
		free(p->runs[i].jobs);
	}
	free(p->jobs);
	free(p->runs);
	free(p);
	*pp = NULL;
}
