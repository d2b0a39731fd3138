/* artifacts.c: see artifacts.h. */
#include "config.h"
#include "daemon/artifacts.h"
#include "err.h"
#include "fsx.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct artifacts {
	char root[PATH_MAX - 160];   /* DATA/artifacts; room left for names below it */
	char tmp[PATH_MAX - 160];    /* DATA/artifacts/tmp */
};

struct artifact_upload {
	artifacts_t *a;
	char sha[SHA256_HEX_LEN + 1];
	char tmp[PATH_MAX];
	sha256_t *h;
	int fd;
	int64_t size;
};

artifacts_t *artifacts_new(const char *data_dir)
{
	artifacts_t *a = calloc(1, sizeof *a);
	int k1, k2;

	if (!a) {
		err_set("out of memory opening the artifact store");
		return NULL;
	}
	k1 = snprintf(a->root, sizeof a->root, "%s/artifacts", data_dir);
	k2 = snprintf(a->tmp, sizeof a->tmp, "%s/artifacts/tmp", data_dir);
	if (k1 < 0 || k2 < 0 || (size_t)k2 >= sizeof a->tmp) {
		err_set("data folder path too long: '%s'", data_dir);
		goto err;
	}
	if (fsx_mkdirs(a->tmp, 0755) < 0)
		goto err;
	return a;
err:
	free(a);
	return NULL;
}

void artifacts_destroy(artifacts_t **a)
{
	if (!a || !*a)
		return;
	free(*a);
	*a = NULL;
}

int artifacts_path(const artifacts_t *a, const char *sha256, char *dst, size_t n)
{
	int k;

	if (!sha256_is_hex(sha256))
		return err_set("bad artifact name '%.80s': expected a sha256 as 64 lowercase hex digits", sha256);
	k = snprintf(dst, n, "%s/%.2s/%s", a->root, sha256, sha256);
	if (k < 0 || (size_t)k >= n)
		return err_set("artifact path too long for '%s'", sha256);
	return 0;
}

artifact_upload_t *artifacts_upload_begin(artifacts_t *a, const char *sha256)
{
	artifact_upload_t *u;

	if (!sha256_is_hex(sha256)) {
		err_set("bad artifact name '%.80s': expected a sha256 as 64 lowercase hex digits", sha256);
		return NULL;
	}
	u = calloc(1, sizeof *u);
	if (!u) {
		err_set("out of memory starting an upload");
		return NULL;
	}
	u->a = a;
	u->fd = -1;
	memcpy(u->sha, sha256, sizeof u->sha);
	snprintf(u->tmp, sizeof u->tmp, "%s/upload.XXXXXX", a->tmp);
	if (!(u->h = sha256_new()))
		goto err;
	u->fd = mkstemp(u->tmp);
	if (u->fd < 0 || fcntl(u->fd, F_SETFD, FD_CLOEXEC) < 0) {
		err_set("cannot create a temporary file in '%s': %s", a->tmp, strerror(errno));
		if (u->fd < 0)
			u->tmp[0] = '\0';
		goto err;
	}
	return u;
err:
	artifacts_upload_abort(&u);
	return NULL;
}

int artifacts_upload_write(artifact_upload_t *u, const void *data, size_t len)
{
	const char *p = data;

	if (u->size + (int64_t)len > ARTIFACTS_MAX_BYTES)
		return err_set("artifact '%s' is larger than %lld bytes", u->sha, (long long)ARTIFACTS_MAX_BYTES);
	if (sha256_update(u->h, data, len) < 0)
		return -1;
	u->size += (int64_t)len;
	while (len > 0) {
		ssize_t k = write(u->fd, p, len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return err_set("cannot write '%s': %s", u->tmp, strerror(errno));
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

void artifacts_upload_abort(artifact_upload_t **up)
{
	artifact_upload_t *u = up ? *up : NULL;

	if (!u)
		return;
	if (u->fd >= 0)
		close(u->fd);
	if (u->tmp[0])
		unlink(u->tmp);
	sha256_destroy(&u->h);
	free(u);
	*up = NULL;
}

static int s_register(registry_t *r, const char *sha, int64_t size, const char *kind, int64_t now_ms)
{
	sqlite3_stmt *st;

	if (registry_begin(r) < 0)
		return -1;
	st = registry_stmt(r, "INSERT INTO artifacts (sha256, size, kind, created_ms) VALUES (?, ?, ?, ?) "
			      "ON CONFLICT (sha256) DO NOTHING");
	if (!st)
		return registry_rollback(r);
	sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, size);
	sqlite3_bind_text(st, 3, kind ? kind : "blob", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now_ms);
	if (registry_step_done(r, st) < 0)
		return registry_rollback(r);
	return registry_commit(r);
}

int artifacts_upload_commit(artifact_upload_t **up, registry_t *r, const char *kind, int64_t now_ms,
			    int64_t *size_out)
{
	artifact_upload_t *u = *up;
	uint8_t d[SHA256_LEN];
	char got[SHA256_HEX_LEN + 1], path[PATH_MAX], dir[PATH_MAX];
	int rc = -1;

	if (sha256_final(u->h, d) < 0)
		goto out;
	sha256_hex(d, got);
	if (strcmp(got, u->sha) != 0) {
		err_set("artifact content does not match its name: expected sha256 '%s', received '%s' "
			"(%lld bytes): upload it again", u->sha, got, (long long)u->size);
		goto out;
	}
	if (fsync(u->fd) < 0) {
		err_set("cannot sync '%s': %s", u->tmp, strerror(errno));
		goto out;
	}
	if (artifacts_path(u->a, u->sha, path, sizeof path) < 0)
		goto out;
	snprintf(dir, sizeof dir, "%s/%.2s", u->a->root, u->sha);
	if (fsx_mkdirs(dir, 0755) < 0)
		goto out;
	if (rename(u->tmp, path) < 0) {
		err_set("cannot rename '%s' to '%s': %s", u->tmp, path, strerror(errno));
		goto out;
	}
	u->tmp[0] = '\0';
	if (fsx_fsync_dir(dir) < 0 || s_register(r, u->sha, u->size, kind, now_ms) < 0)
		goto out;
	if (size_out)
		*size_out = u->size;
	rc = 0;
out:
	artifacts_upload_abort(up);
	return rc;
}

int artifacts_put(artifacts_t *a, registry_t *r, const char *sha256, const void *data, size_t len,
		  const char *kind, int64_t now_ms)
{
	artifact_upload_t *u = artifacts_upload_begin(a, sha256);

	if (!u)
		return -1;
	if (artifacts_upload_write(u, data, len) < 0) {
		artifacts_upload_abort(&u);
		return -1;
	}
	return artifacts_upload_commit(&u, r, kind, now_ms, NULL);
}

/* Temporary files of uploads that never finished (a crash, a dropped
 * connection), older than min_age_ms: younger ones may be uploads under way. */
static void s_sweep_tmp(const artifacts_t *a, int64_t now_ms, int64_t min_age_ms)
{
	DIR *d = opendir(a->tmp);
	struct dirent *e;
	struct stat sb;
	char path[PATH_MAX];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "upload.", 7) != 0 ||
		    snprintf(path, sizeof path, "%s/%s", a->tmp, e->d_name) >= (int)sizeof path)
			continue;
		if (stat(path, &sb) == 0 && (int64_t)sb.st_mtime * 1000 < now_ms - min_age_ms)
			unlink(path);
	}
	closedir(d);
}

/* The sha256 (column 0) and size (column 1) of every row `st` selects. */
static int s_collect(registry_t *r, sqlite3_stmt *st, char (**shas)[SHA256_HEX_LEN + 1], size_t *n,
		     int64_t *total)
{
	size_t cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			void *grown = realloc(*shas, (cap = cap ? 2 * cap : 64) * sizeof **shas);
			if (!grown) {
				sqlite3_reset(st);
				return err_set("out of memory collecting artifacts");
			}
			*shas = grown;
		}
		snprintf((*shas)[*n], sizeof **shas, "%s", (const char *)sqlite3_column_text(st, 0));
		*total += sqlite3_column_int64(st, 1);
		++*n;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : registry_err(r, "collecting artifacts");
}

int artifacts_gc(artifacts_t *a, registry_t *r, int64_t now_ms, int64_t min_age_ms, int64_t *removed,
		 int64_t *bytes)
{
	static const char unreferenced[] =
		"SELECT sha256, size FROM artifacts a WHERE created_ms < ?1 "
		"AND NOT EXISTS (SELECT 1 FROM job_outputs o WHERE o.sha256 = a.sha256) "
		"AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.checkpoint = a.sha256) "
		"AND NOT EXISTS (SELECT 1 FROM experts x WHERE x.artifact = a.sha256) "
		"AND NOT EXISTS (SELECT 1 FROM routers x WHERE x.artifact = a.sha256) "
		"AND NOT EXISTS (SELECT 1 FROM base_models x WHERE x.artifact = a.sha256) "
		"AND NOT EXISTS (SELECT 1 FROM datasets x WHERE x.artifact = a.sha256)";
	char (*shas)[SHA256_HEX_LEN + 1] = NULL;
	char path[PATH_MAX], detail[64];
	sqlite3_stmt *st;
	int64_t total = 0;
	size_t n = 0;

	if (registry_begin(r) < 0)
		return -1;
	if (!(st = registry_stmt(r, unreferenced)))
		goto err;
	sqlite3_bind_int64(st, 1, now_ms - min_age_ms);
	if (s_collect(r, st, &shas, &n, &total) < 0 ||
	    !(st = registry_stmt(r, "DELETE FROM artifacts WHERE sha256 = ?")))
		goto err;
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_text(st, 1, shas[i], -1, SQLITE_STATIC);
		if (registry_step_done(r, st) < 0)
			goto err;
	}
	snprintf(detail, sizeof detail, "{\"removed\":%zu,\"bytes\":%lld}", n, (long long)total);
	if (registry_event(r, now_ms, "artifacts.gc", 0, "operator", detail) < 0 || registry_commit(r) < 0)
		goto out;
	/* The rows are gone for good: now the files. A crash here leaves
	 * orphan files, never rows without files. */
	for (size_t i = 0; i < n; i++)
		if (artifacts_path(a, shas[i], path, sizeof path) == 0)
			unlink(path);
	s_sweep_tmp(a, now_ms, min_age_ms);
	if (removed)
		*removed = (int64_t)n;
	if (bytes)
		*bytes = total;
	free(shas);
	return 0;
err:
	registry_rollback(r);
out:
	free(shas);
	return -1;
}
