/* worker_evals.c: the engine's evaluation results as flat evaluations;
 * see worker_evals.h. */
#include "config.h"
#include "worker/worker_evals.h"

#include <stdio.h>

static void s_add(cJSON *out, const char *domain, const char *metric, const cJSON *v)
{
	cJSON *e;

	if (!cJSON_IsNumber(v) || !domain)
		return;
	e = cJSON_CreateObject();
	cJSON_AddStringToObject(e, "domain", domain);
	cJSON_AddStringToObject(e, "metric", metric);
	cJSON_AddNumberToObject(e, "value", v->valuedouble);
	cJSON_AddItemToArray(out, e);
}

cJSON *worker_evals_flat(const cJSON *evals)
{
	cJSON *out = cJSON_CreateArray();
	const cJSON *it, *d;

	cJSON_ArrayForEach(it, evals) {
		const cJSON *doms = cJSON_GetObjectItemCaseSensitive(it, "domains");
		const cJSON *gen = cJSON_GetObjectItemCaseSensitive(it, "general");
		if (!cJSON_IsArray(doms)) {
			cJSON_AddItemToArray(out, cJSON_Duplicate(it, 1));
			continue;
		}
		cJSON_ArrayForEach(d, doms) {
			const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "name"));
			s_add(out, name, "acc", cJSON_GetObjectItemCaseSensitive(d, "accuracy"));
			s_add(out, name, "loss", cJSON_GetObjectItemCaseSensitive(d, "loss"));
		}
		s_add(out, "general", "ppl", cJSON_GetObjectItemCaseSensitive(gen, "perplexity"));
	}
	return out;
}
