/* cmd_data.c: `modula-engine data JOB.json`, the embedded default's data as
 * a job the worker can run: the suite (suite_write()) and the pretraining
 * corpus (corpus_build()) written into the job's folder, announced as
 * engine outputs (the engine's JSON-lines events), so the daemon stores
 * them as artifacts like any trained file.
 *
 *   {"suite": {"seed": 1, "train": 2000, "test": 200, "level": 2,
 *              "domains": ["universal", "math"]}}
 *      outputs DOMAIN.train, DOMAIN.test (DOMAIN.train.jsonl, ...)
 *   {"corpus": {"seed": 1, "holdout_frac": 0.05, "record_bytes": 120}}
 *      outputs text (corpus.txt), holdout (corpus.holdout.txt) and records
 *      (corpus.jsonl: one {"response": ...} per fortune, cut into pieces of
 *      at most record_bytes at spaces, which `modula-engine train` reads
 *      as plain text: no prompt, every byte is a target)
 * The done event's "records" gives each output's record count (a suite
 * file's lines; the corpus's fortunes in text and holdout, its pieces in
 * records): the daemon's datasets rows.
 *
 * Not the generators: the suite and the corpus are suite.c and corpus.c.
 */
#include "config.h"
#include "worker/cmd_data.h"
#include "worker/corpus.h"
#include "worker/suite.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "sha256.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_DOMAINS 16

static void s_emit(cJSON *ev)
{
	char *s = jsonu_print(ev);

	if (s)
		printf("%s\n", s);
	free(s);
	cJSON_Delete(ev);
	fflush(stdout);
}

static int s_output(cJSON *outs, const char *base, const char *name, const char *rel)
{
	char path[2 * PATH_MAX], hex[SHA256_HEX_LEN + 1];
	cJSON *o;

	snprintf(path, sizeof path, "%s%s%s", base, base[0] ? "/" : "", rel);
	if (sha256_file(path, hex) < 0)
		return -1;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "path", rel);
	cJSON_AddStringToObject(o, "sha256", hex);
	cJSON_AddItemToArray(outs, o);
	return 0;
}

static int s_suite(const cJSON *o, const char *base, cJSON *outs, cJSON *counts)
{
	static const char *const keys[] = { "seed", "train", "test", "level", "domains", NULL };
	struct suite_domain d[S_MAX_DOMAINS];
	char rel[2][96];
	long long seed, ntrain, ntest, level;
	const cJSON *doms, *it;
	int n = 0;

	if (!cJSON_IsObject(o) || jsonu_check_keys(o, keys) < 0 || jsonu_opt_int(o, "seed", 1, &seed) < 0 ||
	    jsonu_opt_int(o, "train", 2000, &ntrain) < 0 || jsonu_opt_int(o, "test", 200, &ntest) < 0 ||
	    jsonu_opt_int(o, "level", 2, &level) < 0)
		return err_prefix("'suite'");
	doms = cJSON_GetObjectItemCaseSensitive(o, "domains");
	if (!cJSON_IsArray(doms) || !cJSON_GetArraySize(doms) || cJSON_GetArraySize(doms) > S_MAX_DOMAINS)
		return err_set("'suite.domains': expected 1 to %d domain names", S_MAX_DOMAINS);
	if (seed < 0 || ntrain < 1 || ntest < 1 || ntrain > 10000000 || ntest > 10000000 || level < 1 || level > 3)
		return err_set("'suite': seed not negative, train and test 1 to 10000000, level 1 to 3");
	cJSON_ArrayForEach(it, doms) {
		if (!cJSON_IsString(it) || strlen(it->valuestring) > 64)
			return err_set("'suite.domains': expected domain names");
		d[n++] = (struct suite_domain){ it->valuestring, (int)level };
	}
	if (suite_write(base[0] ? base : ".", (uint64_t)seed, (int)ntrain, (int)ntest, d, n) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		char name[2][80];
		for (int k = 0; k < 2; k++) {
			snprintf(rel[k], sizeof rel[k], "%s.%s.jsonl", d[i].name, k ? "test" : "train");
			snprintf(name[k], sizeof name[k], "%s.%s", d[i].name, k ? "test" : "train");
			if (s_output(outs, base, name[k], rel[k]) < 0)
				return -1;
			cJSON_AddNumberToObject(counts, name[k], (double)(k ? ntest : ntrain));
		}
	}
	return 0;
}

/* The fortunes (separated by blank lines) of a file into *n. 0 or -1. */
static int s_fortunes(const char *path, long *n)
{
	char *text = NULL;
	size_t len;

	if (fsx_read_all(path, &text, &len) < 0)
		return -1;
	*n = 0;
	for (size_t i = 0; i < len; i++)
		if (text[i] != '\n' && (i == 0 || (text[i - 1] == '\n' && i >= 2 && text[i - 2] == '\n')))
			(*n)++;
	free(text);
	return 0;
}

/* corpus.txt's records (separated by blank lines) as JSONL pieces; their
 * count into *n. */
static int s_records(const char *text_path, const char *out_path, size_t max, long *n)
{
	char *text = NULL, *piece = NULL;
	size_t len;
	FILE *f = NULL;
	int rc = -1;

	if (fsx_read_all(text_path, &text, &len) < 0)
		return -1;
	*n = 0;
	if (!(piece = malloc(max + 1)) || !(f = fopen(out_path, "w"))) {
		err_set("cannot write '%s'", out_path);
		goto out;
	}
	for (size_t i = 0; i < len;) {
		size_t end = i, cut;
		while (end < len && !(text[end] == '\n' && end + 1 < len && text[end + 1] == '\n'))
			end++;
		for (size_t p = i; p < end; p = cut) {
			cut = end - p > max ? p + max : end;
			while (cut < end && cut > p + max / 2 && text[cut] != ' ')
				cut--;
			memcpy(piece, text + p, cut - p);
			piece[cut - p] = 0;
			cJSON *rec = cJSON_CreateObject();
			cJSON_AddStringToObject(rec, "response", piece);
			char *s = jsonu_print(rec);
			cJSON_Delete(rec);
			if (!s || fprintf(f, "%s\n", s) < 0) {
				free(s);
				err_set("cannot write '%s'", out_path);
				goto out;
			}
			free(s);
			(*n)++;
		}
		i = end;
		while (i < len && text[i] == '\n')
			i++;
	}
	rc = 0;
out:
	if (f && fclose(f) && rc == 0)
		rc = err_set("cannot write '%s'", out_path);
	free(piece);
	free(text);
	return rc;
}

static int s_corpus(const cJSON *o, const char *base, cJSON *outs, cJSON *counts)
{
	static const char *const keys[] = { "seed", "holdout_frac", "record_bytes", NULL };
	char out[PATH_MAX + 32], hold[PATH_MAX + 32], rec[PATH_MAX + 32];
	struct corpus_opts co = { CORPUS_DEFAULT_SOURCE, out, hold, 0.05, 1 };
	long long seed, bytes;
	long nrec, ntext, nhold;
	const char *b = base[0] ? base : ".";

	if (!cJSON_IsObject(o) || jsonu_check_keys(o, keys) < 0 || jsonu_opt_int(o, "seed", 1, &seed) < 0 ||
	    jsonu_opt_num(o, "holdout_frac", 0.05, &co.holdout_frac) < 0 ||
	    jsonu_opt_int(o, "record_bytes", 120, &bytes) < 0)
		return err_prefix("'corpus'");
	if (seed < 0 || bytes < 8 || bytes > 1 << 20)
		return err_set("'corpus': seed not negative, record_bytes 8 to 1048576");
	co.seed = (uint64_t)seed;
	snprintf(out, sizeof out, "%s/corpus.txt", b);
	snprintf(hold, sizeof hold, "%s/corpus.holdout.txt", b);
	snprintf(rec, sizeof rec, "%s/corpus.jsonl", b);
	if (corpus_build(&co) < 0 || s_records(out, rec, (size_t)bytes, &nrec) < 0 ||
	    s_fortunes(out, &ntext) < 0 || s_fortunes(hold, &nhold) < 0)
		return -1;
	cJSON_AddNumberToObject(counts, "text", (double)ntext);
	cJSON_AddNumberToObject(counts, "holdout", (double)nhold);
	cJSON_AddNumberToObject(counts, "records", (double)nrec);
	return s_output(outs, base, "text", "corpus.txt") < 0 ||
	       s_output(outs, base, "holdout", "corpus.holdout.txt") < 0 ||
	       s_output(outs, base, "records", "corpus.jsonl") < 0 ? -1 : 0;
}

int cmd_data(int argc, char **argv)
{
	static const char *const keys[] = { "suite", "corpus", NULL };
	char base[PATH_MAX];
	const char *slash;
	cJSON *j = NULL, *ev, *outs, *counts;
	const cJSON *su, *co;

	if (argc != 2) {
		fputs("usage: modula-engine data JOB.json\n", stderr);
		return 2;
	}
	slash = strrchr(argv[1], '/');
	snprintf(base, sizeof base, "%.*s", slash ? (int)(slash - argv[1]) : 0, argv[1]);
	ev = cJSON_CreateObject();
	cJSON_AddStringToObject(ev, "event", "done");
	outs = cJSON_AddArrayToObject(ev, "outputs");
	cJSON_AddArrayToObject(ev, "evaluations");
	counts = cJSON_AddObjectToObject(ev, "records");
	if (!(j = jsonu_read_file(argv[1])) || jsonu_check_keys(j, keys) < 0)
		goto err;
	su = cJSON_GetObjectItemCaseSensitive(j, "suite");
	co = cJSON_GetObjectItemCaseSensitive(j, "corpus");
	if (!su && !co) {
		err_set("nothing to make: give 'suite' or 'corpus'");
		goto err;
	}
	if ((su && s_suite(su, base, outs, counts) < 0) || (co && s_corpus(co, base, outs, counts) < 0))
		goto err;
	cJSON_Delete(j);
	s_emit(ev);
	return 0;
err:
	fprintf(stderr, "modula-engine data: %s\n", err_msg());
	cJSON_Delete(j);
	cJSON_Delete(ev);
	ev = cJSON_CreateObject();
	cJSON_AddStringToObject(ev, "event", "error");
	cJSON_AddStringToObject(ev, "message", err_msg());
	cJSON_AddBoolToObject(ev, "retryable", 0);
	s_emit(ev);
	return 1;
}
