#!/bin/bash
# tests/gpu/check.sh: the one GPU check of the CUDA backend (issue 10), run
# on a GPU machine from the repository root with the bundle beside it:
#
#     make gpu-bundle              # here, on the x86-64 Debian build machine
#     bash tests/gpu/check.sh      # there: .gpu-bundle/ and tests/gpu/*.py
#
# The GPU machine installs nothing: it has the NVIDIA driver, CUDA 13 with
# cuBLAS, PyTorch, transformers and peft; the bundle brings everything else.
# Steps, in order, under 8 minutes on an H100:
#   (0) the machine, and the libraries the programs load (ldd, /proc/self/maps)
#   (1) every CUDA op against the CPU reference (tests/gpu-ops, per-tensor
#       tolerances in its output), the same under compute-sanitizer's
#       memcheck when the machine has it (and the flash attention case under
#       racecheck and synccheck), then a whole LoRA training step, CUDA
#       against CPU (tests/gpu-step, the op table's step; and hf_check.py's
#       item 1, the engine's own step: modula-engine grads --device cuda in
#       f32 and bf16 against its CPU path)
#   (2)-(5) tests/gpu/hf_check.py: logits of a ~0.5B Qwen2 against
#       transformers, the LoRA benchmark against PyTorch + PEFT (with and
#       without CUDA graphs), modula-res and modula-flan against plain
#       LoRA, PEFT loading the adapter the engine trained on the GPU,
#       training with and without graphs, eval on the GPU against the CPU
# Figures go to $OUT (or a temporary folder): results.tsv, the TAP of
# gpu-ops, ldd; a table of them ends the output. Exit status: 0 when nothing
# failed.
# Every step has a timeout (45 + 100 + 2 x 40 + 45 + 2 x 30 + 120 + 280 + 2 x 150 s), so a hang cannot take the
# whole GPU lease. Not part of `make check` (no GPU there) and not a build:
# it builds nothing. HF_ITEMS=3,5 runs only those items of hf_check.py;
# HF_WORK=DIR keeps its models there.
set -u
cd "$(dirname "$0")/../.." || exit 2
bundle=${GPU_BUNDLE:-.gpu-bundle}
out=${OUT:-$(mktemp -d /tmp/modula-gpu-check.XXXXXX)}
mkdir -p "$out" || exit 2
results=$out/results.tsv
: >"$results"
failed=0
SECONDS=0

say() { printf '\n== %s\n' "$*"; }
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$results"; }

if [ ! -x "$bundle/bin/modula-bundle" ]; then
	echo "check.sh: no GPU bundle at '$bundle': run 'make gpu-bundle' in a CUDA build on the build machine and bring .gpu-bundle/ along" >&2
	exit 2
fi
engine=$bundle/bin/modula-engine
. "$bundle/env.sh"
# the products' algorithms, timed per shape by the first process that meets
# it (kernels/cuda/tune.cu), kept with this run's figures so that every
# later program here runs the same ones
export MODULA_CUDA_TUNE_FILE=${MODULA_CUDA_TUNE_FILE:-$out/cublaslt.tsv}

say "(0) machine and libraries"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu.txt"
row 0 "GPU" "$(head -1 "$out/gpu.txt")"
head -3 "$bundle/MANIFEST"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$bundle/bin/modula-bundle" | tee "$out/ldd.txt"
if grep -q "not found" "$out/ldd.txt"; then
	echo "check.sh: a library of the bundle was not found (above): cuBLAS 13 missing?" >&2
	failed=1
fi
"$engine" devices | tee "$out/devices.txt"

say "(1) every CUDA op against the CPU reference"
timeout 45 "$bundle/bin/gpu-ops" | tee "$out/gpu-ops.tap"
n_ok=$(grep -c '^ok ' "$out/gpu-ops.tap" | tr -d ' ')
n_skip=$(grep -c '^ok .*# SKIP' "$out/gpu-ops.tap" | tr -d ' ')
n_bad=$(grep -c '^not ok ' "$out/gpu-ops.tap" | tr -d ' ')
row 1 "op checks passed / failed / skipped" "$((n_ok - n_skip)) / $n_bad / $n_skip" "tests/gpu-ops, tolerances in its lines"
if [ "$n_bad" -ne 0 ] || [ "$n_skip" -ne 0 ] || [ "$n_ok" -eq 0 ]; then failed=1; fi

say "(1) the same ops under compute-sanitizer (memcheck): out-of-bounds and misaligned accesses"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$sanitizer" ]; then
	timeout 100 "$sanitizer" --tool memcheck --error-exitcode 9 "$bundle/bin/gpu-ops" >"$out/memcheck.txt" 2>&1
	st=$?
	tail -5 "$out/memcheck.txt"
	row 1 "gpu-ops under compute-sanitizer memcheck" "$([ $st -eq 0 ] && echo clean || echo "exit $st")" "$out/memcheck.txt"
	[ $st -eq 0 ] || failed=1
else
	echo "compute-sanitizer not found: skipped"
	row 1 "gpu-ops under compute-sanitizer memcheck" "skipped" "no compute-sanitizer on this machine"
fi
if [ -n "$sanitizer" ]; then
	# the flash and wgrad kernels share tiles between warps: races and
	# barrier misuse
	# (case filter|file suffix|row name)
	for what in "flash kernels bf16||flash attention" "wgrad kernel) bf16|-wgrad|weight-gradient kernel"; do
		only=${what%%|*} rest=${what#*|}
		sfx=${rest%%|*} name=${rest#*|}
		for tool in racecheck synccheck; do
			GPU_OPS_ONLY=$only timeout 40 "$sanitizer" --tool $tool --error-exitcode 9 \
				"$bundle/bin/gpu-ops" >"$out/$tool$sfx.txt" 2>&1
			st=$?
			tail -3 "$out/$tool$sfx.txt"
			row 1 "$name (bf16) under compute-sanitizer $tool" "$([ $st -eq 0 ] && echo clean || echo "exit $st")" "$out/$tool$sfx.txt"
			[ $st -eq 0 ] || failed=1
		done
	done
fi

say "(1) a whole training step, CUDA against CPU"
echo "tests/gpu-step: a LoRA step of a 2-layer LLaMA-shaped model written once against the op table"
echo "(kernels/device.h), run on both backends; the engine's own step is hf_check.py's item (1)"
timeout 45 "$bundle/bin/gpu-step" | tee "$out/gpu-step.tap"
n_ok=$(grep -c '^ok ' "$out/gpu-step.tap" | tr -d ' ')
n_skip=$(grep -c '^ok .*# SKIP' "$out/gpu-step.tap" | tr -d ' ')
n_bad=$(grep -c '^not ok ' "$out/gpu-step.tap" | tr -d ' ')
row 1 "op-table LoRA step checks passed / failed / skipped" "$((n_ok - n_skip)) / $n_bad / $n_skip" "tests/gpu-step, f32 and bf16"
if [ "$n_bad" -ne 0 ] || [ "$n_skip" -ne 0 ] || [ "$n_ok" -eq 0 ]; then failed=1; fi
say "(3) attention alone: the flash kernels against the cuBLAS path (gpu-ops time-attention)"
# Qwen2-0.5B's heads at item 3's batch, and LLaMA-8B-like heads of 128
for shape in "8 512 14 2 64" "2 2048 32 8 128"; do
	att=$out/attention-$(echo $shape | tr ' ' -).txt
	timeout 30 "$bundle/bin/gpu-ops" time-attention $shape | tee "$att"
	fl=$(awk '$1 == "flash" { print $(NF - 1), "ms" }' "$att")
	cb=$(awk '$1 == "cuBLAS" { print $(NF - 1), "ms" }' "$att")
	row 3 "attention forward + backward, bf16, B T NH NKV HS = $shape" "${fl:-failed}" \
		"cuBLAS path ${cb:-failed}; flash $(sed -n 's/^ *flash *//p' "$att")"
	[ -n "$fl" ] || failed=1
done
say "(3) the weight gradients of one layer: wgrad.cu's kernel against cuBLAS (gpu-ops time-wgrad)"
timeout 30 "$bundle/bin/gpu-ops" time-wgrad 4096 | tee "$out/wgrad.txt"
while IFS= read -r line; do
	row 3 "weight gradients, $(echo "$line" | sed 's/^ *\(.*[^ ]\) *cuBLAS .*/\1/'): wgrad.cu faster than cuBLAS by" \
		"$(echo "$line" | awk '{ print $NF }')" "$(echo "$line" | sed 's/^.*\(cuBLAS \)/\1/')"
done < <(grep ' cuBLAS ' "$out/wgrad.txt")
grep -q ' wgrad ' "$out/wgrad.txt" || failed=1
# the flash kernels' counters, for the next round of their tuning (not a check)
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$ncu" ]; then
	timeout -k 10 120 "$ncu" --clock-control none -k regex:k_flash --launch-count 5 --section SpeedOfLight \
		--section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis \
		"$bundle/bin/gpu-ops" time-attention 8 512 14 2 64 1 >"$out/ncu-flash.txt" 2>&1
	echo "ncu on the flash kernels: exit $? ($out/ncu-flash.txt)"
fi

say "(1), (2)-(5): the engine against its CPU path, transformers and peft"
PYTHONUNBUFFERED=1 timeout 280 python3 tests/gpu/hf_check.py --engine "$engine" --out "$out" \
	--items "${HF_ITEMS:-1,2,3,4,5}" ${HF_WORK:+--work "$HF_WORK"} || failed=1

# the second step of item 3's bench, kernel by kernel (ncu; no graphs;
# the first step is the warm-up, the launches before it the model's
# load), for the next round of tuning (not a check): $out/kernels.txt,
# launch order in $out/kernels-order.txt
if [ -z "$ncu" ] || [ ! -f "${HF_WORK:-/nonexistent}/qwen2/config.json" ]; then
	echo "the steps kernel by kernel: skipped (no ncu, or no HF_WORK with item 3's model)"
else
	# algorithms timed under ncu's serialised launches are not kept
	cp "$MODULA_CUDA_TUNE_FILE" "$out/cublaslt-ncu.tsv" 2>/dev/null
	# ncu_step SUFFIX BENCH-ARGS...: one profiled step into ncu-stepSUFFIX.csv,
	# its table into kernelsSUFFIX.txt and kernelsSUFFIX-order.txt
	ncu_step() {
		local sfx=$1
		shift
		MODULA_CUDA_TUNE_FILE=$out/cublaslt-ncu.tsv timeout -k 10 150 "$ncu" --clock-control none \
			--metrics gpu__time_duration.sum --csv --print-units base \
			"$engine" bench --model "$HF_WORK/qwen2" "$@" --device cuda --dtype bf16 --batch 8 \
			--seq 512 --rank 16 --alpha 32 --steps 1 --warmup 1 --no-graph \
			>"$out/ncu-step$sfx.csv" 2>"$out/ncu-step$sfx.err"
		echo "ncu ($*): exit $?"
		python3 tests/gpu/kernel_table.py "$out/ncu-step$sfx.csv" "$out/kernels$sfx-order.txt" \
			>"$out/kernels$sfx.txt" && head -30 "$out/kernels$sfx.txt"
	}
	say "one LoRA step kernel by kernel (ncu)"
	ncu_step "" --method lora
	# and modula-res's (item 4's), whose extra time over LoRA's is the
	# experts' path
	say "one modula-res step kernel by kernel (ncu)"
	ncu_step -res --method modula-res --experts 4 --expert-rank 8
fi

if [ -s "$MODULA_CUDA_TUNE_FILE" ]; then
	row 3 "product shapes timed on cuBLASLt" "$(wc -l <"$MODULA_CUDA_TUNE_FILE")" "$MODULA_CUDA_TUNE_FILE"
fi
say "figures (also in $results), ${SECONDS}s in all"
awk -F'\t' '{ printf "(%s) %-56s %-22s %s\n", $1, $2, $3, $4 }' "$results"
exit $failed
