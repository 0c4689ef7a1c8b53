#!/usr/bin/env bash
# The torch-free kernel harnesses that build in seconds, for a device call of about a minute: the delta_wy
# kernels (kernels/delta_wy/harness: a float64 host reference, both ways of the inverse's products, times), the
# delta_chunk forward's two forms (kernels/delta_chunk/harness: bit-equality and timing) and the wgmma wrappers'
# check (kernels/common/harness). gpu_flash.sh runs the flash harness. Logs and CSVs under $OUT (default
# ./gpu-out). gpu_linear.sh runs the delta_wy one first with WY_HARNESS=1.
#   bash scripts/gpu_harness.sh
source "$(dirname "$0")/gpu_common.sh"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
wy_harness_stage
(bash kernels/delta_chunk/harness/build.sh && stage 240 kernels/delta_chunk/harness/delta_chunk_harness \
   "$RESULTS/delta_chunk_harness.csv") > "$OUT/delta_chunk_harness.log" 2>&1
el "delta_chunk harness rc $?"; grep -E "PASS|FAIL|pass" "$OUT/delta_chunk_harness.log"
(bash kernels/common/harness/build.sh && stage 60 kernels/common/harness/wgmma_check) > "$OUT/wgmma_check.log" 2>&1
el "wgmma_check rc $?"; tail -n 1 "$OUT/wgmma_check.log"
