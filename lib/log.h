/* log.h: levelled, timestamped logging to stderr or a file.
 *
 * One process-wide sink. Lines look like
 *     2026-11-27T22:31:05.123Z info  modulad: listening on 127.0.0.1:8600
 * Thread-safe (one write(2) per line). Secrets must never be passed here.
 * Not an audit log: the daemon's events table is that.
 */
#ifndef MODULA_LOG_H
#define MODULA_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

/* Set the minimum level written (default LOG_INFO). */
void log_set_level(enum log_level level);

/* Parse "debug", "info", "warn", "error" or "off". Returns 0, or -1 via
 * err_set() on an unknown name. */
int log_parse_level(const char *name, enum log_level *out);

/* Name every line with `ident` (the program name; the pointer is kept). */
void log_set_ident(const char *ident);

/* Append to the file at `path` instead of stderr; NULL returns to stderr.
 * Returns 0, or -1 via err_set() when the file cannot be opened (the
 * previous sink stays in place). */
int log_open(const char *path);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
