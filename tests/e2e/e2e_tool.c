/* e2e_tool.c: helpers of the end-to-end tests (tests/e2e/ scripts).
 *
 *   e2e-tool submit DB KIND N [SPEC]  submit N jobs in one transaction
 *   e2e-tool hostile ENDPOINT         a raw ZeroMQ client sending malformed
 *                                     frames; prints TAP lines for each answer
 *
 * Not a test by itself.
 */
#include "config.h"
#include "daemon/queue.h"
#include "daemon/registry.h"
#include "err.h"
#include "mtime.h"
#include "proto.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static int s_submit(const char *db, const char *kind, int n, const char *spec)
{
	registry_t *r = registry_open(db);
	queue_t *q = r ? queue_new(r) : NULL;
	struct queue_submit s = { .kind = kind, .spec_json = spec };
	int64_t id;
	int i, rc = 1;

	if (!q || queue_begin(q) < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (queue_submit(q, &s, mtime_wall_ms(), &id, NULL) < 0) {
			queue_rollback(q);
			goto out;
		}
	if (queue_commit(q) == 0)
		rc = 0;
out:
	if (rc)
		fprintf(stderr, "e2e-tool: %s\n", err_msg());
	queue_destroy(&q);
	registry_close(&r);
	return rc;
}

/* Send the frames, then expect an ERROR whose message has `want`. */
static void s_expect(void *d, int nframes, const char *const *frames, const size_t *lens,
		     const char *want, const char *what)
{
	zmq_pollitem_t it = { d, 0, ZMQ_POLLIN, 0 };
	struct proto_msg m;
	const cJSON *msg;
	int i, rc = 0;

	for (i = 0; i < nframes; i++)
		zmq_send(d, frames[i], lens[i], i + 1 < nframes ? ZMQ_SNDMORE : 0);
	memset(&m, 0, sizeof(m));
	while (zmq_poll(&it, 1, 5000) == 1) {
		rc = proto_recv(d, 0, 0, &m);
		if (rc != 1 || m.cmd != PROTO_HEARTBEAT)
			break;
		proto_msg_clear(&m);
	}
	msg = m.body ? cJSON_GetObjectItem(m.body, "message") : NULL;
	TAP_OK(rc == 1 && m.cmd == PROTO_ERROR && msg && strstr(msg->valuestring, want),
	       "%s: ERROR '%s'", what, msg ? msg->valuestring : "(none)");
	proto_msg_clear(&m);
}

static int s_hostile(const char *endpoint)
{
	void *ctx = zmq_ctx_new(), *d = zmq_socket(ctx, ZMQ_DEALER);
	const char *two[] = { "MDL1", "HEARTBEAT" };
	const char *v2[] = { "MDL2", "HEARTBEAT", "{}" };
	const char *unk[] = { "MDL1", "EXPLODE", "{}" };
	const char *bad[] = { "MDL1", "READY", "{\"id\": " };
	const char *field[] = { "MDL1", "READY", "{\"id\":\"x\",\"backend\":\"cpu\",\"slots\":1,\"evil\":1}" };
	const char *type[] = { "MDL1", "DONE", "{\"job\":\"1\",\"attempt\":1}" };
	const char *late[] = { "MDL1", "DONE", "{\"job\":999999,\"attempt\":1}" };
	const char *ready[] = { "MDL1", "READY", "{\"id\":\"hostile\",\"backend\":\"cpu\",\"slots\":1}" };
	const char *big[4] = { "MDL1", "HEARTBEAT", NULL, NULL };
	size_t l2[] = { 4, 9 }, l3[3], lb[4] = { 4, 9, PROTO_MAX_MSG - 64, 128 };
	char *pad = malloc(PROTO_MAX_MSG);
	int i;

	proto_sockopts(d, 0);
	zmq_setsockopt(d, ZMQ_ROUTING_ID, "hostile", 7);
	zmq_connect(d, endpoint);
#define L3(f) (l3[0] = strlen(f[0]), l3[1] = strlen(f[1]), l3[2] = strlen(f[2]), l3)
	s_expect(d, 2, two, l2, "wrong frame count", "two frames");
	s_expect(d, 3, v2, L3(v2), "unsupported protocol version 'MDL2'", "unknown version");
	s_expect(d, 3, unk, L3(unk), "unknown command 'EXPLODE'", "unknown command");
	s_expect(d, 3, bad, L3(bad), "bad JSON", "bad JSON");
	s_expect(d, 3, field, L3(field), "unknown field 'evil'", "unknown field");
	s_expect(d, 3, type, L3(type), "expected an integer", "wrong type");
	/* Each frame under ZMQ_MAXMSGSIZE, the whole over the limit. */
	memset(pad, ' ', PROTO_MAX_MSG);
	big[2] = big[3] = pad;
	s_expect(d, 4, big, lb, "too large", "oversized message");
	for (i = 0; i < 3; i++)
		zmq_send(d, ready[i], strlen(ready[i]), i < 2 ? ZMQ_SNDMORE : 0);
	s_expect(d, 3, late, L3(late), "no such job", "a result for an unknown job");
	for (i = 0; i < 100; i++) {
		unsigned char junk[64];
		size_t k;

		for (k = 0; k < sizeof(junk); k++)
			junk[k] = (unsigned char)rand();
		zmq_send(d, junk, (size_t)(rand() % 64), ZMQ_SNDMORE);
		zmq_send(d, junk, (size_t)(rand() % 64), 0);
	}
	s_expect(d, 2, two, l2, "wrong frame count", "still serving after 100 junk messages");
	free(pad);
	zmq_close(d);
	zmq_ctx_term(ctx);
	return tap_done();
}

int main(int argc, char **argv)
{
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "submit"))
		return s_submit(argv[2], argv[3], atoi(argv[4]), argc == 6 ? argv[5] : NULL);
	if (argc == 3 && !strcmp(argv[1], "hostile"))
		return s_hostile(argv[2]);
	fputs("usage: e2e-tool submit DB KIND N [SPEC] | hostile ENDPOINT\n", stderr);
	return 2;
}
