/* tokenizer.h: text <-> token ids.
 *
 * Two kinds behind one handle:
 *   - the byte-level tokenizer, modula's embedded default: ids 0..255 are
 *     the bytes of the text, then 256 <bos>, 257 <eos>, 258 <pad>
 *     (vocabulary 259). Encoding never produces 256..258 (the text "<eos>"
 *     is five bytes); callers add them.
 *   - a Hugging Face tokenizer.json with a byte-level BPE model (GPT-2,
 *     Qwen2/Qwen3, LLaMA-3 and their kin): added tokens split out first,
 *     then the normalizer (NFC/NFD/NFKC/NFKD, Lowercase, Sequence), the
 *     pre-tokenizer (ByteLevel, Split with a regex run by PCRE2, Sequence),
 *     then BPE merges. Encoding is what `tokenizer.encode(text,
 *     add_special_tokens=False)` gives: no post-processor template.
 *
 * Not a general tokenizers port: WordPiece, Unigram, SentencePiece-style
 * (Metaspace, byte_fallback) tokenizers are refused when loading, with a
 * message naming what is unsupported. A tokenizer is used by one thread at
 * a time (it keeps a cache and PCRE2 match data).
 */
#ifndef MODULA_TOKENIZER_H
#define MODULA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer_t;

/* The byte-level ids. */
enum { TOK_BYTES_BOS = 256, TOK_BYTES_EOS = 257, TOK_BYTES_PAD = 258, TOK_BYTES_VOCAB = 259 };

/* The embedded byte-level tokenizer. NULL only when out of memory. */
tokenizer_t *tokenizer_bytes_new(void);

/* Load a Hugging Face tokenizer.json. The bos/eos/pad tokens come from
 * tokenizer_config.json beside it when there is one. NULL via err_set()
 * naming the file and what is wrong or unsupported. */
tokenizer_t *tokenizer_load(const char *tokenizer_json_path);

/* "bytes" gives the byte-level tokenizer, anything else is a path. */
tokenizer_t *tokenizer_open(const char *spec);

void tokenizer_destroy(tokenizer_t **t);

/* Encode `len` bytes of UTF-8 into a fresh array (free() it) of *n ids.
 * 0, or -1 via err_set() (invalid UTF-8 for a BPE tokenizer, out of
 * memory). */
int tokenizer_encode(tokenizer_t *t, const char *text, size_t len, int32_t **ids, size_t *n);

/* Decode ids into a fresh NUL-terminated buffer (free() it) of *len bytes.
 * Special tokens come out as their text. The bytes are not checked to be
 * UTF-8 (a partial sequence of ids may cut a character). 0, or -1 via
 * err_set() for an id outside the vocabulary. */
int tokenizer_decode(tokenizer_t *t, const int32_t *ids, size_t n, char **text, size_t *len);

/* Ids run 0..vocab_size-1 (added tokens included). */
int tokenizer_vocab_size(const tokenizer_t *t);

/* The id of a token written as the tokenizer stores it (an added token's
 * content, or a vocabulary entry like "Ġthe"), or -1. */
int tokenizer_token_id(const tokenizer_t *t, const char *token);

/* Special tokens: the id, or -1 when the tokenizer has none. */
int tokenizer_bos_id(const tokenizer_t *t);
int tokenizer_eos_id(const tokenizer_t *t);
int tokenizer_pad_id(const tokenizer_t *t);

#endif
