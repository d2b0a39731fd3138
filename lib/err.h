/* err.h: the one error facility of modula.
 *
 * Library code reports failure by returning a negative number (or NULL) and
 * saying why through err_set(); the caller reads the message with err_msg().
 * Messages name the problem first and quote the offending value, git-style:
 *     return err_set("cannot open '%s': %s", path, strerror(errno));
 * The message lives in thread-local storage, so threads do not clobber each
 * other. This is not an exception mechanism: nothing unwinds, nothing exits.
 */
#ifndef MODULA_ERR_H
#define MODULA_ERR_H

#include <stddef.h>

#define ERR_MSG_MAX 1024

/* Record a message and return -1. Always returns -1. */
int err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Record a message and return `code` (use a negative code). */
int err_setc(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Put context in front of the current message: "ctx: old message".
 * Returns -1 so it can end a failure path: `return err_prefix("loading '%s'", p);` */
int err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The last message recorded on this thread ("" when none). */
const char *err_msg(void);

/* Forget the current message. */
void err_clear(void);

#endif
