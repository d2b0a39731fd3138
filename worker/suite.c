/* suite.c: the suite's random stream, split rule, record framing and files
 * (see suite.h). The tasks themselves are in suite_text.c and suite_expr.c.
 * Not a loader or a sampler for training: it writes files and stops. */
#include "worker/suite_gen.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "sha256.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const suite_domain_names[] = { "universal", "math", "code", "logic", "units", NULL };

static suite_gen_fn *const s_gens[] = {
	suite_gen_universal, suite_gen_math, suite_gen_code, suite_gen_logic, suite_gen_units,
};

void suite_rng_seed(struct suite_rng *r, uint64_t seed)
{
	r->state = seed;
}

/* splitmix64's output function, also used to mix hashes. */
static uint64_t s_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

uint64_t suite_rng_next(struct suite_rng *r)
{
	r->state += 0x9e3779b97f4a7c15ULL;
	return s_mix(r->state);
}

uint32_t suite_rng_below(struct suite_rng *r, uint32_t n)
{
	return (uint32_t)(((suite_rng_next(r) >> 32) * n) >> 32);
}

/* FNV-1a, 64 bits. */
static uint64_t s_fnv(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

int suite_is_test(const char *prompt)
{
	return (s_mix(s_fnv(prompt)) & 3) == 0;
}

static int s_domain_index(const char *name)
{
	int i;

	for (i = 0; suite_domain_names[i]; i++)
		if (!strcmp(suite_domain_names[i], name))
			return i;
	return err_set("unknown suite domain '%s' (known: universal, math, code, logic, units)", name);
}

int suite_draw(const char *domain, int level, struct suite_rng *r,
               char *prompt, size_t prompt_size, char *response, size_t response_size)
{
	char task[SUITE_GEN_BUF], answer[SUITE_GEN_BUF];
	int d = s_domain_index(domain), n, m;

	if (d < 0)
		return -1;
	if (level < 1 || level > SUITE_LEVEL_MAX)
		return err_set("bad level %d for domain '%s': expected 1 to %d", level, domain, SUITE_LEVEL_MAX);
	s_gens[d](r, level, task, answer);
	n = snprintf(prompt, prompt_size, "Q: %s\nA: ", task);
	m = snprintf(response, response_size, "%s\n", answer);
	if (n < 0 || (size_t)n >= prompt_size || m < 0 || (size_t)m >= response_size)
		return err_set("suite record of domain '%s' does not fit its buffer", domain);
	return 0;
}

/* A growing byte buffer for one JSONL file. */
struct s_buf {
	char *data;
	size_t len, cap;
};

static int s_buf_add(struct s_buf *b, const char *s, size_t n)
{
	char *p;
	size_t cap = b->cap ? b->cap : 4096;

	while (cap < b->len + n + 1)
		cap *= 2;
	if (cap != b->cap) {
		if (!(p = realloc(b->data, cap)))
			return err_set("out of memory generating the suite");
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	return 0;
}

static int s_add_record(struct s_buf *b, const char *domain, const char *prompt, const char *response)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;
	int rc = -1;

	if (!o || !cJSON_AddStringToObject(o, "domain", domain) || !cJSON_AddStringToObject(o, "prompt", prompt) ||
	    !cJSON_AddStringToObject(o, "response", response) || !(text = jsonu_print(o))) {
		err_set("out of memory generating the suite");
		goto out;
	}
	rc = s_buf_add(b, text, strlen(text)) < 0 || s_buf_add(b, "\n", 1) < 0 ? -1 : 0;
out:
	free(text);
	cJSON_Delete(o);
	return rc;
}

/* Insert `h` into the open-addressing set (0 stands for empty). 1 when it
 * was new, 0 when already there. `mask` + 1 is the table's power-of-two size. */
static int s_set_insert(uint64_t *set, size_t mask, uint64_t h)
{
	size_t i;

	h = h ? h : 1;
	for (i = (size_t)s_mix(h) & mask; set[i]; i = (i + 1) & mask)
		if (set[i] == h)
			return 0;
	set[i] = h;
	return 1;
}

/* Write one split's buffer to DIR/<domain>.<split>.jsonl and describe it. */
static int s_write_split(const char *dir, const char *domain, const char *split,
                         const struct s_buf *b, int records, cJSON *desc)
{
	char name[64], path[PATH_MAX], hex[SHA256_HEX_LEN + 1];
	uint8_t digest[SHA256_LEN];
	cJSON *o;

	snprintf(name, sizeof name, "%s.%s.jsonl", domain, split);
	if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
		return err_set("suite folder path too long: '%s'", dir);
	if (fsx_write_atomic(path, b->len ? b->data : "", b->len) < 0 || sha256_buf(b->len ? b->data : "", b->len, digest) < 0)
		return -1;
	sha256_hex(digest, hex);
	if (!(o = cJSON_AddObjectToObject(desc, split)) || !cJSON_AddStringToObject(o, "file", name) ||
	    !cJSON_AddNumberToObject(o, "records", records) || !cJSON_AddNumberToObject(o, "bytes", (double)b->len) ||
	    !cJSON_AddStringToObject(o, "sha256", hex))
		return err_set("out of memory describing the suite");
	return 0;
}

/* Generate one domain's two splits and describe them in `desc`. */
static int s_write_domain(const char *dir, uint64_t seed, int n_train, int n_test,
                          const struct suite_domain *dom, cJSON *desc)
{
	struct s_buf bufs[2] = { { NULL, 0, 0 }, { NULL, 0, 0 } };
	int counts[2] = { 0, 0 }, want[2] = { n_train, n_test }, split, rc = -1;
	char prompt[SUITE_GEN_BUF + 8], response[SUITE_GEN_BUF + 2];
	long draws = 0, max_draws = 100L * (n_train + n_test) + 10000;
	size_t mask = 15;
	uint64_t *set = NULL;
	struct suite_rng r;

	while (mask + 1 < 2 * (size_t)(n_train + n_test))
		mask = mask * 2 + 1;
	if (!(set = calloc(mask + 1, sizeof *set)))
		return err_set("out of memory generating the suite");
	suite_rng_seed(&r, seed ^ s_mix(s_fnv(dom->name) + (uint64_t)dom->level));
	while (counts[0] < want[0] || counts[1] < want[1]) {
		if (draws++ == max_draws) {
			err_set("domain '%s' at level %d has too few distinct prompts: %d train and %d test "
			        "records after %ld draws, %d and %d asked; ask for fewer records or another level",
			        dom->name, dom->level, counts[0], counts[1], max_draws, n_train, n_test);
			goto out;
		}
		if (suite_draw(dom->name, dom->level, &r, prompt, sizeof prompt, response, sizeof response) < 0)
			goto out;
		split = suite_is_test(prompt);
		if (strlen(prompt) + strlen(response) > SUITE_MAX_BYTES || counts[split] == want[split] ||
		    !s_set_insert(set, mask, s_fnv(prompt)))
			continue;
		if (s_add_record(&bufs[split], dom->name, prompt, response) < 0)
			goto out;
		counts[split]++;
	}
	if (!cJSON_AddStringToObject(desc, "name", dom->name) || !cJSON_AddNumberToObject(desc, "level", dom->level)) {
		err_set("out of memory describing the suite");
		goto out;
	}
	if (s_write_split(dir, dom->name, "train", &bufs[0], counts[0], desc) < 0 ||
	    s_write_split(dir, dom->name, "test", &bufs[1], counts[1], desc) < 0)
		goto out;
	rc = 0;
out:
	free(set);
	free(bufs[0].data);
	free(bufs[1].data);
	return rc;
}

int suite_write(const char *dir, uint64_t seed, int n_train, int n_test,
                const struct suite_domain *domains, int n_domains)
{
	char path[PATH_MAX];
	cJSON *man = NULL, *arr, *desc;
	int i, j, rc = -1;

	if (n_train < 0 || n_test < 0)
		return err_set("bad record counts %d and %d: expected 0 or more", n_train, n_test);
	for (i = 0; i < n_domains; i++) {
		if (s_domain_index(domains[i].name) < 0)
			return -1;
		if (domains[i].level < 1 || domains[i].level > SUITE_LEVEL_MAX)
			return err_set("bad level %d for domain '%s': expected 1 to %d",
			               domains[i].level, domains[i].name, SUITE_LEVEL_MAX);
		for (j = 0; j < i; j++)
			if (!strcmp(domains[i].name, domains[j].name))
				return err_set("domain '%s' named twice", domains[i].name);
	}
	if (snprintf(path, sizeof path, "%s/manifest.json", dir) >= (int)sizeof path)
		return err_set("suite folder path too long: '%s'", dir);
	if (fsx_mkdirs(dir, 0755) < 0)
		return -1;
	if (!(man = cJSON_CreateObject()) || !cJSON_AddStringToObject(man, "generator", "modula-engine suite") ||
	    !cJSON_AddNumberToObject(man, "version", SUITE_VERSION) || !cJSON_AddNumberToObject(man, "seed", (double)seed) ||
	    !cJSON_AddStringToObject(man, "prompt_format", "Q: <task>\nA: ") ||
	    !cJSON_AddStringToObject(man, "response_format", "<answer>\n") ||
	    !cJSON_AddNumberToObject(man, "max_bytes", SUITE_MAX_BYTES) ||
	    !cJSON_AddStringToObject(man, "split_rule", "test when splitmix64_mix(fnv1a64(prompt)) % 4 == 0") ||
	    !(arr = cJSON_AddArrayToObject(man, "domains"))) {
		err_set("out of memory describing the suite");
		goto out;
	}
	for (i = 0; i < n_domains; i++) {
		if (!(desc = cJSON_CreateObject()) || !cJSON_AddItemToArray(arr, desc)) {
			cJSON_Delete(desc);
			err_set("out of memory describing the suite");
			goto out;
		}
		if (s_write_domain(dir, seed, n_train, n_test, &domains[i], desc) < 0)
			goto out;
	}
	rc = jsonu_write_file(path, man);
out:
	cJSON_Delete(man);
	return rc;
}

int suite_parse_int(const char *opt, const char *text, long long lo, long long hi, long long *out)
{
	char *end;
	long long v;

	if (!text)
		return err_set("option '%s' needs a value", opt);
	errno = 0;
	v = strtoll(text, &end, 10);
	if (errno || end == text || *end || v < lo || v > hi)
		return err_set("bad value '%s' for '%s': expected an integer from %lld to %lld", text, opt, lo, hi);
	*out = v;
	return 0;
}
