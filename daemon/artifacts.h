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
 * What is stored is checked again before it is served (artifacts_verify):
 * a file changed on disk after it was written (bit rot, a stray write, a
 * bad restore) is refused instead of sent. Each version of a file, by
 * (device, inode, size, mtime), is hashed once; the verdict is remembered
 * in memory, so a large base model is read once more per daemon start,
 * not once per download.
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
 * NULL via err_set(). Shared by threads: it holds paths and the verified
 * files' table (under a mutex). */
artifacts_t *artifacts_new(const char *data_dir);
/* Accepts NULL; clears the caller's pointer. */
void artifacts_destroy(artifacts_t **a);

/* The file of artifact `sha256` into dst. -1 via err_set() when the name
 * is not 64 lowercase hex digits (nothing outside the store is named). */
int artifacts_path(const artifacts_t *a, const char *sha256, char *dst, size_t n);

/* Check that the open file `fd` of artifact `sha256` still hashes to its
 * name, before serving it. 0 when it does. -1 via err_set() when it does
 * not ("artifact ... is corrupt in the store: ..."; *found is then 1 if
 * this call hashed the file, 0 if the verdict was remembered) or when it
 * cannot be read (*found 0). `found` may be NULL. */
int artifacts_verify(artifacts_t *a, const char *sha256, int fd, int *found);

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
/* Drop an unfinished upload: a plain upload's bytes are deleted, a
 * resumable one's are made durable (fsync) and kept for its next part.
 * Accepts NULL; clears *u. */
void artifacts_upload_abort(artifact_upload_t **u);

/* Resumable uploads (PUT .../artifacts/SHA/upload with Content-Range,
 * docs/api.md): the bytes of `sha256` received so far are kept in
 * DATA/artifacts/tmp/partial.SHA across requests, dropped connections and
 * daemon restarts. artifacts_resume() continues it with a part that
 * starts at byte `offset`, which must be the number of bytes held (*held
 * gets that number, or -1 when it is unknown); a part of the same upload
 * being received by another request is refused. Then write, and commit
 * (the whole file is hashed: as it arrives when the upload started at 0,
 * else read back once) or abort (keeps the bytes). A hash mismatch at
 * commit deletes the partial file. NULL via err_set(). */
artifact_upload_t *artifacts_resume(artifacts_t *a, const char *sha256, int64_t offset, int64_t *held);
/* Bytes held for the resumable upload of `sha256`: 0 when none, -1 via
 * err_set(). */
int64_t artifacts_resume_held(artifacts_t *a, const char *sha256);

/* One-shot upload of a buffer (tests, small files). 0 or -1 via err_set(). */
int artifacts_put(artifacts_t *a, registry_t *r, const char *sha256, const void *data, size_t len,
		  const char *kind, int64_t now_ms);

/* Largest artifact accepted (64 GiB). */
#define ARTIFACTS_MAX_BYTES (64LL << 30)

/* Remove the artifacts nothing refers to (job outputs and checkpoints,
 * experts, routers, base models, datasets) that were registered before
 * now_ms - min_age_ms (so a job's fresh uploads survive until its DONE
 * names them), and leftover temporary files (plain uploads that never
 * finished, resumable ones not continued for min_age_ms). *removed and *bytes (may be
 * NULL) get the count and their total size. 0 or -1 via err_set(). */
int artifacts_gc(artifacts_t *a, registry_t *r, int64_t now_ms, int64_t min_age_ms, int64_t *removed,
		 int64_t *bytes);

#endif
