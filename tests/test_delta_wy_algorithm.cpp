// The dataflow of the delta_wy CUDA kernels (kernels/delta_wy: the WY / UT-transform preparation of the
// DeltaNet / Gated DeltaNet chunk algorithm), written out in float64 libtorch ops and checked on the CPU: the
// blockwise inverse of (I + A), the forward (W, U, G) and the hand-derived backward (dk, dv, dbeta, dg from
// dW, dU, dG) against the chunk form's math (a triangular solve) and its autograd. The kernels themselves are
// checked against the libtorch form on the GPU (test_gpu_delta_wy).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/delta_wy/harness/reference.h"
#include "support/kernel_test.h"

namespace {

constexpr int64_t kC = 64;  // tokens per chunk
constexpr int64_t kB = 16;  // diagonal block of the inverse

// [B, T, H, D] (or [B, T, H]) -> [B, H, N, C, D] (or [B, H, N, C]), zero past T.
torch::Tensor to_chunks(const torch::Tensor& x) {
  const int64_t T = x.size(1), N = (T + kC - 1) / kC, pad = N * kC - T;
  auto y = x.transpose(1, 2);
  if (x.dim() == 4) {
    y = torch::constant_pad_nd(y, {0, 0, 0, pad});
    return y.reshape({x.size(0), x.size(2), N, kC, x.size(3)});
  }
  y = torch::constant_pad_nd(y, {0, pad});
  return y.reshape({x.size(0), x.size(2), N, kC});
}

// The inverse: [B, H, N, C, D] (or [.., C]) -> [B, T, H, D] (or [B, T, H]).
torch::Tensor from_chunks(const torch::Tensor& x, int64_t T) {
  const bool has_d = x.dim() == 5;
  auto y = has_d ? x.reshape({x.size(0), x.size(1), -1, x.size(4)}) : x.reshape({x.size(0), x.size(1), -1});
  return y.narrow(2, 0, T).transpose(1, 2).contiguous();
}

torch::Tensor blk(const torch::Tensor& x, int64_t i, int64_t j) {
  return x.narrow(-2, kB * i, kB).narrow(-1, kB * j, kB);
}

// M = (I + A)^-1 for strictly lower A [.., 64, 64], as the kernel computes it: the four 16 x 16 diagonal
// blocks by forward substitution (one column per thread there), then the blocks below the diagonal one
// sub-diagonal at a time: M_ij = -M_ii (sum_{j <= l < i} A_il M_lj).
torch::Tensor blockwise_inverse(const torch::Tensor& A) {
  auto M = torch::zeros_like(A);
  for (int64_t d = 0; d < kC / kB; ++d) {
    auto Ad = blk(A, d, d);
    std::vector<torch::Tensor> rows;
    for (int64_t r = 0; r < kB; ++r) {
      auto x = torch::zeros_like(Ad.select(-2, 0));  // [.., 16]: row r of the block's inverse
      x.select(-1, r).fill_(1.0);
      for (int64_t j = 0; j < r; ++j) x = x - Ad.select(-2, r).select(-1, j).unsqueeze(-1) * rows[j];
      rows.push_back(x);
    }
    blk(M, d, d).copy_(torch::stack(rows, -2));
  }
  for (int64_t diag = 1; diag < kC / kB; ++diag)
    for (int64_t j = 0; j + diag < kC / kB; ++j) {
      const int64_t i = j + diag;
      auto Tm = torch::zeros_like(blk(A, 0, 0));
      for (int64_t l = j; l < i; ++l) Tm = Tm + torch::matmul(blk(A, i, l), blk(M, l, j));
      blk(M, i, j).copy_(-torch::matmul(blk(M, i, i), Tm));
    }
  return M;
}

struct Chunks {
  torch::Tensor k, v, beta, G;  // [B, H, N, C, K], [.., V], [B, H, N, C], [B, H, N, C] (zeros without gate)
  torch::Tensor KD;             // [B, H, N, C, C] strictly_lower(K K^T * exp(G_t - G_s))
  torch::Tensor M;              // [B, H, N, C, C] (I + diag(beta) KD)^-1
};

// The shared part of both kernels: in-chunk gate cumsum, K K^T * D (masked before exp), the inverse.
Chunks prepare(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& beta,
               const torch::Tensor& g) {
  Chunks c;
  c.k = to_chunks(k), c.v = to_chunks(v), c.beta = to_chunks(beta);
  c.G = g.defined() ? to_chunks(g).cumsum(-1) : torch::zeros_like(c.beta);
  auto lower = torch::ones({kC, kC}, k.options().dtype(torch::kBool)).tril(-1);
  auto diff = (c.G.unsqueeze(-1) - c.G.unsqueeze(-2)).masked_fill(lower.logical_not(), 0.0);
  c.KD = torch::matmul(c.k, c.k.transpose(-1, -2)) * diff.exp() * lower;
  c.M = blockwise_inverse(c.beta.unsqueeze(-1) * c.KD);
  return c;
}

struct Fwd {
  torch::Tensor W, U, G;  // [B, T, H, K], [B, T, H, V], [B, T, H]
};

// The forward kernel: W = (M diag(beta exp(G))) K, U = (M diag(beta)) V (the column scalings go into M, so
// the 16-bit K and V are multiplied as given).
Fwd kernel_forward(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& beta,
                   const torch::Tensor& g) {
  auto c = prepare(k, v, beta, g);
  const int64_t T = k.size(1);
  auto Mw = c.M * (c.beta * c.G.exp()).unsqueeze(-2), Mu = c.M * c.beta.unsqueeze(-2);
  return {from_chunks(torch::matmul(Mw, c.k), T), from_chunks(torch::matmul(Mu, c.v), T),
          from_chunks(c.G, T)};
}

struct Bwd {
  torch::Tensor dk, dv, dbeta, dg;
};

// The backward kernel. With X = diag(beta e^G) K, Y = diag(beta) V, W = M X, U = M Y, A = diag(beta) KD:
//   dM = dW X^T + dU Y^T = (dW K^T) diag(beta e^G) + (dU V^T) diag(beta)
//   dA = strictly_lower(-M^T dM M^T)                       (M = (I + A)^-1)
//   dbeta_t = sum_s dA_ts KD_ts + e^G_t k_t.dX_t + v_t.dY_t,  dX = M^T dW, dY = M^T dU
//   dG_t   += sum_s E_ts - sum_s E_st (E = dA * A) + beta_t e^G_t k_t.dX_t
//   dk = diag(beta e^G) dX + Q K + Q^T K (Q = dA * beta_t D_ts),  dv = diag(beta) dY
//   dg = reverse in-chunk cumsum of dG
Bwd kernel_backward(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& beta,
                    const torch::Tensor& g, const torch::Tensor& dW, const torch::Tensor& dU,
                    const torch::Tensor& dG) {
  auto c = prepare(k, v, beta, g);
  const int64_t T = k.size(1);
  auto dWc = to_chunks(dW), dUc = to_chunks(dU);
  auto eG = c.G.exp(), bcol = c.beta.unsqueeze(-2);
  auto dM = torch::matmul(dWc, c.k.transpose(-1, -2)) * (bcol * eG.unsqueeze(-2)) +
            torch::matmul(dUc, c.v.transpose(-1, -2)) * bcol;
  auto lower = torch::ones({kC, kC}, k.options().dtype(torch::kBool)).tril(-1);
  auto N1 = torch::matmul(c.M.transpose(-1, -2), dM);
  auto dA = -torch::matmul(N1, c.M.transpose(-1, -2)) * lower;
  auto A = c.beta.unsqueeze(-1) * c.KD;
  auto E = dA * A;
  auto D = (c.G.unsqueeze(-1) - c.G.unsqueeze(-2)).masked_fill(lower.logical_not(), 0.0).exp() * lower;
  auto Q = dA * c.beta.unsqueeze(-1) * D;
  auto dX = torch::matmul(c.M.transpose(-1, -2), dWc), dY = torch::matmul(c.M.transpose(-1, -2), dUc);
  auto kdX = (c.k * dX).sum(-1);  // [B, H, N, C]
  auto dk =
      (c.beta * eG).unsqueeze(-1) * dX + torch::matmul(Q, c.k) + torch::matmul(Q.transpose(-1, -2), c.k);
  auto dv = c.beta.unsqueeze(-1) * dY;
  auto dbeta = (dA * c.KD).sum(-1) + eG * kdX + (c.v * dY).sum(-1);
  Bwd out{from_chunks(dk, T), from_chunks(dv, T), from_chunks(dbeta, T), {}};
  if (g.defined()) {
    auto dGt = to_chunks(dG) + E.sum(-1) - E.sum(-2) + c.beta * eG * kdX;  // [B, H, N, C]
    auto dg = dGt.flip(-1).cumsum(-1).flip(-1);
    out.dg = from_chunks(dg, T);
  }
  return out;
}

// The chunk form's preparation (as ops::delta_rule's chunked()): float64 gate cumsum, decay masked with -inf
// before exp, a unitriangular solve; differentiated by autograd.
Fwd reference(const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& beta,
              const torch::Tensor& g) {
  auto kc = to_chunks(k), vc = to_chunks(v), bc = to_chunks(beta);
  const int64_t T = k.size(1);
  auto A = torch::matmul(kc * bc.unsqueeze(-1), kc.transpose(-1, -2));
  auto kw = kc * bc.unsqueeze(-1);
  torch::Tensor G = torch::zeros_like(bc);
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
          from_chunks(G, T)};
}

struct Case {
  int64_t T;
  std::string gate;  // none | weak | strong
};

class DeltaWyAlgorithm : public ::testing::TestWithParam<Case> {};

TEST_P(DeltaWyAlgorithm, MatchesSolveAndAutograd) {
  const Case c = GetParam();
  torch::manual_seed(5 + c.T);
  auto f = torch::TensorOptions().dtype(torch::kDouble);
  const int64_t B = 2, H = 2, K = 12, V = 10;
  // Unit-norm keys and beta in (0, 1), as the DeltaNet layers feed the op; log-sigmoid gates, the strong ones
  // around -5 per step (|G| reaches ~300 within a chunk).
  auto k = torch::randn({B, c.T, H, K}, f);
  k = (k / k.norm(2, -1, true)).requires_grad_(true);
  auto v = torch::randn({B, c.T, H, V}, f).requires_grad_(true);
  auto beta = torch::sigmoid(torch::randn({B, c.T, H}, f)).requires_grad_(true);
  torch::Tensor g;
  if (c.gate == "weak") g = (torch::log_sigmoid(torch::randn({B, c.T, H}, f) + 2) / 16).requires_grad_(true);
  if (c.gate == "strong") g = (torch::log_sigmoid(torch::randn({B, c.T, H}, f) - 5)).requires_grad_(true);
  auto dW = torch::randn({B, c.T, H, K}, f), dU = torch::randn({B, c.T, H, V}, f);
  auto dG = torch::randn({B, c.T, H}, f);

  auto ref = reference(k, v, beta, g);
  auto loss = (ref.W * dW).sum() + (ref.U * dU).sum();
  if (g.defined()) loss = loss + (ref.G * dG).sum();
  loss.backward();

  torch::NoGradGuard no_grad;
  auto fwd = kernel_forward(k, v, beta, g);
  auto bwd = kernel_backward(k, v, beta, g, dW, dU, dG);
  using attnlab::testing::rel_rms;
  // float64 throughout: both sides agree to rounding (~1e-15 times the growth of the inverse); 1e-10 leaves
  // room for that growth and catches any wrong term (a missing one is O(1)).
  EXPECT_LT(rel_rms(fwd.W, ref.W), 1e-10);
  EXPECT_LT(rel_rms(fwd.U, ref.U), 1e-10);
  if (g.defined()) {
    EXPECT_LT(rel_rms(fwd.G, ref.G), 1e-12);
  }
  EXPECT_LT(rel_rms(bwd.dk, k.grad()), 1e-10);
  EXPECT_LT(rel_rms(bwd.dv, v.grad()), 1e-10);
  EXPECT_LT(rel_rms(bwd.dbeta, beta.grad()), 1e-10);
  if (g.defined()) {
    EXPECT_LT(rel_rms(bwd.dg, g.grad()), 1e-10);
  }
  for (const auto* t : {&fwd.W, &fwd.U, &bwd.dk, &bwd.dv, &bwd.dbeta})
    EXPECT_FALSE(torch::isnan(*t).any().item<bool>());
  if (g.defined()) {
    EXPECT_FALSE(torch::isnan(bwd.dg).any().item<bool>());
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int64_t T : {1, 17, 64, 100, 200})
    for (const char* gate : {"none", "weak", "strong"}) out.push_back({T, gate});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, DeltaWyAlgorithm, ::testing::ValuesIn(cases()), [](const auto& info) {
  return "B2_T" + std::to_string(info.param.T) + "_H2_K12_V10_" + info.param.gate;
});

// The torch-free harness's float64 reference (kernels/delta_wy/harness/reference.h, plain loops) against the
// triangular solve above and its autograd: W, U, G and every gradient, on the same cases.
TEST(DeltaWyAlgorithm, HarnessReferenceMatchesSolveAndAutograd) {
  auto f = torch::TensorOptions().dtype(torch::kDouble);
  auto values = [](const torch::Tensor& t) {
    auto c = t.contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  for (const Case& c : cases()) {
    torch::manual_seed(9 + c.T);
    const int64_t B = 2, H = 2, D = 12;
    auto k = torch::randn({B, c.T, H, D}, f);
    k = (k / k.norm(2, -1, true)).requires_grad_(true);
    auto v = torch::randn({B, c.T, H, D}, f).requires_grad_(true);
    auto beta = torch::sigmoid(torch::randn({B, c.T, H}, f)).requires_grad_(true);
    torch::Tensor g = torch::zeros({B, c.T, H}, f);
    if (c.gate == "weak") g = torch::log_sigmoid(torch::randn({B, c.T, H}, f) + 2) / 16;
    if (c.gate == "strong") g = torch::log_sigmoid(torch::randn({B, c.T, H}, f) - 5);
    const bool gated = c.gate != "none";
    if (gated) g.requires_grad_(true);
    auto dW = torch::randn({B, c.T, H, D}, f), dU = torch::randn({B, c.T, H, D}, f);
    auto dG = torch::randn({B, c.T, H}, f);
    auto ref = reference(k, v, beta, gated ? g : torch::Tensor());
    auto loss = (ref.W * dW).sum() + (ref.U * dU).sum();
    if (gated) loss = loss + (ref.G * dG).sum();
    loss.backward();

    attnlab::harness::WyInputs in;
    in.B = B, in.T = static_cast<int>(c.T), in.H = H, in.D = D, in.gated = gated;
    in.k = values(k), in.v = values(v), in.dw = values(dW), in.du = values(dU);
    in.beta = values(beta), in.g = values(g), in.dG = values(dG);
    const auto got = attnlab::harness::delta_wy_reference(in);
    auto as = [&](const std::vector<double>& x, const torch::Tensor& like) {
      return torch::tensor(x, f).reshape(like.sizes());
    };
    using attnlab::testing::rel_rms;
    const std::string what = "T " + std::to_string(c.T) + " gate " + c.gate;
    EXPECT_LT(rel_rms(as(got.W, ref.W), ref.W), 1e-12) << what;
    EXPECT_LT(rel_rms(as(got.U, ref.U), ref.U), 1e-12) << what;
    EXPECT_LT(rel_rms(as(got.dk, k.grad()), k.grad()), 1e-12) << what;
    EXPECT_LT(rel_rms(as(got.dv, v.grad()), v.grad()), 1e-12) << what;
    EXPECT_LT(rel_rms(as(got.dbeta, beta.grad()), beta.grad()), 1e-12) << what;
    if (gated) {
      EXPECT_LT(rel_rms(as(got.G, ref.G), ref.G), 1e-12) << what;
      EXPECT_LT(rel_rms(as(got.dg, g.grad()), g.grad()), 1e-12) << what;
    }
  }
}

// The blockwise inverse alone against the dense one, on a matrix with large entries (beta = 1, correlated
// keys), where the growth of the inverse is the largest the op sees.
TEST(DeltaWyAlgorithm, BlockwiseInverseMatchesDense) {
  torch::manual_seed(3);
  auto f = torch::TensorOptions().dtype(torch::kDouble);
  auto k = torch::randn({kC, 8}, f) + 2.0;
  k = k / k.norm(2, -1, true);
  auto A = torch::matmul(k, k.t()).tril(-1);
  auto M = blockwise_inverse(A);
  auto I = torch::eye(kC, f);
  EXPECT_LT(attnlab::testing::rel_rms(torch::matmul(I + A, M), I), 1e-12);
}

// ---- The inverse with its block products as bf16 hi/lo pairs (ATTNLAB_DELTA_WY_INVERSE=bf16x3)

// x = hi + lo, hi = bf16(x), lo = bf16(x - hi), as the kernel's split2<bf16> (round to nearest even).
std::pair<torch::Tensor, torch::Tensor> split_bf16(const torch::Tensor& x) {
  auto hi = x.to(torch::kBFloat16).to(torch::kDouble);
  return {hi, (x - hi).to(torch::kBFloat16).to(torch::kDouble)};
}

// X Y as the kernel's mma_hilo (hi hi' + hi lo' + lo hi'); round = false: the exact product.
torch::Tensor hilo_product(const torch::Tensor& X, const torch::Tensor& Y, bool round) {
  if (!round) return torch::matmul(X, Y);
  auto [xh, xl] = split_bf16(X);
  auto [yh, yl] = split_bf16(Y);
  return torch::matmul(xh, yh) + torch::matmul(xh, yl) + torch::matmul(xl, yh);
}

// M = (I + A)^-1 for one strictly lower 64 x 64 A, as invert_bf16x3 computes it: the diagonal blocks by
// forward substitution, then M_ij = -(M_jj^T A_ij^T M_ii^T)^T for (i, j) = (1, 0), (3, 2), then
// M[32:, :32] = -(M_L^T A21^T M_R^T)^T, each product over the k blocks the kernel reads (M_L^T's row block rb
// from k block rb, M_R^T's column block cb up to k block cb). M starts as NaN outside the blocks that are
// written, so a read of any other block shows.
torch::Tensor bf16x3_inverse(const torch::Tensor& A, bool round) {
  auto M = torch::full_like(A, std::numeric_limits<double>::quiet_NaN());
  auto dense = blockwise_inverse(A);  // its diagonal blocks: the same forward substitution
  for (int64_t d = 0; d < kC / kB; ++d) blk(M, d, d).copy_(blk(dense, d, d));
  for (int64_t i : {1, 3}) {
    const int64_t j = i - 1;
    auto inner = hilo_product(blk(M, j, j).t(), blk(A, i, j).t(), round);
    blk(M, i, j).copy_(-hilo_product(inner, blk(M, i, i).t(), round).t());
  }
  auto sub = [](const torch::Tensor& x, int64_t r, int64_t c, int64_t rows, int64_t cols) {
    return x.narrow(0, kB * r, kB * rows).narrow(1, kB * c, kB * cols);
  };
  auto out = torch::empty({2 * kB, 2 * kB}, A.options());  // X^T, X = M[32:, :32]
  for (int64_t rb = 0; rb < 2; ++rb) {
    // row block rb of M_L^T A21^T: M_L^T[rb, kb] = M[kb, rb]^T for kb >= rb
    auto inner = torch::zeros({kB, 2 * kB}, A.options());
    for (int64_t kb = rb; kb < 2; ++kb)
      inner += hilo_product(sub(M, kb, rb, 1, 1).t(), sub(A, 2 + 0, kb, 2, 1).t(), round);
    for (int64_t cb = 0; cb < 2; ++cb) {
      // M_R^T[kb, cb] = M[2 + cb, 2 + kb]^T for kb <= cb; the kernel splits the inner product once, whole
      auto x = torch::zeros({kB, kB}, A.options());
      for (int64_t kb = 0; kb <= cb; ++kb)
        x += hilo_product(inner.narrow(1, kB * kb, kB), sub(M, 2 + cb, 2 + kb, 1, 1).t(), round);
      sub(out, rb, cb, 1, 1).copy_(-x);
    }
  }
  sub(M, 2, 0, 2, 2).copy_(out.t());
  return M.tril();  // the unwritten blocks above the diagonal as zeros; a NaN read elsewhere stays
}

// Exact arithmetic: the kernel's blocks and k ranges give the dense inverse, and no unwritten block is read.
// bf16 hi/lo: within 2^-14 of it (relative to the largest entry) on the hardest matrix of the blockwise test
// (beta = 1, correlated keys) and on gated chunks, against 2^-9 for the 16-bit rounding of W and U.
TEST(DeltaWyAlgorithm, Bf16x3InverseIsAccurate) {
  auto f = torch::TensorOptions().dtype(torch::kDouble);
  auto I = torch::eye(kC, f);
  std::vector<torch::Tensor> mats;
  torch::manual_seed(3);
  {
    auto k = torch::randn({kC, 8}, f) + 2.0;
    k = k / k.norm(2, -1, true);
    mats.push_back(torch::matmul(k, k.t()).tril(-1));
  }
  for (double strength : {0.0, 0.1, 2.0}) {  // random unit keys of D = 64, beta in (0, 1), gates
    auto k = torch::randn({kC, 64}, f);
    k = k / k.norm(2, -1, true);
    auto G = (torch::log_sigmoid(torch::randn({kC}, f)) * strength).cumsum(0);
    auto decay = (G.unsqueeze(1) - G.unsqueeze(0)).tril(-1).exp();
    auto beta = torch::sigmoid(torch::randn({kC, 1}, f));
    mats.push_back((beta * torch::matmul(k, k.t()) * decay).tril(-1));
  }
  for (size_t i = 0; i < mats.size(); ++i) {
    const auto& A = mats[i];
    auto exact = bf16x3_inverse(A, false), rounded = bf16x3_inverse(A, true);
    EXPECT_FALSE(torch::isnan(exact).any().item<bool>()) << "matrix " << i << ": an unwritten block was read";
    EXPECT_LT(attnlab::testing::rel_rms(torch::matmul(I + A, exact), I), 1e-12) << "matrix " << i;
    const double scale = exact.abs().max().item<double>();
    const double err = (rounded - exact).abs().max().item<double>() / scale;
    std::printf("  matrix %zu: largest |M| %.3g, bf16x3 error %.2e of it\n", i, scale, err);
    EXPECT_LT(err, std::ldexp(1.0, -14)) << "matrix " << i;
    EXPECT_GT(err, 0.0) << "matrix " << i << ": the rounding model did nothing";
  }
}

}  // namespace
