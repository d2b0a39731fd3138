#!/usr/bin/python3
"""hfref.py: the PyTorch reference the engine is checked against.

Plain PyTorch (Debian's python3-torch; no transformers, peft or safetensors
packages, so safetensors files are read and written here with struct+json).
Not a test by itself: engine tests drive it. Run with /usr/bin/python3
($PYTHON_TORCH in tests).

  hfref.py make-model --arch llama|qwen2 --out DIR [--dtype f32|bf16|f16]
           [--vocab 96 --dim 64 --layers 2 --heads 4 --kv-heads 2
            --head-dim D --ffn 160 --max-seq 128 --tie --seed 1]
      A random Hugging Face folder: DIR/config.json + DIR/model.safetensors
      (LlamaForCausalLM or Qwen2ForCausalLM field and tensor names). qwen2
      has q/k/v biases. Weights are drawn in fp32 and stored in --dtype.

  hfref.py reference --model DIR --tokens 1,2,3[;4,5,6] --out FILE
           [--mask 0,0,1[;...]] [--lora-rank R --lora-alpha A --rslora
            --lora-targets q,k,v,o,gate,up,down --lora-seed S
            | --adapter PEFT_DIR] [--adapter-out DIR] [--full]
           [--precision f64|f32]
      Runs the model (the folder's stored weights, converted exactly) on the
      token rows and writes FILE (safetensors, all F32):
        logits                  [T, V] for one row, [B, T, V] for several
        loss                    [] mean cross-entropy of the masked targets
        <peft name>             each LoRA tensor used (A [r, in], B [out, r])
        <peft name>.grad        d loss / d that tensor
        <hf name>.grad          with --full: d loss / d every base weight
      --adapter-out DIR writes the LoRA tensors as a PEFT folder
      (adapter_config.json + adapter_model.safetensors) the engine loads.

The loss: row b, position t (0 <= t < T-1) predicts token t+1; it counts
when mask[b][t+1] is 1 (a response token; no --mask: every target counts).
loss = sum of the counted cross-entropies / their number, over all rows
(Hugging Face's labels = -100 convention, shifted inside).

LoRA: y = W x + s * B (A x), s = alpha / r (rsLoRA: alpha / sqrt(r)), on
the chosen modules of every layer, no dropout. Fresh A and B are both drawn
from normal(0, 0.1) with --lora-seed (B is not zero, so both gradients are
informative). PEFT names:
  base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
  base_model.model.model.layers.N.mlp.{gate,up,down}_proj.lora_{A,B}.weight
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

DTYPES = {
    "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "F64": (torch.float64, 8), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
}
ATTN = ["q", "k", "v", "o"]
MLP = ["gate", "up", "down"]


# ---- safetensors ----

def st_write(path, tensors, metadata=None):
    """Write {name: tensor} (each in its own dtype), names sorted, data
    8-byte aligned, atomically."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    names = sorted(tensors)
    # larger elements first so every tensor is aligned to its element size
    order = sorted(names, key=lambda n: (-tensors[n].element_size(), n))
    for name in order:
        t = tensors[name].detach().contiguous().cpu()
        dt = next(k for k, v in DTYPES.items() if v[0] == t.dtype)
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    ordered = {}
    if metadata:
        ordered["__metadata__"] = metadata
    for name in names:
        ordered[name] = header[name]
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def st_read(path):
    """{name: tensor} in the stored dtypes."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt, size = DTYPES[e["dtype"]]
        b0, b1 = e["data_offsets"]
        raw = bytearray(data[base + b0:base + b1])
        t = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(dt).reshape(e["shape"])
    return out


def model_read(folder):
    """config dict and {name: tensor} from a folder (one file or shards)."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        w = {}
        for s in shards:
            w.update(st_read(os.path.join(folder, s)))
    else:
        w = st_read(os.path.join(folder, "model.safetensors"))
    return cfg, w


# ---- make-model ----

def make_model(a):
    g = torch.Generator().manual_seed(a.seed)
    hd = a.head_dim or a.dim // a.heads
    qkv_bias = a.arch == "qwen2"
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if a.arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": a.arch, "vocab_size": a.vocab, "hidden_size": a.dim, "intermediate_size": a.ffn,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
        "head_dim": hd, "max_position_embeddings": a.max_seq, "rms_norm_eps": 1e-5, "rope_theta": a.rope_theta,
        "tie_word_embeddings": a.tie, "hidden_act": "silu", "torch_dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[a.dtype],
        "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "use_cache": True,
    }
    if a.arch == "llama":
        cfg["attention_bias"] = False

    def rnd(*shape, std=None):
        # default: 1/sqrt(fan in), so activations and logits stay O(1)
        return torch.randn(*shape, generator=g) * (std if std is not None else shape[-1] ** -0.5)

    w = {"model.embed_tokens.weight": rnd(a.vocab, a.dim), "model.norm.weight": 1 + rnd(a.dim, std=0.1)}
    if not a.tie:
        w["lm_head.weight"] = rnd(a.vocab, a.dim)
    for i in range(a.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + rnd(a.dim, std=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + rnd(a.dim, std=0.1)
        w[p + "self_attn.q_proj.weight"] = rnd(a.heads * hd, a.dim)
        w[p + "self_attn.k_proj.weight"] = rnd(a.kv_heads * hd, a.dim)
        w[p + "self_attn.v_proj.weight"] = rnd(a.kv_heads * hd, a.dim)
        w[p + "self_attn.o_proj.weight"] = rnd(a.dim, a.heads * hd)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = rnd(a.heads * hd, std=0.1)
            w[p + "self_attn.k_proj.bias"] = rnd(a.kv_heads * hd, std=0.1)
            w[p + "self_attn.v_proj.bias"] = rnd(a.kv_heads * hd, std=0.1)
        w[p + "mlp.gate_proj.weight"] = rnd(a.ffn, a.dim)
        w[p + "mlp.up_proj.weight"] = rnd(a.ffn, a.dim)
        w[p + "mlp.down_proj.weight"] = rnd(a.dim, a.ffn)
    dt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    st_write(os.path.join(a.out, "model.safetensors"), {k: v.to(dt) for k, v in w.items()}, {"format": "pt"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"wrote {a.out}: {a.arch}, {sum(v.numel() for v in w.values())} parameters, {a.dtype}")


# ---- the forward pass ----

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """x [B, H, T, hd], Hugging Face's rotate-half layout."""
    hd, T = x.shape[-1], x.shape[-2]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1).to(x.dtype)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def peft_name(layer, mod, ab):
    part = "self_attn" if mod in ATTN else "mlp"
    return f"base_model.model.model.layers.{layer}.{part}.{mod}_proj.lora_{ab}.weight"


def forward(cfg, w, tokens, lora, scale, delta=None):
    """tokens [B, T] -> logits [B, T, V]. lora: {peft name: tensor}.
    delta(layer, mod, x), when given, is added to every linear layer's output
    (the MoDULA mixtures of tests/ref/moderef.py)."""
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    B, T = tokens.shape

    def linear(x, layer, mod, weight, bias=None):
        y = x @ weight.T
        if bias is not None:
            y = y + bias
        a = lora.get(peft_name(layer, mod, "A"))
        if a is not None:
            y = y + scale * ((x @ a.T) @ lora[peft_name(layer, mod, "B")].T)
        if delta is not None:
            y = y + delta(layer, mod, x)
        return y

    x = w["model.embed_tokens.weight"][tokens]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, i, "q", w[p + "self_attn.q_proj.weight"], w.get(p + "self_attn.q_proj.bias"))
        k = linear(h, i, "k", w[p + "self_attn.k_proj.weight"], w.get(p + "self_attn.k_proj.bias"))
        v = linear(h, i, "v", w[p + "self_attn.v_proj.weight"], w.get(p + "self_attn.v_proj.bias"))
        q = rope(q.view(B, T, H, hd).transpose(1, 2), theta)
        k = rope(k.view(B, T, KV, hd).transpose(1, 2), theta)
        v = v.view(B, T, KV, hd).transpose(1, 2)
        k = k.repeat_interleave(H // KV, dim=1)      # head j uses kv head j // (H / KV)
        v = v.repeat_interleave(H // KV, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + linear(o, i, "o", w[p + "self_attn.o_proj.weight"])
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = linear(h, i, "gate", w[p + "mlp.gate_proj.weight"])
        u = linear(h, i, "up", w[p + "mlp.up_proj.weight"])
        x = x + linear(torch.nn.functional.silu(g) * u, i, "down", w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def masked_loss(logits, tokens, mask):
    lp = logits[:, :-1].log_softmax(-1)
    nll = -lp.gather(-1, tokens[:, 1:, None])[..., 0]
    m = mask[:, 1:].to(nll.dtype)
    if m.sum() == 0:
        sys.exit("hfref: the mask selects no target token")
    return (nll * m).sum() / m.sum()


# ---- reference ----

def parse_rows(s, what):
    rows = [[int(v) for v in r.split(",")] for r in s.split(";")]
    if len({len(r) for r in rows}) != 1:
        sys.exit(f"hfref: {what}: rows of different lengths")
    return torch.tensor(rows, dtype=torch.int64)


def module_dims(cfg, mod):
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    F = cfg["intermediate_size"]
    return {"q": (D, H * hd), "k": (D, KV * hd), "v": (D, KV * hd), "o": (H * hd, D),
            "gate": (D, F), "up": (D, F), "down": (F, D)}[mod]


def reference(a):
    dt = torch.float64 if a.precision == "f64" else torch.float32
    cfg, stored = model_read(a.model)
    w = {k: v.to(dt) for k, v in stored.items()}
    tokens = parse_rows(a.tokens, "--tokens")
    V = cfg["vocab_size"]
    if tokens.min() < 0 or tokens.max() >= V:
        sys.exit(f"hfref: a token id is outside [0, {V})")
    mask = parse_rows(a.mask, "--mask") if a.mask else torch.ones_like(tokens)
    if mask.shape != tokens.shape:
        sys.exit("hfref: --mask and --tokens differ in shape")

    lora, scale, lcfg = {}, 0.0, None
    if a.adapter:
        with open(os.path.join(a.adapter, "adapter_config.json")) as f:
            lcfg = json.load(f)
        lora = {k: v.to(dt) for k, v in st_read(os.path.join(a.adapter, "adapter_model.safetensors")).items()}
    elif a.lora_rank:
        targets = [t.strip().removesuffix("_proj") for t in a.lora_targets.split(",")]
        for t in targets:
            if t not in ATTN + MLP:
                sys.exit(f"hfref: unknown LoRA target '{t}'")
        lcfg = {"r": a.lora_rank, "lora_alpha": a.lora_alpha, "use_rslora": a.rslora,
                "target_modules": [t + "_proj" for t in targets]}
        g = torch.Generator().manual_seed(a.lora_seed)
        for i in range(cfg["num_hidden_layers"]):
            for t in targets:
                fin, fout = module_dims(cfg, t)
                lora[peft_name(i, t, "A")] = (torch.randn(a.lora_rank, fin, generator=g) * 0.1).to(dt)
                lora[peft_name(i, t, "B")] = (torch.randn(fout, a.lora_rank, generator=g) * 0.1).to(dt)
    if lcfg:
        r = lcfg["r"]
        scale = lcfg["lora_alpha"] / (math.sqrt(r) if lcfg.get("use_rslora") else r)
    for t in lora.values():
        t.requires_grad_(True)
    if a.full:
        for t in w.values():
            t.requires_grad_(True)

    logits = forward(cfg, w, tokens, lora, scale)
    loss = masked_loss(logits, tokens, mask)
    if lora or a.full:
        loss.backward()

    out = {"logits": (logits[0] if tokens.shape[0] == 1 else logits).detach().float(),
           "loss": loss.detach().float().reshape(())}
    for k, t in lora.items():
        out[k] = t.detach().float()
        out[k + ".grad"] = t.grad.float()
    if a.full:
        for k, t in w.items():
            out[k + ".grad"] = t.grad.float()
    st_write(a.out, out, {"loss": repr(loss.item()), "precision": a.precision})
    if a.adapter_out and lora:
        os.makedirs(a.adapter_out, exist_ok=True)
        peft_cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": a.model,
                    "r": lcfg["r"], "lora_alpha": lcfg["lora_alpha"], "use_rslora": bool(lcfg.get("use_rslora")),
                    "target_modules": lcfg["target_modules"], "lora_dropout": 0.0, "bias": "none",
                    "fan_in_fan_out": False, "inference_mode": True}
        st_write(os.path.join(a.adapter_out, "adapter_model.safetensors"),
                 {k: t.detach().float() for k, t in lora.items()}, {"format": "pt"})
        with open(os.path.join(a.adapter_out, "adapter_config.json"), "w") as f:
            json.dump(peft_cfg, f, indent=2)
    print(f"loss {loss.item():.9g}; wrote {a.out} ({len(out)} tensors)")


def main():
    ap = argparse.ArgumentParser(prog="hfref.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model", help="write a random Hugging Face model folder")
    m.add_argument("--arch", choices=["llama", "qwen2"], required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    m.add_argument("--vocab", type=int, default=96)
    m.add_argument("--dim", type=int, default=64)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--kv-heads", type=int, default=2)
    m.add_argument("--head-dim", type=int, default=0, help="default dim / heads")
    m.add_argument("--ffn", type=int, default=160)
    m.add_argument("--max-seq", type=int, default=128)
    m.add_argument("--rope-theta", type=float, default=10000.0)
    m.add_argument("--tie", action="store_true", help="tie the LM head to the embeddings")
    m.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("reference", help="logits, loss and gradients of a model folder")
    r.add_argument("--model", required=True)
    r.add_argument("--tokens", required=True, help="1,2,3 or rows 1,2,3;4,5,6")
    r.add_argument("--mask", help="1 where a token is a response token, same shape as --tokens")
    r.add_argument("--out", required=True)
    r.add_argument("--lora-rank", type=int, default=0)
    r.add_argument("--lora-alpha", type=float, default=16.0)
    r.add_argument("--rslora", action="store_true")
    r.add_argument("--lora-targets", default="q,k,v,o,gate,up,down")
    r.add_argument("--lora-seed", type=int, default=7)
    r.add_argument("--adapter", help="a PEFT folder to use instead of fresh LoRA tensors")
    r.add_argument("--adapter-out", help="write the LoRA tensors used as a PEFT folder")
    r.add_argument("--full", action="store_true", help="also the gradients of every base weight")
    r.add_argument("--precision", choices=["f64", "f32"], default="f64")
    a = ap.parse_args()
    if a.cmd == "make-model":
        if a.dim % a.heads and not a.head_dim:
            sys.exit("hfref: --heads must divide --dim (or give --head-dim)")
        if a.heads % a.kv_heads:
            sys.exit("hfref: --kv-heads must divide --heads")
        make_model(a)
    else:
        reference(a)


if __name__ == "__main__":
    main()
