// Simple GLA (one scalar log decay per head and step; Mamba2/SSD's recurrence) and RetNet retention.
#pragma once

#include <torch/torch.h>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

// S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t (Dao & Gu 2024; FLA's simple_gla).
// Reads q, k [B,T,H,K], v [B,T,H,V], g [B,T,H] (log decay, <= 0; required) and h0 [B,H,K,V] (optional).
// Impl: naive (a loop over t), chunk (chunkwise, args.chunk_size), kernel and automatic as linear_attention
// (the decode step, the linear_chunk kernels with their gate). Accumulates in float32 (float64 for float64
// inputs); o has v's dtype.
RecurrentOut simple_gla(const RecurrentArgs& args, Impl impl = Impl::automatic);

// RetNet retention (Sun et al. 2023): simple_gla with the fixed per-head decay gamma_h = 1 - 2^(-5-h), i.e.
// g[b, t, h] = log(gamma_h). Reads q, k, v and h0 like simple_gla; args.g must be undefined.
RecurrentOut retention(const RecurrentArgs& args, Impl impl = Impl::automatic);

// log(gamma_h) = log(1 - 2^(-5-h)) for h = 0..H-1: [H] with `options` (retention's gate, for the layer too).
torch::Tensor retention_log_decay(int64_t H, const torch::TensorOptions& options);

}  // namespace attnlab::ops
