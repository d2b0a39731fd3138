/* sha256.h: SHA-256 through OpenSSL's EVP interface (not a hand-written hash).
 * Used for artifact names, content keys and checksums of checkpoints.
 */
#ifndef MODULA_SHA256_H
#define MODULA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64

typedef struct sha256 sha256_t;

/* A fresh incremental hash; NULL via err_set() when OpenSSL fails. */
sha256_t *sha256_new(void);
int sha256_update(sha256_t *h, const void *data, size_t len);
/* Write the digest; the object may then be destroyed or reset. */
int sha256_final(sha256_t *h, uint8_t out[SHA256_LEN]);
/* Accepts NULL; clears the caller's pointer. */
void sha256_destroy(sha256_t **h);

/* One-shot digest of a buffer. 0 or -1. */
int sha256_buf(const void *data, size_t len, uint8_t out[SHA256_LEN]);
/* Lowercase hex, NUL-terminated (65 bytes). */
void sha256_hex(const uint8_t d[SHA256_LEN], char hex[SHA256_HEX_LEN + 1]);
/* Digest of a whole file, as hex. 0, or -1 via err_set() on I/O errors. */
int sha256_file(const char *path, char hex[SHA256_HEX_LEN + 1]);
/* 1 when `s` is 64 lowercase hex digits, else 0. */
int sha256_is_hex(const char *s);

#endif
