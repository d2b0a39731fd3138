#!/bin/sh
# tests/chaos/corrupt_ckpt.sh: corrupted checkpoints at resume time. A
# `modula-engine train` job stopped at step 20 (a checkpoint every 5) has
# its newest checkpoint's bytes flipped and the one before truncated; run
# again, it skips both, resumes from step 10 and ends bit-identical to an
# uninterrupted run. With every checkpoint corrupted it starts over from
# step 0 and still ends identical. (worker/ckpt.c records the sha256 of
# the tensors' bytes in each checkpoint and passes over one that differs.)
. "$top_srcdir/tests/lib.sh"
engine="$top_builddir/worker/modula-engine"
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-chaos.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

i=0
while [ $i -lt 64 ]; do
	echo "{\"prompt\":\"$i*3=\",\"response\":\"$((i * 3))\"}"
	i=$((i + 1))
done >"$tmp/data.jsonl"
job() { # job FILE OUT [EXTRA]
	printf '{"model":"random","model_config":{"dim":32,"n_layers":2,"n_heads":2,"n_kv_heads":1,"ffn_dim":64},
	 "data":"data.jsonl","steps":30,"batch":4,"seq_len":24,"seed":9,"checkpoint_every":5,"out_dir":"%s"%s}' "$2" "$3" >"$1"
}
job "$tmp/ref.json" ref
"$engine" train "$tmp/ref.json" >"$tmp/ref.log" 2>&1
want=$(sha256sum "$tmp/ref/adapter/adapter_model.safetensors" | cut -d' ' -f1)
check "the uninterrupted reference run" $([ -n "$want" ]; echo $?)

# flip FILE: overwrite 16 bytes in the middle (the data, past the header).
flip() { printf 'corrupted bytes!' | dd of="$1" bs=1 seek=$(($(stat -c %s "$1") / 2)) conv=notrunc 2>/dev/null; }
ck=checkpoints/step-000000
faults=0
job "$tmp/a.json" a ',"stop_at":20'
"$engine" train "$tmp/a.json" >"$tmp/a1.log" 2>&1
flip "$tmp/a/${ck}20.safetensors"
truncate -s 100 "$tmp/a/${ck}15.safetensors"
faults=$((faults + 2))
job "$tmp/a.json" a
"$engine" train "$tmp/a.json" >"$tmp/a2.log" 2>&1
st=$?
from=$(sed -n 's/.*"event":"start".*"step":\([0-9]*\).*/\1/p' "$tmp/a2.log")
check "with step 20 flipped and 15 truncated it resumes from step 10 (exit $st, from step $from)" \
	$([ $st = 0 ] && [ "$from" = 10 ]; echo $?)
got=$(sha256sum "$tmp/a/adapter/adapter_model.safetensors" | cut -d' ' -f1)
check "and ends bit-identical to the uninterrupted run" $([ "$got" = "$want" ]; echo $?)
grep -i 'checkpoint' "$tmp/a2.log" | grep -vi '"event"' | head -n 3 | sed 's/^/# /'

job "$tmp/b.json" b ',"stop_at":10'
"$engine" train "$tmp/b.json" >"$tmp/b1.log" 2>&1
for f in "$tmp"/b/checkpoints/*.safetensors; do flip "$f"; faults=$((faults + 1)); done
job "$tmp/b.json" b
"$engine" train "$tmp/b.json" >"$tmp/b2.log" 2>&1
st=$?
from=$(sed -n 's/.*"event":"start".*"step":\([0-9]*\).*/\1/p' "$tmp/b2.log")
got=$(sha256sum "$tmp/b/adapter/adapter_model.safetensors" 2>/dev/null | cut -d' ' -f1)
check "with every checkpoint corrupted it starts over (from step $from) and ends identical" \
	$([ $st = 0 ] && [ "$from" = 0 ] && [ "$got" = "$want" ]; echo $?)
diag "injected $faults checkpoint corruptions"
done_testing
