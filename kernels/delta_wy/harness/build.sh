#!/usr/bin/env bash
# Builds ./delta_wy_harness (the delta_wy kernels against a float64 host reference, the ways of the inverse's
# products against each other, and their times) in this folder, without torch: seconds on a GPU machine.
#   bash build.sh                     # sm_90a (H100 / H200)
#   ARCH=-arch=sm_80 bash build.sh
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../../.. && pwd)
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
ARCH=${ARCH:--arch=sm_90a}
FLAGS=(-O3 -std=c++17 "$ARCH" --expt-relaxed-constexpr -lineinfo "-I$ROOT")
mkdir -p build
pids=()
"$NVCC" "${FLAGS[@]}" -c ../delta_wy_fwd.cu -o build/delta_wy_fwd.o & pids+=($!)
"$NVCC" "${FLAGS[@]}" -c ../delta_wy_bwd.cu -o build/delta_wy_bwd.o & pids+=($!)
"$NVCC" "${FLAGS[@]}" -x cu -c harness.cpp -o build/harness.o & pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] || { echo "build.sh: compilation failed" >&2; exit 1; }
"$NVCC" "$ARCH" build/delta_wy_fwd.o build/delta_wy_bwd.o build/harness.o -o delta_wy_harness
echo "built $(pwd)/delta_wy_harness"
