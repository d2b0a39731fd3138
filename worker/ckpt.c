/* ckpt.c: see ckpt.h. */
#include "config.h"
#include "worker/ckpt.h"
#include "worker/safetensors.h"
#include "err.h"
#include "fsx.h"
#include "sha256.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_META "modula_state"
/* The sha256 of every tensor's bytes, in name order: a checkpoint whose
 * data was damaged after it was written fails validation. */
#define CKPT_DATA_SHA "modula_data_sha256"
#define CKPT_NAME_MAX 300

struct ckpt_piece {
	const char *name;
	const void *data;
	size_t n;
};

static const char *const s_kinds[3] = { "param", "adam_m", "adam_v" };

static const float *s_tensor_of(const params_t *p, const optim_t *o, int i, int kind)
{
	return kind == 0 ? p->v[i].data : kind == 1 ? o->m[i] : o->v[i];
}

static int s_cmp_piece(const void *a, const void *b)
{
	return strcmp(((const struct ckpt_piece *)a)->name, ((const struct ckpt_piece *)b)->name);
}

/* The hex sha256 of the pieces' bytes in name order (sorts `pc`). 0 or -1. */
static int s_data_sha(struct ckpt_piece *pc, int n, char hex[SHA256_HEX_LEN + 1])
{
	sha256_t *h = sha256_new();
	uint8_t d[SHA256_LEN];
	int rc = -1;

	if (!h)
		return -1;
	qsort(pc, (size_t)n, sizeof *pc, s_cmp_piece);
	for (int i = 0; i < n; i++)
		if (sha256_update(h, pc[i].data, pc[i].n) < 0)
			goto out;
	if (sha256_final(h, d) < 0)
		goto out;
	sha256_hex(d, hex);
	rc = 0;
out:
	sha256_destroy(&h);
	return rc;
}

int ckpt_save(const char *dir, long step, const params_t *p, const optim_t *o,
	      const char *state_json, char *path, size_t n)
{
	st_writer_t *w;
	char (*names)[CKPT_NAME_MAX] = malloc((size_t)(3 * p->n + 1) * sizeof *names);
	struct ckpt_piece *pc = malloc((size_t)(3 * p->n + 1) * sizeof *pc);
	char sha[SHA256_HEX_LEN + 1];
	int rc = -1, np = 0;

	if (!names || !pc) {
		free(names);
		free(pc);
		return err_set("out of memory writing a checkpoint");
	}
	if (fsx_mkdirs(dir, 0755) < 0 || !(w = st_writer_new())) {
		free(names);
		free(pc);
		return -1;
	}
	for (int i = 0; i < p->n; i++) {
		if (!p->v[i].grad)
			continue;
		for (int k = 0; k < 3; k++) {
			snprintf(names[np], sizeof names[np], "%s/%s", s_kinds[k], p->v[i].name);
			pc[np] = (struct ckpt_piece){ names[np], s_tensor_of(p, o, i, k), p->v[i].n * sizeof(float) };
			if (st_writer_add(w, names[np], ST_F32, p->v[i].ndim, p->v[i].shape, pc[np].data) < 0)
				goto out;
			np++;
		}
	}
	snprintf(path, n, "%s/step-%08ld.safetensors", dir, step);
	if (s_data_sha(pc, np, sha) < 0 || st_writer_meta(w, CKPT_DATA_SHA, sha) < 0 ||
	    st_writer_meta(w, CKPT_META, state_json) < 0 || st_writer_write(w, path) < 0)
		goto out;
	rc = 0;
out:
	st_writer_destroy(&w);
	free(names);
	free(pc);
	return rc;
}

/* 1 when `f` is a whole checkpoint: its state, and data matching its
 * recorded sha256 (files written before the sha was recorded have none). */
static int s_valid(const st_file_t *f)
{
	const char *want = st_meta(f, CKPT_DATA_SHA);
	struct ckpt_piece *pc;
	char got[SHA256_HEX_LEN + 1];
	int n = st_count(f), ok;

	if (!st_meta(f, CKPT_META))
		return 0;
	if (!want)
		return 1;
	if (!(pc = malloc((size_t)(n + 1) * sizeof *pc)))
		return 0;
	for (int i = 0; i < n; i++)
		pc[i] = (struct ckpt_piece){ st_at(f, i)->name, st_at(f, i)->data, st_at(f, i)->nbytes };
	ok = s_data_sha(pc, n, got) == 0 && strcmp(got, want) == 0;
	free(pc);
	return ok;
}

int ckpt_load(const char *path, const params_t *p, optim_t *o, char **state_json)
{
	st_file_t *f = st_open(path);
	const char *meta;
	char name[300];

	if (!f)
		return -1;
	for (int i = 0; i < p->n; i++) {
		if (!p->v[i].grad)
			continue;
		for (int k = 0; k < 3; k++) {
			snprintf(name, sizeof name, "%s/%s", s_kinds[k], p->v[i].name);
			const st_tensor_t *t = st_find(f, name);
			if (!t || t->dtype != ST_F32 || t->nbytes != p->v[i].n * sizeof(float)) {
				err_set("checkpoint '%s': tensor '%s' %s", path, name,
					t ? "does not match the run's shape" : "is missing");
				goto err;
			}
			memcpy((float *)s_tensor_of(p, o, i, k), t->data, t->nbytes);
		}
	}
	if (!(meta = st_meta(f, CKPT_META))) {
		err_set("checkpoint '%s': no '%s' metadata", path, CKPT_META);
		goto err;
	}
	if (!(*state_json = strdup(meta))) {
		err_set("out of memory");
		goto err;
	}
	st_close(&f);
	return 0;
err:
	st_close(&f);
	return -1;
}

static int s_cmp_desc(const void *a, const void *b)
{
	return strcmp(*(char *const *)b, *(char *const *)a);
}

int ckpt_latest(const char *dir, char *path, size_t n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	int count = 0, cap = 0, found = 0;

	if (!d)
		return errno == ENOENT ? 0 : err_set("cannot list checkpoints in '%s': %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (strncmp(e->d_name, "step-", 5) || len < 12 ||
		    strcmp(e->d_name + len - 12, ".safetensors"))
			continue;
		if (count == cap) {
			char **v = realloc(names, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *v);
			if (!v)
				goto oom;
			names = v;
		}
		if (!(names[count] = strdup(e->d_name)))
			goto oom;
		count++;
	}
	if (count > 0)
		qsort(names, (size_t)count, sizeof *names, s_cmp_desc);
	/* The newest first; a file that does not validate is passed over. */
	for (int i = 0; i < count && !found; i++) {
		st_file_t *f;
		snprintf(path, n, "%s/%s", dir, names[i]);
		if ((f = st_open(path)) && s_valid(f))
			found = 1;
		st_close(&f);
	}
	err_clear();
	goto out;
oom:
	found = err_set("out of memory listing checkpoints in '%s'", dir);
out:
	closedir(d);
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return found;
}
