#!/usr/bin/env python3
"""tests/cuda-emu/cu2cc.py IN.cu OUT.cc: a CUDA source of kernels/cuda/ as
C++ for the CPU emulation (tests/cuda-emu/emu.h). Three rewrites, nothing
else: a launch `k<<<grid, block, smem, stream>>>(args)` becomes
`kc_emu::launcher(grid, block, smem, stream)(k, args)`; the dynamic shared
memory `extern __shared__ T name[];` a pointer to the launch's buffer; and
`__shared__` becomes `static` (one block runs at a time). A #line keeps
compiler messages pointing at the .cu file."""
import re
import sys

LAUNCH = re.compile(r"(?P<k>[A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(?P<cfg>.*?)>>>\s*\(", re.S)
DYN = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?"
                 r"(?P<t>[A-Za-z_][\w ]*?)\s+(?P<n>\w+)\s*\[\s*\]\s*;")


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
    text = re.sub(r"\b__shared__\b", "static", text)
    if "<<<" in text:
        sys.exit(f"cu2cc.py: {src}: a launch it could not rewrite is left")
    with open(dst, "w") as f:
        f.write(f'#line 1 "{src}"\n{text}')
    print(f"cu2cc.py: {src}: {n_launch} launches", file=sys.stderr)


if __name__ == "__main__":
    main()
