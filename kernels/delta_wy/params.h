// The WY / UT-transform preparation of the DeltaNet and Gated DeltaNet chunk algorithm (Yang et al. 2024,
// "Parallelizing Linear Transformers with the Delta Rule over Sequence Length", sec. 3; gated as in Gated
// DeltaNet, sec. 3.3), forward and backward: the per-chunk factors that kernels/delta_chunk's recurrence
// takes. This struct is the whole interface: kernels never see torch; the binding fills it from tensors.
//
// Per chunk of 64 tokens (chunks from t = 0; rows past T are padding with k = v = beta = g = 0), for every
// batch b and head h, with G_t = g_0 + ... + g_t within the chunk (G = 0 without a gate):
//   A = strictly_lower(diag(beta) K K^T * exp(G_t - G_s)),   M = (I + A)^-1   (float32)
//   W = M (beta exp(G) K),   U = M (beta V)
// The backward takes dW, dU and dG (the recurrence's gradients) and returns dk (this preparation's share:
// the recurrence's direct dk is added by the caller), dv, dbeta and dg (docs/kernels.md, "delta_wy", has
// the derivation; tests/test_delta_wy_algorithm.cpp restates it in float64). M is saved by the forward when
// DeltaWyParams::m is set, else recomputed by the backward.
//
// k, w, dw, dk [B, T, H, K] and v, u, du, dv [B, T, H, V], contiguous, one 16-bit dtype (bf16 or fp16);
// K = V = 64 or 128; beta, g, G, dG, dbeta, dg [B, T, H] float32 contiguous.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "kernels/linear_chunk/params.h"  // LinearDtype, kLinearChunk, linear_chunk_count

namespace attnlab::kernels {

// Floats of one chunk's saved M (DeltaWyParams::m): row r's columns 0 .. 8 ceil((r + 1) / 8) - 1, the lower
// triangle in whole pieces of 8 (zeros above the diagonal), rows one after another; 2304 where the square
// C x C is 4096, so the forward writes and the backward reads 56% of the bytes (2026-12-08).
constexpr int kDeltaWySavedM = 2304;
// Where row r of a saved M starts: 8 (a + 1)(4 a + b) floats for r = 8 a + b (rows 0 .. r - 1 hold
// 8 ceil((j + 1) / 8) floats each).
constexpr int delta_wy_saved_m_row(int r) {
  return 8 * (r / 8 + 1) * (4 * (r / 8) + r % 8);
}
constexpr bool delta_wy_saved_m_rows_hold() {
  for (int r = 0; r < kLinearChunk; ++r)
    if (delta_wy_saved_m_row(r + 1) - delta_wy_saved_m_row(r) != 8 * ((r + 8) / 8)) return false;
  return delta_wy_saved_m_row(kLinearChunk) == kDeltaWySavedM;
}
static_assert(delta_wy_saved_m_rows_hold(), "row r of a saved M holds 8 ceil((r + 1) / 8) floats");

// How the inverse's block products run (the diagonal 16 x 16 blocks are float32 forward substitution either
// way): kTf32x3, 3xTF32 m16n8k8 tiles through shared memory (~21 mantissa bits); kBf16x3, bf16 hi/lo
// m16n8k16 tiles chained in registers (~16 bits; fewer instructions and two barriers less per chunk).
// docs/kernels.md, "delta_wy", compares them.
enum class DeltaWyInverse { kTf32x3, kBf16x3 };

struct DeltaWyParams {
  LinearDtype dtype = LinearDtype::kBF16;
  int B = 0, T = 0, H = 0, K = 0, V = 0;

  // ---- forward
  const void* k = nullptr;      // [B, T, H, K]
  const void* v = nullptr;      // [B, T, H, V]
  const float* beta = nullptr;  // [B, T, H]
  const float* g = nullptr;     // [B, T, H] log decay per step; nullptr: no gate (DeltaNet)
  void* w = nullptr;            // [B, T, H, K] W (written by the forward)
  void* u = nullptr;            // [B, T, H, V] U (written by the forward)
  float* G = nullptr;           // [B, T, H] in-chunk cumulative gate (written by the forward when g is set)
  float* m = nullptr;  // [B, H, ceil(T / 64), kDeltaWySavedM] float32, or nullptr: each chunk's M (packed:
                       // kDeltaWySavedM), written by the forward when set and then read by the backward
                       // instead of recomputing the inverse (the same bits either way)
  DeltaWyInverse inverse = DeltaWyInverse::kTf32x3;  // the forward's, and the backward's when m is not set
  int* ready = nullptr;  // [B, H, ceil(T / 64)] int32 zeros, or nullptr. When set, the forward runs its
                         // blocks chunk-major (chunk 0 of every (b, h), then chunk 1, ...) and sets
                         // chunk n's flag once its W, U and G are stored, for delta_chunk's walk that
                         // runs at the same time on another stream (DeltaChunkParams::wy_ready)

  // ---- backward (reads k, v, beta, g as above)
  const void* dw = nullptr;   // [B, T, H, K] gradient of W
  const void* du = nullptr;   // [B, T, H, V] gradient of U
  const float* dG = nullptr;  // [B, T, H] gradient of G; nullptr: zeros (read only when g is set)
  void* dk = nullptr;         // [B, T, H, K] (written: this preparation's share of dk)
  void* dv = nullptr;         // [B, T, H, V] (written)
  float* dbeta = nullptr;     // [B, T, H] (written)
  float* dg = nullptr;        // [B, T, H] (written when g is set)

  cudaStream_t stream = nullptr;
};

// Empty when the kernels take p (dims, dtype, pointers), else why not.
std::string delta_wy_check(const DeltaWyParams& p, bool backward);

// Launch on p.stream; return the first CUDA error (cudaErrorInvalidValue when delta_wy_check fails).
cudaError_t launch_delta_wy_fwd(const DeltaWyParams& p);
// Loads the forward's kernel for p (and sets its shared-memory limit) without launching it: the streamed
// forward calls it before its walk, whose blocks spin on the flags, because a kernel loaded lazily while
// another kernel runs may wait for that kernel to finish (CUDA's lazy loading), which here never comes.
cudaError_t load_delta_wy_fwd(const DeltaWyParams& p);
cudaError_t launch_delta_wy_bwd(const DeltaWyParams& p);

}  // namespace attnlab::kernels
