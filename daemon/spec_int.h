/* spec_int.h: what spec.c (parsing), spec_expand.c (grids, runs, DAGs) and
 * spec_stage.c (the stage job JSON) share. Private to daemon/spec*.c. */
#ifndef MODULA_DAEMON_SPEC_INT_H
#define MODULA_DAEMON_SPEC_INT_H

#include "daemon/spec.h"

/* Stages, as bits: which stage specs a hyper-parameter goes into. */
enum {
	SPEC_ST_UNIVERSAL = 1 << 0,
	SPEC_ST_DOMAIN = 1 << 1,
	SPEC_ST_ROUTER = 1 << 2,
	SPEC_ST_JOINT = 1 << 3,
	SPEC_ST_EVAL = 1 << 4,
};

enum spec_method_id {
	SPEC_BASE,
	SPEC_LORA,
	SPEC_MOLORA,
	SPEC_FLAN,
	SPEC_RES,
	SPEC_RES_NORES,
	SPEC_NMETHODS
};

enum spec_scope { SPEC_SCOPE_BASE, SPEC_SCOPE_ALL, SPEC_SCOPE_EXTEND };

extern const char *const spec_method_names[SPEC_NMETHODS];
extern const char *const spec_scope_names[3];

enum spec_ptype { SPEC_P_INT, SPEC_P_NUM, SPEC_P_STR, SPEC_P_STRLIST };

/* One hyper-parameter of the language (the table is in spec.c). */
struct spec_param {
	const char *name;
	enum spec_ptype type;
	const char *def;           /* default, as JSON text */
	double lo, hi;             /* range of numbers (inclusive) */
	const char *const *choices;/* allowed strings, NULL-terminated, or NULL */
	unsigned stages;           /* SPEC_ST_* it goes into */
	unsigned methods;          /* 1 << spec_method_id it applies to */
};

extern const struct spec_param spec_params[];

struct spec_method {
	enum spec_method_id id;
	enum spec_scope scope;
	char label[65];
	cJSON *params;             /* every applicable parameter: a value, or a grid (array) */
};

struct spec {
	char name[65];
	int priority;
	int backend;
	cJSON *base_model;         /* the stage specs' "base_model" */
	cJSON *pretrain;           /* the pretrain stage spec (embedded model), or NULL */
	cJSON *data;               /* domain -> data descriptor (universal included) */
	cJSON *domains;            /* array of names */
	cJSON *add_domains;        /* array of names (maybe empty) */
	long long *seeds;
	size_t nseeds;
	cJSON *eval;               /* eval settings, defaults filled in */
	struct spec_method *methods;
	size_t nmethods;
};

/* Is `item` a grid (a list of values) for parameter `p`? */
int spec_param_is_grid(const struct spec_param *p, const cJSON *item);

/* The plan under construction (spec_expand.c). */
struct spec_builder;

/* Add the job `kind` with stage spec `stage` (consumed) needing `deps`, for
 * the run being built; a job with the same content key is not added twice.
 * *idx gets its index. 0, or -1 via err_set(). */
int spec_builder_add(struct spec_builder *b, const char *kind, cJSON *stage, const size_t *deps, size_t ndeps,
		     size_t *idx);
/* The content key of job `idx`. */
const char *spec_builder_key(const struct spec_builder *b, size_t idx);

/* Build the DAG of one run (spec_stage.c): method `m` at the grid point
 * `params` (scalars only) with `seed`. 0, or -1 via err_set(). */
int spec_stage_run(struct spec_builder *b, const spec_t *s, const struct spec_method *m, const cJSON *params,
		   long long seed);

#endif
