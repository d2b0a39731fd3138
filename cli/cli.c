/* cli.c: the modula command's dispatcher: global options (--api, --token,
 * --json, anywhere on the line), the token's sources, the usage text with
 * the exit codes, and the table of commands. Each command is in its own
 * file (cli/cmd_*.c). Not here: HTTP (cli/http.c), printing (cli/table.c).
 */
#include "config.h"
#include "cli/cli.h"
#include "cli/cli_int.h"
#include "fsx.h"
#include "version.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
	"usage: modula [--api URL] [--token T] [--json] COMMAND [ARGS]\n"
	"\n"
	"The modula command line: a client of modulad's HTTP API (docs/cli.md).\n"
	"\n"
	"commands:\n"
	"  submit SPEC.json [--name N] [--watch]   check, expand and queue an experiment spec\n"
	"  ls [experiments|runs|jobs] [filters]    list (--experiment E --run R --state S --kind K\n"
	"                                          --method M --limit N --after ID --desc)\n"
	"  show [experiment|run|job] ID            one experiment (the default), run or job\n"
	"  watch EXPERIMENT [--interval S]         live progress per job until the experiment ends\n"
	"  logs JOB                                the job's events, error and metric series\n"
	"  cancel JOB... | --experiment E          cancel jobs (and what depends on them)\n"
	"  retry JOB...                            send failed or cancelled jobs back to the queue\n"
	"  compare EXPERIMENT|rRUN... [--metric M] per-domain table, mean ± std over seeds, cost,\n"
	"                                          MoDULA-Res vs -Flan\n"
	"  workers                                 the workers and their jobs\n"
	"  models|experts|routers|datasets         registry listings (same filters as ls)\n"
	"  export JOB|rRUN --out DIR [--only NAME] download a job's or a run's artifacts\n"
	"  gc [--min-age SECONDS]                  remove unreferenced artifacts\n"
	"\n"
	"options:\n"
	"  --api URL        the daemon (default $MODULA_API, else http://127.0.0.1:8600)\n"
	"  --token T        an API token (default $MODULA_TOKEN, else the file named by\n"
	"                   --token-file F, $MODULA_TOKEN_FILE or ~/.config/modula/token)\n"
	"  --json           print the API's JSON instead of tables (every reading command)\n"
	"  -h, --help       show this help\n"
	"  -V, --version    show the version\n"
	"\n"
	"exit status:\n"
	"  0  done\n"
	"  1  the API refused (its message is printed) or the operation failed\n"
	"  2  bad usage\n"
	"  3  the daemon cannot be reached\n"
	"  4  not authorized (no token, an unknown one, or too low a role)\n"
	"  5  watch: the experiment ended with failed or cancelled jobs\n";

struct command {
	const char *name;
	int (*fn)(const struct cli *c, int argc, char **argv);
};

static const struct command s_commands[] = {
	{ "submit", cli_cmd_submit },   { "ls", cli_cmd_ls },         { "list", cli_cmd_ls },
	{ "show", cli_cmd_show },       { "watch", cli_cmd_watch },   { "logs", cli_cmd_logs },
	{ "cancel", cli_cmd_cancel },   { "retry", cli_cmd_retry },   { "compare", cli_cmd_compare },
	{ "workers", cli_cmd_workers }, { "models", cli_cmd_registry }, { "experts", cli_cmd_registry },
	{ "routers", cli_cmd_registry }, { "datasets", cli_cmd_registry }, { "export", cli_cmd_export },
	{ "gc", cli_cmd_gc },
};

/* The token file's first line, in `buf`; NULL when there is none. */
static const char *s_token_file(const char *path, char *buf, size_t len)
{
	char home[1024], *text = NULL;
	size_t n = 0;

	if (!path) {
		const char *h = getenv("HOME");
		if (!h)
			return NULL;
		snprintf(home, sizeof home, "%s/.config/modula/token", h);
		path = home;
	}
	if (fsx_read_all(path, &text, &n) < 0)
		return NULL;
	snprintf(buf, len, "%s", text);
	free(text);
	buf[strcspn(buf, "\r\n")] = 0;
	return buf[0] ? buf : NULL;
}

int cli_main(int argc, char **argv)
{
	struct cli c = { getenv("MODULA_API"), getenv("MODULA_TOKEN"), 0, stdout };
	const char *token_file = getenv("MODULA_TOKEN_FILE");
	char api[1024], tokbuf[512];
	int n = 1, rc;

	/* Global options may come anywhere before "--": take them out. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			while (i < argc)
				argv[n++] = argv[i++];
			break;
		}
		if (strcmp(a, "--json") == 0) {
			c.json = 1;
		} else if (!strcmp(a, "--api") || !strcmp(a, "--token") || !strcmp(a, "--token-file")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "modula: %s needs a value (see modula --help)\n", a);
				return CLI_USAGE;
			}
			if (!strcmp(a, "--api"))
				c.api = argv[++i];
			else if (!strcmp(a, "--token"))
				c.token = argv[++i];
			else
				token_file = argv[++i];
		} else {
			argv[n++] = argv[i];
		}
	}
	argc = n;
	if (argc < 2) {
		fputs(s_usage, stderr);
		return CLI_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		fputs(s_usage, stdout);
		return CLI_OK;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		version_print(stdout, "modula");
		return CLI_OK;
	}
	snprintf(api, sizeof api, "%s", c.api && c.api[0] ? c.api : "http://127.0.0.1:8600");
	while (strlen(api) > 0 && api[strlen(api) - 1] == '/')
		api[strlen(api) - 1] = 0;
	c.api = api;
	if (!c.token || !c.token[0])
		c.token = s_token_file(token_file, tokbuf, sizeof tokbuf);
	for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++) {
		if (strcmp(s_commands[i].name, argv[1]) != 0)
			continue;
		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = s_commands[i].fn(&c, argc - 1, argv + 1);
		curl_global_cleanup();
		return rc;
	}
	fprintf(stderr, "modula: unknown command '%s' (see modula --help)\n", argv[1]);
	return CLI_USAGE;
}
