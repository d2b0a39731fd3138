/* table.c: the modula command's printing helpers: aligned text tables,
 * human numbers and times, JSON out, and small readers of API answers.
 * Not here: what a command prints (each command decides its columns).
 */
#include "config.h"
#include "cli/cli_int.h"
#include "jsonu.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cli_table {
	int ncols;
	char **cells;
	size_t n, cap;
};

cli_table_t *cli_table_new(int ncols)
{
	cli_table_t *t = calloc(1, sizeof *t);

	if (t)
		t->ncols = ncols;
	return t;
}

void cli_table_cell(cli_table_t *t, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (t->n == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 64;
		char **nc = realloc(t->cells, ncap * sizeof *nc);
		if (!nc)
			return;
		t->cells = nc;
		t->cap = ncap;
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	t->cells[t->n] = strdup(buf);
	if (t->cells[t->n])
		t->n++;
}

/* Display width of UTF-8 text (continuation bytes do not count). */
static size_t s_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

void cli_table_print(cli_table_t *t, FILE *f)
{
	size_t *w = calloc((size_t)t->ncols, sizeof *w);

	if (!w)
		return;
	for (size_t i = 0; i < t->n; i++) {
		size_t k = s_width(t->cells[i]);
		if (k > w[i % (size_t)t->ncols])
			w[i % (size_t)t->ncols] = k;
	}
	for (size_t i = 0; i < t->n; i++) {
		size_t col = i % (size_t)t->ncols;
		int last = col + 1 == (size_t)t->ncols || i + 1 == t->n;
		fputs(t->cells[i], f);
		if (last)
			fputc('\n', f);
		else
			fprintf(f, "%*s", (int)(w[col] - s_width(t->cells[i]) + 2), "");
	}
	free(w);
}

void cli_table_destroy(cli_table_t **tp)
{
	cli_table_t *t = tp ? *tp : NULL;

	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
	*tp = NULL;
}

const char *cli_fmt_count(double v, char *buf)
{
	static const char units[] = " kMGTPE";
	int u = 0;

	while (v >= 1000 && u < 6) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, 32, "%.0f", v);
	else
		snprintf(buf, 32, "%.3g%c", v, units[u]);
	return buf;
}

const char *cli_fmt_secs(double s, char *buf)
{
	long t = s < 0 ? 0 : (long)(s + 0.5);

	if (t >= 3600)
		snprintf(buf, 32, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, 32, "%ld:%02ld", t / 60, t % 60);
	return buf;
}

const char *cli_fmt_time(double ms, char *buf)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0 || !localtime_r(&t, &tm))
		snprintf(buf, 32, "-");
	else
		strftime(buf, 32, "%Y-%m-%d %H:%M:%S", &tm);
	return buf;
}

int cli_print_json(const struct cli *c, const cJSON *o)
{
	char *s = cJSON_Print(o);

	fprintf(c->out, "%s\n", s ? s : "null");
	free(s);
	return CLI_OK;
}

double cli_num(const cJSON *o, const char *key, double def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : def;
}

const char *cli_str(const cJSON *o, const char *key, const char *def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : def;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "modula %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see modula --help)\n");
	return CLI_USAGE;
}

int cli_parse_id(const char *s, char prefix, int64_t *out)
{
	char *end;
	long long v;

	if (prefix && s[0] == prefix)
		s++;
	if (*s < '1' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}
