/* store_tool.c: drives worker/worker_store.c for tests/deploy/store.sh.
 *
 *   store-tool put CACHE URL FILE         upload FILE under its sha256
 *   store-tool get CACHE URL SHA DST...   fetch SHA to each DST; prints the
 *                                         number of downloads
 *
 * The backoff starts at 50 ms; every line printed is "ticks N" (the tick
 * hook's calls) then "downloads N". The token is $STORE_TOKEN ("tok" when
 * unset). Not a test by itself.
 */
#include "config.h"
#include "worker/worker_store.h"
#include "err.h"
#include "sha256.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_tick(void *arg)
{
	(*(long *)arg)++;
}

int main(int argc, char **argv)
{
	char sha[SHA256_HEX_LEN + 1];
	const char *token = getenv("STORE_TOKEN") ? getenv("STORE_TOKEN") : "tok";
	wstore_t *s;
	long ticks = 0;
	int rc = 1;

	if (argc < 5 || (strcmp(argv[1], "put") && strcmp(argv[1], "get"))) {
		fprintf(stderr, "usage: store-tool put CACHE URL FILE | get CACHE URL SHA DST...\n");
		return 2;
	}
	if (!(s = wstore_new(argv[2])))
		goto out;
	wstore_set_backoff(s, 50);
	wstore_set_tick(s, s_tick, &ticks);
	if (!strcmp(argv[1], "put")) {
		if (sha256_file(argv[4], sha) < 0 || wstore_put(s, argv[3], token, argv[4], sha) < 0)
			goto out;
	} else {
		for (int i = 5; i < argc; i++)
			if (wstore_get(s, argv[3], token, argv[4], argv[i]) < 0)
				goto out;
	}
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "store-tool: %s\n", err_msg());
	printf("ticks %ld\ndownloads %ld\n", ticks, s ? wstore_downloads(s) : 0);
	wstore_destroy(&s);
	return rc;
}
