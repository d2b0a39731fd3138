/* spec.h: the experiment spec language (docs/specs.md): parse and validate
 * a spec, expand it into runs and each run into its job DAG, with a content
 * key per job so that equal stages are trained once and shared.
 *
 *   spec JSON --spec_parse--> spec_t (checked; every error with its path)
 *   spec_t --spec_expand--> spec_plan_t: runs (method x grid point x seed)
 *                            and jobs (deduplicated by content key, deps as
 *                            indices, each job owned by the first run using it)
 *
 * A run's DAG (the stage job JSON of each kind is written by spec_stage.c,
 * the one place that maps a spec onto engine jobs):
 *   base                [pretrain] -> eval
 *   lora, molora        [pretrain] -> joint -> eval
 *   modula-*            [pretrain] -> universal -> domain (one per domain,
 *                       parallel) -> router -> eval
 *   modula-* "extend"   ... -> router (old domains) -> domain (new ones)
 *                       -> router (all, started from the old router) -> eval
 * (pretrain only for the embedded base model.)
 *
 * Content key = sha256 of the canonical JSON (sorted keys) of the job's kind
 * and stage spec, which names its inputs by hash (base model and dataset
 * artifacts, suite settings, parents' content keys), its settings and seed.
 *
 * Not here: the registry and HTTP (spec_api.c), running jobs (queue.c).
 */
#ifndef MODULA_DAEMON_SPEC_H
#define MODULA_DAEMON_SPEC_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* Every error of a spec, each "path: message". */
typedef struct spec_errors {
	char **msg;
	size_t n;
} spec_errors_t;

/* Record one error (printf-style). Returns -1. */
int spec_errors_add(spec_errors_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void spec_errors_free(spec_errors_t *e);

/* Registry look-ups the spec needs (artifact sha256 of named models and
 * datasets). Each returns 1 and fills sha (65 bytes) when found, 0 when
 * not, -1 via err_set() on errors. NULL functions mean "never found". */
struct spec_lookup {
	int (*model)(void *arg, const char *name, char sha[65]);
	int (*dataset)(void *arg, const char *name, const char *split, char sha[65]);
	void *arg;
};

typedef struct spec spec_t;

/* Parse and check `json` against the spec language. Every problem found is
 * added to *errs (they are all reported, not only the first); returns the
 * spec when there were none, else NULL. */
spec_t *spec_parse(const cJSON *json, const struct spec_lookup *lk, spec_errors_t *errs);
void spec_destroy(spec_t **s);

const char *spec_name(const spec_t *s);

/* ---- the expansion ------------------------------------------------------ */

#define SPEC_MAX_RUNS 10000
#define SPEC_MAX_DOMAINS 64
#define SPEC_MAX_JOBS 100000

struct spec_job {
	char kind[16];            /* pretrain, universal, domain, router, joint, eval */
	char key[65];             /* content key (hex) */
	cJSON *spec;              /* the stage job JSON (docs/specs.md) */
	size_t *deps;             /* indices of jobs (always smaller than this one's) */
	size_t ndeps;
	size_t run;               /* the run that owns it (first to need it) */
};

struct spec_run {
	char method[24];          /* base, lora, molora, modula-flan, modula-res, modula-res-nores */
	long long seed;
	cJSON *params;            /* {"label", "scope", effective hyper-parameters} */
	size_t *jobs;             /* every job of its DAG, in dependency order */
	size_t njobs;
};

typedef struct spec_plan {
	char name[65];
	int priority;
	int backend;              /* 1 cpu, 2 cuda (QUEUE_BACKEND_*) */
	struct spec_run *runs;
	size_t nruns;
	struct spec_job *jobs;
	size_t njobs;
} spec_plan_t;

/* Expand a checked spec. NULL via err_set() (too many runs, out of memory). */
spec_plan_t *spec_expand(const spec_t *s);
void spec_plan_destroy(spec_plan_t **p);

/* The canonical JSON text of `item` (object keys sorted, numbers in one
 * form), and the content key: sha256 in hex of "modula-job-v1\n" KIND "\n"
 * "numerics N\n" CANONICAL; N is the engine's numerics version (the jobs
 * use MODULA_ENGINE_NUMERICS, version.h). 0 or -1 via err_set(). */
char *spec_canonical(const cJSON *item);
int spec_hash(const char *kind, const cJSON *stage, int numerics, char hex[65]);

#endif
