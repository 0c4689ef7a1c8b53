// Binding of the fused causal short convolution (kernels/fused/params.h, ShortConvParams) to torch tensors,
// with autograd. The libtorch reference (and the CPU path) is ShortConvImpl's own (mixers/short_conv.cpp).
//
// Only the plain tensor API and <cuda_runtime.h> are used (a CPU-only libtorch compiles this too); launches
// go to the legacy default stream, on the tensors' device.
#pragma once

#include <torch/torch.h>

#include <string>

namespace attnlab::ops::cuda {

// y = act(causal depthwise conv(x) + bias), differentiable in x, weight and bias: x [B, T, C] float32, bf16
// or fp16 on a CUDA device (the C axis contiguous; other strides free, e.g. a slice of a wider projection),
// weight [C, K] float32 (2 <= K <= 4), bias [C] float32 or undefined, silu: SiLU after the conv. The sequence
// starts at t = 0 (zeros before it). Returns a contiguous [B, T, C] tensor of x's dtype. The backward saves x
// only (z is recomputed). Throws attnlab::Error on inputs short_conv_unusable_reason rejects.
torch::Tensor short_conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         bool silu);

// Empty when short_conv takes these inputs; otherwise the reason, phrased for a log line.
std::string short_conv_unusable_reason(const torch::Tensor& x, const torch::Tensor& weight,
                                       const torch::Tensor& bias);

// ---- raw passes with caller-owned outputs (tests poison them; no autograd). y, dy, dx contiguous [B, T, C]
// of x's dtype; dweight [C, K], dbias [C] (or undefined without bias) float32, overwritten.
void short_conv_fwd_into(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         bool silu, const torch::Tensor& y);
void short_conv_bwd_into(const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, bool silu, const torch::Tensor& dx,
                         const torch::Tensor& dweight, const torch::Tensor& dbias);

}  // namespace attnlab::ops::cuda
