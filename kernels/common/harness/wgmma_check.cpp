// Checks kernels/common/wgmma.cuh on a GPU (sm_90a) before any kernel builds on it: one warpgroup multiplies
// a 64 x K tile by a K x N tile (both operands in 128-byte-swizzled shared memory, as
// kernels/common/mma.cuh's swz<64> lays them out) and the result is compared with a CPU GEMM of the same
// 16-bit values. The cases cover bf16 / fp16, N = 64 / 128, K = 64 / 128 (k16 steps inside a 128-byte row and
// across panels), and B K-major or MN-major (transposed by the instruction) with both assignments of the two
// descriptor strides, so that one run says which layout conventions hold. A .cpp (compiled with -x cu) so
// that the project's glob of kernels/*.cu skips it; build.sh builds it.
//   bash kernels/common/harness/build.sh && kernels/common/harness/wgmma_check
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/common/harness/harness_util.h"
#include "kernels/common/mma.cuh"
#include "kernels/common/wgmma.cuh"

using namespace attnlab::kernels;

namespace {

// Copies a row-major [rows][64] 16-bit panel (row stride `ld` elements) into a swizzled shared panel.
template <typename T>
__device__ void fill_panel(unsigned char* s, const T* g, int rows, int ld) {
  for (int c = threadIdx.x; c < rows * 8; c += blockDim.x) {
    const int r = c / 8, ch = c % 8;
    *reinterpret_cast<uint4*>(s + swz<64>(r, ch)) = *reinterpret_cast<const uint4*>(g + r * ld + ch * 8);
  }
}

// D [64][N] = A B; A [64][K] (kTransA = 0, K-major) or [K][64] (kTransA = 1, M-major); B [N][K] (kTransB =
// 0, K-major) or [K][N] (kTransB = 1, MN-major).
template <int N, typename T, int kTransB, int kTransA>
__global__ void gemm_kernel(const T* A, const T* B, float* D, int K, uint32_t b_lbo, uint32_t b_sbo,
                            uint32_t a_lbo, uint32_t a_sbo) {
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* sA = smem;  // K / 64 panels of [64][64]
  unsigned char* sB =
      smem + (K / 64) * 8192;  // K-major: K / 64 panels of [N][64]; MN-major: N / 64 of [K][64]
  if (kTransA == 0) {
    for (int p = 0; p < K / 64; ++p) fill_panel(sA + p * 8192, A + p * 64, 64, K);
  } else {
    fill_panel(sA, A, K, 64);  // one panel of K rows (k) x 64 (m)
  }
  if (kTransB == 0) {
    for (int p = 0; p < K / 64; ++p) fill_panel(sB + p * N * 128, B + p * 64, N, K);
  } else {
    for (int p = 0; p < N / 64; ++p) fill_panel(sB + p * K * 128, B + p * 64, K, N);
  }
  wgmma::fence_proxy_async();
  __syncthreads();
  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
  wgmma::fence();
  const uint32_t a0 = smem_u32(sA), b0 = smem_u32(sB);
  for (int s = 0; s < K / 16; ++s) {
    const uint64_t da = kTransA == 0 ? wgmma::make_desc(a0 + (s / 4) * 8192 + (s % 4) * 32, 16, 1024)
                                     : wgmma::make_desc(a0 + s * 16 * 128, a_lbo, a_sbo);
    const uint64_t db = kTransB == 0 ? wgmma::make_desc(b0 + (s / 4) * N * 128 + (s % 4) * 32, 16, 1024)
                                     : wgmma::make_desc(b0 + s * 16 * 128, b_lbo, b_sbo);
    wgmma::Mma<N, T, kTransB, kTransA>::run(d, da, db, s > 0 ? 1 : 0);
  }
  wgmma::commit();
  wgmma::wait<0>();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < N / 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = 16 * warp + lane / 4 + 8 * half, c = 8 * j + 2 * (lane % 4);
      D[r * N + c] = d[4 * j + 2 * half];
      D[r * N + c + 1] = d[4 * j + 2 * half + 1];
    }
}

template <typename T>
float to_f(T x);
template <>
float to_f(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
float to_f(__half x) {
  return __half2float(x);
}

template <int N, typename T, int kTransB, int kTransA = 0>
bool run_case(const char* dtype, int K, uint32_t lbo, uint32_t sbo, uint32_t a_lbo = 16,
              uint32_t a_sbo = 1024) {
  std::mt19937 rng(K * 131 + N);
  std::normal_distribution<float> nd;
  std::vector<T> a(64 * K), b(static_cast<size_t>(K) * N);
  for (auto& x : a) x = T(nd(rng));
  for (auto& x : b) x = T(nd(rng));
  std::vector<double> ref(64 * N, 0.0);
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k)
        s += double(to_f(kTransA == 0 ? a[i * K + k] : a[k * 64 + i])) *
             to_f(kTransB == 0 ? b[j * K + k] : b[k * N + j]);
      ref[i * N + j] = s;
    }
  T *da, *db;
  float* dd;
  CK(cudaMalloc(&da, a.size() * sizeof(T)));
  CK(cudaMalloc(&db, b.size() * sizeof(T)));
  CK(cudaMalloc(&dd, 64 * N * sizeof(float)));
  CK(cudaMemcpy(da, a.data(), a.size() * sizeof(T), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(db, b.data(), b.size() * sizeof(T), cudaMemcpyHostToDevice));
  CK(cudaMemset(dd, 0xFF, 64 * N * sizeof(float)));  // NaN: unwritten entries fail
  const int smem = (K / 64) * 8192 + K * N * 2;
  auto* kern = &gemm_kernel<N, T, kTransB, kTransA>;
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kern<<<1, 128, smem>>>(da, db, dd, K, lbo, sbo, a_lbo, a_sbo);
  cudaError_t err = cudaDeviceSynchronize();
  std::vector<float> got(64 * N);
  double max_err = INFINITY, max_ref = 0;
  if (err == cudaSuccess) {
    CK(cudaMemcpy(got.data(), dd, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
    max_err = 0;
    for (int i = 0; i < 64 * N; ++i) {
      max_ref = std::fmax(max_ref, std::fabs(ref[i]));
      const double e = std::fabs(got[i] - ref[i]);
      max_err = std::isnan(got[i]) ? INFINITY : std::fmax(max_err, e);
    }
    max_err /= std::fmax(max_ref, 1e-30);
  }
  const bool ok = err == cudaSuccess && max_err < 1e-4;
  std::printf(
      "%-4s N %3d K %3d A %-7s (lbo %5u sbo %5u) B %-8s (lbo %5u sbo %5u): %s (max err / max |ref| "
      "%.2e)%s%s\n",
      dtype, N, K, kTransA ? "M-major" : "K-major", a_lbo, a_sbo, kTransB ? "MN-major" : "K-major", lbo, sbo,
      ok ? "PASS" : "FAIL", max_err, err == cudaSuccess ? "" : " ",
      err == cudaSuccess ? "" : cudaGetErrorString(err));
  cudaFree(da), cudaFree(db), cudaFree(dd);
  if (err != cudaSuccess) std::exit(2);  // a sticky error: later cases cannot run
  return ok;
}

}  // namespace

int main() {
  int passed = 0, total = 0;
  auto count = [&](bool ok) { passed += ok, ++total; };
  // K-major B: the layout FlashAttention-3 uses for Q K^T; LBO unused (16).
  count(run_case<64, __nv_bfloat16, 0>("bf16", 64, 16, 1024));
  count(run_case<64, __nv_bfloat16, 0>("bf16", 128, 16, 1024));
  count(run_case<128, __nv_bfloat16, 0>("bf16", 128, 16, 1024));
  count(run_case<64, __half, 0>("fp16", 128, 16, 1024));
  count(run_case<128, __half, 0>("fp16", 64, 16, 1024));
  // MN-major B (P V, q S): the two strides are one 64-column panel (K * 128 bytes) and 8 k-rows (1024
  // bytes). The first H200 run (2026-12-02) settled which field takes which: LBO the panel, SBO the 8 rows
  // (wgmma::kMnLboIsPanel); the swapped assignment faults (illegal address), so it is no longer tried.
  for (int K : {64, 128}) {
    count(run_case<64, __nv_bfloat16, 1>("bf16", K, K * 128, 1024));
    count(run_case<128, __nv_bfloat16, 1>("bf16", K, K * 128, 1024));
  }
  count(run_case<128, __half, 1>("fp16", 128, 128 * 128, 1024));
  // M-major A (k^T in S += k^T v: k stored [tokens][K]), B K-major, then both transposed, the same
  // assignment.
  for (int K : {64, 128}) count(run_case<64, __nv_bfloat16, 0, 1>("bf16", K, 16, 1024, K * 128, 1024));
  count(run_case<128, __nv_bfloat16, 1, 1>("bf16", 64, 64 * 128, 1024, 64 * 128, 1024));
  std::printf("wgmma_check: %d of %d cases pass\n", passed, total);
  return passed == total ? 0 : 1;
}
