/* cmd_list.c: the listing commands: ls (experiments, runs, jobs), workers,
 * models / experts / routers / datasets, and logs (a job's events and
 * metric series). One column-spec printer serves them all; filters and
 * paging are the API's (docs/api.md, "Lists and paging").
 * Not here: single objects (cmd_show.c), compare (cmd_compare.c).
 */
#include "config.h"
#include "cli/cli_int.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

struct column {
	const char *header;
	const char *key;
	char how;   /* 's' string, 'n' number, 't' time (Unix ms), 'j' JSON, 'c' count */
};

static void s_cell(cli_table_t *t, const cJSON *row, const struct column *col)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, col->key);
	char buf[32], *s;

	if (!v || cJSON_IsNull(v)) {
		cli_table_cell(t, "-");
	} else if (col->how == 't' && cJSON_IsNumber(v)) {
		cli_table_cell(t, "%s", cli_fmt_time(v->valuedouble, buf));
	} else if (col->how == 'c' && cJSON_IsNumber(v)) {
		cli_table_cell(t, "%s", cli_fmt_count(v->valuedouble, buf));
	} else if (cJSON_IsNumber(v)) {
		cli_table_cell(t, "%.10g", v->valuedouble);
	} else if (cJSON_IsString(v)) {
		cli_table_cell(t, "%.60s", v->valuestring);
	} else if (cJSON_IsBool(v)) {
		cli_table_cell(t, "%s", cJSON_IsTrue(v) ? "yes" : "no");
	} else {
		s = cJSON_PrintUnformatted(v);
		cli_table_cell(t, "%.80s", s ? s : "?");
		free(s);
	}
}

/* Print `items` with `cols` (NULL-header terminated). */
static void s_print_rows(const struct cli *c, const cJSON *items, const struct column *cols)
{
	cli_table_t *t;
	const cJSON *row;
	int n = 0;

	while (cols[n].header)
		n++;
	if (!(t = cli_table_new(n)))
		return;
	for (int i = 0; i < n; i++)
		cli_table_cell(t, "%s", cols[i].header);
	cJSON_ArrayForEach(row, items)
		for (int i = 0; i < n; i++)
			s_cell(t, row, &cols[i]);
	cli_table_print(t, c->out);
	cli_table_destroy(&t);
}

/* GET `path` and print its items (and how to get the next page). */
static int s_list(const struct cli *c, const char *path, const struct column *cols, const char *again)
{
	cJSON *o;
	const cJSON *next;
	int rc = cli_call(c, "GET", path, NULL, &o);

	if (rc != CLI_OK)
		return rc;
	if (c->json)
		return cli_print_json(c, o), cJSON_Delete(o), CLI_OK;
	s_print_rows(c, cJSON_GetObjectItemCaseSensitive(o, "items"), cols);
	next = cJSON_GetObjectItemCaseSensitive(o, "next");
	if (cJSON_IsNumber(next) && again)
		fprintf(c->out, "(more: %s --after %.0f)\n", again, next->valuedouble);
	cJSON_Delete(o);
	return CLI_OK;
}

static const struct column s_exp_cols[] = {
	{ "ID", "id", 'n' }, { "NAME", "name", 's' }, { "CREATED", "created_ms", 't' }, { NULL, NULL, 0 },
};
static const struct column s_run_cols[] = {
	{ "ID", "id", 'n' }, { "EXP", "experiment", 'n' }, { "METHOD", "method", 's' }, { "SEED", "seed", 'n' },
	{ "PARAMS", "params", 'j' }, { NULL, NULL, 0 },
};
static const struct column s_job_cols[] = {
	{ "ID", "id", 'n' },         { "RUN", "run", 'n' },        { "KIND", "kind", 's' },
	{ "STATE", "state", 's' },   { "TRIES", "attempts", 'n' }, { "WORKER", "worker", 's' },
	{ "CACHED", "cached_from", 'n' }, { "FINISHED", "finished_ms", 't' }, { "ERROR", "error", 's' },
	{ NULL, NULL, 0 },
};

/* Options shared by the listings: filters become query parameters. */
static int s_query(const char *cmd, int argc, char **argv, char *q, size_t qlen, char *again, size_t alen)
{
	static const struct option opts[] = {
		{ "experiment", 1, NULL, 'e' }, { "run", 1, NULL, 'r' },  { "state", 1, NULL, 's' },
		{ "kind", 1, NULL, 'k' },       { "method", 1, NULL, 'm' }, { "seed", 1, NULL, 'S' },
		{ "worker", 1, NULL, 'w' },     { "name", 1, NULL, 'n' }, { "role", 1, NULL, 'R' },
		{ "domain", 1, NULL, 'd' },     { "split", 1, NULL, 'p' }, { "job", 1, NULL, 'j' },
		{ "limit", 1, NULL, 'l' },      { "after", 1, NULL, 'a' }, { "desc", 0, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	size_t n = 0, an = strlen(again);
	int ch;

	q[0] = 0;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *name = NULL;
		for (const struct option *o = opts; o->name; o++)
			if (o->val == ch)
				name = o->name;
		if (!name)
			return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		if (strcmp(name, "desc") == 0) {
			n += (size_t)snprintf(q + n, n < qlen ? qlen - n : 0, "%sorder=desc", n ? "&" : "?");
			an += (size_t)snprintf(again + an, an < alen ? alen - an : 0, " --desc");
			continue;
		}
		n += (size_t)snprintf(q + n, n < qlen ? qlen - n : 0, "%s%s=", n ? "&" : "?", name);
		for (const char *v = optarg; *v && n + 4 < qlen; v++) {
			if ((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9') ||
			    strchr("-_.~", *v))
				q[n++] = *v;
			else
				n += (size_t)snprintf(q + n, qlen - n, "%%%02X", (unsigned char)*v);
		}
		q[n < qlen ? n : qlen - 1] = 0;
		if (strcmp(name, "after") != 0)
			an += (size_t)snprintf(again + an, an < alen ? alen - an : 0, " --%s %s", name, optarg);
	}
	if (n >= qlen)
		return cli_usage_error(cmd, "filters too long");
	return CLI_OK;
}

int cli_cmd_ls(const struct cli *c, int argc, char **argv)
{
	const char *what = "experiments";
	char q[1024], path[1200], again[1024];
	const struct column *cols = s_exp_cols;
	int rc;

	if (argc > 1 && argv[1][0] != '-') {
		what = argv[1];
		argc--;
		argv++;
	}
	if (!strcmp(what, "runs"))
		cols = s_run_cols;
	else if (!strcmp(what, "jobs"))
		cols = s_job_cols;
	else if (strcmp(what, "experiments") != 0)
		return cli_usage_error("ls", "expected experiments, runs or jobs, got '%s'", what);
	snprintf(again, sizeof again, "modula ls %s", what);
	if ((rc = s_query("ls", argc, argv, q, sizeof q, again, sizeof again)) != CLI_OK)
		return rc;
	if (optind < argc)
		return cli_usage_error("ls", "unexpected argument '%s'", argv[optind]);
	snprintf(path, sizeof path, "/%s%s", what, q);
	return s_list(c, path, cols, again);
}

int cli_cmd_registry(const struct cli *c, int argc, char **argv)
{
	static const struct column models[] = {
		{ "ID", "id", 'n' }, { "NAME", "name", 's' }, { "ARTIFACT", "artifact", 's' },
		{ "CONFIG", "config", 'j' }, { NULL, NULL, 0 },
	};
	static const struct column experts[] = {
		{ "ID", "id", 'n' }, { "NAME", "name", 's' }, { "ROLE", "role", 's' }, { "DOMAIN", "domain", 's' },
		{ "RANK", "rank", 'n' }, { "JOB", "job", 'n' }, { "ARTIFACT", "artifact", 's' }, { NULL, NULL, 0 },
	};
	static const struct column routers[] = {
		{ "ID", "id", 'n' }, { "NAME", "name", 's' }, { "KIND", "kind", 's' }, { "JOB", "job", 'n' },
		{ "ARTIFACT", "artifact", 's' }, { NULL, NULL, 0 },
	};
	static const struct column datasets[] = {
		{ "ID", "id", 'n' }, { "NAME", "name", 's' }, { "DOMAIN", "domain", 's' }, { "SPLIT", "split", 's' },
		{ "ROWS", "rows", 'c' }, { "ARTIFACT", "artifact", 's' }, { NULL, NULL, 0 },
	};
	const struct column *cols = !strcmp(argv[0], "models") ? models : !strcmp(argv[0], "experts") ? experts
				    : !strcmp(argv[0], "routers") ? routers : datasets;
	char q[1024], path[1200], again[1024];
	int rc;

	snprintf(again, sizeof again, "modula %s", argv[0]);
	if ((rc = s_query(argv[0], argc, argv, q, sizeof q, again, sizeof again)) != CLI_OK)
		return rc;
	if (optind < argc)
		return cli_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
	snprintf(path, sizeof path, "/%s%s", argv[0], q);
	return s_list(c, path, cols, again);
}

int cli_cmd_workers(const struct cli *c, int argc, char **argv)
{
	static const struct column cols[] = {
		{ "ID", "id", 's' },    { "HOST", "host", 's' }, { "BACKEND", "backend", 's' },
		{ "GPU MB", "gpu_mem_mb", 'n' }, { "SLOTS", "slots", 'n' }, { "JOBS", "jobs", 'n' },
		{ "STATE", "state", 's' }, { "LAST SEEN", "last_seen", 't' }, { NULL, NULL, 0 },
	};

	if (argc > 1)
		return cli_usage_error("workers", "unexpected argument '%s'", argv[1]);
	return s_list(c, "/workers", cols, NULL);
}

/* logs JOB: its events, its error, and each metric series' last point. */
int cli_cmd_logs(const struct cli *c, int argc, char **argv)
{
	static const struct column ev_cols[] = {
		{ "TIME", "t_ms", 't' }, { "EVENT", "kind", 's' }, { "BY", "actor", 's' }, { "DETAIL", "detail", 'j' },
		{ NULL, NULL, 0 },
	};
	cJSON *job = NULL, *ev = NULL, *keys = NULL, *all = NULL;
	const cJSON *k;
	int64_t id;
	int rc;

	if (argc != 2 || cli_parse_id(argv[1], 0, &id) < 0)
		return cli_usage_error("logs", "expected one job id");
	if ((rc = cli_get(c, &job, "/jobs/%lld", (long long)id)) != CLI_OK ||
	    (rc = cli_get(c, &ev, "/events?job=%lld&limit=1000", (long long)id)) != CLI_OK ||
	    (rc = cli_get(c, &keys, "/jobs/%lld/metrics", (long long)id)) != CLI_OK)
		goto out;
	if (c->json) {
		all = cJSON_CreateObject();
		cJSON_AddItemReferenceToObject(all, "job", job);
		cJSON_AddItemReferenceToObject(all, "events", cJSON_GetObjectItemCaseSensitive(ev, "items"));
		cJSON_AddItemReferenceToObject(all, "metrics", cJSON_GetObjectItemCaseSensitive(keys, "keys"));
		cli_print_json(c, all);
		goto out;
	}
	fprintf(c->out, "job %lld (%s): %s, attempt %.0f\n", (long long)id, cli_str(job, "kind", "?"),
		cli_str(job, "state", "?"), cli_num(job, "attempts", 0));
	if (cli_str(job, "error", NULL))
		fprintf(c->out, "error: %s\n", cli_str(job, "error", ""));
	s_print_rows(c, cJSON_GetObjectItemCaseSensitive(ev, "items"), ev_cols);
	cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(keys, "keys")) {
		cJSON *pts = NULL;
		const cJSON *last;
		if ((rc = cli_get(c, &pts, "/jobs/%lld/metrics?key=%s&after_step=%.0f", (long long)id,
				  cli_str(k, "key", ""), cli_num(k, "last_step", 0) - 1)) != CLI_OK)
			goto out;
		last = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pts, "points"), 0);
		fprintf(c->out, "metric %-16s %6.0f points, last step %.0f: %.6g\n", cli_str(k, "key", "?"),
			cli_num(k, "points", 0), cli_num(k, "last_step", 0),
			last ? cJSON_GetArrayItem(last, 1)->valuedouble : 0.0);
		cJSON_Delete(pts);
	}
out:
	cJSON_Delete(all);
	cJSON_Delete(job);
	cJSON_Delete(ev);
	cJSON_Delete(keys);
	return rc;
}
