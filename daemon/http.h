/* http.h: modulad's HTTP server (libmicrohttpd): the JSON API under
 * /api/v1 (daemon/api.h), /metrics, artifact upload and download, and the
 * dashboard's static files.
 *
 * Threads: libmicrohttpd's internal thread pool; each thread opens its own
 * registry connection on first use (SQLite connections are not shared).
 * Access: reads are open when bound to loopback and need a viewer token
 * otherwise; artifact uploads need a worker token; every other mutation an
 * operator token (Authorization: Bearer TOKEN, see daemon/auth.h). Bodies
 * larger than the limits are refused with 413; every refusal is a JSON
 * error and the server keeps serving.
 * Not here: the endpoints' logic (api.c), tokens (auth.c), files (artifacts.c).
 */
#ifndef MODULA_DAEMON_HTTP_H
#define MODULA_DAEMON_HTTP_H

#include <stddef.h>

struct http_opts {
	const char *listen;      /* "HOST:PORT" (IPv4, [IPv6] or a name); port 0 picks a free one */
	const char *data_dir;    /* DATA: registry.db and artifacts/ */
	const char *web_dir;     /* static files of the dashboard; NULL serves none */
	int threads;             /* thread pool size; 0 = 4 */
	size_t max_body;         /* largest JSON body; 0 = 8 MiB */
	void (*wake)(void *arg); /* after jobs became ready or cancelled; may be NULL */
	void *wake_arg;
};

typedef struct http http_t;

/* Bind and start serving. NULL via err_set() when the address is bad or
 * taken, or the data folder cannot be used. */
http_t *http_start(const struct http_opts *opts);

/* The bound port (useful when the port asked for was 0). */
int http_port(const http_t *h);

/* 1 when bound to a loopback address. */
int http_is_loopback(const http_t *h);

/* Stop serving, wait for the threads, free. Accepts NULL; clears *h. */
void http_stop(http_t **h);

#endif
