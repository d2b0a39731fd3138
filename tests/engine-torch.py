"""engine-torch.py: the whole engine model against PyTorch (TAP).

tests/ref/hfref.py writes two random Hugging Face folders and computes the
reference in float64:
  - LLaMA-style: F32 storage, untied head, GQA (4 heads, 2 kv heads);
  - Qwen2-style: BF16 storage, q/k/v biases, GQA, tied head, rsLoRA.
On two token rows with a response mask, with LoRA (non-zero A and B, from
the reference's PEFT folder) on q,k,v,o,gate,up,down, the engine's
`logits` and `grads` commands must match: logits, loss, and the gradient of
every LoRA tensor; for the LLaMA model also every base weight's gradient in
full-parameter mode (no adapter). The LoRA cases run three times: the CPU
engine (worker/model.c) and the GPU path's code (worker/dmodel.c, --device
table) over the CPU ops, with its adapter groups folded into the base
products (the default) and not (MODULA_FOLD=0).

fp32 tolerances (the engine computes in fp32, the reference in fp64):
  logits: max |diff| <= 2e-5 * max(1, max |ref|)
  loss:   |diff| <= 1e-5 * max(1, |ref|)
  each gradient tensor: max |diff| <= 1e-4 * max |ref| + 1e-7
The max differences are printed.
"""
import os
import subprocess
import sys
import tempfile

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "ref"))
import hfref  # noqa: E402

ENGINE = os.path.join(top_builddir, "worker", "modula-engine")
HFREF = os.path.join(top_srcdir, "tests", "ref", "hfref.py")
from tap import done, ok  # noqa: E402


def run(*args):
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode:
        print(f"# {' '.join(args)}\n# {p.stdout}{p.stderr}".replace("\n", "\n# "))
    return p.returncode == 0


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


TOKENS = "5,17,3,88,41,9,60,2,33,71,14,50;7,7,90,23,1,64,38,12,55,80,29,4"
MASK = "0,0,0,0,1,1,1,1,1,1,1,1;0,0,0,0,0,0,0,1,1,1,1,1"


def targets(tokens, mask):
    out = []
    for trow, mrow in zip(tokens.split(";"), mask.split(";")):
        t, m = trow.split(","), mrow.split(",")
        out.append(",".join([t[i + 1] if m[i + 1] == "1" else "-1" for i in range(len(t) - 1)] + ["-1"]))
    return ";".join(out)


def compare(tmp, name, model, ref_args, engine_args, grad_names):
    ref = os.path.join(tmp, name + "-ref.safetensors")
    got = os.path.join(tmp, name + "-grads.safetensors")
    lg = os.path.join(tmp, name + "-logits.safetensors")
    ok(run(os.environ.get("PYTHON_TORCH", "/usr/bin/python3"), HFREF, "reference", "--model", model, "--tokens", TOKENS, "--mask", MASK, "--out", ref, *ref_args),
       f"{name}: PyTorch reference")
    ok(run(ENGINE, "grads", "--model", model, "--tokens", TOKENS, "--targets", targets(TOKENS, MASK),
           "--out", got, *engine_args), f"{name}: modula-engine grads")
    r, g = hfref.st_read(ref), hfref.st_read(got)
    scale = max(1.0, r["logits"].abs().max().item())
    d = maxdiff(r["logits"], g["logits"])
    ok(d <= 2e-5 * scale, f"{name}: logits max abs diff {d:.2e} (max |logit| {scale:.2f})")
    d = abs(r["loss"].item() - g["loss"].item())
    ok(d <= 1e-5 * max(1.0, abs(r["loss"].item())), f"{name}: loss {g['loss'].item():.6f}, diff {d:.2e}")
    worst, worst_name, bad = 0.0, "", []
    for gn in grad_names(r):
        ref_g, got_g = r[gn + ".grad"], g.get("grad/" + gn)
        if got_g is None or got_g.shape != ref_g.shape:
            bad.append(gn)
            continue
        d, top = maxdiff(ref_g, got_g), ref_g.abs().max().item()
        rel = d / (top + 1e-30)
        if d > 1e-4 * top + 1e-7:
            bad.append(f"{gn} ({d:.2e} of {top:.2e})")
        if rel > worst:
            worst, worst_name = rel, gn
    count = len(grad_names(r))
    ok(not bad and count > 0, f"{name}: {count} gradient tensors, worst max|diff|/max|ref| {worst:.2e} ({worst_name})"
       + (f"; off: {', '.join(bad[:4])}" if bad else ""))
    return lg


def main():
    with tempfile.TemporaryDirectory() as tmp:
        py = os.environ.get("PYTHON_TORCH", "/usr/bin/python3")
        llama, qwen = os.path.join(tmp, "llama"), os.path.join(tmp, "qwen2")
        ok(run(py, HFREF, "make-model", "--arch", "llama", "--out", llama, "--dtype", "f32",
               "--vocab", "96", "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "160"),
           "LLaMA-style model (F32, untied, GQA 4/2)")
        ok(run(py, HFREF, "make-model", "--arch", "qwen2", "--out", qwen, "--dtype", "bf16", "--tie",
               "--vocab", "96", "--dim", "48", "--layers", "2", "--heads", "6", "--kv-heads", "2",
               "--ffn", "112", "--seed", "3"),
           "Qwen2-style model (BF16, biases, tied, GQA 6/2)")
        lora_grads = lambda r: sorted(k[:-5] for k in r if k.endswith(".grad"))  # noqa: E731
        for name, model, extra in (("llama-lora", llama, ["--lora-alpha", "8"]),
                                   ("qwen2-lora", qwen, ["--lora-alpha", "6", "--rslora"])):
            adapter = os.path.join(tmp, name + "-adapter")
            compare(tmp, name, model, ["--lora-rank", "4", *extra, "--adapter-out", adapter],
                    ["--adapter", adapter], lora_grads)
            # the GPU path's code (worker/dmodel.c) over the CPU ops
            compare(tmp, name + " device path (CPU op table)", model,
                    ["--lora-rank", "4", *extra], ["--adapter", adapter, "--device", "table"],
                    lora_grads)
            # the same with the groups not folded into the base products
            os.environ["MODULA_FOLD"] = "0"
            compare(tmp, name + " device path, not folded", model,
                    ["--lora-rank", "4", *extra], ["--adapter", adapter, "--device", "table"],
                    lora_grads)
            del os.environ["MODULA_FOLD"]
            # folded, with the adapters' columns copied through buffers of
            # their own instead of read and written in place
            os.environ["MODULA_FOLD_DIRECT"] = "0"
            compare(tmp, name + " device path, folded through copies", model,
                    ["--lora-rank", "4", *extra], ["--adapter", adapter, "--device", "table"],
                    lora_grads)
            del os.environ["MODULA_FOLD_DIRECT"]
            # the logits command, with the adapter, on the first row alone
            lg = os.path.join(tmp, name + "-logits.safetensors")
            ref1 = os.path.join(tmp, name + "-ref1.safetensors")
            row = TOKENS.split(";")[0]
            ok(run(ENGINE, "logits", "--model", model, "--adapter", adapter, "--tokens", row, "--out", lg)
               and run(py, HFREF, "reference", "--model", model, "--adapter", adapter, "--tokens", row,
                       "--out", ref1), f"{name}: modula-engine logits and its reference")
            a, b = hfref.st_read(lg)["logits"], hfref.st_read(ref1)["logits"]
            d = maxdiff(a, b) if a.shape == b.shape else float("inf")
            ok(d <= 2e-5 * max(1.0, b.abs().max().item()),
               f"{name}: logits command, shape {list(a.shape)}, max abs diff {d:.2e}")
        compare(tmp, "llama-full", llama, ["--full"], ["--full"], lora_grads)
    return done()


if __name__ == "__main__":
    sys.exit(main())
