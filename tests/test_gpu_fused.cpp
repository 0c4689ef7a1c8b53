// labels: gpu
// The fused RMSNorm, RoPE and short-conv kernels (kernels/fused, ops/cuda/fused.h, short_conv.h) against
// their references (rms_norm_reference, rope_reference in model/layers.h), run on the same GPU inputs: the
// raw passes into NaN-poisoned outputs, then the autograd path (x and weight gradients through the
// references' autograd), float32 / bf16 / fp16, awkward sizes (N = 1000, 8193; R < D; T = 1, 7; B * H = 15,
// 35), and views that are not contiguous (slices of a fused projection, transposes) or not 16-byte aligned
// (the scalar path).
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/model/layers.h"
#include "support/helpers.h"
#include "support/kernel_test.h"

#ifdef ATTNLAB_WITH_CUDA
#include <cstdlib>

#include "attnlab/mixers/short_conv.h"
#include "attnlab/ops/cuda/fused.h"
#include "attnlab/ops/cuda/short_conv.h"
#include "attnlab/ops/delta_rule.h"
#endif

using namespace attnlab;

#ifdef ATTNLAB_WITH_CUDA
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Fills freed blocks of both pools of the caching allocator with NaN, so that the buffers the bindings
// allocate next (outputs, the dw workspace) start as NaN instead of zeros or old results.
void poison_allocator() {
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  std::vector<torch::Tensor> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(torch::full({1 << 18}, kNaN, f));  // 1 MB: the small pool
  blocks.push_back(torch::full({int64_t{1} << 28}, kNaN, f));                      // 1 GB: the large pool
  torch::cuda::synchronize();
}

bool has_nan(const torch::Tensor& t) {
  return torch::isnan(t).any().item<bool>();
}

const char* dtype_name(torch::ScalarType dt) {
  return dt == torch::kFloat ? "f32" : dt == torch::kHalf ? "fp16" : "bf16";
}

// Relative RMS bounds. Kernel and reference form the same float32 values up to a few ulp (another order of
// summation in mean(x^2) and dw; otherwise the same operations in the same order), so a 16-bit result
// differs only where that difference straddles a rounding boundary, by one ulp of the type. The bound is one
// ulp on every element: bf16 2^-8 = 3.9e-3 -> 4e-3, fp16 <= 2^-10 = 9.8e-4 -> 1e-3. float32 outputs: a few
// ulp (6e-8 each) -> 1e-6; float32 gradients against the references' autograd (a handful more roundings, in
// another order) -> 2e-6. Estimated, not yet measured on a GPU (written on a machine without one); a wrong
// index, a missing term or an unwritten element lands at >= 1e-2 or NaN.
double tol_out(torch::ScalarType dt) {
  return dt == torch::kFloat ? 1e-6 : dt == torch::kHalf ? 1e-3 : 4e-3;
}
double tol_grad(torch::ScalarType dt) {
  return dt == torch::kFloat ? 2e-6 : tol_out(dt);
}
// dw and rstd are float32 for every dtype, from the same rounded inputs; dw sums up to 32768 rows in another
// order than torch's reduction (float32 sums of random-sign terms: ~1e-7 relative) -> 1e-5.
constexpr double kTolF32Sum = 1e-5;

void expect_close(const std::string& name, const char* what, const torch::Tensor& got,
                  const torch::Tensor& ref, double tol) {
  ASSERT_TRUE(got.defined()) << name << ": " << what << " undefined";
  ASSERT_EQ(got.sizes(), ref.sizes()) << name << ": " << what;
  EXPECT_FALSE(has_nan(got)) << name << ": NaN in " << what;
  const double e = attnlab::testing::rel_rms(got, ref);
  EXPECT_LT(e, tol) << name << ": " << what << " rel RMS " << e;
  std::printf("  %-40s %-6s %.2e\n", name.c_str(), what, e);
}

// A tensor of `shape` (last axis N) in one of the layouts the kernels meet: contig; slice (columns N .. 2N-1
// of a [.., 3N] buffer, a fused projection: row stride 3N); misaligned (columns 1 .. N of [.., N+1]: not
// 16-byte aligned, the scalar path).
torch::Tensor make_rows(std::vector<int64_t> shape, torch::ScalarType dt, const std::string& layout) {
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const int64_t N = shape.back();
  if (layout == "contig") return (torch::randn(shape, f) * 2 + 0.3).to(dt);
  shape.back() = layout == "slice" ? 3 * N : N + 1;
  auto buf = (torch::randn(shape, f) * 2 + 0.3).to(dt);
  return layout == "slice" ? buf.narrow(-1, N, N) : buf.narrow(-1, 1, N);
}

// ---------------------------------------------------------------- RMSNorm
struct NormCase {
  std::vector<int64_t> lead;  // leading axes (flattened into rows)
  int64_t N;
  torch::ScalarType dtype;
  std::string layout;  // contig | slice | misaligned
};

std::string norm_name(const NormCase& c) {
  std::string s;
  for (auto d : c.lead) s += fmt::format("{}x", d);
  return fmt::format("{}N{}_{}_{}", s, c.N, dtype_name(c.dtype), c.layout);
}

class GpuRmsNorm : public ::testing::TestWithParam<NormCase> {};

TEST_P(GpuRmsNorm, MatchesReference) {
  SKIP_WITHOUT_CUDA();
  const NormCase c = GetParam();
  const std::string name = norm_name(c);
  torch::manual_seed(11 + c.N);
  const double eps = 1e-6;
  auto shape = c.lead;
  shape.push_back(c.N);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto x = make_rows(shape, c.dtype, c.layout);
  auto w = 1 + 0.2 * torch::randn({c.N}, f);
  auto dy = make_rows(shape, c.dtype, c.layout);
  const int64_t rows = x.numel() / c.N;

  // Reference forward and gradients of sum(y * dy) (dy is already in x's dtype, so both sides see it
  // exactly).
  auto rx = x.detach().requires_grad_(true), rw = w.detach().clone().requires_grad_(true);
  auto ry = rms_norm_reference(rx, rw, eps);
  (ry.to(torch::kFloat) * dy.to(torch::kFloat)).sum().backward();
  auto xf = x.to(torch::kFloat);
  auto rstd_ref = torch::rsqrt(xf.pow(2).mean(-1) + eps).reshape({rows});

  // Raw forward into poisoned outputs.
  auto y = torch::full(shape, kNaN, f.dtype(c.dtype)), rstd = torch::full({rows}, kNaN, f);
  ops::cuda::rms_norm_fwd_into(x, w, eps, y, rstd);
  expect_close(name, "y", y, ry.detach(), tol_out(c.dtype));
  expect_close(name, "rstd", rstd, rstd_ref, kTolF32Sum);

  // Raw backward into poisoned outputs (the workspace too), twice: the bits must not change.
  auto dx = torch::full(shape, kNaN, f.dtype(c.dtype)), dw = torch::full({c.N}, kNaN, f);
  poison_allocator();
  ops::cuda::rms_norm_bwd_into(dy, x, w, rstd, dx, dw);
  expect_close(name, "dx", dx, rx.grad(), tol_grad(c.dtype));
  expect_close(name, "dw", dw, rw.grad(), kTolF32Sum);
  auto dx2 = torch::full(shape, kNaN, f.dtype(c.dtype)), dw2 = torch::full({c.N}, kNaN, f);
  poison_allocator();
  ops::cuda::rms_norm_bwd_into(dy, x, w, rstd, dx2, dw2);
  EXPECT_TRUE(torch::equal(dx, dx2) && torch::equal(dw, dw2)) << name << ": backward is not deterministic";

  // Autograd path.
  auto gx = x.detach().requires_grad_(true), gw = w.detach().clone().requires_grad_(true);
  poison_allocator();
  auto gy = ops::cuda::rms_norm(gx, gw, eps);
  poison_allocator();
  (gy.to(torch::kFloat) * dy.to(torch::kFloat)).sum().backward();
  expect_close(name, "ag_y", gy.detach(), ry.detach(), tol_out(c.dtype));
  expect_close(name, "ag_dx", gx.grad(), rx.grad(), tol_grad(c.dtype));
  expect_close(name, "ag_dw", gw.grad(), rw.grad(), kTolF32Sum);
}

std::vector<NormCase> norm_cases() {
  std::vector<NormCase> out;
  for (auto dt : {torch::kFloat, torch::kBFloat16, torch::kHalf})
    for (int64_t N : {512, 1000, 4096}) {
      out.push_back({{2, 7}, N, dt, "contig"});
      out.push_back({{3, 333}, N, dt, "slice"});
    }
  out.push_back({{16, 2048}, 512, torch::kBFloat16, "contig"});  // the training step's shape (32768 rows)
  out.push_back({{16, 2048}, 512, torch::kFloat, "slice"});
  out.push_back({{2, 7, 5}, 64, torch::kBFloat16, "contig"});    // per-head q / k norm
  out.push_back({{2, 7}, 512, torch::kBFloat16, "misaligned"});  // the scalar path
  out.push_back({{5, 3}, 1000, torch::kFloat, "misaligned"});
  out.push_back({{1, 5}, 8192, torch::kFloat, "contig"});     // 2048 packs: half re-read from L2
  out.push_back({{2, 3}, 8193, torch::kBFloat16, "contig"});  // scalar path past the register cache
  out.push_back({{1, 1}, 7, torch::kHalf, "contig"});
  out.push_back({{300}, 3, torch::kFloat, "contig"});
  out.push_back({{0, 5}, 512, torch::kFloat, "contig"});  // no rows: dw = 0, nothing launched
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuRmsNorm, ::testing::ValuesIn(norm_cases()),
                         [](const auto& info) { return norm_name(info.param); });

// ---------------------------------------------------------------- RoPE
struct RopeCase {
  int64_t B, T, H, D, R;
  torch::ScalarType dtype;
  std::string layout;  // contig | qkv (k of a fused [B, T, 3, H, D] projection) | transposed | misaligned
  bool random_positions = false;  // positions drawn from [0, 100000) (large angles), else 5 .. 5 + T - 1
};

std::string rope_name(const RopeCase& c) {
  return fmt::format("B{}_T{}_H{}_D{}_R{}_{}_{}{}", c.B, c.T, c.H, c.D, c.R, dtype_name(c.dtype), c.layout,
                     c.random_positions ? "_randpos" : "");
}

// x [B, T, H, D] in the case's layout.
torch::Tensor make_heads(const RopeCase& c) {
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  if (c.layout == "qkv") return torch::randn({c.B, c.T, 3, c.H, c.D}, f).to(c.dtype).select(2, 1);
  if (c.layout == "transposed") return torch::randn({c.B, c.H, c.T, c.D}, f).to(c.dtype).transpose(1, 2);
  if (c.layout == "misaligned")
    return torch::randn({c.B, c.T, c.H, c.D + 1}, f).to(c.dtype).narrow(-1, 1, c.D);
  return torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype);
}

torch::Tensor make_positions(const RopeCase& c) {
  auto l = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
  return c.random_positions ? torch::randint(0, 100000, {c.T}, l) : torch::arange(5, 5 + c.T, l);
}

class GpuRope : public ::testing::TestWithParam<RopeCase> {};

TEST_P(GpuRope, MatchesReference) {
  SKIP_WITHOUT_CUDA();
  const RopeCase c = GetParam();
  const std::string name = rope_name(c);
  torch::manual_seed(17 + c.T + c.D);
  const double theta = 10000.0;
  auto x = make_heads(c), dout = make_heads(c), pos = make_positions(c);
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(c.dtype);

  auto rx = x.detach().requires_grad_(true);
  auto ref = rope_reference(rx, pos, theta, c.R);
  (ref.to(torch::kFloat) * dout.to(torch::kFloat)).sum().backward();

  auto out = torch::full({c.B, c.T, c.H, c.D}, kNaN, opts);
  ops::cuda::rope_into(x, pos, theta, c.R, out, /*inverse=*/false);
  expect_close(name, "out", out, ref.detach(), tol_out(c.dtype));
  auto dx = torch::full({c.B, c.T, c.H, c.D}, kNaN, opts);
  ops::cuda::rope_into(dout, pos, theta, c.R, dx, /*inverse=*/true);
  expect_close(name, "dx", dx, rx.grad(), tol_grad(c.dtype));
  if (c.dtype == torch::kFloat) {  // the inverse undoes the rotation (float32: to rounding)
    auto back = torch::full({c.B, c.T, c.H, c.D}, kNaN, opts);
    ops::cuda::rope_into(out, pos, theta, c.R, back, /*inverse=*/true);
    expect_close(name, "undo", back, x, 1e-6);
  }

  auto gx = x.detach().requires_grad_(true);
  poison_allocator();
  auto go = ops::cuda::rope(gx, pos, theta, c.R);
  poison_allocator();
  (go.to(torch::kFloat) * dout.to(torch::kFloat)).sum().backward();
  expect_close(name, "ag_out", go.detach(), ref.detach(), tol_out(c.dtype));
  expect_close(name, "ag_dx", gx.grad(), rx.grad(), tol_grad(c.dtype));
}

std::vector<RopeCase> rope_cases() {
  std::vector<RopeCase> out;
  for (auto dt : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    out.push_back({2, 7, 5, 64, 64, dt, "contig"});
    out.push_back({3, 1, 5, 128, 128, dt, "qkv"});
    out.push_back({1, 2048, 3, 128, 64, dt, "contig", true});
    out.push_back({2, 33, 7, 64, 32, dt, "transposed"});
    out.push_back({2, 9, 3, 64, 48, dt, "misaligned"});
    out.push_back({1, 17, 2, 80, 40, dt, "qkv"});  // R/2 = 20: the scalar path at 16 bits
  }
  out.push_back({16, 2048, 8, 64, 64, torch::kBFloat16, "qkv"});   // the training step's q / k
  out.push_back({2, 5, 3, 64, 2, torch::kFloat, "contig", true});  // one frequency, 62 pass-through channels
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuRope, ::testing::ValuesIn(rope_cases()),
                         [](const auto& info) { return rope_name(info.param); });

// q and k (GQA: other head count) of one fused projection in one launch, and a gradient for k only.
TEST(GpuRopeQk, BothTensorsInOneLaunch) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(5);
  const int64_t B = 2, T = 45, H = 6, Hkv = 2, D = 64;
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto qkv = torch::randn({B, T, (H + 2 * Hkv) * D}, f).to(torch::kBFloat16);
  auto q = qkv.narrow(-1, 0, H * D).view({B, T, H, D});
  auto k = qkv.narrow(-1, H * D, Hkv * D).view({B, T, Hkv, D});
  auto pos = torch::arange(100, 100 + T, f.dtype(torch::kLong));
  auto dq_out = torch::randn({B, T, H, D}, f), dk_out = torch::randn({B, T, Hkv, D}, f);
  auto rq = q.detach().requires_grad_(true), rk = k.detach().requires_grad_(true);
  auto ref_q = rope_reference(rq, pos, 10000.0), ref_k = rope_reference(rk, pos, 10000.0);
  ((ref_q.to(torch::kFloat) * dq_out).sum() + (ref_k.to(torch::kFloat) * dk_out).sum()).backward();

  auto gq = q.detach().requires_grad_(true), gk = k.detach().requires_grad_(true);
  poison_allocator();
  auto got = ops::cuda::rope_qk(gq, gk, pos, 10000.0);
  poison_allocator();
  ((got[0].to(torch::kFloat) * dq_out).sum() + (got[1].to(torch::kFloat) * dk_out).sum()).backward();
  const double tol = tol_out(torch::kBFloat16);
  expect_close("qk", "q", got[0].detach(), ref_q.detach(), tol);
  expect_close("qk", "k", got[1].detach(), ref_k.detach(), tol);
  expect_close("qk", "dq", gq.grad(), rq.grad(), tol);
  expect_close("qk", "dk", gk.grad(), rk.grad(), tol);

  auto kk = k.detach().requires_grad_(true);
  auto only_k = ops::cuda::rope_qk(q, kk, pos, 10000.0);
  (only_k[1].to(torch::kFloat) * dk_out).sum().backward();
  expect_close("qk", "dk_only", kk.grad(), rk.grad(), tol);
}

// The model's layers take the kernels on CUDA: same bits as the binding; the libtorch path elsewhere.
TEST(GpuFusedLayers, ModelLayersUseTheKernels) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(3);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  RMSNorm norm(512);
  norm->to(torch::kCUDA);
  auto x = torch::randn({2, 9, 512}, f);
  EXPECT_TRUE(torch::equal(norm(x), ops::cuda::rms_norm(x, norm->weight, norm->eps)));
  auto q = torch::randn({2, 9, 4, 64}, f);
  auto pos = torch::arange(3, 12, f.dtype(torch::kLong));
  EXPECT_TRUE(torch::equal(apply_rope(q, 3, 10000.0), ops::cuda::rope(q, pos, 10000.0)));
  // float64 is not in the kernels: the layers fall back (logged once) to the reference.
  auto xd = torch::randn({2, 9, 512}, f.dtype(torch::kDouble));
  auto normd = RMSNorm(512);
  normd->to(torch::kCUDA);
  EXPECT_TRUE(torch::allclose(normd(xd), rms_norm_reference(xd, normd->weight, normd->eps)));
  auto qd = q.to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(apply_rope(qd, 3, 10000.0), rope_reference(qd, pos, 10000.0)));
}

TEST(GpuFusedBinding, ReasonsAndValidation) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  auto w = torch::ones({64}, f.dtype(torch::kFloat)), pos = torch::arange(0, 8, f.dtype(torch::kLong));
  EXPECT_EQ(ops::cuda::rms_norm_unusable_reason(torch::randn({8, 64}, f), w), "");
  EXPECT_NE(ops::cuda::rms_norm_unusable_reason(torch::randn({8, 64}), w.cpu()), "");
  EXPECT_NE(ops::cuda::rms_norm_unusable_reason(torch::randn({8, 64}, f.dtype(torch::kDouble)), w), "");
  EXPECT_NE(ops::cuda::rms_norm_unusable_reason(torch::randn({8, 64}, f), w.to(torch::kBFloat16)), "");
  EXPECT_NE(ops::cuda::rms_norm_unusable_reason(torch::randn({8, 32}, f), w), "");
  EXPECT_EQ(ops::cuda::rope_unusable_reason(torch::randn({1, 8, 2, 64}, f), pos), "");
  EXPECT_NE(ops::cuda::rope_unusable_reason(torch::randn({1, 8, 2, 64}, f), pos, 63), "");
  EXPECT_NE(ops::cuda::rope_unusable_reason(torch::randn({1, 8, 2, 64}, f), pos.to(torch::kInt)), "");
  EXPECT_NE(ops::cuda::rope_unusable_reason(torch::randn({1, 7, 2, 64}, f), pos), "");
  EXPECT_NE(ops::cuda::rope_unusable_reason(torch::randn({8, 2, 64}, f), pos), "");
  // Raw passes reject wrong outputs with a message instead of writing out of bounds.
  auto x = torch::randn({8, 64}, f);
  EXPECT_THROW(ops::cuda::rms_norm_fwd_into(x, w, 1e-6, torch::empty({8, 32}, f), torch::Tensor()), Error);
  EXPECT_THROW(ops::cuda::rms_norm_fwd_into(x, w, 1e-6, torch::empty({8, 64}, f).t().contiguous().t(),
                                            torch::Tensor()),
               Error);
  auto q = torch::randn({1, 8, 2, 64}, f);
  EXPECT_THROW(
      ops::cuda::rope_into(q, pos, 1e4, 0, torch::empty({1, 8, 2, 64}, f.dtype(torch::kHalf)), false), Error);
  EXPECT_THROW(ops::cuda::rope(q.cpu(), pos, 1e4), Error);
}

// ---------------------------------------------------------------- short convolution
// The fused short conv (ops/cuda/short_conv.h) against the formula in float64 on the same rounded inputs
// (autograd for the gradients): raw passes into NaN-poisoned outputs and the autograd path, float32 / bf16 /
// fp16, K = 2 .. 4, with and without bias and SiLU, T = 1 / 37 / 300 (tiles of 16 tokens, halos across
// tiles), x contiguous, a slice of a wider projection (row stride 3C) or misaligned (the one-channel path),
// and ShortConv's module path (the fused kernel by default on CUDA) against its libtorch path
// (ATTNLAB_SHORT_CONV=libtorch).
torch::Tensor conv_reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                             bool silu) {
  const int64_t T = x.size(1), K = w.size(1);
  auto xp = torch::cat({torch::zeros({x.size(0), K - 1, x.size(2)}, x.options()), x}, 1);
  auto z = xp.narrow(1, 0, T) * w.select(1, 0);
  for (int64_t j = 1; j < K; ++j) z = z + xp.narrow(1, j, T) * w.select(1, j);
  if (b.defined()) z = z + b;
  return silu ? torch::silu(z) : z;
}

TEST(GpuShortConv, MatchesFloat64Formula) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(5);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  struct Shape {
    int64_t B, T, C;
  };
  for (auto dt : {torch::kFloat, torch::kBFloat16, torch::kHalf})
    for (int64_t K : {2, 3, 4})
      for (const Shape& sh : {Shape{2, 37, 64}, Shape{3, 300, 200}, Shape{2, 1, 24}})
        for (const char* layout : {"contig", "slice", "misaligned"})
          for (int variant = 0; variant < 2; ++variant) {
            const bool with_bias = variant == 0, silu = variant == 0 || K == 3;
            const std::string name =
                fmt::format("{}_K{}_B{}T{}C{}_{}_{}{}", dtype_name(dt), K, sh.B, sh.T, sh.C, layout,
                            with_bias ? "bias" : "nobias", silu ? "_silu" : "");
            auto x = make_rows({sh.B, sh.T, sh.C}, dt, layout);
            auto w = torch::randn({sh.C, K}, f) * 0.5;
            auto b = with_bias ? torch::randn({sh.C}, f) * 0.1 : torch::Tensor();
            auto dy = torch::randn({sh.B, sh.T, sh.C}, f).to(dt);
            // float64 reference on the same (rounded) values
            auto xd = x.to(torch::kDouble).requires_grad_(true),
                 wd = w.to(torch::kDouble).requires_grad_(true);
            auto bd = with_bias ? b.to(torch::kDouble).requires_grad_(true) : torch::Tensor();
            auto yd = conv_reference(xd, wd, bd, silu);
            (yd * dy.to(torch::kDouble)).sum().backward();
            // raw passes into poisoned outputs
            auto y = torch::full({sh.B, sh.T, sh.C}, kNaN, f).to(dt);
            ops::cuda::short_conv_fwd_into(x, w, b, silu, y);
            auto dx = torch::full({sh.B, sh.T, sh.C}, kNaN, f).to(dt), dw = torch::full({sh.C, K}, kNaN, f);
            auto db = with_bias ? torch::full({sh.C}, kNaN, f) : torch::Tensor();
            ops::cuda::short_conv_bwd_into(dy, x, w, b, silu, dx, dw, db);
            expect_close(name, "y", y.to(torch::kDouble), yd.detach(),
                         dt == torch::kFloat ? 1e-5 : tol_out(dt));
            expect_close(name, "dx", dx.to(torch::kDouble), xd.grad(),
                         dt == torch::kFloat ? 1e-5 : tol_grad(dt));
            expect_close(name, "dw", dw.to(torch::kDouble), wd.grad(), kTolF32Sum);
            if (with_bias) expect_close(name, "db", db.to(torch::kDouble), bd.grad(), kTolF32Sum);
            // the autograd path gives the raw passes' results
            auto xa = x.detach().requires_grad_(true), wa = w.clone().requires_grad_(true);
            auto ba = with_bias ? b.clone().requires_grad_(true) : torch::Tensor();
            auto ya = ops::cuda::short_conv(xa, wa, ba, silu);
            (ya.to(torch::kFloat) * dy.to(torch::kFloat)).sum().backward();
            EXPECT_TRUE(torch::equal(ya, y)) << name << ": autograd forward differs from the raw pass";
            EXPECT_TRUE(torch::equal(wa.grad(), dw)) << name << ": autograd dw differs from the raw pass";
            expect_close(name, "dx(ag)", xa.grad().to(torch::kDouble), xd.grad(),
                         dt == torch::kFloat ? 1e-5 : tol_grad(dt));
          }
}

TEST(GpuShortConv, ModulePathMatchesLibtorchPath) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(6);
  for (bool with_bias : {false, true}) {
    ShortConv conv(96, 4, with_bias, /*silu=*/true);
    conv->to(torch::kCUDA);
    auto x = torch::randn({2, 130, 96}, torch::TensorOptions().device(torch::kCUDA)).requires_grad_(true);
    auto run = [&](const char* mode) {
      if (mode)
        setenv("ATTNLAB_SHORT_CONV", mode, 1);
      else
        unsetenv("ATTNLAB_SHORT_CONV");
      conv->zero_grad();
      if (x.grad().defined()) x.grad().zero_();
      auto y = conv->forward(x);
      (y * y).sum().backward();
      unsetenv("ATTNLAB_SHORT_CONV");
      std::vector<torch::Tensor> out = {y.detach(), x.grad().clone(), conv->weight.grad().clone()};
      if (with_bias) out.push_back(conv->bias.grad().clone());
      return out;
    };
    auto ref = run("libtorch"), fused = run("fused"), automatic = run(nullptr);
    const char* names[] = {"y", "dx", "dweight", "dbias"};
    for (size_t i = 0; i < ref.size(); ++i) {
      expect_close(fmt::format("module bias={}", with_bias), names[i], fused[i], ref[i],
                   i < 2 ? 1e-5 : kTolF32Sum);
      // the default on CUDA is the fused kernel
      EXPECT_TRUE(torch::equal(automatic[i], fused[i])) << names[i] << " bias=" << with_bias;
    }
  }
  // carried history (prefill / decode) stays on the libtorch path
  ShortConv conv(16, 4);
  conv->to(torch::kCUDA);
  auto buf = conv->make_buffer(1, torch::TensorOptions().device(torch::kCUDA));
  setenv("ATTNLAB_SHORT_CONV", "fused", 1);
  auto y = conv->forward(torch::randn({1, 3, 16}, torch::TensorOptions().device(torch::kCUDA)), &buf);
  unsetenv("ATTNLAB_SHORT_CONV");
  EXPECT_EQ(buf.sizes(), (std::vector<int64_t>{1, 3, 16}));
  EXPECT_FALSE(has_nan(y));
}

// ops::l2_normalize on CUDA goes through the fused RMSNorm kernel (weight N^-1/2, eps / N): the formula
// x / sqrt(sum x^2 + eps) in float64 on the same rounded values, output and gradient.
TEST(GpuL2Normalize, FusedPathIsTheFormula) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(8);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  for (auto dt : {torch::kFloat, torch::kBFloat16, torch::kHalf})
    for (int64_t N : {64, 128, 100}) {
      auto x = (torch::randn({3, 37, 4, N}, f) * 2).to(dt);
      auto dy = torch::randn({3, 37, 4, N}, f).to(dt);
      auto xd = x.to(torch::kDouble).requires_grad_(true);
      auto yd = xd / (xd.pow(2).sum(-1, true) + 1e-6).sqrt();
      (yd * dy.to(torch::kDouble)).sum().backward();
      auto xa = x.detach().requires_grad_(true);
      auto y = ops::l2_normalize(xa);
      EXPECT_EQ(y.scalar_type(), dt);
      (y.to(torch::kFloat) * dy.to(torch::kFloat)).sum().backward();
      const std::string name = fmt::format("l2_normalize {} N{}", dtype_name(dt), N);
      expect_close(name, "y", y.to(torch::kDouble), yd.detach(), dt == torch::kFloat ? 1e-6 : tol_out(dt));
      expect_close(name, "dx", xa.grad().to(torch::kDouble), xd.grad(),
                   dt == torch::kFloat ? 2e-6 : tol_grad(dt));
    }
}

TEST(GpuShortConv, ReasonsAndValidation) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto x = torch::randn({2, 5, 8}, f), w = torch::randn({8, 4}, f);
  EXPECT_EQ(ops::cuda::short_conv_unusable_reason(x, w, torch::Tensor()), "");
  EXPECT_NE(ops::cuda::short_conv_unusable_reason(x.cpu(), w, torch::Tensor()).find("CUDA"),
            std::string::npos);
  EXPECT_NE(ops::cuda::short_conv_unusable_reason(x, torch::randn({8, 5}, f), torch::Tensor())
                .find("kernel size 5"),
            std::string::npos);
  EXPECT_NE(ops::cuda::short_conv_unusable_reason(x, torch::randn({7, 4}, f), torch::Tensor()).find("[C, K]"),
            std::string::npos);
  EXPECT_ERROR_WITH(ops::cuda::short_conv(x.transpose(1, 2), w, torch::Tensor(), true),
                    "channel axis must be contiguous");
}

}  // namespace
#else
TEST(GpuFused, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA kernels (nvcc was not found at configure time)";
}
#endif
