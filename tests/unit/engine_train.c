/* engine_train.c: the training pieces around the model: data batches
 * (loss only on response tokens and eos, padding masked, truncation,
 * dropped records, epoch order), the learning-rate schedule, clipping by
 * global norm and one AdamW update against the formula.
 */
#include "worker/data.h"
#include "worker/optim.h"
#include "worker/tokenizer.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void s_test_data(void)
{
	char path[] = "/tmp/engine-train-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	tokenizer_t *tok = tokenizer_bytes_new();
	const char *paths[1] = { path };
	int tokens[2 * 8], targets[2 * 8], t, seen_ab = 0, seen_x = 0, ok_layout = 1;
	data_t *d;
	data_cursor_t cur = { 0, 0 };

	fputs("{\"prompt\":\"ab\",\"response\":\"c\"}\n\n"
	      "{\"prompt\":\"x\",\"response\":\"yzw\"}\n"
	      "{\"prompt\":\"0123456789\",\"response\":\"cut away\"}\n", f);
	fclose(f);
	d = data_load(paths, 1, tok, 7, 11);
	TAP_OK(d && d->n == 2 && d->dropped == 1, "data: 2 records kept, the one cut away dropped");
	if (!d)
		goto out;
	data_next_batch(d, &cur, 2, tokens, targets, &t);
	/* "x" "yzw": [bos x y z w eos] -> 5 inputs, the longest: t = 5 */
	TAP_OK(t == 5 && cur.epoch == 0 && cur.pos == 2, "data: padded to the longest record (t %d)", t);
	for (int i = 0; i < 2; i++) {
		const int *tk = tokens + i * t, *tg = targets + i * t;
		if (tk[1] == 'a') {
			int want_tk[5] = { TOK_BYTES_BOS, 'a', 'b', 'c', TOK_BYTES_PAD };
			int want_tg[5] = { -1, -1, 'c', TOK_BYTES_EOS, -1 };
			seen_ab = 1;
			ok_layout &= !memcmp(tk, want_tk, sizeof want_tk) && !memcmp(tg, want_tg, sizeof want_tg);
		} else {
			int want_tk[5] = { TOK_BYTES_BOS, 'x', 'y', 'z', 'w' };
			int want_tg[5] = { -1, 'y', 'z', 'w', TOK_BYTES_EOS };
			seen_x = 1;
			ok_layout &= !memcmp(tk, want_tk, sizeof want_tk) && !memcmp(tg, want_tg, sizeof want_tg);
		}
	}
	TAP_OK(seen_ab && seen_x && ok_layout,
	       "data: [bos prompt response eos], targets only on response and eos, padding masked");
	data_next_batch(d, &cur, 3, tokens, targets, &t);
	TAP_OK(cur.epoch == 2 && cur.pos == 1, "data: batches wrap into the next epochs (at %ld/%ld)",
	       cur.epoch, cur.pos);
	data_destroy(&d);
	TAP_OK(d == NULL, "data_destroy clears the pointer");
out:
	tokenizer_destroy(&tok);
	unlink(path);
}

static void s_test_optim(void)
{
	optim_config_t c = { .lr = 1.0f, .min_lr_ratio = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f,
			     .eps = 1e-8f, .weight_decay = 0.1f, .clip = 1.0f, .warmup = 4, .total_steps = 14 };
	float w[2] = { 1.0f, -2.0f }, g[2] = { 3.0f, 4.0f };
	int64_t shape[1] = { 2 };
	params_t ps = { 0 };
	optim_t *o;

	TAP_OK(fabsf(optim_lr(&c, 0) - 0.25f) < 1e-7f && fabsf(optim_lr(&c, 3) - 1.0f) < 1e-7f &&
	       fabsf(optim_lr(&c, 9) - 0.55f) < 1e-6f && fabsf(optim_lr(&c, 14) - 0.1f) < 1e-7f,
	       "schedule: linear warmup, cosine to min_lr_ratio (%g %g %g %g)", optim_lr(&c, 0),
	       optim_lr(&c, 3), optim_lr(&c, 9), optim_lr(&c, 14));
	params_add(&ps, "w", w, g, 1, shape);
	o = optim_new(&ps, &c);
	float norm = optim_clip(o);
	TAP_OK(fabsf(norm - 5.0f) < 1e-6f && fabsf(g[0] - 0.6f) < 1e-6f && fabsf(g[1] - 0.8f) < 1e-6f,
	       "clipping: norm 5 scaled to 1 (%g, %g)", g[0], g[1]);
	optim_step(o, 0.5f);
	/* first step: m = 0.1 g, v = 0.001 g^2, mhat = g, vhat = g^2:
	 * w = w (1 - lr wd) - lr g / (|g| + eps) */
	float w0 = 1.0f * (1 - 0.05f) - 0.5f * 0.6f / (0.6f + 1e-8f);
	float w1 = -2.0f * (1 - 0.05f) - 0.5f * 0.8f / (0.8f + 1e-8f);
	TAP_OK(fabsf(w[0] - w0) < 1e-6f && fabsf(w[1] - w1) < 1e-6f && o->step == 1,
	       "AdamW first step matches the formula (%g, %g)", w[0], w[1]);
	optim_destroy(&o);
	params_clear(&ps);
}

int main(void)
{
	s_test_data();
	s_test_optim();
	return tap_done();
}
