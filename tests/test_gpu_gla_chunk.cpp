// labels: gpu
// The GLA chunk kernels (cuda::gla_chunk, reached through ops::gla with Impl::kernel) against our chunk form
// (itself held to the naive recurrence and FLA's fixtures by test_ops_linear): o, ht and every gradient (q,
// k, v, g, h0) of sum(o * do) + sum(ht * dht), on float32 copies of the same 16-bit inputs, so that only the
// kernel's own rounding counts. Awkward lengths (not multiples of the 64-token chunk, shorter than a
// sub-chunk), weak and strong gates, the default and forced segment splits (the scans), bf16 and fp16,
// D = 64 and 128, h0 and dht present or absent; and every output and workspace poisoned with NaN before a
// direct launch, so that an element the kernels forget to write, or read before writing, shows.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/gla.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/gla_chunk.h"
#include "kernels/gla_chunk/params.h"
#endif
#include "support/helpers.h"
#include "support/kernel_test.h"

using namespace attnlab;

#ifdef ATTNLAB_WITH_CUDA
namespace {

struct Case {
  int64_t B, T, H, D;
  torch::ScalarType dtype;
  std::string gate;  // weak | strong | medium | mixed
  bool h0, dht;
  int64_t seg_chunks;  // 0 = the kernels' choice
};

std::string name(const Case& c) {
  return fmt::format("B{}_T{}_H{}_D{}_{}_{}{}{}_seg{}", c.B, c.T, c.H, c.D,
                     c.dtype == torch::kHalf ? "fp16" : "bf16", c.gate, c.h0 ? "_h0" : "",
                     c.dht ? "_dht" : "", c.seg_chunks);
}

struct Inputs {
  torch::Tensor q, k, v, g, h0, dout, dht;  // float32 on CUDA, q/k/v already rounded to the case's dtype
};

// Inputs as the layers make them: unit-variance q, k scaled down like a K^-1/2 projection, and per-key gates
// from log-sigmoid logits: weak, decays near 1 (GLA's normaliser 16: g ~ -0.01 .. -0.05); strong, -5 .. -10
// per step (a chunk's decay reaches e^-640, past float32's range: only the sub-chunk references keep the
// products finite). Medium, -2.6 .. -2.8 per step: a sub-chunk's span is just under the 2^64 up to which a
// bf16 chunk takes its diagonal blocks through the tensor cores (chunk_tame), the largest factors that path
// meets. Mixed: weak in even chunks of 64 tokens, strong in odd ones, so that one walk takes both paths.
Inputs make_inputs(const Case& c) {
  torch::manual_seed(4321 + c.T + c.D + (c.gate == "strong" ? 7 : 0));
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  Inputs in;
  in.q = torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype).to(torch::kFloat);
  in.k = (torch::randn({c.B, c.T, c.H, c.D}, f) / std::sqrt(double(c.D))).to(c.dtype).to(torch::kFloat);
  in.v = torch::randn({c.B, c.T, c.H, c.D}, f).to(c.dtype).to(torch::kFloat);
  auto weak = torch::log_sigmoid(torch::randn({c.B, c.T, c.H, c.D}, f) + 2) / 16;
  auto strong = -5 - 5 * torch::rand({c.B, c.T, c.H, c.D}, f);
  if (c.gate == "strong") {
    in.g = strong;
  } else if (c.gate == "medium") {
    in.g = -2.6 - 0.2 * torch::rand({c.B, c.T, c.H, c.D}, f);
  } else if (c.gate == "mixed") {
    auto odd = (torch::arange(c.T, f).div(64, "floor").remainder(2) == 1).view({1, c.T, 1, 1});
    in.g = torch::where(odd, strong, weak);
  } else {
    in.g = weak;
  }
  in.h0 = torch::randn({c.B, c.H, c.D, c.D}, f);
  in.dout = torch::randn({c.B, c.T, c.H, c.D}, f);
  in.dht = torch::randn({c.B, c.H, c.D, c.D}, f);
  return in;
}

struct Result {
  torch::Tensor o, ht, dq, dk, dv, dg, dh0;
};

// Runs the op on leaves made from the inputs (dtype `dt`), backward of sum(o * do) (+ sum(ht * dht)).
Result run(const Case& c, const Inputs& in, torch::ScalarType dt, ops::Impl impl) {
  ops::RecurrentArgs a;
  a.q = in.q.to(dt).detach().requires_grad_(true);
  a.k = in.k.to(dt).detach().requires_grad_(true);
  a.v = in.v.to(dt).detach().requires_grad_(true);
  a.g = in.g.detach().requires_grad_(true);
  if (c.h0) a.h0 = in.h0.detach().requires_grad_(true);
  a.output_final_state = true;
  a.kernel_seg_chunks = c.seg_chunks;
  auto out = ops::gla(a, impl);
  auto loss = (out.o.to(torch::kFloat) * in.dout).sum();
  if (c.dht) loss = loss + (out.ht * in.dht).sum();
  loss.backward();
  Result r{out.o.detach().to(torch::kFloat),
           out.ht.detach(),
           a.q.grad().to(torch::kFloat),
           a.k.grad().to(torch::kFloat),
           a.v.grad().to(torch::kFloat),
           a.g.grad(),
           {}};
  if (c.h0) r.dh0 = a.h0.grad();
  return r;
}

// bf16 keeps 8 bits: the kernel's 16-bit scores, decayed operands and state copy give ~2-3e-3 relative RMS
// (linear_chunk's measured level); fp16 (11 bits) 8x less in principle, 2e-3 leaves room for decayed operands
// that fall into fp16's subnormal range under strong gates.
double tolerance(torch::ScalarType dt) {
  return dt == torch::kHalf ? 2e-3 : 5e-3;
}

void check_case(const Case& c) {
  auto in = make_inputs(c);
  auto ref = run(c, in, torch::kFloat, ops::Impl::chunk);
  auto got = run(c, in, c.dtype, ops::Impl::kernel);
  const double tol = tolerance(c.dtype);
  auto expect = [&](const char* what, const torch::Tensor& x, const torch::Tensor& r, double t) {
    ASSERT_TRUE(x.defined()) << what;
    EXPECT_FALSE(torch::isnan(x).any().item<bool>()) << name(c) << ": NaN in " << what;
    double e = attnlab::testing::rel_rms(x, r);
    EXPECT_LT(e, t) << name(c) << ": " << what << " rel RMS " << e;
    std::printf("  %-52s %-4s %.2e\n", name(c).c_str(), what, e);
  };
  expect("o", got.o, ref.o, tol);
  expect("ht", got.ht, ref.ht, tol);
  expect("dq", got.dq, ref.dq, tol);
  expect("dk", got.dk, ref.dk, tol);
  expect("dv", got.dv, ref.dv, tol);
  if (c.h0) expect("dh0", got.dh0, ref.dh0, tol);
  // dg_t sums q.dq - k.dk over the rest of its chunk (plus the chunk-end term): a difference of larger
  // terms, so its relative error is that of dq and dk times their ratio to dg; 4x the others' bound, as
  // linear_chunk's.
  expect("dg", got.dg, ref.dg, 4 * tol);
}

class GlaChunkKernel : public ::testing::TestWithParam<Case> {};

TEST_P(GlaChunkKernel, MatchesChunkForm) {
  SKIP_WITHOUT_CUDA();
  check_case(GetParam());
}

std::vector<Case> cases() {
  std::vector<Case> out;
  const int64_t Ts[] = {17, 64, 200, 1000, 4096};
  for (int64_t D : {64, 128})
    for (const char* gate : {"weak", "strong"})
      for (size_t i = 0; i < 5; ++i) {
        // B = 1, H = 2: at T = 1000 and 4096 the default split cuts segments (the scans run).
        const bool h0 = i % 2 == 0, dht = i % 3 != 1;
        out.push_back({1, Ts[i], 2, D, torch::kBFloat16, gate, h0, dht, 0});
        if (Ts[i] == 200 || Ts[i] == 1000) out.push_back({1, Ts[i], 2, D, torch::kHalf, gate, !h0, !dht, 0});
      }
  out.push_back({1, 5, 2, 64, torch::kBFloat16, "weak", true, true, 0});           // shorter than a sub-chunk
  out.push_back({2, 333, 3, 128, torch::kBFloat16, "strong", true, true, 2});      // 6 chunks in 3 segments
  out.push_back({2, 333, 3, 64, torch::kHalf, "weak", false, true, 1});            // one chunk per segment
  out.push_back({1, 1000, 2, 128, torch::kBFloat16, "weak", true, false, 3});      // last segment shorter
  out.push_back({3, 130, 2, 128, torch::kBFloat16, "strong", false, false, 100});  // B > 1, no split
  // The tensor-core diagonal blocks at their largest factors, and chunks that take either path in one walk.
  out.push_back({1, 1000, 2, 128, torch::kBFloat16, "medium", true, true, 0});
  out.push_back({2, 333, 3, 64, torch::kBFloat16, "medium", false, true, 2});
  out.push_back({1, 1000, 2, 64, torch::kBFloat16, "mixed", false, true, 0});
  out.push_back({1, 1000, 2, 128, torch::kBFloat16, "mixed", true, true, 3});
  out.push_back({1, 200, 2, 128, torch::kHalf, "mixed", true, false, 0});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, GlaChunkKernel, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return name(info.param); });

// Direct launches with every output and workspace filled with NaN first: the op path's results must come
// back bit for bit (no element left unwritten, no workspace read before it is written).
TEST(GlaChunkKernel, PoisonedOutputsAreAllWritten) {
  SKIP_WITHOUT_CUDA();
  namespace kn = attnlab::kernels;
  for (int64_t seg_chunks : {1, 3}) {  // 16 segments of one chunk; 6 of three (the last one shorter)
    Case c{2, 1000, 2, 128, torch::kBFloat16, "strong", true, true, seg_chunks};
    SCOPED_TRACE(name(c));
    auto in = make_inputs(c);
    auto via_op = run(c, in, c.dtype, ops::Impl::kernel);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    auto bf = in.q.options().dtype(torch::kBFloat16), f = in.q.options();
    auto q = in.q.to(torch::kBFloat16), k = in.k.to(torch::kBFloat16), v = in.v.to(torch::kBFloat16);
    auto dout = in.dout.to(torch::kBFloat16);
    const int64_t B = c.B, T = c.T, H = c.H, D = c.D;
    kn::GlaChunkParams p;
    p.dtype = kn::LinearDtype::kBF16;
    p.B = B, p.T = T, p.H = H, p.K = D, p.V = D;
    p.scale = static_cast<float>(1.0 / std::sqrt(double(D)));
    p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.g = in.g.data_ptr<float>();
    p.h0 = in.h0.data_ptr<float>();
    p.seg_chunks = static_cast<int>(c.seg_chunks);
    const int64_t n_seg = kn::gla_chunk_segments(p), nt = kn::gla_chunk_count(p.T);
    auto o = torch::full({B, T, H, D}, nan, bf), ht = torch::full({B, H, D, D}, nan, f);
    auto seg_states = torch::full({B, H, n_seg, D, D}, nan, f),
         seg_gate = torch::full({B, H, n_seg, D}, nan, f);
    auto scores = torch::full({B, H, nt, 64 * 64}, nan, bf);
    p.o = o.data_ptr(), p.ht = ht.data_ptr<float>();
    p.seg_states = seg_states.data_ptr<float>(), p.seg_gate = seg_gate.data_ptr<float>();
    p.scores = scores.data_ptr();
    ASSERT_EQ(kn::gla_chunk_check(p, false), "");
    ASSERT_EQ(kn::launch_gla_chunk_fwd(p), cudaSuccess);
    auto dq = torch::full({B, T, H, D}, nan, bf), dk = torch::full({B, T, H, D}, nan, bf);
    auto dv = torch::full({B, T, H, D}, nan, bf), dg = torch::full({B, T, H, D}, nan, f);
    auto dh0 = torch::full({B, H, D, D}, nan, f), dseg = torch::full({B, H, n_seg, D, D}, nan, f);
    auto chunk_states = torch::full({B, H, nt, D * D}, nan, bf);
    p.dout = dout.data_ptr(), p.dht = in.dht.data_ptr<float>();
    p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr(), p.dg = dg.data_ptr<float>();
    p.dh0 = dh0.data_ptr<float>(), p.dseg_states = dseg.data_ptr<float>(),
    p.chunk_states = chunk_states.data_ptr();
    ASSERT_EQ(kn::gla_chunk_check(p, true), "");
    ASSERT_EQ(kn::launch_gla_chunk_bwd(p), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const char* names[] = {"o", "ht", "dq", "dk", "dv", "dg", "dh0"};
    std::vector<torch::Tensor> raw{
        o.to(torch::kFloat), ht, dq.to(torch::kFloat), dk.to(torch::kFloat), dv.to(torch::kFloat), dg, dh0};
    std::vector<torch::Tensor> op{via_op.o,  via_op.ht, via_op.dq, via_op.dk,
                                  via_op.dv, via_op.dg, via_op.dh0};
    for (size_t i = 0; i < raw.size(); ++i) {
      EXPECT_FALSE(torch::isnan(raw[i]).any().item<bool>()) << "NaN left in " << names[i];
      EXPECT_TRUE(torch::equal(raw[i], op[i])) << names[i] << " differs from the op path";
    }
  }
}

// One token with autograd goes to the chunk kernel (the decode step has no backward); without autograd to
// the decode step; both agree with the chunk form.
TEST(GlaChunkKernel, OneTokenWithAndWithoutGrad) {
  SKIP_WITHOUT_CUDA();
  Case c{2, 1, 2, 64, torch::kBFloat16, "weak", true, true, 0};
  check_case(c);
  auto in = make_inputs(c);
  torch::NoGradGuard ng;
  ops::RecurrentArgs a;
  a.q = in.q.to(c.dtype), a.k = in.k.to(c.dtype), a.v = in.v.to(c.dtype), a.g = in.g, a.h0 = in.h0;
  a.output_final_state = true;
  auto step = ops::gla(a, ops::Impl::kernel);
  auto chunk = ops::gla(a, ops::Impl::chunk);
  EXPECT_LT(attnlab::testing::rel_rms(step.o.to(torch::kFloat), chunk.o.to(torch::kFloat)), 5e-3);
  EXPECT_LT(attnlab::testing::rel_rms(step.ht, chunk.ht), 5e-3);
}

// On CUDA, automatic runs the chunk kernels for T > 1: the same bits as Impl::kernel.
TEST(GlaChunkKernel, AutomaticRunsTheKernels) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 100, 2, 64}, f), a.k = torch::randn({1, 100, 2, 64}, f) * 0.1;
  a.v = torch::randn({1, 100, 2, 64}, f);
  a.g = torch::log_sigmoid(torch::randn({1, 100, 2, 64}, f.dtype(torch::kFloat))) / 16;
  auto automatic = ops::gla(a, ops::Impl::automatic).o;
  auto kernel = ops::gla(a, ops::Impl::kernel).o;
  EXPECT_TRUE(torch::equal(automatic, kernel));
  // Deterministic: the same inputs give the same bits (no atomics anywhere).
  EXPECT_TRUE(torch::equal(kernel, ops::gla(a, ops::Impl::kernel).o));
}

TEST(GlaChunkKernel, RejectsWhatItCannotRun) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 10, 2, 96}, f), a.k = torch::randn({1, 10, 2, 96}, f);
  a.v = torch::randn({1, 10, 2, 96}, f);
  a.g = torch::log_sigmoid(torch::randn({1, 10, 2, 96}, f.dtype(torch::kFloat)));
  EXPECT_ERROR_WITH(ops::gla(a, ops::Impl::kernel), "gla", "gla chunk kernel: head dims K = 96, V = 96",
                    "64 or 128");
  // automatic falls back to the chunk form (logged once) and still answers.
  EXPECT_EQ(ops::gla(a, ops::Impl::automatic).o.sizes(), a.v.sizes());
  a.q = a.q.cpu(), a.k = a.k.cpu(), a.v = a.v.cpu(), a.g = a.g.cpu();
  EXPECT_NE(ops::cuda::gla_chunk_unusable_reason(a).find("CUDA"), std::string::npos);
}

}  // namespace
#else
TEST(GlaChunkKernel, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA kernels (nvcc was not found at configure time)";
}
#endif
