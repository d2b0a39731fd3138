/* ckpt.c: see ckpt.h. */
#include "config.h"
#include "worker/ckpt.h"
#include "worker/safetensors.h"
#include "err.h"
#include "fsx.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_META "modula_state"

static const char *const s_kinds[3] = { "param", "adam_m", "adam_v" };

static const float *s_tensor_of(const params_t *p, const optim_t *o, int i, int kind)
{
	return kind == 0 ? p->v[i].data : kind == 1 ? o->m[i] : o->v[i];
}

int ckpt_save(const char *dir, long step, const params_t *p, const optim_t *o,
	      const char *state_json, char *path, size_t n)
{
	st_writer_t *w;
	char name[300];
	int rc = -1;

	if (fsx_mkdirs(dir, 0755) < 0 || !(w = st_writer_new()))
		return -1;
	for (int i = 0; i < p->n; i++) {
		if (!p->v[i].grad)
			continue;
		for (int k = 0; k < 3; k++) {
			snprintf(name, sizeof name, "%s/%s", s_kinds[k], p->v[i].name);
			if (st_writer_add(w, name, ST_F32, p->v[i].ndim, p->v[i].shape,
					  s_tensor_of(p, o, i, k)) < 0)
				goto out;
		}
	}
	snprintf(path, n, "%s/step-%08ld.safetensors", dir, step);
	if (st_writer_meta(w, CKPT_META, state_json) < 0 || st_writer_write(w, path) < 0)
		goto out;
	rc = 0;
out:
	st_writer_destroy(&w);
	return rc;
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
				break;
			names = v;
		}
		if (!(names[count] = strdup(e->d_name)))
			break;
		count++;
	}
	closedir(d);
	qsort(names, (size_t)count, sizeof *names, s_cmp_desc);
	for (int i = 0; i < count && !found; i++) {
		st_file_t *f;
		snprintf(path, n, "%s/%s", dir, names[i]);
		if ((f = st_open(path)) && st_meta(f, CKPT_META))
			found = 1;
		st_close(&f);
	}
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
	err_clear();
	return found;
}
