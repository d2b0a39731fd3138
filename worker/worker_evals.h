/* worker_evals.h: the engine's done event in the daemon's terms. The
 * engine's eval result (worker/eval.h: "domains" with accuracy and loss,
 * "general" with the perplexity) becomes flat (domain, metric, value)
 * evaluations: DOMAIN/acc, DOMAIN/loss, general/ppl (the average over
 * domains is compare's) and, with a router, DOMAIN/router.L<layer>.<module>.<expert>
 * (the mean routing weight); flat items pass as they are. A stage's "cost" becomes metric points (tokens,
 * seconds, ...). Not the protocol: worker.c sends them. */
#ifndef MODULA_WORKER_EVALS_H
#define MODULA_WORKER_EVALS_H

#include <cjson/cJSON.h>

/* A new array of {"domain", "metric", "value"} from the done event's
 * "evaluations" (NULL: an empty array). NULL only when out of memory. */
cJSON *worker_evals_flat(const cJSON *evals);

#endif
