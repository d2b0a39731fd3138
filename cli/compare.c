/* compare.c: see compare.h. Plain arithmetic over the input: no I/O
 * other than compare_print's FILE. */
#include "config.h"
#include "cli/compare.h"
#include "cli/cli_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COMPARE_COST_COLS 3
static const char *const s_cost[COMPARE_COST_COLS] = { "tokens", "flops", "wall_s" };

static int s_is_general(const char *domain)
{
	return !strcmp(domain, "universal") || !strcmp(domain, "general");
}

static void s_add_unique(cJSON *list, const char *s)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, list)
		if (!strcmp(it->valuestring, s))
			return;
	cJSON_AddItemToArray(list, cJSON_CreateString(s));
}

/* The params of a run without its label: what tells grid points apart. */
static char *s_params_key(const cJSON *run)
{
	cJSON *p = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(run, "params"), 1);
	char *s;

	cJSON_DeleteItemFromObjectCaseSensitive(p, "label");
	s = cJSON_PrintUnformatted(p);
	cJSON_Delete(p);
	return s;
}

/* Value of (domain, metric) in a run's evaluations; NAN when absent. */
static double s_eval(const cJSON *run, const char *domain, const char *metric)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(run, "evaluations"))
		if (!strcmp(cli_str(e, "domain", ""), domain) && !strcmp(cli_str(e, "metric", ""), metric))
			return cli_num(e, "value", NAN);
	return NAN;
}

/* The mean over a run's domain columns that it has; NAN when none. */
static double s_run_avg(const cJSON *run, const cJSON *domains, const char *metric)
{
	const cJSON *d;
	double sum = 0;
	int n = 0;

	cJSON_ArrayForEach(d, domains) {
		double v = s_eval(run, d->valuestring, metric);
		if (!isnan(v)) {
			sum += v;
			n++;
		}
	}
	return n ? sum / n : NAN;
}

/* The value of column `col` for one run. */
static double s_value(const cJSON *run, const char *col, const cJSON *domains, const char *metric)
{
	const char *slash = strchr(col, '/');
	char domain[128];

	if (!strcmp(col, "avg"))
		return s_run_avg(run, domains, metric);
	for (int i = 0; i < COMPARE_COST_COLS; i++)
		if (!strcmp(col, s_cost[i]))
			return cli_num(cJSON_GetObjectItemCaseSensitive(run, "cost"), col, NAN);
	if (slash) {
		snprintf(domain, sizeof domain, "%.*s", (int)(slash - col), col);
		return s_eval(run, domain, slash + 1);
	}
	return s_eval(run, col, metric);
}

/* {"mean", "std", "n"} of `v[0..n)` skipping NANs; NULL when none. */
static cJSON *s_stats(const double *v, int n)
{
	double sum = 0, ss = 0, mean;
	int k = 0;
	cJSON *o;

	for (int i = 0; i < n; i++)
		if (!isnan(v[i])) {
			sum += v[i];
			k++;
		}
	if (!k)
		return NULL;
	mean = sum / k;
	for (int i = 0; i < n; i++)
		if (!isnan(v[i]))
			ss += (v[i] - mean) * (v[i] - mean);
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "mean", mean);
	cJSON_AddNumberToObject(o, "std", k > 1 ? sqrt(ss / (k - 1)) : 0);
	cJSON_AddNumberToObject(o, "n", k);
	return o;
}

/* All columns, in print order. */
static cJSON *s_columns(const cJSON *cmp)
{
	cJSON *cols = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(cmp, "domains"), 1);
	const cJSON *it;

	cJSON_AddItemToArray(cols, cJSON_CreateString("avg"));
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(cmp, "general"))
		cJSON_AddItemToArray(cols, cJSON_CreateString(it->valuestring));
	for (int i = 0; i < COMPARE_COST_COLS; i++)
		cJSON_AddItemToArray(cols, cJSON_CreateString(s_cost[i]));
	return cols;
}

/* The group's runs (pointers into data), in input order. */
static int s_group_runs(const cJSON *data, const cJSON *g, const cJSON **out, int max)
{
	const cJSON *r, *id;
	int n = 0;

	cJSON_ArrayForEach(id, cJSON_GetObjectItemCaseSensitive(g, "runs"))
		cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(data, "runs"))
			if (cli_num(r, "id", -1) == id->valuedouble && n < max)
				out[n++] = r;
	return n;
}

/* Names: the label, plus the parameters that differ between groups that
 * share it ("lora (lr=0.001)"). */
static void s_names(cJSON *groups)
{
	cJSON *g, *h;

	cJSON_ArrayForEach(g, groups) {
		const cJSON *p = cJSON_GetObjectItemCaseSensitive(g, "params"), *kv;
		char name[512];
		size_t n = (size_t)snprintf(name, sizeof name, "%s", cli_str(g, "label", "?"));
		int first = 1;
		cJSON_ArrayForEach(kv, p) {
			int differs = 0;
			cJSON_ArrayForEach(h, groups)
				if (h != g && !strcmp(cli_str(h, "label", ""), cli_str(g, "label", "")))
					differs |= !cJSON_Compare(kv, cJSON_GetObjectItemCaseSensitive(
								  cJSON_GetObjectItemCaseSensitive(h, "params"), kv->string), 1);
			if (differs && n < sizeof name) {
				char *v = cJSON_PrintUnformatted(kv);
				n += (size_t)snprintf(name + n, sizeof name - n, "%s%s=%s", first ? " (" : ", ", kv->string,
						      v ? v : "?");
				free(v);
				first = 0;
			}
		}
		if (!first && n < sizeof name)
			snprintf(name + n, sizeof name - n, ")");
		cJSON_AddStringToObject(g, "name", name);
	}
}

/* Res vs Flan seed by seed, for every res group that has a flan twin. */
static void s_pairs(const cJSON *data, cJSON *cmp, const char *metric)
{
	const cJSON *domains = cJSON_GetObjectItemCaseSensitive(cmp, "domains");
	cJSON *pairs = cJSON_AddArrayToObject(cmp, "pairs"), *g, *h;
	const cJSON *gr[256], *hr[256];

	cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(cmp, "groups")) {
		if (strcmp(cli_str(g, "method", ""), "modula-res") != 0)
			continue;
		cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(cmp, "groups")) {
			cJSON *gp, *hp, *pair, *dom;
			double diff[256];
			const cJSON *d;
			int ng, nh, n = 0, agree = 0, same;
			if (strcmp(cli_str(h, "method", ""), "modula-flan") != 0)
				continue;
			gp = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(g, "params"), 1);
			hp = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(h, "params"), 1);
			cJSON_DeleteItemFromObjectCaseSensitive(gp, "activation");
			same = cJSON_Compare(gp, hp, 1);
			cJSON_Delete(gp);
			cJSON_Delete(hp);
			if (!same)
				continue;
			ng = s_group_runs(data, g, gr, 256);
			nh = s_group_runs(data, h, hr, 256);
			pair = cJSON_CreateObject();
			cJSON_AddStringToObject(pair, "res", cli_str(g, "name", "?"));
			cJSON_AddStringToObject(pair, "flan", cli_str(h, "name", "?"));
			dom = cJSON_AddObjectToObject(pair, "domains");
			/* Per domain, then the average: seeds present in both. */
			for (d = domains->child;; d = d->next) {
				const char *col = d ? d->valuestring : "avg";
				n = 0;
				agree = 0;
				for (int i = 0; i < ng; i++)
					for (int k = 0; k < nh; k++) {
						double a, b;
						if (cli_num(gr[i], "seed", -1) != cli_num(hr[k], "seed", -2))
							continue;
						a = s_value(gr[i], col, domains, metric);
						b = s_value(hr[k], col, domains, metric);
						if (isnan(a) || isnan(b) || n >= 256)
							continue;
						diff[n++] = a - b;
						agree += a > b;
					}
				if (n && d)
					cJSON_AddItemToObject(dom, col, s_stats(diff, n));
				if (!d)
					break;
			}
			if (!n) {
				cJSON_Delete(pair);
				continue;
			}
			cJSON_AddItemToObject(pair, "avg", s_stats(diff, n));
			cJSON_AddNumberToObject(pair, "seeds", n);
			cJSON_AddNumberToObject(pair, "agree", agree);
			cJSON_AddItemToArray(pairs, pair);
		}
	}
}

cJSON *compare_build(const cJSON *data, const char *metric)
{
	cJSON *cmp = cJSON_CreateObject(), *domains, *general, *groups, *missing, *cols, *g;
	const cJSON *runs = cJSON_GetObjectItemCaseSensitive(data, "runs"), *r, *e;

	if (!metric)
		metric = "acc";
	cJSON_AddStringToObject(cmp, "metric", metric);
	domains = cJSON_AddArrayToObject(cmp, "domains");
	general = cJSON_AddArrayToObject(cmp, "general");
	groups = cJSON_AddArrayToObject(cmp, "groups");
	missing = cJSON_AddArrayToObject(cmp, "missing");
	cJSON_ArrayForEach(r, runs) {
		char *key, col[256];
		if (!cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "evaluations"))) {
			cJSON_AddItemToArray(missing, cJSON_CreateNumber(cli_num(r, "id", 0)));
			continue;
		}
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "evaluations")) {
			const char *dom = cli_str(e, "domain", "?"), *met = cli_str(e, "metric", "?");
			snprintf(col, sizeof col, "%s/%s", dom, met);
			if (s_is_general(dom) && strncmp(met, "router.", 7))
				s_add_unique(general, col);
			else if (!strcmp(met, metric))
				s_add_unique(domains, dom);
		}
		key = s_params_key(r);
		cJSON_ArrayForEach(g, groups) {
			char *gk = s_params_key(g);
			int same = !strcmp(cli_str(g, "label", ""), cli_str(cJSON_GetObjectItemCaseSensitive(r, "params"),
									      "label", cli_str(r, "method", "?"))) &&
				   gk && key && !strcmp(gk, key);
			free(gk);
			if (same)
				break;
		}
		if (!g) {
			cJSON *p = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(r, "params"), 1);
			g = cJSON_CreateObject();
			cJSON_AddStringToObject(g, "label", cli_str(p, "label", cli_str(r, "method", "?")));
			cJSON_AddStringToObject(g, "method", cli_str(r, "method", "?"));
			cJSON_DeleteItemFromObjectCaseSensitive(p, "label");
			cJSON_AddItemToObject(g, "params", p ? p : cJSON_CreateObject());
			cJSON_AddArrayToObject(g, "runs");
			cJSON_AddArrayToObject(g, "seeds");
			cJSON_AddItemToArray(groups, g);
		}
		free(key);
		cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(g, "runs"), cJSON_CreateNumber(cli_num(r, "id", 0)));
		cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(g, "seeds"),
				     cJSON_CreateNumber(cli_num(r, "seed", 0)));
	}
	s_names(groups);
	cols = s_columns(cmp);
	cJSON_ArrayForEach(g, groups) {
		const cJSON *gr[1024], *col;
		double v[1024];
		int n = s_group_runs(data, g, gr, 1024);
		cJSON *cells = cJSON_AddObjectToObject(g, "cells"), *st;
		cJSON_ArrayForEach(col, cols) {
			for (int i = 0; i < n; i++)
				v[i] = s_value(gr[i], col->valuestring, domains, metric);
			if ((st = s_stats(v, n)))
				cJSON_AddItemToObject(cells, col->valuestring, st);
		}
	}
	cJSON_Delete(cols);
	s_pairs(data, cmp, metric);
	return cmp;
}

static void s_cell(cli_table_t *t, const cJSON *cell, const char *col)
{
	double mean = cli_num(cell, "mean", 0), sd = cli_num(cell, "std", 0);
	int spread = cli_num(cell, "n", 1) > 1;
	char a[32], b[32];

	if (!cell) {
		cli_table_cell(t, "-");
		return;
	}
	if (!strcmp(col, "wall_s")) {
		cli_fmt_secs(mean, a);
		cli_fmt_secs(sd, b);
	} else if (!strcmp(col, "tokens") || !strcmp(col, "flops")) {
		cli_fmt_count(mean, a);
		cli_fmt_count(sd, b);
	} else {
		snprintf(a, sizeof a, "%.4f", mean);
		snprintf(b, sizeof b, "%.4f", sd);
	}
	if (spread)
		cli_table_cell(t, "%s ± %s", a, b);
	else
		cli_table_cell(t, "%s", a);
}

void compare_print(FILE *f, const cJSON *cmp)
{
	cJSON *cols = s_columns(cmp);
	const cJSON *g, *col, *p, *d;
	cli_table_t *t = cli_table_new(cJSON_GetArraySize(cols) + 2);

	cli_table_cell(t, "METHOD");
	cli_table_cell(t, "SEEDS");
	cJSON_ArrayForEach(col, cols)
		cli_table_cell(t, "%s", col->valuestring);
	cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(cmp, "groups")) {
		cli_table_cell(t, "%s", cli_str(g, "name", "?"));
		cli_table_cell(t, "%d", cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(g, "runs")));
		cJSON_ArrayForEach(col, cols)
			s_cell(t, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(g, "cells"),
								   col->valuestring), col->valuestring);
	}
	fprintf(f, "per-domain %s (mean ± std over seeds), general capability, training cost:\n",
		cli_str(cmp, "metric", "acc"));
	cli_table_print(t, f);
	cli_table_destroy(&t);
	cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(cmp, "pairs")) {
		const cJSON *avg = cJSON_GetObjectItemCaseSensitive(p, "avg");
		fprintf(f, "%s - %s: avg %+.4f ± %.4f; res ahead on %.0f of %.0f seeds;", cli_str(p, "res", "?"),
			cli_str(p, "flan", "?"), cli_num(avg, "mean", 0), cli_num(avg, "std", 0), cli_num(p, "agree", 0),
			cli_num(p, "seeds", 0));
		cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(p, "domains"))
			fprintf(f, " %s %+.4f", d->string, cli_num(d, "mean", 0));
		fputc('\n', f);
	}
	if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cmp, "missing")))
		fprintf(f, "(%d runs have no evaluations yet)\n",
			cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cmp, "missing")));
	cJSON_Delete(cols);
}
