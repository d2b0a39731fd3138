/* worker_store.c: uploads, downloads and the local cache (see worker_store.h). */
#include "config.h"
#include "worker/worker_store.h"
#include "err.h"
#include "fsx.h"
#include "log.h"
#include "mtime.h"
#include "path.h"
#include "sha256.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_NS 1000000000ull
/* A connection that moves under 1 byte/s for this long is dropped (and retried). */
#define STALL_S 30L

struct wstore {
	CURL *curl;
	char cache[PATH_MAX];
	void (*tick)(void *);
	void *tick_arg;
	uint64_t next_tick_ns;
	long backoff_ms;
	long downloads;
};

wstore_t *wstore_new(const char *cache_dir)
{
	wstore_t *s = calloc(1, sizeof(*s));

	if (!s) {
		err_set("out of memory");
		return NULL;
	}
	s->backoff_ms = 500;
	if (snprintf(s->cache, sizeof(s->cache), "%s", cache_dir) >= (int)sizeof(s->cache) ||
	    fsx_mkdirs(cache_dir, 0700) < 0) {
		err_prefix("cannot make the artifact cache '%s'", cache_dir);
		goto err;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	s->curl = curl_easy_init();
	if (!s->curl) {
		err_set("cannot start libcurl");
		goto err;
	}
	return s;
err:
	wstore_destroy(&s);
	return NULL;
}

void wstore_destroy(wstore_t **sp)
{
	wstore_t *s = sp ? *sp : NULL;

	if (!s)
		return;
	if (s->curl)
		curl_easy_cleanup(s->curl);
	free(s);
	*sp = NULL;
}

void wstore_set_tick(wstore_t *s, void (*fn)(void *), void *arg)
{
	s->tick = fn;
	s->tick_arg = arg;
}

void wstore_set_backoff(wstore_t *s, long first_ms)
{
	s->backoff_ms = first_ms > 0 ? first_ms : 1;
}

long wstore_downloads(const wstore_t *s)
{
	return s->downloads;
}

static void s_tick(wstore_t *s)
{
	uint64_t now = mtime_ns();

	if (!s->tick || now < s->next_tick_ns)
		return;
	s->next_tick_ns = now + TICK_NS;
	s->tick(s->tick_arg);
}

static int s_xferinfo(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	s_tick(p);
	return 0;
}

/* An upload's answer body is not needed. */
static size_t s_discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

/* Sleep `ms`, ticking. */
static void s_wait(wstore_t *s, long ms)
{
	uint64_t end = mtime_ns() + (uint64_t)ms * 1000000ull, now;

	while ((now = mtime_ns()) < end) {
		uint64_t left = (end - now) / 1000000ull + 1;

		s_tick(s);
		poll(NULL, 0, left < 200 ? (int)left : 200);
	}
}

/* Copy `src` to `dst` through a temporary file, or hard-link it. */
static int s_copy(const char *src, const char *dst)
{
	char tmp[PATH_MAX + 8], buf[65536];
	int in, out = -1, rc = -1;
	ssize_t n;

	if (link(src, dst) == 0 || errno == EEXIST)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.part", dst);
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return err_set("cannot open '%s': %s", src, strerror(errno));
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		err_set("cannot create '%s': %s", tmp, strerror(errno));
		goto out;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (n != 0 || fsync(out) < 0 || rename(tmp, dst) < 0) {
		err_set("cannot copy '%s' to '%s': %s", src, dst, strerror(errno));
		unlink(tmp);
		goto out;
	}
	rc = 0;
out:
	if (out >= 0)
		close(out);
	close(in);
	return rc;
}

static int s_url(char *dst, size_t n, const char *base, const char *sha)
{
	size_t len = strlen(base);

	if (snprintf(dst, n, "%s%s%s", base, len && base[len - 1] == '/' ? "" : "/", sha) >= (int)n)
		return err_set("artifact URL too long: '%s'", base);
	return 0;
}

/* Failures worth another try: the network, not a refusal. */
static int s_transient(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_PARTIAL_FILE:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		return 1;
	default:
		return 0;
	}
}

/* A transfer: its URL (BASE/SHA, or BASE/SHA/upload for a resumable
 * upload), token, the local file and, for messages, what it does. */
struct xfer {
	const char *url;
	const char *token;
	const char *path;
	const char *what;
};

/* A reply body kept in memory (small: JSON). */
struct reply {
	char buf[1024];
	size_t len;
};

static size_t s_keep(char *p, size_t size, size_t n, void *arg)
{
	struct reply *r = arg;
	size_t k = size * n, room = sizeof(r->buf) - 1 - r->len;

	memcpy(r->buf + r->len, p, k < room ? k : room);
	r->len += k < room ? k : room;
	r->buf[r->len] = '\0';
	return k;
}

/* Perform the request set up on s->curl with the options every request
 * shares (`h`: extra headers, the token is added), then reset the handle.
 * 0 on a 2xx (or a file:// success), *code the HTTP status; -1 via
 * err_set() with *retry set when another try may do better. */
static int s_perform(wstore_t *s, const struct xfer *x, struct curl_slist *h, long *code, int *retry)
{
	char auth[512];
	CURLcode rc;
	int ret = -1;

	*retry = 0;
	*code = 0;
	if (x->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", x->token);
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(s->curl, CURLOPT_URL, x->url);
	curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(s->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(s->curl, CURLOPT_LOW_SPEED_TIME, STALL_S);
	curl_easy_setopt(s->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(s->curl, CURLOPT_XFERINFOFUNCTION, s_xferinfo);
	curl_easy_setopt(s->curl, CURLOPT_XFERINFODATA, s);
	rc = curl_easy_perform(s->curl);
	curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, code);
	curl_easy_reset(s->curl);
	if (rc != CURLE_OK) {
		*retry = s_transient(rc);
		err_set("cannot %s '%s': %s", x->what, x->url, curl_easy_strerror(rc));
	} else if (*code != 0 && (*code < 200 || *code > 299)) {
		*retry = *code >= 500 || *code == 408 || *code == 429;
		err_set("cannot %s '%s': HTTP %ld", x->what, x->url, *code);
	} else {
		ret = 0;
	}
	curl_slist_free_all(h);
	return ret;
}

/* The body of a download, into the file only when the status is a 2xx:
 * an error's body must not become part of a partial file that is resumed. */
struct sink {
	FILE *f;
	CURL *curl;
};

static size_t s_write_ok(char *p, size_t size, size_t n, void *arg)
{
	struct sink *k = arg;
	long code = 0;

	curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &code);
	if (code != 0 && (code < 200 || code > 299))
		return size * n;
	return fwrite(p, size, n, k->f) * size;
}

/* One try of a download into x->path, continuing a partial file: the
 * bytes already there are asked for no more (Range: bytes=N-). A store
 * that cannot resume (no 206, or 416) truncates the file and tries again. */
static int s_get_once(wstore_t *s, const struct xfer *x, int *retry)
{
	FILE *f = fopen(x->path, "ab");
	struct sink k = { f, s->curl };
	off_t have;
	long code;
	int ret;

	*retry = 0;
	if (!f || fseeko(f, 0, SEEK_END) < 0 || (have = ftello(f)) < 0) {
		err_set("cannot open '%s': %s", x->path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	if (have > 0) {
		log_info("worker: resuming the download of '%s' at byte %lld", x->url, (long long)have);
		curl_easy_setopt(s->curl, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)have);
	}
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, s_write_ok);
	curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &k);
	ret = s_perform(s, x, NULL, &code, retry);
	if (fclose(f) != 0 && ret == 0)
		ret = err_set("cannot write '%s': %s", x->path, strerror(errno));
	if (ret < 0 && have > 0 && (code == 416 || strstr(err_msg(), "range") || strstr(err_msg(), "Range"))) {
		log_warn("worker: %s; downloading it whole", err_msg());
		*retry = truncate(x->path, 0) == 0;
	}
	return ret;
}

/* One try of a plain upload of the whole file (a file:// store). */
static int s_put_whole_once(wstore_t *s, const struct xfer *x, int *retry)
{
	FILE *f = fopen(x->path, "rb");
	struct stat st;
	long code;
	int ret;

	*retry = 0;
	if (!f || fstat(fileno(f), &st) < 0) {
		err_set("cannot open '%s': %s", x->path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	curl_easy_setopt(s->curl, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(s->curl, CURLOPT_READDATA, f);
	curl_easy_setopt(s->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, s_discard);
	ret = s_perform(s, x, NULL, &code, retry);
	fclose(f);
	return ret;
}

/* How many bytes of the upload x->url the daemon holds (GET .../upload,
 * docs/api.md); *complete when the artifact is in the store already. */
static int s_held(wstore_t *s, const struct xfer *x, long long *held, int *complete, int *retry)
{
	struct xfer q = { x->url, x->token, x->path, "ask how much the store holds of" };
	struct reply r = { .len = 0 };
	cJSON *o;
	long code;

	r.buf[0] = '\0';
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, s_keep);
	curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &r);
	if (s_perform(s, &q, NULL, &code, retry) < 0)
		return -1;
	o = cJSON_Parse(r.buf);
	if (!cJSON_IsNumber(cJSON_GetObjectItem(o, "offset"))) {
		cJSON_Delete(o);
		*retry = 1;
		return err_set("cannot %s '%s': unexpected answer '%.100s'", q.what, q.url, r.buf);
	}
	*held = (long long)cJSON_GetObjectItem(o, "offset")->valuedouble;
	*complete = cJSON_IsTrue(cJSON_GetObjectItem(o, "complete"));
	cJSON_Delete(o);
	return 0;
}

/* One try of a resumable upload: ask how many bytes the daemon holds,
 * then send only the rest as one part (Content-Range: bytes N-LAST/SIZE,
 * or bytes STAR/SIZE to commit when it holds them all). A part refused
 * because it no longer starts where the held bytes end (409) is retried. */
static int s_put_once(wstore_t *s, const struct xfer *x, int *retry)
{
	struct curl_slist *h = NULL;
	char range[128];
	long long held = 0;
	struct stat st;
	int complete = 0, ret = -1;
	long code;
	FILE *f;

	*retry = 0;
	if (!(f = fopen(x->path, "rb")) || fstat(fileno(f), &st) < 0) {
		err_set("cannot open '%s': %s", x->path, strerror(errno));
		goto out;
	}
	if (s_held(s, x, &held, &complete, retry) < 0)
		goto out;
	if (complete) {
		ret = 0;
		goto out;
	}
	if (held > (long long)st.st_size || fseeko(f, (off_t)held, SEEK_SET) < 0) {
		*retry = 0;
		err_set("cannot %s '%s': the store holds %lld bytes of this %lld-byte file", x->what, x->url, held,
			(long long)st.st_size);
		goto out;
	}
	if (held > 0)
		log_info("worker: resuming the upload to '%s' at byte %lld of %lld", x->url, held, (long long)st.st_size);
	if (held == (long long)st.st_size)
		snprintf(range, sizeof(range), "Content-Range: bytes */%lld", held);
	else
		snprintf(range, sizeof(range), "Content-Range: bytes %lld-%lld/%lld", held, (long long)st.st_size - 1,
			 (long long)st.st_size);
	h = curl_slist_append(h, range);
	curl_easy_setopt(s->curl, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(s->curl, CURLOPT_READDATA, f);
	curl_easy_setopt(s->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(st.st_size - held));
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, s_discard);
	ret = s_perform(s, x, h, &code, retry);
	if (ret < 0 && code == 409)
		*retry = 1;
	else if (ret == 0 && code != 201) {
		*retry = 1;
		ret = err_set("cannot %s '%s': HTTP %ld, the artifact is not complete yet", x->what, x->url, code);
	}
out:
	if (f)
		fclose(f);
	return ret;
}

/* once() until it works, a refusal, or WSTORE_TRIES tries. */
static int s_transfer(wstore_t *s, const struct xfer *x, int (*once)(wstore_t *, const struct xfer *, int *))
{
	long delay = s->backoff_ms;
	int retry;

	for (int n = 1;; n++) {
		if (once(s, x, &retry) == 0)
			return 0;
		if (!retry || n >= WSTORE_TRIES)
			return -1;
		log_warn("worker: %s; trying again in %ld ms (try %d of %d)", err_msg(), delay, n + 1,
			 WSTORE_TRIES);
		s_wait(s, delay);
		delay *= 2;
	}
}

int wstore_put(wstore_t *s, const char *base_url, const char *token, const char *path,
	       const char *sha)
{
	char url[4096], hex[SHA256_HEX_LEN + 1], cached[PATH_MAX + 80];
	int local = strncmp(base_url, "file:", 5) == 0;
	struct xfer x = { url, token, path, "upload to" };

	if (!sha256_is_hex(sha))
		return err_set("bad sha256 '%.80s' for '%s'", sha, path);
	if (sha256_file(path, hex) < 0)
		return -1;
	if (strcmp(hex, sha))
		return err_set("'%s' does not match its sha256 (%s, the engine said %s)", path, hex, sha);
	if (s_url(url, sizeof(url), base_url, sha) < 0)
		return -1;
	if (!local && strlen(url) + sizeof("/upload") > sizeof(url))
		return err_set("artifact URL too long: '%s'", base_url);
	if (!local)
		strcat(url, "/upload");
	if (s_transfer(s, &x, local ? s_put_whole_once : s_put_once) < 0)
		return -1;
	snprintf(cached, sizeof(cached), "%s/%s", s->cache, sha);
	return s_copy(path, cached);
}

int wstore_get(wstore_t *s, const char *base_url, const char *token, const char *sha,
	       const char *dst)
{
	char url[4096], hex[SHA256_HEX_LEN + 1], cached[PATH_MAX + 80], part[PATH_MAX + 96];
	struct xfer x = { url, token, part, "download" };
	struct stat st;
	int rc, resumed;

	if (!sha256_is_hex(sha))
		return err_set("bad sha256 '%.80s'", sha);
	snprintf(cached, sizeof(cached), "%s/%s", s->cache, sha);
	if (access(cached, R_OK) < 0) {
		if (!base_url)
			return err_set("artifact %s is not in the cache and no store was given", sha);
		if (s_url(url, sizeof(url), base_url, sha) < 0)
			return -1;
		snprintf(part, sizeof(part), "%s.part", cached);
		/* A partial file left by an earlier try (or worker) is resumed;
		 * if the whole then does not match, it goes once more from 0. */
		for (;;) {
			resumed = stat(part, &st) == 0 && st.st_size > 0;
			rc = s_transfer(s, &x, s_get_once);
			if (rc == 0 && sha256_file(part, hex) < 0)
				rc = -1;
			else if (rc == 0 && strcmp(hex, sha))
				rc = err_set("download of %s is corrupt (its sha256 is %s)", sha, hex);
			if (rc == 0 || !resumed || strncmp(err_msg(), "download of", 11) != 0)
				break;
			log_warn("worker: %s after resuming a partial file; downloading it whole", err_msg());
			unlink(part);
		}
		if (rc == 0 && rename(part, cached) < 0)
			rc = err_set("cannot rename '%s': %s", part, strerror(errno));
		if (rc < 0) {
			/* Keep what arrived of an interrupted transfer for the next
			 * try; wrong bytes are not worth resuming. */
			if (strncmp(err_msg(), "cannot download", 15) != 0)
				unlink(part);
			return -1;
		}
		s->downloads++;
		log_info("worker: downloaded artifact %s from %s", sha, base_url);
	}
	return s_copy(cached, dst);
}

int wstore_get_inputs(wstore_t *s, const char *base_url, const char *token, const cJSON *inputs,
		      const char *dir)
{
	char dst[PATH_MAX], parent[PATH_MAX];
	const cJSON *it;

	if (!inputs)
		return 0;
	if (!cJSON_IsObject(inputs))
		return err_set("'inputs' must be an object {\"path\": \"sha256\"}");
	cJSON_ArrayForEach(it, inputs) {
		char *slash;

		if (!cJSON_IsString(it))
			return err_set("input '%.200s': the value must be a sha256 string", it->string);
		if (path_join(dst, sizeof(dst), dir, it->string) < 0)
			return err_prefix("input '%.200s'", it->string);
		snprintf(parent, sizeof(parent), "%s", dst);
		slash = strrchr(parent, '/');
		if (slash && slash != parent) {
			*slash = '\0';
			if (fsx_mkdirs(parent, 0755) < 0)
				return -1;
		}
		unlink(dst);
		if (wstore_get(s, base_url, token, it->valuestring, dst) < 0)
			return err_prefix("input '%.200s'", it->string);
	}
	return 0;
}
