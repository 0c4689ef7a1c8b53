// FlashAttention-2-style forward and backward kernels (tensor cores through mma.sync, sm_80 / sm_90).
// This struct is the whole interface: kernels never see torch; the binding fills it from tensors.
//
// Supported: head dim 64 or 128, bf16 or fp16 (flash_attn_supported); anything else must fall back
// to another path (the launchers return cudaErrorInvalidValue). Layout requirements (checked by
// flash_attn_check): the last (head-dim) axis contiguous; every batch / row / head stride a
// multiple of 8 elements and every tensor pointer 16-byte aligned (the kernels move 16-byte
// chunks); lse / dq_accum / softmax_d contiguous as documented below.
//
// Semantics: for query i (0 <= i < Tq) and key j (0 <= j < Tk), with the query aligned to the
// bottom-right corner (i' = i + Tk - Tq, as in FlashAttention >= 2.1):
//   causal:     key j is visible iff j <= i'
//   window > 0: key j is visible iff i' - window < j <= i'   (a window implies the causal bound)
//   o_i = sum_j softmax_j(scale * q_i . k_j) v_j over the visible keys; a row that sees no key
//   (possible when Tq > Tk) gets o_i = 0 and lse_i = +inf, and contributes nothing to the gradients.
// GQA / MQA: query head h reads key/value head h / (H / Hkv); dk, dv sum over the H / Hkv query
// heads of a group.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace attnlab::kernels {

// Element type of q, k, v, o, do, dq, dk, dv (all the same). lse and the workspaces are float32.
enum class FlashDtype : int { kBF16 = 0, kFP16 = 1 };

struct FlashAttnParams {
  // ---- forward inputs / outputs. Element (b, i, h, d) of x is at x + b*x_batch_stride +
  // ---- i*x_row_stride + h*x_head_stride + d (strides in elements, see below).
  const void* q = nullptr;  // [B, Tq, H, D] queries, read by forward and backward
  const void* k = nullptr;  // [B, Tk, Hkv, D] keys, read by forward and backward
  const void* v = nullptr;  // [B, Tk, Hkv, D] values, read by forward and backward
  void* o = nullptr;        // [B, Tq, H, D] output: written by forward, read by backward
  float* lse = nullptr;     // [B, H, Tq] contiguous float32 log-sum-exp (natural log) of the scaled
                            // scores: written by forward, read by backward; +inf for a row with no key

  // ---- backward only
  const void* dout = nullptr;  // [B, Tq, H, D] gradient of o ("do" is a C++ keyword)
  void* dq = nullptr;          // [B, Tq, H, D] gradient of q (written)
  void* dk = nullptr;          // [B, Tk, Hkv, D] gradient of k, summed over the query heads of a group
  void* dv = nullptr;          // [B, Tk, Hkv, D] gradient of v, summed likewise
  float* dq_accum = nullptr;   // workspace [B, H, Tq, D] contiguous float32: dq accumulated by atomics
  float* softmax_d = nullptr;  // workspace [B, H, Tq] contiguous float32: D_i = rowsum(do_i * o_i)

  // ---- strides in elements (the head-dim stride is 1)
  int64_t q_batch_stride = 0;   // q: between batches
  int64_t q_row_stride = 0;     // q: between tokens
  int64_t q_head_stride = 0;    // q: between heads
  int64_t k_batch_stride = 0;   // k: between batches
  int64_t k_row_stride = 0;     // k: between tokens
  int64_t k_head_stride = 0;    // k: between heads
  int64_t v_batch_stride = 0;   // v: between batches
  int64_t v_row_stride = 0;     // v: between tokens
  int64_t v_head_stride = 0;    // v: between heads
  int64_t o_batch_stride = 0;   // o: between batches
  int64_t o_row_stride = 0;     // o: between tokens
  int64_t o_head_stride = 0;    // o: between heads
  int64_t do_batch_stride = 0;  // dout: between batches
  int64_t do_row_stride = 0;    // dout: between tokens
  int64_t do_head_stride = 0;   // dout: between heads
  int64_t dq_batch_stride = 0;  // dq: between batches
  int64_t dq_row_stride = 0;    // dq: between tokens
  int64_t dq_head_stride = 0;   // dq: between heads
  int64_t dk_batch_stride = 0;  // dk: between batches
  int64_t dk_row_stride = 0;    // dk: between tokens
  int64_t dk_head_stride = 0;   // dk: between heads
  int64_t dv_batch_stride = 0;  // dv: between batches
  int64_t dv_row_stride = 0;    // dv: between tokens
  int64_t dv_head_stride = 0;   // dv: between heads

  // ---- sizes
  int B = 0;    // batch size
  int Tq = 0;   // query length
  int Tk = 0;   // key / value length
  int H = 0;    // query heads
  int Hkv = 0;  // key / value heads; divides H (H == Hkv: MHA, 1: MQA, else GQA)
  int D = 0;    // head dim: 64 or 128

  // ---- attention options
  float scale = 0.f;    // softmax scale (> 0), usually 1/sqrt(D)
  bool causal = false;  // bottom-right aligned causal mask (see the header comment)
  int window = 0;       // sliding window length (keys i'-window < j <= i'); 0 = off; > 0 implies causal
  FlashDtype dtype = FlashDtype::kBF16;  // element type of the 16-bit tensors
  void* stream = nullptr;                // cudaStream_t to launch on (nullptr: the legacy default stream)
  // 1: the backward's main kernel on Hopper's wgmma (flash_bwd_wgmma.cuh; a build with sm_90a code, an sm_90
  // device); 0: the mma.sync kernel (any head dim, sm_80 on). Same inputs, outputs and workspaces.
  int bwd_wgmma = 0;
};

// True when this build holds the sm_90a code of the wgmma backward (CMAKE_CUDA_ARCHITECTURES with 90a).
bool flash_attn_has_wgmma();

// True when the kernels handle this head dim and dtype (D = 64 or 128; bf16 or fp16).
bool flash_attn_supported(int head_dim, FlashDtype dtype);

// nullptr when p is valid for the forward (backward = false) or the backward (backward = true),
// otherwise a static string saying what is wrong. The launchers run it and return
// cudaErrorInvalidValue on failure.
const char* flash_attn_check(const FlashAttnParams& p, bool backward);

// Forward: writes o and lse. Asynchronous on p.stream; returns the launch error, if any.
cudaError_t launch_flash_attn_fwd(const FlashAttnParams& p);

// Bytes of float32 workspace the backward needs (dq_accum, then softmax_d, each 256-byte aligned).
size_t flash_attn_bwd_workspace_bytes(const FlashAttnParams& p);
// Points p.dq_accum and p.softmax_d into a caller-allocated device buffer of at least
// flash_attn_bwd_workspace_bytes(p) bytes, 256-byte aligned (cudaMalloc's are).
void flash_attn_set_bwd_workspace(FlashAttnParams& p, void* workspace);

// Backward: reads q, k, v, o, lse, dout; writes dq, dk, dv (and the workspaces). Launches, in order
// on p.stream: a zero fill of dq_accum, D_i = rowsum(do * o), the main kernel (one block per key
// block and key head; dq through float32 atomics), and dq = scale * dq_accum converted.
cudaError_t launch_flash_attn_bwd(const FlashAttnParams& p);

}  // namespace attnlab::kernels
