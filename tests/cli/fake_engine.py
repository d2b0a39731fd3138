#!/usr/bin/env python3
# tests/cli/fake_engine.py: a stand-in for `modula-engine KIND job.json`
# (run by modula-worker in the job's folder) for every stage kind a spec
# expands into (pretrain, universal, domain, router, joint, eval), so the
# CLI's end-to-end test runs whole DAGs without the real engine. It speaks
# the engine's JSON lines: start, progress (loss, tokens, flops), done with
# one output; an eval job reports per-domain "acc" (and general "ppl")
# derived from the sha256 of its job file, so figures are deterministic.
import hashlib, json, sys, time

kind, path = sys.argv[1], sys.argv[2]
text = open(path, "rb").read()
job = json.loads(text)
assert job.get("out_dir") == ".", "out_dir must be the job folder"
assert job.get("stage") == kind, "the stage names the kind"
digest = hashlib.sha256(text).hexdigest()
print(json.dumps({"event": "start", "total_steps": 4}), flush=True)
for step in range(1, 5):
    time.sleep(0.05)
    print(json.dumps({"event": "progress", "step": step, "total_steps": 4, "loss": 2.0 / step,
                      "tokens": 100 * step, "flops": 600 * step}), flush=True)
with open("out.bin", "w") as f:
    f.write(kind + " " + digest + "\n")
sha = hashlib.sha256(open("out.bin", "rb").read()).hexdigest()
evals = []
if kind == "eval":
    for d in ["universal"] + job["domains"]:
        h = hashlib.sha256((digest + d).encode()).hexdigest()
        evals.append({"domain": d, "metric": "acc", "value": int(h[:4], 16) / 65536.0})
    evals.append({"domain": "general", "metric": "ppl", "value": 10 + int(digest[:2], 16) / 16.0})
print(json.dumps({"event": "done", "outputs": [{"name": kind, "path": "out.bin", "sha256": sha}],
                  "evaluations": evals}), flush=True)
