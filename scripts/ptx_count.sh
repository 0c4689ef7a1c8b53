#!/usr/bin/env bash
# Static PTX instruction counts of one kernel file, no GPU: for each kernel whose name matches REGEX (default:
# all), the instructions in total and between consecutive barriers (bar.sync / cp.async.wait), the counts
# docs/kernels.md quotes for delta_wy. PTX is not what the GPU runs (ptxas rewrites it) and code in loops or
# on one warp's branch counts once, so these compare versions of one kernel, nothing more.
#   bash scripts/ptx_count.sh kernels/delta_wy/delta_wy_fwd.cu 'delta_wy_fwd_kernelILi64E13__nv_bfloat16Lb1'
set -euo pipefail
cd "$(dirname "$0")/.."
file=$1 rx=${2:-.}
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
ptx=$(mktemp --suffix .ptx)
trap 'rm -f "$ptx"' EXIT
"$NVCC" -O3 -DNDEBUG -std=c++17 -arch=sm_90a -DATTNLAB_SM90A=1 --expt-relaxed-constexpr -I. -x cu -ptx "$file" -o "$ptx"
awk -v rx="$rx" '
  /^\.visible \.entry/ { if (name != "") report(); name = $3; sub(/\($/, "", name); keep = name ~ rx; n = 0; total = 0; sections = ""; next }
  !keep { next }
  /bar\.sync|cp\.async\.wait/ { sections = sections " " n; n = 0; next }
  /^\t[a-z@]/ { n++; total++ }
  function report() { if (keep) printf "%s\n  total %d; between barriers:%s %d\n", name, total, sections, n }
  END { report() }' "$ptx"
