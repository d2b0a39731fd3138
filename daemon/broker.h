/* broker.h: modulad's ZeroMQ broker, the ROUTER end of the worker protocol
 * (schema/protocol.md, codec in lib/proto.h).
 *
 * The broker owns one ROUTER socket and its own SQLite connection to the
 * registry. It tracks the connected workers (liveness, capabilities, free
 * slots), leases ready jobs to workers with free slots through the queue API
 * (daemon/queue.h), relays PROGRESS / DONE / FAILED into the queue, expires
 * silent workers (their jobs go back to the queue), lets reconnecting
 * workers re-attach the jobs they still run, sends CANCEL for cancelled jobs
 * and refuses late results with ERROR.
 *
 * Durability: messages are handled in batches. Everything readable is
 * drained, applied in ONE registry transaction, committed, and only then are
 * the replies and JOB messages sent (group commit). No peer ever hears of a
 * state change that a crash could undo.
 *
 * Threads: broker_run() runs on one thread (the daemon's broker thread) and
 * is the only user of the socket and of the broker's registry connection.
 * broker_wake() may be called from any thread. It is not an HTTP server,
 * not the scheduler's policy (that lives in the queue), and not a worker.
 */
#ifndef MODULA_DAEMON_BROKER_H
#define MODULA_DAEMON_BROKER_H

#include <signal.h>

typedef struct broker broker_t;

struct broker_opts {
	/* Heartbeat interval in milliseconds (0: 1000). */
	int heartbeat_ms;
	/* Heartbeats a peer may miss before it is declared dead (0: 3). */
	int liveness;
	/* Lease length granted with each JOB, in milliseconds (0: 30000);
	 * renewed by every message from the worker that holds it. */
	int lease_ms;
	/* Largest accepted message in bytes, also set as ZMQ_MAXMSGSIZE
	 * (0: 1 MiB). */
	long max_msg_bytes;
	/* CURVE: path of the server's secret key file (as written by
	 * `modulad keygen`), or NULL for no CURVE (loopback). */
	const char *curve_secret_file;
	/* CURVE: allow-list of client public keys, one z85 key per line
	 * (DATA/workers.allow); read again when it changes. Required when
	 * curve_secret_file is set. */
	const char *curve_allow_file;
	/* Base URL of the artifact store that workers upload to and download
	 * from ("http://127.0.0.1:8600/api/v1/artifacts"), sent with each JOB;
	 * NULL when the daemon serves no HTTP. */
	const char *artifact_url;
	/* Bearer token workers present to the artifact store, sent with each
	 * JOB (only over CURVE or loopback); NULL for none. */
	const char *artifact_token;
};

/* Bind a ROUTER on `endpoint` (tcp://HOST:PORT, ipc://...) and open the
 * registry at `db_path` (created and migrated by the daemon before).
 * `opts` may be NULL for the defaults. Returns NULL via err_set() when the
 * endpoint cannot be bound, the keys cannot be read or the registry cannot
 * be opened. */
broker_t *broker_new(const char *endpoint, const char *db_path, const struct broker_opts *opts);

/* Serve until *stop becomes nonzero (checked at least every heartbeat
 * interval, and at once after broker_wake()). Sends DISCONNECT to the
 * connected workers before returning. Returns 0, or -1 via err_set() on a
 * fatal error (the registry cannot be written); a bad message from a peer
 * is never fatal. */
int broker_run(broker_t *b, volatile sig_atomic_t *stop);

/* Tell the broker that jobs became ready or were cancelled (thread-safe,
 * async-signal-unsafe, never blocks). Accepts NULL. */
void broker_wake(broker_t *b);

/* Close the socket and the registry connection. Accepts NULL; clears *b. */
void broker_destroy(broker_t **b);

/* CURVE keys (`modulad keygen`) are written by proto_keygen() in lib/proto.h,
 * shared with modula-worker. */

#endif
