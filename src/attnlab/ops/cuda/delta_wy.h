// Binding of the delta-rule WY preparation (kernels/delta_wy/params.h) to torch tensors, with autograd: the
// per-chunk factors W, U and the in-chunk cumulative gate G that the chunk recurrence (delta_chunk.h) takes.
#pragma once

#include <cuda_runtime.h>
#include <torch/torch.h>

#include <vector>

namespace attnlab::ops::cuda {

// {W [B, T, H, K], U [B, T, H, V] (k's dtype), G [B, T, H] float32 (an empty tensor without g)} of chunks of
// 64 tokens: W = M (beta exp(G) K), U = M (beta V), M = (I + strictly_lower(diag(beta) K K^T exp(G_t -
// G_s)))^-1; differentiable in k, v, beta and g. k, v: CUDA, one 16-bit dtype (bf16 or fp16), K = V = 64 or
// 128; beta [B, T, H] and g [B, T, H] (or undefined: DeltaNet) any floating type (used as float32).
//
// fork (the streamed forward, docs/kernels.md): when given, the preparation is queued on a side stream,
// chunk by chunk with a ready flag per chunk (fork->ready), and returns before it is ordered with the
// default stream: nothing may read W, U, G until delta_chunk_recurrence(..., fork) takes them (its walk
// waits for each chunk's flag) or the fork is joined (its destructor, at the latest).
struct WyFork;
std::vector<torch::Tensor> delta_wy_prepare(const torch::Tensor& k, const torch::Tensor& v,
                                            const torch::Tensor& beta, const torch::Tensor& g,
                                            WyFork* fork = nullptr);

// The state of one streamed forward between delta_wy_prepare and delta_chunk_recurrence: the per-chunk ready
// flags ([B, H, ceil(T / 64)] int32) and the event that marks the preparation's end on its stream.
struct WyFork {
  torch::Tensor ready;
  cudaEvent_t done = nullptr;
  int device = 0;
  // The default stream waits for the preparation (where the recurrence does not take the flags, or on an
  // error between the two calls). Idempotent.
  void join();
  ~WyFork() { join(); }
  WyFork() = default;
  WyFork(const WyFork&) = delete;
  WyFork& operator=(const WyFork&) = delete;
};

}  // namespace attnlab::ops::cuda
