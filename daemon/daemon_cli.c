/* daemon_cli.c: modulad's command line: run the daemon (the default),
 * `token create` and `keygen`. Parsing and signals only; daemon.c runs. */
#include "config.h"
#include "daemon/daemon_cli.h"
#include "daemon/auth.h"
#include "daemon/daemon.h"
#include "err.h"
#include "log.h"
#include "mtime.h"
#include "proto.h"
#include "version.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
	"usage: modulad --data DIR [--http HOST:PORT] [--broker ENDPOINT] [--web DIR]\n"
	"               [--log FILE] [--log-level LEVEL] [--curve-secret FILE --curve-allow FILE]\n"
	"       modulad token create --data DIR --role operator|viewer|worker [--note TEXT]\n"
	"       modulad token revoke --data DIR --note TEXT\n"
	"       modulad keygen PREFIX\n"
	"\n"
	"The modula daemon: keeps the registry (DIR/registry.db), the job queue\n"
	"and the artifact store (DIR/artifacts), dispatches jobs to workers over\n"
	"ZeroMQ and serves the HTTP API (docs/api.md) and the dashboard. Runs in\n"
	"the foreground; SIGINT or SIGTERM stop it cleanly.\n"
	"\n"
	"options:\n"
	"  -D, --data DIR         data folder (created when absent)\n"
	"  -H, --http HOST:PORT   HTTP API and dashboard (default " DAEMON_HTTP_DEFAULT ");\n"
	"                         reads need a viewer token when HOST is not loopback\n"
	"  -B, --broker ENDPOINT  ZeroMQ endpoint for workers (default " DAEMON_BROKER_DEFAULT ")\n"
	"  -W, --web DIR          dashboard files (default: the installed ones)\n"
	"  -L, --log FILE         append the log to FILE instead of stderr\n"
	"  -l, --log-level LEVEL  debug, info (default), warn, error or off\n"
	"      --curve-secret F   broker CURVE secret key (from `modulad keygen`)\n"
	"      --curve-allow F    allowed worker public keys, one per line\n"
	"  -h, --help             show this help\n"
	"  -V, --version          show the version\n"
	"\n"
	"token create prints a new API token once (the registry keeps its hash):\n"
	"operator tokens may submit, cancel and retry; viewer tokens may read.\n"
	"token revoke deletes every token created with that --note (rotate: create\n"
	"the new token with a new note, hand it out, revoke the old note).\n"
	"keygen writes a CURVE keypair to PREFIX.key and PREFIX.pub.\n";

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
	(void)sig;
	s_stop = 1;
}

static int s_usage_error(const char *msg)
{
	fprintf(stderr, "modulad: %s (see --help)\n", msg);
	return 2;
}

/* modulad token create --data DIR --role R [--note TEXT]
 * modulad token revoke --data DIR --note TEXT */
static int s_token(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'D' },
		{ "role", required_argument, NULL, 'r' },
		{ "note", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = NULL, *role_name = NULL, *note = NULL;
	char db[PATH_MAX], token[AUTH_TOKEN_LEN + 1];
	enum auth_role role;
	registry_t *r;
	int c, rc, revoke;

	if (argc < 2 || (strcmp(argv[1], "create") != 0 && strcmp(argv[1], "revoke") != 0))
		return s_usage_error("expected 'token create' or 'token revoke'");
	revoke = strcmp(argv[1], "revoke") == 0;
	optind = 2;
	while ((c = getopt_long(argc, argv, "D:r:n:", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			data = optarg;
			break;
		case 'r':
			role_name = optarg;
			break;
		case 'n':
			note = optarg;
			break;
		default:
			return s_usage_error("bad option to 'token'");
		}
	}
	if (revoke && (!data || !note || role_name))
		return s_usage_error("token revoke needs --data DIR and --note TEXT (and no --role)");
	if (!revoke && (!data || !role_name))
		return s_usage_error("token create needs --data DIR and --role operator|viewer|worker");
	if (!revoke && auth_role_parse(role_name, &role) < 0)
		return s_usage_error(err_msg());
	if ((size_t)snprintf(db, sizeof db, "%s/registry.db", data) >= sizeof db)
		return s_usage_error("data folder path too long");
	if (!(r = registry_open(db))) {
		fprintf(stderr, "modulad: %s\n", err_msg());
		return 1;
	}
	if (revoke) {
		rc = auth_token_revoke_note(r, note);
		if (rc == 0)
			printf("revoked %d token(s) noted '%s'\n", sqlite3_changes(registry_db(r)), note);
	} else {
		rc = auth_token_create(r, role, note ? note : "modulad token create", mtime_wall_ms(), token);
		if (rc == 0)
			printf("%s\n", token);
	}
	registry_close(&r);
	if (rc < 0) {
		fprintf(stderr, "modulad: %s\n", err_msg());
		return 1;
	}
	return 0;
}

static int s_keygen(int argc, char **argv)
{
	if (argc != 2)
		return s_usage_error("keygen needs one PREFIX");
	if (proto_keygen(argv[1]) < 0) {
		fprintf(stderr, "modulad: %s\n", err_msg());
		return 1;
	}
	printf("wrote %s.key (secret, keep it here) and %s.pub\n", argv[1], argv[1]);
	return 0;
}

int daemon_cli_main(int argc, char **argv)
{
	enum { OPT_CURVE_SECRET = 256, OPT_CURVE_ALLOW };
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'D' },
		{ "http", required_argument, NULL, 'H' },
		{ "broker", required_argument, NULL, 'B' },
		{ "web", required_argument, NULL, 'W' },
		{ "log", required_argument, NULL, 'L' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "curve-secret", required_argument, NULL, OPT_CURVE_SECRET },
		{ "curve-allow", required_argument, NULL, OPT_CURVE_ALLOW },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_opts o = { 0 };
	struct sigaction sa;
	enum log_level level;
	int c;

	if (argc > 1 && strcmp(argv[1], "token") == 0)
		return s_token(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "keygen") == 0)
		return s_keygen(argc - 1, argv + 1);
	while ((c = getopt_long(argc, argv, "D:H:B:W:L:l:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			o.data_dir = optarg;
			break;
		case 'H':
			o.http = optarg;
			break;
		case 'B':
			o.broker = optarg;
			break;
		case 'W':
			o.web_dir = optarg;
			break;
		case 'L':
			if (log_open(optarg) < 0) {
				fprintf(stderr, "modulad: %s\n", err_msg());
				return 1;
			}
			break;
		case 'l':
			if (log_parse_level(optarg, &level) < 0)
				return s_usage_error(err_msg());
			log_set_level(level);
			break;
		case OPT_CURVE_SECRET:
			o.curve_secret = optarg;
			break;
		case OPT_CURVE_ALLOW:
			o.curve_allow = optarg;
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
	if (optind < argc)
		return s_usage_error("unexpected argument");
	if (!o.data_dir)
		return s_usage_error("--data DIR is required");
	if (!o.curve_secret != !o.curve_allow)
		return s_usage_error("--curve-secret and --curve-allow go together");
	log_set_ident("modulad");
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = s_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (daemon_run(&o, &s_stop) < 0) {
		log_error("%s", err_msg());
		return 1;
	}
	return 0;
}
