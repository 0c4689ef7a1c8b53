// GLA: the naive recurrence and the chunkwise form with secondary chunking (shared with rwkv6).
#include "attnlab/ops/gla.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/registry.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/gla_chunk.h"
#include "attnlab/ops/cuda/recurrent_step.h"
#endif

namespace attnlab::ops {
namespace linear {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Sub-chunk length for the intra-chunk scores: the largest divisor of C up to 16. Within a sub-chunk the
// scores are formed pairwise in log space ([c, c, K] per sub-chunk); 16 keeps that tensor at 16x the size
// of q, as FLA's chunk_gla does with its 16-wide sub-blocks.
int64_t sub_chunk_len(int64_t C) {
  for (int64_t c = std::min<int64_t>(16, C); c > 1; --c)
    if (C % c == 0) return c;
  return 1;
}

// Intra-chunk scores A[t, s] = sum_k q_tk k_sk exp(sum of g_.k over the steps the decay spans) for s <= t
// (GLA: steps s+1..t) or s < t (RWKV6, strict: steps s+1..t-1). q, k, g [B, H, N, C, K] -> [B, H, N, C, C].
// Numerics: exp(-cumsum) overflows float32 once a chunk's decay passes e^-88 (g = -5 per step: 18 steps),
// so every exponent here is a sum of gates over its own span, hence <= 0. The diagonal sub-blocks take the
// pairwise difference of in-block cumsums, masked in log space before exp; an off-diagonal block (query
// sub-chunk i after key sub-chunk j) factors the span into [t back to the start of i], [whole sub-chunks
// between j and i] and [s to the end of j]. Empty spans are the constant 1, not G - G (see
// exclusive_cumsum), so that dg keeps its float32 precision under strong gates.
torch::Tensor intra_scores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& g,
                           bool strict) {
  int64_t B = q.size(0), H = q.size(1), N = q.size(2), C = q.size(3), K = q.size(4);
  int64_t c = sub_chunk_len(C), M = C / c;
  auto sub = [&](const torch::Tensor& x) { return x.reshape({B, H, N, M, c, K}); };
  auto qs = sub(q), ks = sub(k), gs = sub(g);  // [B, H, N, M, c, K]
  auto opts = q.options();
  auto bool_opts = opts.dtype(torch::kBool);
  // Decay from the start of the query's sub-chunk to its state: through t (GLA) or t-1 (RWKV6).
  auto Lq = strict ? exclusive_cumsum(gs, 4) : gs.cumsum(4);  // [B, H, N, M, c, K]

  // Diagonal sub-blocks, pairwise [B, H, N, M, c(t), c(s), K]; the empty span (s = t, or s = t-1 when
  // strict) is added as the constant 1.
  auto log_decay = Lq.unsqueeze(-2) - gs.cumsum(4).unsqueeze(-3);
  auto hidden = torch::ones({c, c}, bool_opts).triu(strict ? -1 : 0).unsqueeze(-1);  // [c, c, 1]
  auto empty_span = torch::eye(c, opts);
  if (strict)
    empty_span = torch::constant_pad_nd(empty_span.narrow(0, 0, c - 1), {0, 0, 1, 0}, 0);  // s = t-1
  auto W = log_decay.masked_fill(hidden, kNegInf).exp() + empty_span.unsqueeze(-1);
  auto A_diag = (qs.unsqueeze(-2) * ks.unsqueeze(-3) * W).sum(-1);             // [B, H, N, M, c, c]
  auto blocks = A_diag.unsqueeze(4) * torch::eye(M, opts).view({M, M, 1, 1});  // [B, H, N, M(i), M(j), c, c]

  if (M > 1) {
    auto q_loc = qs * Lq.exp();                               // [B, H, N, M, c, K]
    auto k_loc = ks * reverse_exclusive_cumsum(gs, 4).exp();  // [B, H, N, M, c, K]: s to the end of j
    auto totals = gs.sum(4);                                  // [B, H, N, M, K]
    // Whole sub-chunks strictly between j and i: before i minus up to j; empty (constant 0) for i = j+1.
    auto between =
        exclusive_cumsum(totals, 3).unsqueeze(4) - totals.cumsum(3).unsqueeze(3);  // [B,H,N,M(i),M(j),K]
    auto ones = torch::ones({M, M}, bool_opts);
    auto adjacent = ones.tril(-1).logical_and(ones.tril(-2).logical_not()).unsqueeze(-1);  // i = j+1
    auto not_before = ones.triu(0).unsqueeze(-1);                                          // j >= i
    between = torch::where(adjacent, torch::zeros({}, opts), between).masked_fill(not_before, kNegInf);
    auto q_mid = q_loc.unsqueeze(4) * between.exp().unsqueeze(-2);  // [B, H, N, M(i), M(j), c, K]
    blocks = blocks + torch::matmul(q_mid, k_loc.unsqueeze(3).transpose(-1, -2));  // [B, H, N, M, M, c, c]
  }
  return blocks.permute({0, 1, 2, 3, 5, 4, 6}).reshape({B, H, N, C, C});
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> gated_chunk(const Prepared& p, const torch::Tensor& g,
                                                    int64_t chunk_size, bool read_before_update) {
  int64_t C = chunk_len(chunk_size, p.T);
  auto q = to_chunks(p.q, C), k = to_chunks(p.k, C);  // [B, H, N, C, K]
  auto v = to_chunks(p.v, C);                         // [B, H, N, C, V]
  auto gc = to_chunks(g, C);                          // [B, H, N, C, K]
  // Decay from the chunk start to the state the query reads: S_t (GLA) or S_{t-1} (RWKV6).
  auto Gq = read_before_update ? exclusive_cumsum(gc, 3) : gc.cumsum(3);     // [B, H, N, C, K]
  auto k_dec = k * reverse_exclusive_cumsum(gc, 3).exp();                    // decay from s to the end
  auto U = torch::matmul(k_dec.transpose(-1, -2), v);                        // [B, H, N, K, V]
  auto [S_in, S_end] = scan_states(p.S0, gc.sum(3).exp().unsqueeze(-1), U);  // [B, H, N, K, V]
  auto A = intra_scores(q, k, gc, read_before_update);                       // [B, H, N, C, C]
  auto o = torch::matmul(q * Gq.exp(), S_in) + torch::matmul(A, v);          // [B, H, N, C, V]
  return {from_chunks(o, p.T), S_end};
}

}  // namespace linear

namespace {

using linear::Prepared;

// The definition, one token at a time. g [B, H, T, K].
RecurrentOut naive(const Prepared& p, const torch::Tensor& g, bool final_state) {
  auto S = p.S0;  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  for (int64_t t = 0; t < p.T; ++t) {
    auto q = p.q.select(2, t), k = p.k.select(2, t), v = p.v.select(2, t);  // [B, H, K], [B, H, V]
    S = g.select(2, t).exp().unsqueeze(-1) * S + k.unsqueeze(-1) * v.unsqueeze(-2);
    os.push_back(torch::matmul(q.unsqueeze(-2), S).squeeze(-2));  // [B, H, V]
  }
  auto o = os.empty() ? torch::zeros({p.B, p.H, 0, p.V}, p.v.options()) : torch::stack(os, 2);
  return linear::finish(p, o, S, final_state);
}

// gla's CUDA kernels: the fused one-token decode step (kernels/recurrent_step) for T == 1 without autograd,
// the chunk kernels (kernels/gla_chunk, with autograd) otherwise. Both read the args as they are, so the
// kernel path skips prepare()'s layout conversions (each one a launch at decode). automatic runs them on CUDA
// (test_gpu_gla_chunk passed on the H200, 2026-12-02). `args` must outlive the path.
linear::KernelPath kernel_path(const RecurrentArgs& args) {
  linear::KernelPath k;
  k.on_cuda = args.q.is_cuda() && args.k.is_cuda() && args.v.is_cuda();
#ifdef ATTNLAB_WITH_CUDA
  auto one_token = [&args] { return args.q.dim() == 4 && args.q.size(1) == 1; };
  auto use_step = [&args, one_token] {
    return one_token() &&
           cuda::recurrent_step_unusable_reason(cuda::StepKind::key_gate, args, /*l2norm_qk=*/false).empty();
  };
  k.unusable = [&args, one_token, use_step]() -> std::string {
    if (use_step()) return {};
    auto chunk_why = cuda::gla_chunk_unusable_reason(args);
    if (chunk_why.empty()) return {};
    if (one_token())
      return fmt::format("the decode step: {}; gla chunk kernel: {}",
                         cuda::recurrent_step_unusable_reason(cuda::StepKind::key_gate, args, false),
                         chunk_why);
    return fmt::format("gla chunk kernel: {} (the one-token decode step (T == 1) does not apply: T = {})",
                       chunk_why, args.q.dim() == 4 ? args.q.size(1) : -1);
  };
  k.run = [&args, use_step] {
    return use_step() ? cuda::recurrent_step(cuda::StepKind::key_gate, args, /*l2norm_qk=*/false)
                      : cuda::gla_chunk(args);
  };
#else
  (void)args;
  k.unusable = [] {
    return std::string(
        "the CUDA kernels are not compiled into this build (no CUDA compiler when it was "
        "configured)");
  };
  k.run = []() -> RecurrentOut { fail("gla: the CUDA kernels are not compiled into this build"); };
#endif
  return k;
}

}  // namespace

RecurrentOut gla(const RecurrentArgs& args, Impl impl) {
  const char* op = "gla";
  // naive and chunk take the checked, heads-first inputs; prepared only on those paths.
  struct Inputs {
    Prepared p;
    torch::Tensor g;  // [B, H, T, K]
  };
  auto inputs = [&] {
    Inputs in{linear::prepare(op, args), {}};
    check_shape(op, "g", args.g, "B,T,H,K", {in.p.B, in.p.T, in.p.H, in.p.K});
    in.g = linear::heads_first(args.g, in.p.dtype);
    return in;
  };
  return linear::dispatch(
      op, impl,
      [&] {
        auto in = inputs();
        return naive(in.p, in.g, args.output_final_state);
      },
      [&] {
        auto in = inputs();
        auto [o, S] = linear::gated_chunk(in.p, in.g, args.chunk_size, false);
        return linear::finish(in.p, o, S, args.output_final_state);
      },
      kernel_path(args));
}

ATTNLAB_REGISTER_OP("gla", gla, (std::vector<std::string>{"q", "k", "v", "g", "h0"}),
                    "S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T; o_t = scale q_t^T S_t (g [B,T,H,K])");

}  // namespace attnlab::ops
