/* dispatch_bench.c: end-to-end noop dispatch through modulad's broker and
 * real modula-worker processes, next to a raw ZeroMQ ROUTER/DEALER loop of
 * the same shape on the same machine, in the same run.
 *
 *   raw:  a ROUTER and 8 DEALER threads over tcp://127.0.0.1, S messages in
 *         flight per peer (what the broker does, minus everything else)
 *   e2e:  the registry (SQLite, synchronous=FULL), the broker (daemon/broker.c)
 *         on a thread, 8 modula-worker processes with S slots; N noop jobs
 *         submitted in one transaction, timed until the last is recorded
 *         SUCCEEDED (submitted -> leased -> run -> result durable)
 *   latency: one job at a time, from the submit's commit to SUCCEEDED seen
 *         by a reader polling the registry (p50, p99)
 *
 * Targets (issue 5): >= 5,000 jobs/s, p99 <= 5 ms. Not a test: it prints
 * figures. Usage: dispatch_bench [MODULA_WORKER [JOBS [SLOTS]]]
 */
#include "config.h"
#include "daemon/broker.h"
#include "daemon/queue.h"
#include "daemon/registry.h"
#include "err.h"
#include "mtime.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define NWORKERS 8

static int s_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int s_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double s_pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(*v), s_cmp);
	return v[(int)(p * (n - 1))];
}

/* ---- raw ZeroMQ ------------------------------------------------------------ */

struct raw_peer {
	void *ctx;
	char endpoint[64];
	int id;
};

static void *s_raw_echo(void *arg)
{
	struct raw_peer *p = arg;
	void *d = zmq_socket(p->ctx, ZMQ_DEALER);
	char name[16], buf[256];
	int n, more;
	size_t sz;

	snprintf(name, sizeof(name), "raw%d", p->id);
	zmq_setsockopt(d, ZMQ_ROUTING_ID, name, strlen(name));
	zmq_connect(d, p->endpoint);
	zmq_send(d, "MDL1", 4, ZMQ_SNDMORE);
	zmq_send(d, "READY", 5, ZMQ_SNDMORE);
	zmq_send(d, "{}", 2, 0);
	for (;;) {
		zmq_recv(d, buf, sizeof(buf), 0);
		n = zmq_recv(d, buf, sizeof(buf), 0);
		if (n == 4 && !memcmp(buf, "STOP", 4))
			break;
		sz = sizeof(more);
		zmq_getsockopt(d, ZMQ_RCVMORE, &more, &sz);
		n = more ? zmq_recv(d, buf, sizeof(buf), 0) : 0;
		zmq_send(d, "MDL1", 4, ZMQ_SNDMORE);
		zmq_send(d, "DONE", 4, ZMQ_SNDMORE);
		zmq_send(d, "{\"job\":1,\"attempt\":1}", 21, 0);
	}
	zmq_close(d);
	return NULL;
}

/* One ROUTER, NWORKERS echo peers, `slots` in flight per peer. */
static void s_raw(int slots, int total, double *rate, double *p50, double *p99)
{
	void *ctx = zmq_ctx_new(), *r = zmq_socket(ctx, ZMQ_ROUTER);
	struct raw_peer peers[NWORKERS];
	pthread_t th[NWORKERS];
	char ids[NWORKERS][16], buf[256];
	size_t idl[NWORKERS];
	double *lat = calloc(1000, sizeof(*lat)), t0;
	int i, k, sent = 0, got = 0, n;
	const char *job = "{\"job\":1,\"attempt\":1,\"kind\":\"noop\",\"spec\":{},\"lease_ms\":30000}";

	snprintf(peers[0].endpoint, sizeof(peers[0].endpoint), "tcp://127.0.0.1:%d", s_free_port());
	zmq_bind(r, peers[0].endpoint);
	for (i = 0; i < NWORKERS; i++) {
		peers[i] = peers[0];
		peers[i].ctx = ctx;
		peers[i].id = i;
		pthread_create(&th[i], NULL, s_raw_echo, &peers[i]);
	}
	for (i = 0; i < NWORKERS; i++) {
		n = zmq_recv(r, ids[i], sizeof(ids[i]), 0);
		idl[i] = (size_t)n;
		for (k = 0; k < 3; k++)
			zmq_recv(r, buf, sizeof(buf), 0);
	}
	t0 = mtime_s();
	for (i = 0; i < NWORKERS; i++)
		for (k = 0; k < slots; k++, sent++) {
			zmq_send(r, ids[i], idl[i], ZMQ_SNDMORE);
			zmq_send(r, "MDL1", 4, ZMQ_SNDMORE);
			zmq_send(r, "JOB", 3, ZMQ_SNDMORE);
			zmq_send(r, job, strlen(job), 0);
		}
	while (got < total) {
		char id[16];
		int l = zmq_recv(r, id, sizeof(id), 0);

		for (k = 0; k < 3; k++)
			zmq_recv(r, buf, sizeof(buf), 0);
		got++;
		if (sent < total) {
			zmq_send(r, id, (size_t)l, ZMQ_SNDMORE);
			zmq_send(r, "MDL1", 4, ZMQ_SNDMORE);
			zmq_send(r, "JOB", 3, ZMQ_SNDMORE);
			zmq_send(r, job, strlen(job), 0);
			sent++;
		}
	}
	*rate = total / (mtime_s() - t0);
	for (i = 0; i < 1000; i++) {
		double t = mtime_s();

		zmq_send(r, ids[0], idl[0], ZMQ_SNDMORE);
		zmq_send(r, "MDL1", 4, ZMQ_SNDMORE);
		zmq_send(r, "JOB", 3, ZMQ_SNDMORE);
		zmq_send(r, job, strlen(job), 0);
		for (k = 0; k < 4; k++)
			zmq_recv(r, buf, sizeof(buf), 0);
		lat[i] = (mtime_s() - t) * 1e3;
	}
	*p50 = s_pct(lat, 1000, 0.50);
	*p99 = s_pct(lat, 1000, 0.99);
	for (i = 0; i < NWORKERS; i++) {
		zmq_send(r, ids[i], idl[i], ZMQ_SNDMORE);
		zmq_send(r, "MDL1", 4, ZMQ_SNDMORE);
		zmq_send(r, "STOP", 4, 0);
	}
	for (i = 0; i < NWORKERS; i++)
		pthread_join(th[i], NULL);
	free(lat);
	zmq_close(r);
	zmq_ctx_term(ctx);
}

/* ---- end to end ------------------------------------------------------------- */

static volatile sig_atomic_t s_stop;

static void *s_broker_main(void *arg)
{
	if (broker_run(arg, &s_stop) < 0)
		fprintf(stderr, "dispatch_bench: broker: %s\n", err_msg());
	return NULL;
}

static int64_t s_count(queue_t *q, enum job_state st)
{
	int64_t c[JOB_NSTATES];

	return queue_count_states(q, c) < 0 ? -1 : c[st];
}

static int s_workers_up(registry_t *r)
{
	sqlite3_stmt *st = registry_stmt(r, "SELECT count(*) FROM workers WHERE state = 'up'");
	int n = 0;

	if (st && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	if (st)
		sqlite3_reset(st);
	return n;
}

int main(int argc, char **argv)
{
	const char *wbin = argc > 1 ? argv[1] : "worker/modula-worker";
	int njobs = argc > 2 ? atoi(argv[2]) : 20000, slots = argc > 3 ? atoi(argv[3]) : 4;
	int nlat = 500, i, port = s_free_port();
	char dir[] = "/tmp/modula-bench-XXXXXX", db[128], ep[64], wdir[160], sl[16], id[32], cmd[200];
	double raw_rate, raw_p50, raw_p99, t0, rate, *lat = calloc((size_t)nlat, sizeof(double));
	pid_t pids[NWORKERS];
	registry_t *r = NULL;
	queue_t *q = NULL;
	broker_t *b = NULL;
	pthread_t th;
	struct queue_submit sub = { .kind = "noop" };
	int64_t jid;
	enum job_state st;

	signal(SIGPIPE, SIG_IGN);
	s_raw(slots, njobs, &raw_rate, &raw_p50, &raw_p99);
	if (!mkdtemp(dir))
		return 1;
	snprintf(db, sizeof(db), "%s/registry.db", dir);
	snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", port);
	snprintf(sl, sizeof(sl), "%d", slots);
	r = registry_open(db);
	q = r ? queue_new(r) : NULL;
	b = q ? broker_new(ep, db, NULL) : NULL;
	if (!b) {
		fprintf(stderr, "dispatch_bench: %s\n", err_msg());
		return 1;
	}
	pthread_create(&th, NULL, s_broker_main, b);
	for (i = 0; i < NWORKERS; i++) {
		snprintf(wdir, sizeof(wdir), "%s/w%d", dir, i);
		snprintf(id, sizeof(id), "bench-%d", i);
		pids[i] = fork();
		if (pids[i] == 0) {
			execl(wbin, wbin, "--broker", ep, "--slots", sl, "--device", "cpu", "--work", wdir,
			      "--id", id, "--log-level", "warn", (char *)NULL);
			_exit(127);
		}
	}
	for (i = 0; i < 1000 && s_workers_up(r) < NWORKERS; i++)
		usleep(10000);
	if (s_workers_up(r) < NWORKERS) {
		fprintf(stderr, "dispatch_bench: the workers did not come up (is '%s' right?)\n", wbin);
		goto out;
	}
	/* Throughput: N jobs in one transaction, timed to the last result. */
	queue_begin(q);
	for (i = 0; i < njobs; i++)
		queue_submit(q, &sub, mtime_wall_ms(), &jid, NULL);
	if (queue_commit(q) < 0) {
		fprintf(stderr, "dispatch_bench: %s\n", err_msg());
		goto out;
	}
	t0 = mtime_s();
	broker_wake(b);
	while (s_count(q, JOB_SUCCEEDED) < njobs)
		usleep(1000);
	rate = njobs / (mtime_s() - t0);
	/* Latency: one job at a time. */
	for (i = 0; i < nlat; i++) {
		double t;

		queue_submit(q, &sub, mtime_wall_ms(), &jid, NULL);
		t = mtime_s();
		broker_wake(b);
		while (queue_job_state(q, jid, &st) == 0 && st != JOB_SUCCEEDED)
			usleep(20);
		lat[i] = (mtime_s() - t) * 1e3;
	}
	printf("dispatch_bench: %d workers x %d slots, %d noop jobs, on %ld cores\n", NWORKERS, slots,
	       njobs, sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-44s %12s %10s %10s\n", "", "jobs/s", "p50 ms", "p99 ms");
	printf("%-44s %12.0f %10.3f %10.3f\n", "raw ZeroMQ ROUTER/DEALER round trip", raw_rate, raw_p50,
	       raw_p99);
	printf("%-44s %12.0f %10.3f %10.3f\n", "modulad broker + modula-worker, durable", rate,
	       s_pct(lat, nlat, 0.5), s_pct(lat, nlat, 0.99));
	printf("%-44s %12.3f %10.2f %10.2f\n", "ratio e2e / raw", rate / raw_rate,
	       s_pct(lat, nlat, 0.5) / raw_p50, s_pct(lat, nlat, 0.99) / raw_p99);
	printf("%-44s %12s %10s %10s\n", "target", ">= 5000", "", "<= 5");
	printf("succeeded %lld of %d\n", (long long)s_count(q, JOB_SUCCEEDED),
	       njobs + nlat);
out:
	for (i = 0; i < NWORKERS; i++)
		kill(pids[i], SIGTERM);
	for (i = 0; i < NWORKERS; i++)
		waitpid(pids[i], NULL, 0);
	s_stop = 1;
	broker_wake(b);
	pthread_join(th, NULL);
	broker_destroy(&b);
	queue_destroy(&q);
	registry_close(&r);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "dispatch_bench: cannot remove '%s'\n", dir);
	free(lat);
	return 0;
}
