#!/usr/bin/env bash
# Where one kernel's time goes: Nsight Compute's speed-of-light, occupancy and warp-state (stall reason)
# sections for the kernels matching NCU_REGEX at one shape of the op bench (SPEC=op:D:T, B * T = 32768,
# H = 16, bf16), clocks left alone, as text in ncu_detail.txt. The second launch of each kernel is profiled
# (the bench's validation runs first). Builds only the CLI. Carry .deps.
#   SPEC=gated_delta_rule:128:2048 NCU_REGEX="delta_bwd_wgmma|delta_wy_bwd" bash scripts/gpu_ncu_detail.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build_cli
IFS=: read -r op d t <<< "${SPEC:-gated_delta_rule:128:2048}"
stage "${NCU_TIMEOUT:-150}" ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --kernel-name-base demangled -k "regex:${NCU_REGEX:-delta_bwd}" --launch-skip "${NCU_SKIP:-1}" \
  --launch-count "${NCU_COUNT:-1}" "$BUILD/attnlab" bench ops --ops "$op" --dtype bf16 --head-dims "$d" \
  --seq-lens "$t" --tokens 32768 --heads 16 --warmup 1 --repeat 1 --chunk-repeat 0 \
  > "$RESULTS/ncu_detail.txt" 2> "$OUT/ncu_detail.log"
el "ncu detail ${SPEC:-} rc $?"
grep -E "^  [a-z]|Duration|Throughput|Registers|Achieved Occupancy|Stall|Warp Cycles|Issued Ipc|Pipe" "$RESULTS/ncu_detail.txt" | head -n 120
