#!/usr/bin/env python3
"""The instructions that hold a kernel's stall samples, from `ncu -i REP --page source --csv --print-source sass`.

scripts/gpu_ncu_source.sh profiles one launch per kernel with Nsight Compute's source counters (PC sampling) and
exports each report's SASS page; this prints, per kernel in the export: the samples by opcode (MUFU.EX2, HMMA,
BAR.SYNC, LDS, ...), the stall-reason columns summed, and the TOP instructions with most samples. The export
holds one table per profiled launch (a header line starting with "Address" or "#"); the columns are found by
name, so small differences between Nsight Compute versions do not matter.

    python3 bench/ncu_stalls.py source.csv [--title T] [--top 40]
"""

import argparse
import collections
import csv
import io
import sys


def tables(text):
    """Splits the export into (title, header, rows) per table: a line whose first cell is the address column
    starts a table; non-CSV lines before it are its title."""
    out, title, header, rows = [], "", None, []
    for line in text.splitlines():
        cells = next(csv.reader(io.StringIO(line)), [])
        if cells and cells[0].strip().lower() in ("address", "# address", "pc"):
            if header:
                out.append((title, header, rows))
            header, rows = cells, []
            continue
        if header and len(cells) == len(header):
            rows.append(cells)
        elif line.strip():
            if header:
                out.append((title, header, rows))
                header, rows = None, []
            title = line.strip()
    if header:
        out.append((title, header, rows))
    return out


def num(x):
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--title", default="")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    with open(args.csv, encoding="utf-8", errors="replace") as f:
        text = f.read()
    found = tables(text)
    if not found:
        print(f"{args.title}: no table in {args.csv} (first line: {text.splitlines()[:1]})")
        return 1
    for title, header, rows in found:
        low = [h.lower() for h in header]
        src = next((i for i, h in enumerate(low) if h in ("source", "sass")), 1)
        samp = next((i for i, h in enumerate(low) if "sampling (all" in h), None)
        if samp is None:
            samp = next((i for i, h in enumerate(low) if "sampl" in h), None)
        if samp is None:
            print(f"{args.title} {title}: no sampling column in {header}")
            continue
        reasons = [i for i, h in enumerate(low) if "stall" in h and i != samp and "sampl" not in h]
        total = sum(num(r[samp]) for r in rows) or 1.0
        print(f"==== {args.title} {title}: {len(rows)} instructions, {total:.0f} samples ({header[samp]})")
        by_op = collections.Counter()
        for r in rows:
            op = r[src].strip().split()
            op = [w for w in op if not w.startswith("@")]
            by_op[op[0] if op else "?"] += num(r[samp])
        print("  by opcode: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in by_op.most_common(14)))
        if reasons:
            sums = sorted(((sum(num(r[i]) for r in rows), header[i]) for i in reasons), reverse=True)
            print("  reasons: " + ", ".join(f"{n} {v:.0f}" for v, n in sums[:12] if v > 0))
        for r in sorted(rows, key=lambda r: -num(r[samp]))[: args.top]:
            extra = ""
            if reasons:
                top = sorted(((num(r[i]), header[i]) for i in reasons), reverse=True)[:3]
                extra = "  [" + ", ".join(f"{n} {v:.0f}" for v, n in top if v > 0) + "]"
            print(f"  {r[0]:>8} {100 * num(r[samp]) / total:5.2f}%  {r[src].strip()[:70]}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
