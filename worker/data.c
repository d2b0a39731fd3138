/* data.c: see data.h. */
#include "config.h"
#include "worker/data.h"
#include "worker/rng.h"
#include "err.h"
#include "jsonu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Append up to k ids, as many as fit in cap. */
static void s_append(int32_t *dst, int *n, int cap, const int32_t *src, size_t k)
{
	size_t take = k < (size_t)(cap - *n) ? k : (size_t)(cap - *n);

	memcpy(dst + *n, src, take * sizeof *src);
	*n += (int)take;
}

/* Tokenize one record into r. 0, 1 when dropped, or -1. */
static int s_record(tokenizer_t *tok, const cJSON *j, int seq_len, data_record_t *r)
{
	const char *prompt, *response;
	int32_t *p = NULL, *q = NULL, bos = tokenizer_bos_id(tok), eos = tokenizer_eos_id(tok);
	size_t np = 0, nq = 0;
	int cap = seq_len + 1, rc = -1;

	if (jsonu_check_keys(j, (const char *const[]){ "domain", "prompt", "response", NULL }) < 0 ||
	    jsonu_opt_str(j, "prompt", "", &prompt) < 0 || jsonu_req_str(j, "response", &response) < 0)
		return -1;
	if (tokenizer_encode(tok, prompt, strlen(prompt), &p, &np) < 0 ||
	    tokenizer_encode(tok, response, strlen(response), &q, &nq) < 0)
		goto out;
	if (!(r->ids = malloc((size_t)cap * sizeof *r->ids))) {
		err_set("out of memory");
		goto out;
	}
	r->n = 0;
	if (bos >= 0)
		s_append(r->ids, &r->n, cap, &bos, 1);
	s_append(r->ids, &r->n, cap, p, np);
	r->first_target = r->n;
	s_append(r->ids, &r->n, cap, q, nq);
	if (eos >= 0)
		s_append(r->ids, &r->n, cap, &eos, 1);
	rc = 0;
	if (r->first_target >= r->n || r->n < 2) {
		free(r->ids);
		r->ids = NULL;
		rc = 1;
	}
	if (r->first_target < 1)
		r->first_target = 1;
out:
	free(p);
	free(q);
	return rc;
}

static int s_load_file(data_t *d, const char *path, tokenizer_t *tok, int seq_len)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t lcap = 0;
	ssize_t len;
	long lineno = 0;
	int rc = -1;

	if (!f)
		return err_set("cannot open data '%s': %s", path, strerror(errno));
	while ((len = getline(&line, &lcap, f)) > 0) {
		cJSON *j;
		data_record_t r = { 0 };
		int k;
		lineno++;
		if (strspn(line, " \t\r\n") == (size_t)len)
			continue;
		if (!(j = jsonu_parse(line, (size_t)len, path))) {
			err_prefix("line %ld", lineno);
			goto out;
		}
		k = s_record(tok, j, seq_len, &r);
		cJSON_Delete(j);
		if (k < 0) {
			err_prefix("'%s' line %ld", path, lineno);
			goto out;
		}
		if (k == 1) {
			d->dropped++;
			continue;
		}
		if (d->n == d->cap) {
			int cap = d->cap ? 2 * d->cap : 256;
			data_record_t *v = realloc(d->rec, (size_t)cap * sizeof *v);
			if (!v) {
				free(r.ids);
				err_set("out of memory reading '%s'", path);
				goto out;
			}
			d->rec = v, d->cap = cap;
		}
		d->rec[d->n++] = r;
		d->tokens += r.n - r.first_target;
	}
	if (ferror(f)) {
		err_set("cannot read data '%s': %s", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(line);
	fclose(f);
	return rc;
}

data_t *data_load(const char *const *paths, int npaths, tokenizer_t *tok, int seq_len,
		  uint64_t seed)
{
	data_t *d = calloc(1, sizeof *d);

	if (!d)
		return err_set("out of memory"), NULL;
	d->seed = seed;
	d->perm_epoch = -1;
	d->pad_id = tokenizer_pad_id(tok) >= 0 ? tokenizer_pad_id(tok) : 0;
	for (int i = 0; i < npaths; i++)
		if (s_load_file(d, paths[i], tok, seq_len) < 0)
			goto err;
	if (!d->n) {
		err_set("no usable records in the training data (%d dropped: response cut away "
			"by seq_len %d)", d->dropped, seq_len);
		goto err;
	}
	if (!(d->perm = malloc((size_t)d->n * sizeof *d->perm))) {
		err_set("out of memory");
		goto err;
	}
	return d;
err:
	data_destroy(&d);
	return NULL;
}

void data_destroy(data_t **pd)
{
	data_t *d = pd ? *pd : NULL;

	if (!d)
		return;
	for (int i = 0; i < d->n; i++)
		free(d->rec[i].ids);
	free(d->rec);
	free(d->perm);
	free(d);
	*pd = NULL;
}

/* Fisher-Yates from (seed, epoch). */
static void s_permute(data_t *d, long epoch)
{
	rng_t r;

	rng_seed(&r, rng_hash(d->seed, (uint64_t)epoch));
	for (int i = 0; i < d->n; i++)
		d->perm[i] = i;
	for (int i = d->n - 1; i > 0; i--) {
		int j = (int)(rng_next(&r) % (uint64_t)(i + 1)), x = d->perm[i];
		d->perm[i] = d->perm[j], d->perm[j] = x;
	}
	d->perm_epoch = epoch;
}

void data_next_batch(data_t *d, data_cursor_t *cur, int b, int *tokens, int *targets, int *t)
{
	int tmax = 1;
	long epoch = cur->epoch, pos = cur->pos;

	/* Two passes over the same records: the padded length, then the copy. */
	for (int i = 0; i < b; i++) {
		if (pos >= d->n)
			epoch++, pos = 0;
		if (d->perm_epoch != epoch)
			s_permute(d, epoch);
		const data_record_t *r = &d->rec[d->perm[pos++]];
		if (r->n - 1 > tmax)
			tmax = r->n - 1;
	}
	epoch = cur->epoch, pos = cur->pos;
	for (int i = 0; i < b; i++) {
		if (pos >= d->n)
			epoch++, pos = 0;
		if (d->perm_epoch != epoch)
			s_permute(d, epoch);
		const data_record_t *r = &d->rec[d->perm[pos++]];
		for (int k = 0; k < tmax; k++) {
			int live = k < r->n - 1;
			tokens[i * tmax + k] = live ? r->ids[k] : d->pad_id;
			targets[i * tmax + k] = live && k + 1 >= r->first_target ? r->ids[k + 1] : -1;
		}
	}
	cur->epoch = epoch, cur->pos = pos;
	*t = tmax;
}
