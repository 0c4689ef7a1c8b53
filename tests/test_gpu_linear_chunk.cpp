// labels: gpu
// The chunked linear / simple-GLA kernels (cuda::linear_chunk) against our chunk form (itself held to the
// naive recurrence and FLA's fixtures by test_ops_linear): o, ht and every gradient (q, k, v, g, h0) of
// sum(o * do) + sum(ht * dht), on float32 copies of the same 16-bit inputs, so that only the kernel's own
// rounding counts. Awkward lengths (not multiples of the 64-token chunk), weak and strong gates, forced
// segment splits (the scan path), bf16 and fp16, D = 64 and 128.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/simple_gla.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/linear_chunk.h"
#include "kernels/linear_chunk/params.h"
#endif
#include "support/helpers.h"
#include "support/kernel_test.h"

using namespace attnlab;

#ifdef ATTNLAB_WITH_CUDA
namespace {

struct Case {
  int64_t B, T, H, D;
  torch::ScalarType dtype;
  std::string gate;  // none | weak | strong
  bool h0;
  int64_t seg_chunks;  // 0 = the kernels' choice
};

std::string name(const Case& c) {
  return fmt::format("B{}_T{}_H{}_D{}_{}_{}{}_seg{}", c.B, c.T, c.H, c.D,
                     c.dtype == torch::kHalf ? "fp16" : "bf16", c.gate, c.h0 ? "_h0" : "", c.seg_chunks);
}

struct Result {
  torch::Tensor o, ht, dq, dk, dv, dg, dh0;
};

// Runs the op on leaves made from the given tensors (dtype `dt`), backward of sum(o * do) + sum(ht * dht).
Result run(const Case& c, const std::vector<torch::Tensor>& in, torch::ScalarType dt, ops::Impl impl) {
  const auto &q0 = in[0], &k0 = in[1], &v0 = in[2], &g0 = in[3], &h00 = in[4], &do0 = in[5], &dht0 = in[6];
  ops::RecurrentArgs a;
  a.q = q0.to(dt).detach().requires_grad_(true);
  a.k = k0.to(dt).detach().requires_grad_(true);
  a.v = v0.to(dt).detach().requires_grad_(true);
  // float64 (the diagnostic reference) takes every input in float64; otherwise gates and h0 stay float32.
  const auto fdt = dt == torch::kDouble ? torch::kDouble : torch::kFloat;
  if (c.gate != "none") a.g = g0.to(fdt).detach().requires_grad_(true);
  if (c.h0) a.h0 = h00.to(fdt).detach().requires_grad_(true);
  a.output_final_state = true;
  a.kernel_seg_chunks = c.seg_chunks;
  auto out = c.gate == "none" ? ops::linear_attention(a, impl) : ops::simple_gla(a, impl);
  auto loss = (out.o.to(torch::kFloat) * do0).sum() + (out.ht * dht0).sum();
  loss.backward();
  Result r{out.o.detach().to(torch::kFloat),
           out.ht.detach(),
           a.q.grad().to(torch::kFloat),
           a.k.grad().to(torch::kFloat),
           a.v.grad().to(torch::kFloat),
           {},
           {}};
  if (c.gate != "none") r.dg = a.g.grad();
  if (c.h0) r.dh0 = a.h0.grad();
  return r;
}

void check_case(const Case& c) {
  torch::manual_seed(1234 + c.T + c.D);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  // Inputs as the layers make them: unit-variance q, k scaled down like a K^-1/2 projection, and gates
  // from log-sigmoid logits (weak: decays near 1, as GLA's normaliser 16 gives; strong: down to e^-5).
  auto q = torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype).to(torch::kFloat);
  auto k = (torch::randn({c.B, c.T, c.H, c.D}, f) / std::sqrt(double(c.D))).to(c.dtype).to(torch::kFloat);
  auto v = torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype).to(torch::kFloat);
  auto logits = torch::randn({c.B, c.T, c.H}, f);
  auto g = c.gate == "strong" ? torch::log_sigmoid(logits * 2 - 1) * 2 : torch::log_sigmoid(logits + 2) / 16;
  auto h0 = torch::randn({c.B, c.H, c.D, c.D}, f);
  auto dout = torch::randn({c.B, c.T, c.H, c.D}, f);
  auto dht = torch::randn({c.B, c.H, c.D, c.D}, f);
  std::vector<torch::Tensor> in{q, k, v, g, h0, dout, dht};

  auto ref = run(c, in, torch::kFloat, ops::Impl::chunk);
  auto got = run(c, in, c.dtype, ops::Impl::kernel);
  // bf16 keeps 8 bits: the kernel's 16-bit scores and state copy give ~2-3e-3; fp16 (11 bits) 8x less.
  const double tol = c.dtype == torch::kHalf ? 1e-3 : 5e-3;
  auto expect = [&](const char* what, const torch::Tensor& x, const torch::Tensor& r, double t) {
    ASSERT_TRUE(x.defined()) << what;
    EXPECT_FALSE(torch::isnan(x).any().item<bool>()) << name(c) << ": NaN in " << what;
    double e = attnlab::testing::rel_rms(x, r);
    EXPECT_LT(e, t) << name(c) << ": " << what << " rel RMS " << e;
    std::printf("  %-44s %-4s %.2e\n", name(c).c_str(), what, e);
  };
  expect("o", got.o, ref.o, tol);
  expect("ht", got.ht, ref.ht, tol);
  expect("dq", got.dq, ref.dq, tol);
  expect("dk", got.dk, ref.dk, tol);
  expect("dv", got.dv, ref.dv, tol);
  if (c.h0) expect("dh0", got.dh0, ref.dh0, tol);
  // dg_t sums q.dq - k.dk over the rest of the sequence: a difference of large terms, so its relative error
  // is that of dq and dk times their ratio to dg; 4x the others' bound.
  if (c.gate != "none") expect("dg", got.dg, ref.dg, 4 * tol);
  if (c.gate != "none" && attnlab::testing::rel_rms(got.dg, ref.dg) > 2 * tol) {
    // Which side is off: both against the float64 chunk form, and the tokens with the largest errors.
    auto ref64 = run(c, in, torch::kDouble, ops::Impl::chunk);
    auto r64 = ref64.dg.to(torch::kDouble);
    std::printf("  %-44s dg against float64: kernel %.2e, float32 chunk form %.2e\n", name(c).c_str(),
                attnlab::testing::rel_rms(got.dg, r64), attnlab::testing::rel_rms(ref.dg, r64));
    auto err = (got.dg.to(torch::kDouble) - r64).abs().flatten();
    auto top = err.topk(std::min<int64_t>(6, err.numel()));
    auto idx = std::get<1>(top);
    for (int64_t i = 0; i < idx.numel(); ++i) {
      const int64_t n = idx[i].item<int64_t>();
      const int64_t t = (n / c.H) % c.T;
      std::printf("    t %5lld  kernel % .5e  float64 % .5e  float32 % .5e\n", static_cast<long long>(t),
                  got.dg.flatten()[n].item<double>(), r64.flatten()[n].item<double>(),
                  ref.dg.flatten()[n].item<double>());
    }
  }
}

class LinearChunkKernel : public ::testing::TestWithParam<Case> {};

TEST_P(LinearChunkKernel, MatchesChunkForm) {
  SKIP_WITHOUT_CUDA();
  check_case(GetParam());
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int64_t D : {64, 128})
    for (const char* gate : {"none", "weak", "strong"}) {
      out.push_back({2, 200, 3, D, torch::kBFloat16, gate, true, 0});
      out.push_back({1, 1000, 2, D, torch::kBFloat16, gate, false, 0});
      out.push_back({2, 333, 2, D, torch::kBFloat16, gate, true, 2});  // 6 chunks in 3 segments
      out.push_back({1, 777, 3, D, torch::kHalf, gate, true, 3});
    }
  out.push_back({3, 1, 2, 64, torch::kBFloat16, "weak", true, 0});      // one token
  out.push_back({2, 64, 2, 128, torch::kBFloat16, "strong", true, 1});  // one full chunk
  out.push_back({1, 4096, 4, 128, torch::kBFloat16, "weak", true, 0});  // long: the default split
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, LinearChunkKernel, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return name(info.param); });

// On CUDA, automatic runs the chunk kernels.
TEST(LinearChunkKernel, AutomaticUsesTheKernelOnCuda) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  ops::RecurrentArgs a;
  a.q = torch::randn({2, 100, 2, 64}, f), a.k = torch::randn({2, 100, 2, 64}, f) * 0.1;
  a.v = torch::randn({2, 100, 2, 64}, f);
  a.g = torch::log_sigmoid(torch::randn({2, 100, 2}, f.dtype(torch::kFloat)));
  auto viakernel = ops::simple_gla(a, ops::Impl::kernel).o;
  auto automatic = ops::simple_gla(a, ops::Impl::automatic).o;
  EXPECT_TRUE(torch::equal(viakernel, automatic));
  // Deterministic: the same inputs give the same bits (no atomics in o).
  EXPECT_TRUE(torch::equal(viakernel, ops::simple_gla(a, ops::Impl::kernel).o));
}

// The wgmma forward and its state pass (the default on sm_90a builds, D = 64 and 128) against the mma.sync
// ones (ATTNLAB_LINEAR_FWD=mma, ATTNLAB_LINEAR_STATE=mma): o and ht, with and without a gate, segments and
// h0; then both timed (printed, not asserted: speed is the bench's).
TEST(LinearChunkKernel, WgmmaForwardMatchesMmaSync) {
  SKIP_WITHOUT_CUDA();
  if (!kernels::linear_chunk_has_wgmma()) GTEST_SKIP() << "this build has no sm_90a code";
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::NoGradGuard ng;
  for (int64_t D : {128, 64})
    for (bool gated : {false, true})
      for (int64_t T : {64, 333, 4096}) {
        torch::manual_seed(21 + T);
        ops::RecurrentArgs a;
        a.q = torch::randn({2, T, 3, D}, f), a.k = torch::randn({2, T, 3, D}, f) / std::sqrt(double(D));
        a.v = torch::randn({2, T, 3, D}, f);
        a.h0 = torch::randn({2, 3, D, D}, f.dtype(torch::kFloat));
        if (gated) a.g = torch::log_sigmoid(torch::randn({2, T, 3}, f.dtype(torch::kFloat)) + 1);
        a.output_final_state = true;
        a.kernel_seg_chunks = T == 333 ? 2 : 0;
        auto run = [&] { return ops::cuda::linear_chunk(a, gated); };
        auto timed = [&] {
          for (int i = 0; i < 3; ++i) run();
          torch::cuda::synchronize();
          auto t0 = std::chrono::steady_clock::now();
          for (int i = 0; i < 20; ++i) run();
          torch::cuda::synchronize();
          return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
                 20;
        };
        setenv("ATTNLAB_LINEAR_FWD", "mma", 1);
        setenv("ATTNLAB_LINEAR_STATE", "mma", 1);
        auto ref = run();
        const double ms_mma = timed();
        unsetenv("ATTNLAB_LINEAR_FWD");
        unsetenv("ATTNLAB_LINEAR_STATE");
        auto got = run();
        const double ms_wg = timed();
        const auto label = fmt::format("D {} {} T {}", D, gated ? "gated" : "ungated", T);
        EXPECT_FALSE(torch::isnan(got.o).any().item<bool>()) << label;
        EXPECT_LT(attnlab::testing::rel_rms(got.o.to(torch::kFloat), ref.o.to(torch::kFloat)), 5e-3) << label;
        EXPECT_LT(attnlab::testing::rel_rms(got.ht, ref.ht), 1e-3) << label;
        std::printf("  wgmma forward %-16s o %.2e ht %.2e; %.3f ms (mma.sync %.3f ms)\n", label.c_str(),
                    attnlab::testing::rel_rms(got.o.to(torch::kFloat), ref.o.to(torch::kFloat)),
                    attnlab::testing::rel_rms(got.ht, ref.ht), ms_wg, ms_mma);
      }
}

// The wgmma backward walks and state passes (the default on sm_90a builds at D = 128) against the mma.sync
// ones (ATTNLAB_LINEAR_BWD=mma, ATTNLAB_LINEAR_STATE=mma): every gradient, with and without a gate (weak and
// strong), segments, h0 and dht, bf16 and fp16; then forward + backward of both timed (printed, not asserted:
// speed is the bench's).
TEST(LinearChunkKernel, WgmmaBackwardMatchesMmaSync) {
  SKIP_WITHOUT_CUDA();
  if (!kernels::linear_chunk_has_wgmma()) GTEST_SKIP() << "this build has no sm_90a code";
  std::vector<Case> shapes{{2, 64, 3, 128, torch::kBFloat16, "none", true, 1},
                           {2, 333, 3, 128, torch::kBFloat16, "weak", true, 2},
                           {2, 333, 3, 128, torch::kHalf, "strong", false, 0},
                           {1, 4096, 4, 128, torch::kBFloat16, "none", false, 0},
                           {1, 4096, 4, 128, torch::kBFloat16, "strong", true, 0}};
  for (const auto& c : shapes) {
    torch::manual_seed(77 + c.T);
    auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
    std::vector<torch::Tensor> in{torch::randn({c.B, c.T, c.H, c.D}, f),
                                  torch::randn({c.B, c.T, c.H, c.D}, f) / std::sqrt(double(c.D)),
                                  torch::randn({c.B, c.T, c.H, c.D}, f),
                                  c.gate == "strong"
                                      ? torch::log_sigmoid(torch::randn({c.B, c.T, c.H}, f) * 2 - 1) * 2
                                      : torch::log_sigmoid(torch::randn({c.B, c.T, c.H}, f) + 2) / 16,
                                  torch::randn({c.B, c.H, c.D, c.D}, f),
                                  torch::randn({c.B, c.T, c.H, c.D}, f),
                                  torch::randn({c.B, c.H, c.D, c.D}, f)};
    auto timed = [&] {
      for (int i = 0; i < 3; ++i) run(c, in, c.dtype, ops::Impl::kernel);
      torch::cuda::synchronize();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 10; ++i) run(c, in, c.dtype, ops::Impl::kernel);
      torch::cuda::synchronize();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 10;
    };
    setenv("ATTNLAB_LINEAR_BWD", "mma", 1);
    setenv("ATTNLAB_LINEAR_STATE", "mma", 1);
    auto ref = run(c, in, c.dtype, ops::Impl::kernel);
    const double ms_mma = timed();
    unsetenv("ATTNLAB_LINEAR_BWD");
    unsetenv("ATTNLAB_LINEAR_STATE");
    auto got = run(c, in, c.dtype, ops::Impl::kernel);
    const double ms_wg = timed();
    const double tol = c.dtype == torch::kHalf ? 1e-3 : 5e-3;
    std::vector<std::pair<const char*, std::pair<torch::Tensor, torch::Tensor>>> grads{
        {"dq", {got.dq, ref.dq}}, {"dk", {got.dk, ref.dk}}, {"dv", {got.dv, ref.dv}}};
    if (c.gate != "none") grads.push_back({"dg", {got.dg, ref.dg}});
    if (c.h0) grads.push_back({"dh0", {got.dh0, ref.dh0}});
    for (const auto& [what, xy] : grads) {
      ASSERT_TRUE(xy.first.defined()) << name(c) << " " << what;
      EXPECT_FALSE(torch::isnan(xy.first).any().item<bool>()) << name(c) << ": NaN in " << what;
      const double e = attnlab::testing::rel_rms(xy.first, xy.second);
      EXPECT_LT(e, std::string(what) == "dg" ? 4 * tol : tol) << name(c) << ": " << what << " rel RMS " << e;
      std::printf("  wgmma backward %-40s %-4s %.2e\n", name(c).c_str(), what, e);
    }
    std::printf("  wgmma backward %-40s forward + backward %.3f ms (mma.sync walks %.3f ms)\n",
                name(c).c_str(), ms_wg, ms_mma);
  }
}

// The normalised variant: numerator through the kernels, normaliser from a cumulative sum of k.
TEST(LinearChunkKernel, NormalizedMatchesChunkForm) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(5);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const int64_t B = 2, T = 300, H = 2, D = 64;
  // Positive features (elu + 1), as the layer feeds this op, so that the normaliser stays away from 0.
  auto q = (torch::elu(torch::randn({B, T, H, D}, f)) + 1).to(torch::kBFloat16).to(torch::kFloat);
  auto k = (torch::elu(torch::randn({B, T, H, D}, f)) + 1).to(torch::kBFloat16).to(torch::kFloat);
  auto v = torch::randn({B, T, H, D}, f).to(torch::kBFloat16).to(torch::kFloat);
  auto h0 = torch::rand({B, H, D, D + 1}, f), dout = torch::randn({B, T, H, D}, f);
  auto go = [&](torch::ScalarType dt, ops::Impl impl) {
    ops::RecurrentArgs a;
    a.q = q.to(dt).detach().requires_grad_(true), a.k = k.to(dt).detach().requires_grad_(true);
    a.v = v.to(dt).detach().requires_grad_(true), a.h0 = h0.detach().requires_grad_(true);
    a.output_final_state = true;
    auto out = ops::linear_attention_normalized(a, impl);
    ((out.o.to(torch::kFloat) * dout).sum() + out.ht.sum()).backward();
    return std::vector<torch::Tensor>{out.o.detach().to(torch::kFloat), out.ht.detach(),
                                      a.q.grad().to(torch::kFloat),     a.k.grad().to(torch::kFloat),
                                      a.v.grad().to(torch::kFloat),     a.h0.grad()};
  };
  auto ref = go(torch::kFloat, ops::Impl::chunk), got = go(torch::kBFloat16, ops::Impl::kernel);
  const char* names[] = {"o", "ht", "dq", "dk", "dv", "dh0"};
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_FALSE(torch::isnan(got[i]).any().item<bool>()) << names[i];
    EXPECT_LT(attnlab::testing::rel_rms(got[i], ref[i]), 1e-2) << names[i];
  }
}

TEST(LinearChunkKernel, RejectsWhatItCannotRun) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 10, 2, 96}, f), a.k = torch::randn({1, 10, 2, 96}, f);
  a.v = torch::randn({1, 10, 2, 96}, f);
  EXPECT_ERROR_WITH(ops::linear_attention(a, ops::Impl::kernel), "linear_attention", "96", "64 or 128");
  // automatic falls back to the chunk form (logged once) and still answers.
  EXPECT_EQ(ops::linear_attention(a, ops::Impl::automatic).o.sizes(), a.v.sizes());
  a.q = a.q.cpu(), a.k = a.k.cpu(), a.v = a.v.cpu();
  EXPECT_NE(ops::cuda::linear_chunk_unusable_reason(a, false).find("CUDA"), std::string::npos);
  // The scans put B * H on gridDim.y: more than 65535 (batch and heads) is refused, not launched.
  ops::RecurrentArgs wide;
  wide.q = torch::randn({65536, 1, 1, 64}, f), wide.k = torch::randn({65536, 1, 1, 64}, f);
  wide.v = torch::randn({65536, 1, 1, 64}, f);
  EXPECT_NE(ops::cuda::linear_chunk_unusable_reason(wide, false).find("B * H = 65536"), std::string::npos);
}

}  // namespace
#else
TEST(LinearChunkKernel, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA kernels (nvcc was not found at configure time)";
}
#endif
