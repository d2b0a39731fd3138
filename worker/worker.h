/* worker.h: the modula-worker process: a DEALER that connects to modulad's
 * broker, announces what it has, runs the jobs it is given and reports
 * back (protocol: schema/protocol.md; behaviour: docs/worker.md).
 *
 * Job kinds: `noop` finishes at once and `sleep` waits spec.seconds, both
 * in-process, to exercise the machinery; every other kind runs as a child
 * `modula-engine KIND job.json` in WORK/job-ID (run_engine.h), whose
 * progress, checkpoints and outputs are relayed and uploaded
 * (worker_store.h). A crash of the engine fails the job, never the worker.
 *
 * Invariants: a result (DONE / FAILED) is kept until the broker answers it
 * (ACK, or ERROR stale / cancelled / not-found) and sent again after each
 * reconnect, so it is recorded exactly once; the worker never runs more
 * than `slots` jobs. Connection states, Paranoid Pirate style:
 *
 *   CONNECTED --3 heartbeats without a word--> WAITING (socket closed)
 *       ^                                         | backoff 1 s .. 32 s
 *       +------ new socket, READY + running ------+
 *
 * Not here: option parsing (worker_cli.c), the engine itself.
 */
#ifndef MODULA_WORKER_WORKER_H
#define MODULA_WORKER_WORKER_H

#include <signal.h>

typedef struct worker worker_t;

/* Where a retry's checkpoint is put, under WORK/job-ID/checkpoints/. */
#define WORKER_RESUME_NAME "step-00000000-resume.safetensors"

struct worker_opts {
	const char *broker;            /* tcp://HOST:PORT */
	int slots;                     /* jobs at once (0: 1) */
	int device;                    /* KDEV_CPU, KDEV_CUDA or -1 for auto */
	long gpu_mem_mb;               /* announced device memory (0: unknown) */
	const char *work_dir;          /* NULL: $TMPDIR/modula-worker-ID */
	const char *engine;            /* NULL: modula-engine next to this program */
	const char *curve_server_key;  /* z85 or a file; NULL: no CURVE */
	const char *curve_keys;        /* this worker's key file (keygen) */
	const char *id;                /* NULL: HOST-PID */
	int heartbeat_ms;              /* 0: 1000 */
	int liveness;                  /* 0: 3 */
};

/* Resolve the device, make the work folder, load keys. NULL via err_set(). */
worker_t *worker_new(const struct worker_opts *opts);

/* Serve until *stop becomes nonzero; then stop the running engines
 * (SIGTERM: they checkpoint), hand their jobs back, wait a little for the
 * broker's answers, send DISCONNECT and return 0. -1 via err_set() on a
 * fatal error (the socket cannot be made). */
int worker_run(worker_t *w, volatile sig_atomic_t *stop);

/* Kill what still runs and free everything. Accepts NULL; clears *w. */
void worker_destroy(worker_t **w);

#endif
