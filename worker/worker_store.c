/* worker_store.c: uploads, downloads and the local cache (see worker_store.h). */
#include "config.h"
#include "worker/worker_store.h"
#include "err.h"
#include "fsx.h"
#include "sha256.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct wstore {
	CURL *curl;
	char cache[PATH_MAX];
};

wstore_t *wstore_new(const char *cache_dir)
{
	wstore_t *s = calloc(1, sizeof(*s));

	if (!s) {
		err_set("out of memory");
		return NULL;
	}
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

/* Run the prepared transfer; 0 on a 2xx (or a file:// success). */
static int s_perform(wstore_t *s, const char *url, const char *token, const char *what)
{
	struct curl_slist *h = NULL;
	char auth[512];
	long code = 0;
	CURLcode rc;

	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		h = curl_slist_append(h, auth);
	}
	curl_easy_setopt(s->curl, CURLOPT_URL, url);
	curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	rc = curl_easy_perform(s->curl);
	curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(h);
	curl_easy_reset(s->curl);
	if (rc != CURLE_OK)
		return err_set("cannot %s '%s': %s", what, url, curl_easy_strerror(rc));
	if (code != 0 && (code < 200 || code > 299))
		return err_set("cannot %s '%s': HTTP %ld", what, url, code);
	return 0;
}

int wstore_put(wstore_t *s, const char *base_url, const char *token, const char *path,
	       const char *sha)
{
	char url[4096], hex[SHA256_HEX_LEN + 1], cached[PATH_MAX + 80];
	struct stat st;
	FILE *f;
	int rc;

	if (!sha256_is_hex(sha))
		return err_set("bad sha256 '%.80s' for '%s'", sha, path);
	if (sha256_file(path, hex) < 0)
		return -1;
	if (strcmp(hex, sha))
		return err_set("'%s' does not match its sha256 (%s, the engine said %s)", path, hex, sha);
	if (s_url(url, sizeof(url), base_url, sha) < 0)
		return -1;
	f = fopen(path, "rb");
	if (!f || fstat(fileno(f), &st) < 0) {
		if (f)
			fclose(f);
		return err_set("cannot open '%s': %s", path, strerror(errno));
	}
	curl_easy_setopt(s->curl, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(s->curl, CURLOPT_READDATA, f);
	curl_easy_setopt(s->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
	rc = s_perform(s, url, token, "upload to");
	fclose(f);
	if (rc < 0)
		return -1;
	snprintf(cached, sizeof(cached), "%s/%s", s->cache, sha);
	return s_copy(path, cached);
}

int wstore_get(wstore_t *s, const char *base_url, const char *token, const char *sha,
	       const char *dst)
{
	char url[4096], hex[SHA256_HEX_LEN + 1], cached[PATH_MAX + 80], part[PATH_MAX + 96];
	FILE *f;
	int rc;

	if (!sha256_is_hex(sha))
		return err_set("bad sha256 '%.80s'", sha);
	snprintf(cached, sizeof(cached), "%s/%s", s->cache, sha);
	if (access(cached, R_OK) < 0) {
		if (!base_url)
			return err_set("artifact %s is not in the cache and no store was given", sha);
		if (s_url(url, sizeof(url), base_url, sha) < 0)
			return -1;
		snprintf(part, sizeof(part), "%s.part", cached);
		f = fopen(part, "wb");
		if (!f)
			return err_set("cannot create '%s': %s", part, strerror(errno));
		curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, f);
		rc = s_perform(s, url, token, "download");
		if (fclose(f) != 0 && rc == 0)
			rc = err_set("cannot write '%s': %s", part, strerror(errno));
		if (rc == 0 && sha256_file(part, hex) < 0)
			rc = -1;
		else if (rc == 0 && strcmp(hex, sha))
			rc = err_set("download of %s is corrupt (its sha256 is %s)", sha, hex);
		if (rc == 0 && rename(part, cached) < 0)
			rc = err_set("cannot rename '%s': %s", part, strerror(errno));
		if (rc < 0) {
			unlink(part);
			return -1;
		}
	}
	return s_copy(cached, dst);
}
