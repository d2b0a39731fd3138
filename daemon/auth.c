/* auth.c: see auth.h. */
#include "config.h"
#include "daemon/auth.h"
#include "err.h"
#include "sha256.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

static const char *const s_roles[] = { "none", "viewer", "worker", "operator" };

const char *auth_role_name(enum auth_role role)
{
	return (unsigned)role <= AUTH_OPERATOR ? s_roles[role] : "?";
}

int auth_role_parse(const char *name, enum auth_role *out)
{
	for (int i = AUTH_VIEWER; i <= AUTH_OPERATOR; i++)
		if (strcmp(name, s_roles[i]) == 0) {
			*out = (enum auth_role)i;
			return 0;
		}
	return err_set("unknown role '%s': expected viewer, worker or operator", name);
}

static int s_hash_hex(const char *token, char hex[SHA256_HEX_LEN + 1])
{
	uint8_t d[SHA256_LEN];

	if (sha256_buf(token, strlen(token), d) < 0)
		return -1;
	sha256_hex(d, hex);
	return 0;
}

int auth_token_create(registry_t *r, enum auth_role role, const char *note, int64_t now_ms,
		      char token[AUTH_TOKEN_LEN + 1])
{
	uint8_t raw[AUTH_TOKEN_LEN / 2];
	char hash[SHA256_HEX_LEN + 1];
	sqlite3_stmt *st;

	if (role < AUTH_VIEWER || role > AUTH_OPERATOR)
		return err_set("cannot make a token for role '%s'", auth_role_name(role));
	if (RAND_bytes(raw, sizeof raw) != 1)
		return err_set("cannot draw random bytes for a token (OpenSSL)");
	sha256_hex(raw, token);  /* 32 bytes as 64 hex digits */
	if (s_hash_hex(token, hash) < 0 || registry_begin(r) < 0)
		return -1;
	st = registry_stmt(r, "INSERT INTO api_tokens (hash, role, note, created_ms) VALUES (?, ?, ?, ?)");
	if (!st)
		return registry_rollback(r);
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, auth_role_name(role), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, note, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now_ms);
	if (registry_step_done(r, st) < 0 || registry_event(r, now_ms, "token.created", 0, "cli", auth_role_name(role)) < 0)
		return registry_rollback(r);
	return registry_commit(r);
}

int auth_token_revoke_note(registry_t *r, const char *note)
{
	sqlite3_stmt *st;

	if (registry_begin(r) < 0)
		return -1;
	if (!(st = registry_stmt(r, "DELETE FROM api_tokens WHERE note = ?")))
		return registry_rollback(r);
	sqlite3_bind_text(st, 1, note, -1, SQLITE_STATIC);
	if (registry_step_done(r, st) < 0)
		return registry_rollback(r);
	return registry_commit(r);
}

int auth_check(registry_t *r, const char *token, enum auth_role *role)
{
	char hash[SHA256_HEX_LEN + 1];
	sqlite3_stmt *st;
	int rc;

	*role = AUTH_NONE;
	if (!token || strlen(token) != AUTH_TOKEN_LEN)
		return 0;
	if (s_hash_hex(token, hash) < 0 || !(st = registry_stmt(r, "SELECT hash, role FROM api_tokens WHERE hash = ?")))
		return -1;
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *stored = (const char *)sqlite3_column_text(st, 0);
		if (stored && strlen(stored) == SHA256_HEX_LEN && CRYPTO_memcmp(stored, hash, SHA256_HEX_LEN) == 0 &&
		    auth_role_parse((const char *)sqlite3_column_text(st, 1), role) < 0)
			*role = AUTH_NONE;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return registry_err(r, "checking a token");
	return 0;
}
