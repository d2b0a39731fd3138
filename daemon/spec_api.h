/* spec_api.h: POST /api/v1/experiments with a spec: check it, expand it
 * and submit its experiment, runs and jobs in one transaction (daemon/api.c
 * routes here when the body has a "spec" and no "runs").
 * Not here: the spec language itself (spec.h).
 */
#ifndef MODULA_DAEMON_SPEC_API_H
#define MODULA_DAEMON_SPEC_API_H

#include "daemon/api.h"

#include <cjson/cJSON.h>

/* Answer the request whose parsed body is `body` ({"spec", "name"?}):
 * 201 {"id", "name", "runs": [ids], "jobs": [...], "counts": {...}};
 * 400 {"error", "errors": ["path: message", ...], "status"} for a bad spec. */
void spec_api_submit(const struct api_req *req, const cJSON *body, struct api_resp *resp);

#endif
