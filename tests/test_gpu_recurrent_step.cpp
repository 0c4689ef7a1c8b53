// labels: gpu
// The fused one-token decode step (kernels/recurrent_step): the raw binding and the ops' kernel path against
// each op's naive form on float64 copies (o and ht), in place, refusals, and a mixer's decode on CUDA against
// its one-shot forward.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/delta_rule.h"
#include "attnlab/ops/gla.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/simple_gla.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/recurrent_step.h"
#endif
#include "support/helpers.h"
#include "support/kernel_test.h"

using namespace attnlab;

#ifdef ATTNLAB_WITH_CUDA
namespace {

using ops::cuda::StepKind;

// Tolerances, relative RMS against the float64 naive op on the same (rounded) inputs. o: bf16 stores o with
// a half-ulp of 2^-9 = 2e-3 relative, so 1e-2 leaves 5x; float32 sums K = 128 products in float32 (~1e-7).
// ht is float32 in every dtype (the inputs are the same rounded values on both sides): 1e-5 for both.
constexpr double kTolBf16 = 1e-2, kTolFp32 = 1e-5, kStateTol = 1e-5;

struct StepCase {
  StepKind kind;
  torch::ScalarType dtype;
  int64_t D;  // K = V = D
};

std::string case_name(const StepCase& c) {
  return fmt::format("{}_B3_H5_K{}_V{}_{}", ops::cuda::step_kind_name(c.kind), c.D, c.D,
                     c.dtype == torch::kBFloat16 ? "bf16" : "fp32");
}

std::vector<StepCase> all_cases() {
  std::vector<StepCase> out;
  for (auto kind :
       {StepKind::linear, StepKind::scalar_gate, StepKind::key_gate, StepKind::delta, StepKind::gated_delta})
    for (auto dt : {torch::kBFloat16, torch::kFloat})
      for (int64_t D : {64, 128}) out.push_back({kind, dt, D});
  return out;
}

bool is_delta(StepKind k) {
  return k == StepKind::delta || k == StepKind::gated_delta;
}

// One decode step's args on CUDA in the op layout: q, k [B,1,H,K], v [B,1,H,V], the gate the kind reads
// (log decays in [log 0.3, log 0.999]), beta in (0, 1), h0 [B,H,K,V] float32. Delta kinds get unit-norm k
// (as the DeltaNet layers pass it), so that I - beta k k^T is a contraction as in use.
ops::RecurrentArgs make_args(const StepCase& c, int64_t B = 3, int64_t H = 5, uint64_t seed = 0) {
  torch::manual_seed(seed);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const int64_t K = c.D, V = c.D;
  ops::RecurrentArgs a;
  a.q = torch::randn({B, 1, H, K}, f).to(c.dtype);
  a.k = torch::randn({B, 1, H, K}, f);
  if (is_delta(c.kind)) a.k = ops::l2_normalize(a.k);
  a.k = a.k.to(c.dtype);
  a.v = torch::randn({B, 1, H, V}, f).to(c.dtype);
  auto log_decay = [&](std::vector<int64_t> shape) { return (0.3 + 0.699 * torch::rand(shape, f)).log(); };
  if (c.kind == StepKind::scalar_gate || c.kind == StepKind::gated_delta) a.g = log_decay({B, 1, H});
  if (c.kind == StepKind::key_gate) a.g = log_decay({B, 1, H, K});
  if (is_delta(c.kind)) a.beta = torch::sigmoid(torch::randn({B, 1, H}, f));
  a.h0 = 0.5 * torch::randn({B, H, K, V}, f);
  a.output_final_state = true;
  return a;
}

// The same args as float64 CPU copies.
ops::RecurrentArgs to_f64(const ops::RecurrentArgs& a) {
  ops::RecurrentArgs d = a;
  for (auto* t : {&d.q, &d.k, &d.v, &d.g, &d.beta, &d.h0})
    if (t->defined()) *t = t->to(torch::kCPU).to(torch::kDouble);
  return d;
}

// The op of each kind; linear and scalar_gate are linear_attention and simple_gla.
ops::RecurrentOut run_op(StepKind kind, const ops::RecurrentArgs& a, ops::Impl impl) {
  switch (kind) {
    case StepKind::linear:
      return ops::linear_attention(a, impl);
    case StepKind::scalar_gate:
      return ops::simple_gla(a, impl);
    case StepKind::key_gate:
      return ops::gla(a, impl);
    case StepKind::delta:
      return ops::delta_rule(a, impl);
    case StepKind::gated_delta:
      return ops::gated_delta_rule(a, impl);
  }
  fail("unknown kind");
}

void expect_close(const ops::RecurrentOut& got, const ops::RecurrentOut& ref, torch::ScalarType dtype,
                  const std::string& what) {
  const double tol = dtype == torch::kBFloat16 ? kTolBf16 : kTolFp32;
  ASSERT_TRUE(got.o.defined() && got.ht.defined()) << what;
  EXPECT_TRUE(ops::all_finite(got.o)) << what << ": o has NaN / inf";
  EXPECT_TRUE(ops::all_finite(got.ht)) << what << ": ht has NaN / inf";
  EXPECT_EQ(got.o.scalar_type(), dtype) << what;
  EXPECT_EQ(got.ht.scalar_type(), torch::kFloat) << what;
  EXPECT_LT(ops::rel_rms_error(got.o.cpu().to(torch::kDouble), ref.o), tol) << what << ": o";
  EXPECT_LT(ops::rel_rms_error(got.ht.cpu().to(torch::kDouble), ref.ht), kStateTol) << what << ": ht";
}

class GpuRecurrentStep : public ::testing::TestWithParam<StepCase> {};

// cuda::recurrent_step and recurrent_step_into (outputs poisoned with NaN first) against the naive op.
TEST_P(GpuRecurrentStep, BindingMatchesNaiveFloat64) {
  SKIP_WITHOUT_CUDA();
  const auto& c = GetParam();
  torch::NoGradGuard ng;
  auto a = make_args(c);
  auto ref = run_op(c.kind, to_f64(a), ops::Impl::naive);
  ASSERT_TRUE(ops::cuda::recurrent_step_unusable_reason(c.kind, a, false).empty())
      << ops::cuda::recurrent_step_unusable_reason(c.kind, a, false);
  expect_close(ops::cuda::recurrent_step(c.kind, a), ref, c.dtype, "recurrent_step");

  // The raw API on caller-owned outputs, poisoned: every element must be written.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto o = torch::full({3, 5, c.D}, nan, a.v.options());  // [B, H, V]
  auto ht = torch::full_like(a.h0, nan);                  // [B, H, K, V]
  auto sel = [](const torch::Tensor& t) { return t.defined() ? t.select(1, 0) : t; };
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  ops::cuda::recurrent_step_into(c.kind, sel(a.q), sel(a.k), sel(a.v), sel(a.g), sel(a.beta), a.h0, o, ht,
                                 scale, false);
  expect_close({o.unsqueeze(1), ht}, ref, c.dtype, "recurrent_step_into");
}

// ops::<op>(Impl::kernel) and Impl::automatic on CUDA at T == 1 take the step kernel (bit-identical to the
// binding) for the ops wired to it: gla, delta_rule, gated_delta_rule.
TEST_P(GpuRecurrentStep, OpKernelPathMatchesNaiveFloat64) {
  SKIP_WITHOUT_CUDA();
  const auto& c = GetParam();
  if (c.kind == StepKind::linear || c.kind == StepKind::scalar_gate)
    GTEST_SKIP() << "linear_attention / simple_gla route their kernel path elsewhere (the chunk kernels)";
  torch::NoGradGuard ng;
  auto a = make_args(c, 3, 5, 1);
  auto ref = run_op(c.kind, to_f64(a), ops::Impl::naive);
  auto got = run_op(c.kind, a, ops::Impl::kernel);
  expect_close(got, ref, c.dtype, "Impl::kernel");
  auto autom = run_op(c.kind, a, ops::Impl::automatic);
  EXPECT_TRUE(torch::equal(autom.o, got.o)) << "Impl::automatic did not take the step kernel";
  EXPECT_TRUE(torch::equal(autom.ht, got.ht)) << "Impl::automatic did not take the step kernel";
  // Without output_final_state the kernel skips the state write; o is the same.
  a.output_final_state = false;
  auto no_state = run_op(c.kind, a, ops::Impl::kernel);
  EXPECT_FALSE(no_state.ht.defined());
  EXPECT_TRUE(torch::equal(no_state.o, got.o));
}

// ht aliasing h0: the state is updated in place.
TEST_P(GpuRecurrentStep, InPlaceStateEqualsSeparate) {
  SKIP_WITHOUT_CUDA();
  const auto& c = GetParam();
  torch::NoGradGuard ng;
  auto a = make_args(c, 3, 5, 2);
  auto ref = run_op(c.kind, to_f64(a), ops::Impl::naive);
  auto sel = [](const torch::Tensor& t) { return t.defined() ? t.select(1, 0) : t; };
  auto state = a.h0.clone();  // [B, H, K, V], read and overwritten
  auto o = torch::full({3, 5, c.D}, std::numeric_limits<double>::quiet_NaN(), a.v.options());
  ops::cuda::recurrent_step_into(c.kind, sel(a.q), sel(a.k), sel(a.v), sel(a.g), sel(a.beta), state, o, state,
                                 1.0 / std::sqrt(static_cast<double>(c.D)), false);
  expect_close({o.unsqueeze(1), state}, ref, c.dtype, "in place");
}

// In-kernel L2 normalisation of q and k equals normalising them first (delta kinds; float32).
TEST_P(GpuRecurrentStep, InKernelL2NormEqualsNormalisedInputs) {
  SKIP_WITHOUT_CUDA();
  const auto& c = GetParam();
  if (!is_delta(c.kind) || c.dtype != torch::kFloat) GTEST_SKIP() << "delta kinds, float32";
  torch::NoGradGuard ng;
  auto a = make_args(c, 3, 5, 3);
  a.q = 3.0 * a.q, a.k = 2.0 * a.k;  // far from unit norm
  auto normalised = to_f64(a);
  normalised.q = ops::l2_normalize(normalised.q), normalised.k = ops::l2_normalize(normalised.k);
  auto ref = run_op(c.kind, normalised, ops::Impl::naive);
  expect_close(ops::cuda::recurrent_step(c.kind, a, /*l2norm_qk=*/true), ref, c.dtype, "l2norm_qk");
}

INSTANTIATE_TEST_SUITE_P(Kinds, GpuRecurrentStep, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return case_name(info.param); });

TEST(GpuRecurrentStepErrors, UnsupportedArgsSayWhy) {
  SKIP_WITHOUT_CUDA();
  torch::NoGradGuard ng;
  auto a = make_args({StepKind::gated_delta, torch::kBFloat16, 64});
  auto bad = a;
  bad.q = torch::randn({3, 1, 5, 96}, a.q.options()), bad.k = torch::randn({3, 1, 5, 96}, a.k.options());
  bad.h0 = torch::randn({3, 5, 96, 64}, a.h0.options());
  EXPECT_ERROR_WITH(ops::cuda::recurrent_step(StepKind::gated_delta, bad), "K 96 not in the step kernel");
  EXPECT_ERROR_WITH(
      ops::gated_delta_rule(bad, ops::Impl::kernel),
      "gated_delta_rule: impl kernel cannot run these inputs: the decode step: K 96 not in the step "
      "kernel (64, 128); the chunk kernels: head dims K = 96");
  // automatic falls back to the chunk form (logged once), which equals the naive form.
  auto fallback = ops::gated_delta_rule(bad, ops::Impl::automatic);
  auto naive = ops::gated_delta_rule(bad, ops::Impl::naive);
  EXPECT_LT(ops::rel_rms_error(fallback.o.to(torch::kFloat), naive.o.to(torch::kFloat)), kTolBf16);

  auto two = make_args({StepKind::key_gate, torch::kFloat, 64});
  for (auto* t : {&two.q, &two.k, &two.v, &two.g}) *t = torch::cat({*t, *t}, 1);  // T = 2
  EXPECT_ERROR_WITH(ops::gla(two, ops::Impl::kernel), "gla: impl kernel cannot run these inputs",
                    "one-token decode step (T == 1)");
  EXPECT_NE(ops::cuda::recurrent_step_unusable_reason(StepKind::key_gate, two, false).find("T = 2"),
            std::string::npos);

  auto mixed = a;
  mixed.v = a.v.to(torch::kFloat);
  EXPECT_NE(ops::cuda::recurrent_step_unusable_reason(StepKind::gated_delta, mixed, false).find("differ"),
            std::string::npos);
  auto no_beta = a;
  no_beta.beta = torch::Tensor();
  EXPECT_ERROR_WITH(ops::cuda::recurrent_step(StepKind::gated_delta, no_beta), "no beta");
}

TEST(GpuRecurrentStepErrors, AutogradInputsAreNotForTheKernel) {
  SKIP_WITHOUT_CUDA();
  auto a = make_args({StepKind::delta, torch::kFloat, 64});
  a.q = a.q.detach().requires_grad_(true);
  auto why = ops::cuda::recurrent_step_unusable_reason(StepKind::delta, a, false);
  EXPECT_NE(why.find("requires grad"), std::string::npos) << why;
  // automatic then runs the differentiable chunk form.
  auto out = ops::delta_rule(a, ops::Impl::automatic);
  out.o.sum().backward();
  EXPECT_TRUE(a.q.grad().defined());
  torch::NoGradGuard ng;
  EXPECT_TRUE(ops::cuda::recurrent_step_unusable_reason(StepKind::delta, a, false).empty());
}

// A mixer on CUDA: prefill 9 tokens, decode 6 one at a time (T == 1: the step kernel under impl auto),
// against one forward over all 15 (the chunk form). Float32; the same sums in another order through a float32
// state: 1e-5 as the CPU streaming tests.
struct MixerDecodeCase {
  std::string label, mixer;
  int64_t d_model, n_heads;  // gla: K = d/(2H), V = d/H; (gated_)deltanet: K = V = d/H
};

class GpuRecurrentStepMixer : public ::testing::TestWithParam<MixerDecodeCase> {};

TEST_P(GpuRecurrentStepMixer, DecodeOnCudaEqualsOneForward) {
  SKIP_WITHOUT_CUDA();
  const auto& c = GetParam();
  torch::manual_seed(0);
  auto opts = MixerRegistry::instance().get(c.mixer).make_options();
  auto m = build_mixer(c.mixer, MixerContext{c.d_model, c.n_heads, 0, 2}, *opts);
  m->to(torch::kCUDA);
  torch::NoGradGuard ng;
  const int64_t T = 9, K = 6;
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto x = torch::randn({2, T + K, c.d_model}, f);
  auto full = m->forward(x, nullptr);  // [2, T+K, C]
  auto cache = m->make_cache(2, T + K, f);
  std::vector<torch::Tensor> parts{m->forward(x.narrow(1, 0, T), cache.get())};
  for (int64_t i = 0; i < K; ++i) parts.push_back(m->forward(x.narrow(1, T + i, 1), cache.get()));
  EXPECT_EQ(cache->position, T + K);
  auto got = torch::cat(parts, 1);
  EXPECT_TRUE(ops::all_finite(got));
  EXPECT_LT(ops::rel_rms_error(got, full), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Mixers, GpuRecurrentStepMixer,
                         ::testing::Values(MixerDecodeCase{"gla_K64_V128", "gla", 256, 2},
                                           MixerDecodeCase{"deltanet_K64", "deltanet", 128, 2},
                                           MixerDecodeCase{"gated_deltanet_K128", "gated_deltanet", 256, 2}),
                         [](const auto& info) { return info.param.label; });

}  // namespace
#endif  // ATTNLAB_WITH_CUDA

// Runs anywhere: CPU tensors are never for the step kernel, and the delta ops say why not.
TEST(GpuRecurrentStepUsable, CpuTensorsAreNotForTheKernel) {
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 1, 2, 64}), a.k = torch::randn({1, 1, 2, 64}), a.v = torch::randn({1, 1, 2, 64});
  a.beta = torch::rand({1, 1, 2});
#ifdef ATTNLAB_WITH_CUDA
  auto why = ops::cuda::recurrent_step_unusable_reason(ops::cuda::StepKind::delta, a, false);
  EXPECT_NE(why.find("needs CUDA"), std::string::npos) << why;
  EXPECT_ERROR_WITH(ops::delta_rule(a, ops::Impl::kernel), "impl kernel cannot run", "needs CUDA");
#else
  EXPECT_ERROR_WITH(ops::delta_rule(a, ops::Impl::kernel), "not compiled into this build");
#endif
  // automatic on CPU: the chunk form, equal to the naive one.
  auto c = ops::delta_rule(a, ops::Impl::automatic), n = ops::delta_rule(a, ops::Impl::naive);
  EXPECT_LT(ops::rel_rms_error(c.o, n.o), 1e-5);
}
