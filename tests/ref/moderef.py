#!/usr/bin/python3
"""moderef.py: the PyTorch reference of the MoDULA mixtures (worker/moe.h).

A library for tests (tests/modula-torch.py); the model is hfref.py's, by
import, with the mixture added to each adapted linear layer through
hfref.forward's `delta` hook. Plain PyTorch, run with /usr/bin/python3.

Tensors are named as the engine's moe_dump writes them: EXPERT/PEFT_NAME
(lora_A [r, a_in], lora_B [out, r]) and router/...router.weight [n_route, in].
Per method, for one layer (scales folded into B, LR = LeakyReLU(slope)):
  lora         y += B0 A0 x
  molora       y += sum_{i>=1} s_i Bi Ai x,         s = softmax(W_R x) (top-k renormalised)
  modula-flan  y += sum_{i>=0} s_i Bi Ai x
  modula-res   h = B0 A0 x; y += h + sum_{i>=1} s_i Bi LR(Ai h)
  modula-res-nores  the same without + h
Fixed routing (`route` a list, one expert per token row) replaces s by a
one-hot row: expert 0 alone is B0 A0 x (Flan) or h (Res, both variants);
expert i >= 1 is Bi Ai x (Flan), h + Bi LR(Ai h) (Res) or Bi LR(Ai h) (nores).
Top-k adds aux = w * n_route * sum_j f_j P_j per layer, averaged over layers.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfref  # noqa: E402


class Mixture:
    def __init__(self, method, names, tensors, ranks, slope=0.01, top_k=0, aux_weight=0.0):
        """names: expert names, index 0 the universal one (None when absent);
        ranks: {name: (rank, alpha, rslora)}; tensors: {name: tensor}."""
        self.method, self.names, self.t = method, names, tensors
        self.slope, self.top_k, self.aux_weight = slope, top_k, aux_weight
        self.scale = {n: a / (math.sqrt(r) if rs else r) for n, (r, a, rs) in ranks.items()}
        self.route = None       # None: soft; else a list, one expert per row
        self.aux = []

    def key(self, e, layer, mod, ab):
        return f"{self.names[e]}/" + hfref.peft_name(layer, mod, ab)

    def has(self, layer, mod):
        return any(n and self.key(e, layer, mod, "A") in self.t for e, n in enumerate(self.names))

    def expert(self, e, layer, mod, inp, leaky):
        a, b = self.t[self.key(e, layer, mod, "A")], self.t[self.key(e, layer, mod, "B")]
        mid = inp @ a.T
        if leaky:
            mid = torch.nn.functional.leaky_relu(mid, self.slope)
        return self.scale[self.names[e]] * (mid @ b.T)

    def weights(self, layer, mod, x):
        base = 0 if self.method == "modula-flan" else 1
        name = "router/" + hfref.peft_name(layer, mod, "A").replace("lora_A", "router")
        z = x @ self.t[name].T
        p = z.softmax(-1)
        if not self.top_k:
            return base, p
        idx = z.topk(self.top_k, dim=-1).indices
        mask = torch.zeros_like(z, dtype=torch.bool).scatter(-1, idx, True)
        s = z.masked_fill(~mask, float("-inf")).softmax(-1)
        if self.aux_weight:
            nr = z.shape[-1]
            f = mask.reshape(-1, nr).to(z.dtype).mean(0)
            P = p.reshape(-1, nr).mean(0)
            self.aux.append(self.aux_weight * nr * (f * P).sum())
        return base, s

    def delta(self, layer, mod, x):
        if not self.has(layer, mod):
            return 0
        m = self.method
        res = m in ("modula-res", "modula-res-nores")
        if m == "lora":
            return self.expert(0, layer, mod, x, False)
        if self.route is not None:
            rows = []
            for bi, e in enumerate(self.route):
                xb = x[bi:bi + 1]
                if not res:
                    rows.append(self.expert(e, layer, mod, xb, False))
                    continue
                h = self.expert(0, layer, mod, xb, False)
                y = h if (m == "modula-res" or e == 0) else 0
                if e:
                    y = y + self.expert(e, layer, mod, h, True)
                rows.append(y)
            return torch.cat(rows, 0)
        base, s = self.weights(layer, mod, x)
        y, inp = 0, x
        if res:
            inp = self.expert(0, layer, mod, x, False)
            y = inp if m == "modula-res" else 0
        for j in range(s.shape[-1]):
            y = y + s[..., j:j + 1] * self.expert(j + base, layer, mod, inp, res)
        return y


def run(model_dir, mix, tokens, mask, precision=torch.float64):
    """Logits, loss (+ aux) and {tensor name: grad} of the mixture's tensors."""
    cfg, stored = hfref.model_read(model_dir)
    w = {k: v.to(precision) for k, v in stored.items()}
    for t in mix.t.values():
        t.requires_grad_(True)
    mix.aux = []
    logits = hfref.forward(cfg, w, tokens, {}, 0.0, delta=mix.delta)
    loss = hfref.masked_loss(logits, tokens, mask)
    if mix.aux:
        loss = loss + torch.stack(mix.aux).mean()
    loss.backward()
    grads = {k: (t.grad if t.grad is not None else torch.zeros_like(t)) for k, t in mix.t.items()}
    return logits.detach(), loss.detach(), grads
