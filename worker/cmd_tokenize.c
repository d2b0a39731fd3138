/* cmd_tokenize.c: `modula-engine tokenize --tokenizer FILE|bytes`.
 *
 * Reads one JSON string per line on stdin and prints the ids of each as
 * one comma-separated line (an empty line for an empty encoding). A line
 * that is not one JSON string, or that does not encode, gets a message on
 * stderr naming its line number and an empty line on stdout, so output
 * lines stay aligned with input lines; the exit status is then 1.
 * The JSON string decoder is our own so that "\u0000" survives; it is not
 * a JSON parser for anything but one string.
 */
#include "config.h"
#include "worker/cmd_tokenize.h"
#include "worker/tokenizer.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_usage[] =
	"usage: modula-engine tokenize --tokenizer FILE|bytes\n"
	"\n"
	"Reads one JSON string per line on stdin, prints the token ids of each as\n"
	"one comma-separated line. FILE is a Hugging Face tokenizer.json; 'bytes'\n"
	"is the embedded byte-level tokenizer.\n";

static int s_hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v |= (unsigned)((c | 0x20) - 'a' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t s_put_utf8(unsigned cp, char *o)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Decode the JSON string that is the whole of line[0..len) into out (at
 * least len bytes). 0, or -1 via err_set(). */
static int s_json_string(const char *line, size_t len, char *out, size_t *olen)
{
	size_t i = 0, k = 0;

	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
		i++;
	if (i == len || line[i++] != '"')
		return err_set("expected a JSON string");
	for (;;) {
		unsigned char c;
		if (i == len)
			return err_set("unterminated JSON string");
		c = (unsigned char)line[i++];
		if (c == '"')
			break;
		if (c < 0x20)
			return err_set("raw control byte 0x%02x in a JSON string at byte %zu", c, i - 1);
		if (c != '\\') {
			out[k++] = (char)c;
			continue;
		}
		if (i == len)
			return err_set("unterminated escape");
		c = (unsigned char)line[i++];
		switch (c) {
		case '"': case '\\': case '/': out[k++] = (char)c; break;
		case 'b': out[k++] = '\b'; break;
		case 'f': out[k++] = '\f'; break;
		case 'n': out[k++] = '\n'; break;
		case 'r': out[k++] = '\r'; break;
		case 't': out[k++] = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (i + 4 > len || s_hex4(line + i, &cp) < 0)
				return err_set("bad \\u escape at byte %zu", i - 2);
			i += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return err_set("lone low surrogate \\u%04x at byte %zu", cp, i - 6);
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (i + 6 > len || line[i] != '\\' || line[i + 1] != 'u' || s_hex4(line + i + 2, &lo) < 0 ||
				    lo < 0xdc00 || lo > 0xdfff)
					return err_set("lone high surrogate \\u%04x at byte %zu", cp, i - 6);
				i += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			k += s_put_utf8(cp, out + k);
			break;
		}
		default:
			return err_set("bad escape '\\%c' at byte %zu", c, i - 2);
		}
	}
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
		i++;
	if (i != len)
		return err_set("bytes after the JSON string at byte %zu", i);
	*olen = k;
	return 0;
}

static int s_line(tokenizer_t *tok, const char *line, size_t len, char *buf)
{
	int32_t *ids = NULL;
	size_t n = 0, tl = 0;

	if (s_json_string(line, len, buf, &tl) < 0 || tokenizer_encode(tok, buf, tl, &ids, &n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		printf(i ? ",%d" : "%d", (int)ids[i]);
	free(ids);
	return 0;
}

int cmd_tokenize(int argc, char **argv)
{
	const char *spec = NULL;
	tokenizer_t *tok;
	char *line = NULL, *buf = NULL;
	size_t cap = 0, bufcap = 0;
	ssize_t len;
	long lineno = 0, bad = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(s_usage, stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
			spec = argv[++i];
			continue;
		}
		fprintf(stderr, "modula-engine tokenize: unexpected argument '%s'\n%s", argv[i], s_usage);
		return 2;
	}
	if (!spec) {
		fprintf(stderr, "modula-engine tokenize: --tokenizer is required\n%s", s_usage);
		return 2;
	}
	if (!(tok = tokenizer_open(spec))) {
		fprintf(stderr, "modula-engine tokenize: %s\n", err_msg());
		return 1;
	}
	while ((len = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		if (len && line[len - 1] == '\n')
			len--;
		if ((size_t)len + 1 > bufcap) {
			char *nb = realloc(buf, (size_t)len + 1);
			if (!nb) {
				fprintf(stderr, "modula-engine tokenize: out of memory at line %ld\n", lineno);
				bad++;
				break;
			}
			buf = nb;
			bufcap = (size_t)len + 1;
		}
		if (s_line(tok, line, (size_t)len, buf) < 0) {
			fprintf(stderr, "modula-engine tokenize: line %ld: %s\n", lineno, err_msg());
			bad++;
		}
		putchar('\n');
	}
	free(line);
	free(buf);
	tokenizer_destroy(&tok);
	if (fflush(stdout) != 0) {
		perror("modula-engine tokenize: writing the ids");
		return 1;
	}
	return bad ? 1 : 0;
}
