"""worker-flops.py: the engine's FLOPs (worker/flops.h) against PyTorch (TAP).

Each training job the engine runs (train full and LoRA, the MoDULA stages
universal, domain, router and joint lora/molora) reports `cost.flops`. The
same forward and backward on the same shapes is run in PyTorch
(tests/ref/hfref.py's model, tests/ref/moderef.py's mixtures), with
`requires_grad` on exactly what the job trains, under a dispatch mode that
counts every matrix product autograd runs (aten mm, addmm, bmm: 2 n k m;
torch 1.13 has no torch.utils.flop_counter, this is the mechanism
FlopCounterMode is built on). Attention in PyTorch is the full T x T
product; the engine counts the causal half, so the figure to match is
the linear products + half the batched ones, exactly (float64 sums of
integers).
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from torch.utils._python_dispatch import TorchDispatchMode

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "ref"))
import hfref  # noqa: E402
import moderef  # noqa: E402
from tap import done, ok  # noqa: E402

ENGINE = os.path.join(top_builddir, "worker", "modula-engine")
HFREF = os.path.join(top_srcdir, "tests", "ref", "hfref.py")
MODS = ["q", "k", "v", "o", "gate", "up", "down"]
STEPS, BATCH = 2, 3


class Count(TorchDispatchMode):
    """FLOPs of the matrix products run while active: linear and batched."""

    def __init__(self):
        super().__init__()
        self.linear = self.batched = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "mm":
            self.linear += 2 * args[0].shape[0] * args[0].shape[1] * args[1].shape[1]
        elif name == "addmm":
            self.linear += 2 * args[1].shape[0] * args[1].shape[1] * args[2].shape[1]
        elif name == "bmm":
            a, b = args[0].shape, args[1].shape
            self.batched += 2 * a[0] * a[1] * a[2] * b[2]
        elif name in ("matmul", "baddbmm", "addbmm", "addmv", "mv", "dot"):
            raise RuntimeError(f"uncounted product {name}")
        return func(*args, **(kwargs or {}))


def torch_flops(rows, T, full=False, lora=None, mix=None, trains=()):
    """One forward and backward of rows x T tokens: the engine's count."""
    cfg, stored = hfref.model_read("base")
    w = {k: v.double().requires_grad_(full) for k, v in stored.items()}
    tensors = dict(lora or {}, **(mix.t if mix else {}))
    for k, v in tensors.items():
        v.requires_grad_(any(k.startswith(p) for p in trains))
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg["vocab_size"], (rows, T), generator=g)
    with Count() as c:
        logits = hfref.forward(cfg, w, tokens, lora or {}, 0.5, delta=mix.delta if mix else None)
        loss = hfref.masked_loss(logits, tokens, torch.ones_like(tokens))
        if mix and mix.aux:
            loss = loss + torch.stack(mix.aux).mean()
        loss.backward()
    return c.linear + c.batched / 2


def expert(cfg, name, rank, mods, reads_h=False):
    out = {}
    for layer in range(cfg["num_hidden_layers"]):
        for m in mods:
            a_in, o = hfref.module_dims(cfg, m)
            out[f"{name}/" + hfref.peft_name(layer, m, "A")] = torch.randn(rank, o if reads_h else a_in).double()
            out[f"{name}/" + hfref.peft_name(layer, m, "B")] = torch.randn(o, rank).double() * 0.1
    return out


def router(cfg, rows, mods):
    return {"router/" + hfref.peft_name(layer, m, "A").replace("lora_A", "router"):
            torch.randn(rows, hfref.module_dims(cfg, m)[0]).double()
            for layer in range(cfg["num_hidden_layers"]) for m in mods}


def run(kind, name, job):
    common = {"model": "base", "steps": STEPS, "batch": BATCH, "seq_len": 64, "lr": 1e-3, "seed": 3,
              "progress_every": 1, "out_dir": name}
    common.update(job)
    with open(name + ".json", "w") as f:
        json.dump(common, f)
    p = subprocess.run([ENGINE, kind, name + ".json"], capture_output=True, text=True)
    if p.returncode:
        print(f"# {kind} {name}: {p.stderr.strip()}")
        return None
    evs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return evs[-1]["cost"] if evs and evs[-1]["event"] == "done" else None


def check(what, cost, groups, **kw):
    if not ok(cost is not None and cost.get("flops", 0) > 0, f"{what}: the engine reports flops"):
        return
    T = cost["tokens"] // (STEPS * BATCH * groups)
    want = STEPS * torch_flops(groups * BATCH, T, **kw)
    ok(cost["tokens"] == STEPS * BATCH * groups * T and cost["flops"] == want,
       f"{what}: engine {cost['flops']:.0f} = torch {want:.0f} FLOPs (T {T})")


def main():
    torch.manual_seed(5)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        subprocess.run([sys.executable, HFREF, "make-model", "--arch", "llama", "--out", "base", "--vocab", "259",
                        "--dim", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "48",
                        "--max-seq", "128", "--seed", "2"], check=True, capture_output=True)
        cfg, _ = hfref.model_read("base")
        for d in ("u", "a", "b"):
            with open(d + ".jsonl", "w") as f:
                for i in range(8):
                    f.write(json.dumps({"prompt": f"{d} {i:02d} +", "response": " 0123456789"}) + "\n")

        check("train full", run("train", "full", {"data": ["u.jsonl"], "mode": "full"}), 1, full=True)
        lo = {k.split("/", 1)[1]: v for k, v in expert(cfg, "x", 4, ["v", "down"]).items()}
        check("train lora on v, down", run("train", "lora", {"data": ["u.jsonl"], "mode": "lora",
                                                              "lora": {"rank": 4, "targets": ["v", "down"]}}),
              1, lora=lo, trains=("base_model",))

        tg = ["q", "o", "up"]
        res = {"method": "modula-res", "universal": {"rank": 4, "targets": tg}, "domain": {"rank": 2}}
        ranks = {"universal": (4, 8, False), "a": (2, 4, False), "b": (2, 4, False)}
        u = expert(cfg, "universal", 4, tg)
        mix = moderef.Mixture("modula-res", ["universal"], u, ranks)
        mix.route = [0] * BATCH
        check("stage universal (res, q o up)", run("stage", "su", dict(res, stage="universal", data=["u.jsonl"])),
              1, mix=mix, trains=("universal/",))

        ue = {"name": "universal", "path": "su/experts/universal.safetensors"}
        doms = [{"name": "a", "data": "a.jsonl"}, {"name": "b", "data": "b.jsonl"}]
        t = dict(u, **expert(cfg, "a", 2, tg, True), **expert(cfg, "b", 2, tg, True))
        mix = moderef.Mixture("modula-res", ["universal", "a", "b"], t, ranks)
        mix.route = [1] * BATCH + [2] * BATCH
        check("stage domain (res, 2 domains)", run("stage", "sd", dict(res, stage="domain", experts=[ue], domains=doms)),
              2, mix=mix, trains=("a/", "b/"))

        experts = [ue, {"name": "a", "path": "sd/experts/a.safetensors"}, {"name": "b", "path": "sd/experts/b.safetensors"}]
        mix = moderef.Mixture("modula-res", ["universal", "a", "b"], dict(t, **router(cfg, 2, tg)), ranks)
        check("stage router (res, soft)", run("stage", "sr", dict(res, stage="router", experts=experts,
                                                                   data=["u.jsonl", "a.jsonl", "b.jsonl"])),
              1, mix=mix, trains=("router/",))

        flan = dict(res, method="modula-flan")
        su = run("stage", "fu", dict(flan, stage="universal", data=["u.jsonl"]))
        t = dict(u, **expert(cfg, "a", 2, tg))
        mix = moderef.Mixture("modula-flan", ["universal", "a"], t, ranks)
        mix.route = [1] * BATCH
        fd = run("stage", "fd", dict(flan, stage="domain", domains=doms[:1],
                                     experts=[{"name": "universal", "path": "fu/experts/universal.safetensors"}]))
        check("stage domain (flan)", fd if su else None, 1, mix=mix, trains=("a/",))

        mranks = {f"e{i}": (2, 4, False) for i in (1, 2, 3)}
        t = dict(expert(cfg, "e1", 2, MODS), **expert(cfg, "e2", 2, MODS), **expert(cfg, "e3", 2, MODS),
                 **router(cfg, 3, MODS))
        mix = moderef.Mixture("molora", [None, "e1", "e2", "e3"], t, mranks, top_k=2, aux_weight=0.01)
        check("stage joint (molora, top-2)", run("stage", "jm", {"stage": "joint", "method": "molora", "n_experts": 3,
                                                                  "top_k": 2, "aux_weight": 0.01, "domain": {"rank": 2},
                                                                  "data": ["u.jsonl"]}),
              1, mix=mix, trains=("e1/", "e2/", "e3/", "router/"))

        mix = moderef.Mixture("lora", ["universal"], expert(cfg, "universal", 4, MODS), ranks)
        check("stage joint (lora)", run("stage", "jl", {"stage": "joint", "method": "lora", "universal": {"rank": 4},
                                                         "data": ["u.jsonl"]}),
              1, mix=mix, trains=("universal/",))
    sys.exit(done())


if __name__ == "__main__":
    main()
