// Simple GLA and retention: the naive recurrence and the chunkwise form with a scalar decay per step.
#include "attnlab/ops/simple_gla.h"

#include <cmath>
#include <limits>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/registry.h"

namespace attnlab::ops {
namespace {

using linear::Prepared;

// The definition, one token at a time. g [B, H, T].
RecurrentOut naive(const Prepared& p, const torch::Tensor& g, bool final_state) {
  auto S = p.S0;  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  for (int64_t t = 0; t < p.T; ++t) {
    auto q = p.q.select(2, t), k = p.k.select(2, t), v = p.v.select(2, t);  // [B, H, K], [B, H, V]
    auto decay = g.select(2, t).exp().unsqueeze(-1).unsqueeze(-1);          // [B, H, 1, 1]
    S = decay * S + k.unsqueeze(-1) * v.unsqueeze(-2);
    os.push_back(torch::matmul(q.unsqueeze(-2), S).squeeze(-2));  // [B, H, V]
  }
  auto o = os.empty() ? torch::zeros({p.B, p.H, 0, p.V}, p.v.options()) : torch::stack(os, 2);
  return linear::finish(p, o, S, final_state);
}

// Chunkwise (Yang et al. 2024, GLA paper section 3; FLA's chunk_simple_gla). With G the cumulative log
// decay from the chunk start, o_t = exp(G_t) q_t^T S_in + sum_{s<=t} exp(G_t - G_s) (q_t.k_s) v_s.
// Every exponent is <= 0, so strong gates underflow to 0 and never overflow. Spans of no step (s = t, and
// the chunk's last key) are the constant 1 rather than G_s - G_s: see linear::exclusive_cumsum.
RecurrentOut chunk(const Prepared& p, const torch::Tensor& g_bht, int64_t chunk_size, bool final_state) {
  int64_t C = linear::chunk_len(chunk_size, p.T);
  auto q = linear::to_chunks(p.q, C), k = linear::to_chunks(p.k, C);  // [B, H, N, C, K]
  auto v = linear::to_chunks(p.v, C);                                 // [B, H, N, C, V]
  auto g = linear::to_chunks(g_bht, C);                               // [B, H, N, C]
  auto G = g.cumsum(-1);                                  // [B, H, N, C] decay from the chunk start
  auto to_end = linear::reverse_exclusive_cumsum(g, -1);  // [B, H, N, C] decay from s to the end
  auto U = torch::matmul((k * to_end.exp().unsqueeze(-1)).transpose(-1, -2), v);  // [B, H, N, K, V]
  auto [S_in, S_end] = linear::scan_states(p.S0, g.sum(-1).exp().unsqueeze(-1).unsqueeze(-1), U);
  // Decay between key s and query t: exp(G_t - G_s) for s < t, 1 for s = t, 0 for s > t. The difference is
  // taken of float64 cumsums: at |G| ~ 300 (strong gates, long chunks) float32 keeps only ~2e-5 of G_t - G_s.
  // Masked in log space before exp: G_t - G_s > 0 for s > t could overflow, and inf * 0 would be NaN.
  auto opts = q.options();
  auto G64 = g.to(torch::kDouble).cumsum(-1);                             // [B, H, N, C]
  auto not_past = torch::ones({C, C}, opts.dtype(torch::kBool)).triu(0);  // [C(t), C(s)]: s >= t
  auto log_decay = (G64.unsqueeze(-1) - G64.unsqueeze(-2))
                       .to(p.dtype)
                       .masked_fill(not_past, -std::numeric_limits<double>::infinity());
  auto A =
      torch::matmul(q, k.transpose(-1, -2)) * (log_decay.exp() + torch::eye(C, opts));  // [B, H, N, C, C]
  auto o = torch::matmul(q * G.exp().unsqueeze(-1), S_in) + torch::matmul(A, v);        // [B, H, N, C, V]
  return linear::finish(p, linear::from_chunks(o, p.T), S_end, final_state);
}

// g [B, T, H], already checked.
RecurrentOut run(const char* op, const RecurrentArgs& args, const torch::Tensor& g, Impl impl) {
  linear::check_inputs(op, args);
  auto reference = [&](bool chunked) {
    auto p = linear::prepare(op, args);
    auto g_bht = linear::heads_first(g, p.dtype);  // [B, H, T]
    return chunked ? chunk(p, g_bht, args.chunk_size, args.output_final_state)
                   : naive(p, g_bht, args.output_final_state);
  };
  RecurrentArgs gated = args;
  gated.g = g;
  return linear::dispatch(
      op, impl, [&] { return reference(false); }, [&] { return reference(true); },
      linear::chunk_kernel_path(gated, /*gated=*/true));
}

}  // namespace

RecurrentOut simple_gla(const RecurrentArgs& args, Impl impl) {
  const char* op = "simple_gla";
  check_shape(op, "q", args.q, "B,T,H,K", {-1, -1, -1, -1});
  check_shape(op, "g", args.g, "B,T,H", {args.q.size(0), args.q.size(1), args.q.size(2)});
  return run(op, args, args.g, impl);
}

torch::Tensor retention_log_decay(int64_t H, const torch::TensorOptions& options) {
  auto h = torch::arange(H, torch::TensorOptions().dtype(torch::kDouble));
  return torch::log1p(-torch::pow(2.0, -5.0 - h)).to(options);  // [H]
}

RecurrentOut retention(const RecurrentArgs& args, Impl impl) {
  const char* op = "retention";
  ATTNLAB_CHECK(
      !args.g.defined(),
      "{}: the decay comes from the head index (gamma_h = 1 - 2^(-5-h)), so g must be undefined, got "
      "{}; use simple_gla for a given g",
      op, shape_str(args.g.sizes()));
  check_shape(op, "q", args.q, "B,T,H,K", {-1, -1, -1, -1});
  int64_t B = args.q.size(0), T = args.q.size(1), H = args.q.size(2);
  auto dt = args.q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto g = retention_log_decay(H, args.q.options().dtype(dt)).expand({B, T, H});  // [B, T, H]
  return run(op, args, g, impl);
}

ATTNLAB_REGISTER_OP("simple_gla", simple_gla, (std::vector<std::string>{"q", "k", "v", "g", "h0"}),
                    "S_t = exp(g_t) S_{t-1} + k_t v_t^T; o_t = scale q_t^T S_t (g [B,T,H])");
ATTNLAB_REGISTER_OP("retention", retention, (std::vector<std::string>{"q", "k", "v", "h0"}),
                    "S_t = gamma_h S_{t-1} + k_t v_t^T, gamma_h = 1 - 2^(-5-h); o_t = scale q_t^T S_t");

}  // namespace attnlab::ops
