/* rng.h: the engine's seeded random numbers (splitmix64).
 *
 * The whole generator state is one 64-bit word, so checkpoints save it and a
 * resumed run continues the same stream. rng_hash() is the counter-based
 * variant for work split across threads (dropout masks): the value depends
 * only on its inputs, never on which thread asks first. Not cryptographic.
 */
#ifndef MODULA_RNG_H
#define MODULA_RNG_H

#include <stdint.h>

typedef struct rng {
	uint64_t s;
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
/* Uniform in [0, 1). */
float rng_uniform(rng_t *r);
/* Standard normal (Box-Muller, one value per call). */
float rng_normal(rng_t *r);
/* A well-mixed 64-bit function of (a, b). */
uint64_t rng_hash(uint64_t a, uint64_t b);
/* rng_hash mapped to [0, 1). */
float rng_hash_uniform(uint64_t a, uint64_t b);

#endif
