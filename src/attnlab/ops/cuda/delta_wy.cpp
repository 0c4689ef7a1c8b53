// The delta_wy binding: validates tensors, fills DeltaWyParams, launches, and wraps the preparation for
// autograd (saved: the inputs and, unless ATTNLAB_DELTA_WY_SAVE_M=0, each chunk's M in float32, which the
// backward would otherwise recompute).
#include "attnlab/ops/cuda/delta_wy.h"

#include <climits>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "kernels/delta_wy/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "delta_wy";

// ATTNLAB_DELTA_WY_INVERSE: how the inverse's block products run, tf32x3 (the default) or bf16x3 (params.h);
// read per forward call (the bench compares both in one process) and kept for its backward.
kn::DeltaWyInverse inverse_from_env() {
  const char* e = std::getenv("ATTNLAB_DELTA_WY_INVERSE");
  if (!e) return kn::DeltaWyInverse::kTf32x3;
  const std::string f = e;
  ATTNLAB_CHECK(f == "tf32x3" || f == "bf16x3",
                "{}: ATTNLAB_DELTA_WY_INVERSE must be tf32x3 or bf16x3, got '{}'", kOp, f);
  return f == "bf16x3" ? kn::DeltaWyInverse::kBf16x3 : kn::DeltaWyInverse::kTf32x3;
}

kn::DeltaWyParams make_params(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& beta,
                              const torch::Tensor& g) {
  kn::DeltaWyParams p;
  p.dtype = k.scalar_type() == torch::kBFloat16 ? kn::LinearDtype::kBF16 : kn::LinearDtype::kFP16;
  p.B = static_cast<int>(k.size(0)), p.T = static_cast<int>(k.size(1)), p.H = static_cast<int>(k.size(2));
  p.K = static_cast<int>(k.size(3)), p.V = static_cast<int>(v.size(3));
  p.k = k.data_ptr(), p.v = v.data_ptr();
  p.beta = static_cast<const float*>(beta.data_ptr());
  p.g = cf32(g);
  p.stream = nullptr;  // the legacy default stream (see flash_attn.h)
  return p;
}

void check_params(const kn::DeltaWyParams& p, bool backward) {
  auto why = kn::delta_wy_check(p, backward);
  if (!why.empty()) fail("{}: {} (from delta_wy_check)", kOp, why);
}

class DeltaWyFunction : public torch::autograd::Function<DeltaWyFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor k,
                                                torch::Tensor v, torch::Tensor beta, torch::Tensor g,
                                                bool save_m, WyFork* fork) {
    DeviceScope device(k.device().index());
    auto p = make_params(k, v, beta, g);
    p.inverse = inverse_from_env();
    // the backward recomputes M (when not saved) by the same products, so the same bits
    ctx->saved_data["inverse"] = static_cast<int64_t>(p.inverse);
    auto w = torch::empty(k.sizes(), k.options()), u = torch::empty(v.sizes(), v.options());
    auto G = given(g) ? torch::empty(g.sizes(), g.options()) : torch::empty({0}, beta.options());
    p.w = w.data_ptr(), p.u = u.data_ptr();
    p.G = given(G) ? static_cast<float*>(G.data_ptr()) : nullptr;
    // M of every chunk for the backward (its lower triangle packed: 9 KB per chunk and head, against w's 8
    // or 16): reading it back costs less than the inverse it saves (H200, bench/results/h200-2026-12-03d).
    torch::Tensor m =
        save_m ? torch::empty({k.size(0), k.size(2), kn::linear_chunk_count(p.T), kn::kDeltaWySavedM},
                              beta.options())
               : torch::empty({0}, beta.options());
    p.m = save_m ? static_cast<float*>(m.data_ptr()) : nullptr;
    check_params(p, false);
    if (fork) {  // launched by the recurrence, after its walk (WyFork::launch)
      fork->device = k.device().index();
      fork->ready =
          torch::empty({k.size(0), k.size(2), kn::linear_chunk_count(p.T)}, k.options().dtype(torch::kInt));
      // zeroed here, on the default stream, so before the walk (launched first, on another stream) can read
      // them
      check_cuda(cudaMemsetAsync(fork->ready.data_ptr(), 0, fork->ready.numel() * sizeof(int), nullptr), kOp,
                 "cudaMemsetAsync");
      p.ready = static_cast<int*>(fork->ready.data_ptr());
      fork->keep = {k, v, beta, g, w, u, G, m};
      fork->params = std::make_shared<kn::DeltaWyParams>(p);
    } else {
      check_cuda(kn::launch_delta_wy_fwd(p), kOp, "launch_delta_wy_fwd");
    }
    ctx->save_for_backward({k, v, beta, g, m});
    if (!given(G)) ctx->mark_non_differentiable({G});
    return {w, u, G};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &k = s[0], &v = s[1], &beta = s[2], &g = s[3], &m = s[4];
    DeviceScope device(k.device().index());
    auto p = make_params(k, v, beta, g);
    p.inverse = static_cast<kn::DeltaWyInverse>(ctx->saved_data["inverse"].toInt());
    p.m = given(m) ? static_cast<float*>(m.data_ptr()) : nullptr;
    // The recurrence's dW, dU are 16-bit already; others (float32 from a different consumer) are rounded.
    auto dw = grads[0].defined() ? grads[0].to(k.scalar_type()).contiguous() : torch::zeros_like(k);
    auto du = grads[1].defined() ? grads[1].to(v.scalar_type()).contiguous() : torch::zeros_like(v);
    torch::Tensor dG;
    if (given(g) && grads[2].defined()) dG = grads[2].to(torch::kFloat).contiguous();
    auto dk = torch::empty_like(k), dv = torch::empty_like(v), dbeta = torch::empty_like(beta);
    torch::Tensor dg = given(g) ? torch::empty_like(g) : torch::Tensor();
    p.dw = dw.data_ptr(), p.du = du.data_ptr();
    p.dG = dG.defined() ? static_cast<const float*>(dG.data_ptr()) : nullptr;
    p.dk = dk.data_ptr(), p.dv = dv.data_ptr(), p.dbeta = static_cast<float*>(dbeta.data_ptr());
    p.dg = dg.defined() ? static_cast<float*>(dg.data_ptr()) : nullptr;
    check_params(p, true);
    check_cuda(kn::launch_delta_wy_bwd(p), kOp, "launch_delta_wy_bwd");
    return {dk, dv, dbeta, dg, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void WyFork::launch(cudaStream_t stream) {
  if (!pending()) return;
  DeviceScope scope(device);
  auto p = *static_cast<const kn::DeltaWyParams*>(params.get());
  p.stream = stream;
  check_cuda(kn::launch_delta_wy_fwd(p), kOp, "launch_delta_wy_fwd");
  done = record_event(stream, kOp);
}

void WyFork::preload() {
  if (!pending()) return;
  DeviceScope scope(device);
  check_cuda(kn::load_delta_wy_fwd(*static_cast<const kn::DeltaWyParams*>(params.get())), kOp,
             "load_delta_wy_fwd");
}

void WyFork::join() {
  if (!params) return;
  DeviceScope scope(device);
  if (!done) {  // nobody took it: run it in order on the default stream
    try {
      launch(nullptr);
    } catch (const std::exception&) {  // a destructor may call this: the error shows at the next sync
    }
  }
  if (done) {
    (void)cudaStreamWaitEvent(nullptr, done, 0);
    (void)cudaEventDestroy(done);
  }
  done = nullptr;
  params.reset();
  keep.clear();  // freed after the default stream's wait: later allocations there cannot overlap its use
  ready = torch::Tensor();
}

std::vector<torch::Tensor> delta_wy_prepare(const torch::Tensor& k, const torch::Tensor& v,
                                            const torch::Tensor& beta, const torch::Tensor& g, WyFork* fork) {
  check_shape(kOp, "k", k, "B,T,H,K", {-1, -1, -1, -1});
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2), K = k.size(3);
  check_shape(kOp, "v", v, "B,T,H,V", {B, T, H, -1});
  check_shape(kOp, "beta", beta, "B,T,H", {B, T, H});
  if (g.defined()) check_shape(kOp, "g", g, "B,T,H", {B, T, H});
  const auto dt = k.scalar_type();
  ATTNLAB_CHECK(dt == torch::kBFloat16 || dt == torch::kHalf, "{}: k must be bf16 or fp16, got {}", kOp,
                c10::toString(dt));
  ATTNLAB_CHECK(v.scalar_type() == dt, "{}: v must have k's dtype {}, got {}", kOp, c10::toString(dt),
                c10::toString(v.scalar_type()));
  ATTNLAB_CHECK(K == v.size(3) && (K == 64 || K == 128),
                "{}: head dims K = {}, V = {}: the kernels take K = V = 64 or 128", kOp, K, v.size(3));
  for (const auto* t : {&v, &beta, &g})
    ATTNLAB_CHECK(!t->defined() || t->device() == k.device(),
                  "{}: k, v, beta, g must be on k's device {}, got {}", kOp, k.device().str(),
                  t->device().str());
  ATTNLAB_CHECK(k.is_cuda(), "{}: k must be a CUDA tensor, got {}", kOp, k.device().str());
  ATTNLAB_CHECK(T >= 1 && T <= INT_MAX / 2 && B <= 65535 && H <= 65535,
                "{}: need T >= 1 and B, H <= 65535, got B = {}, T = {}, H = {}", kOp, B, T, H);
  auto none = torch::empty({0}, k.options().dtype(torch::kFloat));
  // M is saved only where a backward can follow; ATTNLAB_DELTA_WY_SAVE_M=0 has the backward recompute it
  // (the memory of w instead of its time; read per call: the bench compares both).
  bool save_m = torch::GradMode::is_enabled() && (k.requires_grad() || v.requires_grad() ||
                                                  beta.requires_grad() || (g.defined() && g.requires_grad()));
  if (const char* e = std::getenv("ATTNLAB_DELTA_WY_SAVE_M")) {
    const std::string f = e;
    ATTNLAB_CHECK(f == "0" || f == "1", "{}: ATTNLAB_DELTA_WY_SAVE_M must be 0 or 1, got '{}'", kOp, f);
    save_m = save_m && f == "1";
  }
  return DeltaWyFunction::apply(k.contiguous(), v.contiguous(), beta.to(torch::kFloat).contiguous(),
                                g.defined() ? g.to(torch::kFloat).contiguous() : none, save_m, fork);
}

}  // namespace attnlab::ops::cuda
