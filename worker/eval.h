/* eval.h: evaluation of a base model with a PEFT LoRA, a MoDULA bundle or
 * nothing, `modula-engine eval JOB.json` (docs/modula.md).
 *
 * Per domain (a JSONL test file of {"prompt", "response"}): the mean
 * cross-entropy of the response tokens (teacher forcing, the training
 * loss) and the exact-match accuracy of greedy decoding with a KV cache
 * (decode.h): [bos] prompt, then the argmax token until eos, a newline
 * when the answer ends with one, or the text grows past the answer; a
 * record counts when the text equals the response. General capability:
 * the accuracy of the domain named by "general" and the perplexity of a
 * held-out plain text. Router distributions: per adapted layer, the mean
 * routing weight of each router row over the non-padding tokens of each
 * domain's test records. The result is one JSON object, written to "out"
 * and carried by the done event's "evaluations".
 *
 * Not a benchmark harness: exact match only, one sequence at a time.
 */
#ifndef MODULA_EVAL_H
#define MODULA_EVAL_H

#include "worker/data.h"
#include "worker/decode.h"
#include "worker/tokenizer.h"
#include "worker/train.h"

#include "kernels/device.h"

#include <cjson/cJSON.h>
#include <stdio.h>

typedef struct eval_domain {
	char name[64];
	char data[TRAIN_PATH_MAX];
} eval_domain_t;

typedef struct eval_job {
	char model[TRAIN_PATH_MAX];
	char adapter[TRAIN_PATH_MAX];   /* "" for the base model */
	char tokenizer[TRAIN_PATH_MAX]; /* "" (the model's or bytes), "bytes" or a file */
	eval_domain_t *dom;
	int ndom;
	char general[64];               /* the general-capability domain, or "" */
	char text[TRAIN_PATH_MAX];      /* held-out plain text, or "" */
	long text_tokens;               /* at most this many tokens of it */
	char route[64];                 /* "" soft; an expert name: that expert alone */
	int max_records, max_new, batch, seq_len;
	char out[TRAIN_PATH_MAX];       /* "" for none */
	/* the device path's op table (modula-engine eval --device), or NULL
	 * for the CPU engine; what the device path cannot run falls back */
	const struct kdevice_ops *K;
} eval_job_t;

/* 0, or -1 via err_set() naming the field. */
int eval_job_parse(const cJSON *j, const char *base_dir, eval_job_t *job);
void eval_job_free(eval_job_t *job);

/* Run it: start/progress/done events on `events`. 0, or -1 via err_set(). */
int eval_run(const eval_job_t *job, FILE *events);

/* Exact match of one record by greedy decoding on `dec`'s model: the
 * prompt (ids before first_target) is fed, then each argmax token must be
 * the response's, up to its last token when that one ends in a newline,
 * else followed by `eos` (when >= 0; a trailing eos in the record is the
 * one compared). 1 exact, 0 not, -1 via err_set(). */
int eval_exact(decode_t *dec, tokenizer_t *tok, int vocab, const data_record_t *rec, int eos);

#endif
