/* engine_bench.c: LoRA training throughput of the engine, for
 * tests/bench/engine_bench.sh (which runs the PyTorch peer beside it).
 *
 *   engine_bench tiny|50m [steps]
 *
 * Builds the named configuration with random weights, hooks LoRA (rank 8,
 * alpha 16) on q,k,v,o,gate,up,down, and times full training steps
 * (forward, backward, AdamW) on a fixed random batch, after 2 warm-up
 * steps. Prints one JSON line: tokens/s and GFLOP/s of the median step
 * (robust to other work on shared cores), the step's FLOPs,
 * the peak of OpenBLAS sgemm measured in the same run (1024^3, best of 5),
 * ru_maxrss. Not a test: nothing is asserted.
 */
#include "worker/lora.h"
#include "worker/model.h"
#include "worker/optim.h"
#include "worker/train.h"
#include "kernels/cpu/ops.h"
#include "err.h"
#include "mtime.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double s_sgemm_peak(void)
{
	int n = 1024;
	float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float));
	float *c = calloc((size_t)n * n, sizeof(float));
	double best = 1e30;

	for (size_t i = 0; i < (size_t)n * n; i++)
		a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
	for (int r = 0; r < 5; r++) {
		double t0 = mtime_s();
		op_gemm(c, a, b, n, n, n, 0, 1, 1.0f, 0.0f);
		double dt = mtime_s() - t0;
		best = dt < best ? dt : best;
	}
	free(a), free(b), free(c);
	return 2.0 * n * n * n / best / 1e9;
}

/* FLOPs of one LoRA training step: frozen matmuls forward + input grads
 * (2 x 2 N in out), LoRA forward and backward (3 x 2 N r (in + out)), the
 * head (forward + input grad), causal attention (QK^T and PV forward, four
 * products backward, over the lower triangle). */
static double s_step_flops(const model_config_t *c, int b, int t, int r)
{
	double n = (double)b * t, f = 0.0;
	int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
	double io[7][2] = { { c->dim, qd }, { c->dim, kd }, { c->dim, kd }, { qd, c->dim },
			    { c->dim, c->ffn_dim }, { c->dim, c->ffn_dim }, { c->ffn_dim, c->dim } };

	for (int s = 0; s < 7; s++)
		f += 2 * (2 * n * io[s][0] * io[s][1]) + 3 * (2 * n * r * (io[s][0] + io[s][1]));
	f += 2.0 * b * c->n_heads * (double)t * (t + 1) / 2 * c->head_dim * (2 + 4);
	f *= c->n_layers;
	f += 2 * (2 * n * c->dim * c->vocab_size);
	return f;
}

static int s_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	model_config_t c;
	lora_config_t lc = { .rank = 8, .alpha = 16, .targets = (1u << MODEL_NSLOTS) - 1 };
	optim_config_t oc = { .lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
			      .clip = 1.0f, .total_steps = 1000 };
	int b, t, steps = argc > 2 ? atoi(argv[2]) : 10;
	model_t *m;
	lora_t *lo;
	optim_t *o;
	int *tok, *tgt;
	struct rusage ru;

	train_default_config(&c);
	if (argc < 2 || !strcmp(argv[1], "tiny")) {
		b = 8, t = 128;
	} else if (!strcmp(argv[1], "50m")) {
		c.vocab_size = 8192, c.dim = 640, c.n_layers = 10, c.n_heads = 10, c.n_kv_heads = 5;
		c.head_dim = 64, c.ffn_dim = 1728, c.max_seq = 512, c.tie_embeddings = 1;
		b = 4, t = 256;
	} else {
		fprintf(stderr, "usage: engine_bench tiny|50m [steps]\n");
		return 2;
	}
	if (!(m = model_new(&c)) || model_reserve(m, b, t) < 0 || !(lo = lora_attach(m, &lc, 1)) ||
	    !(o = optim_new(&lo->params, &oc))) {
		fprintf(stderr, "engine_bench: %s\n", err_msg());
		return 1;
	}
	model_init_random(m, 1);
	tok = malloc((size_t)b * t * sizeof *tok);
	tgt = malloc((size_t)b * t * sizeof *tgt);
	for (int i = 0; i < b * t; i++)
		tok[i] = (i * 7919) % c.vocab_size, tgt[i] = (i * 104729 + 1) % c.vocab_size;
	double loss = 0.0, *dts = calloc((size_t)steps + 2, sizeof *dts);
	for (int s = 0; s < steps + 2; s++) {
		double t0 = mtime_s();
		params_zero_grad(&lo->params);
		loss = model_forward(m, tok, tgt, b, t, (uint64_t)s, 1);
		model_backward(m, 1.0f);
		optim_clip(o);
		optim_step(o, 1e-4f);
		dts[s] = mtime_s() - t0;
	}
	qsort(dts + 2, (size_t)steps, sizeof *dts, s_cmp);
	double dt = dts[2 + steps / 2], flops = s_step_flops(&c, b, t, lc.rank);
	free(dts);
	double peak = s_sgemm_peak();
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"impl\":\"engine\",\"config\":\"%s\",\"params\":%zu,\"batch\":%d,\"seq\":%d,"
	       "\"threads\":%d,\"steps\":%d,\"loss\":%.4f,\"tokens_per_s\":%.1f,\"step_gflop\":%.3f,"
	       "\"gflops\":%.2f,\"sgemm_peak_gflops\":%.2f,\"maxrss_mb\":%.1f}\n",
	       argc > 1 ? argv[1] : "tiny", params_numel(&m->params, 0), b, t, omp_get_max_threads(),
	       steps, loss, (double)b * t / dt, flops / 1e9, flops / dt / 1e9, peak,
	       ru.ru_maxrss / 1024.0);
	free(tok);
	free(tgt);
	optim_destroy(&o);
	lora_destroy(&lo);
	model_destroy(&m);
	return 0;
}
