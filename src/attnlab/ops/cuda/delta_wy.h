// Binding of the delta-rule WY preparation (kernels/delta_wy/params.h) to torch tensors, with autograd: the
// per-chunk factors W, U and the in-chunk cumulative gate G that the chunk recurrence (delta_chunk.h) takes.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace attnlab::ops::cuda {

// {W [B, T, H, K], U [B, T, H, V] (k's dtype), G [B, T, H] float32 (an empty tensor without g)} of chunks of
// 64 tokens: W = M (beta exp(G) K), U = M (beta V), M = (I + strictly_lower(diag(beta) K K^T exp(G_t -
// G_s)))^-1; differentiable in k, v, beta and g. k, v: CUDA, one 16-bit dtype (bf16 or fp16), K = V = 64 or
// 128; beta [B, T, H] and g [B, T, H] (or undefined: DeltaNet) any floating type (used as float32).
std::vector<torch::Tensor> delta_wy_prepare(const torch::Tensor& k, const torch::Tensor& v,
                                            const torch::Tensor& beta, const torch::Tensor& g);

}  // namespace attnlab::ops::cuda
