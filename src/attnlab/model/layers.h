// Building blocks shared by the model and the mixers: RMSNorm, SwiGLU MLP, rotary position embedding, init.
#pragma once

#include <torch/torch.h>

namespace attnlab {

// RMSNorm (Zhang & Sennrich 2019): x / rms(x) * weight, computed in float32 for stability under bf16.
// On CUDA tensors the fused kernel (ops/cuda/fused.h) runs it when the build has one; rms_norm_reference
// otherwise (a fallback on CUDA is logged once).
class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(int64_t dim, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// SwiGLU MLP (Shazeer 2020): W2 (silu(W1 x) * W3 x).
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(SwiGLU);

// The SwiGLU hidden width for a ratio: ratio * dim rounded up to a multiple of 16 (tensor-core friendly).
int64_t swiglu_hidden(int64_t dim, double ratio);

// Rotary embedding (Su et al. 2021), the "rotate half" layout of GPT-NeoX / Llama: x [B, T, H, D] with
// absolute positions start .. start + T - 1. Rotates the first `rotary_dim` channels (D if 0).
torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, double theta, int64_t rotary_dim = 0);

// Same, with explicit positions [T] (int64), for caches that assign positions themselves (streaming).
// On CUDA tensors the fused kernel (ops/cuda/fused.h) runs it when the build has one; rope_reference
// otherwise (a fallback on CUDA is logged once).
torch::Tensor apply_rope_positions(const torch::Tensor& x, const torch::Tensor& positions, double theta,
                                   int64_t rotary_dim = 0);

// The libtorch forms of RMSNorm and RoPE: the CPU path and the reference the fused kernels are tested
// against. float32 math; the result has x's dtype.
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);
torch::Tensor rope_reference(const torch::Tensor& x, const torch::Tensor& positions, double theta,
                             int64_t rotary_dim = 0);

// GPT-2 style init: normal(0, std) weights, zero bias.
void init_linear(torch::nn::Linear& layer, double std);

}  // namespace attnlab
