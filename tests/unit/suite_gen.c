/* suite_gen.c: unit tests of the suite generator and the corpus record
 * normaliser: determinism, the split rule, the record frame and bound,
 * JSONL validity, the manifest, the capacity error, the command line.
 * The answers are checked independently by tests/suite-check.py. */
#include "tap.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "sha256.h"
#include "worker/corpus.h"
#include "worker/suite.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct suite_domain s_all[] = {
	{ "universal", 1 }, { "math", 2 }, { "code", 3 }, { "logic", 2 }, { "units", 3 },
};
#define N_ALL 5

static char s_tmp[] = "/tmp/modula-suite-gen-XXXXXX";

/* DIR/NAME into buf (empty when it does not fit, so opening it fails). */
static char *s_join(char *buf, size_t n, const char *dir, const char *name)
{
	if (snprintf(buf, n, "%s/%s", dir, name) >= (int)n)
		buf[0] = '\0';
	return buf;
}

/* 1 when DIR_A/name and DIR_B/name hold the same bytes. */
static int s_same_file(const char *a, const char *b, const char *name)
{
	char pa[PATH_MAX], pb[PATH_MAX], *da = NULL, *db = NULL;
	size_t la = 0, lb = 0;
	int same;

	s_join(pa, sizeof pa, a, name);
	s_join(pb, sizeof pb, b, name);
	same = fsx_read_all(pa, &da, &la) == 0 && fsx_read_all(pb, &db, &lb) == 0 && la == lb && !memcmp(da, db, la);
	free(da);
	free(db);
	return same;
}

static void s_dir(char *out, size_t n, const char *name)
{
	s_join(out, n, s_tmp, name);
}

static void test_rng(void)
{
	struct suite_rng a, b;
	int i, same = 1, inside = 1;

	suite_rng_seed(&a, 42);
	suite_rng_seed(&b, 42);
	for (i = 0; i < 1000; i++)
		same &= suite_rng_next(&a) == suite_rng_next(&b);
	for (i = 0; i < 1000; i++)
		inside &= suite_rng_below(&a, 7) < 7;
	TAP_OK(same, "the same seed gives the same stream");
	suite_rng_seed(&b, 43);
	TAP_OK(suite_rng_next(&a) != suite_rng_next(&b), "another seed gives another stream");
	TAP_OK(inside, "suite_rng_below stays below its bound");
}

static void test_draw(void)
{
	char p[256], r[256];
	struct suite_rng g;

	suite_rng_seed(&g, 1);
	TAP_OK(suite_draw("math", 1, &g, p, sizeof p, r, sizeof r) == 0 && !strncmp(p, "Q: ", 3), "a math draw is framed");
	TAP_OK(suite_draw("poetry", 1, &g, p, sizeof p, r, sizeof r) < 0 && strstr(err_msg(), "'poetry'"),
	       "unknown domain refused: %s", err_msg());
	TAP_OK(suite_draw("math", 4, &g, p, sizeof p, r, sizeof r) < 0 && strstr(err_msg(), "level 4"),
	       "level 4 refused: %s", err_msg());
	TAP_OK(suite_draw("math", 1, &g, p, 4, r, sizeof r) < 0, "a too small buffer is refused: %s", err_msg());
}

/* Check one JSONL file line by line; returns the number of bad lines and
 * adds the prompt hashes of its records to `seen` (a simple list). */
static int s_check_file(const char *dir, const char *domain, int test, int want, char ***seen, int *n_seen)
{
	char path[PATH_MAX], name[64], *text = NULL, *line, *save = NULL;
	const char *prompt, *response, *dom;
	int bad = 0, n = 0, i;
	size_t len;
	cJSON *o;

	snprintf(name, sizeof name, "%s.%s.jsonl", domain, test ? "test" : "train");
	s_join(path, sizeof path, dir, name);
	if (fsx_read_all(path, &text, &len) < 0)
		return tap_diag("%s", err_msg()), 1;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
		o = jsonu_parse(line, strlen(line), path);
		if (!o || cJSON_GetArraySize(o) != 3 || jsonu_req_str(o, "domain", &dom) < 0 ||
		    jsonu_req_str(o, "prompt", &prompt) < 0 || jsonu_req_str(o, "response", &response) < 0 ||
		    strcmp(dom, domain) || strncmp(prompt, "Q: ", 3) || strlen(prompt) < 8 ||
		    strcmp(prompt + strlen(prompt) - 4, "\nA: ") || strchr(prompt, '\n') != prompt + strlen(prompt) - 4 ||
		    strchr(response, '\n') != response + strlen(response) - 1 || strlen(response) < 2 ||
		    strlen(prompt) + strlen(response) > SUITE_MAX_BYTES || suite_is_test(prompt) != test) {
			if (bad++ < 3)
				tap_diag("bad record in %s: %s", path, line);
		} else {
			for (i = 0; i < *n_seen; i++)
				if (!strcmp((*seen)[i], prompt))
					break;
			if (i < *n_seen && bad++ < 3)
				tap_diag("prompt repeated in %s: %s", path, line);
			*seen = realloc(*seen, (size_t)(*n_seen + 1) * sizeof **seen);
			(*seen)[(*n_seen)++] = strdup(prompt);
		}
		cJSON_Delete(o);
	}
	free(text);
	if (n != want) {
		tap_diag("%s has %d records, %d expected", path, n, want);
		bad++;
	}
	return bad;
}

static void test_records(const char *dir)
{
	char **seen = NULL;
	int i, n_seen = 0, bad = 0;

	for (i = 0; i < N_ALL; i++) {
		/* One list per domain: train and test together, so a prompt in
		 * both splits counts as a repeat. */
		bad += s_check_file(dir, s_all[i].name, 0, 300, &seen, &n_seen);
		bad += s_check_file(dir, s_all[i].name, 1, 60, &seen, &n_seen);
		while (n_seen > 0)
			free(seen[--n_seen]);
	}
	free(seen);
	TAP_OK(bad == 0, "every line is a valid 3-key record, framed, within %d bytes, in its hash split, "
	       "never repeated nor shared by train and test (%d bad)", SUITE_MAX_BYTES, bad);
}

static void test_manifest(const char *dir)
{
	char path[PATH_MAX], hex[SHA256_HEX_LEN + 1];
	const char *file, *sha;
	const cJSON *d, *split;
	long long seed = -1, records;
	int ok = 1, n = 0, k;
	cJSON *man;

	s_join(path, sizeof path, dir, "manifest.json");
	man = jsonu_read_file(path);
	ok = man && jsonu_req_int(man, "seed", &seed) == 0;
	TAP_OK(ok && seed == 7, "the manifest names the seed (%lld)", seed);
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(man, "domains")) {
		for (k = 0; k < 2; k++) {
			split = cJSON_GetObjectItem(d, k ? "test" : "train");
			if (jsonu_req_str(split, "file", &file) < 0 || jsonu_req_str(split, "sha256", &sha) < 0 ||
			    jsonu_req_int(split, "records", &records) < 0) {
				ok = 0;
				continue;
			}
			s_join(path, sizeof path, dir, file);
			ok &= sha256_file(path, hex) == 0 && !strcmp(hex, sha) && records == (k ? 60 : 300);
		}
		n++;
	}
	TAP_OK(ok && n == N_ALL, "the manifest's counts and sha256 match the %d domains' files", n);
	cJSON_Delete(man);
}

static void test_write(void)
{
	static const struct suite_domain math_only[] = { { "math", 2 } };
	static const char *const files[] = { "universal.train.jsonl", "universal.test.jsonl", "math.train.jsonl",
	                                     "math.test.jsonl", "code.train.jsonl", "code.test.jsonl",
	                                     "logic.train.jsonl", "logic.test.jsonl", "units.train.jsonl",
	                                     "units.test.jsonl", "manifest.json" };
	char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], m[PATH_MAX];
	int i, same = 1, differ = 1;

	s_dir(a, sizeof a, "a");
	s_dir(b, sizeof b, "b");
	s_dir(c, sizeof c, "c");
	s_dir(m, sizeof m, "m");
	err_clear();
	i = suite_write(a, 7, 300, 60, s_all, N_ALL);
	TAP_OK(i == 0, "suite written (%s)", err_msg());
	TAP_OK(suite_write(b, 7, 300, 60, s_all, N_ALL) == 0, "suite written again with the same seed");
	TAP_OK(suite_write(c, 8, 300, 60, s_all, N_ALL) == 0, "suite written with another seed");
	for (i = 0; i < (int)(sizeof files / sizeof files[0]); i++) {
		same &= s_same_file(a, b, files[i]);
		differ &= !s_same_file(a, c, files[i]);
	}
	TAP_OK(same, "the same seed gives byte-identical files");
	TAP_OK(differ, "another seed changes every file");
	TAP_OK(suite_write(m, 7, 300, 60, math_only, 1) == 0 && s_same_file(a, m, "math.train.jsonl") &&
	       s_same_file(a, m, "math.test.jsonl"), "a domain's files do not depend on the other domains");
	test_records(a);
	test_manifest(a);
}

static void test_refusals(void)
{
	static const struct suite_domain twice[] = { { "math", 1 }, { "math", 2 } };
	static const struct suite_domain unknown[] = { { "poetry", 1 } };
	static const struct suite_domain small[] = { { "logic", 1 } };
	char d[PATH_MAX];

	s_dir(d, sizeof d, "r");
	TAP_OK(suite_write(d, 1, 10, 10, twice, 2) < 0 && strstr(err_msg(), "named twice"), "a domain named twice is refused: %s", err_msg());
	TAP_OK(suite_write(d, 1, 10, 10, unknown, 1) < 0 && strstr(err_msg(), "'poetry'"), "an unknown domain is refused: %s", err_msg());
	TAP_OK(suite_write(d, 1, 12000, 0, small, 1) < 0 && strstr(err_msg(), "too few distinct prompts"),
	       "asking for more records than a domain has is refused: %s", err_msg());
}

static void test_cli(void)
{
	char d[PATH_MAX], f1[PATH_MAX], f2[PATH_MAX], *help[] = { "suite", "--help", NULL }, *none[] = { "suite", NULL },
	     *level[] = { "suite", "--out", d, "--level", "4", NULL }, *bad[] = { "suite", "--out", d, "--frobnicate", NULL },
	     *dom[] = { "suite", "--out", d, "--domains", "math:9", NULL },
	     *run[] = { "suite", "--out", d, "--seed", "3", "--train", "5", "--test", "2", "--domains", "logic,math:3", NULL };
	int rc[5];
	FILE *saved_out = stdout, *saved_err = stderr;

	s_dir(d, sizeof d, "cli");
	s_join(f1, sizeof f1, d, "math.train.jsonl");
	s_join(f2, sizeof f2, d, "logic.test.jsonl");
	stdout = stderr = fopen("/dev/null", "w");
	rc[0] = cmd_suite(2, help);
	rc[1] = cmd_suite(1, none);
	rc[2] = cmd_suite(5, level);
	rc[3] = cmd_suite(4, bad);
	rc[4] = cmd_suite(5, dom);
	fclose(stdout);
	stdout = saved_out;
	stderr = saved_err;
	TAP_OK(rc[0] == 0, "suite --help exits 0");
	TAP_OK(rc[1] == 2, "suite without --out exits 2");
	TAP_OK(rc[2] == 2, "suite --level 4 exits 2");
	TAP_OK(rc[3] == 2, "suite refuses an unknown option with exit 2");
	TAP_OK(rc[4] == 2, "suite refuses a bad domain level with exit 2");
	TAP_OK(cmd_suite(11, run) == 0 && access(f1, R_OK) == 0 && access(f2, R_OK) == 0,
	       "suite --domains logic,math:3 writes both domains");
}

static void s_norm_is(const char *raw, enum corpus_verdict want_v, const char *want, const char *what)
{
	char out[256];
	size_t n = 0;
	enum corpus_verdict v = corpus_normalise(raw, strlen(raw), out, &n);

	if (!TAP_OK(v == want_v && (!want || (!strcmp(out, want) && n == strlen(want))), "%s (verdict %d)", what, (int)v))
		tap_diag("got '%s'", out);
}

static void test_normalise(void)
{
	s_norm_is("  Hello,\tworld.  \n\n\n  Bye!\n", CORPUS_KEPT, "Hello, world.\nBye!", "blanks collapsed, lines trimmed, empty lines dropped");
	s_norm_is("_\bI said _\b_\b_\bno\b\bno.\n", CORPUS_KEPT, "I said no.", "overstrikes applied");
	s_norm_is("It\xe2\x80\x99s a \xe2\x80\x9c" "fine\xe2\x80\x9d day \xe2\x80\x94 ok\xe2\x80\xa6", CORPUS_KEPT,
	          "It's a \"fine\" day - ok...",
	          "typographic quotes, dash and ellipsis mapped to ASCII");
	s_norm_is("Gr\xc3\xbc\xc3\x9f" " Gott", CORPUS_NON_ASCII, NULL, "other non-ASCII drops the record");
	s_norm_is("bad \xc3" " byte", CORPUS_NON_ASCII, NULL, "malformed UTF-8 drops the record");
	s_norm_is("  /\\_/\\\n ( o.o )\n  > ^ <", CORPUS_NOT_PROSE, NULL, "ASCII art is not prose");
	s_norm_is(" \n\t\n", CORPUS_EMPTY, NULL, "a blank record is empty");
}

int main(void)
{
	char cmd[PATH_MAX + 16];

	if (!mkdtemp(s_tmp)) {
		perror("mkdtemp");
		return 1;
	}
	test_rng();
	test_draw();
	test_write();
	test_refusals();
	test_cli();
	test_normalise();
	TAP_OK(snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_tmp) < (int)sizeof cmd && system(cmd) == 0, "temporary folder removed");
	return tap_done();
}
