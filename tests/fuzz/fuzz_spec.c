/* fuzz_spec.c: libFuzzer target for the experiment spec parser and its
 * expansion (daemon/spec.h): any JSON text is parsed; a spec that checks
 * out is expanded into its runs and job DAG, and every job's dependencies
 * must point at earlier jobs. The look-ups find every model and dataset
 * (with a fixed hash), so inputs reach the expansion. Not the HTTP part
 * (spec_api.c, reached through fuzz_api).
 */
#include "daemon/spec.h"
#include "jsonu.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int s_found(char sha[65])
{
	memset(sha, 'a', 64);
	sha[64] = '\0';
	return 1;
}

static int s_model(void *arg, const char *name, char sha[65])
{
	(void)arg;
	return name[0] == 'x' ? 0 : s_found(sha);
}

static int s_dataset(void *arg, const char *name, const char *split, char sha[65])
{
	(void)arg;
	(void)split;
	return name[0] == 'x' ? 0 : s_found(sha);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spec_lookup lk = { s_model, s_dataset, NULL };
	spec_errors_t errs = { 0 };
	cJSON *json = jsonu_parse((const char *)data, size, "fuzz");
	spec_plan_t *plan = NULL;
	spec_t *s;

	if (!json)
		return 0;
	if ((s = spec_parse(json, &lk, &errs))) {
		if (errs.n)
			__builtin_trap(); /* a spec with errors must not parse */
		if ((plan = spec_expand(s))) {
			for (size_t j = 0; j < plan->njobs; j++)
				for (size_t d = 0; d < plan->jobs[j].ndeps; d++)
					if (plan->jobs[j].deps[d] >= j)
						__builtin_trap();
			spec_plan_destroy(&plan);
		}
		spec_destroy(&s);
	} else if (!errs.n) {
		__builtin_trap(); /* refused without saying why */
	}
	spec_errors_free(&errs);
	cJSON_Delete(json);
	return 0;
}
