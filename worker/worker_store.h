/* worker_store.h: modula-worker's side of the artifact store: upload a file
 * under its sha256, download one into a local cache, both with libcurl.
 *
 * The store is the daemon's (HTTP PUT / GET BASE/SHA256, docs/api.md) or a
 * folder (file:///path: the same names under it). Every file that passes
 * through is kept in the cache (WORK/cache/SHA256), so a retry on the same
 * machine does not download its checkpoint again. Downloads are checked
 * against their sha256 before they are used. Not a store: the daemon keeps
 * the index and decides what to delete.
 */
#ifndef MODULA_WORKER_STORE_H
#define MODULA_WORKER_STORE_H

typedef struct wstore wstore_t;

/* A store client with its cache in `cache_dir` (created). NULL via err_set(). */
wstore_t *wstore_new(const char *cache_dir);
/* Accepts NULL; clears the caller's pointer. */
void wstore_destroy(wstore_t **s);

/* Upload `path`, whose sha256 is `sha` (checked), to `base_url`/`sha`,
 * with `token` as a bearer token when not NULL, and keep a copy in the
 * cache. 0, or -1 via err_set(). */
int wstore_put(wstore_t *s, const char *base_url, const char *token, const char *path,
	       const char *sha);

/* Make `dst` a copy of the artifact `sha`: from the cache, else downloaded
 * from `base_url`/`sha` (and checked). 0, or -1 via err_set(). */
int wstore_get(wstore_t *s, const char *base_url, const char *token, const char *sha,
	       const char *dst);

#endif
