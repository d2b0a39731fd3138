/* tok_bpe.c: see tok_bpe.h. */
#include "worker/tok_bpe.h"
#include "worker/tok_map.h"
#include "err.h"
#include "jsonu.h"

#include <stdlib.h>
#include <string.h>

/* Words longer than this (in bytes) are not cached; the cache is emptied
 * when full. */
#define BPE_CACHE_WORD 256
#define BPE_CACHE_WORDS 65536

struct tok_bpe {
	tok_map_t *vocab;               /* token string -> id */
	tok_map_t *merges;              /* (id a, id b) -> rank << 32 | merged id */
	char **tok;                     /* id -> string in pool (NULL for holes) */
	char *pool;
	size_t *tok_len;
	int vocab_size;
	int byte_id[256];               /* id of each byte's mapped char, or -1 */
	int unk_id;                     /* -1: unknown chars are dropped */
	int ignore_merges;              /* a word in the vocabulary is one token */
	tok_map_t *cache;               /* word -> offset << 20 | count in cache_ids */
	int32_t *cache_ids;
	size_t cache_n, cache_cap;
	/* merge scratch */
	struct bpe_sym {
		int32_t id;
		int prev, next;
	} *sym;
	struct bpe_cand {
		uint32_t rank;
		int pos;
		int32_t id;
	} *heap;
	size_t sym_cap, heap_cap, heap_n;
	unsigned char *mapped;          /* the word after byte-to-unicode */
	size_t mapped_cap;
};

/* ---- the GPT-2 byte <-> unicode table ---- */

/* Printable Latin-1 bytes map to themselves, the other 68 to U+0100 on. */
static unsigned s_byte_cp(unsigned b)
{
	unsigned n = 0;

	if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
		return b;
	for (unsigned c = 0; c < b; c++)
		if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)))
			n++;
	return 256 + n;
}

/* The mapped chars are all below U+0800: two bytes at most. */
static size_t s_put_cp(unsigned cp, unsigned char *out)
{
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	out[0] = (unsigned char)(0xc0 | cp >> 6);
	out[1] = (unsigned char)(0x80 | (cp & 0x3f));
	return 2;
}

static struct {
	unsigned char enc[256][2];
	unsigned char len[256];
	int16_t dec[324];               /* code point -> byte */
} s_tab;

static void s_table_init(void)
{
	if (s_tab.len[0])
		return;
	for (unsigned cp = 0; cp < 324; cp++)
		s_tab.dec[cp] = -1;
	for (unsigned b = 0; b < 256; b++) {
		unsigned cp = s_byte_cp(b);
		s_tab.dec[cp] = (int16_t)b;
		s_tab.len[b] = (unsigned char)s_put_cp(cp, s_tab.enc[b]);
	}
}

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

int tok_bpe_unmap(const char *tok, size_t len, char **out, size_t *n, size_t *cap)
{
	const unsigned char *p = (const unsigned char *)tok;
	size_t k = 0, start = *n;

	s_table_init();
	if (s_reserve((void **)out, cap, *n + len + 1, 1) < 0)
		return -1;
	while (k < len) {
		unsigned cp;
		if (p[k] < 0x80) {
			cp = p[k++];
		} else if ((p[k] & 0xe0) == 0xc0 && k + 1 < len) {
			cp = (unsigned)(p[k] & 0x1f) << 6 | (p[k + 1] & 0x3f);
			k += 2;
		} else {
			cp = 324;
		}
		if (cp >= 324 || s_tab.dec[cp] < 0) {
			/* not a byte-level token: its own bytes */
			memcpy(*out + start, tok, len);
			*n = start + len;
			return 0;
		}
		(*out)[(*n)++] = (char)s_tab.dec[cp];
	}
	return 0;
}

/* ---- loading ---- */

static int s_vocab(tok_bpe_t *b, const cJSON *vocab)
{
	const cJSON *it;
	size_t pool = 0;

	if (!cJSON_IsObject(vocab))
		return err_set("'model.vocab': expected an object, got %s", jsonu_type_name(vocab));
	cJSON_ArrayForEach(it, vocab) {
		double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
		int rc;
		if (!(v >= 0 && v < TOK_MAX_VOCAB) || v != (int)v)
			return err_set("'model.vocab': token '%.64s' has no valid id", it->string);
		if ((rc = tok_map_put(b->vocab, it->string, strlen(it->string), (int64_t)v)) < 0)
			return -1;
		if (rc == 1)
			return err_set("'model.vocab': token '%.64s' appears twice", it->string);
		if ((int)v >= b->vocab_size)
			b->vocab_size = (int)v + 1;
	}
	if (!(b->tok = calloc((size_t)b->vocab_size + 1, sizeof *b->tok)) ||
	    !(b->tok_len = calloc((size_t)b->vocab_size + 1, sizeof *b->tok_len)))
		return err_set("out of memory for %d tokens", b->vocab_size);
	cJSON_ArrayForEach(it, vocab)
		pool += strlen(it->string) + 1;
	if (!(b->pool = malloc(pool + 1)))
		return err_set("out of memory for %d tokens", b->vocab_size);
	pool = 0;
	cJSON_ArrayForEach(it, vocab) {
		int id = (int)it->valuedouble;
		size_t len = strlen(it->string);
		if (b->tok[id])
			return err_set("'model.vocab': id %d is given to '%.64s' and '%.64s'", id, b->tok[id], it->string);
		b->tok[id] = memcpy(b->pool + pool, it->string, len + 1);
		b->tok_len[id] = len;
		pool += len + 1;
	}
	return 0;
}

/* One merge: "a b" or ["a", "b"]. */
static int s_merge(tok_bpe_t *b, const cJSON *m, uint32_t rank)
{
	char *buf = NULL;
	const char *a, *c;
	size_t la, lc;
	int64_t ia, ic, im;
	int32_t key[2];
	int rc = -1;

	if (cJSON_IsString(m)) {
		const char *sp = strchr(m->valuestring, ' ');
		if (!sp || strchr(sp + 1, ' '))
			return err_set("'model.merges': merge %u ('%.64s') is not two tokens separated by one space", rank,
				       m->valuestring);
		a = m->valuestring;
		la = (size_t)(sp - a);
		c = sp + 1;
		lc = strlen(c);
	} else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
		   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
		a = cJSON_GetArrayItem(m, 0)->valuestring;
		la = strlen(a);
		c = cJSON_GetArrayItem(m, 1)->valuestring;
		lc = strlen(c);
	} else {
		return err_set("'model.merges': merge %u is neither \"a b\" nor [\"a\", \"b\"]", rank);
	}
	if (!tok_map_get(b->vocab, a, la, &ia) || !tok_map_get(b->vocab, c, lc, &ic))
		return err_set("'model.merges': merge %u ('%.*s' '%.*s') uses a token not in the vocabulary", rank,
			       (int)(la > 64 ? 64 : la), a, (int)(lc > 64 ? 64 : lc), c);
	if (!(buf = malloc(la + lc + 1)))
		return err_set("out of memory");
	memcpy(buf, a, la);
	memcpy(buf + la, c, lc);
	if (!tok_map_get(b->vocab, buf, la + lc, &im)) {
		err_set("'model.merges': merge %u makes '%.*s', which is not in the vocabulary", rank,
			(int)(la + lc > 64 ? 64 : la + lc), buf);
		goto out;
	}
	key[0] = (int32_t)ia;
	key[1] = (int32_t)ic;
	/* a repeated merge keeps its first (best) rank, as a hash map built in order would not: refuse it */
	if ((rc = tok_map_put(b->merges, key, sizeof key, (int64_t)rank << 32 | im)) == 1) {
		rc = err_set("'model.merges': merge %u ('%.*s' '%.*s') appears twice", rank, (int)(la > 64 ? 64 : la), a,
			     (int)(lc > 64 ? 64 : lc), c);
	}
out:
	free(buf);
	return rc;
}

tok_bpe_t *tok_bpe_new(const cJSON *model)
{
	static const char *const keys[] = { "type", "vocab", "merges", "dropout", "unk_token", "continuing_subword_prefix",
					    "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges", NULL };
	const cJSON *merges, *m;
	const char *type, *prefix, *suffix, *unk;
	tok_bpe_t *b;
	double dropout;
	int byte_fallback;
	uint32_t rank = 0;

	s_table_init();
	if (jsonu_check_keys(model, keys) < 0 || jsonu_opt_str(model, "type", "BPE", &type) < 0) {
		err_prefix("'model'");
		return NULL;
	}
	if (strcmp(type, "BPE")) {
		err_set("'model.type': unsupported model '%.32s' (only byte-level BPE tokenizers are supported)", type);
		return NULL;
	}
	if (jsonu_opt_num(model, "dropout", 0, &dropout) < 0 || jsonu_opt_str(model, "continuing_subword_prefix", "", &prefix) < 0 ||
	    jsonu_opt_str(model, "end_of_word_suffix", "", &suffix) < 0 || jsonu_opt_str(model, "unk_token", NULL, &unk) < 0 ||
	    jsonu_opt_bool(model, "byte_fallback", 0, &byte_fallback) < 0) {
		err_prefix("'model'");
		return NULL;
	}
	if (dropout != 0 || prefix[0] || suffix[0] || byte_fallback) {
		err_set("'model': dropout, continuing_subword_prefix, end_of_word_suffix and byte_fallback are not supported");
		return NULL;
	}
	if (!(b = calloc(1, sizeof *b)) || !(b->vocab = tok_map_new()) || !(b->merges = tok_map_new()) ||
	    !(b->cache = tok_map_new())) {
		tok_bpe_destroy(&b);
		err_set("out of memory loading a tokenizer");
		return NULL;
	}
	if (jsonu_opt_bool(model, "ignore_merges", 0, &b->ignore_merges) < 0) {
		err_prefix("'model'");
		goto err;
	}
	if (s_vocab(b, cJSON_GetObjectItemCaseSensitive(model, "vocab")) < 0)
		goto err;
	merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
	if (!cJSON_IsArray(merges)) {
		err_set("'model.merges': expected an array, got %s", jsonu_type_name(merges));
		goto err;
	}
	cJSON_ArrayForEach(m, merges)
		if (s_merge(b, m, rank++) < 0)
			goto err;
	b->unk_id = -1;
	if (unk) {
		int64_t id;
		if (!tok_map_get(b->vocab, unk, strlen(unk), &id)) {
			err_set("'model.unk_token': '%.64s' is not in the vocabulary", unk);
			goto err;
		}
		b->unk_id = (int)id;
	}
	for (int i = 0; i < 256; i++) {
		int64_t id;
		b->byte_id[i] = tok_map_get(b->vocab, s_tab.enc[i], s_tab.len[i], &id) ? (int)id : -1;
	}
	return b;
err:
	tok_bpe_destroy(&b);
	return NULL;
}

void tok_bpe_destroy(tok_bpe_t **pb)
{
	tok_bpe_t *b = pb ? *pb : NULL;

	if (!b)
		return;
	tok_map_destroy(&b->vocab);
	tok_map_destroy(&b->merges);
	tok_map_destroy(&b->cache);
	free(b->tok);
	free(b->pool);
	free(b->mapped);
	free(b->tok_len);
	free(b->cache_ids);
	free(b->sym);
	free(b->heap);
	free(b);
	*pb = NULL;
}

int tok_bpe_vocab_size(const tok_bpe_t *b)
{
	return b->vocab_size;
}

int tok_bpe_id(const tok_bpe_t *b, const char *tok, size_t len)
{
	int64_t id;

	return tok_map_get(b->vocab, tok, len, &id) ? (int)id : -1;
}

const char *tok_bpe_token(const tok_bpe_t *b, int id, size_t *len)
{
	if (id < 0 || id >= b->vocab_size || !b->tok[id])
		return NULL;
	*len = b->tok_len[id];
	return b->tok[id];
}

/* ---- merging ---- */

static int s_cand_less(const struct bpe_cand *x, const struct bpe_cand *y)
{
	return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static int s_heap_push(tok_bpe_t *b, int pos)
{
	int32_t key[2] = { b->sym[pos].id, b->sym[b->sym[pos].next].id };
	int64_t v;
	size_t i;

	if (!tok_map_get(b->merges, key, sizeof key, &v))
		return 0;
	if (s_reserve((void **)&b->heap, &b->heap_cap, b->heap_n + 1, sizeof *b->heap) < 0)
		return -1;
	i = b->heap_n++;
	b->heap[i] = (struct bpe_cand){ (uint32_t)(v >> 32), pos, (int32_t)(v & 0xffffffff) };
	while (i && s_cand_less(&b->heap[i], &b->heap[(i - 1) / 2])) {
		struct bpe_cand t = b->heap[i];
		b->heap[i] = b->heap[(i - 1) / 2];
		b->heap[(i - 1) / 2] = t;
		i = (i - 1) / 2;
	}
	return 0;
}

static struct bpe_cand s_heap_pop(tok_bpe_t *b)
{
	struct bpe_cand top = b->heap[0];
	size_t i = 0;

	b->heap[0] = b->heap[--b->heap_n];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < b->heap_n && s_cand_less(&b->heap[l], &b->heap[m]))
			m = l;
		if (r < b->heap_n && s_cand_less(&b->heap[r], &b->heap[m]))
			m = r;
		if (m == i)
			break;
		struct bpe_cand t = b->heap[i];
		b->heap[i] = b->heap[m];
		b->heap[m] = t;
		i = m;
	}
	return top;
}

/* Merge the mapped bytes of `word` into ids, appended to *ids. */
static int s_merge_word(tok_bpe_t *b, const unsigned char *word, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	int ns = 0, first;

	if (s_reserve((void **)&b->sym, &b->sym_cap, len + 1, sizeof *b->sym) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int id = b->byte_id[word[i]] >= 0 ? b->byte_id[word[i]] : b->unk_id;
		if (id < 0)
			continue;       /* no token and no unk_token: dropped, as the reference does */
		b->sym[ns] = (struct bpe_sym){ id, ns - 1, ns + 1 };
		ns++;
	}
	if (!ns)
		return 0;
	b->sym[ns - 1].next = -1;
	b->heap_n = 0;
	for (int i = 0; i + 1 < ns; i++)
		if (s_heap_push(b, i) < 0)
			return -1;
	while (b->heap_n) {
		struct bpe_cand c = s_heap_pop(b);
		struct bpe_sym *s = &b->sym[c.pos];
		int32_t key[2];
		int64_t v;
		int nx = s->next;
		if (s->id < 0 || nx < 0)
			continue;
		key[0] = s->id;
		key[1] = b->sym[nx].id;
		/* stale: the pair changed since this candidate was pushed */
		if (!tok_map_get(b->merges, key, sizeof key, &v) || (uint32_t)(v >> 32) != c.rank)
			continue;
		s->id = c.id;
		s->next = b->sym[nx].next;
		if (s->next >= 0)
			b->sym[s->next].prev = c.pos;
		b->sym[nx].id = -1;
		if ((s->prev >= 0 && s_heap_push(b, s->prev) < 0) || (s->next >= 0 && s_heap_push(b, c.pos) < 0))
			return -1;
	}
	if (s_reserve((void **)ids, cap, *n + (size_t)ns, sizeof **ids) < 0)
		return -1;
	for (first = 0; first >= 0; first = b->sym[first].next)
		(*ids)[(*n)++] = b->sym[first].id;
	return 0;
}

int tok_bpe_word(tok_bpe_t *b, const unsigned char *word, size_t len, int32_t **ids, size_t *n, size_t *cap)
{
	size_t ml = 0, start = *n;
	int cacheable = len <= BPE_CACHE_WORD;
	int64_t v;

	if (s_reserve((void **)&b->mapped, &b->mapped_cap, 2 * len + 1, 1) < 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		memcpy(b->mapped + ml, s_tab.enc[word[i]], s_tab.len[word[i]]);
		ml += s_tab.len[word[i]];
	}
	if (b->ignore_merges && tok_map_get(b->vocab, b->mapped, ml, &v)) {
		if (s_reserve((void **)ids, cap, *n + 1, sizeof **ids) < 0)
			return -1;
		(*ids)[(*n)++] = (int32_t)v;
		return 0;
	}
	if (cacheable && tok_map_get(b->cache, b->mapped, ml, &v)) {
		size_t off = (size_t)(v >> 20), count = (size_t)(v & 0xfffff);
		if (s_reserve((void **)ids, cap, *n + count, sizeof **ids) < 0)
			return -1;
		memcpy(*ids + *n, b->cache_ids + off, count * sizeof **ids);
		*n += count;
		return 0;
	}
	if (s_merge_word(b, word, len, ids, n, cap) < 0)
		return -1;
	if (!cacheable)
		return 0;
	if (tok_map_count(b->cache) >= BPE_CACHE_WORDS) {
		tok_map_clear(b->cache);
		b->cache_n = 0;
	}
	if (s_reserve((void **)&b->cache_ids, &b->cache_cap, b->cache_n + (*n - start), sizeof *b->cache_ids) < 0)
		return -1;
	memcpy(b->cache_ids + b->cache_n, *ids + start, (*n - start) * sizeof **ids);
	if (tok_map_put(b->cache, b->mapped, ml, (int64_t)b->cache_n << 20 | (int64_t)(*n - start)) < 0)
		return -1;
	b->cache_n += *n - start;
	return 0;
}
