/* fuzz_proto.c: libFuzzer target for the worker protocol decoder
 * (lib/proto.h): the input is split into frames and decoded as a ROUTER
 * and as a DEALER would see them; a decoded body must pass proto_check().
 *
 * Input layout: frames separated by the 4 bytes "\xff\xfe\xfd\xfc" (so a
 * seed is readable: "MDL1<sep>READY<sep>{...}"). Not a socket test: the
 * receive path (proto_recv) is covered by tests/e2e/bad_frames.sh.
 */
#define _GNU_SOURCE /* memmem */
#include "proto.h"

#include <stdint.h>
#include <string.h>

#define FUZZ_MAX_FRAMES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t s_sep[4] = { 0xff, 0xfe, 0xfd, 0xfc };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const void *frame[FUZZ_MAX_FRAMES];
	size_t len[FUZZ_MAX_FRAMES];
	int n = 0;
	size_t start = 0;

	for (size_t i = 0; n < FUZZ_MAX_FRAMES; ) {
		const uint8_t *hit = i + 4 <= size ? memmem(data + i, size - i, s_sep, 4) : NULL;
		size_t end = hit ? (size_t)(hit - data) : size;

		frame[n] = data + start;
		len[n++] = end - start;
		if (!hit)
			break;
		start = i = end + 4;
	}
	for (int router = 0; router <= 1; router++) {
		struct proto_msg m = { 0 };

		if (proto_decode(frame, len, n, router, 0, &m) == 0) {
			if (proto_check(m.cmd, m.body) != 0)
				__builtin_trap(); /* decoded but not valid: the two disagree */
			if (!proto_cmd_name(m.cmd))
				__builtin_trap();
		}
		proto_msg_clear(&m);
	}
	return 0;
}
