#!/usr/bin/python3
"""formats-hfref.py: checks of the PyTorch reference tests/ref/hfref.py
itself, so the engine is compared with something right: the folders it
writes (config, BF16 safetensors that read back exactly), causality, its
LoRA gradients against central finite differences in float64, and a PEFT
adapter written and read back giving the same loss. Prints TAP."""
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import hfref  # noqa: E402

from tap import done, ok  # noqa: E402


def run(*args):
    return subprocess.run([sys.executable, os.path.join(HERE, "ref", "hfref.py"), *args],
                          capture_output=True, text=True)


with tempfile.TemporaryDirectory(prefix="modula-hfref-") as tmp:
    llama, qwen = os.path.join(tmp, "llama"), os.path.join(tmp, "qwen")
    r1 = run("make-model", "--arch", "llama", "--out", llama, "--layers", "2", "--seed", "3")
    r2 = run("make-model", "--arch", "qwen2", "--out", qwen, "--dtype", "bf16", "--tie", "--heads", "4",
             "--kv-heads", "1", "--seed", "4")
    ok(r1.returncode == 0 and r2.returncode == 0, "make-model writes a LLaMA and a Qwen2 folder " + r1.stderr + r2.stderr)

    cfg, w = hfref.model_read(qwen)
    ok(cfg["model_type"] == "qwen2" and cfg["tie_word_embeddings"] and "lm_head.weight" not in w
       and w["model.layers.0.self_attn.k_proj.weight"].shape == (16, 64)
       and w["model.layers.1.self_attn.v_proj.bias"].dtype == torch.bfloat16,
       "qwen2: tied head, GQA k_proj [16, 64], BF16 biases")
    path = os.path.join(tmp, "rt.safetensors")
    hfref.st_write(path, w)
    back = hfref.st_read(path)
    ok(all(torch.equal(back[k].view(torch.int16), w[k].view(torch.int16)) for k in w), "BF16 tensors round-trip bit-exact")
    with open(path, "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
    ok((8 + hlen) % 8 == 0, "the data section is 8-byte aligned")

    # causality: changing the last token leaves the earlier logits alone
    cfg, w = hfref.model_read(llama)
    w = {k: v.double() for k, v in w.items()}
    t1 = torch.tensor([[1, 5, 9, 3, 7]])
    t2 = torch.tensor([[1, 5, 9, 3, 8]])
    l1, l2 = hfref.forward(cfg, w, t1, {}, 0.0), hfref.forward(cfg, w, t2, {}, 0.0)
    ok(torch.equal(l1[:, :4], l2[:, :4]) and not torch.equal(l1[:, 4], l2[:, 4]), "attention is causal")

    # LoRA gradients against central differences (float64)
    out = os.path.join(tmp, "ref.safetensors")
    ad = os.path.join(tmp, "adapter")
    args = ["--tokens", "1,5,9,3,7,2;4,4,8,6,0,1", "--mask", "0,0,1,1,1,1;0,1,1,1,1,0", "--lora-rank", "3",
            "--lora-alpha", "6", "--rslora", "--out", out]
    r = run("reference", "--model", qwen, *args, "--adapter-out", ad)
    ok(r.returncode == 0, "reference with LoRA on every module " + r.stderr)
    ref = hfref.st_read(out)
    names = sorted(k for k in ref if k.endswith("lora_A.weight") or k.endswith("lora_B.weight"))
    ok(len(names) == 2 * 2 * 7 and ref["logits"].shape == (2, 6, 96) and ref["loss"].shape == (),
       f"{len(names)} LoRA tensors, logits [2, 6, 96], a scalar loss")
    cfg, w = hfref.model_read(qwen)
    w = {k: v.double() for k, v in w.items()}
    lora = {k: ref[k].double() for k in names}
    tokens = torch.tensor([[1, 5, 9, 3, 7, 2], [4, 4, 8, 6, 0, 1]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]])
    scale = 6 / 3 ** 0.5

    def loss_of(lo):
        return hfref.masked_loss(hfref.forward(cfg, w, tokens, lo, scale), tokens, mask).item()

    worst = 0.0
    g = torch.Generator().manual_seed(5)
    for name in names[::3]:
        t = lora[name]
        for _ in range(2):
            i = int(torch.randint(t.numel(), (1,), generator=g))
            eps = 1e-6
            plus = {**lora, name: t.clone().view(-1).index_fill_(0, torch.tensor([i]), t.view(-1)[i] + eps).view(t.shape)}
            minus = {**lora, name: t.clone().view(-1).index_fill_(0, torch.tensor([i]), t.view(-1)[i] - eps).view(t.shape)}
            fd = (loss_of(plus) - loss_of(minus)) / (2 * eps)
            worst = max(worst, abs(fd - ref[name + ".grad"].view(-1)[i].item()))
    print(f"# max |autograd - central difference| over sampled LoRA entries: {worst:.3g}")
    ok(worst < 1e-6, f"LoRA gradients match central differences (max difference {worst:.3g} < 1e-6)")
    ok(abs(loss_of(lora) - ref["loss"].item()) < 1e-6, "the written loss is the masked mean cross-entropy")

    r = run("reference", "--model", qwen, "--tokens", "1,5,9,3,7,2;4,4,8,6,0,1", "--mask", "0,0,1,1,1,1;0,1,1,1,1,0",
            "--adapter", ad, "--out", os.path.join(tmp, "again.safetensors"))
    again = hfref.st_read(os.path.join(tmp, "again.safetensors"))
    ok(r.returncode == 0 and torch.equal(again["loss"], ref["loss"]) and torch.equal(again["logits"], ref["logits"]),
       "the PEFT adapter written with --adapter-out gives the same loss and logits")

    r = run("reference", "--model", llama, "--tokens", "1,2,3", "--full", "--out", os.path.join(tmp, "full.safetensors"))
    full = hfref.st_read(os.path.join(tmp, "full.safetensors"))
    ok(r.returncode == 0 and "lm_head.weight.grad" in full and "model.layers.1.mlp.down_proj.weight.grad" in full
       and full["logits"].shape == (3, 96), "--full writes a gradient for every base weight, logits [T, V] for one row")
    r = run("reference", "--model", llama, "--tokens", "1,2,300", "--out", os.path.join(tmp, "bad.safetensors"))
    ok(r.returncode != 0 and "outside" in r.stderr, "a token outside the vocabulary is refused")

sys.exit(done())
