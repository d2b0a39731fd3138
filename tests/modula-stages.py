"""modula-stages.py: the MoDULA stage jobs end to end (TAP).

On a random byte-level LLaMA folder (tests/ref/hfref.py) and the embedded
suite (`modula-engine suite`), with `modula-engine stage`:
  - universal stage (modula-res), then the domain stage training math and
    code in one pass: each expert equals the one of a separate run of its
    domain alone (max |diff| <= 1e-5 * max |w| + 1e-7, fp32 rounding);
  - router stage: the bundle's experts are byte-identical to the stage
    inputs (frozen tensors unchanged to the bit); only the routers train;
  - pluggability: a third domain (logic) trained alone, then the router
    stage from the old router: the old experts stay byte-identical, the
    router grows by one row with the old rows as the start (a run with a
    vanishing learning rate leaves them equal, the new row zero), and only
    the new expert and the routers were trained;
  - joint lora: the PEFT adapter it exports gives the same logits as its
    bundle, and importing the adapter back gives the expert file byte for
    byte;
  - eval: per-domain loss and exact-match accuracy, perplexity and the
    router means (each a distribution) are reported.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "ref"))
import hfref  # noqa: E402

ENGINE = os.path.join(top_builddir, "worker", "modula-engine")
HFREF = os.path.join(top_srcdir, "tests", "ref", "hfref.py")
from tap import done, ok  # noqa: E402


def engine(*args):
    p = subprocess.run([ENGINE, *args], capture_output=True, text=True)
    if p.returncode:
        print(f"# {' '.join(args)}: {p.stderr.strip()}")
    return p


def stage(tmp, name, job, *extra):
    path = os.path.join(tmp, name + ".json")
    common = {"model": "base", "steps": 4, "batch": 4, "seq_len": 64, "lr": 2e-3, "seed": 3,
              "progress_every": 100, "out_dir": name}
    common.update(job)
    with open(path, "w") as f:
        json.dump(common, f)
    p = engine("stage", path, *extra)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode == 0, events


def close(a_path, b_path):
    """max |a - b| / max |a| over the tensors of two safetensors files."""
    a, b = hfref.st_read(a_path), hfref.st_read(b_path)
    if sorted(a) != sorted(b):
        return float("inf")
    return max((a[k] - b[k]).abs().max().item() / max(a[k].abs().max().item(), 1e-30) for k in a)


def sha(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        subprocess.run([sys.executable, HFREF, "make-model", "--arch", "llama", "--out", "base", "--vocab", "259",
                        "--dim", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "64",
                        "--max-seq", "128", "--seed", "2"], check=True, capture_output=True)
        if engine("suite", "--out", "suite", "--train", "64", "--test", "16").returncode:
            sys.exit(1)
        res = {"method": "modula-res", "universal": {"rank": 4}, "domain": {"rank": 2}}
        good, ev = stage(tmp, "u", dict(res, stage="universal", data="suite/universal.train.jsonl"))
        ok(good and ev[-1]["event"] == "done", "universal stage ran")
        u = {"name": "universal", "path": "u/experts/universal.safetensors"}
        dom = lambda d: {"name": d, "data": f"suite/{d}.train.jsonl"}  # noqa: E731
        good, ev = stage(tmp, "d2", dict(res, stage="domain", experts=[u], domains=[dom("math"), dom("code")]))
        g1, _ = stage(tmp, "dm", dict(res, stage="domain", experts=[u], domains=[dom("math")]))
        g2, _ = stage(tmp, "dc", dict(res, stage="domain", experts=[u], domains=[dom("code")]))
        ok(good and g1 and g2, "domain stages ran (two domains in one pass, and each alone)")
        worst = 0.0
        for d, alone in (("math", "dm"), ("code", "dc")):
            a = hfref.st_read(f"d2/experts/{d}.safetensors")
            b = hfref.st_read(f"{alone}/experts/{d}.safetensors")
            for k in a:
                tol = 1e-5 * b[k].abs().max().item() + 1e-7
                worst = max(worst, (a[k] - b[k]).abs().max().item() / tol)
        ok(worst <= 1.0, f"one-pass domain experts equal separate runs (worst diff {worst:.2f} of tolerance)")
        experts = [u, {"name": "math", "path": "d2/experts/math.safetensors"},
                   {"name": "code", "path": "d2/experts/code.safetensors"}]
        mix = ["suite/universal.train.jsonl", "suite/math.train.jsonl", "suite/code.train.jsonl"]
        good, ev = stage(tmp, "r", dict(res, stage="router", experts=experts, data=mix))
        nrouter = sum(v.numel() for v in hfref.st_read("r/router.safetensors").values()) if good else -1
        ok(good and ev[0]["trainable_params"] == nrouter, "router stage trains the routers only")
        same = all(sha(f"r/bundle/experts/{e['name']}.safetensors") == sha(e["path"]) for e in experts)
        ok(same, "router stage: the bundle's experts are byte-identical to the frozen inputs")
        good, ev = stage(tmp, "dl", dict(res, stage="domain", experts=[u], domains=[dom("logic")]))
        new = experts + [{"name": "logic", "path": "dl/experts/logic.safetensors"}]
        g2, ev2 = stage(tmp, "r2", dict(res, stage="router", experts=new, router="r/router.safetensors",
                                        data=mix + ["suite/logic.train.jsonl"]))
        g3, _ = stage(tmp, "r0", dict(res, stage="router", experts=new, router="r/router.safetensors",
                                      data=mix + ["suite/logic.train.jsonl"], steps=1, lr=1e-30))
        same = all(sha(f"r2/bundle/experts/{e['name']}.safetensors") == sha(f"r/bundle/experts/{e['name']}.safetensors")
                   for e in experts)
        ok(good and g2 and g3 and same, "add a domain: old experts byte-identical in the new bundle")
        old, start = hfref.st_read("r/router.safetensors"), hfref.st_read("r0/router.safetensors")
        kept = all(torch.equal(start[k][:2], old[k]) and start[k].shape[0] == 3 and
                   start[k][2].abs().max().item() < 1e-20 for k in old)
        ok(kept, "add a domain: the router grows by one row, old rows are the start, the new row starts at zero")
        trained = ev[0]["trainable_params"] + ev2[0]["trainable_params"]
        ok(ev[0]["trainable_params"] == sum(v.numel() for v in hfref.st_read("dl/experts/logic.safetensors").values()),
           f"add a domain trains only the new expert and the routers ({trained} parameters)")
        good, ev = stage(tmp, "j", {"stage": "joint", "method": "lora", "universal": {"rank": 4}, "data": mix})
        ok(good and os.path.exists("j/adapter/adapter_model.safetensors"), "joint lora stage exports a PEFT adapter")
        toks = "256,81,58,32,51,43,52,10,65,58,32"
        p1 = engine("logits", "--model", "base", "--adapter", "j/adapter", "--tokens", toks, "--out", "l1.st")
        p2 = engine("logits", "--model", "base", "--adapter", "j/bundle", "--tokens", toks, "--out", "l2.st")
        l1, l2 = hfref.st_read("l1.st")["logits"], hfref.st_read("l2.st")["logits"]
        ok(not p1.returncode and not p2.returncode and torch.equal(l1, l2),
           "logits --adapter: the PEFT export and the bundle give identical logits")
        p = engine("import", "--model", "base", "--peft", "j/adapter", "--out", "imp.safetensors")
        ok(not p.returncode and sha("imp.safetensors") == sha("j/experts/universal.safetensors"),
           "PEFT round trip: importing the export gives the expert file byte for byte")
        # the device path's code over the CPU ops (--device table): the stages
        # it runs end equal to the CPU engine's, the others run there
        table = ("--device", "table")
        g1, _ = stage(tmp, "ut", dict(res, stage="universal", data="suite/universal.train.jsonl"), *table)
        g2, _ = stage(tmp, "rt", dict(res, stage="router", experts=experts, data=mix), *table)
        g3, _ = stage(tmp, "jt", {"stage": "joint", "method": "lora", "universal": {"rank": 4}, "data": mix},
                      *table)
        diffs = [close("u/experts/universal.safetensors", "ut/experts/universal.safetensors"),
                 close("r/router.safetensors", "rt/router.safetensors"),
                 close("j/experts/universal.safetensors", "jt/experts/universal.safetensors")] \
            if g1 and g2 and g3 else [float("inf")]
        ok(max(diffs) <= 1e-4, "device path stages (universal, Res router, joint LoRA) equal the CPU engine's: "
           + ", ".join(f"{d:.1e}" for d in diffs))
        g4, _ = stage(tmp, "d2t", dict(res, stage="domain", experts=[u], domains=[dom("math"), dom("code")]),
                      *table)
        diffs = [close(f"d2/experts/{d}.safetensors", f"d2t/experts/{d}.safetensors") for d in ("math", "code")] \
            if g4 else [float("inf")]
        ok(max(diffs) <= 1e-4, "device path domain stage (two domains in one pass, fixed routing) equals the "
           "CPU engine's: " + ", ".join(f"{d:.1e}" for d in diffs))
        # MoDULA-Flan's domain stage (two domains, fixed routing: the universal
        # expert weighted 0) and router stage (soft over the universal and the
        # domain experts, their ranks different) on the device path
        flan = {"method": "modula-flan", "universal": {"rank": 4}, "domain": {"rank": 2}}
        gf, _ = stage(tmp, "fu", dict(flan, stage="universal", data="suite/universal.train.jsonl"))
        fu = {"name": "universal", "path": "fu/experts/universal.safetensors"}
        fdom = dict(flan, stage="domain", experts=[fu], domains=[dom("math"), dom("code")])
        g1, _ = stage(tmp, "fd", fdom)
        g2, _ = stage(tmp, "fdt", fdom, *table)
        fexp = [fu] + [{"name": d, "path": f"fd/experts/{d}.safetensors"} for d in ("math", "code")]
        frouter = dict(flan, stage="router", experts=fexp, data=mix)
        g3, _ = stage(tmp, "fr", frouter)
        g4, _ = stage(tmp, "frt", frouter, *table)
        diffs = [close(f"fd/experts/{d}.safetensors", f"fdt/experts/{d}.safetensors") for d in ("math", "code")] \
            + [close("fr/router.safetensors", "frt/router.safetensors")] \
            if gf and g1 and g2 and g3 and g4 else [float("inf")]
        ok(max(diffs) <= 1e-4, "device path MoDULA-Flan stages (two domains in one pass; the router over "
           "the universal and domain experts) equal the CPU engine's: " + ", ".join(f"{d:.1e}" for d in diffs))
        molora = {"stage": "joint", "method": "molora", "n_experts": 2, "universal": {"rank": 4},
                  "domain": {"rank": 2}, "data": mix}
        # joint MoLoRA: one step, then the whole stage (AdamW's normalised
        # steps carry the two engines' rounding differences forward)
        for steps, tol, what in ((1, 1e-5, "after one step"), (None, 1e-3, "after the stage")):
            job = dict(molora, **({"steps": steps} if steps else {}))
            g5, _ = stage(tmp, f"jm{steps}", job)
            g6, _ = stage(tmp, f"jmt{steps}", job, *table)
            names = sorted(os.listdir(f"jm{steps}/experts")) if g5 else []
            diffs = [close(f"jm{steps}/router.safetensors", f"jmt{steps}/router.safetensors")] + \
                [close(f"jm{steps}/experts/{n}", f"jmt{steps}/experts/{n}") for n in names] \
                if g5 and g6 else [float("inf")]
            ok(len(names) == 2 and max(diffs) <= tol, f"device path joint MoLoRA (soft routing) {what} equals "
               f"the CPU engine's ({len(names)} experts and the routers): worst {max(diffs):.1e} "
               f"(tolerance {tol:.0e})")
        topk = dict(molora, top_k=1)
        g5, _ = stage(tmp, "jk", topk)
        g6, _ = stage(tmp, "jkt", topk, *table)
        ok(g5 and g6 and sha("jk/router.safetensors") == sha("jkt/router.safetensors"),
           "a stage the device path does not run (joint MoLoRA with top-k) runs on the CPU engine, byte-identical")
        p = engine("export", "--expert", "d2/experts/math.safetensors", "--out", "bad")
        ok(p.returncode == 1 and "universal" in p.stderr, "a modula-res domain expert is refused by export")
        job = {"model": "base", "adapter": "r2/bundle", "seq_len": 64, "max_records": 8, "text": "suite/manifest.json",
               "domains": [{"name": d, "data": f"suite/{d}.test.jsonl"} for d in ("universal", "math", "code", "logic")],
               "out": "eval.json"}
        with open("e.json", "w") as f:
            json.dump(job, f)
        p = engine("eval", "e.json")
        r = json.load(open("eval.json")) if not p.returncode else {}
        good = r and len(r["domains"]) == 4 and all(0 <= d["accuracy"] <= 1 and d["loss"] > 0 for d in r["domains"])
        ok(good and r["general"]["perplexity"] > 1 and "universal_accuracy" in r["general"],
           "eval reports loss, accuracy, perplexity")
        lay = r.get("routers", {}).get("layers", [])
        ok(len(lay) == 14 and all(abs(sum(v) - 1) < 1e-4 for l in lay for v in l["mean"].values())
           and r["routers"]["experts"] == ["math", "code", "logic"],
           "eval reports a router distribution per adapted layer and domain")
        # eval on the device path's code (--device table): the same losses,
        # exact matches (greedy decoding over the kept queries, keys and
        # values), perplexity and router means as the CPU engine, for a Res
        # and a Flan bundle (soft and one expert), a PEFT LoRA and the base
        for name, extra in (("res", {}), ("res-math", {"route": "math"}),
                            ("flan", {"adapter": "fr/bundle"}), ("flan-code", {"adapter": "fr/bundle", "route": "code"}),
                            ("lora", {"adapter": "j/adapter"}), ("base", {"adapter": ""})):
            outs = {}
            for dev in ("cpu", "table"):
                jb = dict(job, out=f"eval-{name}-{dev}.json", **extra)
                if not jb["adapter"]:
                    del jb["adapter"]
                with open(f"e-{name}-{dev}.json", "w") as f:
                    json.dump(jb, f)
                p = engine("eval", f"e-{name}-{dev}.json", *(() if dev == "cpu" else table))
                start = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")][:1]
                outs[dev] = (json.load(open(jb["out"])) if not p.returncode else None,
                             start[0].get("path") if start else None)
            (a, pa), (b, pb) = outs["cpu"], outs["table"]
            worst, same = 0.0, a is not None and b is not None
            if same:
                for da, db in zip(a["domains"], b["domains"]):
                    same = same and da["exact"] == db["exact"] and da["name"] == db["name"]
                    worst = max(worst, abs(da["loss"] - db["loss"]) / da["loss"])
                worst = max(worst, abs(a["general"]["perplexity"] - b["general"]["perplexity"])
                            / a["general"]["perplexity"])
                for la, lb in zip((a.get("routers") or {}).get("layers", []), (b.get("routers") or {}).get("layers", [])):
                    for k in la["mean"]:
                        worst = max(worst, max(abs(x - y) for x, y in zip(la["mean"][k], lb["mean"][k])))
                same = same and (a["routers"] is None) == (b["routers"] is None)
            ok(same and pa == "model" and pb == "dmodel" and worst <= 1e-5,
               f"eval {name} on the device path equals the CPU engine's (exact matches equal; losses, "
               f"perplexity, router means within {worst:.1e})")
        # an adapter the device path cannot run (MoLoRA with top-k) is
        # evaluated on the CPU engine, said on stderr
        jb = dict(job, adapter="jk/bundle", out="eval-topk.json")
        with open("e-topk.json", "w") as f:
            json.dump(jb, f)
        p = engine("eval", "e-topk.json", *table)
        start = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")][:1]
        ok(p.returncode == 0 and start and start[0].get("path") == "model" and
           "evaluating on the CPU engine" in p.stderr,
           "eval --device of a MoLoRA top-k bundle falls back to the CPU engine and says so")
    sys.exit(done())


main()
