/* cli.c: the modula command's dispatcher. */
#include "config.h"
#include "cli/cli.h"
#include "version.h"

#include <stdio.h>
#include <string.h>

static const char s_usage[] =
	"usage: modula [--api URL] COMMAND [ARGS]\n"
	"\n"
	"The modula command line: a client of modulad's HTTP API.\n"
	"\n"
	"options:\n"
	"  --api URL        the daemon's API (default http://127.0.0.1:8600)\n"
	"  -h, --help       show this help\n"
	"  -V, --version    show the version\n";

int cli_main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(s_usage, stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		fputs(s_usage, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		version_print(stdout, "modula");
		return 0;
	}
	fprintf(stderr, "modula: unknown command '%s' (see modula --help)\n", argv[1]);
	return 2;
}
