// Based (Arora et al. 2024): normalised linear attention through the second-order Taylor feature map.
#pragma once

#include <torch/torch.h>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

// a_ts = 1 + x + x^2/2 with x = scale q_t.k_s, for s <= t;  o_t = sum_s a_ts v_s / (sum_s a_ts + 1e-6)
// (FLA's naive_parallel_based). Reads q, k [B,T,H,K] and v [B,T,H,V].
// Impl: naive (the quadratic definition, scores materialised), chunk (linear_attention_normalized on
// feature_map(q * scale * sqrt(K), "taylor") and feature_map(k, "taylor"), so phi(q).phi(k) = a_ts), kernel
// (not compiled in: an error), automatic (= chunk).
// No state in RecurrentArgs' [B,H,K,V] layout: Based's state is [B,H,1+K+K(K+1)/2,V+1] (Taylor features,
// normaliser column), so h0 and output_final_state are errors and ht stays undefined. For streaming, call
// linear_attention_normalized with the Taylor features directly; its h0/ht carry that state.
RecurrentOut based(const RecurrentArgs& args, Impl impl = Impl::automatic);

}  // namespace attnlab::ops
