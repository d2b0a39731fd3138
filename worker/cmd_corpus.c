/* cmd_corpus.c: `modula-engine corpus`, the command line over
 * corpus_build(). Parses options and reports; the work is in corpus.c. */
#include "worker/corpus.h"
#include "worker/suite.h"
#include "err.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
	"usage: modula-engine corpus --out FILE [--source DIR] [--holdout FILE2]\n"
	"                            [--holdout-frac F] [--seed S]\n"
	"\n"
	"Build the pretraining text of the embedded default from Debian's fortunes\n"
	"(apt-get install fortunes): FILE (training text), FILE2 (held-out text)\n"
	"and FILE.manifest.json. See docs/suite.md.\n"
	"\n"
	"  --out FILE         training text\n"
	"  --source DIR       fortune files (default " CORPUS_DEFAULT_SOURCE ")\n"
	"  --holdout FILE2    held-out text (default FILE.holdout)\n"
	"  --holdout-frac F   share of the records held out, 0 to 0.5 (default 0.05)\n"
	"  --seed S           shuffle seed, 0 to 2^53 (default 1)\n";

int cmd_corpus(int argc, char **argv)
{
	struct corpus_opts o = { CORPUS_DEFAULT_SOURCE, NULL, NULL, 0.05, 1 };
	char holdout[PATH_MAX], *end;
	long long seed = 1;
	int i;

	for (i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
			fputs(s_usage, stdout);
			return 0;
		}
		if (!strcmp(opt, "--out") && val) {
			o.out = val;
		} else if (!strcmp(opt, "--source") && val) {
			o.source = val;
		} else if (!strcmp(opt, "--holdout") && val) {
			o.holdout = val;
		} else if (!strcmp(opt, "--holdout-frac") && val) {
			o.holdout_frac = strtod(val, &end);
			if (end == val || *end) {
				fprintf(stderr, "modula-engine corpus: bad value '%s' for '--holdout-frac': expected a number\n", val);
				return 2;
			}
		} else if (!strcmp(opt, "--seed")) {
			if (suite_parse_int(opt, val, 0, 1LL << 53, &seed) < 0) {
				fprintf(stderr, "modula-engine corpus: %s\n", err_msg());
				return 2;
			}
			o.seed = (uint64_t)seed;
		} else {
			fprintf(stderr, "modula-engine corpus: unknown option or missing value '%s'\n%s", opt, s_usage);
			return 2;
		}
		i++;
	}
	if (!o.out) {
		fprintf(stderr, "modula-engine corpus: missing '--out FILE'\n%s", s_usage);
		return 2;
	}
	if (!o.holdout) {
		if (snprintf(holdout, sizeof holdout, "%s.holdout", o.out) >= (int)sizeof holdout) {
			fprintf(stderr, "modula-engine corpus: output path too long: '%s'\n", o.out);
			return 2;
		}
		o.holdout = holdout;
	}
	if (corpus_build(&o) < 0) {
		fprintf(stderr, "modula-engine corpus: %s\n", err_msg());
		return 1;
	}
	return 0;
}
