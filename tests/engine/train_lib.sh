# engine/train_lib.sh: what the device-path training tests share (sourced by
# device_train.sh and emu_train.sh, after tests/lib.sh, in their temporary
# folder).
#
#   train_data                 writes data.jsonl: 64 records "i*3=" -> "3i"
#   train_job FILE OUT [EXTRA] writes a LoRA job on all seven projections
#                              (gradient accumulation, warmup, clipping,
#                              checkpoints every 2 steps) over a random model
#                              of $TRAIN_MODEL ("model_config"), $TRAIN_STEPS
#                              steps, output in OUT, EXTRA appended
#   cmp_adapters A B           prints max |a - b| / max |a| over the tensors
#   rel_ok REL                 prints 0 when REL is a number <= 1e-4, else 1
#                              (also when the comparison printed nothing)

train_data() {
	i=0
	while [ $i -lt 64 ]; do
		echo "{\"prompt\":\"$i*3=\",\"response\":\"$((i * 3))\"}"
		i=$((i + 1))
	done >data.jsonl
}

train_job() {
	cat >"$1" <<JOB
{"model":"random","model_config":$TRAIN_MODEL,
 "data":"data.jsonl","mode":"lora","lora":{"rank":4,"alpha":8,"targets":["q","k","v","o","gate","up","down"]},
 "steps":$TRAIN_STEPS,"batch":4,"seq_len":24,"accum":2,"lr":0.01,"warmup":2,"clip":0.5,"seed":7,
 "checkpoint_every":2,"out_dir":"$2"$3}
JOB
}

cmp_adapters() {
	"${PYTHON_TORCH:-/usr/bin/python3}" - "$1" "$2" <<'PY'
import os, sys
sys.path.insert(0, os.environ["top_srcdir"] + "/tests/ref")
import hfref
a, b = hfref.st_read(sys.argv[1]), hfref.st_read(sys.argv[2])
assert sorted(a) == sorted(b), "different tensors"
d = max((a[k] - b[k]).abs().max().item() for k in a)
s = max(a[k].abs().max().item() for k in a)
print(f"{d / s:.3e}")
PY
}

rel_ok() {
	echo "$1" | awk '{ exit !($1 ~ /^[0-9.e+-]+$/ && $1 + 0 <= 1e-4) }'
	echo $?
}
