#!/bin/sh
# tests/main/quickstart.sh: the main job's path at toy size, end to end with
# the real daemon, two real workers and the real engine (no fake engine):
# tests/main/tiny.json (base, lora, molora, modula-flan, modula-res over two
# suite domains, the embedded model pretrained by the engine for a few
# steps) is submitted, watched to completion, compared; compare's figures
# are checked against the registry (model FLOPs included); parents' outputs
# reach their children as artifacts; the registry lists the datasets, base
# model, experts and routers made; resubmitting runs nothing and keeps the
# figures.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

MODULA="$top_builddir/cli/modula"
SPEC="$top_srcdir/tests/main/tiny.json"
out="$tmp/out"
err="$tmp/err"
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMP_NUM_THREADS OMP_WAIT_POLICY

start_daemon
wait_registry
MODULA_API="http://127.0.0.1:$http_port"
MODULA_TOKEN=$("$MODULAD" token create --data "$tmp/data" --role operator)
export MODULA_API MODULA_TOKEN
for w in w1 w2; do start_worker "$w"; done

"$MODULA" submit "$SPEC" >"$out" 2>"$err"
check "submit tiny.json (exit $?)" $?
sed 's/^/# /' "$out"
# 5 runs; jobs: corpus + 3 suite domains (data), pretrain (train), base eval,
# lora and molora (joint stage + eval each), universal (shared by flan and
# res), 2+2 domain, 2 router, 2 eval.
grep -q "experiment 1 'tiny': 5 runs, 19 jobs (0 cached, 19 to run)" "$out"
check "5 runs and 19 jobs, none cached" $?
n=$(sql "SELECT count(*) FROM jobs WHERE kind = 'stage' AND json_extract(spec, '$.stage') = 'universal'")
check "flan and res share the universal stage ($n job)" $([ "$n" = 1 ]; echo $?)
n=$(sql "SELECT count(*) FROM jobs WHERE kind NOT IN ('data', 'train', 'stage', 'eval')")
check "every job is an engine command: data, train, stage or eval ($n others)" $([ "$n" = 0 ]; echo $?)

"$MODULA" watch 1 --interval 0.5 >"$out" 2>"$err"
st=$?
check "watch follows the experiment to its end (exit $st)" $st
grep -q "19 jobs: 19 succeeded" "$out"
check "all 19 jobs succeeded with the real engine" $?
[ "$tap_failed" -eq 0 ] || { cat "$out" "$err" | sed 's/^/# /'; sql "SELECT id, kind, error FROM jobs" | sed 's/^/# /'; show_logs; }

# A child's inputs are its parents' outputs: the router stage of modula-res
# got the universal expert the universal job uploaded.
n=$(find "$tmp/w1" "$tmp/w2" -path '*/in/experts/universal.safetensors' | head -n 1)
u=$(sql "SELECT count(*) FROM job_outputs o JOIN jobs j ON j.id = o.job_id WHERE o.name = 'universal' AND
	 json_extract(j.spec, '$.stage') = 'universal' AND o.sha256 = '$([ -n "$n" ] && sha256sum <"$n" | cut -d' ' -f1)'")
[ -n "$n" ] && [ "$u" -ge 1 ]
check "a stage's input file is its parent's output, by sha256" $?
n=$(sql "SELECT count(*) FROM evaluations WHERE metric = 'acc'")
check "five evaluations of three domains each ($n acc figures)" $([ "$n" = 15 ]; echo $?)
n=$(sql "SELECT count(*) FROM evaluations WHERE domain = 'general' AND metric = 'ppl' AND value > 1")
check "held-out perplexity for each run ($n)" $([ "$n" = 5 ]; echo $?)
# Router means (router.L<layer>.<module>.<expert>): the routed methods have
# them, and each domain's weights over the experts of one layer sum to 1.
n=$(sql "SELECT count(DISTINCT r.method) FROM evaluations e JOIN runs r ON r.id = e.run_id
	WHERE e.metric LIKE 'router.%' AND r.method IN ('molora', 'modula-flan', 'modula-res')")
check "router means recorded for molora, modula-flan and modula-res ($n methods)" $([ "$n" = 3 ]; echo $?)
bad=$("$PYTHON_TORCH" - "$db" <<'PY'
import collections, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
sums = collections.defaultdict(float)
for job, dom, metric, v in db.execute("SELECT job_id, domain, metric, value FROM evaluations WHERE metric LIKE 'router.%'"):
    sums[(job, dom, metric.rsplit('.', 1)[0])] += v
print(sum(1 for s in sums.values() if abs(s - 1) > 1e-3) if sums else -1)
PY
)
check "each domain's router weights sum to 1 per layer ($bad groups off)" $([ "$bad" = 0 ]; echo $?)

"$MODULA" compare 1 >"$out" 2>"$err"
check "compare 1 (exit $?)" $?
sed 's/^/# /' "$out"
for m in base lora molora modula-flan modula-res; do
	grep -q "^$m " "$out" || { echo "# no row for $m"; false; } || break
done
check "compare has a row per method" $?
grep -q "^modula-res - modula-flan: avg" "$out"
check "compare pairs modula-res with modula-flan" $?
grep -q "router\." "$out"
check "compare leaves the router means out of the general-capability columns" $([ $? = 1 ]; echo $?)
"$MODULA" --json compare 1 >"$tmp/cmp.json" 2>"$err"
py_ok=$("$PYTHON_TORCH" - "$tmp/cmp.json" "$db" <<'PY'
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
        if not vals or abs(cell["mean"] - sum(vals) / len(vals)) > 1e-9:
            bad += 1
print("ok" if bad == 0 and len(cmp["groups"]) == 5 else "bad %d" % bad)
PY
)
check "compare's figures are the registry's ($py_ok)" $([ "$py_ok" = ok ]; echo $?)

# Training cost: every trained row has model FLOPs, the base row's are the
# pretraining's (its DAG's only trained job), the others add their stages'.
py_ok=$("$PYTHON_TORCH" - "$tmp/cmp.json" "$db" <<'PY'
import json, sqlite3, sys
cmp = json.load(open(sys.argv[1]))
db = sqlite3.connect(sys.argv[2])
pre = db.execute("SELECT m.value FROM metrics m JOIN jobs j ON j.id = m.job_id WHERE j.kind = 'train' "
                 "AND m.key = 'flops' ORDER BY m.step DESC LIMIT 1").fetchone()
flops = {g["label"]: g["cells"]["flops"]["mean"] for g in cmp["groups"]}
bad = [l for l, f in flops.items() if not f > 0 or (l != "base" and not f > flops["base"])]
print("ok" if pre and pre[0] > 0 and flops["base"] == pre[0] and not bad else "bad %s %s" % (pre, flops))
PY
)
check "compare: FLOPs for every row, the base row's = the pretraining's ($py_ok)" $([ "$py_ok" = ok ]; echo $?)

# Registry rows: the suite and corpus files are datasets (sha256, domain,
# split, record count), the pretrained model a base model, the stages'
# experts and routers rows that match the bundles' manifests.
py_ok=$("$PYTHON_TORCH" - "$db" "$tmp/data/artifacts" <<'PY'
import json, os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
art = lambda sha: os.path.join(sys.argv[2], sha[:2], sha)
bad = []
outs = db.execute("SELECT j.id, o.name, o.sha256, json_extract(j.spec, '$.suite') IS NOT NULL FROM jobs j "
                  "JOIN job_outputs o ON o.job_id = j.id WHERE j.kind = 'data' AND j.cached_from IS NULL").fetchall()
for job, out, sha, suite in outs:
    row = db.execute("SELECT name, domain, split, rows FROM datasets WHERE artifact = ?", (sha,)).fetchone()
    lines = sum(1 for _ in open(art(sha))) if out.endswith(("train", "test", "records")) else None
    if not row:
        bad.append("no dataset for %s" % out)
    elif suite and (row[1], row[2]) != tuple(out.rsplit(".", 1)) or (lines is not None and row[3] != lines):
        bad.append("dataset %s: %s (%s lines)" % (out, row, lines))
n = db.execute("SELECT count(*) FROM datasets WHERE name LIKE 'suite-%-s1-l1-64-8'").fetchone()[0]
if n != 6 or len(outs) != 9:
    bad.append("%d suite datasets, %d data outputs" % (n, len(outs)))
model = db.execute("SELECT b.id FROM base_models b JOIN job_outputs o ON o.sha256 = b.artifact JOIN jobs j "
                   "ON j.id = o.job_id WHERE b.name = 'embedded-s1-6' AND j.kind = 'train' "
                   "AND o.name = 'model_weights'").fetchone()
if not model:
    bad.append("no base model")
bundles = db.execute("SELECT json_extract(j.spec, '$.method'), o.sha256 FROM jobs j JOIN job_outputs o "
                     "ON o.job_id = j.id WHERE j.kind = 'stage' AND o.name = 'bundle'").fetchall()
for method, sha in bundles:
    m = json.load(open(art(sha)))
    exps = m["experts"] + ([m["universal"]] if m["universal"] else [])
    for e in exps if method != "molora" else []:
        uni = e["name"] == "universal"
        row = db.execute("SELECT role, domain, rank, base_model FROM experts WHERE artifact = ?", (e["sha256"],)).fetchone()
        if row != ("universal" if uni else "domain", None if uni else e["name"], e["rank"], model and model[0]):
            bad.append("%s expert %s: %s" % (method, e["name"], row))
    if m["router"]:
        row = db.execute("SELECT kind, base_model FROM routers WHERE artifact = ?", (m["router"]["sha256"],)).fetchone()
        if row != (method, model and model[0]):
            bad.append("%s router: %s" % (method, row))
counts = [db.execute("SELECT count(*) FROM %s" % t).fetchone()[0] for t in ("experts", "routers")]
if len(bundles) != 4 or counts != [6, 3]:
    bad.append("%d bundles, experts and routers %s" % (len(bundles), counts))
print("ok" if not bad else "; ".join(bad[:4]))
PY
)
check "registry rows: datasets, base model, experts and routers match the outputs and bundles ($py_ok)" $([ "$py_ok" = ok ]; echo $?)
"$MODULA" experts >"$out" 2>"$err" && grep -q "modula-res/math" "$out" && "$MODULA" routers >"$out" 2>&1 &&
	grep -q "modula-flan/math+logic" "$out" && "$MODULA" models >"$out" 2>&1 && grep -q "embedded-s1-6" "$out" &&
	"$MODULA" datasets >"$out" 2>&1 && grep -q "fortunes-s1-b64" "$out"
check "modula experts, routers, models and datasets list them" $?

# Resubmitting runs nothing, and the new experiment has the same figures.
"$MODULA" submit "$SPEC" >"$out" 2>"$err"
grep -q "experiment 2 'tiny': 5 runs, 19 jobs (19 cached, 0 to run)" "$out"
check "resubmitting: every job is cached, nothing runs" $?
"$MODULA" compare 1 | tail -n +2 >"$tmp/c1"
"$MODULA" compare 2 | tail -n +2 >"$tmp/c2"
sed 's/  *[0-9]*:[0-9][0-9]$//' "$tmp/c1" >"$tmp/c1s"
sed 's/  *[0-9]*:[0-9][0-9]$//' "$tmp/c2" >"$tmp/c2s"
cmp -s "$tmp/c1s" "$tmp/c2s"
check "the cached experiment compares the same" $?
n=$(sql "SELECT count(*) FROM jobs WHERE state = 'succeeded' AND cached_from IS NULL")
check "still 19 executed jobs after the resubmission ($n)" $([ "$n" = 19 ]; echo $?)
n=$(sql "SELECT (SELECT count(*) FROM experts) || ' ' || (SELECT count(*) FROM routers) || ' ' || (SELECT count(*) FROM datasets)")
check "cached jobs add no registry rows ($n)" $([ "$n" = "6 3 9" ]; echo $?)

done_testing
