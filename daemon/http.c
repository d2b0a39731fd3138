/* http.c: see http.h. The libmicrohttpd glue: one request's life is
 *   first call    -> s_begin: decide the route class and the role it
 *                    needs, check the token, open an artifact upload
 *   body pieces   -> s_body: append (JSON, up to max_body) or stream into
 *                    the upload; refused requests swallow their body
 *   last call     -> s_respond: answer
 *   completed     -> s_completed: free the request, abort a broken upload
 */
#include "config.h"
#include "daemon/http.h"
#include "daemon/api.h"
#include "daemon/auth.h"
#include "err.h"
#include "jsonu.h"
#include "log.h"
#include "mtime.h"
#include "path.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HTTP_MAX_BODY_DEFAULT (8u << 20)
#define HTTP_API "/api/v1"
#define HTTP_ARTIFACTS HTTP_API "/artifacts/"

struct http {
	struct MHD_Daemon *mhd;
	struct api_ctx ctx;
	char db_path[PATH_MAX];
	char web_dir[PATH_MAX];
	size_t max_body;
	int port;
	int loopback;
	pthread_key_t key;
};

/* One thread's registry connection. */
struct thread_db {
	registry_t *r;
	queue_t *q;
};

/* ROUTE_PART and ROUTE_HELD are the resumable uploads: PUT and GET of
 * /api/v1/artifacts/SHA/upload (docs/api.md). */
enum route_class { ROUTE_API, ROUTE_METRICS, ROUTE_UPLOAD, ROUTE_DOWNLOAD, ROUTE_PART, ROUTE_HELD, ROUTE_STATIC };

#define HTTP_UPLOAD_SUFFIX "/upload"

/* A part of a resumable upload: Content-Range: bytes FIRST-LAST/TOTAL, or
 * bytes STAR/TOTAL (no body: commit what is held). */
struct part {
	int64_t first, end, total;   /* end = LAST + 1 */
	int64_t got;                 /* body bytes written so far */
	int commit_only;
};

struct request {
	enum route_class route;
	int refused;                 /* answer `resp` without running anything */
	struct api_resp resp;
	char *body;
	size_t len, cap;
	int too_big;
	artifact_upload_t *up;
	struct part part;
	char sha[SHA256_HEX_LEN + 1];
};

static void s_thread_db_free(void *p)
{
	struct thread_db *t = p;

	queue_destroy(&t->q);
	registry_close(&t->r);
	free(t);
}

/* This thread's connection, opened on first use. NULL via err_set(). */
static struct thread_db *s_thread_db(http_t *h)
{
	struct thread_db *t = pthread_getspecific(h->key);

	if (t)
		return t;
	if (!(t = calloc(1, sizeof *t))) {
		err_set("out of memory");
		return NULL;
	}
	if (!(t->r = registry_open(h->db_path)) || !(t->q = queue_new(t->r)) ||
	    pthread_setspecific(h->key, t) != 0) {
		s_thread_db_free(t);
		return NULL;
	}
	return t;
}

static const char *s_bearer(struct MHD_Connection *c)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

	if (!v || strncasecmp(v, "Bearer ", 7) != 0)
		return NULL;
	v += 7;
	while (*v == ' ')
		v++;
	return v;
}

static int s_is_read(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

/* The role a request needs. */
static enum auth_role s_needed(const http_t *h, const struct request *rq, const char *method)
{
	if (rq->route == ROUTE_UPLOAD || rq->route == ROUTE_PART || rq->route == ROUTE_HELD)
		return AUTH_WORKER;
	if (!s_is_read(method))
		return AUTH_OPERATOR;
	return h->loopback || rq->route == ROUTE_STATIC ? AUTH_NONE : AUTH_VIEWER;
}

static void s_classify(struct request *rq, const char *url, const char *method)
{
	size_t n = strlen(url), k = strlen(HTTP_ARTIFACTS), ks = strlen(HTTP_UPLOAD_SUFFIX);
	int resumable = n > k + ks && strncmp(url, HTTP_ARTIFACTS, k) == 0 && strcmp(url + n - ks, HTTP_UPLOAD_SUFFIX) == 0;

	if (strcmp(url, "/metrics") == 0)
		rq->route = ROUTE_METRICS;
	else if (resumable && strcmp(method, "PUT") == 0)
		rq->route = ROUTE_PART;
	else if (resumable && s_is_read(method))
		rq->route = ROUTE_HELD;
	else if (strncmp(url, HTTP_ARTIFACTS, strlen(HTTP_ARTIFACTS)) == 0 && strcmp(method, "PUT") == 0)
		rq->route = ROUTE_UPLOAD;
	else if (strncmp(url, HTTP_ARTIFACTS, strlen(HTTP_ARTIFACTS)) == 0 && s_is_read(method) &&
		 strcmp(url + strlen(HTTP_ARTIFACTS), "gc") != 0)
		rq->route = ROUTE_DOWNLOAD;
	else if (strncmp(url, HTTP_API "/", strlen(HTTP_API) + 1) == 0 || strcmp(url, HTTP_API) == 0)
		rq->route = ROUTE_API;
	else
		rq->route = ROUTE_STATIC;
}

/* Content-Range of a part: "bytes FIRST-LAST/TOTAL" or "bytes STAR/TOTAL".
 * 0, or -1 with a 400 filled in. */
static int s_part_range(struct request *rq, const char *v)
{
	long long a, b, t;
	int k = -1;

	if (v && sscanf(v, "bytes */%lld%n", &t, &k) == 1 && k == (int)strlen(v) && t >= 0) {
		rq->part = (struct part){ .first = t, .end = t, .total = t, .commit_only = 1 };
		return 0;
	}
	k = -1;
	if (!v || sscanf(v, "bytes %lld-%lld/%lld%n", &a, &b, &t, &k) != 3 || k != (int)strlen(v) || a < 0 ||
	    b < a || b >= t) {
		api_error(&rq->resp, 400, "Content-Range: expected 'bytes FIRST-LAST/TOTAL' or 'bytes */TOTAL', "
			  "got '%.80s'", v ? v : "(none)");
		return -1;
	}
	if (t > ARTIFACTS_MAX_BYTES) {
		api_error(&rq->resp, 413, "artifact '%s' is larger than %lld bytes", rq->sha,
			  (long long)ARTIFACTS_MAX_BYTES);
		return -1;
	}
	rq->part = (struct part){ .first = a, .end = b + 1, .total = t };
	return 0;
}

/* The first call of a part: check its range and open the upload at its
 * first byte (a part that does not start where the held bytes end: 409). */
static void s_part_begin(http_t *h, struct request *rq, struct MHD_Connection *c)
{
	int64_t held;

	if (s_part_range(rq, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Range")) < 0) {
		rq->refused = 1;
		return;
	}
	if (rq->part.commit_only)
		return;
	if (!(rq->up = artifacts_resume(h->ctx.store, rq->sha, rq->part.first, &held))) {
		api_error(&rq->resp, held >= 0 || strstr(err_msg(), "another part") ? 409 : 500, "%s", err_msg());
		rq->refused = 1;
	}
}

/* First call: everything that can be decided before the body arrives. */
static void s_begin(http_t *h, struct request *rq, struct MHD_Connection *c, const char *url, const char *method)
{
	enum auth_role need, role = AUTH_NONE;
	const char *token = s_bearer(c);
	struct thread_db *t;

	s_classify(rq, url, method);
	need = s_needed(h, rq, method);
	if (need > AUTH_NONE || token) {
		if (!(t = s_thread_db(h)) || auth_check(t->r, token, &role) < 0) {
			api_error(&rq->resp, 500, "registry error: %s", err_msg());
			rq->refused = 1;
			return;
		}
		if (token && role == AUTH_NONE) {
			api_error(&rq->resp, 401, "unknown token: create one with 'modulad token create'");
			rq->refused = 1;
			return;
		}
	}
	if (role < need) {
		api_error(&rq->resp, token ? 403 : 401, "%s %s needs a%s %s token (Authorization: Bearer TOKEN)%s%s",
			  method, url, need == AUTH_OPERATOR ? "n" : "", auth_role_name(need),
			  token ? "; this one is a " : "", token ? auth_role_name(role) : "");
		rq->refused = 1;
		return;
	}
	if (rq->route != ROUTE_UPLOAD && rq->route != ROUTE_PART) { /* refuse an announced oversized body first */
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > h->max_body) {
			rq->too_big = 1;
			api_error(&rq->resp, 413, "request body larger than %zu bytes", h->max_body);
			return;
		}
	}
	if (rq->route == ROUTE_UPLOAD || rq->route == ROUTE_DOWNLOAD || rq->route == ROUTE_PART ||
	    rq->route == ROUTE_HELD) {
		const char *name = url + strlen(HTTP_ARTIFACTS);
		size_t len = strlen(name) - (rq->route == ROUTE_PART || rq->route == ROUTE_HELD ? strlen(HTTP_UPLOAD_SUFFIX) : 0);
		if (len != SHA256_HEX_LEN || (memcpy(rq->sha, name, len), rq->sha[len] = '\0', !sha256_is_hex(rq->sha))) {
			api_error(&rq->resp, 400, "bad artifact name '%.100s': expected its sha256 as 64 lowercase "
				  "hex digits", name);
			rq->refused = 1;
			return;
		}
	}
	if (rq->route == ROUTE_UPLOAD && !(rq->up = artifacts_upload_begin(h->ctx.store, rq->sha))) {
		api_error(&rq->resp, 500, "%s", err_msg());
		rq->refused = 1;
	}
	if (rq->route == ROUTE_PART)
		s_part_begin(h, rq, c);
}

/* A piece of the body. */
static void s_body(http_t *h, struct request *rq, const char *data, size_t size)
{
	if (rq->refused || rq->too_big)
		return;
	if (rq->up && rq->route == ROUTE_PART && (int64_t)size > rq->part.end - rq->part.first - rq->part.got) {
		api_error(&rq->resp, 400, "the body is longer than its Content-Range (%lld bytes); the bytes past "
			  "it were not kept", (long long)(rq->part.end - rq->part.first));
		size = (size_t)(rq->part.end - rq->part.first - rq->part.got);
		rq->refused = 1;
	}
	if (rq->up) {
		rq->part.got += (int64_t)size;
		if (artifacts_upload_write(rq->up, data, size) < 0) {
			api_error(&rq->resp, strstr(err_msg(), "larger than") ? 413 : 500, "%s", err_msg());
			artifacts_upload_abort(&rq->up);
			rq->refused = 1;
		}
		return;
	}
	if (rq->len + size > h->max_body) {
		rq->too_big = 1;
		api_error(&rq->resp, 413, "request body larger than %zu bytes", h->max_body);
		free(rq->body);
		rq->body = NULL;
		return;
	}
	if (rq->len + size + 1 > rq->cap) {
		size_t cap = rq->cap ? rq->cap : 4096;
		char *nb;
		while (cap < rq->len + size + 1)
			cap *= 2;
		if (!(nb = realloc(rq->body, cap))) {
			api_error(&rq->resp, 500, "out of memory reading the request body");
			rq->refused = 1;
			return;
		}
		rq->body = nb;
		rq->cap = cap;
	}
	memcpy(rq->body + rq->len, data, size);
	rq->len += size;
	rq->body[rq->len] = '\0';
}

static enum MHD_Result s_queue(struct MHD_Connection *c, struct api_resp *r)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;
	size_t len = r->body ? strlen(r->body) : 0;

	mr = MHD_create_response_from_buffer(len, r->body, MHD_RESPMEM_MUST_FREE);
	if (!mr)
		return MHD_NO;
	r->body = NULL;
	if (r->type)
		MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
	MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	ret = MHD_queue_response(c, (unsigned)r->status, mr);
	MHD_destroy_response(mr);
	return ret;
}

/* Answer with the open file `fd` (taken over). */
static enum MHD_Result s_queue_file(struct MHD_Connection *c, int fd, const char *type)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;
	struct stat sb;

	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return MHD_NO;
	}
	if (!(mr = MHD_create_response_from_fd((uint64_t)sb.st_size, fd))) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = MHD_queue_response(c, MHD_HTTP_OK, mr);
	MHD_destroy_response(mr);
	return ret;
}

static const char *s_mime(const char *path)
{
	static const char *const types[][2] = {
		{ ".html", "text/html; charset=utf-8" }, { ".css", "text/css; charset=utf-8" },
		{ ".js", "text/javascript; charset=utf-8" }, { ".mjs", "text/javascript; charset=utf-8" },
		{ ".json", "application/json" }, { ".svg", "image/svg+xml" }, { ".png", "image/png" },
		{ ".ico", "image/x-icon" }, { ".txt", "text/plain; charset=utf-8" }, { ".map", "application/json" },
		{ ".woff2", "font/woff2" },
	};
	const char *dot = strrchr(path, '.');

	for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
		if (strcmp(dot, types[i][0]) == 0)
			return types[i][1];
	return "application/octet-stream";
}

static enum MHD_Result s_static(http_t *h, struct MHD_Connection *c, const char *url, const char *method,
				struct request *rq)
{
	char path[PATH_MAX];
	const char *rel = url[0] == '/' ? url + 1 : url;
	struct stat sb;
	int fd;

	if (!s_is_read(method)) {
		api_error(&rq->resp, 405, "method %s not allowed on '%.200s'", method, url);
		return s_queue(c, &rq->resp);
	}
	if (!h->web_dir[0]) {
		api_error(&rq->resp, 404, "no dashboard here: start modulad with --web DIR");
		return s_queue(c, &rq->resp);
	}
	if (!*rel)
		rel = "index.html";
	if (path_join(path, sizeof path, h->web_dir, rel) < 0) {
		api_error(&rq->resp, 400, "%s", err_msg());
		return s_queue(c, &rq->resp);
	}
	if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) &&
	    (size_t)snprintf(path + strlen(path), sizeof path - strlen(path), "/index.html") >= sizeof path) {
		api_error(&rq->resp, 404, "no such file '%.200s'", url);
		return s_queue(c, &rq->resp);
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		api_error(&rq->resp, 404, "no such file '%.200s'", url);
		return s_queue(c, &rq->resp);
	}
	return s_queue_file(c, fd, s_mime(path));
}

/* A stored artifact that no longer hashes to its name: logged, and kept
 * in the audit log (events: artifact.corrupt) the first time it is found. */
static void s_corrupt(http_t *h, const struct request *rq, const char *why)
{
	struct thread_db *t = s_thread_db(h);
	char detail[128];

	log_error("http: %s", why);
	snprintf(detail, sizeof detail, "{\"sha256\":\"%s\"}", rq->sha);
	if (!t || registry_begin(t->r) < 0)
		goto err;
	if (registry_event(t->r, mtime_wall_ms(), "artifact.corrupt", 0, "http", detail) < 0) {
		registry_rollback(t->r);
		goto err;
	}
	if (registry_commit(t->r) == 0)
		return;
err:
	log_error("http: cannot record the corrupt artifact '%s' in the registry: %s", rq->sha, err_msg());
}

/* Range of a download: "bytes=FIRST-" or "bytes=FIRST-LAST" (one range;
 * other forms are ignored and the whole file is sent, as RFC 9110
 * allows). 1 with [*first, *end) set, 0 for the whole file, -1 when
 * FIRST is past the end (416). */
static int s_range(struct MHD_Connection *c, int64_t size, int64_t *first, int64_t *end)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
	long long a, b = -1;
	int k = -1;

	if (!v)
		return 0;
	if (!((sscanf(v, "bytes=%lld-%n", &a, &k) == 1 && k == (int)strlen(v)) ||
	      (sscanf(v, "bytes=%lld-%lld%n", &a, &b, &k) == 2 && k == (int)strlen(v) && b >= a)) || a < 0)
		return 0;
	if (a >= size)
		return -1;
	*first = a;
	*end = b < 0 || b >= size ? size : b + 1;
	return 1;
}

/* Answer with [first, end) of the open artifact file `fd` (taken over):
 * 200 for all of it, else 206 with its Content-Range. */
static enum MHD_Result s_queue_artifact(struct MHD_Connection *c, int fd, int64_t size, int ranged, int64_t first,
					int64_t end)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;
	char cr[96];

	if (!(mr = MHD_create_response_from_fd_at_offset64((uint64_t)(end - first), fd, (uint64_t)first))) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	MHD_add_response_header(mr, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	if (ranged) {
		snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)first, (long long)end - 1, (long long)size);
		MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
	}
	ret = MHD_queue_response(c, ranged ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK, mr);
	MHD_destroy_response(mr);
	return ret;
}

static enum MHD_Result s_download(http_t *h, struct MHD_Connection *c, struct request *rq)
{
	char path[PATH_MAX];
	int64_t first = 0, end;
	struct stat sb;
	int fd, found, ranged;

	if (artifacts_path(h->ctx.store, rq->sha, path, sizeof path) < 0 ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
		api_error(&rq->resp, 404, "no artifact '%s'", rq->sha);
		return s_queue(c, &rq->resp);
	}
	if (artifacts_verify(h->ctx.store, rq->sha, fd, &found) < 0) {
		close(fd);
		api_error(&rq->resp, 500, "%s", err_msg());
		if (found)
			s_corrupt(h, rq, err_msg());
		return s_queue(c, &rq->resp);
	}
	if (fstat(fd, &sb) < 0) {
		close(fd);
		api_error(&rq->resp, 500, "cannot stat artifact '%s': %s", rq->sha, strerror(errno));
		return s_queue(c, &rq->resp);
	}
	end = (int64_t)sb.st_size;
	if ((ranged = s_range(c, end, &first, &end)) < 0) {
		close(fd);
		api_error(&rq->resp, 416, "Range: artifact '%s' has %lld bytes, the range starts past them", rq->sha,
			  (long long)sb.st_size);
		return s_queue(c, &rq->resp);
	}
	return s_queue_artifact(c, fd, (int64_t)sb.st_size, ranged, first, end);
}

/* The answer of a resumable upload's GET or of a part that did not end
 * it: {"sha256", "offset": bytes held, "complete": in the store}. */
static void s_held(http_t *h, struct request *rq, int64_t held)
{
	char path[PATH_MAX];
	struct stat sb;
	cJSON *o = cJSON_CreateObject();
	int complete = artifacts_path(h->ctx.store, rq->sha, path, sizeof path) == 0 && stat(path, &sb) == 0;

	if (!complete && held < 0 && (held = artifacts_resume_held(h->ctx.store, rq->sha)) < 0) {
		api_error(&rq->resp, 500, "%s", err_msg());
		cJSON_Delete(o);
		return;
	}
	cJSON_AddStringToObject(o, "sha256", rq->sha);
	cJSON_AddNumberToObject(o, "offset", (double)(complete ? (int64_t)sb.st_size : held));
	cJSON_AddBoolToObject(o, "complete", complete);
	rq->resp.body = jsonu_print(o);
	rq->resp.status = 200;
	rq->resp.type = "application/json";
	cJSON_Delete(o);
}

static void s_upload_done(struct thread_db *t, struct request *rq, int64_t now_ms, const char *kind)
{
	cJSON *o;
	int64_t size = 0;

	if (kind && (strlen(kind) > 32 || path_check_name(kind) < 0)) {
		api_error(&rq->resp, 400, "query parameter 'kind': expected a short name, got '%.40s'", kind);
		artifacts_upload_abort(&rq->up);
		return;
	}
	if (artifacts_upload_commit(&rq->up, t->r, kind, now_ms, &size) < 0) {
		api_error(&rq->resp, strstr(err_msg(), "does not match") ? 400 : 500, "%s", err_msg());
		return;
	}
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "sha256", rq->sha);
	cJSON_AddNumberToObject(o, "size", (double)size);
	rq->resp.body = jsonu_print(o);
	rq->resp.status = 201;
	rq->resp.type = "application/json";
	cJSON_Delete(o);
}

/* The last call of a part: the whole artifact is held -> commit it (201,
 * as a plain upload); else keep the bytes and say how many are held. */
static void s_part_done(http_t *h, struct thread_db *t, struct request *rq, int64_t now_ms, const char *kind)
{
	struct part *p = &rq->part;
	int64_t held;

	if (p->commit_only) {
		if (!(rq->up = artifacts_resume(h->ctx.store, rq->sha, p->total, &held))) {
			if (held >= 0)
				api_error(&rq->resp, 409, "the upload of '%s' holds %lld of its %lld bytes: send the rest "
					  "first", rq->sha, (long long)held, (long long)p->total);
			else
				api_error(&rq->resp, strstr(err_msg(), "another part") ? 409 : 500, "%s", err_msg());
			return;
		}
	} else if (p->got < p->end - p->first) {
		api_error(&rq->resp, 400, "the body has %lld bytes, its Content-Range announced %lld; the daemon "
			  "holds %lld: ask GET .../upload and send from there", (long long)p->got,
			  (long long)(p->end - p->first), (long long)(p->first + p->got));
		artifacts_upload_abort(&rq->up);
		return;
	}
	if (p->end < p->total) {
		artifacts_upload_abort(&rq->up);
		s_held(h, rq, p->end);
		return;
	}
	s_upload_done(t, rq, now_ms, kind);
}

/* Last call: run the request and queue the answer. */
static enum MHD_Result s_respond(http_t *h, struct MHD_Connection *c, const char *url, const char *method,
				 struct request *rq)
{
	/* HEAD is answered as GET; libmicrohttpd leaves the body out. */
	struct api_req req = { .ctx = &h->ctx, .conn = c, .method = strcmp(method, "HEAD") ? method : "GET",
			       .body = rq->body, .body_len = rq->len };
	struct thread_db *t;

	if (rq->refused || rq->too_big)
		return s_queue(c, &rq->resp);
	if (rq->route == ROUTE_STATIC)
		return s_static(h, c, url, method, rq);
	if (rq->route == ROUTE_DOWNLOAD)
		return s_download(h, c, rq);
	if (!(t = s_thread_db(h))) {
		api_error(&rq->resp, 500, "registry error: %s", err_msg());
		return s_queue(c, &rq->resp);
	}
	req.r = t->r;
	req.q = t->q;
	req.now_ms = mtime_wall_ms();
	if (rq->route == ROUTE_UPLOAD)
		s_upload_done(t, rq, req.now_ms, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "kind"));
	else if (rq->route == ROUTE_HELD)
		s_held(h, rq, -1);
	else if (rq->route == ROUTE_PART)
		s_part_done(h, t, rq, req.now_ms, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "kind"));
	else if (rq->route == ROUTE_METRICS)
		api_metrics(&req, &rq->resp);
	else {
		req.path = url + strlen(HTTP_API);
		api_handle(&req, &rq->resp);
	}
	if (rq->resp.status >= 500)
		log_warn("%s %s: %d", method, url, rq->resp.status);
	return s_queue(c, &rq->resp);
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				const char *version, const char *data, size_t *size, void **con_cls)
{
	http_t *h = cls;
	struct request *rq = *con_cls;

	(void)version;
	if (!rq) {
		if (!(rq = calloc(1, sizeof *rq)))
			return MHD_NO;
		*con_cls = rq;
		s_begin(h, rq, c, url, method);
		return rq->too_big ? s_queue(c, &rq->resp) : MHD_YES;
	}
	if (*size) {
		s_body(h, rq, data, *size);
		*size = 0;
		return MHD_YES;
	}
	return s_respond(h, c, url, method, rq);
}

static void s_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode tc)
{
	struct request *rq = *con_cls;

	(void)cls;
	(void)c;
	(void)tc;
	if (!rq)
		return;
	artifacts_upload_abort(&rq->up);
	free(rq->resp.body);
	free(rq->body);
	free(rq);
	*con_cls = NULL;
}

static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("http: %s", msg);
}

/* "HOST:PORT" (HOST may be [v6]) into an address. 0 or -1 via err_set(). */
static int s_resolve(const char *listen, struct sockaddr_storage *ss, socklen_t *sl, int *v6)
{
	char host[256];
	const char *colon = strrchr(listen, ':'), *h0 = listen;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE }, *ai = NULL;
	size_t hl;
	int rc;

	if (!colon || !colon[1])
		return err_set("bad HTTP address '%s': expected HOST:PORT (e.g. 127.0.0.1:8600)", listen);
	hl = (size_t)(colon - listen);
	if (hl >= 2 && listen[0] == '[' && listen[hl - 1] == ']') {
		h0++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof host)
		return err_set("bad HTTP address '%s': expected HOST:PORT", listen);
	memcpy(host, h0, hl);
	host[hl] = '\0';
	if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0)
		return err_set("bad HTTP address '%s': %s", listen, gai_strerror(rc));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sl = ai->ai_addrlen;
	*v6 = ai->ai_family == AF_INET6;
	freeaddrinfo(ai);
	return 0;
}

static int s_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return 0;
}

http_t *http_start(const struct http_opts *o)
{
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	const union MHD_DaemonInfo *info;
	/* poll(), not epoll: libmicrohttpd 0.9.75 with epoll leaves a client
	 * that vanished in the middle of a request body in CLOSE-WAIT until the
	 * connection timeout, and with it the part of a resumable upload it
	 * was sending (tests/daemon/resume.sh); with poll() it sees the EOF. */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
	http_t *h;
	int v6 = 0;

	if (s_resolve(o->listen, &ss, &sl, &v6) < 0)
		return NULL;
	if (!(h = calloc(1, sizeof *h))) {
		err_set("out of memory starting HTTP");
		return NULL;
	}
	if ((size_t)snprintf(h->db_path, sizeof h->db_path, "%s/registry.db", o->data_dir) >= sizeof h->db_path ||
	    (o->web_dir && (size_t)snprintf(h->web_dir, sizeof h->web_dir, "%s", o->web_dir) >= sizeof h->web_dir)) {
		err_set("data or web folder path too long: '%s'", o->data_dir);
		free(h);
		return NULL;
	}
	if (pthread_key_create(&h->key, s_thread_db_free) != 0) {
		err_set("cannot create a thread key");
		free(h);
		return NULL;
	}
	h->max_body = o->max_body ? o->max_body : HTTP_MAX_BODY_DEFAULT;
	h->loopback = s_loopback(&ss);
	h->ctx.wake = o->wake;
	h->ctx.wake_arg = o->wake_arg;
	h->ctx.started_ms = mtime_wall_ms();
	if (!(h->ctx.store = artifacts_new(o->data_dir)))
		goto err;
	if (v6)
		flags |= MHD_USE_IPv6;
	h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, s_access, h,
				  MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, h,
				  MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				  MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(o->threads > 0 ? o->threads : 4),
				  MHD_OPTION_NOTIFY_COMPLETED, s_completed, h,
				  MHD_OPTION_CONNECTION_TIMEOUT, 120u,
				  MHD_OPTION_END);
	if (!h->mhd) {
		err_set("cannot serve HTTP on '%s': the address is in use or not available here "
			"(pick another with --http HOST:PORT)", o->listen);
		goto err;
	}
	info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : 0;
	return h;
err:
	artifacts_destroy(&h->ctx.store);
	pthread_key_delete(h->key);
	free(h);
	return NULL;
}

int http_port(const http_t *h)
{
	return h->port;
}

int http_is_loopback(const http_t *h)
{
	return h->loopback;
}

void http_stop(http_t **hp)
{
	http_t *h = hp ? *hp : NULL;

	if (!h)
		return;
	MHD_stop_daemon(h->mhd);
	pthread_key_delete(h->key);
	artifacts_destroy(&h->ctx.store);
	free(h);
	*hp = NULL;
}
