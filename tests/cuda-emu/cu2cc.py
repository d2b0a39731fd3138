#!/usr/bin/env python3
"""tests/cuda-emu/cu2cc.py IN.cu OUT.cc: a CUDA source of kernels/cuda/ as
C++ for the CPU emulation (tests/cuda-emu/emu.h). Three rewrites, nothing
else: a launch `k<<<grid, block, smem, stream>>>(args)` becomes
`kc_emu::launcher(grid, block, smem, stream)(k, args)`; the dynamic shared
memory `extern __shared__ T name[];` a pointer to the launch's buffer; and
a `__shared__ T a[N], b[M];` declaration a static one (one block runs at a
time) followed, on the same line, by kc_emu::shared_poison for each array
(0xff bytes when a block first reaches it). A #line keeps compiler
messages pointing at the .cu file."""
import re
import sys

LAUNCH = re.compile(r"(?P<k>[A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(?P<cfg>.*?)>>>\s*\(", re.S)
DYN = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?"
                 r"(?P<t>[A-Za-z_][\w ]*?)\s+(?P<n>\w+)\s*\[\s*\]\s*;")


SHARED = re.compile(r"\b__shared__\s+(?P<t>(?:__align__\(\s*\d+\s*\)\s+)?[A-Za-z_][\w:]*)\s+"
                    r"(?P<d>[^;]+);")


def shared(m):
    names = [re.match(r"\s*(\w+)", d).group(1) for d in m.group("d").split(",")]
    poison = " ".join(f"kc_emu::shared_poison({n}, sizeof {n});" for n in names)
    return f"static {m.group('t')} {m.group('d')}; {poison}"


def launch(m):
    rest = m.string[m.end():].lstrip()
    sep = "" if rest.startswith(")") else ", "
    return f"kc_emu::launcher({m.group('cfg')})({m.group('k')}{sep}"


def main():
    src, dst = sys.argv[1], sys.argv[2]
    text = open(src).read()
    n_launch = len(LAUNCH.findall(text))
    text = LAUNCH.sub(launch, text)
    text = DYN.sub(lambda m: f"{m.group('t')} *{m.group('n')} = ({m.group('t')} *)kc_emu::dyn_smem();",
                   text)
    text = SHARED.sub(shared, text)
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)
    if re.search(r"\b__shared__\b", code):
        sys.exit(f"cu2cc.py: {src}: a __shared__ declaration it could not rewrite is left")
    if "<<<" in re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S):
        sys.exit(f"cu2cc.py: {src}: a launch it could not rewrite is left")
    with open(dst, "w") as f:
        f.write(f'#line 1 "{src}"\n{text}')
    print(f"cu2cc.py: {src}: {n_launch} launches", file=sys.stderr)


if __name__ == "__main__":
    main()
