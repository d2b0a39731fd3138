/* train.c: the training loop and its job file; see train.h. */
#include "config.h"
#include "worker/train.h"
#include "worker/ckpt.h"
#include "worker/flops.h"
#include "worker/data.h"
#include "worker/dmodel.h"
#include "worker/model.h"
#include "worker/tokenizer.h"
#include "err.h"
#include "jsonu.h"
#include "mtime.h"
#include "sha256.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static volatile sig_atomic_t s_stop_requested;
static int s_stopped;

void train_request_stop(void)
{
	s_stop_requested = 1;
}

int train_was_stopped(void)
{
	return s_stopped;
}

void train_default_config(model_config_t *c)
{
	*c = (model_config_t){
		.arch = "llama", .vocab_size = TOK_BYTES_VOCAB, .dim = 128, .n_layers = 4,
		.n_heads = 4, .n_kv_heads = 2, .head_dim = 32, .ffn_dim = 352, .max_seq = 256,
		.rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 1, .qkv_bias = 0,
		.bos_id = TOK_BYTES_BOS, .eos_id = TOK_BYTES_EOS, .pad_id = TOK_BYTES_PAD,
	};
}

static int s_resolve(char *dst, const char *base, const char *p)
{
	int n = p[0] == '/' || !base[0] ? snprintf(dst, TRAIN_PATH_MAX, "%s", p)
					 : snprintf(dst, TRAIN_PATH_MAX, "%s/%s", base, p);

	if (n < 0 || n >= TRAIN_PATH_MAX)
		return err_set("path too long: '%s'", p);
	return 0;
}

/* Overrides of the random model's shape. */
static int s_parse_model_config(const cJSON *o, model_config_t *c)
{
	static const char *const keys[] = { "vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads",
		"head_dim", "ffn_dim", "max_seq", "tie_embeddings", "qkv_bias", "rope_theta", "rms_eps", NULL };
	int *ints[] = { &c->vocab_size, &c->dim, &c->n_layers, &c->n_heads, &c->n_kv_heads,
			&c->head_dim, &c->ffn_dim, &c->max_seq, &c->tie_embeddings, &c->qkv_bias };
	long long v;
	double d;
	int head_given = cJSON_HasObjectItem(o, "head_dim");

	if (jsonu_check_keys(o, keys) < 0)
		return -1;
	for (int i = 0; i < 10; i++) {
		if (jsonu_opt_int(o, keys[i], *ints[i], &v) < 0)
			return -1;
		*ints[i] = (int)v;
	}
	if (!head_given)
		c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
	if (jsonu_opt_num(o, "rope_theta", c->rope_theta, &d) < 0)
		return -1;
	c->rope_theta = (float)d;
	if (jsonu_opt_num(o, "rms_eps", c->rms_eps, &d) < 0)
		return -1;
	c->rms_eps = (float)d;
	return model_config_check(c);
}

static int s_parse_lora(const cJSON *o, lora_config_t *c)
{
	static const char *const keys[] = { "rank", "alpha", "rslora", "dropout", "targets", NULL };
	long long r;
	double alpha, drop;
	const cJSON *t;

	*c = (lora_config_t){ .rank = 8, .alpha = 16, .targets = (1u << MODEL_NSLOTS) - 1 };
	if (!o)
		return 0;
	if (jsonu_check_keys(o, keys) < 0 || jsonu_opt_int(o, "rank", 8, &r) < 0 ||
	    jsonu_opt_num(o, "alpha", 2.0 * r, &alpha) < 0 ||
	    jsonu_opt_bool(o, "rslora", 0, &c->rslora) < 0 ||
	    jsonu_opt_num(o, "dropout", 0.0, &drop) < 0)
		return -1;
	if ((t = cJSON_GetObjectItemCaseSensitive(o, "targets")) && lora_parse_targets(t, &c->targets) < 0)
		return -1;
	if (r <= 0 || drop < 0 || drop >= 1)
		return err_set("'rank' = %lld, 'dropout' = %g: rank must be positive, dropout in [0, 1)", r, drop);
	c->rank = (int)r, c->alpha = (float)alpha, c->dropout = (float)drop;
	return 0;
}

static int s_hash_job(const cJSON *j, train_job_t *job)
{
	cJSON *copy = cJSON_Duplicate(j, 1);
	char *text;
	uint8_t d[SHA256_LEN];
	int rc;

	if (!copy)
		return err_set("out of memory");
	/* Where it runs and how chatty it is do not change the result. */
	cJSON_DeleteItemFromObjectCaseSensitive(copy, "stop_at");
	cJSON_DeleteItemFromObjectCaseSensitive(copy, "out_dir");
	cJSON_DeleteItemFromObjectCaseSensitive(copy, "progress_every");
	text = jsonu_print(copy);
	cJSON_Delete(copy);
	if (!text)
		return err_set("out of memory");
	rc = sha256_buf(text, strlen(text), d);
	sha256_hex(d, job->job_sha256);
	job->job_text = text;
	return rc;
}

int train_job_parse(const cJSON *j, const char *base_dir, train_job_t *job)
{
	static const char *const keys[] = { "model", "model_config", "tokenizer", "data", "mode",
		"lora", "steps", "batch", "seq_len", "accum", "lr", "min_lr_ratio", "warmup",
		"weight_decay", "beta1", "beta2", "eps", "clip", "seed", "checkpoint_every",
		"progress_every", "stop_at", "out_dir", NULL };
	const char *model, *tok, *mode, *out;
	const cJSON *data, *it;
	long long v[9];
	double f[7];

	memset(job, 0, sizeof *job);
	train_default_config(&job->random_cfg);
	if (!cJSON_IsObject(j))
		return err_set("a job must be a JSON object");
	if (jsonu_check_keys(j, keys) < 0 || jsonu_req_str(j, "model", &model) < 0 ||
	    jsonu_opt_str(j, "tokenizer", "", &tok) < 0 || jsonu_opt_str(j, "mode", "lora", &mode) < 0 ||
	    jsonu_req_str(j, "out_dir", &out) < 0)
		return -1;
	if (strcmp(model, "random") ? s_resolve(job->model, base_dir, model) < 0
				    : s_resolve(job->model, "", model) < 0)
		return -1;
	if ((it = cJSON_GetObjectItemCaseSensitive(j, "model_config"))) {
		if (strcmp(model, "random"))
			return err_set("'model_config' is only for \"model\": \"random\"");
		if (s_parse_model_config(it, &job->random_cfg) < 0)
			return err_prefix("'model_config'");
	}
	if (tok[0] && (strcmp(tok, "bytes") ? s_resolve(job->tokenizer, base_dir, tok)
					    : s_resolve(job->tokenizer, "", tok)) < 0)
		return -1;
	if (!strcmp(mode, "full"))
		job->full = 1;
	else if (strcmp(mode, "lora"))
		return err_set("'mode': unknown mode '%s' (use full or lora)", mode);
	if (s_parse_lora(cJSON_GetObjectItemCaseSensitive(j, "lora"), &job->lora) < 0)
		return err_prefix("'lora'");
	data = cJSON_GetObjectItemCaseSensitive(j, "data");
	if (cJSON_IsString(data) || cJSON_IsArray(data)) {
		int n = cJSON_IsString(data) ? 1 : cJSON_GetArraySize(data);
		if (!n || !(job->data = calloc((size_t)n, sizeof *job->data)))
			return err_set("'data': expected one or more JSONL paths");
		for (int i = 0; i < n; i++) {
			it = cJSON_IsString(data) ? data : cJSON_GetArrayItem(data, i);
			if (!cJSON_IsString(it))
				return err_set("'data': expected strings, got %s", jsonu_type_name(it));
			if (!(job->data[i] = malloc(TRAIN_PATH_MAX)) ||
			    s_resolve(job->data[i], base_dir, it->valuestring) < 0)
				return err_set("'data': bad path '%s'", it->valuestring);
			job->ndata++;
		}
	} else {
		return err_set("'data': expected a path or an array of paths, got %s", jsonu_type_name(data));
	}
	if (jsonu_req_int(j, "steps", &v[0]) < 0 || jsonu_opt_int(j, "batch", 8, &v[1]) < 0 ||
	    jsonu_opt_int(j, "seq_len", 128, &v[2]) < 0 || jsonu_opt_int(j, "accum", 1, &v[3]) < 0 ||
	    jsonu_opt_int(j, "warmup", 0, &v[4]) < 0 || jsonu_opt_int(j, "seed", 0, &v[5]) < 0 ||
	    jsonu_opt_int(j, "checkpoint_every", 0, &v[6]) < 0 ||
	    jsonu_opt_int(j, "progress_every", 1, &v[7]) < 0 || jsonu_opt_int(j, "stop_at", 0, &v[8]) < 0 ||
	    jsonu_opt_num(j, "lr", 2e-4, &f[0]) < 0 || jsonu_opt_num(j, "min_lr_ratio", 0.1, &f[1]) < 0 ||
	    jsonu_opt_num(j, "weight_decay", 0.0, &f[2]) < 0 || jsonu_opt_num(j, "beta1", 0.9, &f[3]) < 0 ||
	    jsonu_opt_num(j, "beta2", 0.999, &f[4]) < 0 || jsonu_opt_num(j, "eps", 1e-8, &f[5]) < 0 ||
	    jsonu_opt_num(j, "clip", 1.0, &f[6]) < 0)
		return -1;
	if (v[0] <= 0 || v[1] <= 0 || v[2] <= 1 || v[3] <= 0 || v[4] < 0 || v[5] < 0 || v[6] < 0 ||
	    v[7] <= 0 || v[8] < 0 || v[1] > 65536 || v[2] > 1 << 20 || v[3] > 65536)
		return err_set("'steps', 'batch', 'accum', 'progress_every' must be positive, 'seq_len' > 1, "
			       "'warmup', 'seed', 'checkpoint_every', 'stop_at' not negative");
	job->steps = v[0], job->batch = (int)v[1], job->seq_len = (int)v[2], job->accum = (int)v[3];
	job->seed = (uint64_t)v[5], job->checkpoint_every = v[6], job->progress_every = v[7];
	job->stop_at = v[8];
	job->opt = (optim_config_t){
		.lr = (float)f[0], .min_lr_ratio = (float)f[1], .weight_decay = (float)f[2],
		.beta1 = (float)f[3], .beta2 = (float)f[4], .eps = (float)f[5], .clip = (float)f[6],
		.warmup = v[4], .total_steps = v[0],
	};
	if (s_resolve(job->out_dir, base_dir, out) < 0)
		return -1;
	return s_hash_job(j, job);
}

void train_job_free(train_job_t *job)
{
	for (int i = 0; i < job->ndata; i++)
		free(job->data[i]);
	free(job->data);
	free(job->job_text);
	memset(job, 0, sizeof *job);
}

/* Print one event line and flush. */
static void s_emit(FILE *out, cJSON *ev)
{
	char *s = jsonu_print(ev);

	if (s) {
		fprintf(out, "%s\n", s);
		fflush(out);
	}
	free(s);
	cJSON_Delete(ev);
}

static cJSON *s_event(const char *name)
{
	cJSON *ev = cJSON_CreateObject();

	cJSON_AddStringToObject(ev, "event", name);
	return ev;
}

/* Everything a run holds. */
typedef struct run {
	const train_job_t *job;
	model_t *m;
	lora_t *lo;
	tokenizer_t *tok;
	data_t *data;
	optim_t *opt;
	const params_t *train;
	int *tokens, *targets;
	data_cursor_t cur;
	long step;
	dmodel_t *dm;           /* the device path (job->K), or NULL */
	flops_t fl;             /* the model's FLOPs counts */
	long ntokens;           /* since step 0, resumes included */
	double flops;
	char ckdir[TRAIN_PATH_MAX + 16];
} run_t;

static dmodel_t *s_device_model(run_t *r)
{
	model_config_t cfg;
	char path[TRAIN_PATH_MAX + 16];

	if (r->m) {
		cfg = r->m->cfg;
		r->dm = dmodel_from_host(r->m, r->job->K);
		model_destroy(&r->m);
	} else {
		snprintf(path, sizeof path, "%s/config.json", r->job->model);
		if (model_config_load(path, &cfg) < 0)
			return NULL;
		r->dm = dmodel_load(r->job->model, r->job->K);
	}
	return r->dm && (r->m = model_shape(&cfg)) ? r->dm : NULL;
}

static int s_setup(run_t *r)
{
	const train_job_t *job = r->job;
	char tokpath[TRAIN_PATH_MAX + 32];
	struct stat st;

	if (job->K && job->full)
		return err_set("full-parameter training runs on the CPU engine only (--device cpu)");
	if (!strcmp(job->model, "random")) {
		if (!(r->m = model_new(&job->random_cfg)))
			return -1;
		model_init_random(r->m, job->seed);
	} else if (!job->K && !(r->m = model_load(job->model))) {
		return -1;
	}
	/* The device path: the weights go to the device, the host keeps the
	 * layer shapes the adapter descriptions hang on. */
	if (job->K && !s_device_model(r))
		return -1;
	snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", job->model);
	if (!(r->tok = tokenizer_open(job->tokenizer[0] ? job->tokenizer
				      : strcmp(job->model, "random") && !stat(tokpath, &st) ? tokpath : "bytes")))
		return -1;
	if (tokenizer_vocab_size(r->tok) > r->m->cfg.vocab_size)
		return err_set("the tokenizer's vocabulary (%d) is larger than the model's (%d)",
			       tokenizer_vocab_size(r->tok), r->m->cfg.vocab_size);
	if (job->seq_len > r->m->cfg.max_seq)
		return err_set("'seq_len' = %d is longer than the model's max_seq %d", job->seq_len,
			       r->m->cfg.max_seq);
	if (!(r->data = data_load((const char *const *)job->data, job->ndata, r->tok, job->seq_len, job->seed)))
		return -1;
	if (job->full) {
		if (model_enable_grads(r->m) < 0)
			return -1;
		r->train = &r->m->params;
		flops_count(&r->fl, &r->m->cfg, 1, NULL);
	} else {
		flops_adapter_t ad = { .targets = job->lora.targets, .n = 1,
				       .e = { { .rank = job->lora.rank, .trains = 1 } } };
		if (!(r->lo = lora_attach(r->m, &job->lora, job->seed)))
			return -1;
		r->train = &r->lo->params;
		flops_count(&r->fl, &r->m->cfg, 0, &ad);
	}
	if (!(r->opt = optim_new(r->train, &job->opt)))
		return -1;
	if (r->dm ? dmodel_attach_lora(r->dm, r->lo, r->train) < 0 ||
		    dmodel_reserve(r->dm, job->batch, job->seq_len) < 0
		  : model_reserve(r->m, job->batch, job->seq_len) < 0)
		return -1;
	r->tokens = malloc((size_t)job->batch * job->seq_len * sizeof(int));
	r->targets = malloc((size_t)job->batch * job->seq_len * sizeof(int));
	if (!r->tokens || !r->targets)
		return err_set("out of memory");
	snprintf(r->ckdir, sizeof r->ckdir, "%s/checkpoints", job->out_dir);
	return 0;
}

static int s_resume(run_t *r)
{
	char path[TRAIN_PATH_MAX + 64], *text = NULL;
	cJSON *st = NULL;
	const char *sha;
	long long step, epoch, pos, tokens;
	int k = ckpt_latest(r->ckdir, path, sizeof path);

	if (k <= 0)
		return k;
	if (ckpt_load(path, r->train, r->opt, &text) < 0)
		return -1;
	if (!(st = jsonu_parse(text, strlen(text), path)) || jsonu_req_str(st, "job_sha256", &sha) < 0 ||
	    jsonu_req_int(st, "step", &step) < 0 || jsonu_req_int(st, "data_epoch", &epoch) < 0 ||
	    jsonu_req_int(st, "data_pos", &pos) < 0 || jsonu_opt_int(st, "tokens", 0, &tokens) < 0 ||
	    jsonu_opt_num(st, "flops", 0.0, &r->flops) < 0) {
		err_prefix("checkpoint '%s'", path);
		goto err;
	}
	if (strcmp(sha, r->job->job_sha256)) {
		err_set("out_dir '%s' holds checkpoints of another job (%.12s, this one is %.12s); "
			"use a fresh out_dir", r->job->out_dir, sha, r->job->job_sha256);
		goto err;
	}
	r->step = r->opt->step = step;
	r->cur.epoch = epoch, r->cur.pos = pos;
	if (r->dm && dmodel_sync_from_host(r->dm, r->opt) < 0)
		goto err;
	r->ntokens = (long)tokens;
	cJSON_Delete(st);
	free(text);
	return 1;
err:
	cJSON_Delete(st);
	free(text);
	return -1;
}

static int s_checkpoint(run_t *r, FILE *events)
{
	char path[TRAIN_PATH_MAX + 64], hex[SHA256_HEX_LEN + 1], state[512];
	cJSON *ev;

	snprintf(state, sizeof state,
		 "{\"step\":%ld,\"data_epoch\":%ld,\"data_pos\":%ld,\"tokens\":%ld,\"flops\":%.17g,"
		 "\"seed\":%" PRIu64 ",\"job_sha256\":\"%s\",\"job\":", r->step, r->cur.epoch, r->cur.pos,
		 r->ntokens, r->flops, r->job->seed, r->job->job_sha256);
	size_t n = strlen(state) + strlen(r->job->job_text) + 2;
	if (r->dm && dmodel_sync_to_host(r->dm, r->opt) < 0)
		return -1;
	char *full = malloc(n);
	if (!full)
		return err_set("out of memory");
	snprintf(full, n, "%s%s}", state, r->job->job_text);
	int rc = ckpt_save(r->ckdir, r->step, r->train, r->opt, full, path, sizeof path);
	free(full);
	if (rc < 0 || sha256_file(path, hex) < 0)
		return -1;
	ev = s_event("checkpoint");
	cJSON_AddNumberToObject(ev, "step", (double)r->step);
	cJSON_AddStringToObject(ev, "path", path + strlen(r->job->out_dir) + 1);
	cJSON_AddStringToObject(ev, "sha256", hex);
	s_emit(events, ev);
	return 0;
}

/* The same step on the device path: *loss gets the mean loss. */
static int s_dstep(run_t *r, long *ntok, float *loss)
{
	const train_job_t *job = r->job;
	double sum = 0.0, l;
	int t;

	if (dmodel_zero_grad(r->dm) < 0)
		return -1;
	for (int a = 0; a < job->accum; a++) {
		data_next_batch(r->data, &r->cur, job->batch, r->tokens, r->targets, &t);
		if (dmodel_train_micro(r->dm, r->tokens, r->targets, job->batch, t, 1.0f / job->accum,
				       &l) < 0)
			return -1;
		sum += l;
		*ntok += (long)job->batch * t;
		r->flops += flops_batch(&r->fl, job->batch, t);
	}
	*loss = (float)(sum / job->accum);
	return dmodel_step(r->dm, &job->opt, optim_lr(&job->opt, r->step), ++r->opt->step, NULL);
}

/* One optimizer step over `accum` micro-batches; *loss gets the mean loss.
 * 0, or -1 via err_set() (the device path). */
static int s_step(run_t *r, long *ntok, float *loss)
{
	const train_job_t *job = r->job;
	double sum = 0.0;
	int t;

	if (r->dm)
		return s_dstep(r, ntok, loss);
	params_zero_grad(r->train);
	for (int a = 0; a < job->accum; a++) {
		data_next_batch(r->data, &r->cur, job->batch, r->tokens, r->targets, &t);
		sum += model_forward(r->m, r->tokens, r->targets, job->batch, t,
				     (uint64_t)r->step * job->accum + a, 1);
		model_backward(r->m, 1.0f / job->accum);
		*ntok += (long)job->batch * t;
		r->flops += flops_batch(&r->fl, job->batch, t);
	}
	optim_clip(r->opt);
	optim_step(r->opt, optim_lr(&job->opt, r->step));
	*loss = (float)(sum / job->accum);
	return 0;
}

int train_add_output(cJSON *outs, const char *out_dir, const char *name, const char *rel)
{
	char path[TRAIN_PATH_MAX + 128], hex[SHA256_HEX_LEN + 1];
	cJSON *o;

	snprintf(path, sizeof path, "%s/%s", out_dir, rel);
	if (sha256_file(path, hex) < 0)
		return -1;
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "name", name);
	cJSON_AddStringToObject(o, "path", rel);
	cJSON_AddStringToObject(o, "sha256", hex);
	cJSON_AddItemToArray(outs, o);
	return 0;
}

/* The done event; its cost counts the whole job (every attempt), its
 * seconds this attempt (t0 its start). */
static int s_finish(run_t *r, FILE *events, double t0)
{
	const train_job_t *job = r->job;
	char dir[TRAIN_PATH_MAX + 16];
	cJSON *ev = s_event("done"), *outs = cJSON_AddArrayToObject(ev, "outputs"), *cost;
	int rc = -1;

	cJSON_AddArrayToObject(ev, "evaluations");
	cost = cJSON_AddObjectToObject(ev, "cost");
	cJSON_AddNumberToObject(cost, "trainable_params", (double)params_numel(r->train, 1));
	cJSON_AddNumberToObject(cost, "tokens", (double)r->ntokens);
	cJSON_AddNumberToObject(cost, "sequences", (double)job->steps * job->accum * job->batch);
	cJSON_AddNumberToObject(cost, "flops", r->flops);
	cJSON_AddNumberToObject(cost, "seconds", mtime_s() - t0);
	if (job->full) {
		snprintf(dir, sizeof dir, "%s/model", job->out_dir);
		if (model_save(r->m, dir) < 0 ||
		    train_add_output(outs, job->out_dir, "model_config", "model/config.json") < 0 ||
		    train_add_output(outs, job->out_dir, "model_weights", "model/model.safetensors") < 0)
			goto out;
	} else {
		snprintf(dir, sizeof dir, "%s/adapter", job->out_dir);
		if ((r->dm && dmodel_sync_to_host(r->dm, NULL) < 0) || lora_save(r->lo, dir) < 0 ||
		    train_add_output(outs, job->out_dir, "adapter_config", "adapter/adapter_config.json") < 0 ||
		    train_add_output(outs, job->out_dir, "adapter_weights", "adapter/adapter_model.safetensors") < 0)
			goto out;
	}
	s_emit(events, ev);
	ev = NULL;
	rc = 0;
out:
	cJSON_Delete(ev);
	return rc;
}

static void s_run_free(run_t *r)
{
	free(r->tokens);
	free(r->targets);
	optim_destroy(&r->opt);
	data_destroy(&r->data);
	tokenizer_destroy(&r->tok);
	lora_destroy(&r->lo);
	dmodel_destroy(&r->dm);
	model_destroy(&r->m);
}

int train_run(const train_job_t *job, FILE *events)
{
	run_t r = { .job = job };
	cJSON *ev;
	double t0, tstep;
	int resumed, rc = -1;

	s_stopped = 0;
	if (s_setup(&r) < 0 || (resumed = s_resume(&r)) < 0)
		goto out;
	ev = s_event("start");
	cJSON_AddNumberToObject(ev, "total_steps", (double)job->steps);
	cJSON_AddNumberToObject(ev, "step", (double)r.step);
	cJSON_AddStringToObject(ev, "mode", job->full ? "full" : "lora");
	cJSON_AddStringToObject(ev, "device", job->K ? kdevice_name(job->K->dev) : "cpu");
	cJSON_AddNumberToObject(ev, "params", (double)(r.dm ? r.m->n_params : params_numel(&r.m->params, 0)));
	cJSON_AddNumberToObject(ev, "trainable_params", (double)params_numel(r.train, 1));
	cJSON_AddNumberToObject(ev, "records", r.data->n);
	cJSON_AddNumberToObject(ev, "records_dropped", r.data->dropped);
	cJSON_AddStringToObject(ev, "job_sha256", job->job_sha256);
	cJSON_AddBoolToObject(ev, "resumed", resumed);
	s_emit(events, ev);
	t0 = tstep = mtime_s();
	while (r.step < job->steps) {
		long ntok = 0;
		float loss;
		if (s_step(&r, &ntok, &loss) < 0)
			goto out;
		double now = mtime_s();
		r.step++;
		r.ntokens += ntok;
		if (r.step % job->progress_every == 0 || r.step == job->steps) {
			ev = s_event("progress");
			cJSON_AddNumberToObject(ev, "step", (double)r.step);
			cJSON_AddNumberToObject(ev, "total_steps", (double)job->steps);
			cJSON_AddNumberToObject(ev, "loss", loss);
			cJSON_AddNumberToObject(ev, "lr", optim_lr(&job->opt, r.step - 1));
			cJSON_AddNumberToObject(ev, "tokens_per_s", now > tstep ? ntok / (now - tstep) : 0.0);
			cJSON_AddNumberToObject(ev, "tokens", (double)r.ntokens);
			cJSON_AddNumberToObject(ev, "flops", r.flops);
			cJSON_AddNumberToObject(ev, "elapsed_s", now - t0);
			s_emit(events, ev);
		}
		tstep = now;
		int due = (job->checkpoint_every && r.step % job->checkpoint_every == 0) || r.step == job->steps;
		if ((due || s_stop_requested) && s_checkpoint(&r, events) < 0)
			goto out;
		if (s_stop_requested && r.step < job->steps) {
			s_stopped = 1;
			err_set("stopped by a signal at step %ld (checkpointed; run the job again to resume)", r.step);
			goto out;
		}
		if (job->stop_at && r.step == job->stop_at && r.step < job->steps) {
			rc = 0;
			goto out;
		}
	}
	rc = s_finish(&r, events, t0);
	if (r.dm && dmodel_graph_replays(r.dm) > 0)
		fprintf(stderr, "modula-engine train: %ld micro-batches replayed a CUDA graph\n",
			dmodel_graph_replays(r.dm));
out:
	s_run_free(&r);
	return rc;
}
