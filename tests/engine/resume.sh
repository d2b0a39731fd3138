#!/bin/sh
# engine/resume.sh: `modula-engine train` resumes exactly. For LoRA (with
# dropout, gradient accumulation) and full-parameter training on the
# embedded tiny model: a run stopped at step k ("stop_at") and run again in
# the same out_dir ends with output bytes identical to an uninterrupted
# run; so does a run killed with SIGKILL at an arbitrary moment after its
# first checkpoint, and one stopped by SIGTERM (which checkpoints first).
# Also: the event lines, and another job's out_dir refused.
. "$top_srcdir/tests/lib.sh"
engine="$top_builddir/worker/modula-engine"
# Spinning OpenMP threads crawl on CI cores shared with other tests.
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

i=0
while [ $i -lt 96 ]; do
	echo "{\"prompt\":\"$i+$((i % 7))=\",\"response\":\"$((i + i % 7))\"}"
	i=$((i + 1))
done >"$tmp/data.jsonl"

job() { # job FILE MODE OUT [EXTRA]
	cat >"$1" <<JOB
{"model":"random","model_config":{"dim":64,"n_layers":2,"n_heads":4,"n_kv_heads":2,"ffn_dim":96},
 "data":"data.jsonl","mode":"$2","lora":{"rank":4,"alpha":8,"dropout":0.1,"targets":["q","v","down"]},
 "steps":${steps:-12},"batch":4,"seq_len":24,"accum":2,"lr":0.005,"warmup":3,"seed":5,
 "checkpoint_every":4,"out_dir":"$3"$4}
JOB
}

for mode in lora full; do
	[ $mode = lora ] && out=adapter/adapter_model.safetensors || out=model/model.safetensors
	job "$tmp/a.json" $mode a-$mode
	"$engine" train "$tmp/a.json" >"$tmp/a.log" 2>"$tmp/a.err"
	check "$mode: uninterrupted run succeeds" $?
	grep -q '^{"event":"start","total_steps":12,' "$tmp/a.log" &&
	[ "$(grep -c '^{"event":"progress","step":[0-9]*,"total_steps":12,"loss":' "$tmp/a.log")" -eq 12 ] &&
	[ "$(grep -c '^{"event":"checkpoint","step":[0-9]*,"path":"checkpoints/step-[0-9]*.safetensors","sha256":"[0-9a-f]\{64\}"}$' "$tmp/a.log")" -eq 3 ] &&
	grep -q '^{"event":"done","outputs":\[{"name":' "$tmp/a.log"
	check "$mode: start, 12 progress, 3 checkpoint and done events" $?

	job "$tmp/b.json" $mode b-$mode ',"stop_at":6'
	"$engine" train "$tmp/b.json" >"$tmp/b1.log" 2>&1 && [ ! -e "$tmp/b-$mode/$out" ] &&
		[ -e "$tmp/b-$mode/checkpoints/step-00000004.safetensors" ]
	check "$mode: run stopped at step 6 left checkpoints, no output" $?
	job "$tmp/b.json" $mode b-$mode      # the same job (stop_at is not part of it)
	"$engine" train "$tmp/b.json" >"$tmp/b2.log" 2>&1 &&
		grep -q '"step":4,.*"resumed":true' "$tmp/b2.log"
	check "$mode: rerun resumes from step 4" $?
	cmp -s "$tmp/a-$mode/$out" "$tmp/b-$mode/$out"
	check "$mode: resumed run is bit-identical to the uninterrupted one" $?

	job "$tmp/c.json" $mode c-$mode
	"$engine" train "$tmp/c.json" >"$tmp/c1.log" 2>&1 &
	pid=$!
	while ! grep -q '"event":"checkpoint"' "$tmp/c1.log" 2>/dev/null && kill -0 $pid 2>/dev/null; do
		sleep 0.05
	done
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	"$engine" train "$tmp/c.json" >"$tmp/c2.log" 2>&1 && cmp -s "$tmp/a-$mode/$out" "$tmp/c-$mode/$out"
	check "$mode: run killed with SIGKILL and resumed is bit-identical" $?
done

# SIGTERM: checkpoint the current step, a retryable error, then resume
# (a longer job, so the signal lands while it runs).
steps=300
job "$tmp/r.json" lora r-lora
"$engine" train "$tmp/r.json" >/dev/null 2>&1
job "$tmp/e.json" lora e-lora
"$engine" train "$tmp/e.json" >"$tmp/e1.log" 2>&1 &
pid=$!
while ! grep -q '"event":"progress","step":2,' "$tmp/e1.log" 2>/dev/null && kill -0 $pid 2>/dev/null; do
	sleep 0.05
done
kill -TERM $pid 2>/dev/null
wait $pid
[ $? -eq 1 ] && grep -q '^{"event":"error","message":"stopped by a signal at step [0-9]*.*","retryable":true}$' "$tmp/e1.log"
check "SIGTERM: exit 1 after a checkpoint, retryable error event" $?
"$engine" train "$tmp/e.json" >"$tmp/e2.log" 2>&1 &&
	cmp -s "$tmp/r-lora/adapter/adapter_model.safetensors" "$tmp/e-lora/adapter/adapter_model.safetensors"
check "SIGTERM: resumed run is bit-identical" $?
steps=12

job "$tmp/d.json" lora b-lora ',"lr":0.001'
"$engine" train "$tmp/d.json" >"$tmp/d.log" 2>"$tmp/d.err"
[ $? -eq 1 ] && grep -q '^{"event":"error","message":".*another job.*","retryable":false}$' "$tmp/d.log" &&
	grep -q 'another job' "$tmp/d.err"
check "another job's out_dir is refused with exit 1 and an error event" $?
done_testing
