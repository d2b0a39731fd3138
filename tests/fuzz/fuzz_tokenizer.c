/* fuzz_tokenizer.c: libFuzzer target for the tokenizer.json loader and the
 * encoder (worker/tokenizer.h). The input is a tokenizer.json, optionally
 * followed by "\n\x00TEXT\x00\n" and a text to encode (and decode back).
 * tokenizer_load() reads a path, so the JSON goes through a file in a
 * private temporary folder (created once, removed at exit).
 * Not tokenizer_config.json: its tokens are looked up with the same code.
 */
#define _GNU_SOURCE /* memmem */
#include "worker/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char s_dir[64], s_path[96];

static void s_cleanup(void)
{
	unlink(s_path);
	rmdir(s_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char mark[] = "\n\0TEXT\0\n";
	const uint8_t *text = memmem(data, size, mark, sizeof mark - 1);
	size_t jlen = text ? (size_t)(text - data) : size;
	size_t tlen = text ? size - jlen - (sizeof mark - 1) : 0;
	tokenizer_t *t;
	FILE *f;

	if (!s_dir[0]) {
		snprintf(s_dir, sizeof s_dir, "%s/fuzz-tok.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(s_dir))
			abort();
		snprintf(s_path, sizeof s_path, "%s/tokenizer.json", s_dir);
		atexit(s_cleanup);
	}
	if (!(f = fopen(s_path, "wb")))
		abort();
	fwrite(data, 1, jlen, f);
	fclose(f);
	if (!(t = tokenizer_load(s_path)))
		return 0;
	if (text) {
		int32_t *ids = NULL;
		size_t n = 0;

		text += sizeof mark - 1;
		if (tokenizer_encode(t, (const char *)text, tlen, &ids, &n) == 0) {
			char *back = NULL;
			size_t blen = 0;

			for (size_t i = 0; i < n; i++)
				if (ids[i] < 0 || ids[i] >= tokenizer_vocab_size(t))
					__builtin_trap();
			if (tokenizer_decode(t, ids, n, &back, &blen) != 0)
				__builtin_trap(); /* ids it made itself must decode */
			free(back);
		}
		free(ids);
	}
	tokenizer_destroy(&t);
	return 0;
}
