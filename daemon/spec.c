/* spec.c: reading and checking an experiment spec (docs/specs.md) into a
 * spec_t. Every problem is reported with its path in the spec
 * ("methods[2].rank: expected an integer, got a string") and checking goes
 * on after one, so a user sees all of them at once.
 *
 * Not here: grids, runs and jobs (spec_expand.c), the stage job JSON
 * (spec_stage.c), the registry (spec_api.c supplies the look-ups).
 */
#include "config.h"
#include "daemon/spec_int.h"
#include "err.h"
#include "jsonu.h"
#include "sha256.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_PATH_MAX 256

const char *const spec_method_names[SPEC_NMETHODS] = {
	"base", "lora", "molora", "modula-flan", "modula-res", "modula-res-nores",
};
const char *const spec_scope_names[3] = { "base", "all", "extend" };

#define M(x) (1u << (x))
#define M_TRAINED (M(SPEC_LORA) | M(SPEC_MOLORA) | M_MODULA)
#define M_MODULA (M(SPEC_FLAN) | M(SPEC_RES) | M(SPEC_RES_NORES))
#define ST_UDRJ (SPEC_ST_UNIVERSAL | SPEC_ST_DOMAIN | SPEC_ST_ROUTER | SPEC_ST_JOINT)
#define ST_UDJ (SPEC_ST_UNIVERSAL | SPEC_ST_DOMAIN | SPEC_ST_JOINT)

static const char *const s_activations[] = { "leaky_relu", "identity", NULL };
static const char *const s_targets[] = { "q", "k", "v", "o", "gate", "up", "down", NULL };

/* The hyper-parameters (docs/specs.md has the same table, with meanings). */
const struct spec_param spec_params[] = {
	{ "steps", SPEC_P_INT, "200", 1, 1e7, NULL, ST_UDJ, M_TRAINED },
	{ "router_steps", SPEC_P_INT, "100", 1, 1e7, NULL, SPEC_ST_ROUTER, M_MODULA },
	{ "batch", SPEC_P_INT, "16", 1, 65536, NULL, ST_UDRJ, M_TRAINED },
	{ "seq_len", SPEC_P_INT, "64", 8, 65536, NULL, ST_UDRJ | SPEC_ST_EVAL, M_TRAINED | M(SPEC_BASE) },
	{ "lr", SPEC_P_NUM, "0.0002", 1e-12, 10, NULL, ST_UDJ, M_TRAINED },
	{ "router_lr", SPEC_P_NUM, "0.0002", 1e-12, 10, NULL, SPEC_ST_ROUTER, M_MODULA },
	{ "rank", SPEC_P_INT, "8", 1, 4096, NULL, SPEC_ST_JOINT, M(SPEC_LORA) | M(SPEC_MOLORA) },
	{ "universal_rank", SPEC_P_INT, "16", 1, 4096, NULL, SPEC_ST_UNIVERSAL, M_MODULA },
	{ "domain_rank", SPEC_P_INT, "8", 1, 4096, NULL, SPEC_ST_DOMAIN, M_MODULA },
	{ "alpha", SPEC_P_NUM, "16", 1e-6, 1e6, NULL, ST_UDJ, M_TRAINED },
	{ "experts", SPEC_P_INT, "0", 0, 256, NULL, SPEC_ST_JOINT, M(SPEC_MOLORA) },
	{ "top_k", SPEC_P_INT, "0", 0, 256, NULL, SPEC_ST_JOINT | SPEC_ST_EVAL, M(SPEC_MOLORA) },
	{ "load_balance", SPEC_P_NUM, "0.01", 0, 100, NULL, SPEC_ST_JOINT, M(SPEC_MOLORA) },
	{ "activation", SPEC_P_STR, "\"leaky_relu\"", 0, 0, s_activations,
	  SPEC_ST_DOMAIN | SPEC_ST_ROUTER | SPEC_ST_EVAL, M(SPEC_RES) | M(SPEC_RES_NORES) },
	{ "targets", SPEC_P_STRLIST, "[\"q\",\"k\",\"v\",\"o\",\"gate\",\"up\",\"down\"]", 0, 0, s_targets,
	  ST_UDRJ | SPEC_ST_EVAL, M_TRAINED },
	{ "weight_decay", SPEC_P_NUM, "0", 0, 10, NULL, ST_UDRJ, M_TRAINED },
	{ "warmup", SPEC_P_INT, "0", 0, 1e7, NULL, ST_UDRJ, M_TRAINED },
	{ "grad_clip", SPEC_P_NUM, "1", 0, 1e6, NULL, ST_UDRJ, M_TRAINED },
	{ NULL, 0, NULL, 0, 0, NULL, 0, 0 },
};

/* ---- errors -------------------------------------------------------------- */

int spec_errors_add(spec_errors_t *e, const char *fmt, ...)
{
	char buf[ERR_MSG_MAX], **m;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (!(m = realloc(e->msg, (e->n + 1) * sizeof *m)))
		return -1;
	e->msg = m;
	if ((e->msg[e->n] = strdup(buf)))
		e->n++;
	return -1;
}

void spec_errors_free(spec_errors_t *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->msg[i]);
	free(e->msg);
	e->msg = NULL;
	e->n = 0;
}

/* The parse state: the spec being filled, the errors, the look-ups. */
struct ctx {
	spec_t *s;
	spec_errors_t *errs;
	const struct spec_lookup *lk;
};

/* Report "path: <err_msg() without its leading 'key': >" for a jsonu
 * getter that failed on member `key` of the object at `path`. */
static void s_jsonu_err(struct ctx *c, const char *path, const char *key)
{
	const char *m = err_msg();
	size_t k = strlen(key);

	if (m[0] == '\'' && strncmp(m + 1, key, k) == 0 && strncmp(m + 1 + k, "': ", 3) == 0)
		m += k + 4;
	spec_errors_add(c->errs, "%s%s%s: %s", path, path[0] ? "." : "", key, m);
}

static void s_path(char *out, const char *path, const char *key)
{
	snprintf(out, SPEC_PATH_MAX, "%s%s%s", path, path[0] ? "." : "", key);
}

/* Unknown members of `o` (at `path`) are errors; `known` names them all. */
static void s_check_keys(struct ctx *c, const cJSON *o, const char *path, const char *const *known)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, o) {
		const char *const *k;
		char p[SPEC_PATH_MAX], list[512] = "";
		size_t n = 0;
		for (k = known; *k && strcmp(*k, it->string) != 0; k++)
			;
		if (*k)
			continue;
		for (k = known; *k; k++)
			n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%s%s",
					      k == known ? "" : ", ", *k);
		s_path(p, path, it->string);
		spec_errors_add(c->errs, "%s: unknown field (expected one of: %s)", p, list);
	}
}

/* A name made of [a-z0-9_-], 1 to 32 bytes. */
static int s_is_ident(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 32)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
			return 0;
	return 1;
}

/* An integer member in [lo, hi]; `def` when absent. 0, or -1 reported. */
static int s_int(struct ctx *c, const cJSON *o, const char *path, const char *key, long long def, long long lo,
		 long long hi, long long *out)
{
	if (jsonu_opt_int(o, key, def, out) < 0) {
		s_jsonu_err(c, path, key);
		return -1;
	}
	if (*out < lo || *out > hi) {
		char p[SPEC_PATH_MAX];
		s_path(p, path, key);
		return spec_errors_add(c->errs, "%s: expected %lld to %lld, got %lld", p, lo, hi, *out);
	}
	return 0;
}

static int s_bool(struct ctx *c, const cJSON *o, const char *path, const char *key, int def, int *out)
{
	if (jsonu_opt_bool(o, key, def, out) < 0) {
		s_jsonu_err(c, path, key);
		return -1;
	}
	return 0;
}

/* ---- hyper-parameters ------------------------------------------------------ */

static const struct spec_param *s_param(const char *name)
{
	for (const struct spec_param *p = spec_params; p->name; p++)
		if (strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

int spec_param_is_grid(const struct spec_param *p, const cJSON *item)
{
	if (!cJSON_IsArray(item))
		return 0;
	return p->type != SPEC_P_STRLIST || (item->child && cJSON_IsArray(item->child));
}

static int s_choice_ok(const struct spec_param *p, const char *v)
{
	for (const char *const *c = p->choices; c && *c; c++)
		if (strcmp(*c, v) == 0)
			return 1;
	return !p->choices;
}

/* One value of parameter `p` (not a grid). 0, or -1 reported at `path`. */
static int s_param_value(struct ctx *c, const struct spec_param *p, const cJSON *v, const char *path)
{
	const cJSON *it;
	size_t i = 0;

	switch (p->type) {
	case SPEC_P_INT:
		if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
			return spec_errors_add(c->errs, "%s: expected an integer, got %s", path,
					       cJSON_IsNumber(v) ? "a fraction" : jsonu_type_name(v));
		/* fall through */
	case SPEC_P_NUM:
		if (!cJSON_IsNumber(v))
			return spec_errors_add(c->errs, "%s: expected a number, got %s", path, jsonu_type_name(v));
		if (!(v->valuedouble >= p->lo && v->valuedouble <= p->hi))
			return spec_errors_add(c->errs, "%s: expected %g to %g, got %g", path, p->lo, p->hi,
					       v->valuedouble);
		return 0;
	case SPEC_P_STR:
		if (!cJSON_IsString(v))
			return spec_errors_add(c->errs, "%s: expected a string, got %s", path, jsonu_type_name(v));
		if (!s_choice_ok(p, v->valuestring))
			return spec_errors_add(c->errs, "%s: unknown value '%.60s'", path, v->valuestring);
		return 0;
	case SPEC_P_STRLIST:
		if (!cJSON_IsArray(v) || !v->child)
			return spec_errors_add(c->errs, "%s: expected a non-empty list of strings, got %s", path,
					       cJSON_IsArray(v) ? "an empty list" : jsonu_type_name(v));
		cJSON_ArrayForEach(it, v) {
			if (!cJSON_IsString(it))
				spec_errors_add(c->errs, "%s[%zu]: expected a string, got %s", path, i,
						jsonu_type_name(it));
			else if (!s_choice_ok(p, it->valuestring))
				spec_errors_add(c->errs, "%s[%zu]: unknown value '%.60s'", path, i, it->valuestring);
			i++;
		}
		return 0;
	}
	return 0;
}

/* A value or a grid of parameter `p`; 0, or -1 reported. */
static int s_param_check(struct ctx *c, const struct spec_param *p, const cJSON *v, const char *path)
{
	const cJSON *it;
	char ip[SPEC_PATH_MAX + 24];
	size_t i = 0, n0 = c->errs->n;

	if (!spec_param_is_grid(p, v))
		return s_param_value(c, p, v, path);
	if (!v->child)
		return spec_errors_add(c->errs, "%s: an empty list (a grid needs at least one value)", path);
	cJSON_ArrayForEach(it, v) {
		snprintf(ip, sizeof ip, "%s[%zu]", path, i++);
		s_param_value(c, p, it, ip);
	}
	return c->errs->n == n0 ? 0 : -1;
}

/* The members of `o` that are parameters (skipping `reserved`) are checked
 * and, when they apply to `method` (or to any method when method < 0),
 * copied into `into`. A parameter given for one method that does not apply
 * to it is an error; in the shared "params" it is simply not used. */
static void s_params(struct ctx *c, const cJSON *o, const char *path, const char *const *reserved, int method,
		     cJSON *into)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, o) {
		const struct spec_param *p;
		const char *const *r;
		char pp[SPEC_PATH_MAX];
		for (r = reserved; r && *r && strcmp(*r, it->string) != 0; r++)
			;
		if (r && *r)
			continue;
		s_path(pp, path, it->string);
		if (!(p = s_param(it->string))) {
			spec_errors_add(c->errs, "%s: unknown %s (see docs/specs.md for the parameters)", pp,
					reserved ? "field or parameter" : "parameter");
			continue;
		}
		if (s_param_check(c, p, it, pp) < 0)
			continue;
		if (method >= 0 && !(p->methods & M(method))) {
			spec_errors_add(c->errs, "%s: does not apply to method '%s'", pp, spec_method_names[method]);
			continue;
		}
		cJSON_DeleteItemFromObjectCaseSensitive(into, it->string);
		cJSON_AddItemToObject(into, it->string, cJSON_Duplicate(it, 1));
	}
}

/* ---- sections -------------------------------------------------------------- */

/* "embedded" | {"embedded": {"steps", "seed"}} | {"registry": NAME} |
 * {"path": FOLDER, "sha256": HEX}. */
static void s_base_model(struct ctx *c, const cJSON *bm)
{
	static const char *const forms[] = { "embedded", "registry", "path", "sha256", NULL };
	static const char *const emb_keys[] = { "steps", "seed", NULL };
	spec_t *s = c->s;
	const cJSON *emb = NULL;
	const char *name, *sha;
	long long steps, seed;
	char hex[65];
	int rc;

	if (!bm || (cJSON_IsString(bm) && strcmp(bm->valuestring, "embedded") == 0)) {
		emb = NULL;
	} else if (!cJSON_IsObject(bm)) {
		spec_errors_add(c->errs, "base_model: expected \"embedded\" or an object, got %s",
				cJSON_IsString(bm) ? "another string" : jsonu_type_name(bm));
		return;
	} else if (cJSON_GetArraySize(bm) == 0) {
		spec_errors_add(c->errs, "base_model: expected one of 'embedded', 'registry', 'path'");
		return;
	} else {
		s_check_keys(c, bm, "base_model", forms);
		emb = cJSON_GetObjectItemCaseSensitive(bm, "embedded");
		if (!emb) {
			s->base_model = cJSON_CreateObject();
			if (cJSON_GetObjectItemCaseSensitive(bm, "registry")) {
				if (jsonu_req_str(bm, "registry", &name) < 0) {
					s_jsonu_err(c, "base_model", "registry");
					return;
				}
				rc = c->lk && c->lk->model ? c->lk->model(c->lk->arg, name, hex) : 0;
				if (rc < 0)
					spec_errors_add(c->errs, "base_model.registry: %s", err_msg());
				else if (rc == 0)
					spec_errors_add(c->errs, "base_model.registry: no base model '%.60s' in the "
								 "registry (POST /api/v1/models first)", name);
				cJSON_AddStringToObject(s->base_model, "registry", name);
				cJSON_AddStringToObject(s->base_model, "artifact", rc > 0 ? hex : "");
				return;
			}
			if (jsonu_req_str(bm, "path", &name) < 0) {
				s_jsonu_err(c, "base_model", "path");
				return;
			}
			if (name[0] != '/')
				spec_errors_add(c->errs, "base_model.path: expected an absolute folder, got '%.100s'", name);
			cJSON_AddStringToObject(s->base_model, "path", name);
			if (jsonu_opt_str(bm, "sha256", NULL, &sha) < 0)
				s_jsonu_err(c, "base_model", "sha256");
			else if (sha && !sha256_is_hex(sha))
				spec_errors_add(c->errs, "base_model.sha256: expected 64 lowercase hex digits");
			else if (sha)
				cJSON_AddStringToObject(s->base_model, "sha256", sha);
			return;
		}
		if (!cJSON_IsObject(emb)) {
			spec_errors_add(c->errs, "base_model.embedded: expected an object, got %s",
					jsonu_type_name(emb));
			return;
		}
		s_check_keys(c, emb, "base_model.embedded", emb_keys);
	}
	s_int(c, emb, "base_model.embedded", "steps", 2000, 1, 10000000, &steps);
	s_int(c, emb, "base_model.embedded", "seed", 1, 0, 9007199254740992LL, &seed);
	s->base_model = cJSON_CreateObject();
	emb = cJSON_AddObjectToObject(s->base_model, "embedded");
	cJSON_AddNumberToObject((cJSON *)emb, "steps", (double)steps);
	cJSON_AddNumberToObject((cJSON *)emb, "seed", (double)seed);
	s->pretrain = cJSON_CreateObject();
	cJSON_AddStringToObject(s->pretrain, "stage", "pretrain");
	cJSON_AddItemToObject(s->pretrain, "base_model", cJSON_Duplicate(s->base_model, 1));
}

/* "domains" / "add_domains": lists of distinct names. */
static cJSON *s_domain_list(struct ctx *c, const cJSON *v, const char *key, const char *def)
{
	cJSON *out = cJSON_CreateArray();
	const cJSON *it;
	size_t i = 0;

	if (!v) {
		cJSON_Delete(out);
		return cJSON_Parse(def);
	}
	if (!cJSON_IsArray(v)) {
		spec_errors_add(c->errs, "%s: expected a list of domain names, got %s", key, jsonu_type_name(v));
		return out;
	}
	cJSON_ArrayForEach(it, v) {
		const cJSON *o;
		if (!cJSON_IsString(it) || !s_is_ident(it->valuestring)) {
			spec_errors_add(c->errs, "%s[%zu]: expected a domain name ([a-z0-9_-], 1 to 32), got %s", key,
					i, cJSON_IsString(it) ? "another string" : jsonu_type_name(it));
		} else if (strcmp(it->valuestring, "universal") == 0) {
			spec_errors_add(c->errs, "%s[%zu]: 'universal' is not a domain expert (its data is "
						 "datasets.universal)", key, i);
		} else {
			int dup = 0;
			cJSON_ArrayForEach(o, out)
				dup |= strcmp(o->valuestring, it->valuestring) == 0;
			if (dup)
				spec_errors_add(c->errs, "%s[%zu]: '%s' is listed twice", key, i, it->valuestring);
			else
				cJSON_AddItemToArray(out, cJSON_CreateString(it->valuestring));
		}
		i++;
	}
	return out;
}

static int s_in_list(const cJSON *list, const char *name)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, list)
		if (strcmp(it->valuestring, name) == 0)
			return 1;
	return 0;
}

/* The data of one domain: "suite" | {"suite": DOMAIN} | {"registry": NAME}
 * | {"path": TRAIN.jsonl, "test": TEST.jsonl, "sha256": HEX}. */
static cJSON *s_dataset(struct ctx *c, const char *domain, const cJSON *v, const cJSON *suite)
{
	static const char *const forms[] = { "suite", "registry", "path", "test", "sha256", NULL };
	cJSON *d = cJSON_CreateObject(), *x;
	char path[SPEC_PATH_MAX], hex[2][65];
	const char *name, *test, *sha;

	cJSON_AddStringToObject(d, "domain", domain);
	snprintf(path, sizeof path, "datasets.%s", domain);
	if (!v || (cJSON_IsString(v) && strcmp(v->valuestring, "suite") == 0)) {
		x = cJSON_Duplicate(suite, 1);
		cJSON_AddStringToObject(x, "domain", domain);
		cJSON_AddItemToObject(d, "suite", x);
		return d;
	}
	if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) == 0) {
		spec_errors_add(c->errs, "%s: expected \"suite\" or an object with 'suite', 'registry' or 'path', got %s",
				path, jsonu_type_name(v));
		return d;
	}
	s_check_keys(c, v, path, forms);
	if (cJSON_GetObjectItemCaseSensitive(v, "suite")) {
		if (jsonu_req_str(v, "suite", &name) < 0 || !s_is_ident(name)) {
			spec_errors_add(c->errs, "%s.suite: expected a suite domain name", path);
			return d;
		}
		x = cJSON_Duplicate(suite, 1);
		cJSON_AddStringToObject(x, "domain", name);
		cJSON_AddItemToObject(d, "suite", x);
	} else if (cJSON_GetObjectItemCaseSensitive(v, "registry")) {
		int rc[2] = { 0, 0 };
		if (jsonu_req_str(v, "registry", &name) < 0) {
			s_jsonu_err(c, path, "registry");
			return d;
		}
		for (int k = 0; k < 2; k++) {
			const char *split = k ? "test" : "train";
			rc[k] = c->lk && c->lk->dataset ? c->lk->dataset(c->lk->arg, name, split, hex[k]) : 0;
			if (rc[k] < 0)
				spec_errors_add(c->errs, "%s.registry: %s", path, err_msg());
			else if (rc[k] == 0)
				spec_errors_add(c->errs, "%s.registry: no dataset '%.60s' (split %s) in the registry "
							 "(POST /api/v1/datasets first)", path, name, split);
		}
		x = cJSON_AddObjectToObject(d, "registry");
		cJSON_AddStringToObject(x, "name", name);
		cJSON_AddStringToObject(x, "train", rc[0] > 0 ? hex[0] : "");
		cJSON_AddStringToObject(x, "test", rc[1] > 0 ? hex[1] : "");
	} else {
		if (jsonu_req_str(v, "path", &name) < 0 || jsonu_req_str(v, "test", &test) < 0 ||
		    jsonu_opt_str(v, "sha256", NULL, &sha) < 0) {
			spec_errors_add(c->errs, "%s: a 'path' dataset needs 'path' and 'test' (JSONL files): %s", path,
					err_msg());
			return d;
		}
		if (name[0] != '/' || test[0] != '/')
			spec_errors_add(c->errs, "%s: 'path' and 'test' must be absolute paths", path);
		if (sha && !sha256_is_hex(sha))
			spec_errors_add(c->errs, "%s.sha256: expected 64 lowercase hex digits", path);
		x = cJSON_AddObjectToObject(d, "path");
		cJSON_AddStringToObject(x, "train", name);
		cJSON_AddStringToObject(x, "test", test);
		if (sha)
			cJSON_AddStringToObject(x, "sha256", sha);
	}
	return d;
}

static void s_data(struct ctx *c, const cJSON *json)
{
	static const char *const suite_keys[] = { "seed", "train", "test", "level", NULL };
	const cJSON *sv = cJSON_GetObjectItemCaseSensitive(json, "suite");
	const cJSON *dv = cJSON_GetObjectItemCaseSensitive(json, "datasets"), *it;
	spec_t *s = c->s;
	cJSON *suite = cJSON_CreateObject();
	long long seed, train, test, level;

	if (sv && !cJSON_IsObject(sv))
		spec_errors_add(c->errs, "suite: expected an object, got %s", jsonu_type_name(sv));
	else if (sv)
		s_check_keys(c, sv, "suite", suite_keys);
	if (!cJSON_IsObject(sv))
		sv = NULL;
	s_int(c, sv, "suite", "seed", 1, 0, 9007199254740992LL, &seed);
	s_int(c, sv, "suite", "train", 2000, 1, 10000000, &train);
	s_int(c, sv, "suite", "test", 200, 1, 10000000, &test);
	s_int(c, sv, "suite", "level", 2, 1, 3, &level);
	cJSON_AddNumberToObject(suite, "seed", (double)seed);
	cJSON_AddNumberToObject(suite, "train", (double)train);
	cJSON_AddNumberToObject(suite, "test", (double)test);
	cJSON_AddNumberToObject(suite, "level", (double)level);

	if (dv && !cJSON_IsObject(dv)) {
		spec_errors_add(c->errs, "datasets: expected an object (domain -> data), got %s", jsonu_type_name(dv));
		dv = NULL;
	}
	cJSON_ArrayForEach(it, dv)
		if (strcmp(it->string, "universal") != 0 && !s_in_list(s->domains, it->string) &&
		    !s_in_list(s->add_domains, it->string))
			spec_errors_add(c->errs, "datasets.%s: not a domain of this spec (add it to 'domains' or "
						 "'add_domains')", it->string);
	s->data = cJSON_CreateObject();
	cJSON_AddItemToObject(s->data, "universal",
			      s_dataset(c, "universal", cJSON_GetObjectItemCaseSensitive(dv, "universal"), suite));
	for (int k = 0; k < 2; k++) {
		const cJSON *list = k ? s->add_domains : s->domains;
		cJSON_ArrayForEach(it, list)
			cJSON_AddItemToObject(s->data, it->valuestring,
					      s_dataset(c, it->valuestring,
							cJSON_GetObjectItemCaseSensitive(dv, it->valuestring), suite));
	}
	cJSON_Delete(suite);
}

static void s_seeds(struct ctx *c, const cJSON *json)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "seeds"), *it;
	spec_t *s = c->s;
	size_t i = 0;

	if (!v) {
		s->seeds = malloc(sizeof *s->seeds);
		s->seeds[0] = 1;
		s->nseeds = 1;
		return;
	}
	if (!cJSON_IsArray(v) || !v->child) {
		spec_errors_add(c->errs, "seeds: expected a non-empty list of integers, got %s",
				cJSON_IsArray(v) ? "an empty list" : jsonu_type_name(v));
		return;
	}
	s->seeds = calloc((size_t)cJSON_GetArraySize(v), sizeof *s->seeds);
	cJSON_ArrayForEach(it, v) {
		double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
		if (d < 0 || d != floor(d) || d > 9007199254740992.0) {
			spec_errors_add(c->errs, "seeds[%zu]: expected an integer from 0 to 2^53, got %s", i,
					cJSON_IsNumber(it) ? "another number" : jsonu_type_name(it));
		} else {
			int dup = 0;
			for (size_t k = 0; k < s->nseeds; k++)
				dup |= s->seeds[k] == (long long)d;
			if (dup)
				spec_errors_add(c->errs, "seeds[%zu]: %lld is listed twice", i, (long long)d);
			else
				s->seeds[s->nseeds++] = (long long)d;
		}
		i++;
	}
}

static void s_eval(struct ctx *c, const cJSON *json)
{
	static const char *const keys[] = { "max_examples", "batch", "general", "router_stats", NULL };
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "eval");
	long long max, batch;
	int general, router;

	if (v && !cJSON_IsObject(v)) {
		spec_errors_add(c->errs, "eval: expected an object, got %s", jsonu_type_name(v));
		v = NULL;
	}
	if (v)
		s_check_keys(c, v, "eval", keys);
	s_int(c, v, "eval", "max_examples", 200, 1, 10000000, &max);
	s_int(c, v, "eval", "batch", 32, 1, 65536, &batch);
	s_bool(c, v, "eval", "general", 1, &general);
	s_bool(c, v, "eval", "router_stats", 1, &router);
	c->s->eval = cJSON_CreateObject();
	cJSON_AddNumberToObject(c->s->eval, "max_examples", (double)max);
	cJSON_AddNumberToObject(c->s->eval, "batch", (double)batch);
	cJSON_AddBoolToObject(c->s->eval, "general", general);
	cJSON_AddBoolToObject(c->s->eval, "router_stats", router);
}

static int s_method_id(const char *name)
{
	for (int m = 0; m < SPEC_NMETHODS; m++)
		if (strcmp(spec_method_names[m], name) == 0)
			return m;
	return -1;
}

/* One entry of "methods": a name, or {"method", "name", "scope", params...}. */
static void s_method(struct ctx *c, const cJSON *v, size_t i, const cJSON *shared, struct spec_method *out)
{
	static const char *const reserved[] = { "method", "name", "scope", NULL };
	char path[SPEC_PATH_MAX];
	const char *name = NULL, *label = NULL, *scope = "base";
	int id;

	snprintf(path, sizeof path, "methods[%zu]", i);
	out->id = SPEC_BASE;
	out->params = cJSON_CreateObject();
	if (cJSON_IsString(v)) {
		name = v->valuestring;
	} else if (!cJSON_IsObject(v)) {
		spec_errors_add(c->errs, "%s: expected a method name or an object, got %s", path, jsonu_type_name(v));
		return;
	} else if (jsonu_req_str(v, "method", &name) < 0) {
		s_jsonu_err(c, path, "method");
		return;
	}
	if ((id = s_method_id(name)) < 0) {
		spec_errors_add(c->errs, "%s%s: unknown method '%.60s' (expected base, lora, molora, modula-flan, "
					 "modula-res or modula-res-nores)", path, cJSON_IsObject(v) ? ".method" : "", name);
		return;
	}
	out->id = (enum spec_method_id)id;
	if (cJSON_IsObject(v)) {
		if (jsonu_opt_str(v, "name", NULL, &label) < 0)
			s_jsonu_err(c, path, "name");
		else if (label && (strlen(label) < 1 || strlen(label) > 64))
			spec_errors_add(c->errs, "%s.name: expected 1 to 64 characters", path);
		if (jsonu_opt_str(v, "scope", "base", &scope) < 0) {
			s_jsonu_err(c, path, "scope");
			scope = "base";
		}
	}
	for (int k = 0; k < 3; k++)
		if (strcmp(scope, spec_scope_names[k]) == 0)
			out->scope = (enum spec_scope)k;
	if (strcmp(scope, spec_scope_names[out->scope]) != 0)
		spec_errors_add(c->errs, "%s.scope: expected base, all or extend, got '%.40s'", path, scope);
	else if (out->scope != SPEC_SCOPE_BASE && cJSON_GetArraySize(c->s->add_domains) == 0)
		spec_errors_add(c->errs, "%s.scope: '%s' needs 'add_domains'", path, scope);
	else if (out->scope == SPEC_SCOPE_EXTEND && !(M(id) & M_MODULA))
		spec_errors_add(c->errs, "%s.scope: 'extend' is for modula-* methods (a %s is retrained: use 'all')",
				path, name);
	if (label)
		snprintf(out->label, sizeof out->label, "%s", label);
	else if (out->scope == SPEC_SCOPE_BASE)
		snprintf(out->label, sizeof out->label, "%s", name);
	else
		snprintf(out->label, sizeof out->label, "%s/%s", name, scope);
	/* Defaults, then the shared params, then this method's own. */
	for (const struct spec_param *p = spec_params; p->name; p++)
		if (p->methods & M(id))
			cJSON_AddItemToObject(out->params, p->name, cJSON_Parse(p->def));
	if (shared) {
		const cJSON *it;
		cJSON_ArrayForEach(it, shared) {
			const struct spec_param *p = s_param(it->string);
			if (p && (p->methods & M(id))) {
				cJSON_DeleteItemFromObjectCaseSensitive(out->params, it->string);
				cJSON_AddItemToObject(out->params, it->string, cJSON_Duplicate(it, 1));
			}
		}
	}
	if (cJSON_IsObject(v))
		s_params(c, v, path, reserved, id, out->params);
}

static void s_methods(struct ctx *c, const cJSON *json)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(json, "methods");
	const cJSON *pv = cJSON_GetObjectItemCaseSensitive(json, "params"), *it;
	cJSON *shared = cJSON_CreateObject();
	spec_t *s = c->s;
	size_t i = 0;

	if (pv && !cJSON_IsObject(pv))
		spec_errors_add(c->errs, "params: expected an object (parameter -> value or list), got %s",
				jsonu_type_name(pv));
	else if (pv)
		s_params(c, pv, "params", NULL, -1, shared);
	if (!v) {
		spec_errors_add(c->errs, "methods: missing (a list such as [\"lora\", \"modula-res\"])");
		goto out;
	}
	if (!cJSON_IsArray(v) || !v->child) {
		spec_errors_add(c->errs, "methods: expected a non-empty list, got %s",
				cJSON_IsArray(v) ? "an empty list" : jsonu_type_name(v));
		goto out;
	}
	s->methods = calloc((size_t)cJSON_GetArraySize(v), sizeof *s->methods);
	cJSON_ArrayForEach(it, v) {
		struct spec_method *m = &s->methods[s->nmethods++];
		s_method(c, it, i, shared, m);
		for (size_t k = 0; k + 1 < s->nmethods; k++)
			if (m->label[0] && strcmp(s->methods[k].label, m->label) == 0)
				spec_errors_add(c->errs, "methods[%zu]: label '%s' is also methods[%zu]'s (give one a "
							 "\"name\")", i, m->label, k);
		i++;
	}
out:
	cJSON_Delete(shared);
}

spec_t *spec_parse(const cJSON *json, const struct spec_lookup *lk, spec_errors_t *errs)
{
	static const char *const keys[] = { "name", "description", "priority", "backend", "base_model", "suite",
					    "datasets", "domains", "add_domains", "methods", "params", "seeds",
					    "eval", NULL };
	struct ctx c = { calloc(1, sizeof(spec_t)), errs, lk };
	const char *name = NULL, *backend = "cpu", *desc;
	long long prio = 0;
	size_t n0 = errs->n;

	if (!c.s) {
		spec_errors_add(errs, "out of memory");
		return NULL;
	}
	if (!cJSON_IsObject(json)) {
		spec_errors_add(errs, "spec: expected an object, got %s", jsonu_type_name(json));
		spec_destroy(&c.s);
		return NULL;
	}
	s_check_keys(&c, json, "", keys);
	if (jsonu_req_str(json, "name", &name) < 0)
		s_jsonu_err(&c, "", "name");
	else if (strlen(name) < 1 || strlen(name) > 64)
		spec_errors_add(errs, "name: expected 1 to 64 characters");
	else
		snprintf(c.s->name, sizeof c.s->name, "%s", name);
	if (jsonu_opt_str(json, "description", NULL, &desc) < 0)
		s_jsonu_err(&c, "", "description");
	s_int(&c, json, "", "priority", 0, -1000000, 1000000, &prio);
	c.s->priority = (int)prio;
	if (jsonu_opt_str(json, "backend", "cpu", &backend) < 0)
		s_jsonu_err(&c, "", "backend");
	else if (strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0)
		spec_errors_add(errs, "backend: expected \"cpu\" or \"cuda\", got '%.40s'", backend);
	c.s->backend = strcmp(backend, "cuda") == 0 ? 2 : 1;
	s_base_model(&c, cJSON_GetObjectItemCaseSensitive(json, "base_model"));
	c.s->domains = s_domain_list(&c, cJSON_GetObjectItemCaseSensitive(json, "domains"), "domains",
				     "[\"math\",\"code\",\"logic\"]");
	c.s->add_domains = s_domain_list(&c, cJSON_GetObjectItemCaseSensitive(json, "add_domains"), "add_domains",
					 "[]");
	if (cJSON_GetArraySize(c.s->domains) == 0 && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(json, "domains")))
		spec_errors_add(errs, "domains: expected at least one domain");
	if (cJSON_GetArraySize(c.s->domains) + cJSON_GetArraySize(c.s->add_domains) > SPEC_MAX_DOMAINS)
		spec_errors_add(errs, "domains: more than %d domains in all", SPEC_MAX_DOMAINS);
	for (const cJSON *it = c.s->add_domains->child; it; it = it->next)
		if (s_in_list(c.s->domains, it->valuestring))
			spec_errors_add(errs, "add_domains: '%s' is already in 'domains'", it->valuestring);
	s_data(&c, json);
	s_seeds(&c, json);
	s_eval(&c, json);
	s_methods(&c, json);
	if (errs->n != n0)
		spec_destroy(&c.s);
	return c.s;
}

void spec_destroy(spec_t **sp)
{
	spec_t *s = sp ? *sp : NULL;

	if (!s)
		return;
	cJSON_Delete(s->base_model);
	cJSON_Delete(s->pretrain);
	cJSON_Delete(s->data);
	cJSON_Delete(s->domains);
	cJSON_Delete(s->add_domains);
	cJSON_Delete(s->eval);
	free(s->seeds);
	for (size_t i = 0; i < s->nmethods; i++)
		cJSON_Delete(s->methods[i].params);
	free(s->methods);
	free(s);
	*sp = NULL;
}

const char *spec_name(const spec_t *s)
{
	return s->name;
}
