/* fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (worker/safetensors.h, st_open_mem): any image either is refused or
 * opens with every tensor inside the image, which this target reads whole
 * (ASan catches a read past it) and converts to fp32 when it can.
 * Not the sharded-set loader (st_set_open reads files).
 */
#include "worker/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A private copy, so ASan knows the image's exact end. */
	uint8_t *buf = malloc(size ? size : 1);
	st_file_t *f;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if ((f = st_open_mem(buf, size, "fuzz"))) {
		for (int i = 0; i < st_count(f); i++) {
			const st_tensor_t *t = st_at(f, i);
			const uint8_t *p = t->data;
			volatile uint8_t sum = 0;

			if (p < buf || p + t->nbytes > buf + size)
				__builtin_trap();
			for (size_t k = 0; k < t->nbytes; k++)
				sum ^= p[k];
			if (st_find(f, t->name) != t)
				__builtin_trap();
			if ((t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) &&
			    t->nbytes <= (1u << 20)) {
				float *dst = malloc(t->nbytes / st_dtype_size(t->dtype) * sizeof *dst + 1);

				if (dst)
					st_to_f32(t, dst);
				free(dst);
			}
		}
		st_meta(f, "format");
		st_close(&f);
	}
	free(buf);
	return 0;
}
