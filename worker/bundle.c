/* bundle.c: expert, router and bundle files; see bundle.h and
 * schema/bundle.md. */
#include "config.h"
#include "worker/bundle.h"
#include "worker/safetensors.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "path.h"
#include "sha256.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static cJSON *s_targets_json(unsigned targets)
{
	cJSON *a = cJSON_CreateArray();

	for (int s = 0; a && s < MODEL_NSLOTS; s++)
		if (targets & (1u << s))
			cJSON_AddItemToArray(a, cJSON_CreateString(model_slot_name(s)));
	return a;
}

/* Write `p` (PEFT names) with the expert's configuration as metadata. */
static int s_write_expert(const params_t *p, const bundle_expert_info_t *in, const char *path)
{
	st_writer_t *w = st_writer_new();
	cJSON *j = cJSON_CreateObject();
	char *text = NULL;
	int rc = -1;

	if (!w || !j)
		goto oom;
	cJSON_AddStringToObject(j, "name", in->name);
	cJSON_AddNumberToObject(j, "rank", in->rank);
	cJSON_AddNumberToObject(j, "alpha", in->alpha);
	cJSON_AddBoolToObject(j, "rslora", in->rslora);
	cJSON_AddBoolToObject(j, "reads_h", in->reads_h);
	cJSON_AddItemToObject(j, "targets", s_targets_json(in->targets));
	if (!(text = jsonu_print(j)))
		goto oom;
	for (int i = 0; i < p->n; i++)
		if (st_writer_add(w, p->v[i].name, ST_F32, p->v[i].ndim, p->v[i].shape, p->v[i].data) < 0)
			goto out;
	if (st_writer_meta(w, "format", "pt") < 0 || st_writer_meta(w, "modula_expert", text) < 0 ||
	    st_writer_write(w, path) < 0)
		goto out;
	rc = 0;
	goto out;
oom:
	err_set("out of memory writing expert '%s'", path);
out:
	free(text);
	cJSON_Delete(j);
	st_writer_destroy(&w);
	return rc;
}

int bundle_save_expert(const moe_t *mo, int e, const char *path)
{
	const moe_expert_t *x = &mo->exp[e];
	bundle_expert_info_t in = { .rank = x->rank, .alpha = x->alpha, .rslora = x->rslora,
				    .reads_h = x->reads_h, .targets = mo->cfg.universal.targets };

	snprintf(in.name, sizeof in.name, "%s", x->name);
	return s_write_expert(&x->params, &in, path);
}

static int s_parse_info(const char *text, const char *path, bundle_expert_info_t *in)
{
	cJSON *j = text ? jsonu_parse(text, strlen(text), path) : NULL;
	const char *name;
	long long rank;
	double alpha;
	int rc = -1;

	memset(in, 0, sizeof *in);
	if (!text)
		return err_set("'%s' is not an expert file (no 'modula_expert' metadata)", path);
	if (!j || jsonu_req_str(j, "name", &name) < 0 ||
	    jsonu_req_int(j, "rank", &rank) < 0 || jsonu_req_num(j, "alpha", &alpha) < 0 ||
	    jsonu_opt_bool(j, "rslora", 0, &in->rslora) < 0 || jsonu_opt_bool(j, "reads_h", 0, &in->reads_h) < 0 ||
	    lora_parse_targets(cJSON_GetObjectItemCaseSensitive(j, "targets"), &in->targets) < 0)
		goto out;
	if (rank <= 0 || strlen(name) >= sizeof in->name) {
		err_set("bad rank %lld or name '%s'", rank, name);
		goto out;
	}
	snprintf(in->name, sizeof in->name, "%s", name);
	in->rank = (int)rank, in->alpha = (float)alpha;
	rc = 0;
out:
	if (rc < 0)
		err_prefix("expert '%s'", path);
	cJSON_Delete(j);
	return rc;
}

int bundle_expert_info(const char *path, bundle_expert_info_t *info)
{
	st_file_t *f = st_open(path);
	int rc;

	if (!f)
		return -1;
	rc = s_parse_info(st_meta(f, "modula_expert"), path, info);
	st_close(&f);
	return rc;
}

/* Copy the tensors of `p` from `f`, shapes checked. */
static int s_fill(const params_t *p, st_file_t *f, const char *path)
{
	for (int i = 0; i < p->n; i++) {
		const param_t *q = &p->v[i];
		const st_tensor_t *t = st_find(f, q->name);
		if (!t)
			return err_set("'%s': missing tensor '%s'", path, q->name);
		if (t->ndim != 2 || t->shape[0] != q->shape[0] || t->shape[1] != q->shape[1])
			return err_set("'%s': tensor '%s' has the wrong shape, expected [%lld,%lld]", path,
				       q->name, (long long)q->shape[0], (long long)q->shape[1]);
		if (st_to_f32(t, q->data) < 0)
			return -1;
	}
	return 0;
}

int bundle_load_expert(moe_t *mo, int e, const char *path)
{
	const moe_expert_t *x = &mo->exp[e];
	bundle_expert_info_t in;
	st_file_t *f = st_open(path);
	int rc = -1;

	if (!f)
		return -1;
	if (s_parse_info(st_meta(f, "modula_expert"), path, &in) < 0)
		goto out;
	if (in.rank != x->rank || in.alpha != x->alpha || in.rslora != x->rslora || in.reads_h != x->reads_h) {
		err_set("expert '%s' (rank %d, alpha %g%s%s) does not fit slot '%s' (rank %d, alpha %g%s%s)",
			path, in.rank, in.alpha, in.rslora ? ", rslora" : "", in.reads_h ? ", reads h" : "",
			x->name, x->rank, x->alpha, x->rslora ? ", rslora" : "", x->reads_h ? ", reads h" : "");
		goto out;
	}
	rc = s_fill(&x->params, f, path);
out:
	st_close(&f);
	return rc;
}

static const char *s_row_name(const moe_t *mo, int j)
{
	return mo->exp[j + mo->route_base].name;
}

int bundle_save_router(const moe_t *mo, const char *path)
{
	st_writer_t *w = st_writer_new();
	cJSON *j = cJSON_CreateObject(), *rows = j ? cJSON_AddArrayToObject(j, "rows") : NULL;
	char *text = NULL;
	int rc = -1;

	if (!w || !rows) {
		err_set("out of memory writing router '%s'", path);
		goto out;
	}
	cJSON_AddStringToObject(j, "method", moe_method_name(mo->cfg.method));
	for (int r = 0; r < mo->n_route; r++)
		cJSON_AddItemToArray(rows, cJSON_CreateString(s_row_name(mo, r)));
	if (!(text = jsonu_print(j))) {
		err_set("out of memory");
		goto out;
	}
	for (int i = 0; i < mo->router.n; i++) {
		const param_t *p = &mo->router.v[i];
		if (st_writer_add(w, p->name, ST_F32, 2, p->shape, p->data) < 0)
			goto out;
	}
	if (st_writer_meta(w, "format", "pt") < 0 || st_writer_meta(w, "modula_router", text) < 0 ||
	    st_writer_write(w, path) < 0)
		goto out;
	rc = 0;
out:
	free(text);
	cJSON_Delete(j);
	st_writer_destroy(&w);
	return rc;
}

int bundle_load_router(moe_t *mo, const char *path)
{
	st_file_t *f = st_open(path);
	const char *meta, *method;
	cJSON *j = NULL, *rows;
	int map[MOE_MAX_EXPERTS], nrows, rc = -1;
	float *buf = NULL;

	if (!f)
		return -1;
	if (!(meta = st_meta(f, "modula_router"))) {
		err_set("'%s' is not a router file (no 'modula_router' metadata)", path);
		goto out;
	}
	if (!(j = jsonu_parse(meta, strlen(meta), path)) || jsonu_req_str(j, "method", &method) < 0)
		goto out;
	rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
	nrows = cJSON_GetArraySize(rows);
	if (strcmp(method, moe_method_name(mo->cfg.method)) || !cJSON_IsArray(rows) ||
	    nrows > MOE_MAX_EXPERTS) {
		err_set("router '%s' is for %s, not %s", path, method, moe_method_name(mo->cfg.method));
		goto out;
	}
	for (int r = 0; r < nrows; r++) {
		const cJSON *it = cJSON_GetArrayItem(rows, r);
		map[r] = -1;
		for (int k = 0; k < mo->n_route && cJSON_IsString(it); k++)
			if (!strcmp(it->valuestring, s_row_name(mo, k)))
				map[r] = k;
		if (map[r] < 0) {
			err_set("router '%s' has a row for expert '%s', which this mixture lacks", path,
				cJSON_IsString(it) ? it->valuestring : "?");
			goto out;
		}
	}
	for (int i = 0; i < mo->router.n; i++) {
		const param_t *p = &mo->router.v[i];
		const st_tensor_t *t = st_find(f, p->name);
		int64_t in = p->shape[1];
		if (!t || t->ndim != 2 || t->shape[0] != nrows || t->shape[1] != in) {
			err_set("'%s': tensor '%s' missing or not [%d,%lld]", path, p->name, nrows, (long long)in);
			goto out;
		}
		free(buf);
		if (!(buf = malloc((size_t)nrows * in * sizeof *buf))) {
			err_set("out of memory");
			goto out;
		}
		if (st_to_f32(t, buf) < 0)
			goto out;
		for (int r = 0; r < nrows; r++)
			memcpy(p->data + (size_t)map[r] * in, buf + (size_t)r * in, (size_t)in * sizeof *buf);
	}
	rc = 0;
out:
	free(buf);
	cJSON_Delete(j);
	st_close(&f);
	return rc;
}

static int s_add_file(cJSON *o, const char *dir, const char *rel)
{
	char path[4400], hex[SHA256_HEX_LEN + 1];

	snprintf(path, sizeof path, "%s/%s", dir, rel);
	if (sha256_file(path, hex) < 0)
		return -1;
	cJSON_AddStringToObject(o, "file", rel);
	cJSON_AddStringToObject(o, "sha256", hex);
	return 0;
}

static cJSON *s_expert_json(const moe_expert_t *x)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "name", x->name);
	cJSON_AddNumberToObject(o, "rank", x->rank);
	cJSON_AddNumberToObject(o, "alpha", x->alpha);
	cJSON_AddBoolToObject(o, "rslora", x->rslora);
	return o;
}

int bundle_write(const moe_t *mo, const char *dir, const char *base)
{
	char path[PATH_MAX + 400], rel[MOE_NAME_MAX + 32], hex[SHA256_HEX_LEN + 1];
	cJSON *j = cJSON_CreateObject(), *exps, *o;
	int rc = -1;

	snprintf(path, sizeof path, "%s/experts", dir);
	if (!j || fsx_mkdirs(path, 0755) < 0)
		goto out;
	cJSON_AddStringToObject(j, "format", "modula-bundle");
	cJSON_AddNumberToObject(j, "version", BUNDLE_VERSION);
	o = cJSON_AddObjectToObject(j, "base");
	if (!realpath(base, path)) {
		err_set("cannot resolve the base model folder '%s': %s", base, strerror(errno));
		goto out;
	}
	cJSON_AddStringToObject(o, "path", path);
	snprintf(path, sizeof path, "%s/config.json", base);
	if (sha256_file(path, hex) < 0)
		goto out;
	cJSON_AddStringToObject(o, "config_sha256", hex);
	cJSON_AddStringToObject(j, "method", moe_method_name(mo->cfg.method));
	cJSON_AddItemToObject(j, "targets", s_targets_json(mo->cfg.universal.targets));
	cJSON_AddNumberToObject(j, "slope", mo->cfg.slope);
	cJSON_AddNumberToObject(j, "top_k", mo->cfg.top_k);
	cJSON_AddNumberToObject(j, "aux_weight", mo->cfg.aux_weight);
	exps = cJSON_AddArrayToObject(j, "experts");
	for (int e = 0; e < mo->n_exp; e++) {
		const moe_expert_t *x = &mo->exp[e];
		if (!x->rank)
			continue;
		snprintf(rel, sizeof rel, "experts/%s.safetensors", x->name);
		snprintf(path, sizeof path, "%s/%s", dir, rel);
		if (bundle_save_expert(mo, e, path) < 0)
			goto out;
		o = s_expert_json(x);
		if (e)
			cJSON_AddItemToArray(exps, o);
		else
			cJSON_AddItemToObject(j, "universal", o);
		if (s_add_file(o, dir, rel) < 0)
			goto out;
	}
	if (!mo->exp[0].rank)
		cJSON_AddNullToObject(j, "universal");
	if (mo->n_route > 0) {
		snprintf(path, sizeof path, "%s/router.safetensors", dir);
		o = cJSON_AddObjectToObject(j, "router");
		if (bundle_save_router(mo, path) < 0 || s_add_file(o, dir, "router.safetensors") < 0)
			goto out;
	} else {
		cJSON_AddNullToObject(j, "router");
	}
	snprintf(path, sizeof path, "%s/%s", dir, BUNDLE_MANIFEST);
	rc = jsonu_write_file(path, j);
out:
	cJSON_Delete(j);
	return rc < 0 ? err_prefix("writing bundle '%s'", dir) : 0;
}

int bundle_is(const char *path)
{
	char m[4400];
	struct stat st;

	snprintf(m, sizeof m, "%s/%s", path, BUNDLE_MANIFEST);
	return stat(m, &st) == 0 && S_ISREG(st.st_mode);
}

/* One manifest entry's file: safe path, sha256 as the manifest says. */
static int s_entry_path(const cJSON *o, const char *dir, char *path, size_t n)
{
	const char *rel, *sha;
	char hex[SHA256_HEX_LEN + 1];

	if (jsonu_req_str(o, "file", &rel) < 0 || jsonu_req_str(o, "sha256", &sha) < 0 ||
	    path_join(path, n, dir, rel) < 0 || sha256_file(path, hex) < 0)
		return -1;
	if (strcmp(hex, sha))
		return err_set("'%s' has sha256 %.12s..., the manifest says %.12s...: the bundle was "
			       "changed", path, hex, sha);
	return 0;
}

static int s_entry_cfg(const cJSON *o, lora_config_t *c)
{
	long long r;
	double a;

	if (jsonu_req_int(o, "rank", &r) < 0 || jsonu_req_num(o, "alpha", &a) < 0 ||
	    jsonu_opt_bool(o, "rslora", 0, &c->rslora) < 0)
		return -1;
	if (r <= 0)
		return err_set("rank %lld must be positive", r);
	c->rank = (int)r, c->alpha = (float)a;
	return 0;
}

moe_t *bundle_load(model_t *m, const char *dir)
{
	char path[4400];
	const char *names[MOE_MAX_EXPERTS], *method;
	cJSON *j, *exps, *u, *rt;
	moe_config_t c = { 0 };
	moe_t *mo = NULL;
	double d;
	long long k;
	unsigned targets;

	snprintf(path, sizeof path, "%s/%s", dir, BUNDLE_MANIFEST);
	if (!(j = jsonu_read_file(path)))
		return NULL;
	exps = cJSON_GetObjectItemCaseSensitive(j, "experts");
	u = cJSON_GetObjectItemCaseSensitive(j, "universal");
	rt = cJSON_GetObjectItemCaseSensitive(j, "router");
	if (jsonu_req_str(j, "method", &method) < 0 || moe_method_parse(method, &c.method) < 0 ||
	    lora_parse_targets(cJSON_GetObjectItemCaseSensitive(j, "targets"), &targets) < 0 ||
	    jsonu_opt_num(j, "slope", 0.01, &d) < 0 || jsonu_opt_int(j, "top_k", 0, &k) < 0)
		goto err;
	c.slope = (float)d, c.top_k = (int)k;
	if (jsonu_opt_num(j, "aux_weight", 0.0, &d) < 0)
		goto err;
	c.aux_weight = (float)d;
	if (!cJSON_IsArray(exps) || cJSON_GetArraySize(exps) >= MOE_MAX_EXPERTS) {
		err_set("'experts': expected an array of at most %d", MOE_MAX_EXPERTS - 1);
		goto err;
	}
	c.n_domain = cJSON_GetArraySize(exps);
	if (cJSON_IsObject(u) && s_entry_cfg(u, &c.universal) < 0)
		goto err;
	c.universal.targets = targets;
	for (int i = 0; i < c.n_domain; i++) {
		const cJSON *o = cJSON_GetArrayItem(exps, i);
		lora_config_t dc = { 0 };
		if (jsonu_req_str(o, "name", &names[i]) < 0 || s_entry_cfg(o, &dc) < 0)
			goto err;
		if (i && (dc.rank != c.domain.rank || dc.alpha != c.domain.alpha || dc.rslora != c.domain.rslora)) {
			err_set("expert '%s': every domain expert must have the same rank and alpha", names[i]);
			goto err;
		}
		c.domain = dc;
	}
	if (!(mo = moe_attach(m, &c, names, 0)))
		goto err;
	for (int e = 0; e < mo->n_exp; e++) {
		const cJSON *o = e ? cJSON_GetArrayItem(exps, e - 1) : u;
		if (!mo->exp[e].rank)
			continue;
		if (s_entry_path(o, dir, path, sizeof path) < 0 || bundle_load_expert(mo, e, path) < 0)
			goto err;
	}
	if (mo->n_route > 0 && (!cJSON_IsObject(rt) || s_entry_path(rt, dir, path, sizeof path) < 0 ||
				bundle_load_router(mo, path) < 0)) {
		if (!cJSON_IsObject(rt))
			err_set("'router': missing for %s", method);
		goto err;
	}
	if (moe_set_trainable(mo, 0, 0) < 0)
		goto err;
	cJSON_Delete(j);
	return mo;
err:
	err_prefix("bundle '%s'", dir);
	cJSON_Delete(j);
	moe_destroy(&mo);
	return NULL;
}

int bundle_export_peft(const char *expert, const char *dir)
{
	bundle_expert_info_t in;
	st_file_t *f = NULL;
	lora_t l = { 0 };
	float *mem = NULL;
	size_t total = 0, off = 0;
	int rc = -1;

	if (bundle_expert_info(expert, &in) < 0 || !(f = st_open(expert)))
		return -1;
	if (in.reads_h) {
		err_set("expert '%s' is a modula-res domain expert: it reads the universal expert's "
			"output, so it is no LoRA of the base layers; export the universal expert, or "
			"use the bundle", expert);
		goto out;
	}
	for (int i = 0; i < st_count(f); i++)
		total += st_at(f, i)->nbytes / st_dtype_size(st_at(f, i)->dtype);
	if (!(mem = malloc((total ? total : 1) * sizeof *mem))) {
		err_set("out of memory");
		goto out;
	}
	for (int i = 0; i < st_count(f); i++) {
		const st_tensor_t *t = st_at(f, i);
		if (t->ndim != 2 || st_to_f32(t, mem + off) < 0 ||
		    params_add(&l.params, t->name, mem + off, NULL, 2, t->shape) < 0) {
			if (t->ndim != 2)
				err_set("'%s': tensor '%s' is not a matrix", expert, t->name);
			goto out;
		}
		off += (size_t)t->shape[0] * t->shape[1];
	}
	l.cfg = (lora_config_t){ .rank = in.rank, .alpha = in.alpha, .rslora = in.rslora, .targets = in.targets };
	rc = lora_save(&l, dir);
out:
	params_clear(&l.params);
	free(mem);
	st_close(&f);
	return rc;
}

int bundle_import_peft(model_t *m, const char *peft, const char *name, const char *path)
{
	lora_t *lo = lora_load(m, peft);
	bundle_expert_info_t in = { 0 };
	int rc;

	if (!lo)
		return -1;
	snprintf(in.name, sizeof in.name, "%s", name);
	in.rank = lo->cfg.rank, in.alpha = lo->cfg.alpha, in.rslora = lo->cfg.rslora;
	in.targets = lo->cfg.targets;
	rc = s_write_expert(&lo->params, &in, path);
	lora_destroy(&lo);
	return rc;
}
