"""engine-emu.py: the engine's GPU path on the CPU emulation of CUDA (TAP).

tests/modula-engine-emu is modula-engine linked with the sources of
kernels/cuda/ run by tests/cuda-emu (no GPU, no nvcc): its `grads --device
cuda` runs worker/dmodel.c on the CUDA backend's own kernels, with its
cuBLASLt tuning, its 16-byte kernels and, when asked, its flash attention.
Each run is compared with the same code on the CPU op table (`modula-engine
grads --device table`), tensor by tensor (logits, loss and every LoRA
gradient; max |diff| / max |table|):
  - f32: within 1e-4 (what tests/gpu/check.sh holds a GPU to);
  - bf16, against the table's emulation of bf16 storage (--dtype bf16),
    within 5e-2, once per switch of the backend: the defaults (with the
    flash attention kernels in bf16: the models' heads are 64 wide, which
    they take; the rows are 70 tokens, two tiles of 64 keys),
    MODULA_FOLD=0, MODULA_FOLD_DIRECT=0 (folded, through copies),
    MODULA_CUDA_WGRAD=1 (the weight gradients on wgrad.cu's kernel),
    MODULA_CUDA_LT=0, MODULA_CUDA_VEC=0 and MODULA_CUDA_FLASH=0
    (attention's cuBLAS path).
Two models from tests/ref/hfref.py: LLaMA-style in f32 storage and
Qwen2-style in bf16 with q/k/v biases and a tied head, each with a LoRA on
all seven projections. `--repeat 3` makes the engine try its CUDA graphs,
which the emulation refuses: the step must still run (directly).
MoDULA-Res, -nores, MoLoRA, MoDULA-Flan (soft routing) and the Flan and
Res domain stages (fixed routing) run the same way through
tests/modula/moe_dump (as tests/gpu/check.sh item 1 runs them on a GPU) on
a 32-wide model with every expert and router nonzero: cuda f32 against the
CPU engine within 1e-4, cuda bf16 (and bf16 with MODULA_CUDA_WGRAD=1)
within 5e-2 or twice what bf16 storage emulated on the CPU moves (the Res experts' A gradients move by tens of
percent in bf16 however it is computed: docs/cuda.md).
This checks the kernels' logic and the device path's use of them; it is
not a GPU and says nothing about speed.
"""
import os
import random
import subprocess
import sys
import tempfile

top_srcdir = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
top_builddir = os.environ.get("top_builddir", ".")
sys.path.insert(0, os.path.join(top_srcdir, "tests", "ref"))
import hfref  # noqa: E402
from tap import done, ok  # noqa: E402

ENGINE = os.path.join(top_builddir, "worker", "modula-engine")
EMU = os.path.join(top_builddir, "tests", "modula-engine-emu")
DUMP = os.path.join(top_builddir, "tests", "modula", "moe_dump")
DUMP_EMU = os.path.join(top_builddir, "tests", "modula", "moe_dump-emu")
HFREF = os.path.join(top_srcdir, "tests", "ref", "hfref.py")
PY = os.environ.get("PYTHON_TORCH", "/usr/bin/python3")


def run(args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode:
        print(f"# {' '.join(args)}\n# {p.stdout}{p.stderr}".replace("\n", "\n# "))
    return p.returncode == 0


def worst(ref, got):
    """The largest max|diff| / max|ref| over the tensors of ref, and where."""
    w, at = 0.0, ""
    for k, r in ref.items():
        g = got.get(k)
        if g is None or g.shape != r.shape:
            return float("inf"), f"{k} missing"
        d = (g.double() - r.double()).abs().max().item() / max(r.abs().max().item(), 1e-30)
        if d > w or d != d:
            w, at = d, k
    return w, at


def main():
    rng = random.Random(11)
    rows = [[rng.randrange(96) for _ in range(70)] for _ in range(2)]
    tokens = ";".join(",".join(map(str, r)) for r in rows)
    tgts = ";".join(",".join(map(str, r[1:] + [-1])) for r in rows)
    with tempfile.TemporaryDirectory() as tmp:
        llama, qwen = os.path.join(tmp, "llama"), os.path.join(tmp, "qwen2")
        ok(run([PY, HFREF, "make-model", "--arch", "llama", "--out", llama, "--dtype", "f32",
                "--vocab", "96", "--dim", "128", "--layers", "2", "--heads", "2", "--kv-heads", "1",
                "--ffn", "160"]), "LLaMA-style model (F32, 64-wide heads, GQA 2/1)")
        ok(run([PY, HFREF, "make-model", "--arch", "qwen2", "--out", qwen, "--dtype", "bf16", "--tie",
                "--vocab", "96", "--dim", "128", "--layers", "2", "--heads", "2", "--kv-heads", "1",
                "--ffn", "112", "--seed", "3"]), "Qwen2-style model (BF16, biases, tied, 64-wide heads)")
        for name, model in (("llama", llama), ("qwen2", qwen)):
            adapter = os.path.join(tmp, name + "-adapter")
            ok(run([PY, HFREF, "reference", "--model", model, "--tokens", tokens, "--out",
                    os.path.join(tmp, name + "-ref.safetensors"), "--lora-rank", "8",
                    "--lora-alpha", "16", "--adapter-out", adapter]), f"{name}: a LoRA adapter")

            def grads(engine, device, dtype, env_extra=None, repeat=False):
                out = os.path.join(tmp, f"{name}-{os.path.basename(engine)}-{device}-{dtype}"
                                   f"-{'-'.join(f'{k}{v}' for k, v in (env_extra or {}).items())}"
                                   ".safetensors")
                env = dict(os.environ, **(env_extra or {}))
                if not run([engine, "grads", "--model", model, "--adapter", adapter, "--tokens", tokens,
                            "--targets", tgts, "--out", out, "--device", device, "--dtype", dtype]
                           + (["--repeat", "3"] if repeat else []), env=env):
                    return None
                return hfref.st_read(out)

            ref32 = grads(ENGINE, "table", "f32")
            got32 = grads(EMU, "cuda", "f32", repeat=True)
            ok(ref32 is not None and got32 is not None, f"{name}: grads on the table and the emulated GPU, f32")
            if ref32 is not None and got32 is not None:
                w, at = worst(ref32, got32)
                ok(w <= 1e-4, f"{name}: emulated cuda f32 vs the CPU table: worst {w:.2e} at {at} (tol 1e-4)")
            ref16 = grads(ENGINE, "table", "bf16")
            for what, env in (("defaults", {}), ("MODULA_FOLD=0", {"MODULA_FOLD": "0"}),
                              ("MODULA_FOLD_DIRECT=0", {"MODULA_FOLD_DIRECT": "0"}),
                              ("MODULA_CUDA_WGRAD=1", {"MODULA_CUDA_WGRAD": "1"}),
                              ("MODULA_CUDA_LT=0", {"MODULA_CUDA_LT": "0"}),
                              ("MODULA_CUDA_VEC=0", {"MODULA_CUDA_VEC": "0"}),
                              ("MODULA_CUDA_FLASH=0", {"MODULA_CUDA_FLASH": "0"})):
                got = grads(EMU, "cuda", "bf16", env, repeat=what == "defaults")
                if ref16 is None or got is None:
                    ok(False, f"{name}: emulated cuda bf16, {what}: a run failed")
                    continue
                w, at = worst(ref16, got)
                ok(w <= 5e-2, f"{name}: emulated cuda bf16, {what}, vs the table's bf16: worst {w:.2e} "
                   f"at {at} (tol 5e-2)")
        mixtures(tmp, rng)
    done()


def mixtures(tmp, rng):
    tiny = os.path.join(tmp, "tiny")
    ok(run([PY, HFREF, "make-model", "--arch", "qwen2", "--out", tiny, "--dtype", "bf16", "--vocab", "64",
            "--dim", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--ffn", "48", "--seed", "5"]),
       "a 32-wide Qwen2-style model for the mixtures")
    tok = ";".join(",".join(str(rng.randrange(64)) for _ in range(64)) for _ in range(4))
    mask = ";".join(",".join("0" if j < 8 else "1" for j in range(64)) for _ in range(4))
    for method, bits, route in (("modula-res", "31:1", "soft"), ("modula-res-nores", "31:1", "soft"),
                                ("molora", "30:1", "soft"), ("modula-flan", "31:1", "soft"),
                                ("modula-flan", "30:0", "1,2,3,4"), ("modula-res", "30:0", "1,2,3,4")):
        what = method if route == "soft" else f"{method} domain stage"
        outs = {}
        # (the last: the adapters' weight gradients on wgrad.cu's kernel)
        for prog, dev, key in ((DUMP, None, None), (DUMP, "table-bf16", "table-bf16"),
                               (DUMP_EMU, "cuda-f32", "cuda-f32"), (DUMP_EMU, "cuda-bf16", "cuda-bf16"),
                               (DUMP_EMU, "cuda-bf16", "cuda-bf16-wgrad")):
            path = os.path.join(tmp, f"dump-{method}-{route}-{key}.safetensors")
            env = dict(os.environ, MODULA_CUDA_WGRAD="1") if key == "cuda-bf16-wgrad" else None
            if run([prog, tiny, path, method, "4", "0", route, bits, tok, mask] + ([dev] if dev else []),
                   env=env):
                outs[key] = hfref.st_read(path)
        if len(outs) != 5:
            ok(False, f"{what}: a run failed")
            continue
        ref = {k: v for k, v in outs[None].items() if k.startswith("grad/") or k in ("loss", "logits")}
        w32, at32 = worst(ref, outs["cuda-f32"])
        ok(w32 <= 1e-4, f"{what}: emulated cuda f32 vs the CPU engine: worst {w32:.2e} at {at32} (tol 1e-4)")
        floor, _ = worst(ref, outs["table-bf16"])
        w16, at16 = worst(ref, outs["cuda-bf16"])
        tol = max(5e-2, 2 * floor)
        ok(w16 <= tol, f"{what}: emulated cuda bf16 vs the CPU engine: worst {w16:.2e} at {at16} "
           f"(tol {tol:.1e}; bf16 emulated on the CPU: {floor:.2e})")
        wg, atg = worst(ref, outs["cuda-bf16-wgrad"])
        ok(wg <= tol, f"{what}: emulated cuda bf16, MODULA_CUDA_WGRAD=1, vs the CPU engine: worst {wg:.2e} "
           f"at {atg} (tol {tol:.1e})")


if __name__ == "__main__":
    main()
