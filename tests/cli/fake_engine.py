#!/usr/bin/env python3
# tests/cli/fake_engine.py: a stand-in for `modula-engine KIND job.json`
# (run by modula-worker in the job's folder) for every job kind a spec
# expands into (data, train, stage, eval; docs/specs.md "Stage jobs"), so
# the CLI's end-to-end test runs whole DAGs without the real engine. It
# speaks the engine's JSON lines: start, progress (loss, tokens, flops),
# done with the outputs the real command names (so children's inputs
# resolve); an eval job reports per-domain "acc" (and general "ppl")
# derived from the sha256 of its job file, so figures are deterministic.
import hashlib, json, sys, time

kind, path = sys.argv[1], sys.argv[2]
text = open(path, "rb").read()
job = json.loads(text)
assert "inputs" not in job, "the worker consumes inputs"
if kind in ("train", "stage"):
    assert job.get("out_dir") == ".", "out_dir must be the job folder"
digest = hashlib.sha256(text).hexdigest()
print(json.dumps({"event": "start", "total_steps": 4}), flush=True)
for step in range(1, 5):
    time.sleep(0.05)
    print(json.dumps({"event": "progress", "step": step, "total_steps": 4, "loss": 2.0 / step,
                      "tokens": 100 * step, "flops": 600 * step}), flush=True)
def names():
    if kind == "data":
        if "corpus" in job:
            return ["text", "holdout", "records"]
        return [d + "." + sp for d in job["suite"]["domains"] for sp in ("train", "test")]
    if kind == "train":
        return ["model_config", "model_weights"]
    if kind == "eval":
        return []
    st, method = job["stage"], job["method"]
    if st == "universal":
        return ["universal"]
    if st == "domain":
        return [d["name"] for d in job["domains"]]
    if st == "router":
        return ["router", "bundle"]
    if method == "lora":
        return ["universal", "adapter_config", "adapter_weights", "bundle"]
    return ["e%d" % (i + 1) for i in range(job["n_experts"])] + ["router", "bundle"]
outputs = []
for name in names():
    path = "out-" + name + ".bin"
    with open(path, "w") as f:
        f.write(name + " " + digest + "\n")
    outputs.append({"name": name, "path": path, "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()})
evals = []
if kind == "eval":
    for d in job["domains"]:
        h = hashlib.sha256((digest + d["name"]).encode()).hexdigest()
        evals.append({"domain": d["name"], "metric": "acc", "value": int(h[:4], 16) / 65536.0})
    evals.append({"domain": "general", "metric": "ppl", "value": 10 + int(digest[:2], 16) / 16.0})
print(json.dumps({"event": "done", "outputs": outputs, "evaluations": evals}), flush=True)
