/* safetensors.c: see safetensors.h.
 *
 * The header is parsed with cJSON straight from the mapping and checked in
 * full before st_open() returns: after that every st_tensor_t's data lies
 * inside the file and has exactly prod(shape) * dtype-size bytes. The data
 * pointers are not necessarily aligned (the format does not promise it);
 * st_to_f32() copies with memcpy. Files we write align the data section to
 * 8 bytes and each tensor to its element size.
 */
#include "config.h"
#include "worker/safetensors.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation's limit on the JSON header. */
#define ST_MAX_HEADER (100u << 20)

static const struct {
	const char *name;
	size_t size;
} s_dtypes[] = {
	[ST_F32] = { "F32", 4 }, [ST_F16] = { "F16", 2 }, [ST_BF16] = { "BF16", 2 },
	[ST_F64] = { "F64", 8 }, [ST_I64] = { "I64", 8 }, [ST_I32] = { "I32", 4 },
	[ST_I16] = { "I16", 2 }, [ST_I8] = { "I8", 1 }, [ST_U8] = { "U8", 1 },
	[ST_BOOL] = { "BOOL", 1 },
};
#define N_DTYPES ((int)(sizeof s_dtypes / sizeof s_dtypes[0]))

struct st_file {
	char *path;
	const unsigned char *base;      /* the whole file */
	size_t size;
	int mapped;                     /* base is our mmap */
	cJSON *header;                  /* owns the names and metadata */
	int n;
	st_tensor_t *t;                 /* file order */
	st_tensor_t **by_name;          /* sorted by name, for st_find */
};

size_t st_dtype_size(enum st_dtype d)
{
	return (int)d >= 0 && (int)d < N_DTYPES ? s_dtypes[d].size : 0;
}

const char *st_dtype_name(enum st_dtype d)
{
	return (int)d >= 0 && (int)d < N_DTYPES ? s_dtypes[d].name : "?";
}

static int s_dtype_parse(const char *s, enum st_dtype *out)
{
	for (int i = 0; i < N_DTYPES; i++) {
		if (!strcmp(s, s_dtypes[i].name)) {
			*out = (enum st_dtype)i;
			return 0;
		}
	}
	return -1;
}

/* A non-negative integer JSON number no larger than `max`. */
static int s_uint(const cJSON *it, uint64_t max, uint64_t *out)
{
	double v;

	if (!cJSON_IsNumber(it))
		return -1;
	v = it->valuedouble;
	if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v) || (uint64_t)v > max)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* Fill `t` from one header entry; the data range is checked by the caller. */
static int s_entry(const char *path, const cJSON *e, st_tensor_t *t, uint64_t *begin, uint64_t *end, uint64_t data_len)
{
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	const cJSON *d;
	uint64_t count = 1;

	if (!cJSON_IsObject(e))
		return err_set("'%s': tensor '%s': expected an object, got %s", path, t->name, jsonu_type_name(e));
	if (!cJSON_IsString(dt))
		return err_set("'%s': tensor '%s': 'dtype' must be a string", path, t->name);
	if (s_dtype_parse(dt->valuestring, &t->dtype) < 0)
		return err_set("'%s': tensor '%s': unknown dtype '%.32s'", path, t->name, dt->valuestring);
	if (!cJSON_IsArray(shape))
		return err_set("'%s': tensor '%s': 'shape' must be an array", path, t->name);
	if (cJSON_GetArraySize(shape) > ST_MAX_DIMS)
		return err_set("'%s': tensor '%s': %d dimensions, at most %d are supported", path, t->name,
			       cJSON_GetArraySize(shape), ST_MAX_DIMS);
	t->ndim = 0;
	cJSON_ArrayForEach(d, shape) {
		uint64_t v;
		if (s_uint(d, data_len, &v) < 0)
			return err_set("'%s': tensor '%s': dimension %d is not a size within the file", path, t->name, t->ndim);
		t->shape[t->ndim++] = (int64_t)v;
		/* count <= data_len < 2^53 and v <= data_len: test before multiplying */
		if (v && count > data_len / v)
			return err_set("'%s': tensor '%s': shape does not fit in the file", path, t->name);
		count *= v;
	}
	if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
	    s_uint(cJSON_GetArrayItem(offs, 0), UINT64_MAX, begin) < 0 ||
	    s_uint(cJSON_GetArrayItem(offs, 1), UINT64_MAX, end) < 0)
		return err_set("'%s': tensor '%s': 'data_offsets' must be two non-negative integers", path, t->name);
	if (*begin > *end || *end > data_len)
		return err_set("'%s': tensor '%s': data_offsets [%llu, %llu] out of range (data is %llu bytes)", path,
			       t->name, (unsigned long long)*begin, (unsigned long long)*end, (unsigned long long)data_len);
	if (count > data_len / s_dtypes[t->dtype].size + 1 || count * s_dtypes[t->dtype].size != *end - *begin)
		return err_set("'%s': tensor '%s': shape and dtype %s need %llu bytes, data_offsets give %llu", path,
			       t->name, s_dtypes[t->dtype].name, (unsigned long long)(count * s_dtypes[t->dtype].size),
			       (unsigned long long)(*end - *begin));
	t->nbytes = (size_t)(*end - *begin);
	return 0;
}

static int s_cmp_name(const void *a, const void *b)
{
	return strcmp((*(st_tensor_t *const *)a)->name, (*(st_tensor_t *const *)b)->name);
}

static int s_cmp_data(const void *a, const void *b)
{
	const st_tensor_t *x = *(st_tensor_t *const *)a, *y = *(st_tensor_t *const *)b;
	const char *px = (const char *)x->data, *py = (const char *)y->data;

	if (px != py)
		return px < py ? -1 : 1;
	return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Parse and check the header of f->base[0..f->size). */
static int s_parse(st_file_t *f)
{
	uint64_t hlen = 0, data_len;
	const unsigned char *data, *next;
	const char *end = NULL;
	const cJSON *e, *meta = NULL;
	int i;

	if (f->size < 8)
		return err_set("'%s': not a safetensors file (%zu bytes, the header length alone is 8)", f->path, f->size);
	for (i = 7; i >= 0; i--)
		hlen = hlen << 8 | f->base[i];
	if (hlen > f->size - 8)
		return err_set("'%s': header length %llu runs past the end of the file (%zu bytes)", f->path,
			       (unsigned long long)hlen, f->size);
	if (hlen > ST_MAX_HEADER)
		return err_set("'%s': header length %llu is over the limit of %u bytes", f->path,
			       (unsigned long long)hlen, ST_MAX_HEADER);
	data = f->base + 8 + hlen;
	data_len = f->size - 8 - hlen;
	f->header = cJSON_ParseWithLengthOpts((const char *)f->base + 8, (size_t)hlen, &end, 0);
	if (!f->header) {
		size_t at = end ? (size_t)(end - (const char *)f->base) : 8;
		return err_set("'%s': bad JSON in the header near byte %zu", f->path, at);
	}
	for (const char *p = end; p < (const char *)data; p++)
		if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
			return err_set("'%s': bytes after the JSON header near byte %zu", f->path,
				       (size_t)(p - (const char *)f->base));
	if (!cJSON_IsObject(f->header))
		return err_set("'%s': the header must be a JSON object, got %s", f->path, jsonu_type_name(f->header));
	f->n = 0;
	cJSON_ArrayForEach(e, f->header)
		f->n += strcmp(e->string, "__metadata__") != 0;
	f->t = calloc((size_t)f->n + 1, sizeof *f->t);
	f->by_name = calloc((size_t)f->n + 1, sizeof *f->by_name);
	if (!f->t || !f->by_name)
		return err_set("'%s': out of memory for %d tensors", f->path, f->n);
	i = 0;
	cJSON_ArrayForEach(e, f->header) {
		st_tensor_t *t = &f->t[i];
		uint64_t b = 0, en = 0;
		if (!strcmp(e->string, "__metadata__")) {
			if (meta)
				return err_set("'%s': '__metadata__' appears twice", f->path);
			meta = e;
			continue;
		}
		t->name = e->string;
		if (s_entry(f->path, e, t, &b, &en, data_len) < 0)
			return -1;
		t->data = data + b;
		f->by_name[i++] = t;
	}
	if (meta) {
		if (!cJSON_IsObject(meta))
			return err_set("'%s': '__metadata__' must be an object, got %s", f->path, jsonu_type_name(meta));
		cJSON_ArrayForEach(e, meta)
			if (!cJSON_IsString(e))
				return err_set("'%s': '__metadata__' value '%s' must be a string, got %s", f->path,
					       e->string, jsonu_type_name(e));
	}
	/* The data ranges, in order, must tile the data section exactly. */
	qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_data);
	next = data;
	for (i = 0; i < f->n; i++) {
		const unsigned char *got = f->by_name[i]->data;
		if (got < next)
			return err_set("'%s': tensor '%s' overlaps tensor '%s'", f->path, f->by_name[i]->name,
				       f->by_name[i - 1]->name);
		if (got > next)
			return err_set("'%s': tensor '%s': %zu unused bytes before its data", f->path,
				       f->by_name[i]->name, (size_t)(got - next));
		next = got + f->by_name[i]->nbytes;
	}
	if (next != data + data_len)
		return err_set("'%s': the last %zu bytes of the file belong to no tensor", f->path,
			       (size_t)(data + data_len - next));
	qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name);
	for (i = 1; i < f->n; i++)
		if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name))
			return err_set("'%s': tensor '%s' appears twice", f->path, f->by_name[i]->name);
	return 0;
}

st_file_t *st_open_mem(const void *buf, size_t len, const char *name)
{
	st_file_t *f = calloc(1, sizeof *f);

	if (!f || !(f->path = strdup(name))) {
		free(f);
		err_set("out of memory opening '%s'", name);
		return NULL;
	}
	f->base = buf;
	f->size = len;
	if (s_parse(f) < 0) {
		st_close(&f);
		return NULL;
	}
	return f;
}

st_file_t *st_open(const char *path)
{
	struct stat sb;
	void *map = NULL;
	st_file_t *f;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		err_set("cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		err_set("cannot read '%s': %s", path, S_ISREG(sb.st_mode) ? strerror(errno) : "not a regular file");
		close(fd);
		return NULL;
	}
	if (sb.st_size > 0 && (map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
		err_set("cannot map '%s': %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	close(fd);
	f = st_open_mem(map ? map : "", (size_t)sb.st_size, path);
	if (!f) {
		if (map)
			munmap(map, (size_t)sb.st_size);
		return NULL;
	}
	f->mapped = map != NULL;
	return f;
}

void st_close(st_file_t **pf)
{
	st_file_t *f = pf ? *pf : NULL;

	if (!f)
		return;
	if (f->mapped)
		munmap((void *)f->base, f->size);
	cJSON_Delete(f->header);
	free(f->t);
	free(f->by_name);
	free(f->path);
	free(f);
	*pf = NULL;
}

int st_count(const st_file_t *f)
{
	return f->n;
}

const st_tensor_t *st_at(const st_file_t *f, int i)
{
	return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const st_tensor_t *st_find(const st_file_t *f, const char *name)
{
	st_tensor_t key = { .name = name }, *pkey = &key, **hit;

	hit = bsearch(&pkey, f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name);
	return hit ? *hit : NULL;
}

const char *st_meta(const st_file_t *f, const char *key)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(f->header, "__metadata__");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *st_file_path(const st_file_t *f)
{
	return f->path;
}

/* ---- conversion ---- */

static float s_f16(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
	float v;

	if (exp == 0) {
		/* zero or subnormal: mant * 2^-24, exact in fp32 */
		v = ldexpf((float)mant, -24);
		return sign ? -v : v;
	}
	if (exp == 31)
		bits = sign | 0x7f800000u | mant << 13;   /* inf, or nan keeping its payload */
	else
		bits = sign | (exp + 112) << 23 | mant << 13;
	memcpy(&v, &bits, 4);
	return v;
}

int st_to_f32(const st_tensor_t *t, float *dst)
{
	const unsigned char *p = t->data;
	size_t n;

	switch (t->dtype) {
	case ST_F32:
		memcpy(dst, p, t->nbytes);
		return 0;
	case ST_F16:
		n = t->nbytes / 2;
		for (size_t i = 0; i < n; i++)
			dst[i] = s_f16((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
		return 0;
	case ST_BF16:
		n = t->nbytes / 2;
		for (size_t i = 0; i < n; i++) {
			uint32_t bits = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
			memcpy(&dst[i], &bits, 4);
		}
		return 0;
	default:
		return err_set("tensor '%s': cannot convert dtype %s to F32", t->name, st_dtype_name(t->dtype));
	}
}

/* ---- sets of shards ---- */

struct st_set {
	char *dir;
	int n_files;
	st_file_t **files;
	int n;
	struct st_set_entry {
		const st_tensor_t *t;
		int file;
	} *e;                           /* sorted by name */
};

static int s_cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct st_set_entry *)a)->t->name, ((const struct st_set_entry *)b)->t->name);
}

static int s_set_add_file(st_set_t *s, const char *path)
{
	st_file_t **files = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *files);

	if (!files)
		return err_set("out of memory opening '%s'", path);
	s->files = files;
	if (!(s->files[s->n_files] = st_open(path)))
		return -1;
	return s->n_files++;
}

/* The shards named in DIR/model.safetensors.index.json. */
static int s_set_index(st_set_t *s, const char *index_path)
{
	cJSON *root = jsonu_read_file(index_path);
	const cJSON *map, *it;
	char **shard_names = NULL;
	int rc = -1, k;

	if (!root)
		return -1;
	map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(map)) {
		err_set("'%s': 'weight_map' must be an object, got %s", index_path, jsonu_type_name(map));
		goto out;
	}
	s->e = calloc((size_t)cJSON_GetArraySize(map) + 1, sizeof *s->e);
	if (!s->e || !(shard_names = calloc((size_t)cJSON_GetArraySize(map) + 1, sizeof *shard_names))) {
		err_set("out of memory reading '%s'", index_path);
		goto out;
	}
	cJSON_ArrayForEach(it, map) {
		char path[PATH_MAX];
		const st_tensor_t *t;
		if (!cJSON_IsString(it)) {
			err_set("'%s': tensor '%s': the shard must be a file name, got %s", index_path, it->string,
				jsonu_type_name(it));
			goto out;
		}
		for (k = 0; k < s->n_files && strcmp(shard_names[k], it->valuestring); k++)
			;
		if (k == s->n_files) {
			if (path_check_name(it->valuestring) < 0 || path_join(path, sizeof path, s->dir, it->valuestring) < 0) {
				err_prefix("'%s': tensor '%s'", index_path, it->string);
				goto out;
			}
			if (!(shard_names[k] = strdup(it->valuestring))) {
				err_set("out of memory reading '%s'", index_path);
				goto out;
			}
			if (s_set_add_file(s, path) < 0) {
				free(shard_names[k]);
				shard_names[k] = NULL;
				goto out;
			}
		}
		if (!(t = st_find(s->files[k], it->string))) {
			err_set("'%s': missing tensor '%s' (listed in '%s')", st_file_path(s->files[k]), it->string, index_path);
			goto out;
		}
		s->e[s->n].t = t;
		s->e[s->n++].file = k;
	}
	rc = 0;
out:
	for (k = 0; shard_names && k < s->n_files; k++)
		free(shard_names[k]);
	free(shard_names);
	cJSON_Delete(root);
	return rc;
}

static int s_set_single(st_set_t *s, const char *path)
{
	st_file_t *f;

	if (s_set_add_file(s, path) < 0)
		return -1;
	f = s->files[0];
	if (!(s->e = calloc((size_t)st_count(f) + 1, sizeof *s->e)))
		return err_set("out of memory opening '%s'", path);
	for (int i = 0; i < st_count(f); i++)
		s->e[s->n++] = (struct st_set_entry){ st_at(f, i), 0 };
	return 0;
}

st_set_t *st_set_open(const char *dir)
{
	char path[PATH_MAX];
	st_set_t *s = calloc(1, sizeof *s);
	int rc;

	if (!s || !(s->dir = strdup(dir))) {
		free(s);
		err_set("out of memory opening '%s'", dir);
		return NULL;
	}
	if (path_join(path, sizeof path, dir, "model.safetensors.index.json") < 0)
		goto err;
	if (access(path, F_OK) == 0) {
		rc = s_set_index(s, path);
	} else {
		if (path_join(path, sizeof path, dir, "model.safetensors") < 0)
			goto err;
		if (access(path, F_OK) < 0) {
			err_set("no model weights in '%s': neither model.safetensors nor model.safetensors.index.json", dir);
			goto err;
		}
		rc = s_set_single(s, path);
	}
	if (rc < 0)
		goto err;
	qsort(s->e, (size_t)s->n, sizeof *s->e, s_cmp_entry);
	for (int i = 1; i < s->n; i++) {
		if (!strcmp(s->e[i - 1].t->name, s->e[i].t->name)) {
			err_set("'%s': tensor '%s' is listed twice", path, s->e[i].t->name);
			goto err;
		}
	}
	return s;
err:
	st_set_close(&s);
	return NULL;
}

void st_set_close(st_set_t **ps)
{
	st_set_t *s = ps ? *ps : NULL;

	if (!s)
		return;
	for (int i = 0; i < s->n_files; i++)
		st_close(&s->files[i]);
	free(s->files);
	free(s->e);
	free(s->dir);
	free(s);
	*ps = NULL;
}

static const struct st_set_entry *s_set_lookup(const st_set_t *s, const char *name)
{
	st_tensor_t t = { .name = name };
	struct st_set_entry key = { &t, 0 };

	return bsearch(&key, s->e, (size_t)s->n, sizeof *s->e, s_cmp_entry);
}

const st_tensor_t *st_set_find(const st_set_t *s, const char *name)
{
	const struct st_set_entry *e = s_set_lookup(s, name);

	return e ? e->t : NULL;
}

static void s_shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
	size_t k = 0;

	k += (size_t)snprintf(buf + k, n - k, "[");
	for (int i = 0; i < ndim && k < n; i++)
		k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
}

const st_tensor_t *st_set_need(const st_set_t *s, const char *name, int ndim, const int64_t *shape)
{
	const struct st_set_entry *e = s_set_lookup(s, name);
	char got[256], want[256];

	if (!e) {
		err_set("'%s': missing tensor '%s'", s->dir, name);
		return NULL;
	}
	if (e->t->ndim == ndim && !memcmp(e->t->shape, shape, (size_t)ndim * sizeof *shape))
		return e->t;
	s_shape_str(got, sizeof got, e->t->ndim, e->t->shape);
	s_shape_str(want, sizeof want, ndim, shape);
	err_set("'%s': tensor '%s' has shape %s, expected %s", st_file_path(s->files[e->file]), name, got, want);
	return NULL;
}

/* ---- writing ---- */

struct st_writer {
	int n, cap;
	struct st_wtensor {
		char *name;
		enum st_dtype dtype;
		int ndim;
		int64_t shape[ST_MAX_DIMS];
		const void *data;
		size_t nbytes;
		uint64_t offset;
	} *t;
	cJSON *meta;
};

st_writer_t *st_writer_new(void)
{
	st_writer_t *w = calloc(1, sizeof *w);

	if (!w || !(w->meta = cJSON_CreateObject())) {
		free(w);
		err_set("out of memory");
		return NULL;
	}
	return w;
}

void st_writer_destroy(st_writer_t **pw)
{
	st_writer_t *w = pw ? *pw : NULL;

	if (!w)
		return;
	for (int i = 0; i < w->n; i++)
		free(w->t[i].name);
	free(w->t);
	cJSON_Delete(w->meta);
	free(w);
	*pw = NULL;
}

int st_writer_add(st_writer_t *w, const char *name, enum st_dtype dtype, int ndim, const int64_t *shape, const void *data)
{
	struct st_wtensor *t;
	size_t count = 1;

	if (!name[0] || !strcmp(name, "__metadata__"))
		return err_set("cannot add tensor '%s': reserved or empty name", name);
	if (!st_dtype_size(dtype))
		return err_set("cannot add tensor '%s': unknown dtype %d", name, (int)dtype);
	if (ndim < 0 || ndim > ST_MAX_DIMS)
		return err_set("cannot add tensor '%s': %d dimensions (at most %d)", name, ndim, ST_MAX_DIMS);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] && count > SIZE_MAX / st_dtype_size(dtype) / (size_t)shape[i]))
			return err_set("cannot add tensor '%s': bad shape", name);
		count *= (size_t)shape[i];
	}
	if (w->n == w->cap) {
		int cap = w->cap ? 2 * w->cap : 16;
		struct st_wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
		if (!nt)
			return err_set("out of memory adding tensor '%s'", name);
		w->t = nt;
		w->cap = cap;
	}
	t = &w->t[w->n];
	memset(t, 0, sizeof *t);
	if (!(t->name = strdup(name)))
		return err_set("out of memory adding tensor '%s'", name);
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim)
		memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
	t->data = data;
	t->nbytes = count * st_dtype_size(dtype);
	w->n++;
	return 0;
}

int st_writer_meta(st_writer_t *w, const char *key, const char *value)
{
	cJSON *v = cJSON_CreateString(value);

	if (!v)
		return err_set("out of memory adding metadata '%s'", key);
	if (cJSON_GetObjectItemCaseSensitive(w->meta, key))
		cJSON_ReplaceItemInObjectCaseSensitive(w->meta, key, v);
	else
		cJSON_AddItemToObject(w->meta, key, v);
	return 0;
}

static int s_cmp_wname(const void *a, const void *b)
{
	return strcmp(((const struct st_wtensor *)a)->name, ((const struct st_wtensor *)b)->name);
}

/* Data order: larger elements first, then by name, so every tensor is
 * aligned to its element size (as the reference writer does). */
static int s_cmp_wdata(const void *a, const void *b)
{
	const struct st_wtensor *x = *(struct st_wtensor *const *)a, *y = *(struct st_wtensor *const *)b;
	size_t sx = st_dtype_size(x->dtype), sy = st_dtype_size(y->dtype);

	if (sx != sy)
		return sx > sy ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int s_write_all(int fd, const void *buf, size_t len, const char *path)
{
	const char *p = buf;

	while (len) {
		ssize_t k = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return err_set("cannot write '%s': %s", path, strerror(errno));
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

/* The JSON header, padded with spaces so the data starts 8-byte aligned. */
static char *s_header(st_writer_t *w, struct st_wtensor **order, size_t *len)
{
	cJSON *root = cJSON_CreateObject();
	char *text = NULL, *padded = NULL;
	uint64_t off = 0;
	size_t n;

	for (int i = 0; i < w->n; i++) {
		order[i]->offset = off;
		off += order[i]->nbytes;
	}
	if (!root || (cJSON_GetArraySize(w->meta) &&
		      !cJSON_AddItemReferenceToObject(root, "__metadata__", w->meta)))
		goto out;
	for (int i = 0; i < w->n; i++) {
		struct st_wtensor *t = &w->t[i];
		char num[64];
		cJSON *e, *shape, *offs;
		if (!(e = cJSON_AddObjectToObject(root, t->name)) ||
		    !cJSON_AddStringToObject(e, "dtype", st_dtype_name(t->dtype)) ||
		    !(shape = cJSON_AddArrayToObject(e, "shape")) ||
		    !(offs = cJSON_AddArrayToObject(e, "data_offsets")))
			goto out;
		for (int d = 0; d < t->ndim; d++) {
			snprintf(num, sizeof num, "%lld", (long long)t->shape[d]);
			cJSON_AddItemToArray(shape, cJSON_CreateRaw(num));
		}
		snprintf(num, sizeof num, "%llu", (unsigned long long)t->offset);
		cJSON_AddItemToArray(offs, cJSON_CreateRaw(num));
		snprintf(num, sizeof num, "%llu", (unsigned long long)(t->offset + t->nbytes));
		cJSON_AddItemToArray(offs, cJSON_CreateRaw(num));
	}
	if (!(text = cJSON_PrintUnformatted(root)))
		goto out;
	n = strlen(text);
	*len = (n + 7) / 8 * 8;
	if ((padded = malloc(*len + 1))) {
		memcpy(padded, text, n);
		memset(padded + n, ' ', *len - n);
		padded[*len] = '\0';
	}
out:
	free(text);
	cJSON_Delete(root);
	return padded;
}

int st_writer_write(st_writer_t *w, const char *path)
{
	struct st_wtensor **order = NULL;
	char tmp[PATH_MAX] = "", dir[PATH_MAX], *header = NULL;
	unsigned char lenbuf[8];
	size_t hlen = 0;
	const char *slash;
	int fd = -1, rc = -1;

	qsort(w->t, (size_t)w->n, sizeof *w->t, s_cmp_wname);
	for (int i = 1; i < w->n; i++)
		if (!strcmp(w->t[i - 1].name, w->t[i].name))
			return err_set("cannot write '%s': tensor '%s' added twice", path, w->t[i].name);
	if (!(order = calloc((size_t)w->n + 1, sizeof *order)))
		return err_set("out of memory writing '%s'", path);
	for (int i = 0; i < w->n; i++)
		order[i] = &w->t[i];
	qsort(order, (size_t)w->n, sizeof *order, s_cmp_wdata);
	if (!(header = s_header(w, order, &hlen))) {
		err_set("out of memory writing '%s'", path);
		goto out;
	}
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
		tmp[0] = '\0';
		err_set("path too long: '%s'", path);
		goto out;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		err_set("cannot create '%s': %s", tmp, strerror(errno));
		tmp[0] = '\0';
		goto out;
	}
	if (s_write_all(fd, lenbuf, 8, tmp) < 0 || s_write_all(fd, header, hlen, tmp) < 0)
		goto out;
	for (int i = 0; i < w->n; i++)
		if (s_write_all(fd, order[i]->data, order[i]->nbytes, tmp) < 0)
			goto out;
	if (fsync(fd) < 0) {
		err_set("cannot sync '%s': %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		err_set("cannot write '%s': %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		err_set("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
		goto out;
	}
	tmp[0] = '\0';
	slash = strrchr(path, '/');
	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash == path ? 1 : slash - path) : 1, slash ? path : ".");
	rc = fsx_fsync_dir(dir);
out:
	if (fd >= 0)
		close(fd);
	if (tmp[0])
		unlink(tmp);
	free(header);
	free(order);
	return rc;
}
