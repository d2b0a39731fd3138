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
What the engine cannot do yet is printed as "NOT RUN: <feature> not
implemented yet" and recorded so; nothing is estimated or made up. Every
figure goes to OUT/results.tsv (item, figure, value, note), which check.sh
prints as the final table.

Not a test of the engine's numerics on the CPU (make check does that) and
not a tuning tool: one fixed configuration, stated in the output.
"""
import argparse
import json
import os
import random
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
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BENCH = dict(batch=8, seq_len=512, rank=16, alpha=32, warmup=3, steps=10)


class Results:
    """Rows of OUT/results.tsv: item, figure, value, note."""

    def __init__(self, out):
        self.path = os.path.join(out, "results.tsv")

    def add(self, item, figure, value, note=""):
        with open(self.path, "a") as f:
            f.write(f"{item}\t{figure}\t{value}\t{note}\n")
        print(f"  {item}: {figure} = {value}" + (f"  ({note})" if note else ""), flush=True)

    def not_run(self, item, feature):
        print(f"NOT RUN: {feature} not implemented yet", flush=True)
        self.add(item, "NOT RUN", "-", f"{feature} not implemented yet")


def engine_help(engine):
    r = subprocess.run([engine, "--help"], capture_output=True, text=True)
    return r.stdout + r.stderr


def engine_has_gpu_path(engine):
    # The engine's commands take --device once its model runs on the CUDA ops.
    return "--device" in engine_help(engine)


def run(cmd, **kw):
    print("  $ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {cmd[1]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
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


def engine_config_fixes(path, res, item):
    """transformers 5 writes RoPE as rope_parameters (and may write a
    "default" rope_scaling); the engine reads rope_theta and refuses any
    rope_scaling. Rewrite those two keys, say so, and record it: a finding
    for the engine, not something to hide."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    notes = []
    rp = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rp:
        cfg["rope_theta"] = rp["rope_theta"]
        notes.append("rope_theta copied from rope_parameters")
    rs = cfg.get("rope_scaling")
    if isinstance(rs, dict) and rs.get("rope_type", rs.get("type")) == "default":
        cfg["rope_scaling"] = None
        notes.append("a 'default' rope_scaling set to null")
    if notes:
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        res.add(item, "config.json adjusted for the engine", "yes", "; ".join(notes))


def save_bf16(model, path, res, item):
    model.to(torch.bfloat16).save_pretrained(path)
    model.float()
    engine_config_fixes(path, res, item)
    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    if not files:
        raise RuntimeError(f"save_pretrained wrote no safetensors in {path}")
    return sum(os.path.getsize(os.path.join(path, f)) for f in files)


def engine_logits(engine, model_dir, tokens, out, adapter=None):
    from safetensors.numpy import load_file
    path = os.path.join(out, "engine_logits.safetensors")
    cmd = [engine, "logits", "--model", model_dir, "--tokens", ",".join(map(str, tokens)),
           "--out", path]
    if adapter:
        cmd[4:4] = ["--adapter", adapter]
    t0 = time.perf_counter()
    run(cmd)
    return load_file(path)["logits"], time.perf_counter() - t0


def compare(res, item, ours, ref, rel_tol):
    ours = np.asarray(ours, dtype=np.float32).reshape(ref.shape)
    d = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    ok = d <= rel_tol * scale
    res.add(item, "max |engine - reference| / max |reference|", f"{d / scale:.2e}",
            f"tolerance {rel_tol:.0e}: {'ok' if ok else 'EXCEEDED'}")
    return ok


def item2(args, res, work):
    """The engine's logits of a random ~0.5B Qwen2 against transformers."""
    model = new_qwen2(QWEN2_05B, 0)
    n = sum(p.numel() for p in model.parameters())
    res.add("2", "Qwen2-shaped model parameters", f"{n / 1e6:.1f}M", "random init, saved bf16")
    size = save_bf16(model, os.path.join(work, "qwen2"), res, "2")
    res.add("2", "safetensors size", f"{size / 2**20:.0f} MiB")
    rng = random.Random(1)
    tokens = [rng.randrange(QWEN2_05B["vocab_size"]) for _ in range(48)]
    strict_fp32()
    with torch.no_grad():
        ref = model(torch.tensor([tokens], device="cuda")).logits[0].float().cpu().numpy()
    device = "cuda" if engine_has_gpu_path(args.engine) else "cpu"
    ours, secs = engine_logits(args.engine, os.path.join(work, "qwen2"), tokens, work)
    res.add("2", "engine logits device", device,
            "" if device == "cuda" else "the engine's GPU path is not implemented yet: its CPU path ran")
    res.add("2", "engine logits time (load + 48 tokens)", f"{secs:.1f} s")
    ok = compare(res, "2", ours, ref, 1e-3)
    del model
    torch.cuda.empty_cache()
    return ok


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
    if not engine_has_gpu_path(args.engine):
        res.not_run("3", "the engine's LoRA training on the GPU (modula-engine train with --device cuda)")
        return True
    res.not_run("3", "the engine side of this benchmark in hf_check.py (written before the "
                "engine had --device)")
    return True


def item4(args, res, work):
    """modula-res with 4 domain experts against plain LoRA, step time."""
    text = engine_help(args.engine)
    if not engine_has_gpu_path(args.engine):
        res.not_run("4", "the engine's training on the GPU")
    elif "modula-res" not in text:
        res.not_run("4", "modula-res in the engine")
    else:
        res.not_run("4", "the modula-res benchmark driver (hf_check.py item4)")
    return True


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
    run([args.engine, "train", jpath])
    adapter = os.path.join(out_dir, "adapter")
    if not os.path.exists(os.path.join(adapter, "adapter_config.json")):
        res.not_run("5", f"the PEFT adapter export of train (no {adapter}/adapter_config.json)")
        return True
    rng = random.Random(5)
    tokens = [rng.randrange(256) for _ in range(24)]
    ours, _ = engine_logits(args.engine, mdir, tokens, work, adapter=adapter)
    strict_fp32()
    pm = PeftModel.from_pretrained(model, adapter).float().eval()
    with torch.no_grad():
        ref = pm(torch.tensor([tokens], device="cuda")).logits[0].float().cpu().numpy()
    res.add("5", "engine device for training and logits",
            "cuda" if engine_has_gpu_path(args.engine) else "cpu",
            "the adapter format does not depend on the device")
    return compare(res, "5", ours, ref, 1e-3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", default="2,3,4,5")
    args = ap.parse_args()
    res = Results(args.out)
    if not torch.cuda.is_available():
        print("hf_check.py: PyTorch sees no GPU; nothing to compare", file=sys.stderr)
        return 2
    import peft
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}, {torch.cuda.get_device_name()}", flush=True)
    items = {"2": item2, "3": item3, "4": item4, "5": item5}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="modula-hf-") as work:
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
