/* queue.h: the durable job queue and scheduler of modulad.
 *
 * Jobs live in the registry (table jobs, edges in job_deps); this module is
 * the only code that changes a job's state. Every function below runs in a
 * registry transaction: on its own (it commits before returning), or as part
 * of the caller's batch between queue_begin() and queue_commit(). A change is
 * durable only once the outermost commit returned 0, so the broker replies to
 * workers (and HTTP answers clients) only after that: one fsync per poll-loop
 * iteration, not per message.
 *
 * Not here: the wire protocol and worker liveness (broker.c), HTTP parsing
 * (http.c), artifact files (artifacts.c).
 *
 * Job lifecycle (the function behind each transition in brackets):
 *
 *   queue_submit ---> PENDING --(last dep succeeded: queue_finish of the dep)
 *        |               |                       |
 *        | no deps left  +--------------+        v
 *        +---------------------------> READY <---------------------------+
 *        | same content_key already      | queue_lease_next              |
 *        | succeeded: "cached"           v                               |
 *        |                            LEASED --queue_start--> RUNNING     |
 *        |                               |                      |        |
 *        |           queue_expire_leases, queue_release_worker, |        |
 *        |           queue_fail(retryable), attempts remain:    |        |
 *        |           back to READY, not before a backoff -------+--------+
 *        |           queue_return (worker hands back): READY at once ----+
 *        v                               |                      |
 *    SUCCEEDED <----- queue_finish ------+----------------------+
 *                                        |                      |
 *    FAILED <-- queue_fail (not retryable, or no attempt left) --+
 *       |       expired lease with no attempt left
 *       +--queue_retry--> READY (or PENDING while deps are unfinished)
 *
 *    CANCELLED <-- queue_cancel from PENDING, READY, LEASED or RUNNING; or
 *                  a dependency ended FAILED/CANCELLED (cascades to all
 *                  dependents). queue_retry brings it back like FAILED.
 *
 * Invariants (checked by tests/daemon-queue):
 *  1. state is LEASED or RUNNING  <=>  lease_deadline is set (a lease
 *     always has a deadline, the schema CHECKs it); lease_owner is set in
 *     those states, and on a CANCELLED job only until queue_take_cancels()
 *     has handed the stop notice to the broker.
 *  2. attempts only grows; every queue_lease_next() bumps it, and the pair
 *     (job, attempt) names one execution. queue_start/progress/finish/fail
 *     for a pair that is not the job's current live lease are refused with
 *     QUEUE_STALE (late result after expiry, duplicate result) and change
 *     nothing; for a job cancelled meanwhile they get QUEUE_CANCELLED.
 *  3. a job is READY only when every dependency SUCCEEDED (deps_left = 0);
 *     dependents are promoted by the transaction that finishes their last
 *     dependency, so lease selection never scans for readiness.
 *  4. a result is recorded once: SUCCEEDED, FAILED and CANCELLED are final
 *     except through queue_retry (an operator's decision).
 *  5. a job whose content_key already has a SUCCEEDED job is not run again:
 *     at submit, or when leased, it becomes SUCCEEDED with that job's result
 *     and artifacts (cached_from names the source job).
 *  6. retry budget: automatic retries happen while attempts - attempt_base <
 *     max_attempts; backoff before attempt n+1 is min(base * 2^(n-1), cap).
 *     queue_retry and queue_return move attempt_base up so the job gets a
 *     fresh budget (retry) or keeps its budget (a handed-back job).
 *
 * Times are wall-clock milliseconds (mtime_wall_ms()) passed in by the
 * caller, so deadlines survive a daemon restart and tests control the clock.
 *
 * Return codes: functions return QUEUE_OK (0) or a negative code; QUEUE_ERR
 * comes with err_msg(), the others are expected refusals (err_msg() says
 * why too, for logs and HTTP answers).
 */
#ifndef MODULA_DAEMON_QUEUE_H
#define MODULA_DAEMON_QUEUE_H

#include "daemon/registry.h"

#include <stddef.h>
#include <stdint.h>

enum queue_rc {
	QUEUE_OK = 0,
	QUEUE_ERR = -1,        /* I/O, SQL, bad argument: see err_msg() */
	QUEUE_NOT_FOUND = -2,  /* no such job */
	QUEUE_STALE = -3,      /* (job, attempt) is not the live lease: late or duplicate */
	QUEUE_CANCELLED = -4,  /* the job was cancelled: stop running it */
	QUEUE_BAD_STATE = -5,  /* transition not allowed from the current state */
};

enum job_state {
	JOB_PENDING = 0,
	JOB_READY,
	JOB_LEASED,
	JOB_RUNNING,
	JOB_SUCCEEDED,
	JOB_FAILED,
	JOB_CANCELLED,
	JOB_NSTATES
};

/* "pending", "ready", ... as stored in jobs.state. */
const char *job_state_name(enum job_state s);
/* 0 and *out set, or -1 via err_set() for an unknown name. */
int job_state_parse(const char *name, enum job_state *out);

/* Backends, as bits: a job needs one, a worker offers one. */
#define QUEUE_BACKEND_CPU  1
#define QUEUE_BACKEND_CUDA 2

/* Defaults when a submission leaves them 0. */
#define QUEUE_DEFAULT_MAX_ATTEMPTS 3
#define QUEUE_BACKOFF_BASE_MS 1000
#define QUEUE_BACKOFF_CAP_MS 300000

typedef struct queue queue_t;

/* A queue over an open registry (not owned: close it after the queue).
 * NULL via err_set(). One queue per registry connection, one thread. */
queue_t *queue_new(registry_t *r);
/* Accepts NULL; clears the caller's pointer. */
void queue_destroy(queue_t **q);
registry_t *queue_registry(queue_t *q);

/* Group operations in one durable transaction (see the top comment).
 * queue_commit() returns 0 once everything since queue_begin() is on disk;
 * on failure it has rolled back and nothing of the batch happened. */
int queue_begin(queue_t *q);
int queue_commit(queue_t *q);
int queue_rollback(queue_t *q);

/* ---- submitting -------------------------------------------------------- */

struct queue_submit {
	const char *kind;          /* "noop", "sleep", "train", "eval", ... ([a-z0-9_.-], <= 32) */
	const char *spec_json;     /* a JSON object, stored as given; NULL = "{}" */
	int priority;              /* higher first; ties in submission order */
	const char *content_key;   /* NULL, or 64 hex: the cache key of the result */
	const int64_t *deps;       /* ids of jobs this one needs */
	size_t ndeps;
	int backend;               /* QUEUE_BACKEND_CPU (runs anywhere; the default when 0)
				      or QUEUE_BACKEND_CUDA (needs a CUDA worker) */
	int64_t min_gpu_mem_mb;    /* for CUDA jobs: the least device memory */
	int max_attempts;          /* 0 = QUEUE_DEFAULT_MAX_ATTEMPTS */
	int64_t run_id;            /* 0, or the runs row this job is a stage of */
};

/* Insert a job. *id_out gets its id. The job is READY when it has no
 * unfinished deps, PENDING otherwise, SUCCEEDED at once when its content_key
 * already succeeded (*cached_out = 1, else 0; cached_out may be NULL).
 * A dependency that does not exist, or ended FAILED or CANCELLED, is refused
 * (QUEUE_NOT_FOUND / QUEUE_BAD_STATE) and nothing is inserted. */
int queue_submit(queue_t *q, const struct queue_submit *s, int64_t now_ms,
		 int64_t *id_out, int *cached_out);

/* ---- leasing (broker) ---------------------------------------------------- */

/* What a worker offers (announced in READY). */
struct queue_caps {
	int backend;               /* QUEUE_BACKEND_CPU or QUEUE_BACKEND_CUDA */
	int64_t gpu_mem_mb;        /* free device memory, 0 on CPU */
};

/* The sha256 of output `name` of the oldest succeeded job with
 * `content_key` into hex: 1, 0 when there is none, QUEUE_ERR. */
int queue_output_sha(queue_t *q, const char *content_key, const char *name, char hex[65]);

/* A leased job, filled by queue_lease_next(); release with queue_lease_clear(). */
struct queue_lease {
	int64_t job_id;
	int attempt;               /* 1 for the first execution */
	char kind[33];
	char *spec_json;           /* malloc'd */
	char content_key[65];      /* "" when none */
	char checkpoint[65];       /* sha256 of the last checkpoint to resume from, "" when none */
	int64_t deadline_ms;       /* lease deadline */
};
void queue_lease_clear(struct queue_lease *l);

/* Lease the best READY job this worker can run: highest priority, then
 * oldest; not in backoff (backoff_until <= now); CUDA jobs only to CUDA
 * workers with at least min_gpu_mem_mb. Sets LEASED, lease_owner = worker,
 * deadline = now + lease_ms, attempts + 1. A candidate whose content_key has
 * succeeded meanwhile is completed as cached and skipped.
 * Returns 1 with *out filled, 0 when nothing fits, QUEUE_ERR on error. */
int queue_lease_next(queue_t *q, const char *worker_id, const struct queue_caps *caps,
		     int64_t now_ms, int64_t lease_ms, struct queue_lease *out);

/* LEASED -> RUNNING (the worker started the engine); renews the deadline. */
int queue_start(queue_t *q, int64_t job_id, int attempt, int64_t now_ms, int64_t lease_ms);

/* Extend the deadline of every lease `worker_id` holds (on its heartbeat)
 * and note the worker's last_seen. Returns the number of leases renewed
 * (>= 0) or QUEUE_ERR. */
int queue_renew_worker(queue_t *q, const char *worker_id, int64_t now_ms, int64_t lease_ms);

/* One metric point of a PROGRESS message. */
struct queue_metric {
	const char *key;           /* "loss", "lr", "eval/flan/acc", ... (<= 128 bytes) */
	int64_t step;
	double value;
	int64_t t_ms;              /* when measured; 0 = now_ms */
};

/* Record progress of the live (job, attempt): metric points (batched into
 * the metrics table, under the job's run) and, when `checkpoint` is not
 * NULL, the sha256 of the newest checkpoint artifact (a retry resumes from
 * it). A job in LEASED moves to RUNNING. Renews the deadline when
 * lease_ms > 0. QUEUE_STALE / QUEUE_CANCELLED as in invariant 2. */
int queue_progress(queue_t *q, int64_t job_id, int attempt, const struct queue_metric *pts,
		   size_t npts, const char *checkpoint, int64_t now_ms, int64_t lease_ms);

/* An output of a finished job: a name the job gives it ("expert", "router",
 * "bundle", "log", ...) and the sha256 of an artifact in the store. */
struct queue_output {
	const char *name;
	const char *sha256;
};

/* A summary figure of an evaluation job. */
struct queue_eval {
	const char *domain;
	const char *metric;
	double value;
};

struct queue_result {
	const char *result_json;   /* NULL = "{}"; stored as given */
	const struct queue_output *outputs;
	size_t noutputs;
	const struct queue_eval *evals;
	size_t nevals;
};

/* LEASED|RUNNING -> SUCCEEDED for the live (job, attempt), once: a second
 * DONE, or one after the lease moved on, gets QUEUE_STALE and changes
 * nothing. Promotes dependents whose last dependency this was. */
int queue_finish(queue_t *q, int64_t job_id, int attempt, const struct queue_result *res,
		 int64_t now_ms);

/* LEASED|RUNNING -> READY after backoff when `retryable` and the budget
 * allows (invariant 6), else FAILED (dependents are cancelled). `error` is
 * kept in jobs.error. QUEUE_STALE / QUEUE_CANCELLED as above. */
int queue_fail(queue_t *q, int64_t job_id, int attempt, const char *error, int retryable,
	       int64_t now_ms);

/* The worker hands the job back (SIGTERM, checkpoint written): READY at
 * once, without using up the retry budget. */
int queue_return(queue_t *q, int64_t job_id, int attempt, int64_t now_ms);

/* ---- operators (HTTP) ---------------------------------------------------- */

/* Cancel a job that has not ended (and, cascading, its dependents).
 * QUEUE_BAD_STATE when it already ended. When it was LEASED or RUNNING the
 * job keeps its lease_owner until queue_take_cancels() hands the notice to
 * the broker, which tells the worker to stop the engine. */
int queue_cancel(queue_t *q, int64_t job_id, const char *reason, int64_t now_ms);

/* FAILED|CANCELLED -> READY (PENDING while deps are unfinished), with a
 * fresh retry budget. QUEUE_BAD_STATE from other states, or when a
 * dependency itself failed or was cancelled (retry that one first). */
int queue_retry(queue_t *q, int64_t job_id, int64_t now_ms);

/* A cancelled job still running on a worker. */
struct queue_cancel_note {
	int64_t job_id;
	int attempt;
	char worker_id[65];
};

/* Up to `max` notices of cancelled jobs a worker still runs; each is handed
 * out once (lease_owner cleared). Returns the count or QUEUE_ERR. */
int queue_take_cancels(queue_t *q, struct queue_cancel_note *out, size_t max);

/* ---- leases, workers, restarts (broker) ----------------------------------- */

/* Requeue (as a retryable failure: "lease expired") every LEASED or RUNNING
 * job whose deadline is < now. Returns how many, or QUEUE_ERR. */
int queue_expire_leases(queue_t *q, int64_t now_ms);

/* Requeue every job `worker_id` holds (it went silent or disconnected), as
 * a retryable failure with `reason`. Returns how many, or QUEUE_ERR. */
int queue_release_worker(queue_t *q, const char *worker_id, const char *reason, int64_t now_ms);

/* A worker that reconnected (after a daemon restart or a network blip)
 * still runs (job, attempt). Accepted when that pair is still the live
 * lease (whoever owned it), or when the job went back to READY after that
 * very attempt and nobody leased it since: the job is RUNNING under
 * `worker_id` with a fresh deadline. QUEUE_STALE when the pair is not
 * current (the worker should stop it), QUEUE_CANCELLED when cancelled. */
int queue_reattach(queue_t *q, const char *worker_id, int64_t job_id, int attempt,
		   int64_t now_ms, int64_t lease_ms);

/* At daemon start: give every live lease a deadline of at least
 * now + grace_ms, so workers have time to reconnect and re-attach before
 * queue_expire_leases() requeues their jobs. Returns the count or QUEUE_ERR. */
int queue_recover(queue_t *q, int64_t now_ms, int64_t grace_ms);

/* A worker as announced in READY, kept in the workers table for listings. */
struct queue_worker {
	const char *id;            /* the broker's identity for it (<= 64 bytes) */
	const char *host;          /* free text, may be NULL */
	struct queue_caps caps;
	int slots;
};

/* Insert or refresh a worker row (state "up", last_seen = now). */
int queue_worker_up(queue_t *q, const struct queue_worker *w, int64_t now_ms);
/* Mark it "down" and release its jobs (queue_release_worker). Returns how
 * many jobs were released, or QUEUE_ERR. */
int queue_worker_down(queue_t *q, const char *worker_id, const char *reason, int64_t now_ms);

/* ---- reading ------------------------------------------------------------- */

/* The state of a job. QUEUE_NOT_FOUND when there is none. */
int queue_job_state(queue_t *q, int64_t job_id, enum job_state *out);

/* Number of jobs in each state (counts[JOB_NSTATES]). 0 or QUEUE_ERR. */
int queue_count_states(queue_t *q, int64_t counts[JOB_NSTATES]);

#endif
