#!/usr/bin/env bash
# Where the slow kernels of the linear family lose their time, instruction by instruction: Nsight Compute's
# warp-state and source counters (PC sampling: stall reasons per SASS instruction) for one launch of each
# kernel named in KERNELS, on one shape per op, with the clocks left alone. Builds only the CLI. Under $OUT:
# details.txt (ncu's sections, per kernel) and stalls.txt (bench/ncu_stalls.py: the instructions that hold the
# most stall samples, with their reasons), and the raw exports in logs.tgz. Carry .deps.
#   bash scripts/gpu_ncu_source.sh           # the default list below
#   SPECS="gla:128:8192:gla_fwd_kernel" bash scripts/gpu_ncu_source.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build_cli
# op:D:T:kernel-regex (each regex profiles its first LAUNCHES matching launches: the bench's validation run)
SPECS=${SPECS:-"gla:128:8192:gla_(fwd|bwd_dq|bwd_dkv)_kernel gated_delta_rule:128:32768:delta_ gated_delta_rule:64:32768:delta_bwd_walk"}
SECTIONS="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
  --section InstructionStats --section SourceCounters"
i=0
for spec in $SPECS; do
  IFS=: read -r op d t rx <<< "$spec"
  i=$((i + 1)); rep="$OUT/rep$i"
  stage 150 ncu --clock-control none $SECTIONS --import-source no --kernel-name-base demangled \
    -k "regex:attnlab::kernels::.*(${rx})" -c "${LAUNCHES:-8}" -f -o "$rep" \
    "$BUILD/attnlab" bench ops --ops "$op" --dtype bf16 --head-dims "$d" --seq-lens "$t" --tokens 32768 \
    --heads 16 --warmup 0 --repeat 1 --chunk-repeat 0 > "$OUT/ncu$i.log" 2>&1
  el "ncu $spec rc $?"
  ncu -i "$rep.ncu-rep" --page details > "$OUT/details$i.txt" 2>&1
  ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$OUT/source$i.csv" 2> "$OUT/source$i.err"
  el "exports $i: $(wc -c < "$OUT/details$i.txt") / $(wc -c < "$OUT/source$i.csv") bytes"
  rm -f "$rep.ncu-rep"  # no Nsight Compute on the CPU machine: the exports are what comes back
  { echo "==== $spec"; cat "$OUT/details$i.txt"; } >> "$RESULTS/details.txt"
  python3 bench/ncu_stalls.py "$OUT/source$i.csv" --title "$spec" >> "$RESULTS/stalls.txt" 2>> "$OUT/stalls.err"
done
grep -E "^(====|  [a-zA-Z_:<>, 0-9]+\(|    (Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per Thread|No Eligible|Issued Warp))" \
  "$RESULTS/details.txt" | head -n 80
head -n 60 "$RESULTS/stalls.txt"
