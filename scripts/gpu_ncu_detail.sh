#!/usr/bin/env bash
# Where one kernel's time goes: Nsight Compute's speed-of-light, occupancy, warp-state (with every stall
# reason's cycles per issued instruction) and source-counter sections for the kernels matching NCU_REGEX at
# one shape of the op bench (SPEC=op:D:T, B * T = 32768, H = 16, bf16), clocks left alone. Writes
# ncu_detail.txt (the sections) and, with NCU_SASS=1, ncu_sass.csv (per SASS instruction: stall samples, from
# the saved report's source page). Builds only the CLI. Carry .deps.
#   SPEC=gated_delta_rule:128:2048 NCU_REGEX="delta_bwd_wgmma|delta_wy_bwd" bash scripts/gpu_ncu_detail.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build_cli
IFS=: read -r op d t <<< "${SPEC:-gated_delta_rule:128:2048}"
stage "${NCU_TIMEOUT:-150}" ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --section SourceCounters --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  --kernel-name-base demangled -k "regex:${NCU_REGEX:-delta_bwd}" --launch-skip "${NCU_SKIP:-1}" \
  --launch-count "${NCU_COUNT:-1}" -f -o "$OUT/ncu_detail" "$BUILD/attnlab" bench ops --ops "$op" --dtype bf16 \
  --head-dims "$d" --seq-lens "$t" --tokens 32768 --heads 16 --warmup 1 --repeat 1 --chunk-repeat 0 \
  > "$OUT/ncu_detail.log" 2>&1
el "ncu detail ${SPEC:-} rc $?"
ncu -i "$OUT/ncu_detail.ncu-rep" --print-details all > "$RESULTS/ncu_detail.txt" 2>> "$OUT/ncu_detail.log"
ncu -i "$OUT/ncu_detail.ncu-rep" --page raw --csv --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  > "$RESULTS/ncu_stalls.csv" 2>> "$OUT/ncu_detail.log"
if [ "${NCU_SASS:-0}" = 1 ]; then
  ncu -i "$OUT/ncu_detail.ncu-rep" --page source --print-source sass --csv > "$RESULTS/ncu_sass.csv" 2>> "$OUT/ncu_detail.log"
  el "sass page rc $? ($(wc -c < "$RESULTS/ncu_sass.csv") bytes)"
fi
rm -f "$OUT/ncu_detail.ncu-rep"
python3 - "$RESULTS/ncu_stalls.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) < 3: sys.exit(print("no stall metrics"))
head, units, data = rows[0], rows[1], rows[2:]
name = head.index("Kernel Name") if "Kernel Name" in head else None
for r in data:
    pairs = [(float(v.replace(",", "")), h.replace("smsp__average_warps_issue_stalled_", "").replace("_per_issue_active.ratio", ""))
             for h, v in zip(head, r) if h.startswith("smsp__average_warps_issue_stalled_") and v.replace(",", "").replace(".", "").isdigit()]
    pairs.sort(reverse=True)
    print((r[name][:60] if name is not None else "?"), " ".join(f"{n} {v:.2f}" for v, n in pairs[:8]))
PY
