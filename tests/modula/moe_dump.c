/* moe_dump.c: one forward/backward of a mixture (worker/moe.h) on a model
 * folder, written out for tests/modula-torch.py to compare with PyTorch.
 *
 *   moe_dump MODEL OUT METHOD N_DOMAIN TOP_K ROUTE TRAIN TOKENS MASK
 *     ROUTE  soft | e0,e1,... (fixed: expert of each token row)
 *     TRAIN  EXPERT_BITS:ROUTER (e.g. 6:0 trains experts 1 and 2)
 *   moe_dump ... MASK table|table-DT|cuda-DT   (DT: f32, bf16, f16)
 *     the same through the device model (worker/dmodel.h): over the CPU op
 *     table (the GPU path's code, checked without a GPU; table-bf16 rounds
 *     every stored activation and weight copy to bf16 as the GPU does), or
 *     on the GPU (tests/gpu/hf_check.py, from the GPU bundle).
 * Every expert tensor is drawn from normal(0, 0.15), every router from
 * normal(0, 0.3) (seed 5), so
 * no gradient is trivially zero. OUT holds "logits", "loss" (cross-entropy
 * + aux), "aux", each tensor as EXPERT/NAME or router/NAME, and
 * "grad/..." of every one (frozen ones must stay zero). A test helper, not
 * a command. Ranks: universal 4 (alpha 8), domain 3 (alpha 5, rsLoRA),
 * LeakyReLU slope 0.1, aux weight 0.1.
 */
#include "config.h"
#include "worker/dmodel.h"
#include "worker/model.h"
#include "worker/moe.h"
#include "worker/rng.h"
#include "worker/safetensors.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_ints(const char *s, int *v, int cap)
{
	int n = 0;

	while (*s && n < cap) {
		char *end;
		v[n++] = (int)strtol(s, &end, 10);
		s = *end ? end + 1 : end;
	}
	return n;
}

static int s_add_all(st_writer_t *w, const params_t *ps, const char *prefix)
{
	char name[400];

	for (int i = 0; i < ps->n; i++) {
		snprintf(name, sizeof name, "%s/%s", prefix, ps->v[i].name);
		if (st_writer_add(w, name, ST_F32, 2, ps->v[i].shape, ps->v[i].data) < 0)
			return -1;
		snprintf(name, sizeof name, "grad/%s/%s", prefix, ps->v[i].name);
		if (st_writer_add(w, name, ST_F32, 2, ps->v[i].shape, ps->v[i].grad) < 0)
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const names[] = { "d1", "d2", "d3", "d4", "d5" };
	model_t *m = NULL;
	moe_t *mo = NULL;
	dmodel_t *dm = NULL;
	float *dlogits = NULL;
	double dloss;
	st_writer_t *w = NULL;
	moe_config_t c = { 0 };
	int tok[4096], mask[4096], route[64], n, nm, b = 1, t, rc = 1, router;
	unsigned long long bits;
	rng_t r;

	const struct kdevice_ops *K = NULL;
	char dev[32] = "", *dash = NULL;
	if (argc == 11) {
		snprintf(dev, sizeof dev, "%s", argv[10]);
		if ((dash = strchr(dev, '-')))
			*dash++ = '\0';
	}
	if (argc == 11 && dmodel_backend(dev, dash, &K) < 0) {
		fprintf(stderr, "moe_dump: %s\n", err_msg());
		return 1;
	}
	if (argc != 10 && (argc != 11 || !K)) {
		fprintf(stderr, "usage: moe_dump MODEL OUT METHOD N_DOMAIN TOP_K ROUTE TRAIN TOKENS MASK "
			"[table|table-DT|cuda-DT] (DT: f32, bf16, f16)\n");
		return 2;
	}
	for (const char *p = argv[8]; *p; p++)
		b += *p == ';';
	n = s_ints(argv[8], tok, 4096), nm = s_ints(argv[9], mask, 4096), t = n / b;
	if (nm != n || sscanf(argv[7], "%llu:%d", &bits, &router) != 2 ||
	    moe_method_parse(argv[3], &c.method) < 0) {
		fprintf(stderr, "moe_dump: bad arguments\n");
		return 2;
	}
	c.n_domain = atoi(argv[4]), c.top_k = atoi(argv[5]);
	c.universal = (lora_config_t){ .rank = 4, .alpha = 8, .targets = (1u << MODEL_NSLOTS) - 1 };
	c.domain = (lora_config_t){ .rank = 3, .alpha = 5, .rslora = 1 };
	c.slope = 0.1f, c.aux_weight = 0.1f;
	if (!(m = model_load(argv[1])) || !(mo = moe_attach(m, &c, names, 3)) ||
	    model_reserve(m, b, t) < 0 || moe_set_trainable(mo, bits, router) < 0)
		goto out;
	if (strcmp(argv[6], "soft")) {
		moe_seg_t seg[64];
		int ns = s_ints(argv[6], route, 64);
		for (int i = 0; i < ns; i++)
			seg[i] = (moe_seg_t){ route[i], i, i + 1 };
		if (moe_route_fixed(mo, seg, ns, b) < 0)
			goto out;
	}
	rng_seed(&r, 5);
	for (int e = 0; e < mo->n_exp; e++)
		for (int i = 0; i < mo->exp[e].params.n; i++)
			for (size_t j = 0; j < mo->exp[e].params.v[i].n; j++)
				mo->exp[e].params.v[i].data[j] = 0.15f * rng_normal(&r);
	for (int i = 0; i < mo->router.n; i++)
		for (size_t j = 0; j < mo->router.v[i].n; j++)
			mo->router.v[i].data[j] = 0.3f * rng_normal(&r);
	int tgt[4096];
	for (int i = 0; i < n; i++)
		tgt[i] = i % t < t - 1 && mask[i + 1] ? tok[i + 1] : -1;
	float loss, aux = 0.0f, total;
	const float *logits;
	if (argc == 11) {
		size_t nl = (size_t)n * m->cfg.vocab_size;
		if (!(dm = dmodel_from_host(m, K)) ||
		    dmodel_attach_moe(dm, mo, &mo->train) < 0 || dmodel_reserve(dm, b, t) < 0 ||
		    /* fixed routing to domain experts: each sequence's logits */
		    (strcmp(argv[6], "soft") && route[0] > 0 && dmodel_route_rows(dm, route, b, t) < 0) ||
		    !(dlogits = malloc(nl * sizeof *dlogits)) ||
		    dmodel_forward(dm, tok, NULL, b, t, 0.0f, NULL) < 0 || dmodel_logits(dm, dlogits) < 0 ||
		    dmodel_zero_grad(dm) < 0)
			goto out;
		/* three micro-batches, the gradients of the last: on CUDA the
		 * first runs directly, the second is recorded as a graph, the
		 * third replays it */
		for (int k = 1; k < 3; k++)
			if (dmodel_train_micro(dm, tok, tgt, b, t, 1.0f, &dloss) < 0 ||
			    dmodel_zero_grad(dm) < 0)
				goto out;
		if (dmodel_train_micro(dm, tok, tgt, b, t, 1.0f, &dloss) < 0 ||
		    dmodel_grads_to_host(dm) < 0)
			goto out;
		loss = (float)dloss, logits = dlogits;
	} else {
		loss = model_forward(m, tok, tgt, b, t, 0, 1);
		aux = moe_aux_loss(mo);
		model_backward(m, 1.0f);
		logits = m->logits;
	}
	total = loss + aux;
	int64_t one = 1, ls[3] = { b, t, m->cfg.vocab_size };
	if (!(w = st_writer_new()) || st_writer_add(w, "loss", ST_F32, 1, &one, &total) < 0 ||
	    st_writer_add(w, "aux", ST_F32, 1, &one, &aux) < 0 ||
	    st_writer_add(w, "logits", ST_F32, 3, ls, logits) < 0)
		goto out;
	for (int e = 0; e < mo->n_exp; e++)
		if (mo->exp[e].rank && s_add_all(w, &mo->exp[e].params, mo->exp[e].name) < 0)
			goto out;
	if (s_add_all(w, &mo->router, "router") < 0 || st_writer_write(w, argv[2]) < 0)
		goto out;
	rc = 0;
out:
	if (rc)
		fprintf(stderr, "moe_dump: %s\n", err_msg());
	st_writer_destroy(&w);
	dmodel_destroy(&dm);
	free(dlogits);
	model_destroy(&m);
	moe_destroy(&mo);
	return rc;
}
