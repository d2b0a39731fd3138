/* stage.h: the training stages of the MoDULA methods,
 * `modula-engine stage JOB.json` (docs/modula.md).
 *
 *   universal  train expert `*` alone (fixed routing to expert 0)
 *   domain     train domain experts with `*` frozen: each domain its own
 *              data, its rows a contiguous segment of one batch over one
 *              pass of the frozen base, its own optimizer, loss normalised
 *              per domain, so each expert ends as it would alone
 *   router     train the routers only (experts frozen, soft routing); a
 *              given router file is the start (old rows kept, new zero)
 *   joint      lora (one expert on the mixed data) or molora (n experts
 *              and the routers together)
 * The job holds the engine's train-job fields (worker/train.h: model,
 * tokenizer, data, steps, batch, seq_len, accum, lr, schedule, seed,
 * progress_every, out_dir) plus the stage's own. Outputs under out_dir:
 * experts/NAME.safetensors, router.safetensors, bundle/ (router and joint
 * stages), adapter/ (joint lora, PEFT). Events are the engine's JSON lines
 * (start, progress, done; the caller prints the error line).
 *
 * Not resumable: a stage that dies is run again from the start (no
 * checkpoints yet). Not a scheduler: the daemon chains the stages.
 */
#ifndef MODULA_STAGE_H
#define MODULA_STAGE_H

#include "worker/moe.h"
#include "worker/train.h"

#include <cjson/cJSON.h>
#include <stdio.h>

enum stage_kind { STAGE_UNIVERSAL, STAGE_DOMAIN, STAGE_ROUTER, STAGE_JOINT };

typedef struct stage_input {
	char name[MOE_NAME_MAX];
	char path[TRAIN_PATH_MAX];
} stage_input_t;

typedef struct stage_job {
	train_job_t t;          /* the common fields; t.data: the stage's data
	                         * (domain stage: one file per trained domain) */
	int kind;               /* enum stage_kind */
	moe_config_t cfg;       /* method, ranks, targets, slope, top_k, aux */
	stage_input_t *in;      /* input experts (frozen), by name */
	int nin;
	char router[TRAIN_PATH_MAX]; /* the router to start from, or "" */
	char (*names)[MOE_NAME_MAX]; /* trained domains (domain stage) or molora experts */
	int nnames;
} stage_job_t;

/* Read a stage job; relative paths from `base_dir`. 0, or -1 via err_set(). */
int stage_job_parse(const cJSON *j, const char *base_dir, stage_job_t *job);
void stage_job_free(stage_job_t *job);

/* Run the stage, printing events. 0, or -1 via err_set(). */
int stage_run(const stage_job_t *job, FILE *events);

#endif
