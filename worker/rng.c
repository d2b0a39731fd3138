/* rng.c: splitmix64 (Steele, Lea, Flood 2014), see rng.h. */
#include "worker/rng.h"

#include <math.h>

static uint64_t s_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void rng_seed(rng_t *r, uint64_t seed)
{
	r->s = seed;
}

uint64_t rng_next(rng_t *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	return s_mix(r->s);
}

float rng_uniform(rng_t *r)
{
	return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float rng_normal(rng_t *r)
{
	double u1 = ((rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
	double u2 = (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);

	return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t rng_hash(uint64_t a, uint64_t b)
{
	return s_mix(s_mix(a + 0x9e3779b97f4a7c15ull) ^ (b * 0xd1b54a32d192ed03ull));
}

float rng_hash_uniform(uint64_t a, uint64_t b)
{
	return (float)(rng_hash(a, b) >> 40) * (1.0f / 16777216.0f);
}
