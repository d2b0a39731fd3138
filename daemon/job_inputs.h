/* job_inputs.h: a leased job's "inputs" made concrete: each reference to a
 * parent's output, {"key": CONTENT_KEY, "output": NAME}, becomes the sha256
 * the worker fetches (docs/specs.md, "Stage jobs"). Not a fetcher: the
 * worker downloads (worker_store.h). */
#ifndef MODULA_DAEMON_JOB_INPUTS_H
#define MODULA_DAEMON_JOB_INPUTS_H

#include "daemon/queue.h"

#include <cjson/cJSON.h>

/* Replace every {"key", "output"} of spec's "inputs" by its sha256 string.
 * 0, or -1 via err_set() naming the input that no succeeded job provides. */
int job_inputs_resolve(queue_t *q, cJSON *spec);

#endif
