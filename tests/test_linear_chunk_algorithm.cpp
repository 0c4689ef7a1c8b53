// The dataflow of the linear_chunk CUDA kernels (kernels/linear_chunk), written out in float64 libtorch ops
// and checked on the CPU against autograd through the chunk form: the segment split and the scans over
// segments (forward states, backward state gradients), the per-chunk formulas of the forward, dq and dk/dv
// walks, and dg from q.dq - k.dk by reverse sums within each chunk plus the chunk-end term <S, dS>. The GPU
// test (test_gpu_linear_chunk) then only has to show that the kernels compute these formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "attnlab/ops/simple_gla.h"
#include "support/kernel_test.h"

#ifdef ATTNLAB_WITH_CUDA
#include "kernels/linear_chunk/params.h"
#endif

using namespace attnlab;

namespace {

constexpr int64_t kC = 64;

struct Grads {
  torch::Tensor o, ht, dq, dk, dv, dg, dh0;
};

// One (b, h) slice: q, k [T, K], v, dout [T, V], g [T], h0, dht [K, V]; float64.
Grads kernel_dataflow(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                      const torch::Tensor& g, const torch::Tensor& h0, const torch::Tensor& dout,
                      const torch::Tensor& dht, double scale, int64_t seg_chunks, bool round16 = false) {
  // round16: round the 16-bit copies that dg's state terms read (the chunk-entering states, the dS operand
  // of the dk product) to bf16, as the kernels keep them.
  auto r16 = [&](const torch::Tensor& x) { return round16 ? x.to(torch::kBFloat16).to(x.scalar_type()) : x; };
  const int64_t T = q.size(0), K = q.size(1), V = v.size(1);
  const int64_t nt = (T + kC - 1) / kC, n_seg = (nt + seg_chunks - 1) / seg_chunks;
  auto opt = q.options();
  // A chunk's rows, zero-padded to C (gates 0 past T, as the kernels' zero-filled copies).
  auto rows = [&](const torch::Tensor& x, int64_t c) {
    auto y = x.narrow(0, c * kC, std::min(kC, T - c * kC));
    if (y.size(0) == kC) return y;
    auto pad_shape = y.sizes().vec();
    pad_shape[0] = kC - y.size(0);
    return torch::cat({y, torch::zeros(pad_shape, opt)}, 0);
  };
  auto tril = torch::ones({kC, kC}, opt).tril();  // [t][s]: s <= t
  struct Chunk {
    torch::Tensor q, k, v, dout, G, w, D;  // G cumsum [C], w = exp(G_last - G) [C], D [t][s] decayed mask
    double last;
  };
  auto chunk = [&](int64_t c) {
    Chunk x{rows(q, c), rows(k, c), rows(v, c), rows(dout, c), rows(g, c).cumsum(0), {}, {}, 0};
    x.last = x.G[kC - 1].item<double>();
    x.w = (x.last - x.G).exp();
    x.D = (x.G.unsqueeze(1) - x.G.unsqueeze(0)).exp() * tril * scale;
    return x;
  };
  auto seg_range = [&](int64_t s) {
    return std::make_pair(s * seg_chunks, std::min(nt, (s + 1) * seg_chunks));
  };

  // ---- forward: segment contributions from zero, the scan, then every segment's outputs.
  std::vector<torch::Tensor> contrib(n_seg), entering(n_seg);
  std::vector<double> seg_gate(n_seg, 0.0);
  for (int64_t s = 0; s < n_seg; ++s) {
    auto S = torch::zeros({K, V}, opt);
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c0; c < c1; ++c) {
      auto x = chunk(c);
      S = std::exp(x.last) * S + torch::matmul(x.k.t(), x.v * x.w.unsqueeze(1));
      seg_gate[s] += x.last;
    }
    contrib[s] = S;
  }
  auto h = h0.clone();
  for (int64_t s = 0; s < n_seg; ++s) {
    entering[s] = h;
    h = std::exp(seg_gate[s]) * h + contrib[s];
  }
  Grads r;
  r.ht = h;
  std::vector<torch::Tensor> os;
  for (int64_t s = 0; s < n_seg; ++s) {
    auto S = entering[s];
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c0; c < c1; ++c) {
      auto x = chunk(c);
      auto P = torch::matmul(x.q, x.k.t()) * x.D;
      os.push_back(scale * x.G.exp().unsqueeze(1) * torch::matmul(x.q, S) + torch::matmul(P, x.v));
      S = std::exp(x.last) * S + torch::matmul(x.k.t(), x.v * x.w.unsqueeze(1));
    }
  }
  r.o = torch::cat(os, 0).narrow(0, 0, T);

  // ---- backward. dq: the forward walk from the saved entering states.
  std::vector<torch::Tensor> dqs, dks(nt), dvs(nt);
  auto dgw = torch::zeros({nt * kC}, opt);      // q.dq - k.dk_in per token
  auto dgst = torch::zeros({nt * kC}, opt);     // k.dk_st per token
  std::vector<torch::Tensor> chunk_states(nt);  // the state entering each chunk (the dq walk's)
  std::vector<double> chunk_dg(nt);             // exp(G_last) <S_in, dS_out> (the dkv walk's)
  for (int64_t s = 0; s < n_seg; ++s) {
    auto S = entering[s];
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c0; c < c1; ++c) {
      auto x = chunk(c);
      chunk_states[c] = r16(S);
      auto P = torch::matmul(x.dout, x.v.t()) * x.D;  // [t][s]
      auto dq = scale * x.G.exp().unsqueeze(1) * torch::matmul(x.dout, S.t()) + torch::matmul(P, x.k);
      dgw.narrow(0, c * kC, kC).add_((x.q * dq).sum(1));
      dqs.push_back(dq);
      S = std::exp(x.last) * S + torch::matmul(x.k.t(), x.v * x.w.unsqueeze(1));
    }
  }
  // dS contributions of each segment from a zero gradient at its end, then the reverse scan.
  std::vector<torch::Tensor> dcontrib(n_seg), dend(n_seg);
  for (int64_t s = 0; s < n_seg; ++s) {
    auto dS = torch::zeros({K, V}, opt);
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c1 - 1; c >= c0; --c) {
      auto x = chunk(c);
      dS = std::exp(x.last) * dS + torch::matmul((scale * x.G.exp().unsqueeze(1) * x.q).t(), x.dout);
    }
    dcontrib[s] = dS;
  }
  auto d = dht.clone();
  for (int64_t s = n_seg - 1; s >= 0; --s) {
    dend[s] = d;
    d = std::exp(seg_gate[s]) * d + dcontrib[s];
  }
  r.dh0 = d;
  for (int64_t s = 0; s < n_seg; ++s) {
    auto dS = dend[s];
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c1 - 1; c >= c0; --c) {
      auto x = chunk(c);
      chunk_dg[c] = std::exp(x.last) * (chunk_states[c] * dS).sum().item<double>();
      auto Dt = x.D.t();  // [s][t]: t >= s
      auto P1 = torch::matmul(x.k, x.q.t()) * Dt, P2 = torch::matmul(x.v, x.dout.t()) * Dt;
      dvs[c] = x.w.unsqueeze(1) * torch::matmul(x.k, dS) + torch::matmul(P1, x.dout);
      auto dk_st = x.w.unsqueeze(1) * torch::matmul(x.v, r16(dS).t());  // through the chunk-end state
      dks[c] = dk_st + torch::matmul(P2, x.q);
      auto kst = (x.k * dk_st).sum(1);
      dgw.narrow(0, c * kC, kC).sub_((x.k * dks[c]).sum(1) - kst);
      dgst.narrow(0, c * kC, kC).copy_(kst);
      dS = std::exp(x.last) * dS + torch::matmul((scale * x.G.exp().unsqueeze(1) * x.q).t(), x.dout);
    }
  }
  r.dq = torch::cat(dqs, 0).narrow(0, 0, T);
  r.dk = torch::cat(dks, 0).narrow(0, 0, T);
  r.dv = torch::cat(dvs, 0).narrow(0, 0, T);
  std::vector<torch::Tensor> dgs;
  for (int64_t c = 0; c < nt; ++c) {
    auto st = dgst.narrow(0, c * kC, kC);
    dgs.push_back(dgw.narrow(0, c * kC, kC).flip(0).cumsum(0).flip(0) + (st.cumsum(0) - st) + chunk_dg[c]);
  }
  r.dg = torch::cat(dgs, 0).narrow(0, 0, T);
  return r;
}

TEST(LinearChunkAlgorithm, MatchesAutogradOfTheChunkForm) {
  for (int64_t seg_chunks : {1, 2, 3, 100})
    for (int64_t T : {1, 64, 200, 333})
      for (bool strong : {false, true}) {
        torch::manual_seed(7 + T + seg_chunks);
        auto f = torch::TensorOptions().dtype(torch::kDouble);
        const int64_t K = 16, V = 16;
        const double scale = 0.25;
        auto q = torch::randn({1, T, 1, K}, f), k = torch::randn({1, T, 1, K}, f) * 0.3;
        auto v = torch::randn({1, T, 1, V}, f);
        auto g = strong ? torch::log_sigmoid(torch::randn({1, T, 1}, f) * 2 - 1) * 2
                        : torch::log_sigmoid(torch::randn({1, T, 1}, f) + 2) / 16;
        auto h0 = torch::randn({1, 1, K, V}, f), dout = torch::randn({1, T, 1, V}, f);
        auto dht = torch::randn({1, 1, K, V}, f);

        ops::RecurrentArgs a;
        a.q = q.clone().requires_grad_(true), a.k = k.clone().requires_grad_(true);
        a.v = v.clone().requires_grad_(true), a.g = g.clone().requires_grad_(true);
        a.h0 = h0.clone().requires_grad_(true), a.scale = scale, a.output_final_state = true;
        auto ref = ops::simple_gla(a, ops::Impl::chunk);
        ((ref.o * dout).sum() + (ref.ht * dht).sum()).backward();

        auto sl = [](const torch::Tensor& t) { return t.select(2, 0).select(0, 0); };  // [T, D]
        auto got = kernel_dataflow(sl(q), sl(k), sl(v), g.select(2, 0).select(0, 0), h0[0][0], sl(dout),
                                   dht[0][0], scale, seg_chunks);
        SCOPED_TRACE(::testing::Message()
                     << "T " << T << " seg_chunks " << seg_chunks << " strong " << strong);
        EXPECT_LT(attnlab::testing::rel_rms(got.o, sl(ref.o)), 1e-10);
        EXPECT_LT(attnlab::testing::rel_rms(got.ht, ref.ht[0][0]), 1e-10);
        EXPECT_LT(attnlab::testing::rel_rms(got.dq, sl(a.q.grad())), 1e-10);
        EXPECT_LT(attnlab::testing::rel_rms(got.dk, sl(a.k.grad())), 1e-10);
        EXPECT_LT(attnlab::testing::rel_rms(got.dv, sl(a.v.grad())), 1e-10);
        EXPECT_LT(attnlab::testing::rel_rms(got.dh0, a.h0.grad()[0][0]), 1e-10);
        EXPECT_LT(attnlab::testing::rel_rms(got.dg, a.g.grad().select(2, 0).select(0, 0)), 1e-10);
      }
}

// The kernels keep the chunk-entering states and dS in 16 bits for dg's state terms. Under a strong gate dg
// is far smaller than those terms (linear_chunk_bwd.cu), so the first form, <S_e, dS_e> minus the in-chunk
// sum of k.dk, turned their rounding into dg's error: 6.1e-2 rel RMS at T = 64 on the H200 (2026-12-02).
// The form in use only adds terms of the result's size; with the rounding it stays at bf16's level.
TEST(LinearChunkAlgorithm, DgDoesNotAmplifyTheSixteenBitStates) {
  for (int64_t T : {64, 200, 333})
    for (bool strong : {false, true}) {
      torch::manual_seed(3 + T);
      auto f = torch::TensorOptions().dtype(torch::kDouble);
      const int64_t K = 32, V = 32;
      auto q = torch::randn({T, K}, f), k = torch::randn({T, K}, f) * 0.3, v = torch::randn({T, V}, f);
      auto g = strong ? torch::log_sigmoid(torch::randn({T}, f) * 2 - 1) * 2
                      : torch::log_sigmoid(torch::randn({T}, f) + 2) / 16;
      auto h0 = torch::randn({K, V}, f), dout = torch::randn({T, V}, f), dht = torch::randn({K, V}, f);
      auto exact = kernel_dataflow(q, k, v, g, h0, dout, dht, 0.25, 2);
      auto rounded = kernel_dataflow(q, k, v, g, h0, dout, dht, 0.25, 2, /*round16=*/true);
      EXPECT_LT(attnlab::testing::rel_rms(rounded.dg, exact.dg), 4e-3) << "T " << T << " strong " << strong;
    }
}

#ifdef ATTNLAB_WITH_CUDA
// The segment split (a host function, no GPU needed) on the shapes it was measured at: an H200's 132 SMs,
// B * T = 32768, H = 16 (docs/kernels.md, "linear_chunk"; bench/results/h200-2026-12-02u). A change to the
// rule must come with the measurement that moves it.
TEST(LinearChunkSegments, DefaultsFollowTheMeasurements) {
  namespace kn = attnlab::kernels;
  constexpr int kSms = 132;
  // D = 128 (one block per SM): no split once B * H fills the SMs (T = 2048: 256 heads, 2 waves of 32
  // chunks, where 2 segments of 16 gave 4 waves plus a state pass), whole waves below that.
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(64, 512, 16, kSms, 1), 8);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(16, 2048, 16, kSms, 1), 32);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(8, 4096, 16, kSms, 1), 64);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(4, 8192, 16, kSms, 1), 32);   // 4 segments: 256 blocks
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(1, 32768, 16, kSms, 1), 32);  // 16 segments
  // D = 64 (two blocks per SM): about two blocks per SM over the launch.
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(64, 512, 16, kSms, 2), 8);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(16, 2048, 16, kSms, 2), 16);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(4, 8192, 16, kSms, 2), 26);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(1, 32768, 16, kSms, 2), 31);
  // The binding's whole-wave calls (linear_chunk.cpp). With the backward at D = 64 (two mma.sync walk blocks
  // per SM, state passes 0.1 of a walk wave): no split at T = 2048 (256 heads in 264 slots, where the rule
  // above cuts in two: 512 blocks, two waves of 16 chunks plus the state passes), four segments of 32 at
  // T = 8192 (256 blocks: one wave).
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(16, 2048, 16, kSms, 2, 0.1), 32);
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(4, 8192, 16, kSms, 2, 0.1), 32);
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(1, 32768, 16, kSms, 2, 0.1), 32);
  // The forward alone on wgmma at D = 64 (waves counted at two blocks per SM, 0.35): no split at T = 2048,
  // four segments at T = 8192.
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(16, 2048, 16, kSms, 2, 0.35), 32);
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(4, 8192, 16, kSms, 2, 0.35), 32);
  // With the backward at D = 128 (0.2): the forward's splits (the walks' waves decide).
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(4, 8192, 16, kSms, 1, 0.2), 32);
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(16, 2048, 16, kSms, 1, 0.2), 32);
  EXPECT_EQ(kn::linear_chunk_wave_seg_chunks(1, 32768, 16, kSms, 1, 0.2), 32);
  // Never segments under 4 chunks, and one chunk is one segment.
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(1, 1024, 1, kSms, 1), 4);
  EXPECT_EQ(kn::linear_chunk_default_seg_chunks(1, 64, 1, kSms, 1), 1);
}
#endif

}  // namespace
