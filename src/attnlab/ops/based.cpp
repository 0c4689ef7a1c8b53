// Based: the quadratic definition and the chunkwise form through the Taylor feature map.
#include "attnlab/ops/based.h"

#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/registry.h"

namespace attnlab::ops {
namespace {

// FLA's naive_parallel_based adds this to the normaliser (the fixture's value).
constexpr double kEps = 1e-6;

// The definition with the scores materialised: [B, H, T, T].
RecurrentOut naive(const linear::Prepared& p) {
  auto x = torch::matmul(p.q, p.k.transpose(-1, -2));  // [B, H, T, T], q already scaled
  auto future = torch::ones({p.T, p.T}, x.options().dtype(torch::kBool)).triu(1);
  auto a = (1 + x + 0.5 * x * x).masked_fill(future, 0);
  auto o = torch::matmul(a, p.v) / (a.sum(-1, /*keepdim=*/true) + kEps);  // [B, H, T, V]
  return linear::finish(p, o, {}, false);
}

// The linear form: phi(q').phi(k) = 1 + q'.k / sqrt(K) + (q'.k)^2 / (2K) with q' = q * scale * sqrt(K) gives
// 1 + x + x^2/2 for x = scale q.k, so the normalised linear attention on the features is the op.
RecurrentOut chunk(const RecurrentArgs& args, double scale, torch::ScalarType dt) {
  int64_t K = args.q.size(3);
  RecurrentArgs f;
  f.q = feature_map(args.q.to(dt) * (scale * std::sqrt(static_cast<double>(K))), "taylor");  // [B, T, H, F]
  f.k = feature_map(args.k.to(dt), "taylor");                                                // [B, T, H, F]
  f.v = args.v;
  f.scale = 1.0;
  f.chunk_size = args.chunk_size;
  return linear_attention_normalized(f, Impl::chunk, kEps);
}

}  // namespace

RecurrentOut based(const RecurrentArgs& args, Impl impl) {
  const char* op = "based";
  ATTNLAB_CHECK(!args.h0.defined() && !args.output_final_state,
                "{}: has no state in the [B,H,K,V] layout (its state is the Taylor-feature state "
                "[B,H,1+K+K(K+1)/2,V+1]), so h0 and output_final_state are not supported; for streaming use "
                "linear_attention_normalized on feature_map(x, \"taylor\"), whose h0/ht carry that state",
                op);
  ATTNLAB_CHECK(!args.g.defined(), "{}: takes no gate g (got {})", op, shape_str(args.g.sizes()));
  auto p = linear::prepare(op, args);
  double scale = args.scale > 0 ? args.scale : 1.0 / std::sqrt(static_cast<double>(p.K));
  return linear::dispatch(
      op, impl, [&] { return naive(p); }, [&] { return chunk(args, scale, p.dtype); });
}

ATTNLAB_REGISTER_OP(
    "based", based, (std::vector<std::string>{"q", "k", "v"}),
    "a_ts = 1 + x + x^2/2, x = scale q_t.k_s (s <= t); o_t = sum_s a_ts v_s / (sum_s a_ts + 1e-6)");

}  // namespace attnlab::ops
