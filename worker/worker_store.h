/* worker_store.h: modula-worker's side of the artifact store: upload a file
 * under its sha256, download one into a local cache, both with libcurl.
 *
 * The store is the daemon's (HTTP GET BASE/SHA256, resumable uploads to
 * BASE/SHA256/upload, docs/api.md) or a folder (file:///path: the same
 * names under it). Every file that passes through is kept in the cache (WORK/cache/SHA256), so a retry on the same
 * machine does not download its checkpoint again, and jobs that share an
 * input (a base model, a dataset) download it once per machine. Downloads
 * are checked against their sha256 before they are used.
 *
 * Transfers that fail on the way (connection refused or dropped, a stalled
 * link, a 5xx) are tried again with a backoff (0.5 s doubling, WSTORE_TRIES
 * tries), and each try resumes where the last one stopped: a download goes
 * on from the partial file it left (Range: bytes=N-; the whole is checked
 * against its sha256 at the end, and fetched once more from 0 if a resumed
 * file does not match); an upload asks the daemon how many bytes it holds
 * (GET BASE/SHA256/upload) and sends only the rest as one part
 * (PUT BASE/SHA256/upload, Content-Range; docs/api.md), the daemon checking
 * the sha256 of the whole. A file:// store gets whole copies. A refusal
 * (4xx) is not retried. While a transfer runs or waits, the tick hook is
 * called about every second, so the worker keeps heartbeating through long
 * uploads.
 *
 * Not a store: the daemon keeps the index and decides what to delete.
 */
#ifndef MODULA_WORKER_STORE_H
#define MODULA_WORKER_STORE_H

#include <cjson/cJSON.h>

#define WSTORE_TRIES 6

typedef struct wstore wstore_t;

/* A store client with its cache in `cache_dir` (created). NULL via err_set(). */
wstore_t *wstore_new(const char *cache_dir);
/* Accepts NULL; clears the caller's pointer. */
void wstore_destroy(wstore_t **s);

/* Call `fn(arg)` about every second while a transfer runs or backs off. */
void wstore_set_tick(wstore_t *s, void (*fn)(void *), void *arg);
/* Set the first backoff (ms, default 500; tests make it short). */
void wstore_set_backoff(wstore_t *s, long first_ms);

/* Upload `path`, whose sha256 is `sha` (checked), to `base_url`/`sha`,
 * with `token` as a bearer token when not NULL, and keep a copy in the
 * cache. 0, or -1 via err_set(). */
int wstore_put(wstore_t *s, const char *base_url, const char *token, const char *path,
	       const char *sha);

/* Make `dst` a copy of the artifact `sha`: from the cache, else downloaded
 * from `base_url`/`sha` (and checked). 0, or -1 via err_set(). */
int wstore_get(wstore_t *s, const char *base_url, const char *token, const char *sha,
	       const char *dst);

/* Fetch a job's inputs into `dir`: `inputs` is an object {"rel/path":
 * "sha256", ...} (NULL: nothing to do); each path stays inside `dir`.
 * 0, or -1 via err_set(). */
int wstore_get_inputs(wstore_t *s, const char *base_url, const char *token, const cJSON *inputs,
		      const char *dir);

/* Downloads done (not counting cache hits) since wstore_new(). */
long wstore_downloads(const wstore_t *s);

#endif
