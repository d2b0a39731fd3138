/* suite_expr.c: the suite's evaluation domains: math (integer arithmetic),
 * code (tiny Python programs that print one value), logic (boolean
 * expressions over T and F) and units (conversions, the held-back domain).
 * Each task is built together with its value; nothing here parses or runs
 * what it printed (the tests do that, independently, with Python). */
#include "worker/suite_gen.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static long s_apply(long a, char op, long b)
{
	return op == '+' ? a + b : op == '-' ? a - b : a * b;
}

static char s_pick(struct suite_rng *r, const char *set)
{
	return set[suite_rng_below(r, (uint32_t)strlen(set))];
}

static long s_num(struct suite_rng *r, long below)
{
	return (long)suite_rng_below(r, (uint32_t)below);
}

/* Level 1: a+b, a-b under 100, a*b of digits. Level 2: a+b, a-b under
 * 1000, two digits times one. Level 3: three numbers under 20 and two
 * operators, with Python's precedence, sometimes with parentheses. */
void suite_gen_math(struct suite_rng *r, int level, char *task, char *answer)
{
	long a, b, c, v;
	char o1 = s_pick(r, "+-*"), o2;

	if (level < 3) {
		a = s_num(r, o1 != '*' ? (level == 1 ? 100 : 1000) : (level == 1 ? 10 : 100));
		b = s_num(r, o1 != '*' ? (level == 1 ? 100 : 1000) : 10);
		sprintf(task, "%ld%c%ld", a, o1, b);
		sprintf(answer, "%ld", s_apply(a, o1, b));
		return;
	}
	a = s_num(r, 20);
	b = s_num(r, 20);
	c = s_num(r, 20);
	o2 = s_pick(r, "+-*");
	if (suite_rng_below(r, 2)) {
		sprintf(task, "(%ld%c%ld)%c%ld", a, o1, b, o2, c);
		v = s_apply(s_apply(a, o1, b), o2, c);
	} else {
		sprintf(task, "%ld%c%ld%c%ld", a, o1, b, o2, c);
		v = o2 == '*' && o1 != '*' ? s_apply(a, o1, s_apply(b, o2, c))
		                          : s_apply(s_apply(a, o1, b), o2, c);
	}
	sprintf(answer, "%ld", v);
}

/* String programs over one variable holding a word: level 2 has the plain
 * operations, level 3 adds slices, counts and negative indexes. */
static void s_code_str(struct suite_rng *r, int level, char s, char *task, char *answer)
{
	char w[16];
	size_t len, i, j;
	int n;

	suite_word(r, 3, 5, w);
	len = strlen(w);
	i = suite_rng_below(r, (uint32_t)len);
	switch (level < 3 ? suite_rng_below(r, 5) : 5 + suite_rng_below(r, 4)) {
	case 0:
		sprintf(task, "%c='%s';print(%c[::-1])", s, w, s);
		for (j = 0; j < len; j++)
			answer[j] = w[len - 1 - j];
		answer[len] = '\0';
		break;
	case 1:
		sprintf(task, "%c='%s';print(len(%c))", s, w, s);
		sprintf(answer, "%zu", len);
		break;
	case 2:
		sprintf(task, "%c='%s';print(%c[%zu])", s, w, s, i);
		sprintf(answer, "%c", w[i]);
		break;
	case 3:
		sprintf(task, "%c='%s';print(%c*2)", s, w, s);
		sprintf(answer, "%s%s", w, w);
		break;
	case 4:
		sprintf(task, "%c='%s';print(%c.upper())", s, w, s);
		for (j = 0; j <= len; j++)
			answer[j] = (char)toupper((unsigned char)w[j]);
		break;
	case 5:
		sprintf(task, "%c='%s';print(%c[1:]+%c[0])", s, w, s, s);
		sprintf(answer, "%s%c", w + 1, w[0]);
		break;
	case 6:
		sprintf(task, "%c='%s';print(%c[:2]+%c[-1])", s, w, s, s);
		sprintf(answer, "%.2s%c", w, w[len - 1]);
		break;
	case 7:
		for (j = 0, n = 0; j < len; j++)
			n += w[j] == w[i];
		sprintf(task, "%c='%s';print(%c.count('%c'))", s, w, s, w[i]);
		sprintf(answer, "%d", n);
		break;
	default:
		sprintf(task, "%c='%s';print(%c[-%zu])", s, w, s, i + 1);
		sprintf(answer, "%c", w[len - 1 - i]);
		break;
	}
}

/* Level 1: one assignment and one operation on digits. Level 2 adds a
 * second assignment and string programs; level 3 adds three-step
 * programs, conditional expressions and harder string programs. Variable
 * names are drawn so the model cannot rely on one name. */
void suite_gen_code(struct suite_rng *r, int level, char *task, char *answer)
{
	static const char names[] = "abcmnpqxyz";
	static const int templates[SUITE_LEVEL_MAX] = { 2, 4, 7 };
	long n = level == 1 ? 10 : 20, a = s_num(r, n), b = s_num(r, n), c = s_num(r, 10), d = s_num(r, 10), u, v;
	char x = s_pick(r, names), y = s_pick(r, names), o1 = s_pick(r, "+-*"), o2 = s_pick(r, "+-*");

	while (y == x)
		y = s_pick(r, names);
	switch (suite_rng_below(r, (uint32_t)templates[level - 1])) {
	case 0:
		sprintf(task, "%c=%ld;print(%c%c%ld)", x, a, x, o1, b);
		v = s_apply(a, o1, b);
		break;
	case 1:
		sprintf(task, "%c=%ld;%c=%ld;print(%c%c%c)", x, a, y, b, x, o1, y);
		v = s_apply(a, o1, b);
		break;
	case 2:
		sprintf(task, "%c=%ld;%c=%c%c%ld;print(%c%c%ld)", x, a, y, x, o1, c, y, o2, d);
		v = s_apply(s_apply(a, o1, c), o2, d);
		break;
	case 3:
	case 6:
		s_code_str(r, level, x, task, answer);
		return;
	case 4:
		o2 = s_pick(r, "+-");
		sprintf(task, "%c=%ld;%c=%c%c%ld;%c=%c*%ld;print(%c%c%c)", x, a, y, x, o1, c, x, y, d, x, o2, y);
		u = s_apply(a, o1, c);
		v = s_apply(u * d, o2, u);
		break;
	default:
		sprintf(task, "%c=%ld;print(%c%c%ld if %c>%ld else %c%c%ld)", x, a, x, o1, c, x, b, x, o2, d);
		v = a > b ? s_apply(a, o1, c) : s_apply(a, o2, d);
		break;
	}
	sprintf(answer, "%ld", v);
}

/* At most 5 atoms: "not (" + 5 * "not T" + 4 * " and " + parentheses
 * stays under 100 bytes. */
struct s_bexpr {
	char text[SUITE_GEN_BUF];
	int value;
	int binary;  /* an and/or at the top: parenthesised when nested */
};

static void s_bexpr_cat(char *dst, const struct s_bexpr *e)
{
	strcat(dst, e->binary ? "(" : "");
	strcat(dst, e->text);
	strcat(dst, e->binary ? ")" : "");
}

/* A random expression over `atoms` atoms; `not` wraps an atom one time in
 * four and, when `not_binary`, a compound one time in six. */
static void s_bexpr(struct suite_rng *r, int atoms, int not_binary, struct s_bexpr *e)
{
	struct s_bexpr lhs, rhs;
	int k, is_and;

	if (atoms == 1) {
		e->value = (int)suite_rng_below(r, 2);
		e->binary = 0;
		sprintf(e->text, "%c", e->value ? 'T' : 'F');
		if (suite_rng_below(r, 4) == 0) {
			e->value = !e->value;
			sprintf(e->text, "not %c", e->value ? 'F' : 'T');
		}
		return;
	}
	k = 1 + (int)suite_rng_below(r, (uint32_t)(atoms - 1));
	s_bexpr(r, k, not_binary, &lhs);
	s_bexpr(r, atoms - k, not_binary, &rhs);
	is_and = (int)suite_rng_below(r, 2);
	e->value = is_and ? lhs.value && rhs.value : lhs.value || rhs.value;
	e->binary = 1;
	e->text[0] = '\0';
	if (not_binary && suite_rng_below(r, 6) == 0) {
		strcat(e->text, "not ");
		e->value = !e->value;
		e->binary = 0;
	}
	strcat(e->text, e->binary ? "" : "(");
	s_bexpr_cat(e->text, &lhs);
	strcat(e->text, is_and ? " and " : " or ");
	s_bexpr_cat(e->text, &rhs);
	strcat(e->text, e->binary ? "" : ")");
}

/* Level 1: 2-4 atoms (fewer would leave too few distinct prompts); level
 * 2: 3-4 atoms and negated compounds; level 3: 4-5 atoms and negated
 * compounds. */
void suite_gen_logic(struct suite_rng *r, int level, char *task, char *answer)
{
	struct s_bexpr e;
	int atoms = level == 1 ? 2 + (int)suite_rng_below(r, 3) : level + 1 + (int)suite_rng_below(r, 2);

	s_bexpr(r, atoms, level > 1, &e);
	strcpy(task, e.text);
	strcpy(answer, e.value ? "T" : "F");
}

/* Units, each a whole multiple of the next: the held-back domain. */
static const struct s_unit {
	const char *big, *small;
	long factor;
} s_units[] = {
	{ "km", "m", 1000 }, { "m", "cm", 100 }, { "cm", "mm", 10 }, { "kg", "g", 1000 },
	{ "g", "mg", 1000 }, { "h", "min", 60 }, { "min", "s", 60 }, { "d", "h", 24 },
	{ "wk", "d", 7 }, { "yr", "mo", 12 }, { "ft", "inch", 12 }, { "yd", "ft", 3 },
	{ "lb", "oz", 16 }, { "gal", "qt", 4 }, { "qt", "pt", 2 }, { "L", "mL", 1000 },
};

#define S_N_UNITS (sizeof s_units / sizeof s_units[0])

/* Level 1: "A big in small" (A < 1000). Level 2: the same, or the way back
 * ("A*f small in big"). Level 3: "A big B small in small", or two steps
 * ("3 km in cm") where the table chains (A < 100). */
void suite_gen_units(struct suite_rng *r, int level, char *task, char *answer)
{
	const struct s_unit *u = &s_units[suite_rng_below(r, S_N_UNITS)], *next = NULL;
	long a = 1 + s_num(r, level < 3 ? 999 : 99);
	size_t i;

	if (level == 1 || (level == 2 && suite_rng_below(r, 2))) {
		sprintf(task, "%ld %s in %s", a, u->big, u->small);
		sprintf(answer, "%ld", a * u->factor);
		return;
	}
	if (level == 2) {
		sprintf(task, "%ld %s in %s", a * u->factor, u->small, u->big);
		sprintf(answer, "%ld", a);
		return;
	}
	for (i = 0; i < S_N_UNITS; i++)
		if (!strcmp(s_units[i].big, u->small))
			next = &s_units[i];
	if (next && suite_rng_below(r, 2)) {
		sprintf(task, "%ld %s in %s", a, u->big, next->small);
		sprintf(answer, "%ld", a * u->factor * next->factor);
		return;
	}
	i = 1 + suite_rng_below(r, (uint32_t)(u->factor - 1));
	sprintf(task, "%ld %s %zu %s in %s", a, u->big, i, u->small, u->small);
	sprintf(answer, "%ld", a * u->factor + (long)i);
}
