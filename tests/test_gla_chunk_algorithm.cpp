// The dataflow of the gla_chunk CUDA kernels (kernels/gla_chunk), written out in float64 libtorch ops and
// checked on the CPU against autograd through the op's chunk form (and its naive recurrence): 64-token chunks
// of four 16-token sub-chunks, the per-sub-chunk references that keep every exponent <= 0, the pairwise
// diagonal blocks, the segment split with the scans over segments (per-key decays), the dq walk, the dk / dv
// walk, and dg per key channel from in-chunk sums and the chunk-entering state (kernels/gla_chunk/
// gla_chunk_bwd.cu has the derivation). The GPU test (test_gpu_gla_chunk)
// then only has to show that the kernels compute these formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "attnlab/ops/gla.h"
#include "support/kernel_test.h"

using namespace attnlab;

namespace {

constexpr int64_t kC = 64;    // tokens per chunk
constexpr int64_t kSub = 16;  // tokens per sub-chunk
constexpr int64_t kNSub = kC / kSub;

using torch::Tensor;

struct Grads {
  Tensor o, ht, dq, dk, dv, dg, dh0;
  Tensor
      dg_end_form;  // dg by the first form, in-chunk sums of q dq - k dk plus sum_v S_e dS_e (for contrast)
};

// One chunk's rows, zero-padded to C (zero inputs and gates past T, as the kernels' zero-filled copies), with
// G the in-chunk cumulative gate per key channel.
struct Chunk {
  Tensor q, k, v, dout, G;  // [C, K], [C, K], [C, V], [C, V], [C, K]
  Tensor last;              // [K] G of the chunk's last row
};

// The reference of query sub-chunk i: G at the row before it (the chunk start, 0, for i = 0). For a key s
// before sub-chunk i and a query t inside it, G_t - r <= 0 and r - G_s <= 0.
Tensor ref_before(const Chunk& x, int64_t i) {
  return i == 0 ? torch::zeros_like(x.last) : x.G[kSub * i - 1];
}
// The reference of key sub-chunk j: G at its last row (for the dk walk: queries after it, keys inside it).
Tensor ref_end(const Chunk& x, int64_t j) {
  return x.G[kSub * j + kSub - 1];
}
Tensor sub(const Tensor& x, int64_t i) {
  return x.narrow(0, kSub * i, kSub);
}

// Pairwise decay of a diagonal block: W[t][s][k] = exp(G_tk - G_sk) for s <= t, 0 above. [16, 16, K]
Tensor diag_decay(const Tensor& Gi) {
  auto mask = torch::ones({kSub, kSub}, Gi.options()).tril().unsqueeze(-1);
  return (Gi.unsqueeze(1) - Gi.unsqueeze(0)).exp() * mask;
}

// The forward scores A[t][s] = scale sum_k q_tk k_sk exp(G_tk - G_sk) (s <= t) as the kernels form them:
// sub-chunk blocks below the diagonal as one product of two decayed operands (reference r of the query
// sub-chunk), the diagonal blocks pairwise.
Tensor scores(const Chunk& x, double scale) {
  auto A = torch::zeros({kC, kC}, x.q.options());
  for (int64_t i = 0; i < kNSub; ++i) {
    auto Gi = sub(x.G, i);
    auto Wd = diag_decay(Gi);
    sub(A, i)
        .narrow(1, kSub * i, kSub)
        .copy_((sub(x.q, i).unsqueeze(1) * sub(x.k, i).unsqueeze(0) * Wd).sum(-1));
    if (i == 0) continue;
    auto r = ref_before(x, i);
    auto qa = sub(x.q, i) * (Gi - r).exp();                                         // [16, K]
    auto kb = x.k.narrow(0, 0, kSub * i) * (r - x.G.narrow(0, 0, kSub * i)).exp();  // [16 i, K]
    sub(A, i).narrow(1, 0, kSub * i).copy_(torch::matmul(qa, kb.t()));
  }
  return A * scale;
}

// One (b, h) slice: q, k, g [T, K], v, dout [T, V], h0, dht [K, V]; float64.
// round16: round what the kernels keep in 16 bits for dg's state terms (the chunk-entering states in
// chunk_states, the dS copy that the dk product reads) to bf16, to show that dg does not amplify that
// rounding.
Grads kernel_dataflow(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, const Tensor& h0,
                      const Tensor& dout, const Tensor& dht, double scale, int64_t seg_chunks,
                      bool round16 = false) {
  auto r16 = [&](const Tensor& x) { return round16 ? x.to(torch::kBFloat16).to(x.scalar_type()) : x; };
  const int64_t T = q.size(0), K = q.size(1), V = v.size(1);
  const int64_t nt = (T + kC - 1) / kC, n_seg = (nt + seg_chunks - 1) / seg_chunks;
  auto opt = q.options();
  auto rows = [&](const Tensor& x, int64_t c) {
    auto y = x.narrow(0, c * kC, std::min(kC, T - c * kC));
    if (y.size(0) == kC) return y;
    auto pad_shape = y.sizes().vec();
    pad_shape[0] = kC - y.size(0);
    return torch::cat({y, torch::zeros(pad_shape, opt)}, 0);
  };
  auto chunk = [&](int64_t c) {
    Chunk x{rows(q, c), rows(k, c), rows(v, c), rows(dout, c), rows(g, c).cumsum(0), {}};
    x.last = x.G[kC - 1];
    return x;
  };
  auto seg_range = [&](int64_t s) {
    return std::make_pair(s * seg_chunks, std::min(nt, (s + 1) * seg_chunks));
  };
  // S_out = diag(exp(G_last)) S_in + (k exp(G_last - G_s))^T v
  auto advance = [&](const Chunk& x, const Tensor& S) {
    return x.last.exp().unsqueeze(1) * S + torch::matmul((x.k * (x.last - x.G).exp()).t(), x.v);
  };
  // dS_in = diag(exp(G_last)) dS_out + scale (q exp(G))^T dout
  auto retreat = [&](const Chunk& x, const Tensor& dS) {
    return x.last.exp().unsqueeze(1) * dS + torch::matmul((scale * x.q * x.G.exp()).t(), x.dout);
  };

  // ---- forward: segment contributions from zero (and the segments' gate sums per key), the scan, outputs.
  std::vector<Tensor> contrib(n_seg), entering(n_seg), seg_gate(n_seg);
  for (int64_t s = 0; s < n_seg; ++s) {
    auto S = torch::zeros({K, V}, opt);
    seg_gate[s] = torch::zeros({K}, opt);
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c0; c < c1; ++c) {
      auto x = chunk(c);
      S = advance(x, S);
      seg_gate[s] += x.last;
    }
    contrib[s] = S;
  }
  auto h = h0.clone();
  for (int64_t s = 0; s < n_seg; ++s) {
    entering[s] = h;
    h = seg_gate[s].exp().unsqueeze(1) * h + contrib[s];
  }
  Grads r;
  r.ht = h;
  std::vector<Tensor> os;
  for (int64_t s = 0; s < n_seg; ++s) {
    auto S = entering[s];
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c0; c < c1; ++c) {
      auto x = chunk(c);
      auto A = scores(x, scale);
      os.push_back(torch::matmul(scale * x.q * x.G.exp(), S) + torch::matmul(A, x.v));
      S = advance(x, S);
    }
  }
  r.o = torch::cat(os, 0).narrow(0, 0, T);

  // ---- backward. dq: the forward walk from the saved entering states. For query sub-chunk i with reference
  // r (G before it), one accumulator: X = (dout S^T) scale exp(r); X += dA (k exp(r - G_s)) over the keys of
  // earlier sub-chunks; X *= exp(G_t - r); X += the diagonal block pairwise. dA = scale dout v^T, s <= t.
  auto causal = torch::ones({kC, kC}, opt).tril();
  auto dgw = torch::zeros({nt * kC, K}, opt);  // q dq, then q dq - k dk, per token and key channel
  std::vector<Tensor> dqs(nt), dks(nt), dvs(nt), chunk_in(nt), chunk_end(nt);
  for (int64_t s = 0; s < n_seg; ++s) {
    auto S = entering[s];
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c0; c < c1; ++c) {
      auto x = chunk(c);
      chunk_in[c] = r16(S);
      auto dA = scale * torch::matmul(x.dout, x.v.t()) * causal;  // [t][s]
      auto dq = torch::zeros({kC, K}, opt);
      for (int64_t i = 0; i < kNSub; ++i) {
        auto ri = ref_before(x, i), Gi = sub(x.G, i);
        auto X = torch::matmul(sub(x.dout, i), S.t()) * (scale * ri.exp());
        if (i > 0) {
          auto kb = x.k.narrow(0, 0, kSub * i) * (ri - x.G.narrow(0, 0, kSub * i)).exp();
          X = X + torch::matmul(sub(dA, i).narrow(1, 0, kSub * i), kb);
        }
        X = X * (Gi - ri).exp();
        auto Wd = diag_decay(Gi);  // [t][s][k]
        X = X + (sub(dA, i).narrow(1, kSub * i, kSub).unsqueeze(-1) * sub(x.k, i).unsqueeze(0) * Wd).sum(1);
        sub(dq, i).copy_(X);
      }
      dqs[c] = dq;
      dgw.narrow(0, c * kC, kC).copy_(x.q * dq);
      S = advance(x, S);
      chunk_end[c] = r16(S);
    }
  }
  // dS contributions of each segment from a zero gradient at its end, then the reverse scan.
  std::vector<Tensor> dcontrib(n_seg), dend(n_seg);
  for (int64_t s = 0; s < n_seg; ++s) {
    auto dS = torch::zeros({K, V}, opt);
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c1 - 1; c >= c0; --c) dS = retreat(chunk(c), dS);
    dcontrib[s] = dS;
  }
  auto d = dht.clone();
  for (int64_t s = n_seg - 1; s >= 0; --s) {
    dend[s] = d;
    d = seg_gate[s].exp().unsqueeze(1) * d + dcontrib[s];
  }
  r.dh0 = d;
  // dk, dv: the reverse walk from dS at each segment's end. For key sub-chunk j with reference R (G at its
  // last row): X = (v dS^T) exp(G_last - R); X += dA^T (q exp(G_t - R)) over the queries of later sub-chunks;
  // X *= exp(R - G_s); X += the diagonal block pairwise. dv = A^T dout + (k exp(G_last - G_s)) dS.
  // dg (gla_chunk_bwd.cu derives it): with dk = dk_in + dk_st, dk_st = exp(G_last - G_s) (dS_out v_s) the
  // part through the chunk-end state, dg_t = sum_{t' >= t} (q dq - k dk_in)_t' + sum_{s < t} (k dk_st)_s
  // + exp(G_last) sum_v S_in dS_out, S_in the chunk-entering state of the dq walk; no sum runs over more
  // than one chunk, and no large terms cancel.
  auto dg = torch::zeros({nt * kC, K}, opt), dg_end_form = torch::zeros({nt * kC, K}, opt);
  for (int64_t s = 0; s < n_seg; ++s) {
    auto dS = dend[s];
    auto [c0, c1] = seg_range(s);
    for (int64_t c = c1 - 1; c >= c0; --c) {
      auto x = chunk(c);
      auto A = scores(x, scale);
      auto dA = scale * torch::matmul(x.dout, x.v.t()) * causal;  // [t][s]
      auto dk = torch::zeros({kC, K}, opt), kst = torch::zeros({kC, K}, opt);
      for (int64_t j = 0; j < kNSub; ++j) {
        auto Rj = ref_end(x, j), Gj = sub(x.G, j);
        auto X = torch::matmul(sub(x.v, j), r16(dS).t()) * (x.last - Rj).exp();
        sub(kst, j).copy_(sub(x.k, j) * X * (Rj - Gj).exp());  // k dk_st
        const int64_t t0 = kSub * (j + 1), nq = kC - t0;
        if (nq > 0) {
          auto qa = x.q.narrow(0, t0, nq) * (x.G.narrow(0, t0, nq) - Rj).exp();
          X = X + torch::matmul(dA.narrow(0, t0, nq).narrow(1, kSub * j, kSub).t(), qa);
        }
        X = X * (Rj - Gj).exp();
        auto Wd = diag_decay(Gj);  // [t][s][k]
        X = X + (sub(dA, j).narrow(1, kSub * j, kSub).unsqueeze(-1) * sub(x.q, j).unsqueeze(1) * Wd).sum(0);
        sub(dk, j).copy_(X);
      }
      dks[c] = dk;
      dvs[c] = torch::matmul(A.t(), x.dout) + torch::matmul(x.k * (x.last - x.G).exp(), dS);
      auto dB = dgw.narrow(0, c * kC, kC) - x.k * dk + kst;  // q dq - k dk_in, [C, K]
      auto suffix = dB.flip(0).cumsum(0).flip(0);            // in-chunk reverse cumsum
      auto prefix = kst.cumsum(0) - kst;                     // exclusive
      dg.narrow(0, c * kC, kC).copy_(suffix + prefix + x.last.exp() * (chunk_in[c] * dS).sum(1));
      auto dB_end = dgw.narrow(0, c * kC, kC) - x.k * dk;
      dg_end_form.narrow(0, c * kC, kC).copy_(dB_end.flip(0).cumsum(0).flip(0) + (chunk_end[c] * dS).sum(1));
      dS = retreat(x, dS);
    }
  }
  r.dq = torch::cat(dqs, 0).narrow(0, 0, T);
  r.dk = torch::cat(dks, 0).narrow(0, 0, T);
  r.dv = torch::cat(dvs, 0).narrow(0, 0, T);
  r.dg = dg.narrow(0, 0, T);
  r.dg_end_form = dg_end_form.narrow(0, 0, T);
  return r;
}

// Gates: weak (decays near 1, GLA's normaliser 16), strong (-5 .. -10 per step: a chunk's decay reaches
// e^-640, far past float32's range, so only the references keep the products finite), and mixed (per key
// channel either; the realistic case).
Tensor gates(const std::string& kind, int64_t T, int64_t K, const torch::TensorOptions& f) {
  auto weak = torch::log_sigmoid(torch::randn({1, T, 1, K}, f) + 2) / 16;
  auto strong = -5 - 5 * torch::rand({1, T, 1, K}, f);
  if (kind == "weak") return weak;
  if (kind == "strong") return strong;
  auto pick = torch::rand({1, 1, 1, K}, f) < 0.5;
  return torch::where(pick, strong, weak);
}

TEST(GlaChunkAlgorithm, MatchesAutogradOfTheChunkForm) {
  for (int64_t seg_chunks : {1, 2, 3, 100})
    for (int64_t T : {1, 5, 17, 64, 200, 333})
      for (const char* gate : {"weak", "strong", "mixed"}) {
        if (seg_chunks != 100 && T <= 64) continue;  // one chunk: the split changes nothing
        torch::manual_seed(11 + T + 7 * seg_chunks);
        auto f = torch::TensorOptions().dtype(torch::kDouble);
        const int64_t K = 16, V = 8;  // K != V: a swapped index shows
        const double scale = 0.25;
        auto q = torch::randn({1, T, 1, K}, f), k = torch::randn({1, T, 1, K}, f) * 0.3;
        auto v = torch::randn({1, T, 1, V}, f);
        auto g = gates(gate, T, K, f);
        auto h0 = torch::randn({1, 1, K, V}, f), dout = torch::randn({1, T, 1, V}, f);
        auto dht = torch::randn({1, 1, K, V}, f);

        auto reference = [&](ops::Impl impl) {
          ops::RecurrentArgs a;
          a.q = q.clone().requires_grad_(true), a.k = k.clone().requires_grad_(true);
          a.v = v.clone().requires_grad_(true), a.g = g.clone().requires_grad_(true);
          a.h0 = h0.clone().requires_grad_(true), a.scale = scale, a.output_final_state = true;
          auto out = ops::gla(a, impl);
          ((out.o * dout).sum() + (out.ht * dht).sum()).backward();
          return std::vector<Tensor>{out.o.detach(), out.ht.detach(), a.q.grad(), a.k.grad(),
                                     a.v.grad(),     a.g.grad(),      a.h0.grad()};
        };
        auto sl = [](const Tensor& t) { return t.select(2, 0).select(0, 0); };  // [T, D]
        auto got =
            kernel_dataflow(sl(q), sl(k), sl(v), sl(g), h0[0][0], sl(dout), dht[0][0], scale, seg_chunks);
        std::vector<Tensor> mine{got.o, got.ht, got.dq, got.dk, got.dv, got.dg, got.dh0};
        const char* names[] = {"o", "ht", "dq", "dk", "dv", "dg", "dh0"};
        for (auto impl : {ops::Impl::chunk, ops::Impl::naive}) {
          auto ref = reference(impl);
          for (size_t n = 0; n < mine.size(); ++n) {
            auto want = (n == 1 || n == 6) ? ref[n][0][0] : sl(ref[n]);
            double e = attnlab::testing::rel_rms(mine[n], want);
            // float64 throughout; dg is a reverse sum of differences of large terms (1e-8 as linear_chunk's).
            const double tol = n == 5 ? 1e-8 : 1e-10;
            EXPECT_LT(e, tol) << "T " << T << " seg_chunks " << seg_chunks << " gate " << gate << " impl "
                              << (impl == ops::Impl::chunk ? "chunk" : "naive") << ": " << names[n];
          }
        }
      }
}

// The kernels keep the chunk-entering states and the dS operand of the dk product in 16 bits. Under strong
// gates dg is far smaller than the state terms it is made of (a chunk-end state is the last few tokens, and
// dg is what a token adds beyond them: e^-5 smaller), so a form that subtracts two such terms turns their
// 16-bit rounding into an O(1) relative error of dg: the first form here, sum_v S_e dS_e minus the in-chunk
// sum of k dk, measured 1.2 to 4.1 rel RMS on the H200 (test_gpu_gla_chunk, strong gates with dht,
// 2026-12-02). The form in use adds only terms of the size of the result; with the rounding it stays at
// bf16's level.
TEST(GlaChunkAlgorithm, DgDoesNotAmplifyTheSixteenBitStates) {
  for (int64_t T : {17, 200, 333})
    for (const char* gate : {"weak", "strong", "mixed"}) {
      torch::manual_seed(29 + T);
      auto f = torch::TensorOptions().dtype(torch::kDouble);
      const int64_t K = 32, V = 16;
      const double scale = 0.25;
      auto q = torch::randn({T, K}, f), k = torch::randn({T, K}, f) * 0.3, v = torch::randn({T, V}, f);
      auto g = gates(gate, T, K, f).select(2, 0).select(0, 0);
      auto h0 = torch::randn({K, V}, f), dout = torch::randn({T, V}, f), dht = torch::randn({K, V}, f);
      auto exact = kernel_dataflow(q, k, v, g, h0, dout, dht, scale, 2);
      auto rounded = kernel_dataflow(q, k, v, g, h0, dout, dht, scale, 2, /*round16=*/true);
      const double e = attnlab::testing::rel_rms(rounded.dg, exact.dg);
      EXPECT_LT(e, 4e-3) << "T " << T << " gate " << gate;
      // The first form, same rounding: what the H200 showed (an O(1) error under strong gates).
      const double e_end = attnlab::testing::rel_rms(rounded.dg_end_form, exact.dg);
      if (std::string(gate) == "strong") {
        EXPECT_GT(e_end, 0.1) << "T " << T;
      }
      std::printf("  T %3lld %-6s dg rel RMS with 16-bit states: %.2e (the first form: %.2e)\n",
                  static_cast<long long>(T), gate, e, e_end);
      EXPECT_LT(attnlab::testing::rel_rms(rounded.dk, exact.dk), 4e-3) << "T " << T << " gate " << gate;
    }
}

// The references bound every exponent: with strong gates the forward scores and the backward products stay
// finite even though exp(-G) of the in-chunk cumsum (the textbook factorisation) overflows float32.
TEST(GlaChunkAlgorithm, ExponentsStayNonPositive) {
  torch::manual_seed(3);
  auto f = torch::TensorOptions().dtype(torch::kDouble);
  auto g = -5 - 5 * torch::rand({kC, 8}, f);
  Chunk x{{}, {}, {}, {}, g.cumsum(0), {}};
  x.last = x.G[kC - 1];
  EXPECT_GT((-x.G).max().item<double>(), 88.0);  // exp(-G) would overflow float32
  for (int64_t i = 1; i < kNSub; ++i) {
    auto r = ref_before(x, i);
    EXPECT_LE((sub(x.G, i) - r).max().item<double>(), 0.0);
    EXPECT_LE((r - x.G.narrow(0, 0, kSub * i)).max().item<double>(), 0.0);
    EXPECT_LE(r.max().item<double>(), 0.0);
  }
  for (int64_t j = 0; j < kNSub; ++j) {
    auto R = ref_end(x, j);
    EXPECT_LE((x.last - R).max().item<double>(), 0.0);
    EXPECT_LE((R - sub(x.G, j)).max().item<double>(), 0.0);
    if (j + 1 < kNSub) {
      EXPECT_LE((x.G.narrow(0, kSub * (j + 1), kC - kSub * (j + 1)) - R).max().item<double>(), 0.0);
    }
  }
}

}  // namespace
