/* registry.h: one connection to modulad's SQLite registry (DATA/registry.db).
 *
 * registry_open() opens the file, sets the connection's pragmas and applies
 * the numbered migrations of schema/ (embedded in the binary at build time)
 * that the file does not have yet, each in its own transaction, tracked by
 * PRAGMA user_version; PRAGMA application_id marks the file as modula's.
 *
 * Pragmas, and why:
 *   journal_mode=WAL     readers (HTTP threads) never block the writer
 *   synchronous=FULL     every COMMIT fsyncs the WAL before it returns, so a
 *                        committed job state survives a power cut, not only
 *                        a crash of modulad: "every state change of a job is
 *                        durable before it is acknowledged". NORMAL would be
 *                        faster but may lose the last commits on power loss.
 *                        The cost (one fsync per commit) is paid once per
 *                        batch: callers group many changes per transaction.
 *   busy_timeout=10000   the broker thread and HTTP threads each hold their
 *                        own connection and wait for each other's writes
 *   foreign_keys=ON      edges (job_deps, metrics, ...) point at real rows
 *
 * Write transactions start with BEGIN IMMEDIATE (the write lock is taken at
 * once, so a transaction never fails half-way on SQLITE_BUSY upgrading a read
 * lock). registry_begin() nests: the outermost call is BEGIN IMMEDIATE,
 * inner calls are SAVEPOINTs, so a queue operation is atomic on its own and
 * can also be one of many in a caller's batch.
 *
 * A registry_t is used by one thread at a time (one per thread). It is not
 * a query layer: modules write their own SQL through registry_stmt().
 */
#ifndef MODULA_DAEMON_REGISTRY_H
#define MODULA_DAEMON_REGISTRY_H

#include <sqlite3.h>
#include <stdint.h>

/* "modu" as big-endian bytes, stored in PRAGMA application_id. */
#define REGISTRY_APPLICATION_ID 0x6d6f6475

typedef struct registry registry_t;

/* Open (creating when absent) the registry at `path` and migrate it to the
 * newest schema. A file with another application_id, or a user_version newer
 * than this binary knows, is refused (nothing is changed). Returns NULL via
 * err_set() on failure. */
registry_t *registry_open(const char *path);

/* Finalize cached statements and close. An open transaction is rolled back.
 * Accepts NULL; clears the caller's pointer. */
void registry_close(registry_t **r);

/* The underlying connection, for modules that write their own SQL. */
sqlite3 *registry_db(registry_t *r);

/* The path given to registry_open(). */
const char *registry_path(const registry_t *r);

/* The number of migrations compiled in (= the user_version after open). */
int registry_schema_version(void);

/* Start a write transaction (BEGIN IMMEDIATE when none is open, else a
 * SAVEPOINT). Every registry_begin() is closed by exactly one
 * registry_commit() or registry_rollback(). 0, or -1 via err_set(). */
int registry_begin(registry_t *r);

/* Close the innermost level: the outermost commit is the durable COMMIT
 * (fsync'd, see above); inner ones RELEASE their savepoint. On failure the
 * level is rolled back and -1 returned via err_set(). */
int registry_commit(registry_t *r);

/* Undo the innermost level. Keeps the current err_msg(). Returns -1 so a
 * failure path can end with `return registry_rollback(r);`. */
int registry_rollback(registry_t *r);

/* Nesting depth: 0 when no transaction is open. */
int registry_depth(const registry_t *r);

/* A prepared statement for `sql`, cached per connection (keyed by the text)
 * and reset with its bindings cleared. The statement stays owned by the
 * registry: do not finalize it. NULL via err_set() on a SQL error. */
sqlite3_stmt *registry_stmt(registry_t *r, const char *sql);

/* Run one or more statements without results. 0, or -1 via err_set(). */
int registry_exec(registry_t *r, const char *sql);

/* Step `st` to completion (SQLITE_DONE) and reset it. 0, or -1 via
 * err_set() naming the SQL and SQLite's message. */
int registry_step_done(registry_t *r, sqlite3_stmt *st);

/* err_set() with SQLite's current message and `what` in front. -1. */
int registry_err(registry_t *r, const char *what);

/* Process-wide switch, for modulad: connections opened afterwards never
 * checkpoint the WAL inside a COMMIT (PRAGMA wal_autocheckpoint = 0);
 * a background thread calls registry_checkpoint() instead, so a writer's
 * commit costs one WAL fsync and never a checkpoint's writes and fsync
 * (dispatch latency). Off by default (tools and tests checkpoint as usual). */
void registry_defer_checkpoints(int on);

/* Copy committed WAL pages into the database file without blocking
 * writers or readers (SQLITE_CHECKPOINT_PASSIVE). 0, or -1 via err_set(). */
int registry_checkpoint(registry_t *r);

/* Append to the events (audit) table: `kind` like "job.cancelled", the job
 * (0 for none), a free-text actor ("http:operator", "broker", "worker:w1")
 * and optional JSON `detail` (NULL for none). Part of the current
 * transaction. 0, or -1 via err_set(). */
int registry_event(registry_t *r, int64_t now_ms, const char *kind, int64_t job_id,
		   const char *actor, const char *detail);

/* ---- catalogue rows (daemon/job_catalog.c makes them from jobs) ---------
 * Each names its file by sha256 in `artifact` when the store has registered
 * that file (an artifacts row), else leaves it NULL (a file:// store
 * registers nothing; the job's outputs still name the file). Part of the
 * current transaction; 0, or -1 via err_set(). Ids <= 0 are stored NULL. */

struct registry_dataset {
	const char *name, *domain, *split, *sha256;   /* domain may be NULL */
	int64_t rows;                                 /* records; -1 unknown */
};

/* Insert a dataset; a row with the same (name, split) is kept as it is. */
int registry_add_dataset(registry_t *r, const struct registry_dataset *d, int64_t now_ms);

/* Insert a base model; one with the same name is kept as it is. */
int registry_add_base_model(registry_t *r, const char *name, const char *sha256, const char *config_json,
			    int64_t now_ms);

struct registry_expert {
	const char *name, *role, *domain, *sha256;    /* role "universal" (domain NULL) or "domain" */
	int rank;
	int64_t base_model, job_id;
};

int registry_add_expert(registry_t *r, const struct registry_expert *e, int64_t now_ms);
int registry_add_router(registry_t *r, const char *name, const char *kind, int64_t base_model, const char *sha256,
			int64_t job_id, int64_t now_ms);

#endif
