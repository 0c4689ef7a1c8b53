// Fused one-token decode step of the linear-attention family (state in, state out), plain CUDA.
// This struct is the whole interface: the kernel never sees torch; the binding fills it from tensors.
//
// For every batch b and head h, with S = h0[b, h] ([K, V] float32; zeros when h0 is null), q, k [K],
// v [V] (converted to float32), one step of the variant:
//   linear       S' = S + k v^T
//   scalar_gate  S' = exp(g) S + k v^T                     g [B, H]     (simple GLA, RetNet, Mamba2)
//   key_gate     S' = diag(exp(g)) S + k v^T               g [B, H, K]  (GLA)
//   delta        S' = S + k u^T,  u = beta (v - S^T k)     beta [B, H]  (DeltaNet)
//   gated_delta  D = exp(g) S;  S' = D + k u^T,  u = beta (v - D^T k)   (Gated DeltaNet)
// then o = scale * S'^T q ([V], written in the input dtype) and ht[b, h] = S' (float32).
// With l2norm_qk, q and k are first replaced by x / sqrt(sum x^2 + 1e-6) in float32 (the formula of
// ops::l2_normalize, without its round trip through the input dtype).
//
// Supported: K = 64 or 128; V a multiple of 16 (16 ... 4096); q, k, v, o of one dtype, bf16, fp16 or
// float32; g, beta float32. Each of q, k, v, o, g, beta has its own batch and head strides (elements), the
// last axis contiguous; h0 and ht are contiguous [B, H, K, V] float32, 16-byte aligned (float4 access).
// ht may equal h0 (in place: each thread reads its state elements before writing them); any other overlap
// is not allowed. Anything else makes recurrent_step_check return a reason and the launcher return
// cudaErrorInvalidValue; nothing exits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace attnlab::kernels {

enum class StepVariant : int { kLinear = 0, kScalarGate = 1, kKeyGate = 2, kDelta = 3, kGatedDelta = 4 };

// Element type of q, k, v and o (all the same). The state, g and beta are float32.
enum class StepDtype : int { kBF16 = 0, kFP16 = 1, kFP32 = 2 };

struct RecurrentStepParams {
  // ---- inputs. Element (b, h, d) of x is at x + b*x_batch_stride + h*x_head_stride + d.
  const void* q = nullptr;      // [B, H, K] queries
  const void* k = nullptr;      // [B, H, K] keys
  const void* v = nullptr;      // [B, H, V] values
  const float* g = nullptr;     // log decay (<= 0): [B, H] (scalar_gate, gated_delta) or [B, H, K]
                                // (key_gate); ignored by linear and delta
  const float* beta = nullptr;  // [B, H] delta-rule step size (delta, gated_delta); ignored otherwise
  const float* h0 = nullptr;    // [B, H, K, V] contiguous initial state; nullptr = zeros

  // ---- outputs
  void* o = nullptr;    // [B, H, V] output, the input dtype
  float* ht = nullptr;  // [B, H, K, V] contiguous final state; may equal h0; nullptr = not written

  // ---- strides in elements (the last axis is contiguous)
  int64_t q_batch_stride = 0;     // q: between batches
  int64_t q_head_stride = 0;      // q: between heads
  int64_t k_batch_stride = 0;     // k: between batches
  int64_t k_head_stride = 0;      // k: between heads
  int64_t v_batch_stride = 0;     // v: between batches
  int64_t v_head_stride = 0;      // v: between heads
  int64_t o_batch_stride = 0;     // o: between batches
  int64_t o_head_stride = 0;      // o: between heads
  int64_t g_batch_stride = 0;     // g: between batches
  int64_t g_head_stride = 0;      // g: between heads
  int64_t beta_batch_stride = 0;  // beta: between batches
  int64_t beta_head_stride = 0;   // beta: between heads

  // ---- sizes
  int B = 0;  // batch size, 1 ... 65535
  int H = 0;  // heads, 1 ... 65535
  int K = 0;  // key dim: 64 or 128
  int V = 0;  // value dim: a multiple of 16, 16 ... 4096

  // ---- options
  float scale = 0.f;       // multiplies q (finite; the usual value is K^-0.5)
  bool l2norm_qk = false;  // L2-normalise q and k in the kernel first (see the header comment)
  StepVariant variant = StepVariant::kLinear;
  StepDtype dtype = StepDtype::kBF16;  // element type of q, k, v, o
  int cols_per_block = 0;  // value columns per thread block: 16, 32, or 0 = chosen by the launcher
  void* stream = nullptr;  // cudaStream_t to launch on (nullptr: the legacy default stream)
};

// "" (an empty string) when p is valid, otherwise a static string saying what is wrong. The launcher runs
// it and returns cudaErrorInvalidValue on failure.
const char* recurrent_step_check(const RecurrentStepParams& p);

// The value columns per block the launcher uses for p (p.cols_per_block, or its own choice when 0).
int recurrent_step_cols_per_block(const RecurrentStepParams& p);

// One step for every (b, h): reads h0, q, k, v, g, beta; writes o and ht. One kernel launch, asynchronous
// on p.stream; returns the launch error, if any (cudaErrorInvalidValue when the check fails).
cudaError_t launch_recurrent_step(const RecurrentStepParams& p);

}  // namespace attnlab::kernels
