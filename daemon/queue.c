/* queue.c: see queue.h for the state machine and its invariants.
 *
 * Each public function is one registry level (registry_begin/commit): an
 * expected refusal rolls its level back, so it changes nothing even inside
 * a caller's batch. The events table records operator actions, failures,
 * retries and worker changes, not every transition (jobs hold their own
 * timestamps; an event per lease would double the write cost of dispatch).
 */
#include "config.h"
#include "daemon/queue.h"
#include "daemon/job_catalog.h"
#include "err.h"
#include "jsonu.h"
#include "log.h"
#include "sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct queue {
	registry_t *r;
};

static const char *const s_state_names[JOB_NSTATES] = {
	"pending", "ready", "leased", "running", "succeeded", "failed", "cancelled",
};

const char *job_state_name(enum job_state s)
{
	return (unsigned)s < JOB_NSTATES ? s_state_names[s] : "?";
}

int job_state_parse(const char *name, enum job_state *out)
{
	for (int i = 0; i < JOB_NSTATES; i++)
		if (strcmp(name, s_state_names[i]) == 0) {
			*out = (enum job_state)i;
			return 0;
		}
	return err_set("unknown job state '%s': expected pending, ready, leased, running, "
		       "succeeded, failed or cancelled", name);
}

queue_t *queue_new(registry_t *r)
{
	queue_t *q = calloc(1, sizeof *q);

	if (!q) {
		err_set("out of memory creating the queue");
		return NULL;
	}
	q->r = r;
	return q;
}

void queue_destroy(queue_t **qp)
{
	if (!qp || !*qp)
		return;
	free(*qp);
	*qp = NULL;
}

registry_t *queue_registry(queue_t *q)
{
	return q->r;
}

int queue_begin(queue_t *q)
{
	return registry_begin(q->r);
}

int queue_commit(queue_t *q)
{
	return registry_commit(q->r);
}

int queue_rollback(queue_t *q)
{
	return registry_rollback(q->r);
}

/* ---- helpers ------------------------------------------------------------ */

/* Close the level opened by a public function: keep the work when rc >= 0
 * (OK or a count), undo it otherwise. */
static int s_end(queue_t *q, int rc)
{
	if (rc < 0) {
		registry_rollback(q->r);
		return rc;
	}
	return registry_commit(q->r) < 0 ? QUEUE_ERR : rc;
}

static sqlite3_stmt *s_stmt(queue_t *q, const char *sql)
{
	return registry_stmt(q->r, sql);
}

static int s_done(queue_t *q, sqlite3_stmt *st)
{
	return registry_step_done(q->r, st) < 0 ? QUEUE_ERR : QUEUE_OK;
}

/* The columns every transition looks at. */
struct jrow {
	enum job_state state;
	int attempts;
	int attempt_base;
	int max_attempts;
	int64_t run_id;
	int has_owner;
};

static int s_row(queue_t *q, int64_t id, struct jrow *j)
{
	sqlite3_stmt *st = s_stmt(q, "SELECT state, attempts, attempt_base, max_attempts, run_id, "
				     "lease_owner IS NOT NULL FROM jobs WHERE id = ?");
	int rc;

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(st);
		return err_setc(QUEUE_NOT_FOUND, "no job %lld", (long long)id);
	}
	if (rc != SQLITE_ROW) {
		registry_err(q->r, "reading a job");
		sqlite3_reset(st);
		return QUEUE_ERR;
	}
	if (job_state_parse((const char *)sqlite3_column_text(st, 0), &j->state) < 0) {
		sqlite3_reset(st);
		return QUEUE_ERR;
	}
	j->attempts = sqlite3_column_int(st, 1);
	j->attempt_base = sqlite3_column_int(st, 2);
	j->max_attempts = sqlite3_column_int(st, 3);
	j->run_id = sqlite3_column_int64(st, 4);
	j->has_owner = sqlite3_column_int(st, 5);
	sqlite3_reset(st);
	return QUEUE_OK;
}

/* Invariant 2: is (id, attempt) the job's live lease? */
static int s_live(queue_t *q, int64_t id, int attempt, struct jrow *j)
{
	int rc = s_row(q, id, j);

	if (rc < 0)
		return rc;
	if (j->attempts == attempt && (j->state == JOB_LEASED || j->state == JOB_RUNNING))
		return QUEUE_OK;
	if (j->attempts == attempt && j->state == JOB_CANCELLED)
		return err_setc(QUEUE_CANCELLED, "job %lld was cancelled", (long long)id);
	return err_setc(QUEUE_STALE, "job %lld attempt %d is not the live lease (now attempt %d, %s): "
			"late or duplicate message refused", (long long)id, attempt, j->attempts,
			job_state_name(j->state));
}

/* Cancel everything downstream of `id` that has not started (invariant 3:
 * dependents of an unfinished job are all PENDING). */
static int s_cancel_dependents(queue_t *q, int64_t id, const char *why, int64_t now_ms)
{
	sqlite3_stmt *st = s_stmt(q,
		"WITH RECURSIVE d(id) AS (SELECT job_id FROM job_deps WHERE dep_id = ?1 "
		"UNION SELECT job_deps.job_id FROM job_deps JOIN d ON job_deps.dep_id = d.id) "
		"UPDATE jobs SET state = 'cancelled', error = ?2, finished_ms = ?3 "
		"WHERE id IN d AND state IN ('pending', 'ready')");

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, why, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	return s_done(q, st);
}

/* Dependents whose last dependency `id` was become READY. */
static int s_promote_dependents(queue_t *q, int64_t id, int64_t now_ms)
{
	sqlite3_stmt *st = s_stmt(q,
		"UPDATE jobs SET deps_left = deps_left - 1, "
		"state = CASE WHEN deps_left = 1 THEN 'ready' ELSE state END, "
		"ready_ms = CASE WHEN deps_left = 1 THEN ?2 ELSE ready_ms END "
		"WHERE id IN (SELECT job_id FROM job_deps WHERE dep_id = ?1) AND state = 'pending'");

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now_ms);
	return s_done(q, st);
}

/* Make `id` SUCCEEDED as a copy of the succeeded job `src` (invariant 5). */
static int s_complete_cached(queue_t *q, int64_t id, int64_t src, int64_t now_ms)
{
	sqlite3_stmt *st = s_stmt(q,
		"UPDATE jobs SET state = 'succeeded', cached_from = ?2, lease_owner = NULL, "
		"lease_deadline = NULL, finished_ms = ?3, error = NULL, "
		"result = (SELECT result FROM jobs WHERE id = ?2), "
		"checkpoint = (SELECT checkpoint FROM jobs WHERE id = ?2) WHERE id = ?1");

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, src);
	sqlite3_bind_int64(st, 3, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	st = s_stmt(q, "INSERT OR IGNORE INTO job_outputs (job_id, name, sha256) "
		       "SELECT ?1, name, sha256 FROM job_outputs WHERE job_id = ?2");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, src);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	/* The source's evaluations again, under this job and its run. */
	st = s_stmt(q, "INSERT INTO evaluations (run_id, job_id, domain, metric, value, created_ms) "
		       "SELECT (SELECT run_id FROM jobs WHERE id = ?1), ?1, domain, metric, value, ?3 "
		       "FROM evaluations WHERE job_id = ?2");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, src);
	sqlite3_bind_int64(st, 3, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	return s_promote_dependents(q, id, now_ms);
}

/* The oldest succeeded job with this content key: its id, or 0. */
static int s_cached_source(queue_t *q, const char *key, int64_t *src)
{
	sqlite3_stmt *st = s_stmt(q, "SELECT id FROM jobs WHERE content_key = ? AND state = 'succeeded' "
				     "ORDER BY id LIMIT 1");
	int rc;

	*src = 0;
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*src = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return registry_err(q->r, "looking up a content key");
	return QUEUE_OK;
}

int queue_output_sha(queue_t *q, const char *content_key, const char *name, char hex[65])
{
	sqlite3_stmt *st = s_stmt(q, "SELECT o.sha256 FROM job_outputs o JOIN jobs j ON j.id = o.job_id "
				     "WHERE j.content_key = ? AND j.state = 'succeeded' AND o.name = ? "
				     "ORDER BY j.id LIMIT 1");
	int rc;

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_text(st, 1, content_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		snprintf(hex, 65, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return registry_err(q->r, "looking up a job output");
	return rc == SQLITE_ROW;
}

static int64_t s_backoff_ms(int failures)
{
	int64_t ms = QUEUE_BACKOFF_BASE_MS;

	for (int i = 1; i < failures && ms < QUEUE_BACKOFF_CAP_MS; i++)
		ms *= 2;
	return ms < QUEUE_BACKOFF_CAP_MS ? ms : QUEUE_BACKOFF_CAP_MS;
}

/* A live execution of `id` ended badly: READY after backoff while the
 * budget allows and the failure is retryable (invariant 6), else FAILED and
 * its dependents CANCELLED. */
static int s_requeue_or_fail(queue_t *q, int64_t id, const struct jrow *j, const char *error,
			     int retryable, int64_t now_ms)
{
	int used = j->attempts - j->attempt_base;
	int retry = retryable && used < j->max_attempts;
	sqlite3_stmt *st;

	if (retry) {
		st = s_stmt(q, "UPDATE jobs SET state = 'ready', lease_owner = NULL, lease_deadline = NULL, "
			       "backoff_until = ?2, ready_ms = ?3, error = ?4 WHERE id = ?1");
		if (!st)
			return QUEUE_ERR;
		sqlite3_bind_int64(st, 2, now_ms + s_backoff_ms(used));
	} else {
		st = s_stmt(q, "UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_deadline = NULL, "
			       "finished_ms = ?3, error = ?4 WHERE id = ?1");
		if (!st)
			return QUEUE_ERR;
	}
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 3, now_ms);
	sqlite3_bind_text(st, 4, error ? error : "failed", -1, SQLITE_STATIC);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	if (registry_event(q->r, now_ms, retry ? "job.retrying" : "job.failed", id, "queue", error) < 0)
		return QUEUE_ERR;
	return retry ? QUEUE_OK : s_cancel_dependents(q, id, "a dependency failed", now_ms);
}

/* ---- submitting ----------------------------------------------------------- */

static int s_check_kind(const char *kind)
{
	size_t n = kind ? strlen(kind) : 0;

	if (n == 0 || n > 32)
		return err_set("bad job kind '%s': expected 1 to 32 characters", kind ? kind : "");
	for (size_t i = 0; i < n; i++) {
		char c = kind[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
			return err_set("bad job kind '%s': use a-z, 0-9, '_', '.', '-'", kind);
	}
	return 0;
}

static int s_check_submit(const struct queue_submit *s)
{
	cJSON *spec;

	if (s_check_kind(s->kind) < 0)
		return -1;
	if (s->content_key && !sha256_is_hex(s->content_key))
		return err_set("bad content key '%s': expected 64 lowercase hex digits", s->content_key);
	if (s->backend != 0 && s->backend != QUEUE_BACKEND_CPU && s->backend != QUEUE_BACKEND_CUDA)
		return err_set("bad backend %d: expected cpu or cuda", s->backend);
	if (s->min_gpu_mem_mb < 0 || s->max_attempts < 0 || s->max_attempts > 100)
		return err_set("bad requirements: min_gpu_mem_mb %lld, max_attempts %d",
			       (long long)s->min_gpu_mem_mb, s->max_attempts);
	if (s->spec_json) {
		spec = jsonu_parse(s->spec_json, strlen(s->spec_json), "job spec");
		if (!spec)
			return -1;
		if (!cJSON_IsObject(spec)) {
			err_set("bad job spec: expected an object, got %s", jsonu_type_name(spec));
			cJSON_Delete(spec);
			return -1;
		}
		cJSON_Delete(spec);
	}
	return 0;
}

/* Count the distinct unfinished deps; refuse missing or failed ones. */
static int s_check_deps(queue_t *q, const int64_t *deps, size_t n, int *left)
{
	struct jrow j;
	int rc;

	*left = 0;
	for (size_t i = 0; i < n; i++) {
		int dup = 0;
		for (size_t k = 0; k < i; k++)
			dup |= deps[k] == deps[i];
		if (dup)
			continue;
		if ((rc = s_row(q, deps[i], &j)) < 0)
			return rc == QUEUE_NOT_FOUND ? err_setc(rc, "unknown dependency: no job %lld",
								(long long)deps[i]) : rc;
		if (j.state == JOB_FAILED || j.state == JOB_CANCELLED)
			return err_setc(QUEUE_BAD_STATE, "dependency %lld is %s: retry it first",
					(long long)deps[i], job_state_name(j.state));
		if (j.state != JOB_SUCCEEDED)
			++*left;
	}
	return QUEUE_OK;
}

static int s_submit(queue_t *q, const struct queue_submit *s, int64_t now_ms, int64_t *id_out,
		    int *cached_out)
{
	int64_t src = 0, id;
	int left, rc;
	sqlite3_stmt *st;

	if (s_check_submit(s) < 0)
		return QUEUE_ERR;
	if ((rc = s_check_deps(q, s->deps, s->ndeps, &left)) < 0)
		return rc;
	if (s->content_key && s_cached_source(q, s->content_key, &src) < 0)
		return QUEUE_ERR;
	st = s_stmt(q, "INSERT INTO jobs (run_id, kind, state, priority, max_attempts, content_key, spec, "
		       "backend, min_gpu_mem_mb, deps_left, created_ms, ready_ms) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
	if (!st)
		return QUEUE_ERR;
	if (s->run_id > 0)
		sqlite3_bind_int64(st, 1, s->run_id);
	sqlite3_bind_text(st, 2, s->kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, left ? "pending" : "ready", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, s->priority);
	sqlite3_bind_int(st, 5, s->max_attempts ? s->max_attempts : QUEUE_DEFAULT_MAX_ATTEMPTS);
	sqlite3_bind_text(st, 6, s->content_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, s->spec_json ? s->spec_json : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 8, s->backend ? s->backend : QUEUE_BACKEND_CPU);
	sqlite3_bind_int64(st, 9, s->min_gpu_mem_mb);
	sqlite3_bind_int(st, 10, left);
	sqlite3_bind_int64(st, 11, now_ms);
	if (!left)
		sqlite3_bind_int64(st, 12, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	id = sqlite3_last_insert_rowid(registry_db(q->r));
	st = s_stmt(q, "INSERT OR IGNORE INTO job_deps (job_id, dep_id) VALUES (?, ?)");
	if (!st)
		return QUEUE_ERR;
	for (size_t i = 0; i < s->ndeps; i++) {
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, s->deps[i]);
		if (s_done(q, st) < 0)
			return QUEUE_ERR;
	}
	if (src && s_complete_cached(q, id, src, now_ms) < 0)
		return QUEUE_ERR;
	*id_out = id;
	if (cached_out)
		*cached_out = src != 0;
	return QUEUE_OK;
}

int queue_submit(queue_t *q, const struct queue_submit *s, int64_t now_ms, int64_t *id_out,
		 int *cached_out)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_submit(q, s, now_ms, id_out, cached_out));
}

/* ---- leasing -------------------------------------------------------------- */

void queue_lease_clear(struct queue_lease *l)
{
	free(l->spec_json);
	memset(l, 0, sizeof *l);
}

static void s_copy_col(char *dst, size_t n, sqlite3_stmt *st, int col)
{
	const char *v = (const char *)sqlite3_column_text(st, col);

	snprintf(dst, n, "%s", v ? v : "");
}

/* Read the best candidate into *out (without leasing it): 1, 0 or QUEUE_ERR. */
static int s_pick(queue_t *q, const struct queue_caps *caps, int64_t now_ms, struct queue_lease *out)
{
	sqlite3_stmt *st = s_stmt(q,
		"SELECT id, kind, spec, content_key, checkpoint, attempts FROM jobs INDEXED BY jobs_ready "
		"WHERE state = 'ready' AND backoff_until <= ?1 "
		"AND (backend = 1 OR (?2 = 2 AND min_gpu_mem_mb <= ?3)) "
		"ORDER BY priority DESC, id LIMIT 1");
	int rc;

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, now_ms);
	sqlite3_bind_int(st, 2, caps->backend);
	sqlite3_bind_int64(st, 3, caps->gpu_mem_mb);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->job_id = sqlite3_column_int64(st, 0);
		s_copy_col(out->kind, sizeof out->kind, st, 1);
		out->spec_json = strdup((const char *)sqlite3_column_text(st, 2));
		s_copy_col(out->content_key, sizeof out->content_key, st, 3);
		s_copy_col(out->checkpoint, sizeof out->checkpoint, st, 4);
		out->attempt = sqlite3_column_int(st, 5) + 1;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_ROW && !out->spec_json)
		return err_set("out of memory leasing job %lld", (long long)out->job_id);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return registry_err(q->r, "choosing a job to lease");
	return rc == SQLITE_ROW;
}

static int s_lease_next(queue_t *q, const char *worker_id, const struct queue_caps *caps,
			int64_t now_ms, int64_t lease_ms, struct queue_lease *out)
{
	sqlite3_stmt *st;
	int64_t src;
	int rc;

	for (;;) {
		memset(out, 0, sizeof *out);
		if ((rc = s_pick(q, caps, now_ms, out)) <= 0)
			return rc;
		if (!out->content_key[0])
			break;
		if (s_cached_source(q, out->content_key, &src) < 0)
			return QUEUE_ERR;
		if (!src)
			break;
		if (s_complete_cached(q, out->job_id, src, now_ms) < 0)
			return QUEUE_ERR;
		queue_lease_clear(out);
	}
	st = s_stmt(q, "UPDATE jobs SET state = 'leased', lease_owner = ?2, lease_deadline = ?3, "
		       "attempts = attempts + 1, worker = ?2, leased_ms = ?4, backoff_until = 0 WHERE id = ?1");
	if (!st)
		return QUEUE_ERR;
	out->deadline_ms = now_ms + lease_ms;
	sqlite3_bind_int64(st, 1, out->job_id);
	sqlite3_bind_text(st, 2, worker_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, out->deadline_ms);
	sqlite3_bind_int64(st, 4, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	return 1;
}

int queue_lease_next(queue_t *q, const char *worker_id, const struct queue_caps *caps,
		     int64_t now_ms, int64_t lease_ms, struct queue_lease *out)
{
	int rc;

	memset(out, 0, sizeof *out);
	if (lease_ms <= 0)
		return err_set("bad lease length %lld ms", (long long)lease_ms);
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	rc = s_end(q, s_lease_next(q, worker_id, caps, now_ms, lease_ms, out));
	if (rc <= 0)
		queue_lease_clear(out);
	return rc;
}

/* LEASED -> RUNNING if still leased; renew the deadline when lease_ms > 0. */
static int s_mark_running(queue_t *q, int64_t id, int64_t now_ms, int64_t lease_ms)
{
	sqlite3_stmt *st = s_stmt(q,
		"UPDATE jobs SET state = 'running', "
		"started_ms = CASE WHEN state = 'leased' THEN ?2 ELSE started_ms END, "
		"lease_deadline = CASE WHEN ?3 > 0 THEN ?2 + ?3 ELSE lease_deadline END WHERE id = ?1");

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now_ms);
	sqlite3_bind_int64(st, 3, lease_ms);
	return s_done(q, st);
}

static int s_start(queue_t *q, int64_t id, int attempt, int64_t now_ms, int64_t lease_ms)
{
	struct jrow j;
	int rc = s_live(q, id, attempt, &j);

	return rc < 0 ? rc : s_mark_running(q, id, now_ms, lease_ms);
}

int queue_start(queue_t *q, int64_t job_id, int attempt, int64_t now_ms, int64_t lease_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_start(q, job_id, attempt, now_ms, lease_ms));
}

int queue_renew_worker(queue_t *q, const char *worker_id, int64_t now_ms, int64_t lease_ms)
{
	sqlite3_stmt *st;
	int n;

	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	st = s_stmt(q, "UPDATE jobs SET lease_deadline = ?2 WHERE lease_owner = ?1 "
		       "AND state IN ('leased', 'running')");
	if (!st)
		return s_end(q, QUEUE_ERR);
	sqlite3_bind_text(st, 1, worker_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms + lease_ms);
	if (s_done(q, st) < 0)
		return s_end(q, QUEUE_ERR);
	n = sqlite3_changes(registry_db(q->r));
	st = s_stmt(q, "UPDATE workers SET last_seen = ?2 WHERE id = ?1");
	if (!st)
		return s_end(q, QUEUE_ERR);
	sqlite3_bind_text(st, 1, worker_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms);
	if (s_done(q, st) < 0)
		return s_end(q, QUEUE_ERR);
	return s_end(q, n);
}

static int s_insert_metrics(queue_t *q, int64_t id, int64_t run_id, const struct queue_metric *pts,
			    size_t n, int64_t now_ms)
{
	sqlite3_stmt *st;

	if (n == 0)
		return QUEUE_OK;
	/* A point is kept once per (job, key, step): a retry that resumes from a
	 * checkpoint replays the steps after it and reports them again. */
	st = s_stmt(q, "INSERT INTO metrics (job_id, run_id, key, step, value, t_ms) SELECT ?1, ?2, ?3, ?4, ?5, ?6 "
		       "WHERE NOT EXISTS (SELECT 1 FROM metrics WHERE job_id = ?1 AND key = ?3 AND step = ?4)");
	if (!st)
		return QUEUE_ERR;
	for (size_t i = 0; i < n; i++) {
		if (!pts[i].key || !pts[i].key[0] || strlen(pts[i].key) > 128)
			return err_set("bad metric key '%s': expected 1 to 128 bytes", pts[i].key ? pts[i].key : "");
		sqlite3_bind_int64(st, 1, id);
		if (run_id > 0)
			sqlite3_bind_int64(st, 2, run_id);
		else
			sqlite3_bind_null(st, 2);
		sqlite3_bind_text(st, 3, pts[i].key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, pts[i].step);
		sqlite3_bind_double(st, 5, pts[i].value);
		sqlite3_bind_int64(st, 6, pts[i].t_ms ? pts[i].t_ms : now_ms);
		if (s_done(q, st) < 0)
			return QUEUE_ERR;
	}
	return QUEUE_OK;
}

static int s_progress(queue_t *q, int64_t id, int attempt, const struct queue_metric *pts, size_t npts,
		      const char *checkpoint, int64_t now_ms, int64_t lease_ms)
{
	struct jrow j;
	sqlite3_stmt *st;
	int rc;

	if (checkpoint && !sha256_is_hex(checkpoint))
		return err_set("bad checkpoint '%s': expected a sha256 in hex", checkpoint);
	if ((rc = s_live(q, id, attempt, &j)) < 0)
		return rc;
	if (s_mark_running(q, id, now_ms, lease_ms) < 0 ||
	    s_insert_metrics(q, id, j.run_id, pts, npts, now_ms) < 0)
		return QUEUE_ERR;
	if (!checkpoint)
		return QUEUE_OK;
	st = s_stmt(q, "UPDATE jobs SET checkpoint = ? WHERE id = ?");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_text(st, 1, checkpoint, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	return s_done(q, st);
}

int queue_progress(queue_t *q, int64_t job_id, int attempt, const struct queue_metric *pts,
		   size_t npts, const char *checkpoint, int64_t now_ms, int64_t lease_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_progress(q, job_id, attempt, pts, npts, checkpoint, now_ms, lease_ms));
}

static int s_record_result(queue_t *q, int64_t id, int64_t run_id, const struct queue_result *res,
			   int64_t now_ms)
{
	sqlite3_stmt *st;

	st = s_stmt(q, "INSERT OR REPLACE INTO job_outputs (job_id, name, sha256) VALUES (?, ?, ?)");
	if (!st)
		return QUEUE_ERR;
	for (size_t i = 0; i < res->noutputs; i++) {
		const struct queue_output *o = &res->outputs[i];
		if (!o->name || !o->name[0] || !o->sha256 || !sha256_is_hex(o->sha256))
			return err_set("bad output '%s': expected a name and a sha256 in hex",
				       o->name ? o->name : "");
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_text(st, 2, o->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, o->sha256, -1, SQLITE_STATIC);
		if (s_done(q, st) < 0)
			return QUEUE_ERR;
	}
	st = s_stmt(q, "INSERT INTO evaluations (run_id, job_id, domain, metric, value, created_ms) "
		       "VALUES (?, ?, ?, ?, ?, ?)");
	if (!st)
		return QUEUE_ERR;
	for (size_t i = 0; i < res->nevals; i++) {
		const struct queue_eval *e = &res->evals[i];
		if (!e->domain || !e->metric)
			return err_set("bad evaluation %zu: expected a domain and a metric", i);
		if (run_id > 0)
			sqlite3_bind_int64(st, 1, run_id);
		else
			sqlite3_bind_null(st, 1);
		sqlite3_bind_int64(st, 2, id);
		sqlite3_bind_text(st, 3, e->domain, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, e->metric, -1, SQLITE_STATIC);
		sqlite3_bind_double(st, 5, e->value);
		sqlite3_bind_int64(st, 6, now_ms);
		if (s_done(q, st) < 0)
			return QUEUE_ERR;
	}
	return QUEUE_OK;
}

static int s_finish(queue_t *q, int64_t id, int attempt, const struct queue_result *res, int64_t now_ms)
{
	static const struct queue_result none;
	struct jrow j;
	sqlite3_stmt *st;
	int rc;

	if (!res)
		res = &none;
	if ((rc = s_live(q, id, attempt, &j)) < 0)
		return rc;
	if (res->result_json) {
		cJSON *v = jsonu_parse(res->result_json, strlen(res->result_json), "job result");
		if (!v)
			return QUEUE_ERR;
		cJSON_Delete(v);
	}
	st = s_stmt(q, "UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_deadline = NULL, "
		       "result = ?2, error = NULL, finished_ms = ?3, "
		       "started_ms = coalesce(started_ms, ?3) WHERE id = ?1");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, res->result_json ? res->result_json : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	if (s_done(q, st) < 0 || s_record_result(q, id, j.run_id, res, now_ms) < 0)
		return QUEUE_ERR;
	/* the catalogue rows are a by-product: without them the job still succeeds */
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	if (job_catalog_add(q->r, id, now_ms) < 0) {
		log_warn("job %lld: no registry rows for its outputs: %s", (long long)id, err_msg());
		registry_rollback(q->r);
	} else if (registry_commit(q->r) < 0) {
		return QUEUE_ERR;
	}
	return s_promote_dependents(q, id, now_ms);
}

int queue_finish(queue_t *q, int64_t job_id, int attempt, const struct queue_result *res, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_finish(q, job_id, attempt, res, now_ms));
}

static int s_fail(queue_t *q, int64_t id, int attempt, const char *error, int retryable, int64_t now_ms)
{
	struct jrow j;
	int rc = s_live(q, id, attempt, &j);

	return rc < 0 ? rc : s_requeue_or_fail(q, id, &j, error, retryable, now_ms);
}

int queue_fail(queue_t *q, int64_t job_id, int attempt, const char *error, int retryable, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_fail(q, job_id, attempt, error, retryable, now_ms));
}

static int s_return(queue_t *q, int64_t id, int attempt, int64_t now_ms)
{
	struct jrow j;
	sqlite3_stmt *st;
	int rc = s_live(q, id, attempt, &j);

	if (rc < 0)
		return rc;
	st = s_stmt(q, "UPDATE jobs SET state = 'ready', lease_owner = NULL, lease_deadline = NULL, "
		       "attempt_base = attempt_base + 1, backoff_until = 0, ready_ms = ?2 WHERE id = ?1");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	return registry_event(q->r, now_ms, "job.returned", id, "worker", NULL) < 0 ? QUEUE_ERR : QUEUE_OK;
}

int queue_return(queue_t *q, int64_t job_id, int attempt, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_return(q, job_id, attempt, now_ms));
}

/* ---- operators ------------------------------------------------------------ */

static int s_cancel(queue_t *q, int64_t id, const char *reason, int64_t now_ms)
{
	struct jrow j;
	sqlite3_stmt *st;
	int rc = s_row(q, id, &j);

	if (rc < 0)
		return rc;
	if (j.state == JOB_SUCCEEDED || j.state == JOB_FAILED || j.state == JOB_CANCELLED)
		return err_setc(QUEUE_BAD_STATE, "job %lld already ended (%s): nothing to cancel",
				(long long)id, job_state_name(j.state));
	/* lease_owner stays: queue_take_cancels() tells its worker to stop. */
	st = s_stmt(q, "UPDATE jobs SET state = 'cancelled', lease_deadline = NULL, error = ?2, "
		       "finished_ms = ?3 WHERE id = ?1");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, reason ? reason : "cancelled", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	if (s_done(q, st) < 0 || registry_event(q->r, now_ms, "job.cancelled", id, "operator", reason) < 0)
		return QUEUE_ERR;
	return s_cancel_dependents(q, id, "a dependency was cancelled", now_ms);
}

int queue_cancel(queue_t *q, int64_t job_id, const char *reason, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_cancel(q, job_id, reason, now_ms));
}

static int s_retry(queue_t *q, int64_t id, int64_t now_ms)
{
	struct jrow j;
	sqlite3_stmt *st;
	int64_t dep;
	int rc = s_row(q, id, &j), left = 0;

	if (rc < 0)
		return rc;
	if (j.state != JOB_FAILED && j.state != JOB_CANCELLED)
		return err_setc(QUEUE_BAD_STATE, "job %lld is %s: only failed or cancelled jobs are retried",
				(long long)id, job_state_name(j.state));
	st = s_stmt(q, "SELECT dep_id FROM job_deps WHERE job_id = ?");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct jrow d;
		dep = sqlite3_column_int64(st, 0);
		if (s_row(q, dep, &d) < 0) {
			sqlite3_reset(st);
			return QUEUE_ERR;
		}
		if (d.state == JOB_FAILED || d.state == JOB_CANCELLED) {
			sqlite3_reset(st);
			return err_setc(QUEUE_BAD_STATE, "job %lld needs job %lld, which is %s: retry that one first",
					(long long)id, (long long)dep, job_state_name(d.state));
		}
		left += d.state != JOB_SUCCEEDED;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return registry_err(q->r, "reading dependencies");
	st = s_stmt(q, "UPDATE jobs SET state = ?2, deps_left = ?3, attempt_base = attempts, lease_owner = NULL, "
		       "lease_deadline = NULL, backoff_until = 0, error = NULL, result = NULL, finished_ms = NULL, "
		       "ready_ms = ?4 WHERE id = ?1");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, left ? "pending" : "ready", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, left);
	sqlite3_bind_int64(st, 4, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	return registry_event(q->r, now_ms, "job.retried", id, "operator", NULL) < 0 ? QUEUE_ERR : QUEUE_OK;
}

int queue_retry(queue_t *q, int64_t job_id, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_retry(q, job_id, now_ms));
}

static int s_take_cancels(queue_t *q, struct queue_cancel_note *out, size_t max)
{
	sqlite3_stmt *st = s_stmt(q, "SELECT id, attempts, lease_owner FROM jobs INDEXED BY jobs_owner "
				     "WHERE lease_owner IS NOT NULL AND state = 'cancelled' LIMIT ?");
	size_t n = 0;
	int rc;

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
	while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		out[n].job_id = sqlite3_column_int64(st, 0);
		out[n].attempt = sqlite3_column_int(st, 1);
		s_copy_col(out[n].worker_id, sizeof out[n].worker_id, st, 2);
		n++;
	}
	sqlite3_reset(st);
	st = s_stmt(q, "UPDATE jobs SET lease_owner = NULL WHERE id = ?");
	if (!st)
		return QUEUE_ERR;
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_int64(st, 1, out[i].job_id);
		if (s_done(q, st) < 0)
			return QUEUE_ERR;
	}
	return (int)n;
}

int queue_take_cancels(queue_t *q, struct queue_cancel_note *out, size_t max)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_take_cancels(q, out, max));
}

/* ---- leases, workers, restarts -------------------------------------------- */

/* Requeue-or-fail every live lease the statement `st` selects (ids in
 * column 0). Collects ids first: the updates must not run under the scan. */
static int s_requeue_selected(queue_t *q, sqlite3_stmt *st, const char *why, int64_t now_ms)
{
	int64_t *ids = NULL;
	size_t n = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			int64_t *grown = realloc(ids, (cap = cap ? 2 * cap : 16) * sizeof *ids);
			if (!grown) {
				rc = err_set("out of memory requeueing jobs");
				goto out;
			}
			ids = grown;
		}
		ids[n++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		rc = registry_err(q->r, "finding leases to requeue");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct jrow j;
		if (s_row(q, ids[i], &j) < 0 || s_requeue_or_fail(q, ids[i], &j, why, 1, now_ms) < 0) {
			rc = QUEUE_ERR;
			goto out;
		}
	}
	rc = (int)n;
out:
	sqlite3_reset(st);
	free(ids);
	return rc;
}

int queue_expire_leases(queue_t *q, int64_t now_ms)
{
	sqlite3_stmt *st;

	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	st = s_stmt(q, "SELECT id FROM jobs WHERE lease_deadline < ?");
	if (!st)
		return s_end(q, QUEUE_ERR);
	sqlite3_bind_int64(st, 1, now_ms);
	return s_end(q, s_requeue_selected(q, st, "lease expired", now_ms));
}

static int s_release_worker(queue_t *q, const char *worker_id, const char *reason, int64_t now_ms)
{
	sqlite3_stmt *st = s_stmt(q, "SELECT id FROM jobs WHERE lease_owner = ? AND state IN ('leased', 'running')");

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_text(st, 1, worker_id, -1, SQLITE_STATIC);
	return s_requeue_selected(q, st, reason ? reason : "worker lost", now_ms);
}

int queue_release_worker(queue_t *q, const char *worker_id, const char *reason, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_release_worker(q, worker_id, reason, now_ms));
}

static int s_reattach(queue_t *q, const char *worker_id, int64_t id, int attempt, int64_t now_ms,
		      int64_t lease_ms)
{
	struct jrow j;
	sqlite3_stmt *st;
	int rc = s_live(q, id, attempt, &j);

	/* Requeued after this very attempt and not leased since: take it back. */
	if (rc == QUEUE_STALE && j.state == JOB_READY && j.attempts == attempt)
		rc = QUEUE_OK;
	if (rc < 0)
		return rc;
	st = s_stmt(q, "UPDATE jobs SET state = 'running', lease_owner = ?2, worker = ?2, lease_deadline = ?3, "
		       "backoff_until = 0, started_ms = coalesce(started_ms, ?4) WHERE id = ?1");
	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, worker_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms + lease_ms);
	sqlite3_bind_int64(st, 4, now_ms);
	if (s_done(q, st) < 0)
		return QUEUE_ERR;
	return registry_event(q->r, now_ms, "job.reattached", id, worker_id, NULL) < 0 ? QUEUE_ERR : QUEUE_OK;
}

int queue_reattach(queue_t *q, const char *worker_id, int64_t job_id, int attempt, int64_t now_ms,
		   int64_t lease_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_reattach(q, worker_id, job_id, attempt, now_ms, lease_ms));
}

int queue_recover(queue_t *q, int64_t now_ms, int64_t grace_ms)
{
	sqlite3_stmt *st;

	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	st = s_stmt(q, "UPDATE jobs SET lease_deadline = max(lease_deadline, ?) WHERE lease_deadline IS NOT NULL");
	if (!st)
		return s_end(q, QUEUE_ERR);
	sqlite3_bind_int64(st, 1, now_ms + grace_ms);
	if (s_done(q, st) < 0)
		return s_end(q, QUEUE_ERR);
	return s_end(q, sqlite3_changes(registry_db(q->r)));
}

int queue_worker_up(queue_t *q, const struct queue_worker *w, int64_t now_ms)
{
	sqlite3_stmt *st;

	if (!w->id || !w->id[0] || strlen(w->id) > 64)
		return err_set("bad worker id '%s': expected 1 to 64 bytes", w->id ? w->id : "");
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	st = s_stmt(q, "INSERT INTO workers (id, host, backend, gpu_mem_mb, slots, state, first_seen, last_seen) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, 'up', ?6, ?6) ON CONFLICT (id) DO UPDATE SET "
		       "host = excluded.host, backend = excluded.backend, gpu_mem_mb = excluded.gpu_mem_mb, "
		       "slots = excluded.slots, state = 'up', last_seen = excluded.last_seen");
	if (!st)
		return s_end(q, QUEUE_ERR);
	sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, w->host, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, w->caps.backend);
	sqlite3_bind_int64(st, 4, w->caps.gpu_mem_mb);
	sqlite3_bind_int(st, 5, w->slots);
	sqlite3_bind_int64(st, 6, now_ms);
	return s_end(q, s_done(q, st));
}

static int s_worker_down(queue_t *q, const char *worker_id, const char *reason, int64_t now_ms)
{
	sqlite3_stmt *st = s_stmt(q, "UPDATE workers SET state = 'down', last_seen = ?2 WHERE id = ?1");

	if (!st)
		return QUEUE_ERR;
	sqlite3_bind_text(st, 1, worker_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_ms);
	if (s_done(q, st) < 0 || registry_event(q->r, now_ms, "worker.down", 0, worker_id, reason) < 0)
		return QUEUE_ERR;
	return s_release_worker(q, worker_id, reason, now_ms);
}

int queue_worker_down(queue_t *q, const char *worker_id, const char *reason, int64_t now_ms)
{
	if (registry_begin(q->r) < 0)
		return QUEUE_ERR;
	return s_end(q, s_worker_down(q, worker_id, reason, now_ms));
}

/* ---- reading -------------------------------------------------------------- */

int queue_job_state(queue_t *q, int64_t job_id, enum job_state *out)
{
	struct jrow j;
	int rc = s_row(q, job_id, &j);

	if (rc == QUEUE_OK)
		*out = j.state;
	return rc;
}

int queue_count_states(queue_t *q, int64_t counts[JOB_NSTATES])
{
	sqlite3_stmt *st = s_stmt(q, "SELECT state, count(*) FROM jobs GROUP BY state");
	enum job_state s = JOB_PENDING;
	int rc;

	if (!st)
		return QUEUE_ERR;
	memset(counts, 0, JOB_NSTATES * sizeof counts[0]);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (job_state_parse((const char *)sqlite3_column_text(st, 0), &s) == 0)
			counts[s] = sqlite3_column_int64(st, 1);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? QUEUE_OK : registry_err(q->r, "counting jobs");
}
