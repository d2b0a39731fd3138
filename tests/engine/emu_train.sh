#!/bin/sh
# engine/emu_train.sh: `modula-engine train --device cuda` on the CPU
# emulation of CUDA (tests/modula-engine-emu, tests/cuda-emu): the training
# loop over the CUDA backend's own kernels (the fused AdamW with clipping,
# checkpoints copied from the device, resume), with no GPU. A LoRA job in
# f32 ends with adapter weights equal to the CPU engine's within 1e-4 of
# their scale; stopped at step k and run again it ends byte-identical to an
# uninterrupted run; its checkpoints resume on the CPU engine; in bf16 it
# trains (finite losses that fall); bench runs there with its products on
# cuBLASLt (tune.cu). The emulation refuses CUDA graphs: every step runs
# directly, after the warnings that say so. Its logic, not a GPU's speed.
. "$top_srcdir/tests/lib.sh"
engine="$top_builddir/worker/modula-engine"
emu="$top_builddir/tests/modula-engine-emu"
py=${PYTHON_TORCH:-/usr/bin/python3}
OMP_WAIT_POLICY=passive
MODULA_CUDA_TUNE_FILE=none
export OMP_WAIT_POLICY MODULA_CUDA_TUNE_FILE
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
. "$top_srcdir/tests/engine/train_lib.sh"
TRAIN_MODEL='{"dim":64,"n_layers":2,"n_heads":1,"n_kv_heads":1,"ffn_dim":96}'
TRAIN_STEPS=6

cd "$tmp" || exit 1
train_data
train_job cpu.json cpu
train_job emu.json emu
train_job stop.json stop ',"stop_at":4'
train_job again.json stop
train_job mixed.json mixed ',"stop_at":4'
train_job mixed2.json mixed
train_job bf16.json bf16

"$engine" train cpu.json >cpu.log 2>&1
check "CPU engine trains the job" $?
"$emu" train emu.json --device cuda --dtype f32 >emu.log 2>emu.err
check "the emulated GPU trains the job (f32)" $?
grep -q '"device":"cuda"' emu.log
check "its start event names the device (cuda)" $?
grep -q "CUDA graph" emu.err
check "the refused CUDA graphs are said, and the steps run directly" $?

rel=$(cmp_adapters cpu/adapter/adapter_model.safetensors emu/adapter/adapter_model.safetensors)
check "the emulated GPU's adapter equals the CPU engine's (relative $rel <= 1e-4)" "$(rel_ok "$rel")"

"$emu" train stop.json --device cuda --dtype f32 >/dev/null 2>&1 &&
	"$emu" train again.json --device cuda --dtype f32 >again.log 2>&1
check "stopped at step 4 on the emulated GPU and resumed there" $?
cmp -s stop/adapter/adapter_model.safetensors emu/adapter/adapter_model.safetensors
check "the resumed run is byte-identical to the uninterrupted one" $?

"$emu" train mixed.json --device cuda --dtype f32 >/dev/null 2>&1 &&
	"$engine" train mixed2.json --device cpu >mixed.log 2>&1
check "an emulated-GPU checkpoint resumes on the CPU engine" $?
rel=$(cmp_adapters cpu/adapter/adapter_model.safetensors mixed/adapter/adapter_model.safetensors)
check "and ends equal to the CPU run (relative $rel <= 1e-4)" "$(rel_ok "$rel")"

"$emu" train bf16.json --device cuda --dtype bf16 >bf16.log 2>/dev/null &&
	"$py" - bf16.log <<'PY'
import json, math, sys
loss = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"event":"progress"' in l]
sys.exit(not (len(loss) == 6 and all(math.isfinite(x) for x in loss) and loss[-1] < loss[0]))
PY
check "bf16 on the emulated GPU: six finite steps, the loss falls" $?

"$emu" bench --device cuda --method lora --batch 2 --seq 16 --steps 2 --warmup 1 >bench.json 2>/dev/null &&
	"$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(not (d["device"] == "cuda" and d["folded_groups"] > 0 and d["folded_groups"] % 2 == 0 and d["products"].startswith("cuBLASLt:") and d["loss_last"] == d["loss_last"]))' bench.json
check "bench on the emulated GPU ($(grep -o '"products":"[^"]*"' bench.json))" $?
done_testing
