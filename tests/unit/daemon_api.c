/* daemon_api.c: a seeded fuzzer of the JSON endpoints (daemon/api.h)
 * without sockets: valid request bodies, mutated (bytes flipped, cut,
 * duplicated, values swapped for other types), thrown at every mutating
 * route and at made-up paths. Every answer must be a JSON object with a
 * 2xx, or a 4xx carrying "error" -- never a 500, never a crash -- and the
 * queue's invariants must hold afterwards. */
#include "config.h"
#include "daemon/api.h"
#include "err.h"
#include "jsonu.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 4000

static const char *const s_bodies[] = {
	"{\"kind\":\"noop\",\"priority\":3,\"spec\":{\"n\":1}}",
	"{\"jobs\":[{\"kind\":\"train\",\"name\":\"u\"},{\"kind\":\"eval\",\"deps\":[\"u\"]}]}",
	"{\"kind\":\"train\",\"deps\":[1],\"content_key\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
	"\"backend\":\"cuda\",\"min_gpu_mem_mb\":1000,\"max_attempts\":2}",
	"{\"name\":\"sweep\",\"spec\":{\"a\":[1,2]},\"runs\":[{\"method\":\"modula\",\"seed\":1,\"params\":{}}]}",
	"{\"name\":\"tiny\",\"config\":{\"layers\":2}}",
	"{\"name\":\"flan\",\"split\":\"test\",\"domain\":\"flan\",\"rows\":10}",
	"{\"reason\":\"because\"}",
	"{\"min_age_s\":0}",
	"",
};

static const char *const s_routes[][2] = {
	{ "POST", "/jobs" }, { "POST", "/experiments" }, { "POST", "/models" }, { "POST", "/datasets" },
	{ "POST", "/jobs/1/cancel" }, { "POST", "/jobs/2/retry" }, { "POST", "/artifacts/gc" },
	{ "GET", "/jobs/1" }, { "GET", "/runs/1" }, { "GET", "/jobs/1/metrics" }, { "PUT", "/jobs" },
	{ "GET", "/jobs/0" }, { "GET", "/jobs/-1" }, { "GET", "/jobs/99999999999999999999999" },
	{ "GET", "/jobs//" }, { "GET", "/../etc" }, { "GET", "" },
};

static const char *const s_values[] = { "null", "true", "-1", "1e308", "\"\"", "[]", "{}", "\"x\"", "0.5",
					 "9999999999999999999", "[1,[2]]" };

static unsigned s_rand(unsigned *st)
{
	*st = *st * 1103515245u + 12345u;
	return *st >> 8;
}

/* A mutation of `src` into `dst` (size n). */
static void s_mutate(const char *src, char *dst, size_t n, unsigned *st)
{
	size_t len = strlen(src);

	snprintf(dst, n, "%s", src);
	switch (s_rand(st) % 6) {
	case 0: /* flip a byte */
		if (len)
			dst[s_rand(st) % len] = (char)(s_rand(st) % 255 + 1);
		break;
	case 1: /* cut */
		if (len)
			dst[s_rand(st) % len] = '\0';
		break;
	case 2: { /* swap the value after a ':' for another type */
		char *colon = len ? strchr(dst + s_rand(st) % len, ':') : NULL;
		if (colon) {
			char rest[2048];
			const char *end = colon + 1;
			while (*end && *end != ',' && *end != '}')
				end++;
			snprintf(rest, sizeof rest, "%s", end);
			snprintf(colon + 1, n - (size_t)(colon + 1 - dst), "%s%s",
				 s_values[s_rand(st) % (sizeof s_values / sizeof s_values[0])], rest);
		}
		break;
	}
	case 3: /* an unknown field */
		if (len > 1 && dst[0] == '{')
			snprintf(dst, n, "{\"zz%u\":1,%s", s_rand(st) % 10, src + 1);
		break;
	case 4: /* twice */
		snprintf(dst, n, "%s%s", src, src);
		break;
	default: /* as is */
		break;
	}
}

static int64_t s_count(registry_t *r, const char *sql)
{
	sqlite3_stmt *st = registry_stmt(r, sql);
	int64_t v = -1;

	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	if (st)
		sqlite3_reset(st);
	return v;
}

int main(void)
{
	char dir[] = "/tmp/modula-api-XXXXXX", db[256], body[4096], cmd[300];
	struct api_ctx ctx = { 0 };
	registry_t *r;
	queue_t *q;
	unsigned seed = 12345, bad = 0, ok2xx = 0, err4xx = 0;
	int open_after = 0;
	char bad_what[512] = "";

	if (!mkdtemp(dir))
		return 1;
	snprintf(db, sizeof db, "%s/registry.db", dir);
	r = registry_open(db);
	q = r ? queue_new(r) : NULL;
	ctx.store = artifacts_new(dir);
	if (!q || !ctx.store) {
		TAP_OK(0, "open: %s", err_msg());
		return tap_done();
	}
	for (int i = 0; i < ROUNDS; i++) {
		const char *const *route = s_routes[s_rand(&seed) % (sizeof s_routes / sizeof s_routes[0])];
		struct api_req req = { .ctx = &ctx, .r = r, .q = q, .method = route[0], .path = route[1],
				       .now_ms = 1000 + i };
		struct api_resp resp;
		cJSON *o;

		s_mutate(s_bodies[s_rand(&seed) % (sizeof s_bodies / sizeof s_bodies[0])], body, sizeof body, &seed);
		req.body = body;
		req.body_len = strlen(body);
		api_handle(&req, &resp);
		o = resp.body ? cJSON_Parse(resp.body) : NULL;
		if (!o || !cJSON_IsObject(o) || resp.status >= 500 || resp.status < 200 ||
		    (resp.status >= 400 && !cJSON_IsString(cJSON_GetObjectItem(o, "error")))) {
			if (!bad++)
				snprintf(bad_what, sizeof bad_what, "%s %s '%.100s' -> %d %.200s", route[0], route[1],
					 body, resp.status, resp.body ? resp.body : "(none)");
		} else if (resp.status < 300) {
			ok2xx++;
		} else {
			err4xx++;
		}
		cJSON_Delete(o);
		free(resp.body);
		if (registry_depth(r) != 0 && !open_after)
			open_after = i + 1;
	}
	TAP_OK(open_after == 0, "no request leaves a transaction open (first at round %d)", open_after - 1);
	TAP_OK(bad == 0, "%d fuzzed requests: %u accepted, %u refused with a JSON error, %u bad%s%s", ROUNDS, ok2xx,
	       err4xx, bad, bad ? ": first " : "", bad_what);
	TAP_OK(ok2xx > 100 && err4xx > 100, "the fuzzer reached both outcomes");
	TAP_OK(s_count(r, "SELECT count(*) FROM jobs WHERE (state IN ('leased','running')) <> "
			  "(lease_deadline IS NOT NULL)") == 0, "lease invariant holds");
	TAP_OK(s_count(r, "SELECT count(*) FROM jobs j WHERE state = 'ready' AND EXISTS (SELECT 1 FROM job_deps d "
			  "JOIN jobs x ON x.id = d.dep_id WHERE d.job_id = j.id AND x.state <> 'succeeded')") == 0,
	       "no ready job has an unfinished dependency");
	{
		struct api_req req = { .ctx = &ctx, .r = r, .q = q, .method = "GET", .path = "/health" };
		struct api_resp resp;
		api_handle(&req, &resp);
		TAP_OK(resp.status == 200, "health after the fuzzing: %d", resp.status);
		free(resp.body);
	}
	artifacts_destroy(&ctx.store);
	queue_destroy(&q);
	registry_close(&r);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("cannot remove %s", dir);
	return tap_done();
}
