/* proto.h: the codec of modula's worker protocol (schema/protocol.md), shared
 * by the broker in modulad (ROUTER) and modula-worker (DEALER).
 *
 * A message is three frames, [protocol id "MDL1", command, JSON body]; the
 * ROUTER side sees the peer's identity frame in front. Decoding is strict:
 * an unknown protocol id or version, a wrong frame count, an unknown
 * command, a body that is not a JSON object, an unknown field, a field of
 * the wrong type or out of range, or a message over the size limit is
 * refused with a message through err_set(); nothing a peer sends can crash
 * the decoder. Each command's body is checked against its table in
 * proto.c, which is the machine-readable half of schema/protocol.md.
 *
 * This is a codec and a few socket helpers (send, receive, CURVE keys); it
 * keeps no connection state: heartbeats, liveness and leases belong to the
 * broker and the worker.
 */
#ifndef MODULA_PROTO_H
#define MODULA_PROTO_H

#include <cjson/cJSON.h>
#include <stddef.h>

#define PROTO_ID "MDL1"
/* Default largest accepted message (all frames), in bytes: room for a
 * DONE or checkpoint PROGRESS carrying the protocol's 100,000 metric
 * points (up to ~190 bytes each with a 128-byte key) and as many
 * evaluations. A larger message is refused by proto_send and, from the
 * network, dropped with its connection by libzmq (ZMQ_MAXMSGSIZE). */
#define PROTO_MAX_MSG (32L << 20)
/* Longest ROUTER identity kept (ZeroMQ's own limit is 255). */
#define PROTO_IDENTITY_MAX 255
/* Heartbeat interval and liveness (the ZeroMQ guide's Paranoid Pirate). */
#define PROTO_HEARTBEAT_MS 1000
#define PROTO_LIVENESS 3
/* A CURVE key in z85: 40 characters. */
#define PROTO_Z85_LEN 40

enum proto_cmd {
	PROTO_READY = 1,     /* worker -> broker: capabilities, running jobs */
	PROTO_HEARTBEAT,     /* both ways */
	PROTO_JOB,           /* broker -> worker: run this (job, attempt) */
	PROTO_PROGRESS,      /* worker -> broker: step, metrics, checkpoint */
	PROTO_DONE,          /* worker -> broker: artifacts, evaluations */
	PROTO_FAILED,        /* worker -> broker: error, retryable */
	PROTO_CANCEL,        /* broker -> worker: stop this (job, attempt) */
	PROTO_DISCONNECT,    /* both ways: going away */
	PROTO_ERROR,         /* broker -> worker: a message was refused */
	PROTO_ACK,           /* broker -> worker: a DONE / FAILED is durable */
};

/* One decoded message. `body` is a JSON object checked against the
 * command's table; read it with jsonu getters or cJSON directly (types and
 * ranges are already checked). `job` and `attempt` are copied out of the
 * body when it has them, else 0. */
struct proto_msg {
	enum proto_cmd cmd;
	cJSON *body;
	long long job, attempt;
	/* ROUTER side: the peer's identity (binary, not NUL-terminated). */
	unsigned char identity[PROTO_IDENTITY_MAX];
	size_t identity_len;
};

/* "READY", "HEARTBEAT", ...; NULL for a value that is not a command. */
const char *proto_cmd_name(enum proto_cmd cmd);

/* Decode `n` frames (data[i], len[i]) as received by a DEALER (n == 3) or,
 * with `router` set, by a ROUTER (n == 4, identity first). `max_bytes` caps
 * the sum of the frame lengths (0: PROTO_MAX_MSG). Fills *m (free with
 * proto_msg_clear) and returns 0, or returns -1 via err_set() saying what
 * is wrong; on failure m->identity is still filled when the identity frame
 * was readable, so a ROUTER can answer with ERROR. */
int proto_decode(const void *const *data, const size_t *len, int n, int router,
		 long max_bytes, struct proto_msg *m);

/* Check `body` against the table of `cmd` without sending it: 0, or -1 via
 * err_set(). proto_send() calls this, so a bug cannot put a malformed
 * message on the wire. */
int proto_check(enum proto_cmd cmd, const cJSON *body);

/* Free the body and zero *m. Accepts a zeroed message. */
void proto_msg_clear(struct proto_msg *m);

/* Receive one whole message from a ZeroMQ socket without blocking, then
 * decode it. Returns 1 with *m filled; 0 when nothing is waiting; -1 via
 * err_set() when a message arrived but was refused (all its frames were
 * read; m->identity says who sent it, when known); -2 via err_set() on a
 * socket error. Messages over `max_bytes` are read and dropped, never
 * buffered whole. */
int proto_recv(void *sock, int router, long max_bytes, struct proto_msg *m);

/* Send [identity,] "MDL1", command, body. `identity` is NULL on a DEALER.
 * `body` NULL sends "{}". Never blocks: a peer that cannot take the message
 * now loses it (as ZeroMQ's ROUTER does). 0, or -1 via err_set(). */
int proto_send(void *sock, const void *identity, size_t identity_len,
	       enum proto_cmd cmd, const cJSON *body);

/* Send ERROR {"code": code, "message": text[, "job", "attempt"]}; job 0
 * leaves them out. 0 or -1 via err_set(). */
int proto_send_error(void *sock, const void *identity, size_t identity_len,
		     const char *code, const char *text, long long job, long long attempt);

/* Apply the socket options every protocol socket uses: ZMQ_MAXMSGSIZE
 * (`max_bytes`, 0: PROTO_MAX_MSG), ZMQ_LINGER 0, and on a ROUTER
 * ZMQ_ROUTER_MANDATORY off. 0 or -1 via err_set(). */
int proto_sockopts(void *sock, long max_bytes);

/* CURVE keys. A key file holds two lines, "public Z85" and "secret Z85";
 * the public file holds the public key alone on one line.
 * proto_keygen() writes a fresh keypair to `prefix`.key (mode 0600) and
 * `prefix`.pub, refusing to overwrite either. 0 or -1 via err_set(). */
int proto_keygen(const char *prefix);

/* Read a key file written by proto_keygen(): z85 keys, NUL-terminated.
 * 0 or -1 via err_set(). */
int proto_keys_load(const char *path, char public_z85[PROTO_Z85_LEN + 1],
		    char secret_z85[PROTO_Z85_LEN + 1]);

/* Read one public key given either as 40 z85 characters or as the path of
 * a file whose first line is one. 0 or -1 via err_set(). */
int proto_key_public(const char *key_or_path, char public_z85[PROTO_Z85_LEN + 1]);

/* 1 when `s` is exactly a valid 40-character z85 key, else 0. */
int proto_z85_valid(const char *s);

#endif
