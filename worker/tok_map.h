/* tok_map.h: a small open-addressing hash map from byte strings to int64,
 * for the tokenizer's vocabulary, merges and word cache.
 *
 * Keys are copied into the map's own arena. Linear probing, grows at half
 * full, never shrinks; no deletion but a full clear. Not thread-safe.
 */
#ifndef MODULA_TOK_MAP_H
#define MODULA_TOK_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok_map tok_map_t;

/* NULL via err_set() when out of memory. */
tok_map_t *tok_map_new(void);
void tok_map_destroy(tok_map_t **m);

/* Insert key -> val. 0 inserted, 1 the key was already there (its value
 * is left alone), -1 via err_set() when out of memory. */
int tok_map_put(tok_map_t *m, const void *key, size_t len, int64_t val);

/* 1 and *val when found, else 0. */
int tok_map_get(const tok_map_t *m, const void *key, size_t len, int64_t *val);

size_t tok_map_count(const tok_map_t *m);

/* Forget every key (the memory is kept for reuse). */
void tok_map_clear(tok_map_t *m);

#endif
