/* api.c: see api.h. Routes below /api/v1, each a small function from a
 * request to JSON. Lists share one pager (s_list: filters, an allow-list of
 * sort columns, keyset paging) and one row-to-JSON conversion (s_row_json):
 * a column holding JSON text is returned as JSON.
 */
#include "config.h"
#include "daemon/api.h"
#include "daemon/spec_api.h"
#include "err.h"
#include "jsonu.h"
#include "version.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_LIMIT_DEFAULT 100
#define API_LIMIT_MAX 1000
#define API_BATCH_MAX 10000
#define API_SQL_MAX 1024

static const char s_json[] = "application/json";

void api_error(struct api_resp *resp, int status, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	cJSON *o = cJSON_CreateObject();
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	cJSON_AddStringToObject(o, "error", msg);
	cJSON_AddNumberToObject(o, "status", status);
	resp->status = status;
	resp->type = s_json;
	free(resp->body);
	resp->body = jsonu_print(o);
	cJSON_Delete(o);
}

/* Answer `o` (consumed) with `status`. */
static void s_reply(struct api_resp *resp, int status, cJSON *o)
{
	resp->body = o ? jsonu_print(o) : NULL;
	cJSON_Delete(o);
	if (!resp->body) {
		api_error(resp, 500, "out of memory answering");
		return;
	}
	resp->status = status;
	resp->type = s_json;
}

static void s_db_error(struct api_resp *resp)
{
	api_error(resp, 500, "registry error: %s", err_msg());
}

/* ---- query parameters ------------------------------------------------------ */

static const char *s_arg(const struct api_req *req, const char *name)
{
	return req->conn ? MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name) : NULL;
}

struct arg_check {
	const char *const *allowed;
	const char *bad;
};

static enum MHD_Result s_arg_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct arg_check *c = cls;

	(void)kind;
	(void)value;
	for (const char *const *a = c->allowed; *a; a++)
		if (strcmp(key, *a) == 0)
			return MHD_YES;
	c->bad = key;
	return MHD_NO;
}

/* Refuse query parameters not in `allowed` (400 filled in). */
static int s_check_args(const struct api_req *req, struct api_resp *resp, const char *const *allowed)
{
	struct arg_check c = { allowed, NULL };

	if (req->conn)
		MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, s_arg_iter, &c);
	if (c.bad) {
		api_error(resp, 400, "unknown query parameter '%.100s'", c.bad);
		return -1;
	}
	return 0;
}

/* An integer parameter in [lo, hi]; `def` when absent. */
static int s_arg_int(const struct api_req *req, struct api_resp *resp, const char *name, long long def,
		     long long lo, long long hi, long long *out)
{
	const char *v = s_arg(req, name);
	char *end;

	*out = def;
	if (!v)
		return 0;
	errno = 0;
	*out = strtoll(v, &end, 10);
	if (errno || end == v || *end || *out < lo || *out > hi) {
		api_error(resp, 400, "query parameter '%s': expected an integer from %lld to %lld, got '%.60s'",
			  name, lo, hi, v);
		return -1;
	}
	return 0;
}

/* ---- rows as JSON -------------------------------------------------------- */

static int s_is_json_col(const char *name)
{
	static const char *const cols[] = { "spec", "result", "params", "config", "detail", NULL };

	for (const char *const *c = cols; *c; c++)
		if (strcmp(name, *c) == 0)
			return 1;
	return 0;
}

static cJSON *s_row_json(sqlite3_stmt *st)
{
	cJSON *o = cJSON_CreateObject();
	int n = sqlite3_column_count(st);

	for (int i = 0; o && i < n; i++) {
		const char *name = sqlite3_column_name(st, i);
		const char *text;
		cJSON *v = NULL;
		switch (sqlite3_column_type(st, i)) {
		case SQLITE_INTEGER:
			v = cJSON_CreateNumber((double)sqlite3_column_int64(st, i));
			break;
		case SQLITE_FLOAT:
			v = cJSON_CreateNumber(sqlite3_column_double(st, i));
			break;
		case SQLITE_NULL:
			v = cJSON_CreateNull();
			break;
		default:
			text = (const char *)sqlite3_column_text(st, i);
			if (s_is_json_col(name))
				v = cJSON_Parse(text);
			if (!v)
				v = cJSON_CreateString(text ? text : "");
		}
		cJSON_AddItemToObject(o, name, v);
	}
	return o;
}

/* Every row of `st` (already bound) into an array; NULL via err_set(). */
static cJSON *s_rows(registry_t *r, sqlite3_stmt *st)
{
	cJSON *a = cJSON_CreateArray();
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cJSON_AddItemToArray(a, s_row_json(st));
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		registry_err(r, "listing");
		cJSON_Delete(a);
		return NULL;
	}
	return a;
}

/* ---- lists with filters, sorting and paging -------------------------------- */

struct filter {
	const char *param;   /* query parameter */
	const char *sql;     /* condition with one '?' */
	int is_int;
};

/* A column a list may be sorted by: `sort=param` orders by `expr`, then
 * by id. Only these fixed texts ever reach the SQL; each expr is never
 * NULL (ifnull() where the column may be) so that the keyset condition
 * (expr, id) > (?, ?) holds for every row, and each has an index on
 * (expr, id) (schema/002_list_sort.sql) so a page is a range of it. */
struct sort_key {
	const char *param;
	const char *expr;
};

struct list_spec {
	const char *table;   /* the table, whose key column is `id` */
	const char *select;  /* "SELECT ... FROM table" */
	struct filter filters[6];
	struct sort_key sorts[8]; /* besides id, which every list sorts by */
};

/* Shared query parameters of every list. */
static int s_list_args(const struct list_spec *ls, const struct api_req *req, struct api_resp *resp)
{
	const char *allowed[12] = { "limit", "after", "order", "sort" };
	size_t n = 4;

	for (const struct filter *f = ls->filters; f->param; f++)
		allowed[n++] = f->param;
	allowed[n] = NULL;
	return s_check_args(req, resp, allowed);
}

/* The sort expression `sort=` names: "id" when absent; NULL with a 400
 * filled in when the list has no such sort. */
static const char *s_sort_expr(const struct list_spec *ls, const struct api_req *req, struct api_resp *resp)
{
	const char *v = s_arg(req, "sort");
	char names[256];
	size_t len;

	if (!v || strcmp(v, "id") == 0)
		return "id";
	for (const struct sort_key *k = ls->sorts; k->param; k++)
		if (strcmp(v, k->param) == 0)
			return k->expr;
	len = (size_t)snprintf(names, sizeof names, "id");
	for (const struct sort_key *k = ls->sorts; k->param && len < sizeof names; k++)
		len += (size_t)snprintf(names + len, sizeof names - len, ", %s", k->param);
	api_error(resp, 400, "query parameter 'sort': cannot sort %s by '%.60s': expected one of %s", ls->table, v,
		  names);
	return NULL;
}

/* The sort value of the cursor row `after` (for a sort other than id): a
 * copy to sqlite3_value_free(), or NULL with resp filled in. */
static sqlite3_value *s_cursor_value(const struct list_spec *ls, const char *expr, const struct api_req *req,
				     long long after, struct api_resp *resp)
{
	char sql[API_SQL_MAX];
	sqlite3_value *v = NULL;
	sqlite3_stmt *st;
	int rc;

	snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE id = ?", expr, ls->table);
	if (!(st = registry_stmt(req->r, sql))) {
		s_db_error(resp);
		return NULL;
	}
	sqlite3_bind_int64(st, 1, after);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && !(v = sqlite3_value_dup(sqlite3_column_value(st, 0))))
		api_error(resp, 500, "out of memory reading the cursor");
	else if (rc == SQLITE_DONE)
		api_error(resp, 400, "query parameter 'after': no row %lld in %s to continue a sorted list from "
			  "(start again without 'after')", after, ls->table);
	else if (rc != SQLITE_ROW) {
		registry_err(req->r, "reading the cursor");
		s_db_error(resp);
	}
	sqlite3_reset(st);
	return v;
}

/* GET of a list: filters, then `sort` (a column of the list's allow-list,
 * id by default) in `order` (asc, or desc), then `after` (the id of the
 * row the page starts after: keyset paging on (sort value, id), so every
 * page is a seek into an index, whatever its depth) and `limit`. Answers
 * {"items": [...], "next": id|null}. */
static void s_list(const struct list_spec *ls, const struct api_req *req, struct api_resp *resp)
{
	char sql[API_SQL_MAX];
	const char *order = s_arg(req, "order"), *expr, *dir;
	long long limit, after;
	int desc, k, nb = 0, bind_int[8];
	const char *bind[8];
	sqlite3_value *cursor = NULL;
	sqlite3_stmt *st;
	cJSON *items, *o;
	size_t len;

	if (s_list_args(ls, req, resp) < 0 || !(expr = s_sort_expr(ls, req, resp)) ||
	    s_arg_int(req, resp, "limit", API_LIMIT_DEFAULT, 1, API_LIMIT_MAX, &limit) < 0 ||
	    s_arg_int(req, resp, "after", 0, 0, INT64_MAX, &after) < 0)
		return;
	if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
		api_error(resp, 400, "query parameter 'order': expected asc or desc, got '%.40s'", order);
		return;
	}
	desc = order && strcmp(order, "desc") == 0;
	dir = desc ? "DESC" : "ASC";
	len = (size_t)snprintf(sql, sizeof sql, "%s WHERE 1", ls->select);
	for (const struct filter *f = ls->filters; f->param; f++) {
		const char *v = s_arg(req, f->param);
		long long iv;
		if (!v)
			continue;
		if (f->is_int && s_arg_int(req, resp, f->param, 0, INT64_MIN, INT64_MAX, &iv) < 0)
			return;
		len += (size_t)snprintf(sql + len, sizeof sql - len, " AND %s", f->sql);
		bind[nb] = v;
		bind_int[nb++] = f->is_int;
	}
	if (strcmp(expr, "id") == 0) {
		if (after)
			len += (size_t)snprintf(sql + len, sizeof sql - len, desc ? " AND id < ?" : " AND id > ?");
		k = snprintf(sql + len, sizeof sql - len, " ORDER BY id %s LIMIT ?", dir);
	} else {
		if (after && !(cursor = s_cursor_value(ls, expr, req, after, resp)))
			return;
		/* The first condition is implied by the second: it is there so
		 * SQLite seeks an index on an expression instead of scanning it. */
		if (after)
			len += (size_t)snprintf(sql + len, sizeof sql - len, " AND %s %s ? AND (%s, id) %s (?, ?)", expr,
						desc ? "<=" : ">=", expr, desc ? "<" : ">");
		k = snprintf(sql + len, sizeof sql - len, " ORDER BY %s %s, id %s LIMIT ?", expr, dir, dir);
	}
	if (k < 0 || (size_t)k >= sizeof sql - len) {
		api_error(resp, 500, "list query too long");
		goto out;
	}
	if (!(st = registry_stmt(req->r, sql))) {
		s_db_error(resp);
		goto out;
	}
	for (int i = 0; i < nb; i++) {
		if (bind_int[i])
			sqlite3_bind_int64(st, i + 1, strtoll(bind[i], NULL, 10));
		else
			sqlite3_bind_text(st, i + 1, bind[i], -1, SQLITE_TRANSIENT);
	}
	if (cursor) {
		sqlite3_bind_value(st, ++nb, cursor);
		sqlite3_bind_value(st, ++nb, cursor);
	}
	if (after)
		sqlite3_bind_int64(st, ++nb, after);
	sqlite3_bind_int64(st, nb + 1, limit);
	if (!(items = s_rows(req->r, st))) {
		s_db_error(resp);
		goto out;
	}
	o = cJSON_CreateObject();
	k = cJSON_GetArraySize(items);
	if (k == limit)
		cJSON_AddNumberToObject(o, "next",
			cJSON_GetObjectItem(cJSON_GetArrayItem(items, k - 1), "id")->valuedouble);
	else
		cJSON_AddNullToObject(o, "next");
	cJSON_AddItemToObject(o, "items", items);
	s_reply(resp, 200, o);
out:
	sqlite3_value_free(cursor);
}

static const char s_job_cols[] =
	"SELECT id, run_id AS run, kind, state, priority, attempts, max_attempts, content_key, "
	"CASE backend WHEN 2 THEN 'cuda' ELSE 'cpu' END AS backend, min_gpu_mem_mb, lease_owner, "
	"lease_deadline, backoff_until, worker, checkpoint, error, cached_from, "
	"created_ms, ready_ms, leased_ms, started_ms, finished_ms FROM jobs";

static const struct list_spec s_jobs = {
	"jobs", s_job_cols,
	{ { "state", "state = ?", 0 }, { "kind", "kind = ?", 0 }, { "run", "run_id = ?", 1 },
	  { "worker", "worker = ?", 0 }, { NULL, NULL, 0 } },
	{ { "state", "state" }, { "kind", "kind" }, { "priority", "priority" }, { "run", "ifnull(run_id, 0)" },
	  { "created_ms", "created_ms" }, { NULL, NULL } },
};
static const struct list_spec s_experiments = {
	"experiments", "SELECT id, name, created_ms FROM experiments",
	{ { "name", "name = ?", 0 }, { NULL, NULL, 0 } },
	{ { "name", "name" }, { "created_ms", "created_ms" }, { NULL, NULL } },
};
static const struct list_spec s_runs = {
	"runs", "SELECT id, experiment_id AS experiment, method, seed, params, created_ms FROM runs",
	{ { "experiment", "experiment_id = ?", 1 }, { "method", "method = ?", 0 }, { "seed", "seed = ?", 1 },
	  { NULL, NULL, 0 } },
	{ { "experiment", "ifnull(experiment_id, 0)" }, { "method", "method" }, { "seed", "seed" },
	  { "created_ms", "created_ms" }, { NULL, NULL } },
};
static const struct list_spec s_evaluations = {
	"evaluations", "SELECT id, run_id AS run, job_id AS job, domain, metric, value, created_ms FROM evaluations",
	{ { "run", "run_id = ?", 1 }, { "job", "job_id = ?", 1 }, { "domain", "domain = ?", 0 },
	  { "metric", "metric = ?", 0 }, { NULL, NULL, 0 } },
	{ { NULL, NULL } },
};
static const struct list_spec s_models = {
	"base_models", "SELECT id, name, artifact, config, created_ms FROM base_models",
	{ { "name", "name = ?", 0 }, { NULL, NULL, 0 } }, { { NULL, NULL } },
};
static const struct list_spec s_datasets = {
	"datasets", "SELECT id, name, domain, split, artifact, rows, created_ms FROM datasets",
	{ { "domain", "domain = ?", 0 }, { "split", "split = ?", 0 }, { NULL, NULL, 0 } }, { { NULL, NULL } },
};
static const struct list_spec s_experts = {
	"experts", "SELECT id, name, role, domain, rank, base_model, artifact, job_id AS job, created_ms FROM experts",
	{ { "role", "role = ?", 0 }, { "domain", "domain = ?", 0 }, { "job", "job_id = ?", 1 }, { NULL, NULL, 0 } },
	{ { NULL, NULL } },
};
static const struct list_spec s_routers = {
	"routers", "SELECT id, name, kind, base_model, artifact, job_id AS job, created_ms FROM routers",
	{ { "job", "job_id = ?", 1 }, { NULL, NULL, 0 } }, { { NULL, NULL } },
};
static const struct list_spec s_events = {
	"events", "SELECT id, t_ms, kind, job_id AS job, actor, detail FROM events",
	{ { "job", "job_id = ?", 1 }, { "kind", "kind = ?", 0 }, { NULL, NULL, 0 } }, { { NULL, NULL } },
};
static const struct list_spec s_artifacts = {
	"artifacts", "SELECT id, sha256, size, kind, created_ms FROM artifacts",
	{ { "kind", "kind = ?", 0 }, { NULL, NULL, 0 } }, { { NULL, NULL } },
};

/* One row of `select` with id = ? as an object, or NULL (err_msg set, or
 * *missing = 1). */
static cJSON *s_one(registry_t *r, const char *select, int64_t id, int *missing)
{
	char sql[API_SQL_MAX];
	sqlite3_stmt *st;
	cJSON *o = NULL;
	int rc;

	*missing = 0;
	snprintf(sql, sizeof sql, "%s WHERE id = ?", select);
	if (!(st = registry_stmt(r, sql)))
		return NULL;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		o = s_row_json(st);
	else if (rc == SQLITE_DONE)
		*missing = 1;
	else
		registry_err(r, "reading");
	sqlite3_reset(st);
	return o;
}

/* Rows of `sql` with one integer parameter, as an array added to `o`. */
static int s_add_rows(registry_t *r, cJSON *o, const char *name, const char *sql, int64_t id)
{
	sqlite3_stmt *st = registry_stmt(r, sql);
	cJSON *a;

	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	if (!(a = s_rows(r, st)))
		return -1;
	cJSON_AddItemToObject(o, name, a);
	return 0;
}

/* ---- handlers ------------------------------------------------------------ */

typedef void (*handler_fn)(const struct api_req *req, int64_t id, struct api_resp *resp);

static void h_health(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "status", "ok");
	cJSON_AddStringToObject(o, "version", PACKAGE_VERSION);
	cJSON_AddNumberToObject(o, "schema", registry_schema_version());
	cJSON_AddNumberToObject(o, "uptime_ms", (double)(req->now_ms - req->ctx->started_ms));
	s_reply(resp, 200, o);
}

#define LIST_HANDLER(name, spec) \
	static void name(const struct api_req *req, int64_t id, struct api_resp *resp) \
	{ \
		s_list(&(spec), req, resp); \
	}
LIST_HANDLER(h_jobs, s_jobs)
LIST_HANDLER(h_experiments, s_experiments)
LIST_HANDLER(h_runs, s_runs)
LIST_HANDLER(h_evaluations, s_evaluations)
LIST_HANDLER(h_models, s_models)
LIST_HANDLER(h_datasets, s_datasets)
LIST_HANDLER(h_experts, s_experts)
LIST_HANDLER(h_routers, s_routers)
LIST_HANDLER(h_events, s_events)
LIST_HANDLER(h_artifacts, s_artifacts)

static void h_workers(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	static const char *const none[] = { NULL };
	sqlite3_stmt *st;
	cJSON *a, *o;

	if (s_check_args(req, resp, none) < 0)
		return;
	st = registry_stmt(req->r, "SELECT w.id, host, CASE backend WHEN 2 THEN 'cuda' ELSE 'cpu' END AS backend, "
				   "gpu_mem_mb, slots, w.state, first_seen, last_seen, "
				   "(SELECT count(*) FROM jobs j WHERE j.lease_owner = w.id AND j.state IN "
				   "('leased', 'running')) AS jobs FROM workers w ORDER BY w.state DESC, w.id");
	if (!st || !(a = s_rows(req->r, st))) {
		s_db_error(resp);
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddItemToObject(o, "items", a);
	s_reply(resp, 200, o);
}

static void s_show(const struct api_req *req, struct api_resp *resp, const char *what, const char *select,
		   int64_t id, cJSON **out)
{
	int missing;

	*out = s_one(req->r, select, id, &missing);
	if (!*out) {
		if (missing)
			api_error(resp, 404, "no %s %lld", what, (long long)id);
		else
			s_db_error(resp);
	}
}

static void h_job(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	static const char sql[] =
		"SELECT id, run_id AS run, kind, state, priority, attempts, max_attempts, content_key, "
		"CASE backend WHEN 2 THEN 'cuda' ELSE 'cpu' END AS backend, min_gpu_mem_mb, spec, lease_owner, "
		"lease_deadline, backoff_until, worker, checkpoint, result, error, cached_from, created_ms, "
		"ready_ms, leased_ms, started_ms, finished_ms FROM jobs";
	cJSON *o;

	s_show(req, resp, "job", sql, id, &o);
	if (!o)
		return;
	if (s_add_rows(req->r, o, "deps", "SELECT dep_id AS id, state FROM job_deps JOIN jobs ON jobs.id = dep_id "
					  "WHERE job_id = ? ORDER BY dep_id", id) < 0 ||
	    s_add_rows(req->r, o, "dependents", "SELECT job_id AS id FROM job_deps WHERE dep_id = ? ORDER BY job_id",
		       id) < 0 ||
	    s_add_rows(req->r, o, "outputs", "SELECT name, sha256 FROM job_outputs WHERE job_id = ? ORDER BY name",
		       id) < 0) {
		cJSON_Delete(o);
		s_db_error(resp);
		return;
	}
	s_reply(resp, 200, o);
}

static void h_experiment(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	cJSON *o;

	s_show(req, resp, "experiment", "SELECT id, name, spec, created_ms FROM experiments", id, &o);
	if (!o)
		return;
	if (s_add_rows(req->r, o, "runs", "SELECT id, method, seed, params FROM runs WHERE experiment_id = ? "
					  "ORDER BY id", id) < 0) {
		cJSON_Delete(o);
		s_db_error(resp);
		return;
	}
	s_reply(resp, 200, o);
}

static void h_run(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	cJSON *o;

	s_show(req, resp, "run", "SELECT id, experiment_id AS experiment, method, seed, params, created_ms FROM runs",
	       id, &o);
	if (!o)
		return;
	if (s_add_rows(req->r, o, "jobs", "SELECT id, kind, state, attempts, finished_ms FROM jobs "
					  "WHERE run_id = ? ORDER BY id", id) < 0 ||
	    s_add_rows(req->r, o, "evaluations", "SELECT job_id AS job, domain, metric, value FROM evaluations "
						 "WHERE run_id = ? ORDER BY id", id) < 0) {
		cJSON_Delete(o);
		s_db_error(resp);
		return;
	}
	s_reply(resp, 200, o);
}

/* GET .../metrics: without `key`, the keys and their point counts; with
 * it, the points [step, value, t_ms] after `after_step`, in step order. */
static void s_series(const struct api_req *req, struct api_resp *resp, const char *col, int64_t id)
{
	static const char *const allowed[] = { "key", "after_step", "limit", NULL };
	const char *key = s_arg(req, "key");
	char sql[256];
	long long after, limit;
	sqlite3_stmt *st;
	cJSON *o, *pts;
	int rc;

	if (s_check_args(req, resp, allowed) < 0 ||
	    s_arg_int(req, resp, "after_step", -1, -1, INT64_MAX, &after) < 0 ||
	    s_arg_int(req, resp, "limit", 10000, 1, 100000, &limit) < 0)
		return;
	o = cJSON_CreateObject();
	if (!key) {
		snprintf(sql, sizeof sql, "SELECT key, count(*) AS points, max(step) AS last_step FROM metrics "
					  "WHERE %s = ? GROUP BY key ORDER BY key", col);
		if (s_add_rows(req->r, o, "keys", sql, id) < 0)
			goto db_err;
		s_reply(resp, 200, o);
		return;
	}
	snprintf(sql, sizeof sql, "SELECT step, value, t_ms FROM metrics WHERE %s = ? AND key = ? AND step > ? "
				  "ORDER BY step LIMIT ?", col);
	if (!(st = registry_stmt(req->r, sql)))
		goto db_err;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, after);
	sqlite3_bind_int64(st, 4, limit);
	cJSON_AddStringToObject(o, "key", key);
	pts = cJSON_AddArrayToObject(o, "points");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		cJSON *p = cJSON_CreateArray();
		cJSON_AddItemToArray(p, cJSON_CreateNumber((double)sqlite3_column_int64(st, 0)));
		cJSON_AddItemToArray(p, cJSON_CreateNumber(sqlite3_column_double(st, 1)));
		cJSON_AddItemToArray(p, cJSON_CreateNumber((double)sqlite3_column_int64(st, 2)));
		cJSON_AddItemToArray(pts, p);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		registry_err(req->r, "reading metrics");
		goto db_err;
	}
	s_reply(resp, 200, o);
	return;
db_err:
	cJSON_Delete(o);
	s_db_error(resp);
}

static void h_job_metrics(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	s_series(req, resp, "job_id", id);
}

static void h_run_metrics(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	s_series(req, resp, "run_id", id);
}

/* The offset of the first byte of `s` that is NUL or not well-formed UTF-8
 * (RFC 3629: no overlongs, surrogates or code points past U+10FFFF), or
 * `len` when there is none. cJSON takes bytes as they come, and a NUL
 * would cut a string short after it was checked. */
static size_t s_utf8_bad(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 4;
		unsigned cp = n == 0 ? c : n == 1 ? c & 0x1fu : n == 2 ? c & 0x0fu : c & 0x07u;

		if (c == 0 || n == 4 || len - i <= n)
			return i;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3fu);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n + 1;
	}
	return len;
}

/* A body that must be a JSON object with only `allowed` keys; NULL with
 * a 400 filled in otherwise. An empty body is {} when `empty_ok`. */
static cJSON *s_body(const struct api_req *req, struct api_resp *resp, const char *const *allowed, int empty_ok)
{
	size_t bad;
	cJSON *o;

	if (!req->body || req->body_len == 0) {
		if (empty_ok)
			return cJSON_CreateObject();
		api_error(resp, 400, "missing JSON body");
		return NULL;
	}
	if ((bad = s_utf8_bad((const unsigned char *)req->body, req->body_len)) < req->body_len) {
		api_error(resp, 400, "request body: not UTF-8 text (a NUL or invalid byte at byte %zu)", bad);
		return NULL;
	}
	if (!(o = jsonu_parse(req->body, req->body_len, "request body"))) {
		api_error(resp, 400, "%s", err_msg());
		return NULL;
	}
	if (jsonu_check_keys(o, allowed) < 0) {
		api_error(resp, 400, "request body: %s", err_msg());
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static int s_status_of(int rc)
{
	switch (rc) {
	case QUEUE_NOT_FOUND:
		return 404;
	case QUEUE_STALE:
	case QUEUE_CANCELLED:
	case QUEUE_BAD_STATE:
		return 409;
	default:
		return 400;
	}
}

static void s_wake(const struct api_req *req)
{
	if (req->ctx->wake)
		req->ctx->wake(req->ctx->wake_arg);
}

/* Batch-local names of jobs already submitted in this request. */
struct names {
	const char *name[API_BATCH_MAX];
	int64_t id[API_BATCH_MAX];
	size_t n;
};

/* Read one job of a submission into *s (strings stay owned by `j`);
 * `deps` has room for API_BATCH_MAX ids. 0, or -1 via err_set(). */
static int s_parse_job(const cJSON *j, const struct names *nm, struct queue_submit *s, int64_t *deps,
		       const char **name, char **spec_text)
{
	static const char *const allowed[] = { "kind", "spec", "priority", "deps", "content_key", "backend",
					       "min_gpu_mem_mb", "max_attempts", "run", "name", NULL };
	const cJSON *spec = cJSON_GetObjectItemCaseSensitive(j, "spec");
	const cJSON *dl = cJSON_GetObjectItemCaseSensitive(j, "deps"), *d;
	const char *backend;
	long long prio, mem, att, run;

	memset(s, 0, sizeof *s);
	*spec_text = NULL;
	if (jsonu_check_keys(j, allowed) < 0 || jsonu_req_str(j, "kind", &s->kind) < 0 ||
	    jsonu_opt_int(j, "priority", 0, &prio) < 0 || jsonu_opt_str(j, "content_key", NULL, &s->content_key) < 0 ||
	    jsonu_opt_str(j, "backend", "cpu", &backend) < 0 || jsonu_opt_int(j, "min_gpu_mem_mb", 0, &mem) < 0 ||
	    jsonu_opt_int(j, "max_attempts", 0, &att) < 0 || jsonu_opt_int(j, "run", 0, &run) < 0 ||
	    jsonu_opt_str(j, "name", NULL, name) < 0)
		return -1;
	if (prio < -1000000 || prio > 1000000)
		return err_set("'priority': expected -1000000 to 1000000, got %lld", prio);
	if (att < 0 || att > 100)
		return err_set("'max_attempts': expected 1 to 100, got %lld", att);
	if (strcmp(backend, "cpu") == 0)
		s->backend = QUEUE_BACKEND_CPU;
	else if (strcmp(backend, "cuda") == 0)
		s->backend = QUEUE_BACKEND_CUDA;
	else
		return err_set("'backend': expected \"cpu\" or \"cuda\", got \"%.40s\"", backend);
	s->priority = (int)prio;
	s->min_gpu_mem_mb = mem;
	s->max_attempts = (int)att;
	s->run_id = run;
	if (spec && !cJSON_IsNull(spec)) {
		if (!cJSON_IsObject(spec))
			return err_set("'spec': expected an object, got %s", jsonu_type_name(spec));
		if (!(*spec_text = jsonu_print(spec)))
			return err_set("out of memory");
		s->spec_json = *spec_text;
	}
	if (dl && !cJSON_IsNull(dl) && !cJSON_IsArray(dl))
		return err_set("'deps': expected an array, got %s", jsonu_type_name(dl));
	cJSON_ArrayForEach(d, dl) {
		size_t k;
		if (s->ndeps >= API_BATCH_MAX)
			return err_set("'deps': more than %d", API_BATCH_MAX);
		if (cJSON_IsString(d)) {
			for (k = 0; k < nm->n; k++)
				if (nm->name[k] && strcmp(nm->name[k], d->valuestring) == 0)
					break;
			if (k == nm->n)
				return err_set("'deps': no earlier job named '%.60s' in this batch", d->valuestring);
			deps[s->ndeps++] = nm->id[k];
		} else if (cJSON_IsNumber(d) && d->valuedouble >= 1 && d->valuedouble <= 9e15 &&
			   d->valuedouble == (double)(int64_t)d->valuedouble) {
			deps[s->ndeps++] = (int64_t)d->valuedouble;
		} else {
			return err_set("'deps': expected job ids or names of earlier jobs, got %s", jsonu_type_name(d));
		}
	}
	s->deps = deps;
	return 0;
}

/* POST /jobs: one job, or {"jobs": [...]} submitted in one transaction. */
static void h_submit(const struct api_req *req, int64_t unused, struct api_resp *resp)
{
	static const char *const any[] = { "kind", "spec", "priority", "deps", "content_key", "backend",
					   "min_gpu_mem_mb", "max_attempts", "run", "name", "jobs", NULL };
	struct names *nm = calloc(1, sizeof *nm);
	int64_t *deps = calloc(API_BATCH_MAX, sizeof *deps);
	cJSON *body = nm && deps ? s_body(req, resp, any, 0) : NULL, *list, *one = NULL, *ids, *cached, *o;
	const cJSON *j;
	size_t idx = 0;
	int rc = QUEUE_OK;

	if (!body) {
		if (!nm || !deps)
			api_error(resp, 500, "out of memory");
		goto out;
	}
	list = cJSON_GetObjectItemCaseSensitive(body, "jobs");
	if (list && (!cJSON_IsArray(list) || cJSON_GetArraySize(body) != 1)) {
		api_error(resp, 400, "request body: 'jobs' must be an array and the only field");
		goto out;
	}
	if (!list)
		one = body;
	if (list && (cJSON_GetArraySize(list) < 1 || cJSON_GetArraySize(list) > API_BATCH_MAX)) {
		api_error(resp, 400, "request body: 'jobs': expected 1 to %d jobs", API_BATCH_MAX);
		goto out;
	}
	ids = cJSON_CreateArray();
	cached = cJSON_CreateArray();
	o = cJSON_CreateObject();
	cJSON_AddItemToObject(o, "ids", ids);
	cJSON_AddItemToObject(o, "cached", cached);
	if (queue_begin(req->q) < 0) {
		cJSON_Delete(o);
		s_db_error(resp);
		goto out;
	}
	for (j = one ? one : list->child; j; j = one ? NULL : j->next, idx++) {
		struct queue_submit s;
		const char *name = NULL;
		char *spec = NULL;
		int64_t id;
		int hit;
		if (s_parse_job(j, nm, &s, deps, &name, &spec) < 0) {
			rc = QUEUE_ERR;
			free(spec);
			break;
		}
		rc = queue_submit(req->q, &s, req->now_ms, &id, &hit);
		free(spec);
		if (rc < 0)
			break;
		nm->name[nm->n] = name;
		nm->id[nm->n++] = id;
		cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)id));
		cJSON_AddItemToArray(cached, cJSON_CreateBool(hit));
	}
	if (rc < 0) {
		char msg[ERR_MSG_MAX];
		snprintf(msg, sizeof msg, "%s", err_msg());
		queue_rollback(req->q);
		cJSON_Delete(o);
		if (one)
			api_error(resp, s_status_of(rc), "job: %s", msg);
		else
			api_error(resp, s_status_of(rc), "jobs[%zu]: %s (nothing was submitted)", idx, msg);
		goto out;
	}
	if (queue_commit(req->q) < 0) {
		cJSON_Delete(o);
		s_db_error(resp);
		goto out;
	}
	s_wake(req);
	s_reply(resp, 201, o);
out:
	cJSON_Delete(body);
	free(deps);
	free(nm);
}

static void h_cancel(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	static const char *const allowed[] = { "reason", NULL };
	cJSON *body = s_body(req, resp, allowed, 1), *o;
	const char *reason;
	int rc;

	if (!body)
		return;
	if (jsonu_opt_str(body, "reason", "cancelled by an operator", &reason) < 0) {
		api_error(resp, 400, "request body: %s", err_msg());
		goto out;
	}
	rc = queue_cancel(req->q, id, reason, req->now_ms);
	if (rc < 0) {
		api_error(resp, rc == QUEUE_ERR ? 500 : s_status_of(rc), "%s", err_msg());
		goto out;
	}
	s_wake(req);
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", (double)id);
	cJSON_AddStringToObject(o, "state", "cancelled");
	s_reply(resp, 200, o);
out:
	cJSON_Delete(body);
}

static void h_retry(const struct api_req *req, int64_t id, struct api_resp *resp)
{
	static const char *const none[] = { NULL };
	cJSON *body = s_body(req, resp, none, 1), *o;
	enum job_state st = JOB_READY;
	int rc;

	if (!body)
		return;
	cJSON_Delete(body);
	rc = queue_retry(req->q, id, req->now_ms);
	if (rc < 0) {
		api_error(resp, rc == QUEUE_ERR ? 500 : s_status_of(rc), "%s", err_msg());
		return;
	}
	queue_job_state(req->q, id, &st);
	s_wake(req);
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", (double)id);
	cJSON_AddStringToObject(o, "state", job_state_name(st));
	s_reply(resp, 200, o);
}

/* POST /experiments: {"name", "spec", "runs": [{"method", "seed", "params"}]}. */
static void h_new_experiment(const struct api_req *req, int64_t unused, struct api_resp *resp)
{
	static const char *const allowed[] = { "name", "spec", "runs", NULL };
	static const char *const run_keys[] = { "method", "seed", "params", NULL };
	cJSON *body = s_body(req, resp, allowed, 0), *o = NULL, *ids;
	const cJSON *spec, *runs, *run;
	const char *name, *method;
	char *text = NULL;
	sqlite3_stmt *st;
	int64_t exp_id;
	long long seed;
	size_t i = 0;

	if (!body)
		return;
	spec = cJSON_GetObjectItemCaseSensitive(body, "spec");
	runs = cJSON_GetObjectItemCaseSensitive(body, "runs");
	if (spec && !runs) {
		spec_api_submit(req, body, resp);  /* a spec: checked and expanded (daemon/spec*.c) */
		goto out;
	}
	if (jsonu_req_str(body, "name", &name) < 0) {
		api_error(resp, 400, "request body: %s", err_msg());
		goto out;
	}
	if (spec && !cJSON_IsObject(spec)) {
		api_error(resp, 400, "request body: 'spec': expected an object, got %s", jsonu_type_name(spec));
		goto out;
	}
	if (runs && !cJSON_IsArray(runs)) {
		api_error(resp, 400, "request body: 'runs': expected an array, got %s", jsonu_type_name(runs));
		goto out;
	}
	if (registry_begin(req->r) < 0)
		goto db_err;
	text = spec ? jsonu_print(spec) : NULL;
	if (!(st = registry_stmt(req->r, "INSERT INTO experiments (name, spec, created_ms) VALUES (?, ?, ?)")))
		goto db_rollback;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, text ? text : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, req->now_ms);
	if (registry_step_done(req->r, st) < 0)
		goto db_rollback;
	exp_id = sqlite3_last_insert_rowid(registry_db(req->r));
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", (double)exp_id);
	ids = cJSON_AddArrayToObject(o, "runs");
	cJSON_ArrayForEach(run, runs) {
		const cJSON *params = cJSON_GetObjectItemCaseSensitive(run, "params");
		char *ptext;
		if (jsonu_check_keys(run, run_keys) < 0 || jsonu_req_str(run, "method", &method) < 0 ||
		    jsonu_opt_int(run, "seed", 0, &seed) < 0 ||
		    (params && !cJSON_IsObject(params) && err_set("'params': expected an object") < 0)) {
			char msg[ERR_MSG_MAX];
			snprintf(msg, sizeof msg, "%s", err_msg());
			registry_rollback(req->r);
			api_error(resp, 400, "request body: runs[%zu]: %s", i, msg);
			goto out;
		}
		if (!(st = registry_stmt(req->r, "INSERT INTO runs (experiment_id, method, seed, params, created_ms) "
						 "VALUES (?, ?, ?, ?, ?)")))
			goto db_rollback;
		ptext = params ? jsonu_print(params) : NULL;
		sqlite3_bind_int64(st, 1, exp_id);
		sqlite3_bind_text(st, 2, method, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, seed);
		sqlite3_bind_text(st, 4, ptext ? ptext : "{}", -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 5, req->now_ms);
		free(ptext);
		if (registry_step_done(req->r, st) < 0)
			goto db_rollback;
		cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)sqlite3_last_insert_rowid(registry_db(req->r))));
		i++;
	}
	if (registry_commit(req->r) < 0)
		goto db_err;
	s_reply(resp, 201, o);
	o = NULL;
	goto out;
db_rollback:
	registry_rollback(req->r);
db_err:
	s_db_error(resp);
out:
	cJSON_Delete(o);
	free(text);
	cJSON_Delete(body);
}

/* Run the bound INSERT `st` in its own transaction and answer
 * 201 {"id": N}; a duplicate is 409, an unknown artifact 400. */
static void s_insert(const struct api_req *req, struct api_resp *resp, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st), ext = sqlite3_extended_errcode(registry_db(req->r));
	cJSON *o;

	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		registry_err(req->r, what);
		registry_rollback(req->r);
		if (ext == SQLITE_CONSTRAINT_UNIQUE)
			api_error(resp, 409, "%s already exists", what);
		else if (ext == SQLITE_CONSTRAINT_FOREIGNKEY)
			api_error(resp, 400, "%s: 'artifact' names no artifact in the store: upload it first", what);
		else if ((ext & 0xff) == SQLITE_CONSTRAINT)
			api_error(resp, 400, "%s: %s", what, err_msg());
		else
			s_db_error(resp);
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", (double)sqlite3_last_insert_rowid(registry_db(req->r)));
	if (registry_commit(req->r) < 0) {
		cJSON_Delete(o);
		s_db_error(resp);
		return;
	}
	s_reply(resp, 201, o);
}

/* POST /models: {"name", "artifact", "config"}. */
static void h_new_model(const struct api_req *req, int64_t unused, struct api_resp *resp)
{
	static const char *const allowed[] = { "name", "artifact", "config", NULL };
	cJSON *body = s_body(req, resp, allowed, 0);
	const cJSON *config;
	const char *name, *artifact;
	char *text = NULL;
	sqlite3_stmt *st;

	if (!body)
		return;
	config = cJSON_GetObjectItemCaseSensitive(body, "config");
	if (jsonu_req_str(body, "name", &name) < 0 || jsonu_opt_str(body, "artifact", NULL, &artifact) < 0 ||
	    (config && !cJSON_IsObject(config) && err_set("'config': expected an object, got %s",
							   jsonu_type_name(config)) < 0)) {
		api_error(resp, 400, "request body: %s", err_msg());
		goto out;
	}
	text = config ? jsonu_print(config) : NULL;
	if (registry_begin(req->r) < 0) {
		s_db_error(resp);
		goto out;
	}
	if (!(st = registry_stmt(req->r, "INSERT INTO base_models (name, artifact, config, created_ms) "
					 "VALUES (?, ?, ?, ?)"))) {
		registry_rollback(req->r);
		s_db_error(resp);
		goto out;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, artifact, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, text ? text : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, req->now_ms);
	s_insert(req, resp, st, "model");
out:
	free(text);
	cJSON_Delete(body);
}

/* POST /datasets: {"name", "split", "domain", "artifact", "rows"}. */
static void h_new_dataset(const struct api_req *req, int64_t unused, struct api_resp *resp)
{
	static const char *const allowed[] = { "name", "split", "domain", "artifact", "rows", NULL };
	cJSON *body = s_body(req, resp, allowed, 0);
	const char *name, *split, *domain, *artifact;
	long long rows;
	sqlite3_stmt *st;

	if (!body)
		return;
	if (jsonu_req_str(body, "name", &name) < 0 || jsonu_opt_str(body, "split", "train", &split) < 0 ||
	    jsonu_opt_str(body, "domain", NULL, &domain) < 0 || jsonu_opt_str(body, "artifact", NULL, &artifact) < 0 ||
	    jsonu_opt_int(body, "rows", -1, &rows) < 0) {
		api_error(resp, 400, "request body: %s", err_msg());
		goto out;
	}
	if (registry_begin(req->r) < 0) {
		s_db_error(resp);
		goto out;
	}
	if (!(st = registry_stmt(req->r, "INSERT INTO datasets (name, split, domain, artifact, rows, created_ms) "
					 "VALUES (?, ?, ?, ?, ?, ?)"))) {
		registry_rollback(req->r);
		s_db_error(resp);
		goto out;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, split, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, artifact, -1, SQLITE_STATIC);
	if (rows >= 0)
		sqlite3_bind_int64(st, 5, rows);
	sqlite3_bind_int64(st, 6, req->now_ms);
	s_insert(req, resp, st, "dataset");
out:
	cJSON_Delete(body);
}

static void h_gc(const struct api_req *req, int64_t unused, struct api_resp *resp)
{
	static const char *const allowed[] = { "min_age_s", NULL };
	/* 100 years: beyond it nothing is older, and age * 1000 stays in range */
	static const long long max_age = 100LL * 366 * 24 * 3600;
	cJSON *body = s_body(req, resp, allowed, 1), *o;
	long long age = 0;
	int64_t removed = 0, bytes = 0;

	if (!body)
		return;
	if (jsonu_opt_int(body, "min_age_s", 3600, &age) < 0) {
		api_error(resp, 400, "request body: %s", err_msg());
		cJSON_Delete(body);
		return;
	}
	if (age < 0 || age > max_age) {
		api_error(resp, 400, "request body: 'min_age_s' is %lld; it must be between 0 and %lld "
			  "(100 years)", age, max_age);
		cJSON_Delete(body);
		return;
	}
	cJSON_Delete(body);
	if (artifacts_gc(req->ctx->store, req->r, req->now_ms, age * 1000, &removed, &bytes) < 0) {
		s_db_error(resp);
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "removed", (double)removed);
	cJSON_AddNumberToObject(o, "bytes", (double)bytes);
	s_reply(resp, 200, o);
}

/* ---- routing ------------------------------------------------------------- */

struct route {
	const char *method;
	const char *pattern;  /* '#' stands for one positive integer segment */
	handler_fn fn;
};

static const struct route s_routes[] = {
	{ "GET", "/health", h_health },
	{ "GET", "/jobs", h_jobs },
	{ "POST", "/jobs", h_submit },
	{ "GET", "/jobs/#", h_job },
	{ "POST", "/jobs/#/cancel", h_cancel },
	{ "POST", "/jobs/#/retry", h_retry },
	{ "GET", "/jobs/#/metrics", h_job_metrics },
	{ "GET", "/experiments", h_experiments },
	{ "POST", "/experiments", h_new_experiment },
	{ "GET", "/experiments/#", h_experiment },
	{ "GET", "/runs", h_runs },
	{ "GET", "/runs/#", h_run },
	{ "GET", "/runs/#/metrics", h_run_metrics },
	{ "GET", "/evaluations", h_evaluations },
	{ "GET", "/models", h_models },
	{ "POST", "/models", h_new_model },
	{ "GET", "/datasets", h_datasets },
	{ "POST", "/datasets", h_new_dataset },
	{ "GET", "/experts", h_experts },
	{ "GET", "/routers", h_routers },
	{ "GET", "/workers", h_workers },
	{ "GET", "/events", h_events },
	{ "GET", "/artifacts", h_artifacts },
	{ "POST", "/artifacts/gc", h_gc },
};

/* Match `path` against `pattern`; the '#' segment goes to *id. */
static int s_match(const char *pattern, const char *path, int64_t *id)
{
	while (*pattern && *path) {
		if (*pattern == '#') {
			char *end;
			if (*path < '1' || *path > '9')
				return 0;
			errno = 0;
			*id = strtoll(path, &end, 10);
			if (errno)
				return 0;
			path = end;
			pattern++;
			continue;
		}
		if (*pattern++ != *path++)
			return 0;
	}
	return !*pattern && !*path;
}

void api_handle(const struct api_req *req, struct api_resp *resp)
{
	int path_known = 0;
	int64_t id = 0;

	memset(resp, 0, sizeof *resp);
	for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
		if (!s_match(s_routes[i].pattern, req->path, &id))
			continue;
		path_known = 1;
		if (strcmp(s_routes[i].method, req->method) == 0) {
			s_routes[i].fn(req, id, resp);
			return;
		}
	}
	if (path_known)
		api_error(resp, 405, "method %s not allowed on '/api/v1%.200s'", req->method, req->path);
	else
		api_error(resp, 404, "no such endpoint '/api/v1%.200s' (see docs/api.md)", req->path);
}

/* ---- /metrics -------------------------------------------------------------- */

/* One integer from `sql` (its parameter, if any, is `arg`); 0 on errors. */
static int64_t s_scalar(registry_t *r, const char *sql, int64_t arg)
{
	sqlite3_stmt *st = registry_stmt(r, sql);
	int64_t v = 0;

	if (!st)
		return 0;
	if (sqlite3_bind_parameter_count(st) > 0)
		sqlite3_bind_int64(st, 1, arg);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return v;
}

void api_metrics(const struct api_req *req, struct api_resp *resp)
{
	int64_t counts[JOB_NSTATES], wait_ms, oldest_ms;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	memset(resp, 0, sizeof *resp);
	if (queue_count_states(req->q, counts) < 0) {
		s_db_error(resp);
		return;
	}
	if (!(f = open_memstream(&buf, &len))) {
		api_error(resp, 500, "out of memory");
		return;
	}
	fprintf(f, "# HELP modula_jobs Jobs in each state.\n# TYPE modula_jobs gauge\n");
	for (int s = 0; s < JOB_NSTATES; s++)
		fprintf(f, "modula_jobs{state=\"%s\"} %lld\n", job_state_name((enum job_state)s), (long long)counts[s]);
	fprintf(f, "# HELP modula_jobs_finished_total Jobs that ended (rate() of it is the throughput).\n"
		   "# TYPE modula_jobs_finished_total counter\nmodula_jobs_finished_total %lld\n",
		(long long)(counts[JOB_SUCCEEDED] + counts[JOB_FAILED] + counts[JOB_CANCELLED]));
	fprintf(f, "# HELP modula_workers Workers known to the registry.\n# TYPE modula_workers gauge\n"
		   "modula_workers{state=\"up\"} %lld\nmodula_workers{state=\"down\"} %lld\n",
		(long long)s_scalar(req->r, "SELECT count(*) FROM workers WHERE state = 'up'", 0),
		(long long)s_scalar(req->r, "SELECT count(*) FROM workers WHERE state = 'down'", 0));
	wait_ms = s_scalar(req->r, "SELECT coalesce(avg(leased_ms - ready_ms), 0) FROM (SELECT leased_ms, ready_ms "
				   "FROM jobs WHERE leased_ms IS NOT NULL AND ready_ms IS NOT NULL "
				   "ORDER BY id DESC LIMIT 1000)", 0);
	oldest_ms = s_scalar(req->r, "SELECT coalesce(?1 - min(ready_ms), 0) FROM jobs INDEXED BY jobs_ready "
				     "WHERE state = 'ready'", req->now_ms);
	fprintf(f, "# HELP modula_queue_wait_seconds Mean time from ready to leased over the last 1000 leases.\n"
		   "# TYPE modula_queue_wait_seconds gauge\nmodula_queue_wait_seconds %.3f\n", wait_ms / 1000.0);
	fprintf(f, "# HELP modula_queue_oldest_ready_seconds How long the oldest ready job has waited.\n"
		   "# TYPE modula_queue_oldest_ready_seconds gauge\nmodula_queue_oldest_ready_seconds %.3f\n",
		oldest_ms / 1000.0);
	fprintf(f, "# HELP modula_uptime_seconds Time since modulad started.\n# TYPE modula_uptime_seconds gauge\n"
		   "modula_uptime_seconds %.3f\n", (req->now_ms - req->ctx->started_ms) / 1000.0);
	if (fclose(f) != 0 || !buf) {
		free(buf);
		api_error(resp, 500, "out of memory");
		return;
	}
	resp->status = 200;
	resp->body = buf;
	resp->type = "text/plain; version=0.0.4";
}
