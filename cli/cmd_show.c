/* cmd_show.c: show (one experiment, run or job) and watch (an experiment's
 * jobs with progress bars, ETA and loss, redrawn until every job ended).
 * Progress is the newest step of the job's "loss" series against the
 * steps its stage spec asks for (docs/specs.md); ETA extrapolates the time
 * since the job started. Not here: listings (cmd_list.c).
 */
#include "config.h"
#include "cli/cli_int.h"
#include "mtime.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int s_ended(const char *state)
{
	return !strcmp(state, "succeeded") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
}

/* The steps a stage job asks for (0 when its spec does not say). */
static double s_total_steps(const cJSON *job)
{
	const cJSON *spec = cJSON_GetObjectItemCaseSensitive(job, "spec");
	const cJSON *params = cJSON_GetObjectItemCaseSensitive(spec, "params");
	const char *kind = cli_str(job, "kind", "");

	if (!strcmp(kind, "router"))
		return cli_num(params, "router_steps", 0);
	if (!strcmp(kind, "pretrain"))
		return cli_num(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(spec, "base_model"),
								 "embedded"), "steps", 0);
	return cli_num(params, "steps", 0);
}

/* Add "step", "total", "loss", "eta_s" to a running job (in place). */
static int s_progress(const struct cli *c, cJSON *job, int64_t now_ms)
{
	cJSON *full = NULL, *keys = NULL, *pts = NULL;
	const cJSON *k, *last;
	double step = -1, total, started;
	int rc;

	if ((rc = cli_get(c, &full, "/jobs/%.0f", cli_num(job, "id", 0))) != CLI_OK ||
	    (rc = cli_get(c, &keys, "/jobs/%.0f/metrics", cli_num(job, "id", 0))) != CLI_OK)
		goto out;
	total = s_total_steps(full);
	cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(keys, "keys"))
		if (!strcmp(cli_str(k, "key", ""), "loss"))
			step = cli_num(k, "last_step", -1);
	if (step >= 0) {
		if ((rc = cli_get(c, &pts, "/jobs/%.0f/metrics?key=loss&after_step=%.0f", cli_num(job, "id", 0),
				  step - 1)) != CLI_OK)
			goto out;
		last = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pts, "points"), 0);
		if (last)
			cJSON_AddNumberToObject(job, "loss", cJSON_GetArrayItem(last, 1)->valuedouble);
		cJSON_AddNumberToObject(job, "step", step);
	}
	if (total > 0)
		cJSON_AddNumberToObject(job, "total_steps", total);
	started = cli_num(full, "started_ms", 0);
	if (started > 0 && step > 0 && total > step)
		cJSON_AddNumberToObject(job, "eta_s", (now_ms - started) / 1000.0 * (total - step) / step);
out:
	cJSON_Delete(full);
	cJSON_Delete(keys);
	cJSON_Delete(pts);
	return rc;
}

static void s_bar(char *out, double frac, int width)
{
	int full = (int)(frac * width + 0.5);

	for (int i = 0; i < width; i++)
		out[i] = i < full ? '#' : '.';
	out[width] = 0;
}

static void s_render(const struct cli *c, const cJSON *exp, const cJSON *jobs)
{
	static const char *const states[] = { "succeeded", "running", "leased", "ready", "pending", "failed",
					      "cancelled" };
	int counts[7] = { 0 }, n = cJSON_GetArraySize(jobs);
	cli_table_t *t = cli_table_new(7);
	const cJSON *j;

	cJSON_ArrayForEach(j, jobs)
		for (int s = 0; s < 7; s++)
			counts[s] += !strcmp(cli_str(j, "state", ""), states[s]);
	fprintf(c->out, "experiment %.0f '%s': %d jobs:", cli_num(exp, "id", 0), cli_str(exp, "name", "?"), n);
	for (int s = 0; s < 7; s++)
		if (counts[s])
			fprintf(c->out, " %d %s", counts[s], states[s]);
	fputc('\n', c->out);
	cJSON_ArrayForEach(j, jobs) {
		const char *st = cli_str(j, "state", "?");
		char bar[32], buf[32];
		double total = cli_num(j, "total_steps", 0), step = cli_num(j, "step", -1);
		double frac = !strcmp(st, "succeeded") ? 1 : total > 0 && step >= 0 ? step / total : 0;
		/* Big sweeps: only what moves or went wrong. */
		if (n > 40 && (s_ended(st) || !strcmp(st, "pending") || !strcmp(st, "ready")) &&
		    strcmp(st, "failed") != 0)
			continue;
		s_bar(bar, frac > 1 ? 1 : frac, 20);
		cli_table_cell(t, "#%.0f", cli_num(j, "id", 0));
		cli_table_cell(t, "%s", cli_str(j, "kind", "?"));
		cli_table_cell(t, "%s", st);
		cli_table_cell(t, "[%s] %3.0f%%", bar, frac * 100);
		if (step >= 0 && total > 0)
			cli_table_cell(t, "step %.0f/%.0f", step, total);
		else
			cli_table_cell(t, "%s", cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "cached_from"))
						      ? "cached" : "");
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "loss")))
			cli_table_cell(t, "loss %.4f", cli_num(j, "loss", 0));
		else
			cli_table_cell(t, "%s", "");
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "eta_s")))
			cli_table_cell(t, "eta %s", cli_fmt_secs(cli_num(j, "eta_s", 0), buf));
		else
			cli_table_cell(t, "%.50s", cli_str(j, "error", ""));
	}
	if (t)
		cli_table_print(t, c->out);
	cli_table_destroy(&t);
	fflush(c->out);
}

int cli_cmd_watch(const struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = { { "interval", 1, NULL, 'i' }, { NULL, 0, NULL, 0 } };
	int tty = isatty(fileno(c->out)) && !c->json, ch, rc, failed = 0, ended = 0;
	double interval = 1;
	int64_t id;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'i' || (interval = atof(optarg)) <= 0)
			return cli_usage_error("watch", "expected --interval SECONDS (> 0)");
	}
	if (optind + 1 != argc || cli_parse_id(argv[optind], 'e', &id) < 0)
		return cli_usage_error("watch", "expected one experiment id");
	while (!ended) {
		cJSON *exp = NULL, *jobs = NULL, *j;
		int64_t now = mtime_wall_ms();
		if ((rc = cli_get(c, &exp, "/experiments/%lld", (long long)id)) != CLI_OK ||
		    (rc = cli_experiment_jobs(c, exp, &jobs)) != CLI_OK) {
			cJSON_Delete(exp);
			cJSON_Delete(jobs);
			return rc;
		}
		ended = 1;
		failed = 0;
		cJSON_ArrayForEach(j, jobs) {
			const char *st = cli_str(j, "state", "");
			ended &= s_ended(st);
			failed |= !strcmp(st, "failed") || !strcmp(st, "cancelled");
			if ((!strcmp(st, "running") || !strcmp(st, "leased")) && (rc = s_progress(c, j, now)) != CLI_OK)
				break;
		}
		if (rc == CLI_OK && (tty || ended)) {
			if (tty)
				fputs("\033[H\033[J", c->out);
			if (c->json) {
				cJSON_AddItemReferenceToObject(exp, "jobs", jobs);
				cli_print_json(c, exp);
			} else {
				s_render(c, exp, jobs);
			}
		}
		cJSON_Delete(exp);
		cJSON_Delete(jobs);
		if (rc != CLI_OK)
			return rc;
		if (!ended) {
			struct timespec ts = { (time_t)interval, (long)((interval - (time_t)interval) * 1e9) };
			nanosleep(&ts, NULL);
		}
	}
	return failed ? CLI_FAILED : CLI_OK;
}

static int s_show_experiment(const struct cli *c, int64_t id)
{
	cJSON *exp = NULL, *jobs = NULL;
	const cJSON *run, *j;
	cli_table_t *t;
	int rc;

	if ((rc = cli_get(c, &exp, "/experiments/%lld", (long long)id)) != CLI_OK)
		return rc;
	if (c->json) {
		cli_print_json(c, exp);
		goto out;
	}
	if ((rc = cli_experiment_jobs(c, exp, &jobs)) != CLI_OK)
		goto out;
	fprintf(c->out, "experiment %lld '%s'\n", (long long)id, cli_str(exp, "name", "?"));
	t = cli_table_new(6);
	cli_table_cell(t, "RUN");
	cli_table_cell(t, "METHOD");
	cli_table_cell(t, "LABEL");
	cli_table_cell(t, "SEED");
	cli_table_cell(t, "JOBS DONE");
	cli_table_cell(t, "FAILED");
	cJSON_ArrayForEach(run, cJSON_GetObjectItemCaseSensitive(exp, "runs")) {
		int total = 0, done = 0, bad = 0;
		cJSON_ArrayForEach(j, jobs) {
			if (cli_num(j, "run", 0) != cli_num(run, "id", -1))
				continue;
			total++;
			done += !strcmp(cli_str(j, "state", ""), "succeeded");
			bad += !strcmp(cli_str(j, "state", ""), "failed") || !strcmp(cli_str(j, "state", ""), "cancelled");
		}
		cli_table_cell(t, "%.0f", cli_num(run, "id", 0));
		cli_table_cell(t, "%s", cli_str(run, "method", "?"));
		cli_table_cell(t, "%s", cli_str(cJSON_GetObjectItemCaseSensitive(run, "params"), "label", "-"));
		cli_table_cell(t, "%.0f", cli_num(run, "seed", 0));
		cli_table_cell(t, "%d/%d", done, total);
		cli_table_cell(t, "%d", bad);
	}
	cli_table_print(t, c->out);
	cli_table_destroy(&t);
out:
	cJSON_Delete(exp);
	cJSON_Delete(jobs);
	return rc;
}

static int s_show_run(const struct cli *c, int64_t id)
{
	cJSON *run = NULL;
	const cJSON *it;
	char *params;
	int rc;

	if ((rc = cli_get(c, &run, "/runs/%lld", (long long)id)) != CLI_OK)
		return rc;
	if (c->json) {
		cli_print_json(c, run);
		cJSON_Delete(run);
		return CLI_OK;
	}
	params = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(run, "params"));
	fprintf(c->out, "run %lld of experiment %.0f: %s, seed %.0f\nparams %s\njobs:\n", (long long)id,
		cli_num(run, "experiment", 0), cli_str(run, "method", "?"), cli_num(run, "seed", 0),
		params ? params : "{}");
	free(params);
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(run, "jobs"))
		fprintf(c->out, "  #%-6.0f %-10s %s\n", cli_num(it, "id", 0), cli_str(it, "kind", "?"),
			cli_str(it, "state", "?"));
	fprintf(c->out, "evaluations:\n");
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(run, "evaluations"))
		fprintf(c->out, "  %-12s %-10s %.6g\n", cli_str(it, "domain", "?"), cli_str(it, "metric", "?"),
			cli_num(it, "value", 0));
	cJSON_Delete(run);
	return CLI_OK;
}

static int s_show_job(const struct cli *c, int64_t id)
{
	cJSON *job = NULL;
	const cJSON *it;
	char *spec, buf[32];
	int rc;

	if ((rc = cli_get(c, &job, "/jobs/%lld", (long long)id)) != CLI_OK)
		return rc;
	if (c->json) {
		cli_print_json(c, job);
		cJSON_Delete(job);
		return CLI_OK;
	}
	fprintf(c->out, "job %lld: %s, %s (attempt %.0f of %.0f), run %.0f\n", (long long)id,
		cli_str(job, "kind", "?"), cli_str(job, "state", "?"), cli_num(job, "attempts", 0),
		cli_num(job, "max_attempts", 0), cli_num(job, "run", 0));
	fprintf(c->out, "content key %s\n", cli_str(job, "content_key", "-"));
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(job, "cached_from")))
		fprintf(c->out, "cached from job %.0f\n", cli_num(job, "cached_from", 0));
	fprintf(c->out, "created %s", cli_fmt_time(cli_num(job, "created_ms", 0), buf));
	fprintf(c->out, ", finished %s\n", cli_fmt_time(cli_num(job, "finished_ms", 0), buf));
	if (cli_str(job, "worker", NULL))
		fprintf(c->out, "worker %s\n", cli_str(job, "worker", ""));
	if (cli_str(job, "error", NULL))
		fprintf(c->out, "error: %s\n", cli_str(job, "error", ""));
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(job, "deps"))
		fprintf(c->out, "needs job %.0f (%s)\n", cli_num(it, "id", 0), cli_str(it, "state", "?"));
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(job, "outputs"))
		fprintf(c->out, "output %s %s\n", cli_str(it, "name", "?"), cli_str(it, "sha256", "?"));
	spec = cJSON_Print(cJSON_GetObjectItemCaseSensitive(job, "spec"));
	fprintf(c->out, "spec %s\n", spec ? spec : "{}");
	free(spec);
	cJSON_Delete(job);
	return CLI_OK;
}

int cli_cmd_show(const struct cli *c, int argc, char **argv)
{
	const char *what = argc == 3 ? argv[1] : "experiment", *arg = argv[argc - 1];
	int64_t id;

	if (argc < 2 || argc > 3 || cli_parse_id(arg, 0, &id) < 0)
		return cli_usage_error("show", "expected [experiment|run|job] ID");
	if (!strcmp(what, "experiment"))
		return s_show_experiment(c, id);
	if (!strcmp(what, "run"))
		return s_show_run(c, id);
	if (!strcmp(what, "job"))
		return s_show_job(c, id);
	return cli_usage_error("show", "expected experiment, run or job, got '%s'", what);
}
