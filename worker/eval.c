/* eval.c: loss, exact match, perplexity and router distributions; see
 * eval.h. */
#include "config.h"
#include "worker/eval.h"
#include "worker/bundle.h"
#include "worker/data.h"
#include "worker/decode.h"
#include "worker/dmodel.h"
#include "worker/lora.h"
#include "worker/model.h"
#include "worker/moe.h"
#include "worker/tokenizer.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "mtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int s_path(char *dst, const char *base, const char *p)
{
	int n = p[0] == '/' || !base[0] ? snprintf(dst, TRAIN_PATH_MAX, "%s", p)
					 : snprintf(dst, TRAIN_PATH_MAX, "%s/%s", base, p);

	return n < 0 || n >= TRAIN_PATH_MAX ? err_set("path too long: '%s'", p) : 0;
}

static int s_opt_path(const cJSON *j, const char *key, const char *base, char *dst)
{
	const char *v;

	if (jsonu_opt_str(j, key, "", &v) < 0)
		return -1;
	dst[0] = 0;
	return v[0] ? s_path(dst, base, v) : 0;
}

int eval_job_parse(const cJSON *j, const char *base_dir, eval_job_t *job)
{
	static const char *const keys[] = { "model", "adapter", "tokenizer", "domains", "general",
		"text", "text_tokens", "route", "max_records", "max_new_tokens", "batch", "seq_len",
		"out", NULL };
	const cJSON *doms, *it;
	const char *model, *tok, *general, *route;
	long long v[5];

	memset(job, 0, sizeof *job);
	if (!cJSON_IsObject(j))
		return err_set("a job must be a JSON object");
	if (jsonu_check_keys(j, keys) < 0 || jsonu_req_str(j, "model", &model) < 0 ||
	    s_path(job->model, base_dir, model) < 0 || s_opt_path(j, "adapter", base_dir, job->adapter) < 0 ||
	    s_opt_path(j, "text", base_dir, job->text) < 0 || s_opt_path(j, "out", base_dir, job->out) < 0 ||
	    jsonu_opt_str(j, "tokenizer", "", &tok) < 0 || jsonu_opt_str(j, "general", "universal", &general) < 0 ||
	    jsonu_opt_str(j, "route", "", &route) < 0 ||
	    jsonu_opt_int(j, "text_tokens", 20000, &v[0]) < 0 || jsonu_opt_int(j, "max_records", 0, &v[1]) < 0 ||
	    jsonu_opt_int(j, "max_new_tokens", 64, &v[2]) < 0 || jsonu_opt_int(j, "batch", 16, &v[3]) < 0 ||
	    jsonu_opt_int(j, "seq_len", 128, &v[4]) < 0)
		return -1;
	if (v[0] < 0 || v[1] < 0 || v[2] <= 0 || v[3] <= 0 || v[3] > 4096 || v[4] < 2 || v[4] > 1 << 20)
		return err_set("'text_tokens', 'max_records' not negative; 'max_new_tokens', 'batch' "
			       "positive; 'seq_len' > 1");
	job->text_tokens = v[0], job->max_records = (int)v[1], job->max_new = (int)v[2];
	job->batch = (int)v[3], job->seq_len = (int)v[4];
	if (strlen(general) >= sizeof job->general || strlen(route) >= sizeof job->route)
		return err_set("'general' or 'route' too long");
	strcpy(job->general, general);
	strcpy(job->route, route);
	if (tok[0] && (strcmp(tok, "bytes") ? s_path(job->tokenizer, base_dir, tok) : s_path(job->tokenizer, "", tok)) < 0)
		return -1;
	doms = cJSON_GetObjectItemCaseSensitive(j, "domains");
	if (doms && (!cJSON_IsArray(doms) || !(job->dom = calloc((size_t)cJSON_GetArraySize(doms) + 1, sizeof *job->dom))))
		return err_set("'domains': expected an array of {\"name\", \"data\"}");
	cJSON_ArrayForEach(it, doms) {
		const char *name, *data;
		if (jsonu_req_str(it, "name", &name) < 0 || jsonu_req_str(it, "data", &data) < 0 ||
		    strlen(name) >= sizeof job->dom[0].name || s_path(job->dom[job->ndom].data, base_dir, data) < 0)
			return err_prefix("'domains'");
		strcpy(job->dom[job->ndom++].name, name);
	}
	if (!job->ndom && !job->text[0])
		return err_set("nothing to evaluate: give 'domains' or 'text'");
	return 0;
}

void eval_job_free(eval_job_t *job)
{
	free(job->dom);
	memset(job, 0, sizeof *job);
}

typedef struct erun {
	const eval_job_t *job;
	model_t *m;
	lora_t *lo;
	moe_t *mo;
	tokenizer_t *tok;
	decode_t *dec;
	int *tokens, *targets;
	double *route;          /* [n_layers][n_route] sums for the current domain */
	dmodel_t *dm;           /* the device path (r->m then holds shapes only) */
	float *hlog, *probs;    /* its last logits [V]; router probabilities [b*t, E] */
	int *lens;              /* non-pad tokens of each sequence of a batch */
} erun_t;

static int s_argmax(const float *v, int n)
{
	int best = 0;

	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

/* 1 when token `id` decodes to text ending in a newline. */
static int s_ends_nl(tokenizer_t *tok, int id)
{
	char *text = NULL;
	size_t len = 0;
	int32_t one = id;
	int nl = tokenizer_decode(tok, &one, 1, &text, &len) == 0 && len && text[len - 1] == '\n';

	free(text);
	return nl;
}

/* A decoder: the CPU engine's (decode.c) or the device path's. */
typedef struct s_decoder {
	decode_t *dec;
	erun_t *r;
} s_decoder_t;

static void s_dec_reset(s_decoder_t *d)
{
	if (d->dec)
		decode_reset(d->dec);
	else
		dmodel_decode_reset(d->r->dm);
}

static const float *s_dec_feed(s_decoder_t *d, const int *ids, int n)
{
	if (d->dec)
		return decode_feed(d->dec, ids, n);
	return dmodel_decode_feed(d->r->dm, ids, n, d->r->hlog) < 0 ? NULL : d->r->hlog;
}

static int s_exact(s_decoder_t *d, tokenizer_t *tok, int vocab, const data_record_t *rec, int eos)
{
	int ft = rec->first_target, end = rec->n, nl, stop;
	const float *lg;

	if (eos >= 0 && end > ft && rec->ids[end - 1] == eos)
		end--;
	nl = end > ft && s_ends_nl(tok, rec->ids[end - 1]);
	stop = end + (!nl && eos >= 0);         /* compare the eos too */
	if (ft <= 0)
		return 0;       /* no prompt token to start from */
	s_dec_reset(d);
	if (!(lg = s_dec_feed(d, rec->ids, ft)))
		return -1;
	for (int k = ft; k < stop; k++) {
		int t = s_argmax(lg, vocab);
		if (t != (k < end ? rec->ids[k] : eos))
			return 0;
		if (k + 1 < stop && !(lg = s_dec_feed(d, &t, 1)))
			return -1;
	}
	return 1;
}

int eval_exact(decode_t *dec, tokenizer_t *tok, int vocab, const data_record_t *rec, int eos)
{
	s_decoder_t d = { dec, NULL };

	return s_exact(&d, tok, vocab, rec, eos);
}

/* Mean loss over the targets of one batch (*count of them), on either
 * engine. */
static int s_loss(erun_t *r, int b, int t, double *loss, long *count)
{
	long n = 0;

	if (!r->dm) {
		*loss = model_forward(r->m, r->tokens, r->targets, b, t, 0, 0);
		*count = model_target_count(r->m);
		return 0;
	}
	for (int i = 0; i < b * t; i++)
		n += r->targets[i] >= 0;
	*count = n;
	return dmodel_forward(r->dm, r->tokens, r->targets, b, t, 0.0f, loss);
}

/* The router weights of mixture layer k in the last batch, rows [lo, hi)
 * of each sequence (lens[s] non-pad tokens of rows s*t..), added to
 * sums[nr]. The device path reads the layer's probabilities once. */
static int s_route_sums(erun_t *r, int k, const int *lens, int b, int t, double *sums, int nr)
{
	int layer, slot, ne;
	double dummy = 0.0;

	if (!r->dm) {
		for (int s = 0; s < b; s++)
			moe_route_sum(r->mo, k, s * t, s * t + lens[s], sums, &layer, &slot);
		return 0;
	}
	moe_route_sum(r->mo, k, 0, 0, &dummy, &layer, &slot);
	if (dmodel_route_probs(r->dm, layer, slot, r->probs, &ne) < 0)
		return -1;
	if (ne != nr)
		return err_set("layer %d %s: %d router outputs on the device, %d in the bundle", layer,
			       model_slot_name(slot), ne, nr);
	for (int s = 0; s < b; s++)
		for (int i = s * t; i < s * t + lens[s]; i++)
			for (int j = 0; j < nr; j++)
				sums[j] += r->probs[(size_t)i * ne + j];
	return 0;
}

/* Loss, accuracy and router means of one domain into `o`. */
static int s_domain(erun_t *r, const eval_domain_t *dm, cJSON *o, cJSON *routes)
{
	const eval_job_t *job = r->job;
	const char *paths[1] = { dm->data };
	data_t *d = data_load(paths, 1, r->tok, job->seq_len, 0);
	data_cursor_t cur = { 0 };
	int n, eos = tokenizer_eos_id(r->tok), exact = 0, nl = r->mo ? r->mo->n_layers : 0;
	int nr = r->mo && !r->mo->fixed ? r->mo->n_route : 0;
	double loss = 0.0;
	long targets = 0, rows = 0;

	if (!d)
		return -1;
	n = job->max_records && job->max_records < d->n ? job->max_records : d->n;
	if (nr)
		memset(r->route, 0, (size_t)nl * nr * sizeof *r->route);
	for (int done = 0; done < n;) {
		int b = n - done < job->batch ? n - done : job->batch, t;
		double l;
		long cnt;
		data_next_batch(d, &cur, b, r->tokens, r->targets, &t);
		if (s_loss(r, b, t, &l, &cnt) < 0)
			goto err;
		loss += l * cnt, targets += cnt;
		for (int s = 0; s < b && nr; s++) {
			int len = t;
			while (len > 0 && r->tokens[s * t + len - 1] == d->pad_id)
				len--;
			r->lens[s] = len, rows += len;
		}
		for (int k = 0; k < nl && nr; k++)
			if (s_route_sums(r, k, r->lens, b, t, r->route + (size_t)k * nr, nr) < 0)
				goto err;
		done += b;
	}
	for (int i = 0; i < n; i++) {
		s_decoder_t dec = { r->dec, r };
		int e = s_exact(&dec, r->tok, r->m->cfg.vocab_size, &d->rec[i], eos);
		if (e < 0)
			goto err;
		exact += e;
	}
	cJSON_AddStringToObject(o, "name", dm->name);
	cJSON_AddNumberToObject(o, "records", n);
	cJSON_AddNumberToObject(o, "loss", targets ? loss / targets : 0.0);
	cJSON_AddNumberToObject(o, "accuracy", n ? (double)exact / n : 0.0);
	cJSON_AddNumberToObject(o, "exact", exact);
	for (int k = 0; k < nl && nr; k++) {
		cJSON *lay = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(routes, "layers"), k);
		cJSON *mean = cJSON_GetObjectItemCaseSensitive(lay, "mean");
		cJSON *arr = cJSON_AddArrayToObject(mean, dm->name);
		for (int j = 0; j < nr; j++)
			cJSON_AddItemToArray(arr, cJSON_CreateNumber(rows ? r->route[(size_t)k * nr + j] / rows : 0.0));
	}
	data_destroy(&d);
	return 0;
err:
	data_destroy(&d);
	return -1;
}

/* Perplexity of the first text_tokens tokens of the held-out text. */
static int s_perplexity(erun_t *r, cJSON *gen)
{
	const eval_job_t *job = r->job;
	char *text = NULL;
	size_t len, n;
	int32_t *ids = NULL;
	int T = job->seq_len, B = job->batch;
	double sum = 0.0;
	long count = 0;

	if (fsx_read_all(job->text, &text, &len) < 0 || tokenizer_encode(r->tok, text, len, &ids, &n) < 0) {
		free(text);
		return -1;
	}
	free(text);
	if (job->text_tokens && n > (size_t)job->text_tokens)
		n = (size_t)job->text_tokens;
	for (size_t off = 0; off + 1 < n;) {
		int b = 0;
		for (; b < B && off + 1 < n; b++) {
			for (int k = 0; k < T; k++) {
				size_t i = off + k;
				r->tokens[b * T + k] = i < n ? ids[i] : 0;
				r->targets[b * T + k] = i + 1 < n && k + 1 < T ? ids[i + 1] : -1;
			}
			off += T - 1;
		}
		double l;
		long cnt;
		if (s_loss(r, b, T, &l, &cnt) < 0) {
			free(ids);
			return -1;
		}
		sum += l * cnt, count += cnt;
	}
	free(ids);
	cJSON_AddNumberToObject(gen, "perplexity", count ? exp(sum / count) : 0.0);
	cJSON_AddNumberToObject(gen, "text_tokens", (double)count);
	return 0;
}

/* The model, tokenizer and adapter, on the device path when K is given:
 * 0, -1 via err_set(), or 1 when the device path cannot run the adapter
 * or hold the model and its batches (err_msg() says why; the caller
 * evaluates on the CPU engine). */
static int s_setup(erun_t *r, const struct kdevice_ops *K)
{
	const eval_job_t *job = r->job;
	char tokpath[TRAIN_PATH_MAX + 32];
	struct stat st;
	model_config_t cfg;
	int e = -1;

	snprintf(tokpath, sizeof tokpath, "%s/config.json", job->model);
	if (K ? model_config_load(tokpath, &cfg) < 0 || !(r->m = model_shape(&cfg))
	      : !(r->m = model_load(job->model)))
		return -1;
	snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", job->model);
	if (!(r->tok = tokenizer_open(job->tokenizer[0] ? job->tokenizer : !stat(tokpath, &st) ? tokpath : "bytes")))
		return -1;
	if (job->seq_len > r->m->cfg.max_seq)
		return err_set("'seq_len' %d is longer than the model's max_seq %d", job->seq_len, r->m->cfg.max_seq);
	if (job->adapter[0] && (bundle_is(job->adapter) ? !(r->mo = bundle_load(r->m, job->adapter))
				: !(r->lo = lora_load(r->m, job->adapter))))
		return -1;
	if (job->route[0]) {
		moe_seg_t seg;
		e = r->mo ? moe_expert_index(r->mo, job->route) : -1;
		seg = (moe_seg_t){ e, 0, 1 };
		if (e < 0)
			return err_set("'route': no expert '%s' (it needs a bundle)", job->route);
		if (moe_route_fixed(r->mo, &seg, 1, 1) < 0)
			return -1;
	}
	r->tokens = malloc((size_t)job->batch * job->seq_len * sizeof(int));
	r->targets = malloc((size_t)job->batch * job->seq_len * sizeof(int));
	r->lens = malloc((size_t)job->batch * sizeof(int));
	r->route = calloc((size_t)(r->mo ? r->mo->n_layers * (r->mo->n_route + 1) : 1), sizeof(double));
	if (!r->tokens || !r->targets || !r->lens || !r->route)
		return err_set("out of memory");
	if (!K)
		return model_reserve(r->m, job->batch, job->seq_len) < 0 ||
		       !(r->dec = decode_new(r->m, job->seq_len + 1)) ? -1 : 0;
	/* the device path: one reservation for the batches and for decoding */
	params_t frozen = { 0 };
	int maxt = job->seq_len + 1 < r->m->cfg.max_seq ? job->seq_len + 1 : r->m->cfg.max_seq;
	/* the model or its batches not fitting the device falls back too */
	if (!(r->dm = dmodel_load(job->model, K)) ||
	    (r->lo && dmodel_attach_lora(r->dm, r->lo, &frozen) < 0) ||
	    (r->mo && dmodel_attach_moe(r->dm, r->mo, &frozen) < 0) ||
	    dmodel_reserve(r->dm, job->batch, maxt) < 0)
		return 1;
	if (!(r->hlog = malloc((size_t)r->m->cfg.vocab_size * sizeof *r->hlog)) ||
	    !(r->probs = malloc((size_t)job->batch * maxt * (MOE_MAX_EXPERTS + 1) * sizeof *r->probs)))
		return err_set("out of memory");
	if (e > 0 && r->mo->cfg.method != MOE_LORA) {
		/* every row of the reservation to that domain expert */
		int *ex = malloc((size_t)job->batch * sizeof *ex), rc;
		if (!ex)
			return err_set("out of memory");
		for (int i = 0; i < job->batch; i++)
			ex[i] = e;
		rc = dmodel_route_rows(r->dm, ex, job->batch, maxt);
		free(ex);
		return rc;
	}
	return 0;
}

static void s_teardown(erun_t *r)
{
	free(r->tokens);
	free(r->targets);
	free(r->lens);
	free(r->route);
	free(r->hlog);
	free(r->probs);
	dmodel_destroy(&r->dm);
	decode_destroy(&r->dec);
	tokenizer_destroy(&r->tok);
	moe_destroy(&r->mo);
	lora_destroy(&r->lo);
	model_destroy(&r->m);
	*r = (erun_t){ .job = r->job };
}

static cJSON *s_routes(const moe_t *mo)
{
	cJSON *rt = cJSON_CreateObject(), *names = cJSON_AddArrayToObject(rt, "experts");
	cJSON *layers = cJSON_AddArrayToObject(rt, "layers");

	for (int j = 0; j < mo->n_route; j++)
		cJSON_AddItemToArray(names, cJSON_CreateString(mo->exp[j + mo->route_base].name));
	for (int k = 0; k < mo->n_layers; k++) {
		cJSON *l = cJSON_CreateObject();
		double dummy = 0.0;
		int layer, slot;
		moe_route_sum(mo, k, 0, 0, &dummy, &layer, &slot);
		cJSON_AddNumberToObject(l, "layer", layer);
		cJSON_AddStringToObject(l, "module", model_slot_name(slot));
		cJSON_AddObjectToObject(l, "mean");
		cJSON_AddItemToArray(layers, l);
	}
	return rt;
}

int eval_run(const eval_job_t *job, FILE *events)
{
	erun_t r = { .job = job };
	cJSON *res = cJSON_CreateObject(), *doms, *gen, *routes = NULL, *ev;
	double t0 = mtime_s(), acc = 0.0;
	int rc = -1, navg = 0;
	char *s;

	if ((rc = s_setup(&r, job->K)) == 1) {
		fprintf(stderr, "modula-engine eval: the device path cannot run this job (%s): "
			"evaluating on the CPU engine\n", err_msg());
		s_teardown(&r);
		rc = s_setup(&r, NULL);
	}
	if (rc < 0) {
		rc = -1;
		goto out;
	}
	rc = -1;
	ev = cJSON_CreateObject();
	cJSON_AddStringToObject(ev, "event", "start");
	cJSON_AddStringToObject(ev, "device", r.dm ? kdevice_name(job->K->dev) : "cpu");
	cJSON_AddStringToObject(ev, "path", r.dm ? "dmodel" : "model");
	cJSON_AddNumberToObject(ev, "total_steps", job->ndom + !!job->text[0]);
	cJSON_AddNumberToObject(ev, "step", 0);
	cJSON_AddStringToObject(ev, "mode", "eval");
	if ((s = jsonu_print(ev)))
		fprintf(events, "%s\n", s), fflush(events);
	free(s);
	cJSON_Delete(ev);
	cJSON_AddStringToObject(res, "method", r.mo ? moe_method_name(r.mo->cfg.method) : r.lo ? "lora" : "base");
	cJSON_AddStringToObject(res, "route", job->route[0] ? job->route : "soft");
	doms = cJSON_AddArrayToObject(res, "domains");
	gen = cJSON_AddObjectToObject(res, "general");
	if (r.mo && r.mo->n_route > 0 && !r.mo->fixed)
		cJSON_AddItemToObject(res, "routers", routes = s_routes(r.mo));
	else
		cJSON_AddNullToObject(res, "routers");
	for (int i = 0; i < job->ndom; i++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(doms, o);
		if (s_domain(&r, &job->dom[i], o, routes) < 0) {
			err_prefix("domain '%s'", job->dom[i].name);
			goto out;
		}
		double a = cJSON_GetObjectItemCaseSensitive(o, "accuracy")->valuedouble;
		if (!strcmp(job->dom[i].name, job->general))
			cJSON_AddNumberToObject(gen, "universal_accuracy", a);
		else
			acc += a, navg++;
		ev = cJSON_CreateObject();
		cJSON_AddStringToObject(ev, "event", "progress");
		cJSON_AddNumberToObject(ev, "step", i + 1);
		cJSON_AddNumberToObject(ev, "total_steps", job->ndom + !!job->text[0]);
		cJSON_AddStringToObject(ev, "domain", job->dom[i].name);
		cJSON_AddNumberToObject(ev, "accuracy", a);
		cJSON_AddNumberToObject(ev, "elapsed_s", mtime_s() - t0);
		if ((s = jsonu_print(ev)))
			fprintf(events, "%s\n", s), fflush(events);
		free(s);
		cJSON_Delete(ev);
	}
	cJSON_AddNumberToObject(res, "average_accuracy", navg ? acc / navg : 0.0);
	if (job->text[0] && s_perplexity(&r, gen) < 0)
		goto out;
	cJSON_AddNumberToObject(res, "elapsed_s", mtime_s() - t0);
	if (job->out[0] && jsonu_write_file(job->out, res) < 0)
		goto out;
	ev = cJSON_CreateObject();
	cJSON_AddStringToObject(ev, "event", "done");
	cJSON_AddArrayToObject(ev, "outputs");
	cJSON_AddItemToArray(cJSON_AddArrayToObject(ev, "evaluations"), res);
	res = NULL;
	if ((s = jsonu_print(ev)))
		fprintf(events, "%s\n", s), fflush(events);
	free(s);
	cJSON_Delete(ev);
	rc = 0;
out:
	cJSON_Delete(res);
	s_teardown(&r);
	return rc;
}
