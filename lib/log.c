/* log.c: see log.h. */
#include "log.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level s_level = LOG_INFO;
static const char *s_ident = "modula";
static int s_fd = 2;

static const char *const s_names[] = { "debug", "info", "warn", "error", "off" };

void log_set_level(enum log_level level)
{
	s_level = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
	for (int i = 0; i <= LOG_OFF; i++) {
		if (strcmp(name, s_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return err_set("unknown log level '%s': use debug, info, warn, error or off", name);
}

void log_set_ident(const char *ident)
{
	s_ident = ident;
}

int log_open(const char *path)
{
	int fd;

	if (!path) {
		if (s_fd > 2)
			close(s_fd);
		s_fd = 2;
		return 0;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return err_set("cannot open log file '%s': %s", path, strerror(errno));
	if (s_fd > 2)
		close(s_fd);
	s_fd = fd;
	return 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int k;
	va_list ap;

	if (level < s_level || level >= LOG_OFF)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	k = snprintf(line + n, sizeof line - n, ".%03dZ %-5s %s: ", (int)(tv.tv_usec / 1000),
		     s_names[level], s_ident);
	if (k > 0)
		n += (size_t)k;
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (k > 0)
		n += (size_t)k;
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	while (write(s_fd, line, n) < 0 && errno == EINTR)
		;
}
