/* zsend.c: the ZeroMQ client of the bad-input catalogue (tests/badinput/
 * run.sh). `badinput-zsend ENDPOINT FILE` connects a DEALER to the broker,
 * sends FILE as one message, one frame per line (an empty line is an empty
 * frame; no line may hold a newline), and prints the answer's frames after
 * the protocol id, space-separated, on one line ("ERROR {...}"). Exit
 * status 0 when an answer came within 5 s, 1 otherwise.
 * Not a worker: it never sends READY unless the file does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define ZSEND_MAX_FRAMES 64

static char *s_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
		buf[n] = '\0';
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

int main(int argc, char **argv)
{
	void *ctx, *d;
	char *buf, *frame[ZSEND_MAX_FRAMES];
	size_t len, flen[ZSEND_MAX_FRAMES];
	int n = 0, rc = 1, linger = 0;
	zmq_pollitem_t it;

	if (argc != 3) {
		fprintf(stderr, "usage: badinput-zsend ENDPOINT FILE\n");
		return 2;
	}
	if (!(buf = s_slurp(argv[2], &len))) {
		fprintf(stderr, "badinput-zsend: cannot read '%s'\n", argv[2]);
		return 2;
	}
	if (len && buf[len - 1] == '\n')
		buf[--len] = '\0';
	for (char *p = buf; n < ZSEND_MAX_FRAMES; ) {
		char *nl = memchr(p, '\n', len - (size_t)(p - buf));

		frame[n] = p;
		flen[n++] = nl ? (size_t)(nl - p) : len - (size_t)(p - buf);
		if (!nl)
			break;
		p = nl + 1;
	}
	ctx = zmq_ctx_new();
	d = zmq_socket(ctx, ZMQ_DEALER);
	zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(d, ZMQ_ROUTING_ID, "badinput", 8);
	if (zmq_connect(d, argv[1]) != 0) {
		fprintf(stderr, "badinput-zsend: cannot connect to '%s': %s\n", argv[1], zmq_strerror(zmq_errno()));
		goto out;
	}
	for (int i = 0; i < n; i++)
		zmq_send(d, frame[i], flen[i], i + 1 < n ? ZMQ_SNDMORE : 0);
	it = (zmq_pollitem_t){ d, 0, ZMQ_POLLIN, 0 };
	if (zmq_poll(&it, 1, 5000) == 1) {
		int more = 1, i = 0;

		while (more) {
			zmq_msg_t m;
			size_t sz = sizeof more;

			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, d, 0) < 0)
				break;
			zmq_getsockopt(d, ZMQ_RCVMORE, &more, &sz);
			if (i++ > 0) /* the protocol id is left out */
				printf("%.*s%c", (int)zmq_msg_size(&m), (const char *)zmq_msg_data(&m), more ? ' ' : '\n');
			zmq_msg_close(&m);
		}
		rc = 0;
	}
out:
	zmq_close(d);
	zmq_ctx_term(ctx);
	free(buf);
	return rc;
}
