/* suite_gen.h: the domain generators behind suite.c (private to the suite).
 *
 * A generator draws one task at `level` (1..SUITE_LEVEL_MAX) and writes its
 * text (without the "Q: " frame) and its exact answer (without the final
 * newline). It computes the answer while it builds the task; it never parses
 * what it wrote. Buffers of SUITE_GEN_BUF bytes are always large enough.
 */
#ifndef MODULA_SUITE_GEN_H
#define MODULA_SUITE_GEN_H

#include "worker/suite.h"

#define SUITE_GEN_BUF 128

typedef void suite_gen_fn(struct suite_rng *r, int level, char *task, char *answer);

suite_gen_fn suite_gen_universal;  /* suite_text.c */
suite_gen_fn suite_gen_math;       /* suite_expr.c */
suite_gen_fn suite_gen_code;
suite_gen_fn suite_gen_logic;
suite_gen_fn suite_gen_units;

/* A lowercase word of lo..hi letters: an English word from the built-in
 * list or a pronounceable made-up one, half the time each. `out` holds at
 * least hi + 1 bytes. */
void suite_word(struct suite_rng *r, int lo, int hi, char *out);

#endif
