/* flops_test.c: worker/flops.h against counts derived by hand for a tiny
 * model (V 10, C 4, one layer, 2 heads of 2, 1 kv head, ffn 6).
 *
 * Forward products per token: q 2*4*4 = 32, k 2*4*2 = 16, v 16, o 32,
 * gate 2*4*6 = 48, up 48, down 48, lm_head 2*10*4 = 80: 320. Attention:
 * 2 products of 2 T C_att halved: 2 * C_att = 8 per token per position.
 * The independent check (PyTorch, the engine's real jobs) is
 * tests/worker-flops.py.
 */
#include "worker/flops.h"
#include "worker/model.h"
#include "tap.h"

#include <string.h>

static model_config_t s_tiny(void)
{
	model_config_t c;

	memset(&c, 0, sizeof c);
	c.vocab_size = 10, c.dim = 4, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.head_dim = 2;
	c.ffn_dim = 6, c.max_seq = 16;
	return c;
}

int main(void)
{
	model_config_t c = s_tiny();
	flops_t f;
	flops_adapter_t ad;

	flops_count(&f, &c, 0, NULL);
	TAP_OK(f.token == 320 && f.attn == 8 && flops_batch(&f, 3, 5) == 15 * (320 + 8 * 5),
	       "forward only: 320 per token + 8 T (got %.0f, %.0f)", f.token, f.attn);

	flops_count(&f, &c, 1, NULL);
	TAP_OK(f.token == 3 * 320 && f.attn == 3 * 8, "full training: 3x the forward (got %.0f, %.0f)",
	       f.token, f.attn);

	/* rank-1 LoRA on v: q, k forward only (32 + 16); v: base 16 (its input
	 * needs no gradient), A 8 + its weight gradient 8, B 4 + input 4 +
	 * weight 4; attention: only V needs a gradient: 4 * (2 + 1); from o on
	 * the stream needs gradients: o 2*32, gate, up 2*48 each, down 2*48,
	 * head 2*80 (input gradient only). */
	memset(&ad, 0, sizeof ad);
	ad.targets = 1u << MODEL_V, ad.n = 1, ad.e[0] = (flops_expert_t){ 1, 0, 1 };
	flops_count(&f, &c, 0, &ad);
	TAP_OK(f.token == 32 + 16 + 16 + 16 + 12 + 64 + 192 + 96 + 160 && f.attn == 12,
	       "lora on v: 604 per token + 12 T (got %.0f, %.0f)", f.token, f.attn);

	/* Res domain stage on q: expert 0 rank 2 frozen (A 2*2*4, B 2*4*2,
	 * forward only), the domain expert rank 1 reads h (A 2*1*4 + weight
	 * gradient, B 2*4*1 + input + weight): q = 32 + 16 + 16 + 16 + 24. */
	memset(&ad, 0, sizeof ad);
	ad.targets = 1u << MODEL_Q, ad.n = 2;
	ad.e[0] = (flops_expert_t){ 2, 0, 0 }, ad.e[1] = (flops_expert_t){ 1, 1, 1 };
	flops_count(&f, &c, 0, &ad);
	TAP_OK(f.token == 104 + 32 + 64 + 192 + 96 + 160 && f.attn == 4 * (2 + 1 + 1),
	       "res domain expert on q: 648 per token + 16 T (got %.0f, %.0f)", f.token, f.attn);

	/* Router stage on q: two frozen rank-1 experts reading x (8 + 8 each,
	 * forward only), a trained 2-row router (16 + its weight gradient). */
	memset(&ad, 0, sizeof ad);
	ad.targets = 1u << MODEL_Q, ad.n = 2, ad.router_rows = 2, ad.router_trains = 1;
	ad.e[0] = (flops_expert_t){ 1, 0, 0 }, ad.e[1] = (flops_expert_t){ 1, 0, 0 };
	flops_count(&f, &c, 0, &ad);
	TAP_OK(f.token == 96 + 32 + 64 + 192 + 96 + 160 && f.attn == 16,
	       "router on q: 640 per token + 16 T (got %.0f, %.0f)", f.token, f.attn);

	/* Nothing trains in the adapter: forward only, the adapter included. */
	ad.router_trains = 0;
	flops_count(&f, &c, 0, &ad);
	TAP_OK(f.token == 320 + 16 + 16 + 16 && f.attn == 8, "frozen adapter: forward only (got %.0f)", f.token);
	return tap_done();
}
