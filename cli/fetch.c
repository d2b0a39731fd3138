/* fetch.c: reading groups of objects that take more than one API call:
 * an experiment's jobs (page by page, run by run) and a run's whole DAG
 * (following "deps" into jobs that other runs own). Not here: printing.
 */
#include "config.h"
#include "cli/cli_int.h"

#include <string.h>

int cli_experiment_jobs(const struct cli *c, const cJSON *exp, cJSON **jobs)
{
	const cJSON *run;
	int rc = CLI_OK;

	*jobs = cJSON_CreateArray();
	cJSON_ArrayForEach(run, cJSON_GetObjectItemCaseSensitive(exp, "runs")) {
		cJSON *page = NULL, *it;
		double after = 0;
		do {
			if ((rc = cli_get(c, &page, "/jobs?run=%.0f&limit=1000&after=%.0f", cli_num(run, "id", 0),
					  after)) != CLI_OK)
				return rc;
			after = cli_num(page, "next", 0);
			while ((it = cJSON_DetachItemFromArray(cJSON_GetObjectItemCaseSensitive(page, "items"), 0)))
				cJSON_AddItemToArray(*jobs, it);
			cJSON_Delete(page);
		} while (after > 0);
	}
	return rc;
}

static int s_has(const cJSON *jobs, double id)
{
	const cJSON *j;

	cJSON_ArrayForEach(j, jobs)
		if (cli_num(j, "id", 0) == id)
			return 1;
	return 0;
}

int cli_run_dag(const struct cli *c, int64_t run, cJSON **jobs)
{
	cJSON *r = NULL, *job;
	const cJSON *it, *d;
	int rc;

	*jobs = cJSON_CreateArray();
	if ((rc = cli_get(c, &r, "/runs/%lld", (long long)run)) != CLI_OK)
		return rc;
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r, "jobs")) {
		if (s_has(*jobs, cli_num(it, "id", 0)))
			continue;
		if ((rc = cli_get(c, &job, "/jobs/%.0f", cli_num(it, "id", 0))) != CLI_OK)
			break;
		cJSON_AddItemToArray(*jobs, job);
	}
	/* The array grows while it is walked: each job's deps are appended. */
	for (it = (*jobs)->child; rc == CLI_OK && it; it = it->next)
		cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(it, "deps")) {
			if (s_has(*jobs, cli_num(d, "id", 0)))
				continue;
			if ((rc = cli_get(c, &job, "/jobs/%.0f", cli_num(d, "id", 0))) != CLI_OK)
				break;
			cJSON_AddItemToArray(*jobs, job);
		}
	cJSON_Delete(r);
	return rc;
}
