// RWKV6 "Finch" (Peng et al. 2024): GLA's decay, the state read before the update, a current-token bonus.
#pragma once

#include <torch/torch.h>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

// o_t = scale r_t^T (S_{t-1} + diag(u) k_t v_t^T), then S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T.
// Reads q (RWKV's receptance r) and k [B,T,H,K], v [B,T,H,V], g [B,T,H,K] (log of the decay w_t, i.e.
// -exp(d_t); <= 0 and finite; required), u [H,K] (required) and h0 [B,H,K,V] (optional).
// Scale: as every op, args.scale <= 0 means K^-0.5, which is also the default of FLA's chunk_rwkv6 and
// naive_recurrent_rwkv6. The RWKV6 model itself does not scale r: its layer passes scale = 1.0, as FLA's
// RWKV6Attention layer does (chunk_rwkv6(..., scale=1.)).
// Impl: naive (a loop over t), chunk (GLA's chunk form reading S_{t-1}, plus the bonus term), kernel (not
// compiled in: an error), automatic (= chunk). Accumulates in float32 (float64 for float64 inputs).
RecurrentOut rwkv6(const RecurrentArgs& args, Impl impl = Impl::automatic);

}  // namespace attnlab::ops
