/* api.h: the JSON endpoints of modulad's HTTP API (/api/v1/...) and the
 * Prometheus text of /metrics, as functions from a parsed request to a
 * response. docs/api.md documents every route.
 *
 * Not here: sockets, threads, request bodies, tokens and static files
 * (http.c does those and decides who may call what), artifact bodies
 * (streamed by http.c into daemon/artifacts.h).
 */
#ifndef MODULA_DAEMON_API_H
#define MODULA_DAEMON_API_H

#include "daemon/artifacts.h"
#include "daemon/queue.h"

#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;

/* What every request shares; read-only while the server runs. */
struct api_ctx {
	artifacts_t *store;
	/* Called after a commit that made jobs ready or cancelled running
	 * ones (the daemon points it at broker_wake). May be NULL. */
	void (*wake)(void *arg);
	void *wake_arg;
	int64_t started_ms;
};

struct api_req {
	const struct api_ctx *ctx;
	registry_t *r;               /* this thread's connection */
	queue_t *q;                  /* over r */
	struct MHD_Connection *conn; /* for query parameters */
	const char *method;          /* "GET", "POST", ... */
	const char *path;            /* below /api/v1: "/jobs/12/cancel" */
	const char *body;            /* NUL-terminated, may be NULL */
	size_t body_len;
	int64_t now_ms;
};

struct api_resp {
	int status;                  /* HTTP status */
	char *body;                  /* malloc'd; NULL for none */
	const char *type;            /* Content-Type */
};

/* Answer one /api/v1 request. Always fills *resp: errors are JSON
 * {"error": "...", "status": N} with a fitting status. */
void api_handle(const struct api_req *req, struct api_resp *resp);

/* The /metrics page (Prometheus text format 0.0.4). */
void api_metrics(const struct api_req *req, struct api_resp *resp);

/* Fill *resp with a JSON error (printf-style message). */
void api_error(struct api_resp *resp, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
