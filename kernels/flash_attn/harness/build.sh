#!/usr/bin/env bash
# Builds ./flash_attn_harness (tests + benchmark of kernels/flash_attn) in this folder.
#   bash build.sh            # sm_90 (H100)
#   ARCH=-arch=sm_90a bash build.sh   # with the wgmma backward (./flash_attn_harness --bwd-wgmma)
#   ARCH=-arch=sm_80 bash build.sh
#   SERIAL=1 bash build.sh   # one translation unit at a time (small shared machines)
#   ARCH=-gencode=arch=compute_80,code=compute_80 BUILD=build80 BIN=flash_attn_harness_ptx80 bash build.sh
#                            # sm_80 PTX only: JIT-compiled on the H100, runs the pre-sm_90 code paths
# The translation units compile in parallel; each one's ptxas report (registers, spills) is kept
# in build/<name>.ptxas.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../../.. && pwd)
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
ARCH=${ARCH:--arch=sm_90}
BUILD=${BUILD:-build}
BIN=${BIN:-flash_attn_harness}
FLAGS=(-O3 -std=c++17 "$ARCH" --expt-relaxed-constexpr -lineinfo "-I$ROOT" -Xptxas -v)
# sm_90a code holds the wgmma backward (--bwd-wgmma); the library's CMake sets the same define for 90a builds.
case "$ARCH" in *90a*) FLAGS+=(-DATTNLAB_SM90A=1) ;; esac
mkdir -p "$BUILD"
pids=()
status=0
compile() {  # name source [-x cu]
  local name=$1 src=$2
  shift 2
  if [ -n "${SERIAL:-}" ]; then
    "$NVCC" "${FLAGS[@]}" "$@" -c "$src" -o "$BUILD/$name.o" 2>"$BUILD/$name.ptxas" || status=1
    return
  fi
  "$NVCC" "${FLAGS[@]}" "$@" -c "$src" -o "$BUILD/$name.o" 2>"$BUILD/$name.ptxas" &
  pids+=($!)
}
compile flash_fwd ../flash_fwd.cu
compile flash_bwd ../flash_bwd.cu
compile harness harness.cpp -x cu
compile tune_fwd tune_fwd.cpp -x cu
compile tune_bwd tune_bwd.cpp -x cu
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ $status -ne 0 ]; then
  grep -h -B2 -A2 "error" "$BUILD"/*.ptxas >&2 || true
  echo "build.sh: compilation failed" >&2
  exit 1
fi
# spills in any kernel are reported here (the table in docs/kernels.md lists registers)
grep -h "spill" "$BUILD"/*.ptxas | sort | uniq -c | sed 's/^/ptxas: /' || true
"$NVCC" "$ARCH" "$BUILD"/flash_fwd.o "$BUILD"/flash_bwd.o "$BUILD"/harness.o "$BUILD"/tune_fwd.o "$BUILD"/tune_bwd.o -o "$BIN"
echo "built $(pwd)/$BIN"
