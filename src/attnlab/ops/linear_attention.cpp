// Linear attention: naive and chunkwise forms, the normalised variant, feature maps, shared helpers.
#include "attnlab/ops/linear_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/core/log.h"
#include "attnlab/ops/check.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/linear_chunk.h"
#include "attnlab/ops/cuda/recurrent_step.h"
#endif
#include "attnlab/ops/registry.h"

namespace attnlab::ops {
namespace linear {

void check_inputs(const char* op, const RecurrentArgs& a) {
  check_shape(op, "q", a.q, "B,T,H,K", {-1, -1, -1, -1});
  const int64_t B = a.q.size(0), T = a.q.size(1), H = a.q.size(2), K = a.q.size(3);
  check_shape(op, "k", a.k, "B,T,H,K", {B, T, H, K});
  check_shape(op, "v", a.v, "B,T,H,V", {B, T, H, -1});
  if (a.h0.defined()) check_shape(op, "h0", a.h0, "B,H,K,V", {B, H, K, a.v.size(3)});
  ATTNLAB_CHECK(a.chunk_size >= 1, "{}: chunk_size must be >= 1, got {}", op, a.chunk_size);
  for (const auto* t : {&a.q, &a.k, &a.v, &a.g, &a.u, &a.h0})
    ATTNLAB_CHECK(!t->defined() || t->is_floating_point(),
                  "{}: q, k, v, g, u, h0 must be floating point, got {}", op,
                  c10::toString(t->scalar_type()));
}

Prepared prepare(const char* op, const RecurrentArgs& a) {
  check_inputs(op, a);
  Prepared p;
  p.B = a.q.size(0), p.T = a.q.size(1), p.H = a.q.size(2), p.K = a.q.size(3);
  p.V = a.v.size(3);
  // States accumulate in float32 (mechanisms.md); float64 inputs stay float64 so that the tests can hold
  // the chunk form to the definition at 1e-10.
  p.dtype = a.q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  p.v_dtype = a.v.scalar_type();
  double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(p.K));
  p.q = heads_first(a.q, p.dtype) * scale;
  p.k = heads_first(a.k, p.dtype);
  p.v = heads_first(a.v, p.dtype);
  p.S0 = a.h0.defined() ? a.h0.to(p.dtype) : torch::zeros({p.B, p.H, p.K, p.V}, p.q.options());
  return p;
}

torch::Tensor heads_first(const torch::Tensor& x, torch::ScalarType dtype) {
  return x.to(dtype).transpose(1, 2);
}

int64_t chunk_len(int64_t chunk_size, int64_t T) {
  return std::max<int64_t>(1, std::min(chunk_size, T));
}

torch::Tensor to_chunks(const torch::Tensor& x, int64_t C) {
  int64_t T = x.size(2), N = (T + C - 1) / C, pad = N * C - T;
  auto y = x;
  if (pad > 0) {
    // constant_pad_nd lists (before, after) pairs from the last dim backwards; only T (dim 2) is padded.
    std::vector<int64_t> pads;
    for (int64_t d = x.dim() - 1; d > 2; --d) pads.insert(pads.end(), {0, 0});
    pads.insert(pads.end(), {0, pad});
    y = torch::constant_pad_nd(x, pads, 0);
  }
  auto sizes = y.sizes().vec();
  sizes[2] = C;
  sizes.insert(sizes.begin() + 2, N);
  return y.reshape(sizes);
}

torch::Tensor from_chunks(const torch::Tensor& x, int64_t T) {
  auto sizes = x.sizes().vec();
  sizes[2] *= sizes[3];
  sizes.erase(sizes.begin() + 3);
  return x.reshape(sizes).narrow(2, 0, T);
}

torch::Tensor exclusive_cumsum(const torch::Tensor& x, int64_t dim) {
  int64_t n = x.size(dim);
  return torch::cat({torch::zeros_like(x.narrow(dim, 0, 1)), x.narrow(dim, 0, n - 1).cumsum(dim)}, dim);
}

torch::Tensor reverse_exclusive_cumsum(const torch::Tensor& x, int64_t dim) {
  int64_t n = x.size(dim);
  auto tail = x.narrow(dim, 1, n - 1).flip({dim}).cumsum(dim).flip({dim});
  return torch::cat({tail, torch::zeros_like(x.narrow(dim, 0, 1))}, dim);
}

std::pair<torch::Tensor, torch::Tensor> scan_states(const torch::Tensor& S0, const torch::Tensor& decay,
                                                    const torch::Tensor& U) {
  int64_t N = U.size(2);
  if (N == 0) return {torch::zeros_like(U), S0};
  std::vector<torch::Tensor> entering;
  entering.reserve(static_cast<size_t>(N));
  auto S = S0;  // [B, H, K, V]
  for (int64_t n = 0; n < N; ++n) {
    entering.push_back(S);
    S = decay.defined() ? decay.select(2, n) * S + U.select(2, n) : S + U.select(2, n);
  }
  return {torch::stack(entering, 2), S};
}

RecurrentOut finish(const Prepared& p, const torch::Tensor& o, const torch::Tensor& S, bool final_state) {
  RecurrentOut out;
  out.o = o.transpose(1, 2).to(p.v_dtype);  // [B, H, T, V] -> [B, T, H, V]
  if (final_state) out.ht = S;
  return out;
}

KernelPath chunk_kernel_path(const RecurrentArgs& args, bool gated) {
  KernelPath path;
  path.on_cuda = args.q.defined() && args.q.is_cuda();
#ifdef ATTNLAB_WITH_CUDA
  // One token without autograd (decoding): the fused step kernel, one launch; otherwise the chunk kernels.
  const auto step = gated ? cuda::StepKind::scalar_gate : cuda::StepKind::linear;
  auto use_step = [&args, step] {
    return args.q.defined() && args.q.dim() == 4 && args.q.size(1) == 1 &&
           cuda::recurrent_step_unusable_reason(step, args, /*l2norm_qk=*/false).empty();
  };
  path.unusable = [&args, gated, use_step] {
    return use_step() ? std::string() : cuda::linear_chunk_unusable_reason(args, gated);
  };
  path.run = [&args, gated, step, use_step] {
    return use_step() ? cuda::recurrent_step(step, args, /*l2norm_qk=*/false)
                      : cuda::linear_chunk(args, gated);
  };
#else
  (void)gated;
  path.unusable = [] { return std::string("this build has no CUDA kernels"); };
  path.run = []() -> RecurrentOut { fail("linear_chunk: this build has no CUDA kernels"); };
#endif
  return path;
}

RecurrentOut dispatch(const char* op, Impl impl, const std::function<RecurrentOut()>& naive,
                      const std::function<RecurrentOut()>& chunk, const KernelPath& kernel) {
  switch (impl) {
    case Impl::naive:
      return naive();
    case Impl::chunk:
      return chunk();
    case Impl::automatic: {
      if (kernel.run && kernel.on_cuda) {
        auto why = kernel.unusable();
        if (why.empty()) return kernel.run();
        log_once(
            fmt::format("{}.kernel: {}", op, why),
            fmt::format("{}: the CUDA kernel cannot take these inputs ({}); using the chunk form", op, why));
      }
      return chunk();
    }
    case Impl::kernel: {
      ATTNLAB_CHECK(kernel.run, "{}: has no CUDA kernel; use naive, chunk or auto", op);
      auto why = kernel.unusable();
      ATTNLAB_CHECK(why.empty(), "{}: impl kernel cannot run these inputs: {}; use chunk, naive or auto", op,
                    why);
      return kernel.run();
    }
    case Impl::sdpa:
      fail("{}: sdpa is for softmax attention only; use naive, chunk or auto", op);
  }
  fail("{}: unknown implementation", op);
}

}  // namespace linear

namespace {

using linear::Prepared;

// The definition, one token at a time.
RecurrentOut naive(const Prepared& p, bool final_state) {
  auto S = p.S0;  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  for (int64_t t = 0; t < p.T; ++t) {
    auto q = p.q.select(2, t), k = p.k.select(2, t), v = p.v.select(2, t);  // [B, H, K], [B, H, V]
    S = S + k.unsqueeze(-1) * v.unsqueeze(-2);
    os.push_back(torch::matmul(q.unsqueeze(-2), S).squeeze(-2));  // [B, H, V]
  }
  auto o = os.empty() ? torch::zeros({p.B, p.H, 0, p.V}, p.v.options()) : torch::stack(os, 2);
  return linear::finish(p, o, S, final_state);
}

// Chunkwise parallel: within a chunk o = tril(q k^T) v, across chunks through the state entering the chunk.
RecurrentOut chunk(const Prepared& p, int64_t chunk_size, bool final_state) {
  int64_t C = linear::chunk_len(chunk_size, p.T);
  auto q = linear::to_chunks(p.q, C), k = linear::to_chunks(p.k, C);  // [B, H, N, C, K]
  auto v = linear::to_chunks(p.v, C);                                 // [B, H, N, C, V]
  auto U = torch::matmul(k.transpose(-1, -2), v);                     // [B, H, N, K, V]
  auto [S_in, S_end] = linear::scan_states(p.S0, {}, U);              // [B, H, N, K, V], [B, H, K, V]
  auto causal = torch::ones({C, C}, q.options().dtype(torch::kBool)).tril();
  auto A = torch::matmul(q, k.transpose(-1, -2)).masked_fill(causal.logical_not(), 0);  // [B, H, N, C, C]
  auto o = torch::matmul(q, S_in) + torch::matmul(A, v);                                // [B, H, N, C, V]
  return linear::finish(p, linear::from_chunks(o, p.T), S_end, final_state);
}

RecurrentOut run(const char* op, const RecurrentArgs& args, Impl impl) {
  linear::check_inputs(op, args);
  ATTNLAB_CHECK(!args.g.defined(), "{}: takes no gate g (got {}); simple_gla and gla are the gated ops", op,
                shape_str(args.g.sizes()));
  return linear::dispatch(
      op, impl, [&] { return naive(linear::prepare(op, args), args.output_final_state); },
      [&] { return chunk(linear::prepare(op, args), args.chunk_size, args.output_final_state); },
      linear::chunk_kernel_path(args, /*gated=*/false));
}

}  // namespace

RecurrentOut linear_attention(const RecurrentArgs& args, Impl impl) {
  return run("linear_attention", args, impl);
}

RecurrentOut linear_attention_normalized(const RecurrentArgs& args, Impl impl, double eps) {
  const char* op = "linear_attention_normalized";
  check_shape(op, "q", args.q, "B,T,H,K", {-1, -1, -1, -1});
  check_shape(op, "v", args.v, "B,T,H,V", {args.q.size(0), args.q.size(1), args.q.size(2), -1});
  int64_t V = args.v.size(3);
  if (args.h0.defined())
    check_shape(op, "h0", args.h0, "B,H,K,V+1", {args.q.size(0), args.q.size(2), args.q.size(3), V + 1});
  // With the CUDA kernels: the numerator q^T S through them (v as it is, so K = V holds), the normaliser
  // q^T z from a float32 cumulative sum of k (z_t = z0 + k_0 + ... + k_t), which is cheap next to the
  // numerator; the state keeps the [K, V+1] layout below.
  RecurrentArgs num_args = args;
  if (args.h0.defined()) num_args.h0 = args.h0.narrow(-1, 0, V);
  auto kernel = linear::chunk_kernel_path(num_args, /*gated=*/false);
  bool use_kernel = impl == Impl::kernel;
  if (impl == Impl::automatic && kernel.on_cuda && kernel.unusable().empty()) use_kernel = true;
  if (use_kernel) {
    auto out = run(op, num_args, Impl::kernel);  // o [B, T, H, V] (v's dtype), ht [B, H, K, V]
    const double scale = args.scale > 0 ? args.scale : 1.0 / std::sqrt(static_cast<double>(args.q.size(3)));
    auto z = args.k.to(torch::kFloat).cumsum(1);  // [B, T, H, K]
    if (args.h0.defined()) z = z + args.h0.select(-1, V).to(torch::kFloat).unsqueeze(1);
    auto den = (args.q.to(torch::kFloat) * z).sum(-1, /*keepdim=*/true) * scale;  // [B, T, H, 1]
    if (args.output_final_state)
      out.ht = torch::cat({out.ht, z.select(1, z.size(1) - 1).unsqueeze(-1)}, -1);  // [B, H, K, V+1]
    out.o = (out.o.to(torch::kFloat) / (den + eps)).to(args.v.scalar_type());
    return out;
  }
  // z_t = sum_s k_s is S_t's column for a value that is always 1, so append that column to v and run the
  // unnormalised op: o[..., :V] = q^T S, o[..., V] = q^T z. Computed in the accumulation dtype, so that the
  // division does not happen in bf16.
  auto dt = args.q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto v = args.v.to(dt);
  RecurrentArgs a = args;
  a.v = torch::cat({v, torch::ones_like(v.narrow(-1, 0, 1))}, -1);  // [B, T, H, V+1]
  auto out = run(op, a, impl);
  auto num = out.o.narrow(-1, 0, V), den = out.o.narrow(-1, V, 1);  // [B, T, H, V], [B, T, H, 1]
  out.o = (num / (den + eps)).to(args.v.scalar_type());
  return out;
}

torch::Tensor feature_map(const torch::Tensor& x, const std::string& name) {
  if (name == "elu1") return torch::elu(x) + 1;
  if (name == "relu") return torch::relu(x);
  if (name == "identity") return x;
  if (name == "taylor") {
    int64_t d = x.size(-1);
    // Upper triangle of x x^T, off-diagonal entries times sqrt(2): sum over i<=j then equals the full sum
    // over (i, j), so phi(q).phi(k) keeps (q.k)^2 / (2d) with d(d+1)/2 features instead of d^2.
    auto idx = torch::triu_indices(d, d, 0, x.options().dtype(torch::kLong));  // [2, d(d+1)/2]
    auto rows = idx[0], cols = idx[1];
    auto weight =
        torch::where(rows == cols, torch::ones({}, x.options()), torch::full({}, std::sqrt(2.0), x.options()))
            .to(x.scalar_type()) /
        (std::sqrt(2.0) * std::sqrt(static_cast<double>(d)));
    auto outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2);  // [..., d * d]
    auto quad = outer.index_select(-1, rows * d + cols) * weight;  // [..., d(d+1)/2]
    return torch::cat(
        {torch::ones_like(x.narrow(-1, 0, 1)), x / std::pow(static_cast<double>(d), 0.25), quad}, -1);
  }
  fail("feature_map: unknown feature map '{}'; valid: elu1, relu, identity, taylor", name);
}

int64_t feature_dim(int64_t d, const std::string& name) {
  if (name == "elu1" || name == "relu" || name == "identity") return d;
  if (name == "taylor") return 1 + d + d * (d + 1) / 2;
  fail("feature_map: unknown feature map '{}'; valid: elu1, relu, identity, taylor", name);
}

ATTNLAB_REGISTER_OP("linear_attention", linear_attention, (std::vector<std::string>{"q", "k", "v", "h0"}),
                    "S_t = S_{t-1} + k_t v_t^T; o_t = scale q_t^T S_t (unnormalised)");

}  // namespace attnlab::ops
