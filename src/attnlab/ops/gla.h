// GLA, gated linear attention (Yang et al. 2024): a log decay per step and key channel.
#pragma once

#include <torch/torch.h>

#include <utility>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t (FLA's chunk_gla / naive_recurrent_gla).
// Reads q, k [B,T,H,K], v [B,T,H,V], g [B,T,H,K] (log decay, <= 0 and finite; required) and h0 [B,H,K,V].
// Impl: naive (a loop over t), chunk (chunkwise with secondary chunking, args.chunk_size; overflow-free
// for any gate strength), kernel (CUDA: the fused decode step for T == 1 without autograd, else the
// gla_chunk kernels, K = V = 64 or 128, bf16 / fp16, with autograd; an error saying why when they cannot
// run), automatic (the decode step on CUDA where it applies, else chunk until the chunk kernels have passed
// their GPU test; the fallback logged once).
// Accumulates in float32 (float64 for float64 inputs); o has v's dtype, ht the accumulation dtype.
RecurrentOut gla(const RecurrentArgs& args, Impl impl = Impl::automatic);

namespace linear {

// The chunkwise form of the per-channel gated recurrence, shared by gla and rwkv6. Takes p.q (scaled), p.k,
// p.v, p.S0 and g [B, H, T, K]. read_before_update = false: o_t = q_t^T S_t (GLA); true: o_t = q_t^T S_{t-1}
// (RWKV6, whose bonus term for the current token the caller adds). Returns o [B, H, T, V] and the final
// state [B, H, K, V].
std::pair<torch::Tensor, torch::Tensor> gated_chunk(const Prepared& p, const torch::Tensor& g,
                                                    int64_t chunk_size, bool read_before_update);

}  // namespace linear
}  // namespace attnlab::ops
