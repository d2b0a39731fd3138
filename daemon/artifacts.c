/* artifacts.c: see artifacts.h. */
#include "config.h"
#include "daemon/artifacts.h"
#include "err.h"
#include "fsx.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* One version of a stored file, and whether it hashed to its name. */
struct verified {
	char sha[SHA256_HEX_LEN + 1]; /* "" marks a free slot */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int ok;
};

struct artifacts {
	char root[PATH_MAX - 160];   /* DATA/artifacts; room left for names below it */
	char tmp[PATH_MAX - 160];    /* DATA/artifacts/tmp */
	pthread_mutex_t lock;        /* guards seen */
	struct verified *seen;       /* open addressing by name; capacity a power of 2 */
	size_t seen_cap, seen_n;
};

#define ARTIFACTS_HASH_BUF (1u << 20)

struct artifact_upload {
	artifacts_t *a;
	char sha[SHA256_HEX_LEN + 1];
	char tmp[PATH_MAX];
	sha256_t *h;                 /* hashes from byte 0 as bytes arrive; NULL: hash the file at commit */
	int fd;
	int64_t size;
	int resumable;               /* tmp is partial.SHA: kept when the upload stops unfinished */
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
	pthread_mutex_init(&a->lock, NULL);
	return a;
err:
	free(a);
	return NULL;
}

void artifacts_destroy(artifacts_t **a)
{
	if (!a || !*a)
		return;
	pthread_mutex_destroy(&(*a)->lock);
	free((*a)->seen);
	free(*a);
	*a = NULL;
}

/* The slot of `sha` in seen (its own, or the free one it would take).
 * Caller holds the lock; seen_cap > 0. */
static struct verified *s_seen_slot(const artifacts_t *a, const char *sha)
{
	size_t i = 0;

	for (int k = 0; k < 8; k++) /* the name is a hash: its first hex digits are spread enough */
		i = i << 4 | (size_t)(sha[k] <= '9' ? sha[k] - '0' : sha[k] - 'a' + 10);
	for (;; i++) {
		struct verified *v = &a->seen[i & (a->seen_cap - 1)];
		if (!v->sha[0] || strcmp(v->sha, sha) == 0)
			return v;
	}
}

/* Remember the verdict on one version of a file (replacing the one
 * before). Caller holds the lock. Out of memory only forgets. */
static void s_seen_put(artifacts_t *a, const struct verified *v)
{
	struct verified *slot;

	if (2 * (a->seen_n + 1) > a->seen_cap) {
		size_t cap = a->seen_cap ? 2 * a->seen_cap : 256;
		struct verified *old = a->seen, *grown = calloc(cap, sizeof *grown);
		size_t old_cap = a->seen_cap;
		if (!grown)
			return;
		a->seen = grown;
		a->seen_cap = cap;
		for (size_t i = 0; i < old_cap; i++)
			if (old[i].sha[0])
				*s_seen_slot(a, old[i].sha) = old[i];
		free(old);
	}
	slot = s_seen_slot(a, v->sha);
	if (!slot->sha[0])
		a->seen_n++;
	*slot = *v;
}

/* Fill `v` with the identity of the open file `fd` of `sha`. */
static int s_identity(int fd, const char *sha, struct verified *v)
{
	struct stat sb;

	if (fstat(fd, &sb) < 0)
		return err_set("cannot stat artifact '%s': %s", sha, strerror(errno));
	memset(v, 0, sizeof *v);
	memcpy(v->sha, sha, sizeof v->sha);
	v->dev = sb.st_dev;
	v->ino = sb.st_ino;
	v->size = sb.st_size;
	v->mtime = sb.st_mtim;
	return 0;
}

static int s_same_version(const struct verified *x, const struct verified *y)
{
	return x->dev == y->dev && x->ino == y->ino && x->size == y->size && x->mtime.tv_sec == y->mtime.tv_sec &&
	       x->mtime.tv_nsec == y->mtime.tv_nsec;
}

/* The SHA-256 of the whole open file `fd` (read with pread: the file
 * offset is left alone), as hex. 0, or -1 via err_set(). */
static int s_hash_fd(int fd, const char *sha, char hex[SHA256_HEX_LEN + 1])
{
	uint8_t d[SHA256_LEN];
	sha256_t *h = sha256_new();
	char *buf = malloc(ARTIFACTS_HASH_BUF);
	off_t off = 0;
	ssize_t k;
	int rc = -1;

	if (!h || !buf) {
		if (!h)
			err_prefix("hashing artifact '%s'", sha);
		else
			err_set("out of memory hashing artifact '%s'", sha);
		goto out;
	}
	while ((k = pread(fd, buf, ARTIFACTS_HASH_BUF, off)) != 0) {
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			err_set("cannot read artifact '%s': %s", sha, strerror(errno));
			goto out;
		}
		if (sha256_update(h, buf, (size_t)k) < 0)
			goto out;
		off += k;
	}
	if (sha256_final(h, d) < 0)
		goto out;
	sha256_hex(d, hex);
	rc = 0;
out:
	free(buf);
	sha256_destroy(&h);
	return rc;
}

int artifacts_verify(artifacts_t *a, const char *sha256, int fd, int *found)
{
	struct verified now, *known;
	char got[SHA256_HEX_LEN + 1];
	int ok = -1;

	if (found)
		*found = 0;
	if (s_identity(fd, sha256, &now) < 0)
		return -1;
	pthread_mutex_lock(&a->lock);
	known = a->seen_cap ? s_seen_slot(a, sha256) : NULL;
	if (known && known->sha[0] && s_same_version(known, &now))
		ok = known->ok;
	pthread_mutex_unlock(&a->lock);
	if (ok == 1)
		return 0;
	if (ok == 0)
		return err_set("artifact '%s' is corrupt in the store (%lld bytes; found so before): upload it again "
			       "to replace it", sha256, (long long)now.size);
	if (s_hash_fd(fd, sha256, got) < 0)
		return -1;
	now.ok = strcmp(got, sha256) == 0;
	pthread_mutex_lock(&a->lock);
	s_seen_put(a, &now);
	pthread_mutex_unlock(&a->lock);
	if (now.ok)
		return 0;
	if (found)
		*found = 1;
	return err_set("artifact '%s' is corrupt in the store: its %lld bytes hash to '%s': upload it again to "
		       "replace it", sha256, (long long)now.size, got);
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

static int s_partial_path(const artifacts_t *a, const char *sha256, char *dst, size_t n)
{
	if (!sha256_is_hex(sha256))
		return err_set("bad artifact name '%.80s': expected a sha256 as 64 lowercase hex digits", sha256);
	if ((size_t)snprintf(dst, n, "%s/partial.%s", a->tmp, sha256) >= n)
		return err_set("upload path too long for '%s'", sha256);
	return 0;
}

int64_t artifacts_resume_held(artifacts_t *a, const char *sha256)
{
	char path[PATH_MAX];
	struct stat sb;

	if (s_partial_path(a, sha256, path, sizeof path) < 0)
		return -1;
	if (stat(path, &sb) == 0)
		return (int64_t)sb.st_size;
	if (errno == ENOENT)
		return 0;
	return err_set("cannot stat '%s': %s", path, strerror(errno));
}

artifact_upload_t *artifacts_resume(artifacts_t *a, const char *sha256, int64_t offset, int64_t *held)
{
	artifact_upload_t *u = calloc(1, sizeof *u);
	struct stat sb;

	*held = -1;
	if (!u) {
		err_set("out of memory continuing an upload");
		return NULL;
	}
	u->a = a;
	u->fd = -1;
	u->resumable = 1;
	memcpy(u->sha, sha256, sizeof u->sha);
	if (s_partial_path(a, sha256, u->tmp, sizeof u->tmp) < 0)
		goto err;
	u->fd = open(u->tmp, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (u->fd < 0) {
		err_set("cannot open '%s': %s", u->tmp, strerror(errno));
		goto err;
	}
	if (flock(u->fd, LOCK_EX | LOCK_NB) < 0) {
		err_set("another part of the upload of '%s' is being received now: wait for it, then ask how many "
			"bytes are held", sha256);
		goto err;
	}
	if (fstat(u->fd, &sb) < 0) {
		err_set("cannot stat '%s': %s", u->tmp, strerror(errno));
		goto err;
	}
	*held = u->size = (int64_t)sb.st_size;
	if (offset != u->size) {
		err_set("the upload of '%s' holds %lld bytes, this part starts at byte %lld: send from byte %lld",
			sha256, (long long)u->size, (long long)offset, (long long)u->size);
		goto err;
	}
	if (offset == 0 && !(u->h = sha256_new()))
		goto err;
	return u;
err:
	if (u->fd >= 0)
		close(u->fd);
	sha256_destroy(&u->h);
	free(u);
	return NULL;
}

int artifacts_upload_write(artifact_upload_t *u, const void *data, size_t len)
{
	const char *p = data;

	if (u->size + (int64_t)len > ARTIFACTS_MAX_BYTES)
		return err_set("artifact '%s' is larger than %lld bytes", u->sha, (long long)ARTIFACTS_MAX_BYTES);
	if (u->h && sha256_update(u->h, data, len) < 0)
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
	if (u->resumable && u->fd >= 0 && fsync(u->fd) < 0)
		u->resumable = 0; /* what is held is unknown: start over */
	if (u->fd >= 0)
		close(u->fd);
	if (u->tmp[0] && !u->resumable)
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
	struct verified v;
	int rc = -1;

	if (u->h ? sha256_final(u->h, d) < 0 : s_hash_fd(u->fd, u->sha, got) < 0)
		goto out;
	if (u->h)
		sha256_hex(d, got);
	if (strcmp(got, u->sha) != 0) {
		u->resumable = 0; /* wrong bytes are not worth resuming */
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
	if (s_identity(u->fd, u->sha, &v) == 0) { /* hashed while it arrived: no need to read it again */
		v.ok = 1;
		pthread_mutex_lock(&u->a->lock);
		s_seen_put(u->a, &v);
		pthread_mutex_unlock(&u->a->lock);
	}
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
		if ((strncmp(e->d_name, "upload.", 7) != 0 && strncmp(e->d_name, "partial.", 8) != 0) ||
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
