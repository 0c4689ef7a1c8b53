// Binding of our flash-attention kernels (kernels/flash_attn/params.h) to torch tensors, with autograd.
//
// Only the plain tensor API and <cuda_runtime.h> are used (no ATen/cuda, c10/cuda: a CPU-only libtorch
// compiles this too). Every launch goes to the legacy default stream (stream nullptr), which is the stream
// PyTorch works on unless a caller switched streams; code that sets another current stream must sync
// with the default stream before and after these calls. The device is set to the tensors' device for the
// duration of a call.
#pragma once

#include <torch/torch.h>

#include <array>
#include <string>

#include "attnlab/ops/softmax_attention.h"

namespace attnlab::ops::cuda {

// The attention options the kernels take (see params.h for the semantics).
struct FlashAttnOptions {
  double scale = 0;    // > 0, multiplies q.k
  bool causal = true;  // bottom-right aligned causal mask
  int64_t window = 0;  // > 0: keys i' - window < j <= i' (implies causal); 0 = off
};

// Differentiable attention through the kernels: q [B, Tq, H, D], k / v [B, Tk, Hkv, D], bf16 or fp16 on
// one CUDA device, D = 64 or 128, Hkv dividing H, last dim contiguous, strides multiples of 8 elements,
// 16-byte aligned. Returns o [B, Tq, H, D]. The backward saves q, k, v, o and lse [B, H, Tq] and allocates
// dq, dk, dv and the float32 workspace with torch::empty on the device. Throws attnlab::Error on bad input.
torch::Tensor flash_attn_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const FlashAttnOptions& opt);

// The same for SoftmaxArgs that flash_attn_usable accepts; inputs whose layout the kernel cannot read
// (strides not multiples of 8, misaligned) are copied to contiguous tensors first.
torch::Tensor flash_attn_softmax(const SoftmaxArgs& args);

// Raw passes with caller-owned outputs (tests poison them; no autograd). o [B, Tq, H, D] and
// lse [B, H, Tq] float32 contiguous are written by the forward; dq, dk, dv by the backward.
void flash_attn_fwd_into(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         const torch::Tensor& o, const torch::Tensor& lse, const FlashAttnOptions& opt);
void flash_attn_bwd_into(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const torch::Tensor& o, const torch::Tensor& lse,
                         const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv,
                         const FlashAttnOptions& opt);

// Empty when the kernels handle these args (CUDA tensors, bf16 / fp16 alike, head dim 64 or 128 for both
// q.k and v, no attention sinks, a window only with causal, q_offset default or Tk - Tq); otherwise the
// reason, phrased for a log line: "head dim 96 not in the flash kernel (64, 128)".
std::string flash_attn_unusable_reason(const SoftmaxArgs& args);
bool flash_attn_usable(const SoftmaxArgs& args);

}  // namespace attnlab::ops::cuda
