#!/usr/bin/env python3
"""suite-corpus.py: `modula-engine corpus` on a small fake fortunes folder.

The folder made here holds two fortune files with duplicates, overstrikes,
typographic punctuation, a non-ASCII record, ASCII art and a blank record,
plus things the builder must skip: .dat and .u8 files, an off/ folder and a
rot13 "-o" file. Checks the kept records (exactly the expected normalised
set), the disjoint train / held-out split, the manifest, determinism, and
the errors for a missing or empty folder. Prints TAP.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

ENGINE = os.path.join(os.environ.get("top_builddir", "."), "worker", "modula-engine")
sys.path.insert(0, os.path.join(os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), "..")), "tests", "ref"))
from tap import done, ok  # noqa: E402


# Raw records of the file "alpha" and what each must become (None: dropped).
ALPHA = [
    ("A day for firm decisions!!!!!  Or is it?\n", "A day for firm decisions!!!!! Or is it?"),
    ("\tIndented\t\tline   with  blanks  \n\n\n\t\t-- Somebody\n", "Indented line with blanks\n-- Somebody"),
    ("_\bb_\bo_\bl_\bd words here\n", "bold words here"),
    ("It\u2019s a \u201cquoted\u201d line \u2014 really\u2026\n", "It's a \"quoted\" line - really..."),
    ("Gr\u00fc\u00df Gott, said the man.\n", None),
    ("   /\\_/\\\n  ( o.o )\n   > ^ <\n", None),
    ("  \n\t\n", None),
    ("A day for firm decisions!!!!!  Or is it?\n", None),  # a duplicate
] + [("Plain record number %d of the alpha file.\n" % i, "Plain record number %d of the alpha file." % i)
     for i in range(30)]
# "beta": the last record has no closing '%' line.
BETA = [("Beta says hello.\n", "Beta says hello."), ("Beta ends without a percent line.",
                                                   "Beta ends without a percent line.")]
MARKER = "SHOULD NOT BE READ"


def make_source(d):
    os.makedirs(os.path.join(d, "off"))
    with open(os.path.join(d, "alpha"), "w", encoding="utf-8") as f:
        f.write("%\n".join(r for r, _ in ALPHA) + "%\n")
    with open(os.path.join(d, "beta"), "w", encoding="utf-8") as f:
        f.write("%\n".join(r for r, _ in BETA))
    for name in ("alpha.dat", "alpha.u8", os.path.join("off", "rude"), "gamma-o"):
        with open(os.path.join(d, name), "w") as f:
            f.write(MARKER + "\n%\n" + MARKER + "\n")
    return sorted({x for _, x in ALPHA + BETA if x is not None})


def corpus(*args):
    return subprocess.run([ENGINE, "corpus"] + list(args), capture_output=True, text=True)


def records(path):
    with open(path, "rb") as f:
        text = f.read().decode("ascii")
    return [r for r in text.split("\n\n")[:-1]], text


def main():
    tmp = tempfile.mkdtemp(prefix="modula-suite-corpus-")
    try:
        src = os.path.join(tmp, "fortunes")
        expected = make_source(src)
        out, hold = os.path.join(tmp, "c.txt"), os.path.join(tmp, "h.txt")
        res = corpus("--source", src, "--out", out, "--holdout", hold, "--holdout-frac", "0.25", "--seed", "5")
        ok(res.returncode == 0, "corpus built from the fake folder %s" % res.stderr.strip())
        train, train_text = records(out)
        held, held_text = records(hold)
        ok(sorted(train + held) == expected, "the kept records are exactly the normalised, deduplicated ones (%d)"
           % len(expected))
        ok(not set(train) & set(held), "no record is both in the training and the held-out text")
        ok(len(held) == round(0.25 * len(expected)), "a quarter of the records is held out (%d of %d)"
           % (len(held), len(expected)))
        ok(MARKER not in train_text + held_text, "dotted files, sub-folders and -o files are not read")
        ok(train_text.endswith("\n\n") and "\n\n\n" not in train_text, "each record ends with one empty line")
        with open(out + ".manifest.json") as f:
            man = json.load(f)
        rec = man["records"]
        ok(man["files"] == ["alpha", "beta"] and rec["read"] == len(ALPHA) + len(BETA) and rec["duplicates"] == 1
           and rec["non_ascii"] == 1 and rec["not_prose"] == 1 and rec["empty"] == 1
           and rec["kept"] == len(expected), "the manifest counts files, records, duplicates and drops: %s"
           % json.dumps(rec))
        good = True
        for key, text in (("train", train_text), ("holdout", held_text)):
            data = text.encode()
            good = good and man[key]["sha256"] == hashlib.sha256(data).hexdigest() and man[key]["bytes"] == len(data)
        ok(good and man["train"]["records"] == len(train), "the manifest's sha256 and sizes match the texts")

        out2 = os.path.join(tmp, "c2.txt")
        corpus("--source", src, "--out", out2, "--holdout", hold + "2", "--holdout-frac", "0.25", "--seed", "5")
        with open(out, "rb") as a, open(out2, "rb") as b:
            ok(a.read() == b.read(), "the same seed gives the same bytes")
        out3 = os.path.join(tmp, "c3.txt")
        res = corpus("--source", src, "--out", out3, "--holdout-frac", "0.25", "--seed", "6")
        other, _ = records(out3)
        ok(res.returncode == 0 and os.path.exists(out3 + ".holdout"), "the held-out text defaults to FILE.holdout")
        ok(other != train, "another seed shuffles differently")

        res = corpus("--source", os.path.join(tmp, "missing"), "--out", os.path.join(tmp, "m.txt"))
        ok(res.returncode == 1 and "apt-get install fortunes" in res.stderr,
           "a missing folder names the package to install: %s" % res.stderr.strip())
        os.makedirs(os.path.join(tmp, "empty"))
        res = corpus("--source", os.path.join(tmp, "empty"), "--out", os.path.join(tmp, "e.txt"))
        ok(res.returncode == 1 and "no fortune files" in res.stderr, "an empty folder is refused: %s"
           % res.stderr.strip())
        res = corpus("--source", src, "--out", os.path.join(tmp, "f.txt"), "--holdout-frac", "0.9")
        ok(res.returncode == 1 and "0.9" in res.stderr, "a held-out share above 0.5 is refused")
        res = corpus("--source", src)
        ok(res.returncode == 2 and "--out" in res.stderr, "corpus without --out is a usage error")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done()


if __name__ == "__main__":
    sys.exit(main())
