#!/usr/bin/env bash
# Where one kernel's time goes: Nsight Compute's speed-of-light, occupancy, warp-state (with every stall
# reason's cycles per issued instruction) and source-counter sections for the kernels matching NCU_REGEX at
# one shape of the op bench (SPEC=op:D:T, B * T = 32768, H = 16, bf16), clocks left alone. Writes
# ncu_detail.txt (the sections) and, with NCU_SASS=1, ncu_sass.csv (per SASS instruction: stall samples, from
# the saved report's source page). Builds only the CLI. Carry .deps.
#   SPEC=gated_delta_rule:128:2048 NCU_REGEX="delta_bwd_wgmma|delta_wy_bwd" bash scripts/gpu_ncu_detail.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build_cli
ncu_detail_stage "${SPEC:-gated_delta_rule:128:2048}"
