/* daemon.h: modulad's run loop: the pieces of daemon/ put together.
 *
 * daemon_run() opens (creating and migrating) DATA/registry.db, makes the
 * session's worker token, starts the WAL checkpoint thread (see
 * registry_defer_checkpoints) and the HTTP server on its thread pool, then
 * runs the ZeroMQ broker on the calling thread until *stop is set (the CLI
 * sets it from SIGINT/SIGTERM), and shuts everything down in reverse. All
 * state is in the registry: a restarted daemon rebuilds its view from it
 * (leases of running jobs get a grace period so workers can re-attach).
 * Not here: option parsing (daemon_cli.c), any queue or protocol logic.
 */
#ifndef MODULA_DAEMON_DAEMON_H
#define MODULA_DAEMON_DAEMON_H

#include <signal.h>

struct daemon_opts {
	const char *data_dir;         /* required */
	const char *http;             /* HOST:PORT; NULL = DAEMON_HTTP_DEFAULT */
	const char *broker;           /* ZeroMQ endpoint; NULL = DAEMON_BROKER_DEFAULT */
	const char *web_dir;          /* NULL = the installed share folder, else the source tree's web/ */
	int http_threads;             /* 0 = 4 */
	const char *curve_secret;     /* broker CURVE secret key file, or NULL (loopback) */
	const char *curve_allow;      /* allow-list of worker public keys (with curve_secret) */
};

#define DAEMON_HTTP_DEFAULT "127.0.0.1:8600"
#define DAEMON_BROKER_DEFAULT "tcp://127.0.0.1:8601"

/* Serve until *stop becomes nonzero. 0 after a clean stop, -1 via
 * err_set() when something could not start or the registry failed. */
int daemon_run(const struct daemon_opts *o, volatile sig_atomic_t *stop);

/* The web folder daemon_run() uses when o->web_dir is NULL (may be NULL
 * when neither the installed nor the source one exists). */
const char *daemon_default_web(void);

#endif
