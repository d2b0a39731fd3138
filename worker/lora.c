/* lora.c: LoRA as an adapter kind; see lora.h and adapter.h. */
#include "config.h"
#include "worker/lora.h"
#include "worker/rng.h"
#include "worker/safetensors.h"
#include "kernels/cpu/ops.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct lora_adapter {
	adapter_t base;
	int r;
	float scale, dropout;
	float *a, *b, *da, *db; /* A [r,in], B [out,r] and their grads */
	float *u;               /* [N,in] dropout(x), only with dropout */
	float *h;               /* [N,r] A u */
	float *dh;              /* [N,r] */
	int cap;                /* rows reserved */
	uint64_t seed, key;     /* the dropout stream and the last forward's key */
} lora_adapter_t;

static int s_reserve(adapter_t *ad, int n)
{
	lora_adapter_t *la = (lora_adapter_t *)ad;

	if (n <= la->cap)
		return 0;
	free(la->u), free(la->h), free(la->dh);
	la->u = NULL, la->cap = 0;
	la->h = malloc((size_t)n * la->r * sizeof(float));
	la->dh = malloc((size_t)n * la->r * sizeof(float));
	if (la->dropout > 0.0f)
		la->u = malloc((size_t)n * ad->in * sizeof(float));
	if (!la->h || !la->dh || (la->dropout > 0.0f && !la->u))
		return err_set("out of memory for LoRA activations of %d rows", n);
	la->cap = n;
	return 0;
}

static uint64_t s_stream(const lora_adapter_t *la)
{
	return rng_hash(rng_hash(la->seed, la->key), (uint64_t)la->base.layer * 64 + la->base.slot);
}

/* The dropout multiplier of element i: 0 or 1/(1-p). */
static inline float s_keep(uint64_t stream, size_t i, float p)
{
	return rng_hash_uniform(stream, i) < p ? 0.0f : 1.0f / (1.0f - p);
}

static void s_forward(adapter_t *ad, float *y, const float *x, int n, uint64_t key, int train)
{
	lora_adapter_t *la = (lora_adapter_t *)ad;
	const float *u = x;

	la->key = key;
	if (la->u) {
		size_t total = (size_t)n * ad->in;
		uint64_t st = s_stream(la);
		float p = train ? la->dropout : 0.0f;
		#pragma omp parallel for schedule(static) if(total >= OPS_PARALLEL_MIN)
		for (size_t i = 0; i < total; i++)
			la->u[i] = p > 0.0f ? x[i] * s_keep(st, i, p) : x[i];
		u = la->u;
	}
	op_gemm(la->h, u, la->a, n, la->r, ad->in, 0, 1, 1.0f, 0.0f);
	op_gemm(y, la->h, la->b, n, ad->out, la->r, 0, 1, la->scale, 1.0f);
}

static void s_backward(adapter_t *ad, float *dx, const float *dy, const float *x, int n)
{
	lora_adapter_t *la = (lora_adapter_t *)ad;
	const float *u = la->u ? la->u : x;

	/* h = A u, y += s B h: dh = s dy B, dB += s dy^T h, dA += dh^T u,
	 * du = dh A, dx += du * mask. */
	op_gemm(la->dh, dy, la->b, n, la->r, ad->out, 0, 0, la->scale, 0.0f);
	if (la->db)
		op_gemm(la->db, dy, la->h, ad->out, la->r, n, 1, 0, la->scale, 1.0f);
	if (la->da)
		op_gemm(la->da, la->dh, u, la->r, ad->in, n, 1, 0, 1.0f, 1.0f);
	if (!dx)
		return;
	if (!la->u) {
		op_gemm(dx, la->dh, la->a, n, ad->in, la->r, 0, 0, 1.0f, 1.0f);
		return;
	}
	/* With dropout, u's buffer is no longer needed: reuse it for du. The
	 * mask is recomputed from the same stream (train mode: the only mode
	 * in which backward runs). */
	float *du = la->u;
	size_t total = (size_t)n * ad->in;
	uint64_t st = s_stream(la);
	op_gemm(du, la->dh, la->a, n, ad->in, la->r, 0, 0, 1.0f, 0.0f);
	#pragma omp parallel for schedule(static) if(total >= OPS_PARALLEL_MIN)
	for (size_t i = 0; i < total; i++)
		dx[i] += du[i] * s_keep(st, i, la->dropout);
}

static void s_destroy(adapter_t *ad)
{
	lora_adapter_t *la = (lora_adapter_t *)ad;

	free(la->a);            /* a, b, da, db share one block */
	free(la->u), free(la->h), free(la->dh);
	free(la);
}

static const adapter_ops_t s_lora_ops = {
	.kind = "lora",
	.reserve = s_reserve,
	.forward = s_forward,
	.backward = s_backward,
	.destroy = s_destroy,
};

int lora_parse_targets(const cJSON *arr, unsigned *out)
{
	const cJSON *it;

	*out = 0;
	if (!cJSON_IsArray(arr))
		return err_set("'targets': expected an array of names, got %s", jsonu_type_name(arr));
	cJSON_ArrayForEach(it, arr) {
		int found = -1;
		if (!cJSON_IsString(it))
			return err_set("'targets': expected strings, got %s", jsonu_type_name(it));
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			const char *full = model_slot_name(s);
			size_t k = strlen(full) - strlen("_proj");
			if (!strcmp(it->valuestring, full) ||
			    (strlen(it->valuestring) == k && !strncmp(it->valuestring, full, k)))
				found = s;
		}
		if (found < 0)
			return err_set("'targets': unknown layer '%s' (use q, k, v, o, gate, up, down)",
				       it->valuestring);
		*out |= 1u << found;
	}
	if (!*out)
		return err_set("'targets': empty; name at least one of q, k, v, o, gate, up, down");
	return 0;
}

static void s_peft_name(char *dst, size_t n, int layer, int slot, char ab)
{
	snprintf(dst, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
		 model_slot_module(slot), model_slot_name(slot), ab);
}

lora_t *lora_attach(model_t *m, const lora_config_t *c, uint64_t seed)
{
	lora_t *l;
	rng_t r;
	char name[160];

	if (c->rank <= 0 || c->dropout < 0.0f || c->dropout >= 1.0f || !c->targets)
		return err_set("bad LoRA settings (rank %d, dropout %g): rank must be positive, "
			       "dropout in [0, 1), at least one target", c->rank, c->dropout), NULL;
	if (!(l = calloc(1, sizeof *l)))
		return err_set("out of memory"), NULL;
	l->cfg = *c;
	rng_seed(&r, seed);
	for (int li = 0; li < m->cfg.n_layers; li++) {
		for (int s = 0; s < MODEL_NSLOTS; s++) {
			model_linear_t *lin = &m->layers[li].lin[s];
			lora_adapter_t *la;
			size_t na = (size_t)c->rank * lin->in, nb = (size_t)lin->out * c->rank;
			if (!(c->targets & (1u << s)))
				continue;
			if (!(la = calloc(1, sizeof *la)) ||
			    !(la->a = calloc(2 * (na + nb), sizeof(float)))) {
				free(la);
				err_set("out of memory for LoRA adapters");
				goto err;
			}
			la->base = (adapter_t){ &s_lora_ops, lin->in, lin->out, li, s };
			la->b = la->a + na, la->da = la->b + nb, la->db = la->da + na;
			la->r = c->rank, la->dropout = c->dropout, la->seed = seed;
			la->scale = c->alpha / (c->rslora ? sqrtf((float)c->rank) : (float)c->rank);
			float bound = 1.0f / sqrtf((float)lin->in);
			for (size_t i = 0; i < na; i++)
				la->a[i] = (2.0f * rng_uniform(&r) - 1.0f) * bound;
			if (lin->ad)
				lin->ad->ops->destroy(lin->ad);
			lin->ad = &la->base;
			if (m->acts && s_reserve(&la->base, m->max_b * m->max_t) < 0)
				goto err;
			int64_t sa[2] = { c->rank, lin->in }, sb[2] = { lin->out, c->rank };
			s_peft_name(name, sizeof name, li, s, 'A');
			if (params_add(&l->params, name, la->a, la->da, 2, sa) < 0)
				goto err;
			s_peft_name(name, sizeof name, li, s, 'B');
			if (params_add(&l->params, name, la->b, la->db, 2, sb) < 0)
				goto err;
		}
	}
	return l;
err:
	lora_destroy(&l);
	return NULL;
}

/* adapter_config.json of a folder, or beside a file. */
static int s_read_peft_config(const char *path, char *dir, size_t dirn, char *weights,
			      size_t wn, lora_config_t *c)
{
	struct stat st;
	char cfgpath[4200];
	cJSON *j = NULL, *tm;
	double r, alpha, drop;
	int rs;

	if (stat(path, &st) < 0)
		return err_set("cannot read adapter '%s': no such file or folder", path);
	if (S_ISDIR(st.st_mode)) {
		snprintf(dir, dirn, "%s", path);
		snprintf(weights, wn, "%s/adapter_model.safetensors", path);
	} else {
		const char *slash = strrchr(path, '/');
		snprintf(dir, dirn, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
		snprintf(weights, wn, "%s", path);
	}
	snprintf(cfgpath, sizeof cfgpath, "%s/adapter_config.json", dir);
	if (!(j = jsonu_read_file(cfgpath)))
		return -1;
	memset(c, 0, sizeof *c);
	if (jsonu_req_num(j, "r", &r) < 0 || jsonu_req_num(j, "lora_alpha", &alpha) < 0 ||
	    jsonu_opt_num(j, "lora_dropout", 0.0, &drop) < 0 ||
	    jsonu_opt_bool(j, "use_rslora", 0, &rs) < 0 ||
	    lora_parse_targets(tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules"), &c->targets) < 0) {
		cJSON_Delete(j);
		return err_prefix("'%s'", cfgpath);
	}
	c->rank = (int)r, c->alpha = (float)alpha, c->dropout = (float)drop, c->rslora = rs;
	cJSON_Delete(j);
	return 0;
}

lora_t *lora_load(model_t *m, const char *path)
{
	char dir[4096], weights[4200];
	lora_config_t c;
	lora_t *l = NULL;
	st_file_t *f = NULL;

	if (s_read_peft_config(path, dir, sizeof dir, weights, sizeof weights, &c) < 0)
		return NULL;
	if (!(l = lora_attach(m, &c, 0)) || !(f = st_open(weights)))
		goto err;
	for (int i = 0; i < l->params.n; i++) {
		param_t *p = &l->params.v[i];
		const st_tensor_t *t = st_find(f, p->name);
		if (!t) {
			err_set("'%s': missing tensor '%s'", weights, p->name);
			goto err;
		}
		if (t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
			err_set("'%s': tensor '%s' has the wrong shape, expected [%lld,%lld]", weights,
				p->name, (long long)p->shape[0], (long long)p->shape[1]);
			goto err;
		}
		if (st_to_f32(t, p->data) < 0)
			goto err;
	}
	st_close(&f);
	return l;
err:
	err_prefix("loading adapter '%s'", path);
	st_close(&f);
	lora_destroy(&l);
	return NULL;
}

int lora_save(const lora_t *l, const char *dir)
{
	char path[4096];
	st_writer_t *w = NULL;
	cJSON *j = NULL, *tm;
	int rc = -1;

	if (fsx_mkdirs(dir, 0755) < 0 || !(w = st_writer_new()))
		return -1;
	for (int i = 0; i < l->params.n; i++) {
		const param_t *p = &l->params.v[i];
		if (st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, p->data) < 0)
			goto out;
	}
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	if (st_writer_meta(w, "format", "pt") < 0 || st_writer_write(w, path) < 0)
		goto out;
	if (!(j = cJSON_CreateObject()) || !(tm = cJSON_AddArrayToObject(j, "target_modules"))) {
		err_set("out of memory");
		goto out;
	}
	cJSON_AddStringToObject(j, "peft_type", "LORA");
	cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
	cJSON_AddNumberToObject(j, "r", l->cfg.rank);
	cJSON_AddNumberToObject(j, "lora_alpha", l->cfg.alpha);
	cJSON_AddNumberToObject(j, "lora_dropout", l->cfg.dropout);
	cJSON_AddBoolToObject(j, "use_rslora", l->cfg.rslora);
	cJSON_AddStringToObject(j, "bias", "none");
	for (int s = 0; s < MODEL_NSLOTS; s++)
		if (l->cfg.targets & (1u << s))
			cJSON_AddItemToArray(tm, cJSON_CreateString(model_slot_name(s)));
	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	rc = jsonu_write_file(path, j);
out:
	cJSON_Delete(j);
	st_writer_destroy(&w);
	return rc;
}

void lora_destroy(lora_t **pl)
{
	if (!pl || !*pl)
		return;
	params_clear(&(*pl)->params);
	free(*pl);
	*pl = NULL;
}
