// The delta_wy backward kernel (params.h): from dW, dU, dG to dk (this preparation's share), dv, dbeta, dg,
// per chunk, with G and KD recomputed as in the forward, and M read from the forward's copy
// (DeltaWyParams::m) or, without one, recomputed. The float32 inverse bounds both kernels on shared-memory
// traffic (ncu, run 2026-12-03c: L1 busy 88% in the forward), so reading M back (its lower triangle, 9 KB per
// chunk; DRAM 25% busy in this kernel when it was 16) costs less than its recomputation.
//
// With X = diag(beta e^G) K, Y = diag(beta) V, W = M X, U = M Y, A = diag(beta) KD, D_ts = exp(G_t - G_s):
//   dM = dW X^T + dU Y^T = (dW K^T) diag(beta e^G) + (dU V^T) diag(beta)
//   dA = strictly_lower(-M^T dM M^T)                       (from M = (I + A)^-1)
//   dX = M^T dW,  dY = M^T dU
//   dk = diag(beta e^G) dX + Q K + Q^T K,  Q = dA * beta_t D_ts        dv = diag(beta) dY
//   dbeta_t = sum_s dA_ts KD_ts + e^G_t k_t.dX_t + v_t.dY_t
//   dG_t = dG_t (from the recurrence) + sum_s E_ts - sum_s E_st + beta_t e^G_t k_t.dX_t,  E = dA * A
//   dg = the reverse in-chunk cumulative sum of dG
// The products with float32 operands (M, dM, M^T dM, Q) run as hi + lo 16-bit pairs (delta_wy_common.cuh).
#include "kernels/delta_wy/delta_wy_common.cuh"

namespace attnlab::kernels {
namespace delta_wy {

// Shared memory of the backward (D = 128: 102 KB, two blocks per SM; D = 64: 70 KB). KD's space takes the
// hi/lo tiles of M once the inverse is done; R holds M (float32), then dM, then M^T dM, then Q (hi/lo each).
template <int kD>
struct BwdSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kK = 0, kV = kTile, kdW = 2 * kTile, kdU = 3 * kTile;
  static constexpr int kKD = 4 * kTile;           // float32 [C][kF]; then M hi, M lo
  static constexpr int kR = kKD + kF32Tile;       // float32 M; then hi/lo dM, N1 = M^T dM, Q
  static constexpr int kTmp = kR + kF32Tile;      // the inverse's scratch
  static constexpr int kBeta = kTmp + kTmpBytes;  // [C] floats each:
  static constexpr int kG = kBeta + kC * 4;       //   G
  static constexpr int kdGin = kG + kC * 4;       //   dG from the recurrence
  static constexpr int kdG = kdGin + kC * 4;      //   this preparation's dG (atomics)
  static constexpr int kdB = kdG + kC * 4;        //   dbeta (atomics)
  static constexpr int kEG = kdB + kC * 4;        //   e^G (gated)
  static constexpr int kBytes = kEG + kC * 4;
  static_assert(2 * kH16Tile <= kF32Tile, "the hi/lo tiles must fit in a float32 tile's space");
};

// kInv: the inverse's products when M is recomputed (p.m unset), a template argument so that the saved-M
// path (the default) carries neither variant's registers.
template <int kD, typename T, bool kGated, DeltaWyInverse kInv>
__global__ void __launch_bounds__(kThreads, kD == 64 ? 3 : 2) delta_wy_bwd_kernel(const DeltaWyParams p) {
  using L = BwdSmem<kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int n = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int t0 = n * kC, rows = min(kC, p.T - t0);
  const uint32_t s0 = smem_u32(smem);
  float* beta = reinterpret_cast<float*>(smem + L::kBeta);
  float* G = reinterpret_cast<float*>(smem + L::kG);
  float* dGin = reinterpret_cast<float*>(smem + L::kdGin);
  float* dGs = reinterpret_cast<float*>(smem + L::kdG);
  float* dBs = reinterpret_cast<float*>(smem + L::kdB);
  float* EG = reinterpret_cast<float*>(smem + L::kEG);
  float* KD = reinterpret_cast<float*>(smem + L::kKD);
  float* M = reinterpret_cast<float*>(smem + L::kR);
  unsigned char* mHi = smem + L::kKD;  // M hi / lo after the inverse
  unsigned char* mLo = smem + L::kKD + kH16Tile;
  unsigned char* rHi = smem + L::kR;  // dM, N1, Q hi / lo in turn
  unsigned char* rLo = smem + L::kR + kH16Tile;
  const uint32_t sMhi = s0 + L::kKD, sMlo = sMhi + kH16Tile, sRhi = s0 + L::kR, sRlo = sRhi + kH16Tile;

  // Two copy groups: what KD and M need (K, the gates, the saved M), then what only the products after
  // them read (V, dW, dU: 48 KB at D = 128), which lands while KD, M and its split are formed instead of
  // before (one chunk per block, so nothing else of this block hides the copies' latency).
  load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
  load_gates(beta, p.beta, b, t0, h, p.T, p.H, tid);  // zero past T
  if constexpr (kGated) {
    load_gates(G, p.g, b, t0, h, p.T, p.H, tid);
    if (p.dG) load_gates(dGin, p.dG, b, t0, h, p.T, p.H, tid);
  }
  if (p.m) load_m(s0 + L::kR, saved_m(p.m, b, h, n, p.H, p.T), tid);  // the forward's M
  cp_async_commit();
  load_chunk<kD>(s0 + L::kdW, static_cast<const T*>(p.dw), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kV, static_cast<const T*>(p.v), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kdU, static_cast<const T*>(p.du), b, t0, h, p.T, p.H, tid);
  cp_async_commit();
  if (tid < kC) {
    dGs[tid] = 0.f, dBs[tid] = 0.f;
    if (kGated && !p.dG) dGin[tid] = 0.f;
  }
  cp_async_wait<1>();
  __syncthreads();
  if constexpr (kGated) {
    gate_cumsum(G, warp, lane);
    __syncthreads();
    if (tid < kC) EG[tid] = __expf(G[tid]);  // read after the barrier below kk_decay
  }
  // e^G_r, once per row: the products below read it per element (ex2.approx: relative error ~1e-6, far
  // under the 16-bit rounding of every output).
  auto eg = [&](int r) { return kGated ? EG[r] : 1.f; };

  // ---- KD (also kept in registers, in the layout of the dA piece below), M, M's hi/lo tiles
  const int m0 = 16 * (warp % 4), n0 = 32 * (warp / 4);  // this warp's 16 x 32 piece of C x C tiles
  float kd[1][4][4];
  kk_decay<kD, T, kGated>(kd, KD, s0 + L::kK, G, warp, lane);
  __syncthreads();
  if (!p.m) invert_as(kInv, M, KD, beta, reinterpret_cast<float*>(smem + L::kTmp), tid);
  split_lower<T>(mHi, mLo, M, tid, nullptr);
  cp_async_wait<0>();  // V, dW, dU
  __syncthreads();     // M (float32) is read no more; V, dW, dU are in

  {  // dM = (dW K^T) diag(beta e^G) + (dU V^T) diag(beta), into R
    float a[1][4][4], c[1][4][4];
    zero_acc(a);
    zero_acc(c);
    warp_mma<1, 4, kD / 16, false, false, kD, kD, T>(a, s0 + L::kdW, m0, 0, s0 + L::kK, 0, n0, lane);
    warp_mma<1, 4, kD / 16, false, false, kD, kD, T>(c, s0 + L::kdU, m0, 0, s0 + L::kV, 0, n0, lane);
#pragma unroll
    for (int nj = 0; nj < 4; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + nj * 8 + 2 * (lane & 3) + (e & 1);
        a[0][nj][e] = beta[col] * (a[0][nj][e] * eg(col) + c[0][nj][e]);
      }
    store_split<T>(rHi, rLo, a, m0, n0, lane);
  }
  __syncthreads();
  {  // N1 = M^T dM (M_ts = 0 for t < s: key blocks from the warp's own), into R
    float a[1][4][4];
    zero_acc(a);
    pair_mma<4, true, true, kC, kC, T, true>(a, sMhi, sMlo, m0, sRhi, sRlo, n0, warp % 4, kC / 16 - 1, lane);
    __syncthreads();  // every read of dM is done
    store_split<T>(rHi, rLo, a, m0, n0, lane);
  }
  __syncthreads();
  float q[1][4][4];  // Q = dA * beta_t D_ts
  {                  // dA = -strictly_lower(N1 M^T); the dbeta, dG terms of A; Q
    float a[1][4][4];
    zero_acc(a);
    if (n0 < m0 + 16) {  // pieces above the diagonal are zero
      // N1 M^T: B = M^T is M's [s][u] rows; u <= s < t bounds the key blocks
      const int ks1 = min(warp % 4, 2 * (warp / 4) + 1);
      pair_mma<4, false, false, kC, kC, T, true>(a, sRhi, sRlo, m0, sMhi, sMlo, n0, 0, ks1, lane);
    }
    // beta and G of the thread's rows and columns in registers, and the decay computed for every element
    // and then selected, as in kk_decay (no shared-memory reload and no branch per element)
    const int g = lane >> 2, t = lane & 3;
    const float br[2] = {beta[m0 + g], beta[m0 + g + 8]};
    const float gr[2] = {kGated ? G[m0 + g] : 0.f, kGated ? G[m0 + g + 8] : 0.f};
    float rs[2] = {0.f, 0.f}, cs[4][2] = {};
#pragma unroll
    for (int nj = 0; nj < 4; ++nj) {
      const int c0 = n0 + nj * 8 + 2 * t;
      const float2 gc = kGated ? *reinterpret_cast<const float2*>(G + c0) : make_float2(0.f, 0.f);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int half = e >> 1, r = m0 + g + 8 * half, c = c0 + (e & 1);
        const float dA = c < r ? -a[0][nj][e] : 0.f;
        const float x = dA * kd[0][nj][e];  // kd is 0 where c >= r
        rs[half] += x;
        cs[nj][e & 1] += br[half] * x;
        const float d = kGated ? __expf(gr[half] - ((e & 1) ? gc.y : gc.x)) : 1.f;
        q[0][nj][e] = c < r ? dA * br[half] * d : 0.f;
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      rs[half] += __shfl_xor_sync(0xffffffffu, rs[half], 1);
      rs[half] += __shfl_xor_sync(0xffffffffu, rs[half], 2);
      if ((lane & 3) == 0) {
        const int r = m0 + (lane >> 2) + half * 8;
        atomicAdd(dBs + r, rs[half]);                                  // sum_s dA_ts KD_ts
        if constexpr (kGated) atomicAdd(dGs + r, beta[r] * rs[half]);  // sum_s E_ts
      }
    }
    if constexpr (kGated) {  // - sum_t E_ts, reduced over the 8 row groups of the piece
#pragma unroll
      for (int nj = 0; nj < 4; ++nj)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float s = cs[nj][e];
          s += __shfl_xor_sync(0xffffffffu, s, 4);
          s += __shfl_xor_sync(0xffffffffu, s, 8);
          s += __shfl_xor_sync(0xffffffffu, s, 16);
          if (lane < 4) atomicAdd(dGs + n0 + nj * 8 + 2 * lane + e, -s);
        }
    }
  }
  __syncthreads();  // every read of N1 is done
  store_split<T>(rHi, rLo, q, m0, n0, lane);
  __syncthreads();

  // dk and dv of C x D tiles: row block m takes 4 - m key blocks of M^T (and, for dk, 9 - m in all), so
  // each warp takes two row blocks (paired_row_block), as lower_times does.
  constexpr int kNT = kD / 32;
  const int nt = (kD / 4) * (warp % 4);
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const int64_t off = row_offset(b, t0, h, p.T, p.H, kD);
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
    const int rb = paired_row_block(warp, pass), mt = 16 * rb;
    {  // dk = diag(beta e^G) M^T dW + Q K + Q^T K
      float x[1][kNT][4];
      zero_acc(x);
      pair_mma<kNT, true, true, kC, kD, T>(x, sMhi, sMlo, mt, s0 + L::kdW, 0, nt, rb, kC / 16 - 1, lane);
      const float2 d = row_dot<kD, T>(x, smem + L::kK, mt, nt, lane);  // k_t . dX_t over this warp's columns
      if ((lane & 3) == 0) {
        const float dd[2] = {d.x, d.y};
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = mt + (lane >> 2) + half * 8;
          atomicAdd(dBs + r, eg(r) * dd[half]);
          if constexpr (kGated) atomicAdd(dGs + r, beta[r] * eg(r) * dd[half]);
        }
      }
      scale_rows(x, mt, lane, [&](int r) { return beta[r] * eg(r); });
      pair_mma<kNT, false, true, kC, kD, T>(x, sRhi, sRlo, mt, s0 + L::kK, 0, nt, 0, rb, lane);
      pair_mma<kNT, true, true, kC, kD, T>(x, sRhi, sRlo, mt, s0 + L::kK, 0, nt, rb, kC / 16 - 1, lane);
      store_acc_global<T>(static_cast<T*>(p.dk) + off, row_stride, x, mt, nt, rows, lane);
    }
    {  // dv = diag(beta) M^T dU
      float x[1][kNT][4];
      zero_acc(x);
      pair_mma<kNT, true, true, kC, kD, T>(x, sMhi, sMlo, mt, s0 + L::kdU, 0, nt, rb, kC / 16 - 1, lane);
      const float2 d = row_dot<kD, T>(x, smem + L::kV, mt, nt, lane);  // v_t . dY_t
      if ((lane & 3) == 0) {
        atomicAdd(dBs + mt + (lane >> 2), d.x);
        atomicAdd(dBs + mt + (lane >> 2) + 8, d.y);
      }
      scale_rows(x, mt, lane, [&](int r) { return beta[r]; });
      store_acc_global<T>(static_cast<T*>(p.dv) + off, row_stride, x, mt, nt, rows, lane);
    }
  }
  __syncthreads();  // every atomic into dBs, dGs is done
  store_vec(p.dbeta, dBs, b, t0, h, p.T, p.H, tid);
  if constexpr (kGated) {
    if (warp == 0) {  // dg_t = sum_{s >= t} (dGin + dGs)_s: a suffix scan, two rows per lane
      const float a = dGin[2 * lane] + dGs[2 * lane], c = dGin[2 * lane + 1] + dGs[2 * lane + 1];
      float s = a + c;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float y = __shfl_down_sync(0xffffffffu, s, o);
        if (lane + o < 32) s += y;
      }
      float after = __shfl_down_sync(0xffffffffu, s, 1);  // the lanes above this one
      if (lane == 31) after = 0.f;
      dGs[2 * lane + 1] = after + c;
      dGs[2 * lane] = after + c + a;
    }
    __syncthreads();
    store_vec(p.dg, dGs, b, t0, h, p.T, p.H, tid);
  }
}

}  // namespace delta_wy

cudaError_t launch_delta_wy_bwd(const DeltaWyParams& p) {
  if (!delta_wy_check(p, true).empty()) return cudaErrorInvalidValue;
  using namespace delta_wy;
  constexpr auto kBf16x3 = DeltaWyInverse::kBf16x3, kTf32x3 = DeltaWyInverse::kTf32x3;
  const bool bf16x3 = !p.m && p.inverse == kBf16x3;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] {
    auto* kernel = p.g ? (bf16x3 ? &delta_wy_bwd_kernel<kD, T, true, kBf16x3>
                                 : &delta_wy_bwd_kernel<kD, T, true, kTf32x3>)
                       : (bf16x3 ? &delta_wy_bwd_kernel<kD, T, false, kBf16x3>
                                 : &delta_wy_bwd_kernel<kD, T, false, kTf32x3>);
    return launch_kernel(kernel, dim3(linear_chunk_count(p.T), p.H, p.B), BwdSmem<kD>::kBytes, p);
  });
}

}  // namespace attnlab::kernels
