#!/usr/bin/env bash
# Builds ./delta_chunk_harness (the two forms of the delta_chunk forward, checked against each other and
# timed) in this folder, without torch: seconds on a GPU machine.
#   bash build.sh                     # sm_90 (H100 / H200)
#   ARCH=-arch=sm_80 bash build.sh
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../../.. && pwd)
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
ARCH=${ARCH:--arch=sm_90}
FLAGS=(-O3 -std=c++17 "$ARCH" --expt-relaxed-constexpr -lineinfo "-I$ROOT")
mkdir -p build
pids=()
for f in delta_chunk delta_chunk_fwd delta_chunk_bwd; do
  "$NVCC" "${FLAGS[@]}" -c "../$f.cu" -o "build/$f.o" & pids+=($!)
done
"$NVCC" "${FLAGS[@]}" -c ../../delta_wy/delta_wy_fwd.cu -o build/delta_wy_fwd.o & pids+=($!)
"$NVCC" "${FLAGS[@]}" -c ../../common/device_info.cu -o build/device_info.o & pids+=($!)
"$NVCC" "${FLAGS[@]}" -x cu -c harness.cpp -o build/harness.o & pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] || { echo "build.sh: compilation failed" >&2; exit 1; }
"$NVCC" "$ARCH" build/delta_chunk.o build/delta_chunk_fwd.o build/delta_chunk_bwd.o build/delta_wy_fwd.o build/device_info.o build/harness.o -o delta_chunk_harness
echo "built $(pwd)/delta_chunk_harness"
