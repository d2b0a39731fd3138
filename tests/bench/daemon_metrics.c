/* daemon_metrics.c: metric ingestion through the queue API
 * (queue_progress, as the broker calls it for PROGRESS messages) next to
 * raw batched SQLite inserts into the same table, same pragmas
 * (WAL, synchronous=FULL), same batch size, in the same run. Also the
 * queue's own cost per noop job (submit, lease, start, finish) with 64 jobs
 * per durable commit, as the broker batches them: the ceiling the queue
 * puts on end-to-end dispatch (tests/bench/dispatch_bench measures that).
 *
 * usage: daemon_metrics [POINTS [BATCH]]   (defaults 500000, 1000)
 * Two interleaved rounds (raw, api, raw, api), the best of each is kept,
 * so neither side pays alone for a cold cache or a growing file.
 * Prints points/s of both and their ratio. Target: >= 100,000 points/s.
 * A benchmark, not a test: it asserts nothing.
 */
#include "config.h"
#include "daemon/queue.h"
#include "err.h"
#include "mtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_keys[] = { "loss", "lr", "grad_norm", "tokens_per_s" };

/* Raw: a prepared INSERT in a loop, one transaction per batch. */
static double s_raw(registry_t *r, long points, long batch)
{
	sqlite3 *db = registry_db(r);
	sqlite3_stmt *st = NULL;
	double t0 = mtime_s();

	if (sqlite3_prepare_v2(db, "INSERT INTO metrics (job_id, run_id, key, step, value, t_ms) "
				   "VALUES (?, NULL, ?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
		return -1;
	for (long i = 0; i < points; i += batch) {
		sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		for (long k = i; k < i + batch && k < points; k++) {
			sqlite3_bind_int64(st, 1, 1);
			sqlite3_bind_text(st, 2, s_keys[k % 4], -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 3, k / 4);
			sqlite3_bind_double(st, 4, 1.0 / (double)(k + 1));
			sqlite3_bind_int64(st, 5, 1000 + k);
			if (sqlite3_step(st) != SQLITE_DONE) {
				sqlite3_finalize(st);
				return -1;
			}
			sqlite3_reset(st);
		}
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			sqlite3_finalize(st);
			return -1;
		}
	}
	sqlite3_finalize(st);
	return (double)points / (mtime_s() - t0);
}

/* Through the API: one queue_progress() per batch (its own durable commit). */
static double s_api(queue_t *q, long points, long batch)
{
	struct queue_submit s = { .kind = "train" };
	struct queue_caps caps = { QUEUE_BACKEND_CPU, 0 };
	struct queue_metric *pts = calloc((size_t)batch, sizeof *pts);
	struct queue_lease l;
	int64_t id;
	double t0;

	if (!pts || queue_submit(q, &s, 1000, &id, NULL) < 0 ||
	    queue_lease_next(q, "bench", &caps, 1000, 3600000, &l) != 1) {
		free(pts);
		return -1;
	}
	queue_lease_clear(&l);
	t0 = mtime_s();
	for (long i = 0; i < points; i += batch) {
		long n = i + batch < points ? batch : points - i;
		for (long k = 0; k < n; k++) {
			pts[k].key = s_keys[(i + k) % 4];
			pts[k].step = (i + k) / 4;
			pts[k].value = 1.0 / (double)(i + k + 1);
			pts[k].t_ms = 1000 + i + k;
		}
		if (queue_progress(q, id, 1, pts, (size_t)n, NULL, 2000, 0) != QUEUE_OK) {
			free(pts);
			return -1;
		}
	}
	free(pts);
	return (double)points / (mtime_s() - t0);
}

/* Noop jobs through the whole lifecycle in three durable commits per
 * group of `group` jobs: submit them; lease them; start and finish them
 * (the broker commits once per poll-loop iteration much the same way). */
static double s_cycle(queue_t *q, long jobs, long group)
{
	struct queue_submit s = { .kind = "noop" };
	struct queue_caps caps = { QUEUE_BACKEND_CPU, 0 };
	struct queue_result res = { .result_json = "{}" };
	struct queue_lease l;
	int64_t ids[256], id;
	int attempts[256];
	double t0 = mtime_s();

	if (group > 256)
		group = 256;
	for (long i = 0; i < jobs; i += group) {
		long n = i + group < jobs ? group : jobs - i;
		if (queue_begin(q) < 0)
			return -1;
		for (long k = 0; k < n; k++)
			if (queue_submit(q, &s, 1000, &id, NULL) < 0)
				return -1;
		if (queue_commit(q) < 0 || queue_begin(q) < 0)
			return -1;
		for (long k = 0; k < n; k++) {
			if (queue_lease_next(q, "bench", &caps, 1000, 30000, &l) != 1)
				return -1;
			ids[k] = l.job_id;
			attempts[k] = l.attempt;
			queue_lease_clear(&l);
		}
		if (queue_commit(q) < 0 || queue_begin(q) < 0)
			return -1;
		for (long k = 0; k < n; k++)
			if (queue_start(q, ids[k], attempts[k], 1000, 30000) < 0 ||
			    queue_finish(q, ids[k], attempts[k], &res, 1000) < 0)
				return -1;
		if (queue_commit(q) < 0)
			return -1;
	}
	return (double)jobs / (mtime_s() - t0);
}

int main(int argc, char **argv)
{
	long points = argc > 1 ? atol(argv[1]) : 500000, batch = argc > 2 ? atol(argv[2]) : 1000;
	char dir[] = "/tmp/modula-bench-XXXXXX", path[256], cmd[300];
	double raw, api, cycle;
	registry_t *r1 = NULL, *r2 = NULL;
	queue_t *q = NULL;
	int rc = 1;

	if (points <= 0 || batch <= 0 || !mkdtemp(dir)) {
		fprintf(stderr, "usage: daemon_metrics [POINTS [BATCH]]\n");
		return 2;
	}
	snprintf(path, sizeof path, "%s/raw.db", dir);
	if (!(r1 = registry_open(path)))
		goto out;
	snprintf(path, sizeof path, "%s/api.db", dir);
	if (!(r2 = registry_open(path)) || !(q = queue_new(r2)))
		goto out;
	raw = api = 0;
	for (int round = 0; round < 2; round++) {
		double a, b = s_raw(r1, points, batch);
		if (b < 0 || (a = s_api(q, points, batch)) < 0) {
			raw = api = -1;
			break;
		}
		raw = b > raw ? b : raw;
		api = a > api ? a : api;
	}
	if (raw <= 0 || api <= 0) {
		fprintf(stderr, "daemon_metrics: %s\n", err_msg());
		goto out;
	}
	printf("metric ingestion, %ld points in batches of %ld, WAL + synchronous=FULL, same table and indexes, "
	       "best of 2\n",
	       points, batch);
	printf("  raw SQLite batched inserts   %12.0f points/s\n", raw);
	printf("  queue_progress (modulad API) %12.0f points/s   ratio api/raw %.2f   target >= 100000: %s\n",
	       api, api / raw, api >= 100000 ? "met" : "NOT met");
	cycle = s_cycle(q, 20000, 64);
	if (cycle < 0)
		goto out;
	printf("queue lifecycle of noop jobs (submit, lease, start, finish), 64 per commit\n");
	printf("  queue API                    %12.0f jobs/s     (end-to-end target >= 5000)\n", cycle);
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "daemon_metrics: %s\n", err_msg());
	queue_destroy(&q);
	registry_close(&r1);
	registry_close(&r2);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "daemon_metrics: cannot remove %s\n", dir);
	return rc;
}
