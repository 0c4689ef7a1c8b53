#!/usr/bin/env bash
# Builds ./wgmma_check (kernels/common/wgmma.cuh against a CPU GEMM) in this folder, for sm_90a (wgmma
# exists only there).   bash build.sh && ./wgmma_check
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../../.. && pwd)
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
"$NVCC" -O3 -std=c++17 -arch=sm_90a --expt-relaxed-constexpr -lineinfo "-I$ROOT" -x cu wgmma_check.cpp \
  -o wgmma_check
echo "built $(pwd)/wgmma_check"
