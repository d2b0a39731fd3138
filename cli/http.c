/* http.c: the modula command's only way to the daemon: one libcurl call
 * per request to the HTTP API (docs/api.md), bearer token attached, the
 * answer parsed as JSON. Errors are printed here, once, as the API gives
 * them ({"error": ..., "errors": [...]}), and mapped to the exit codes.
 * Not here: retries or caching (a CLI call is one question).
 */
#include "config.h"
#include "cli/cli_int.h"
#include "err.h"
#include "jsonu.h"
#include "sha256.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct buf {
	char *p;
	size_t n;
};

static size_t s_collect(char *data, size_t size, size_t nmemb, void *arg)
{
	struct buf *b = arg;
	size_t k = size * nmemb;
	char *np = realloc(b->p, b->n + k + 1);

	if (!np)
		return 0;
	memcpy(np + b->n, data, k);
	b->n += k;
	np[b->n] = 0;
	b->p = np;
	return k;
}

/* A curl handle for `url` with the token set; NULL when curl fails. */
static CURL *s_handle(const struct cli *c, const char *url, struct curl_slist **hdrs)
{
	CURL *h = curl_easy_init();
	char auth[512];

	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	*hdrs = curl_slist_append(NULL, "Accept: application/json");
	if (c->token && c->token[0]) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
		*hdrs = curl_slist_append(*hdrs, auth);
	}
	return h;
}

static int s_unreachable(const struct cli *c, CURLcode rc, const char *detail)
{
	fprintf(stderr, "modula: cannot reach modulad at %s: %s\n"
			"hint: is the daemon running ('modulad --data DIR')? Pass --api URL or set MODULA_API.\n",
		c->api, detail[0] ? detail : curl_easy_strerror(rc));
	return CLI_UNREACHABLE;
}

/* Print the API's refusal and map its status to an exit code. */
static int s_api_error(long status, const struct buf *b)
{
	cJSON *o = b->p ? cJSON_Parse(b->p) : NULL;
	const cJSON *errs = cJSON_GetObjectItemCaseSensitive(o, "errors"), *it;
	const char *msg = cli_str(o, "error", NULL);

	if (cJSON_IsArray(errs) && errs->child) {
		fprintf(stderr, "modula: the spec has %d error%s (HTTP %ld):\n", cJSON_GetArraySize(errs),
			cJSON_GetArraySize(errs) == 1 ? "" : "s", status);
		cJSON_ArrayForEach(it, errs)
			if (cJSON_IsString(it))
				fprintf(stderr, "  %s\n", it->valuestring);
	} else if (msg) {
		fprintf(stderr, "modula: %s (HTTP %ld)\n", msg, status);
	} else {
		fprintf(stderr, "modula: the API answered HTTP %ld without an error message\n", status);
	}
	cJSON_Delete(o);
	return status == 401 || status == 403 ? CLI_AUTH : CLI_ERR;
}

int cli_call(const struct cli *c, const char *method, const char *path, const cJSON *body, cJSON **out)
{
	char url[2048], detail[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	struct buf b = { NULL, 0 };
	char *text = NULL;
	long status = 0;
	CURLcode cc;
	CURL *h;
	int rc = CLI_ERR;

	if (out)
		*out = NULL;
	snprintf(url, sizeof url, "%s/api/v1%s", c->api, path);
	if (!(h = s_handle(c, url, &hdrs))) {
		fprintf(stderr, "modula: cannot start libcurl\n");
		return CLI_ERR;
	}
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (body || strcmp(method, "POST") == 0) {
		text = body ? jsonu_print(body) : strdup("{}");
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, text ? text : "{}");
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		rc = cc == CURLE_WRITE_ERROR ? (fprintf(stderr, "modula: out of memory\n"), CLI_ERR)
					     : s_unreachable(c, cc, detail);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299) {
		rc = s_api_error(status, &b);
		goto out;
	}
	rc = CLI_OK;
	if (out && !(*out = b.p ? cJSON_Parse(b.p) : cJSON_CreateObject())) {
		fprintf(stderr, "modula: the API answered %s %s with something that is not JSON\n", method, path);
		rc = CLI_ERR;
	}
out:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	free(text);
	free(b.p);
	return rc;
}

int cli_get(const struct cli *c, cJSON **out, const char *fmt, ...)
{
	char path[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof path, fmt, ap);
	va_end(ap);
	return cli_call(c, "GET", path, NULL, out);
}

static size_t s_write_file(char *data, size_t size, size_t nmemb, void *arg)
{
	return fwrite(data, size, nmemb, arg);
}

int cli_download(const struct cli *c, const char *sha, const char *path)
{
	char url[2048], detail[CURL_ERROR_SIZE] = "", got[65];
	struct curl_slist *hdrs = NULL;
	long status = 0;
	CURLcode cc;
	FILE *f;
	CURL *h;
	int rc = CLI_ERR;

	snprintf(url, sizeof url, "%s/api/v1/artifacts/%s", c->api, sha);
	if (!(f = fopen(path, "wb"))) {
		fprintf(stderr, "modula: cannot write '%s': %s\n", path, strerror(errno));
		return CLI_ERR;
	}
	if (!(h = s_handle(c, url, &hdrs))) {
		fclose(f);
		return CLI_ERR;
	}
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s_write_file);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (fclose(f) != 0 && cc == CURLE_OK) {
		fprintf(stderr, "modula: cannot write '%s': %s\n", path, strerror(errno));
	} else if (cc != CURLE_OK) {
		rc = s_unreachable(c, cc, detail);
	} else if (status != 200) {
		fprintf(stderr, "modula: artifact %s: HTTP %ld\n", sha, status);
		rc = status == 401 || status == 403 ? CLI_AUTH : CLI_ERR;
	} else if (sha256_file(path, got) < 0 || strcmp(got, sha) != 0) {
		fprintf(stderr, "modula: artifact %s: the file received does not match its name\n", sha);
	} else {
		rc = CLI_OK;
	}
	if (rc != CLI_OK)
		remove(path);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return rc;
}
