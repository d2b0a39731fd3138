/* engine_cli.c: modula-engine's commands. Each command parses its own
 * arguments and calls the engine library; errors are printed here, once.
 * Commands live in one table (s_cmds) that also makes the usage text. */
#include "config.h"
#include "worker/engine_cli.h"
#include "worker/bundle.h"
#include "worker/cmd_bench.h"
#include "worker/cmd_data.h"
#include "worker/cmd_modula.h"
#include "worker/cmd_tokenize.h"
#include "worker/dmodel.h"
#include "worker/corpus.h"
#include "worker/lora.h"
#include "worker/model.h"
#include "worker/safetensors.h"
#include "worker/suite.h"
#include "worker/train.h"
#include "kernels/device.h"
#include "err.h"
#include "jsonu.h"
#include "version.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_devices(int argc, char **argv)
{
	char buf[1024];

	kdevice_describe(buf, sizeof buf);
	fputs(buf, stdout);
	return 0;
}

/* Print the failure of a command: stderr, and the JSON error event on
 * stdout for commands that speak JSON lines. A job stopped by a signal is
 * retryable (it resumes from its checkpoint); other failures are not. */
static int s_fail(const char *cmd, int json)
{
	fprintf(stderr, "modula-engine %s: %s\n", cmd, err_msg());
	if (json) {
		cJSON *ev = cJSON_CreateObject();
		char *s;
		cJSON_AddStringToObject(ev, "event", "error");
		cJSON_AddStringToObject(ev, "message", err_msg());
		cJSON_AddBoolToObject(ev, "retryable", train_was_stopped());
		if ((s = jsonu_print(ev)))
			printf("%s\n", s);
		free(s);
		cJSON_Delete(ev);
		fflush(stdout);
	}
	return 1;
}

static void s_on_signal(int sig)
{
	train_request_stop();
}

static int s_train(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = s_on_signal };
	train_job_t job;
	cJSON *j;
	char base[TRAIN_PATH_MAX];
	const char *slash;
	const struct kdevice_ops *K = NULL;
	const char *device = NULL;
	int rc;

	if (argc < 2 || (rc = dmodel_backend_args(argc, argv, 2, &device, &K)) == -2) {
		if (argc >= 2)
			fprintf(stderr, "modula-engine train: %s\n", err_msg());
		fputs("usage: modula-engine train JOB.json [--device cpu|cuda|auto|table] "
		      "[--dtype bf16|f16|f32]\n", stderr);
		return 2;
	}
	if (rc < 0)
		return s_fail("train", 1);
	slash = strrchr(argv[1], '/');
	snprintf(base, sizeof base, "%.*s", slash ? (int)(slash - argv[1]) : 0, argv[1]);
	if (!(j = jsonu_read_file(argv[1])))
		return s_fail("train", 1);
	rc = train_job_parse(j, base, &job);
	/* --device auto: the device path when a GPU answers and the job is one
	 * it runs (LoRA without dropout), else the CPU engine */
	if (rc == 0 && K && device && !strcmp(device, "auto") && (job.full || job.lora.dropout > 0)) {
		fprintf(stderr, "modula-engine train: --device auto: %s runs on the CPU engine\n",
			job.full ? "full-parameter training" : "LoRA with dropout");
		K = NULL;
	}
	job.K = K;
	cJSON_Delete(j);
	if (rc < 0) {
		err_prefix("job '%s'", argv[1]);
		train_job_free(&job);
		return s_fail("train", 1);
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	rc = train_run(&job, stdout);
	train_job_free(&job);
	return rc < 0 ? s_fail("train", 1) : 0;
}

/* "1,2,3" or "1,2,3;4,5,6" (rows of equal length) into a fresh array. */
static int s_parse_rows(const char *s, int **out, int *b, int *t)
{
	size_t cap = strlen(s) / 2 + 2;
	int *v = malloc(cap * sizeof *v), n = 0, rows = 1, row_len = -1, cur = 0;
	const char *p = s;

	if (!v)
		return err_set("out of memory");
	while (*p) {
		char *end;
		errno = 0;
		long x = strtol(p, &end, 10);
		if (end == p || errno || x < -1 || x > 1 << 30) {
			free(v);
			return err_set("bad token list '%s': expected integers separated by ',' (rows by ';')", s);
		}
		v[n++] = (int)x, cur++;
		p = end;
		if (*p == ';' || !*p) {
			if (row_len >= 0 && cur != row_len) {
				free(v);
				return err_set("bad token list '%s': rows of different lengths", s);
			}
			row_len = cur, cur = 0;
			if (*p == ';' && p[1])
				rows++;
		}
		if (*p == ',' || *p == ';')
			p++;
	}
	if (!n) {
		free(v);
		return err_set("empty token list");
	}
	*out = v, *b = rows, *t = row_len;
	return 0;
}

typedef struct eval_args {
	const char *model, *adapter, *tokens, *targets, *out, *device, *dtype;
	int full;
	int repeat;             /* grads: micro-batches run, the last one's gradients kept */
} eval_args_t;

static int s_eval_args(int argc, char **argv, eval_args_t *a, int grads)
{
	memset(a, 0, sizeof *a);
	a->repeat = 1;
	for (int i = 1; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(k, "--full") && grads) {
			a->full = 1;
			continue;
		}
		if (!v)
			return err_set("option '%s' needs a value", k);
		if (!strcmp(k, "--model"))
			a->model = v;
		else if (!strcmp(k, "--adapter"))
			a->adapter = v;
		else if (!strcmp(k, "--tokens"))
			a->tokens = v;
		else if (!strcmp(k, "--targets") && grads)
			a->targets = v;
		else if (!strcmp(k, "--out"))
			a->out = v;
		else if (!strcmp(k, "--device"))
			a->device = v;
		else if (!strcmp(k, "--dtype"))
			a->dtype = v;
		else if (!strcmp(k, "--repeat") && grads) {
			char *end;
			long n = strtol(v, &end, 10);
			if (*end || n < 1 || n > 100)
				return err_set("--repeat takes 1 to 100, not '%s'", v);
			a->repeat = (int)n;
		} else
			return err_set("unknown option '%s'", k);
		i++;
	}
	if (!a->model || !a->tokens || !a->out)
		return err_set("--model, --tokens and --out are required");
	if (grads && a->full == !!a->adapter)
		return err_set("give exactly one of --adapter (LoRA gradients) and --full (all weights)");
	return 0;
}

/* Shared by logits and grads: load (the adapter a PEFT LoRA or a MoDULA
 * bundle), check the ids, reserve. With --device cuda (or table) the
 * weights go to the device model *dm and m only describes the shapes. For
 * grads every adapter tensor trains. */
static model_t *s_eval_model(const eval_args_t *a, int grads, lora_t **lo, moe_t **mo, int **tok,
			     int *b, int *t, dmodel_t **dm)
{
	const struct kdevice_ops *K;
	model_config_t cfg;
	char path[4096];
	model_t *m = NULL;

	if (dmodel_backend(a->device, a->dtype, &K) < 0)
		return NULL;
	if (K && a->full) {
		err_set("--full: the device path trains adapters only (use --device cpu)");
		return NULL;
	}
	snprintf(path, sizeof path, "%s/config.json", a->model);
	if (K ? model_config_load(path, &cfg) < 0 || !(m = model_shape(&cfg)) : !(m = model_load(a->model)))
		return NULL;
	if (a->adapter && bundle_is(a->adapter) ? !(*mo = bundle_load(m, a->adapter))
						: a->adapter && !(*lo = lora_load(m, a->adapter)))
		goto err;
	if (grads && *mo && moe_set_trainable(*mo, ~(uint64_t)0, 1) < 0)
		goto err;
	if (s_parse_rows(a->tokens, tok, b, t) < 0)
		goto err;
	for (int i = 0; i < *b * *t; i++)
		if ((*tok)[i] < 0 || (*tok)[i] >= m->cfg.vocab_size) {
			err_set("token id %d outside the vocabulary (%d)", (*tok)[i], m->cfg.vocab_size);
			goto err;
		}
	if (!K) {
		if (model_reserve(m, *b, *t) < 0)
			goto err;
		return m;
	}
	if (!(*dm = dmodel_load(a->model, K)) ||
	    (*lo && dmodel_attach_lora(*dm, *lo, &(*lo)->params) < 0) ||
	    (*mo && dmodel_attach_moe(*dm, *mo, &(*mo)->train) < 0) || dmodel_reserve(*dm, *b, *t) < 0)
		goto err;
	return m;
err:
	dmodel_destroy(dm);
	lora_destroy(lo);
	model_destroy(&m);
	moe_destroy(mo);
	return NULL;
}

/* The logits of the last forward as a host array: the CPU model's own, or
 * a copy from the device into *buf. */
static const float *s_host_logits(model_t *m, dmodel_t *dm, int b, int t, float **buf)
{
	if (!dm)
		return m->logits;
	if (!(*buf = malloc((size_t)b * t * m->cfg.vocab_size * sizeof(float)))) {
		err_set("out of memory");
		return NULL;
	}
	return dmodel_logits(dm, *buf) < 0 ? NULL : *buf;
}

static int s_logits(int argc, char **argv)
{
	eval_args_t a;
	model_t *m = NULL;
	lora_t *lo = NULL;
	moe_t *mo = NULL;
	st_writer_t *w = NULL;
	dmodel_t *dm = NULL;
	const float *logits;
	float *buf = NULL;
	int *tok = NULL, b, t, rc = 1;

	if (s_eval_args(argc, argv, &a, 0) < 0) {
		fprintf(stderr, "modula-engine logits: %s\nusage: modula-engine logits --model DIR "
			"[--adapter FILE_OR_DIR] --tokens 1,2,3 --out FILE [--device cpu|cuda|auto|table] "
			"[--dtype bf16|f16|f32]\n", err_msg());
		return 2;
	}
	if (!(m = s_eval_model(&a, 0, &lo, &mo, &tok, &b, &t, &dm)))
		goto out;
	if (dm ? dmodel_forward(dm, tok, NULL, b, t, 0.0f, NULL) < 0
	       : (model_forward(m, tok, NULL, b, t, 0, 0), 0))
		goto out;
	int64_t shape[3] = { b, t, m->cfg.vocab_size };
	if (!(logits = s_host_logits(m, dm, b, t, &buf)) || !(w = st_writer_new()) ||
	    st_writer_add(w, "logits", ST_F32, b > 1 ? 3 : 2, b > 1 ? shape : shape + 1, logits) < 0 ||
	    st_writer_write(w, a.out) < 0)
		goto out;
	rc = 0;
out:
	if (rc)
		s_fail("logits", 0);
	st_writer_destroy(&w);
	free(tok);
	free(buf);
	dmodel_destroy(&dm);
	lora_destroy(&lo);
	model_destroy(&m);
	moe_destroy(&mo);
	return rc;
}

/* A debugging and testing command: the loss of one batch and the gradient
 * of every trainable tensor (LoRA's with --adapter, all weights with
 * --full), written as "loss", "logits" and "grad/NAME". */
static int s_grads(int argc, char **argv)
{
	eval_args_t a;
	model_t *m = NULL;
	lora_t *lo = NULL;
	moe_t *mo = NULL;
	st_writer_t *w = NULL;
	dmodel_t *dm = NULL;
	const float *logits;
	float *buf = NULL;
	int *tok = NULL, *tgt = NULL, b, t, tb, tt, rc = 1;
	float loss;
	double dloss;
	char name[300];

	if (s_eval_args(argc, argv, &a, 1) < 0) {
		fprintf(stderr, "modula-engine grads: %s\nusage: modula-engine grads --model DIR "
			"(--adapter FILE_OR_DIR | --full) --tokens 1,2,3 [--targets 2,3,-1] --out FILE "
			"[--device cpu|cuda|auto|table] [--dtype bf16|f16|f32] [--repeat N]\n",
			err_msg());
		return 2;
	}
	if (!(m = s_eval_model(&a, 1, &lo, &mo, &tok, &b, &t, &dm)))
		goto out;
	if (a.targets) {
		if (s_parse_rows(a.targets, &tgt, &tb, &tt) < 0)
			goto out;
		if (tb != b || tt != t) {
			err_set("--targets has shape [%d,%d], --tokens [%d,%d]", tb, tt, b, t);
			goto out;
		}
	} else {
		if (!(tgt = malloc((size_t)b * t * sizeof *tgt))) {
			err_set("out of memory");
			goto out;
		}
		for (int i = 0; i < b * t; i++)
			tgt[i] = i % t == t - 1 ? -1 : tok[i + 1];
	}
	for (int i = 0; i < b * t; i++)
		if (tgt[i] >= m->cfg.vocab_size) {
			err_set("target id %d outside the vocabulary (%d)", tgt[i], m->cfg.vocab_size);
			goto out;
		}
	if (a.full && model_enable_grads(m) < 0)
		goto out;
	const params_t *ps = a.full ? &m->params : mo ? &mo->train : &lo->params;
	params_zero_grad(ps);
	if (dm) {
		/* the fused cross-entropy overwrites the logits: keep them first */
		if (dmodel_forward(dm, tok, NULL, b, t, 0.0f, NULL) < 0 ||
		    !(logits = s_host_logits(m, dm, b, t, &buf)))
			goto out;
		/* --repeat 3 on CUDA: direct, recorded as a graph, replayed */
		for (int r = 0; r < a.repeat; r++)
			if (dmodel_zero_grad(dm) < 0 ||
			    dmodel_train_micro(dm, tok, tgt, b, t, 1.0f, &dloss) < 0)
				goto out;
		if (dmodel_grads_to_host(dm) < 0)
			goto out;
		loss = (float)dloss;
	} else {
		loss = model_forward(m, tok, tgt, b, t, 0, 0);
		model_backward(m, 1.0f);
		logits = m->logits;
	}
	int64_t one = 1, lshape[3] = { b, t, m->cfg.vocab_size };
	if (!(w = st_writer_new()) || st_writer_add(w, "loss", ST_F32, 1, &one, &loss) < 0 ||
	    st_writer_add(w, "logits", ST_F32, b > 1 ? 3 : 2, b > 1 ? lshape : lshape + 1, logits) < 0)
		goto out;
	for (int i = 0; i < ps->n; i++) {
		snprintf(name, sizeof name, "grad/%s", ps->v[i].name);
		if (st_writer_add(w, name, ST_F32, ps->v[i].ndim, ps->v[i].shape, ps->v[i].grad) < 0)
			goto out;
	}
	if (st_writer_write(w, a.out) < 0)
		goto out;
	rc = 0;
out:
	if (rc)
		s_fail("grads", 0);
	st_writer_destroy(&w);
	free(tok);
	free(tgt);
	free(buf);
	dmodel_destroy(&dm);
	lora_destroy(&lo);
	model_destroy(&m);
	moe_destroy(&mo);
	return rc;
}

static const struct engine_cmd {
	const char *name;
	int (*run)(int argc, char **argv);   /* argv[0] is the command */
	const char *help;
} s_cmds[] = {
	{ "devices", s_devices, "list the compute devices this build can use" },
	{ "train", s_train, "JOB.json [--device D]: run or resume a training job (JSON lines)" },
	{ "logits", s_logits, "--model DIR [--adapter P] --tokens 1,2,3 --out FILE [--device D]" },
	{ "grads", s_grads, "--model DIR (--adapter P | --full) --tokens .. --out FILE (testing)" },
	{ "tokenize", cmd_tokenize, "--tokenizer FILE|bytes: JSON strings on stdin, ids out" },
	{ "suite", cmd_suite, "--out DIR [--seed S]: write the multi-domain suite (docs/suite.md)" },
	{ "corpus", cmd_corpus, "--out FILE: build the pretraining text from Debian's fortunes" },
	{ "data", cmd_data, "JOB.json: the suite and corpus as a job's outputs (worker/cmd_data.c)" },
	{ "stage", cmd_stage, "JOB.json: a MoDULA training stage (docs/modula.md)" },
	{ "eval", cmd_eval, "JOB.json [--device D]: loss, exact match, perplexity, router means (docs/modula.md)" },
	{ "export", cmd_export, "--expert FILE --out DIR: an expert as a PEFT LoRA folder" },
	{ "import", cmd_import, "--model DIR --peft DIR --out FILE: a PEFT LoRA as an expert" },
	{ "bench", cmd_bench, "[--model DIR] [--method M] [--device D]: time training steps" },
};

static void s_usage(FILE *f)
{
	fputs("usage: modula-engine COMMAND [ARGS]\n"
	      "\n"
	      "The native MoDULA train/eval engine: one job in, artifacts and JSON-lines\n"
	      "progress out. Usable without a daemon.\n"
	      "\n"
	      "commands:\n", f);
	for (size_t i = 0; i < sizeof s_cmds / sizeof s_cmds[0]; i++)
		fprintf(f, "  %-10s %s\n", s_cmds[i].name, s_cmds[i].help);
	fputs("  help       show this help\n"
	      "\n"
	      "options:\n"
	      "  -h, --help           show this help\n"
	      "  -V, --version        show the version and the backends built in\n", f);
}

int engine_cli_main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		s_usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		s_usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
		version_print(stdout, "modula-engine");
		return 0;
	}
	for (size_t i = 0; i < sizeof s_cmds / sizeof s_cmds[0]; i++)
		if (!strcmp(cmd, s_cmds[i].name))
			return s_cmds[i].run(argc - 1, argv + 1);
	fprintf(stderr, "modula-engine: unknown command '%s' (see modula-engine --help)\n", cmd);
	return 2;
}
