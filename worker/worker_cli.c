/* worker_cli.c: modula-worker's command line: options, `keygen`, signals.
 * The worker itself is worker.c. */
#include "config.h"
#include "worker/worker_cli.h"
#include "worker/worker.h"
#include "kernels/device.h"
#include "err.h"
#include "log.h"
#include "proto.h"
#include "version.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
	"usage: modula-worker --broker ENDPOINT [--slots N] [--device cpu|cuda|auto]\n"
	"                     [--work DIR] [--engine PATH] [--id NAME]\n"
	"                     [--curve-server-key KEY|FILE --curve-keys FILE]\n"
	"       modula-worker keygen PREFIX\n"
	"\n"
	"Connects to modulad's broker, takes jobs and runs each one as a child\n"
	"modula-engine process (kinds noop and sleep run in-process). On SIGTERM\n"
	"it stops its engines (they checkpoint), hands the jobs back and exits 0.\n"
	"`keygen` writes a CURVE keypair to PREFIX.key and PREFIX.pub; add the\n"
	"public key to the daemon's DATA/workers.allow.\n"
	"\n"
	"options:\n"
	"  -b, --broker ENDPOINT      the daemon's ZeroMQ endpoint (tcp://127.0.0.1:8601)\n"
	"  -s, --slots N              jobs run at once (default 1)\n"
	"  -d, --device DEV           cpu, cuda or auto (default auto)\n"
	"  -m, --gpu-mem MB           device memory to announce (default: unknown)\n"
	"  -w, --work DIR             job folders and the artifact cache\n"
	"                             (default $TMPDIR/modula-worker-ID)\n"
	"  -e, --engine PATH          modula-engine (default: next to modula-worker)\n"
	"  -i, --id NAME              this worker's name (default HOST-PID)\n"
	"  -k, --curve-server-key K   the daemon's public key (z85, or its .pub file)\n"
	"  -K, --curve-keys FILE      this worker's key file (from keygen)\n"
	"  -l, --log-level LEVEL      debug, info, warn or error (default info)\n"
	"  -h, --help                 show this help\n"
	"  -V, --version              show the version\n";

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
	(void)sig;
	s_stop = 1;
}

static int s_long(const char *s, long lo, long hi, long *out)
{
	char *end;

	*out = strtol(s, &end, 10);
	if (!*s || *end || *out < lo || *out > hi)
		return err_set("'%s' is not a number in [%ld, %ld]", s, lo, hi);
	return 0;
}

static int s_keygen(int argc, char **argv)
{
	if (argc != 3) {
		fputs("usage: modula-worker keygen PREFIX\n", stderr);
		return 2;
	}
	if (proto_keygen(argv[2]) < 0) {
		fprintf(stderr, "modula-worker: %s\n", err_msg());
		return 1;
	}
	printf("wrote %s.key (secret, keep it here) and %s.pub (add it to the daemon's "
	       "workers.allow)\n", argv[2], argv[2]);
	return 0;
}

int worker_cli_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "broker", required_argument, NULL, 'b' },
		{ "slots", required_argument, NULL, 's' },
		{ "device", required_argument, NULL, 'd' },
		{ "gpu-mem", required_argument, NULL, 'm' },
		{ "work", required_argument, NULL, 'w' },
		{ "engine", required_argument, NULL, 'e' },
		{ "id", required_argument, NULL, 'i' },
		{ "curve-server-key", required_argument, NULL, 'k' },
		{ "curve-keys", required_argument, NULL, 'K' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct worker_opts o = { .slots = 1, .device = -1 };
	struct sigaction sa;
	enum log_level level;
	worker_t *w;
	long v;
	int c, rc;

	if (argc >= 2 && !strcmp(argv[1], "keygen"))
		return s_keygen(argc, argv);
	/* Engines inherit this: OpenMP's default spinning wait makes them
	 * many times slower on shared cores (docs/engine.md). A value the
	 * user set is kept. */
	setenv("OMP_WAIT_POLICY", "passive", 0);
	while ((c = getopt_long(argc, argv, "b:s:d:m:w:e:i:k:K:l:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			o.broker = optarg;
			break;
		case 's':
			if (s_long(optarg, 1, 1024, &v) < 0)
				goto bad;
			o.slots = (int)v;
			break;
		case 'd':
			if (kdevice_parse(optarg, &o.device) < 0)
				goto bad;
			break;
		case 'm':
			if (s_long(optarg, 0, 1L << 30, &o.gpu_mem_mb) < 0)
				goto bad;
			break;
		case 'w':
			o.work_dir = optarg;
			break;
		case 'e':
			o.engine = optarg;
			break;
		case 'i':
			if (!*optarg || strlen(optarg) > 64 || strpbrk(optarg, "/ \t\n")) {
				err_set("bad --id '%s' (1 to 64 characters, no '/' or spaces)", optarg);
				goto bad;
			}
			o.id = optarg;
			break;
		case 'k':
			o.curve_server_key = optarg;
			break;
		case 'K':
			o.curve_keys = optarg;
			break;
		case 'l':
			if (log_parse_level(optarg, &level) < 0)
				goto bad;
			log_set_level(level);
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
	if (!o.broker || optind != argc) {
		fprintf(stderr, "modula-worker: --broker ENDPOINT is required, and nothing else "
			"(see --help)\n");
		return 2;
	}
	log_set_ident("modula-worker");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = s_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	w = worker_new(&o);
	if (!w) {
		fprintf(stderr, "modula-worker: %s\n", err_msg());
		return 1;
	}
	rc = worker_run(w, &s_stop);
	if (rc < 0)
		fprintf(stderr, "modula-worker: %s\n", err_msg());
	worker_destroy(&w);
	return rc < 0 ? 1 : 0;
bad:
	fprintf(stderr, "modula-worker: %s\n", err_msg());
	return 2;
}
