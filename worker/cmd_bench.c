/* cmd_bench.c: `modula-engine bench`, the training-step benchmark of the
 * engine on one device: random tokens (next-token targets, as PyTorch's
 * labels=input_ids), a fixed batch shape, warm-up steps, then timed steps
 * of forward, backward and AdamW; one JSON line out with tokens/s, the step
 * time and the device's memory (--profile: forward, backward and optimizer
 * times, and the time of each kind of op: on CUDA from events recorded on
 * the stream between the groups of ops, nothing waiting; on the CPU
 * synchronising after each group; no CUDA graphs then). --one-pass times MoDULA-Res's
 * domain stage: --experts domains of --batch sequences each in one pass of
 * the frozen base, against the same tokens as one single-domain step per
 * domain (what separate runs do). On CUDA each step's forward and
 * backward replay a CUDA graph (dmodel_train_micro) unless --no-graph or
 * --profile. tests/gpu/hf_check.py runs it next to PyTorch + PEFT.
 *
 * Not a test and not a tuner: it checks nothing but that the loss is
 * finite, and it reports what it measured.
 */
#include "config.h"
#include "worker/cmd_bench.h"
#include "worker/dmodel.h"
#include "worker/lora.h"
#include "worker/model.h"
#include "worker/moe.h"
#include "worker/optim.h"
#include "worker/rng.h"
#include "worker/train.h"
#include "kernels/cuda/kcuda.h"
#include "err.h"
#include "jsonu.h"
#include "mtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D_BENCH(x) do { if ((x) < 0) return -1; } while (0)

typedef struct bench_args {
	const char *model, *method, *device, *dtype;
	int batch, seq, rank, experts, expert_rank, steps, warmup, profile, one_pass, no_graph;
	float alpha;
	uint64_t seed;
} bench_args_t;

static int s_int(const char *k, const char *v, int lo, int *out)
{
	char *end;
	long x = strtol(v, &end, 10);

	if (end == v || *end || x < lo || x > 1 << 20)
		return err_set("%s: expected an integer >= %d, got '%s'", k, lo, v);
	*out = (int)x;
	return 0;
}

static int s_args(int argc, char **argv, bench_args_t *a)
{
	*a = (bench_args_t){ .model = "random", .method = "lora", .device = "auto", .batch = 8,
			     .seq = 512, .rank = 16, .alpha = 32.0f, .experts = 4, .expert_rank = 8,
			     .steps = 10, .warmup = 3, .seed = 1 };
	for (int i = 1; i < argc; i += 2) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int x;
		if (!strcmp(k, "--profile") || !strcmp(k, "--one-pass") || !strcmp(k, "--no-graph")) {
			*(k[2] == 'p' ? &a->profile : k[2] == 'o' ? &a->one_pass : &a->no_graph) = 1, i--;
			continue;
		}
		if (!v)
			return err_set("option '%s' needs a value", k);
		if (!strcmp(k, "--model"))
			a->model = v;
		else if (!strcmp(k, "--method"))
			a->method = v;
		else if (!strcmp(k, "--device"))
			a->device = v;
		else if (!strcmp(k, "--dtype"))
			a->dtype = v;
		else if (!strcmp(k, "--batch"))
			D_BENCH(s_int(k, v, 1, &a->batch));
		else if (!strcmp(k, "--seq"))
			D_BENCH(s_int(k, v, 2, &a->seq));
		else if (!strcmp(k, "--rank"))
			D_BENCH(s_int(k, v, 1, &a->rank));
		else if (!strcmp(k, "--alpha")) {
			D_BENCH(s_int(k, v, 1, &x));
			a->alpha = (float)x;
		}
		else if (!strcmp(k, "--experts"))
			D_BENCH(s_int(k, v, 1, &a->experts));
		else if (!strcmp(k, "--expert-rank"))
			D_BENCH(s_int(k, v, 1, &a->expert_rank));
		else if (!strcmp(k, "--steps"))
			D_BENCH(s_int(k, v, 1, &a->steps));
		else if (!strcmp(k, "--warmup"))
			D_BENCH(s_int(k, v, 0, &a->warmup));
		else if (!strcmp(k, "--seed")) {
			D_BENCH(s_int(k, v, 0, &x));
			a->seed = (uint64_t)x;
		} else
			return err_set("unknown option '%s'", k);
	}
	return 0;
}

/* What one step needs, on either engine. */
typedef struct bench {
	model_t *hm;            /* the CPU engine's model, or a shape (device path) */
	dmodel_t *dm;           /* the device path, or NULL */
	lora_t *lo;
	moe_t *mo;
	const params_t *train;
	optim_t *opt;           /* the CPU engine's optimizer */
	optim_config_t oc;
	long step;
	double phase[3];        /* --profile: forward, backward, optimizer seconds */
} bench_t;

static int s_setup(bench_t *b, const bench_args_t *a, const struct kdevice_ops *K)
{
	model_config_t cfg;
	char path[4096];
	int random = !strcmp(a->model, "random");
	lora_config_t lc = { .rank = a->rank, .alpha = a->alpha, .targets = (1u << MODEL_NSLOTS) - 1 };

	if (random) {
		train_default_config(&cfg);
	} else {
		snprintf(path, sizeof path, "%s/config.json", a->model);
		D_BENCH(model_config_load(path, &cfg));
	}
	if (a->seq > cfg.max_seq)
		return err_set("--seq %d is longer than the model's max_seq %d", a->seq, cfg.max_seq);
	if (K && !random) {
		if (!(b->dm = dmodel_load(a->model, K)) || !(b->hm = model_shape(&cfg)))
			return -1;
	} else {
		if (!(b->hm = random ? model_new(&cfg) : model_load(a->model)))
			return -1;
		if (random)
			model_init_random(b->hm, a->seed);
		if (K) {
			if (!(b->dm = dmodel_from_host(b->hm, K)))
				return -1;
			model_destroy(&b->hm);
			if (!(b->hm = model_shape(&cfg)))
				return -1;
		}
	}
	if (!strcmp(a->method, "lora")) {
		if (!(b->lo = lora_attach(b->hm, &lc, a->seed)))
			return -1;
		b->train = &b->lo->params;
	} else {
		moe_config_t mc = { .n_domain = a->experts, .universal = lc, .slope = 0.01f,
				    .domain = { .rank = a->expert_rank, .alpha = 2.0f * a->expert_rank } };
		const char *names[MOE_MAX_EXPERTS];
		char nb[MOE_MAX_EXPERTS][24];
		D_BENCH(moe_method_parse(a->method, &mc.method));
		if (a->experts >= MOE_MAX_EXPERTS)
			return err_set("--experts %d: at most %d", a->experts, MOE_MAX_EXPERTS - 1);
		for (int i = 0; i < a->experts; i++) {
			snprintf(nb[i], sizeof nb[i], "domain%d", i + 1);
			names[i] = nb[i];
		}
		if (!(b->mo = moe_attach(b->hm, &mc, names, a->seed)))
			return -1;
		b->train = &b->mo->train;
		if (a->one_pass) {
			/* the domain stage: the domain experts train, fixed routing */
			moe_seg_t seg[MOE_MAX_EXPERTS];
			for (int i = 0; i < a->experts; i++)
				seg[i] = (moe_seg_t){ i + 1, i, i + 1 };
			if (moe_set_trainable(b->mo, ((uint64_t)1 << (a->experts + 1)) - 2, 0) < 0 ||
			    moe_route_fixed(b->mo, seg, a->experts, a->experts) < 0)
				return -1;
		}
	}
	if (a->one_pass && (!K || !b->mo || (b->mo->cfg.method != MOE_RES &&
					     b->mo->cfg.method != MOE_RES_NORES)))
		return err_set("--one-pass times MoDULA-Res's domain stage on the device path (--method "
			       "modula-res, --device cuda or table)");
	b->oc = (optim_config_t){ .lr = 2e-4f, .min_lr_ratio = 1.0f, .beta1 = 0.9f, .beta2 = 0.999f,
				  .eps = 1e-8f, .weight_decay = 0.0f, .clip = 1.0f };
	if (b->dm)
		return b->lo ? dmodel_attach_lora(b->dm, b->lo, b->train)
			     : dmodel_attach_moe(b->dm, b->mo, b->train);
	if (!(b->opt = optim_new(b->train, &b->oc)))
		return -1;
	return model_reserve(b->hm, a->batch, a->seq);
}

/* One step over nb sequences (the --one-pass runs route them first). */
static int s_step(bench_t *b, const int *tok, const int *tgt, int nb, const bench_args_t *a,
		  double *loss)
{
	b->step++;
	if (!b->dm) {
		params_zero_grad(b->train);
		*loss = model_forward(b->hm, tok, tgt, nb, a->seq, (uint64_t)b->step, 1);
		model_backward(b->hm, 1.0f);
		optim_clip(b->opt);
		optim_step(b->opt, b->oc.lr);
		return 0;
	}
	double t0 = mtime_s(), t1, t2;
	D_BENCH(dmodel_zero_grad(b->dm));
	if (!a->profile) {
		/* forward and backward as one micro-batch: a CUDA graph */
		D_BENCH(dmodel_train_micro(b->dm, tok, tgt, nb, a->seq, 1.0f, loss));
		t1 = t2 = mtime_s();
	} else {
		D_BENCH(dmodel_forward(b->dm, tok, tgt, nb, a->seq, 1.0f, loss));
		t1 = mtime_s();
		D_BENCH(dmodel_backward(b->dm));
		D_BENCH(dmodel_sync(b->dm));
		t2 = mtime_s();
	}
	D_BENCH(dmodel_step(b->dm, &b->oc, b->oc.lr, b->step, NULL));
	if (a->profile) {
		D_BENCH(dmodel_sync(b->dm));
		b->phase[0] += t1 - t0, b->phase[1] += t2 - t1, b->phase[2] += mtime_s() - t2;
	}
	return 0;
}

static void s_free(bench_t *b)
{
	optim_destroy(&b->opt);
	dmodel_destroy(&b->dm);
	lora_destroy(&b->lo);
	moe_destroy(&b->mo);
	model_destroy(&b->hm);
}

int cmd_bench(int argc, char **argv)
{
	bench_args_t a;
	bench_t b = { 0 };
	const struct kdevice_ops *K;
	int *tok = NULL, *tgt = NULL, rc = 1;
	double loss0 = 0, loss = 0, t0 = 0, secs;
	char mem[256] = "", *line;
	cJSON *o;
	rng_t r;

	if (s_args(argc, argv, &a) < 0 || dmodel_backend(a.device, a.dtype, &K) < 0) {
		fprintf(stderr, "modula-engine bench: %s\nusage: modula-engine bench [--model DIR|random] "
			"[--method lora|molora|modula-flan|modula-res|modula-res-nores] [--batch 8] [--seq 512] [--rank 16] "
			"[--alpha 32] [--experts 4] [--expert-rank 8] [--steps 10] [--warmup 3] "
			"[--device cpu|cuda|auto|table] [--dtype bf16|f16|f32] [--seed 1] [--profile] "
			"[--one-pass] [--no-graph]\n", err_msg());
		return 2;
	}
	int nb = a.one_pass ? a.batch * a.experts : a.batch, ex[4096];
	size_t n = (size_t)nb * a.seq;
	if (a.one_pass && nb > 4096) {
		err_set("--one-pass: %d sequences per step (at most 4096)", nb);
		goto out;
	}
	if (s_setup(&b, &a, K) < 0 || (b.dm && dmodel_reserve(b.dm, nb, a.seq) < 0))
		goto out;
	if (b.dm)
		dmodel_graphs(b.dm, !a.no_graph);
	for (int j = 0; j < nb; j++)
		ex[j] = 1 + j / a.batch;
	if (a.one_pass && dmodel_route_rows(b.dm, ex, nb, a.seq) < 0)
		goto out;
	if (!(tok = malloc(n * sizeof *tok)) || !(tgt = malloc(n * sizeof *tgt))) {
		err_set("out of memory");
		goto out;
	}
	rng_seed(&r, a.seed);
	for (size_t i = 0; i < n; i++)
		tok[i] = (int)(rng_uniform(&r) * (b.hm->cfg.vocab_size - 1));
	for (size_t i = 0; i < n; i++)
		tgt[i] = (int)(i % a.seq) == a.seq - 1 ? -1 : tok[i + 1];
	for (int s = 0; s < a.warmup + a.steps; s++) {
		if (s == a.warmup) {
			if (b.dm && dmodel_sync(b.dm) < 0)
				goto out;
			t0 = mtime_s();
			memset(b.phase, 0, sizeof b.phase);
			if (a.profile && b.dm)
				dmodel_profile(b.dm, 1);
		}
		if (s_step(&b, tok, tgt, nb, &a, &loss) < 0)
			goto out;
		if (s == 0)
			loss0 = loss;
		fprintf(stderr, "\rbench: step %d/%d, loss %.4f", s + 1, a.warmup + a.steps, loss);
	}
	if (b.dm && dmodel_sync(b.dm) < 0)
		goto out;
	secs = (mtime_s() - t0) / a.steps;
	fputc('\n', stderr);
	if (!isfinite(loss)) {
		err_set("the loss is %g after %d steps", loss, a.warmup + a.steps);
		goto out;
	}
	if (b.dm)
		dmodel_memory(b.dm, mem, sizeof mem);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "device", K ? kdevice_name(K->dev) : "cpu");
	cJSON_AddStringToObject(o, "path", K ? "dmodel" : "model");
	cJSON_AddStringToObject(o, "dtype", K ? kcuda_dtype_name(K->dt) : "f32");
	cJSON_AddStringToObject(o, "model", a.model);
	/* micro-batches that replayed a CUDA graph (none with --profile) */
	cJSON_AddNumberToObject(o, "graph_replays", b.dm ? (double)dmodel_graph_replays(b.dm) : 0);
	/* LoRA groups sharing an input (q, k, v; gate, up) run as one */
	cJSON_AddNumberToObject(o, "adapter_groups", b.dm ? dmodel_adapter_groups(b.dm) : 0);
	/* groups (LoRA, or Res on q, k, v / gate, up) folded into their base
	 * products (MODULA_FOLD) */
	cJSON_AddNumberToObject(o, "folded_groups", b.dm ? dmodel_folded_groups(b.dm) : 0);
	/* o and down projections folded in backward */
	cJSON_AddNumberToObject(o, "folded_tail", b.dm ? dmodel_folded_tail(b.dm) : 0);
	cJSON_AddStringToObject(o, "method", a.method);
	cJSON_AddNumberToObject(o, "batch", a.batch);
	cJSON_AddNumberToObject(o, "seq", a.seq);
	cJSON_AddNumberToObject(o, "rank", a.rank);
	if (b.mo) {
		cJSON_AddNumberToObject(o, "experts", a.experts);
		cJSON_AddNumberToObject(o, "expert_rank", a.expert_rank);
	}
	cJSON_AddNumberToObject(o, "trainable_params", (double)params_numel(b.train, 1));
	cJSON_AddNumberToObject(o, "steps", a.steps);
	if (a.one_pass) {
		/* the same tokens as separate single-domain steps of a.batch
		 * sequences, one per domain (what separate runs do) */
		double ts = 0.0, l;
		for (int s = 0; s < a.warmup + a.steps; s++) {
			if (s == a.warmup) {
				if (dmodel_sync(b.dm) < 0)
					goto fail;
				ts = mtime_s();
			}
			for (int d = 0; d < a.experts; d++) {
				size_t off = (size_t)d * a.batch * a.seq;
				for (int j = 0; j < a.batch; j++)
					ex[j] = d + 1;
				if (dmodel_route_rows(b.dm, ex, a.batch, a.seq) < 0 ||
				    s_step(&b, tok + off, tgt + off, a.batch, &a, &l) < 0)
					goto fail;
			}
		}
		if (dmodel_sync(b.dm) < 0)
			goto fail;
		ts = (mtime_s() - ts) / a.steps;
		cJSON_AddNumberToObject(o, "one_pass_sequences", nb);
		cJSON_AddNumberToObject(o, "separate_step_ms", ts * 1e3);
		cJSON_AddNumberToObject(o, "separate_tokens_per_s", (double)n / ts);
		cJSON_AddNumberToObject(o, "one_pass_over_separate", ts / secs);
	}
	cJSON_AddNumberToObject(o, "warmup", a.warmup);
	cJSON_AddNumberToObject(o, "step_ms", secs * 1e3);
	cJSON_AddNumberToObject(o, "tokens_per_s", (double)n / secs);
	cJSON_AddNumberToObject(o, "loss_first", loss0);
	cJSON_AddNumberToObject(o, "loss_last", loss);
	cJSON_AddStringToObject(o, "memory", mem);
	if (K && K->dev == KDEV_CUDA) {
		/* how the products' algorithms were chosen (cuBLASLt, tune.cu) */
		char prod[4400];
		kcuda_lt_report(prod, sizeof prod);
		cJSON_AddStringToObject(o, "products", prod);
	}
	if (a.profile && b.dm) {
		/* the forward ends with the loss read back, so it is synchronous */
		cJSON_AddNumberToObject(o, "forward_ms", b.phase[0] * 1e3 / a.steps);
		cJSON_AddNumberToObject(o, "backward_ms", b.phase[1] * 1e3 / a.steps);
		cJSON_AddNumberToObject(o, "optimizer_ms", b.phase[2] * 1e3 / a.steps);
		cJSON *kinds = cJSON_AddObjectToObject(o, "profile_ms");
		double total = 0.0;
		for (int k = 0; k < DMODEL_PROF_N; k++) {
			double sec;
			const char *name = dmodel_profile_report(b.dm, k, &sec);
			cJSON_AddNumberToObject(kinds, name, sec * 1e3 / a.steps);
			total += sec;
		}
		/* with CUDA events, about the GPU's time per step (without, the
		 * host's, each group synchronised) */
		cJSON_AddNumberToObject(o, "profile_total_ms", total * 1e3 / a.steps);
	}
	if ((line = jsonu_print(o)))
		printf("%s\n", line);
	free(line);
	cJSON_Delete(o);
	rc = 0;
	goto out;
fail:
	cJSON_Delete(o);
out:
	if (rc)
		fprintf(stderr, "modula-engine bench: %s\n", err_msg());
	free(tok);
	free(tgt);
	s_free(&b);
	return rc;
}
