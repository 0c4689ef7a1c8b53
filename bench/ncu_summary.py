#!/usr/bin/env python3
"""Per-kernel GPU time from an Nsight Compute CSV (`ncu --csv --metrics gpu__time_duration.sum ...`).

scripts/gpu_linear.sh (NCU=1) profiles one `attnlab bench ops` shape per op with ncu, clocks left alone
(--clock-control none), and this groups the launches by kernel (templates stripped to the kernel's name and its
first template arguments) and prints count, median and total microseconds, largest total first: where each
op's forward and backward spend their time, without hardware counters beyond the duration.

    python3 bench/ncu_summary.py gpu-out/ncu.csv [--top 40]
"""

import argparse
import collections
import csv
import re
import statistics
import sys


def short(name):
    name = re.sub(r"\(.*$", "", name)  # drop the parameter list
    name = name.replace("attnlab::kernels::", "")
    return name[:110]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    rows = []
    with open(args.csv, newline="") as fh:
        lines = [l for l in fh if l.startswith('"')]  # ncu prints its own log lines before the CSV
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        us = value / 1000.0 if unit.startswith("n") else value if unit.startswith("u") else value * 1000.0
        rows.append((short(r["Kernel Name"]), us))
    if not rows:
        print("ncu_summary: no gpu__time_duration.sum rows", file=sys.stderr)
        return 1
    by = collections.defaultdict(list)
    for k, us in rows:
        by[k].append(us)
    print(f"{'kernel':110} {'n':>5} {'median us':>10} {'total us':>10}")
    for k, v in sorted(by.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"{k:110} {len(v):5d} {statistics.median(v):10.1f} {sum(v):10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
