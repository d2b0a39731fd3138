/* cmd_compare.c: `modula compare EXPERIMENT|rRUN ...`: reads the runs, their
 * evaluations and the cost of every job of each run's DAG from the API,
 * then hands them to compare_build() (cli/compare.c, a pure function).
 *
 * Cost of a job: the last point of its "tokens" and "flops" series and
 * finished_ms - started_ms; a job that was a cache hit (cached_from) costs
 * what its source cost, and a cached evaluation job's figures are its
 * source's (the registry keeps evaluations once, under the job that ran).
 * Not here: the arithmetic and the table (compare.c).
 */
#include "config.h"
#include "cli/cli_int.h"
#include "cli/compare.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

/* The last value of series `key` of job `id`; 0 when it has none. */
static int s_last(const struct cli *c, double id, const cJSON *keys, const char *key, double *out)
{
	const cJSON *k, *pt;
	cJSON *pts = NULL;
	int rc;

	*out = 0;
	cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(keys, "keys")) {
		if (strcmp(cli_str(k, "key", ""), key) != 0)
			continue;
		if ((rc = cli_get(c, &pts, "/jobs/%.0f/metrics?key=%s&after_step=%.0f", id, key,
				  cli_num(k, "last_step", 0) - 1)) != CLI_OK)
			return rc;
		pt = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pts, "points"), 0);
		if (pt)
			*out = cJSON_GetArrayItem(pt, 1)->valuedouble;
		cJSON_Delete(pts);
	}
	return CLI_OK;
}

/* One run with its evaluations and cost, as compare_build() reads it. */
static int s_run(const struct cli *c, int64_t id, cJSON *runs)
{
	cJSON *run = NULL, *dag = NULL, *cost, *evals;
	const cJSON *j;
	double tokens = 0, flops = 0, wall = 0;
	int rc;

	if ((rc = cli_get(c, &run, "/runs/%lld", (long long)id)) != CLI_OK ||
	    (rc = cli_run_dag(c, id, &dag)) != CLI_OK)
		goto out;
	evals = cJSON_GetObjectItemCaseSensitive(run, "evaluations");
	cJSON_ArrayForEach(j, dag) {
		const cJSON *from = cJSON_GetObjectItemCaseSensitive(j, "cached_from");
		cJSON *src = NULL, *keys = NULL;
		double sid = cJSON_IsNumber(from) ? from->valuedouble : cli_num(j, "id", 0), v;
		if (cJSON_IsNumber(from)) {
			if ((rc = cli_get(c, &src, "/jobs/%.0f", sid)) != CLI_OK)
				goto out;
		} else {
			src = cJSON_Duplicate(j, 1);
		}
		if (cli_num(src, "started_ms", 0) > 0 && cli_num(src, "finished_ms", 0) > 0)
			wall += (cli_num(src, "finished_ms", 0) - cli_num(src, "started_ms", 0)) / 1000.0;
		rc = cli_get(c, &keys, "/jobs/%.0f/metrics", sid);
		if (rc == CLI_OK && (rc = s_last(c, sid, keys, "tokens", &v)) == CLI_OK)
			tokens += v;
		if (rc == CLI_OK && (rc = s_last(c, sid, keys, "flops", &v)) == CLI_OK)
			flops += v;
		cJSON_Delete(keys);
		/* A cached evaluation: its figures live under the source job. */
		if (rc == CLI_OK && cJSON_IsNumber(from) && !strcmp(cli_str(j, "kind", ""), "eval") &&
		    cli_num(j, "run", 0) == (double)id && cJSON_GetArraySize(evals) == 0) {
			cJSON *page = NULL;
			if ((rc = cli_get(c, &page, "/evaluations?job=%.0f&limit=1000", sid)) == CLI_OK) {
				cJSON_DeleteItemFromObjectCaseSensitive(run, "evaluations");
				cJSON_AddItemToObject(run, "evaluations",
						      cJSON_DetachItemFromObjectCaseSensitive(page, "items"));
				evals = cJSON_GetObjectItemCaseSensitive(run, "evaluations");
			}
			cJSON_Delete(page);
		}
		cJSON_Delete(src);
		if (rc != CLI_OK)
			goto out;
	}
	cost = cJSON_AddObjectToObject(run, "cost");
	cJSON_AddNumberToObject(cost, "tokens", tokens);
	cJSON_AddNumberToObject(cost, "flops", flops);
	cJSON_AddNumberToObject(cost, "wall_s", wall);
	cJSON_DeleteItemFromObjectCaseSensitive(run, "jobs");
	cJSON_AddItemToArray(runs, run);
	run = NULL;
out:
	cJSON_Delete(run);
	cJSON_Delete(dag);
	return rc;
}

int cli_cmd_compare(const struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = { { "metric", 1, NULL, 'm' }, { NULL, 0, NULL, 0 } };
	cJSON *data = cJSON_CreateObject(), *runs = cJSON_AddArrayToObject(data, "runs"), *cmp = NULL;
	const char *metric = "acc";
	int ch, rc = CLI_OK;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch == 'm')
			metric = optarg;
		else
			rc = cli_usage_error("compare", "unknown option '%s'", argv[optind - 1]);
	}
	if (rc == CLI_OK && optind >= argc)
		rc = cli_usage_error("compare", "expected experiment ids or rRUN ids");
	for (int i = optind; rc == CLI_OK && i < argc; i++) {
		const cJSON *r;
		cJSON *exp = NULL;
		int64_t id;
		if (cli_parse_id(argv[i], argv[i][0] == 'r' ? 'r' : 'e', &id) < 0) {
			rc = cli_usage_error("compare", "'%s' is neither an experiment id (12, e12) nor a run (r12)",
					     argv[i]);
			break;
		}
		if (argv[i][0] == 'r') {
			rc = s_run(c, id, runs);
			continue;
		}
		if ((rc = cli_get(c, &exp, "/experiments/%lld", (long long)id)) != CLI_OK)
			break;
		cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(exp, "runs"))
			if ((rc = s_run(c, (int64_t)cli_num(r, "id", 0), runs)) != CLI_OK)
				break;
		cJSON_Delete(exp);
	}
	if (rc != CLI_OK)
		goto out;
	if (!(cmp = compare_build(data, metric))) {
		fprintf(stderr, "modula compare: out of memory\n");
		rc = CLI_ERR;
		goto out;
	}
	if (c->json)
		cli_print_json(c, cmp);
	else
		compare_print(c->out, cmp);
out:
	cJSON_Delete(cmp);
	cJSON_Delete(data);
	return rc;
}
