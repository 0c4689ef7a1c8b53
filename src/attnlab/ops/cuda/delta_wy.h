// Binding of the delta-rule WY preparation (kernels/delta_wy/params.h) to torch tensors, with autograd: the
// per-chunk factors W, U and the in-chunk cumulative gate G that the chunk recurrence (delta_chunk.h) takes.
#pragma once

#include <cuda_runtime.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

namespace attnlab::ops::cuda {

// {W [B, T, H, K], U [B, T, H, V] (k's dtype), G [B, T, H] float32 (an empty tensor without g)} of chunks of
// 64 tokens: W = M (beta exp(G) K), U = M (beta V), M = (I + strictly_lower(diag(beta) K K^T exp(G_t -
// G_s)))^-1; differentiable in k, v, beta and g. k, v: CUDA, one 16-bit dtype (bf16 or fp16), K = V = 64 or
// 128; beta [B, T, H] and g [B, T, H] (or undefined: DeltaNet) any floating type (used as float32).
//
// fork (the streamed forward, docs/kernels.md): when given, the preparation is checked and its outputs
// allocated, but its launch is left to delta_chunk_recurrence(..., fork), which queues it on a side stream
// right after its walk (chunk-major, with a ready flag per chunk that the walk waits for), so that the walk's
// blocks take their SMs first. Nothing may read W, U, G before that call; a fork that no recurrence took
// launches on the default stream when joined (its destructor, at the latest).
struct WyFork;
std::vector<torch::Tensor> delta_wy_prepare(const torch::Tensor& k, const torch::Tensor& v,
                                            const torch::Tensor& beta, const torch::Tensor& g,
                                            WyFork* fork = nullptr);

// One streamed forward between delta_wy_prepare and delta_chunk_recurrence: the preparation's launch
// parameters (opaque here), the per-chunk ready flags ([B, H, ceil(T / 64)] int32), the tensors its kernel
// reads or writes (kept alive until the default stream has waited for it), and its completion event.
struct WyFork {
  torch::Tensor ready;
  std::vector<torch::Tensor> keep;
  std::shared_ptr<void> params;  // kernels::DeltaWyParams
  cudaEvent_t done = nullptr;
  int device = 0;
  // Queues the preparation on `stream` and records `done`; once only. The flags were zeroed on the default
  // stream by delta_wy_prepare: `stream` must be ordered after that (the recurrence's start event).
  void launch(cudaStream_t stream);
  // Loads the preparation's kernel without launching it: before the walk, which must not spin while a lazily
  // loaded kernel waits for it (kernels::load_delta_wy_fwd).
  void preload();
  // The default stream waits for the preparation (launching it there first if nobody did), then the kept
  // tensors are released. Idempotent; errors are left to the next synchronizing call.
  void join();
  bool pending() const { return params && !done; }
  ~WyFork() { join(); }
  WyFork() = default;
  WyFork(const WyFork&) = delete;
  WyFork& operator=(const WyFork&) = delete;
};

}  // namespace attnlab::ops::cuda
