/* fuzz_api.c: libFuzzer target for modulad's HTTP API handlers, driven
 * in-process through api_handle() and api_metrics() (daemon/api.h) over a
 * real registry in a private temporary folder.
 *
 * Input layout: "METHOD PATH\n" then the request body (the JSON a client
 * would send). Each input runs inside one outer registry transaction that
 * is rolled back afterwards, so the registry is the same for every input
 * (the handlers' own transactions become savepoints) and a run is
 * repeatable. Not here: sockets, tokens and query parameters (http.c;
 * tests/daemon/http.sh and the bad-input catalogue send real requests).
 */
#include "config.h"
#include "daemon/api.h"
#include "daemon/registry.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char s_dir[64];
static registry_t *s_r;
static queue_t *s_q;
static struct api_ctx s_ctx;

static void s_cleanup(void)
{
	char cmd[128];

	queue_destroy(&s_q);
	registry_close(&s_r);
	artifacts_destroy(&s_ctx.store);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_api: cannot remove '%s'\n", s_dir);
}

static void s_setup(void)
{
	char db[128];

	snprintf(s_dir, sizeof s_dir, "%s/fuzz-api.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(s_dir))
		abort();
	snprintf(db, sizeof db, "%s/registry.db", s_dir);
	if (!(s_r = registry_open(db)) || !(s_q = queue_new(s_r)) || !(s_ctx.store = artifacts_new(s_dir)))
		abort();
	atexit(s_cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t head = nl ? (size_t)(nl - data) : size;
	char line[256], *sp, *body;
	struct api_resp resp = { 0 };
	struct api_req req = { .ctx = &s_ctx };

	if (!s_r)
		s_setup();
	if (head >= sizeof line || memchr(data, '\0', head))
		return 0;
	memcpy(line, data, head);
	line[head] = '\0';
	if (!(sp = strchr(line, ' ')))
		return 0;
	*sp = '\0';
	req.body_len = nl ? size - head - 1 : 0;
	if (!(body = malloc(req.body_len + 1)))
		return 0;
	memcpy(body, nl ? nl + 1 : data, req.body_len);
	body[req.body_len] = '\0';
	req.r = s_r;
	req.q = s_q;
	req.method = line;
	req.path = sp + 1;
	req.body = req.body_len ? body : NULL;
	req.now_ms = 1700000000000;
	if (registry_begin(s_r) < 0)
		abort();
	if (!strcmp(req.path, "/metrics"))
		api_metrics(&req, &resp);
	else
		api_handle(&req, &resp);
	if (resp.status < 100 || resp.status > 599 || !resp.type)
		__builtin_trap(); /* api_handle must always fill a response */
	if (registry_depth(s_r) != 1)
		__builtin_trap(); /* a handler left a transaction open */
	registry_rollback(s_r); /* always -1: it ends failure paths */
	free(resp.body);
	free(body);
	return 0;
}
