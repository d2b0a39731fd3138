/* stage.c: the MoDULA training stages; see stage.h. */
#include "config.h"
#include "worker/stage.h"
#include "worker/bundle.h"
#include "worker/data.h"
#include "worker/dmodel.h"
#include "worker/flops.h"
#include "worker/model.h"
#include "worker/optim.h"
#include "worker/tokenizer.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "mtime.h"
#include "sha256.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const s_kinds[] = { "universal", "domain", "router", "joint" };

/* The stage's own keys; the rest is a train job (train.h). */
static const char *const s_own[] = { "stage", "method", "universal", "domain", "experts",
	"domains", "router", "n_experts", "top_k", "aux_weight", "slope", NULL };

static int s_resolve(char *dst, const char *base, const char *p)
{
	int n = p[0] == '/' || !base[0] ? snprintf(dst, TRAIN_PATH_MAX, "%s", p)
					 : snprintf(dst, TRAIN_PATH_MAX, "%s/%s", base, p);

	return n < 0 || n >= TRAIN_PATH_MAX ? err_set("path too long: '%s'", p) : 0;
}

/* {"rank", "alpha", "rslora", "targets"} of an expert kind. */
static int s_parse_rank(const cJSON *o, int def_rank, lora_config_t *c, int targets)
{
	static const char *const keys[] = { "rank", "alpha", "rslora", "targets", NULL };
	long long r;
	double a;
	const cJSON *t;

	c->targets = (1u << MODEL_NSLOTS) - 1;
	if (o && !cJSON_IsObject(o))
		return err_set("expected an object, got %s", jsonu_type_name(o));
	if (o && jsonu_check_keys(o, keys) < 0)
		return -1;
	if (jsonu_opt_int(o, "rank", def_rank, &r) < 0 || jsonu_opt_num(o, "alpha", 2.0 * r, &a) < 0 ||
	    jsonu_opt_bool(o, "rslora", 0, &c->rslora) < 0)
		return -1;
	if ((t = cJSON_GetObjectItemCaseSensitive(o, "targets"))) {
		if (!targets)
			return err_set("'targets' belongs in \"universal\"");
		if (lora_parse_targets(t, &c->targets) < 0)
			return -1;
	}
	if (r <= 0 || r > 4096)
		return err_set("'rank' = %lld: expected 1 to 4096", r);
	c->rank = (int)r, c->alpha = (float)a;
	return 0;
}

static int s_add_name(stage_job_t *job, const char *name)
{
	if (!name[0] || strlen(name) >= MOE_NAME_MAX || strchr(name, '/'))
		return err_set("bad expert name '%s'", name);
	memcpy(job->names[job->nnames++], name, strlen(name) + 1);
	return 0;
}

/* "domains": [{"name", "data"}] (domain stage) into names and the data
 * list handed to the train-job parser. */
static int s_parse_domains(const cJSON *arr, stage_job_t *job, cJSON *copy)
{
	const cJSON *it;
	cJSON *data = cJSON_CreateArray();
	const char *name, *path;

	cJSON_AddItemToObject(copy, "data", data);
	cJSON_ArrayForEach(it, arr) {
		if (jsonu_req_str(it, "name", &name) < 0 || jsonu_req_str(it, "data", &path) < 0 ||
		    s_add_name(job, name) < 0)
			return -1;
		cJSON_AddItemToArray(data, cJSON_CreateString(path));
	}
	return 0;
}

int stage_job_parse(const cJSON *j, const char *base_dir, stage_job_t *job)
{
	cJSON *copy = NULL;
	const char *kind, *method, *router;
	const cJSON *ex, *doms, *it;
	long long nexp, topk;
	double slope, aux;
	int rc = -1;

	memset(job, 0, sizeof *job);
	if (!cJSON_IsObject(j))
		return err_set("a job must be a JSON object");
	if (jsonu_req_str(j, "stage", &kind) < 0 || jsonu_req_str(j, "method", &method) < 0 ||
	    moe_method_parse(method, &job->cfg.method) < 0 ||
	    jsonu_opt_str(j, "router", "", &router) < 0 || jsonu_opt_int(j, "n_experts", 0, &nexp) < 0 ||
	    jsonu_opt_int(j, "top_k", 0, &topk) < 0 || jsonu_opt_num(j, "slope", 0.01, &slope) < 0 ||
	    jsonu_opt_num(j, "aux_weight", 0.0, &aux) < 0)
		return -1;
	job->kind = -1;
	for (int k = 0; k < 4; k++)
		if (!strcmp(kind, s_kinds[k]))
			job->kind = k;
	int m = job->cfg.method, joint = job->kind == STAGE_JOINT;
	if (job->kind < 0)
		return err_set("'stage': unknown stage '%s' (use universal, domain, router, joint)", kind);
	if (joint != (m == MOE_LORA || m == MOE_MOLORA) || m == MOE_BASE)
		return err_set("'method': %s has no %s stage (lora and molora train in the joint stage, "
			       "the modula methods in universal, domain and router)", method, kind);
	if (nexp < 0 || nexp >= MOE_MAX_EXPERTS || topk < 0 || topk > nexp || aux < 0 || slope < 0)
		return err_set("'n_experts' 0 to %d, 'top_k' 0 to n_experts, 'aux_weight' and 'slope' "
			       "not negative", MOE_MAX_EXPERTS - 1);
	job->cfg.top_k = (int)topk, job->cfg.slope = (float)slope, job->cfg.aux_weight = (float)aux;
	if (s_parse_rank(cJSON_GetObjectItemCaseSensitive(j, "universal"), 16, &job->cfg.universal, 1) < 0)
		return err_prefix("'universal'");
	if (s_parse_rank(cJSON_GetObjectItemCaseSensitive(j, "domain"), 8, &job->cfg.domain, 0) < 0)
		return err_prefix("'domain'");
	if (!(job->names = calloc(MOE_MAX_EXPERTS, sizeof *job->names)) ||
	    !(job->in = calloc(MOE_MAX_EXPERTS, sizeof *job->in)) || !(copy = cJSON_Duplicate(j, 1)))
		return err_set("out of memory");
	for (int k = 0; s_own[k]; k++)
		cJSON_DeleteItemFromObjectCaseSensitive(copy, s_own[k]);
	ex = cJSON_GetObjectItemCaseSensitive(j, "experts");
	if (ex && !cJSON_IsArray(ex)) {
		err_set("'experts': expected an array of {\"name\", \"path\"}");
		goto out;
	}
	cJSON_ArrayForEach(it, ex) {
		const char *name, *path;
		if (job->nin == MOE_MAX_EXPERTS || jsonu_req_str(it, "name", &name) < 0 ||
		    jsonu_req_str(it, "path", &path) < 0 || strlen(name) >= MOE_NAME_MAX ||
		    s_resolve(job->in[job->nin].path, base_dir, path) < 0) {
			err_prefix("'experts'");
			goto out;
		}
		snprintf(job->in[job->nin++].name, MOE_NAME_MAX, "%s", name);
	}
	doms = cJSON_GetObjectItemCaseSensitive(j, "domains");
	if (job->kind == STAGE_DOMAIN) {
		if (!cJSON_IsArray(doms) || !cJSON_GetArraySize(doms) ||
		    cJSON_GetArraySize(doms) >= MOE_MAX_EXPERTS || cJSON_HasObjectItem(j, "data")) {
			err_set("'domains': the domain stage takes an array of {\"name\", \"data\"} "
				"(and no 'data')");
			goto out;
		}
		if (s_parse_domains(doms, job, copy) < 0) {
			err_prefix("'domains'");
			goto out;
		}
	} else if (doms) {
		err_set("'domains' is for the domain stage; give 'data'");
		goto out;
	}
	if (m == MOE_MOLORA) {
		char name[16];
		if (nexp < 1) {
			err_set("molora needs 'n_experts' >= 1");
			goto out;
		}
		for (int i = 0; i < nexp; i++) {
			snprintf(name, sizeof name, "e%d", i + 1);
			s_add_name(job, name);
		}
	}
	if (router[0] && s_resolve(job->router, base_dir, router) < 0)
		goto out;
	if (train_job_parse(copy, base_dir, &job->t) < 0)
		goto out;
	if (!strcmp(job->t.model, "random")) {
		err_set("'model': a stage needs a model folder (bundles refer to it), not \"random\"");
		goto out;
	}
	rc = 0;
out:
	cJSON_Delete(copy);
	return rc;
}

void stage_job_free(stage_job_t *job)
{
	train_job_free(&job->t);
	free(job->in);
	free(job->names);
	memset(job, 0, sizeof *job);
}

static const char *s_input(const stage_job_t *job, const char *name)
{
	for (int i = 0; i < job->nin; i++)
		if (!strcmp(job->in[i].name, name))
			return job->in[i].path;
	return NULL;
}

/* A group: trained tensors with their own data, optimizer and loss. */
typedef struct group {
	int expert;             /* the segment's expert (fixed routing), or -1 */
	data_t *data;
	data_cursor_t cur;
	const params_t *params;
	optim_t *opt;
	int *tok, *tgt, t;
	int ntarget;
	double loss;
} group_t;

typedef struct srun {
	const stage_job_t *job;
	model_t *m;
	moe_t *mo;
	tokenizer_t *tok;
	group_t *g;
	int ng;
	int *tokens, *targets;
	dmodel_t *dm;           /* the device path (job->t.K), or NULL */
	flops_t fl;
	double flops;
} srun_t;

static void s_emit(FILE *out, cJSON *ev)
{
	char *s = jsonu_print(ev);

	if (s)
		fprintf(out, "%s\n", s), fflush(out);
	free(s);
	cJSON_Delete(ev);
}

static cJSON *s_event(const char *name)
{
	cJSON *ev = cJSON_CreateObject();

	cJSON_AddStringToObject(ev, "event", name);
	return ev;
}

/* The mixture of this stage, inputs loaded; 0 or -1. */
static int s_mixture(srun_t *r)
{
	const stage_job_t *job = r->job;
	moe_config_t c = job->cfg;
	const char *names[MOE_MAX_EXPERTS];
	bundle_expert_info_t info;
	int n = 0, kind = job->kind;

	if (kind == STAGE_DOMAIN || c.method == MOE_MOLORA) {
		for (int i = 0; i < job->nnames; i++)
			names[n++] = job->names[i];
	} else if (kind == STAGE_ROUTER) {
		/* every input but the universal one is a domain expert, in order */
		for (int i = 0; i < job->nin; i++)
			if (strcmp(job->in[i].name, "universal")) {
				if (bundle_expert_info(job->in[i].path, &info) < 0)
					return -1;
				if (n && (info.rank != c.domain.rank || info.alpha != c.domain.alpha))
					return err_set("expert '%s': every domain expert needs the same rank and alpha",
						       job->in[i].name);
				c.domain.rank = info.rank, c.domain.alpha = info.alpha, c.domain.rslora = info.rslora;
				names[n++] = job->in[i].name;
			}
		if (!n)
			return err_set("'experts': the router stage needs the domain experts");
	}
	if (c.method != MOE_MOLORA && kind != STAGE_UNIVERSAL && kind != STAGE_JOINT) {
		const char *u = s_input(job, "universal");
		if (!u)
			return err_set("'experts': the %s stage needs the universal expert (name \"universal\")",
				       s_kinds[kind]);
		if (bundle_expert_info(u, &info) < 0)
			return -1;
		c.universal.rank = info.rank, c.universal.alpha = info.alpha;
		c.universal.rslora = info.rslora, c.universal.targets = info.targets;
	}
	c.n_domain = n;
	if (!(r->mo = moe_attach(r->m, &c, names, job->t.seed)))
		return -1;
	for (int i = 0; i < job->nin; i++) {
		int e = moe_expert_index(r->mo, job->in[i].name);
		if (e < 0)
			return err_set("'experts': '%s' is not an expert of this stage", job->in[i].name);
		if (kind == STAGE_DOMAIN && e > 0)
			return err_set("'experts': '%s' is trained by this stage, not an input", job->in[i].name);
		if (bundle_load_expert(r->mo, e, job->in[i].path) < 0)
			return -1;
	}
	if (job->router[0] && (kind != STAGE_ROUTER || bundle_load_router(r->mo, job->router) < 0))
		return kind != STAGE_ROUTER ? err_set("'router' is for the router stage") : -1;
	return 0;
}

static int s_group_new(srun_t *r, int expert, const char *const *data, int ndata, const params_t *p)
{
	const train_job_t *t = &r->job->t;
	group_t *g = &r->g[r->ng++];

	g->expert = expert;
	g->params = p;
	if (!(g->data = data_load(data, ndata, r->tok, t->seq_len, t->seed)) ||
	    !(g->opt = optim_new(p, &t->opt)))
		return -1;
	g->tok = malloc((size_t)t->batch * t->seq_len * sizeof(int));
	g->tgt = malloc((size_t)t->batch * t->seq_len * sizeof(int));
	return g->tok && g->tgt ? 0 : err_set("out of memory");
}

/* Whether the device path runs this stage: the universal stage (expert 0
 * alone is a LoRA for every method but MoLoRA), MoDULA-Res's domain and
 * router stages, and joint LoRA (dmodel.h). */
static int s_device_runs(const stage_job_t *job)
{
	int m = job->cfg.method, staged = m == MOE_RES || m == MOE_RES_NORES || m == MOE_FLAN;

	return (job->kind == STAGE_UNIVERSAL && m != MOE_MOLORA) ||
	       ((job->kind == STAGE_DOMAIN || job->kind == STAGE_ROUTER) && staged) ||
	       (job->kind == STAGE_JOINT && (m == MOE_LORA || (m == MOE_MOLORA && !job->cfg.top_k)));
}

/* The weights on the device, the host keeping the layer shapes. */
static int s_device_model(srun_t *r)
{
	const train_job_t *t = &r->job->t;
	model_config_t cfg;
	char path[TRAIN_PATH_MAX + 16];

	snprintf(path, sizeof path, "%s/config.json", t->model);
	if (model_config_load(path, &cfg) < 0 || !(r->m = model_shape(&cfg)))
		return -1;
	return (r->dm = dmodel_load(t->model, t->K)) ? 0 : -1;
}

/* Route as the stage does and put the mixture on the device (the domain
 * stage's rows are routed again at each micro-batch: dmodel_route_rows). */
static int s_device_attach(srun_t *r)
{
	const train_job_t *t = &r->job->t;
	moe_seg_t seg[MOE_MAX_EXPERTS];
	params_t all = { 0 };
	int rc = -1;

	for (int i = 0; i < r->ng; i++)
		seg[i] = (moe_seg_t){ r->g[i].expert, i, i + 1 };
	if (r->g[0].expert >= 0 ? moe_route_fixed(r->mo, seg, r->ng, r->ng) < 0 : (moe_route_soft(r->mo), 0))
		return -1;
	/* the groups' tensors together are what trains */
	for (int i = 0; i < r->ng; i++)
		for (int k = 0; k < r->g[i].params->n; k++) {
			const param_t *p = &r->g[i].params->v[k];
			if (p->grad && params_add(&all, p->name, p->data, p->grad, p->ndim, p->shape) < 0)
				goto out;
		}
	rc = dmodel_attach_moe(r->dm, r->mo, &all) < 0 ? -1
		: dmodel_reserve(r->dm, r->ng * t->batch, t->seq_len);
out:
	params_clear(&all);
	return rc;
}

/* A micro-batch on the device path: each group's rows weighted by its own
 * target count (as the CPU engine's s_micro), its loss from the rows. */
static int s_dmicro(srun_t *r, int T, long *ntok)
{
	const train_job_t *t = &r->job->t;
	int B = t->batch, nseq = r->ng * B, ex[MOE_MAX_EXPERTS * 64], n[MOE_MAX_EXPERTS] = { 0 };
	float w[MOE_MAX_EXPERTS * 64];
	const float *hl;
	double loss;

	if (nseq > MOE_MAX_EXPERTS * 64)
		return err_set("%d sequences per micro-batch on the device path (at most %d)", nseq,
			       MOE_MAX_EXPERTS * 64);
	for (int i = 0; i < nseq * T; i++)
		n[i / (B * T)] += r->targets[i] >= 0;
	for (int j = 0; j < nseq; j++) {
		int i = j / B;
		ex[j] = r->g[i].expert, w[j] = n[i] ? 1.0f / (float)n[i] : 0.0f;
	}
	if ((r->job->kind == STAGE_DOMAIN && dmodel_route_rows(r->dm, ex, nseq, T) < 0) ||
	    dmodel_seq_weights(r->dm, w, nseq) < 0 ||
	    dmodel_train_micro(r->dm, r->tokens, r->targets, nseq, T, 1.0f / t->accum, &loss) < 0)
		return -1;
	hl = dmodel_row_losses(r->dm);
	for (int i = 0; i < r->ng; i++) {
		double sum = 0.0;
		for (int k = i * B * T; k < (i + 1) * B * T; k++)
			sum += r->targets[k] >= 0 ? hl[k] : 0.0;
		r->g[i].loss += sum / (n[i] ? n[i] : 1);
		r->g[i].ntarget += n[i];
	}
	*ntok += (long)nseq * T;
	r->flops += flops_batch(&r->fl, (long)nseq, T);
	return 0;
}

static int s_setup(srun_t *r)
{
	const stage_job_t *job = r->job;
	const train_job_t *t = &job->t;
	const char *const *data = (const char *const *)t->data;
	char tokpath[TRAIN_PATH_MAX + 32];
	struct stat st;
	int kind = job->kind, ng = kind == STAGE_DOMAIN ? job->nnames : 1, rc;
	moe_t *mo;

	if (t->K && !s_device_runs(job))
		fprintf(stderr, "modula-engine stage: the %s stage of %s runs on the CPU engine (the "
			"device path runs the universal stage, MoDULA domain experts and routers, and "
			"joint LoRA and MoLoRA without top-k)\n",
			s_kinds[kind], moe_method_name(job->cfg.method));
	if (t->K && s_device_runs(job) ? s_device_model(r) < 0 : !(r->m = model_load(t->model)))
		return -1;
	snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", t->model);
	if (!(r->tok = tokenizer_open(t->tokenizer[0] ? t->tokenizer : !stat(tokpath, &st) ? tokpath : "bytes")))
		return -1;
	if (tokenizer_vocab_size(r->tok) > r->m->cfg.vocab_size || t->seq_len > r->m->cfg.max_seq)
		return err_set("the tokenizer's vocabulary (%d) or 'seq_len' (%d) exceeds the model's (%d, %d)",
			       tokenizer_vocab_size(r->tok), t->seq_len, r->m->cfg.vocab_size, r->m->cfg.max_seq);
	if (s_mixture(r) < 0 || (!r->dm && model_reserve(r->m, ng * t->batch, t->seq_len) < 0))
		return -1;
	mo = r->mo;
	if (!(r->g = calloc((size_t)ng, sizeof *r->g)) ||
	    !(r->tokens = malloc((size_t)ng * t->batch * t->seq_len * sizeof(int))) ||
	    !(r->targets = malloc((size_t)ng * t->batch * t->seq_len * sizeof(int))))
		return err_set("out of memory");
	switch (kind) {
	case STAGE_UNIVERSAL:
		rc = moe_set_trainable(mo, 1, 0) < 0 ? -1 : s_group_new(r, 0, data, t->ndata, &mo->exp[0].params);
		break;
	case STAGE_DOMAIN:
		if (moe_set_trainable(mo, ((uint64_t)1 << (ng + 1)) - 2, 0) < 0)
			return -1;
		for (int i = 0; i < ng; i++)
			if (s_group_new(r, i + 1, data + i, 1, &mo->exp[i + 1].params) < 0)
				return -1;
		rc = 0;
		break;
	case STAGE_ROUTER:
		rc = moe_set_trainable(mo, 0, 1) < 0 ? -1 : s_group_new(r, -1, data, t->ndata, &mo->router);
		break;
	default:
		rc = moe_set_trainable(mo, ~(uint64_t)0, 1) < 0 ? -1
			: s_group_new(r, job->cfg.method == MOE_LORA ? 0 : -1, data, t->ndata, &mo->train);
	}
	return rc < 0 || !r->dm ? rc : s_device_attach(r);
}

/* The FLOPs counts of the stage's mixture as each token runs through it:
 * fixed routing to `fixed` (expert 0, or a domain expert, after expert 0
 * for Res), or soft routing (fixed < 0: Res's expert 0, then every
 * routed expert and the router). */
static void s_flops(srun_t *r, int fixed)
{
	const moe_t *mo = r->mo;
	flops_adapter_t ad = { .targets = mo->cfg.universal.targets };
	int m = mo->cfg.method, lo = fixed < 0 ? mo->route_base : fixed;
	int hi = fixed < 0 ? mo->route_base + mo->n_route : fixed + 1;

	if ((m == MOE_RES || m == MOE_RES_NORES) && fixed != 0)
		ad.e[ad.n++] = (flops_expert_t){ mo->exp[0].rank, 0, mo->exp[0].trainable };
	for (int e = lo; e < hi; e++)
		ad.e[ad.n++] = (flops_expert_t){ mo->exp[e].rank, mo->exp[e].reads_h, mo->exp[e].trainable };
	if (fixed < 0)
		ad.router_rows = mo->n_route, ad.router_trains = mo->router_trainable;
	flops_count(&r->fl, &r->m->cfg, 0, &ad);
}

/* Mean cross-entropy pieces over rows [lo, hi) from the last logits. */
static double s_rows_loss(const model_t *m, const int *targets, int lo, int hi, int *count)
{
	int V = m->cfg.vocab_size;
	double sum = 0.0;

	*count = 0;
	for (int i = lo; i < hi; i++) {
		const float *z = m->logits + (size_t)i * V;
		float mx = z[0];
		double se = 0.0;
		if (targets[i] < 0)
			continue;
		for (int v = 1; v < V; v++)
			mx = fmaxf(mx, z[v]);
		for (int v = 0; v < V; v++)
			se += exp((double)z[v] - mx);
		sum += log(se) + mx - z[targets[i]];
		(*count)++;
	}
	return sum;
}

static void s_scale(const params_t *p, float k)
{
	for (int i = 0; i < p->n; i++)
		for (size_t j = 0; p->v[i].grad && j < p->v[i].n; j++)
			p->v[i].grad[j] *= k;
}

/* One micro-batch: every group's next rows, one forward and backward;
 * each group's gradient is normalised by its own target count. 0, or -1
 * via err_set() (the device path). */
static int s_micro(srun_t *r, long key, long *ntok)
{
	const train_job_t *t = &r->job->t;
	int B = t->batch, T = 0, ntot = 0;
	moe_seg_t seg[MOE_MAX_EXPERTS];

	for (int i = 0; i < r->ng; i++) {
		data_next_batch(r->g[i].data, &r->g[i].cur, B, r->g[i].tok, r->g[i].tgt, &r->g[i].t);
		if (r->g[i].t > T)
			T = r->g[i].t;
	}
	for (int i = 0; i < r->ng; i++) {
		group_t *g = &r->g[i];
		for (int b = 0; b < B; b++)
			for (int k = 0; k < T; k++) {
				size_t o = ((size_t)i * B + b) * T + k;
				r->tokens[o] = k < g->t ? g->tok[b * g->t + k] : g->data->pad_id;
				r->targets[o] = k < g->t ? g->tgt[b * g->t + k] : -1;
			}
		seg[i] = (moe_seg_t){ g->expert, i * B, (i + 1) * B };
	}
	if (r->dm)
		return s_dmicro(r, T, ntok);
	if (r->g[0].expert >= 0)
		moe_route_fixed(r->mo, seg, r->ng, r->ng * B);
	else
		moe_route_soft(r->mo);
	r->mo->aux_scale = 1.0f / t->accum;
	float ce = model_forward(r->m, r->tokens, r->targets, r->ng * B, T, (uint64_t)key, 1);
	ntot = model_target_count(r->m);
	*ntok += (long)r->ng * B * T;
	r->flops += flops_batch(&r->fl, (long)r->ng * B, T);
	if (r->ng == 1) {
		r->g[0].loss += ce + moe_aux_loss(r->mo);
		r->g[0].ntarget += ntot;
		model_backward(r->m, 1.0f / t->accum);
		return 0;
	}
	float k[MOE_MAX_EXPERTS];
	for (int i = 0; i < r->ng; i++) {
		int n;
		r->g[i].loss += s_rows_loss(r->m, r->targets, i * B * T, (i + 1) * B * T, &n) / (n ? n : 1);
		k[i] = n ? (float)ntot / (float)n : 1.0f;
		s_scale(r->g[i].params, 1.0f / k[i]);
	}
	model_backward(r->m, 1.0f / t->accum);
	for (int i = 0; i < r->ng; i++)
		s_scale(r->g[i].params, k[i]);
	return 0;
}

static int s_finish(srun_t *r, cJSON *outs)
{
	const stage_job_t *job = r->job;
	const char *od = job->t.out_dir;
	char path[TRAIN_PATH_MAX + 128], rel[MOE_NAME_MAX + 32];
	moe_t *mo = r->mo;

	if (fsx_mkdirs(od, 0755) < 0 || (r->dm && dmodel_sync_to_host(r->dm, NULL) < 0))
		return -1;
	for (int e = 0; e < mo->n_exp; e++) {
		if (!mo->exp[e].trainable)
			continue;
		snprintf(path, sizeof path, "%s/experts", od);
		if (fsx_mkdirs(path, 0755) < 0)
			return -1;
		snprintf(rel, sizeof rel, "experts/%s.safetensors", mo->exp[e].name);
		snprintf(path, sizeof path, "%s/%s", od, rel);
		if (bundle_save_expert(mo, e, path) < 0 || train_add_output(outs, od, mo->exp[e].name, rel) < 0)
			return -1;
	}
	if (mo->router_trainable) {
		snprintf(path, sizeof path, "%s/router.safetensors", od);
		if (bundle_save_router(mo, path) < 0 || train_add_output(outs, od, "router", "router.safetensors") < 0)
			return -1;
	}
	if (job->kind == STAGE_ROUTER || job->kind == STAGE_JOINT) {
		snprintf(path, sizeof path, "%s/bundle", od);
		if (bundle_write(mo, path, job->t.model) < 0 ||
		    train_add_output(outs, od, "bundle", "bundle/" BUNDLE_MANIFEST) < 0)
			return -1;
	}
	if (job->cfg.method == MOE_LORA) {
		char src[TRAIN_PATH_MAX + 128];
		snprintf(src, sizeof src, "%s/experts/universal.safetensors", od);
		snprintf(path, sizeof path, "%s/adapter", od);
		if (bundle_export_peft(src, path) < 0 ||
		    train_add_output(outs, od, "adapter_config", "adapter/adapter_config.json") < 0 ||
		    train_add_output(outs, od, "adapter_weights", "adapter/adapter_model.safetensors") < 0)
			return -1;
	}
	return 0;
}

static void s_free(srun_t *r)
{
	for (int i = 0; r->g && i < r->ng; i++) {
		data_destroy(&r->g[i].data);
		optim_destroy(&r->g[i].opt);
		free(r->g[i].tok);
		free(r->g[i].tgt);
	}
	free(r->g);
	free(r->tokens);
	free(r->targets);
	tokenizer_destroy(&r->tok);
	dmodel_destroy(&r->dm);
	model_destroy(&r->m);
	moe_destroy(&r->mo);
}

int stage_run(const stage_job_t *job, FILE *events)
{
	const train_job_t *t = &job->t;
	srun_t r = { .job = job };
	cJSON *ev, *arr;
	double t0, tstep;
	long ntok_all = 0, records = 0, trainable = 0;
	int rc = -1;

	if (s_setup(&r) < 0)
		goto out;
	s_flops(&r, r.g[0].expert);     /* a domain stage's experts share one rank: any stands for all */
	for (int i = 0; i < r.ng; i++)
		records += r.g[i].data->n, trainable += (long)params_numel(r.g[i].params, 1);
	ev = s_event("start");
	cJSON_AddNumberToObject(ev, "total_steps", (double)t->steps);
	cJSON_AddNumberToObject(ev, "step", 0);
	cJSON_AddStringToObject(ev, "mode", "stage");
	cJSON_AddStringToObject(ev, "stage", s_kinds[job->kind]);
	cJSON_AddStringToObject(ev, "method", moe_method_name(job->cfg.method));
	cJSON_AddStringToObject(ev, "device", r.dm && t->K ? kdevice_name(t->K->dev) : "cpu");
	cJSON_AddNumberToObject(ev, "params", (double)(r.dm ? r.m->n_params : params_numel(&r.m->params, 0)));
	cJSON_AddNumberToObject(ev, "trainable_params", (double)trainable);
	cJSON_AddNumberToObject(ev, "records", (double)records);
	cJSON_AddBoolToObject(ev, "resumed", 0);
	s_emit(events, ev);
	t0 = tstep = mtime_s();
	for (long step = 0; step < t->steps; step++) {
		long ntok = 0;
		for (int i = 0; i < r.ng; i++)
			params_zero_grad(r.g[i].params), r.g[i].loss = 0.0, r.g[i].ntarget = 0;
		if (r.dm && dmodel_zero_grad(r.dm) < 0)
			goto out;
		for (int a = 0; a < t->accum; a++)
			if (s_micro(&r, step * t->accum + a, &ntok) < 0)
				goto out;
		for (int i = 0; r.dm && i < r.ng; i++)
			if (dmodel_step_group(r.dm, &t->opt, optim_lr(&t->opt, step), ++r.g[i].opt->step,
					      r.g[i].params) < 0)
				goto out;
		for (int i = 0; !r.dm && i < r.ng; i++) {
			optim_clip(r.g[i].opt);
			optim_step(r.g[i].opt, optim_lr(&t->opt, step));
		}
		ntok_all += ntok;
		double now = mtime_s(), loss = 0.0;
		if ((step + 1) % t->progress_every && step + 1 != t->steps) {
			tstep = now;
			continue;
		}
		ev = s_event("progress");
		cJSON_AddNumberToObject(ev, "step", (double)(step + 1));
		cJSON_AddNumberToObject(ev, "total_steps", (double)t->steps);
		arr = r.ng > 1 ? cJSON_AddObjectToObject(ev, "losses") : NULL;
		for (int i = 0; i < r.ng; i++) {
			loss += r.g[i].loss / t->accum / r.ng;
			if (arr)
				cJSON_AddNumberToObject(arr, r.mo->exp[r.g[i].expert].name, r.g[i].loss / t->accum);
		}
		cJSON_AddNumberToObject(ev, "loss", loss);
		cJSON_AddNumberToObject(ev, "lr", optim_lr(&t->opt, step));
		cJSON_AddNumberToObject(ev, "tokens_per_s", now > tstep ? ntok / (now - tstep) : 0.0);
		cJSON_AddNumberToObject(ev, "tokens", (double)ntok_all);
		cJSON_AddNumberToObject(ev, "flops", r.flops);
		cJSON_AddNumberToObject(ev, "elapsed_s", now - t0);
		s_emit(events, ev);
		tstep = now;
	}
	ev = s_event("done");
	arr = cJSON_AddArrayToObject(ev, "outputs");
	cJSON_AddArrayToObject(ev, "evaluations");
	if (s_finish(&r, arr) < 0) {
		cJSON_Delete(ev);
		goto out;
	}
	cJSON *cost = cJSON_AddObjectToObject(ev, "cost");
	cJSON_AddNumberToObject(cost, "trainable_params", (double)trainable);
	cJSON_AddNumberToObject(cost, "tokens", (double)ntok_all);
	cJSON_AddNumberToObject(cost, "sequences", (double)t->steps * t->accum * t->batch * r.ng);
	cJSON_AddNumberToObject(cost, "flops", r.flops);
	cJSON_AddNumberToObject(cost, "seconds", mtime_s() - t0);
	s_emit(events, ev);
	rc = 0;
out:
	s_free(&r);
	return rc;
}
