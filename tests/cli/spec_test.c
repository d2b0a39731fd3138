/* tests/cli/spec_test.c: the spec language (daemon/spec*.c) without a
 * daemon: the catalogue of bad specs (tests/cli/specs/bad_NAME.json, each
 * with the messages it must produce in bad_NAME.err), grid expansion
 * counts, content keys shared where stages are equal (Flan and Res share
 * the universal expert; a router grid reuses the experts), determinism,
 * and the shipped specs in experiments/.
 */
#include "config.h"
#include "daemon/spec.h"
#include "fsx.h"
#include "jsonu.h"
#include "tap.h"
#include "version.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static const char *s_srcdir(void)
{
	const char *s = getenv("top_srcdir");

	return s ? s : ".";
}

/* Registry stand-ins: one model "tiny", one dataset "flan" (both splits). */
static int s_model(void *arg, const char *name, char sha[65])
{
	if (strcmp(name, "tiny") != 0)
		return 0;
	memset(sha, 'a', 64);
	sha[64] = 0;
	return 1;
}

static int s_dataset(void *arg, const char *name, const char *split, char sha[65])
{
	if (strcmp(name, "flan") != 0)
		return 0;
	memset(sha, split[1] == 'r' ? 'b' : 'c', 64);
	sha[64] = 0;
	return 1;
}

static const struct spec_lookup s_lk = { s_model, s_dataset, NULL };

static void s_bad(const char *dir, const char *file)
{
	char path[2400], *expect = NULL, *line, *save = NULL;
	spec_errors_t errs = { 0 };
	size_t len;
	cJSON *j;
	spec_t *s;
	int all = 1;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	j = jsonu_read_file(path);
	s = spec_parse(j, &s_lk, &errs);
	snprintf(path + strlen(path) - 4, 5, "err");
	if (fsx_read_all(path, &expect, &len) < 0) {
		TAP_OK(0, "%s: cannot read its .err file", file);
		goto out;
	}
	for (line = strtok_r(expect, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int found = 0;
		for (size_t i = 0; i < errs.n; i++)
			found |= strstr(errs.msg[i], line) != NULL;
		if (!found) {
			tap_diag("%s: no error contains '%s'; got:", file, line);
			for (size_t i = 0; i < errs.n; i++)
				tap_diag("  %s", errs.msg[i]);
			all = 0;
		}
	}
	TAP_OK(!s && errs.n > 0 && all, "%s is refused with its expected messages (%zu)", file, errs.n);
out:
	free(expect);
	spec_destroy(&s);
	spec_errors_free(&errs);
	cJSON_Delete(j);
}

static void s_catalogue(void)
{
	char dir[1024];
	struct dirent **names;
	int n, count = 0;

	snprintf(dir, sizeof dir, "%s/tests/cli/specs", s_srcdir());
	n = scandir(dir, &names, NULL, alphasort);
	for (int i = 0; i < n; i++) {
		size_t l = strlen(names[i]->d_name);
		if (!strncmp(names[i]->d_name, "bad_", 4) && l > 5 && !strcmp(names[i]->d_name + l - 5, ".json")) {
			s_bad(dir, names[i]->d_name);
			count++;
		}
		free(names[i]);
	}
	free(n > 0 ? names : NULL);
	TAP_OK(count >= 25, "the catalogue has %d bad specs", count);
}

static spec_plan_t *s_plan(const char *text)
{
	spec_errors_t errs = { 0 };
	cJSON *j = cJSON_Parse(text);
	spec_t *s = spec_parse(j, &s_lk, &errs);
	spec_plan_t *p = s ? spec_expand(s) : NULL;

	for (size_t i = 0; i < errs.n; i++)
		tap_diag("unexpected error: %s", errs.msg[i]);
	spec_errors_free(&errs);
	spec_destroy(&s);
	cJSON_Delete(j);
	return p;
}

/* What a job does: the stage of a `stage` job, "pretrain" for `train`,
 * else its kind (data, eval). */
static const char *s_what(const struct spec_job *j)
{
	const cJSON *st = cJSON_GetObjectItem(j->spec, "stage");

	if (!strcmp(j->kind, "train"))
		return "pretrain";
	return !strcmp(j->kind, "stage") && cJSON_IsString(st) ? st->valuestring : j->kind;
}

static size_t s_count(const spec_plan_t *p, const char *kind)
{
	size_t n = 0;

	for (size_t i = 0; i < p->njobs; i++)
		n += !strcmp(s_what(&p->jobs[i]), kind);
	return n;
}

/* The index of run `label` with `seed` (first match), or nruns. */
static size_t s_run(const spec_plan_t *p, const char *label, long long seed)
{
	for (size_t i = 0; i < p->nruns; i++)
		if (!strcmp(cJSON_GetObjectItem(p->runs[i].params, "label")->valuestring, label) &&
		    p->runs[i].seed == seed)
			return i;
	return p->nruns;
}

/* The job of `kind` in run `r`'s DAG (the first), or njobs. */
static size_t s_job_of(const spec_plan_t *p, size_t r, const char *kind)
{
	for (size_t i = 0; i < p->runs[r].njobs; i++)
		if (!strcmp(s_what(&p->jobs[p->runs[r].jobs[i]]), kind))
			return p->runs[r].jobs[i];
	return p->njobs;
}

static void s_grids(void)
{
	spec_plan_t *p = s_plan("{\"name\": \"g\", \"base_model\": {\"registry\": \"tiny\"},"
				" \"methods\": [\"base\", {\"method\": \"lora\", \"rank\": [4, 8]}],"
				" \"params\": {\"lr\": [0.001, 0.002, 0.003], \"router_lr\": [0.1, 0.2]},"
				" \"seeds\": [1, 2]}");

	TAP_OK(p && p->nruns == 1 + 3 * 2 * 2, "lr x rank x seeds: 12 lora runs + 1 base (got %zu); router_lr "
	       "does not multiply lora", p ? p->nruns : 0);
	TAP_OK(p && s_count(p, "joint") == 12 && s_count(p, "eval") == 13 && s_count(p, "pretrain") == 0,
	       "one joint and one eval per lora run, one eval for base, no pretrain for a registry model");
	spec_plan_destroy(&p);
	p = s_plan("{\"name\": \"g\", \"methods\": [{\"method\": \"lora\", \"lr\": [0.001, 0.001]}]}");
	TAP_OK(p && p->nruns == 1, "a value listed twice in a grid makes one run (got %zu)", p ? p->nruns : 0);
	spec_plan_destroy(&p);
	p = s_plan("{\"name\": \"g\", \"methods\": [{\"method\": \"lora\", \"targets\": [[\"q\"], [\"q\", \"v\"]]},"
		   " {\"method\": \"molora\", \"targets\": [\"q\", \"v\"]}]}");
	TAP_OK(p && p->nruns == 3, "targets: a list of lists is a grid, a list of names a value (got %zu runs)",
	       p ? p->nruns : 0);
	spec_plan_destroy(&p);
}

static void s_sharing(void)
{
	spec_plan_t *p = s_plan("{\"name\": \"s\", \"methods\": [\"modula-flan\", \"modula-res\","
				" {\"method\": \"modula-res\", \"name\": \"rlr\", \"router_lr\": [0.01, 0.1]}],"
				" \"seeds\": [1, 2]}");
	size_t f1, r1, f2, l1, l2;

	if (!TAP_OK(p != NULL, "a flan/res/router-lr sweep expands"))
		return;
	f1 = s_run(p, "modula-flan", 1);
	r1 = s_run(p, "modula-res", 1);
	f2 = s_run(p, "modula-flan", 2);
	l1 = s_run(p, "rlr", 1);
	l2 = l1 + 2;  /* runs go grid point by grid point, seeds inside: router_lr 0.1, seed 1 */
	TAP_OK(s_job_of(p, f1, "universal") == s_job_of(p, r1, "universal"),
	       "MoDULA-Flan and -Res of one seed share their universal job");
	TAP_OK(s_job_of(p, f1, "universal") != s_job_of(p, f2, "universal"), "another seed has its own universal job");
	TAP_OK(s_job_of(p, f1, "domain") != s_job_of(p, r1, "domain"), "Flan and Res domain experts differ");
	TAP_OK(s_job_of(p, r1, "domain") == s_job_of(p, l1, "domain") &&
	       s_job_of(p, l1, "domain") == s_job_of(p, l2, "domain"),
	       "router learning-rate variants reuse Res's domain experts");
	TAP_OK(s_job_of(p, l1, "router") != s_job_of(p, l2, "router"), "and train routers of their own");
	TAP_OK(s_count(p, "universal") == 2 && s_count(p, "domain") == 2 * 2 * 3 && s_count(p, "router") == 2 * 4 &&
	       s_count(p, "pretrain") == 1,
	       "2 universal, 12 domain, 8 router, 1 pretrain jobs (got %zu, %zu, %zu, %zu)", s_count(p, "universal"),
	       s_count(p, "domain"), s_count(p, "router"), s_count(p, "pretrain"));
	TAP_OK(p->jobs[s_job_of(p, r1, "universal")].run == f1, "a shared job belongs to the first run using it");
	spec_plan_destroy(&p);
}

static void s_keys(void)
{
	spec_plan_t *a = s_plan("{\"name\": \"k\", \"methods\": [\"modula-res\"], \"params\": {\"lr\": 0.001}}");
	spec_plan_t *b = s_plan("{\"params\": {\"lr\": 0.001}, \"methods\": [\"modula-res\"], \"name\": \"other\"}");
	spec_plan_t *c = s_plan("{\"name\": \"k\", \"methods\": [\"modula-res\"], \"params\": {\"lr\": 0.001,"
				" \"router_lr\": 0.5}}");
	cJSON *x = cJSON_Parse("{\"b\": 1, \"a\": [1.5, \"q\\\"\"], \"c\": {\"z\": null, \"y\": true}}");
	cJSON *y = cJSON_Parse("{\"c\": {\"y\": true, \"z\": null}, \"a\": [1.5, \"q\\\"\"], \"b\": 1.0}");
	char *cx = spec_canonical(x), *cy = spec_canonical(y);
	int same = a && b && a->njobs == b->njobs, router_only = a && c && a->njobs == c->njobs;

	TAP_OK(cx && cy && !strcmp(cx, cy) && !strcmp(cx, "{\"a\":[1.5,\"q\\\"\"],\"b\":1,\"c\":{\"y\":true,\"z\":null}}"),
	       "canonical JSON sorts keys and prints numbers one way (%s)", cx ? cx : "?");
	for (size_t i = 0; same && i < a->njobs; i++)
		same = !strcmp(a->jobs[i].key, b->jobs[i].key);
	TAP_OK(same, "the same spec (keys reordered, another name) gives the same content keys");
	for (size_t i = 0; router_only && i < a->njobs; i++) {
		int differs = strcmp(a->jobs[i].key, c->jobs[i].key) != 0;
		int downstream = !strcmp(s_what(&a->jobs[i]), "router") || !strcmp(s_what(&a->jobs[i]), "eval");
		router_only = differs == downstream;
	}
	TAP_OK(router_only, "changing router_lr changes only the router and eval keys");
	TAP_OK(a && strlen(a->jobs[0].key) == 64 && s_count(a, "universal") &&
	       cJSON_GetObjectItem(a->jobs[s_job_of(a, a->nruns - 1, "universal")].spec, "out_dir"),
	       "keys are 64 hex digits; training jobs carry out_dir");
	{
		char k1[65] = "", k1b[65] = "", k2[65] = "", kj[65] = "";
		const struct spec_job *j = a ? &a->jobs[0] : NULL;
		int rc = spec_hash("stage", x, 1, k1) | spec_hash("stage", x, 1, k1b) | spec_hash("stage", x, 2, k2);
		TAP_OK(!rc && !strcmp(k1, k1b) && strcmp(k1, k2),
		       "the engine's numerics version is in the key: version 1 twice the same, 2 another (%.12s, %.12s)",
		       k1, k2);
		TAP_OK(j && !spec_hash(j->kind, j->spec, MODULA_ENGINE_NUMERICS, kj) && !strcmp(kj, j->key),
		       "a job's content key is made with MODULA_ENGINE_NUMERICS (%d)", MODULA_ENGINE_NUMERICS);
	}
	free(cx);
	free(cy);
	cJSON_Delete(x);
	cJSON_Delete(y);
	spec_plan_destroy(&a);
	spec_plan_destroy(&b);
	spec_plan_destroy(&c);
}

/* experiments/NAME.json: it parses, and its runs and jobs are as counted. */
static void s_shipped(const char *name, size_t runs, size_t jobs)
{
	char path[1024];
	spec_errors_t errs = { 0 };
	spec_plan_t *p = NULL;
	cJSON *j;
	spec_t *s;

	snprintf(path, sizeof path, "%s/experiments/%s.json", s_srcdir(), name);
	j = jsonu_read_file(path);
	s = spec_parse(j, &s_lk, &errs);
	for (size_t i = 0; i < errs.n; i++)
		tap_diag("%s: %s", name, errs.msg[i]);
	if (s)
		p = spec_expand(s);
	TAP_OK(p && p->nruns == runs && p->njobs == jobs, "experiments/%s.json: %zu runs, %zu jobs (got %zu, %zu)",
	       name, runs, jobs, p ? p->nruns : 0, p ? p->njobs : 0);
	spec_plan_destroy(&p);
	spec_destroy(&s);
	spec_errors_free(&errs);
	cJSON_Delete(j);
}

int main(void)
{
	s_catalogue();
	s_grids();
	s_sharing();
	s_keys();
	/* Every spec below also has data jobs: the corpus and one suite job per
	 * domain, universal included (+5, add-domain +6 with its new domain). */
	/* quickstart: pretrain; base eval; lora, molora joint+eval; flan U+3D+R+E; res 3D+R+E (U shared). */
	s_shipped("quickstart", 5, 5 + 1 + 1 + 2 + 2 + 6 + 5);
	/* 3 seeds: base once; per seed U, 3 flan D, 3 res D, 2 R, 2 E. */
	s_shipped("flan-vs-res", 1 + 6, 5 + 1 + 1 + 3 * (1 + 6 + 2 + 2));
	/* per seed: res (U 3D R E), nores (3D R E), identity (3D R E), universal rank 8/32 (2x (U 3D R E)),
	 * domain rank 4/16 (2x (3D R E)), router lr x2 (R E each: the experts are res's). */
	s_shipped("ablations", 3 * 9, 5 + 1 + 3 * (6 + 5 + 5 + 12 + 10 + 4));
	/* per seed: res (U 3D R E), res/extend (new D, R', E), flan (3D R E), flan/extend (D R' E),
	 * molora and molora/all (joint E each); base (all domains) once. */
	s_shipped("add-domain", 1 + 3 * 6, 6 + 1 + 1 + 3 * (6 + 3 + 5 + 3 + 2 + 2));
	return tap_done();
}
