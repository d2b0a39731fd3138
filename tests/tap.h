/* tap.h: the Test Anything Protocol for modula's C tests.
 *
 * Each test program prints "ok N - what" / "not ok N - what" lines and, at
 * the end, the plan "1..N"; automake's TAP driver counts them. Header-only
 * and tiny on purpose: it is the one thing every test includes.
 *     TAP_OK(x == 3, "x is %d", x);
 *     return tap_done();
 */
#ifndef MODULA_TAP_H
#define MODULA_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

/* Report a test that cannot run here; it counts as skipped, never passed. */
static inline void tap_skip(const char *why, const char *what)
{
	tap_n++;
	printf("ok %d - %s # SKIP %s\n", tap_n, what, why);
	fflush(stdout);
}

static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* Print the plan; returns the exit status (0 when all passed). */
static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#define TAP_OK(cond, ...) tap_ok(!!(cond), __VA_ARGS__)

#endif
