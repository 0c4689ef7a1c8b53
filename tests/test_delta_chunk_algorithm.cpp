// The formulas of the delta_chunk CUDA kernels (kernels/delta_chunk), written out in float64 libtorch ops
// and checked on the CPU: the hand-derived backward of the chunk recurrence (dq, dk, dW, dU, dG, dh0, padded
// last chunks included) against autograd of its forward. The whole kernel path (the op's WY factors + the
// kernels) is checked against the chunk form on the GPU (test_gpu_delta_chunk).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attnlab/ops/delta_rule.h"
#include "support/kernel_test.h"
#ifdef ATTNLAB_WITH_CUDA
#include "kernels/delta_chunk/params.h"
#endif

using namespace attnlab;

namespace {

constexpr int64_t kC = 64;

// Rows t0 .. t0 + 64 of x [T, D] (or [T]), zero-padded; for G the padding repeats the last real row's value.
torch::Tensor rows_of(const torch::Tensor& x, int64_t c, int64_t T, bool repeat_last = false) {
  const int64_t n = std::min(kC, T - c * kC);
  auto y = x.narrow(0, c * kC, n);
  if (n == kC) return y;
  auto pad = repeat_last ? y.narrow(0, n - 1, 1).expand({kC - n}) : torch::zeros({kC - n}, x.options());
  if (x.dim() == 2) pad = torch::zeros({kC - n, x.size(1)}, x.options());
  return torch::cat({y, pad}, 0);
}

struct Out {
  torch::Tensor o, ht;
};

// The forward of params.h: vn = U - W S; o = scale exp(G) q S + P vn; S = exp(G_last) S + Kd^T vn.
Out recurrence(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& W, const torch::Tensor& U,
               const torch::Tensor& G, const torch::Tensor& h0, double scale) {
  const int64_t T = q.size(0), nt = (T + kC - 1) / kC;
  auto tril = torch::ones({kC, kC}, q.options()).tril();
  auto S = h0;
  std::vector<torch::Tensor> os;
  for (int64_t c = 0; c < nt; ++c) {
    auto qc = rows_of(q, c, T), kc = rows_of(k, c, T), Wc = rows_of(W, c, T), Uc = rows_of(U, c, T);
    auto Gc = rows_of(G, c, T, true);
    auto last = Gc[kC - 1];
    auto vn = Uc - torch::matmul(Wc, S);
    auto P = torch::matmul(qc, kc.t()) * (Gc.unsqueeze(1) - Gc.unsqueeze(0)).exp() * tril * scale;
    os.push_back(scale * Gc.exp().unsqueeze(1) * torch::matmul(qc, S) + torch::matmul(P, vn));
    S = last.exp() * S + torch::matmul((kc * (last - Gc).exp().unsqueeze(1)).t(), vn);
  }
  return {torch::cat(os, 0).narrow(0, 0, T), S};
}

struct Grads {
  torch::Tensor dq, dk, dW, dU, dG, dh0;
};

// The backward exactly as delta_bwd_kernel computes it.
Grads kernel_backward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& W,
                      const torch::Tensor& U, const torch::Tensor& G, const torch::Tensor& h0,
                      const torch::Tensor& dout, const torch::Tensor& dht, double scale) {
  const int64_t T = q.size(0), nt = (T + kC - 1) / kC;
  auto tril = torch::ones({kC, kC}, q.options()).tril();
  std::vector<torch::Tensor> Sin(nt);  // the forward's saved entering states
  auto S = h0.clone();
  for (int64_t c = 0; c < nt; ++c) {
    Sin[c] = S;
    auto kc = rows_of(k, c, T), Wc = rows_of(W, c, T), Uc = rows_of(U, c, T), Gc = rows_of(G, c, T, true);
    auto last = Gc[kC - 1].item<double>();
    auto vn = Uc - torch::matmul(Wc, S);
    S = std::exp(last) * S + torch::matmul((kc * (last - Gc).exp().unsqueeze(1)).t(), vn);
  }
  Grads g{torch::zeros_like(q), torch::zeros_like(k), torch::zeros_like(W),
          torch::zeros_like(U), torch::zeros_like(G), {}};
  auto dS = dht.clone();
  for (int64_t c = nt - 1; c >= 0; --c) {
    const int64_t rows = std::min(kC, T - c * kC);
    auto qc = rows_of(q, c, T), kc = rows_of(k, c, T), Wc = rows_of(W, c, T), Uc = rows_of(U, c, T);
    auto Gc = rows_of(G, c, T, true), doc = rows_of(dout, c, T);
    const double last = Gc[kC - 1].item<double>();
    auto w = (last - Gc).exp().unsqueeze(1);
    auto Gam = (Gc.unsqueeze(1) - Gc.unsqueeze(0)).exp() * tril * scale;  // [t][s]
    auto vn = Uc - torch::matmul(Wc, Sin[c]);
    auto P = torch::matmul(qc, kc.t()) * Gam;
    auto Pg = torch::matmul(doc, vn.t()) * Gam;
    auto dvn = w * torch::matmul(kc, dS) + torch::matmul(P.t(), doc);
    auto dW = -torch::matmul(dvn, Sin[c].t());
    auto dq = scale * Gc.exp().unsqueeze(1) * torch::matmul(doc, Sin[c].t()) + torch::matmul(Pg, kc);
    auto dkc = w * torch::matmul(vn, dS.t());
    auto dk = dkc + torch::matmul(Pg.t(), qc);
    auto dG = (qc * dq).sum(1) - (kc * dk).sum(1);
    dG[rows - 1] += (kc * dkc).sum() + std::exp(last) * (dS * Sin[c]).sum();
    dS = std::exp(last) * dS + torch::matmul((scale * Gc.exp().unsqueeze(1) * qc).t(), doc) -
         torch::matmul(Wc.t(), dvn);
    g.dq.narrow(0, c * kC, rows).copy_(dq.narrow(0, 0, rows));
    g.dk.narrow(0, c * kC, rows).copy_(dk.narrow(0, 0, rows));
    g.dW.narrow(0, c * kC, rows).copy_(dW.narrow(0, 0, rows));
    g.dU.narrow(0, c * kC, rows).copy_(dvn.narrow(0, 0, rows));
    g.dG.narrow(0, c * kC, rows).copy_(dG.narrow(0, 0, rows));
  }
  g.dh0 = dS;
  return g;
}

TEST(DeltaChunkAlgorithm, HandBackwardMatchesAutograd) {
  for (int64_t T : {1, 64, 130, 200})
    for (bool strong : {false, true}) {
      torch::manual_seed(11 + T);
      auto f = torch::TensorOptions().dtype(torch::kDouble);
      const int64_t D = 12;
      const double scale = 0.3;
      auto leaf = [&](torch::Tensor x) { return x.requires_grad_(true); };
      auto q = leaf(torch::randn({T, D}, f)), k = leaf(torch::randn({T, D}, f) * 0.3);
      auto W = leaf(torch::randn({T, D}, f) * 0.2), U = leaf(torch::randn({T, D}, f));
      // G: in-chunk cumulative sums of log decays.
      auto g = strong ? torch::log_sigmoid(torch::randn({T}, f) * 2 - 1) * 2
                      : torch::log_sigmoid(torch::randn({T}, f) + 2) / 16;
      std::vector<torch::Tensor> Gs;
      for (int64_t c = 0; c * kC < T; ++c)
        Gs.push_back(g.narrow(0, c * kC, std::min(kC, T - c * kC)).cumsum(0));
      auto G = leaf(torch::cat(Gs, 0));
      auto h0 = leaf(torch::randn({D, D}, f)), dout = torch::randn({T, D}, f), dht = torch::randn({D, D}, f);
      auto ref = recurrence(q, k, W, U, G, h0, scale);
      ((ref.o * dout).sum() + (ref.ht * dht).sum()).backward();
      torch::NoGradGuard no_grad;
      auto got = kernel_backward(q, k, W, U, G, h0, dout, dht, scale);
      SCOPED_TRACE(::testing::Message() << "T " << T << " strong " << strong);
      EXPECT_LT(attnlab::testing::rel_rms(got.dq, q.grad()), 1e-10);
      EXPECT_LT(attnlab::testing::rel_rms(got.dk, k.grad()), 1e-10);
      EXPECT_LT(attnlab::testing::rel_rms(got.dW, W.grad()), 1e-10);
      EXPECT_LT(attnlab::testing::rel_rms(got.dU, U.grad()), 1e-10);
      EXPECT_LT(attnlab::testing::rel_rms(got.dG, G.grad()), 1e-9);
      EXPECT_LT(attnlab::testing::rel_rms(got.dh0, h0.grad()), 1e-10);
    }
}

// Float64 inputs of the segmented tests: q, k, W, X (U or do) [T, D] and in-chunk cumulative gates G,
// weak or strong, for T a multiple of 64.
struct SegCase {
  torch::TensorOptions f = torch::TensorOptions().dtype(torch::kDouble);
  double scale = 0.3;
  torch::Tensor q, k, W, X, G;
  SegCase(int64_t T, int64_t D, bool strong) {
    q = torch::randn({T, D}, f), k = torch::randn({T, D}, f) * 0.3;
    W = torch::randn({T, D}, f) * 0.2, X = torch::randn({T, D}, f);
    auto g = strong ? torch::log_sigmoid(torch::randn({T}, f) * 2 - 1) * 2
                    : torch::log_sigmoid(torch::randn({T}, f) + 2) / 16;
    G = g.view({T / kC, kC}).cumsum(1).view({T});
  }
};

// The entering state of every chunk (hs) and the final one, as the state pass walks them (u may be zeros).
std::pair<std::vector<torch::Tensor>, torch::Tensor> walk_states(const torch::Tensor& k,
                                                                 const torch::Tensor& W,
                                                                 const torch::Tensor& U,
                                                                 const torch::Tensor& G, torch::Tensor S) {
  const int64_t T = k.size(0), nt = T / kC;
  std::vector<torch::Tensor> hs;
  for (int64_t c = 0; c < nt; ++c) {
    hs.push_back(S);
    auto kc = rows_of(k, c, T), Wc = rows_of(W, c, T), Uc = rows_of(U, c, T), Gc = rows_of(G, c, T, true);
    auto last = Gc[kC - 1];
    S = last.exp() * S + torch::matmul((kc * (last - Gc).exp().unsqueeze(1)).t(), Uc - torch::matmul(Wc, S));
  }
  return {hs, S};
}

// The segmented forward as the binding runs it (src/attnlab/ops/cuda/delta_chunk.cpp, segmented_forward):
// segments walked from zero (segment 0 from h0) and from the identity with U = 0, the entering states of
// the segments from their final states, hs corrected by P_n S_in, then the output pass with vn formed from
// the corrected hs; o and ht against the sequential recurrence.
TEST(DeltaChunkAlgorithm, SegmentedForwardMatchesTheWalk) {
  for (int64_t nseg : {2, 4})
    for (bool strong : {false, true}) {
      torch::manual_seed(7 + nseg);
      const int64_t D = 12, T = 64 * 3 * nseg, Ts = T / nseg;
      const SegCase in(T, D, strong);
      const auto &q = in.q, &k = in.k, &W = in.W, &U = in.X, &G = in.G;
      const auto& f = in.f;
      const double scale = in.scale;
      auto h0 = torch::randn({D, D}, f);
      auto ref = recurrence(q, k, W, U, G, h0, scale);

      std::vector<torch::Tensor> hs;
      torch::Tensor S_in = h0;
      for (int64_t j = 0; j < nseg; ++j) {
        auto seg = [&](const torch::Tensor& x) { return x.narrow(0, j * Ts, Ts); };
        auto local = walk_states(seg(k), seg(W), seg(U), seg(G), j == 0 ? h0 : torch::zeros({D, D}, f));
        auto trans = walk_states(seg(k), seg(W), torch::zeros({Ts, D}, f), seg(G), torch::eye(D, f));
        for (size_t n = 0; n < local.first.size(); ++n)
          hs.push_back(j == 0 ? local.first[n] : local.first[n] + torch::matmul(trans.first[n], S_in));
        S_in = j == 0 ? local.second : torch::matmul(trans.second, S_in) + local.second;
      }
      // the output pass: vn = U - W S from the corrected states, then o
      auto tril = torch::ones({kC, kC}, f).tril();
      std::vector<torch::Tensor> os;
      for (int64_t c = 0; c < T / kC; ++c) {
        auto qc = rows_of(q, c, T), kc = rows_of(k, c, T), Gc = rows_of(G, c, T, true);
        auto vn = rows_of(U, c, T) - torch::matmul(rows_of(W, c, T), hs[c]);
        auto P = torch::matmul(qc, kc.t()) * (Gc.unsqueeze(1) - Gc.unsqueeze(0)).exp() * tril * scale;
        os.push_back(scale * Gc.exp().unsqueeze(1) * torch::matmul(qc, hs[c]) + torch::matmul(P, vn));
      }
      SCOPED_TRACE(::testing::Message() << "segments " << nseg << " strong " << strong);
      EXPECT_LT(attnlab::testing::rel_rms(torch::cat(os, 0), ref.o), 1e-10);
      EXPECT_LT(attnlab::testing::rel_rms(S_in, ref.ht), 1e-10);
    }
}

// The two-pass backward's walk (delta_bwd_walk_kernel): from dS = dS_end at the last chunk down, the dS each
// chunk uses (dhs) and dvn (= dU), and the dS leaving the first chunk (dh0). It never reads the states.
struct BwdWalk {
  std::vector<torch::Tensor> dhs, dvn;
  torch::Tensor dS;
};
BwdWalk bwd_walk(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& W,
                 const torch::Tensor& G, const torch::Tensor& dout, torch::Tensor dS, double scale) {
  const int64_t T = q.size(0), nt = T / kC;
  auto tril = torch::ones({kC, kC}, q.options()).tril();
  BwdWalk r{std::vector<torch::Tensor>(nt), std::vector<torch::Tensor>(nt), {}};
  for (int64_t c = nt - 1; c >= 0; --c) {
    auto qc = rows_of(q, c, T), kc = rows_of(k, c, T), Wc = rows_of(W, c, T), Gc = rows_of(G, c, T, true);
    auto doc = rows_of(dout, c, T);
    auto last = Gc[kC - 1];
    auto P = torch::matmul(qc, kc.t()) * (Gc.unsqueeze(1) - Gc.unsqueeze(0)).exp() * tril * scale;
    r.dhs[c] = dS;
    r.dvn[c] = (last - Gc).exp().unsqueeze(1) * torch::matmul(kc, dS) + torch::matmul(P.t(), doc);
    dS = last.exp() * dS + torch::matmul((scale * Gc.exp().unsqueeze(1) * qc).t(), doc) -
         torch::matmul(Wc.t(), r.dvn[c]);
  }
  r.dS = dS;
  return r;
}

// The segmented backward as the binding runs it: segments walked from zero (the last from dht) and, with
// do = 0, from the identity (Q_n: the products of the segment's transposed transitions after chunk n); the
// gradient entering each segment from its right, X(j) = L_end(j + 1) + Q_end(j + 1) X(j + 1); then dhs +=
// Q_n X and dvn += diag(exp(G_last - G)) K Q_n X (delta_seg_fix_kernel, backward); dh0 = L_end(0) + Q_end(0)
// X(0). dhs, dU and dh0 against the sequential walk.
TEST(DeltaChunkAlgorithm, SegmentedBackwardWalkMatchesTheWalk) {
  for (int64_t nseg : {2, 4})
    for (bool strong : {false, true}) {
      torch::manual_seed(13 + nseg);
      const int64_t D = 12, T = 64 * 3 * nseg, Ts = T / nseg, nts = Ts / kC;
      const SegCase in(T, D, strong);
      const auto &q = in.q, &k = in.k, &W = in.W, &dout = in.X, &G = in.G;
      const auto& f = in.f;
      const double scale = in.scale;
      auto dht = torch::randn({D, D}, f);
      auto ref = bwd_walk(q, k, W, G, dout, dht, scale);

      std::vector<BwdWalk> L, Q;
      for (int64_t j = 0; j < nseg; ++j) {
        auto seg = [&](const torch::Tensor& x) { return x.narrow(0, j * Ts, Ts); };
        L.push_back(bwd_walk(seg(q), seg(k), seg(W), seg(G), seg(dout),
                             j == nseg - 1 ? dht : torch::zeros({D, D}, f), scale));
        Q.push_back(
            bwd_walk(seg(q), seg(k), seg(W), seg(G), torch::zeros({Ts, D}, f), torch::eye(D, f), scale));
      }
      std::vector<torch::Tensor> X(nseg);  // the gradient entering segment j from its right
      X[nseg - 1] = torch::zeros({D, D}, f);
      for (int64_t j = nseg - 2; j >= 0; --j) X[j] = L[j + 1].dS + torch::matmul(Q[j + 1].dS, X[j + 1]);
      auto dh0 = L[0].dS + torch::matmul(Q[0].dS, X[0]);
      SCOPED_TRACE(::testing::Message() << "segments " << nseg << " strong " << strong);
      for (int64_t j = 0; j < nseg; ++j)
        for (int64_t n = 0; n < nts; ++n) {
          const int64_t c = j * nts + n;
          auto fix = torch::matmul(Q[j].dhs[n], X[j]);
          auto Gc = rows_of(G, c, T, true), kc = rows_of(k, c, T);
          auto dvn = L[j].dvn[n] + (Gc[kC - 1] - Gc).exp().unsqueeze(1) * torch::matmul(kc, fix);
          EXPECT_LT(attnlab::testing::rel_rms(L[j].dhs[n] + fix, ref.dhs[c]), 1e-10) << "dhs of chunk " << c;
          EXPECT_LT(attnlab::testing::rel_rms(dvn, ref.dvn[c]), 1e-10) << "dU of chunk " << c;
        }
      EXPECT_LT(attnlab::testing::rel_rms(dh0, ref.dS), 1e-10);
    }
}

#ifdef ATTNLAB_WITH_CUDA
// The kernels' form choices (host functions, no GPU needed) on the shapes they were measured at: an H200's
// 132 SMs, B * T = 32768, H = 16 (docs/kernels.md, "delta_chunk"; bench/results/h200-2026-12-02j, q, s). A
// change to a rule must come with the measurement that moves it.
TEST(DeltaChunkForms, DefaultsFollowTheMeasurements) {
  namespace kn = attnlab::kernels;
  constexpr int kSms = 132;
  // V-split (run s: forcing 2 or 4 was slower at every shape where the default is another): 1 at 1024 heads,
  // 2 at 256 and 64 (D = 128), 4 at 16; at D = 64, 2 only where 2 B H fit the SMs.
  EXPECT_EQ(kn::delta_chunk_default_v_split(64, 16, 128, kSms), 1);
  EXPECT_EQ(kn::delta_chunk_default_v_split(16, 16, 128, kSms), 2);
  EXPECT_EQ(kn::delta_chunk_default_v_split(4, 16, 128, kSms), 2);
  EXPECT_EQ(kn::delta_chunk_default_v_split(1, 16, 128, kSms), 4);
  EXPECT_EQ(kn::delta_chunk_default_v_split(64, 16, 64, kSms), 1);
  EXPECT_EQ(kn::delta_chunk_default_v_split(4, 16, 64, kSms), 2);
  EXPECT_EQ(kn::delta_chunk_default_v_split(1, 16, 64, kSms), 2);
  // Two-pass forward (run q, forward only; run 2026-12-03a for gated D = 64): gated D = 64 up to one head
  // per SM (one-pass 0.435 / 0.423 ms against 0.465 / 0.459 at 1024 / 256 heads), gated D = 128 up to 4
  // walk blocks per SM (not at 1024 heads: 1.07x the one-pass time), ungated only under one walk block per
  // two SMs.
  EXPECT_FALSE(kn::delta_chunk_default_two_pass(64, 16, 64, true, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_two_pass(16, 16, 64, true, kSms));
  for (int B : {4, 1}) EXPECT_TRUE(kn::delta_chunk_default_two_pass(B, 16, 64, true, kSms)) << B;
  // The walk on wgmma (D = 128, sm_90a builds) where B * H fills the SMs (run 2026-12-03a: at 64 heads,
  // forced, 0.679 / 0.877 ms forward against 0.705 / 0.850 for the mma.sync V-split, and its backward
  // slower).
  EXPECT_EQ(kn::delta_chunk_default_fwd_wgmma(64, 16, 128, kSms), 1);
  EXPECT_EQ(kn::delta_chunk_default_fwd_wgmma(16, 16, 128, kSms), 1);
  // The half-V walk where 2 B * H blocks fill them (run 2026-12-04a: 64 heads, forward 0.536 against 0.649
  // ms without a gate, 0.675 against 0.800 gated), not at 32 heads (64 blocks: 0.815 against 0.782).
  EXPECT_EQ(kn::delta_chunk_default_fwd_wgmma(4, 16, 128, kSms), 2);
  EXPECT_EQ(kn::delta_chunk_default_fwd_wgmma(2, 16, 128, kSms), 0);
  // Run 2026-12-03j: at 128 heads too (9 in 10 of the 132 SMs; forward 0.449 against 0.662 ms), not at 64.
  EXPECT_EQ(kn::delta_chunk_default_fwd_wgmma(8, 16, 128, kSms), 1);
  EXPECT_EQ(kn::delta_chunk_default_fwd_wgmma(64, 16, 64, kSms), 0);
  EXPECT_FALSE(kn::delta_chunk_default_two_pass(64, 16, 128, true, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_two_pass(16, 16, 128, true, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_two_pass(1, 16, 128, true, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_two_pass(64, 16, 128, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_two_pass(16, 16, 64, false, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_two_pass(1, 16, 128, false, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_two_pass(1, 16, 64, false, kSms));
  // Two-pass backward (run j): where B * H <= SMs.
  EXPECT_TRUE(kn::delta_chunk_default_two_pass_bwd(8, 16, 64, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_two_pass_bwd(16, 16, 64, kSms));
  // At V = 128 the one-pass backward from 9 in 10 SMs (run 2026-12-03j, 128 heads, f+b 1.787 against 2.018
  // ms without a gate, 2.144 against 2.474 gated).
  EXPECT_FALSE(kn::delta_chunk_default_two_pass_bwd(8, 16, 128, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_two_pass_bwd(4, 16, 128, kSms));
  // P^T do before the two-pass backward's walk (run 2026-12-03h): gated D = 128 at 16 heads (V-split 4, 64
  // blocks: 4.142 against 4.632 ms) but not at 64 (2 x 64 blocks: 2.812 against 2.776); gated D = 64 at 16
  // and 64 heads (2.598 against 3.100, 1.548 against 1.587); without a gate D = 128 at 16 heads only (3.477
  // against 3.524), never at D = 64 (2.239 against 2.141 at 16 heads). Run 2026-12-03i (the kernel also
  // forms Qg): gated D = 128 at 32 heads too (V-split 4, 128 blocks: 2.964 against 3.157).
  EXPECT_TRUE(kn::delta_chunk_default_bwd_local(1, 16, 128, 4, true, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_bwd_local(2, 16, 128, 4, true, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_local(4, 16, 128, 2, true, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_bwd_local(1, 16, 64, 2, true, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_bwd_local(4, 16, 64, 2, true, kSms));
  EXPECT_TRUE(kn::delta_chunk_default_bwd_local(1, 16, 128, 4, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_local(4, 16, 128, 2, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_local(1, 16, 64, 2, false, kSms));
  // The two-pass walk on wgmma at V-split 2 without P^T do before it, without a gate (run 2026-12-04d: 64
  // heads, f + b 2.010 against 2.067 ms; gated 2.627 against 2.611).
  EXPECT_TRUE(kn::delta_chunk_default_bwd_walk_wgmma(4, 16, 128, 2, false, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_walk_wgmma(4, 16, 128, 2, false, true, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_walk_wgmma(4, 16, 128, 2, true, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_walk_wgmma(2, 16, 128, 4, false, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_bwd_walk_wgmma(4, 16, 64, 2, false, false, kSms));
  // The streamed backward (run h100-2026-12-07a, an H100): at D = 128 and 16 heads (V-split 4, 64 blocks)
  // backward 2.261 against 2.473 ms without a gate, 2.396 against 2.730 gated; at D = 64 slower (16 heads:
  // 1.688 against 1.518), and at 64 heads (V-split 2, 128 blocks) the output pass got 4 SMs (gated: 2.052
  // against 1.979).
  EXPECT_TRUE(kn::delta_chunk_default_stream_bwd(1, 16, 128, 4, true, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_stream_bwd(4, 16, 128, 2, true, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_stream_bwd(1, 16, 128, 4, false, false, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_stream_bwd(1, 16, 128, 2, true, true, kSms));
  EXPECT_FALSE(kn::delta_chunk_default_stream_bwd(1, 16, 64, 2, true, false, kSms));
}

// The launchers' checks (host code): P^T do before the walk belongs to the two-pass backward only.
// The wgmma walks' checks (host code): the half-V forward walk takes v_split 1 or 2; the backward's walk
// on wgmma the two-pass backward at v_split 2 without bwd_local. Each names what it got.
TEST(DeltaChunkForms, WgmmaWalksNameWhatTheyTake) {
  namespace kn = attnlab::kernels;
  char buf[16];  // never dereferenced by the checks
  kn::DeltaChunkParams p;
  p.B = p.H = 1, p.T = 100, p.K = p.V = 128;
  p.q = p.k = p.w = p.u = p.o = buf;
  p.fwd_wgmma = 1, p.v_split = 2;
  if (!kn::linear_chunk_has_wgmma()) {  // a build without sm_90a code says so, whatever else is set
    EXPECT_EQ(kn::delta_chunk_check(p, false),
              "fwd_wgmma: this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)");
    p.fwd_wgmma = 0, p.bwd_walk_wgmma = 1;
    p.dout = p.hs = p.dhs = p.dq = p.dk = p.dw = p.du = buf;
    EXPECT_EQ(kn::delta_chunk_check(p, true),
              "bwd_walk_wgmma: this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)");
    return;
  }
  for (int split : {1, 2}) {
    p.v_split = split;
    EXPECT_EQ(kn::delta_chunk_check(p, false), "") << split;
  }
  p.v_split = 4;
  EXPECT_EQ(kn::delta_chunk_check(p, false),
            "fwd_wgmma takes K = V = 128 and v_split 1 or 2, got K = 128, v_split 4");
  p.fwd_wgmma = 0;
  p.dout = p.hs = p.dq = p.dk = p.dw = p.du = buf;
  p.bwd_walk_wgmma = 1, p.v_split = 2;
  EXPECT_EQ(
      kn::delta_chunk_check(p, true),
      "bwd_walk_wgmma takes K = V = 128 and the two-pass backward (dhs set) with v_split 2 and bwd_local 0, "
      "got K = 128, v_split 2, bwd_local 0, dhs null");
  p.dhs = buf;
  EXPECT_EQ(kn::delta_chunk_check(p, true), "");
  p.bwd_local = 1;
  EXPECT_NE(kn::delta_chunk_check(p, true).find("bwd_local 1"), std::string::npos);
  p.bwd_local = 0, p.v_split = 4;
  EXPECT_NE(kn::delta_chunk_check(p, true).find("v_split 4"), std::string::npos);
}

TEST(DeltaChunkForms, BwdLocalNeedsTheTwoPassBackward) {
  namespace kn = attnlab::kernels;
  char buf[16];  // never dereferenced by the checks
  kn::DeltaChunkParams p;
  p.B = p.H = 1, p.T = 100, p.K = p.V = 128;
  p.q = p.k = p.w = p.u = p.dout = buf;
  p.hs = p.dq = p.dk = p.dw = p.du = buf;
  EXPECT_EQ(kn::delta_chunk_check(p, true), "");
  p.bwd_local = 1;
  EXPECT_EQ(kn::delta_chunk_check(p, true), "bwd_local takes the two-pass backward (dhs set)");
  p.dhs = buf;
  EXPECT_EQ(kn::delta_chunk_check(p, true), "");
}
#endif

}  // namespace
