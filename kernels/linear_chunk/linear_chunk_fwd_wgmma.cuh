// The output pass of the linear_chunk forward on Hopper's warpgroup MMA (sm_90a, D = 64, 128): an opt-in
// variant of fwd_kernel<.., kOutput = true> (same params, same results up to summation order), selected by
// LinearChunkParams::fwd_wgmma. Written without a GPU (2026-12-01); kernels/common/harness/wgmma_check
// settles the operand layouts it relies on, and test_gpu_linear_chunk's WgmmaForwardMatchesMmaSync compares
// it with the mma.sync kernel.
//
// Why: the mma.sync forward is bound by shared-memory reads, because each of the 8 warps ldmatrix-loads its
// own copy of every B operand (~430 KB of operand reads per 64-token chunk at D = 128). wgmma reads each
// operand once per warpgroup (~210 KB here).
//
// Work split, 2 warpgroups (256 threads): both compute the chunk's 64 x 64 scores P = q k^T (cheap, and both
// need all of P) and each stores half of its masked, decayed 16-bit copy; warpgroup g computes the output
// columns 64 g .. + 64 (q S then P V, m64n64) and owns the state rows 64 g .. + 64 (K) over all 128 value
// columns (S += k^T Vw, m64n128 with k^T read M-major). Tiles are 64-column panels with the 128-byte swizzle
// (swz<64>): q, k, v, Vw as two [64][64] panels, P as one, the 16-bit state copy as two MN-major [128][64]
// panels (value columns 0-63 and 64-127). At D = 64 (2026-12-02, run y) one warpgroup does all of it (P,
// O m64n64, S m64n64), two stages, three blocks per SM.
//
// Pipeline (2026-12-02, run u; before it, each chunk ran its four products one after another, with three
// barriers, and a chunk took ~3.4 us of SM time at T = 512 against ~1 us of tensor work and ~1.8 us of its
// fair share of HBM): three stages, so a chunk's copies are issued two chunks ahead, right after the barrier
// that retires the stage they reuse; P = q k^T and q S go out as one batch (two commit groups), and the
// gates' in-chunk sums and the decayed V run under them (each warp keeps its own copy of the cumulative
// gates, so no barrier waits on one warp's scan); P V and the state update go out as a second batch, the
// output is stored while the update runs, and the new state copy is written as soon as it is done: every read
// of the old copy (q S) finished before the middle barrier. Two barriers per chunk. The output leaves through
// the warp's rows of the q panel (dead after the middle barrier) as whole 128-byte rows.
#pragma once

#include "kernels/linear_chunk/linear_chunk_wgmma.cuh"

namespace attnlab::kernels::linear_chunk {

// Shared memory at D = 64 n (n warpgroups): stages of q, k, v (n panels each), the 16-bit state, Vw, P, the
// stages' gates, each warp's cumulative gates. D = 128: three stages, one block per SM (203 KB). D = 64: one
// warpgroup per block and two stages (74 KB), so that three blocks share an SM: a block's chunk is a chain of
// dependent products, and at D = 64 each is short, so the SM needs more chains in flight than stages.
template <int kD>
struct WgFwdSmem {
  static constexpr int kStages = kD == 128 ? 3 : 2;
  static constexpr int kPanel = wgt::kPanel, kSPanel = wgt::kSPanel<kD>;
  static constexpr int kTile = (kD / 64) * kPanel;
  static constexpr int kQ = 0, kK = kTile, kV = 2 * kTile;
  static constexpr int kStage = 3 * kTile;
  static constexpr int kS = kStages * kStage;
  static constexpr int kVw = kS + (kD / 64) * kSPanel;
  static constexpr int kP = kVw + kTile;
  static constexpr int kG = kP + kPanel;             // [kStages][kC] floats: each stage's gates
  static constexpr int kGw = kG + kStages * kC * 4;  // each warp's cumulative gates, [warps][kC] floats
  static constexpr int kBytes = kGw + (kD / 64) * 4 * kC * 4;
  static constexpr int kThreads = 2 * kD;
  static constexpr int kBlocksPerSm = kD == 128 ? 1 : 3;
};

template <int kD, typename T, bool kGated>
__global__ void __launch_bounds__(WgFwdSmem<kD>::kThreads, WgFwdSmem<kD>::kBlocksPerSm)
    fwd_wgmma_kernel(const LinearChunkParams p) {
  using L = WgFwdSmem<kD>;
  constexpr int kWG = kD / 64;  // warpgroups
  // Dynamic shared memory only (no static), so its base is the window's, 1024-aligned as the 128-byte
  // swizzle of wgmma's operands needs; its own name, since fwd_kernel declares it 128-aligned.
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;  // warpgroup, warp within it
  const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), n_seg = linear_chunk_segments(p);
  const int c_begin = seg * p.seg_chunks, c_end = min(nt, c_begin + p.seg_chunks);
  const int64_t bh = bh_index(b, h, p.H);
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0 = smem_u32(smem);

  auto issue = [&](int c) {
    if (c < c_end) {
      const int st = (c - c_begin) % L::kStages, t0 = c * kC;
      const uint32_t base = s0 + st * L::kStage;
      const int64_t off = ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      wgt::load_panels<kD, T>(base + L::kQ, static_cast<const T*>(p.q) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kK, static_cast<const T*>(p.k) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kV, static_cast<const T*>(p.v) + off, row_stride, p.T - t0, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + L::kG) + st * kC, p.g, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < L::kStages - 1; ++i) issue(c_begin + i);

  // State rows 64 wg .. + 64, all kD columns, in the m64nD accumulator layout.
  float S[kD / 2];
  wgt::load_state<kD>(
      S, n_seg > 1 ? p.seg_states + (bh * n_seg + seg) * kD * kD : (p.h0 ? p.h0 + bh * kD * kD : nullptr), wg,
      wr, lane);
  wgt::store_state_panels<kD, T>(smem + L::kS, S, wg, wr, lane);
  float seg_g = 0.f;
  float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;  // this warp's cumulative gates

  for (int c = c_begin; c < c_end; ++c) {
    const int st = (c - c_begin) % L::kStages, t0 = c * kC;
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    cp_async_wait<L::kStages - 2>();
    wgmma::fence_proxy_async();  // this chunk's copies and the state copy, before the tensor cores read them
    __syncthreads();             // ... and every read of chunk c - 1's stage is done: it takes the next chunk
    issue(c + L::kStages - 1);

    // P = q k^T over K = 128 (two panels, four k16 steps each) and O[:, 64 wg ..] = q S, one batch.
    // No zero fill: the first k16 step of each product does not read its accumulators (scale-d 0). A zero
    // fill shared one register among P, O and the copies the compiler made of it, and ptxas then waited on
    // the first batch before the second could go out.
    float P[32], O[32];
    wgmma::fence();
    wgt::scores<kD, T>(P, sst + L::kQ, sst + L::kK);
    wgmma::commit();
    wgt::times_state<kD, T>(O, sst + L::kQ, s0 + L::kS, wg);
    wgmma::commit();

    // Under the products: the in-chunk gate sums (this warp's copy), Vw = V exp(G_last - G_s), and every
    // decay this thread's P and O need, in registers: the waits below clobber memory, so a G read after them
    // waited a shared-memory round trip on the critical path (run v's stalls). dec[jj][half][i] is exp(G_r -
    // G_col) for the P element of column block j = 2 jj + wg (the blocks this warpgroup stores); the mask's
    // select drops it (even an overflow to inf) where col > r. orow[half] is scale exp(G_r). At D = 64 (one
    // warpgroup, which stores all 8 blocks) the 32 decays would not fit next to P, O and S under the three
    // blocks per SM that its launch bounds ask; they are taken in the store, while q S is still on the tensor
    // cores.
    constexpr int kDec = kWG == 2 ? 4 : 1;
    float g_last = 0.f;
    float dec[kDec][2][2], gr[2] = {0.f, 0.f}, orow[2] = {p.scale, p.scale};
    if constexpr (kGated) {
      gate_cumsum_warp(reinterpret_cast<const float*>(smem + L::kG) + st * kC, G, lane);
      g_last = G[kC - 1];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        gr[half] = G[16 * wr + (lane >> 2) + 8 * half];
        orow[half] = p.scale * __expf(gr[half]);
        if constexpr (kWG == 2) {
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            const int col = wgt::acc_col(2 * jj + wg, lane);
            dec[jj][half][0] = __expf(gr[half] - G[col]);
            dec[jj][half][1] = __expf(gr[half] - G[col + 1]);
          }
        }
      }
#pragma unroll
      for (int pn = 0; pn < kWG; ++pn)
        scale_tile_rows<64, T, L::kThreads>(smem + L::kVw + pn * L::kPanel, stage + L::kV + pn * L::kPanel,
                                            tid, [&](int r) { return __expf(g_last - G[r]); });
    }

    wgmma::wait<1>();  // P
    // At D = 128 both warpgroups hold the whole P (the same bits); each stores every other 8-column block, so
    // the masked, decayed store (an exp per kept element when gated) is split evenly under the causal mask.
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        if (kWG == 2 && (j & 1) != wg)
          continue;  // compile-time j, warpgroup-uniform test: P stays in registers
        const int r = 16 * wr + (lane >> 2) + 8 * half, col = wgt::acc_col(j, lane);
        // Selects, not branches: the warp stays converged through the store.
        float d0 = 1.f, d1 = 1.f;
        if constexpr (kGated && kWG == 2) d0 = dec[j / 2][half][0], d1 = dec[j / 2][half][1];
        if constexpr (kGated && kWG == 1) d0 = __expf(gr[half] - G[col]), d1 = __expf(gr[half] - G[col + 1]);
        const float x0 = col <= r ? P[4 * j + 2 * half] * p.scale * d0 : 0.f;
        const float x1 = col + 1 <= r ? P[4 * j + 2 * half + 1] * p.scale * d1 : 0.f;
        *reinterpret_cast<uint32_t*>(smem + L::kP + panel_off(r, col)) = MmaType<T>::pack(x0, x1);
      }
    wgmma::wait<0>();  // q S
    wgt::scale_acc(O, orow);
    wgmma::fence_proxy_async();  // P and Vw
    __syncthreads();             // P and Vw are whole; every read of q and of the old state copy is done

    // O += P V, and S = exp(G_last) S + k^T Vw (A = k^T: rows 64 wg .. of K, k's panel wg read M-major; B =
    // Vw, MN-major): a second batch.
    if constexpr (kGated) {
      const float d = __expf(g_last);
#pragma unroll
      for (int i = 0; i < kD / 2; ++i) S[i] *= d;
    }
    wgmma::fence();
    wgt::scores_times<T>(O, s0 + L::kP, sst + L::kV, wg);
    wgmma::commit();
    wgt::outer_update<kD, T>(S, sst + L::kK, kGated ? s0 + L::kVw : sst + L::kV, wg);
    wgmma::commit();
    wgmma::wait<1>();  // O
    // o through the warp's own rows of the q panel wg (no warp reads q any more).
    wgt::store_acc_rows<T>(
        static_cast<T*>(p.o) + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD + 64 * wg, row_stride, O,
        stage + L::kQ + wg * L::kPanel, p.T - t0, wr, lane);
    wgmma::wait<0>();  // S
    wgt::store_state_panels<kD, T>(smem + L::kS, S, wg, wr, lane);
    seg_g += g_last;
  }
  cp_async_wait<0>();

  if (seg == n_seg - 1 && p.ht) wgt::store_state<kD>(p.ht + bh * kD * kD, S, wg, wr, lane);
  // As fwd_kernel: the last segment's gate sum is for the backward's reverse scan.
  if (seg == n_seg - 1 && n_seg > 1 && tid == 0) p.seg_gate[bh * n_seg + seg] = seg_g;
}

}  // namespace attnlab::kernels::linear_chunk
