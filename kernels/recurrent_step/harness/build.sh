#!/usr/bin/env bash
# Builds ./recurrent_step_harness (tests + benchmark of kernels/recurrent_step) in this folder.
#   bash build.sh                  # sm_90 (H100 / H200)
#   ARCH=-arch=sm_80 bash build.sh
# Run: ./recurrent_step_harness OUT.csv [--check-only]
# The ptxas report (registers, spills) of each translation unit is kept in build/<name>.ptxas.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../../.. && pwd)
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
ARCH=${ARCH:--arch=sm_90}
BUILD=${BUILD:-build}
BIN=${BIN:-recurrent_step_harness}
FLAGS=(-O3 -std=c++17 "$ARCH" --expt-relaxed-constexpr -lineinfo "-I$ROOT" -Xptxas -v -Xptxas=-warn-spills)
mkdir -p "$BUILD"
status=0
"$NVCC" "${FLAGS[@]}" -c ../recurrent_step.cu -o "$BUILD/recurrent_step.o" 2>"$BUILD/recurrent_step.ptxas" &
pid=$!
"$NVCC" "${FLAGS[@]}" -x cu -c harness.cpp -o "$BUILD/harness.o" 2>"$BUILD/harness.ptxas" || status=1
wait "$pid" || status=1
if [ $status -ne 0 ]; then
  grep -h -B2 -A2 "error" "$BUILD"/*.ptxas >&2 || true
  echo "build.sh: compilation failed" >&2
  exit 1
fi
grep -h "warning" "$BUILD"/*.ptxas >&2 || true
# registers per kernel instantiation (min / max) and any spill
grep -h "Used [0-9]* registers" "$BUILD/recurrent_step.ptxas" | sed 's/.*Used \([0-9]*\) registers.*/\1/' |
  sort -n | sed -n '1p;$p' | paste -sd' ' | sed 's/^/ptxas: registers per kernel, min max: /'
grep -h "spill" "$BUILD/recurrent_step.ptxas" | sort | uniq -c | sed 's/^/ptxas: /' || true
"$NVCC" "$ARCH" "$BUILD/recurrent_step.o" "$BUILD/harness.o" -o "$BIN"
echo "built $(pwd)/$BIN"
