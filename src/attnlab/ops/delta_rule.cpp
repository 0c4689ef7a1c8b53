// The delta-rule ops (DeltaNet, Gated DeltaNet): checks, the naive recurrence, the chunkwise form.
#include "attnlab/ops/delta_rule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/registry.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/delta_chunk.h"
#include "attnlab/ops/cuda/delta_wy.h"
#include "attnlab/ops/cuda/fused.h"
#include "attnlab/ops/cuda/recurrent_step.h"
#include "kernels/linear_chunk/params.h"
#endif

namespace attnlab::ops {
namespace {

// The inputs after checking: [B, H, T, D] / [B, H, T] layout, accumulation dtype, scale applied to q.
struct Prepared {
  int64_t B, T, H, K, V;
  torch::ScalarType v_dtype;
  torch::Tensor q, k, v;  // [B, H, T, K], [B, H, T, K], [B, H, T, V]; q already multiplied by scale
  torch::Tensor beta;     // [B, H, T]
  torch::Tensor g;        // [B, H, T], undefined for the ungated op
  torch::Tensor S0;       // [B, H, K, V]
};

Prepared prepare(const char* op, const RecurrentArgs& a, bool gated) {
  check_shape(op, "q", a.q, "B,T,H,K", {-1, -1, -1, -1});
  Prepared p{};
  p.B = a.q.size(0), p.T = a.q.size(1), p.H = a.q.size(2), p.K = a.q.size(3);
  check_shape(op, "k", a.k, "B,T,H,K", {p.B, p.T, p.H, p.K});
  check_shape(op, "v", a.v, "B,T,H,V", {p.B, p.T, p.H, -1});
  p.V = a.v.size(3);
  check_shape(op, "beta", a.beta, "B,T,H", {p.B, p.T, p.H});
  if (gated) {
    check_shape(op, "g", a.g, "B,T,H", {p.B, p.T, p.H});
  } else {
    ATTNLAB_CHECK(!a.g.defined(), "{}: takes no gate g (got {}); gated_delta_rule is the gated op", op,
                  shape_str(a.g.sizes()));
  }
  if (a.h0.defined()) check_shape(op, "h0", a.h0, "B,H,K,V", {p.B, p.H, p.K, p.V});
  ATTNLAB_CHECK(a.chunk_size >= 1, "{}: chunk_size must be >= 1, got {}", op, a.chunk_size);
  for (const auto* t : {&a.q, &a.k, &a.v, &a.beta, &a.g, &a.h0})
    ATTNLAB_CHECK(!t->defined() || t->is_floating_point(),
                  "{}: q, k, v, g, beta, h0 must be floating point, got {}", op,
                  c10::toString(t->scalar_type()));

  // States accumulate in float32 (mechanisms.md); float64 inputs stay float64 so that the float64 tests
  // can check the chunk form against the definition to 1e-10.
  auto dt = a.q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(p.K));
  p.v_dtype = a.v.scalar_type();
  p.q = a.q.to(dt).transpose(1, 2) * scale;
  p.k = a.k.to(dt).transpose(1, 2);
  p.v = a.v.to(dt).transpose(1, 2);
  p.beta = a.beta.to(dt).transpose(1, 2);
  if (gated) p.g = a.g.to(dt).transpose(1, 2);
  p.S0 = a.h0.defined() ? a.h0.to(dt) : torch::zeros({p.B, p.H, p.K, p.V}, p.q.options());
  return p;
}

RecurrentOut finish(const Prepared& p, const torch::Tensor& o, const torch::Tensor& S, bool final_state) {
  RecurrentOut out;
  out.o = o.transpose(1, 2).to(p.v_dtype);  // [B, H, T, V] -> [B, T, H, V]
  if (final_state) out.ht = S;
  return out;
}

// The definition, one token at a time.
RecurrentOut naive(const Prepared& p, bool final_state) {
  auto S = p.S0;  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  os.reserve(static_cast<size_t>(p.T));
  for (int64_t t = 0; t < p.T; ++t) {
    auto q = p.q.select(2, t), k = p.k.select(2, t), v = p.v.select(2, t);  // [B, H, K], [B, H, V]
    auto beta = p.beta.select(2, t).unsqueeze(-1);                          // [B, H, 1]
    if (p.g.defined()) S = S * p.g.select(2, t).exp().unsqueeze(-1).unsqueeze(-1);
    auto kS = torch::matmul(k.unsqueeze(-2), S).squeeze(-2);      // [B, H, V]: k_t^T S
    S = S + k.unsqueeze(-1) * (beta * (v - kS)).unsqueeze(-2);    // [B, H, K, V]
    os.push_back(torch::matmul(q.unsqueeze(-2), S).squeeze(-2));  // [B, H, V]
  }
  auto o = p.T > 0 ? torch::stack(os, 2) : torch::zeros({p.B, p.H, 0, p.V}, p.q.options());  // [B, H, T, V]
  return finish(p, o, S, final_state);
}

// [B, H, T, D] or [B, H, T] -> zero-padded to T + pad along T, then split into [B, H, N, C, ...] chunks.
torch::Tensor to_chunks(const torch::Tensor& x, int64_t pad, int64_t N, int64_t C) {
  bool has_d = x.dim() == 4;
  auto y = pad == 0 ? x
                    : torch::constant_pad_nd(
                          x, has_d ? std::vector<int64_t>{0, 0, 0, pad} : std::vector<int64_t>{0, pad});
  if (has_d) return y.reshape({x.size(0), x.size(1), N, C, x.size(3)});
  return y.reshape({x.size(0), x.size(1), N, C});
}

// The chunkwise form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence
// Length", sec. 3; the gated extension of Gated DeltaNet, sec. 3.3). Within a chunk with cumulative log decay
// G_i = g_1 + ... + g_i and start state S, the state after step i is
//   S_i = exp(G_i) S + sum_{j<=i} exp(G_i - G_j) k_j u_j^T,
//   u_j = beta_j (v_j - exp(G_j) k_j^T S - sum_{l<j} exp(G_j - G_l) (k_j.k_l) u_l),
// i.e. (I + A) u = beta V - diag(beta exp(G)) K S with A = strictly-lower(diag(beta) K K^T * exp(G_i - G_j)).
// With M = (I + A)^-1 (the UT transform): u = U - W S, U = M (beta V), W = M (beta exp(G) K); both depend
// only on the chunk, so every chunk's triangular solve runs at once and only the [K, V] state is sequential.
// Padding the tail with k = v = beta = g = 0 leaves the state unchanged, so T need not divide by C.
// The per-chunk tensors of the chunk form, computed for every chunk at once ([B, H, N, C, ...]).
struct Chunked {
  int64_t C = 0, N = 0;
  torch::Tensor qd;           // exp(G_i) q_i (q scaled)
  torch::Tensor qk;           // (q_i . k_j) exp(G_i - G_j) for j <= i, else 0
  torch::Tensor kd;           // exp(G_C - G_i) k_i
  torch::Tensor chunk_decay;  // [B, H, N, 1, 1] exp(G_C); undefined without a gate
  torch::Tensor G;            // [B, H, N, C] float64 in-chunk cumulative log decay; undefined without a gate
  torch::Tensor W, U;         // the WY factors: M (beta exp(G) K) [.., K], M (beta V) [.., V]
};

Chunked chunked(const Prepared& p, int64_t C) {
  int64_t N = (p.T + C - 1) / C, pad = N * C - p.T;
  auto q = to_chunks(p.q, pad, N, C);        // [B, H, N, C, K]
  auto k = to_chunks(p.k, pad, N, C);        // [B, H, N, C, K]
  auto v = to_chunks(p.v, pad, N, C);        // [B, H, N, C, V]
  auto beta = to_chunks(p.beta, pad, N, C);  // [B, H, N, C]

  auto opts = k.options().dtype(torch::kBool);
  auto causal = torch::ones({C, C}, opts).tril();   // [C, C] j <= i
  auto kb = k * beta.unsqueeze(-1);                 // [B, H, N, C, K] beta_i k_i
  auto A = torch::matmul(kb, k.transpose(-1, -2));  // [B, H, N, C, C] beta_i k_i.k_j
  auto qk = torch::matmul(q, k.transpose(-1, -2));  // [B, H, N, C, C] q_i.k_j
  torch::Tensor kw = kb, qd = q, kd = k, chunk_decay, G;
  if (p.g.defined()) {
    // The gate arithmetic runs in float64: at strong decay G reaches |sum g| ~ 300 within a chunk, and a
    // float32 difference G_i - G_j of two such numbers is off by ~300 * 6e-8 = 2e-5, an error of 2e-5 in
    // every decay factor and in dg (measured: dg off by 1.5e-5 against the naive form at g ~ -5, chunk 64;
    // 2.3e-7 with float64 here).
    auto dd = [&](const torch::Tensor& x) { return x.exp().to(k.scalar_type()); };
    G = to_chunks(p.g.to(torch::kDouble), pad, N, C).cumsum(-1);  // [B, H, N, C]
    // exp(G_i - G_j) only where j <= i: the masked exponents (positive, up to |sum g|) would overflow to
    // inf and turn into NaN in the products and their gradients, so they become -inf before exp.
    auto diff = G.unsqueeze(-1) - G.unsqueeze(-2);  // [B, H, N, C, C]
    auto decay = dd(diff.masked_fill(causal.logical_not(), -std::numeric_limits<double>::infinity()));
    A = A * decay;
    qk = qk * decay;
    auto last = G.select(-1, C - 1).unsqueeze(-1);  // [B, H, N, 1]
    kw = kb * dd(G).unsqueeze(-1);                  // [B, H, N, C, K] beta_i exp(G_i) k_i
    qd = q * dd(G).unsqueeze(-1);                   // [B, H, N, C, K] exp(G_i) q_i
    kd = k * dd(last - G).unsqueeze(-1);            // [B, H, N, C, K] exp(G_C - G_i) k_i
    chunk_decay = dd(last).unsqueeze(-1);           // [B, H, N, 1, 1]
  } else {
    qk = qk.masked_fill(causal.logical_not(), 0.0);
  }
  // The unit diagonal of (I + A) is implicit (unitriangular) and the solver reads only the strictly lower
  // part of A; its backward likewise gives A a strictly lower gradient.
  auto rhs = torch::cat({kw, v * beta.unsqueeze(-1)}, -1);  // [B, H, N, C, K + V]
  // The solve runs in (at least) float32: under CUDA autocast A and rhs arrive in bf16, which the triangular
  // solver does not take (and would be too coarse for the WY recursion anyway).
  const auto solve_dtype = A.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto WU =
      at::linalg_solve_triangular(A.to(solve_dtype), rhs.to(solve_dtype), /*upper=*/false, /*left=*/true,
                                  /*unitriangular=*/true);
  Chunked out;
  out.C = C, out.N = N, out.qd = qd, out.qk = qk, out.kd = kd, out.chunk_decay = chunk_decay, out.G = G;
  out.W = WU.narrow(-1, 0, p.K);    // [B, H, N, C, K]
  out.U = WU.narrow(-1, p.K, p.V);  // [B, H, N, C, V]
  return out;
}

RecurrentOut chunk(const Prepared& p, int64_t chunk_size, bool final_state) {
  if (p.T == 0) return naive(p, final_state);
  // A shorter sequence is one chunk: no padding to compute.
  auto c = chunked(p, std::min(chunk_size, p.T));
  const int64_t N = c.N;
  const auto &W = c.W, &U = c.U, &qd = c.qd, &qk = c.qk, &kd = c.kd, &chunk_decay = c.chunk_decay;

  auto S = p.S0;  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  os.reserve(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    auto u = U.select(2, n) - torch::matmul(W.select(2, n), S);                           // [B, H, C, V]
    os.push_back(torch::matmul(qd.select(2, n), S) + torch::matmul(qk.select(2, n), u));  // [B, H, C, V]
    auto Sd = chunk_decay.defined() ? S * chunk_decay.select(2, n) : S;                   // [B, H, K, V]
    S = Sd + torch::matmul(kd.select(2, n).transpose(-1, -2), u);                         // [B, H, K, V]
  }
  auto o = torch::cat(os, 2).narrow(2, 0, p.T);  // [B, H, T, V]
  return finish(p, o, S, final_state);
}

// The op's argument checks that the kernel path needs beyond chunk_kernel_unusable_reason (which checks q, k,
// v, g and the devices): beta, h0 and the gate's presence, as prepare() does, without its float32 copies.
void check_kernel_args(const char* op, const RecurrentArgs& a, bool gated) {
  const int64_t B = a.q.size(0), T = a.q.size(1), H = a.q.size(2), K = a.q.size(3), V = a.v.size(3);
  check_shape(op, "beta", a.beta, "B,T,H", {B, T, H});
  ATTNLAB_CHECK(a.beta.is_floating_point(), "{}: beta must be floating point, got {}", op,
                c10::toString(a.beta.scalar_type()));
  if (gated) {
    check_shape(op, "g", a.g, "B,T,H", {B, T, H});
  } else {
    ATTNLAB_CHECK(!a.g.defined(), "{}: takes no gate g (got {}); gated_delta_rule is the gated op", op,
                  shape_str(a.g.sizes()));
  }
  if (a.h0.defined()) check_shape(op, "h0", a.h0, "B,H,K,V", {B, H, K, V});
}

// The chunk kernels: the WY factors W, U and the in-chunk gate cumsum G of every chunk from the fused
// preparation (kernels/delta_wy), then the sequential part over the chunks from kernels/delta_chunk. Both are
// autograd Functions: dW, dU, dG of the recurrence flow into the preparation's backward, and k's gradient is
// the sum of both shares.
RecurrentOut via_chunk_kernel(const char* op, const RecurrentArgs& a, bool gated) {
#ifdef ATTNLAB_WITH_CUDA
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(a.q.size(3)));
  check_kernel_args(op, a, gated);
  // The streamed forward where the walk leaves SMs idle (cuda::delta_chunk_streams_wy): the preparation runs
  // on a side stream while the walk takes each chunk's factors as they are stored. Nothing between the two
  // calls may read W, U, G (the fork joins the default stream in the second call, or on leaving this scope).
  cuda::WyFork fork;
  const bool streamed = cuda::delta_chunk_streams_wy(a.q, a.v, gated);
  auto wy = cuda::delta_wy_prepare(a.k, a.v, a.beta, gated ? a.g : torch::Tensor(), streamed ? &fork : nullptr);
  torch::Tensor W = wy[0], U = wy[1],
                G = gated ? wy[2] : torch::Tensor();  // [B, T, H, K], [.., V], [B, T, H]
  auto out = cuda::delta_chunk_recurrence(a.q, a.k, W, U, G, a.h0, scale, 0, streamed ? &fork : nullptr);
  RecurrentOut r;
  r.o = out[0].to(a.v.scalar_type());
  if (a.output_final_state) r.ht = out[1];
  return r;
#else
  (void)a, (void)gated;
  fail("{}: this build has no CUDA kernels", op);
#endif
}

// The CUDA kernels of the delta ops: the fused one-token decode step (kernels/recurrent_step) for T == 1
// without autograd, the chunk kernels (kernels/delta_chunk) otherwise. q and k are used as given, as in naive
// and chunk, unless args.l2norm_qk (which the DeltaNet layers set). Each returns why it cannot take the args
// (empty: it can), a phrase for a log line or an error.
std::string step_unusable_reason(const RecurrentArgs& a, bool gated) {
  if (a.q.defined() && a.q.dim() == 4 && a.q.size(1) != 1) return "the decode step takes T == 1";
#ifdef ATTNLAB_WITH_CUDA
  return cuda::recurrent_step_unusable_reason(gated ? cuda::StepKind::gated_delta : cuda::StepKind::delta, a,
                                              a.l2norm_qk);
#else
  (void)gated;
  return "the step kernel is not compiled into this build (no CUDA compiler when it was configured)";
#endif
}

std::string chunk_kernel_unusable_reason(const RecurrentArgs& a, bool gated) {
#ifdef ATTNLAB_WITH_CUDA
  return cuda::delta_chunk_unusable_reason(a, gated);
#else
  (void)a, (void)gated;
  return "the chunk kernels are not compiled into this build (no CUDA compiler when it was configured)";
#endif
}

RecurrentOut via_step(const char* op, const RecurrentArgs& a, bool gated) {
#ifdef ATTNLAB_WITH_CUDA
  (void)op;
  return cuda::recurrent_step(gated ? cuda::StepKind::gated_delta : cuda::StepKind::delta, a, a.l2norm_qk);
#else
  fail("{}: {}", op, step_unusable_reason(a, gated));
#endif
}

RecurrentOut run(const char* op, const RecurrentArgs& args, Impl impl, bool gated) {
  // l2norm_qk: the decode step normalises q and k in its kernel (it gets `args` as they are); every other
  // path gets `normed`, with normalised copies (only when both are tensors: prepare() reports what is
  // missing).
  RecurrentArgs normed_args;
  bool normed_made = false;
  auto normed = [&]() -> const RecurrentArgs& {
    if (!args.l2norm_qk || !args.q.defined() || !args.k.defined()) return args;
    if (!normed_made) {
      normed_args = args;
      normed_args.q = l2_normalize(args.q);
      normed_args.k = l2_normalize(args.k);
      normed_args.l2norm_qk = false;
      normed_made = true;
    }
    return normed_args;
  };
  // The kernel path: the decode step when it takes the args, else the chunk kernels (fused WY preparation,
  // then the recurrence; both checked on the H200: test_gpu_delta_wy, test_gpu_delta_chunk, 2026-12-02).
  auto use_step = [&] { return step_unusable_reason(args, gated).empty(); };
  linear::KernelPath kernel;
  kernel.on_cuda = args.q.is_cuda() && args.k.is_cuda() && args.v.is_cuda();
  kernel.unusable = [&] {
    auto step_why = step_unusable_reason(args, gated);
    if (step_why.empty()) return step_why;
    auto chunk_why = chunk_kernel_unusable_reason(args, gated);
    if (chunk_why.empty()) return chunk_why;
    // A one-token input was for the decode step: say why neither kernel takes it.
    if (args.q.defined() && args.q.dim() == 4 && args.q.size(1) == 1)
      return fmt::format("the decode step: {}; the chunk kernels: {}", step_why, chunk_why);
    return chunk_why;
  };
  kernel.run = [&] { return use_step() ? via_step(op, args, gated) : via_chunk_kernel(op, normed(), gated); };
  return linear::dispatch(
      op, impl, [&] { return naive(prepare(op, normed(), gated), args.output_final_state); },
      [&] { return chunk(prepare(op, normed(), gated), args.chunk_size, args.output_final_state); }, kernel);
}

}  // namespace

RecurrentOut delta_rule(const RecurrentArgs& args, Impl impl) {
  return run("delta_rule", args, impl, false);
}

RecurrentOut gated_delta_rule(const RecurrentArgs& args, Impl impl) {
  return run("gated_delta_rule", args, impl, true);
}

torch::Tensor l2_normalize(const torch::Tensor& x, double eps) {
#ifdef ATTNLAB_WITH_CUDA
  // On CUDA through the fused RMSNorm kernel (kernels/fused, checked on the H200): x / sqrt(sum x^2 + eps) =
  // rms_norm(x, eps / N) * N^-1/2 with the weight N^-1/2, one launch forward and one backward instead of
  // libtorch's elementwise passes and reductions. Float32 math either way.
  if (x.is_cuda() && x.dim() >= 1 && x.size(-1) > 0) {
    const int64_t N = x.size(-1);
    auto w = torch::full({N}, 1.0 / std::sqrt(static_cast<double>(N)), x.options().dtype(torch::kFloat));
    if (cuda::rms_norm_unusable_reason(x, w).empty())
      return cuda::rms_norm(x, w, eps / static_cast<double>(N));
  }
#endif
  auto y = x.to(torch::promote_types(x.scalar_type(), torch::kFloat));
  return (y * torch::rsqrt(y.pow(2).sum(-1, /*keepdim=*/true) + eps)).to(x.scalar_type());
}

ATTNLAB_REGISTER_OP("delta_rule", delta_rule, (std::vector<std::string>{"q", "k", "v", "beta", "h0"}),
                    "S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T; o_t = scale q_t^T S_t");
ATTNLAB_REGISTER_OP("gated_delta_rule", gated_delta_rule,
                    (std::vector<std::string>{"q", "k", "v", "g", "beta", "h0"}),
                    "S_t = exp(g_t) S_{t-1}; S_t += beta_t k_t (v_t - S_t^T k_t)^T; o_t = scale q_t^T S_t");

}  // namespace attnlab::ops
