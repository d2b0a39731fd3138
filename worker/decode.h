/* decode.h: incremental forward with a KV cache, for greedy decoding.
 *
 * The same decoder as model.c (model.h), one sequence at a time: each
 * decode_feed() runs the new tokens at positions pos..pos+n-1 against the
 * cached keys and values of the earlier ones and appends theirs, with the
 * model's adapters (LoRA, mixtures) adding their deltas as in training. The
 * logits of the last fed token are kept. Inference only: no gradients, no
 * dropout. Not batched across sequences.
 */
#ifndef MODULA_DECODE_H
#define MODULA_DECODE_H

#include "worker/model.h"

typedef struct decode decode_t;

/* A cache for sequences of up to `max_t` tokens (<= max_seq) on `m`; the
 * model's activations are reserved for [1, max_t] (the adapters need the
 * room). NULL via err_set(). */
decode_t *decode_new(model_t *m, int max_t);
void decode_destroy(decode_t **d);

/* Forget the sequence. */
void decode_reset(decode_t *d);

/* Run ids[0..n) after what was fed; returns the logits [V] of the last
 * one (valid until the next call), or NULL via err_set() when the cache
 * would overflow. */
const float *decode_feed(decode_t *d, const int *ids, int n);

/* Tokens fed since the last reset. */
int decode_pos(const decode_t *d);

#endif
