#!/usr/bin/env bash
# Per-kernel GPU time of the linear family, one shape at a time: Nsight Compute's gpu__time_duration only (one
# pass per launch, clocks left alone), for each op:D:T of SPECS, summed per kernel by bench/ncu_summary.py
# into ncu_times.txt. Which kernel of each forward and backward holds the time at that shape (the bench's
# validation, warm-up and timed runs each launch every kernel once: medians over the three). Builds only the
# CLI. Carry .deps.
#   SPECS="gated_delta_rule:128:2048 delta_rule:64:512" bash scripts/gpu_ncu_times.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build_cli
SPECS=${SPECS:-"gated_delta_rule:128:512 gated_delta_rule:128:2048 gated_delta_rule:128:8192 gated_delta_rule:64:2048 gated_delta_rule:64:8192 gated_delta_rule:64:32768 delta_rule:128:2048 delta_rule:128:32768"}
ncu_times_stage "$SPECS"
cat "$RESULTS/ncu_times.txt"
