// The float64 host reference of the delta_wy kernels (params.h), forward and backward, for the torch-free
// harness (harness.cpp) and for tests/test_delta_wy_algorithm.cpp, which checks it against libtorch. Host
// code only, no CUDA.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace attnlab::harness {

// The float64 reference of both kernels, chunk by chunk (rows past T: zeros), from the same 16-bit inputs:
//   G = in-chunk cumsum of g, KD_ts = k_t.k_s e^(G_t - G_s) (t > s), A = diag(beta) KD, M = (I + A)^-1
//   (forward substitution), X = diag(beta e^G) K, Y = diag(beta) V, W = M X, U = M Y; dM = dW X^T + dU Y^T,
//   dA = strictly_lower(-M^T dM M^T), dX = M^T dW, dY = M^T dU, dk = diag(beta e^G) dX + Q K + Q^T K (Q = dA
//   * beta_t e^(G_t - G_s)), dv = diag(beta) dY, dbeta_t = sum_s dA_ts KD_ts + e^G_t k_t.dX_t + v_t.dY_t,
//   dG_t = dG_t + sum_s E_ts - sum_s E_st + beta_t e^G_t k_t.dX_t (E = dA * A), dg = reverse cumsum of dG
// (docs/kernels.md, "delta_wy"). tests/test_delta_wy_algorithm.cpp checks this code against libtorch's
// autograd of the chunk form (a triangular solve).
struct WyInputs {
  int B = 0, T = 0, H = 0, D = 0;
  bool gated = false;
  std::vector<double> k, v, dw, du;  // [B, T, H, D], the 16-bit values as given to the kernels
  std::vector<double> beta, g, dG;   // [B, T, H]
};
struct WyReference {
  std::vector<double> W, U, G, dk, dv, dbeta, dg;  // as the kernels' outputs; G, dg zero without a gate
};

inline WyReference delta_wy_reference(const WyInputs& c) {
  constexpr int kC = 64;  // tokens per chunk
  const size_t rows = size_t(c.B) * c.T * c.H;
  const int nt = (c.T + kC - 1) / kC, D = c.D;
  const bool gated = c.gated;
  const WyInputs& in = c;
  WyReference R;
  for (auto* x : {&R.W, &R.U, &R.dk, &R.dv}) x->assign(rows * D, 0.0);
  for (auto* x : {&R.G, &R.dbeta, &R.dg}) x->assign(rows, 0.0);
  using Mat = std::vector<double>;  // row-major
  auto mat = [](int r, int cols) { return Mat(size_t(r) * cols, 0.0); };
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int n = 0; n < nt; ++n) {
        const int t0 = n * kC, len = std::min(kC, c.T - t0);
        Mat K = mat(kC, D), V = mat(kC, D), dW = mat(kC, D), dU = mat(kC, D);
        std::vector<double> beta(kC, 0.0), G(kC, 0.0), dGin(kC, 0.0), eG(kC, 1.0);
        std::vector<size_t> row(kC);
        double acc = 0;
        for (int i = 0; i < len; ++i) {
          const size_t r = row[i] = (size_t(b) * c.T + t0 + i) * c.H + h;
          acc += gated ? in.g[r] : 0.0;
          G[i] = acc, beta[i] = in.beta[r], dGin[i] = gated ? in.dG[r] : 0.0, eG[i] = std::exp(acc);
          for (int d = 0; d < D; ++d) {
            K[i * D + d] = in.k[r * D + d], V[i * D + d] = in.v[r * D + d];
            dW[i * D + d] = in.dw[r * D + d], dU[i * D + d] = in.du[r * D + d];
          }
        }
        for (int i = len; i < kC; ++i) G[i] = acc, eG[i] = std::exp(acc);  // padded rows repeat the last G
        Mat KD = mat(kC, kC), A = mat(kC, kC), M = mat(kC, kC);
        for (int i = 0; i < kC; ++i)
          for (int j = 0; j < i; ++j) {
            double kk = 0;
            for (int d = 0; d < D; ++d) kk += K[i * D + d] * K[j * D + d];
            KD[i * kC + j] = kk * std::exp(G[i] - G[j]);
            A[i * kC + j] = beta[i] * KD[i * kC + j];
          }
        for (int col = 0; col < kC; ++col)  // (I + A) M = I, column by column
          for (int i = col; i < kC; ++i) {
            double x = i == col ? 1.0 : 0.0;
            for (int j = col; j < i; ++j) x -= A[i * kC + j] * M[j * kC + col];
            M[i * kC + col] = x;
          }
        // products with M (lower) or M^T: P = M Z or M^T Z for Z [C][D]
        auto mul = [&](const Mat& Z, bool transpose) {
          Mat P = mat(kC, D);
          for (int i = 0; i < kC; ++i)
            for (int j = 0; j < kC; ++j) {
              const double m = transpose ? M[j * kC + i] : M[i * kC + j];
              if (m != 0.0)
                for (int d = 0; d < D; ++d) P[i * D + d] += m * Z[j * D + d];
            }
          return P;
        };
        Mat X = mat(kC, D), Y = mat(kC, D);
        for (int i = 0; i < kC; ++i)
          for (int d = 0; d < D; ++d)
            X[i * D + d] = beta[i] * eG[i] * K[i * D + d], Y[i * D + d] = beta[i] * V[i * D + d];
        const Mat W = mul(X, false), U = mul(Y, false), dX = mul(dW, true), dY = mul(dU, true);
        Mat dM = mat(kC, kC), dA = mat(kC, kC), T1 = mat(kC, kC);
        for (int i = 0; i < kC; ++i)
          for (int j = 0; j < kC; ++j) {
            double x = 0;
            for (int d = 0; d < D; ++d) x += dW[i * D + d] * X[j * D + d] + dU[i * D + d] * Y[j * D + d];
            dM[i * kC + j] = x;
          }
        for (int i = 0; i < kC; ++i)  // T1 = M^T dM
          for (int j = 0; j < kC; ++j) {
            double x = 0;
            for (int l = 0; l < kC; ++l) x += M[l * kC + i] * dM[l * kC + j];
            T1[i * kC + j] = x;
          }
        for (int i = 0; i < kC; ++i)  // dA = strictly_lower(-T1 M^T)
          for (int j = 0; j < i; ++j) {
            double x = 0;
            for (int l = 0; l < kC; ++l) x += T1[i * kC + l] * M[j * kC + l];
            dA[i * kC + j] = -x;
          }
        std::vector<double> dG(kC), dbeta(kC);
        Mat dK = mat(kC, D);
        for (int i = 0; i < kC; ++i) {
          double kdx = 0, vdy = 0, sa = 0, se_row = 0, se_col = 0;
          for (int d = 0; d < D; ++d)
            kdx += K[i * D + d] * dX[i * D + d], vdy += V[i * D + d] * dY[i * D + d];
          for (int j = 0; j < kC; ++j) {
            sa += dA[i * kC + j] * KD[i * kC + j];
            se_row += dA[i * kC + j] * A[i * kC + j], se_col += dA[j * kC + i] * A[j * kC + i];
          }
          dbeta[i] = sa + eG[i] * kdx + vdy;
          dG[i] = dGin[i] + se_row - se_col + beta[i] * eG[i] * kdx;
          for (int d = 0; d < D; ++d) dK[i * D + d] = beta[i] * eG[i] * dX[i * D + d];
        }
        for (int i = 0; i < kC; ++i)  // Q K + Q^T K
          for (int j = 0; j < i; ++j) {
            const double q = dA[i * kC + j] * beta[i] * std::exp(G[i] - G[j]);
            for (int d = 0; d < D; ++d) dK[i * D + d] += q * K[j * D + d], dK[j * D + d] += q * K[i * D + d];
          }
        double suffix = 0;
        for (int i = kC - 1; i >= 0; --i) {
          suffix += dG[i];
          if (i >= len) continue;
          const size_t r = row[i];
          R.G[r] = G[i], R.dbeta[r] = dbeta[i], R.dg[r] = suffix;
          for (int d = 0; d < D; ++d) {
            R.W[r * D + d] = W[i * D + d], R.U[r * D + d] = U[i * D + d];
            R.dk[r * D + d] = dK[i * D + d], R.dv[r * D + d] = beta[i] * dY[i * D + d];
          }
        }
      }
  return R;
}

}  // namespace attnlab::harness
