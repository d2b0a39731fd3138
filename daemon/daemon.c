/* daemon.c: see daemon.h. */
#include "config.h"
#include "daemon/daemon.h"
#include "daemon/auth.h"
#include "daemon/broker.h"
#include "daemon/http.h"
#include "daemon/registry.h"
#include "err.h"
#include "fsx.h"
#include "log.h"
#include "mtime.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The note that marks the token a daemon hands its workers. It is kept in
 * DATA/session.token (mode 0600) so that a restarted daemon keeps honouring
 * the uploads of the jobs its workers re-attach; a missing or unknown file
 * gets a fresh token and the old ones are revoked. */
#define DAEMON_SESSION_NOTE "modulad session (workers)"
#define DAEMON_SESSION_FILE "session.token"

/* Reuse the session token of DATA/session.token when the registry still
 * knows it as a worker token, else make a new one and keep it there.
 * 0, or -1 via err_set(). */
static int s_session_token(registry_t *r, const char *data_dir, char token[AUTH_TOKEN_LEN + 1])
{
	char path[PATH_MAX], *buf = NULL;
	enum auth_role role = AUTH_NONE;
	size_t len = 0;
	mode_t old;
	int rc;

	if ((size_t)snprintf(path, sizeof path, "%s/" DAEMON_SESSION_FILE, data_dir) >= sizeof path)
		return err_set("data folder path too long: '%s'", data_dir);
	if (fsx_read_all(path, &buf, &len) == 0) {
		if (len == AUTH_TOKEN_LEN && auth_check(r, buf, &role) == 0 && role == AUTH_WORKER) {
			memcpy(token, buf, AUTH_TOKEN_LEN + 1);
			free(buf);
			return 0;
		}
		free(buf);
	}
	if (auth_token_revoke_note(r, DAEMON_SESSION_NOTE) < 0 ||
	    auth_token_create(r, AUTH_WORKER, DAEMON_SESSION_NOTE, mtime_wall_ms(), token) < 0)
		return -1;
	old = umask(077);
	rc = fsx_write_atomic(path, token, AUTH_TOKEN_LEN);
	umask(old);
	return rc;
}

static _Atomic(broker_t *) s_broker;

/* WAL checkpoints, off the writers' path (registry_defer_checkpoints). */
#define DAEMON_CHECKPOINT_MS 250

struct checkpointer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	registry_t *r;
	int stop;
	int running;
};

static void *s_checkpoint_main(void *arg)
{
	struct checkpointer *c = arg;
	struct timespec until;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += DAEMON_CHECKPOINT_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&c->cond, &c->lock, &until);
		pthread_mutex_unlock(&c->lock);
		if (registry_checkpoint(c->r) < 0)
			log_warn("%s", err_msg());
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static int s_checkpointer_start(struct checkpointer *c, registry_t *r)
{
	c->r = r;
	if (pthread_create(&c->thread, NULL, s_checkpoint_main, c) != 0)
		return err_set("cannot start the checkpoint thread");
	c->running = 1;
	return 0;
}

static void s_checkpointer_stop(struct checkpointer *c)
{
	if (!c->running)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->thread, NULL);
	c->running = 0;
	registry_checkpoint(c->r);
}

/* HTTP threads call this after submits and cancels. */
static void s_wake(void *arg)
{
	(void)arg;
	broker_wake(atomic_load(&s_broker));
}

const char *daemon_default_web(void)
{
	static const char *const dirs[] = { MODULA_WEB_DIR, MODULA_SRC_WEB_DIR };
	char p[PATH_MAX];

	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		snprintf(p, sizeof p, "%s/index.html", dirs[i]);
		if (access(p, R_OK) == 0)
			return dirs[i];
	}
	return NULL;
}

/* The URL workers reach the artifact store at: the HTTP address, with a
 * wildcard host replaced by loopback. */
static void s_artifact_url(char *dst, size_t n, const char *listen, int port)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	size_t hl = colon ? (size_t)(colon - listen) : 0;

	if (hl == 0 || hl >= sizeof host)
		hl = 0;
	memcpy(host, listen, hl);
	host[hl] = '\0';
	if (!hl || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0)
		snprintf(host, sizeof host, "127.0.0.1");
	snprintf(dst, n, "http://%s:%d/api/v1/artifacts", host, port);
}

int daemon_run(const struct daemon_opts *o, volatile sig_atomic_t *stop)
{
	const char *listen = o->http ? o->http : DAEMON_HTTP_DEFAULT;
	const char *endpoint = o->broker ? o->broker : DAEMON_BROKER_DEFAULT;
	char db_path[PATH_MAX], url[512], token[AUTH_TOKEN_LEN + 1];
	struct checkpointer ckpt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct http_opts ho = { 0 };
	struct broker_opts bo = { 0 };
	registry_t *r = NULL;
	http_t *http = NULL;
	broker_t *b = NULL;
	int rc = -1;

	if ((size_t)snprintf(db_path, sizeof db_path, "%s/registry.db", o->data_dir) >= sizeof db_path)
		return err_set("data folder path too long: '%s'", o->data_dir);
	registry_defer_checkpoints(1);
	if (fsx_mkdirs(o->data_dir, 0755) < 0 || !(r = registry_open(db_path)))
		goto out;
	log_info("registry %s at schema version %d", db_path, registry_schema_version());
	if (s_session_token(r, o->data_dir, token) < 0)
		goto out;
	/* From here on `r` belongs to the checkpoint thread. */
	if (s_checkpointer_start(&ckpt, r) < 0)
		goto out;
	ho.listen = listen;
	ho.data_dir = o->data_dir;
	ho.web_dir = o->web_dir ? o->web_dir : daemon_default_web();
	ho.threads = o->http_threads;
	ho.wake = s_wake;
	if (!(http = http_start(&ho)))
		goto out;
	log_info("http: listening on %s (port %d)%s%s", listen, http_port(http),
		 ho.web_dir ? ", dashboard from " : ", no dashboard", ho.web_dir ? ho.web_dir : "");
	s_artifact_url(url, sizeof url, listen, http_port(http));
	bo.artifact_url = url;
	bo.artifact_token = token;
	bo.curve_secret_file = o->curve_secret;
	bo.curve_allow_file = o->curve_allow;
	if (!(b = broker_new(endpoint, db_path, &bo)))
		goto out;
	atomic_store(&s_broker, b);
	/* Jobs submitted while no daemon ran are waiting: look at once. */
	broker_wake(b);
	rc = broker_run(b, stop);
	log_info("stopping");
out:
	atomic_store(&s_broker, NULL);
	http_stop(&http);
	broker_destroy(&b);
	s_checkpointer_stop(&ckpt);
	registry_close(&r);
	explicit_bzero(token, sizeof token);
	return rc;
}
