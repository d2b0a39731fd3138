/* worker.c: the modula-worker loop (see worker.h for the states and
 * invariants, schema/protocol.md for the messages).
 *
 * One thread polls the DEALER socket and the stdout pipes of the engines.
 * Each engine event becomes protocol traffic: progress lines are batched
 * into one PROGRESS per job every PROGRESS_MS; checkpoints and outputs are
 * uploaded before they are named in a message. Transfers are synchronous
 * (libcurl easy); the store calls s_store_tick() about every second while
 * one runs, so heartbeats go on (messages that arrive wait in the socket).
 */
#include "config.h"
#include "worker/worker.h"
#include "worker/run_engine.h"
#include "worker/worker_evals.h"
#include "worker/worker_store.h"
#include "kernels/device.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "log.h"
#include "mtime.h"
#include "path.h"
#include "proto.h"
#include "sha256.h"
#include "version.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define PROGRESS_MS 250
#define METRICS_MAX 1000
#define PENDING_MAX 4096        /* unacknowledged PROGRESS kept per job */
#define METRICS_LIMIT 100000    /* points in one message (lib/proto.c) */
/* An engine told to stop gets this long to checkpoint before SIGKILL. */
#define STOP_GRACE_NS (30ull * 1000000000ull)
/* After SIGTERM, how long to wait for the broker's ACKs. */
#define DRAIN_NS (5ull * 1000000000ull)
#define RECONNECT_MAX_MS 32000

struct wjob {
	int64_t job;
	int attempt;
	char kind[33];
	int stopping, cancelled;
	uint64_t kill_at_ns, sleep_until_ns, flush_ns;
	run_engine_t *run;
	cJSON *metrics;            /* points not sent yet */
	int nmetrics;              /* how many (cJSON counts by walking the list) */
	cJSON *pending;            /* PROGRESS bodies sent and not acknowledged, by seq */
	int npending;
	int64_t seq;               /* the last PROGRESS's sequence number */
	int64_t step, total;
	cJSON *ckpt;               /* newest uploaded checkpoint {sha256, step} */
	cJSON *done;               /* the DONE body, once the engine said done */
	char *error;               /* the engine's error event */
	int retryable;
	char *store_url, *store_token;
	char dir[PATH_MAX];
	struct wjob *next;
};

struct wresult {
	enum proto_cmd cmd;
	int64_t job;
	int attempt;
	uint64_t sent_ns;
	cJSON *body;
	struct wresult *next;
};

struct worker {
	struct worker_opts o;
	char id[65], host[128], work[PATH_MAX], engine[PATH_MAX];
	const char *backend;
	char server_key[PROTO_Z85_LEN + 1], pub[PROTO_Z85_LEN + 1], sec[PROTO_Z85_LEN + 1];
	void *ctx, *sock;
	wstore_t *store;
	struct wjob *jobs;
	int njobs;
	struct wresult *unacked;
	int liveness, heard, reconnect_ms;
	uint64_t next_hb_ns, reconnect_at_ns;
	uint64_t hb_sent_ns;       /* the last HEARTBEAT sent */
	uint64_t ready_ns;         /* when a READY went that the broker has not answered since, or 0 */
};

/* ---- sending ----------------------------------------------------------------- */

static void s_send(worker_t *w, enum proto_cmd cmd, const cJSON *body)
{
	/* Not connected yet (EAGAIN): READY and the kept results go again. */
	if (w->sock && proto_send(w->sock, NULL, 0, cmd, body) < 0) {
		if (errno == EAGAIN)
			log_debug("worker: %s", err_msg());
		else
			log_warn("worker: %s", err_msg());
	}
}

static cJSON *s_pair(int64_t job, int attempt)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "job", (double)job);
	cJSON_AddNumberToObject(o, "attempt", attempt);
	return o;
}

/* Send a result and keep it until the broker answers; takes `body`. */
static void s_result(worker_t *w, enum proto_cmd cmd, int64_t job, int attempt, cJSON *body)
{
	struct wresult *r = calloc(1, sizeof(*r));

	s_send(w, cmd, body);
	if (!r) {
		cJSON_Delete(body);
		return;
	}
	r->cmd = cmd;
	r->sent_ns = mtime_ns();
	r->job = job;
	r->attempt = attempt;
	r->body = body;
	r->next = w->unacked;
	w->unacked = r;
}

/* Send again the results sent before `before_ns` (all: UINT64_MAX). */
static void s_resend(worker_t *w, uint64_t before_ns)
{
	struct wresult *r;

	for (r = w->unacked; r; r = r->next)
		if (r->sent_ns < before_ns) {
			s_send(w, r->cmd, r->body);
			r->sent_ns = mtime_ns();
		}
}

static void s_answered(worker_t *w, int64_t job, int attempt)
{
	struct wresult **pp, *r;

	for (pp = &w->unacked; (r = *pp); pp = &r->next)
		if (r->job == job && r->attempt == attempt) {
			*pp = r->next;
			cJSON_Delete(r->body);
			free(r);
			return;
		}
}

static void s_failed(worker_t *w, struct wjob *j, const char *error, int retryable, int handback)
{
	cJSON *b = s_pair(j->job, j->attempt);

	cJSON_AddStringToObject(b, "error", error);
	cJSON_AddBoolToObject(b, "retryable", retryable);
	if (handback)
		cJSON_AddBoolToObject(b, "handback", 1);
	if (j->ckpt)
		cJSON_AddItemToObject(b, "checkpoint", cJSON_Duplicate(j->ckpt, 1));
	log_info("worker: job %lld/%d %s: %s", (long long)j->job, j->attempt,
		 handback ? "handed back" : "failed", error);
	s_result(w, PROTO_FAILED, j->job, j->attempt, b);
}

static void s_ready(worker_t *w)
{
	cJSON *b = cJSON_CreateObject(), *run = cJSON_AddArrayToObject(b, "running");
	struct wjob *j;

	cJSON_AddStringToObject(b, "id", w->id);
	cJSON_AddStringToObject(b, "backend", w->backend);
	cJSON_AddStringToObject(b, "device", w->backend);
	if (w->o.gpu_mem_mb > 0)
		cJSON_AddNumberToObject(b, "gpu_mem_mb", (double)w->o.gpu_mem_mb);
	cJSON_AddNumberToObject(b, "slots", w->o.slots);
	cJSON_AddStringToObject(b, "version", PACKAGE_VERSION);
	cJSON_AddStringToObject(b, "host", w->host);
	for (j = w->jobs; j; j = j->next)
		if (!j->cancelled) {
			cJSON *p = s_pair(j->job, j->attempt);

			cJSON_AddNumberToObject(p, "step", (double)j->step);
			cJSON_AddItemToArray(run, p);
		}
	s_send(w, PROTO_READY, b);
	w->ready_ns = mtime_ns();
	cJSON_Delete(b);
	/* PROGRESS that a broker killed before its commit never recorded: send
	 * again what it did not acknowledge, in order */
	for (j = w->jobs; j; j = j->next) {
		const cJSON *p;
		cJSON_ArrayForEach(p, j->pending)
			s_send(w, PROTO_PROGRESS, p);
	}
	s_resend(w, UINT64_MAX);
}

/* ---- connection -------------------------------------------------------------------- */

static int s_connect(worker_t *w)
{
	w->sock = zmq_socket(w->ctx, ZMQ_DEALER);
	if (!w->sock)
		return err_set("cannot make a ZeroMQ socket: %s", zmq_strerror(errno));
	if (proto_sockopts(w->sock, 0) < 0 ||
	    zmq_setsockopt(w->sock, ZMQ_ROUTING_ID, w->id, strlen(w->id)) < 0)
		goto err;
	if (w->server_key[0] &&
	    (zmq_setsockopt(w->sock, ZMQ_CURVE_SERVERKEY, w->server_key, PROTO_Z85_LEN + 1) < 0 ||
	     zmq_setsockopt(w->sock, ZMQ_CURVE_PUBLICKEY, w->pub, PROTO_Z85_LEN + 1) < 0 ||
	     zmq_setsockopt(w->sock, ZMQ_CURVE_SECRETKEY, w->sec, PROTO_Z85_LEN + 1) < 0)) {
		err_set("cannot enable CURVE: %s", zmq_strerror(errno));
		goto err;
	}
	if (zmq_connect(w->sock, w->o.broker) < 0) {
		err_set("cannot connect to '%s': %s", w->o.broker, zmq_strerror(errno));
		goto err;
	}
	w->liveness = w->o.liveness;
	w->heard = 0;
	return 0;
err:
	zmq_close(w->sock);
	w->sock = NULL;
	return -1;
}

/* The broker went silent: drop the socket and try again after a backoff. */
static void s_disconnect(worker_t *w)
{
	log_warn("worker: no word from the broker at %s for %d heartbeats; reconnecting in %d ms",
		 w->o.broker, w->o.liveness, w->reconnect_ms);
	zmq_close(w->sock);
	w->sock = NULL;
	w->hb_sent_ns = 0;
	w->reconnect_at_ns = mtime_ns() + (uint64_t)w->reconnect_ms * 1000000ull;
	w->reconnect_ms = w->reconnect_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : w->reconnect_ms * 2;
}

/* ---- jobs ---------------------------------------------------------------------------- */

static void s_job_free(worker_t *w, struct wjob *j)
{
	struct wjob **pp;

	for (pp = &w->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			w->njobs--;
			break;
		}
	run_engine_destroy(&j->run);
	cJSON_Delete(j->metrics);
	cJSON_Delete(j->pending);
	cJSON_Delete(j->ckpt);
	cJSON_Delete(j->done);
	free(j->error);
	free(j->store_url);
	free(j->store_token);
	free(j);
}

static struct wjob *s_job_find(worker_t *w, int64_t job, int attempt)
{
	struct wjob *j;

	for (j = w->jobs; j; j = j->next)
		if (j->job == job && (attempt == 0 || j->attempt == attempt))
			return j;
	return NULL;
}

/* Append to `into` (holding n points) the points of the PROGRESS the
 * broker has not acknowledged, while it holds fewer than `room` (the
 * protocol's limit). Linear: thousands of PROGRESS pile up while a broker
 * does not answer, and this runs between two heartbeats. */
static int s_add_pending(const struct wjob *j, cJSON *into, int n, int room)
{
	const cJSON *p, *x;

	cJSON_ArrayForEach(p, j->pending)
		cJSON_ArrayForEach(x, cJSON_GetObjectItem(p, "metrics")) {
			if (n >= room)
				return n;
			cJSON_AddItemToArray(into, cJSON_Duplicate(x, 1));
			n++;
		}
	return n;
}

/* Send the metric points gathered so far (and the step) in one PROGRESS.
 * With a checkpoint it also carries every point not acknowledged yet: a
 * retry resumes after the checkpoint and reports no earlier step again, so
 * the points before it must be committed with it (a broker killed before
 * its commit loses what it received). */
static void s_flush(worker_t *w, struct wjob *j, int with_ckpt)
{
	cJSON *b = s_pair(j->job, j->attempt);

	cJSON_AddNumberToObject(b, "step", (double)j->step);
	if (j->total > 0)
		cJSON_AddNumberToObject(b, "total_steps", (double)j->total);
	if (with_ckpt && j->ckpt) {
		/* this PROGRESS carries every unacknowledged point from now on:
		 * the ones it replaces are dropped (no point in two of them) */
		j->nmetrics = s_add_pending(j, j->metrics, j->nmetrics, METRICS_LIMIT);
		cJSON_Delete(j->pending);
		j->pending = cJSON_CreateArray();
		j->npending = 0;
	}
	if (j->nmetrics > 0) {
		cJSON_AddItemToObject(b, "metrics", j->metrics);
		j->metrics = cJSON_CreateArray();
		j->nmetrics = 0;
	}
	if (with_ckpt && j->ckpt)
		cJSON_AddItemToObject(b, "checkpoint", cJSON_Duplicate(j->ckpt, 1));
	cJSON_AddNumberToObject(b, "seq", (double)++j->seq);
	s_send(w, PROTO_PROGRESS, b);
	/* kept until the broker acknowledges it (s_progress_acked); the oldest
	 * go when a broker that never answers lets them pile up */
	if (j->npending >= PENDING_MAX) {
		cJSON_DeleteItemFromArray(j->pending, 0);
		j->npending--;
	}
	cJSON_AddItemToArray(j->pending, b);
	j->npending++;
	j->flush_ns = mtime_ns() + PROGRESS_MS * 1000000ull;
}

/* The broker has committed this attempt's PROGRESS number `seq`. Only that
 * one: a broker killed before its commit loses a PROGRESS that its
 * successor never saw, while it may acknowledge the next one. */
static void s_progress_acked(worker_t *w, int64_t job, int attempt, int64_t seq)
{
	struct wjob *j = s_job_find(w, job, attempt);
	const cJSON *p;
	int i = 0;

	if (!j)
		return;
	cJSON_ArrayForEach(p, j->pending) {
		if (cJSON_GetObjectItem(p, "seq")->valuedouble == (double)seq) {
			cJSON_DeleteItemFromArray(j->pending, i);
			j->npending--;
			return;
		}
		i++;
	}
}

static int s_kind_ok(const char *k)
{
	return *k && strspn(k, "abcdefghijklmnopqrstuvwxyz0123456789_-") == strlen(k);
}

/* Remove the files of `dir` (not recursive; a missing folder is fine).
 * 0, or -1 via err_set(). */
static int s_clear_files(const char *dir)
{
	char path[PATH_MAX + 300];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return errno == ENOENT ? 0 : err_set("cannot open '%s': %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path))
			continue;
		if (unlink(path) < 0 && errno != EISDIR) {
			err_set("cannot remove '%s': %s", path, strerror(errno));
			closedir(d);
			return -1;
		}
	}
	closedir(d);
	return 0;
}

/* Prepare WORK/job-ID/job.json and start the engine. The job's folder is
 * the engine's out_dir (a spec's own out_dir is replaced: the worker owns
 * its disk), so the paths of its events are relative to that folder. On a
 * retry the checkpoint to resume from goes to checkpoints/ there, named to
 * sort below the engine's own step-NNNNNNNN files (ckpt_latest() takes the
 * newest valid one). Checkpoints an earlier attempt left in the folder are
 * removed first: the daemon's checkpoint is the one whose metrics it has,
 * so resuming from a newer local one would lose the steps in between.
 * 0, or -1 via err_set() (the job then fails). */
static int s_engine_start(worker_t *w, struct wjob *j, const cJSON *body)
{
	cJSON *spec = cJSON_Duplicate(cJSON_GetObjectItem(body, "spec"), 1);
	const cJSON *ck = cJSON_GetObjectItem(body, "checkpoint");
	char path[PATH_MAX + 64];
	int rc = -1;

	if (snprintf(j->dir, sizeof(j->dir), "%s/job-%lld", w->work, (long long)j->job) >=
	    (int)sizeof(j->dir) || fsx_mkdirs(j->dir, 0755) < 0)
		goto out;
	if (cJSON_GetObjectItem(spec, "out_dir"))
		cJSON_ReplaceItemInObject(spec, "out_dir", cJSON_CreateString("."));
	snprintf(path, sizeof(path), "%s/checkpoints", j->dir);
	if (s_clear_files(path) < 0)
		goto out;
	if (ck) {
		const char *sha = cJSON_GetObjectItem(ck, "sha256")->valuestring;

		snprintf(path, sizeof(path), "%s/checkpoints", j->dir);
		if (fsx_mkdirs(path, 0755) < 0)
			goto out;
		snprintf(path, sizeof(path), "%s/checkpoints/%s", j->dir, WORKER_RESUME_NAME);
		unlink(path);
		if (wstore_get(w->store, j->store_url, j->store_token, sha, path) < 0) {
			err_prefix("cannot fetch the checkpoint to resume from");
			goto out;
		}
	}
	if (wstore_get_inputs(w->store, j->store_url, j->store_token, cJSON_GetObjectItem(spec, "inputs"),
			      j->dir) < 0) {
		err_prefix("cannot fetch the job's inputs");
		goto out;
	}
	cJSON_DeleteItemFromObject(spec, "inputs");
	snprintf(path, sizeof(path), "%s/job.json", j->dir);
	if (jsonu_write_file(path, spec) < 0)
		goto out;
	/* A GPU worker runs training, stages and evaluations on the engine's
	 * device path; the engine keeps what that path cannot run
	 * (full-parameter, dropout, top-k routing...) on its CPU engine
	 * (--device auto). Other kinds run on the CPU engine. */
	j->run = run_engine_start(w->engine, j->kind, j->dir,
				  !strcmp(w->backend, "cuda") &&
				  (!strcmp(j->kind, "train") || !strcmp(j->kind, "stage") ||
				   !strcmp(j->kind, "eval")) ? "auto" : NULL);
	if (!j->run)
		goto out;
	log_info("worker: job %lld/%d: %s %s in %s (pid %d)", (long long)j->job, j->attempt,
		 w->engine, j->kind, j->dir, (int)run_engine_pid(j->run));
	rc = 0;
out:
	cJSON_Delete(spec);
	return rc;
}

static void s_on_job(worker_t *w, const struct proto_msg *m)
{
	const cJSON *body = m->body, *st = cJSON_GetObjectItem(body, "artifacts");
	const char *kind = cJSON_GetObjectItem(body, "kind")->valuestring;
	struct wjob *j;

	if (s_job_find(w, m->job, (int)m->attempt))
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->job = m->job;
	j->attempt = (int)m->attempt;
	snprintf(j->kind, sizeof(j->kind), "%s", kind);
	j->metrics = cJSON_CreateArray();
	j->pending = cJSON_CreateArray();
	if (st) {
		const cJSON *tok = cJSON_GetObjectItem(st, "token");

		j->store_url = strdup(cJSON_GetObjectItem(st, "url")->valuestring);
		j->store_token = tok ? strdup(tok->valuestring) : NULL;
	}
	j->next = w->jobs;
	w->jobs = j;
	w->njobs++;
	if (w->njobs > w->o.slots) {
		s_failed(w, j, "the worker has no free slot", 1, 0);
		s_job_free(w, j);
		return;
	}
	if (!strcmp(kind, "noop")) {
		s_result(w, PROTO_DONE, j->job, j->attempt, s_pair(j->job, j->attempt));
		s_job_free(w, j);
		return;
	}
	if (!strcmp(kind, "sleep")) {
		const cJSON *sec = cJSON_GetObjectItem(cJSON_GetObjectItem(body, "spec"), "seconds");
		double s = cJSON_IsNumber(sec) && sec->valuedouble > 0 ? sec->valuedouble : 0;

		j->sleep_until_ns = mtime_ns() + (uint64_t)(s * 1e9);
		s_flush(w, j, 0);
		return;
	}
	if (!s_kind_ok(kind)) {
		s_failed(w, j, "bad job kind (expected [a-z0-9_-])", 0, 0);
		s_job_free(w, j);
		return;
	}
	if (s_engine_start(w, j, body) < 0) {
		s_failed(w, j, err_msg(), 1, 0);
		s_job_free(w, j);
		return;
	}
	s_flush(w, j, 0);
}

/* Stop a job: CANCEL (nothing to report) or SIGTERM (hand it back). */
static void s_stop(worker_t *w, struct wjob *j, int cancelled)
{
	j->cancelled |= cancelled;
	if (!j->run) {
		if (!cancelled)
			s_failed(w, j, "the worker is stopping", 1, 1);
		s_job_free(w, j);
		return;
	}
	if (!j->stopping) {
		run_engine_signal(j->run, SIGTERM);
		j->stopping = 1;
		j->kill_at_ns = mtime_ns() + STOP_GRACE_NS;
	}
}

/* ---- engine events ---------------------------------------------------------------------- */

/* Upload `rel` (relative to the job's folder) whose sha256 is `sha`. */
static int s_upload(worker_t *w, struct wjob *j, const char *rel, const char *sha)
{
	char path[PATH_MAX];

	if (path_join(path, sizeof(path), j->dir, rel) < 0)
		return -1;
	if (!j->store_url) {
		char hex[SHA256_HEX_LEN + 1];

		/* No store given: check the file only. */
		if (sha256_file(path, hex) < 0)
			return -1;
		return strcmp(hex, sha) ? err_set("'%s' does not match its sha256", rel) : 0;
	}
	return wstore_put(w->store, j->store_url, j->store_token, path, sha);
}

static void s_metric(struct wjob *j, const char *key, double v)
{
	cJSON *p = cJSON_CreateObject();

	cJSON_AddStringToObject(p, "key", key);
	cJSON_AddNumberToObject(p, "step", (double)j->step);
	cJSON_AddNumberToObject(p, "value", v);
	cJSON_AddItemToArray(j->metrics, p);
	j->nmetrics++;
}

static int s_ev_done(worker_t *w, struct wjob *j, const cJSON *ev)
{
	const cJSON *outs = cJSON_GetObjectItem(ev, "outputs"), *o;
	cJSON *flat = worker_evals_flat(cJSON_GetObjectItem(ev, "evaluations"));
	cJSON *b = s_pair(j->job, j->attempt), *arts = cJSON_AddArrayToObject(b, "artifacts");
	cJSON *evs = cJSON_AddArrayToObject(b, "evaluations");
	const char *name, *path, *sha;
	struct stat st;
	char full[PATH_MAX];

	cJSON_ArrayForEach(o, outs) {
		cJSON *a;

		if (jsonu_req_str(o, "name", &name) < 0 || jsonu_req_str(o, "path", &path) < 0 ||
		    jsonu_req_str(o, "sha256", &sha) < 0 || s_upload(w, j, path, sha) < 0 ||
		    path_join(full, sizeof(full), j->dir, path) < 0 || stat(full, &st) < 0)
			goto err;
		a = cJSON_CreateObject();
		cJSON_AddStringToObject(a, "name", name);
		cJSON_AddStringToObject(a, "sha256", sha);
		cJSON_AddNumberToObject(a, "size", (double)st.st_size);
		cJSON_AddItemToArray(arts, a);
	}
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(ev, "cost")) {
		if (cJSON_IsNumber(o) && strlen(o->string) <= 128)
			s_metric(j, o->string, o->valuedouble);
	}
	/* a data job's record count per output: "records.OUTPUT" */
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(ev, "records")) {
		char key[136];
		if (cJSON_IsNumber(o) && strlen(o->string) <= 120) {
			snprintf(key, sizeof key, "records.%s", o->string);
			s_metric(j, key, o->valuedouble);
		}
	}
	cJSON_ArrayForEach(o, flat) {
		const char *dom, *met;
		double v;
		cJSON *e;

		if (jsonu_req_str(o, "domain", &dom) < 0 || jsonu_req_str(o, "metric", &met) < 0 ||
		    jsonu_req_num(o, "value", &v) < 0)
			goto err;
		e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "domain", dom);
		cJSON_AddStringToObject(e, "metric", met);
		cJSON_AddNumberToObject(e, "value", v);
		cJSON_AddItemToArray(evs, e);
	}
	if (proto_check(PROTO_DONE, b) < 0)
		goto err;
	cJSON_Delete(flat);
	cJSON_Delete(j->done);
	j->done = b;
	return 0;
err:
	cJSON_Delete(flat);
	cJSON_Delete(b);
	return err_prefix("the engine's done event");
}

static void s_event(worker_t *w, struct wjob *j, const char *line)
{
	cJSON *ev = jsonu_parse(line, strlen(line), "engine output");
	const char *what, *path, *sha, *msg;
	const cJSON *x;
	long long step;
	int retry;

	if (!ev || !cJSON_IsObject(ev) || jsonu_req_str(ev, "event", &what) < 0) {
		log_warn("worker: job %lld: ignoring a line of the engine: %s", (long long)j->job, err_msg());
		goto out;
	}
	if (jsonu_opt_int(ev, "total_steps", j->total, &step) == 0)
		j->total = step;
	if (!strcmp(what, "start"))
		goto out;
	if (!strcmp(what, "progress")) {
		if (jsonu_opt_int(ev, "step", j->step, &step) == 0)
			j->step = step;
		cJSON_ArrayForEach(x, ev) {
			if (cJSON_IsNumber(x) && strcmp(x->string, "step") && strcmp(x->string, "total_steps") &&
			    strlen(x->string) <= 128)
				s_metric(j, x->string, x->valuedouble);
		}
		if (j->nmetrics >= METRICS_MAX)
			s_flush(w, j, 0);
	} else if (!strcmp(what, "checkpoint")) {
		if (jsonu_req_str(ev, "path", &path) < 0 || jsonu_req_str(ev, "sha256", &sha) < 0 ||
		    jsonu_opt_int(ev, "step", j->step, &step) < 0 || s_upload(w, j, path, sha) < 0) {
			log_warn("worker: job %lld: checkpoint not kept: %s", (long long)j->job, err_msg());
			goto out;
		}
		cJSON_Delete(j->ckpt);
		j->ckpt = cJSON_CreateObject();
		cJSON_AddStringToObject(j->ckpt, "sha256", sha);
		cJSON_AddNumberToObject(j->ckpt, "step", (double)step);
		s_flush(w, j, 1);
	} else if (!strcmp(what, "done")) {
		if (s_ev_done(w, j, ev) < 0) {
			free(j->error);
			j->error = strdup(err_msg());
			j->retryable = 1;
		}
	} else if (!strcmp(what, "error")) {
		if (jsonu_opt_str(ev, "message", "the engine reported an error", &msg) < 0 ||
		    jsonu_opt_bool(ev, "retryable", 0, &retry) < 0) {
			msg = "the engine reported an error";
			retry = 0;
		}
		free(j->error);
		j->error = strdup(msg);
		j->retryable = retry;
	} else {
		log_debug("worker: job %lld: unknown engine event '%s'", (long long)j->job, what);
	}
out:
	cJSON_Delete(ev);
}

/* The engine exited: report what it left, then forget the job. */
static void s_engine_end(worker_t *w, struct wjob *j, int status)
{
	char why[PATH_MAX + 64];

	if (j->cancelled) {
		log_info("worker: job %lld/%d cancelled", (long long)j->job, j->attempt);
	} else if (j->stopping) {
		if (j->nmetrics > 0 || j->ckpt)
			s_flush(w, j, 1);
		s_failed(w, j, "the worker stopped (SIGTERM)", 1, 1);
	} else if (j->done && WIFEXITED(status) && WEXITSTATUS(status) == 0 && !j->error) {
		/* the job ends here: what the broker has not acknowledged goes with
		 * its result (kept until the ACK) */
		j->nmetrics = s_add_pending(j, j->metrics, j->nmetrics, METRICS_LIMIT);
		if (j->nmetrics > 0)
			cJSON_AddItemToObject(j->done, "metrics", cJSON_Duplicate(j->metrics, 1));
		log_info("worker: job %lld/%d done", (long long)j->job, j->attempt);
		s_result(w, PROTO_DONE, j->job, j->attempt, j->done);
		j->done = NULL;
	} else {
		if (j->nmetrics > 0 || j->ckpt)
			s_flush(w, j, 1);
		if (WIFSIGNALED(status))
			snprintf(why, sizeof(why), "the engine was killed by signal %d", WTERMSIG(status));
		else if (WEXITSTATUS(status) == 127)
			snprintf(why, sizeof(why), "cannot run the engine '%s'", w->engine);
		else
			snprintf(why, sizeof(why), "the engine exited with status %d%s", WEXITSTATUS(status),
				 j->done ? "" : " without a done event");
		s_failed(w, j, j->error ? j->error : why, j->error ? j->retryable : 1, 0);
	}
	s_job_free(w, j);
}

/* Read the engines' output, finish sleeps, flush progress, reap children. */
static void s_jobs_tick(worker_t *w)
{
	struct wjob *j, *next;
	uint64_t now = mtime_ns();
	char *line;
	int status;

	for (j = w->jobs; j; j = next) {
		next = j->next;
		if (!j->run) {
			if (now >= j->sleep_until_ns) {
				s_result(w, PROTO_DONE, j->job, j->attempt, s_pair(j->job, j->attempt));
				s_job_free(w, j);
			}
			continue;
		}
		if (run_engine_read(j->run) < 0)
			log_warn("worker: job %lld: %s", (long long)j->job, err_msg());
		while ((line = run_engine_line(j->run)))
			s_event(w, j, line);
		if (!j->stopping && now >= j->flush_ns && j->nmetrics > 0)
			s_flush(w, j, 0);
		if (j->stopping && now >= j->kill_at_ns)
			run_engine_signal(j->run, SIGKILL);
		if (run_engine_fd(j->run) < 0 && run_engine_reap(j->run, &status))
			s_engine_end(w, j, status);
	}
}

/* ---- the broker's messages ------------------------------------------------------------ */

static void s_on_msg(worker_t *w, const struct proto_msg *m)
{
	const cJSON *code = m->cmd == PROTO_ERROR ? cJSON_GetObjectItem(m->body, "code") : NULL;
	uint64_t live_ns = (uint64_t)w->o.heartbeat_ms * 1000000ull * (uint64_t)w->o.liveness;
	struct wjob *j;

	/* The broker answers each message that reached it before this
	 * worker's READY with "unknown-worker" (a result or a PROGRESS also
	 * with its answer), and they come in a burst. One READY answers them
	 * all: a second one, written before a job leased since reaches us,
	 * would hand that job back. Another READY goes once the broker has
	 * sent a HEARTBEAT or a JOB, which it sends only to a worker it knows
	 * (so it forgot us again since), or after a liveness period (the READY
	 * was lost). */
	if (code && !strcmp(code->valuestring, "unknown-worker")) {
		if (!w->ready_ns || mtime_ns() - w->ready_ns > live_ns)
			s_ready(w);
		return;
	}
	if (m->cmd == PROTO_HEARTBEAT || m->cmd == PROTO_JOB)
		w->ready_ns = 0;
	switch (m->cmd) {
	case PROTO_JOB:
		s_on_job(w, m);
		break;
	case PROTO_CANCEL:
		j = s_job_find(w, m->job, (int)m->attempt);
		if (j) {
			log_info("worker: job %lld/%d: cancel", m->job, (int)m->attempt);
			s_stop(w, j, 1);
		}
		break;
	case PROTO_ACK:
		if (cJSON_GetObjectItem(m->body, "progress"))
			s_progress_acked(w, m->job, (int)m->attempt,
					 (int64_t)cJSON_GetObjectItem(m->body, "progress")->valuedouble);
		else
			s_answered(w, m->job, (int)m->attempt);
		break;
	case PROTO_ERROR:
		log_warn("worker: the broker says %s: %s", code->valuestring,
			 cJSON_GetObjectItem(m->body, "message")->valuestring);
		if (m->job > 0 && strcmp(code->valuestring, "internal"))
			s_answered(w, m->job, (int)m->attempt);
		break;
	case PROTO_DISCONNECT:
		log_info("worker: the broker is going away; waiting for it to come back");
		break;
	case PROTO_HEARTBEAT:
		break;
	default:
		log_warn("worker: unexpected %s from the broker", proto_cmd_name(m->cmd));
	}
}

static void s_drain(worker_t *w)
{
	struct proto_msg m;
	int rc;

	while (w->sock && (rc = proto_recv(w->sock, 0, 0, &m)) != 0) {
		if (rc == -2) {
			log_warn("worker: %s", err_msg());
			break;
		}
		w->heard = 1;
		w->liveness = w->o.liveness;
		w->reconnect_ms = 1000;
		if (rc < 0)
			log_warn("worker: refused a message from the broker: %s", err_msg());
		else
			s_on_msg(w, &m);
		proto_msg_clear(&m);
	}
}

/* ---- the loop --------------------------------------------------------------------------- */

static int s_poll(worker_t *w, long timeout_ms)
{
	zmq_pollitem_t items[1 + 256];
	struct wjob *j;
	int n = 0;

	if (w->sock)
		items[n++] = (zmq_pollitem_t){ w->sock, 0, ZMQ_POLLIN, 0 };
	for (j = w->jobs; j && n < (int)(sizeof(items) / sizeof(items[0])); j = j->next)
		if (j->run && run_engine_fd(j->run) >= 0)
			items[n++] = (zmq_pollitem_t){ NULL, run_engine_fd(j->run), ZMQ_POLLIN, 0 };
	if (zmq_poll(items, n, timeout_ms) < 0 && errno != EINTR)
		return err_set("cannot poll: %s", zmq_strerror(errno));
	return 0;
}

static long s_timeout(worker_t *w)
{
	uint64_t now = mtime_ns(), next = w->sock ? w->next_hb_ns : w->reconnect_at_ns;
	struct wjob *j;

	for (j = w->jobs; j; j = j->next) {
		if (!j->run && j->sleep_until_ns < next)
			next = j->sleep_until_ns;
		if (j->run && j->nmetrics > 0 && j->flush_ns < next)
			next = j->flush_ns;
		if (j->run && run_engine_fd(j->run) < 0)
			next = now + 10000000ull;  /* reap soon */
		if (j->stopping && j->kill_at_ns < next)
			next = j->kill_at_ns;
	}
	return next <= now ? 0 : (long)((next - now) / 1000000ull) + 1;
}

/* A HEARTBEAT; a late one is said (the broker takes the jobs of a worker
 * silent for a liveness period). */
static void s_send_heartbeat(worker_t *w, uint64_t now)
{
	uint64_t gap = w->hb_sent_ns ? now - w->hb_sent_ns : 0;

	if (gap > (uint64_t)w->o.heartbeat_ms * 2000000ull)
		log_warn("worker: no heartbeat for %llu ms (this worker was busy); the broker takes a "
			 "worker's jobs after %d ms", (unsigned long long)(gap / 1000000ull),
			 w->o.heartbeat_ms * w->o.liveness);
	s_send(w, PROTO_HEARTBEAT, NULL);
	w->hb_sent_ns = now;
}

static void s_heartbeat(worker_t *w)
{
	uint64_t now = mtime_ns(), hb = (uint64_t)w->o.heartbeat_ms * 1000000ull;

	if (!w->sock) {
		if (now >= w->reconnect_at_ns) {
			if (s_connect(w) < 0) {
				log_warn("worker: %s", err_msg());
				w->reconnect_at_ns = now + (uint64_t)w->reconnect_ms * 1000000ull;
				return;
			}
			s_ready(w);
			w->next_hb_ns = now + hb;
		}
		return;
	}
	if (now < w->next_hb_ns)
		return;
	if (!w->heard && --w->liveness <= 0) {
		s_disconnect(w);
		return;
	}
	w->heard = 0;
	s_send_heartbeat(w, now);
	/* Results unanswered for a liveness period go again (a duplicate is
	 * refused as stale, which counts as an answer). */
	s_resend(w, now - hb * (uint64_t)w->o.liveness);
	w->next_hb_ns = now + hb;
}

/* The store's tick during a long transfer: heartbeat when one is due. */
static void s_store_tick(void *arg)
{
	worker_t *w = arg;
	uint64_t now = mtime_ns();

	if (!w->sock || now < w->next_hb_ns)
		return;
	s_send_heartbeat(w, now);
	w->next_hb_ns = now + (uint64_t)w->o.heartbeat_ms * 1000000ull;
}

int worker_run(worker_t *w, volatile sig_atomic_t *stop)
{
	uint64_t drain_until = 0;
	struct wjob *j, *next;

	if (s_connect(w) < 0)
		return -1;
	log_info("worker: '%s' (%s, %d slot(s)) connecting to %s", w->id, w->backend, w->o.slots,
		 w->o.broker);
	s_ready(w);
	w->next_hb_ns = mtime_ns() + (uint64_t)w->o.heartbeat_ms * 1000000ull;
	for (;;) {
		if (*stop && !drain_until) {
			log_info("worker: stopping: handing back %d job(s)", w->njobs);
			for (j = w->jobs; j; j = next) {
				next = j->next;
				s_stop(w, j, 0);
			}
			drain_until = 1;
		}
		if (drain_until == 1 && !w->jobs)
			drain_until = mtime_ns() + DRAIN_NS;
		if (drain_until > 1 && (!w->unacked || mtime_ns() >= drain_until))
			break;
		if (s_poll(w, s_timeout(w)) < 0)
			return -1;
		s_drain(w);
		s_jobs_tick(w);
		s_heartbeat(w);
	}
	if (w->unacked)
		log_warn("worker: leaving with results the broker did not confirm");
	s_send(w, PROTO_DISCONNECT, NULL);
	return 0;
}

/* ---- the object ----------------------------------------------------------------------- */

static int s_default_engine(char *dst, size_t n)
{
	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (len <= 0)
		return err_set("cannot find this program's folder: %s (use --engine PATH)", strerror(errno));
	self[len] = '\0';
	slash = strrchr(self, '/');
	*slash = '\0';
	if (snprintf(dst, n, "%s/modula-engine", self) >= (int)n)
		return err_set("path too long");
	return 0;
}

worker_t *worker_new(const struct worker_opts *opts)
{
	worker_t *w = calloc(1, sizeof(*w));
	enum kdevice dev;
	char cache[PATH_MAX + 8];

	if (!w) {
		err_set("out of memory");
		return NULL;
	}
	w->o = *opts;
	if (w->o.slots <= 0)
		w->o.slots = 1;
	if (w->o.heartbeat_ms <= 0)
		w->o.heartbeat_ms = PROTO_HEARTBEAT_MS;
	if (w->o.liveness <= 0)
		w->o.liveness = PROTO_LIVENESS;
	w->reconnect_ms = 1000;
	if (gethostname(w->host, sizeof(w->host) - 1) < 0)
		snprintf(w->host, sizeof(w->host), "localhost");
	if (opts->id)
		snprintf(w->id, sizeof(w->id), "%s", opts->id);
	else
		snprintf(w->id, sizeof(w->id), "%.40s-%d", w->host, (int)getpid());
	if (kdevice_resolve(opts->device, &dev) < 0)
		goto err;
	w->backend = kdevice_name(dev);
	if (opts->engine)
		snprintf(w->engine, sizeof(w->engine), "%s", opts->engine);
	else if (s_default_engine(w->engine, sizeof(w->engine)) < 0)
		goto err;
	if (opts->work_dir)
		snprintf(w->work, sizeof(w->work), "%s", opts->work_dir);
	else
		snprintf(w->work, sizeof(w->work), "%s/modula-worker-%s",
			 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", w->id);
	snprintf(cache, sizeof(cache), "%s/cache", w->work);
	if (!(w->store = wstore_new(cache)))
		goto err;
	wstore_set_tick(w->store, s_store_tick, w);
	if (opts->curve_server_key) {
		if (!opts->curve_keys) {
			err_set("--curve-server-key needs --curve-keys FILE (make one with "
				"`modula-worker keygen PREFIX`)");
			goto err;
		}
		if (proto_key_public(opts->curve_server_key, w->server_key) < 0 ||
		    proto_keys_load(opts->curve_keys, w->pub, w->sec) < 0)
			goto err;
	}
	w->ctx = zmq_ctx_new();
	if (!w->ctx) {
		err_set("cannot start ZeroMQ: %s", zmq_strerror(errno));
		goto err;
	}
	return w;
err:
	worker_destroy(&w);
	return NULL;
}

void worker_destroy(worker_t **wp)
{
	worker_t *w = wp ? *wp : NULL;
	struct wresult *r;

	if (!w)
		return;
	while (w->jobs)
		s_job_free(w, w->jobs);
	while ((r = w->unacked)) {
		w->unacked = r->next;
		cJSON_Delete(r->body);
		free(r);
	}
	if (w->sock)
		zmq_close(w->sock);
	if (w->ctx)
		zmq_ctx_term(w->ctx);
	wstore_destroy(&w->store);
	memset(w->sec, 0, sizeof(w->sec));
	free(w);
	*wp = NULL;
}
