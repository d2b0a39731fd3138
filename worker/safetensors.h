/* safetensors.h: reading and writing the safetensors format
 * (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets"}},
 * optional "__metadata__" of string values), then the raw data.
 *
 * Reading memory-maps the file and validates the header before anything is
 * used: the header length inside the file, every dtype known, offsets in
 * range, in order, not overlapping, and each tensor's byte size equal to
 * prod(shape) * dtype size. A sharded model (model.safetensors.index.json)
 * opens as one st_set. Errors name the file and the tensor.
 *
 * Not a converter: tensors come back in their stored dtype; st_to_f32() is
 * the one conversion (F32, F16, BF16 -> F32).
 */
#ifndef MODULA_SAFETENSORS_H
#define MODULA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL };

#define ST_MAX_DIMS 8

typedef struct st_tensor {
	const char *name;       /* owned by the file */
	enum st_dtype dtype;
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	const void *data;       /* into the mapping; valid until st_close */
	size_t nbytes;
} st_tensor_t;

typedef struct st_file st_file_t;   /* one mapped .safetensors file */
typedef struct st_set st_set_t;     /* one file or all shards of a model */

/* Open and validate one file. NULL via err_set() naming the file (and the
 * tensor, when one is at fault). */
st_file_t *st_open(const char *path);
void st_close(st_file_t **f);
int st_count(const st_file_t *f);
const st_tensor_t *st_at(const st_file_t *f, int i);
const st_tensor_t *st_find(const st_file_t *f, const char *name);
/* Validate a safetensors image already in memory (`buf` must outlive the
 * file; `name` is used in messages). The fuzzing entry point. */
st_file_t *st_open_mem(const void *buf, size_t len, const char *name);
/* The path (or name) the file was opened with. */
const char *st_file_path(const st_file_t *f);
/* A __metadata__ value, or NULL. */
const char *st_meta(const st_file_t *f, const char *key);

/* Open a model folder: DIR/model.safetensors.index.json with its shards, or
 * DIR/model.safetensors. NULL via err_set(). */
st_set_t *st_set_open(const char *dir);
void st_set_close(st_set_t **s);
/* Find a tensor by name across shards; NULL when absent (no error set). */
const st_tensor_t *st_set_find(const st_set_t *s, const char *name);
/* Find a tensor that must exist with this exact shape (ndim dims):
 * NULL via err_set("'file': tensor 'x' has shape [a,b], expected [c,d]"
 * or "... missing tensor 'x'"). */
const st_tensor_t *st_set_need(const st_set_t *s, const char *name, int ndim, const int64_t *shape);

/* Convert `t` to fp32 into dst (prod(shape) floats). 0, or -1 via err_set()
 * for dtypes that are not F32/F16/BF16. */
int st_to_f32(const st_tensor_t *t, float *dst);

size_t st_dtype_size(enum st_dtype d);
const char *st_dtype_name(enum st_dtype d);

/* Writing: collect tensors (the data is copied or referenced until write),
 * then write atomically (temporary file, fsync, rename). */
typedef struct st_writer st_writer_t;
st_writer_t *st_writer_new(void);
void st_writer_destroy(st_writer_t **w);
/* Add a tensor; `data` must stay valid until st_writer_write. 0 or -1. */
int st_writer_add(st_writer_t *w, const char *name, enum st_dtype dtype, int ndim,
		  const int64_t *shape, const void *data);
/* Add a __metadata__ string pair (copied). 0 or -1. */
int st_writer_meta(st_writer_t *w, const char *key, const char *value);
/* Write to `path` (tensors sorted by name, data 8-byte aligned). 0 or -1. */
int st_writer_write(st_writer_t *w, const char *path);

#endif
