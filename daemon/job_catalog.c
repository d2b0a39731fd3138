/* job_catalog.c: catalogue rows from succeeded jobs; see job_catalog.h. */
#include "config.h"
#include "daemon/job_catalog.h"
#include "err.h"
#include "jsonu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_NAME_MAX 512

/* The last value of the job's metric "records.OUTPUT", or -1. */
static int64_t s_records(registry_t *r, int64_t job, const char *output)
{
	sqlite3_stmt *st = registry_stmt(r, "SELECT value FROM metrics WHERE job_id = ? AND key = ? "
					    "ORDER BY step DESC LIMIT 1");
	char key[S_NAME_MAX];
	int64_t n = -1;

	if (!st)
		return -1;
	snprintf(key, sizeof key, "records.%s", output);
	sqlite3_bind_int64(st, 1, job);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		n = (int64_t)sqlite3_column_double(st, 0);
	sqlite3_reset(st);
	return n;
}

static long long s_int(const cJSON *o, const char *key, long long def)
{
	long long v;

	return jsonu_opt_int(o, key, def, &v) < 0 ? def : v;
}

/* One output of a data job as a dataset row. */
static int s_data(registry_t *r, int64_t job, const cJSON *spec, const char *out, const char *sha, int64_t now)
{
	const cJSON *su = cJSON_GetObjectItemCaseSensitive(spec, "suite");
	const cJSON *co = cJSON_GetObjectItemCaseSensitive(spec, "corpus");
	struct registry_dataset d = { 0 };
	char name[S_NAME_MAX], dom[S_NAME_MAX / 2];
	const char *dot = strrchr(out, '.');

	d.sha256 = sha, d.rows = s_records(r, job, out), d.name = name;
	if (su && dot) {
		snprintf(dom, sizeof dom, "%.*s", (int)(dot - out), out);
		snprintf(name, sizeof name, "suite-%s-s%lld-l%lld-%lld-%lld", dom, s_int(su, "seed", 1),
			 s_int(su, "level", 2), s_int(su, "train", 2000), s_int(su, "test", 200));
		d.domain = dom, d.split = dot + 1;
	} else if (co) {
		snprintf(name, sizeof name, "fortunes-s%lld-b%lld", s_int(co, "seed", 1), s_int(co, "record_bytes", 120));
		d.domain = "general", d.split = out;
	} else {
		return 0;
	}
	return registry_add_dataset(r, &d, now);
}

/* The pretraining job's model as a base model. */
static int s_pretrain(registry_t *r, int64_t job, const cJSON *spec, const char *out, const char *sha, int64_t now)
{
	char name[S_NAME_MAX], *config;
	int rc;

	if (strcmp(out, "model_weights"))
		return 0;
	cJSON *c = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(c, "embedded");
	cJSON_AddNumberToObject(e, "seed", (double)s_int(spec, "seed", 0));
	cJSON_AddNumberToObject(e, "steps", (double)s_int(spec, "steps", 0));
	cJSON_AddNumberToObject(c, "job", (double)job);
	config = jsonu_print(c);
	cJSON_Delete(c);
	if (!config)
		return err_set("out of memory");
	snprintf(name, sizeof name, "embedded-s%lld-%lld", s_int(spec, "seed", 0), s_int(spec, "steps", 0));
	rc = registry_add_base_model(r, name, sha, config, now);
	free(config);
	return rc;
}

/* The base model row of the model a stage reads (in/base), or 0. */
static int64_t s_base_model(registry_t *r, const cJSON *spec)
{
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(spec, "inputs"),
							   "in/base/model.safetensors");
	const cJSON *key = cJSON_GetObjectItemCaseSensitive(in, "key");
	sqlite3_stmt *st;
	int64_t id = 0;

	if (!cJSON_IsString(key) || !(st = registry_stmt(r, "SELECT b.id FROM base_models b "
							 "JOIN job_outputs o ON o.sha256 = b.artifact "
							 "JOIN jobs j ON j.id = o.job_id "
							 "WHERE j.content_key = ? AND o.name = 'model_weights' LIMIT 1")))
		return 0;
	sqlite3_bind_text(st, 1, key->valuestring, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW)
		id = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return id;
}

/* "METHOD/D1+D2...": the domain experts a router weighs (the stage's
 * input experts, or, for molora, the experts it trained). */
static void s_router_name(char *name, size_t cap, const cJSON *spec, const char *method, const cJSON *outs)
{
	const cJSON *ex = cJSON_GetObjectItemCaseSensitive(spec, "experts"), *list = ex ? ex : outs, *it;
	size_t n = (size_t)snprintf(name, cap, "%s/", method);
	const char *sep = "";

	cJSON_ArrayForEach(it, list) {
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
		if (!cJSON_IsString(nm) || !strcmp(nm->valuestring, "universal") || !strcmp(nm->valuestring, "router") ||
		    !strcmp(nm->valuestring, "bundle") || n >= cap)
			continue;
		n += (size_t)snprintf(name + n, cap - n, "%s%s", sep, nm->valuestring);
		sep = "+";
	}
}

/* A stage's experts and router. `outs`: [{"name", "sha256"}]. */
static int s_stage(registry_t *r, int64_t job, const cJSON *spec, const cJSON *outs, int64_t now)
{
	const char *method = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(spec, "method"));
	int64_t base = s_base_model(r, spec);
	char name[S_NAME_MAX];
	const cJSON *o;

	if (!method)
		return 0;
	cJSON_ArrayForEach(o, outs) {
		const char *out = cJSON_GetObjectItem(o, "name")->valuestring;
		const char *sha = cJSON_GetObjectItem(o, "sha256")->valuestring;
		int uni = !strcmp(out, "universal");
		if (!strcmp(out, "router")) {
			s_router_name(name, sizeof name, spec, method, outs);
			if (registry_add_router(r, name, method, base, sha, job, now) < 0)
				return -1;
			continue;
		}
		if (!strcmp(out, "bundle") || !strncmp(out, "adapter_", 8) || !strcmp(method, "molora"))
			continue;
		struct registry_expert e = { name, uni ? "universal" : "domain", uni ? NULL : out, sha, 0, base, job };
		e.rank = (int)s_int(cJSON_GetObjectItemCaseSensitive(spec, uni ? "universal" : "domain"), "rank",
				    uni ? 16 : 8);
		snprintf(name, sizeof name, "%s/%s", method, out);
		if (registry_add_expert(r, &e, now) < 0)
			return -1;
	}
	return 0;
}

int job_catalog_add(registry_t *r, int64_t job_id, int64_t now_ms)
{
	sqlite3_stmt *st = registry_stmt(r, "SELECT kind, spec FROM jobs WHERE id = ?");
	sqlite3_stmt *os = registry_stmt(r, "SELECT name, sha256 FROM job_outputs WHERE job_id = ?");
	cJSON *spec = NULL, *outs = cJSON_CreateArray(), *o;
	const cJSON *model;
	char kind[32] = "";
	int rc = -1;

	if (!st || !os)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(st, 1);
		snprintf(kind, sizeof kind, "%s", (const char *)sqlite3_column_text(st, 0));
		spec = text ? cJSON_Parse(text) : NULL;
	}
	sqlite3_reset(st);
	if (!cJSON_IsObject(spec)) {
		rc = 0;
		goto out;
	}
	sqlite3_bind_int64(os, 1, job_id);
	while (sqlite3_step(os) == SQLITE_ROW) {
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "name", (const char *)sqlite3_column_text(os, 0));
		cJSON_AddStringToObject(o, "sha256", (const char *)sqlite3_column_text(os, 1));
		cJSON_AddItemToArray(outs, o);
	}
	sqlite3_reset(os);
	model = cJSON_GetObjectItemCaseSensitive(spec, "model");
	if (!strcmp(kind, "stage")) {
		rc = s_stage(r, job_id, spec, outs, now_ms);
		goto out;
	}
	rc = 0;
	cJSON_ArrayForEach(o, outs) {
		const char *out = cJSON_GetObjectItem(o, "name")->valuestring;
		const char *sha = cJSON_GetObjectItem(o, "sha256")->valuestring;
		if (!strcmp(kind, "data"))
			rc = s_data(r, job_id, spec, out, sha, now_ms);
		else if (!strcmp(kind, "train") && cJSON_IsString(model) && !strcmp(model->valuestring, "random"))
			rc = s_pretrain(r, job_id, spec, out, sha, now_ms);
		if (rc < 0)
			break;
	}
out:
	cJSON_Delete(spec);
	cJSON_Delete(outs);
	return rc;
}
