/* modula_bench.c: step time of the MoDULA methods against plain LoRA, and
 * several domain experts over one pass against separate runs. Not a test:
 * nothing is asserted; it prints figures side by side, as ratios.
 *
 *   modula_bench [steps] [dim]
 *
 * On the embedded tiny configuration (train.h), or with `dim` (a multiple
 * of 64) a wider one (heads of 64, half as many kv heads, ffn 2.75 dim,
 * to see the adapters' share shrink as the model grows), random weights, a
 * fixed random batch of 16 x 64 tokens, after 2 warm-up steps, the median
 * of `steps` (default 10) training steps (forward, backward, AdamW) of:
 *   lora         rank 16 on q,k,v,o,gate,up,down (lora.c)
 *   modula-res   universal rank 16 + 4 domain experts rank 8, soft
 *                routing, everything trainable (the heaviest step), and
 *                the stage-3 step (routers only)
 * target: modula-res <= 1.15 x lora.
 * Then 4 domain experts (modula-res stage 2): one pass over a batch of
 * 4 x 16 sequences (each domain a segment) against 4 steps of 16
 * sequences, one domain each (what 4 separate runs do per step);
 * tokens/s ratio, target >= 2 x. Median times resist other work on the
 * shared cores; run it on an idle machine for figures to report.
 */
#include "config.h"
#include "worker/lora.h"
#include "worker/model.h"
#include "worker/moe.h"
#include "worker/optim.h"
#include "worker/train.h"
#include "mtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BT 16
#define T 64

static int s_tok[4 * BT * T], s_tgt[4 * BT * T];
static const char *const s_names[] = { "math", "code", "logic", "units" };

static int s_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median seconds of one step over `b` sequences; `nseg` > 0 runs the step
 * as nseg single-domain steps of b / nseg sequences when `split`. */
static double s_time(model_t *m, moe_t *mo, const params_t *p, int b, int steps, int nseg, int split)
{
	optim_config_t oc = { .lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .total_steps = 1000 };
	optim_t *o = optim_new(p, &oc);
	double t[64];

	for (int s = 0; s < steps + 2; s++) {
		double t0 = mtime_s();
		params_zero_grad(p);
		for (int k = 0; k < (split ? nseg : 1); k++) {
			int rows = split ? b / nseg : b;
			if (mo && nseg) {
				moe_seg_t seg[4];
				for (int i = 0; i < (split ? 1 : nseg); i++)
					seg[i] = (moe_seg_t){ split ? k + 1 : i + 1, i * (rows / (split ? 1 : nseg)),
							      (i + 1) * (rows / (split ? 1 : nseg)) };
				moe_route_fixed(mo, seg, split ? 1 : nseg, rows);
			}
			model_forward(m, s_tok + (size_t)k * rows * T, s_tgt + (size_t)k * rows * T, rows, T, 0, 1);
			model_backward(m, 1.0f);
		}
		optim_clip(o);
		optim_step(o, 1e-4f);
		if (s >= 2)
			t[s - 2] = mtime_s() - t0;
	}
	optim_destroy(&o);
	qsort(t, (size_t)steps, sizeof t[0], s_cmp);
	return t[steps / 2];
}

int main(int argc, char **argv)
{
	int steps = argc > 1 ? atoi(argv[1]) : 10, dim = argc > 2 ? atoi(argv[2]) : 0;
	model_config_t c;
	model_t *m;
	lora_t *lo;
	moe_t *mo;
	lora_config_t lc = { .rank = 16, .alpha = 32, .targets = (1u << MODEL_NSLOTS) - 1 };
	moe_config_t mc = { .method = MOE_RES, .n_domain = 4, .universal = lc, .slope = 0.01f,
			    .domain = { .rank = 8, .alpha = 16 } };

	if (steps < 1 || steps > 64)
		steps = 10;
	train_default_config(&c);
	if (dim >= 128 && dim % 64 == 0) {
		c.dim = dim, c.head_dim = 64, c.n_heads = dim / 64, c.n_kv_heads = dim / 128;
		c.ffn_dim = dim * 11 / 4;
	}
	for (int i = 0; i < 4 * BT * T; i++)
		s_tok[i] = (i * 131 + 7) % 256, s_tgt[i] = i % T < 20 ? -1 : (i * 37 + 1) % 256;
	if (!(m = model_new(&c)) || model_reserve(m, 4 * BT, T) < 0)
		return 1;
	model_init_random(m, 1);
	if (!(lo = lora_attach(m, &lc, 1)))
		return 1;
	double tl = s_time(m, NULL, &lo->params, BT, steps, 0, 0);
	lora_destroy(&lo);
	if (!(mo = moe_attach(m, &mc, s_names, 1)))
		return 1;
	double tr = s_time(m, mo, &mo->train, BT, steps, 0, 0);
	moe_set_trainable(mo, 0, 1);
	double t3 = s_time(m, mo, &mo->train, BT, steps, 0, 0);
	moe_set_trainable(mo, 0x1e, 0);
	double tone = s_time(m, mo, &mo->train, 4 * BT, steps, 4, 0);
	double tsep = s_time(m, mo, &mo->train, 4 * BT, steps, 4, 1);
	printf("step time, %d x %d tokens, median of %d (dim %d, ffn %d, %d layers)\n", BT, T, steps,
	       c.dim, c.ffn_dim, c.n_layers);
	printf("  %-44s %8.1f ms\n", "lora rank 16", 1e3 * tl);
	printf("  %-44s %8.1f ms  %.2fx lora (target <= 1.15x)\n",
	       "modula-res 16 + 4 x 8, everything trainable", 1e3 * tr, tr / tl);
	printf("  %-44s %8.1f ms  %.2fx lora\n", "modula-res stage 3 (routers only)", 1e3 * t3, t3 / tl);
	printf("4 domain experts (modula-res stage 2), 4 x %d sequences per step\n", BT);
	printf("  %-44s %8.0f tokens/s\n", "4 separate single-domain steps", 4.0 * BT * T / tsep);
	printf("  %-44s %8.0f tokens/s  %.2fx separate (target >= 2x)\n", "one pass, 4 segments",
	       4.0 * BT * T / tone, tsep / tone);
	moe_destroy(&mo);
	model_destroy(&m);
	return 0;
}
