#!/usr/bin/env python3
"""suite-check.py: every answer of the generated suite, recomputed here.

Runs `modula-engine suite` at each level and checks each record against an
independent evaluation: Python itself evaluates the math expressions, runs
the code programs and the logic expressions; universal instructions and unit
conversions are reimplemented here (units through a different table: factors
to one base unit per dimension). Also checks JSONL validity, the frame and
the byte bound, disjoint splits (within a run and across seeds), the
manifest, and that the same seed gives the same bytes through the command.
Prints TAP.
"""
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ENGINE = os.path.join(os.environ.get("top_builddir", "."), "worker", "modula-engine")
DOMAINS = ["universal", "math", "code", "logic", "units"]
MAX_BYTES = 56
sys.path.insert(0, os.path.join(os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), "..")), "tests", "ref"))
from tap import done, ok  # noqa: E402


def diag(msg):
    print("# " + msg)


def universal(task):
    m = re.fullmatch(r"(copy|reverse|upper|lower|sort) ([a-zA-Z]+)", task)
    if m:
        op, w = m.groups()
        return {"copy": w, "reverse": w[::-1], "upper": w.upper(), "lower": w.lower(),
                "sort": "".join(sorted(w))}[op]
    m = re.fullmatch(r"count ([a-z]) in ([a-z]+)", task)
    if m:
        return str(m.group(2).count(m.group(1)))
    m = re.fullmatch(r"(first|last) letter of ([a-z]+)", task)
    if m:
        return m.group(2)[0 if m.group(1) == "first" else -1]
    m = re.fullmatch(r"length of ([a-z]+)", task)
    if m:
        return str(len(m.group(1)))
    m = re.fullmatch(r"repeat ([a-z]+) ([0-9])", task)
    if m:
        return " ".join([m.group(1)] * int(m.group(2)))
    raise ValueError("unknown universal task")


def math(task):
    if not re.fullmatch(r"[0-9+*()-]+", task):
        raise ValueError("not an arithmetic expression")
    return str(eval(task, {"__builtins__": {}}))


def code(task):
    if not re.fullmatch(r"[a-z0-9=;+*()\[\]:'.>\- ]+", task) or "__" in task:
        raise ValueError("unexpected characters in a program")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(task, {"__builtins__": {"print": print, "len": len}})
    text = out.getvalue()
    if not text.endswith("\n") or text.count("\n") != 1:
        raise ValueError("the program does not print one line")
    return text[:-1]


def logic(task):
    if not re.fullmatch(r"(?:[TF()]|and|or|not| )+", task):
        raise ValueError("not a boolean expression")
    value = eval(task.replace("T", "True").replace("F", "False"), {"__builtins__": {}})
    return "T" if value else "F"


# Each unit as a multiple of its dimension's base unit.
UNITS = {
    "km": ("len", 1000000), "m": ("len", 1000), "cm": ("len", 10), "mm": ("len", 1),
    "kg": ("mass", 1000000), "g": ("mass", 1000), "mg": ("mass", 1),
    "wk": ("time", 604800), "d": ("time", 86400), "h": ("time", 3600), "min": ("time", 60), "s": ("time", 1),
    "yr": ("months", 12), "mo": ("months", 1),
    "yd": ("imperial", 36), "ft": ("imperial", 12), "inch": ("imperial", 1),
    "lb": ("weight", 16), "oz": ("weight", 1),
    "gal": ("volume", 8), "qt": ("volume", 2), "pt": ("volume", 1),
    "L": ("litres", 1000), "mL": ("litres", 1),
}


def units(task):
    m = re.fullmatch(r"([0-9]+) ([a-zA-Z]+)(?: ([0-9]+) ([a-zA-Z]+))? in ([a-zA-Z]+)", task)
    if not m:
        raise ValueError("not a conversion")
    a, u, b, v, target = m.groups()
    parts = [(int(a), u)] + ([(int(b), v)] if b else [])
    dims = {UNITS[x][0] for _, x in parts} | {UNITS[target][0]}
    if len(dims) != 1:
        raise ValueError("units of different dimensions")
    total = sum(n * UNITS[x][1] for n, x in parts)
    if total % UNITS[target][1]:
        raise ValueError("not a whole number of the target unit")
    return str(total // UNITS[target][1])


CHECK = {"universal": universal, "math": math, "code": code, "logic": logic, "units": units}


def engine(out, *args):
    return subprocess.run([ENGINE, "suite", "--out", out] + list(args), capture_output=True, text=True)


def read_split(path):
    """Records of one JSONL file; raises on any invalid line."""
    recs = []
    with open(path, "rb") as f:
        for line in f.read().split(b"\n")[:-1]:
            r = json.loads(line.decode("utf-8"))
            if sorted(r) != ["domain", "prompt", "response"] or not all(isinstance(r[k], str) for k in r):
                raise ValueError("bad keys in %r" % line)
            recs.append(r)
    return recs


def check_run(d, level, n_train, n_test):
    bad = {"frame": 0, "answer": 0, "json": 0}
    longest = 0
    prompts = {}
    for dom in DOMAINS:
        splits = {}
        for split in ("train", "test"):
            try:
                splits[split] = read_split(os.path.join(d, "%s.%s.jsonl" % (dom, split)))
            except (OSError, ValueError) as e:
                bad["json"] += 1
                diag("%s %s: %s" % (dom, split, e))
                splits[split] = []
        ok(len(splits["train"]) == n_train and len(splits["test"]) == n_test,
           "level %d %s: %d train and %d test records" % (level, dom, len(splits["train"]), len(splits["test"])))
        for split, recs in splits.items():
            for r in recs:
                p, a = r["prompt"], r["response"]
                longest = max(longest, len((p + a).encode()))
                if (r["domain"] != dom or not p.startswith("Q: ") or not p.endswith("\nA: ") or p.count("\n") != 1
                        or not a.endswith("\n") or a.count("\n") != 1 or len((p + a).encode()) > MAX_BYTES):
                    bad["frame"] += 1
                    diag("bad frame: %r" % r)
                    continue
                try:
                    want = CHECK[dom](p[3:-4])
                except Exception as e:  # the checker refusing a task is a failure too
                    want = "<%s>" % e
                if want != a[:-1]:
                    bad["answer"] += 1
                    if bad["answer"] <= 5:
                        diag("wrong answer: %r, expected %r" % (r, want))
        train = {r["prompt"] for r in splits["train"]}
        test = {r["prompt"] for r in splits["test"]}
        ok(not (train & test) and len(train) == len(splits["train"]) and len(test) == len(splits["test"]),
           "level %d %s: no prompt repeated, none in both splits" % (level, dom))
        answers = {r["response"] for r in splits["train"]}
        ok(len(answers) > 1, "level %d %s: %d distinct answers" % (level, dom, len(answers)))
        prompts[dom] = (train, test)
    ok(bad["json"] == 0, "level %d: every line is a JSON record with exactly domain, prompt, response" % level)
    ok(bad["frame"] == 0, "level %d: every record is 'Q: <task>\\nA: ' + '<answer>\\n' within %d bytes (longest %d)"
       % (level, MAX_BYTES, longest))
    ok(bad["answer"] == 0, "level %d: every answer equals the independent evaluation (%d wrong)" % (level, bad["answer"]))
    return prompts


def check_manifest(d, seed):
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    good = man.get("seed") == seed and [x["name"] for x in man["domains"]] == DOMAINS
    for x in man["domains"]:
        for split in ("train", "test"):
            with open(os.path.join(d, x[split]["file"]), "rb") as f:
                data = f.read()
            good = good and hashlib.sha256(data).hexdigest() == x[split]["sha256"] and len(data) == x[split]["bytes"]
    ok(good, "the manifest names the seed and the sha256 and size of each file")


def same_files(a, b):
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False
    for name in names:
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            if fa.read() != fb.read():
                return False
    return True


def main():
    tmp = tempfile.mkdtemp(prefix="modula-suite-check-")
    try:
        for level in (1, 2, 3):
            d = os.path.join(tmp, "l%d" % level)
            res = engine(d, "--seed", "11", "--level", str(level), "--train", "1500", "--test", "300")
            ok(res.returncode == 0, "suite at level %d written %s" % (level, res.stderr.strip()))
            first = check_run(d, level, 1500, 300)
            if level == 2:
                check_manifest(d, 11)
                again, other = os.path.join(tmp, "again"), os.path.join(tmp, "other")
                engine(again, "--seed", "11", "--level", "2", "--train", "1500", "--test", "300")
                ok(same_files(d, again), "the same seed through the command gives byte-identical files")
                res = engine(other, "--seed", "12", "--level", "2", "--train", "1500", "--test", "300")
                ok(res.returncode == 0 and not same_files(d, other), "another seed gives other files")
                second = check_run(other, level, 1500, 300)
                differ = all(first[x][0] != second[x][0] for x in DOMAINS)
                ok(differ, "another seed gives other train sets in every domain")
                leak = sum(len(first[x][0] & second[x][1]) + len(first[x][1] & second[x][0]) for x in DOMAINS)
                ok(leak == 0, "no prompt is train under one seed and test under another (%d)" % leak)
        res = engine(os.path.join(tmp, "bad"), "--domains", "math,poetry")
        ok(res.returncode == 1 and "'poetry'" in res.stderr, "an unknown domain fails with a message: %s"
           % res.stderr.strip())
        res = subprocess.run([ENGINE, "suite"], capture_output=True, text=True)
        ok(res.returncode == 2 and "--out" in res.stderr, "suite without --out is a usage error")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done()


if __name__ == "__main__":
    sys.exit(main())
