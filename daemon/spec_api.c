/* spec_api.c: see spec_api.h. The registry look-ups a spec needs (models
 * and datasets by name), and the submission of a plan: the experiment row,
 * one row per run, then the jobs in dependency order through
 * queue_submit() (whose content-key cache makes a job already done
 * elsewhere succeed at once), all in one transaction.
 * Not here: checking and expanding the spec (spec.c, spec_expand.c).
 */
#include "config.h"
#include "daemon/spec_api.h"
#include "daemon/spec.h"
#include "err.h"
#include "jsonu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_lookup(registry_t *r, const char *sql, const char *a, const char *b, char sha[65])
{
	sqlite3_stmt *st = registry_stmt(r, sql);
	const unsigned char *t;
	int rc;

	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
	if (b)
		sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		t = sqlite3_column_text(st, 0);
		snprintf(sha, 65, "%s", t ? (const char *)t : "");
		sqlite3_reset(st);
		return t ? 1 : 0;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : registry_err(r, "looking up");
}

static int s_model(void *arg, const char *name, char sha[65])
{
	return s_lookup(arg, "SELECT artifact FROM base_models WHERE name = ?", name, NULL, sha);
}

static int s_dataset(void *arg, const char *name, const char *split, char sha[65])
{
	return s_lookup(arg, "SELECT artifact FROM datasets WHERE name = ? AND split = ?", name, split, sha);
}

/* 400 with every message of `errs`. */
static void s_spec_errors(struct api_resp *resp, const spec_errors_t *errs)
{
	cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
	char msg[ERR_MSG_MAX];
	size_t n;

	n = (size_t)snprintf(msg, sizeof msg, "spec: %zu error%s: ", errs->n, errs->n == 1 ? "" : "s");
	for (size_t i = 0; i < errs->n; i++) {
		if (n < sizeof msg)
			n += (size_t)snprintf(msg + n, sizeof msg - n, "%s%s", i ? "; " : "", errs->msg[i]);
		cJSON_AddItemToArray(a, cJSON_CreateString(errs->msg[i]));
	}
	cJSON_AddStringToObject(o, "error", msg);
	cJSON_AddItemToObject(o, "errors", a);
	cJSON_AddNumberToObject(o, "status", 400);
	resp->status = 400;
	resp->type = "application/json";
	resp->body = jsonu_print(o);
	cJSON_Delete(o);
}

static int s_insert_experiment(registry_t *r, const char *name, const char *spec, int64_t now, int64_t *id)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT INTO experiments (name, spec, created_ms) VALUES (?, ?, ?)");

	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, spec, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, now);
	if (registry_step_done(r, st) < 0)
		return -1;
	*id = sqlite3_last_insert_rowid(registry_db(r));
	return 0;
}

static int s_insert_run(registry_t *r, int64_t exp, const struct spec_run *run, int64_t now, int64_t *id)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT INTO runs (experiment_id, method, seed, params, created_ms) "
					    "VALUES (?, ?, ?, ?, ?)");
	char *params = jsonu_print(run->params);
	int rc;

	if (!st || !params) {
		free(params);
		return st ? err_set("out of memory") : -1;
	}
	sqlite3_bind_int64(st, 1, exp);
	sqlite3_bind_text(st, 2, run->method, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, run->seed);
	sqlite3_bind_text(st, 4, params, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, now);
	rc = registry_step_done(r, st);
	free(params);
	*id = sqlite3_last_insert_rowid(registry_db(r));
	return rc;
}

/* Insert everything of `plan`; fills `out` (the 201 body). 0, or a
 * queue_rc (QUEUE_ERR with err_msg()). The caller owns the transaction. */
static int s_submit(const struct api_req *req, const spec_plan_t *p, const char *spec_text, cJSON *out)
{
	int64_t exp, *run_ids = calloc(p->nruns ? p->nruns : 1, sizeof *run_ids);
	int64_t *job_ids = calloc(p->njobs ? p->njobs : 1, sizeof *job_ids), deps[SPEC_MAX_DOMAINS + 4];
	cJSON *runs, *jobs, *counts;
	size_t cached = 0;
	int rc = QUEUE_ERR;

	if (!run_ids || !job_ids) {
		err_set("out of memory");
		goto out;
	}
	if (s_insert_experiment(req->r, p->name, spec_text, req->now_ms, &exp) < 0)
		goto out;
	cJSON_AddNumberToObject(out, "id", (double)exp);
	cJSON_AddStringToObject(out, "name", p->name);
	runs = cJSON_AddArrayToObject(out, "runs");
	for (size_t i = 0; i < p->nruns; i++) {
		if (s_insert_run(req->r, exp, &p->runs[i], req->now_ms, &run_ids[i]) < 0)
			goto out;
		cJSON_AddItemToArray(runs, cJSON_CreateNumber((double)run_ids[i]));
	}
	jobs = cJSON_AddArrayToObject(out, "jobs");
	for (size_t i = 0; i < p->njobs; i++) {
		const struct spec_job *j = &p->jobs[i];
		struct queue_submit s = { 0 };
		char *spec = jsonu_print(j->spec);
		cJSON *o;
		int hit = 0;
		if (!spec) {
			err_set("out of memory");
			goto out;
		}
		for (size_t k = 0; k < j->ndeps; k++)
			deps[k] = job_ids[j->deps[k]];
		s.kind = j->kind;
		s.spec_json = spec;
		s.priority = p->priority;
		s.content_key = j->key;
		s.deps = deps;
		s.ndeps = j->ndeps;
		s.backend = p->backend;
		s.run_id = run_ids[j->run];
		rc = queue_submit(req->q, &s, req->now_ms, &job_ids[i], &hit);
		free(spec);
		if (rc < 0) {
			err_prefix("job %zu (%s of run %zu)", i, j->kind, j->run);
			goto out;
		}
		cached += hit != 0;
		o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "id", (double)job_ids[i]);
		cJSON_AddStringToObject(o, "kind", j->kind);
		cJSON_AddNumberToObject(o, "run", (double)run_ids[j->run]);
		cJSON_AddStringToObject(o, "content_key", j->key);
		cJSON_AddBoolToObject(o, "cached", hit);
		cJSON_AddItemToArray(jobs, o);
	}
	counts = cJSON_AddObjectToObject(out, "counts");
	cJSON_AddNumberToObject(counts, "runs", (double)p->nruns);
	cJSON_AddNumberToObject(counts, "jobs", (double)p->njobs);
	cJSON_AddNumberToObject(counts, "cached", (double)cached);
	cJSON_AddNumberToObject(counts, "to_run", (double)(p->njobs - cached));
	rc = QUEUE_OK;
out:
	free(run_ids);
	free(job_ids);
	return rc;
}

void spec_api_submit(const struct api_req *req, const cJSON *body, struct api_resp *resp)
{
	struct spec_lookup lk = { s_model, s_dataset, req->r };
	spec_errors_t errs = { 0 };
	cJSON *json = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(body, "spec"), 1), *out = NULL;
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(body, "name");
	spec_plan_t *plan = NULL;
	spec_t *s = NULL;
	char *text = NULL;

	memset(resp, 0, sizeof *resp);
	if (cJSON_IsString(name) && cJSON_IsObject(json)) {
		cJSON_DeleteItemFromObjectCaseSensitive(json, "name");
		cJSON_AddStringToObject(json, "name", name->valuestring);
	}
	if (!(s = spec_parse(json, &lk, &errs))) {
		s_spec_errors(resp, &errs);
		goto out;
	}
	if (!(plan = spec_expand(s))) {
		api_error(resp, 400, "spec: %s", err_msg());
		goto out;
	}
	if (!(text = jsonu_print(json)) || !(out = cJSON_CreateObject())) {
		api_error(resp, 500, "out of memory");
		goto out;
	}
	if (queue_begin(req->q) < 0) {
		api_error(resp, 500, "registry error: %s", err_msg());
		goto out;
	}
	if (s_submit(req, plan, text, out) < 0) {
		char msg[ERR_MSG_MAX];
		snprintf(msg, sizeof msg, "%s", err_msg());
		queue_rollback(req->q);
		api_error(resp, 500, "registry error: %s (nothing was submitted)", msg);
		goto out;
	}
	if (queue_commit(req->q) < 0) {
		api_error(resp, 500, "registry error: %s", err_msg());
		goto out;
	}
	if (req->ctx->wake)
		req->ctx->wake(req->ctx->wake_arg);
	resp->status = 201;
	resp->type = "application/json";
	if (!(resp->body = jsonu_print(out)))
		api_error(resp, 500, "out of memory");
out:
	cJSON_Delete(out);
	free(text);
	spec_plan_destroy(&plan);
	spec_destroy(&s);
	spec_errors_free(&errs);
	cJSON_Delete(json);
}
