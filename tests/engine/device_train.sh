#!/bin/sh
# engine/device_train.sh: `modula-engine train --device` runs the GPU path's
# code (worker/dmodel.c). Here, without a GPU, over the CPU op table
# (--device table): a LoRA job (gradient accumulation, warmup, clipping)
# ends with adapter weights equal to the CPU engine's within 1e-4 of their
# scale (the same arithmetic in another order); stopped at step k and run
# again it ends byte-identical to an uninterrupted run (masters and AdamW
# moments travel through the checkpoints); its checkpoints resume on the
# CPU engine. `--device auto` (what modula-worker passes on a GPU worker)
# trains here on the CPU; `--device cuda` without a GPU is refused with the
# reason, as a JSON error event. The CUDA run itself is tests/gpu/check.sh's.
. "$top_srcdir/tests/lib.sh"
engine="$top_builddir/worker/modula-engine"
py=${PYTHON_TORCH:-/usr/bin/python3}
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
. "$top_srcdir/tests/engine/train_lib.sh"
TRAIN_MODEL='{"dim":64,"n_layers":2,"n_heads":4,"n_kv_heads":2,"ffn_dim":96}'
TRAIN_STEPS=8

cd "$tmp" || exit 1
train_data
train_job cpu.json cpu
train_job table.json table
train_job stop.json stop ',"stop_at":4'
train_job again.json stop
train_job mixed.json mixed ',"stop_at":4'
train_job mixed2.json mixed

"$engine" train cpu.json >cpu.log 2>&1
check "CPU engine trains the job" $?
"$engine" train table.json --device table >table.log 2>&1
check "device path (CPU table) trains the job" $?
grep -q '"device":"cpu"' table.log
check "its start event names the device" $?

rel=$(cmp_adapters cpu/adapter/adapter_model.safetensors table/adapter/adapter_model.safetensors)
diag "adapters after 8 steps: max |cpu - device path| / max |cpu| = $rel"
check "device path's adapter equals the CPU engine's (relative $rel <= 1e-4)" \
	"$(rel_ok "$rel")"

"$engine" train stop.json --device table >/dev/null 2>&1 &&
	"$engine" train again.json --device table >again.log 2>&1
check "device path stopped at step 4 and resumed" $?
cmp -s stop/adapter/adapter_model.safetensors table/adapter/adapter_model.safetensors
check "resumed device run is byte-identical to the uninterrupted one" $?

"$engine" train mixed.json --device table >/dev/null 2>&1 &&
	"$engine" train mixed2.json --device cpu >mixed.log 2>&1
check "a device-path checkpoint resumes on the CPU engine" $?
rel=$(cmp_adapters cpu/adapter/adapter_model.safetensors mixed/adapter/adapter_model.safetensors)
check "and ends equal to the CPU run (relative $rel <= 1e-4)" \
	"$(rel_ok "$rel")"

train_job auto.json auto
"$engine" train auto.json --device auto >auto.log 2>&1 && grep -q '"device":"cpu"' auto.log
check "--device auto (what a GPU worker passes) trains on the CPU here" $?

# modula-engine bench: one JSON line with the figures, on both engines
for d in cpu table; do
	"$engine" bench --device $d --method modula-res --batch 2 --seq 16 --steps 2 --warmup 1 \
		>bench-$d.json 2>/dev/null &&
		"$py" -c 'import json, math, sys; d = json.load(open(sys.argv[1])); sys.exit(not (d["tokens_per_s"] > 0 and math.isfinite(d["loss_last"]) and d["method"] == "modula-res"))' bench-$d.json
	check "bench --device $d prints its figures" $?
done
# plain LoRA on every projection: q, k, v and gate, up run as two groups a layer
"$engine" bench --device table --method lora --batch 2 --seq 16 --steps 1 --warmup 0 >bench-lora.json 2>/dev/null &&
	"$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(not (d["adapter_groups"] > 0 and d["adapter_groups"] % 2 == 0))' bench-lora.json
check "bench lora: the adapters sharing an input run as groups ($(grep -o '"adapter_groups":[0-9]*' bench-lora.json))" $?
# ... folded into their base products (the default), and the same losses without
"$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(not (d["folded_groups"] == d["adapter_groups"]))' bench-lora.json
check "bench lora: every group folded into its base products ($(grep -o '"folded_groups":[0-9]*' bench-lora.json))" $?
for meth in lora modula-res modula-flan; do
	MODULA_FOLD=0 "$engine" bench --device table --method $meth --batch 2 --seq 16 --steps 2 --warmup 0 >bench-nofold.json 2>/dev/null &&
		"$engine" bench --device table --method $meth --batch 2 --seq 16 --steps 2 --warmup 0 >bench-fold.json 2>/dev/null &&
		"$py" -c 'import json, sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(not (a["folded_groups"] == 0 and b["folded_groups"] == 8 and a["folded_tail"] == 0 and b["folded_tail"] == 8 and abs(a["loss_last"] - b["loss_last"]) <= 1e-5 * abs(a["loss_last"]) and a["loss_last"] != a["loss_first"]))' bench-nofold.json bench-fold.json
	check "bench $meth: folded (default) and not (MODULA_FOLD=0), the same loss after a step ($(grep -o '"loss_last":[0-9.]*' bench-nofold.json) vs $(grep -o '"loss_last":[0-9.]*' bench-fold.json))" $?
	# folded with the adapters' columns copied through buffers of their own
	# (MODULA_FOLD_DIRECT=0) instead of read and written in place
	MODULA_FOLD_DIRECT=0 "$engine" bench --device table --method $meth --batch 2 --seq 16 --steps 2 --warmup 0 >bench-copy.json 2>/dev/null &&
		"$py" -c 'import json, sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); sys.exit(not (a["folded_groups"] == 8 and a["folded_tail"] == 8 and abs(a["loss_last"] - b["loss_last"]) <= 1e-5 * abs(a["loss_last"]) and a["loss_last"] != a["loss_first"]))' bench-copy.json bench-fold.json
	check "bench $meth: folded, in place (default) and through copies (MODULA_FOLD_DIRECT=0), the same loss after a step ($(grep -o '"loss_last":[0-9.]*' bench-copy.json) vs $(grep -o '"loss_last":[0-9.]*' bench-fold.json))" $?
done
"$engine" bench --device table --method modula-res --one-pass --batch 2 --seq 16 --steps 1 --warmup 0 \
	>onepass.json 2>/dev/null && grep -q '"one_pass_over_separate"' onepass.json
check "bench --one-pass times one pass against separate steps" $?
"$engine" bench --device cpu --one-pass --method modula-res --seq 16 >/dev/null 2>bench.err
[ $? -eq 1 ] && grep -q "device path" bench.err
check "bench --one-pass on the CPU engine is refused with the reason" $?

if "$engine" devices | grep -q '^cuda: unavailable'; then
	"$engine" train cpu.json --device cuda >cuda.log 2>cuda.err
	[ $? -eq 1 ]
	check "--device cuda without a GPU fails (exit 1)" $?
	grep -q '"event":"error".*--device cuda: ' cuda.log
	check "with a JSON error event giving the reason" $?
else
	skip "--device cuda without a GPU fails" "a GPU answers here (tests/gpu/check.sh runs it)"
fi
done_testing
