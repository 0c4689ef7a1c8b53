// Binding of the delta-rule chunk recurrence (kernels/delta_chunk/params.h) to torch tensors, with autograd.
// The WY factors w, u and the in-chunk cumulative gate G come from ops::delta_rule's chunk preparation
// (differentiated there by autograd); this function runs the sequential part over the chunks.
#pragma once

#include <torch/torch.h>

#include <string>

#include "attnlab/ops/cuda/delta_wy.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops::cuda {

// Empty when the kernels take these op arguments (args as for ops::delta_rule / gated_delta_rule): CUDA
// tensors, q, k, v of one dtype (bf16 or fp16), K = V = 64 or 128, T >= 1; otherwise the reason.
std::string delta_chunk_unusable_reason(const RecurrentArgs& args, bool gated);

// o [B, T, H, V] (q's dtype) and ht [B, H, K, V] float32 of the chunk recurrence (params.h), differentiable
// in q, k, w, u, G and h0. q, k, w [B, T, H, K] and u [B, T, H, V] of one 16-bit dtype (w, u are converted to
// q's), G [B, T, H] float32 or undefined (DeltaNet), h0 [B, H, K, V] or undefined; chunks of 64 tokens.
// fork: the streamed forward (delta_wy.h): w, u, G come from delta_wy_prepare(..., fork), still running.
// v_split: the walks' blocks per (b, h) over the value columns, forward and two-pass backward (1, 2, or 4
// at V = 128; 0: by the shape and the SM count); any choice gives the same bits (dG: up to float-sum order).
std::vector<torch::Tensor> delta_chunk_recurrence(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& w, const torch::Tensor& u,
                                                  const torch::Tensor& G, const torch::Tensor& h0,
                                                  double scale, int64_t v_split = 0,
                                                  WyFork* fork = nullptr);

// Whether the forward for these inputs (q [B, T, H, K], v [B, T, H, V]) runs its walk beside delta_wy's
// forward (pass a WyFork to both calls), by the shape (kernels' delta_chunk_default_stream_wy) or as
// ATTNLAB_DELTA_STREAM=0|1 says.
bool delta_chunk_streams_wy(const torch::Tensor& q, const torch::Tensor& v, bool gated);

}  // namespace attnlab::ops::cuda
