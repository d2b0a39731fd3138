/* compare.h: `modula compare` as a pure function over data read from the
 * API, so its numbers can be checked against the registry without a
 * terminal (tests/cli/compare.sh, tests/cli-compare).
 *
 * Input (cmd_compare.c assembles it):
 *   {"runs": [{"id", "method", "seed", "params": {"label", "scope", ...},
 *              "evaluations": [{"domain", "metric", "value"}],
 *              "cost": {"tokens", "flops", "wall_s"}}]}
 * Output:
 *   {"metric", "domains": [...], "general": ["universal/acc", ...],
 *    "groups": [{"name", "label", "method", "runs": [ids], "seeds": [..],
 *                "cells": {COLUMN: {"mean", "std", "n"}}}],
 *    "pairs": [{"res", "flan", "seeds", "agree", "avg": {"mean","std","n"},
 *               "domains": {DOMAIN: {"mean","std","n"}}}],
 *    "missing": [run ids without evaluations]}
 * A group is the runs of one label and one set of hyper-parameters (they
 * differ only by seed). Columns: each domain's `metric` (domains other
 * than "universal" and "general"), "avg" (per run, the mean over its
 * domains; then mean ± std over the group's seeds), every metric of the
 * "universal" and "general" domains ("universal/acc"; the router means
 * "router.L..." are not capability figures and left out), and the cost
 * "tokens", "flops", "wall_s". std is the sample standard deviation (n-1),
 * 0 for one seed. A pair compares a modula-res group with the modula-flan
 * group of the same scope and hyper-parameters, seed by seed (res - flan);
 * "agree" counts the seeds where Res is ahead on the average.
 * Not here: HTTP (cmd_compare.c).
 */
#ifndef MODULA_CLI_COMPARE_H
#define MODULA_CLI_COMPARE_H

#include <cjson/cJSON.h>
#include <stdio.h>

/* The comparison of `data` on per-domain `metric` ("acc" when NULL).
 * A fresh tree (cJSON_Delete it); NULL only when out of memory. */
cJSON *compare_build(const cJSON *data, const char *metric);

/* The comparison as text tables. */
void compare_print(FILE *f, const cJSON *cmp);

#endif
