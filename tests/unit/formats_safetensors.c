/* formats_safetensors.c: safetensors reading, writing, shards, conversion,
 * and every malformed header refused with the expected message; a random
 * mutation loop checks that hostile files never crash the reader. */
#include "config.h"
#include "worker/safetensors.h"
#include "err.h"
#include "fsx.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_dir[64];

static void s_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", s_dir, name);
}

/* A safetensors image: 8-byte length, `json`, then `data_len` bytes. */
static unsigned char *s_image(const char *json, size_t data_len, size_t *len)
{
	size_t h = strlen(json);
	unsigned char *b = calloc(1, 8 + h + data_len + 1);

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)h >> (8 * i));
	memcpy(b + 8, json, h);
	*len = 8 + h + data_len;
	return b;
}

/* Refused, with `want` in the message. */
static void s_refuse(const char *json, size_t data_len, const char *want, const char *what)
{
	size_t len;
	unsigned char *b = s_image(json, data_len, &len);
	st_file_t *f = st_open_mem(b, len, "mem.st");

	TAP_OK(!f && strstr(err_msg(), want) && strstr(err_msg(), "'mem.st'"), "refuses %s: %s", what,
	       f ? "(accepted)" : err_msg());
	st_close(&f);
	free(b);
}

static void test_malformed(void)
{
	unsigned char raw[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	st_file_t *f;

	f = st_open_mem(raw, 4, "mem.st");
	TAP_OK(!f && strstr(err_msg(), "not a safetensors file"), "refuses a 4-byte file: %s", err_msg());
	f = st_open_mem(raw, 8, "mem.st");
	TAP_OK(!f && strstr(err_msg(), "runs past the end"), "refuses a huge header length: %s", err_msg());

	s_refuse("{\"a\":", 0, "bad JSON", "truncated JSON");
	s_refuse("[1,2]", 0, "must be a JSON object", "an array header");
	s_refuse("{} x", 0, "bytes after the JSON header", "bytes after the header");
	s_refuse("{\"a\":3}", 0, "tensor 'a': expected an object", "a non-object entry");
	s_refuse("{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': unknown dtype 'F7'",
		 "an unknown dtype");
	s_refuse("{\"a\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'dtype' must be a string", "a numeric dtype");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4, "'shape' must be an array",
		 "a scalar shape");
	s_refuse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "9 dimensions",
		 "nine dimensions");
	s_refuse("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, "dimension 0", "a negative dimension");
	s_refuse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1, "dimension 0", "a fractional dimension");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4096,4096,4096,4096,4096,4096],\"data_offsets\":[0,4]}}", 1 << 13,
		 "tensor 'a': shape does not fit", "an overflowing shape");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "'data_offsets' must be two",
		 "one offset");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "'data_offsets' must be two",
		 "a string offset");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensor 'a': data_offsets [0, 8] out of range",
		 "an offset past the end");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "out of range", "begin after end");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 12, "need 16 bytes, data_offsets give 12",
		 "a shape that does not match the byte size");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "tensor 'b' overlaps tensor 'a'",
		 "overlapping tensors");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'a': 4 unused bytes",
		 "a gap before a tensor");
	s_refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, "last 8 bytes of the file belong to no tensor",
		 "bytes after the last tensor");
	s_refuse("{}", 3, "belong to no tensor", "data without tensors");
	s_refuse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		 "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "tensor 'a' appears twice",
		 "a duplicate name");
	s_refuse("{\"__metadata__\":{\"k\":1}}", 0, "value 'k' must be a string", "a non-string metadata value");
	s_refuse("{\"__metadata__\":[]}", 0, "'__metadata__' must be an object", "an array of metadata");
	s_refuse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 1, "'data_offsets' must be two",
		 "a huge offset");
}

static void test_roundtrip(void)
{
	float a[6] = { 1, -2, 3.5f, 1e-30f, -0.0f, 65504 };
	uint16_t h[4] = { 0x3c00, 0x0001, 0x7c00, 0xfe01 };
	int64_t i64 = -7;
	unsigned char u[3] = { 1, 2, 3 };
	int64_t sa[2] = { 2, 3 }, sh[1] = { 4 }, su[1] = { 3 }, sz[2] = { 0, 5 };
	char path[128];
	st_writer_t *w = st_writer_new();
	st_file_t *f = NULL;
	const st_tensor_t *t;
	float conv[6];
	char *raw = NULL;
	size_t rawlen = 0;
	uint64_t hlen = 0;
	int aligned = 1;

	s_path(path, sizeof path, "rt.safetensors");
	TAP_OK(w && st_writer_add(w, "z.u8", ST_U8, 1, su, u) == 0 &&
	       st_writer_add(w, "a.f32", ST_F32, 2, sa, a) == 0 &&
	       st_writer_add(w, "m.f16", ST_F16, 1, sh, h) == 0 &&
	       st_writer_add(w, "s.i64", ST_I64, 0, NULL, &i64) == 0 &&
	       st_writer_add(w, "e.empty", ST_F32, 2, sz, NULL) == 0 &&
	       st_writer_meta(w, "format", "pt") == 0 && st_writer_meta(w, "format", "modula") == 0,
	       "writer collects five tensors and metadata");
	TAP_OK(st_writer_add(w, "__metadata__", ST_U8, 1, su, u) < 0, "writer refuses the reserved name: %s", err_msg());
	TAP_OK(st_writer_write(w, path) == 0, "writes '%s'", path);
	f = st_open(path);
	TAP_OK(f && st_count(f) == 5, "reads it back: %d tensors %s", f ? st_count(f) : -1, f ? "" : err_msg());
	if (!f)
		goto out;
	TAP_OK(st_meta(f, "format") && !strcmp(st_meta(f, "format"), "modula") && !st_meta(f, "nope"),
	       "metadata round-trips (last value wins)");
	t = st_find(f, "a.f32");
	TAP_OK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24 &&
	       !memcmp(t->data, a, 24), "F32 tensor round-trips");
	t = st_find(f, "s.i64");
	TAP_OK(t && t->ndim == 0 && t->nbytes == 8 && !memcmp(t->data, &i64, 8), "scalar I64 round-trips");
	t = st_find(f, "e.empty");
	TAP_OK(t && t->nbytes == 0 && t->shape[0] == 0 && t->shape[1] == 5, "empty tensor round-trips");
	TAP_OK(!st_find(f, "nope") && st_find(f, "z.u8") && !memcmp(st_find(f, "z.u8")->data, u, 3), "lookups by name");
	t = st_find(f, "m.f16");
	TAP_OK(t && st_to_f32(t, conv) == 0 && conv[0] == 1.0f && conv[1] == ldexpf(1, -24) && isinf(conv[2]) &&
	       conv[2] > 0 && isnan(conv[3]), "F16 -> F32: 1, smallest subnormal, inf, nan");
	TAP_OK(st_to_f32(st_find(f, "z.u8"), conv) < 0 && strstr(err_msg(), "cannot convert dtype U8"),
	       "U8 -> F32 refused: %s", err_msg());
	for (int i = 0; i < st_count(f); i++) {
		const st_tensor_t *x = st_at(f, i);
		if ((uintptr_t)x->data % st_dtype_size(x->dtype))
			aligned = 0;
	}
	TAP_OK(aligned, "every tensor is aligned to its element size");
	if (fsx_read_all(path, &raw, &rawlen) == 0)
		for (int i = 7; i >= 0; i--)
			hlen = hlen << 8 | (unsigned char)raw[i];
	TAP_OK(raw && (8 + hlen) % 8 == 0 && raw[8] == '{' && strstr(raw + 8, "\"__metadata__\"") &&
	       strstr(raw + 8, "\"a.f32\"") < strstr(raw + 8, "\"z.u8\""),
	       "header: 8-byte aligned data, metadata, names sorted");
out:
	free(raw);
	st_close(&f);
	st_writer_destroy(&w);
	st_writer_destroy(&w);
	unlink(path);
}

static void test_f16(void)
{
	static const struct {
		uint16_t h;
		float f;
	} cases[] = {
		{ 0x0000, 0.0f }, { 0x8000, -0.0f }, { 0x3c00, 1.0f }, { 0xc000, -2.0f }, { 0x7bff, 65504.0f },
		{ 0x0400, 6.103515625e-05f }, { 0x03ff, 6.097555160522461e-05f }, { 0x8001, -5.960464477539063e-08f },
		{ 0x3555, 0.333251953125f },
	};
	uint16_t bf[3] = { 0x3f80, 0xc049, 0x7f80 };
	int64_t shape[1] = { 1 }, bshape[1] = { 3 };
	int bad = 0;
	float out[3];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		st_tensor_t t = { .name = "x", .dtype = ST_F16, .ndim = 1, .data = &cases[i].h, .nbytes = 2 };
		float v;
		t.shape[0] = shape[0];
		st_to_f32(&t, &v);
		if (memcmp(&v, &cases[i].f, 4)) {
			tap_diag("f16 0x%04x -> %g, expected %g", cases[i].h, (double)v, (double)cases[i].f);
			bad++;
		}
	}
	TAP_OK(!bad, "F16 conversion exact on normals, subnormals and signed zeros");
	{
		st_tensor_t t = { .name = "y", .dtype = ST_BF16, .ndim = 1, .data = bf, .nbytes = 6 };
		t.shape[0] = bshape[0];
		TAP_OK(st_to_f32(&t, out) == 0 && out[0] == 1.0f && out[1] == -3.140625f && isinf(out[2]),
		       "BF16 conversion: 1, -3.140625, inf");
	}
}

static int s_write_one(const char *name, const char *tensor, float v)
{
	char path[128];
	int64_t shape[1] = { 2 };
	float data[2] = { v, v + 1 };
	st_writer_t *w = st_writer_new();
	int rc;

	s_path(path, sizeof path, name);
	rc = st_writer_add(w, tensor, ST_F32, 1, shape, data) == 0 ? st_writer_write(w, path) : -1;
	st_writer_destroy(&w);
	return rc;
}

static int s_write_text(const char *name, const char *text)
{
	char path[128];

	s_path(path, sizeof path, name);
	return fsx_write_atomic(path, text, strlen(text));
}

static void test_shards(void)
{
	static const char *const files[] = { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
					     "model.safetensors.index.json", "model.safetensors" };
	char path[128];
	st_set_t *s;
	const st_tensor_t *t;
	int64_t good[1] = { 2 }, bad[2] = { 1, 2 };

	s = st_set_open(s_dir);
	TAP_OK(!s && strstr(err_msg(), "no model weights"), "an empty folder is refused: %s", err_msg());

	s_write_one(files[0], "layers.0.w", 1);
	s_write_one(files[1], "layers.1.w", 10);
	s_write_text(files[2], "{\"metadata\":{\"total_size\":16},\"weight_map\":{"
			       "\"layers.0.w\":\"model-00001-of-00002.safetensors\","
			       "\"layers.1.w\":\"model-00002-of-00002.safetensors\"}}");
	s = st_set_open(s_dir);
	TAP_OK(s != NULL, "opens a sharded folder %s", s ? "" : err_msg());
	if (s) {
		t = st_set_find(s, "layers.1.w");
		TAP_OK(t && ((const float *)t->data)[0] == 10 && st_set_find(s, "layers.0.w") && !st_set_find(s, "x"),
		       "finds tensors across shards");
		TAP_OK(st_set_need(s, "layers.0.w", 1, good) != NULL, "st_set_need accepts the right shape");
		TAP_OK(!st_set_need(s, "layers.0.w", 2, bad) && strstr(err_msg(), "model-00001-of-00002.safetensors': tensor 'layers.0.w' has shape [2], expected [1,2]"),
		       "st_set_need refuses a wrong shape: %s", err_msg());
		TAP_OK(!st_set_need(s, "lm_head.weight", 1, good) && strstr(err_msg(), "missing tensor 'lm_head.weight'"),
		       "st_set_need refuses a missing tensor: %s", err_msg());
		st_set_close(&s);
		st_set_close(&s);
	}
	s_write_text(files[2], "{\"weight_map\":{\"layers.0.w\":\"../model-00001-of-00002.safetensors\"}}");
	s = st_set_open(s_dir);
	TAP_OK(!s && strstr(err_msg(), "unsafe"), "refuses a shard name with '..': %s", err_msg());
	s_write_text(files[2], "{\"weight_map\":{\"layers.0.w\":\"/etc/passwd\"}}");
	s = st_set_open(s_dir);
	TAP_OK(!s && strstr(err_msg(), "unsafe"), "refuses an absolute shard name: %s", err_msg());
	s_write_text(files[2], "{\"weight_map\":{\"layers.9.w\":\"model-00001-of-00002.safetensors\"}}");
	s = st_set_open(s_dir);
	TAP_OK(!s && strstr(err_msg(), "missing tensor 'layers.9.w'") && strstr(err_msg(), "model-00001-of-00002"),
	       "refuses an index naming a tensor its shard lacks: %s", err_msg());
	s_write_text(files[2], "{\"weight_map\":{\"layers.0.w\":7}}");
	s = st_set_open(s_dir);
	TAP_OK(!s && strstr(err_msg(), "tensor 'layers.0.w': the shard must be a file name"),
	       "refuses a non-string shard: %s", err_msg());
	s_write_text(files[2], "{\"weight_map\":[]}");
	s = st_set_open(s_dir);
	TAP_OK(!s && strstr(err_msg(), "'weight_map' must be an object"), "refuses a weight_map array: %s", err_msg());
	s_path(path, sizeof path, files[2]);
	unlink(path);

	s_write_one(files[3], "w", 5);
	s = st_set_open(s_dir);
	TAP_OK(s && st_set_find(s, "w") && ((const float *)st_set_find(s, "w")->data)[1] == 6,
	       "opens a single model.safetensors folder");
	st_set_close(&s);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		s_path(path, sizeof path, files[i]);
		unlink(path);
	}
}

/* Random byte changes, truncations and length rewrites of a valid image:
 * the reader must refuse or accept without touching memory outside it. */
static void test_mutations(void)
{
	char path[128];
	char *valid = NULL;
	size_t len = 0;
	int accepted = 0, refused = 0, inside = 1;
	unsigned seed = 12345;

	s_path(path, sizeof path, "fuzz.safetensors");
	s_write_one("fuzz.safetensors", "weight", 1);
	if (fsx_read_all(path, &valid, &len) < 0) {
		TAP_OK(0, "cannot read the fuzz seed: %s", err_msg());
		return;
	}
	for (int round = 0; round < 20000; round++) {
		unsigned char *b = malloc(len);
		size_t n = len;
		int kind = rand_r(&seed) % 4;
		st_file_t *f;
		memcpy(b, valid, len);
		if (kind == 0) {
			b[rand_r(&seed) % len] = (unsigned char)rand_r(&seed);
		} else if (kind == 1) {
			for (int k = 0; k < 4; k++)
				b[8 + rand_r(&seed) % (len - 8)] = "{}[],:\"0123456789e-. aFUBI"[rand_r(&seed) % 26];
		} else if (kind == 2) {
			n = (size_t)rand_r(&seed) % len;
		} else {
			b[rand_r(&seed) % 8] ^= (unsigned char)(1u << (rand_r(&seed) % 8));
		}
		f = st_open_mem(b, n, "fuzz");
		if (f) {
			accepted++;
			for (int i = 0; i < st_count(f); i++) {
				const st_tensor_t *t = st_at(f, i);
				if ((const unsigned char *)t->data < b || (const unsigned char *)t->data + t->nbytes > b + n)
					inside = 0;
			}
		} else {
			refused++;
		}
		st_close(&f);
		free(b);
	}
	TAP_OK(inside && refused > 10000, "20000 mutated files: %d refused, %d accepted, every accepted tensor inside its file",
	       refused, accepted);
	free(valid);
	unlink(path);
}

int main(void)
{
	snprintf(s_dir, sizeof s_dir, "/tmp/modula-st-XXXXXX");
	if (!mkdtemp(s_dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_malformed();
	test_f16();
	test_roundtrip();
	test_shards();
	test_mutations();
	TAP_OK(st_open("/nonexistent/x.safetensors") == NULL && strstr(err_msg(), "cannot open '/nonexistent/x.safetensors'"),
	       "a missing file is named: %s", err_msg());
	rmdir(s_dir);
	return tap_done();
}
