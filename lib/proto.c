/* proto.c: the worker protocol codec (see proto.h and schema/protocol.md).
 *
 * The tables below say, for each command, which body fields exist, their
 * types, ranges and whether they are required; decoding and sending both
 * check against them. Not a general JSON schema engine: bodies are flat
 * objects whose members are scalars, free-form objects (a job spec), or
 * objects and arrays of objects described by a nested table.
 */
#include "config.h"
#include "proto.h"
#include "err.h"
#include "jsonu.h"
#include "sha256.h"
#include "fsx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

enum ptype { PT_INT = 1, PT_NUM, PT_STR, PT_BOOL, PT_SHA, PT_OBJ, PT_ARR };

struct pfield {
	const char *name;
	enum ptype type;
	int required;
	/* PT_INT: inclusive range; PT_STR: max length; PT_ARR: max items. */
	long long min, max;
	/* PT_OBJ / PT_ARR: the members of the object (of each item); NULL for
	 * a free-form object. */
	const struct pfield *sub;
	/* PT_STR: the allowed values, NULL-terminated; NULL for any. */
	const char *const *choices;
};

#define F_END { NULL, 0, 0, 0, 0, NULL, NULL }
#define F_ID(name) { name, PT_INT, 1, 1, LLONG_MAX, NULL, NULL }
#define F_STR(name, req, maxlen) { name, PT_STR, req, 0, maxlen, NULL, NULL }
#define F_UINT(name, req) { name, PT_INT, req, 0, LLONG_MAX, NULL, NULL }
#define F_NUM(name, req) { name, PT_NUM, req, 0, 0, NULL, NULL }

static const char *const s_backends[] = { "cpu", "cuda", NULL };

static const struct pfield s_running[] = {
	F_ID("job"), F_ID("attempt"), F_UINT("step", 0), F_END,
};
static const struct pfield s_ready[] = {
	F_STR("id", 1, 64),
	{ "backend", PT_STR, 1, 0, 8, NULL, s_backends },
	F_STR("device", 0, 256),
	F_UINT("gpu_mem_mb", 0),
	{ "slots", PT_INT, 1, 1, 1024, NULL, NULL },
	{ "running", PT_ARR, 0, 0, 1024, s_running, NULL },
	F_STR("version", 0, 64),
	F_STR("host", 0, 256),
	F_END,
};
static const struct pfield s_empty[] = { F_END };
static const struct pfield s_ckpt[] = {
	{ "sha256", PT_SHA, 1, 0, 0, NULL, NULL },
	F_UINT("step", 0), F_UINT("size", 0), F_STR("path", 0, 1024), F_END,
};
static const struct pfield s_store[] = {
	F_STR("url", 1, 2048), F_STR("token", 0, 256), F_END,
};
static const struct pfield s_job[] = {
	F_ID("job"), F_ID("attempt"),
	F_STR("kind", 1, 64),
	{ "spec", PT_OBJ, 1, 0, 0, NULL, NULL },
	{ "lease_ms", PT_INT, 1, 1, INT_MAX, NULL, NULL },
	{ "checkpoint", PT_OBJ, 0, 0, 0, s_ckpt, NULL },
	{ "artifacts", PT_OBJ, 0, 0, 0, s_store, NULL },
	F_END,
};
static const struct pfield s_metric[] = {
	F_STR("key", 1, 128), F_UINT("step", 1), F_NUM("value", 1), F_END,
};
static const struct pfield s_progress[] = {
	F_ID("job"), F_ID("attempt"),
	F_UINT("step", 0), F_UINT("total_steps", 0),
	{ "metrics", PT_ARR, 0, 0, 100000, s_metric, NULL },
	{ "checkpoint", PT_OBJ, 0, 0, 0, s_ckpt, NULL },
	F_UINT("seq", 0),
	F_END,
};
static const struct pfield s_artifact[] = {
	F_STR("name", 1, 255), { "sha256", PT_SHA, 1, 0, 0, NULL, NULL },
	F_UINT("size", 0), F_END,
};
static const struct pfield s_eval[] = {
	F_STR("domain", 1, 128), F_STR("metric", 1, 128), F_NUM("value", 1), F_END,
};
static const struct pfield s_done[] = {
	F_ID("job"), F_ID("attempt"),
	{ "artifacts", PT_ARR, 0, 0, 10000, s_artifact, NULL },
	{ "evaluations", PT_ARR, 0, 0, 100000, s_eval, NULL },
	{ "metrics", PT_ARR, 0, 0, 100000, s_metric, NULL },
	F_END,
};
static const struct pfield s_failed[] = {
	F_ID("job"), F_ID("attempt"),
	F_STR("error", 1, 4096),
	{ "retryable", PT_BOOL, 1, 0, 0, NULL, NULL },
	{ "handback", PT_BOOL, 0, 0, 0, NULL, NULL },
	{ "checkpoint", PT_OBJ, 0, 0, 0, s_ckpt, NULL },
	F_END,
};
static const struct pfield s_cancel[] = {
	F_ID("job"), F_ID("attempt"), F_STR("reason", 0, 1024), F_END,
};
static const struct pfield s_ack[] = {
	F_ID("job"), F_ID("attempt"), F_UINT("progress", 0), F_END,
};
static const struct pfield s_disconnect[] = {
	F_STR("reason", 0, 1024), F_END,
};
static const struct pfield s_error[] = {
	F_STR("code", 1, 64), F_STR("message", 1, 4096),
	{ "job", PT_INT, 0, 1, LLONG_MAX, NULL, NULL },
	{ "attempt", PT_INT, 0, 1, LLONG_MAX, NULL, NULL },
	F_END,
};

static const struct {
	const char *name;
	const struct pfield *fields;
} s_cmds[] = {
	[PROTO_READY] = { "READY", s_ready },
	[PROTO_HEARTBEAT] = { "HEARTBEAT", s_empty },
	[PROTO_JOB] = { "JOB", s_job },
	[PROTO_PROGRESS] = { "PROGRESS", s_progress },
	[PROTO_DONE] = { "DONE", s_done },
	[PROTO_FAILED] = { "FAILED", s_failed },
	[PROTO_CANCEL] = { "CANCEL", s_cancel },
	[PROTO_DISCONNECT] = { "DISCONNECT", s_disconnect },
	[PROTO_ERROR] = { "ERROR", s_error },
	[PROTO_ACK] = { "ACK", s_ack },
};
#define NCMDS ((int)(sizeof(s_cmds) / sizeof(s_cmds[0])))

const char *proto_cmd_name(enum proto_cmd cmd)
{
	if ((int)cmd <= 0 || (int)cmd >= NCMDS)
		return NULL;
	return s_cmds[cmd].name;
}

static int s_check_obj(const cJSON *obj, const struct pfield *fields);

static int s_check_field(const cJSON *v, const struct pfield *f)
{
	double d;
	int i, n;

	switch (f->type) {
	case PT_INT:
		d = v->valuedouble;
		if (!cJSON_IsNumber(v) || d != floor(d) || d < -9.2e18 || d > 9.2e18)
			return err_set("'%s': expected an integer, got %s", f->name,
				       cJSON_IsNumber(v) ? "a fraction or a huge number" : jsonu_type_name(v));
		if ((long long)d < f->min || (long long)d > f->max)
			return err_set("'%s': %.0f is out of range [%lld, %lld]", f->name, d,
				       f->min, f->max);
		return 0;
	case PT_NUM:
		if (!cJSON_IsNumber(v))
			return err_set("'%s': expected a number, got %s", f->name, jsonu_type_name(v));
		return 0;
	case PT_BOOL:
		if (!cJSON_IsBool(v))
			return err_set("'%s': expected a boolean, got %s", f->name, jsonu_type_name(v));
		return 0;
	case PT_STR:
		if (!cJSON_IsString(v))
			return err_set("'%s': expected a string, got %s", f->name, jsonu_type_name(v));
		if ((long long)strlen(v->valuestring) > f->max)
			return err_set("'%s': longer than %lld bytes", f->name, f->max);
		for (i = 0; f->choices && f->choices[i]; i++)
			if (!strcmp(v->valuestring, f->choices[i]))
				return 0;
		if (f->choices)
			return err_set("'%s': unknown value '%.64s'", f->name, v->valuestring);
		return 0;
	case PT_SHA:
		if (!cJSON_IsString(v) || !sha256_is_hex(v->valuestring))
			return err_set("'%s': expected 64 lowercase hex digits", f->name);
		return 0;
	case PT_OBJ:
		if (!cJSON_IsObject(v))
			return err_set("'%s': expected an object, got %s", f->name, jsonu_type_name(v));
		if (f->sub && s_check_obj(v, f->sub) < 0)
			return err_prefix("'%s'", f->name);
		return 0;
	case PT_ARR:
		if (!cJSON_IsArray(v))
			return err_set("'%s': expected an array, got %s", f->name, jsonu_type_name(v));
		n = cJSON_GetArraySize(v);
		if (n > f->max)
			return err_set("'%s': more than %lld items", f->name, f->max);
		for (i = 0, v = v->child; v; v = v->next, i++) {
			if (!cJSON_IsObject(v))
				return err_set("'%s[%d]': expected an object, got %s", f->name, i,
					       jsonu_type_name(v));
			if (s_check_obj(v, f->sub) < 0)
				return err_prefix("'%s[%d]'", f->name, i);
		}
		return 0;
	}
	return err_set("'%s': bad field table", f->name);
}

static int s_check_obj(const cJSON *obj, const struct pfield *fields)
{
	const struct pfield *f;
	const cJSON *v;

	for (v = obj->child; v; v = v->next) {
		for (f = fields; f->name; f++)
			if (v->string && !strcmp(v->string, f->name))
				break;
		if (!f->name)
			return err_set("unknown field '%.64s'", v->string ? v->string : "");
		/* A duplicated key would let two readers see two values. */
		if (cJSON_GetObjectItemCaseSensitive(obj, f->name) != v)
			return err_set("duplicate field '%s'", f->name);
		if (s_check_field(v, f) < 0)
			return -1;
	}
	for (f = fields; f->name; f++)
		if (f->required && !cJSON_GetObjectItemCaseSensitive(obj, f->name))
			return err_set("missing field '%s'", f->name);
	return 0;
}

int proto_check(enum proto_cmd cmd, const cJSON *body)
{
	if (!proto_cmd_name(cmd))
		return err_set("unknown command %d", (int)cmd);
	if (!cJSON_IsObject(body))
		return err_set("%s: the body must be a JSON object", s_cmds[cmd].name);
	if (s_check_obj(body, s_cmds[cmd].fields) < 0)
		return err_prefix("%s", s_cmds[cmd].name);
	return 0;
}

void proto_msg_clear(struct proto_msg *m)
{
	cJSON_Delete(m->body);
	memset(m, 0, sizeof(*m));
}

static long long s_get_id(const cJSON *body, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);

	return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

int proto_decode(const void *const *data, const size_t *len, int n, int router,
		 long max_bytes, struct proto_msg *m)
{
	size_t total = 0;
	int i, want = router ? 4 : 3, first = router ? 1 : 0, cmd;
	const char *id;
	char name[16];

	memset(m, 0, sizeof(*m));
	if (max_bytes <= 0)
		max_bytes = PROTO_MAX_MSG;
	if (router && n >= 1) {
		m->identity_len = len[0] < PROTO_IDENTITY_MAX ? len[0] : PROTO_IDENTITY_MAX;
		memcpy(m->identity, data[0], m->identity_len);
	}
	for (i = 0; i < n; i++)
		total += len[i];
	if (total > (size_t)max_bytes)
		return err_set("message too large: %zu bytes (the limit is %ld)", total, max_bytes);
	if (n != want)
		return err_set("wrong frame count: %d (expected %d: protocol, command, body)",
			       n - first, want - first);
	id = data[first];
	if (len[first] != 4 || memcmp(id, "MDL", 3)) {
		return err_set("not a modula protocol message (first frame is not '%s')", PROTO_ID);
	}
	if (memcmp(id, PROTO_ID, 4))
		return err_set("unsupported protocol version '%.4s' (this side speaks '%s'): "
			       "upgrade the older of modulad and modula-worker", id, PROTO_ID);
	if (len[first + 1] == 0 || len[first + 1] >= sizeof(name))
		return err_set("unknown command (%zu bytes)", len[first + 1]);
	memcpy(name, data[first + 1], len[first + 1]);
	name[len[first + 1]] = '\0';
	if (strlen(name) != len[first + 1])
		return err_set("unknown command: the command frame holds a NUL byte");
	for (cmd = 1; cmd < NCMDS; cmd++)
		if (!strcmp(name, s_cmds[cmd].name))
			break;
	if (cmd == NCMDS) {
		for (i = 0; name[i]; i++)
			if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
				name[i] = '?';
		return err_set("unknown command '%s'", name);
	}
	m->cmd = (enum proto_cmd)cmd;
	m->body = jsonu_parse(data[first + 2], len[first + 2], s_cmds[cmd].name);
	if (!m->body)
		return -1;
	if (proto_check(m->cmd, m->body) < 0) {
		cJSON_Delete(m->body);
		m->body = NULL;
		return -1;
	}
	m->job = s_get_id(m->body, "job");
	m->attempt = s_get_id(m->body, "attempt");
	return 0;
}

/* Frames kept for decoding: one more than a ROUTER message has, so a
 * longer message is still seen as one with a wrong frame count; frames past
 * this are received into a scratch message and dropped. */
#define MAX_FRAMES 5

int proto_recv(void *sock, int router, long max_bytes, struct proto_msg *m)
{
	zmq_msg_t parts[MAX_FRAMES], scratch;
	const void *data[MAX_FRAMES] = { NULL };
	size_t len[MAX_FRAMES] = { 0 }, sz;
	int n = 0, more = 1, rc = 1, i;

	memset(m, 0, sizeof(*m));
	while (more) {
		zmq_msg_t *p = n < MAX_FRAMES ? &parts[n] : &scratch;

		zmq_msg_init(p);
		if (zmq_msg_recv(p, sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
			int e = errno;

			zmq_msg_close(p);
			if (e == EAGAIN && n == 0)
				return 0;
			rc = -2;
			err_set("cannot receive: %s", zmq_strerror(e));
			break;
		}
		sz = sizeof(more);
		if (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) < 0)
			more = 0;
		if (p == &scratch)
			zmq_msg_close(p);
		else
			n++;
	}
	for (i = 0; i < n; i++) {
		data[i] = zmq_msg_data(&parts[i]);
		len[i] = zmq_msg_size(&parts[i]);
	}
	if (rc > 0 && proto_decode(data, len, n, router, max_bytes, m) < 0)
		rc = -1;
	for (i = 0; i < n; i++)
		zmq_msg_close(&parts[i]);
	return rc;
}

int proto_send(void *sock, const void *identity, size_t identity_len,
	       enum proto_cmd cmd, const cJSON *body)
{
	char *text = NULL;
	const char *name = proto_cmd_name(cmd);
	int rc = -1;

	errno = EINVAL;   /* (not EAGAIN: the caller's "not connected yet") */
	if (!body && cmd != PROTO_HEARTBEAT && cmd != PROTO_DISCONNECT)
		return err_set("refusing to send %s without a body", name ? name : "an unknown command");
	if (body && proto_check(cmd, body) < 0)
		return err_prefix("refusing to send");
	text = body ? cJSON_PrintUnformatted(body) : NULL;
	if (body && !text)
		return err_set("cannot send %s: out of memory", name);
	/* the peer's libzmq would drop the connection, and the message with it */
	if (text && strlen(text) + 4 + strlen(name) > (size_t)PROTO_MAX_MSG) {
		err_set("refusing to send %s: %zu bytes, over the protocol's limit of %ld", name,
			strlen(text) + 4 + strlen(name), PROTO_MAX_MSG);
		free(text);
		errno = EMSGSIZE;
		return -1;
	}
	if (identity && zmq_send(sock, identity, identity_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
		goto err;
	if (zmq_send(sock, PROTO_ID, 4, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(sock, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
	    zmq_send(sock, text ? text : "{}", text ? strlen(text) : 2, ZMQ_DONTWAIT) < 0)
		goto err;
	rc = 0;
	goto out;
err:
	err_set("cannot send %s: %s", name, zmq_strerror(errno));
out:
	free(text);
	return rc;
}

int proto_send_error(void *sock, const void *identity, size_t identity_len,
		     const char *code, const char *text, long long job, long long attempt)
{
	cJSON *b = cJSON_CreateObject();
	int rc = -1;

	if (!b)
		return err_set("cannot send ERROR: out of memory");
	cJSON_AddStringToObject(b, "code", code);
	cJSON_AddStringToObject(b, "message", text && *text ? text : "refused");
	if (job > 0) {
		cJSON_AddNumberToObject(b, "job", (double)job);
		cJSON_AddNumberToObject(b, "attempt", (double)(attempt > 0 ? attempt : 1));
	}
	rc = proto_send(sock, identity, identity_len, PROTO_ERROR, b);
	cJSON_Delete(b);
	return rc;
}

int proto_sockopts(void *sock, long max_bytes)
{
	int64_t max = max_bytes > 0 ? max_bytes : PROTO_MAX_MSG;
	int zero = 0;

	if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof(max)) < 0 ||
	    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero)) < 0)
		return err_set("cannot set socket options: %s", zmq_strerror(errno));
	return 0;
}

static const char s_z85[] =
	"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int proto_z85_valid(const char *s)
{
	uint8_t bin[32];

	if (!s || strlen(s) != PROTO_Z85_LEN || strspn(s, s_z85) != PROTO_Z85_LEN)
		return 0;
	return zmq_z85_decode(bin, s) != NULL;
}

static int s_write_new(const char *path, const char *text, int mode)
{
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);

	if (fd < 0)
		return err_set("cannot create '%s': %s%s", path, strerror(errno),
			       errno == EEXIST ? " (remove it first to make a new key)" : "");
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0) {
		err_set("cannot write '%s': %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

int proto_keygen(const char *prefix)
{
	char pub[PROTO_Z85_LEN + 1], sec[PROTO_Z85_LEN + 1];
	char keypath[4096], pubpath[4096], text[128];

	if (snprintf(keypath, sizeof(keypath), "%s.key", prefix) >= (int)sizeof(keypath) ||
	    snprintf(pubpath, sizeof(pubpath), "%s.pub", prefix) >= (int)sizeof(pubpath))
		return err_set("key path too long: '%s'", prefix);
	if (zmq_curve_keypair(pub, sec) < 0)
		return err_set("cannot make a CURVE keypair: %s (is libzmq built with CURVE?)",
			       zmq_strerror(errno));
	snprintf(text, sizeof(text), "public %s\nsecret %s\n", pub, sec);
	if (s_write_new(keypath, text, 0600) < 0)
		return -1;
	snprintf(text, sizeof(text), "%s\n", pub);
	if (s_write_new(pubpath, text, 0644) < 0) {
		unlink(keypath);
		return -1;
	}
	return 0;
}

/* Copy the 40-character key at `s` (ended by a newline or NUL) to `out`. */
static int s_take_key(const char *s, char out[PROTO_Z85_LEN + 1])
{
	size_t n = strcspn(s, "\r\n");

	if (n != PROTO_Z85_LEN)
		return err_set("not a CURVE key (expected 40 z85 characters, got %zu)", n);
	memcpy(out, s, PROTO_Z85_LEN);
	out[PROTO_Z85_LEN] = '\0';
	if (!proto_z85_valid(out))
		return err_set("not a CURVE key (bad z85 text)");
	return 0;
}

int proto_keys_load(const char *path, char public_z85[PROTO_Z85_LEN + 1],
		    char secret_z85[PROTO_Z85_LEN + 1])
{
	char *text = NULL, *sec;
	size_t len;
	int rc = -1;

	if (fsx_read_all(path, &text, &len) < 0)
		return -1;
	sec = strstr(text, "\nsecret ");
	if (strncmp(text, "public ", 7) || !sec) {
		err_set("'%s' is not a key file (expected lines 'public KEY' and 'secret KEY', "
			"as written by keygen)", path);
		goto out;
	}
	if (s_take_key(text + 7, public_z85) < 0 || s_take_key(sec + 8, secret_z85) < 0) {
		err_prefix("'%s'", path);
		goto out;
	}
	rc = 0;
out:
	if (text)
		memset(text, 0, len);
	free(text);
	return rc;
}

int proto_key_public(const char *key_or_path, char public_z85[PROTO_Z85_LEN + 1])
{
	char *text = NULL;
	size_t len;
	int rc;

	/* A 40-character path can also be valid z85: an existing file wins. */
	if (proto_z85_valid(key_or_path) && access(key_or_path, F_OK) < 0) {
		memcpy(public_z85, key_or_path, PROTO_Z85_LEN + 1);
		return 0;
	}
	if (fsx_read_all(key_or_path, &text, &len) < 0)
		return err_prefix("'%s' is neither a z85 key nor a readable key file", key_or_path);
	rc = s_take_key(strncmp(text, "public ", 7) ? text : text + 7, public_z85);
	free(text);
	return rc < 0 ? err_prefix("'%s'", key_or_path) : 0;
}
