// RWKV6: the naive recurrence and the chunkwise form (GLA's, reading the state before the update).
#include "attnlab/ops/rwkv6.h"

#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/gla.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/registry.h"

namespace attnlab::ops {
namespace {

using linear::Prepared;

// The definition (FLA's naive_recurrent_rwkv6), one token at a time. g [B, H, T, K], u [1, H, K, 1].
RecurrentOut naive(const Prepared& p, const torch::Tensor& g, const torch::Tensor& u, bool final_state) {
  auto S = p.S0;  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  for (int64_t t = 0; t < p.T; ++t) {
    auto q = p.q.select(2, t), k = p.k.select(2, t), v = p.v.select(2, t);  // [B, H, K], [B, H, V]
    auto kv = k.unsqueeze(-1) * v.unsqueeze(-2);                            // [B, H, K, V]
    os.push_back(torch::matmul(q.unsqueeze(-2), S + u * kv).squeeze(-2));   // [B, H, V]
    S = g.select(2, t).exp().unsqueeze(-1) * S + kv;
  }
  auto o = os.empty() ? torch::zeros({p.B, p.H, 0, p.V}, p.v.options()) : torch::stack(os, 2);
  return linear::finish(p, o, S, final_state);
}

}  // namespace

RecurrentOut rwkv6(const RecurrentArgs& args, Impl impl) {
  const char* op = "rwkv6";
  auto p = linear::prepare(op, args);
  check_shape(op, "g", args.g, "B,T,H,K", {p.B, p.T, p.H, p.K});
  check_shape(op, "u", args.u, "H,K", {p.H, p.K});
  auto g = linear::heads_first(args.g, p.dtype);  // [B, H, T, K]
  auto u = args.u.to(p.dtype);                    // [H, K]
  return linear::dispatch(
      op, impl, [&] { return naive(p, g, u.unsqueeze(0).unsqueeze(-1), args.output_final_state); },
      [&] {
        auto [o, S] = linear::gated_chunk(p, g, args.chunk_size, /*read_before_update=*/true);
        // The current token's bonus: (r_t . (u * k_t)) v_t.
        auto bonus = (p.q * u.unsqueeze(1) * p.k).sum(-1, /*keepdim=*/true);  // [B, H, T, 1]
        return linear::finish(p, o + bonus * p.v, S, args.output_final_state);
      });
}

ATTNLAB_REGISTER_OP(
    "rwkv6", rwkv6, (std::vector<std::string>{"q", "k", "v", "g", "u", "h0"}),
    "o_t = scale q_t^T (S_{t-1} + diag(u) k_t v_t^T); S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T");

}  // namespace attnlab::ops
