/* cmd_ops.c: the commands that change something or fetch files: submit,
 * cancel, retry, gc, export. Each is one or a few API calls; the API
 * decides and its refusals are printed as given.
 * Not here: reading commands (cmd_list.c, cmd_show.c, cmd_compare.c).
 */
#include "config.h"
#include "cli/cli_int.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

int cli_cmd_submit(const struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", 1, NULL, 'n' }, { "watch", 0, NULL, 'w' }, { NULL, 0, NULL, 0 },
	};
	const char *name = NULL;
	cJSON *spec, *body, *out = NULL;
	int ch, watch = 0, rc;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch == 'n')
			name = optarg;
		else if (ch == 'w')
			watch = 1;
		else
			return cli_usage_error("submit", "unknown option '%s'", argv[optind - 1]);
	}
	if (optind + 1 != argc)
		return cli_usage_error("submit", "expected one SPEC.json");
	if (!(spec = jsonu_read_file(argv[optind]))) {
		fprintf(stderr, "modula submit: %s\n", err_msg());
		return CLI_ERR;
	}
	body = cJSON_CreateObject();
	cJSON_AddItemToObject(body, "spec", spec);
	if (name)
		cJSON_AddStringToObject(body, "name", name);
	rc = cli_call(c, "POST", "/experiments", body, &out);
	cJSON_Delete(body);
	if (rc != CLI_OK)
		return rc;
	if (c->json) {
		cli_print_json(c, out);
	} else {
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(out, "counts");
		fprintf(c->out, "experiment %.0f '%s': %.0f runs, %.0f jobs (%.0f cached, %.0f to run)\n",
			cli_num(out, "id", 0), cli_str(out, "name", "?"), cli_num(n, "runs", 0), cli_num(n, "jobs", 0),
			cli_num(n, "cached", 0), cli_num(n, "to_run", 0));
	}
	if (watch) {
		char id[32], *wargv[] = { "watch", id, NULL };
		snprintf(id, sizeof id, "%.0f", cli_num(out, "id", 0));
		optind = 1;
		rc = cli_cmd_watch(c, 2, wargv);
	}
	cJSON_Delete(out);
	return rc;
}

/* POST /jobs/ID/ACTION for each id; the first failure's code is kept. */
static int s_each_job(const struct cli *c, const char *action, int64_t *ids, size_t n)
{
	int rc = CLI_OK;

	for (size_t i = 0; i < n; i++) {
		char path[64];
		cJSON *out = NULL;
		int r;
		snprintf(path, sizeof path, "/jobs/%lld/%s", (long long)ids[i], action);
		r = cli_call(c, "POST", path, NULL, &out);
		if (r == CLI_OK && !c->json)
			fprintf(c->out, "job %lld: %s\n", (long long)ids[i], cli_str(out, "state", "?"));
		else if (r == CLI_OK)
			cli_print_json(c, out);
		if (r != CLI_OK && rc == CLI_OK)
			rc = r;
		cJSON_Delete(out);
		if (r == CLI_UNREACHABLE || r == CLI_AUTH)
			break;
	}
	return rc;
}

static int s_job_ids(const char *cmd, int argc, char **argv, int64_t **ids)
{
	if (argc < 1)
		return cli_usage_error(cmd, "expected job ids");
	*ids = calloc((size_t)argc, sizeof **ids);
	for (int i = 0; i < argc; i++)
		if (cli_parse_id(argv[i], 0, &(*ids)[i]) < 0) {
			free(*ids);
			return cli_usage_error(cmd, "'%s' is not a job id", argv[i]);
		}
	return CLI_OK;
}

/* cancel --experiment E: every job of it that has not ended; a cancel
 * cascades to dependents, so each job's state is read just before. */
static int s_cancel_experiment(const struct cli *c, int64_t id)
{
	cJSON *exp = NULL, *jobs = NULL;
	const cJSON *j;
	int rc, n = 0;

	if ((rc = cli_get(c, &exp, "/experiments/%lld", (long long)id)) != CLI_OK ||
	    (rc = cli_experiment_jobs(c, exp, &jobs)) != CLI_OK)
		goto out;
	cJSON_ArrayForEach(j, jobs) {
		cJSON *now = NULL;
		const char *st;
		int64_t jid = (int64_t)cli_num(j, "id", 0);
		if ((rc = cli_get(c, &now, "/jobs/%lld", (long long)jid)) != CLI_OK)
			goto out;
		st = cli_str(now, "state", "");
		if (strcmp(st, "succeeded") && strcmp(st, "failed") && strcmp(st, "cancelled")) {
			rc = s_each_job(c, "cancel", &jid, 1);
			n++;
		}
		cJSON_Delete(now);
		if (rc != CLI_OK)
			goto out;
	}
	if (!c->json)
		fprintf(c->out, "experiment %lld: %d job%s cancelled\n", (long long)id, n, n == 1 ? "" : "s");
out:
	cJSON_Delete(exp);
	cJSON_Delete(jobs);
	return rc;
}

int cli_cmd_cancel(const struct cli *c, int argc, char **argv)
{
	int64_t *ids = NULL, id;
	int rc;

	if (argc == 3 && !strcmp(argv[1], "--experiment")) {
		if (cli_parse_id(argv[2], 'e', &id) < 0)
			return cli_usage_error("cancel", "'%s' is not an experiment id", argv[2]);
		return s_cancel_experiment(c, id);
	}
	if ((rc = s_job_ids("cancel", argc - 1, argv + 1, &ids)) != CLI_OK)
		return rc;
	rc = s_each_job(c, "cancel", ids, (size_t)argc - 1);
	free(ids);
	return rc;
}

int cli_cmd_retry(const struct cli *c, int argc, char **argv)
{
	int64_t *ids = NULL;
	int rc;

	if ((rc = s_job_ids("retry", argc - 1, argv + 1, &ids)) != CLI_OK)
		return rc;
	rc = s_each_job(c, "retry", ids, (size_t)argc - 1);
	free(ids);
	return rc;
}

int cli_cmd_gc(const struct cli *c, int argc, char **argv)
{
	cJSON *body = cJSON_CreateObject(), *out = NULL;
	char buf[32];
	int rc;

	if (argc == 3 && !strcmp(argv[1], "--min-age") && atof(argv[2]) >= 0 && argv[2][0] >= '0' &&
	    argv[2][0] <= '9') {
		cJSON_AddNumberToObject(body, "min_age_s", (double)atoll(argv[2]));
	} else if (argc != 1) {
		cJSON_Delete(body);
		return cli_usage_error("gc", "expected [--min-age SECONDS]");
	}
	rc = cli_call(c, "POST", "/artifacts/gc", body, &out);
	cJSON_Delete(body);
	if (rc == CLI_OK && c->json)
		cli_print_json(c, out);
	else if (rc == CLI_OK)
		fprintf(c->out, "removed %.0f artifacts (%s bytes)\n", cli_num(out, "removed", 0),
			cli_fmt_count(cli_num(out, "bytes", 0), buf));
	cJSON_Delete(out);
	return rc;
}

/* export JOB|rRUN --out DIR [--only NAME]: every output of the job (or of
 * every job of the run's DAG) into DIR/<kind>[-<domain>]-<job>/<name>,
 * plus DIR/manifest.json naming each file, its job and sha256. */
int cli_cmd_export(const struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", 1, NULL, 'o' }, { "only", 1, NULL, 'n' }, { NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *only = NULL;
	cJSON *jobs = NULL, *manifest = cJSON_CreateArray(), *job;
	const cJSON *j, *o;
	int64_t id;
	int ch, rc = CLI_OK, files = 0;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch == 'o')
			dir = optarg;
		else if (ch == 'n')
			only = optarg;
		else
			rc = cli_usage_error("export", "unknown option '%s'", argv[optind - 1]);
	}
	if (rc == CLI_OK && (!dir || optind + 1 != argc || cli_parse_id(argv[optind], 'r', &id) < 0))
		rc = cli_usage_error("export", "expected JOB or rRUN and --out DIR");
	if (rc != CLI_OK)
		goto out;
	if (argv[optind][0] == 'r') {
		rc = cli_run_dag(c, id, &jobs);
	} else {
		jobs = cJSON_CreateArray();
		if ((rc = cli_get(c, &job, "/jobs/%lld", (long long)id)) == CLI_OK)
			cJSON_AddItemToArray(jobs, job);
	}
	if (rc != CLI_OK)
		goto out;
	cJSON_ArrayForEach(j, jobs) {
		const char *domain = cli_str(cJSON_GetObjectItemCaseSensitive(j, "spec"), "domain", NULL);
		char sub[4096], file[4200];
		snprintf(sub, sizeof sub, "%s/%s%s%s-%.0f", dir, cli_str(j, "kind", "job"), domain ? "-" : "",
			 domain ? domain : "", cli_num(j, "id", 0));
		cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(j, "outputs")) {
			const char *name = cli_str(o, "name", "output"), *sha = cli_str(o, "sha256", "");
			cJSON *m;
			if ((only && strcmp(only, name) != 0) || strchr(name, '/') || name[0] == '.')
				continue;
			if (fsx_mkdirs(sub, 0755) < 0) {
				fprintf(stderr, "modula export: %s\n", err_msg());
				rc = CLI_ERR;
				goto out;
			}
			snprintf(file, sizeof file, "%s/%s", sub, name);
			if ((rc = cli_download(c, sha, file)) != CLI_OK)
				goto out;
			m = cJSON_CreateObject();
			cJSON_AddNumberToObject(m, "job", cli_num(j, "id", 0));
			cJSON_AddStringToObject(m, "kind", cli_str(j, "kind", "?"));
			if (domain)
				cJSON_AddStringToObject(m, "domain", domain);
			cJSON_AddStringToObject(m, "name", name);
			cJSON_AddStringToObject(m, "sha256", sha);
			cJSON_AddStringToObject(m, "file", file + strlen(dir) + 1);
			cJSON_AddItemToArray(manifest, m);
			files++;
		}
	}
	if (files == 0) {
		fprintf(stderr, "modula export: nothing to export (no outputs%s%s)\n", only ? " named " : "",
			only ? only : "");
		rc = CLI_ERR;
		goto out;
	}
	{
		char path[4200];
		snprintf(path, sizeof path, "%s/manifest.json", dir);
		if (jsonu_write_file(path, manifest) < 0) {
			fprintf(stderr, "modula export: %s\n", err_msg());
			rc = CLI_ERR;
			goto out;
		}
	}
	if (c->json)
		cli_print_json(c, manifest);
	else
		fprintf(c->out, "exported %d file%s to %s (manifest.json lists them)\n", files, files == 1 ? "" : "s",
			dir);
out:
	cJSON_Delete(jobs);
	cJSON_Delete(manifest);
	return rc;
}
