/* engine_cli.c: modula-engine's commands. Each command parses its own
 * arguments and calls the engine library; errors are printed here, once. */
#include "config.h"
#include "worker/engine_cli.h"
#include "kernels/device.h"
#include "err.h"
#include "version.h"

#include <stdio.h>
#include <string.h>

static const char s_usage[] =
	"usage: modula-engine COMMAND [ARGS]\n"
	"\n"
	"The native MoDULA train/eval engine: one job in, artifacts and JSON-lines\n"
	"progress out. Usable without a daemon.\n"
	"\n"
	"commands:\n"
	"  devices              list the compute devices this build can use\n"
	"  help                 show this help\n"
	"\n"
	"options:\n"
	"  -h, --help           show this help\n"
	"  -V, --version        show the version and the backends built in\n";

static int s_devices(void)
{
	char buf[1024];

	kdevice_describe(buf, sizeof buf);
	fputs(buf, stdout);
	return 0;
}

int engine_cli_main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		fputs(s_usage, stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		fputs(s_usage, stdout);
		return 0;
	}
	if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
		version_print(stdout, "modula-engine");
		return 0;
	}
	if (!strcmp(cmd, "devices"))
		return s_devices();
	fprintf(stderr, "modula-engine: unknown command '%s' (see modula-engine --help)\n", cmd);
	return 2;
}
