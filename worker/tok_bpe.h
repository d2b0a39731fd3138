/* tok_bpe.h: the byte-level BPE model of a Hugging Face tokenizer: the
 * GPT-2 byte-to-unicode table, the vocabulary and merges, and the merging
 * of one pre-tokenized word into ids (with a cache of words seen).
 *
 * Only what tokenizer.c needs; not a public interface. Merges are applied
 * best rank first, leftmost first among equals, with a heap, so a word of
 * n bytes costs O(n log n) however hostile.
 */
#ifndef MODULA_TOK_BPE_H
#define MODULA_TOK_BPE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_bpe tok_bpe_t;

/* Token ids (vocabulary and added tokens) stay below this; the largest
 * vocabularies in use are about 260k. */
#define TOK_MAX_VOCAB (1 << 21)

/* Build from tokenizer.json's "model" object (type BPE). NULL via
 * err_set() saying which field is wrong or unsupported. */
tok_bpe_t *tok_bpe_new(const cJSON *model);
void tok_bpe_destroy(tok_bpe_t **b);

/* One more than the largest vocabulary id. */
int tok_bpe_vocab_size(const tok_bpe_t *b);
/* The id of a vocabulary string, or -1. */
int tok_bpe_id(const tok_bpe_t *b, const char *tok, size_t len);
/* The vocabulary string of `id` (NULL when the id has none). */
const char *tok_bpe_token(const tok_bpe_t *b, int id, size_t *len);

/* Append the ids of one word (raw bytes, before the byte-to-unicode
 * mapping) to *ids (n used, cap allocated; realloc'd). 0 or -1 (OOM). */
int tok_bpe_word(tok_bpe_t *b, const unsigned char *word, size_t len, int32_t **ids, size_t *n, size_t *cap);

/* The byte-level text of a token: each char mapped back to its byte, or
 * the token's own bytes when a char is outside the table (as the Hugging
 * Face ByteLevel decoder does). Appends to *out (n used, cap). 0 or -1. */
int tok_bpe_unmap(const char *tok, size_t len, char **out, size_t *n, size_t *cap);

#endif
