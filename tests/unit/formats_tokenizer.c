/* formats_tokenizer.c: the byte-level tokenizer, a small hand-made
 * byte-level BPE tokenizer.json (merge order, both merge encodings, added
 * tokens, decode), malformed tokenizer.json files refused with the expected
 * message, and hostile input (invalid UTF-8, a 200 kB word, a pattern
 * that backtracks forever). The comparison with the Hugging Face reference
 * on a real tokenizer is tests/formats-tokenizer-hf.sh. */
#include "config.h"
#include "worker/tokenizer.h"
#include "err.h"
#include "fsx.h"
#include "tap.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_path[96];

/* GPT-2's byte-to-unicode, derived here independently of tok_bpe.c. */
static void s_byte_char(int b, char out[3])
{
	int n = 0, cp = b;

	if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
		for (int c = 0; c < b; c++)
			n += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255));
		cp = 256 + n;
	}
	if (cp < 0x80) {
		out[0] = (char)cp, out[1] = 0;
	} else {
		out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = 0;
	}
}

/* The 256 byte tokens (ids 0..255), then "aa" 256, "aaa" 257, "Ġa" 258,
 * "ab" 259; merges a+a, aa+a, Ġ+a (as "a b" strings or pairs). */
static cJSON *s_tiny(int pair_merges, const char *pre)
{
	cJSON *root = cJSON_CreateObject(), *model, *vocab, *merges, *added;
	static const char *const m[][2] = { { "a", "a" }, { "aa", "a" }, { "Ġ", "a" }, { "a", "b" } };
	static const char *const extra[] = { "aa", "aaa", "Ġa", "ab" };
	char ch[3];

	model = cJSON_AddObjectToObject(root, "model");
	cJSON_AddStringToObject(model, "type", "BPE");
	vocab = cJSON_AddObjectToObject(model, "vocab");
	for (int b = 0; b < 256; b++) {
		s_byte_char(b, ch);
		cJSON_AddNumberToObject(vocab, ch, b);
	}
	for (int i = 0; i < 4; i++)
		cJSON_AddNumberToObject(vocab, extra[i], 256 + i);
	merges = cJSON_AddArrayToObject(model, "merges");
	for (int i = 0; i < 4; i++) {
		if (pair_merges) {
			cJSON_AddItemToArray(merges, cJSON_CreateStringArray(m[i], 2));
		} else {
			char buf[16];
			snprintf(buf, sizeof buf, "%s %s", m[i][0], m[i][1]);
			cJSON_AddItemToArray(merges, cJSON_CreateString(buf));
		}
	}
	added = cJSON_AddArrayToObject(root, "added_tokens");
	cJSON_AddItemToArray(added, cJSON_Parse("{\"id\":260,\"content\":\"<|x|>\",\"special\":true,\"rstrip\":true}"));
	cJSON_AddItemToArray(added, cJSON_Parse("{\"id\":261,\"content\":\"<|x|>y\",\"special\":true}"));
	cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse(pre));
	return root;
}

static tokenizer_t *s_load_json(const cJSON *root)
{
	char *text = cJSON_PrintUnformatted(root);
	tokenizer_t *t = NULL;

	if (fsx_write_atomic(s_path, text, strlen(text)) == 0)
		t = tokenizer_load(s_path);
	free(text);
	return t;
}

static tokenizer_t *s_load_text(const char *text)
{
	return fsx_write_atomic(s_path, text, strlen(text)) == 0 ? tokenizer_load(s_path) : NULL;
}

/* Encode `text` and compare with the expected ids "1,2,3". */
static void s_expect(tokenizer_t *t, const char *text, const char *want, const char *what)
{
	int32_t *ids = NULL;
	size_t n = 0, k = 0;
	char got[512] = "";

	if (tokenizer_encode(t, text, strlen(text), &ids, &n) < 0)
		snprintf(got, sizeof got, "error: %s", err_msg());
	for (size_t i = 0; i < n && k < sizeof got - 16; i++)
		k += (size_t)snprintf(got + k, sizeof got - k, i ? ",%d" : "%d", (int)ids[i]);
	TAP_OK(!strcmp(got, want), "%s: '%s' -> %s", what, text, got);
	free(ids);
}

static void test_bytes(void)
{
	tokenizer_t *t = tokenizer_open("bytes");
	int32_t ids[4] = { 104, TOK_BYTES_BOS, TOK_BYTES_EOS, TOK_BYTES_PAD }, bad = 259;
	char *text = NULL;
	size_t len = 0;

	TAP_OK(t && tokenizer_vocab_size(t) == 259 && tokenizer_bos_id(t) == 256 && tokenizer_eos_id(t) == 257 &&
	       tokenizer_pad_id(t) == 258 && tokenizer_token_id(t, "<eos>") == 257 && tokenizer_token_id(t, "A") == 65,
	       "byte-level: vocabulary 259, bos 256, eos 257, pad 258");
	s_expect(t, "h\xc3\xa9<eos>", "104,195,169,60,101,111,115,62", "byte-level encodes the bytes, never a special");
	s_expect(t, "\xff\xfe", "255,254", "byte-level takes any bytes");
	TAP_OK(tokenizer_decode(t, ids, 4, &text, &len) == 0 && !strcmp(text, "h<bos><eos><pad>") && len == 16,
	       "byte-level decode writes specials as their names");
	free(text);
	TAP_OK(tokenizer_decode(t, &bad, 1, &text, &len) < 0 && strstr(err_msg(), "token id 259"), "decode refuses id 259: %s",
	       err_msg());
	tokenizer_destroy(&t);
	tokenizer_destroy(&t);
}

static void test_tiny(void)
{
	static const char *const pre_gpt2 = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}";
	cJSON *j = s_tiny(0, pre_gpt2);
	tokenizer_t *t = s_load_json(j), *tp;
	int32_t *ids = NULL;
	size_t n = 0, len = 0;
	char *text = NULL;
	const char *round = "aaaaa b<|x|>  ab \xe2\x82\xac\n";
	int rc;

	cJSON_Delete(j);
	TAP_OK(t != NULL, "loads a small tokenizer.json %s", t ? "" : err_msg());
	if (!t)
		return;
	s_expect(t, "aaaaa", "256,257", "best rank first, leftmost first: aa+aaa");
	s_expect(t, "aaaa", "256,256", "aa+aa");
	s_expect(t, "ab", "259", "a later merge applies when nothing better");
	s_expect(t, "x aa", "120,32,256", "GPT-2 split: ' aa' is one piece, a+a before Ġ+a");
	s_expect(t, "x a", "120,258", "Ġ+a");
	s_expect(t, "<|x|>   a", "260,97", "an added token with rstrip takes the spaces after it");
	s_expect(t, "<|x|>y", "261", "the longest added token wins");
	s_expect(t, "<|x|", "60,124,120,124", "half an added token is text");
	TAP_OK(tokenizer_token_id(t, "<|x|>") == 260 && tokenizer_token_id(t, "Ġa") == 258 && tokenizer_token_id(t, "zz") == -1 &&
	       tokenizer_vocab_size(t) == 262 && tokenizer_bos_id(t) == -1,
	       "lookups: added and vocabulary tokens; no tokenizer_config.json, no bos");
	TAP_OK(tokenizer_encode(t, round, strlen(round), &ids, &n) == 0 && tokenizer_decode(t, ids, n, &text, &len) == 0 &&
	       len == strlen(round) - 2 && !memcmp(text, "aaaaa b<|x|>ab \xe2\x82\xac\n", len),
	       "decode(encode(s)) gives s back (less the spaces rstrip took)");
	free(ids);
	free(text);
	TAP_OK(tokenizer_encode(t, "a\xc3", 2, &ids, &n) < 0 && strstr(err_msg(), "invalid UTF-8 at byte 1") && !ids,
	       "refuses invalid UTF-8: %s", err_msg());
	TAP_OK(tokenizer_encode(t, "\xed\xa0\x80", 3, &ids, &n) < 0 && strstr(err_msg(), "invalid UTF-8 at byte 0"),
	       "refuses an encoded surrogate: %s", err_msg());
	{
		size_t big = 200000;
		char *w = malloc(big);
		memset(w, 'a', big);
		rc = tokenizer_encode(t, w, big, &ids, &n);
		TAP_OK(rc == 0 && n == big / 2 && ids[0] == 256 && ids[n - 1] == 256, "a 200 kB word merges into %zu tokens %s", n,
		       rc < 0 ? err_msg() : "");
		free(ids);
		free(w);
	}
	j = s_tiny(1, pre_gpt2);
	tp = s_load_json(j);
	cJSON_Delete(j);
	TAP_OK(tp != NULL, "loads merges written as pairs %s", tp ? "" : err_msg());
	if (tp)
		s_expect(tp, "aaaaa x aa", "256,257,32,120,32,256", "pair merges give the same ids");
	tokenizer_destroy(&tp);
	tokenizer_destroy(&t);
}

static void s_refuse_json(cJSON *j, const char *want, const char *what)
{
	tokenizer_t *t = s_load_json(j);

	TAP_OK(!t && strstr(err_msg(), want) && strstr(err_msg(), s_path), "refuses %s: %s", what, t ? "(loaded)" : err_msg());
	tokenizer_destroy(&t);
	cJSON_Delete(j);
}

static void test_malformed(void)
{
	static const char *const pre = "{\"type\":\"ByteLevel\"}";
	cJSON *j;
	tokenizer_t *t;

	j = s_tiny(0, pre);
	cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "model"), "type", cJSON_CreateString("WordPiece"));
	s_refuse_json(j, "unsupported model 'WordPiece'", "a WordPiece model");
	j = s_tiny(0, pre);
	cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"), cJSON_CreateString("q zz"));
	s_refuse_json(j, "uses a token not in the vocabulary", "a merge of unknown tokens");
	j = s_tiny(0, pre);
	cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"), cJSON_CreateString("b a"));
	s_refuse_json(j, "makes 'ba', which is not in the vocabulary", "a merge whose result is unknown");
	j = s_tiny(0, pre);
	cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"), cJSON_CreateString("aaa"));
	s_refuse_json(j, "not two tokens separated by one space", "a merge without a space");
	j = s_tiny(0, pre);
	cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"), cJSON_CreateString("a a"));
	s_refuse_json(j, "appears twice", "a repeated merge");
	j = s_tiny(0, pre);
	cJSON_AddStringToObject(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "vocab"), "zz", "7");
	s_refuse_json(j, "token 'zz' has no valid id", "a string id");
	j = s_tiny(0, pre);
	cJSON_AddNumberToObject(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "vocab"), "zz", 3);
	s_refuse_json(j, "id 3 is given to", "two tokens with one id");
	j = s_tiny(0, pre);
	cJSON_AddTrueToObject(cJSON_GetObjectItem(j, "model"), "byte_fallback");
	s_refuse_json(j, "byte_fallback", "byte_fallback");
	s_refuse_json(s_tiny(0, "{\"type\":\"Metaspace\"}"), "pre-tokenizer 'Metaspace' is not supported", "Metaspace");
	s_refuse_json(s_tiny(0, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s\"},\"behavior\":\"Isolated\"}"),
		      "no ByteLevel step", "a pre-tokenizer without ByteLevel");
	s_refuse_json(s_tiny(0, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
				"\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}"),
		      "pattern '(a' does not compile", "a bad regex");
	s_refuse_json(s_tiny(0, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"MergedWithNext\"}"),
		      "behavior 'MergedWithNext'", "an unsupported Split behavior");
	j = s_tiny(0, pre);
	cJSON_AddItemToObject(j, "normalizer", cJSON_Parse("{\"type\":\"Lowercase\"}"));
	s_refuse_json(j, "normalizer 'Lowercase' is not supported", "a Lowercase normalizer");
	j = s_tiny(0, pre);
	cJSON_AddItemToArray(cJSON_GetObjectItem(j, "added_tokens"), cJSON_Parse("{\"content\":\"<y>\"}"));
	s_refuse_json(j, "'added_tokens'[2]: 'id': missing", "an added token without an id");
	t = s_load_text("[1]");
	TAP_OK(!t && strstr(err_msg(), "expected an object"), "refuses an array: %s", err_msg());
	t = s_load_text("{\"model\":");
	TAP_OK(!t && strstr(err_msg(), "bad JSON"), "refuses truncated JSON: %s", err_msg());
	t = tokenizer_open("/nonexistent/tokenizer.json");
	TAP_OK(!t && strstr(err_msg(), "/nonexistent/tokenizer.json"), "names a missing file: %s", err_msg());
}

/* A pattern that backtracks exponentially fails instead of hanging. */
static void test_backtracking(void)
{
	cJSON *j = s_tiny(0, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
			     "\"(a|aa)+$\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}");
	tokenizer_t *t = s_load_json(j);
	char text[200];
	int32_t *ids = NULL;
	size_t n;
	int rc;

	cJSON_Delete(j);
	memset(text, 'a', sizeof text);
	text[sizeof text - 1] = 'b';
	rc = t ? tokenizer_encode(t, text, sizeof text, &ids, &n) : 0;
	TAP_OK(t && rc < 0 && strstr(err_msg(), "pattern failed"), "a runaway pattern stops at the match limit: %s",
	       err_msg());
	free(ids);
	tokenizer_destroy(&t);
}

static size_t s_put(unsigned cp, char *o)
{
	if (cp < 0x80)
		return o[0] = (char)cp, 1;
	if (cp < 0x800)
		return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
	if (cp < 0x10000)
		return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f)), 3;
	o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Random valid UTF-8 through LLaMA-3's pattern: decode(encode(s)) == s. */
static void test_roundtrip_random(void)
{
	cJSON *j = s_tiny(1, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
			     "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
			     "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}");
	static const unsigned ranges[][2] = { { 0x20, 0x7e }, { 0x9, 0xd }, { 0x80, 0x24f }, { 0x300, 0x36f }, { 0x4e00, 0x4f00 },
					      { 0xac00, 0xac40 }, { 0x1f600, 0x1f64f }, { 0x2000, 0x206f }, { 0xfff0, 0xffff } };
	tokenizer_t *t = s_load_json(j);
	unsigned seed = 99;
	int good = 0, rounds = 2000;
	char text[512];

	cJSON_Delete(j);
	TAP_OK(t != NULL, "loads the tiny vocabulary with LLaMA-3's pattern %s", t ? "" : err_msg());
	for (int r = 0; t && r < rounds; r++) {
		size_t len = 0, n = 0, dl = 0;
		int32_t *ids = NULL;
		char *back = NULL;
		for (int k = rand_r(&seed) % 60; k > 0; k--) {
			const unsigned *rg = ranges[rand_r(&seed) % 9];
			unsigned cp = rg[0] + (unsigned)rand_r(&seed) % (rg[1] - rg[0] + 1);
			if (cp != '<')
				len += s_put(cp, text + len);
		}
		if (tokenizer_encode(t, text, len, &ids, &n) == 0 && tokenizer_decode(t, ids, n, &back, &dl) == 0 &&
		    dl == len && !memcmp(back, text, len))
			good++;
		free(ids);
		free(back);
	}
	TAP_OK(good == rounds, "%d of %d random strings decode back to themselves", good, rounds);
	tokenizer_destroy(&t);
}

int main(void)
{
	snprintf(s_path, sizeof s_path, "/tmp/modula-tok-%ld.json", (long)getpid());
	test_bytes();
	test_tiny();
	test_malformed();
	test_backtracking();
	test_roundtrip_random();
	unlink(s_path);
	return tap_done();
}
