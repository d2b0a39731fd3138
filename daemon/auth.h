/* auth.h: API tokens of modulad's HTTP API.
 *
 * A token is 32 random bytes (OpenSSL RAND_bytes) shown once as 64 hex
 * digits; the registry keeps only its SHA-256 (api_tokens.hash) and a role.
 * Checking hashes the presented token, finds the row by hash and compares
 * the digests with CRYPTO_memcmp (constant time). Roles are ordered: a
 * higher role may do what a lower one may.
 *   viewer    reads (needed only when the API is bound beyond loopback)
 *   worker    + artifact uploads (the token modulad hands its workers)
 *   operator  + every mutation (submit, cancel, retry, gc)
 * Not here: which route needs which role (http.c decides).
 */
#ifndef MODULA_DAEMON_AUTH_H
#define MODULA_DAEMON_AUTH_H

#include "daemon/registry.h"

#include <stdint.h>

enum auth_role { AUTH_NONE = 0, AUTH_VIEWER, AUTH_WORKER, AUTH_OPERATOR };

#define AUTH_TOKEN_LEN 64

/* "none", "viewer", "worker", "operator". */
const char *auth_role_name(enum auth_role role);
/* 0, or -1 via err_set() for a name other than viewer|worker|operator. */
int auth_role_parse(const char *name, enum auth_role *out);

/* Make a token, store its hash with `role` and `note` (free text, may be
 * NULL) in its own transaction, and write the token to `token`.
 * 0, or -1 via err_set(). */
int auth_token_create(registry_t *r, enum auth_role role, const char *note, int64_t now_ms,
		      char token[AUTH_TOKEN_LEN + 1]);

/* Remove the tokens whose note is `note` (the previous run's worker token).
 * 0, or -1 via err_set(). */
int auth_token_revoke_note(registry_t *r, const char *note);

/* The role of `token` (AUTH_NONE when it is unknown or malformed; an empty
 * or NULL token is AUTH_NONE). 0, or -1 via err_set() on a registry error. */
int auth_check(registry_t *r, const char *token, enum auth_role *role);

#endif
