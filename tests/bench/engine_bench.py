"""engine_bench.py: the PyTorch peer of tests/bench/engine_bench.c.

    /usr/bin/python3 engine_bench.py tiny|50m [steps] [threads]

The same LLaMA-family model (GQA, RoPE, SwiGLU, RMSNorm, tied head), the
same LoRA (rank 8, alpha 16 on q,k,v,o,gate,up,down, base frozen), batch,
sequence length and AdamW step, in eager PyTorch fp32 on the CPU with
torch.set_num_threads(threads). Prints one JSON line like the engine's
(tokens/s of the median step).
Written for the benchmark only: not a reference implementation.
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F

CONFIGS = {
    "tiny": dict(vocab=259, dim=128, layers=4, heads=4, kv=2, hd=32, ffn=352, b=8, t=128),
    "50m": dict(vocab=8192, dim=640, layers=10, heads=10, kv=5, hd=64, ffn=1728, b=4, t=256),
}


class Lora(torch.nn.Module):
    def __init__(self, d_in, d_out, r=8, alpha=16):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(d_out, d_in) * 0.02, requires_grad=False)
        self.a = torch.nn.Parameter(torch.empty(r, d_in).uniform_(-d_in ** -0.5, d_in ** -0.5))
        self.b = torch.nn.Parameter(torch.zeros(d_out, r))
        self.s = alpha / r

    def forward(self, x):
        return F.linear(x, self.w) + F.linear(F.linear(x, self.a), self.b) * self.s


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["dim"], c["hd"]
        self.c = c
        self.ln1, self.ln2 = RMSNorm(d), RMSNorm(d)
        self.q = Lora(d, c["heads"] * hd)
        self.k = Lora(d, c["kv"] * hd)
        self.v = Lora(d, c["kv"] * hd)
        self.o = Lora(c["heads"] * hd, d)
        self.gate, self.up = Lora(d, c["ffn"]), Lora(d, c["ffn"])
        self.down = Lora(c["ffn"], d)

    def forward(self, x, cos, sin):
        c = self.c
        b, t, _ = x.shape
        a = self.ln1(x)
        q = self.q(a).view(b, t, c["heads"], c["hd"]).transpose(1, 2)
        k = self.k(a).view(b, t, c["kv"], c["hd"]).transpose(1, 2)
        v = self.v(a).view(b, t, c["kv"], c["hd"]).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = c["heads"] // c["kv"]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") \
            else self.attn(q, k, v, t)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, -1))
        m = self.ln2(x)
        return x + self.down(F.silu(self.gate(m)) * self.up(m))

    @staticmethod
    def attn(q, k, v, t):
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        return torch.softmax(s.masked_fill(mask, float("-inf")), -1) @ v


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = torch.nn.Parameter(torch.randn(c["vocab"], c["dim"]) * 0.02, requires_grad=False)
        self.layers = torch.nn.ModuleList(Layer(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["dim"])
        inv = 1.0 / (10000.0 ** (torch.arange(0, c["hd"], 2).float() / c["hd"]))
        f = torch.outer(torch.arange(c["t"]).float(), inv)
        emb = torch.cat((f, f), -1)
        self.cos, self.sin = emb.cos(), emb.sin()

    def forward(self, tok):
        x = self.wte[tok]
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        return self.norm(x) @ self.wte.t()


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    c = CONFIGS[name]
    model = Model(c)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    n = c["b"] * c["t"]
    tok = (torch.arange(n) * 7919 % c["vocab"]).view(c["b"], c["t"])
    tgt = ((torch.arange(n) * 104729 + 1) % c["vocab"]).view(-1)
    dts = []
    for s in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(tok).view(n, -1), tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dts.append(time.perf_counter() - t0)
    dt = sorted(dts[2:])[steps // 2]
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "config": name,
        "params": sum(p.numel() for p in model.parameters()), "batch": c["b"], "seq": c["t"],
        "threads": threads, "steps": steps, "loss": round(loss.item(), 4),
        "tokens_per_s": round(n / dt, 1),
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }))


if __name__ == "__main__":
    main()
