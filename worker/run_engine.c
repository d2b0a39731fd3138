/* run_engine.c: fork+exec of modula-engine and its stdout lines (see
 * run_engine.h). */
#include "config.h"
#include "worker/run_engine.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINE_MAX_BYTES (1 << 20)

struct run_engine {
	pid_t pid;
	int fd;
	int exited, status;
	char *buf;
	size_t len, cap, start;
};

run_engine_t *run_engine_start(const char *engine, const char *subcmd, const char *dir,
			       const char *device)
{
	run_engine_t *r = calloc(1, sizeof(*r));
	int p[2];

	if (!r) {
		err_set("out of memory");
		return NULL;
	}
	if (pipe(p) < 0 || fcntl(p[0], F_SETFD, FD_CLOEXEC) < 0 ||
	    fcntl(p[1], F_SETFD, FD_CLOEXEC) < 0) {
		err_set("cannot make a pipe: %s", strerror(errno));
		free(r);
		return NULL;
	}
	r->pid = fork();
	if (r->pid < 0) {
		err_set("cannot fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		free(r);
		return NULL;
	}
	if (r->pid == 0) {
		int log;

		/* The child: only async-signal-safe calls until exec. */
		if (chdir(dir) < 0)
			_exit(126);
		log = open("engine.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (dup2(p[1], 1) < 0 || (log >= 0 && dup2(log, 2) < 0))
			_exit(126);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		if (device)
			execl(engine, engine, subcmd, "job.json", "--device", device, (char *)NULL);
		else
			execl(engine, engine, subcmd, "job.json", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	r->fd = p[0];
	fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
	return r;
}

int run_engine_fd(const run_engine_t *r)
{
	return r->fd;
}

pid_t run_engine_pid(const run_engine_t *r)
{
	return r->pid;
}

int run_engine_read(run_engine_t *r)
{
	ssize_t n;

	while (r->fd >= 0) {
		if (r->start > 0 && r->start == r->len)
			r->start = r->len = 0;
		if (r->cap - r->len < 4096) {
			size_t cap = r->cap ? r->cap * 2 : 8192;
			char *b;

			if (r->start > 0) {
				memmove(r->buf, r->buf + r->start, r->len - r->start);
				r->len -= r->start;
				r->start = 0;
				continue;
			}
			b = realloc(r->buf, cap + 1);
			if (!b)
				return err_set("out of memory");
			r->buf = b;
			r->cap = cap;
		}
		n = read(r->fd, r->buf + r->len, r->cap - r->len);
		if (n > 0) {
			r->len += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		close(r->fd);
		r->fd = -1;
		if (n < 0)
			return err_set("cannot read from the engine: %s", strerror(errno));
	}
	return 0;
}

char *run_engine_line(run_engine_t *r)
{
	char *line = r->buf + r->start, *nl;
	size_t avail = r->len - r->start;

	if (!r->buf || avail == 0)
		return NULL;
	nl = memchr(line, '\n', avail);
	if (!nl) {
		/* A last line without a newline, or one too long to wait for. */
		if (r->fd >= 0 && avail < LINE_MAX_BYTES)
			return NULL;
		line[avail] = '\0';
		r->start = r->len;
		return line;
	}
	*nl = '\0';
	r->start += (size_t)(nl - line) + 1;
	return line;
}

void run_engine_signal(run_engine_t *r, int sig)
{
	if (r && !r->exited && r->pid > 0)
		kill(r->pid, sig);
}

int run_engine_reap(run_engine_t *r, int *status)
{
	if (!r->exited && waitpid(r->pid, &r->status, WNOHANG) == r->pid)
		r->exited = 1;
	if (r->exited && status)
		*status = r->status;
	return r->exited;
}

void run_engine_destroy(run_engine_t **rp)
{
	run_engine_t *r = rp ? *rp : NULL;

	if (!r)
		return;
	if (!r->exited && r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, &r->status, 0);
	}
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	free(r);
	*rp = NULL;
}
