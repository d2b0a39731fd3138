/* data.h: supervised training data: JSONL records {"prompt": ..., "response":
 * ...} (an optional "domain" string, as the suite writes, is ignored),
 * tokenized once, served as padded batches.
 *
 * One record becomes ids = [bos] prompt response [eos] (bos/eos when the
 * tokenizer has them), cut to seq_len + 1 ids. Inputs are ids[0..n-2],
 * targets ids[1..n-1]; a target counts for the loss only when it is a
 * response token or the eos (loss on responses only); every other target,
 * and every padding position, is -1 (the ignore index). A batch is padded
 * to its longest record, not to seq_len. Records whose response is cut
 * away entirely are dropped (counted in `dropped`).
 *
 * Order: epoch e visits the records in a permutation drawn from (seed, e);
 * the position in the stream is the whole state (data_cursor_t), so a
 * checkpoint stores it and a resumed run sees the same batches. Not a
 * streaming loader: the tokenized records live in memory.
 */
#ifndef MODULA_DATA_H
#define MODULA_DATA_H

#include "worker/tokenizer.h"

#include <stdint.h>

typedef struct data_cursor {
	long epoch;
	long pos;               /* next record within the epoch's permutation */
} data_cursor_t;

typedef struct data_record {
	int32_t *ids;
	int n;                  /* ids (<= seq_len + 1) */
	int first_target;       /* targets from this index of ids on count */
} data_record_t;

typedef struct data {
	data_record_t *rec;
	int n, cap;
	int dropped;
	long tokens;            /* target tokens over all records */
	int pad_id;
	uint64_t seed;
	int *perm;              /* permutation of the cached epoch */
	long perm_epoch;
} data_t;

/* Read and tokenize JSONL files. NULL via err_set() naming file and line. */
data_t *data_load(const char *const *paths, int npaths, tokenizer_t *tok, int seq_len,
		  uint64_t seed);
void data_destroy(data_t **d);

/* Fill tokens[b,t] and targets[b,t] with the next b records from *cur
 * (wrapping into the next epoch) and advance it; *t is the padded length
 * (<= seq_len). Buffers hold b * seq_len ints. */
void data_next_batch(data_t *d, data_cursor_t *cur, int b, int *tokens, int *targets, int *t);

#endif
