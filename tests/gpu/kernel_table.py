#!/usr/bin/env python3
"""kernel_table.py NCU.csv [ORDER.txt]: the GPU time of one profiled run by kernel.

tests/gpu/check.sh runs `ncu --metrics gpu__time_duration.sum --csv` over
one LoRA training step of `modula-engine bench` (no CUDA graphs, so each
kernel is its own launch) and prints this table: per kernel name (template
arguments and parameters dropped), the launches, the total time, its share
of the step's kernel time, and its grid and block: a kernel launched with several grids
(cuBLAS's on products of several shapes) has a row per grid; the 45
longest rows are printed, the rest summed. Only the last step counts:
the launches after the one but last optimizer kernel (k_adamw) up to the
last (the model's load and the warm-up step come before it; a step's
work before its embedding kernel, such as zeroing the gradients and
modula-res's batched products, is in). ORDER.txt, when named, gets those launches
in order with their times (which product is which, by place).
A view for tuning, not a check: it exits 0 whenever it could read a row."""
import csv
import sys
from collections import defaultdict


def short(name):
    """k_flash_fwd<__nv_bfloat16, 64>(...) -> k_flash_fwd<__nv_bfloat16, 64>
    (the parameter list is the parenthesis that closes the name, matched
    from the end, so "(anonymous namespace)" stays); cuBLAS's long names
    cut to their first 110 characters."""
    name = name.strip()
    if name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i].rstrip()
                break
    return name if len(name) <= 110 else name[:107] + "..."


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: kernel_table.py NCU.csv [ORDER.txt]")
    order = []
    text = open(sys.argv[1], errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(text) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"kernel_table.py: no ncu CSV header in {sys.argv[1]}")
    launches = []
    for row in csv.DictReader(text[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        try:
            ns = float(row["Metric Value"].replace(",", ""))
        except ValueError:
            continue
        ns *= {"nsecond": 1, "ns": 1, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6,
               "second": 1e9, "s": 1e9}.get(row.get("Metric Unit", "nsecond"), 1)
        launches.append((row["Kernel Name"], ns, f"{short(row['Kernel Name'])} (grid "
                         f"{row.get('Grid Size', '?')} block {row.get('Block Size', '?')})"))
    steps = [i for i, (name, _, _) in enumerate(launches) if "k_adamw" in name]
    if len(steps) >= 2:
        launches = launches[steps[-2] + 1:steps[-1] + 1]
    total, count = defaultdict(float), defaultdict(int)
    for _, ns, k in launches:
        total[k] += ns
        count[k] += 1
        order.append(f"{ns / 1e3:9.1f} us  {k}")
    if not total:
        sys.exit("kernel_table.py: no gpu__time_duration rows")
    all_ns = sum(total.values())
    if len(sys.argv) == 3:
        with open(sys.argv[2], "w") as f:
            f.write("\n".join(order) + "\n")
    print(f"{'the last step' if len(steps) >= 2 else 'all launches (fewer than two optimizer steps)'}: "
          f"{len(count)} kernels and grids, {sum(count.values())} launches, "
          f"{all_ns / 1e6:.2f} ms of kernel time")
    print(f"{'ms':>8} {'share':>6} {'launches':>8}  kernel (grid, block)")
    rows = sorted(total, key=lambda k: -total[k])
    for k in rows[:45]:
        print(f"{total[k] / 1e6:8.3f} {100 * total[k] / all_ns:5.1f}% {count[k]:8d}  {k}")
    rest = rows[45:]
    if rest:
        ns = sum(total[k] for k in rest)
        print(f"{ns / 1e6:8.3f} {100 * ns / all_ns:5.1f}% {sum(count[k] for k in rest):8d}  "
              f"the other {len(rest)}")


if __name__ == "__main__":
    main()
