/* tests/cli/compare_test.c: compare_build() (cli/compare.c) on hand-made
 * registry data: grouping by label and parameters, mean ± sample std over
 * seeds, the per-run average over domains, general-capability and cost
 * columns, runs without evaluations, and Res - Flan seed by seed.
 */
#include "config.h"
#include "cli/compare.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A run: label, method, seed, math acc, code acc, universal acc, tokens. */
static cJSON *s_run(int id, const char *method, int seed, double math, double code, double uni, double tokens)
{
	cJSON *r = cJSON_CreateObject(), *p, *e, *ev, *cost;

	cJSON_AddNumberToObject(r, "id", id);
	cJSON_AddStringToObject(r, "method", method);
	cJSON_AddNumberToObject(r, "seed", seed);
	p = cJSON_AddObjectToObject(r, "params");
	cJSON_AddStringToObject(p, "label", method);
	cJSON_AddStringToObject(p, "scope", "base");
	cJSON_AddNumberToObject(p, "steps", 10);
	ev = cJSON_AddArrayToObject(r, "evaluations");
	if (math >= 0) {
		const char *doms[] = { "math", "code", "universal" };
		double vals[] = { math, code, uni };
		for (int i = 0; i < 3; i++) {
			e = cJSON_CreateObject();
			cJSON_AddStringToObject(e, "domain", doms[i]);
			cJSON_AddStringToObject(e, "metric", "acc");
			cJSON_AddNumberToObject(e, "value", vals[i]);
			cJSON_AddItemToArray(ev, e);
		}
		e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "domain", "math");
		cJSON_AddStringToObject(e, "metric", "loss");
		cJSON_AddNumberToObject(e, "value", 9);
		cJSON_AddItemToArray(ev, e);
		e = cJSON_CreateObject();   /* a router mean: a heatmap figure, no column */
		cJSON_AddStringToObject(e, "domain", "universal");
		cJSON_AddStringToObject(e, "metric", "router.L0.q_proj.math");
		cJSON_AddNumberToObject(e, "value", 0.5);
		cJSON_AddItemToArray(ev, e);
	}
	cost = cJSON_AddObjectToObject(r, "cost");
	cJSON_AddNumberToObject(cost, "tokens", tokens);
	cJSON_AddNumberToObject(cost, "flops", tokens * 6);
	cJSON_AddNumberToObject(cost, "wall_s", 2);
	return r;
}

static const cJSON *s_group(const cJSON *cmp, const char *name)
{
	const cJSON *g;

	cJSON_ArrayForEach(g, cJSON_GetObjectItem(cmp, "groups"))
		if (!strcmp(cJSON_GetObjectItem(g, "name")->valuestring, name))
			return g;
	return NULL;
}

static double s_cell(const cJSON *g, const char *col, const char *what)
{
	const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(g, "cells"), col);

	return c ? cJSON_GetObjectItem(c, what)->valuedouble : NAN;
}

static int s_near(double a, double b)
{
	return fabs(a - b) < 1e-9;
}

int main(void)
{
	cJSON *data = cJSON_CreateObject(), *runs = cJSON_AddArrayToObject(data, "runs"), *cmp;
	const cJSON *flan, *res, *pair;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	cJSON_AddItemToArray(runs, s_run(1, "modula-flan", 1, 0.50, 0.30, 0.9, 1000));
	cJSON_AddItemToArray(runs, s_run(2, "modula-flan", 2, 0.60, 0.40, 0.8, 1000));
	cJSON_AddItemToArray(runs, s_run(3, "modula-flan", 3, 0.70, 0.20, 0.7, 1000));
	cJSON_AddItemToArray(runs, s_run(4, "modula-res", 1, 0.55, 0.35, 0.9, 2000));
	cJSON_AddItemToArray(runs, s_run(5, "modula-res", 2, 0.50, 0.40, 0.8, 2000));
	cJSON_AddItemToArray(runs, s_run(6, "modula-res", 3, 0.80, 0.30, 0.7, 2000));
	cJSON_AddItemToArray(runs, s_run(7, "lora", 1, -1, 0, 0, 0));
	cmp = compare_build(data, NULL);
	flan = s_group(cmp, "modula-flan");
	res = s_group(cmp, "modula-res");
	TAP_OK(flan && res && cJSON_GetArraySize(cJSON_GetObjectItem(cmp, "groups")) == 2,
	       "two groups (flan, res); the run without evaluations is left out");
	TAP_OK(cJSON_GetArraySize(cJSON_GetObjectItem(cmp, "missing")) == 1, "and listed as missing");
	TAP_OK(s_near(s_cell(flan, "math", "mean"), 0.6) && s_near(s_cell(flan, "math", "std"), 0.1) &&
	       s_cell(flan, "math", "n") == 3, "flan math: mean 0.6, sample std 0.1 over 3 seeds");
	/* flan per-run avg: 0.4, 0.5, 0.45 -> mean 0.45, std 0.05. */
	TAP_OK(s_near(s_cell(flan, "avg", "mean"), 0.45) && s_near(s_cell(flan, "avg", "std"), 0.05),
	       "avg is each run's mean over its domains, then mean ± std (got %g ± %g)", s_cell(flan, "avg", "mean"),
	       s_cell(flan, "avg", "std"));
	TAP_OK(s_near(s_cell(res, "universal/acc", "mean"), 0.8) && isnan(s_cell(res, "universal", "mean")),
	       "universal accuracy is a general-capability column, not a domain");
	TAP_OK(cJSON_GetArraySize(cJSON_GetObjectItem(cmp, "general")) == 1 &&
	       isnan(s_cell(res, "universal/router.L0.q_proj.math", "mean")),
	       "router means are not general-capability columns");
	TAP_OK(s_near(s_cell(res, "tokens", "mean"), 2000) && s_near(s_cell(res, "flops", "mean"), 12000) &&
	       s_near(s_cell(res, "wall_s", "mean"), 2), "cost columns: tokens, flops, wall time");
	TAP_OK(cJSON_GetArraySize(cJSON_GetObjectItem(cmp, "domains")) == 2, "domains: math and code (acc only)");
	pair = cJSON_GetArrayItem(cJSON_GetObjectItem(cmp, "pairs"), 0);
	/* res - flan avg per seed: 0.45-0.4 = 0.05, 0.45-0.5 = -0.05, 0.55-0.45 = 0.1. */
	TAP_OK(pair && s_near(cJSON_GetObjectItem(cJSON_GetObjectItem(pair, "avg"), "mean")->valuedouble, 0.1 / 3) &&
	       cJSON_GetObjectItem(pair, "agree")->valuedouble == 2 && cJSON_GetObjectItem(pair, "seeds")->valuedouble == 3,
	       "res - flan: mean +0.0333, res ahead on 2 of 3 seeds");
	f = open_memstream(&text, &len);
	compare_print(f, cmp);
	fclose(f);
	TAP_OK(text && strstr(text, "0.6000 ± 0.1000") && strstr(text, "0.4500 ± 0.0500") &&
	       strstr(text, "res ahead on 2 of 3 seeds") && strstr(text, "(1 runs have no evaluations yet)"),
	       "the printed table carries the same numbers");
	if (text)
		tap_diag("%s", text);
	free(text);
	cJSON_Delete(cmp);
	cJSON_Delete(data);
	return tap_done();
}
