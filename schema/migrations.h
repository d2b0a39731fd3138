/* migrations.h: the registry's SQL migrations, compiled into modulad.
 *
 * schema/NNN_what.sql are the source of truth; the build quotes them into
 * schema/migrations.c (schema/embed.awk). Migration i (0-based) takes a
 * registry from PRAGMA user_version i to i + 1; its file name starts with
 * the number i + 1 (registry.c checks). Applying them is daemon/registry.c's
 * job, not this file's.
 */
#ifndef MODULA_SCHEMA_MIGRATIONS_H
#define MODULA_SCHEMA_MIGRATIONS_H

struct schema_migration {
	const char *name;   /* "001_init.sql" */
	const char *sql;
};

extern const struct schema_migration schema_migrations[];
extern const int schema_nmigrations;

#endif
