/* worker_cli.c: modula-worker's options. */
#include "config.h"
#include "worker/worker_cli.h"
#include "kernels/device.h"
#include "err.h"
#include "version.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char s_usage[] =
	"usage: modula-worker --broker ENDPOINT [--slots N] [--device cpu|cuda|auto]\n"
	"\n"
	"Connects to modulad's broker, takes jobs and runs each one as a child\n"
	"modula-engine process.\n"
	"\n"
	"options:\n"
	"  -b, --broker ENDPOINT  the daemon's ZeroMQ endpoint (tcp://127.0.0.1:8601)\n"
	"  -s, --slots N          jobs run at once (default 1)\n"
	"  -d, --device DEV       cpu, cuda or auto (default auto)\n"
	"  -h, --help             show this help\n"
	"  -V, --version          show the version\n";

int worker_cli_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "broker", required_argument, NULL, 'b' },
		{ "slots", required_argument, NULL, 's' },
		{ "device", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *broker = NULL;
	int c, device = -1;

	while ((c = getopt_long(argc, argv, "b:s:d:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			broker = optarg;
			break;
		case 's':
			break;
		case 'd':
			if (kdevice_parse(optarg, &device) < 0) {
				fprintf(stderr, "modula-worker: %s\n", err_msg());
				return 2;
			}
			break;
		case 'h':
			fputs(s_usage, stdout);
			return 0;
		case 'V':
			version_print(stdout, "modula-worker");
			return 0;
		default:
			fputs(s_usage, stderr);
			return 2;
		}
	}
	if (!broker) {
		fprintf(stderr, "modula-worker: --broker ENDPOINT is required (see --help)\n");
		return 2;
	}
	fprintf(stderr, "modula-worker: the worker loop is not built yet\n");
	return 1;
}
