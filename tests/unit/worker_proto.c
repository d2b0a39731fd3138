/* worker_proto.c: tests of the worker protocol codec (lib/proto.c) with good
 * and hostile frames, over buffers and over real inproc sockets, and of the
 * CURVE key files. Not a test of the broker or the worker. */
#include "config.h"
#include "proto.h"
#include "err.h"
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* Decode a DEALER-side message of three text frames. */
static int s_dec(const char *id, const char *cmd, const char *body, struct proto_msg *m)
{
	const void *d[3] = { id, cmd, body };
	size_t l[3] = { strlen(id), strlen(cmd), strlen(body) };

	return proto_decode(d, l, 3, 0, 0, m);
}

static int s_refused(const char *id, const char *cmd, const char *body, const char *want)
{
	struct proto_msg m;
	int rc = s_dec(id, cmd, body, &m);

	proto_msg_clear(&m);
	if (rc == 0) {
		tap_diag("accepted %s %s", cmd, body);
		return 0;
	}
	if (want && !strstr(err_msg(), want)) {
		tap_diag("message '%s' lacks '%s'", err_msg(), want);
		return 0;
	}
	return 1;
}

static void test_good(void)
{
	struct proto_msg m;
	int rc;

	rc = s_dec("MDL1", "READY", "{\"id\":\"w1\",\"backend\":\"cpu\",\"slots\":4,"
		   "\"running\":[{\"job\":7,\"attempt\":2}],\"host\":\"h\"}", &m);
	TAP_OK(rc == 0 && m.cmd == PROTO_READY, "READY decodes (%s)", err_msg());
	proto_msg_clear(&m);
	rc = s_dec("MDL1", "PROGRESS", "{\"job\":3,\"attempt\":1,\"step\":10,\"metrics\":"
		   "[{\"key\":\"loss\",\"step\":10,\"value\":1.5}],\"checkpoint\":{\"sha256\":"
		   "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"step\":10}}", &m);
	TAP_OK(rc == 0 && m.job == 3 && m.attempt == 1, "PROGRESS decodes, job %lld attempt %lld",
	       m.job, m.attempt);
	proto_msg_clear(&m);
	rc = s_dec("MDL1", "HEARTBEAT", "{}", &m);
	TAP_OK(rc == 0 && m.cmd == PROTO_HEARTBEAT && m.job == 0, "HEARTBEAT decodes");
	proto_msg_clear(&m);
	rc = s_dec("MDL1", "FAILED", "{\"job\":1,\"attempt\":1,\"error\":\"x\",\"retryable\":true,"
		   "\"handback\":true}", &m);
	TAP_OK(rc == 0 && m.cmd == PROTO_FAILED, "FAILED with handback decodes");
	proto_msg_clear(&m);
}

static void test_hostile(void)
{
	const void *d[5] = { "MDL1", "HEARTBEAT", "{}", "x", "y" };
	size_t l[5] = { 4, 9, 2, 1, 1 };
	struct proto_msg m;
	char big[2048];

	TAP_OK(s_refused("MDL2", "HEARTBEAT", "{}", "unsupported protocol version 'MDL2'"),
	       "unknown version refused: %s", err_msg());
	TAP_OK(s_refused("ZMTP", "HEARTBEAT", "{}", "not a modula protocol message"),
	       "foreign protocol id refused");
	TAP_OK(s_refused("MDL1", "EXPLODE", "{}", "unknown command 'EXPLODE'"), "unknown command refused");
	TAP_OK(s_refused("MDL1", "READ\x01", "{}", "unknown command 'READ?'"), "control bytes in a command are masked");
	{
		const void *nd[3] = { "MDL1", "HEARTBEAT\0junk", "{}" };
		size_t dl[3] = { 4, 14, 2 };
		struct proto_msg nm;
		int nrc = proto_decode(nd, dl, 3, 0, 0, &nm);

		proto_msg_clear(&nm);
		TAP_OK(nrc < 0 && strstr(err_msg(), "NUL byte"), "a command frame with a NUL byte is refused: %s", err_msg());
	}
	TAP_OK(s_refused("MDL1", "HEARTBEAT", "{\"a\":", "bad JSON"), "bad JSON refused: %s", err_msg());
	TAP_OK(s_refused("MDL1", "HEARTBEAT", "[1]", "must be a JSON object"), "non-object body refused");
	TAP_OK(s_refused("MDL1", "HEARTBEAT", "{\"x\":1}", "unknown field 'x'"), "unknown field refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":\"1\",\"attempt\":1}", "'job': expected an integer"),
	       "wrong type refused: %s", err_msg());
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":1.5,\"attempt\":1}", "expected an integer"),
	       "fractional id refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":0,\"attempt\":1}", "out of range"), "job 0 refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":1e300,\"attempt\":1}", "expected an integer"),
	       "huge number refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"attempt\":1}", "missing field 'job'"), "missing field refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":1,\"job\":2,\"attempt\":1}", "duplicate field"),
	       "duplicate field refused");
	TAP_OK(s_refused("MDL1", "READY", "{\"id\":\"w\",\"backend\":\"tpu\",\"slots\":1}",
			 "unknown value 'tpu'"), "unknown backend refused");
	TAP_OK(s_refused("MDL1", "READY", "{\"id\":\"w\",\"backend\":\"cpu\",\"slots\":0}", "out of range"),
	       "zero slots refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":1,\"attempt\":1,\"artifacts\":[{\"name\":\"a\","
			 "\"sha256\":\"../../etc/passwd\"}]}", "hex"), "bad sha256 refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":1,\"attempt\":1,\"artifacts\":[1]}",
			 "'artifacts[0]': expected an object"), "array of wrong items refused");
	TAP_OK(s_refused("MDL1", "DONE", "{\"job\":1,\"attempt\":1,\"evaluations\":[{\"domain\":\"a\","
			 "\"metric\":\"b\",\"value\":1,\"extra\":2}]}", "unknown field 'extra'"),
	       "unknown nested field refused: %s", err_msg());
	TAP_OK(proto_decode(d, l, 2, 0, 0, &m) < 0 && strstr(err_msg(), "wrong frame count"),
	       "two frames refused");
	proto_msg_clear(&m);
	TAP_OK(proto_decode(d, l, 5, 0, 0, &m) < 0, "five frames refused");
	proto_msg_clear(&m);
	TAP_OK(proto_decode(d, l, 0, 1, 0, &m) < 0 && m.identity_len == 0, "an empty ROUTER message refused");
	proto_msg_clear(&m);
	memset(big, ' ', sizeof(big));
	big[0] = '{';
	big[sizeof(big) - 1] = '}';
	d[2] = big;
	l[2] = sizeof(big);
	TAP_OK(proto_decode(d, l, 3, 0, 1024, &m) < 0 && strstr(err_msg(), "too large"),
	       "oversized message refused: %s", err_msg());
	proto_msg_clear(&m);
}

/* Random frames never crash the decoder and are never accepted whole. */
static void test_random(void)
{
	unsigned char buf[3][64];
	const void *d[3] = { buf[0], buf[1], buf[2] };
	size_t l[3];
	struct proto_msg m;
	int i, j, k, accepted = 0;

	srand(42);
	for (i = 0; i < 20000; i++) {
		for (j = 0; j < 3; j++) {
			l[j] = (size_t)(rand() % 64);
			for (k = 0; k < (int)l[j]; k++)
				buf[j][k] = (unsigned char)(rand() % 256);
		}
		if (i % 2)
			memcpy(buf[0], "MDL1", l[0] = 4);
		if (proto_decode(d, l, 3, 0, 0, &m) == 0)
			accepted++;
		proto_msg_clear(&m);
	}
	TAP_OK(accepted == 0, "20000 random messages: %d accepted, none crashed", accepted);
}

static void test_sockets(void)
{
	void *ctx = zmq_ctx_new(), *r = zmq_socket(ctx, ZMQ_ROUTER), *dl = zmq_socket(ctx, ZMQ_DEALER);
	zmq_pollitem_t it = { r, 0, ZMQ_POLLIN, 0 };
	struct proto_msg m;
	cJSON *body = cJSON_Parse("{\"job\":5,\"attempt\":1}");
	char *big = calloc(1, 4096);
	int rc;

	proto_sockopts(r, 2048);
	proto_sockopts(dl, 0);
	zmq_setsockopt(dl, ZMQ_ROUTING_ID, "w1", 2);
	zmq_bind(r, "inproc://t");
	zmq_connect(dl, "inproc://t");
	TAP_OK(proto_send(dl, NULL, 0, PROTO_ACK, body) == 0, "DEALER sends ACK");
	zmq_poll(&it, 1, 1000);
	rc = proto_recv(r, 1, 2048, &m);
	TAP_OK(rc == 1 && m.cmd == PROTO_ACK && m.job == 5 && m.identity_len == 2 &&
	       !memcmp(m.identity, "w1", 2), "ROUTER receives it with the identity");
	proto_msg_clear(&m);
	TAP_OK(proto_recv(r, 1, 2048, &m) == 0, "nothing more waiting");
	cJSON_AddStringToObject(body, "bogus", "x");
	TAP_OK(proto_send(dl, NULL, 0, PROTO_ACK, body) < 0 && strstr(err_msg(), "refusing to send"),
	       "a malformed body is not sent: %s", err_msg());
	memset(big, 'x', 4095);
	zmq_send(dl, "MDL1", 4, ZMQ_SNDMORE);
	zmq_send(dl, "HEARTBEAT", 9, ZMQ_SNDMORE);
	zmq_send(dl, "{}", 2, ZMQ_SNDMORE);
	zmq_send(dl, "{}", 2, ZMQ_SNDMORE);
	zmq_send(dl, "{}", 2, ZMQ_SNDMORE);
	zmq_send(dl, "{}", 2, 0);
	zmq_poll(&it, 1, 1000);
	rc = proto_recv(r, 1, 2048, &m);
	TAP_OK(rc == -1 && m.identity_len == 2, "six frames refused, sender known: %s", err_msg());
	proto_msg_clear(&m);
	proto_send(dl, NULL, 0, PROTO_HEARTBEAT, NULL);
	zmq_poll(&it, 1, 1000);
	rc = proto_recv(r, 1, 2048, &m);
	TAP_OK(rc == 1 && m.cmd == PROTO_HEARTBEAT, "the socket keeps working after a bad message");
	proto_msg_clear(&m);
	TAP_OK(proto_send_error(r, "w1", 2, "bad-message", "why", 0, 0) == 0, "ROUTER sends ERROR");
	it.socket = dl;
	zmq_poll(&it, 1, 1000);
	rc = proto_recv(dl, 0, 0, &m);
	TAP_OK(rc == 1 && m.cmd == PROTO_ERROR, "DEALER receives ERROR");
	proto_msg_clear(&m);
	cJSON_Delete(body);
	free(big);
	zmq_close(r);
	zmq_close(dl);
	zmq_ctx_term(ctx);
}

/* The largest message the protocol's own limits allow (a DONE carrying
 * 100,000 metric points with 128-byte keys, as a long job's DONE carries
 * its unacknowledged points) goes through sockets with the default limit
 * whole; with a 1 MiB limit libzmq dropped the connection with it. */
static void test_largest(void)
{
	void *ctx = zmq_ctx_new(), *r = zmq_socket(ctx, ZMQ_ROUTER), *dl = zmq_socket(ctx, ZMQ_DEALER);
	zmq_pollitem_t it = { r, 0, ZMQ_POLLIN, 0 };
	cJSON *body = cJSON_Parse("{\"job\":7,\"attempt\":2}"), *pts = cJSON_AddArrayToObject(body, "metrics");
	struct proto_msg m;
	char key[129];
	char *text;
	size_t bytes;
	int rc;

	memset(key, 'k', 128);
	key[128] = '\0';
	for (int i = 0; i < 100000; i++) {
		cJSON *p = cJSON_CreateObject();
		cJSON_AddStringToObject(p, "key", key);
		cJSON_AddNumberToObject(p, "step", 1e15 + i);
		cJSON_AddNumberToObject(p, "value", 1.0 / 3.0 + i);
		cJSON_AddItemToArray(pts, p);
	}
	text = cJSON_PrintUnformatted(body);
	bytes = text ? strlen(text) : 0;
	free(text);
	proto_sockopts(r, 0);
	proto_sockopts(dl, 0);
	zmq_bind(r, "inproc://largest");
	zmq_connect(dl, "inproc://largest");
	TAP_OK(proto_send(dl, NULL, 0, PROTO_DONE, body) == 0, "a DONE of 100,000 points (%zu bytes) is sent",
	       bytes);
	zmq_poll(&it, 1, 5000);
	rc = proto_recv(r, 1, 0, &m);
	TAP_OK(rc == 1 && m.cmd == PROTO_DONE && m.job == 7 &&
	       cJSON_GetArraySize(cJSON_GetObjectItem(m.body, "metrics")) == 100000,
	       "and received whole under the default limit (%ld bytes)", PROTO_MAX_MSG);
	proto_msg_clear(&m);
	cJSON_AddItemToArray(pts, cJSON_Duplicate(cJSON_GetArrayItem(pts, 0), 1));
	TAP_OK(proto_send(dl, NULL, 0, PROTO_DONE, body) < 0 && strstr(err_msg(), "refusing to send"),
	       "one point more is refused by name: %s", err_msg());
	cJSON_Delete(body);
	zmq_close(r);
	zmq_close(dl);
	zmq_ctx_term(ctx);
}

static void test_keys(void)
{
	char dir[] = "/tmp/modula-proto-XXXXXX", prefix[64], path[80];
	char pub[PROTO_Z85_LEN + 1], sec[PROTO_Z85_LEN + 1], pub2[PROTO_Z85_LEN + 1];
	struct stat st;

	if (!mkdtemp(dir)) {
		TAP_OK(0, "mkdtemp");
		return;
	}
	snprintf(prefix, sizeof(prefix), "%s/w", dir);
	TAP_OK(proto_keygen(prefix) == 0, "keygen writes a keypair (%s)", err_msg());
	TAP_OK(proto_keygen(prefix) < 0 && strstr(err_msg(), "remove it first"),
	       "keygen refuses to overwrite");
	snprintf(path, sizeof(path), "%s.key", prefix);
	TAP_OK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "the secret key file is 0600");
	TAP_OK(proto_keys_load(path, pub, sec) == 0 && proto_z85_valid(pub) && proto_z85_valid(sec),
	       "the key file loads");
	unlink(path);
	snprintf(path, sizeof(path), "%s.pub", prefix);
	TAP_OK(proto_key_public(path, pub2) == 0 && !strcmp(pub, pub2), "the public file matches");
	TAP_OK(proto_key_public(pub, pub2) == 0, "a z85 key is taken as is");
	TAP_OK(proto_key_public("tooshort", pub2) < 0, "a bad key is refused: %s", err_msg());
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	test_good();
	test_hostile();
	test_random();
	test_sockets();
	test_largest();
	test_keys();
	return tap_done();
}
