/* corpus.c: the pretraining corpus builder (see corpus.h). Deterministic:
 * the files are read in name order and the records sorted before the seeded
 * shuffle, so the output depends only on the folder's content and the seed. */
#include "worker/corpus.h"
#include "worker/suite.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "sha256.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Decode one UTF-8 character at `s` (n bytes left, s[0] >= 0x80) into its
 * ASCII stand-in. Returns the bytes consumed and sets `*ascii` (NULL when
 * there is none); 0 on malformed UTF-8. */
static size_t s_utf8_ascii(const unsigned char *s, size_t n, const char **ascii)
{
	static const struct { uint32_t cp; const char *ascii; } map[] = {
		{ 0x00a0, " " }, { 0x00b4, "'" }, { 0x2013, "-" }, { 0x2014, "-" }, { 0x2015, "-" },
		{ 0x2018, "'" }, { 0x2019, "'" }, { 0x201a, "'" }, { 0x201b, "'" }, { 0x201c, "\"" },
		{ 0x201d, "\"" }, { 0x201e, "\"" }, { 0x2026, "..." }, { 0x2032, "'" }, { 0x2033, "\"" },
		{ 0x2212, "-" },
	};
	size_t len, i;
	uint32_t cp;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	*ascii = NULL;
	for (i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].cp == cp)
			*ascii = map[i].ascii;
	return len;
}

enum corpus_verdict corpus_normalise(const char *raw, size_t len, char *out, size_t *out_len)
{
	const unsigned char *s = (const unsigned char *)raw;
	size_t i, k, n = 0, w = 0, letters = 0, visible = 0;
	const char *ascii;
	int space = 0;

	/* Pass 1: bytes to ASCII; a backspace erases what it follows. The
	 * ASCII stand-ins are never longer than their UTF-8, so n <= i. */
	for (i = 0; i < len; i++) {
		if (s[i] == '\b') {
			n -= n > 0 && out[n - 1] != '\n';
		} else if (s[i] == '\t') {
			out[n++] = ' ';
		} else if (s[i] == '\n' || (s[i] >= 0x20 && s[i] < 0x7f)) {
			out[n++] = (char)s[i];
		} else if (s[i] >= 0x80) {
			if (!(k = s_utf8_ascii(s + i, len - i, &ascii)) || !ascii)
				return *out_len = 0, out[0] = '\0', CORPUS_NON_ASCII;
			memcpy(out + n, ascii, strlen(ascii));
			n += strlen(ascii);
			i += k - 1;
		}
	}
	/* Pass 2, in place: collapse blanks, trim lines, drop empty lines. */
	for (i = 0; i < n; i++) {
		if (out[i] == '\n') {
			if (w > 0 && out[w - 1] != '\n')
				out[w++] = '\n';
			space = 0;
		} else if (out[i] == ' ') {
			space = w > 0 && out[w - 1] != '\n';
		} else {
			if (space)
				out[w++] = ' ';
			space = 0;
			visible++;
			letters += isalpha((unsigned char)out[i]) != 0;
			out[w++] = out[i];
		}
	}
	if (w > 0 && out[w - 1] == '\n')
		w--;
	out[w] = '\0';
	*out_len = w;
	if (w == 0)
		return CORPUS_EMPTY;
	return letters * 10 < visible * 6 ? CORPUS_NOT_PROSE : CORPUS_KEPT;
}

/* A growing array of strings (file names, then records). */
struct s_list {
	char **items;
	size_t n, cap;
};

static int s_list_push(struct s_list *l, char *item)
{
	char **p;

	if (!item)
		return err_set("out of memory building the corpus");
	if (l->n == l->cap) {
		if (!(p = realloc(l->items, (l->cap ? l->cap * 2 : 256) * sizeof *p))) {
			free(item);
			return err_set("out of memory building the corpus");
		}
		l->items = p;
		l->cap = l->cap ? l->cap * 2 : 256;
	}
	l->items[l->n++] = item;
	return 0;
}

static void s_list_free(struct s_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = l->cap = 0;
}

static int s_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A plain fortune file: a regular file without a dot in its name (no .dat
 * index, no .u8 copy) and not a rot13 "-o" offensive file. */
static int s_is_fortune_file(const char *dir, const char *name)
{
	char path[PATH_MAX];
	size_t len = strlen(name);
	struct stat st;

	if (strchr(name, '.') || (len >= 2 && !strcmp(name + len - 2, "-o")))
		return 0;
	if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path || stat(path, &st) < 0)
		return 0;
	return S_ISREG(st.st_mode);
}

static int s_list_files(const char *dir, struct s_list *names)
{
	struct dirent *de;
	DIR *d;

	if (!(d = opendir(dir))) {
		if (errno == ENOENT)
			return err_set("fortunes folder '%s' not found: install Debian's fortunes package "
			               "(apt-get install fortunes) or pass --source DIR", dir);
		return err_set("cannot open folder '%s': %s", dir, strerror(errno));
	}
	while ((de = readdir(d)))
		if (s_is_fortune_file(dir, de->d_name) && s_list_push(names, strdup(de->d_name)) < 0) {
			closedir(d);
			return -1;
		}
	closedir(d);
	if (names->n == 0)
		return err_set("no fortune files in '%s': expected plain files of records separated by '%%' lines", dir);
	qsort(names->items, names->n, sizeof *names->items, s_cmp_str);
	return 0;
}

struct s_counts {
	long read, empty, non_ascii, not_prose, duplicates;
};

/* Normalise one raw record (n > 0 bytes) into `buf` and keep or count it. */
static int s_take(const char *rec, size_t n, char *buf, struct s_list *recs, struct s_counts *c)
{
	size_t out_len;

	if (n == 0)
		return 0;
	c->read++;
	switch (corpus_normalise(rec, n, buf, &out_len)) {
	case CORPUS_KEPT:
		return s_list_push(recs, strdup(buf));
	case CORPUS_EMPTY:
		c->empty++;
		break;
	case CORPUS_NON_ASCII:
		c->non_ascii++;
		break;
	case CORPUS_NOT_PROSE:
		c->not_prose++;
		break;
	}
	return 0;
}

/* Read one file's records: each ends at a line holding only '%', or at the
 * end of the file. */
static int s_read_file(const char *dir, const char *name, struct s_list *recs, struct s_counts *c)
{
	char path[PATH_MAX], *text = NULL, *buf = NULL, *p, *eol, *next, *rec;
	size_t len;
	int rc = -1;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (fsx_read_all(path, &text, &len) < 0)
		return -1;
	if (!(buf = malloc(len + 1))) {
		err_set("out of memory reading '%s'", path);
		goto out;
	}
	for (rec = p = text; p < text + len; p = next) {
		eol = memchr(p, '\n', (size_t)(text + len - p));
		eol = eol ? eol : text + len;
		next = eol < text + len ? eol + 1 : eol;
		if (eol - p == 1 && *p == '%') {
			if (s_take(rec, (size_t)(p - rec), buf, recs, c) < 0)
				goto out;
			rec = next;
		}
	}
	rc = s_take(rec, (size_t)(text + len - rec), buf, recs, c);
out:
	free(buf);
	free(text);
	return rc;
}

/* Write records [from, to) as one text, each followed by an empty line, and
 * describe the file in `desc` under `key`. */
static int s_write_text(const char *path, char **recs, size_t from, size_t to, cJSON *desc, const char *key)
{
	char hex[SHA256_HEX_LEN + 1], *text, *p;
	uint8_t digest[SHA256_LEN];
	size_t i, len = 0;
	cJSON *o;
	int rc = -1;

	for (i = from; i < to; i++)
		len += strlen(recs[i]) + 2;
	if (!(text = malloc(len + 1)))
		return err_set("out of memory writing '%s'", path);
	for (p = text, i = from; i < to; i++)
		p += sprintf(p, "%s\n\n", recs[i]);
	if (fsx_write_atomic(path, text, len) < 0 || sha256_buf(text, len, digest) < 0)
		goto out;
	sha256_hex(digest, hex);
	if (!(o = cJSON_AddObjectToObject(desc, key)) || !cJSON_AddStringToObject(o, "file", path) ||
	    !cJSON_AddNumberToObject(o, "records", (double)(to - from)) ||
	    !cJSON_AddNumberToObject(o, "bytes", (double)len) || !cJSON_AddStringToObject(o, "sha256", hex)) {
		err_set("out of memory describing the corpus");
		goto out;
	}
	rc = 0;
out:
	free(text);
	return rc;
}

static int s_manifest_counts(cJSON *man, const struct s_list *names, const struct s_counts *c, size_t kept)
{
	cJSON *files, *o;
	size_t i;

	if (!(files = cJSON_AddArrayToObject(man, "files")))
		return -1;
	for (i = 0; i < names->n; i++)
		if (!cJSON_AddItemToArray(files, cJSON_CreateString(names->items[i])))
			return -1;
	return (o = cJSON_AddObjectToObject(man, "records")) && cJSON_AddNumberToObject(o, "read", (double)c->read) &&
	       cJSON_AddNumberToObject(o, "kept", (double)kept) &&
	       cJSON_AddNumberToObject(o, "duplicates", (double)c->duplicates) &&
	       cJSON_AddNumberToObject(o, "empty", (double)c->empty) &&
	       cJSON_AddNumberToObject(o, "non_ascii", (double)c->non_ascii) &&
	       cJSON_AddNumberToObject(o, "not_prose", (double)c->not_prose) ? 0 : -1;
}

int corpus_build(const struct corpus_opts *o)
{
	struct s_list names = { NULL, 0, 0 }, recs = { NULL, 0, 0 };
	struct s_counts c = { 0, 0, 0, 0, 0 };
	char path[PATH_MAX], *t;
	struct suite_rng r;
	size_t i, j, n_hold;
	cJSON *man = NULL;
	int rc = -1;

	if (!(o->holdout_frac >= 0 && o->holdout_frac <= 0.5))
		return err_set("bad held-out share %g: expected 0 to 0.5", o->holdout_frac);
	if (snprintf(path, sizeof path, "%s.manifest.json", o->out) >= (int)sizeof path)
		return err_set("output path too long: '%s'", o->out);
	if (s_list_files(o->source, &names) < 0)
		goto out;
	for (i = 0; i < names.n; i++)
		if (s_read_file(o->source, names.items[i], &recs, &c) < 0)
			goto out;
	qsort(recs.items, recs.n, sizeof *recs.items, s_cmp_str);
	for (i = j = 0; i < recs.n; i++) {
		if (j > 0 && !strcmp(recs.items[j - 1], recs.items[i])) {
			free(recs.items[i]);
			c.duplicates++;
		} else {
			recs.items[j++] = recs.items[i];
		}
	}
	recs.n = j;
	if (recs.n == 0) {
		err_set("no usable records in '%s'", o->source);
		goto out;
	}
	suite_rng_seed(&r, o->seed);
	for (i = recs.n - 1; i > 0; i--) {
		j = suite_rng_below(&r, (uint32_t)(i + 1));
		t = recs.items[i], recs.items[i] = recs.items[j], recs.items[j] = t;
	}
	n_hold = (size_t)(o->holdout_frac * (double)recs.n + 0.5);
	if (!(man = cJSON_CreateObject()) || !cJSON_AddStringToObject(man, "generator", "modula-engine corpus") ||
	    !cJSON_AddNumberToObject(man, "version", CORPUS_VERSION) || !cJSON_AddStringToObject(man, "source", o->source) ||
	    !cJSON_AddNumberToObject(man, "seed", (double)o->seed) ||
	    !cJSON_AddNumberToObject(man, "holdout_frac", o->holdout_frac) ||
	    s_manifest_counts(man, &names, &c, recs.n) < 0) {
		err_set("out of memory describing the corpus");
		goto out;
	}
	if (s_write_text(o->out, recs.items, n_hold, recs.n, man, "train") < 0 ||
	    s_write_text(o->holdout, recs.items, 0, n_hold, man, "holdout") < 0)
		goto out;
	rc = jsonu_write_file(path, man);
out:
	cJSON_Delete(man);
	s_list_free(&recs);
	s_list_free(&names);
	return rc;
}
