/* job_catalog.h: the registry's catalogue filled from succeeded jobs
 * (docs/specs.md, "Registry rows"):
 *   data (suite)   each DOMAIN.SPLIT output -> datasets "suite-DOMAIN-sSEED-lLEVEL-TRAIN-TEST"
 *   data (corpus)  text, holdout, records   -> datasets "fortunes-sSEED-bBYTES" (domain general)
 *   train, model "random" (pretraining)     -> base_models "embedded-sSEED-STEPS"
 *   stage          each expert output       -> experts "METHOD/NAME" (universal or domain)
 *                  the router output        -> routers "METHOD/D1+D2..." (kind METHOD)
 * with the record counts the data job reported (metrics "records.OUTPUT"),
 * the ranks of the stage's spec, the base model its inputs name, and the
 * job. molora's experts e1..eN are neither universal nor domain experts:
 * only its router is listed. A job that succeeds from the cache adds
 * nothing (its source did). Not the listings: daemon/api.c.
 */
#ifndef MODULA_DAEMON_JOB_CATALOG_H
#define MODULA_DAEMON_JOB_CATALOG_H

#include "daemon/registry.h"

#include <stdint.h>

/* Add the rows of job `job_id`, which just succeeded (its outputs are
 * recorded), inside the current transaction. A job that makes none adds
 * nothing. 0, or -1 via err_set() (the caller decides whether that undoes
 * the job's success). */
int job_catalog_add(registry_t *r, int64_t job_id, int64_t now_ms);

#endif
