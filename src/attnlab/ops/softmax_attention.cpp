// Softmax attention: the naive reference, the SDPA path and our flash kernel (CUDA builds).
#include "attnlab/ops/softmax_attention.h"

#include <cmath>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/core/log.h"
#include "attnlab/ops/check.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/flash_attn.h"
#endif

namespace attnlab::ops {
namespace {

struct Dims {
  int64_t B, Tq, Tk, H, Hkv, K, V, offset;
  double scale;
};

Dims check_args(const SoftmaxArgs& a) {
  const char* op = "softmax_attention";
  check_shape(op, "q", a.q, "B,T,H,K", {-1, -1, -1, -1});
  Dims d{};
  d.B = a.q.size(0), d.Tq = a.q.size(1), d.H = a.q.size(2), d.K = a.q.size(3);
  check_shape(op, "k", a.k, "B,T,Hkv,K", {d.B, -1, -1, d.K});
  d.Tk = a.k.size(1), d.Hkv = a.k.size(2);
  check_shape(op, "v", a.v, "B,T,Hkv,V", {d.B, d.Tk, d.Hkv, -1});
  d.V = a.v.size(3);
  ATTNLAB_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, "{}: the {} kv heads must divide the {} query heads", op,
                d.Hkv, d.H);
  ATTNLAB_CHECK(a.window >= 0, "{}: window must be >= 0 (0 = no window), got {}", op, a.window);
  ATTNLAB_CHECK(a.n_sink >= 0, "{}: n_sink must be >= 0, got {}", op, a.n_sink);
  d.offset = a.q_offset >= 0 ? a.q_offset : d.Tk - d.Tq;
  ATTNLAB_CHECK(!a.causal || d.offset + d.Tq <= d.Tk || a.q_offset >= 0,
                "{}: {} queries after {} keys leave queries with no keys", op, d.Tq, d.Tk);
  d.scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(d.K));
  return d;
}

// [B, T, Hkv, D] -> [B, T, H, D] by repeating each kv head for its group of query heads.
torch::Tensor expand_kv(const torch::Tensor& x, int64_t H) {
  int64_t Hkv = x.size(2);
  if (Hkv == H) return x;
  return x.repeat_interleave(H / Hkv, /*dim=*/2);
}

torch::Tensor naive(const SoftmaxArgs& a, const Dims& d) {
  auto q = a.q.to(torch::kFloat).transpose(1, 2);                  // [B, H, Tq, K]
  auto k = expand_kv(a.k, d.H).to(torch::kFloat).transpose(1, 2);  // [B, H, Tk, K]
  auto v = expand_kv(a.v, d.H).to(torch::kFloat).transpose(1, 2);  // [B, H, Tk, V]
  auto scores = torch::matmul(q, k.transpose(-1, -2)) * d.scale;   // [B, H, Tq, Tk]
  auto mask = softmax_visibility(a, a.q.device());
  if (mask.defined())
    scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  auto p = torch::softmax(scores, -1);
  // A query that sees no key (impossible for causal attention with the default offset) gives zeros, not NaN.
  if (mask.defined()) p = p.masked_fill(mask.logical_not(), 0.0);
  return torch::matmul(p, v).transpose(1, 2).to(a.q.scalar_type());  // [B, Tq, H, V]
}

std::optional<torch::Tensor> via_sdpa(const SoftmaxArgs& a, const Dims& d) {
  if (!compat::has_sdpa()) return std::nullopt;
  auto q = a.q.transpose(1, 2);
  auto k = expand_kv(a.k, d.H).transpose(1, 2);
  auto v = expand_kv(a.v, d.H).transpose(1, 2);
  // SDPA's is_causal aligns the mask to the top left; pass an explicit mask unless Tq == Tk from 0.
  bool plain_causal =
      a.causal && a.window == 0 && a.pattern == SparsePattern::dense && d.offset == 0 && d.Tq == d.Tk;
  std::optional<torch::Tensor> mask;
  if (!plain_causal) {
    auto m = softmax_visibility(a, a.q.device());
    if (m.defined()) mask = m;
  }
  auto o = compat::sdpa(q, k, v, mask, plain_causal, d.scale);
  if (!o) return std::nullopt;
  return o->transpose(1, 2);
}

// Empty when our flash kernel runs these args, else why not (a phrase for a log line or an error).
std::string kernel_unusable_reason(const SoftmaxArgs& a) {
#ifdef ATTNLAB_WITH_CUDA
  return cuda::flash_attn_unusable_reason(a);
#else
  (void)a;
  return "the flash kernel is not compiled into this build (no CUDA compiler when it was configured)";
#endif
}

torch::Tensor via_kernel(const SoftmaxArgs& a) {
#ifdef ATTNLAB_WITH_CUDA
  return cuda::flash_attn_softmax(a);
#else
  fail("softmax_attention: {}", kernel_unusable_reason(a));
#endif
}

// The CUDA path falls back with a log line once per reason; CPU tensors never expect the kernel.
bool on_cuda(const SoftmaxArgs& a) {
  return a.q.is_cuda() && a.k.is_cuda() && a.v.is_cuda();
}

}  // namespace

torch::Tensor softmax_visibility(const SoftmaxArgs& a, const torch::Device& device) {
  int64_t Tq = a.q.size(1), Tk = a.k.size(1);
  int64_t offset = a.q_offset >= 0 ? a.q_offset : Tk - Tq;
  if (!a.causal && a.window == 0 && a.pattern == SparsePattern::dense) return {};
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto t = (torch::arange(Tq, opts) + offset).unsqueeze(1);  // [Tq, 1] absolute query positions
  auto s = torch::arange(Tk, opts).unsqueeze(0);             // [1, Tk]
  auto visible = torch::ones({Tq, Tk}, opts.dtype(torch::kBool));
  if (a.causal) visible = visible & (s <= t);
  if (a.window > 0) {
    auto in_window = (s > t - a.window) & (s <= t);
    if (!a.causal) in_window = (s - t).abs() < a.window;
    auto sink = s < a.n_sink;
    visible = visible & (in_window | sink);
  }
  auto pattern = sparse_pattern_mask(a.pattern, a.stride, a.pattern_c, Tq, Tk, offset, device);
  if (pattern.defined()) visible = visible & pattern;
  return visible;
}

torch::Tensor softmax_attention(const SoftmaxArgs& args, Impl impl) {
  Dims d = check_args(args);
  switch (impl) {
    case Impl::naive:
      return naive(args, d);
    case Impl::chunk:
      fail(
          "softmax_attention: no chunk form (the naive path is its reference); use naive, sdpa, kernel or "
          "auto");
    case Impl::kernel: {
      auto why = kernel_unusable_reason(args);
      if (!why.empty())
        fail(
            "softmax_attention: impl kernel cannot run these args: {}. It needs CUDA tensors of one dtype "
            "(bf16 or fp16), head dim 64 or 128 for q, k and v, no sinks, a window only with causal, and "
            "the default q_offset; use impl sdpa, naive or auto otherwise",
            why);
      return via_kernel(args);
    }
    case Impl::sdpa:
    case Impl::automatic: {
      if (impl == Impl::automatic && on_cuda(args)) {
        auto why = kernel_unusable_reason(args);
        if (why.empty()) return via_kernel(args);
        log_once("softmax_attention.kernel: " + why,
                 fmt::format("softmax_attention: {}; using {}", why,
                             compat::has_sdpa() ? "SDPA" : "the naive path (materialised scores)"));
      }
      if (auto o = via_sdpa(args, d)) return *o;
      if (impl == Impl::sdpa)
        fail("softmax_attention: sdpa needs libtorch >= 2.1, this is {}", compat::torch_version());
      log_once("softmax_attention.sdpa",
               fmt::format("softmax_attention: at::scaled_dot_product_attention is not in libtorch {}; using "
                           "the naive path (materialised scores)",
                           compat::torch_version()));
      return naive(args, d);
    }
  }
  return naive(args, d);
}

}  // namespace attnlab::ops
