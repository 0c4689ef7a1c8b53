// labels: gpu
// Our flash-attention kernel (raw binding and through ops::softmax_attention) against a float32 reference:
// output, lse and the gradients of sum(o * do), with SDPA's own error in the same dtype as the yardstick.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/softmax_attention.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/flash_attn.h"
#endif
#include "support/helpers.h"
#include "support/kernel_test.h"

using namespace attnlab;

#ifdef ATTNLAB_WITH_CUDA
namespace {

struct FlashCase {
  int64_t B, T, H, Hkv, D;
  torch::ScalarType dtype;
  std::string mask;    // causal | full | window<N>
  int64_t window = 0;  // > 0 for window<N> (causal too)
};

std::string case_name(const FlashCase& c) {
  return fmt::format("B{}_T{}_H{}_Hkv{}_D{}_{}_{}", c.B, c.T, c.H, c.Hkv, c.D,
                     c.dtype == torch::kBFloat16 ? "bf16" : "fp16", c.mask);
}

// Every dtype x head dim x awkward T (not multiples of the 64 / 128 tiles) x MHA / GQA x mask.
std::vector<FlashCase> all_cases() {
  std::vector<FlashCase> out;
  for (auto dt : {torch::kBFloat16, torch::kHalf})
    for (int64_t D : {64, 128})
      for (int64_t T : {77, 300})
        for (int64_t Hkv : {8, 2}) {
          out.push_back({2, T, 8, Hkv, D, dt, "causal", 0});
          out.push_back({2, T, 8, Hkv, D, dt, "full", 0});
          out.push_back({2, T, 8, Hkv, D, dt, "window64", 64});
        }
  return out;
}

ops::SoftmaxArgs make_args(const FlashCase& c, const torch::Tensor& q, const torch::Tensor& k,
                           const torch::Tensor& v) {
  ops::SoftmaxArgs a;
  a.q = q.detach().requires_grad_(true);
  a.k = k.detach().requires_grad_(true);
  a.v = v.detach().requires_grad_(true);
  a.causal = c.mask != "full";
  a.window = c.window;
  return a;
}

struct Result {
  torch::Tensor o, dq, dk, dv;
};

// o and the gradients of sum(o * dout) through ops::softmax_attention; inputs are used as they come.
Result run_op(const FlashCase& c, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
              const torch::Tensor& dout, ops::Impl impl) {
  auto a = make_args(c, q, k, v);
  auto o = ops::softmax_attention(a, impl);  // [B, T, H, D]
  auto loss = (o * dout.to(o.scalar_type())).sum();
  auto g = torch::autograd::grad({loss}, {a.q, a.k, a.v});
  return {o.detach(), g[0], g[1], g[2]};
}

// lse [B, H, T] of the scaled, masked scores in float32 (what the kernel saves for its backward).
torch::Tensor reference_lse(const FlashCase& c, const torch::Tensor& q, const torch::Tensor& k) {
  auto a = make_args(c, q, k, k);
  auto qf = q.to(torch::kFloat).transpose(1, 2);                                           // [B, H, T, D]
  auto kf = k.to(torch::kFloat).repeat_interleave(c.H / c.Hkv, 2).transpose(1, 2);         // [B, H, T, D]
  auto s = torch::matmul(qf, kf.transpose(-1, -2)) / std::sqrt(static_cast<double>(c.D));  // [B, H, T, T]
  auto mask = ops::softmax_visibility(a, q.device());
  if (mask.defined()) s = s.masked_fill(mask.logical_not(), -INFINITY);
  return torch::logsumexp(s, -1);
}

// The smallest error any 16-bit result can have: that of storing the float32 reference in the type.
double storage_floor(const torch::Tensor& ref, torch::ScalarType dt) {
  return ops::rel_rms_error(ref.to(dt), ref);
}

class GpuFlash : public ::testing::TestWithParam<FlashCase> {};

TEST_P(GpuFlash, MatchesFloat32Reference) {
  SKIP_WITHOUT_CUDA();
  const auto c = GetParam();
  torch::manual_seed(7);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  auto opts = f32.dtype(c.dtype);
  // Random normal values (never zeros) stored in the 16-bit type; the reference sees exactly these values.
  auto q = torch::randn({c.B, c.T, c.H, c.D}, f32).to(c.dtype);
  auto k = torch::randn({c.B, c.T, c.Hkv, c.D}, f32).to(c.dtype);
  auto v = torch::randn({c.B, c.T, c.Hkv, c.D}, f32).to(c.dtype);
  auto dout = torch::randn({c.B, c.T, c.H, c.D}, f32).to(c.dtype);

  auto ref = run_op(c, q.to(torch::kFloat), k.to(torch::kFloat), v.to(torch::kFloat), dout, ops::Impl::naive);
  const std::vector<std::pair<const char*, torch::Tensor Result::*>> fields = {
      {"o", &Result::o}, {"dq", &Result::dq}, {"dk", &Result::dk}, {"dv", &Result::dv}};

  // Tolerance per tensor: 2x SDPA's own error in this dtype against the same reference (a 16-bit
  // attention cannot do much better than SDPA; 2x leaves room for a different order of summation, while
  // a wrong mask, scale or GQA mapping lands far above). Floored at the storage error, so that a lucky
  // SDPA never asks for less than rounding allows. Without SDPA (libtorch < 2.1): 1e-2.
  std::map<std::string, double> tol;
  if (compat::has_sdpa()) {
    auto sdpa = run_op(c, q, k, v, dout, ops::Impl::sdpa);
    for (const auto& [name, field] : fields) {
      double err = ops::rel_rms_error(sdpa.*field, ref.*field);
      tol[name] = 2 * std::max(err, storage_floor(ref.*field, c.dtype));
    }
  } else {
    for (const auto& [name, field] : fields) tol[name] = 1e-2;
  }

  // The raw binding, every output poisoned with NaN first: a row or element it fails to write shows.
  ops::cuda::FlashAttnOptions opt{1.0 / std::sqrt(static_cast<double>(c.D)), c.mask != "full", c.window};
  Result raw;
  raw.o = torch::full({c.B, c.T, c.H, c.D}, NAN, opts);
  auto lse = torch::full({c.B, c.H, c.T}, NAN, f32);
  ops::cuda::flash_attn_fwd_into(q, k, v, raw.o, lse, opt);
  raw.dq = torch::full_like(q, NAN), raw.dk = torch::full_like(k, NAN), raw.dv = torch::full_like(v, NAN);
  ops::cuda::flash_attn_bwd_into(dout, q, k, v, raw.o, lse, raw.dq, raw.dk, raw.dv, opt);
  // The other backward main kernel: on Hopper (sm_90a build) the default is the wgmma one and
  // ATTNLAB_FLASH_BWD=mma forces the mma.sync one; both are held to the same tolerances.
  Result raw_mma = raw;
  raw_mma.dq = torch::full_like(q, NAN), raw_mma.dk = torch::full_like(k, NAN);
  raw_mma.dv = torch::full_like(v, NAN);
  setenv("ATTNLAB_FLASH_BWD", "mma", 1);
  ops::cuda::flash_attn_bwd_into(dout, q, k, v, raw.o, lse, raw_mma.dq, raw_mma.dk, raw_mma.dv, opt);
  unsetenv("ATTNLAB_FLASH_BWD");

  // Through the op (autograd, the binding's own allocations).
  auto op = run_op(c, q, k, v, dout, ops::Impl::kernel);

  for (const auto& [name, field] : fields) {
    for (const auto& [path, got] : {std::make_pair("raw", raw.*field), std::make_pair("op", op.*field),
                                    std::make_pair("raw mma.sync backward", raw_mma.*field)}) {
      EXPECT_TRUE(ops::all_finite(got)) << path << " " << name << " has NaN/inf";
      double err = ops::rel_rms_error(got, ref.*field);
      EXPECT_LE(err, tol.at(name)) << path << " " << name << ": rel RMS error " << err << " > tol "
                                   << tol.at(name) << " (2x SDPA's error or the storage floor)";
    }
  }
  // lse is float32 inside the kernel: within 1e-5 relative (measured ~1e-7; a wrong scale gives > 1e-2).
  EXPECT_TRUE(ops::all_finite(lse));
  EXPECT_LE(ops::rel_rms_error(lse, reference_lse(c, q, k)), 1e-5);
  // The forward is deterministic, and automatic must pick the kernel for these args.
  EXPECT_TRUE(torch::equal(op.o, raw.o)) << "the op's kernel path and the raw binding differ";
  auto a = make_args(c, q, k, v);
  EXPECT_TRUE(ops::cuda::flash_attn_usable(a)) << ops::cuda::flash_attn_unusable_reason(a);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(ops::softmax_attention(a, ops::Impl::automatic), raw.o))
      << "automatic did not use the kernel on args it can run";
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuFlash, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<FlashCase>& info) {
                           return case_name(info.param);
                         });

// An upstream gradient of any layout (o.sum() hands an expanded, stride-0 tensor) and inputs the kernel
// cannot read in place (2 bytes past alignment) are copied by the binding, not refused.
TEST(GpuFlashLayout, AnyUpstreamGradientAndMisalignedInputs) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(11);
  FlashCase c{1, 130, 4, 2, 64, torch::kBFloat16, "causal", 0};
  auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  auto q = torch::randn({1, 130, 4, 65}, opts).narrow(3, 1, 64);  // data 2 bytes past alignment
  auto k = torch::randn({1, 130, 2, 64}, opts), v = torch::randn({1, 130, 2, 64}, opts);
  auto a = make_args(c, q, k, v);
  auto o = ops::softmax_attention(a, ops::Impl::kernel);
  auto g = torch::autograd::grad({o.sum()}, {a.q, a.k, a.v});
  auto r = make_args(c, q.to(torch::kFloat), k.to(torch::kFloat), v.to(torch::kFloat));
  auto ro = ops::softmax_attention(r, ops::Impl::naive);
  auto rg = torch::autograd::grad({ro.sum()}, {r.q, r.k, r.v});
  // bf16 against float32: 1e-2, the harness's threshold for bf16 outputs (measured ~2e-3).
  EXPECT_LE(ops::rel_rms_error(o, ro), 1e-2);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(ops::all_finite(g[static_cast<size_t>(i)]));
    EXPECT_LE(ops::rel_rms_error(g[static_cast<size_t>(i)], rg[static_cast<size_t>(i)]), 2e-2)
        << "grad " << i;
  }
}

// What the kernel cannot run: impl kernel says why and what it needs; automatic falls back (and still
// computes the right thing).
TEST(GpuFlashFallback, KernelRefusesAndAutomaticFallsBack) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(5);
  auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  ops::SoftmaxArgs a;
  a.q = torch::randn({1, 40, 2, 96}, opts), a.k = torch::randn({1, 40, 2, 96}, opts);
  a.v = torch::randn({1, 40, 2, 96}, opts);
  EXPECT_FALSE(ops::cuda::flash_attn_usable(a));
  EXPECT_ERROR_WITH(ops::softmax_attention(a, ops::Impl::kernel), "head dim 96", "64, 128", "use impl");
  auto ref = ops::softmax_attention(a, ops::Impl::naive);
  EXPECT_LE(ops::rel_rms_error(ops::softmax_attention(a, ops::Impl::automatic), ref), 1e-2);

  ops::SoftmaxArgs b;
  b.q = torch::randn({1, 40, 2, 64}, opts), b.k = torch::randn({1, 40, 2, 64}, opts);
  b.v = torch::randn({1, 40, 2, 64}, opts);
  b.window = 8, b.n_sink = 2;
  EXPECT_ERROR_WITH(ops::softmax_attention(b, ops::Impl::kernel), "sinks");
  b.n_sink = 0, b.causal = false;
  EXPECT_ERROR_WITH(ops::softmax_attention(b, ops::Impl::kernel), "two-sided window");
  b.causal = true, b.q_offset = 3;
  EXPECT_ERROR_WITH(ops::softmax_attention(b, ops::Impl::kernel), "q_offset 3");
  b.q_offset = -1, b.q = b.q.to(torch::kFloat);
  EXPECT_ERROR_WITH(ops::softmax_attention(b, ops::Impl::kernel), "dtype", "bf16, fp16");
}

// The binding's own checks: expected vs got, as attnlab::Error.
TEST(GpuFlashBinding, ValidatesTensors) {
  SKIP_WITHOUT_CUDA();
  auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  auto q = torch::randn({1, 16, 2, 64}, opts), k = torch::randn({1, 16, 2, 64}, opts);
  ops::cuda::FlashAttnOptions opt{0.125, true, 0};
  EXPECT_ERROR_WITH(ops::cuda::flash_attn_forward(q, k.to(torch::kHalf), k, opt), "k must have q's dtype",
                    "BFloat16", "Half");
  EXPECT_ERROR_WITH(ops::cuda::flash_attn_forward(q, torch::randn({1, 16, 3, 64}, opts), k, opt), "v must be",
                    "[B,Tk,Hkv,D]=[1,16,3,64]", "got [1, 16, 2, 64]");
  EXPECT_ERROR_WITH(ops::cuda::flash_attn_forward(q, k, k.transpose(2, 3).contiguous().transpose(2, 3), opt),
                    "v must have a contiguous last");
  EXPECT_ERROR_WITH(ops::cuda::flash_attn_forward(q.cpu(), k, k, opt), "q must be a CUDA tensor");
}

}  // namespace
#endif  // ATTNLAB_WITH_CUDA

// Runs anywhere: which args the kernel takes is a pure function of the args.
TEST(GpuFlashUsable, CpuTensorsAreNotForTheKernel) {
#ifdef ATTNLAB_WITH_CUDA
  ops::SoftmaxArgs a;
  a.q = torch::randn({1, 8, 2, 64}), a.k = torch::randn({1, 8, 2, 64}), a.v = torch::randn({1, 8, 2, 64});
  EXPECT_FALSE(ops::cuda::flash_attn_usable(a));
  EXPECT_NE(ops::cuda::flash_attn_unusable_reason(a).find("needs CUDA"), std::string::npos);
  EXPECT_ERROR_WITH(ops::softmax_attention(a, ops::Impl::kernel), "needs CUDA");
#else
  ops::SoftmaxArgs a;
  a.q = torch::randn({1, 8, 2, 64}), a.k = torch::randn({1, 8, 2, 64}), a.v = torch::randn({1, 8, 2, 64});
  EXPECT_ERROR_WITH(ops::softmax_attention(a, ops::Impl::kernel), "not compiled into this build");
#endif
}
