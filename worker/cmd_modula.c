/* cmd_modula.c: the modula-engine commands of the MoDULA methods: stage,
 * eval, export and import (docs/modula.md). Each parses its arguments,
 * calls the library (stage.h, eval.h, bundle.h) and prints a failure once. */
#include "config.h"
#include "worker/cmd_modula.h"
#include "worker/bundle.h"
#include "worker/dmodel.h"
#include "worker/eval.h"
#include "worker/model.h"
#include "worker/stage.h"
#include "err.h"
#include "jsonu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* stderr, and with `json` the engine's error event on stdout. */
static int s_fail(const char *cmd, int json)
{
	fprintf(stderr, "modula-engine %s: %s\n", cmd, err_msg());
	if (json) {
		cJSON *ev = cJSON_CreateObject();
		char *s;
		cJSON_AddStringToObject(ev, "event", "error");
		cJSON_AddStringToObject(ev, "message", err_msg());
		cJSON_AddBoolToObject(ev, "retryable", 0);
		if ((s = jsonu_print(ev)))
			printf("%s\n", s);
		free(s);
		cJSON_Delete(ev);
		fflush(stdout);
	}
	return 1;
}

/* Read JOB.json; its folder goes to base. NULL after s_fail(). */
static cJSON *s_read_job(const char *cmd, const char *path, char *base, size_t n)
{
	const char *slash = strrchr(path, '/');
	cJSON *j;

	snprintf(base, n, "%.*s", slash ? (int)(slash - path) : 0, path);
	if (!(j = jsonu_read_file(path)))
		s_fail(cmd, 1);
	return j;
}

int cmd_stage(int argc, char **argv)
{
	stage_job_t job;
	char base[TRAIN_PATH_MAX];
	const struct kdevice_ops *K = NULL;
	const char *device = NULL;
	cJSON *j;
	int rc;

	if (argc < 2 || (rc = dmodel_backend_args(argc, argv, 2, &device, &K)) == -2) {
		if (argc >= 2)
			fprintf(stderr, "modula-engine stage: %s\n", err_msg());
		fputs("usage: modula-engine stage JOB.json [--device cpu|cuda|auto|table] "
		      "[--dtype bf16|f16|f32]\n", stderr);
		return 2;
	}
	if (rc < 0)
		return s_fail("stage", 1);
	if (!(j = s_read_job("stage", argv[1], base, sizeof base)))
		return 1;
	rc = stage_job_parse(j, base, &job);
	job.t.K = K;
	cJSON_Delete(j);
	if (rc < 0) {
		err_prefix("job '%s'", argv[1]);
		stage_job_free(&job);
		return s_fail("stage", 1);
	}
	rc = stage_run(&job, stdout);
	stage_job_free(&job);
	return rc < 0 ? s_fail("stage", 1) : 0;
}

int cmd_export(int argc, char **argv)
{
	if (argc != 5 || strcmp(argv[1], "--expert") || strcmp(argv[3], "--out")) {
		fputs("usage: modula-engine export --expert FILE.safetensors --out PEFT_DIR\n", stderr);
		return 2;
	}
	return bundle_export_peft(argv[2], argv[4]) < 0 ? s_fail("export", 0) : 0;
}

int cmd_import(int argc, char **argv)
{
	const char *model = NULL, *peft = NULL, *name = "universal", *out = NULL;
	model_t *m;
	int rc;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--model"))
			model = argv[i + 1];
		else if (!strcmp(argv[i], "--peft"))
			peft = argv[i + 1];
		else if (!strcmp(argv[i], "--name"))
			name = argv[i + 1];
		else if (!strcmp(argv[i], "--out"))
			out = argv[i + 1];
		else
			model = NULL, i = argc;
	}
	if (!(argc % 2) || !model || !peft || !out) {
		fputs("usage: modula-engine import --model DIR --peft PEFT_DIR --out FILE.safetensors "
		      "[--name NAME]\n", stderr);
		return 2;
	}
	if (!(m = model_load(model)))
		return s_fail("import", 0);
	rc = bundle_import_peft(m, peft, name, out);
	model_destroy(&m);
	return rc < 0 ? s_fail("import", 0) : 0;
}

int cmd_eval(int argc, char **argv)
{
	eval_job_t job;
	char base[TRAIN_PATH_MAX];
	const struct kdevice_ops *K = NULL;
	const char *device;
	cJSON *j;
	int rc;

	if (argc < 2 || (rc = dmodel_backend_args(argc, argv, 2, &device, &K)) == -2) {
		if (argc >= 2)
			fprintf(stderr, "modula-engine eval: %s\n", err_msg());
		fputs("usage: modula-engine eval JOB.json [--device cpu|cuda|auto|table] "
		      "[--dtype bf16|f16|f32]\n", stderr);
		return 2;
	}
	if (rc < 0)
		return s_fail("eval", 1);
	if (!(j = s_read_job("eval", argv[1], base, sizeof base)))
		return 1;
	rc = eval_job_parse(j, base, &job);
	cJSON_Delete(j);
	if (rc < 0) {
		err_prefix("job '%s'", argv[1]);
		eval_job_free(&job);
		return s_fail("eval", 1);
	}
	job.K = K;
	rc = eval_run(&job, stdout);
	eval_job_free(&job);
	return rc < 0 ? s_fail("eval", 1) : 0;
}
