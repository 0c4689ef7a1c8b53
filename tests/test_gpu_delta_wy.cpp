// labels: gpu
// The delta_wy kernels (the fused WY preparation of DeltaNet / Gated DeltaNet, kernels/delta_wy): (a) the
// preparation alone (cuda::delta_wy_prepare) against a float64 triangular solve of the same 16-bit inputs, W,
// U, G and the gradients of k, v, beta, g; (b) the whole kernel path (ops::delta_rule / gated_delta_rule with
// Impl::kernel: prep kernel -> delta_chunk recurrence) against the float32 chunk form: o, ht and every
// gradient. Awkward lengths, weak and strong gates, bf16 and fp16, D = 64 and 128, h0 present and absent.
// The CUDA caching allocator is filled with NaN before each kernel run, so an output element the kernels do
// not write shows up as NaN.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/delta_rule.h"
#include "support/helpers.h"
#include "support/kernel_test.h"

#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/delta_wy.h"
#endif

using namespace attnlab;

#ifdef ATTNLAB_WITH_CUDA
namespace {

constexpr int64_t kC = 64;

// Fills freed blocks of both pools of the caching allocator with NaN: the outputs the bindings allocate next
// (torch::empty) start as NaN instead of as zeros or old results.
void poison_allocator() {
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<torch::Tensor> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(torch::full({1 << 18}, nan, f));  // 1 MB: the small pool
  blocks.push_back(torch::full({int64_t{1} << 28}, nan, f));                      // 1 GB: the large pool
  torch::cuda::synchronize();
}

bool has_nan(const torch::Tensor& t) {
  return torch::isnan(t).any().item<bool>();
}

// [B, T, H, D] (or [B, T, H]) -> [B, H, N, C, D] (or [B, H, N, C]), zero past T; and back.
torch::Tensor to_chunks(const torch::Tensor& x) {
  const int64_t T = x.size(1), N = (T + kC - 1) / kC, pad = N * kC - T;
  auto y = x.transpose(1, 2);
  if (x.dim() == 4)
    return torch::constant_pad_nd(y, {0, 0, 0, pad}).reshape({x.size(0), x.size(2), N, kC, x.size(3)});
  return torch::constant_pad_nd(y, {0, pad}).reshape({x.size(0), x.size(2), N, kC});
}
torch::Tensor from_chunks(const torch::Tensor& x, int64_t T) {
  auto y =
      x.dim() == 5 ? x.reshape({x.size(0), x.size(1), -1, x.size(4)}) : x.reshape({x.size(0), x.size(1), -1});
  return y.narrow(2, 0, T).transpose(1, 2);
}

// W, U, G of the chunk form (as ops::delta_rule's chunked(): decay masked with -inf before exp, a
// unitriangular solve), in the inputs' dtype (float64 here), differentiable.
std::vector<torch::Tensor> reference_wy(const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& beta, const torch::Tensor& g) {
  auto kc = to_chunks(k), vc = to_chunks(v), bc = to_chunks(beta);
  const int64_t T = k.size(1);
  auto A = torch::matmul(kc * bc.unsqueeze(-1), kc.transpose(-1, -2));
  auto kw = kc * bc.unsqueeze(-1);
  torch::Tensor G;
  if (g.defined()) {
    G = to_chunks(g).cumsum(-1);
    auto causal = torch::ones({kC, kC}, k.options().dtype(torch::kBool)).tril();
    auto diff = G.unsqueeze(-1) - G.unsqueeze(-2);
    A = A * diff.masked_fill(causal.logical_not(), -std::numeric_limits<double>::infinity()).exp();
    kw = kw * G.exp().unsqueeze(-1);
  }
  auto rhs = torch::cat({kw, vc * bc.unsqueeze(-1)}, -1);
  auto WU = at::linalg_solve_triangular(A, rhs, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
  return {from_chunks(WU.narrow(-1, 0, k.size(3)), T), from_chunks(WU.narrow(-1, k.size(3), v.size(3)), T),
          g.defined() ? from_chunks(G, T) : torch::Tensor()};
}

struct Inputs {
  torch::Tensor q, k, v, beta, g, h0;  // float32 on the GPU, q, k, v already rounded to the 16-bit dtype
};

// As the DeltaNet layers feed the op: unit-norm q and k, beta in (0, 1), log-sigmoid gates (strong: about
// -2.6 per step on average, |G| up to ~200 within a chunk).
Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t D, torch::ScalarType dtype,
                   const std::string& gate, uint64_t seed) {
  torch::manual_seed(seed);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto round = [&](const torch::Tensor& x) { return x.to(dtype).to(torch::kFloat); };
  Inputs in;
  in.q = round(ops::l2_normalize(torch::randn({B, T, H, D}, f)));
  in.k = round(ops::l2_normalize(torch::randn({B, T, H, D}, f)));
  in.v = round(torch::randn({B, T, H, D}, f));
  in.beta = torch::sigmoid(torch::randn({B, T, H}, f));
  auto logits = torch::randn({B, T, H}, f);
  if (gate == "weak") in.g = torch::log_sigmoid(logits + 2) / 16;
  if (gate == "strong") in.g = torch::log_sigmoid(logits * 2 - 1) * 2;
  in.h0 = torch::randn({B, H, D, D}, f) * 0.1;
  return in;
}

const char* dtype_name(torch::ScalarType dt) {
  return dt == torch::kHalf ? "fp16" : "bf16";
}

// ---------------------------------------------------------------- (a) the preparation alone
struct PrepCase {
  int64_t B, T, H, D;
  torch::ScalarType dtype;
  std::string gate;                // none | weak | strong
  std::string inverse = "tf32x3";  // ATTNLAB_DELTA_WY_INVERSE: the inverse's block products
};

std::string prep_name(const PrepCase& c) {
  return fmt::format("B{}_T{}_H{}_D{}_{}_{}_{}", c.B, c.T, c.H, c.D, dtype_name(c.dtype), c.gate, c.inverse);
}

class DeltaWyPrep : public ::testing::TestWithParam<PrepCase> {};

TEST_P(DeltaWyPrep, MatchesTriangularSolve) {
  SKIP_WITHOUT_CUDA();
  const PrepCase c = GetParam();
  auto in = make_inputs(c.B, c.T, c.H, c.D, c.dtype, c.gate, 7 + c.T + c.D);
  const bool gated = c.gate != "none";
  auto f = in.k.options();
  // The cotangents: dW, dU 16-bit as the recurrence's backward gives them, dG float32.
  auto dW = torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype),
       dU = torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype);
  auto dG = torch::randn({c.B, c.T, c.H}, f);

  auto leaf = [](const torch::Tensor& x, torch::ScalarType dt) {
    return x.to(dt).detach().requires_grad_(true);
  };
  auto rk = leaf(in.k, torch::kDouble), rv = leaf(in.v, torch::kDouble), rb = leaf(in.beta, torch::kDouble);
  torch::Tensor rg = gated ? leaf(in.g, torch::kDouble) : torch::Tensor();
  auto ref = reference_wy(rk, rv, rb, rg);
  auto loss = (ref[0] * dW.to(torch::kDouble)).sum() + (ref[1] * dU.to(torch::kDouble)).sum();
  if (gated) loss = loss + (ref[2] * dG.to(torch::kDouble)).sum();
  loss.backward();

  auto k = leaf(in.k, c.dtype), v = leaf(in.v, c.dtype), beta = leaf(in.beta, torch::kFloat);
  torch::Tensor g = gated ? leaf(in.g, torch::kFloat) : torch::Tensor();
  poison_allocator();
  auto got = [&] {
    attnlab::testing::ScopedEnv inverse("ATTNLAB_DELTA_WY_INVERSE", c.inverse.c_str());
    return ops::cuda::delta_wy_prepare(k, v, beta, g);  // the backward keeps the forward's inverse
  }();
  auto gloss = (got[0].to(torch::kFloat) * dW.to(torch::kFloat)).sum() +
               (got[1].to(torch::kFloat) * dU.to(torch::kFloat)).sum();
  if (gated) gloss = gloss + (got[2] * dG).sum();
  poison_allocator();
  gloss.backward();

  struct Cmp {
    const char* name;
    torch::Tensor got, ref;
    double tol;
  };
  // W, U, dk, dv are rounded to 16 bits once at the end (bf16: rel RMS ~1.6e-3, fp16 ~2e-4); everything
  // before is float32-accurate (the hi/lo split of M; bf16x3's inverse to ~2^-16), so the bounds are 2.5x the
  // final rounding. G, dbeta,
  // dg are float32 outputs: ~1e-6 from float32 sums, 1e-3 leaves room for cancellation in dg (row minus
  // column sums).
  const double t16 = c.dtype == torch::kHalf ? 5e-4 : 4e-3;
  std::vector<Cmp> cmp{{"W", got[0], ref[0], t16},
                       {"U", got[1], ref[1], t16},
                       {"dk", k.grad(), rk.grad(), t16},
                       {"dv", v.grad(), rv.grad(), t16},
                       {"dbeta", beta.grad(), rb.grad(), 1e-3}};
  if (gated) {
    cmp.push_back({"G", got[2], ref[2], 1e-5});
    cmp.push_back({"dg", g.grad(), rg.grad(), 1e-3});
  }
  for (const auto& x : cmp) {
    ASSERT_TRUE(x.got.defined()) << prep_name(c) << ": " << x.name << " undefined";
    EXPECT_FALSE(has_nan(x.got)) << prep_name(c) << ": NaN in " << x.name;
    const double e = attnlab::testing::rel_rms(x.got, x.ref);
    EXPECT_LT(e, x.tol) << prep_name(c) << ": " << x.name << " rel RMS " << e;
    std::printf("  %-32s %-5s %.2e\n", prep_name(c).c_str(), x.name, e);
  }
}

std::vector<PrepCase> prep_cases() {
  std::vector<PrepCase> out;
  for (auto dt : {torch::kBFloat16, torch::kHalf})
    for (int64_t D : {64, 128})
      for (const char* gate : {"none", "weak", "strong"}) {
        out.push_back({2, 100, 3, D, dt, gate});
        out.push_back({1, 333, 2, D, dt, gate});
      }
  out.push_back({2, 64, 2, 128, torch::kBFloat16, "strong"});  // one full chunk
  out.push_back({2, 5, 2, 64, torch::kBFloat16, "weak"});      // one short chunk
  // The inverse's products in bf16 hi/lo (ATTNLAB_DELTA_WY_INVERSE=bf16x3): the same bounds, fp16 included
  // (its 11-bit outputs are the tightest test of the inverse's 16 bits).
  const size_t n = out.size();
  for (size_t i = 0; i < n; ++i) {
    auto c = out[i];
    c.inverse = "bf16x3";
    out.push_back(c);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, DeltaWyPrep, ::testing::ValuesIn(prep_cases()),
                         [](const auto& info) { return prep_name(info.param); });

// ---------------------------------------------------------------- (b) the kernel path end to end
struct OpCase {
  int64_t B, T, H, D;
  torch::ScalarType dtype;
  std::string gate;
  bool h0;
};

std::string op_name(const OpCase& c) {
  return fmt::format("B{}_T{}_H{}_D{}_{}_{}{}", c.B, c.T, c.H, c.D, dtype_name(c.dtype), c.gate,
                     c.h0 ? "_h0" : "");
}

class DeltaWyKernelPath : public ::testing::TestWithParam<OpCase> {};

TEST_P(DeltaWyKernelPath, MatchesChunkForm) {
  SKIP_WITHOUT_CUDA();
  const OpCase c = GetParam();
  auto in = make_inputs(c.B, c.T, c.H, c.D, c.dtype, c.gate, 99 + c.T + c.D);
  auto f = in.q.options();
  auto dout = torch::randn({c.B, c.T, c.H, c.D}, f), dht = torch::randn({c.B, c.H, c.D, c.D}, f);
  const bool gated = c.gate != "none";
  auto run = [&](torch::ScalarType dt, ops::Impl impl) {
    ops::RecurrentArgs a;
    a.q = in.q.to(dt).detach().requires_grad_(true), a.k = in.k.to(dt).detach().requires_grad_(true);
    a.v = in.v.to(dt).detach().requires_grad_(true), a.beta = in.beta.detach().requires_grad_(true);
    if (gated) a.g = in.g.detach().requires_grad_(true);
    if (c.h0) a.h0 = in.h0.detach().requires_grad_(true);
    a.output_final_state = true;
    if (impl == ops::Impl::kernel) poison_allocator();
    auto out = gated ? ops::gated_delta_rule(a, impl) : ops::delta_rule(a, impl);
    if (impl == ops::Impl::kernel) poison_allocator();
    ((out.o.to(torch::kFloat) * dout).sum() + (out.ht * dht).sum()).backward();
    std::vector<torch::Tensor> r{out.o.detach().to(torch::kFloat), out.ht.detach(),
                                 a.q.grad().to(torch::kFloat),     a.k.grad().to(torch::kFloat),
                                 a.v.grad().to(torch::kFloat),     a.beta.grad()};
    r.push_back(gated ? a.g.grad() : torch::Tensor());
    r.push_back(c.h0 ? a.h0.grad() : torch::Tensor());
    return r;
  };
  auto ref = run(torch::kFloat, ops::Impl::chunk), got = run(c.dtype, ops::Impl::kernel);
  const char* names[] = {"o", "ht", "dq", "dk", "dv", "dbeta", "dg", "dh0"};
  // The 16-bit operands of the recurrence (q, k, W, U, the saved states, vn) dominate: with the libtorch WY
  // factors the same test measured up to 4.9e-3 (bf16 dk, T = 1000) and 7.2e-3 (bf16 dg, strong gate) on the
  // H200 (bench/results/h200-2026-12-01b); the bounds keep ~1.5x of that. fp16 has 3 more mantissa bits.
  const double tol = c.dtype == torch::kHalf ? 2e-3 : 7.5e-3;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!ref[i].defined()) continue;
    ASSERT_TRUE(got[i].defined()) << op_name(c) << ": " << names[i] << " undefined";
    EXPECT_FALSE(has_nan(got[i])) << op_name(c) << ": NaN in " << names[i];
    const double e = attnlab::testing::rel_rms(got[i], ref[i]);
    EXPECT_LT(e, i == 5 || i == 6 ? 2 * tol : tol) << op_name(c) << ": " << names[i] << " rel RMS " << e;
    std::printf("  %-36s %-5s %.2e\n", op_name(c).c_str(), names[i], e);
  }
}

std::vector<OpCase> op_cases() {
  std::vector<OpCase> out;
  for (int64_t T : {100, 333, 1000, 4096})
    for (int64_t D : {64, 128})
      for (const char* gate : {"none", "weak", "strong"})
        for (bool h0 : {false, true}) out.push_back({T >= 1000 ? 1 : 2, T, 2, D, torch::kBFloat16, gate, h0});
  for (int64_t D : {64, 128})
    for (const char* gate : {"none", "weak", "strong"})
      out.push_back({2, 333, 2, D, torch::kHalf, gate, true});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, DeltaWyKernelPath, ::testing::ValuesIn(op_cases()),
                         [](const auto& info) { return op_name(info.param); });

// The backward from the forward's saved M (the default wherever a backward can follow) and from M
// recomputed (ATTNLAB_DELTA_WY_SAVE_M=0): the same inverse, so dk and dv are the same bits, dbeta and dg
// the same sums up to the order of their shared-memory float atomics. Both head dims, with and without a
// gate, a ragged length, both ways of the inverse's products (ATTNLAB_DELTA_WY_INVERSE, which the backward
// takes from its forward); then a bad value of each variable is named.
TEST(DeltaWyPrep, SavedInverseGivesTheSameBits) {
  SKIP_WITHOUT_CUDA();
  for (const char* inverse : {"tf32x3", "bf16x3"})
    for (int64_t D : {64, 128})
      for (const char* gate : {"none", "strong"}) {
        attnlab::testing::ScopedEnv products("ATTNLAB_DELTA_WY_INVERSE", inverse);
        auto in = make_inputs(2, 333, 3, D, torch::kBFloat16, gate, 21 + D);
        const bool gated = std::string(gate) != "none";
        auto f = in.k.options();
        auto dW = torch::randn({2, 333, 3, D}, f), dU = torch::randn({2, 333, 3, D}, f);
        auto dG = torch::randn({2, 333, 3}, f);
        auto run = [&](const char* save) {
          setenv("ATTNLAB_DELTA_WY_SAVE_M", save, 1);
          auto leaf = [](const torch::Tensor& x, torch::ScalarType dt) {
            return x.to(dt).detach().requires_grad_(true);
          };
          auto k = leaf(in.k, torch::kBFloat16), v = leaf(in.v, torch::kBFloat16),
               beta = leaf(in.beta, torch::kFloat);
          torch::Tensor g = gated ? leaf(in.g, torch::kFloat) : torch::Tensor();
          auto got = ops::cuda::delta_wy_prepare(k, v, beta, g);
          unsetenv("ATTNLAB_DELTA_WY_SAVE_M");
          auto loss = (got[0].to(torch::kFloat) * dW).sum() + (got[1].to(torch::kFloat) * dU).sum();
          if (gated) loss = loss + (got[2] * dG).sum();
          loss.backward();
          return std::vector<torch::Tensor>{got[0],   got[1],      k.grad(),
                                            v.grad(), beta.grad(), gated ? g.grad() : torch::Tensor()};
        };
        auto saved = run("1"), recomputed = run("0");
        const char* names[] = {"w", "u", "dk", "dv", "dbeta", "dg"};
        for (size_t i = 0; i < saved.size(); ++i) {
          if (!saved[i].defined()) continue;
          const std::string what = fmt::format("{} D {} gate {} {}", names[i], D, gate, inverse);
          EXPECT_TRUE(ops::all_finite(saved[i])) << what;
          if (i >= 4)
            EXPECT_LT(ops::rel_rms_error(saved[i], recomputed[i]), 1e-5) << what;
          else
            EXPECT_TRUE(torch::equal(saved[i], recomputed[i])) << what;
        }
      }
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  auto k = torch::randn({1, 10, 2, 64}, f).requires_grad_(true);
  setenv("ATTNLAB_DELTA_WY_SAVE_M", "yes", 1);
  EXPECT_ERROR_WITH(
      ops::cuda::delta_wy_prepare(k, torch::randn({1, 10, 2, 64}, f),
                                  torch::rand({1, 10, 2}, f.dtype(torch::kFloat)), torch::Tensor()),
      "ATTNLAB_DELTA_WY_SAVE_M must be 0 or 1", "yes");
  unsetenv("ATTNLAB_DELTA_WY_SAVE_M");
  attnlab::testing::ScopedEnv bad("ATTNLAB_DELTA_WY_INVERSE", "fp64");
  EXPECT_ERROR_WITH(
      ops::cuda::delta_wy_prepare(k, torch::randn({1, 10, 2, 64}, f),
                                  torch::rand({1, 10, 2}, f.dtype(torch::kFloat)), torch::Tensor()),
      "ATTNLAB_DELTA_WY_INVERSE must be tf32x3 or bf16x3", "fp64");
}

TEST(DeltaWyPrep, RejectsWhatItCannotRun) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  auto beta = torch::rand({1, 10, 2}, f.dtype(torch::kFloat));
  EXPECT_THROW(ops::cuda::delta_wy_prepare(torch::randn({1, 10, 2, 96}, f), torch::randn({1, 10, 2, 96}, f),
                                           beta, torch::Tensor()),
               std::exception);
  EXPECT_THROW(ops::cuda::delta_wy_prepare(torch::randn({1, 10, 2, 64}, f), torch::randn({1, 10, 2, 64}, f),
                                           torch::rand({1, 9, 2}, f), torch::Tensor()),
               std::exception);
}

}  // namespace
#else
TEST(DeltaWyPrep, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA kernels (nvcc was not found at configure time)";
}
#endif
