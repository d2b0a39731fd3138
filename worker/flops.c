/* flops.c: training FLOPs from a model's shape; see flops.h. */
#include "config.h"
#include "worker/flops.h"
#include "worker/model.h"

#include <string.h>

/* One linear layer in -> out with its adapter when `adapted`; `in_rg`:
 * its input needs a gradient. Adds its products per token to f->token;
 * returns whether its output needs a gradient. */
static int s_linear(flops_t *f, double in, double out, int in_rg, int full, const flops_adapter_t *ad,
		    int adapted)
{
	int rg = in_rg || full, h_rg = in_rg || (ad->n > 0 && ad->e[0].trains);

	f->token += 2.0 * in * out * (1 + in_rg + full);
	if (!adapted)
		return rg;
	for (int i = 0; i < ad->n; i++) {
		const flops_expert_t *e = &ad->e[i];
		int x_rg = e->reads_h ? h_rg : in_rg;
		double a = 2.0 * e->rank * (e->reads_h ? out : in), b = 2.0 * out * e->rank;

		f->token += a * (1 + x_rg + e->trains) + b * (1 + (x_rg || e->trains) + e->trains);
		rg = rg || e->trains;
	}
	if (ad->router_rows > 0) {
		f->token += 2.0 * ad->router_rows * in * (1 + in_rg + ad->router_trains);
		rg = rg || ad->router_trains;
	}
	return rg;
}

void flops_count(flops_t *f, const model_config_t *c, int full, const flops_adapter_t *ad)
{
	static const flops_adapter_t none;
	double C = c->dim, F = c->ffn_dim, V = c->vocab_size;
	double QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
	const double in[MODEL_NSLOTS] = { C, C, C, QD, C, C, F };
	const double out[MODEL_NSLOTS] = { QD, KD, KD, C, F, F, C };
	int x = full, rg[MODEL_NSLOTS]; /* x: the residual stream needs a gradient */

	if (!ad)
		ad = &none;
	memset(f, 0, sizeof *f);
#define LIN(s, in_rg) (rg[s] = s_linear(f, in[s], out[s], in_rg, full, ad, (int)(ad->targets >> (s) & 1u)))
	for (int l = 0; l < c->n_layers; l++) {
		LIN(MODEL_Q, x);
		LIN(MODEL_K, x);
		LIN(MODEL_V, x);
		/* S = Q K^T, Y = P V: each operand's gradient when it needs one */
		int p = rg[MODEL_Q] || rg[MODEL_K];
		f->attn += QD * (2 + rg[MODEL_Q] + rg[MODEL_K] + p + rg[MODEL_V]);
		LIN(MODEL_O, p || rg[MODEL_V]);
		x = x || rg[MODEL_O];
		LIN(MODEL_GATE, x);
		LIN(MODEL_UP, x);
		LIN(MODEL_DOWN, rg[MODEL_GATE] || rg[MODEL_UP]);
		x = x || rg[MODEL_DOWN];
	}
#undef LIN
	f->token += 2.0 * V * C * (1 + x + full);
}

double flops_batch(const flops_t *f, long rows, int t)
{
	return (double)rows * t * (f->token + f->attn * t);
}
