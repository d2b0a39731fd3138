/* train.h: one training job, `modula-engine train JOB.json`.
 *
 * A job (docs/engine.md) names a base model (a Hugging Face folder, or
 * "random": the embedded tiny configuration initialised from the seed),
 * JSONL data, the mode (full | lora) and the hyper-parameters, and an
 * out_dir. The run prints JSON lines on `events`:
 *   {"event":"start","total_steps":N,...}
 *   {"event":"progress","step":k,"total_steps":N,"loss":x,"lr":y,"tokens_per_s":z,"elapsed_s":t}
 *   {"event":"checkpoint","step":k,"path":"checkpoints/step-....safetensors","sha256":"..."}
 *   {"event":"done","outputs":[{"name":..,"path":..,"sha256":..}],"evaluations":[]}
 * (the error line is the caller's: train_run only returns -1 with err_set).
 *
 * Lifecycle of an out_dir:
 *   empty --train_run--> checkpoints/step-K ... --train_run--> outputs + done
 *            ^ killed at any point: the next train_run resumes from the newest
 *              valid checkpoint of the SAME job (sha256 of the job without
 *              "stop_at"), bit-identically; another job's checkpoints are refused.
 *              train_request_stop() (SIGTERM) checkpoints the current step first.
 * Not a scheduler: one job, one process; evaluation is elsewhere.
 */
#ifndef MODULA_TRAIN_H
#define MODULA_TRAIN_H

#include "worker/lora.h"
#include "worker/model_config.h"
#include "worker/optim.h"
#include "kernels/device.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#define TRAIN_PATH_MAX 4096

typedef struct train_job {
	char model[TRAIN_PATH_MAX];     /* a folder, or "random" */
	model_config_t random_cfg;      /* the config when model is "random" */
	char tokenizer[TRAIN_PATH_MAX]; /* "bytes" or a tokenizer.json */
	char **data;
	int ndata;
	int full;                       /* 1 full-parameter, 0 LoRA */
	lora_config_t lora;
	long steps;
	int batch, seq_len, accum;
	optim_config_t opt;
	uint64_t seed;
	long checkpoint_every, progress_every, stop_at;
	char out_dir[TRAIN_PATH_MAX];
	char job_sha256[65];            /* of the job without stop_at */
	char *job_text;                 /* the job, compact JSON */
	/* Not from the job file: the device path's backend (dmodel.h) when the
	 * engine runs with --device cuda (or table); NULL for the CPU engine.
	 * Checkpoints do not depend on it: a job resumes on either. */
	const struct kdevice_ops *K;
} train_job_t;

/* The embedded tiny LLaMA configuration (byte-level vocabulary). */
void train_default_config(model_config_t *c);

/* Read a job object; relative paths are taken from `base_dir` (the job
 * file's folder). 0, or -1 via err_set() naming the field. */
int train_job_parse(const cJSON *j, const char *base_dir, train_job_t *job);
void train_job_free(train_job_t *job);

/* Append {"name", "path": rel, "sha256"} for the file out_dir/rel to the
 * done event's `outs` array (the hash is read from the file). 0, or -1 via
 * err_set() when the file cannot be read. */
int train_add_output(cJSON *outs, const char *out_dir, const char *name, const char *rel);

/* Run (or resume) the job, printing events. 0, or -1 via err_set(). */
int train_run(const train_job_t *job, FILE *events);

/* Ask the running train_run to stop after its current step: it writes a
 * checkpoint and returns -1 ("stopped by a signal at step K ..."). Async-
 * signal-safe: meant for a SIGTERM/SIGINT handler. */
void train_request_stop(void);
/* 1 when the last train_run ended because of train_request_stop(). */
int train_was_stopped(void);

#endif
