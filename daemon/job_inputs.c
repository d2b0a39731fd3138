/* job_inputs.c: parents' outputs into a leased job's inputs; see
 * job_inputs.h. */
#include "config.h"
#include "daemon/job_inputs.h"
#include "err.h"
#include "jsonu.h"

int job_inputs_resolve(queue_t *q, cJSON *spec)
{
	cJSON *in = cJSON_GetObjectItemCaseSensitive(spec, "inputs"), *it, *next;
	const char *key, *out;
	char hex[65];
	int rc;

	for (it = in ? in->child : NULL; it; it = next) {
		next = it->next;
		if (!cJSON_IsObject(it))
			continue;
		if (jsonu_req_str(it, "key", &key) < 0 || jsonu_req_str(it, "output", &out) < 0)
			return err_prefix("input '%s'", it->string);
		if ((rc = queue_output_sha(q, key, out, hex)) < 0)
			return -1;
		if (rc == 0)
			return err_set("input '%s': no succeeded job with key %.12s... has an output '%s'",
				       it->string, key, out);
		cJSON_ReplaceItemInObjectCaseSensitive(in, it->string, cJSON_CreateString(hex));
	}
	return 0;
}
