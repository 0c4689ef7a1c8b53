// labels: gpu
// The delta-rule chunk kernels (kernels/delta_chunk through ops::delta_rule / gated_delta_rule with
// Impl::kernel) against the chunk form on float32 copies of the same 16-bit inputs: o, ht and every gradient
// (q, k, v, beta, g, h0) of sum(o * do) + sum(ht * dht). Awkward lengths, weak and strong gates, bf16 and
// fp16, D = 64 and 128.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "attnlab/ops/cuda/delta_chunk.h"
#include "attnlab/ops/delta_rule.h"
#include "kernels/linear_chunk/params.h"
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
  bool wgmma_walk = false;  // the two-pass backward with its walk on wgmma, forced (V-split 2)
};

std::string name(const Case& c) {
  return fmt::format("B{}_T{}_H{}_D{}_{}_{}{}{}", c.B, c.T, c.H, c.D,
                     c.dtype == torch::kHalf ? "fp16" : "bf16", c.gate, c.h0 ? "_h0" : "",
                     c.wgmma_walk ? "_wgmma_walk" : "");
}

class DeltaChunkKernel : public ::testing::TestWithParam<Case> {};

TEST_P(DeltaChunkKernel, MatchesChunkForm) {
  SKIP_WITHOUT_CUDA();
  const Case c = GetParam();
  torch::manual_seed(99 + c.T + c.D);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  auto round = [&](const torch::Tensor& x) { return x.to(c.dtype).to(torch::kFloat); };
  // As the DeltaNet layers feed the op: unit-norm q and k, beta in (0, 1), log-sigmoid gates.
  auto q = round(ops::l2_normalize(torch::randn({c.B, c.T, c.H, c.D}, f)));
  auto k = round(ops::l2_normalize(torch::randn({c.B, c.T, c.H, c.D}, f)));
  auto v = round(torch::randn({c.B, c.T, c.H, c.D}, f));
  auto beta = torch::sigmoid(torch::randn({c.B, c.T, c.H}, f));
  auto logits = torch::randn({c.B, c.T, c.H}, f);
  auto g = c.gate == "strong" ? torch::log_sigmoid(logits * 2 - 1) * 2 : torch::log_sigmoid(logits + 2) / 16;
  auto h0 = torch::randn({c.B, c.H, c.D, c.D}, f) * 0.1;
  auto dout = torch::randn({c.B, c.T, c.H, c.D}, f), dht = torch::randn({c.B, c.H, c.D, c.D}, f);
  const bool gated = c.gate != "none";
  auto run = [&](torch::ScalarType dt, ops::Impl impl) {
    ops::RecurrentArgs a;
    a.q = q.to(dt).detach().requires_grad_(true), a.k = k.to(dt).detach().requires_grad_(true);
    a.v = v.to(dt).detach().requires_grad_(true), a.beta = beta.detach().requires_grad_(true);
    if (gated) a.g = g.detach().requires_grad_(true);
    if (c.h0) a.h0 = h0.detach().requires_grad_(true);
    a.output_final_state = true;
    auto out = gated ? ops::gated_delta_rule(a, impl) : ops::delta_rule(a, impl);
    ((out.o.to(torch::kFloat) * dout).sum() + (out.ht * dht).sum()).backward();
    std::vector<torch::Tensor> r{out.o.detach().to(torch::kFloat), out.ht.detach(),
                                 a.q.grad().to(torch::kFloat),     a.k.grad().to(torch::kFloat),
                                 a.v.grad().to(torch::kFloat),     a.beta.grad()};
    r.push_back(gated ? a.g.grad() : torch::Tensor());
    r.push_back(c.h0 ? a.h0.grad() : torch::Tensor());
    return r;
  };
  auto ref = run(torch::kFloat, ops::Impl::chunk);
  const char* forced[] = {"ATTNLAB_DELTA_V_SPLIT", "ATTNLAB_DELTA_BWD", "ATTNLAB_DELTA_BWD_LOCAL",
                          "ATTNLAB_DELTA_BWD_WALK_WGMMA"};
  if (c.wgmma_walk) {
    if (!kernels::linear_chunk_has_wgmma()) GTEST_SKIP() << "this build has no sm_90a code";
    const char* values[] = {"2", "two_pass", "0", "1"};
    for (int i = 0; i < 4; ++i) setenv(forced[i], values[i], 1);
  }
  auto got = run(c.dtype, ops::Impl::kernel);
  for (const char* var : forced) unsetenv(var);
  const char* names[] = {"o", "ht", "dq", "dk", "dv", "dbeta", "dg", "dh0"};
  // bf16 operands (and the 16-bit copies of W, U and the state) give ~3e-3; the sums into dbeta and dg a
  // little more.
  const double tol = c.dtype == torch::kHalf ? 2e-3 : 1e-2;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!ref[i].defined()) continue;
    ASSERT_TRUE(got[i].defined()) << names[i];
    EXPECT_FALSE(torch::isnan(got[i]).any().item<bool>()) << name(c) << ": NaN in " << names[i];
    const double e = attnlab::testing::rel_rms(got[i], ref[i]);
    EXPECT_LT(e, i >= 5 ? 2 * tol : tol) << name(c) << ": " << names[i] << " rel RMS " << e;
    std::printf("  %-36s %-5s %.2e\n", name(c).c_str(), names[i], e);
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int64_t D : {64, 128})
    for (const char* gate : {"none", "weak", "strong"}) {
      out.push_back({2, 200, 3, D, torch::kBFloat16, gate, true});
      out.push_back({1, 1000, 2, D, torch::kBFloat16, gate, false});
      out.push_back({1, 333, 2, D, torch::kHalf, gate, true});
    }
  out.push_back({2, 64, 2, 128, torch::kBFloat16, "weak", true});  // one full chunk
  out.push_back({2, 5, 2, 64, torch::kBFloat16, "strong", true});  // one short chunk
  // The two-pass backward's walk on wgmma (sm_90a builds), forced where the default takes others.
  for (const char* gate : {"none", "weak", "strong"}) {
    out.push_back({2, 200, 3, 128, torch::kBFloat16, gate, true, true});
    out.push_back({1, 1000, 2, 128, torch::kBFloat16, gate, false, true});
    out.push_back({1, 333, 2, 128, torch::kHalf, gate, true, true});
  }
  out.push_back({2, 64, 2, 128, torch::kBFloat16, "weak", true, true});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, DeltaChunkKernel, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return name(info.param); });

// Random inputs of the recurrence alone (delta_chunk_recurrence): q; k and w scaled by D^-1/2; u; a weak
// gate G when gated; h0; the output gradient dout (float32).
struct RecurrenceInputs {
  torch::Tensor q, k, w, u, G, h0, dout;
};
RecurrenceInputs recurrence_inputs(int64_t B, int64_t T, int64_t H, int64_t D, bool gated) {
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  auto fl = f.dtype(torch::kFloat);
  RecurrenceInputs in;
  in.q = torch::randn({B, T, H, D}, f), in.k = torch::randn({B, T, H, D}, f) / std::sqrt(double(D));
  in.w = torch::randn({B, T, H, D}, f) / std::sqrt(double(D)), in.u = torch::randn({B, T, H, D}, f);
  in.G = gated ? torch::log_sigmoid(torch::randn({B, T, H}, fl)) * 0.1 : torch::Tensor();
  in.h0 = torch::randn({B, H, D, D}, fl), in.dout = torch::randn({B, T, H, D}, fl);
  return in;
}

TEST(DeltaChunkKernel, RejectsWhatItCannotRun) {
  SKIP_WITHOUT_CUDA();
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 10, 2, 96}, f), a.k = torch::randn({1, 10, 2, 96}, f);
  a.v = torch::randn({1, 10, 2, 96}, f), a.beta = torch::rand({1, 10, 2}, f.dtype(torch::kFloat));
  EXPECT_ERROR_WITH(ops::delta_rule(a, ops::Impl::kernel), "delta_rule", "96", "64 or 128");
  EXPECT_EQ(ops::delta_rule(a, ops::Impl::automatic).o.sizes(), a.v.sizes());  // falls back to chunk
  // A forced V-split that the walks do not have names the variable and what came.
  const auto in = recurrence_inputs(1, 70, 2, 64, false);
  for (const char* bad : {"3", "two"}) {
    setenv("ATTNLAB_DELTA_V_SPLIT", bad, 1);
    EXPECT_ERROR_WITH(ops::cuda::delta_chunk_recurrence(in.q, in.k, in.w, in.u, in.G, in.h0, 0.1),
                      "ATTNLAB_DELTA_V_SPLIT must be 1, 2 or 4", bad);
    unsetenv("ATTNLAB_DELTA_V_SPLIT");
  }
  // So does a forced walk that is not 0, 1 or 2.
  setenv("ATTNLAB_DELTA_FWD_WGMMA", "yes", 1);
  EXPECT_ERROR_WITH(ops::cuda::delta_chunk_recurrence(in.q, in.k, in.w, in.u, in.G, in.h0, 0.1),
                    "ATTNLAB_DELTA_FWD_WGMMA must be 0, 1 or 2", "yes");
  unsetenv("ATTNLAB_DELTA_FWD_WGMMA");
  // And the backward's (read at every backward, whatever the head dim).
  {
    auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
    auto out = ops::cuda::delta_chunk_recurrence(leaf(in.q), leaf(in.k), leaf(in.w), leaf(in.u), in.G,
                                                 leaf(in.h0), 0.1);
    setenv("ATTNLAB_DELTA_BWD_WGMMA", "2", 1);
    EXPECT_ERROR_WITH((out[0].to(torch::kFloat).sum() + out[1].sum()).backward(),
                      "ATTNLAB_DELTA_BWD_WGMMA must be 0 or 1", "2");
    unsetenv("ATTNLAB_DELTA_BWD_WGMMA");
    // The two-pass backward's P^T do before the walk, read only by the two-pass backward.
    auto again = ops::cuda::delta_chunk_recurrence(leaf(in.q), leaf(in.k), leaf(in.w), leaf(in.u), in.G,
                                                   leaf(in.h0), 0.1);
    setenv("ATTNLAB_DELTA_BWD", "two_pass", 1);
    setenv("ATTNLAB_DELTA_BWD_LOCAL", "on", 1);
    EXPECT_ERROR_WITH((again[0].to(torch::kFloat).sum() + again[1].sum()).backward(),
                      "ATTNLAB_DELTA_BWD_LOCAL must be 0 or 1", "on");
    unsetenv("ATTNLAB_DELTA_BWD_LOCAL");
    // So is the walk's form.
    auto third = ops::cuda::delta_chunk_recurrence(leaf(in.q), leaf(in.k), leaf(in.w), leaf(in.u), in.G,
                                                   leaf(in.h0), 0.1);
    setenv("ATTNLAB_DELTA_BWD_WALK_WGMMA", "yes", 1);
    EXPECT_ERROR_WITH((third[0].to(torch::kFloat).sum() + third[1].sum()).backward(),
                      "ATTNLAB_DELTA_BWD_WALK_WGMMA must be 0 or 1", "yes");
    unsetenv("ATTNLAB_DELTA_BWD_WALK_WGMMA");
    unsetenv("ATTNLAB_DELTA_BWD");
  }
}

// On CUDA, automatic runs the kernels (the fused WY preparation, then the recurrence): the same bits as
// Impl::kernel.
TEST(DeltaChunkKernel, AutomaticRunsTheKernels) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(3);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  ops::RecurrentArgs a;
  a.q = torch::randn({2, 200, 2, 64}, f);
  a.k = ops::l2_normalize(torch::randn({2, 200, 2, 64}, f));
  a.v = torch::randn({2, 200, 2, 64}, f);
  a.beta = torch::rand({2, 200, 2}, f.dtype(torch::kFloat));
  a.g = torch::log_sigmoid(torch::randn({2, 200, 2}, f.dtype(torch::kFloat)) + 2) / 4;
  auto automatic = ops::gated_delta_rule(a, ops::Impl::automatic).o;
  auto kernel = ops::gated_delta_rule(a, ops::Impl::kernel).o;
  EXPECT_EQ(automatic.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(automatic, kernel));
}

// The V-split (v_split blocks per (b, h) over the value columns: 64- or 32-column slices, chosen for small
// B * H) computes every column exactly as one block does, in the forward's walk and in the two-pass
// backward's (the default at these B * H): o, ht and every gradient are the same bits (dG up to the order
// of its float atomics), at both head dims, with and without a gate.
TEST(DeltaChunkKernel, VSplitGivesTheSameBits) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(11);
  for (int64_t D : {128, 64})
    for (bool gated : {true, false}) {
      const auto in = recurrence_inputs(1, 333, 2, D, gated);
      const auto &q = in.q, &k = in.k, &w = in.w, &u = in.u, &G = in.G, &h0 = in.h0, &dout = in.dout;
      auto run = [&](int64_t v_split) {
        auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
        auto lq = leaf(q), lk = leaf(k), lw = leaf(w), lu = leaf(u), lh = leaf(h0);
        auto lG = gated ? leaf(G) : G;
        auto out = ops::cuda::delta_chunk_recurrence(lq, lk, lw, lu, lG, lh, 0.1, v_split);
        ((out[0].to(torch::kFloat) * dout).sum() + out[1].sum()).backward();
        return std::vector<torch::Tensor>{
            out[0],    out[1],    lq.grad(), lk.grad(),
            lw.grad(), lu.grad(), lh.grad(), gated ? lG.grad() : torch::Tensor()};
      };
      const char* names[] = {"o", "ht", "dq", "dk", "dw", "du", "dh0", "dG"};
      auto one = run(1);
      for (int64_t v_split : {int64_t(2), int64_t(4)}) {
        if (v_split == 4 && D != 128) continue;
        auto split = run(v_split);
        for (size_t i = 0; i < one.size(); ++i) {
          if (!one[i].defined()) continue;
          const std::string what = fmt::format("{} D {} gated {} v_split {}", names[i], D, gated, v_split);
          EXPECT_TRUE(ops::all_finite(split[i])) << what;
          if (i == 7)
            EXPECT_LT(ops::rel_rms_error(split[i], one[i]), 1e-5) << what;
          else
            EXPECT_TRUE(torch::equal(one[i], split[i])) << what;
        }
      }
      if (D == 64)
        EXPECT_ERROR_WITH(ops::cuda::delta_chunk_recurrence(q, k, w, u, G, torch::Tensor(), 0.1, 4),
                          "v_split must be 1, 2, or 4 at V = 128", "got 4 at V = 64");
    }
}

// The two-pass forward (the walk stores vn, one block per chunk computes o; ATTNLAB_DELTA_FWD forces it or
// the one-pass form) gives the same bits as the one-pass one, with and without a gate, both head dims and
// both V-splits; the backward, which reads only the saved states, the same gradients (dG up to the order of
// its float atomics, which varies run to run). The two-pass backward (ATTNLAB_DELTA_BWD=two_pass) gives the
// same bits for dq, dk, dw, du, dh0, and dG up to float-sum order, with either layout of its second kernel
// (ATTNLAB_DELTA_BWD_OUT=lean|wide) and with P^T do formed before its walk or in it
// (ATTNLAB_DELTA_BWD_LOCAL=1|0), as the one-pass backward on mma.sync (the wgmma one sums in another
// order: WgmmaBackwardMatchesMmaSync).
TEST(DeltaChunkKernel, TwoPassForwardGivesTheSameBits) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(12);
  for (int64_t D : {64, 128})
    for (bool gated : {false, true})
      for (int64_t v_split : {int64_t(1), int64_t(2)}) {
        if (v_split == 2 && D != 128) continue;
        const auto in = recurrence_inputs(2, 333, 3, D, gated);
        const auto &q = in.q, &k = in.k, &w = in.w, &u = in.u, &G = in.G, &h0 = in.h0, &dout = in.dout;
        auto run = [&](const char* fwd, const char* bwd, const char* bwd_out = "lean",
                       const char* local = "0") {
          setenv("ATTNLAB_DELTA_FWD", fwd, 1);
          setenv("ATTNLAB_DELTA_BWD", bwd, 1);
          setenv("ATTNLAB_DELTA_BWD_OUT", bwd_out, 1);
          setenv("ATTNLAB_DELTA_BWD_LOCAL", local, 1);
          setenv("ATTNLAB_DELTA_BWD_WGMMA", "0", 1);  // the mma.sync one-pass backward: the same products
          setenv("ATTNLAB_DELTA_BWD_WALK_WGMMA", "0", 1);  // and the mma.sync two-pass walk
          auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
          auto lq = leaf(q), lk = leaf(k), lw = leaf(w), lu = leaf(u), lh = leaf(h0);
          auto lG = gated ? leaf(G) : G;
          auto out = ops::cuda::delta_chunk_recurrence(lq, lk, lw, lu, lG, lh, 0.1, v_split);
          ((out[0].to(torch::kFloat) * dout).sum() + out[1].sum()).backward();
          unsetenv("ATTNLAB_DELTA_FWD");
          unsetenv("ATTNLAB_DELTA_BWD");
          unsetenv("ATTNLAB_DELTA_BWD_OUT");
          unsetenv("ATTNLAB_DELTA_BWD_LOCAL");
          unsetenv("ATTNLAB_DELTA_BWD_WGMMA");
          unsetenv("ATTNLAB_DELTA_BWD_WALK_WGMMA");
          return std::vector<torch::Tensor>{
              out[0],    out[1],    lq.grad(), lk.grad(),
              lw.grad(), lu.grad(), lh.grad(), gated ? lG.grad() : torch::Tensor()};
        };
        // the two-pass forward, then also the two-pass backward (its walk split over the value columns)
        auto one = run("one_pass", "one_pass"), two = run("two_pass", "one_pass");
        auto both = run("two_pass", "two_pass");
        // the two-pass backward's second kernel in its older layout (every tile resident; D = 128 only
        // differs): the same bits as the lean one
        auto wide = run("two_pass", "two_pass", "wide");
        // P^T do formed before the walk (ATTNLAB_DELTA_BWD_LOCAL=1): the same bits
        auto local = run("two_pass", "two_pass", "lean", "1");
        const char* names[] = {"o", "ht", "dq", "dk", "dw", "du", "dh0", "dG"};
        for (size_t i = 0; i < one.size(); ++i) {
          if (!one[i].defined()) continue;
          const std::string what = fmt::format("{} D {} gated {} v_split {}", names[i], D, gated, v_split);
          EXPECT_TRUE(ops::all_finite(two[i])) << what;
          EXPECT_TRUE(ops::all_finite(both[i])) << what << " (two-pass backward)";
          if (i == 7) {  // dG: shared-memory float atomics, so not the same bits even run to run
            EXPECT_LT(ops::rel_rms_error(two[i], one[i]), 1e-5) << what;
            EXPECT_LT(ops::rel_rms_error(both[i], one[i]), 1e-5) << what << " (two-pass backward)";
            EXPECT_LT(ops::rel_rms_error(wide[i], both[i]), 1e-5) << what << " (wide second kernel)";
            EXPECT_LT(ops::rel_rms_error(local[i], both[i]), 1e-5) << what << " (P^T do before the walk)";
          } else {
            EXPECT_TRUE(torch::equal(one[i], two[i])) << what;
            EXPECT_TRUE(torch::equal(one[i], both[i])) << what << " (two-pass backward)";
            EXPECT_TRUE(torch::equal(wide[i], both[i])) << what << " (wide second kernel)";
            EXPECT_TRUE(ops::all_finite(local[i])) << what << " (P^T do before the walk)";
            EXPECT_TRUE(torch::equal(local[i], both[i])) << what << " (P^T do before the walk)";
          }
        }
      }
}

// A forward that no backward can follow (grad mode off, or no input requiring grad) skips the saved
// states in the one-pass form (the two-pass one still needs them for its second kernel): o and ht are the
// same bits as with grad, in both forms, at both head dims, with and without a gate.
TEST(DeltaChunkKernel, ForwardWithoutGradGivesTheSameBits) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(13);
  for (int64_t D : {64, 128})
    for (bool gated : {false, true}) {
      const auto in = recurrence_inputs(2, 200, 3, D, gated);
      const auto &q = in.q, &k = in.k, &w = in.w, &u = in.u, &G = in.G, &h0 = in.h0;
      for (const char* form : {"one_pass", "two_pass"}) {
        setenv("ATTNLAB_DELTA_FWD", form, 1);
        auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
        auto with_grad = ops::cuda::delta_chunk_recurrence(leaf(q), leaf(k), leaf(w), leaf(u),
                                                           gated ? leaf(G) : G, leaf(h0), 0.1);
        std::vector<torch::Tensor> no_grad;
        {
          torch::NoGradGuard guard;
          no_grad = ops::cuda::delta_chunk_recurrence(leaf(q), leaf(k), leaf(w), leaf(u), gated ? leaf(G) : G,
                                                      leaf(h0), 0.1);
        }
        auto plain = ops::cuda::delta_chunk_recurrence(q, k, w, u, G, h0, 0.1);  // nothing requires grad
        unsetenv("ATTNLAB_DELTA_FWD");
        for (int i = 0; i < 2; ++i) {
          const std::string what = fmt::format("{} D {} gated {} {}", i == 0 ? "o" : "ht", D, gated, form);
          EXPECT_TRUE(ops::all_finite(no_grad[i])) << what;
          EXPECT_TRUE(torch::equal(with_grad[i], no_grad[i])) << what << " (grad mode off)";
          EXPECT_TRUE(torch::equal(with_grad[i], plain[i])) << what << " (no input requires grad)";
        }
        EXPECT_FALSE(no_grad[0].requires_grad()) << form;
      }
    }
}

// The forward's walk on wgmma (ATTNLAB_DELTA_FWD_WGMMA=1 with v_split 1, the whole-V walk, and =2 with
// v_split 2, the half-V one, also with its scores split between the warpgroups, ATTNLAB_DELTA_SPLIT_SCORES=1;
// K = V = 128, sm_90a builds) against the mma.sync walk (=0), in both forms (one pass; the state pass before
// delta_out): o and ht, then every gradient of a backward that reads the states
// the wgmma walk saved. bf16 and fp16, with and without a gate and h0, one short chunk, one full chunk and
// ragged lengths. Then the forwards timed at B = 16, T = 2048 and B = 4, T = 8192, H = 16 (printed, not
// asserted: speed is the bench's).
TEST(DeltaChunkKernel, WgmmaForwardMatchesMmaSync) {
  SKIP_WITHOUT_CUDA();
  if (!kernels::linear_chunk_has_wgmma()) GTEST_SKIP() << "this build has no sm_90a code";
  torch::manual_seed(14);
  for (auto dtype : {torch::kBFloat16, torch::kHalf})
    for (bool gated : {false, true})
      for (int64_t T : {5, 64, 333, 1000}) {
        if (dtype == torch::kHalf && T != 333) continue;
        auto in = recurrence_inputs(2, T, 3, 128, gated);
        for (auto* x : {&in.q, &in.k, &in.w, &in.u}) *x = x->to(dtype);
        for (const char* form : {"one_pass", "two_pass"}) {
          auto run = [&](const char* wgmma) {  // "2s": the half-V walk with its scores split
            const int64_t split = *wgmma == '2' ? 2 : 1;
            setenv("ATTNLAB_DELTA_FWD_WGMMA", *wgmma == '2' ? "2" : wgmma, 1);
            setenv("ATTNLAB_DELTA_SPLIT_SCORES", wgmma[1] == 's' ? "1" : "0", 1);
            setenv("ATTNLAB_DELTA_FWD", form, 1);
            auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
            auto lq = leaf(in.q), lk = leaf(in.k), lw = leaf(in.w), lu = leaf(in.u), lh = leaf(in.h0);
            auto lG = gated ? leaf(in.G) : in.G;
            auto out = ops::cuda::delta_chunk_recurrence(lq, lk, lw, lu, lG, lh, 0.1, split);
            ((out[0].to(torch::kFloat) * in.dout).sum() + out[1].sum()).backward();
            unsetenv("ATTNLAB_DELTA_FWD_WGMMA");
            unsetenv("ATTNLAB_DELTA_SPLIT_SCORES");
            unsetenv("ATTNLAB_DELTA_FWD");
            return std::vector<torch::Tensor>{
                out[0],    out[1],    lq.grad(), lk.grad(),
                lw.grad(), lu.grad(), lh.grad(), gated ? lG.grad() : torch::Tensor()};
          };
          const auto ref = run("0");
          for (const char* wgmma : {"1", "2", "2s"}) {
            const auto got = run(wgmma);
            const char* names[] = {"o", "ht", "dq", "dk", "dw", "du", "dh0", "dG"};
            for (size_t i = 0; i < ref.size(); ++i) {
              if (!ref[i].defined()) continue;
              const std::string what = fmt::format("{} {} gated {} T {} {} walk {}", names[i],
                                                   dtype == torch::kHalf ? "fp16" : "bf16", gated, T, form,
                                                   *wgmma == '1'     ? "whole-V"
                                                   : wgmma[1] == 's' ? "half-V, split scores"
                                                                     : "half-V");
              ASSERT_TRUE(got[i].defined()) << what;
              EXPECT_TRUE(ops::all_finite(got[i])) << what;
              const double e = attnlab::testing::rel_rms(got[i].to(torch::kFloat), ref[i].to(torch::kFloat));
              // The walks differ in summation order only, but the backward reads 16-bit states and vn: one
              // rounding step apart where the sums differ.
              EXPECT_LT(e, i == 1 ? 1e-3 : 5e-3) << what << " rel RMS " << e;
              if (i < 2) std::printf("  wgmma walk %-50s %.2e\n", what.c_str(), e);
            }
          }
        }
      }
  // Timing (printed only): one-pass forward without grad, wgmma and mma.sync walks (the default V-split).
  torch::NoGradGuard ng;
  for (int64_t B : {16, 4})
    for (const char* wgmma : {"0", "1", "2"}) {
      const auto in = recurrence_inputs(B, 32768 / B, 16, 128, true);
      setenv("ATTNLAB_DELTA_FWD_WGMMA", wgmma, 1);
      setenv("ATTNLAB_DELTA_FWD", "one_pass", 1);
      auto run = [&] { return ops::cuda::delta_chunk_recurrence(in.q, in.k, in.w, in.u, in.G, in.h0, 0.1); };
      for (int i = 0; i < 3; ++i) run();
      torch::cuda::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 20; ++i) run();
      torch::cuda::synchronize();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 20;
      std::printf("  gated one-pass walk, B %d T %d H 16 D 128, %s: %.3f ms\n", static_cast<int>(B),
                  static_cast<int>(32768 / B),
                  *wgmma == '0'   ? "mma.sync"
                  : *wgmma == '1' ? "wgmma"
                                  : "wgmma half-V",
                  ms);
      unsetenv("ATTNLAB_DELTA_FWD_WGMMA");
      unsetenv("ATTNLAB_DELTA_FWD");
    }
}

// The two-pass backward's walk on wgmma (ATTNLAB_DELTA_BWD_WALK_WGMMA=1, the default at V-split 2 without
// P^T do before the walk and without a gate; K = V = 128, sm_90a builds), with its scores whole and split
// between the warpgroups (ATTNLAB_DELTA_SPLIT_SCORES=1), against the mma.sync walk (=0), from
// the same forward: dq, dk, dw, du, dh0 and dG, bf16 and fp16, with and without a gate, h0 and dht (through
// ht's loss), one short chunk, one full chunk and ragged lengths. Then both backwards timed at B = 4, T =
// 8192, H = 16 (printed, not asserted: speed is the bench's).
TEST(DeltaChunkKernel, WgmmaBackwardWalkMatchesMmaSync) {
  SKIP_WITHOUT_CUDA();
  if (!kernels::linear_chunk_has_wgmma()) GTEST_SKIP() << "this build has no sm_90a code";
  torch::manual_seed(15);
  auto run = [](const RecurrenceInputs& in, bool gated, const char* walk) {  // "1s": split scores
    setenv("ATTNLAB_DELTA_BWD", "two_pass", 1);
    setenv("ATTNLAB_DELTA_BWD_LOCAL", "0", 1);
    setenv("ATTNLAB_DELTA_BWD_WALK_WGMMA", *walk == '1' ? "1" : "0", 1);
    setenv("ATTNLAB_DELTA_SPLIT_SCORES", walk[1] == 's' ? "1" : "0", 1);
    auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
    auto lq = leaf(in.q), lk = leaf(in.k), lw = leaf(in.w), lu = leaf(in.u), lh = leaf(in.h0);
    auto lG = gated ? leaf(in.G) : in.G;
    auto out = ops::cuda::delta_chunk_recurrence(lq, lk, lw, lu, lG, lh, 0.1, 2);
    ((out[0].to(torch::kFloat) * in.dout).sum() + out[1].sum()).backward();
    unsetenv("ATTNLAB_DELTA_BWD");
    unsetenv("ATTNLAB_DELTA_BWD_LOCAL");
    unsetenv("ATTNLAB_DELTA_BWD_WALK_WGMMA");
    unsetenv("ATTNLAB_DELTA_SPLIT_SCORES");
    return std::vector<torch::Tensor>{lq.grad(), lk.grad(), lw.grad(),
                                      lu.grad(), lh.grad(), gated ? lG.grad() : torch::Tensor()};
  };
  for (auto dtype : {torch::kBFloat16, torch::kHalf})
    for (bool gated : {false, true})
      for (int64_t T : {5, 64, 333, 1000}) {
        if (dtype == torch::kHalf && T != 333) continue;
        auto in = recurrence_inputs(2, T, 3, 128, gated);
        for (auto* x : {&in.q, &in.k, &in.w, &in.u}) *x = x->to(dtype);
        const auto ref = run(in, gated, "0");
        for (const char* walk : {"1", "1s"}) {
          const auto got = run(in, gated, walk);
          const char* names[] = {"dq", "dk", "dw", "du", "dh0", "dG"};
          for (size_t i = 0; i < ref.size(); ++i) {
            if (!ref[i].defined()) continue;
            const std::string what =
                fmt::format("{} {} gated {} T {}{}", names[i], dtype == torch::kHalf ? "fp16" : "bf16", gated,
                            T, walk[1] == 's' ? " split scores" : "");
            ASSERT_TRUE(got[i].defined()) << what;
            EXPECT_TRUE(ops::all_finite(got[i])) << what;
            const double e = attnlab::testing::rel_rms(got[i].to(torch::kFloat), ref[i].to(torch::kFloat));
            // Summation order and Dg's rounding (scale exp(G_t) do, where the mma.sync walk rounds Qg), then
            // the 16-bit dS and dvn of every later chunk: two 16-bit paths whose roundings part after the
            // first chunk, each as far from float32 as the other (the bench's rows against the chunk form,
            // and MatchesChunkForm's wgmma_walk cases). So the bound is the kernels' own against float32,
            // 1e-2 in bf16 and 2e-3 in fp16: run 2026-12-04d measured up to 7.8e-3 (bf16, T = 1000, 16
            // chunks; 1.2e-3 at one chunk) and 5.4e-4 (fp16).
            EXPECT_LT(e, dtype == torch::kHalf ? 2e-3 : 1e-2) << what << " rel RMS " << e;
            std::printf("  wgmma backward walk %-32s %.2e\n", what.c_str(), e);
          }
        }
      }
  // Timing (printed only): forward + backward, the two walks.
  auto in = recurrence_inputs(4, 8192, 16, 128, true);
  for (const char* walk : {"0", "1", "1s"}) {
    for (int i = 0; i < 2; ++i) run(in, true, walk);
    torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) run(in, true, walk);
    torch::cuda::synchronize();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 5;
    std::printf("  gated f+b (v_split 2), B 4 T 8192 H 16 D 128, walk %s: %.3f ms\n",
                *walk == '0' ? "mma.sync" : (walk[1] == 's' ? "wgmma, split scores" : "wgmma"), ms);
  }
}

// The one-pass backward on wgmma (ATTNLAB_DELTA_BWD_WGMMA=1, the default at K = V = 128 on sm_90a builds)
// against the mma.sync one (=0), from the same forward: dq, dk, dw, du, dh0 and dG, bf16 and fp16, with and
// without a gate, one short chunk, one full chunk and ragged lengths, weak and strong gates. Then both
// backwards timed at B = 16, T = 2048, H = 16 (printed, not asserted: speed is the bench's).
TEST(DeltaChunkKernel, WgmmaBackwardMatchesMmaSync) {
  SKIP_WITHOUT_CUDA();
  if (!kernels::linear_chunk_has_wgmma()) GTEST_SKIP() << "this build has no sm_90a code";
  torch::manual_seed(15);
  setenv("ATTNLAB_DELTA_BWD", "one_pass", 1);
  for (auto dtype : {torch::kBFloat16, torch::kHalf})
    for (int gate : {0, 1, 2})  // none, weak, strong
      for (int64_t T : {5, 64, 333, 1000}) {
        if (dtype == torch::kHalf && T != 333) continue;
        auto in = recurrence_inputs(2, T, 3, 128, gate > 0);
        if (gate ==
            2) {  // a strong gate: the in-chunk cumulative sum of steps of about -2.6 (G as the op forms it)
          const int64_t nt = (T + 63) / 64;
          auto g = torch::log_sigmoid(torch::randn({2, nt * 64, 3}, in.G.options()) * 2 - 1) * 2;
          in.G = torch::cumsum(g.view({2, nt, 64, 3}), 2).view({2, nt * 64, 3}).slice(1, 0, T).contiguous();
        }
        for (auto* x : {&in.q, &in.k, &in.w, &in.u}) *x = x->to(dtype);
        auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
        auto run = [&](const char* wgmma) {
          auto lq = leaf(in.q), lk = leaf(in.k), lw = leaf(in.w), lu = leaf(in.u), lh = leaf(in.h0);
          auto lG = gate > 0 ? leaf(in.G) : in.G;
          auto out = ops::cuda::delta_chunk_recurrence(lq, lk, lw, lu, lG, lh, 0.1, 1);
          setenv("ATTNLAB_DELTA_BWD_WGMMA", wgmma, 1);
          ((out[0].to(torch::kFloat) * in.dout).sum() + out[1].sum()).backward();
          unsetenv("ATTNLAB_DELTA_BWD_WGMMA");
          return std::vector<torch::Tensor>{lq.grad(), lk.grad(), lw.grad(),
                                            lu.grad(), lh.grad(), gate > 0 ? lG.grad() : torch::Tensor()};
        };
        auto ref = run("0"), got = run("1");
        const char* names[] = {"dq", "dk", "dw", "du", "dh0", "dG"};
        for (size_t i = 0; i < ref.size(); ++i) {
          if (!ref[i].defined()) continue;
          const std::string what =
              fmt::format("{} {} gate {} T {}", names[i], dtype == torch::kHalf ? "fp16" : "bf16", gate, T);
          ASSERT_TRUE(got[i].defined()) << what;
          EXPECT_TRUE(ops::all_finite(got[i])) << what;
          const double e = attnlab::testing::rel_rms(got[i].to(torch::kFloat), ref[i].to(torch::kFloat));
          // The same products, their k16 steps chained in the same order: the same bits on an H200 (run
          // 2026-12-03c) but for dG (no atomics here). Bounded, not compared bit for bit: a reordered sum
          // rounds the 16-bit tiles (dvn, the dS copy) one step apart.
          EXPECT_LT(e, 5e-3) << what << " rel RMS " << e;
          std::printf("  wgmma backward %-32s %.2e\n", what.c_str(), e);
        }
      }
  // Timing (printed only): the backward alone, wgmma and mma.sync.
  auto in = recurrence_inputs(16, 2048, 16, 128, true);
  auto leaf = [](const torch::Tensor& x) { return x.detach().requires_grad_(true); };
  for (const char* wgmma : {"0", "1"}) {
    setenv("ATTNLAB_DELTA_BWD_WGMMA", wgmma, 1);
    double ms[2];
    for (int with_bwd = 0; with_bwd < 2; ++with_bwd) {
      auto step = [&] {
        auto lq = leaf(in.q), lk = leaf(in.k), lw = leaf(in.w), lu = leaf(in.u), lG = leaf(in.G),
             lh = leaf(in.h0);
        auto out = ops::cuda::delta_chunk_recurrence(lq, lk, lw, lu, lG, lh, 0.1, 1);
        if (with_bwd) out[0].backward(in.dout.to(out[0].scalar_type()));
      };
      for (int i = 0; i < 3; ++i) step();
      torch::cuda::synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 10; ++i) step();
      torch::cuda::synchronize();
      ms[with_bwd] =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 10;
    }
    std::printf("  gated one-pass backward, B 16 T 2048 H 16 D 128, %s: %.3f ms (forward + backward %.3f)\n",
                *wgmma == '1' ? "wgmma" : "mma.sync", ms[1] - ms[0], ms[1]);
    unsetenv("ATTNLAB_DELTA_BWD_WGMMA");
  }
  unsetenv("ATTNLAB_DELTA_BWD");
}

// The streamed forward (ATTNLAB_DELTA_STREAM=1: delta_wy on a side stream, chunk-major with ready flags, the
// walk reading each chunk as it is posted) against the plain one (=0), through the ops with autograd: o, ht
// and every gradient the same bits (dbeta and dg, whose backwards sum with float atomics, to 1e-5). Few heads
// (the walk's blocks must leave SMs to delta_wy), D = 64 and 128, with and without a gate, a short and a long
// sequence (about 80 chunks, so that the walk catches up with the producer), bf16 and fp16, and the half-V
// wgmma state pass (ATTNLAB_DELTA_FWD_WGMMA=2 with the two-pass form, sm_90a builds) streamed the same way.
// Then a shape whose walk would fill the GPU, where the setting is refused and the plain forward runs.
TEST(DeltaChunkKernel, StreamedForwardGivesTheSameBits) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(31);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  struct S {
    int64_t B, T, H, D;
    torch::ScalarType dt;
    bool half_v = false;  // the half-V wgmma state pass (both runs), its output pass streamed
  };
  const std::vector<S> shapes = {
      {1, 100, 3, 64, torch::kBFloat16},    {1, 5000, 2, 128, torch::kBFloat16},
      {2, 1333, 2, 128, torch::kHalf},      {1, 5000, 3, 64, torch::kHalf},
      {16, 200, 16, 128, torch::kBFloat16}, {1, 5000, 2, 128, torch::kBFloat16, true}};
  for (size_t si = 0; si < shapes.size(); ++si)
    for (bool gated : {false, true}) {
      const auto& sh = shapes[si];
      if (sh.half_v && !kernels::linear_chunk_has_wgmma()) continue;
      auto q = ops::l2_normalize(torch::randn({sh.B, sh.T, sh.H, sh.D}, f)).to(sh.dt);
      auto k = ops::l2_normalize(torch::randn({sh.B, sh.T, sh.H, sh.D}, f)).to(sh.dt);
      auto v = torch::randn({sh.B, sh.T, sh.H, sh.D}, f).to(sh.dt);
      auto beta = torch::sigmoid(torch::randn({sh.B, sh.T, sh.H}, f));
      auto g = torch::log_sigmoid(torch::randn({sh.B, sh.T, sh.H}, f) + 2) / 8;
      auto dout = torch::randn({sh.B, sh.T, sh.H, sh.D}, f);
      auto run = [&](const char* stream) {
        setenv("ATTNLAB_DELTA_STREAM", stream, 1);
        // the walk alone on its SMs (DeltaChunkParams::walk_alone) and the output pass streamed behind the
        // walk (fwd_part 3) on, off and both, shape by shape: the same bits
        setenv("ATTNLAB_DELTA_WALK_ALONE", si % 2 ? "1" : "0", 1);
        setenv("ATTNLAB_DELTA_OUT_STREAM", sh.half_v || (si / 2) % 2 ? "1" : "0", 1);
        if (sh.half_v) {
          setenv("ATTNLAB_DELTA_FWD_WGMMA", "2", 1);
          setenv("ATTNLAB_DELTA_FWD", "two_pass", 1);
        }
        // and, with the output pass streamed, every chunk left to its cleanup launch on the fp16 shape
        setenv("ATTNLAB_DELTA_SYNC_GIVE_UP", si == 3 ? "1" : "0", 1);
        ops::RecurrentArgs a;
        a.q = q.detach().requires_grad_(true), a.k = k.detach().requires_grad_(true);
        a.v = v.detach().requires_grad_(true), a.beta = beta.detach().requires_grad_(true);
        if (gated) a.g = g.detach().requires_grad_(true);
        a.output_final_state = true;
        const bool streamed = ops::cuda::delta_chunk_streams_wy(a.q, a.v, gated);
        auto out =
            gated ? ops::gated_delta_rule(a, ops::Impl::kernel) : ops::delta_rule(a, ops::Impl::kernel);
        ((out.o.to(torch::kFloat) * dout).sum() + out.ht.sum()).backward();
        unsetenv("ATTNLAB_DELTA_STREAM");
        unsetenv("ATTNLAB_DELTA_WALK_ALONE");
        unsetenv("ATTNLAB_DELTA_OUT_STREAM");
        unsetenv("ATTNLAB_DELTA_SYNC_GIVE_UP");
        unsetenv("ATTNLAB_DELTA_FWD_WGMMA");
        unsetenv("ATTNLAB_DELTA_FWD");
        std::vector<torch::Tensor> r{out.o.detach(),
                                     out.ht.detach(),
                                     a.q.grad(),
                                     a.k.grad(),
                                     a.v.grad(),
                                     a.beta.grad(),
                                     gated ? a.g.grad() : torch::Tensor()};
        return std::make_pair(streamed, r);
      };
      const auto [plain_streamed, plain] = run("0");
      const auto [streamed, got] = run("1");
      // the walk's blocks (V-split 4 at D = 128, 2 at 64) would leave delta_wy no SM
      const bool fills = sh.B * sh.H * 4 >= ops::cuda::sm_count(0);
      const std::string what0 = fmt::format("B {} T {} H {} D {} gated {}{}", sh.B, sh.T, sh.H, sh.D, gated,
                                            sh.half_v ? " half-V wgmma" : "");
      EXPECT_FALSE(plain_streamed) << what0;
      EXPECT_EQ(streamed, !fills) << what0 << ": ATTNLAB_DELTA_STREAM=1 taken where the walk "
                                  << (fills ? "fills the GPU" : "leaves SMs free") << " (or not)";
      const char* names[] = {"o", "ht", "dq", "dk", "dv", "dbeta", "dg"};
      for (size_t i = 0; i < plain.size(); ++i) {
        if (!plain[i].defined()) continue;
        const std::string what = fmt::format("{}: {}", what0, names[i]);
        ASSERT_TRUE(got[i].defined()) << what;
        EXPECT_TRUE(ops::all_finite(got[i])) << what;
        if (i >= 5) {  // dbeta, dg: sums with float atomics, not the same bits even run to run
          EXPECT_LT(ops::rel_rms_error(got[i], plain[i]), 1e-5) << what;
        } else {
          EXPECT_TRUE(torch::equal(got[i], plain[i]))
              << what << " (rel RMS " << ops::rel_rms_error(got[i], plain[i]) << ")";
        }
      }
    }
  setenv("ATTNLAB_DELTA_STREAM", "maybe", 1);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 64, 2, 64}, f).to(torch::kBFloat16), a.k = a.q, a.v = a.q;
  a.beta = torch::sigmoid(torch::randn({1, 64, 2}, f));
  EXPECT_THROW(ops::delta_rule(a, ops::Impl::kernel), Error);
  unsetenv("ATTNLAB_DELTA_STREAM");
}

// Random inputs of the delta ops at one shape (q, k normalized, h0 small), and one forward + backward
// through the kernels with the loss <o, dout> + <ht, dht> under the environment as set: o, ht and the
// gradients of q, k, v, h0, beta and (gated) g, in that order (kCaseNames).
constexpr const char* kCaseNames[] = {"o", "ht", "dq", "dk", "dv", "dh0", "dbeta", "dg"};
struct DeltaCase {
  torch::Tensor q, k, v, beta, g, h0, dout, dht;
  DeltaCase(int64_t B, int64_t T, int64_t H, int64_t D, torch::ScalarType dt) {
    auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
    q = ops::l2_normalize(torch::randn({B, T, H, D}, f)).to(dt);
    k = ops::l2_normalize(torch::randn({B, T, H, D}, f)).to(dt);
    v = torch::randn({B, T, H, D}, f).to(dt);
    beta = torch::sigmoid(torch::randn({B, T, H}, f));
    g = torch::log_sigmoid(torch::randn({B, T, H}, f) + 2) / 8;
    h0 = torch::randn({B, H, D, D}, f) / 4;
    dout = torch::randn({B, T, H, D}, f);
    dht = torch::randn({B, H, D, D}, f);
  }
  std::vector<torch::Tensor> run(bool gated) const {
    ops::RecurrentArgs a;
    a.q = q.detach().requires_grad_(true), a.k = k.detach().requires_grad_(true);
    a.v = v.detach().requires_grad_(true), a.beta = beta.detach().requires_grad_(true);
    if (gated) a.g = g.detach().requires_grad_(true);
    a.h0 = h0.detach().requires_grad_(true);
    a.output_final_state = true;
    auto out = gated ? ops::gated_delta_rule(a, ops::Impl::kernel) : ops::delta_rule(a, ops::Impl::kernel);
    ((out.o.to(torch::kFloat) * dout).sum() + (out.ht * dht).sum()).backward();
    return {out.o.detach(), out.ht.detach(), a.q.grad(),    a.k.grad(),
            a.v.grad(),     a.h0.grad(),     a.beta.grad(), gated ? a.g.grad() : torch::Tensor()};
  }
};

// got against plain, output by output (kCaseNames), each named "<what0>: <output>": defined and finite, then
// within tol relative RMS where tol > 0; else the same bits, except the sums with float atomics (dbeta, dg,
// and through dG every gated gradient; not the same bits run to run), within 1e-5.
void expect_outputs_match(const std::vector<torch::Tensor>& got, const std::vector<torch::Tensor>& plain,
                          const std::string& what0, bool gated, double tol) {
  for (size_t i = 0; i < plain.size(); ++i) {
    if (!plain[i].defined()) continue;
    const std::string what = fmt::format("{}: {}", what0, kCaseNames[i]);
    ASSERT_TRUE(got[i].defined()) << what;
    EXPECT_TRUE(ops::all_finite(got[i])) << what;
    const double err = ops::rel_rms_error(got[i], plain[i]);
    if (tol > 0) {
      std::printf("  %-70s %.2e\n", what.c_str(), err);
      EXPECT_LT(err, tol) << what;
    } else if (i >= 6 || gated) {
      EXPECT_LT(err, 1e-5) << what;
    } else {
      EXPECT_TRUE(torch::equal(got[i], plain[i])) << what << " (rel RMS " << err << ")";
    }
  }
}

// The streamed backward (the output pass behind the walk on a second stream, ATTNLAB_DELTA_BWD_STREAM) gives
// the plain two-pass backward's bits: shapes whose walk leaves half the SMs free, D = 64 and 128, with and
// without a gate, short and long (about 80 chunks), bf16 and fp16, with and without P^T do before the walk.
TEST(DeltaChunkKernel, StreamedBackwardGivesTheSameBits) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(37);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  struct S {
    int64_t B, T, H, D;
    torch::ScalarType dt;
    const char* local;
  };
  const std::vector<S> shapes = {{1, 100, 3, 64, torch::kBFloat16, "0"},
                                 {1, 5000, 2, 128, torch::kBFloat16, "1"},
                                 {1, 5000, 2, 128, torch::kBFloat16, "0"},
                                 {2, 1333, 2, 128, torch::kHalf, "1"},
                                 {1, 5000, 3, 64, torch::kHalf, "1"}};
  setenv("ATTNLAB_DELTA_BWD", "two_pass", 1);
  for (size_t si = 0; si < shapes.size(); ++si)
    for (bool gated : {false, true}) {
      const auto& sh = shapes[si];
      const DeltaCase in(sh.B, sh.T, sh.H, sh.D, sh.dt);
      auto run = [&](const char* stream) {
        setenv("ATTNLAB_DELTA_BWD_STREAM", stream, 1);
        setenv("ATTNLAB_DELTA_BWD_LOCAL", sh.local, 1);
        setenv("ATTNLAB_DELTA_WALK_ALONE", si % 2 ? "1" : "0", 1);  // the walk alone on its SMs or not
        // every chunk left to the cleanup launch (DeltaChunkParams::sync_give_up) on one shape
        setenv("ATTNLAB_DELTA_SYNC_GIVE_UP", si == 2 ? "1" : "0", 1);
        auto r = in.run(gated);
        unsetenv("ATTNLAB_DELTA_BWD_STREAM");
        unsetenv("ATTNLAB_DELTA_BWD_LOCAL");
        unsetenv("ATTNLAB_DELTA_WALK_ALONE");
        unsetenv("ATTNLAB_DELTA_SYNC_GIVE_UP");
        return r;
      };
      const auto plain = run("0");
      const auto got = run("1");
      expect_outputs_match(
          got, plain,
          fmt::format("B {} T {} H {} D {} gated {} bwd_local {}", sh.B, sh.T, sh.H, sh.D, gated, sh.local),
          gated, 0);
    }
  unsetenv("ATTNLAB_DELTA_BWD");
  setenv("ATTNLAB_DELTA_BWD_STREAM", "yes", 1);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 64, 2, 64}, f).to(torch::kBFloat16).requires_grad_(true), a.k = a.q, a.v = a.q;
  a.beta = torch::sigmoid(torch::randn({1, 64, 2}, f));
  auto out = ops::delta_rule(a, ops::Impl::kernel);
  EXPECT_THROW(out.o.to(torch::kFloat).sum().backward(), std::exception);
  unsetenv("ATTNLAB_DELTA_BWD_STREAM");
}

// The segmented forms (ATTNLAB_DELTA_SEGMENTS: the forward's and the backward's walks over segments of the
// sequence at once, then the segments' entering states, hs, dhs and dU corrected) against the plain ones: o,
// ht and every gradient, to 16-bit rounding (the states are summed from rounded pieces, so not the same
// bits); a count the chunks do not split into is halved (6 chunks: 2 segments for 4), and T that is not a
// multiple of 64 falls back to the plain forms (the same bits); a bad count is named.
TEST(DeltaChunkKernel, SegmentedFormsMatchThePlainOnes) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(41);
  auto f = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  struct S {
    int64_t B, T, H, D;
    torch::ScalarType dt;
    const char* nseg;
  };
  const std::vector<S> shapes = {
      {1, 4096, 2, 64, torch::kBFloat16, "4"}, {1, 4096, 2, 128, torch::kBFloat16, "2"},
      {2, 2048, 3, 64, torch::kHalf, "8"},     {1, 8192, 1, 128, torch::kBFloat16, "8"},
      {1, 1000, 2, 64, torch::kBFloat16, "4"},  // 1000 = 15.6 chunks: plain
      {1, 384, 2, 64, torch::kBFloat16, "4"}};  // 6 chunks: 2 segments of 3
  for (const auto& sh : shapes)
    for (bool gated : {false, true}) {
      const DeltaCase in(sh.B, sh.T, sh.H, sh.D, sh.dt);
      auto run = [&](const char* nseg) {
        setenv("ATTNLAB_DELTA_SEGMENTS", nseg, 1);
        setenv("ATTNLAB_DELTA_STREAM", "0", 1);
        auto r = in.run(gated);
        unsetenv("ATTNLAB_DELTA_SEGMENTS");
        unsetenv("ATTNLAB_DELTA_STREAM");
        return r;
      };
      const auto plain = run("1");
      const auto got = run(sh.nseg);
      // segmented (with fewer segments where the chunks do not split), or where T does not split the plain
      // forms
      const bool even = sh.T % 64 == 0;
      expect_outputs_match(
          got, plain,
          fmt::format("segmented B {} T {} H {} D {} gated {} segments {}{}", sh.B, sh.T, sh.H, sh.D, gated,
                      sh.nseg, even ? "" : " (T does not split: the plain forms)"),
          gated, even ? 1e-2 : 0);
    }
  setenv("ATTNLAB_DELTA_SEGMENTS", "3", 1);
  ops::RecurrentArgs a;
  a.q = torch::randn({1, 256, 2, 64}, f).to(torch::kBFloat16), a.k = a.q, a.v = a.q;
  a.beta = torch::sigmoid(torch::randn({1, 256, 2}, f));
  EXPECT_THROW(ops::delta_rule(a, ops::Impl::kernel), Error);
  unsetenv("ATTNLAB_DELTA_SEGMENTS");
}

}  // namespace
#else
TEST(DeltaChunkKernel, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA kernels (nvcc was not found at configure time)";
}
#endif
