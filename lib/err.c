/* err.c: thread-local error messages; see err.h. Not a logger. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char s_msg[ERR_MSG_MAX];

static void s_vset(const char *fmt, va_list ap)
{
	vsnprintf(s_msg, sizeof s_msg, fmt, ap);
}

int err_set(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_vset(fmt, ap);
	va_end(ap);
	return -1;
}

int err_setc(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_vset(fmt, ap);
	va_end(ap);
	return code;
}

int err_prefix(const char *fmt, ...)
{
	char old[ERR_MSG_MAX];
	size_t n, k;
	va_list ap;

	memcpy(old, s_msg, sizeof old);
	va_start(ap, fmt);
	vsnprintf(s_msg, sizeof s_msg, fmt, ap);
	va_end(ap);
	if (!old[0])
		return -1;
	n = strlen(s_msg);
	k = strlen(old);
	if (n + 2 + k >= sizeof s_msg)
		k = sizeof s_msg - n - 3 < sizeof s_msg ? sizeof s_msg - n - 3 : 0;
	if (n + 2 < sizeof s_msg) {
		memcpy(s_msg + n, ": ", 2);
		memcpy(s_msg + n + 2, old, k);
		s_msg[n + 2 + k] = '\0';
	}
	return -1;
}

const char *err_msg(void)
{
	return s_msg;
}

void err_clear(void)
{
	s_msg[0] = '\0';
}
