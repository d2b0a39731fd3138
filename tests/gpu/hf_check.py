"""hf_check.py: items (2) to (5) of tests/gpu/check.sh, on the GPU machine's
own PyTorch, transformers and peft (never run in `make check`).

  (2) a randomly initialised Qwen2-shaped model of about 0.5B parameters,
      saved with save_pretrained (safetensors, bf16), loaded by the engine;
      the engine's logits against transformers' forward (fp32 on both sides);
  (3) LoRA training, PyTorch + PEFT against the engine: same rank, target
      modules, batch and sequence length; tokens/s, peak GPU memory, and
      model-FLOPs utilisation against a bf16 matrix product measured here;
  (4) modula-res with 4 domain experts against plain LoRA, step time;
  (5) PEFT loading an adapter the engine exported, reproducing the engine's
      logits.
  (1) also: the engine's own step (loss, logits, every LoRA gradient of a
      small Qwen2 with a PEFT adapter) on the GPU in f32 and bf16 against
      the engine's CPU path.
Nothing is estimated or made up: what fails is recorded as FAILED. Every
figure goes to OUT/results.tsv (item, figure, value, note), which check.sh
prints as the final table.

Not a test of the engine's numerics on the CPU (make check does that) and
not a tuning tool: one fixed configuration, stated in the output.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                 max_position_embeddings=4096, rope_theta=1000000.0, rms_norm_eps=1e-6,
                 tie_word_embeddings=True)
QWEN2_SMALL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                   max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
                   tie_word_embeddings=False)
QWEN2_TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                  max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=False)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BENCH = dict(batch=8, seq_len=512, rank=16, alpha=32, warmup=3, steps=10)
# what items 1 and 3 found about each switch of the CUDA backend, for the
# decisions printed at the end: item 1's engine step per variant (True:
# within tolerance), item 3's LoRA step time per variant (ms)
VARIANT_OK, VARIANT_MS = {}, {}


class Results:
    """Rows of OUT/results.tsv: item, figure, value, note."""

    def __init__(self, out):
        self.path = os.path.join(out, "results.tsv")

    def add(self, item, figure, value, note=""):
        with open(self.path, "a") as f:
            f.write(f"{item}\t{figure}\t{value}\t{note}\n")
        print(f"  {item}: {figure} = {value}" + (f"  ({note})" if note else ""), flush=True)


def run(cmd, **kw):
    print("  $ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {cmd[1]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    for line in r.stderr.splitlines():   # warnings (a CUDA graph not used, say)
        if " warn " in line or " error " in line:
            print("    " + line.strip()[-500:], flush=True)
    return r.stdout


def strict_fp32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def qwen2_config(shape):
    """Qwen2Config with RoPE theta set whichever way this transformers keeps
    it (rope_theta before 5.0, rope_parameters after)."""
    from transformers import Qwen2Config
    cfg = Qwen2Config(**shape)
    theta = shape["rope_theta"]
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp.get("rope_theta") != theta:
        rp["rope_theta"] = theta
    return cfg


def new_qwen2(shape, seed):
    """A randomly initialised Qwen2ForCausalLM on the GPU, weights rounded to
    bf16 (as saved) and kept in fp32 for the reference forward."""
    from transformers import Qwen2ForCausalLM
    torch.manual_seed(seed)
    cfg = qwen2_config(shape)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg)
    return model.to(torch.bfloat16).float().eval()


def save_bf16(model, path, res, item):
    model.to(torch.bfloat16).save_pretrained(path)
    model.float()
    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    if not files:
        raise RuntimeError(f"save_pretrained wrote no safetensors in {path}")
    return sum(os.path.getsize(os.path.join(path, f)) for f in files)


def engine_logits(engine, model_dir, tokens, out, adapter=None, device="cuda", dtype="f32"):
    """The engine's logits (fp32 file) on `device` with storage `dtype`."""
    from safetensors.numpy import load_file
    path = os.path.join(out, "engine_logits.safetensors")
    cmd = [engine, "logits", "--model", model_dir, "--tokens", ",".join(map(str, tokens)),
           "--out", path, "--device", device, "--dtype", dtype]
    if adapter:
        cmd += ["--adapter", adapter]
    t0 = time.perf_counter()
    run(cmd)
    return load_file(path)["logits"], time.perf_counter() - t0


def engine_bench(engine, model_dir, method, extra=(), env=None):
    """One `modula-engine bench` run on the GPU: its JSON line."""
    out = run([engine, "bench", "--model", model_dir, "--method", method, "--device", "cuda",
               "--dtype", "bf16", "--batch", str(BENCH["batch"]), "--seq", str(BENCH["seq_len"]),
               "--rank", str(BENCH["rank"]), "--alpha", str(BENCH["alpha"]),
               "--steps", str(BENCH["steps"]), "--warmup", str(BENCH["warmup"]), *extra], env=env)
    return json.loads(out.strip().splitlines()[-1])


def loss_close(got, ref):
    """A variant's last training loss within 2% of the default's (the same
    steps on the same data, other kernels or layouts, bf16)."""
    return abs(got["loss_last"] - ref["loss_last"]) <= 2e-2 * abs(ref["loss_last"])


def graph_check(args, res, item, what, with_graph, without):
    """The same bench with and without CUDA graphs: the graph replays must
    give the direct path's losses (the same kernels on the same data), and
    the step times side by side."""
    replays = with_graph.get("graph_replays", 0)
    same = all(abs(with_graph[k] - without[k]) <= 1e-6 * max(1.0, abs(without[k]))
               for k in ("loss_first", "loss_last"))
    res.add(item, f"{what} step with / without CUDA graphs",
            f"{with_graph['step_ms']:.1f} / {without['step_ms']:.1f} ms",
            f"{replays} graph replays; losses {'the same' if same else 'DIFFER'}: "
            f"{with_graph['loss_last']:.6f} / {without['loss_last']:.6f}")
    if not same or replays <= 0:
        res.add(item, f"{what}: CUDA graph replay", "FAILED",
                "no replay" if replays <= 0 else "losses differ from the direct path")
        return False
    return True


def peak_gib(memory_line):
    """The peak of kcuda_memory_report's line ("... (peak 1.23 GiB) ...")."""
    m = re.search(r"peak ([0-9.]+) GiB", memory_line)
    return float(m.group(1)) if m else float("nan")


def ensure_qwen2(work, res, item):
    """The random ~0.5B Qwen2 folder, saved once per run."""
    path = os.path.join(work, "qwen2")
    if not os.path.exists(os.path.join(path, "config.json")):
        model = new_qwen2(QWEN2_05B, 0)
        save_bf16(model, path, res, item)
        del model
        torch.cuda.empty_cache()
    return path


def compare(res, item, ours, ref, rel_tol, who="engine"):
    ours = np.asarray(ours, dtype=np.float64).reshape(ref.shape)
    d = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    ok = d <= rel_tol * scale
    res.add(item, f"max |{who} - reference| / max |reference|", f"{d / scale:.2e}",
            f"tolerance {rel_tol:.0e}: {'ok' if ok else 'EXCEEDED'}")
    return ok


def item1(args, res, work):
    """The engine's own training step on the GPU against its CPU engine."""
    from peft import LoraConfig, get_peft_model
    from safetensors.numpy import load_file
    model = new_qwen2(QWEN2_SMALL, 4)
    mdir = os.path.join(work, "qwen2-step")
    save_bf16(model, mdir, res, "1")
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                     init_lora_weights=False)
    adir = os.path.join(work, "adapter-step")
    get_peft_model(model, cfg).save_pretrained(adir)
    rng = random.Random(7)
    rows = [[rng.randrange(QWEN2_SMALL["vocab_size"]) for _ in range(64)] for _ in range(4)]
    tok = ";".join(",".join(map(str, r)) for r in rows)
    outs = {}
    # "-vec": the 16-byte RMSNorm, residual and SwiGLU kernels (MODULA_CUDA_VEC=1);
    # (attention as the tiled flash kernels, the default, in every 16-bit run but:)
    # "-noflash": the 16-byte kernels with attention's cuBLAS path (MODULA_CUDA_FLASH=0);
    # "-nofold": the 16-byte kernels with the LoRA groups not folded into the base
    # products (MODULA_FOLD=0; folded, the default, everywhere else);
    # "-gemmex": the 16-byte kernels with the products on cublasGemmEx instead of
    # cuBLASLt's timed algorithms (MODULA_CUDA_LT=0; cuBLASLt everywhere else)
    # "-copy": folded, the adapters' columns copied through buffers of their own
    # (MODULA_FOLD_DIRECT=0; read and written in place everywhere else)
    # "-wgrad": the adapters' weight gradients on wgrad.cu's kernel (MODULA_CUDA_WGRAD=1;
    # cuBLAS everywhere else)
    for dev, dt in (("cpu", "f32"), ("cuda", "f32"), ("cuda", "bf16"), ("cuda", "f32-vec"),
                    ("cuda", "bf16-vec"), ("cuda", "bf16-noflash"), ("cuda", "bf16-nofold"),
                    ("cuda", "bf16-gemmex"), ("cuda", "bf16-copy"), ("cuda", "bf16-wgrad")):
        path = os.path.join(work, f"grads-{dev}-{dt}.safetensors")
        # on CUDA the third micro-batch replays the CUDA graph the second recorded
        run([args.engine, "grads", "--model", mdir, "--adapter", adir, "--tokens", tok,
             "--out", path, "--device", dev, "--dtype", dt.split("-")[0]]
            + (["--repeat", "3"] if dev == "cuda" else []),
            env=dict(os.environ, MODULA_CUDA_VEC="0" if "-" not in dt else "1",
                     MODULA_CUDA_FLASH="0" if dt.endswith("-noflash") else "1",
                     MODULA_FOLD="0" if dt.endswith("-nofold") else "1",
                     MODULA_CUDA_LT="0" if dt.endswith("-gemmex") else "1",
                     MODULA_FOLD_DIRECT="0" if dt.endswith("-copy") else "1",
                     MODULA_CUDA_WGRAD="1" if dt.endswith("-wgrad") else "0"))
        outs[(dev, dt)] = load_file(path)
    ref, ok = outs[("cpu", "f32")], True
    for dt, tol in (("f32", 1e-4), ("bf16", 5e-2), ("f32-vec", 1e-4), ("bf16-vec", 5e-2),
                    ("bf16-noflash", 5e-2), ("bf16-nofold", 5e-2), ("bf16-gemmex", 5e-2),
                    ("bf16-copy", 5e-2), ("bf16-wgrad", 5e-2)):
        got, worst, where = outs[("cuda", dt)], 0.0, ""
        for k in ref:
            d = float(np.abs(got[k].astype(np.float64) - ref[k]).max())
            d /= max(float(np.abs(ref[k]).max()), 1e-30)
            if d > worst or d != d:
                worst, where = d, k
        good = worst <= tol
        VARIANT_OK[dt] = good
        res.add("1", f"engine step (loss, logits, {len(ref) - 2} LoRA grads) cuda {dt} vs CPU engine",
                f"{worst:.2e}", f"worst max|d|/max|x| at {where}; tolerance {tol:.0e}: "
                f"{'ok' if good else 'EXCEEDED'}")
        ok = ok and good
    # MoDULA-Res, -nores and MoLoRA: every expert and router nonzero, all trainable,
    # soft routing: tests/modula/moe_dump on the CPU engine against the
    # device path on the GPU. moe_dump draws experts from N(0, 0.15) and
    # routers from N(0, 0.3), scales meant for a 32-wide model (as in
    # tests/modula-torch.py): on wider ones the routers saturate and fp32
    # itself stops agreeing with fp64, so the model here is 32 wide.
    tiny = new_qwen2(QWEN2_TINY, 5)
    mdir = os.path.join(work, "qwen2-tiny")
    save_bf16(tiny, mdir, res, "1")
    del tiny
    tok = ";".join(",".join(str(rng.randrange(QWEN2_TINY["vocab_size"])) for _ in range(64))
                   for _ in range(4))
    dump = os.path.join(os.path.dirname(args.engine), "moe-dump")
    mask = ";".join(",".join("0" if j < 8 else "1" for j in range(64)) for _ in range(4))
    # bf16 itself moves the Res experts' A gradients by 10-35% here (sums
    # over rows that cancel, through LeakyReLU's kink: tests/modula-torch.py):
    # the CPU's emulation of bf16 storage (table-bf16: fp32 ops, every stored
    # tensor rounded to bf16) measures that, and the GPU is held to twice it.
    # the domain stage's fixed routing (row i to domain expert i + 1; Flan's
    # universal expert weighted 0) too
    for method, bits, route in (("modula-res", "31:1", "soft"), ("modula-res-nores", "31:1", "soft"),
                                ("molora", "30:1", "soft"), ("modula-flan", "31:1", "soft"),
                                ("modula-flan", "30:0", "1,2,3,4"),
                                ("modula-res", "30:0", "1,2,3,4")):
        outs = {}
        method_name = method if route == "soft" else f"{method} domain stage"
        # (cuda-bf16-wgrad: the weight gradients on wgrad.cu's kernel, MODULA_CUDA_WGRAD=1)
        for dev in ("cpu", "table-bf16", "cuda-f32", "cuda-bf16", "cuda-bf16-wgrad"):
            path = os.path.join(work, f"dump-{method}-{route}-{dev}.safetensors")
            run([dump, mdir, path, method, "4", "0", route, bits, tok, mask]
                + ([] if dev == "cpu" else [dev.replace("-wgrad", "")]),
                env=dict(os.environ, MODULA_CUDA_WGRAD="1") if dev.endswith("-wgrad") else None)
            outs[dev] = load_file(path)
        ref = outs["cpu"]
        names = [k for k in ref if k.startswith("grad/") or k in ("loss", "logits")]
        floor = 0.0
        for dev, tol in (("cuda-f32", 1e-4), ("table-bf16", None), ("cuda-bf16", 5e-2),
                         ("cuda-bf16-wgrad", 5e-2)):
            worst, where, rels = 0.0, "", []
            for k in names:
                d = float(np.abs(outs[dev][k].astype(np.float64) - ref[k]).max())
                d /= max(float(np.abs(ref[k]).max()), 1e-30)
                rels.append((d, k))
                if d > worst or d != d:
                    worst, where = d, k
            rels.sort(reverse=True)
            byname = {k: d for d, k in rels}
            print(f"  {method_name} {dev}: logits {byname['logits']:.2e}, loss {byname['loss']:.2e}; worst: "
                  + ", ".join(f"{k[5:]} {d:.1e}" for d, k in rels[:6] if k.startswith("grad/")))
            if tol is None:
                floor = worst
                res.add("1", f"{method_name} step (loss, logits, {len(names) - 2} grads) CPU with bf16 storage "
                        "emulated vs CPU engine", f"{worst:.2e}", f"worst at {where}: what bf16 costs")
                continue
            if dev.startswith("cuda-bf16"):
                tol = max(tol, 2 * floor)
            good = worst <= tol
            res.add("1", f"{method_name} step (loss, logits, {len(names) - 2} grads) {dev} vs CPU engine",
                    f"{worst:.2e}", f"worst at {where}; tolerance {tol:.1e}"
                    + (" (twice the emulated bf16's)" if dev.startswith("cuda-bf16") and tol > 5e-2 else "")
                    + f": {'ok' if good else 'EXCEEDED'}")
            ok = ok and good
    return ok


def item2(args, res, work):
    """The engine's logits of a random ~0.5B Qwen2 against transformers."""
    model = new_qwen2(QWEN2_05B, 0)
    n = sum(p.numel() for p in model.parameters())
    res.add("2", "Qwen2-shaped model parameters", f"{n / 1e6:.1f}M", "random init, saved bf16")
    path = os.path.join(work, "qwen2")
    size = save_bf16(model, path, res, "2")
    res.add("2", "safetensors size", f"{size / 2**20:.0f} MiB")
    rng = random.Random(1)
    tokens = [rng.randrange(QWEN2_05B["vocab_size"]) for _ in range(48)]
    # The reference is the saved folder loaded afresh: the model in memory
    # went through bf16 whole (model.to(bfloat16)), RoPE's inv_freq buffer
    # included, which the saved folder does not keep.
    del model
    torch.cuda.empty_cache()
    from transformers import Qwen2ForCausalLM
    strict_fp32()
    ids = torch.tensor([tokens], device="cuda")
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).to("cuda").eval()
    with torch.no_grad():
        ref32 = model(ids).logits[0].float().cpu().numpy()
        ref = model.double()(ids).logits[0].double().cpu().numpy()
    del model
    torch.cuda.empty_cache()
    res.add("2", "reference", "transformers in float64",
            "the saved folder loaded afresh; its RMSNorm computes in fp32; its own fp32 forward below")
    compare(res, "2", ref32, ref, 1e-3, who="transformers fp32")
    ours, secs = engine_logits(args.engine, path, tokens, work, dtype="f32")
    res.add("2", "engine logits, --device cuda --dtype f32: time (load + 48 tokens)", f"{secs:.1f} s")
    ok = compare(res, "2", ours, ref, 1e-3, who="engine cuda f32")
    ours, secs = engine_logits(args.engine, path, tokens, work, device="cpu")
    res.add("2", "engine logits, --device cpu (the CPU engine): time", f"{secs:.1f} s")
    ok = compare(res, "2", ours, ref, 1e-3, who="engine cpu f32") and ok
    ours, secs = engine_logits(args.engine, path, tokens, work, dtype="bf16")
    res.add("2", "engine logits, --device cuda --dtype bf16: time", f"{secs:.1f} s",
            "bf16 storage, fp32 accumulation")
    return compare(res, "2", ours, ref, 5e-2, who="engine cuda bf16") and ok


def matmul_peak():
    """bf16 8192^3 product: TFLOP/s, mean of 10 after 3 warm-ups."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - t0) / 1e12


def lora_flops_per_token(shape, t):
    """Model FLOPs of one token of a LoRA step with the base frozen:
    matrix products 2x the forward (forward + input gradients, no weight
    gradients for frozen matrices), causal attention 3x its forward
    (QK^T and PV forward, four products backward); LoRA's own products
    (rank 16) are left out, as is everything that is not a product."""
    c, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    hs = c // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * hs
    linear = L * (c * c * 2 + c * kv * 2 + 3 * c * f) + shape["vocab_size"] * c
    attn_fwd = L * 2 * 2 * c * (t + 1) / 2
    return 2 * (2 * linear) + 3 * attn_fwd


def item3(args, res, work):
    """LoRA training throughput and memory, PyTorch + PEFT and the engine."""
    from peft import LoraConfig, get_peft_model
    peak = matmul_peak()
    res.add("3", "bf16 matrix-product peak (8192^3, torch)", f"{peak:.0f} TFLOP/s")
    B, T = BENCH["batch"], BENCH["seq_len"]
    torch.manual_seed(0)
    from transformers import Qwen2ForCausalLM
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(qwen2_config(QWEN2_05B)).to(torch.bfloat16)
    cfg = LoraConfig(r=BENCH["rank"], lora_alpha=BENCH["alpha"], lora_dropout=0.0,
                     target_modules=TARGETS, task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-4)
    x = torch.randint(0, QWEN2_05B["vocab_size"], (B, T), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for i in range(BENCH["warmup"] + BENCH["steps"]):
        if i == BENCH["warmup"]:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = pm(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    secs = (time.perf_counter() - t0) / BENCH["steps"]
    tps = B * T / secs
    mem = torch.cuda.max_memory_allocated() / 2**30
    mfu = tps * lora_flops_per_token(QWEN2_05B, T) / (peak * 1e12)
    setting = (f"B={B} T={T} r={BENCH['rank']} alpha={BENCH['alpha']} all 7 projections, "
               f"bf16, AdamW, {BENCH['steps']} steps after {BENCH['warmup']}")
    res.add("3", "PyTorch+PEFT tokens/s", f"{tps:.0f}", setting)
    res.add("3", "PyTorch+PEFT step time", f"{secs * 1e3:.1f} ms")
    res.add("3", "PyTorch+PEFT peak GPU memory", f"{mem:.2f} GiB", "torch max_memory_allocated")
    res.add("3", "PyTorch+PEFT MFU", f"{100 * mfu:.1f}%",
            f"{lora_flops_per_token(QWEN2_05B, T) / 1e9:.2f} GFLOP/token, see hf_check.py")
    del pm, model, opt
    torch.cuda.empty_cache()
    path = ensure_qwen2(work, res, "3")
    e = engine_bench(args.engine, path, "lora")
    nog = engine_bench(args.engine, path, "lora", ["--no-graph"])
    ok = graph_check(args, res, "3", "LoRA", e, nog)
    VARIANT_MS["bf16"] = e["step_ms"]
    # the scalar memory-bound kernels instead of the 16-byte ones (the default)
    v = engine_bench(args.engine, path, "lora", env=dict(os.environ, MODULA_CUDA_VEC="0"))
    res.add("3", "engine step with the scalar RMSNorm/residual/SwiGLU kernels", f"{v['step_ms']:.1f} ms",
            f"the 16-byte ones (default) {v['step_ms'] / e['step_ms']:.2f}x faster; loss "
            f"{v['loss_last']:.4f} (default {e['loss_last']:.4f}); MODULA_CUDA_VEC=0")

    def variant(key, **switch):
        """The LoRA bench with a switch of the backend the other way: its JSON
        line, its environment, whether its loss is the default's; the step
        time goes to VARIANT_MS (for the decisions) when it is."""
        env = dict(os.environ, **switch)
        got = engine_bench(args.engine, path, "lora", env=env)
        close = loss_close(got, e)
        VARIANT_MS[key] = got["step_ms"] if close else None
        return got, env, close

    # the LoRA groups not folded into the base products (MODULA_FOLD=0; folded by default)
    u, uenv, uclose = variant("bf16-nofold", MODULA_FOLD="0")
    res.add("3", "engine step with the LoRA groups not folded (MODULA_FOLD=0)", f"{u['step_ms']:.1f} ms",
            f"folded (default) {e['step_ms']:.1f} ms, {u['step_ms'] / e['step_ms']:.2f}x faster; "
            f"{e.get('folded_groups', 0)} groups folded; peak {peak_gib(u['memory']):.2f} GiB "
            f"(folded {peak_gib(e['memory']):.2f}); loss {u['loss_last']:.4f} vs {e['loss_last']:.4f}: "
            f"{'close' if uclose else 'DIFFERENT'}")
    # the products on cublasGemmEx's own choice of algorithm instead of cuBLASLt's
    # candidates timed per shape (MODULA_CUDA_LT=0; cuBLASLt by default)
    g, genv, gclose = variant("bf16-gemmex", MODULA_CUDA_LT="0")
    res.add("3", "engine step with the products on cublasGemmEx (MODULA_CUDA_LT=0)",
            f"{g['step_ms']:.1f} ms", f"cuBLASLt timed (default) {e['step_ms']:.1f} ms, "
            f"{g['step_ms'] / e['step_ms']:.2f}x faster ({e.get('products', '?')}); loss "
            f"{g['loss_last']:.4f} vs {e['loss_last']:.4f}: {'close' if gclose else 'DIFFERENT'}")
    # attention on the cuBLAS path (MODULA_CUDA_FLASH=0) instead of the tiled flash
    # kernels (the default): step time, MFU, memory, and the losses against the default
    f, fenv, fclose = variant("bf16-noflash", MODULA_CUDA_FLASH="0")
    fmfu = f["tokens_per_s"] * lora_flops_per_token(QWEN2_05B, T) / (peak * 1e12)
    res.add("3", "engine step with attention on the cuBLAS path (MODULA_CUDA_FLASH=0)",
            f"{f['step_ms']:.1f} ms",
            f"default {e['step_ms']:.1f} ms; {f['tokens_per_s']:.0f} tok/s = "
            f"{f['tokens_per_s'] / tps:.2f}x PyTorch+PEFT; MFU {100 * fmfu:.1f}%; peak "
            f"{peak_gib(f['memory']):.2f} GiB; {f['graph_replays']} graph replays; loss "
            f"{f['loss_last']:.4f} vs {e['loss_last']:.4f}: {'close' if fclose else 'DIFFERENT'}")
    def switch_row(key, what, **switch):
        """variant() with its row: the step time beside the default's."""
        got, _, close = variant(key, **switch)
        res.add("3", f"engine step with {what}", f"{got['step_ms']:.1f} ms",
                f"default {e['step_ms']:.1f} ms: {got['step_ms'] / e['step_ms']:.2f}x its time; loss "
                f"{got['loss_last']:.4f} vs {e['loss_last']:.4f}: {'close' if close else 'DIFFERENT'}")
        return close

    # folded, the adapters' columns copied through buffers of their own
    # (MODULA_FOLD_DIRECT=0) instead of read and written in place (the default)
    cclose = switch_row("bf16-copy", "the folded columns copied (MODULA_FOLD_DIRECT=0)",
                        MODULA_FOLD_DIRECT="0")
    # the adapters' weight gradients on wgrad.cu's kernel (MODULA_CUDA_WGRAD=1)
    # instead of cuBLAS's split-K products (the default until this says)
    wclose = switch_row("bf16-wgrad", "the weight gradients on wgrad.cu (MODULA_CUDA_WGRAD=1)",
                        MODULA_CUDA_WGRAD="1")
    ok = ok and uclose and gclose and fclose and cclose and wclose
    # where the step's time goes, by kind of op (CUDA events, no graphs), both ways
    for what, env in (("default", None), ("cuBLAS-path attention", fenv), ("not folded", uenv),
                      ("cublasGemmEx", genv)):
        p = engine_bench(args.engine, path, "lora", ["--profile"], env=env)
        kinds = sorted(p.get("profile_ms", {}).items(), key=lambda kv: -kv[1])
        res.add("3", f"profile of the LoRA step, {what}", f"{p.get('profile_total_ms', 0):.1f} ms",
                ", ".join(f"{k} {v:.1f}" for k, v in kinds))
    fnog = engine_bench(args.engine, path, "lora", ["--no-graph"], env=fenv)
    res.add("3", "cuBLAS-path attention, no graphs", f"{fnog['step_ms']:.1f} ms",
            f"default without graphs {nog['step_ms']:.1f} ms")
    emfu = e["tokens_per_s"] * lora_flops_per_token(QWEN2_05B, T) / (peak * 1e12)
    res.add("3", "engine tokens/s", f"{e['tokens_per_s']:.0f}", "modula-engine bench, same setting")
    res.add("3", "engine step time", f"{e['step_ms']:.1f} ms", f"loss {e['loss_first']:.3f} -> {e['loss_last']:.3f}; "
            f"{e.get('adapter_groups', 0)} adapter groups (q/k/v, gate/up as one), "
            f"{e.get('folded_groups', 0)} folded into their base products")
    res.add("3", "engine peak GPU memory", f"{peak_gib(e['memory']):.2f} GiB",
            "the engine's memory pool high-water mark (cuBLAS workspace not counted)")
    res.add("3", "engine MFU", f"{100 * emfu:.1f}%", "target >= 50%")
    res.add("3", "engine / PyTorch+PEFT tokens/s", f"{e['tokens_per_s'] / tps:.2f}x", "target >= 1.3x")
    return ok


def item4(args, res, work):
    """modula-res with 4 domain experts against plain LoRA, step time."""
    path = ensure_qwen2(work, res, "4")
    lora = engine_bench(args.engine, path, "lora")
    mres = engine_bench(args.engine, path, "modula-res", ["--experts", "4", "--expert-rank", "8"])
    ok = graph_check(args, res, "4", "modula-res", mres,
                     engine_bench(args.engine, path, "modula-res",
                                  ["--experts", "4", "--expert-rank", "8", "--no-graph"]))
    res.add("4", "plain LoRA step (rank 16)", f"{lora['step_ms']:.1f} ms")
    res.add("4", "modula-res step (universal 16 + 4 experts of rank 8, soft routing)",
            f"{mres['step_ms']:.1f} ms", f"trainable {mres['trainable_params'] / 1e6:.1f}M")
    res.add("4", "modula-res / LoRA step time", f"{mres['step_ms'] / lora['step_ms']:.2f}x",
            "target <= 1.15x")

    def both_ways(what, note="", **switch):
        """modula-res and LoRA with a switch of the backend the other way: the ratio."""
        env = dict(os.environ, **switch)
        sl = engine_bench(args.engine, path, "lora", env=env)
        sr = engine_bench(args.engine, path, "modula-res", ["--experts", "4", "--expert-rank", "8"],
                          env=env)
        res.add("4", f"{what}: modula-res / LoRA", f"{sr['step_ms'] / sl['step_ms']:.2f}x",
                f"{sr['step_ms']:.1f} / {sl['step_ms']:.1f} ms (default {mres['step_ms']:.1f} / "
                f"{lora['step_ms']:.1f}){note}")

    both_ways("not folded (MODULA_FOLD=0)", f"; folded (default): {mres.get('folded_groups', 0)} "
              "Res groups", MODULA_FOLD="0")
    both_ways("folded columns copied (MODULA_FOLD_DIRECT=0)", MODULA_FOLD_DIRECT="0")
    both_ways("weight gradients on wgrad.cu (MODULA_CUDA_WGRAD=1)", MODULA_CUDA_WGRAD="1")
    both_ways("attention on the cuBLAS path (MODULA_CUDA_FLASH=0)", MODULA_CUDA_FLASH="0")
    flan = engine_bench(args.engine, path, "modula-flan", ["--experts", "4", "--expert-rank", "8"])
    res.add("4", "modula-flan step (universal 16 + 4 experts of rank 8 under one router)",
            f"{flan['step_ms']:.1f} ms", f"{flan['step_ms'] / lora['step_ms']:.2f}x LoRA's; "
            f"{flan['graph_replays']} graph replays")
    # the domain stage: 4 domains x 2 sequences in one pass of the frozen
    # base against one single-domain step per domain (separate runs)
    one = engine_bench(args.engine, path, "modula-res",
                       ["--experts", "4", "--expert-rank", "8", "--one-pass", "--batch", "2"])
    res.add("4", "4 domain experts in one pass (4 x 2 x 512 tokens) tokens/s",
            f"{one['tokens_per_s']:.0f}", f"separate single-domain steps: {one['separate_tokens_per_s']:.0f}")
    res.add("4", "one pass / separate runs tokens/s", f"{one['one_pass_over_separate']:.2f}x",
            "target >= 2x")
    return ok


def item5(args, res, work):
    """The engine trains a LoRA for a few steps (on the device it has), PEFT
    loads the exported adapter and must give the engine's logits."""
    from peft import PeftModel
    model = new_qwen2(QWEN2_SMALL, 2)
    mdir = os.path.join(work, "qwen2-small")
    save_bf16(model, mdir, res, "5")
    data = os.path.join(work, "data.jsonl")
    with open(data, "w") as f:
        for i in range(64):
            f.write(json.dumps({"prompt": f"question {i}: ", "response": f"answer {i * 7 % 13}"}) + "\n")
    out_dir = os.path.join(work, "train5")
    job = dict(model=mdir, tokenizer="bytes", data=data, mode="lora", out_dir=out_dir,
               lora=dict(rank=8, alpha=16, targets=["q", "k", "v", "o", "gate", "up", "down"]),
               steps=4, batch=2, seq_len=32, lr=1e-2, seed=3)
    jpath = os.path.join(work, "job5.json")
    with open(jpath, "w") as f:
        json.dump(job, f)
    run([args.engine, "train", jpath, "--device", "cuda", "--dtype", "bf16"])
    adapter = os.path.join(out_dir, "adapter")
    if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
        raise RuntimeError(f"train wrote no PEFT adapter ({adapter}/adapter_config.json)")
    rng = random.Random(5)
    tokens = [rng.randrange(256) for _ in range(24)]
    ours, _ = engine_logits(args.engine, mdir, tokens, work, adapter=adapter, dtype="f32")
    strict_fp32()
    from transformers import Qwen2ForCausalLM
    del model   # reloaded afresh: see item2
    base = Qwen2ForCausalLM.from_pretrained(mdir, dtype=torch.float32).to("cuda")
    pm = PeftModel.from_pretrained(base, adapter).float().eval()
    with torch.no_grad():
        ref = pm(torch.tensor([tokens], device="cuda")).logits[0].float().cpu().numpy()
    res.add("5", "engine device for training and logits", "cuda",
            "trained 4 steps in bf16; logits with --dtype f32")
    ok = compare(res, "5", ours, ref, 1e-3)
    ok = gpu_eval(args, res, work, mdir, adapter, data) and ok
    return graph_training(args, res, work, mdir) and ok


def gpu_eval(args, res, work, mdir, adapter, data):
    """modula-engine eval on the GPU (f32) against the CPU engine: the same
    exact matches (greedy decoding over the kept keys and values), losses
    and perplexity within 1e-4."""
    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        f.write(" ".join(f"word{i % 37} and more text {i}" for i in range(400)))
    outs = {}
    for dev in ("cpu", "cuda"):
        job = dict(model=mdir, adapter=adapter, tokenizer="bytes", seq_len=64, max_records=24,
                   text=text, domains=[dict(name="answers", data=data)],
                   out=os.path.join(work, f"eval-{dev}.json"))
        jpath = os.path.join(work, f"eval-{dev}-job.json")
        with open(jpath, "w") as f:
            json.dump(job, f)
        out = run([args.engine, "eval", jpath] + (["--device", "cuda", "--dtype", "f32"] if dev == "cuda" else []))
        start = [json.loads(x) for x in out.splitlines() if x.startswith("{")][0]
        with open(job["out"]) as f:
            outs[dev] = (json.load(f), start.get("path"))
    (a, _), (b, path) = outs["cpu"], outs["cuda"]
    da, db = a["domains"][0], b["domains"][0]
    worst = max(abs(da["loss"] - db["loss"]) / da["loss"],
                abs(a["general"]["perplexity"] - b["general"]["perplexity"]) / a["general"]["perplexity"])
    good = path == "dmodel" and da["exact"] == db["exact"] and worst <= 1e-4
    res.add("5", "eval on the GPU (f32) vs the CPU engine: exact matches, worst loss/perplexity diff",
            f"{db['exact']} / {da['exact']} of {da['records']}, {worst:.1e}" if good else "FAILED",
            f"path {path}; tolerance 1e-4, exact matches equal")
    return good


def graph_training(args, res, work, mdir):
    """The same training job with CUDA graphs (the default) and without
    (MODULA_CUDA_GRAPHS=0): records of one length, so every micro-batch has
    one shape and from the third on replays the graph with new tokens; the
    two trained adapters must agree."""
    from safetensors.torch import load_file as load_t
    data = os.path.join(work, "data-fixed.jsonl")
    with open(data, "w") as f:
        for i in range(96):
            f.write(json.dumps({"prompt": f"q{i:03d}: ", "response": f"a{i * 7 % 101:03d}"}) + "\n")
    outs, logs = {}, {}
    for graphs in ("1", "0"):
        out_dir = os.path.join(work, f"train-graphs{graphs}")
        job = dict(model=mdir, tokenizer="bytes", data=data, mode="lora", out_dir=out_dir,
                   lora=dict(rank=8, alpha=16, targets=["q", "k", "v", "o", "gate", "up", "down"]),
                   steps=12, batch=4, seq_len=32, lr=1e-2, seed=3)
        jpath = os.path.join(work, f"job-graphs{graphs}.json")
        with open(jpath, "w") as f:
            json.dump(job, f)
        env = dict(os.environ, MODULA_CUDA_GRAPHS=graphs)
        p = subprocess.run([args.engine, "train", jpath, "--device", "cuda", "--dtype", "bf16"],
                           env=env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"train (MODULA_CUDA_GRAPHS={graphs}) failed: {p.stderr[-2000:]}")
        for line in p.stderr.splitlines():
            if " warn " in line or "graph" in line:
                print("    " + line.strip()[-500:], flush=True)
        logs[graphs] = p.stderr
        outs[graphs] = {k: v.double().numpy() for k, v in
                        load_t(os.path.join(out_dir, "adapter", "adapter_model.safetensors")).items()}
    m = re.search(r"(\d+) micro-batches replayed a CUDA graph", logs["1"])
    replays = int(m.group(1)) if m else 0
    worst, where = 0.0, ""
    for k, ref in outs["0"].items():
        got = outs["1"][k]
        d = float(np.max(np.abs(got - ref))) / max(float(np.max(np.abs(ref))), 1e-30)
        if d > worst:
            worst, where = d, k
    ok = replays > 0 and worst <= 1e-5 and set(outs["0"]) == set(outs["1"])
    res.add("5", "12 training steps with / without CUDA graphs: adapters' worst relative diff",
            f"{worst:.2e}" if ok else "FAILED",
            f"{replays} of 12 micro-batches replayed a graph; worst {where}; tolerance 1e-5")
    return ok


# switch, the item-1 variant that has it the other way, whether that
# variant is the switch on (True) or off, and where its default is set
SWITCHES = (("MODULA_CUDA_FLASH (tiled flash attention)", "bf16-noflash", False,
             "kc_flash in kernels/cuda/mem.cu"),
            ("MODULA_FOLD (adapter groups folded into the base products)", "bf16-nofold", False,
             "m->fold in worker/dmodel.c's s_new"),
            ("MODULA_CUDA_LT (products on cuBLASLt, algorithms timed)", "bf16-gemmex", False,
             "kc_lt in kernels/cuda/mem.cu"),
            ("MODULA_FOLD_DIRECT (folded columns read and written in place, no copies)",
             "bf16-copy", False, "m->direct in worker/dmodel.c's s_new"),
            ("MODULA_CUDA_WGRAD (weight gradients on wgrad.cu, not cuBLAS split-K)",
             "bf16-wgrad", True, "kc_wgrad in kernels/cuda/mem.cu"))


def decisions(res):
    """For each switch of the CUDA backend that was written without a GPU:
    did item 1's engine step pass with it on and off, and which way was the
    LoRA step of item 3 faster. What the default should be follows."""
    base_ok, base_ms = VARIANT_OK.get("bf16-vec"), VARIANT_MS.get("bf16")
    for name, variant, variant_on, where in SWITCHES:
        v_ok, v_ms = VARIANT_OK.get(variant), VARIANT_MS.get(variant)
        if None in (base_ok, v_ok) or not base_ms or v_ms is None:
            res.add("3", f"decision: {name}", "no verdict",
                    f"item 1 {variant}: {v_ok}, default: {base_ok}; item 3 {variant}: {v_ms} ms "
                    f"(None: not run or losses apart)")
            continue
        on_ok, off_ok = (v_ok, base_ok) if variant_on else (base_ok, v_ok)
        on_ms, off_ms = (v_ms, base_ms) if variant_on else (base_ms, v_ms)
        if not on_ok:
            verdict = "off (its step failed item 1)"
        elif abs(on_ms - off_ms) <= 0.01 * off_ms:
            verdict = f"either (within 1%, one run each: noise; on {off_ms / on_ms:.3f}x)"
        elif on_ms < off_ms:
            verdict = f"on ({off_ms / on_ms:.3f}x faster)"
        else:
            verdict = f"off (on is {on_ms / off_ms:.3f}x slower)"
        res.add("3", f"decision: {name}", verdict,
                f"on {on_ms:.1f} ms, off {off_ms:.1f} ms; item 1 on {on_ok}, off {off_ok}; "
                f"default set at {where}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", default="1,2,3,4,5")
    ap.add_argument("--work", help="keep the models here (default: a temporary folder)")
    args = ap.parse_args()
    res = Results(args.out)
    if not torch.cuda.is_available():
        print("hf_check.py: PyTorch sees no GPU; nothing to compare", file=sys.stderr)
        return 2
    import peft
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, {torch.cuda.get_device_name()}", flush=True)
    items = {"1": item1, "2": item2, "3": item3, "4": item4, "5": item5}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="modula-hf-") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        for k in args.items.split(","):
            print(f"\n== ({k}) {items[k].__doc__.splitlines()[0] if items[k].__doc__ else ''}",
                  flush=True)
            t0 = time.perf_counter()
            try:
                if not items[k](args, res, work):
                    failed += 1
            except Exception as e:
                traceback.print_exc()
                res.add(k, "FAILED", "-", f"{type(e).__name__}: {str(e)[:200]}")
                failed += 1
            print(f"  ({k}) took {time.perf_counter() - t0:.0f} s", flush=True)
        if "1" in args.items.split(",") and "3" in args.items.split(","):
            decisions(res)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
