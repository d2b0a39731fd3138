/* daemon_queue.c: the job state machine of daemon/queue.h, every transition
 * and every refusal, on a real SQLite registry in a temporary folder. Also
 * the migration runner (fresh file, re-open, foreign file refused). */
#include "config.h"
#include "daemon/queue.h"
#include "err.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEASE 30000

static char s_dir[] = "/tmp/modula-queue-XXXXXX";
static char s_db[256];

static const struct queue_caps s_cpu = { QUEUE_BACKEND_CPU, 0 };
static const struct queue_caps s_gpu = { QUEUE_BACKEND_CUDA, 16000 };

static int64_t s_submit(queue_t *q, const char *kind, int prio, const int64_t *deps, size_t ndeps)
{
	struct queue_submit s = { .kind = kind, .priority = prio, .deps = deps, .ndeps = ndeps };
	int64_t id = 0;

	if (queue_submit(q, &s, 1000, &id, NULL) != QUEUE_OK)
		tap_diag("submit: %s", err_msg());
	return id;
}

static enum job_state s_state(queue_t *q, int64_t id)
{
	enum job_state s = JOB_NSTATES;

	queue_job_state(q, id, &s);
	return s;
}

static int64_t s_lease(queue_t *q, const char *w, const struct queue_caps *c, int64_t now, int *attempt)
{
	struct queue_lease l;
	int64_t id;
	int rc = queue_lease_next(q, w, c, now, LEASE, &l);

	if (rc < 0)
		tap_diag("lease: %s", err_msg());
	if (rc != 1)
		return 0;
	id = l.job_id;
	if (attempt)
		*attempt = l.attempt;
	queue_lease_clear(&l);
	return id;
}

static int64_t s_sql_int(registry_t *r, const char *sql)
{
	sqlite3_stmt *st = registry_stmt(r, sql);
	int64_t v = -1;

	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	if (st)
		sqlite3_reset(st);
	return v;
}

/* Cancel what a test left unfinished, so the next one starts empty. */
static void s_drain(queue_t *q)
{
	struct queue_cancel_note notes[16];
	sqlite3_stmt *st = registry_stmt(queue_registry(q), "SELECT id FROM jobs WHERE state NOT IN "
						       "('succeeded', 'failed', 'cancelled') ORDER BY id DESC");
	int64_t ids[64];
	size_t n = 0;

	while (st && n < 64 && sqlite3_step(st) == SQLITE_ROW)
		ids[n++] = sqlite3_column_int64(st, 0);
	if (st)
		sqlite3_reset(st);
	for (size_t i = 0; i < n; i++)
		queue_cancel(q, ids[i], "test over", 0);
	while (queue_take_cancels(q, notes, 16) > 0)
		;
}

static void test_migrations(void)
{
	registry_t *r = registry_open(s_db);
	FILE *f;
	char other[300];

	TAP_OK(r != NULL, "fresh registry opens (%s)", r ? "ok" : err_msg());
	if (!r)
		return;
	TAP_OK(s_sql_int(r, "PRAGMA user_version") == registry_schema_version(),
	       "user_version is the number of migrations (%d)", registry_schema_version());
	TAP_OK(s_sql_int(r, "PRAGMA application_id") == REGISTRY_APPLICATION_ID, "application_id is set");
	TAP_OK(s_sql_int(r, "PRAGMA foreign_keys") == 1, "foreign keys on");
	TAP_OK(s_sql_int(r, "PRAGMA synchronous") == 2, "synchronous = FULL");
	registry_close(&r);
	TAP_OK(r == NULL, "registry_close clears the pointer");
	r = registry_open(s_db);
	TAP_OK(r != NULL && s_sql_int(r, "SELECT count(*) FROM jobs") == 0, "re-open keeps the schema, no migration rerun");
	registry_close(&r);

	snprintf(other, sizeof other, "%s/other.db", s_dir);
	r = registry_open(other);
	if (r)
		registry_exec(r, "PRAGMA user_version = 99");
	registry_close(&r);
	r = registry_open(other);
	TAP_OK(r == NULL && strstr(err_msg(), "newer"), "a newer schema is refused: %s", err_msg());
	registry_close(&r);
	unlink(other);
	snprintf(other, sizeof other, "%s/foreign.db", s_dir);
	f = fopen(other, "w");
	if (f) {
		fputs("not a database at all, just some text that sqlite will not like", f);
		fclose(f);
	}
	r = registry_open(other);
	TAP_OK(r == NULL, "a file that is not a registry is refused: %s", err_msg());
	registry_close(&r);
	unlink(other);
}

static void test_transactions(registry_t *r)
{
	TAP_OK(registry_begin(r) == 0 && registry_depth(r) == 1, "begin opens a transaction");
	TAP_OK(registry_begin(r) == 0 && registry_depth(r) == 2, "nested begin is a savepoint");
	registry_exec(r, "INSERT INTO events (t_ms, kind) VALUES (1, 'inner')");
	registry_rollback(r);
	registry_exec(r, "INSERT INTO events (t_ms, kind) VALUES (1, 'outer')");
	TAP_OK(registry_commit(r) == 0 && registry_depth(r) == 0, "outer commit closes it");
	TAP_OK(s_sql_int(r, "SELECT count(*) FROM events WHERE kind = 'inner'") == 0 &&
	       s_sql_int(r, "SELECT count(*) FROM events WHERE kind = 'outer'") == 1,
	       "inner rollback undid only the inner level");
	TAP_OK(registry_commit(r) < 0, "commit without begin is refused");
}

static void test_lifecycle(queue_t *q)
{
	struct queue_result res = { .result_json = "{\"ok\":true}" };
	int64_t id, id2;
	int a = 0, a2 = 0;

	id = s_submit(q, "noop", 0, NULL, 0);
	TAP_OK(id > 0 && s_state(q, id) == JOB_READY, "submit without deps: ready");
	TAP_OK(s_lease(q, "w1", &s_cpu, 2000, &a) == id && a == 1 && s_state(q, id) == JOB_LEASED,
	       "lease_next: leased, attempt 1");
	TAP_OK(s_lease(q, "w2", &s_cpu, 2000, NULL) == 0, "nothing else to lease");
	TAP_OK(queue_start(q, id, 2, 2100, LEASE) == QUEUE_STALE, "start with a wrong attempt: stale");
	TAP_OK(queue_start(q, id, 1, 2100, LEASE) == QUEUE_OK && s_state(q, id) == JOB_RUNNING, "start: running");
	TAP_OK(queue_finish(q, id, 1, &res, 2200) == QUEUE_OK && s_state(q, id) == JOB_SUCCEEDED,
	       "finish: succeeded");
	TAP_OK(queue_finish(q, id, 1, &res, 2300) == QUEUE_STALE, "duplicate result refused (stale)");
	TAP_OK(queue_fail(q, id, 1, "x", 1, 2300) == QUEUE_STALE, "fail after finish refused (stale)");
	TAP_OK(queue_finish(q, 999999, 1, &res, 2300) == QUEUE_NOT_FOUND, "unknown job: not found");

	/* late result after lease expiry */
	id2 = s_submit(q, "noop", 0, NULL, 0);
	s_lease(q, "w1", &s_cpu, 3000, &a);
	TAP_OK(queue_expire_leases(q, 3000 + LEASE - 1) == 0, "lease before its deadline is kept");
	TAP_OK(queue_expire_leases(q, 3000 + LEASE + 1) == 1 && s_state(q, id2) == JOB_READY,
	       "expired lease: requeued");
	TAP_OK(s_lease(q, "w2", &s_cpu, 3000 + LEASE + 2, NULL) == 0, "requeued job waits out its backoff");
	TAP_OK(s_lease(q, "w2", &s_cpu, 3000 + LEASE + 1 + QUEUE_BACKOFF_BASE_MS, &a2) == id2 && a2 == 2,
	       "after backoff it is leased again, attempt 2");
	TAP_OK(queue_finish(q, id2, a, &res, 40000) == QUEUE_STALE, "late result of attempt 1 refused");
	TAP_OK(queue_progress(q, id2, a, NULL, 0, NULL, 40000, 0) == QUEUE_STALE, "late progress refused");
	TAP_OK(queue_finish(q, id2, a2, &res, 40000) == QUEUE_OK, "result of the live attempt accepted");
	TAP_OK(s_sql_int(queue_registry(q), "SELECT count(*) FROM jobs WHERE (state IN ('leased','running')) "
					  "<> (lease_deadline IS NOT NULL)") == 0, "invariant 1 holds");
}

static void test_retries(queue_t *q)
{
	struct queue_submit s = { .kind = "sleep", .max_attempts = 2 };
	int64_t id, now = 100000;
	int a;

	queue_submit(q, &s, now, &id, NULL);
	s_lease(q, "w1", &s_cpu, now, &a);
	TAP_OK(queue_fail(q, id, a, "oom", 1, now) == QUEUE_OK && s_state(q, id) == JOB_READY,
	       "retryable failure with attempts left: ready");
	TAP_OK(s_sql_int(queue_registry(q), "SELECT backoff_until FROM jobs ORDER BY id DESC LIMIT 1") ==
	       now + QUEUE_BACKOFF_BASE_MS, "first backoff is the base");
	now += 10 * QUEUE_BACKOFF_BASE_MS;
	s_lease(q, "w1", &s_cpu, now, &a);
	TAP_OK(a == 2 && queue_fail(q, id, a, "oom again", 1, now) == QUEUE_OK && s_state(q, id) == JOB_FAILED,
	       "no attempt left: failed");
	TAP_OK(queue_retry(q, id, now) == QUEUE_OK && s_state(q, id) == JOB_READY, "operator retry: ready");
	s_lease(q, "w1", &s_cpu, now, &a);
	TAP_OK(a == 3, "attempts keep growing across retries (%d)", a);
	TAP_OK(queue_fail(q, id, a, "bad spec", 0, now) == QUEUE_OK && s_state(q, id) == JOB_FAILED,
	       "non-retryable failure: failed at once");
	TAP_OK(queue_retry(q, id, now) == QUEUE_OK, "retry again");
	s_lease(q, "w1", &s_cpu, now, &a);
	TAP_OK(queue_return(q, id, a, now) == QUEUE_OK && s_state(q, id) == JOB_READY, "handed back: ready at once");
	s_lease(q, "w1", &s_cpu, now, &a);
	queue_fail(q, id, a, "x", 1, now);
	TAP_OK(s_state(q, id) == JOB_READY, "a handed-back attempt did not use the budget");
	TAP_OK(queue_retry(q, id, now) == QUEUE_BAD_STATE, "retry of a ready job refused");
}

static void test_deps_and_priority(queue_t *q)
{
	int64_t u, d1, d2, r, low, high, deps[2], now = 200000;
	int a;

	u = s_submit(q, "train", 0, NULL, 0);
	d1 = s_submit(q, "train", 0, &u, 1);
	d2 = s_submit(q, "train", 5, &u, 1);
	deps[0] = d1;
	deps[1] = d2;
	r = s_submit(q, "router", 0, deps, 2);
	TAP_OK(s_state(q, d1) == JOB_PENDING && s_state(q, r) == JOB_PENDING, "jobs with unfinished deps: pending");
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == u, "only the root is leased");
	TAP_OK(s_lease(q, "w1", &s_cpu, now, NULL) == 0, "dependents are not leased before their deps");
	queue_finish(q, u, a, NULL, now);
	TAP_OK(s_state(q, d1) == JOB_READY && s_state(q, d2) == JOB_READY && s_state(q, r) == JOB_PENDING,
	       "finishing the root readies both children, not the grandchild");
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == d2, "higher priority first");
	queue_finish(q, d2, a, NULL, now);
	TAP_OK(s_state(q, r) == JOB_PENDING, "one dep left: still pending");
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == d1, "then the other child");
	queue_finish(q, d1, a, NULL, now);
	TAP_OK(s_state(q, r) == JOB_READY, "last dep done: ready");
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == r, "grandchild leased last");
	queue_finish(q, r, a, NULL, now);

	low = s_submit(q, "noop", -1, NULL, 0);
	high = s_submit(q, "noop", 9, NULL, 0);
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == high, "priority 9 before -1");
	queue_finish(q, high, a, NULL, now);
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == low, "then priority -1");
	queue_finish(q, low, a, NULL, now);

	/* a dependency that failed cancels its dependents */
	u = s_submit(q, "train", 0, NULL, 0);
	d1 = s_submit(q, "train", 0, &u, 1);
	r = s_submit(q, "eval", 0, &d1, 1);
	s_lease(q, "w1", &s_cpu, now, &a);
	queue_fail(q, u, a, "diverged", 0, now);
	TAP_OK(s_state(q, d1) == JOB_CANCELLED && s_state(q, r) == JOB_CANCELLED, "a failed dep cancels its dependents");
	{
		struct queue_submit s = { .kind = "eval", .deps = &u, .ndeps = 1 };
		int64_t x;
		int64_t bad = 777777;
		TAP_OK(queue_submit(q, &s, now, &x, NULL) == QUEUE_BAD_STATE, "submit on a failed dep refused: %s", err_msg());
		s.deps = &bad;
		TAP_OK(queue_submit(q, &s, now, &x, NULL) == QUEUE_NOT_FOUND, "submit on a missing dep refused: %s", err_msg());
	}
	TAP_OK(queue_retry(q, d1, now) == QUEUE_BAD_STATE, "retry of a job whose dep failed refused: %s", err_msg());
	TAP_OK(queue_retry(q, u, now) == QUEUE_OK && queue_retry(q, d1, now) == QUEUE_OK &&
	       s_state(q, d1) == JOB_PENDING, "retry root then child: child pending again");
	s_lease(q, "w1", &s_cpu, now, &a);
	queue_finish(q, u, a, NULL, now);
	TAP_OK(s_state(q, d1) == JOB_READY, "retried child becomes ready when the root succeeds");
	s_lease(q, "w1", &s_cpu, now, &a);
	queue_finish(q, d1, a, NULL, now);
}

static void test_cancel(queue_t *q)
{
	struct queue_cancel_note notes[4];
	int64_t id, id2, now = 300000;
	int a;

	id = s_submit(q, "sleep", 0, NULL, 0);
	TAP_OK(queue_cancel(q, id, "changed my mind", now) == QUEUE_OK && s_state(q, id) == JOB_CANCELLED,
	       "cancel a ready job");
	TAP_OK(queue_cancel(q, id, NULL, now) == QUEUE_BAD_STATE, "cancel twice refused");
	TAP_OK(queue_take_cancels(q, notes, 4) == 0, "no stop notice for a job that was not running");
	id2 = s_submit(q, "sleep", 0, NULL, 0);
	s_lease(q, "w7", &s_cpu, now, &a);
	queue_start(q, id2, a, now, LEASE);
	TAP_OK(queue_cancel(q, id2, "stop", now) == QUEUE_OK && s_state(q, id2) == JOB_CANCELLED,
	       "cancel a running job");
	TAP_OK(queue_progress(q, id2, a, NULL, 0, NULL, now, LEASE) == QUEUE_CANCELLED,
	       "progress of a cancelled job: told to stop");
	TAP_OK(queue_take_cancels(q, notes, 4) == 1 && notes[0].job_id == id2 && notes[0].attempt == a &&
	       strcmp(notes[0].worker_id, "w7") == 0, "one stop notice for w7");
	TAP_OK(queue_take_cancels(q, notes, 4) == 0, "the notice is handed out once");
	TAP_OK(queue_finish(q, id2, a, NULL, now) == QUEUE_CANCELLED, "result of a cancelled job refused");
	TAP_OK(queue_expire_leases(q, now + 10 * LEASE) == 0, "a cancelled job has no lease to expire");
}

static void test_cache(queue_t *q)
{
	const char *key = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	struct queue_output out = { "expert", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" };
	struct queue_result res = { .result_json = "{\"loss\":1.5}", .outputs = &out, .noutputs = 1 };
	struct queue_submit s = { .kind = "train", .content_key = key };
	int64_t a_id, b_id, c_id, now = 400000;
	int a, cached = -1;

	queue_submit(q, &s, now, &a_id, &cached);
	TAP_OK(cached == 0, "first job with a key is not cached");
	queue_submit(q, &s, now, &b_id, &cached);
	TAP_OK(cached == 0 && s_state(q, b_id) == JOB_READY, "second job with the key, first unfinished: ready");
	TAP_OK(s_lease(q, "w1", &s_cpu, now, &a) == a_id, "first leased");
	queue_finish(q, a_id, a, &res, now);
	TAP_OK(s_lease(q, "w1", &s_cpu, now, NULL) == 0 && s_state(q, b_id) == JOB_SUCCEEDED,
	       "the waiting twin is completed from the cache at lease time, not run");
	queue_submit(q, &s, now, &c_id, &cached);
	TAP_OK(cached == 1 && s_state(q, c_id) == JOB_SUCCEEDED, "submitting a finished key: succeeded at once");
	TAP_OK(s_sql_int(queue_registry(q), "SELECT count(*) FROM job_outputs WHERE name = 'expert'") == 3 &&
	       s_sql_int(queue_registry(q), "SELECT count(*) FROM jobs WHERE cached_from IS NOT NULL") == 2,
	       "cached jobs share the outputs and name their source");
	s.content_key = "XYZ";
	TAP_OK(queue_submit(q, &s, now, &c_id, NULL) == QUEUE_ERR, "bad content key refused: %s", err_msg());
	s.content_key = NULL;
	s.spec_json = "{\"a\":";
	TAP_OK(queue_submit(q, &s, now, &c_id, NULL) == QUEUE_ERR, "bad spec JSON refused: %s", err_msg());
	s.spec_json = "[1]";
	TAP_OK(queue_submit(q, &s, now, &c_id, NULL) == QUEUE_ERR, "non-object spec refused: %s", err_msg());
	s.spec_json = NULL;
	s.kind = "../etc";
	TAP_OK(queue_submit(q, &s, now, &c_id, NULL) == QUEUE_ERR, "bad kind refused: %s", err_msg());
}

static void test_caps_workers(queue_t *q)
{
	struct queue_submit s = { .kind = "train", .backend = QUEUE_BACKEND_CUDA, .min_gpu_mem_mb = 20000 };
	struct queue_worker w = { .id = "gpu0", .host = "box", .caps = s_gpu, .slots = 1 };
	struct queue_caps big = { QUEUE_BACKEND_CUDA, 40000 };
	int64_t id, cpu_id, now = 500000;
	int a;

	queue_submit(q, &s, now, &id, NULL);
	cpu_id = s_submit(q, "noop", -5, NULL, 0);
	TAP_OK(s_lease(q, "c1", &s_cpu, now, &a) == cpu_id, "a CPU worker skips the CUDA job");
	queue_finish(q, cpu_id, a, NULL, now);
	TAP_OK(s_lease(q, "g1", &s_gpu, now, NULL) == 0, "a 16 GB GPU does not get a 20 GB job");
	TAP_OK(queue_worker_up(q, &w, now) == QUEUE_OK, "worker up");
	TAP_OK(s_lease(q, "gpu0", &big, now, &a) == id, "a 40 GB GPU does");
	queue_start(q, id, a, now, LEASE);
	TAP_OK(queue_renew_worker(q, "gpu0", now + LEASE, LEASE) == 1, "heartbeat renews its lease");
	TAP_OK(queue_expire_leases(q, now + LEASE + 1) == 0, "renewed lease not expired");
	TAP_OK(queue_worker_down(q, "gpu0", "silent", now) == 1 && s_state(q, id) == JOB_READY,
	       "worker down: its job is requeued");
	TAP_OK(queue_reattach(q, "gpu0", id, a, now, LEASE) == QUEUE_OK && s_state(q, id) == JOB_RUNNING,
	       "reattach of the last attempt, not yet re-leased: running again");
	TAP_OK(queue_reattach(q, "gpu0", id, a - 1, now, LEASE) == QUEUE_STALE, "reattach of an old attempt: stale");
	TAP_OK(queue_recover(q, now, 60000) == 1 &&
	       s_sql_int(queue_registry(q), "SELECT lease_deadline FROM jobs WHERE lease_deadline IS NOT NULL") ==
	       now + 60000, "recover extends live leases to the grace period");
	TAP_OK(queue_release_worker(q, "gpu0", "gone", now) == 1, "release_worker requeues");
	TAP_OK(s_lease(q, "other", &big, now + 10 * QUEUE_BACKOFF_BASE_MS, &a) == id, "another GPU takes it");
	TAP_OK(queue_reattach(q, "gpu0", id, a - 1, now, LEASE) == QUEUE_STALE,
	       "reattach after someone else leased it: stale");
	queue_finish(q, id, a, NULL, now);
}

static void test_batch(queue_t *q)
{
	int64_t ids[3], counts[JOB_NSTATES];
	int a;

	TAP_OK(queue_begin(q) == 0, "batch begins");
	for (int i = 0; i < 3; i++)
		ids[i] = s_submit(q, "noop", 0, NULL, 0);
	s_lease(q, "w1", &s_cpu, 600000, &a);
	TAP_OK(queue_finish(q, ids[0] + 1000, 1, NULL, 600000) == QUEUE_NOT_FOUND, "a refusal inside a batch");
	TAP_OK(queue_commit(q) == 0, "batch commits after a refusal");
	TAP_OK(s_state(q, ids[2]) == JOB_READY && s_state(q, ids[0]) == JOB_LEASED, "the batch's work is kept");
	TAP_OK(queue_count_states(q, counts) == 0 && counts[JOB_READY] == 2 && counts[JOB_LEASED] == 1,
	       "count_states: %lld ready, %lld leased", (long long)counts[JOB_READY], (long long)counts[JOB_LEASED]);
	queue_begin(q);
	s_submit(q, "noop", 0, NULL, 0);
	queue_rollback(q);
	queue_count_states(q, counts);
	TAP_OK(counts[JOB_READY] == 2, "a rolled back batch leaves nothing");
}

int main(void)
{
	registry_t *r;
	queue_t *q;

	if (!mkdtemp(s_dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(s_db, sizeof s_db, "%s/registry.db", s_dir);
	test_migrations();
	r = registry_open(s_db);
	q = r ? queue_new(r) : NULL;
	if (!q) {
		TAP_OK(0, "open: %s", err_msg());
		return tap_done();
	}
	test_transactions(r);
	test_lifecycle(q);
	s_drain(q);
	test_retries(q);
	s_drain(q);
	test_deps_and_priority(q);
	s_drain(q);
	test_cancel(q);
	s_drain(q);
	test_cache(q);
	s_drain(q);
	test_caps_workers(q);
	s_drain(q);
	test_batch(q);
	queue_destroy(&q);
	registry_close(&r);
	{
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
		if (system(cmd) != 0)
			tap_diag("cannot remove %s", s_dir);
	}
	return tap_done();
}
