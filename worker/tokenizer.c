/* tokenizer.c: see tokenizer.h. The pipeline of a tokenizer.json encode:
 *
 *   text --added tokens split out--> segments
 *        --normalizer (utf8proc)--> --pre-tokenizer steps (PCRE2)--> words
 *        --tok_bpe_word--> ids
 *
 * Pre-tokenizer patterns are written for Oniguruma; before PCRE2 compiles
 * them, \s and \S become \p{White_Space} and \P{White_Space} (PCRE2's \s
 * lacks U+0085), and ASCII letters inside (?i:...) match their two ASCII
 * cases only, as the reference implementation does ("'ſ" is not "'s").
 */
#define _GNU_SOURCE     /* memmem */
#include "config.h"
#include "worker/tokenizer.h"
#include "worker/tok_bpe.h"
#include "err.h"
#include "jsonu.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOK_MAX_STEPS 16
#define TOK_MAX_ADDED 65536
#define TOK_MATCH_LIMIT 10000000

/* GPT-2's pattern, used by ByteLevel when use_regex is on. */
static const char s_gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum tok_step_kind { STEP_SPLIT, STEP_PREFIX_SPACE };

struct tok_step {
	enum tok_step_kind kind;
	pcre2_code *re;
	int removed;                    /* Split behavior Removed (else Isolated) */
};

struct tok_added {
	char *content;
	size_t len;
	int id, lstrip, rstrip, single_word;
};

struct tok_piece {
	size_t off, len;
};

struct tokenizer {
	int is_bytes;
	int vocab_size, bos, eos, pad;
	tok_bpe_t *bpe;
	struct tok_added *added;        /* longest first */
	int n_added;
	int *added_of;                  /* id -> index in added, or -1 */
	unsigned char added_first[256];
	int norm[4], n_norm;            /* utf8proc options, applied in order */
	struct tok_step steps[TOK_MAX_STEPS];
	int n_steps;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	/* encode scratch */
	char *work;
	size_t work_n, work_cap;
	struct tok_piece *pieces, *next;
	size_t n_pieces, pieces_cap, n_next, next_cap;
};

static int s_reserve(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t c = *cap ? *cap : 64;
	void *q;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	if (!(q = realloc(*p, c * elem)))
		return err_set("out of memory (%zu items)", need);
	*p = q;
	*cap = c;
	return 0;
}

/* ---- the byte-level tokenizer ---- */

static const char *const s_byte_specials[3] = { "<bos>", "<eos>", "<pad>" };

tokenizer_t *tokenizer_bytes_new(void)
{
	tokenizer_t *t = calloc(1, sizeof *t);

	if (!t) {
		err_set("out of memory for a tokenizer");
		return NULL;
	}
	t->is_bytes = 1;
	t->vocab_size = TOK_BYTES_VOCAB;
	t->bos = TOK_BYTES_BOS;
	t->eos = TOK_BYTES_EOS;
	t->pad = TOK_BYTES_PAD;
	return t;
}

/* ---- loading tokenizer.json ---- */

static int s_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Rewrite an Oniguruma pattern for PCRE2 (see the top of the file). */
static char *s_translate(const char *pat)
{
	size_t n = strlen(pat), k = 0;
	char *out = malloc(16 * n + 1);
	int in_class = 0, depth = 0, caseless_at = -1;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char c = pat[i];
		if (c == '\\' && i + 1 < n) {
			char e = pat[++i];
			if (e == 's' || e == 'S') {
				k += (size_t)sprintf(out + k, "\\%c{White_Space}", e == 's' ? 'p' : 'P');
				continue;
			}
			out[k++] = c;
			out[k++] = e;
			if (strchr("pPxNu", e) && i + 1 < n && pat[i + 1] == '{')
				while (++i < n && (out[k++] = pat[i]) != '}')
					;
			continue;
		}
		if (in_class) {
			if (c == ']')
				in_class = 0;
			out[k++] = c;
			continue;
		}
		if (c == '[') {
			in_class = 1;
			out[k++] = c;
			if (i + 1 < n && pat[i + 1] == '^')
				out[k++] = pat[++i];
			if (i + 1 < n && pat[i + 1] == ']')
				out[k++] = pat[++i];
			continue;
		}
		if (c == '(') {
			depth++;
			if (!strncmp(pat + i, "(?i:", 4) && caseless_at < 0)
				caseless_at = depth;
			out[k++] = c;
			/* group flags and kinds are copied as they are */
			if (i + 1 < n && pat[i + 1] == '?')
				for (out[k++] = pat[++i]; i + 1 < n && (pat[i + 1] == '-' || s_is_alpha(pat[i + 1]));)
					out[k++] = pat[++i];
			continue;
		}
		if (c == ')') {
			if (depth == caseless_at)
				caseless_at = -1;
			depth--;
		}
		if (caseless_at > 0 && s_is_alpha(c)) {
			k += (size_t)sprintf(out + k, "(?-i:[%c%c])", c | 0x20, c & ~0x20);
			continue;
		}
		out[k++] = c;
	}
	out[k] = '\0';
	return out;
}

static int s_add_regex(tokenizer_t *t, const char *pattern, int literal, int removed)
{
	struct tok_step *st;
	char *pat = literal ? strdup(pattern) : s_translate(pattern);
	int errcode;
	PCRE2_SIZE erroff;

	if (!pat)
		return err_set("out of memory");
	if (t->n_steps == TOK_MAX_STEPS) {
		free(pat);
		return err_set("more than %d pre-tokenizer steps", TOK_MAX_STEPS);
	}
	st = &t->steps[t->n_steps];
	st->kind = STEP_SPLIT;
	st->removed = removed;
	st->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
			       PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : 0), &errcode, &erroff, NULL);
	free(pat);
	if (!st->re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(errcode, msg, sizeof msg);
		return err_set("pattern '%.200s' does not compile (PCRE2: %s at offset %zu)", pattern, (char *)msg, (size_t)erroff);
	}
	pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);  /* the interpreter serves when JIT is unavailable */
	t->n_steps++;
	return 0;
}

static int s_pretok(tokenizer_t *t, const cJSON *p, int *byte_level, int depth)
{
	const char *type;

	if (depth > 8)
		return err_set("pre-tokenizer nested too deeply");
	if (jsonu_req_str(p, "type", &type) < 0)
		return -1;
	if (!strcmp(type, "Sequence")) {
		const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *it;
		if (!cJSON_IsArray(list))
			return err_set("Sequence: 'pretokenizers' must be an array");
		cJSON_ArrayForEach(it, list)
			if (s_pretok(t, it, byte_level, depth + 1) < 0)
				return -1;
		return 0;
	}
	if (!strcmp(type, "ByteLevel")) {
		int prefix, use_regex;
		if (jsonu_opt_bool(p, "add_prefix_space", 0, &prefix) < 0 || jsonu_opt_bool(p, "use_regex", 1, &use_regex) < 0)
			return err_prefix("ByteLevel");
		if (*byte_level)
			return err_set("ByteLevel appears twice");
		*byte_level = 1;
		if (prefix) {
			if (t->n_steps == TOK_MAX_STEPS)
				return err_set("more than %d pre-tokenizer steps", TOK_MAX_STEPS);
			t->steps[t->n_steps++].kind = STEP_PREFIX_SPACE;
		}
		return use_regex ? s_add_regex(t, s_gpt2_pattern, 0, 0) : 0;
	}
	if (!strcmp(type, "Split")) {
		const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
		const char *behavior, *s;
		int invert, literal;
		if (jsonu_req_str(p, "behavior", &behavior) < 0 || jsonu_opt_bool(p, "invert", 0, &invert) < 0)
			return err_prefix("Split");
		if ((strcmp(behavior, "Isolated") && strcmp(behavior, "Removed")) || invert)
			return err_set("Split: behavior '%.32s'%s is not supported (Isolated or Removed, not inverted)", behavior,
				       invert ? " inverted" : "");
		literal = jsonu_opt_str(pat, "String", NULL, &s) == 0 && s;
		if (!literal && (jsonu_req_str(pat, "Regex", &s) < 0))
			return err_set("Split: 'pattern' must be {\"Regex\": ...} or {\"String\": ...}");
		return s_add_regex(t, s, literal, !strcmp(behavior, "Removed"));
	}
	return err_set("pre-tokenizer '%.32s' is not supported (ByteLevel, Split, Sequence)", type);
}

static int s_normalizer(tokenizer_t *t, const cJSON *nz, int depth)
{
	static const struct {
		const char *name;
		int opts;
	} forms[] = {
		{ "NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE },
		{ "NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE },
		{ "NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT },
		{ "NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT },
	};
	const char *type;

	if (!nz || cJSON_IsNull(nz))
		return 0;
	if (depth > 8)
		return err_set("normalizer nested too deeply");
	if (jsonu_req_str(nz, "type", &type) < 0)
		return -1;
	if (!strcmp(type, "Sequence")) {
		const cJSON *list = cJSON_GetObjectItemCaseSensitive(nz, "normalizers"), *it;
		if (!cJSON_IsArray(list))
			return err_set("Sequence: 'normalizers' must be an array");
		cJSON_ArrayForEach(it, list)
			if (s_normalizer(t, it, depth + 1) < 0)
				return -1;
		return 0;
	}
	for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
		if (!strcmp(type, forms[i].name)) {
			if (t->n_norm == 4)
				return err_set("more than 4 normalizers");
			t->norm[t->n_norm++] = forms[i].opts;
			return 0;
		}
	}
	return err_set("normalizer '%.32s' is not supported (NFC, NFD, NFKC, NFKD, Sequence)", type);
}

static int s_cmp_added(const void *a, const void *b)
{
	const struct tok_added *x = a, *y = b;

	return x->len != y->len ? (x->len > y->len ? -1 : 1) : x->id - y->id;
}

static int s_added(tokenizer_t *t, const cJSON *list)
{
	const cJSON *it;
	int n;

	if (!list || cJSON_IsNull(list))
		return 0;
	if (!cJSON_IsArray(list))
		return err_set("'added_tokens': expected an array, got %s", jsonu_type_name(list));
	if ((n = cJSON_GetArraySize(list)) > TOK_MAX_ADDED)
		return err_set("'added_tokens': %d tokens, at most %d are supported", n, TOK_MAX_ADDED);
	if (!(t->added = calloc((size_t)n + 1, sizeof *t->added)))
		return err_set("out of memory");
	cJSON_ArrayForEach(it, list) {
		struct tok_added *a = &t->added[t->n_added];
		long long id;
		const char *content;
		if (jsonu_req_int(it, "id", &id) < 0 || jsonu_req_str(it, "content", &content) < 0 ||
		    jsonu_opt_bool(it, "lstrip", 0, &a->lstrip) < 0 || jsonu_opt_bool(it, "rstrip", 0, &a->rstrip) < 0 ||
		    jsonu_opt_bool(it, "single_word", 0, &a->single_word) < 0)
			return err_prefix("'added_tokens'[%d]", t->n_added);
		if (id < 0 || id >= TOK_MAX_VOCAB || !content[0])
			return err_set("'added_tokens'[%d]: id %lld or content '%.64s' is not valid", t->n_added, id, content);
		if (!(a->content = strdup(content)))
			return err_set("out of memory");
		a->len = strlen(content);
		a->id = (int)id;
		t->added_first[(unsigned char)content[0]] = 1;
		if (a->id >= t->vocab_size)
			t->vocab_size = a->id + 1;
		t->n_added++;
	}
	qsort(t->added, (size_t)t->n_added, sizeof *t->added, s_cmp_added);
	return 0;
}

/* bos/eos/pad from tokenizer_config.json beside the tokenizer, if any. */
static int s_config_token(const tokenizer_t *t, const cJSON *cfg, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);

	if (cJSON_IsObject(v))
		v = cJSON_GetObjectItemCaseSensitive(v, "content");
	return cJSON_IsString(v) ? tokenizer_token_id(t, v->valuestring) : -1;
}

static void s_specials(tokenizer_t *t, const char *path)
{
	char cfg_path[PATH_MAX];
	const char *slash = strrchr(path, '/');
	cJSON *cfg;

	t->bos = t->eos = t->pad = -1;
	snprintf(cfg_path, sizeof cfg_path, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
	if (access(cfg_path, R_OK) < 0 || !(cfg = jsonu_read_file(cfg_path))) {
		err_clear();
		return;
	}
	t->bos = s_config_token(t, cfg, "bos_token");
	t->eos = s_config_token(t, cfg, "eos_token");
	t->pad = s_config_token(t, cfg, "pad_token");
	cJSON_Delete(cfg);
}

static int s_load(tokenizer_t *t, const cJSON *root)
{
	const cJSON *pre;
	int byte_level = 0;

	if (!cJSON_IsObject(root))
		return err_set("expected an object, got %s", jsonu_type_name(root));
	if (!(t->bpe = tok_bpe_new(cJSON_GetObjectItemCaseSensitive(root, "model"))))
		return -1;
	t->vocab_size = tok_bpe_vocab_size(t->bpe);
	if (s_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")) < 0)
		return -1;
	if (!(t->added_of = malloc(((size_t)t->vocab_size + 1) * sizeof *t->added_of)))
		return err_set("out of memory");
	for (int i = 0; i < t->vocab_size; i++)
		t->added_of[i] = -1;
	for (int i = 0; i < t->n_added; i++)
		t->added_of[t->added[i].id] = i;
	if (s_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), 0) < 0)
		return err_prefix("'normalizer'");
	pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
	if (pre && !cJSON_IsNull(pre) && s_pretok(t, pre, &byte_level, 0) < 0)
		return err_prefix("'pre_tokenizer'");
	if (!byte_level)
		return err_set("'pre_tokenizer': no ByteLevel step; only byte-level BPE tokenizers are supported");
	if (!(t->md = pcre2_match_data_create(1, NULL)) || !(t->mctx = pcre2_match_context_create(NULL)))
		return err_set("out of memory");
	pcre2_set_match_limit(t->mctx, TOK_MATCH_LIMIT);
	return 0;
}

tokenizer_t *tokenizer_load(const char *path)
{
	tokenizer_t *t = calloc(1, sizeof *t);
	cJSON *root = NULL;

	if (!t) {
		err_set("out of memory loading '%s'", path);
		return NULL;
	}
	if (!(root = jsonu_read_file(path)))
		goto err;
	if (s_load(t, root) < 0) {
		err_prefix("'%s'", path);
		goto err;
	}
	cJSON_Delete(root);
	s_specials(t, path);
	return t;
err:
	cJSON_Delete(root);
	tokenizer_destroy(&t);
	return NULL;
}

tokenizer_t *tokenizer_open(const char *spec)
{
	return !strcmp(spec, "bytes") ? tokenizer_bytes_new() : tokenizer_load(spec);
}

void tokenizer_destroy(tokenizer_t **pt)
{
	tokenizer_t *t = pt ? *pt : NULL;

	if (!t)
		return;
	tok_bpe_destroy(&t->bpe);
	for (int i = 0; i < t->n_added; i++)
		free(t->added[i].content);
	free(t->added);
	free(t->added_of);
	for (int i = 0; i < t->n_steps; i++)
		pcre2_code_free(t->steps[i].re);
	pcre2_match_data_free(t->md);
	pcre2_match_context_free(t->mctx);
	free(t->work);
	free(t->pieces);
	free(t->next);
	free(t);
	*pt = NULL;
}

/* ---- encoding ---- */

/* Length of the valid UTF-8 prefix of s. */
static size_t s_utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n;
		unsigned cp, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 2, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			n = 3, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			n = 4, cp = c & 0x07, min = 0x10000;
		else
			return i;
		if (i + n > len)
			return i;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n;
	}
	return len;
}

static int s_piece_push(tokenizer_t *t, size_t off, size_t len)
{
	if (!len)
		return 0;
	if (s_reserve((void **)&t->next, &t->next_cap, t->n_next + 1, sizeof *t->next) < 0)
		return -1;
	t->next[t->n_next++] = (struct tok_piece){ off, len };
	return 0;
}

/* Split every piece by the step's regex, Isolated (or Removed) style. */
static int s_split(tokenizer_t *t, const struct tok_step *st)
{
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);

	t->n_next = 0;
	for (size_t p = 0; p < t->n_pieces; p++) {
		PCRE2_SPTR subj = (PCRE2_SPTR)t->work + t->pieces[p].off;
		size_t len = t->pieces[p].len, start = 0, prev = 0, base = t->pieces[p].off;
		while (start <= len) {
			int rc = pcre2_match(st->re, subj, len, start, PCRE2_NO_UTF_CHECK, t->md, t->mctx);
			size_t ms, me;
			if (rc == PCRE2_ERROR_NOMATCH)
				break;
			if (rc < 0) {
				PCRE2_UCHAR msg[256];
				pcre2_get_error_message(rc, msg, sizeof msg);
				return err_set("pre-tokenizer pattern failed: %s", (char *)msg);
			}
			ms = ov[0];
			me = ov[1];
			if (s_piece_push(t, base + prev, ms - prev) < 0)
				return -1;
			if (!st->removed && s_piece_push(t, base + ms, me - ms) < 0)
				return -1;
			prev = me;
			if (me > ms) {
				start = me;
				continue;
			}
			/* an empty match splits here; step over one character */
			if (me == len)
				break;
			start = me + 1;
			while (start < len && (subj[start] & 0xc0) == 0x80)
				start++;
		}
		if (s_piece_push(t, base + prev, len - prev) < 0)
			return -1;
	}
	return 0;
}

static int s_prefix_space(tokenizer_t *t)
{
	t->n_next = 0;
	for (size_t p = 0; p < t->n_pieces; p++) {
		struct tok_piece pc = t->pieces[p];
		if (t->work[pc.off] == ' ') {
			if (s_piece_push(t, pc.off, pc.len) < 0)
				return -1;
			continue;
		}
		if (s_reserve((void **)&t->work, &t->work_cap, t->work_n + pc.len + 1, 1) < 0)
			return -1;
		t->work[t->work_n] = ' ';
		memcpy(t->work + t->work_n + 1, t->work + pc.off, pc.len);
		if (s_piece_push(t, t->work_n, pc.len + 1) < 0)
			return -1;
		t->work_n += pc.len + 1;
	}
	return 0;
}

/* Normalize with utf8proc. utf8proc 2.8 composes a Hangul LV syllable
 * with a following U+11A7, losing it; U+11A7 is a starter that composes
 * with nothing, so normalizing the text between its occurrences is exact.
 * Appends to a fresh *out. 0, or -1 via err_set(). */
static int s_normalize(int opts, const char *s, size_t len, unsigned char **out, size_t *olen)
{
	static const char u11a7[3] = { '\xe1', '\x86', '\xa7' };
	size_t cap = 0;

	*out = NULL;
	*olen = 0;
	while (len) {
		const char *hit = memmem(s, len, u11a7, 3);
		size_t piece = hit ? (size_t)(hit - s) : len;
		unsigned char *o = NULL;
		utf8proc_ssize_t k = 0;
		if (piece && (k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)piece, &o, opts)) < 0) {
			free(*out);
			return err_set("cannot normalize the text: %s", utf8proc_errmsg(k));
		}
		if (s_reserve((void **)out, &cap, *olen + (size_t)k + 4, 1) < 0) {
			free(o);
			return -1;
		}
		if (k)
			memcpy(*out + *olen, o, (size_t)k);
		free(o);
		*olen += (size_t)k;
		if (hit) {
			memcpy(*out + *olen, u11a7, 3);
			*olen += 3;
			piece += 3;
		}
		s += piece;
		len -= piece;
	}
	return 0;
}

/* Encode a segment that holds no added token. */
static int s_segment(tokenizer_t *t, const char *s, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	unsigned char *norm = NULL;
	int rc = -1;

	if (!len)
		return 0;
	for (int i = 0; i < t->n_norm; i++) {
		unsigned char *out = NULL;
		size_t olen = 0;
		if (s_normalize(t->norm[i], s, len, &out, &olen) < 0) {
			free(norm);
			return -1;
		}
		free(norm);
		norm = out;
		s = (const char *)out;
		len = olen;
	}
	t->work_n = 0;
	if (s_reserve((void **)&t->work, &t->work_cap, len + 1, 1) < 0)
		goto out;
	memcpy(t->work, s, len);
	t->work_n = len;
	t->n_pieces = 0;
	if (s_reserve((void **)&t->pieces, &t->pieces_cap, 1, sizeof *t->pieces) < 0)
		goto out;
	t->pieces[t->n_pieces++] = (struct tok_piece){ 0, len };
	for (int i = 0; i < t->n_steps; i++) {
		struct tok_piece *tp;
		size_t tc;
		if ((t->steps[i].kind == STEP_SPLIT ? s_split(t, &t->steps[i]) : s_prefix_space(t)) < 0)
			goto out;
		tp = t->pieces, t->pieces = t->next, t->next = tp;
		tc = t->pieces_cap, t->pieces_cap = t->next_cap, t->next_cap = tc;
		t->n_pieces = t->n_next;
	}
	for (size_t p = 0; p < t->n_pieces; p++)
		if (tok_bpe_word(t->bpe, (const unsigned char *)t->work + t->pieces[p].off, t->pieces[p].len, ids, n, cap) < 0)
			goto out;
	rc = 0;
out:
	free(norm);
	return rc;
}

static int s_is_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static int s_is_word(unsigned char c)
{
	return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* The longest added token at text[i], or NULL. */
static const struct tok_added *s_added_at(const tokenizer_t *t, const char *text, size_t len, size_t i)
{
	for (int k = 0; k < t->n_added; k++) {
		const struct tok_added *a = &t->added[k];
		if (a->len > len - i || memcmp(text + i, a->content, a->len))
			continue;
		if (a->single_word && ((i > 0 && s_is_word((unsigned char)text[i - 1])) ||
				       (i + a->len < len && s_is_word((unsigned char)text[i + a->len]))))
			continue;
		return a;
	}
	return NULL;
}

int tokenizer_encode(tokenizer_t *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
	size_t cap = 0, seg = 0, i = 0, bad;

	*ids = NULL;
	*n = 0;
	if (t->is_bytes) {
		if (!(*ids = malloc((len + 1) * sizeof **ids)))
			return err_set("out of memory encoding %zu bytes", len);
		for (i = 0; i < len; i++)
			(*ids)[i] = (unsigned char)text[i];
		*n = len;
		return 0;
	}
	if ((bad = s_utf8_valid((const unsigned char *)text, len)) < len)
		return err_set("invalid UTF-8 at byte %zu", bad);
	while (i < len) {
		const struct tok_added *a = t->added_first[(unsigned char)text[i]] ? s_added_at(t, text, len, i) : NULL;
		size_t from = i, to;
		if (!a) {
			i++;
			continue;
		}
		to = i + a->len;
		if (a->lstrip)
			while (from > seg && s_is_space(text[from - 1]))
				from--;
		if (a->rstrip)
			while (to < len && s_is_space(text[to]))
				to++;
		if (s_segment(t, text + seg, from - seg, ids, n, &cap) < 0 ||
		    s_reserve((void **)ids, &cap, *n + 1, sizeof **ids) < 0)
			goto err;
		(*ids)[(*n)++] = a->id;
		i = seg = to;
	}
	if (s_segment(t, text + seg, len - seg, ids, n, &cap) < 0)
		goto err;
	if (!*ids && !(*ids = malloc(sizeof **ids)))
		return err_set("out of memory");
	return 0;
err:
	free(*ids);
	*ids = NULL;
	*n = 0;
	return -1;
}

/* ---- decoding and lookups ---- */

int tokenizer_decode(tokenizer_t *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
	size_t cap = 0, i;

	*text = NULL;
	*len = 0;
	if (s_reserve((void **)text, &cap, n + 1, 1) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		int id = ids[i];
		const char *tok = NULL;
		size_t tl = 0;
		if (id < 0 || id >= t->vocab_size)
			goto bad;
		if (t->is_bytes) {
			if (id < 256) {
				(*text)[(*len)++] = (char)id;
				continue;
			}
			tok = s_byte_specials[id - 256];
			tl = strlen(tok);
			if (s_reserve((void **)text, &cap, *len + tl + 1, 1) < 0)
				goto err;
			memcpy(*text + *len, tok, tl);
			*len += tl;
			continue;
		}
		if (t->added_of[id] >= 0) {
			tok = t->added[t->added_of[id]].content;
			tl = t->added[t->added_of[id]].len;
		} else if (!(tok = tok_bpe_token(t->bpe, id, &tl))) {
			goto bad;
		}
		if (tok_bpe_unmap(tok, tl, text, len, &cap) < 0)
			goto err;
	}
	(*text)[*len] = '\0';
	return 0;
bad:
	err_set("token id %d (at %zu) is not in the vocabulary (0..%d)", ids[i], i, t->vocab_size - 1);
err:
	free(*text);
	*text = NULL;
	*len = 0;
	return -1;
}

int tokenizer_vocab_size(const tokenizer_t *t)
{
	return t->vocab_size;
}

int tokenizer_token_id(const tokenizer_t *t, const char *token)
{
	size_t len = strlen(token);

	if (t->is_bytes) {
		for (int i = 0; i < 3; i++)
			if (!strcmp(token, s_byte_specials[i]))
				return 256 + i;
		return len == 1 ? (unsigned char)token[0] : -1;
	}
	for (int i = 0; i < t->n_added; i++)
		if (t->added[i].len == len && !memcmp(t->added[i].content, token, len))
			return t->added[i].id;
	return tok_bpe_id(t->bpe, token, len);
}

int tokenizer_bos_id(const tokenizer_t *t)
{
	return t->bos;
}

int tokenizer_eos_id(const tokenizer_t *t)
{
	return t->eos;
}

int tokenizer_pad_id(const tokenizer_t *t)
{
	return t->pad;
}
