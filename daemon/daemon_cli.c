/* daemon_cli.c: modulad's options. */
#include "config.h"
#include "daemon/daemon_cli.h"
#include "err.h"
#include "version.h"

#include <getopt.h>
#include <stdio.h>

static const char s_usage[] =
	"usage: modulad --data DIR [--http HOST:PORT] [--broker ENDPOINT]\n"
	"\n"
	"The modula daemon: keeps the registry (DIR/registry.db), the job queue\n"
	"and the artifact store, dispatches jobs to workers over ZeroMQ and\n"
	"serves the HTTP API and the dashboard. Runs in the foreground.\n"
	"\n"
	"options:\n"
	"  -D, --data DIR         data folder (registry, artifacts)\n"
	"  -H, --http HOST:PORT   HTTP API and dashboard (default 127.0.0.1:8600)\n"
	"  -B, --broker ENDPOINT  ZeroMQ endpoint for workers (default tcp://127.0.0.1:8601)\n"
	"  -h, --help             show this help\n"
	"  -V, --version          show the version\n";

int daemon_cli_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'D' },
		{ "http", required_argument, NULL, 'H' },
		{ "broker", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "D:H:B:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			data = optarg;
			break;
		case 'H':
		case 'B':
			break;
		case 'h':
			fputs(s_usage, stdout);
			return 0;
		case 'V':
			version_print(stdout, "modulad");
			return 0;
		default:
			fputs(s_usage, stderr);
			return 2;
		}
	}
	if (!data) {
		fprintf(stderr, "modulad: --data DIR is required (see --help)\n");
		return 2;
	}
	fprintf(stderr, "modulad: the daemon loop is not built yet\n");
	return 1;
}
