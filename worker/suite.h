/* suite.h: the embedded multi-domain suite, generated from a seed.
 *
 * Five domains of short exact-match tasks for a tiny byte-level model:
 * universal (word instructions), math (integer arithmetic), code (tiny
 * Python programs), logic (boolean expressions) and units (conversions, the
 * held-back domain of the pluggability experiment). A record is
 *     {"domain": "math", "prompt": "Q: 37+58\nA: ", "response": "95\n"}
 * with prompt + response at most SUITE_MAX_BYTES bytes. A prompt belongs to
 * the test split when its hash says so (suite_is_test), whatever the seed,
 * level or counts: train and test never share a prompt, not even across
 * seeds. docs/suite.md describes every task. This is a data generator, not a
 * data loader: the engine reads the JSONL files it writes.
 */
#ifndef MODULA_SUITE_H
#define MODULA_SUITE_H

#include <stddef.h>
#include <stdint.h>

#define SUITE_VERSION 1
#define SUITE_MAX_BYTES 56  /* prompt + response, in bytes */
#define SUITE_LEVEL_MAX 3

/* splitmix64: small, seedable, the same stream on every machine. Also used
 * by the corpus builder's shuffle. */
struct suite_rng {
	uint64_t state;
};

void suite_rng_seed(struct suite_rng *r, uint64_t seed);
uint64_t suite_rng_next(struct suite_rng *r);
/* Uniform in [0, n); n must be > 0. */
uint32_t suite_rng_below(struct suite_rng *r, uint32_t n);

/* The domain names in their canonical order, NULL-terminated. */
extern const char *const suite_domain_names[];

/* 1 when `prompt` belongs to the test split, 0 when to the train split. */
int suite_is_test(const char *prompt);

/* Draw one record of `domain` at `level` (1..SUITE_LEVEL_MAX) into the
 * caller's buffers. The draw may exceed SUITE_MAX_BYTES; suite_write redraws
 * such records. 0, or -1 via err_set() on an unknown domain or level. */
int suite_draw(const char *domain, int level, struct suite_rng *r,
               char *prompt, size_t prompt_size, char *response, size_t response_size);

struct suite_domain {
	const char *name;
	int level;
};

/* Write DIR/<domain>.train.jsonl and DIR/<domain>.test.jsonl for each
 * domain, and DIR/manifest.json (seed, counts, sizes, sha256 of each file).
 * DIR is created when missing; files are replaced atomically. Each domain's
 * stream depends only on (seed, name, level), so adding a domain leaves the
 * others' files byte-identical. -1 via err_set() when a domain is unknown
 * or has too few distinct prompts for the counts asked. */
int suite_write(const char *dir, uint64_t seed, int n_train, int n_test,
                const struct suite_domain *domains, int n_domains);

/* Parse the integer `text` of option `opt` within [lo, hi]. 0, or -1 via
 * err_set() naming the option. Shared by the suite and corpus commands. */
int suite_parse_int(const char *opt, const char *text, long long lo, long long hi, long long *out);

/* `modula-engine suite ...`; argv[0] is "suite". Returns the exit status:
 * 0 done, 1 failed (message printed), 2 bad usage. */
int cmd_suite(int argc, char **argv);

#endif
