/* registry.c: see registry.h. Opening, migrating, transactions and the
 * per-connection statement cache; no table knowledge beyond events. */
#include "config.h"
#include "daemon/registry.h"
#include "schema/migrations.h"
#include "err.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REGISTRY_BUCKETS 128
#define REGISTRY_BUSY_MS 10000

static atomic_int s_defer_checkpoints;

struct stmt_entry {
	struct stmt_entry *next;
	char *sql;
	sqlite3_stmt *st;
};

struct registry {
	sqlite3 *db;
	char *path;
	int depth;
	struct stmt_entry *buckets[REGISTRY_BUCKETS];
};

int registry_err(registry_t *r, const char *what)
{
	return err_set("%s: %s (registry '%s')", what, sqlite3_errmsg(r->db), r->path);
}

int registry_exec(registry_t *r, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(r->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		err_set("registry '%s': %s (in \"%.80s\")", r->path, msg ? msg : sqlite3_errmsg(r->db), sql);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int s_pragma_int(registry_t *r, const char *pragma, int *out)
{
	sqlite3_stmt *st = NULL;
	char sql[64];
	int rc;

	snprintf(sql, sizeof sql, "PRAGMA %s", pragma);
	if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK)
		return registry_err(r, pragma);
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return registry_err(r, pragma);
	return 0;
}

int registry_schema_version(void)
{
	return schema_nmigrations;
}

/* Bring the file from its user_version to the newest, one transaction per
 * migration (a crash leaves it at a whole version). */
static int s_migrate(registry_t *r)
{
	int version, app;
	char sql[96];

	if (s_pragma_int(r, "user_version", &version) < 0 || s_pragma_int(r, "application_id", &app) < 0)
		return -1;
	if (app != 0 && app != REGISTRY_APPLICATION_ID)
		return err_set("'%s' is not a modula registry (application_id %#x): pass another --data folder",
			       r->path, (unsigned)app);
	if (version > schema_nmigrations)
		return err_set("registry '%s' has schema version %d, newer than this modulad knows (%d): "
			       "upgrade modulad", r->path, version, schema_nmigrations);
	for (int i = version; i < schema_nmigrations; i++) {
		const struct schema_migration *m = &schema_migrations[i];
		if (atoi(m->name) != i + 1)
			return err_set("migration '%s' is out of order: expected number %d", m->name, i + 1);
		if (registry_exec(r, "BEGIN IMMEDIATE") < 0)
			return err_prefix("migrating to '%s'", m->name);
		snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %d",
			 REGISTRY_APPLICATION_ID, i + 1);
		if (registry_exec(r, m->sql) < 0 || registry_exec(r, sql) < 0) {
			sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
			return err_prefix("migration '%s'", m->name);
		}
		if (registry_exec(r, "COMMIT") < 0) {
			sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
			return err_prefix("migration '%s'", m->name);
		}
	}
	return 0;
}

registry_t *registry_open(const char *path)
{
	registry_t *r = calloc(1, sizeof *r);

	if (!r || !(r->path = strdup(path))) {
		free(r);
		err_set("out of memory opening registry '%s'", path);
		return NULL;
	}
	if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		err_set("cannot open registry '%s': %s", path, r->db ? sqlite3_errmsg(r->db) : "out of memory");
		goto err;
	}
	sqlite3_busy_timeout(r->db, REGISTRY_BUSY_MS);
	sqlite3_extended_result_codes(r->db, 1);
	/* WAL so readers never wait for the writer; FULL so a COMMIT is on
	 * disk before anyone is told (registry.h explains the trade). */
	if (registry_exec(r, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
			     "PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY") < 0)
		goto err;
	if (atomic_load(&s_defer_checkpoints) && registry_exec(r, "PRAGMA wal_autocheckpoint = 0") < 0)
		goto err;
	if (s_migrate(r) < 0)
		goto err;
	return r;
err:
	registry_close(&r);
	return NULL;
}

void registry_close(registry_t **rp)
{
	registry_t *r = rp ? *rp : NULL;

	if (!r)
		return;
	for (int i = 0; i < REGISTRY_BUCKETS; i++) {
		struct stmt_entry *e = r->buckets[i];
		while (e) {
			struct stmt_entry *next = e->next;
			sqlite3_finalize(e->st);
			free(e->sql);
			free(e);
			e = next;
		}
	}
	if (r->db) {
		if (r->depth > 0)
			sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close_v2(r->db);
	}
	free(r->path);
	free(r);
	*rp = NULL;
}

sqlite3 *registry_db(registry_t *r)
{
	return r->db;
}

const char *registry_path(const registry_t *r)
{
	return r->path;
}

int registry_depth(const registry_t *r)
{
	return r->depth;
}

static unsigned s_hash(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % REGISTRY_BUCKETS;
}

sqlite3_stmt *registry_stmt(registry_t *r, const char *sql)
{
	unsigned h = s_hash(sql);
	struct stmt_entry *e;

	for (e = r->buckets[h]; e; e = e->next)
		if (strcmp(e->sql, sql) == 0)
			break;
	if (!e) {
		e = calloc(1, sizeof *e);
		if (!e || !(e->sql = strdup(sql))) {
			free(e);
			err_set("out of memory preparing a statement");
			return NULL;
		}
		if (sqlite3_prepare_v3(r->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &e->st, NULL) != SQLITE_OK) {
			err_set("registry '%s': %s (in \"%.120s\")", r->path, sqlite3_errmsg(r->db), sql);
			free(e->sql);
			free(e);
			return NULL;
		}
		e->next = r->buckets[h];
		r->buckets[h] = e;
	}
	sqlite3_reset(e->st);
	sqlite3_clear_bindings(e->st);
	return e->st;
}

int registry_step_done(registry_t *r, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		err_set("registry '%s': %s (in \"%.120s\")", r->path, sqlite3_errmsg(r->db), sqlite3_sql(st));
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return 0;
}

static int s_run(registry_t *r, const char *sql)
{
	sqlite3_stmt *st = registry_stmt(r, sql);

	return st ? registry_step_done(r, st) : -1;
}

int registry_begin(registry_t *r)
{
	if (s_run(r, r->depth == 0 ? "BEGIN IMMEDIATE" : "SAVEPOINT registry_level") < 0)
		return -1;
	r->depth++;
	return 0;
}

int registry_commit(registry_t *r)
{
	if (r->depth <= 0)
		return err_set("registry '%s': commit without a transaction", r->path);
	if (s_run(r, r->depth == 1 ? "COMMIT" : "RELEASE registry_level") < 0) {
		registry_rollback(r);
		return -1;
	}
	r->depth--;
	return 0;
}

int registry_rollback(registry_t *r)
{
	char keep[ERR_MSG_MAX];

	if (r->depth <= 0)
		return -1;
	snprintf(keep, sizeof keep, "%s", err_msg());
	if (r->depth == 1) {
		if (sqlite3_get_autocommit(r->db) == 0)
			sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
	} else {
		sqlite3_exec(r->db, "ROLLBACK TO registry_level; RELEASE registry_level", NULL, NULL, NULL);
	}
	r->depth--;
	if (keep[0])
		err_set("%s", keep);
	return -1;
}

void registry_defer_checkpoints(int on)
{
	atomic_store(&s_defer_checkpoints, on);
}

int registry_checkpoint(registry_t *r)
{
	int rc = sqlite3_wal_checkpoint_v2(r->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);

	return rc == SQLITE_OK || rc == SQLITE_BUSY ? 0 : registry_err(r, "checkpointing the WAL");
}

int registry_event(registry_t *r, int64_t now_ms, const char *kind, int64_t job_id,
		   const char *actor, const char *detail)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT INTO events (t_ms, kind, job_id, actor, detail) "
					    "VALUES (?, ?, ?, ?, ?)");

	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, now_ms);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	if (job_id > 0)
		sqlite3_bind_int64(st, 3, job_id);
	sqlite3_bind_text(st, 4, actor, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, detail, -1, SQLITE_STATIC);
	return registry_step_done(r, st);
}

/* ---- catalogue rows ------------------------------------------------------ */

#define S_ARTIFACT(n) "(SELECT sha256 FROM artifacts WHERE sha256 = ?" #n ")"

static void s_bind_id(sqlite3_stmt *st, int col, int64_t id)
{
	if (id > 0)
		sqlite3_bind_int64(st, col, id);
	else
		sqlite3_bind_null(st, col);
}

int registry_add_dataset(registry_t *r, const struct registry_dataset *d, int64_t now_ms)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT OR IGNORE INTO datasets (name, domain, split, artifact, rows, "
					    "created_ms) VALUES (?1, ?2, ?3, " S_ARTIFACT(4) ", ?5, ?6)");

	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, d->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, d->domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, d->split, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, d->sha256, -1, SQLITE_STATIC);
	if (d->rows >= 0)
		sqlite3_bind_int64(st, 5, d->rows);
	sqlite3_bind_int64(st, 6, now_ms);
	return registry_step_done(r, st);
}

int registry_add_base_model(registry_t *r, const char *name, const char *sha256, const char *config_json,
			    int64_t now_ms)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT OR IGNORE INTO base_models (name, artifact, config, created_ms) "
					    "VALUES (?1, " S_ARTIFACT(2) ", ?3, ?4)");

	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, config_json, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now_ms);
	return registry_step_done(r, st);
}

int registry_add_expert(registry_t *r, const struct registry_expert *e, int64_t now_ms)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT INTO experts (name, role, domain, rank, base_model, artifact, "
					    "job_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, " S_ARTIFACT(6) ", ?7, ?8)");

	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, e->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, e->role, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, e->domain, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, e->rank);
	s_bind_id(st, 5, e->base_model);
	sqlite3_bind_text(st, 6, e->sha256, -1, SQLITE_STATIC);
	s_bind_id(st, 7, e->job_id);
	sqlite3_bind_int64(st, 8, now_ms);
	return registry_step_done(r, st);
}

int registry_add_router(registry_t *r, const char *name, const char *kind, int64_t base_model, const char *sha256,
			int64_t job_id, int64_t now_ms)
{
	sqlite3_stmt *st = registry_stmt(r, "INSERT INTO routers (name, kind, base_model, artifact, job_id, created_ms) "
					    "VALUES (?1, ?2, ?3, " S_ARTIFACT(4) ", ?5, ?6)");

	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	s_bind_id(st, 3, base_model);
	sqlite3_bind_text(st, 4, sha256, -1, SQLITE_STATIC);
	s_bind_id(st, 5, job_id);
	sqlite3_bind_int64(st, 6, now_ms);
	return registry_step_done(r, st);
}
