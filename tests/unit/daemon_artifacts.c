/* daemon_artifacts.c: the artifact store: a good upload lands at
 * artifacts/ab/abcd... and is registered, a hash mismatch or a bad name
 * (path traversal) is refused and leaves nothing, gc removes only what
 * nothing refers to. */
#include "config.h"
#include "daemon/artifacts.h"
#include "daemon/queue.h"
#include "err.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int s_exists(const char *p)
{
	struct stat sb;

	return stat(p, &sb) == 0;
}

static void s_hex_of(const char *text, char hex[SHA256_HEX_LEN + 1])
{
	uint8_t d[SHA256_LEN];

	sha256_buf(text, strlen(text), d);
	sha256_hex(d, hex);
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
	char dir[] = "/tmp/modula-art-XXXXXX", db[256], path[4096], a_hex[65], b_hex[65], cmd[300];
	static const char *const bad[] = {
		"../../../../etc/passwd", "/etc/passwd", "ab/../../x",
		"ABCDEF0000000000000000000000000000000000000000000000000000000000", "", "a b",
	};
	artifact_upload_t *u;
	artifacts_t *a;
	registry_t *r;
	queue_t *q;
	int64_t removed = -1, bytes = -1, id;
	char *tmpfile_count;

	if (!mkdtemp(dir))
		return 1;
	snprintf(db, sizeof db, "%s/registry.db", dir);
	r = registry_open(db);
	a = artifacts_new(dir);
	q = r ? queue_new(r) : NULL;
	if (!r || !a || !q) {
		TAP_OK(0, "open: %s", err_msg());
		return tap_done();
	}
	s_hex_of("alpha", a_hex);
	s_hex_of("beta", b_hex);

	TAP_OK(artifacts_put(a, r, a_hex, "alpha", 5, "expert", 1000) == 0, "upload with the right hash");
	artifacts_path(a, a_hex, path, sizeof path);
	TAP_OK(s_exists(path) && strstr(path, "/artifacts/") && path[strlen(path) - 66] == a_hex[1],
	       "stored at artifacts/%.2s/<sha>", a_hex);
	TAP_OK(s_count(r, "SELECT count(*) FROM artifacts WHERE size = 5 AND kind = 'expert'") == 1, "registered");
	TAP_OK(artifacts_put(a, r, a_hex, "alpha", 5, "expert", 1000) == 0, "uploading it again is harmless");

	TAP_OK(artifacts_put(a, r, b_hex, "not beta", 8, NULL, 1000) < 0 && strstr(err_msg(), "does not match"),
	       "hash mismatch refused: %s", err_msg());
	artifacts_path(a, b_hex, path, sizeof path);
	TAP_OK(!s_exists(path) && s_count(r, "SELECT count(*) FROM artifacts") == 1, "a refused upload leaves nothing");

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		TAP_OK(artifacts_path(a, bad[i], path, sizeof path) < 0 && !artifacts_upload_begin(a, bad[i]),
		       "bad name '%s' refused: %s", bad[i], err_msg());
	}

	u = artifacts_upload_begin(a, b_hex);
	artifacts_upload_write(u, "be", 2);
	artifacts_upload_write(u, "ta", 2);
	TAP_OK(artifacts_upload_commit(&u, r, "checkpoint", 1000, &bytes) == 0 && bytes == 4 && u == NULL,
	       "streamed upload in pieces");
	u = artifacts_upload_begin(a, a_hex);
	artifacts_upload_abort(&u);
	TAP_OK(u == NULL, "abort clears the pointer");
	snprintf(cmd, sizeof cmd, "ls %s/artifacts/tmp | wc -l", dir);
	tmpfile_count = NULL;
	{
		FILE *p = popen(cmd, "r");
		char line[32] = "";
		if (p && fgets(line, sizeof line, p))
			tmpfile_count = strdup(line);
		if (p)
			pclose(p);
	}
	TAP_OK(tmpfile_count && atoi(tmpfile_count) == 0, "no temporary files left behind");
	free(tmpfile_count);

	/* b is referenced by a job's output; a by nothing */
	{
		struct queue_submit s = { .kind = "train" };
		struct queue_output out = { "expert", b_hex };
		struct queue_result res = { .outputs = &out, .noutputs = 1 };
		struct queue_lease l;
		queue_submit(q, &s, 1000, &id, NULL);
		queue_lease_next(q, "w", &(struct queue_caps){ QUEUE_BACKEND_CPU, 0 }, 1000, 1000, &l);
		queue_finish(q, id, l.attempt, &res, 1000);
		queue_lease_clear(&l);
	}
	TAP_OK(artifacts_gc(a, r, 1500, 3600000, &removed, &bytes) == 0 && removed == 0,
	       "gc keeps young artifacts");
	TAP_OK(artifacts_gc(a, r, 10000000, 3600000, &removed, &bytes) == 0 && removed == 1 && bytes == 5,
	       "gc removes the unreferenced one (%lld, %lld bytes)", (long long)removed, (long long)bytes);
	artifacts_path(a, a_hex, path, sizeof path);
	TAP_OK(!s_exists(path), "its file is gone");
	artifacts_path(a, b_hex, path, sizeof path);
	TAP_OK(s_exists(path) && s_count(r, "SELECT count(*) FROM artifacts") == 1, "the referenced one stays");

	queue_destroy(&q);
	artifacts_destroy(&a);
	registry_close(&r);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("cannot remove %s", dir);
	return tap_done();
}
