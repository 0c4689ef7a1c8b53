// DeltaNet and Gated DeltaNet ops: the delta-rule recurrence, naive and chunkwise (WY / UT transform).
#pragma once

#include <torch/torch.h>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

// DeltaNet (Schlag et al. 2021; Yang et al. 2024), state S [K, V] per batch and head:
//   S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T,   o_t = scale q_t^T S_t.
// Reads q, k [B,T,H,K], v [B,T,H,V], beta [B,T,H] (required) and h0 [B,H,K,V] (optional). k is used as
// given (FLA's default): callers that want the usual unit-norm q and k set args.l2norm_qk (or pass
// l2_normalize(q), l2_normalize(k)).
// Impl: naive (the definition), chunk (Yang et al. 2024, chunkwise WY representation, chunk_size from the
// args), kernel (CUDA: the fused decode step for T == 1 without autograd, else the chunk kernels of
// kernels/delta_chunk, K = V = 64 or 128, bf16 / fp16; an error saying why when neither can run), automatic
// (on CUDA the decode step where it applies; the chunk kernels once their GPU test has passed; else chunk,
// the fallback logged once).
// Accumulates in float32 (float64 when q is float64); o has v's dtype, ht the accumulation dtype.
RecurrentOut delta_rule(const RecurrentArgs& args, Impl impl = Impl::automatic);

// Gated DeltaNet (Yang, Kautz, Hatamizadeh 2025): S_t = exp(g_t) S_{t-1} first, then the delta-rule update
// on that decayed state. As delta_rule, plus g [B,T,H] (log decay, required).
RecurrentOut gated_delta_rule(const RecurrentArgs& args, Impl impl = Impl::automatic);

// x / sqrt(sum(x^2) + eps) over the last dim, computed in at least float32 and returned in x's dtype; the
// same formula as FLA's l2norm, which the DeltaNet layers apply to q and k.
torch::Tensor l2_normalize(const torch::Tensor& x, double eps = 1e-6);

}  // namespace attnlab::ops
