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

/* Router means: per layer and module, the mean weight of each expert over
 * each domain's test data, as router.L<layer>.<module>.<expert> with the
 * test domain as the domain (the dashboard's heatmaps read these). */
static void s_add_routers(cJSON *out, const cJSON *routers)
{
	const cJSON *experts = cJSON_GetObjectItemCaseSensitive(routers, "experts");
	const cJSON *layer, *dom;
	char metric[160];

	if (!cJSON_IsArray(experts))
		return;
	cJSON_ArrayForEach(layer, cJSON_GetObjectItemCaseSensitive(routers, "layers")) {
		const cJSON *l = cJSON_GetObjectItemCaseSensitive(layer, "layer");
		const char *module = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(layer, "module"));

		if (!cJSON_IsNumber(l) || !module)
			continue;
		cJSON_ArrayForEach(dom, cJSON_GetObjectItemCaseSensitive(layer, "mean")) {
			int i = 0;
			const cJSON *w;

			cJSON_ArrayForEach(w, dom) {
				const char *ex = cJSON_GetStringValue(cJSON_GetArrayItem(experts, i++));
				if (!ex)
					break;
				snprintf(metric, sizeof metric, "router.L%d.%s.%s", l->valueint, module, ex);
				s_add(out, dom->string, metric, w);
			}
		}
	}
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
		s_add_routers(out, cJSON_GetObjectItemCaseSensitive(it, "routers"));
	}
	return out;
}
