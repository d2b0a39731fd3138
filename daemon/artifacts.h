/* artifacts.h: modulad's content-addressed artifact store.
 *
 * A file whose SHA-256 is abcdef... lives at DATA/artifacts/ab/abcdef...
 * and has a row in the registry's artifacts table (sha256, size, kind). It
 * is written once: received into DATA/artifacts/tmp/, hashed while it
 * arrives, checked against the name the sender claimed, fsync'd, renamed
 * into place, the folder fsync'd, and only then registered. A reader never
 * sees a partial or wrong file. Names are validated (64 lowercase hex) so a
 * path built from a request can never leave the store.
 *
 * Not here: HTTP (http.c streams request bodies into an upload), deciding
 * what refers to an artifact (the registry's tables do: see artifacts_gc).
 */
#ifndef MODULA_DAEMON_ARTIFACTS_H
#define MODULA_DAEMON_ARTIFACTS_H

#include "daemon/registry.h"
#include "sha256.h"

#include <stddef.h>
#include <stdint.h>

typedef struct artifacts artifacts_t;
typedef struct artifact_upload artifact_upload_t;

/* The store under `data_dir` (DATA/artifacts, created when absent).
 * NULL via err_set(). Shared by threads: it holds only paths. */
artifacts_t *artifacts_new(const char *data_dir);
/* Accepts NULL; clears the caller's pointer. */
void artifacts_destroy(artifacts_t **a);

/* The file of artifact `sha256` into dst. -1 via err_set() when the name
 * is not 64 lowercase hex digits (nothing outside the store is named). */
int artifacts_path(const artifacts_t *a, const char *sha256, char *dst, size_t n);

/* Start receiving the artifact that claims to be `sha256` (validated).
 * NULL via err_set(). */
artifact_upload_t *artifacts_upload_begin(artifacts_t *a, const char *sha256);
/* Append bytes. -1 via err_set() on I/O errors or past `max_bytes` of
 * artifacts_upload_begin's limit (ARTIFACTS_MAX_BYTES). */
int artifacts_upload_write(artifact_upload_t *u, const void *data, size_t len);
/* Verify the hash, make the file durable, rename it into place and
 * register it (kind: "checkpoint", "expert", ...; NULL = "blob") in its own
 * registry transaction. A hash mismatch is refused (-1, the file is
 * deleted). Always frees the upload and clears *u. */
int artifacts_upload_commit(artifact_upload_t **u, registry_t *r, const char *kind, int64_t now_ms,
			    int64_t *size_out);
/* Drop an unfinished upload. Accepts NULL; clears *u. */
void artifacts_upload_abort(artifact_upload_t **u);

/* One-shot upload of a buffer (tests, small files). 0 or -1 via err_set(). */
int artifacts_put(artifacts_t *a, registry_t *r, const char *sha256, const void *data, size_t len,
		  const char *kind, int64_t now_ms);

/* Largest artifact accepted (64 GiB). */
#define ARTIFACTS_MAX_BYTES (64LL << 30)

/* Remove the artifacts nothing refers to (job outputs and checkpoints,
 * experts, routers, base models, datasets) that were registered before
 * now_ms - min_age_ms (so a job's fresh uploads survive until its DONE
 * names them), and leftover temporary files. *removed and *bytes (may be
 * NULL) get the count and their total size. 0 or -1 via err_set(). */
int artifacts_gc(artifacts_t *a, registry_t *r, int64_t now_ms, int64_t min_age_ms, int64_t *removed,
		 int64_t *bytes);

#endif
