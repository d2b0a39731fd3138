/* broker.c: modulad's ZeroMQ ROUTER (see broker.h, schema/protocol.md).
 *
 * One loop, one thread: poll the ROUTER, the wake eventfd and (with CURVE)
 * the ZAP socket; then run one batch:
 *
 *     queue_begin
 *       drain every readable message, apply each to the queue
 *       on a heartbeat tick: expire silent workers and overdue leases
 *       after a wake: hand CANCEL notices to the workers running them
 *       lease ready jobs to workers with free slots
 *     queue_commit                  <- one fsync for the whole batch
 *     send the outbox (JOB, ACK, CANCEL, ERROR)
 *
 * so no peer hears of a change a crash could undo. A failed commit is the
 * one fatal error (the registry cannot be written); a bad message from a
 * peer only earns that peer an ERROR.
 *
 * Worker lifecycle, as seen from here:
 *
 *   (unknown) --READY--> UP --DISCONNECT--> gone, jobs released (queue_worker_down)
 *                        |  \--silent liveness x heartbeat--> gone, jobs released
 *                        +--READY again: re-attach the jobs it lists
 *                           (queue_reattach), fail the ones it no longer has
 *
 * A message other than READY from an unknown peer (the daemon restarted)
 * is still applied when it is a result, since (job, attempt) pairs are
 * checked by the queue, and answered with ERROR "unknown-worker" so the
 * worker sends READY with its running jobs.
 *
 * Not here: job states (queue.c), the HTTP API, the worker.
 */
#include "config.h"
#include "daemon/broker.h"
#include "daemon/job_inputs.h"
#include "daemon/queue.h"
#include "daemon/registry.h"
#include "err.h"
#include "fsx.h"
#include "log.h"
#include "mtime.h"
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* Messages applied per transaction at most (keeps one batch short). */
#define BATCH_MAX 4096
/* Cancel notices fetched at once. */
#define CANCELS_MAX 64
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

struct bjob {
	int64_t job;
	int attempt;
};

struct bworker {
	unsigned char ident[PROTO_IDENTITY_MAX];
	size_t ident_len;
	char id[65];
	struct queue_caps caps;
	int slots;
	struct bjob *held;
	int nheld, capheld;
	uint64_t expiry_ns;        /* monotonic: declared dead after this */
	int64_t renewed_ms;        /* last lease renewal (wall clock) */
	int starved;               /* nothing fit it in this batch */
	struct bworker *next;
};

struct bout {
	unsigned char ident[PROTO_IDENTITY_MAX];
	size_t ident_len;
	enum proto_cmd cmd;
	cJSON *body;
};

struct broker {
	void *ctx, *router, *zap;
	int wakefd;
	registry_t *reg;
	queue_t *q;
	struct broker_opts o;
	char *artifact_url, *artifact_token, *allow_file;
	struct bworker *workers;
	struct bout *out;
	size_t nout, capout;
	int dispatch, cancels;
	/* CURVE allow-list: binary keys, reloaded when the file changes. */
	unsigned char (*allow)[32];
	size_t nallow;
	struct timespec allow_mtime;
};

static uint64_t s_liveness_ns(const broker_t *b)
{
	return (uint64_t)b->o.heartbeat_ms * (uint64_t)b->o.liveness * 1000000ull;
}

/* ---- outbox ---------------------------------------------------------------- */

/* Queue a message for after the commit; takes `body` (may be NULL). */
static void s_post(broker_t *b, const unsigned char *ident, size_t ident_len,
		   enum proto_cmd cmd, cJSON *body)
{
	struct bout *o;

	if (b->nout == b->capout) {
		size_t cap = b->capout ? b->capout * 2 : 256;
		struct bout *p = realloc(b->out, cap * sizeof(*p));

		if (!p) {
			log_error("broker: out of memory, dropping a %s", proto_cmd_name(cmd));
			cJSON_Delete(body);
			return;
		}
		b->out = p;
		b->capout = cap;
	}
	o = &b->out[b->nout++];
	memcpy(o->ident, ident, ident_len);
	o->ident_len = ident_len;
	o->cmd = cmd;
	o->body = body;
}

static cJSON *s_pair(int64_t job, int attempt)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "job", (double)job);
	cJSON_AddNumberToObject(o, "attempt", attempt);
	return o;
}

static void s_post_error(broker_t *b, const unsigned char *ident, size_t ident_len,
			 const char *code, const char *text, int64_t job, int attempt)
{
	cJSON *o = job > 0 ? s_pair(job, attempt) : cJSON_CreateObject();

	cJSON_AddStringToObject(o, "code", code);
	cJSON_AddStringToObject(o, "message", text && *text ? text : code);
	s_post(b, ident, ident_len, PROTO_ERROR, o);
}

static void s_post_cancel(broker_t *b, const unsigned char *ident, size_t ident_len,
			  int64_t job, int attempt, const char *reason)
{
	cJSON *o = s_pair(job, attempt);

	cJSON_AddStringToObject(o, "reason", reason);
	s_post(b, ident, ident_len, PROTO_CANCEL, o);
}

static void s_flush(broker_t *b)
{
	size_t i;

	for (i = 0; i < b->nout; i++) {
		struct bout *o = &b->out[i];

		if (proto_send(b->router, o->ident, o->ident_len, o->cmd, o->body) < 0)
			log_debug("broker: %s", err_msg());
		cJSON_Delete(o->body);
	}
	b->nout = 0;
}

/* ---- workers ------------------------------------------------------------------ */

static struct bworker *s_find(broker_t *b, const unsigned char *ident, size_t len)
{
	struct bworker *w;

	for (w = b->workers; w; w = w->next)
		if (w->ident_len == len && !memcmp(w->ident, ident, len))
			return w;
	return NULL;
}

static struct bworker *s_find_id(broker_t *b, const char *id)
{
	struct bworker *w;

	for (w = b->workers; w; w = w->next)
		if (!strcmp(w->id, id))
			return w;
	return NULL;
}

static void s_unlink(broker_t *b, struct bworker *w)
{
	struct bworker **pp;

	for (pp = &b->workers; *pp; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	free(w->held);
	free(w);
}

static int s_hold(struct bworker *w, int64_t job, int attempt)
{
	if (w->nheld == w->capheld) {
		int cap = w->capheld ? w->capheld * 2 : 4;
		struct bjob *p = realloc(w->held, (size_t)cap * sizeof(*p));

		if (!p)
			return err_set("out of memory");
		w->held = p;
		w->capheld = cap;
	}
	w->held[w->nheld].job = job;
	w->held[w->nheld].attempt = attempt;
	w->nheld++;
	return 0;
}

/* Forget (job, attempt) wherever it is held. */
static void s_unhold(broker_t *b, int64_t job, int attempt)
{
	struct bworker *w;
	int i;

	for (w = b->workers; w; w = w->next)
		for (i = 0; i < w->nheld; i++)
			if (w->held[i].job == job && w->held[i].attempt == attempt) {
				w->held[i] = w->held[--w->nheld];
				return;
			}
}

/* A worker is gone: its jobs go back to the queue. */
static void s_worker_down(broker_t *b, struct bworker *w, const char *reason)
{
	int n = queue_worker_down(b->q, w->id, reason, mtime_wall_ms());

	if (n < 0)
		log_error("broker: cannot release the jobs of worker '%s': %s", w->id, err_msg());
	log_info("broker: worker '%s' %s; %d job(s) requeued", w->id, reason, n < 0 ? 0 : n);
	s_unlink(b, w);
	b->dispatch = 1;
}

/* ---- messages ----------------------------------------------------------------- */

static int s_running_has(const cJSON *running, int64_t job, int attempt)
{
	const cJSON *r;

	cJSON_ArrayForEach(r, running) {
		if ((int64_t)cJSON_GetObjectItem(r, "job")->valuedouble == job &&
		    (int)cJSON_GetObjectItem(r, "attempt")->valuedouble == attempt)
			return 1;
	}
	return 0;
}

static void s_on_ready(broker_t *b, struct bworker *w, const struct proto_msg *m, int64_t now)
{
	const cJSON *body = m->body, *running = cJSON_GetObjectItem(body, "running"), *r;
	const char *id = cJSON_GetObjectItem(body, "id")->valuestring;
	const cJSON *host = cJSON_GetObjectItem(body, "host"), *mem = cJSON_GetObjectItem(body, "gpu_mem_mb");
	struct bworker *old = s_find_id(b, id);
	struct queue_worker qw;
	int i, rc;

	/* The jobs this id held before (a reconnect, or the same worker under
	 * a new connection) and no longer runs failed with it. */
	if (old && old != w && w) {
		s_post_error(b, m->identity, m->identity_len, "duplicate-id", "another worker with this id is connected", 0, 0);
		return;
	}
	if (!w)
		w = old;
	if (w) {
		for (i = 0; i < w->nheld; i++)
			if (!s_running_has(running, w->held[i].job, w->held[i].attempt) &&
			    queue_fail(b->q, w->held[i].job, w->held[i].attempt,
				       "the worker reconnected without it", 1, now) == QUEUE_ERR)
				log_error("broker: %s", err_msg());
		w->nheld = 0;
	} else {
		/* A worker this daemon has not seen (the daemon restarted): the
		 * registry knows what the id held; requeue it all, and the loop
		 * below takes back what the worker still runs (queue_reattach
		 * accepts an attempt requeued and not leased since). */
		if (queue_release_worker(b->q, id, "the worker reconnected without it", now) == QUEUE_ERR)
			log_error("broker: %s", err_msg());
		w = calloc(1, sizeof(*w));
		if (!w) {
			log_error("broker: out of memory for a worker");
			return;
		}
		w->next = b->workers;
		b->workers = w;
	}
	memcpy(w->ident, m->identity, m->identity_len);
	w->ident_len = m->identity_len;
	snprintf(w->id, sizeof(w->id), "%s", id);
	w->caps.backend = strcmp(cJSON_GetObjectItem(body, "backend")->valuestring, "cuda") ?
		QUEUE_BACKEND_CPU : QUEUE_BACKEND_CUDA;
	w->caps.gpu_mem_mb = mem ? (int64_t)mem->valuedouble : 0;
	w->slots = (int)cJSON_GetObjectItem(body, "slots")->valuedouble;
	w->renewed_ms = now;
	w->expiry_ns = mtime_ns() + s_liveness_ns(b);
	qw.id = w->id;
	qw.host = cJSON_IsString(host) ? host->valuestring : NULL;
	qw.caps = w->caps;
	qw.slots = w->slots;
	if (queue_worker_up(b->q, &qw, now) < 0)
		log_error("broker: cannot record worker '%s': %s", w->id, err_msg());
	cJSON_ArrayForEach(r, running) {
		int64_t job = (int64_t)cJSON_GetObjectItem(r, "job")->valuedouble;
		int attempt = (int)cJSON_GetObjectItem(r, "attempt")->valuedouble;

		rc = queue_reattach(b->q, w->id, job, attempt, now, b->o.lease_ms);
		if (rc == QUEUE_OK) {
			if (s_hold(w, job, attempt) < 0)
				log_error("broker: %s", err_msg());
		} else {
			s_post_cancel(b, w->ident, w->ident_len, job, attempt,
				      rc == QUEUE_CANCELLED ? "cancelled" : "no longer leased to you");
		}
	}
	log_info("broker: worker '%s' ready (%s, %d slot(s), %d job(s) re-attached)", w->id,
		 w->caps.backend == QUEUE_BACKEND_CUDA ? "cuda" : "cpu", w->slots, w->nheld);
	b->dispatch = 1;
}

/* Metric points of a PROGRESS or DONE body into the queue (and the newest
 * checkpoint, when there is one). Returns a queue code. */
static int s_apply_progress(broker_t *b, const struct proto_msg *m, int64_t now)
{
	const cJSON *metrics = cJSON_GetObjectItem(m->body, "metrics");
	const cJSON *ck = cJSON_GetObjectItem(m->body, "checkpoint"), *p;
	struct queue_metric *pts = NULL;
	size_t n = 0;
	int rc;

	if (!metrics && !ck && m->cmd != PROTO_PROGRESS)
		return QUEUE_OK;
	if (metrics && cJSON_GetArraySize(metrics) > 0) {
		pts = calloc((size_t)cJSON_GetArraySize(metrics), sizeof(*pts));
		if (!pts)
			return err_set("out of memory"), QUEUE_ERR;
		cJSON_ArrayForEach(p, metrics) {
			pts[n].key = cJSON_GetObjectItem(p, "key")->valuestring;
			pts[n].step = (int64_t)cJSON_GetObjectItem(p, "step")->valuedouble;
			pts[n].value = cJSON_GetObjectItem(p, "value")->valuedouble;
			pts[n].t_ms = now;
			n++;
		}
	}
	rc = queue_progress(b->q, m->job, (int)m->attempt, pts, n,
			    ck ? cJSON_GetObjectItem(ck, "sha256")->valuestring : NULL, now,
			    b->o.lease_ms);
	free(pts);
	return rc;
}

static int s_apply_done(broker_t *b, const struct proto_msg *m, int64_t now)
{
	const cJSON *arts = cJSON_GetObjectItem(m->body, "artifacts");
	const cJSON *evals = cJSON_GetObjectItem(m->body, "evaluations"), *p;
	struct queue_output *outs = NULL;
	struct queue_eval *evs = NULL;
	struct queue_result res = { 0 };
	int rc = s_apply_progress(b, m, now);

	if (rc != QUEUE_OK)
		return rc;
	if (cJSON_GetArraySize(arts) > 0 &&
	    !(outs = calloc((size_t)cJSON_GetArraySize(arts), sizeof(*outs))))
		goto oom;
	if (cJSON_GetArraySize(evals) > 0 &&
	    !(evs = calloc((size_t)cJSON_GetArraySize(evals), sizeof(*evs))))
		goto oom;
	cJSON_ArrayForEach(p, arts) {
		outs[res.noutputs].name = cJSON_GetObjectItem(p, "name")->valuestring;
		outs[res.noutputs++].sha256 = cJSON_GetObjectItem(p, "sha256")->valuestring;
	}
	cJSON_ArrayForEach(p, evals) {
		evs[res.nevals].domain = cJSON_GetObjectItem(p, "domain")->valuestring;
		evs[res.nevals].metric = cJSON_GetObjectItem(p, "metric")->valuestring;
		evs[res.nevals++].value = cJSON_GetObjectItem(p, "value")->valuedouble;
	}
	res.outputs = outs;
	res.evals = evs;
	rc = queue_finish(b->q, m->job, (int)m->attempt, &res, now);
	free(outs);
	free(evs);
	return rc;
oom:
	free(outs);
	return err_set("out of memory"), QUEUE_ERR;
}

static int s_apply_failed(broker_t *b, const struct proto_msg *m, int64_t now)
{
	const cJSON *ck = cJSON_GetObjectItem(m->body, "checkpoint");
	int rc = QUEUE_OK;

	if (ck)
		rc = s_apply_progress(b, m, now);
	if (rc != QUEUE_OK)
		return rc;
	if (cJSON_IsTrue(cJSON_GetObjectItem(m->body, "handback")))
		return queue_return(b->q, m->job, (int)m->attempt, now);
	return queue_fail(b->q, m->job, (int)m->attempt,
			  cJSON_GetObjectItem(m->body, "error")->valuestring,
			  cJSON_IsTrue(cJSON_GetObjectItem(m->body, "retryable")), now);
}

/* Answer a result whose queue call returned `rc`. */
static void s_answer(broker_t *b, const struct proto_msg *m, int rc)
{
	const unsigned char *id = m->identity;
	size_t len = m->identity_len;

	switch (rc) {
	case QUEUE_OK:
		if (m->cmd != PROTO_PROGRESS)
			s_post(b, id, len, PROTO_ACK, s_pair(m->job, (int)m->attempt));
		return;
	case QUEUE_CANCELLED:
		if (m->cmd == PROTO_PROGRESS)
			s_post_cancel(b, id, len, m->job, (int)m->attempt, "cancelled");
		else
			s_post_error(b, id, len, "cancelled", "the job was cancelled", m->job, (int)m->attempt);
		return;
	case QUEUE_STALE:
		s_post_error(b, id, len, "stale", "late or duplicate result: this attempt no longer holds the job",
			     m->job, (int)m->attempt);
		return;
	case QUEUE_NOT_FOUND:
		s_post_error(b, id, len, "not-found", "no such job", m->job, (int)m->attempt);
		return;
	default:
		log_error("broker: %s %lld/%lld: %s", proto_cmd_name(m->cmd), m->job, m->attempt, err_msg());
		s_post_error(b, id, len, "internal", "the daemon could not record it; it will be retried",
			     m->job, (int)m->attempt);
	}
}

/* A PROGRESS with a sequence number is acknowledged (after the commit,
 * like every answer): the worker re-sends the ones it has no ACK for after
 * a READY, so points that reached a broker killed before its commit are
 * not lost (the queue keeps one point per job, key and step). */
static void s_ack_progress(broker_t *b, const struct proto_msg *m)
{
	cJSON *body = s_pair(m->job, (int)m->attempt);

	cJSON_AddNumberToObject(body, "progress", cJSON_GetObjectItem(m->body, "seq")->valuedouble);
	s_post(b, m->identity, m->identity_len, PROTO_ACK, body);
}

static void s_handle(broker_t *b, const struct proto_msg *m, int64_t now)
{
	struct bworker *w = s_find(b, m->identity, m->identity_len);
	int rc;

	if (w) {
		w->expiry_ns = mtime_ns() + s_liveness_ns(b);
		if (now - w->renewed_ms > b->o.lease_ms / 3) {
			if (queue_renew_worker(b->q, w->id, now, b->o.lease_ms) < 0)
				log_error("broker: %s", err_msg());
			w->renewed_ms = now;
		}
	}
	switch (m->cmd) {
	case PROTO_READY:
		s_on_ready(b, w, m, now);
		return;
	case PROTO_HEARTBEAT:
		break;
	case PROTO_PROGRESS:
		rc = s_apply_progress(b, m, now);
		if (rc != QUEUE_OK)
			s_answer(b, m, rc);
		else if (cJSON_GetObjectItem(m->body, "seq"))
			s_ack_progress(b, m);
		break;
	case PROTO_DONE:
	case PROTO_FAILED:
		rc = m->cmd == PROTO_DONE ? s_apply_done(b, m, now) : s_apply_failed(b, m, now);
		s_answer(b, m, rc);
		s_unhold(b, m->job, (int)m->attempt);
		b->dispatch = 1;
		break;
	case PROTO_DISCONNECT:
		if (w)
			s_worker_down(b, w, "disconnected");
		return;
	default:
		s_post_error(b, m->identity, m->identity_len, "unexpected",
			     "a worker does not send this command", 0, 0);
		return;
	}
	if (!w)
		s_post_error(b, m->identity, m->identity_len, "unknown-worker",
			     "send READY first (the daemon may have restarted)", 0, 0);
}

/* ---- timers, cancels, leases ---------------------------------------------- */

static void s_expire(broker_t *b, int64_t now)
{
	uint64_t t = mtime_ns();
	struct bworker *w, *next;

	for (w = b->workers; w; w = next) {
		next = w->next;
		if (w->expiry_ns < t) {
			char why[96];

			snprintf(why, sizeof(why), "went silent (nothing for %llu ms)",
				 (unsigned long long)((t - w->expiry_ns + s_liveness_ns(b)) / 1000000ull));
			s_worker_down(b, w, why);
		}
	}
	if (queue_expire_leases(b->q, now) > 0)
		b->dispatch = 1;
}

static void s_cancels(broker_t *b)
{
	struct queue_cancel_note notes[CANCELS_MAX];
	struct bworker *w;
	int n, i;

	do {
		n = queue_take_cancels(b->q, notes, CANCELS_MAX);
		if (n < 0) {
			log_error("broker: %s", err_msg());
			return;
		}
		for (i = 0; i < n; i++) {
			w = s_find_id(b, notes[i].worker_id);
			s_unhold(b, notes[i].job_id, notes[i].attempt);
			if (w)
				s_post_cancel(b, w->ident, w->ident_len, notes[i].job_id,
					      notes[i].attempt, "cancelled");
		}
	} while (n == CANCELS_MAX);
}

static cJSON *s_job_body(broker_t *b, const struct queue_lease *l)
{
	cJSON *o = s_pair(l->job_id, l->attempt), *spec, *x;

	spec = cJSON_Parse(l->spec_json ? l->spec_json : "{}");
	if (!cJSON_IsObject(spec)) {
		cJSON_Delete(spec);
		spec = cJSON_CreateObject();
	}
	if (job_inputs_resolve(b->q, spec) < 0)
		log_error("broker: job %lld: %s", (long long)l->job_id, err_msg());
	cJSON_AddStringToObject(o, "kind", l->kind);
	cJSON_AddItemToObject(o, "spec", spec);
	cJSON_AddNumberToObject(o, "lease_ms", b->o.lease_ms);
	if (l->checkpoint[0]) {
		x = cJSON_AddObjectToObject(o, "checkpoint");
		cJSON_AddStringToObject(x, "sha256", l->checkpoint);
	}
	if (b->artifact_url) {
		x = cJSON_AddObjectToObject(o, "artifacts");
		cJSON_AddStringToObject(x, "url", b->artifact_url);
		if (b->artifact_token)
			cJSON_AddStringToObject(x, "token", b->artifact_token);
	}
	return o;
}

static void s_dispatch(broker_t *b, int64_t now)
{
	struct queue_lease l;
	struct bworker *w;
	int rc;

	for (w = b->workers; w; w = w->next)
		w->starved = 0;
	for (w = b->workers; w; w = w->next) {
		while (!w->starved && w->nheld < w->slots) {
			memset(&l, 0, sizeof(l));
			rc = queue_lease_next(b->q, w->id, &w->caps, now, b->o.lease_ms, &l);
			if (rc == 1 && s_hold(w, l.job_id, l.attempt) == 0)
				s_post(b, w->ident, w->ident_len, PROTO_JOB, s_job_body(b, &l));
			else
				w->starved = 1;
			if (rc < 0)
				log_error("broker: cannot lease a job: %s", err_msg());
			queue_lease_clear(&l);
		}
	}
	b->dispatch = 0;
}

/* One batch: see the top comment. -1 only when the commit fails. */
static int s_batch(broker_t *b, int tick)
{
	struct proto_msg m;
	int64_t now = mtime_wall_ms();
	int n, rc;

	if (queue_begin(b->q) < 0)
		return -1;
	for (n = 0; n < BATCH_MAX; n++) {
		rc = proto_recv(b->router, 1, b->o.max_msg_bytes, &m);
		if (rc == 0)
			break;
		if (rc == -2) {
			log_error("broker: %s", err_msg());
			break;
		}
		if (rc < 0) {
			log_warn("broker: refused a message: %s", err_msg());
			if (m.identity_len)
				s_post_error(b, m.identity, m.identity_len, "bad-message", err_msg(), 0, 0);
		} else {
			s_handle(b, &m, now);
		}
		proto_msg_clear(&m);
	}
	if (tick)
		s_expire(b, now);
	if (b->cancels || tick) {
		s_cancels(b);
		b->cancels = 0;
	}
	if (b->dispatch || tick)
		s_dispatch(b, now);
	if (queue_commit(b->q) < 0) {
		size_t i;

		for (i = 0; i < b->nout; i++)
			cJSON_Delete(b->out[i].body);
		b->nout = 0;
		return err_prefix("broker: cannot commit to the registry");
	}
	s_flush(b);
	return n;
}

/* ---- CURVE: the ZAP handler ---------------------------------------------------- */

static void s_allow_load(broker_t *b)
{
	struct stat st;
	char *text = NULL, *line, *save = NULL;
	size_t len, n = 0;
	unsigned char (*keys)[32] = NULL;

	if (stat(b->allow_file, &st) < 0) {
		if (b->nallow)
			log_warn("broker: cannot read '%s': %s; no worker is allowed", b->allow_file,
				 strerror(errno));
		free(b->allow);
		b->allow = NULL;
		b->nallow = 0;
		memset(&b->allow_mtime, 0, sizeof(b->allow_mtime));
		return;
	}
	if (st.st_mtim.tv_sec == b->allow_mtime.tv_sec && st.st_mtim.tv_nsec == b->allow_mtime.tv_nsec)
		return;
	if (fsx_read_all(b->allow_file, &text, &len) < 0) {
		log_warn("broker: %s", err_msg());
		return;
	}
	keys = calloc(len / PROTO_Z85_LEN + 1, sizeof(*keys));
	for (line = strtok_r(text, "\n", &save); keys && line; line = strtok_r(NULL, "\n", &save)) {
		/* '#' is a z85 digit too: only a line that starts with it is a comment. */
		line[strcspn(line, " \t\r")] = '\0';
		if (!*line || *line == '#')
			continue;
		if (!proto_z85_valid(line) || !zmq_z85_decode(keys[n], line)) {
			log_warn("broker: '%s': skipping a line that is not a z85 public key", b->allow_file);
			continue;
		}
		n++;
	}
	free(text);
	free(b->allow);
	b->allow = keys;
	b->nallow = keys ? n : 0;
	b->allow_mtime = st.st_mtim;
	log_info("broker: %zu worker key(s) allowed from '%s'", b->nallow, b->allow_file);
}

static void s_zap_serve(broker_t *b)
{
	zmq_msg_t f[7];
	int n = 0, more = 1, ok = 0, i;
	size_t sz;

	while (more && n < 7) {
		zmq_msg_init(&f[n]);
		if (zmq_msg_recv(&f[n], b->zap, n ? 0 : ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&f[n]);
			break;
		}
		n++;
		sz = sizeof(more);
		zmq_getsockopt(b->zap, ZMQ_RCVMORE, &more, &sz);
	}
	if (n < 2)
		goto out;
	if (n >= 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
	    zmq_msg_size(&f[6]) == 32) {
		s_allow_load(b);
		for (i = 0; i < (int)b->nallow && !ok; i++)
			ok = !memcmp(b->allow[i], zmq_msg_data(&f[6]), 32);
	}
	if (!ok)
		log_warn("broker: refused a worker whose key is not in '%s'", b->allow_file);
	zmq_send(b->zap, "1.0", 3, ZMQ_SNDMORE);
	zmq_send(b->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
	zmq_send(b->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE);
	zmq_send(b->zap, ok ? "OK" : "key not allowed", ok ? 2 : 15, ZMQ_SNDMORE);
	zmq_send(b->zap, "", 0, ZMQ_SNDMORE);
	zmq_send(b->zap, "", 0, 0);
out:
	for (i = 0; i < n; i++)
		zmq_msg_close(&f[i]);
	while (more) {
		zmq_msg_t x;

		zmq_msg_init(&x);
		if (zmq_msg_recv(&x, b->zap, 0) < 0)
			more = 0;
		else if (zmq_getsockopt(b->zap, ZMQ_RCVMORE, &more, &(size_t){ sizeof(more) }) < 0)
			more = 0;
		zmq_msg_close(&x);
	}
}

/* ---- the object ------------------------------------------------------------------ */

static char *s_dup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int s_curve_setup(broker_t *b)
{
	char pub[PROTO_Z85_LEN + 1], sec[PROTO_Z85_LEN + 1];
	int one = 1, rc = -1;

	if (!b->o.curve_allow_file)
		return err_set("CURVE needs an allow-list of worker keys (DATA/workers.allow)");
	if (proto_keys_load(b->o.curve_secret_file, pub, sec) < 0)
		return -1;
	b->allow_file = strdup(b->o.curve_allow_file);
	b->zap = zmq_socket(b->ctx, ZMQ_REP);
	if (!b->allow_file || !b->zap || zmq_bind(b->zap, ZAP_ENDPOINT) < 0) {
		err_set("cannot start the CURVE handler: %s", zmq_strerror(errno));
		goto out;
	}
	if (zmq_setsockopt(b->router, ZMQ_CURVE_SERVER, &one, sizeof(one)) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_CURVE_SECRETKEY, sec, PROTO_Z85_LEN + 1) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_ZAP_DOMAIN, "modula", 6) < 0) {
		err_set("cannot enable CURVE: %s", zmq_strerror(errno));
		goto out;
	}
	s_allow_load(b);
	rc = 0;
out:
	memset(sec, 0, sizeof(sec));
	return rc;
}

broker_t *broker_new(const char *endpoint, const char *db_path, const struct broker_opts *opts)
{
	broker_t *b = calloc(1, sizeof(*b));
	int handover = 1;

	if (!b) {
		err_set("out of memory");
		return NULL;
	}
	b->wakefd = -1;
	if (opts)
		b->o = *opts;
	if (b->o.heartbeat_ms <= 0)
		b->o.heartbeat_ms = PROTO_HEARTBEAT_MS;
	if (b->o.liveness <= 0)
		b->o.liveness = PROTO_LIVENESS;
	if (b->o.lease_ms <= 0)
		b->o.lease_ms = 30000;
	if (b->o.max_msg_bytes <= 0)
		b->o.max_msg_bytes = PROTO_MAX_MSG;
	b->artifact_url = s_dup(b->o.artifact_url);
	b->artifact_token = s_dup(b->o.artifact_token);
	b->reg = registry_open(db_path);
	if (!b->reg || !(b->q = queue_new(b->reg)))
		goto err;
	b->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (b->wakefd < 0) {
		err_set("cannot make an eventfd: %s", strerror(errno));
		goto err;
	}
	b->ctx = zmq_ctx_new();
	b->router = b->ctx ? zmq_socket(b->ctx, ZMQ_ROUTER) : NULL;
	if (!b->router) {
		err_set("cannot make a ZeroMQ socket: %s", zmq_strerror(errno));
		goto err;
	}
	if (proto_sockopts(b->router, b->o.max_msg_bytes) < 0 ||
	    zmq_setsockopt(b->router, ZMQ_ROUTER_HANDOVER, &handover, sizeof(handover)) < 0)
		goto err;
	if (b->o.curve_secret_file && s_curve_setup(b) < 0)
		goto err;
	if (zmq_bind(b->router, endpoint) < 0) {
		err_set("cannot bind the broker to '%s': %s", endpoint, zmq_strerror(errno));
		goto err;
	}
	/* Leases of jobs that ran while no daemon was up: give their workers
	 * time to reconnect and re-attach before the leases expire. */
	if (queue_recover(b->q, mtime_wall_ms(), 2 * (int64_t)b->o.heartbeat_ms * b->o.liveness +
			  b->o.heartbeat_ms) < 0)
		goto err;
	log_info("broker: listening on %s%s", endpoint, b->zap ? " (CURVE)" : "");
	return b;
err:
	err_prefix("broker");
	broker_destroy(&b);
	return NULL;
}

int broker_run(broker_t *b, volatile sig_atomic_t *stop)
{
	zmq_pollitem_t items[3] = {
		{ b->router, 0, ZMQ_POLLIN, 0 },
		{ NULL, b->wakefd, ZMQ_POLLIN, 0 },
		{ b->zap, 0, ZMQ_POLLIN, 0 },
	};
	int nitems = b->zap ? 3 : 2;
	uint64_t hb_ns = (uint64_t)b->o.heartbeat_ms * 1000000ull, next = mtime_ns() + hb_ns, t;
	struct bworker *w;

	b->dispatch = b->cancels = 1;
	while (!*stop) {
		long timeout;
		int tick;

		t = mtime_ns();
		timeout = t >= next ? 0 : (long)((next - t) / 1000000ull) + 1;
		if (zmq_poll(items, nitems, timeout) < 0 && errno != EINTR)
			return err_set("broker: cannot poll: %s", zmq_strerror(errno));
		if (items[1].revents & ZMQ_POLLIN) {
			uint64_t v;

			if (read(b->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				log_warn("broker: cannot read the wake eventfd: %s", strerror(errno));
			b->dispatch = b->cancels = 1;
		}
		if (nitems == 3 && (items[2].revents & ZMQ_POLLIN))
			s_zap_serve(b);
		tick = mtime_ns() >= next;
		t = mtime_ns();
		if (s_batch(b, tick) < 0)
			return -1;
		if (mtime_ns() - t > hb_ns)
			log_warn("broker: one batch took %llu ms (the registry was slow or busy)",
				 (unsigned long long)((mtime_ns() - t) / 1000000ull));
		if (tick) {
			for (w = b->workers; w; w = w->next)
				proto_send(b->router, w->ident, w->ident_len, PROTO_HEARTBEAT, NULL);
			next = mtime_ns() + hb_ns;
		}
	}
	for (w = b->workers; w; w = w->next)
		proto_send(b->router, w->ident, w->ident_len, PROTO_DISCONNECT, NULL);
	return 0;
}

void broker_wake(broker_t *b)
{
	uint64_t one = 1;

	if (b && write(b->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("broker: cannot wake: %s", strerror(errno));
}

void broker_destroy(broker_t **bp)
{
	broker_t *b = bp ? *bp : NULL;
	size_t i;

	if (!b)
		return;
	while (b->workers)
		s_unlink(b, b->workers);
	for (i = 0; i < b->nout; i++)
		cJSON_Delete(b->out[i].body);
	free(b->out);
	if (b->router)
		zmq_close(b->router);
	if (b->zap)
		zmq_close(b->zap);
	if (b->ctx)
		zmq_ctx_term(b->ctx);
	if (b->wakefd >= 0)
		close(b->wakefd);
	queue_destroy(&b->q);
	registry_close(&b->reg);
	free(b->artifact_url);
	free(b->artifact_token);
	free(b->allow_file);
	free(b->allow);
	free(b);
	*bp = NULL;
}
