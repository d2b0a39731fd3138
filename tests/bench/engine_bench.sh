#!/bin/sh
# engine_bench.sh: LoRA training tokens/s, engine vs PyTorch, side by side.
#
#   tests/bench/engine_bench.sh [BUILD_DIR] [THREADS]    (from the source tree)
#
# For the embedded tiny configuration and a ~50M-parameter one: the same
# model, batch, sequence length and thread count in both (OMP_NUM_THREADS
# for the engine, torch.set_num_threads for PyTorch; OMP_WAIT_POLICY=passive
# for both, which matters on cores shared with other work). Prints each
# side's figures and the ratios, the engine's GFLOP/s against the OpenBLAS
# sgemm peak measured in the same run, and peak memory (ru_maxrss).
# A benchmark, not a test: nothing is asserted.
set -e
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../_build/engine}
threads=${2:-2}
python=${PYTHON_TORCH:-/usr/bin/python3}
export OMP_WAIT_POLICY=passive

run() { # run CONFIG STEPS
	e=$(OMP_NUM_THREADS=$threads "$build/tests/bench/engine_bench" "$1" "$2")
	p=$("$python" "$here/engine_bench.py" "$1" "$2" "$threads")
	"$python" - "$e" "$p" <<'PY'
import json, sys
e, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"config {e['config']}: {e['params']/1e6:.1f}M base params, batch {e['batch']} x seq {e['seq']}, "
      f"{e['threads']} threads, LoRA r8 on q,k,v,o,gate,up,down, median of {e['steps']} timed steps")
print(f"  {'':22s}{'engine':>12s}{'pytorch':>12s}{'ratio':>9s}")
print(f"  {'tokens/s':22s}{e['tokens_per_s']:12.1f}{p['tokens_per_s']:12.1f}"
      f"{e['tokens_per_s']/p['tokens_per_s']:8.2f}x")
print(f"  {'peak RSS (MB)':22s}{e['maxrss_mb']:12.1f}{p['maxrss_mb']:12.1f}"
      f"{e['maxrss_mb']/p['maxrss_mb']:8.2f}x")
print(f"  {'loss (own random init)':22s}{e['loss']:12.4f}{p['loss']:12.4f}")
print(f"  engine: {e['gflops']:.1f} GFLOP/s of {e['step_gflop']:.1f} GFLOP/step = "
      f"{100*e['gflops']/e['sgemm_peak_gflops']:.0f}% of OpenBLAS sgemm peak "
      f"({e['sgemm_peak_gflops']:.1f} GFLOP/s, 1024^3, 1 thread per block x {e['threads']})")
PY
}

run tiny 20
run 50m 5
