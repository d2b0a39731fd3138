#!/bin/sh
# tests/cli/e2e.sh: the modula command against a real modulad and two real
# workers (their engine is tests/cli/fake_engine.py, which runs every stage
# kind a spec expands into): error handling and exit codes, submit, the
# shared universal expert, watch to the end, compare's numbers against the
# registry (sqlite3), resubmission that reuses everything and runs nothing,
# show / logs / ls / export / workers / gc, and a daemon that went away.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

MODULA="$top_builddir/cli/modula"
SPECS="$top_srcdir/tests/cli/specs"
out="$tmp/out"
err="$tmp/err"

# The daemon is not there yet: exit code 3 and a clear message.
"$MODULA" --api "http://127.0.0.1:$(free_port)" ls >"$out" 2>"$err"
st=$?
check "no daemon: exit code 3 ($st)" $([ $st = 3 ]; echo $?)
grep -q "cannot reach modulad" "$err"
check "no daemon: the message says the daemon cannot be reached" $?
"$MODULA" frobnicate >/dev/null 2>&1
check "an unknown command is a usage error (exit 2)" $([ $? = 2 ]; echo $?)

start_daemon
wait_registry
MODULA_API="http://127.0.0.1:$http_port"
export MODULA_API
unset MODULA_TOKEN MODULA_TOKEN_FILE
HOME="$tmp" "$MODULA" submit "$SPECS/small.json" >"$out" 2>"$err"
st=$?
check "submit without a token: exit code 4 ($st)" $([ $st = 4 ]; echo $?)
MODULA_TOKEN=$("$MODULAD" token create --data "$tmp/data" --role operator)
export MODULA_TOKEN

"$MODULA" submit "$SPECS/bad_many.json" >"$out" 2>"$err"
st=$?
check "a bad spec: exit code 1 ($st)" $([ $st = 1 ]; echo $?)
grep -q "methods\[0\].rank: expected an integer, got a string" "$err" &&
	grep -q "methods\[1\].top_k: expected 0 to 256, got -1" "$err" && grep -q "^  seeds: expected" "$err"
check "a bad spec: every error is shown with its path, as the API gives it" $?
[ "$(sql 'SELECT count(*) FROM experiments')" = 0 ]
check "a bad spec creates nothing" $?

for w in w1 w2; do start_worker "$w" --slots 2 --engine "$top_srcdir/tests/cli/fake_engine.py"; done
"$MODULA" submit "$SPECS/small.json" >"$out" 2>"$err"
st=$?
cat "$out" | sed 's/^/# /'
check "submit small.json (exit $st)" $st
# base: 1 run; lora, flan, res: 2 seeds each -> 7 runs. Jobs: data (corpus and
# the universal, math and code suites), pretrain, base eval, per seed: lora
# (joint, eval), universal (shared), 2+2 domain, 2 router, 2 eval.
grep -q "experiment 1 'small': 7 runs, 28 jobs (0 cached, 28 to run)" "$out"
check "7 runs and 28 jobs, none cached" $?
n=$(sql "SELECT count(*) FROM jobs WHERE kind = 'stage' AND json_extract(spec, '$.stage') = 'universal'")
check "flan and res share each seed's universal job (2 universal jobs for 4 runs: $n)" $([ "$n" = 2 ]; echo $?)
n=$(sql "SELECT count(DISTINCT content_key) FROM jobs")
check "every job has its own content key ($n of 28)" $([ "$n" = 28 ]; echo $?)

"$MODULA" watch 1 --interval 0.2 >"$out" 2>"$err"
st=$?
check "watch follows the experiment to its end (exit $st)" $st
grep -q "28 jobs: 28 succeeded" "$out"
check "watch's last view: 28 jobs succeeded" $?
[ "$tap_failed" -eq 0 ] || { cat "$out" "$err" | sed 's/^/# /'; show_logs; }

# compare: its numbers are the registry's.
"$MODULA" compare 1 >"$out" 2>"$err"
check "compare 1 (exit $?)" $?
sed 's/^/# /' "$out"
"$MODULA" --json compare 1 >"$tmp/cmp.json" 2>"$err"
py_ok=$(python3 - "$tmp/cmp.json" "$db" <<'EOF'
import json, math, sqlite3, sys
cmp = json.load(open(sys.argv[1]))
db = sqlite3.connect(sys.argv[2])
bad = 0
for g in cmp["groups"]:
    q = ",".join("?" * len(g["runs"]))
    for d in cmp["domains"] + ["universal"]:
        vals = [v for (v,) in db.execute("SELECT value FROM evaluations WHERE run_id IN (%s) AND domain = ? "
                                         "AND metric = 'acc'" % q, g["runs"] + [d])]
        cell = g["cells"][d if d != "universal" else "universal/acc"]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0
        if len(vals) != cell["n"] or abs(mean - cell["mean"]) > 1e-12 or abs(std - cell["std"]) > 1e-12:
            print("# %s %s: registry %r, compare %r" % (g["name"], d, (len(vals), mean, std), cell))
            bad += 1
print("agree" if bad == 0 and len(cmp["groups"]) == 4 and len(cmp["pairs"]) == 1 else "disagree")
EOF
)
echo "$py_ok" | grep '^#'
check "compare's per-domain means and stds equal the registry's evaluations" $([ "$(echo "$py_ok" | tail -n 1)" = agree ]; echo $?)
# The printed table: lora's math mean, as the registry computes it.
want=$(sql "SELECT printf('%.4f', avg(value)) FROM evaluations e JOIN runs r ON r.id = e.run_id
            WHERE r.method = 'lora' AND e.domain = 'math' AND e.metric = 'acc'")
grep "^lora " "$out" | grep -q " $want ± "
check "the printed lora row shows the registry's math mean ($want)" $?
grep -q "^modula-res - modula-flan: avg .* of 2 seeds" "$out"
check "compare prints Res - Flan with how many seeds agree" $?
grep "^modula-res " "$out" | grep -q " 4k "
check "the res row's cost counts its whole DAG, shared jobs included (10 jobs x 400 tokens: 4 data, pretrain, universal, 2 domain, router, eval)" $?

# Resubmitting the same spec reuses everything and runs nothing.
before=$(sql "SELECT sum(attempts) FROM jobs")
"$MODULA" submit "$SPECS/small.json" >"$out" 2>"$err"
check "resubmit (exit $?)" $?
grep -q "experiment 2 'small': 7 runs, 28 jobs (28 cached, 0 to run)" "$out"
check "resubmit: all 28 jobs are cached, 0 to run" $?
sleep 1
after=$(sql "SELECT sum(attempts) FROM jobs")
check "resubmit: no job ran again (attempts $before -> $after)" $([ "$before" = "$after" ]; echo $?)
"$MODULA" compare 1 | tail -n +2 | sed 's/ *0:0[0-9] *± *0:0[0-9]//; s/ *0:0[0-9]$//' >"$tmp/c1"
"$MODULA" compare 2 | tail -n +2 | sed 's/ *0:0[0-9] *± *0:0[0-9]//; s/ *0:0[0-9]$//' >"$tmp/c2"
cmp -s "$tmp/c1" "$tmp/c2"
check "compare of the resubmitted experiment shows the same figures" $?
"$MODULA" watch 2 >/dev/null 2>&1
check "watch of a fully cached experiment returns at once (exit 0)" $?

# Reading commands, --json, refusals.
"$MODULA" show 1 | grep -q "^7 *modula-res *modula-res *2 *4/4"
check "show 1: the last run's own 4 jobs are done (its universal job is flan's)" $?
"$MODULA" --json show run 2 | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(not d["evaluations"])'
check "show run --json carries the evaluations" $?
"$MODULA" logs 3 | grep -q "metric loss .* 4 points, last step 4: 0.5"
check "logs: the job's loss series" $?
"$MODULA" ls jobs --state succeeded --limit 5 | grep -q "(more: modula ls jobs --state succeeded --limit 5 --after 5)"
check "ls pages with --after" $?
"$MODULA" ls jobs --colour red >"$out" 2>"$err"
check "ls with an unknown option is a usage error" $([ $? = 2 ]; echo $?)
"$MODULA" ls runs --worker w1 >"$out" 2>"$err"
st=$?
grep -q "unknown query parameter 'worker'" "$err"
check "the API's refusal is shown as given, exit 1 ($st)" $([ $? = 0 ] && [ $st = 1 ]; echo $?)
"$MODULA" cancel 3 >"$out" 2>"$err"
st=$?
grep -q "(HTTP 409)" "$err"
check "cancel of a finished job: the API's 409, exit 1 ($st)" $([ $? = 0 ] && [ $st = 1 ]; echo $?)
"$MODULA" workers | grep -c "cpu" | grep -q 2
check "workers lists both workers" $?
"$MODULA" export r7 --out "$tmp/export" >"$out" 2>"$err"
check "export of a run's DAG (exit $?)" $?
n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$tmp/export/manifest.json")
check "export: 16 artifacts of res seed 2 (corpus 3, 3 suites 6, pretrain 2, universal, 2 domain, router 2; got $n)" $([ "$n" = 16 ]; echo $?)
f=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))[0]; print(m["file"], m["sha256"])' "$tmp/export/manifest.json")
set -- $f
[ "$(sha256sum "$tmp/export/$1" | cut -d' ' -f1)" = "$2" ]
check "export: files match their sha256" $?
"$MODULA" gc --min-age 3600 >/dev/null
check "gc (exit $?)" $?

kill -9 "$daemon_pid"
wait "$daemon_pid" 2>/dev/null
daemon_pid=""
"$MODULA" ls >"$out" 2>"$err"
st=$?
check "daemon gone: exit code 3 ($st)" $([ $st = 3 ]; echo $?)
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
