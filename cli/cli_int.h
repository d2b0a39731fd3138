/* cli_int.h: what the modula command's files share: the options every
 * command sees, the exit codes, the HTTP client (cli/http.c) and the
 * printing helpers (cli/table.c). Private to cli/.
 */
#ifndef MODULA_CLI_INT_H
#define MODULA_CLI_INT_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes (modula --help and docs/cli.md list them). */
enum {
	CLI_OK = 0,
	CLI_ERR = 1,          /* the API refused, or the operation failed */
	CLI_USAGE = 2,        /* bad command line */
	CLI_UNREACHABLE = 3,  /* no daemon answers at --api */
	CLI_AUTH = 4,         /* 401 / 403: no token, a bad one, or too low a role */
	CLI_FAILED = 5,       /* watch: the experiment ended with failed or cancelled jobs */
};

struct cli {
	const char *api;      /* "http://127.0.0.1:8600" (no trailing /) */
	const char *token;    /* may be NULL */
	int json;             /* --json: print the API's JSON */
	FILE *out;
};

/* One API call: `method` on `/api/v1` + `path` (query string included),
 * with `body` (NULL for none). On 2xx returns CLI_OK and *out (may be
 * NULL when not wanted). Otherwise prints the error as the API gives it
 * (or why the daemon is unreachable) to stderr and returns the exit code. */
int cli_call(const struct cli *c, const char *method, const char *path, const cJSON *body, cJSON **out);
/* GET with a printf-made path. */
int cli_get(const struct cli *c, cJSON **out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Download artifact `sha` to `path` (checked against the name). */
int cli_download(const struct cli *c, const char *sha, const char *path);

/* Every job of experiment `exp` (as GET /experiments/ID answers it): the
 * union of its runs' jobs, list items (no spec). */
int cli_experiment_jobs(const struct cli *c, const cJSON *exp, cJSON **jobs);
/* Every job of run `run`'s DAG, in full (GET /jobs/ID): its own jobs and,
 * transitively, the jobs they need (shared ones owned by other runs). */
int cli_run_dag(const struct cli *c, int64_t run, cJSON **jobs);

/* Print `o` as indented JSON on c->out. Returns CLI_OK. */
int cli_print_json(const struct cli *c, const cJSON *o);

/* A number member, or `def`. A string member, or `def`. */
double cli_num(const cJSON *o, const char *key, double def);
const char *cli_str(const cJSON *o, const char *key, const char *def);

/* Tables: columns of text, widths measured, printed aligned. */
typedef struct cli_table cli_table_t;
cli_table_t *cli_table_new(int ncols);
void cli_table_cell(cli_table_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_table_print(cli_table_t *t, FILE *f);
void cli_table_destroy(cli_table_t **t);

/* "1.2k", "3.4M", ... for counts; "1:02:03" for seconds; a time of day
 * for Unix ms. `buf` has at least 32 bytes. */
const char *cli_fmt_count(double v, char *buf);
const char *cli_fmt_secs(double s, char *buf);
const char *cli_fmt_time(double ms, char *buf);

/* Commands: argc/argv start at the command's name. */
int cli_cmd_submit(const struct cli *c, int argc, char **argv);
int cli_cmd_ls(const struct cli *c, int argc, char **argv);
int cli_cmd_show(const struct cli *c, int argc, char **argv);
int cli_cmd_watch(const struct cli *c, int argc, char **argv);
int cli_cmd_logs(const struct cli *c, int argc, char **argv);
int cli_cmd_cancel(const struct cli *c, int argc, char **argv);
int cli_cmd_retry(const struct cli *c, int argc, char **argv);
int cli_cmd_compare(const struct cli *c, int argc, char **argv);
int cli_cmd_workers(const struct cli *c, int argc, char **argv);
int cli_cmd_registry(const struct cli *c, int argc, char **argv);
int cli_cmd_export(const struct cli *c, int argc, char **argv);
int cli_cmd_gc(const struct cli *c, int argc, char **argv);

/* Print "modula CMD: message" to stderr and return CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse a positive id ("12", or with the prefix letter: "r12"). 0 or -1. */
int cli_parse_id(const char *s, char prefix, int64_t *out);

#endif
