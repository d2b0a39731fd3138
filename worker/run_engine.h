/* run_engine.h: one modula-engine child process of modula-worker.
 *
 * run_engine_start() forks and execs `ENGINE SUBCMD job.json [--device D]` with its
 * working directory in the job's folder, stdout on a pipe the worker polls
 * (JSON lines, one event each: docs/worker.md) and stderr appended to
 * engine.log in that folder. The worker reads lines as they come, never
 * blocking; the child's exit is collected without blocking too. A crash of
 * the child is a result to report, never a crash of the worker. Not a
 * parser of the events: worker.c gives them meaning.
 */
#ifndef MODULA_WORKER_RUN_ENGINE_H
#define MODULA_WORKER_RUN_ENGINE_H

#include <sys/types.h>

typedef struct run_engine run_engine_t;

/* Start `engine subcmd job.json` in `dir`, with `--device DEVICE` after it
 * when device is not NULL. NULL via err_set() when the pipe or fork fails;
 * a missing engine binary shows up as exit status 127. */
run_engine_t *run_engine_start(const char *engine, const char *subcmd, const char *dir,
			       const char *device);

/* The stdout pipe to poll, or -1 once it reached end of file. */
int run_engine_fd(const run_engine_t *r);

/* Read what is waiting on the pipe (never blocks). 0, or -1 via err_set()
 * on a read error (the pipe is then closed). */
int run_engine_read(run_engine_t *r);

/* The next complete line (NUL-terminated, without the newline), valid until
 * the next call; NULL when no whole line is buffered. Lines over 1 MiB are
 * cut and returned in pieces. */
char *run_engine_line(run_engine_t *r);

/* Send a signal to the child (no-op once it exited). */
void run_engine_signal(run_engine_t *r, int sig);

/* 1 when the child has exited (status in *status as from waitpid), 0 while
 * it runs. Never blocks. */
int run_engine_reap(run_engine_t *r, int *status);

pid_t run_engine_pid(const run_engine_t *r);

/* SIGKILL the child when it still runs, reap it, close the pipe. Accepts
 * NULL; clears the caller's pointer. */
void run_engine_destroy(run_engine_t **r);

#endif
