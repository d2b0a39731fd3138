# env.sh: sourced (bash) before running anything in this GPU bundle.
#
# Puts the bundle's lib/ first on LD_LIBRARY_PATH, then the folders holding
# this machine's cuBLAS (libcublas.so.13 and libcublasLt.so.13): the CUDA
# toolkit's lib64, then the pip `nvidia` wheels of the python3 on PATH
# (PyTorch's), and the driver's folder when libcuda.so.1 is not on the
# loader's path. Prints what it found. Installs nothing, changes nothing else.
gpu_bundle_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gpu_bundle_cublas=""
for d in ${CUDA_HOME:+"$CUDA_HOME/lib64"} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
	if [ -e "$d/libcublas.so.13" ] && [ -e "$d/libcublasLt.so.13" ]; then
		gpu_bundle_cublas="$gpu_bundle_cublas:$d"
		break
	fi
done
if command -v python3 >/dev/null 2>&1; then
	for d in $(python3 - <<'PY' 2>/dev/null
import glob, importlib, os
seen = []
for mod in ("nvidia.cublas", "nvidia.cu13", "nvidia"):
    try:
        m = importlib.import_module(mod)
    except Exception:
        continue
    for p in getattr(m, "__path__", []):
        for f in sorted(glob.glob(os.path.join(p, "**", "libcublasLt.so.13"), recursive=True)):
            d = os.path.dirname(f)
            if d not in seen and os.path.exists(os.path.join(d, "libcublas.so.13")):
                seen.append(d)
print("\n".join(seen))
PY
	); do
		gpu_bundle_cublas="$gpu_bundle_cublas:$d"
	done
fi
# The driver's libcuda.so.1 (cudart, linked in, opens it): normally on the
# loader's path; some container images keep it in /usr/local/nvidia.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
	for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
		[ -e "$d/libcuda.so.1" ] && gpu_bundle_cublas="$gpu_bundle_cublas:$d"
	done
fi
export LD_LIBRARY_PATH="$gpu_bundle_dir/lib$gpu_bundle_cublas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "$gpu_bundle_cublas" ]; then
	echo "env.sh: no libcublas.so.13 found (CUDA toolkit lib64 or pip nvidia wheels): the CUDA backend will not start" >&2
else
	echo "env.sh: cuBLAS (and the driver) from ${gpu_bundle_cublas#:}" >&2
fi
