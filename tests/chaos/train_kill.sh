#!/bin/sh
# tests/chaos/train_kill.sh: a sweep of real small training jobs
# (`modula-engine train`, a tiny random model, 200 steps, a checkpoint every
# 10) over 3 workers while kill -9 hits a random worker at random moments
# (restarted at once with the same name). Afterwards: every job succeeded,
# each output is recorded once, every loss point 1..STEPS is there exactly
# once, and a job's final adapter is bit-identical to an uninterrupted run
# of the same job by modula-engine alone. Prints how many faults it
# injected. One fault in three kills -9 modulad instead (CHAOS_DAEMON_KILLS=0
# leaves modulad alone).
. "$top_srcdir/tests/e2e/e2e_lib.sh"

ENGINE=$top_builddir/worker/modula-engine
NJOBS=4
STEPS=200
FAULTS=${CHAOS_FAULTS:-5}
"$PYTHON_TORCH" -c "
import json, random
random.seed(1)
with open('$tmp/train.jsonl', 'w') as f:
    for i in range(64):
        a, b = random.randint(0, 99), random.randint(0, 99)
        f.write(json.dumps({'prompt': f'{a}+{b}=', 'response': str(a + b)}) + '\n')
"
spec() {
	printf '{"model":"random","model_config":{"dim":32,"n_layers":2,"n_heads":2,"n_kv_heads":1,"ffn_dim":64,"max_seq":64},'
	printf '"tokenizer":"bytes","data":"%s","steps":%d,"batch":8,"seq_len":32,"checkpoint_every":10,"seed":%d,"out_dir":"run"}' \
		"$tmp/train.jsonl" "$STEPS" "$1"
}

start_daemon
wait_registry
for i in 1 2 3; do start_worker "w$i"; done
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 3
check "3 workers are up" $?
for s in $(seq 1 $NJOBS); do "$E2E_TOOL" submit "$db" train 1 "$(spec "$s")" || exit 1; done

# The faults: wait until a running job has reported a few steps (and is not
# at its end), then kill -9 the worker running it (or, with
# CHAOS_DAEMON_KILLS=1, modulad every third time); restart it at once.
faults=0 wkills=0 dkills=0 polls=0
while [ $faults -lt "$FAULTS" ] && [ $polls -lt 3000 ]; do
	polls=$((polls + 1))
	[ "$(sql "SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded', 'failed')" 2>/dev/null)" = 0 ] && break
	# attempts < 2: never cost a job its last of 3 attempts.
	w=$(sql "SELECT worker FROM jobs j WHERE state = 'running' AND attempts < 2 AND
		(SELECT max(step) FROM metrics m WHERE m.job_id = j.id AND key = 'loss') BETWEEN 3 AND $((STEPS - 5))
		ORDER BY random() LIMIT 1" 2>/dev/null)
	if [ -z "$w" ] || [ ! -f "$tmp/$w.pid" ]; then
		sleep 0.1
		continue
	fi
	sleep "$(awk "BEGIN { srand($$ + $faults); printf \"%.2f\", rand() * 0.3 }")"
	if [ "${CHAOS_DAEMON_KILLS:-1}" = 1 ] && [ $((faults % 3)) = 2 ]; then
		kill -9 "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
		start_daemon
		dkills=$((dkills + 1))
	else
		kill -9 "$(cat "$tmp/$w.pid")" 2>/dev/null
		wait "$(cat "$tmp/$w.pid")" 2>/dev/null
		start_worker "$w"
		wkills=$((wkills + 1))
	fi
	faults=$((faults + 1))
done
diag "injected $faults faults: $wkills kill -9 of a worker, $dkills kill -9 of modulad"
check "faults were injected mid-job ($faults)" $([ "$faults" -ge 1 ]; echo $?)

wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" $NJOBS 1500
check "all $NJOBS training jobs succeeded after $faults faults" $?
n=$(sql "SELECT count(*) FROM jobs")
check "no job lost or duplicated ($n rows)" $([ "$n" = $NJOBS ]; echo $?)
dup=$(sql "SELECT count(*) FROM (SELECT job_id, name FROM job_outputs GROUP BY job_id, name HAVING count(*) > 1)")
outs=$(sql "SELECT count(*) FROM job_outputs WHERE name = 'adapter_weights'")
check "each job's adapter recorded exactly once ($outs outputs, $dup duplicated)" \
	$([ "$outs" = $NJOBS ] && [ "$dup" = 0 ]; echo $?)
pts=$(sql "SELECT count(*) FROM metrics WHERE key = 'loss'")
distinct=$(sql "SELECT count(*) FROM (SELECT DISTINCT job_id, step FROM metrics WHERE key = 'loss')")
range=$(sql "SELECT count(*) FROM metrics WHERE key = 'loss' AND (step < 1 OR step > $STEPS)")
check "every loss point there once: $pts points, $distinct distinct, expected $((NJOBS * STEPS))" \
	$([ "$pts" = $((NJOBS * STEPS)) ] && [ "$distinct" = "$pts" ] && [ "$range" = 0 ]; echo $?)
diag "attempts per job: $(sql "SELECT group_concat(attempts, ' ') FROM jobs")"
[ "$pts" = $((NJOBS * STEPS)) ] || diag "missing loss points (job: steps): $(sql "
	WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $STEPS)
	SELECT group_concat(j.id || ':' || s.n, ' ') FROM jobs j, s
	WHERE NOT EXISTS (SELECT 1 FROM metrics m WHERE m.job_id = j.id AND m.key = 'loss' AND m.step = s.n)")"

# The reference: the job with the most attempts (job i has seed i) run once,
# uninterrupted, by the engine alone.
j=$(sql "SELECT id FROM jobs ORDER BY attempts DESC, id LIMIT 1")
mkdir -p "$tmp/ref"
spec "$j" >"$tmp/ref/job.json"
"$ENGINE" train "$tmp/ref/job.json" >"$tmp/ref/events" 2>&1
want=$(sha256sum "$tmp/ref/run/adapter/adapter_model.safetensors" | cut -d' ' -f1)
got=$(sql "SELECT sha256 FROM job_outputs WHERE job_id = $j AND name = 'adapter_weights'")
check "job $j's adapter ($(sql "SELECT attempts FROM jobs WHERE id = $j") attempts) is bit-identical to an uninterrupted run" \
	$([ -n "$want" ] && [ "$want" = "$got" ]; echo $?)
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
