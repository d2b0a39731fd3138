/* cmd_suite.c: `modula-engine suite`, the command line over suite_write().
 * Parses options and reports; the work is in suite.c. */
#include "worker/suite.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_DOMAINS 8

static const char s_usage[] =
	"usage: modula-engine suite --out DIR [--seed S] [--train N] [--test N]\n"
	"                           [--domains NAME[:LEVEL],...] [--level L]\n"
	"\n"
	"Write the embedded multi-domain suite: DIR/<domain>.train.jsonl,\n"
	"DIR/<domain>.test.jsonl and DIR/manifest.json. The same seed gives the\n"
	"same bytes. See docs/suite.md.\n"
	"\n"
	"  --out DIR        output folder (created when missing)\n"
	"  --seed S         random seed, 0 to 2^53 (default 1)\n"
	"  --train N        train records per domain (default 2000)\n"
	"  --test N         test records per domain (default 200)\n"
	"  --domains LIST   comma-separated domains, each with an optional :LEVEL\n"
	"                   (default universal,math,code,logic,units)\n"
	"  --level L        difficulty 1 to 3 of domains without their own (default 2)\n";

/* Split "a,b:3,c" into specs; the names point into `list`, which is modified. */
static int s_parse_domains(char *list, int level, struct suite_domain *out, int *n)
{
	char *item, *colon, *save = NULL;
	long long v;

	*n = 0;
	for (item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		if (*n == S_MAX_DOMAINS)
			return err_set("too many domains in '--domains': at most %d", S_MAX_DOMAINS);
		out[*n].level = level;
		if ((colon = strchr(item, ':'))) {
			*colon = '\0';
			if (suite_parse_int("--domains", colon + 1, 1, SUITE_LEVEL_MAX, &v) < 0)
				return -1;
			out[*n].level = (int)v;
		}
		out[(*n)++].name = item;
	}
	if (*n == 0)
		return err_set("no domain in '--domains'");
	return 0;
}

int cmd_suite(int argc, char **argv)
{
	const char *out = NULL, *domains = "universal,math,code,logic,units";
	long long seed = 1, n_train = 2000, n_test = 200, level = 2;
	struct suite_domain specs[S_MAX_DOMAINS];
	char *list = NULL;
	int i, n, rc = 1;

	for (i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;

		if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
			fputs(s_usage, stdout);
			return 0;
		}
		if (!strcmp(opt, "--out") && val)
			out = val;
		else if (!strcmp(opt, "--domains") && val)
			domains = val;
		else if (!strcmp(opt, "--seed"))
			bad = suite_parse_int(opt, val, 0, 1LL << 53, &seed);
		else if (!strcmp(opt, "--train"))
			bad = suite_parse_int(opt, val, 0, 10000000, &n_train);
		else if (!strcmp(opt, "--test"))
			bad = suite_parse_int(opt, val, 0, 10000000, &n_test);
		else if (!strcmp(opt, "--level"))
			bad = suite_parse_int(opt, val, 1, SUITE_LEVEL_MAX, &level);
		else {
			fprintf(stderr, "modula-engine suite: unknown option or missing value '%s'\n%s", opt, s_usage);
			return 2;
		}
		if (bad < 0) {
			fprintf(stderr, "modula-engine suite: %s\n", err_msg());
			return 2;
		}
		i++;
	}
	if (!out) {
		fprintf(stderr, "modula-engine suite: missing '--out DIR'\n%s", s_usage);
		return 2;
	}
	if (!(list = strdup(domains))) {
		fputs("modula-engine suite: out of memory\n", stderr);
		return 1;
	}
	if (s_parse_domains(list, (int)level, specs, &n) < 0) {
		fprintf(stderr, "modula-engine suite: %s\n", err_msg());
		rc = 2;
	} else if (suite_write(out, (uint64_t)seed, (int)n_train, (int)n_test, specs, n) < 0) {
		fprintf(stderr, "modula-engine suite: %s\n", err_msg());
	} else {
		rc = 0;
	}
	free(list);
	return rc;
}
