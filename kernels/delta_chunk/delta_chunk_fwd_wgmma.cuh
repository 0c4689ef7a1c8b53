// The delta_chunk forward walk on Hopper's warpgroup MMA (sm_90a, K = V = 128, no V-split): an opt-in
// variant of delta_fwd_kernel<128, 128, ..> (same params, same results up to summation order), selected by
// DeltaChunkParams::fwd_wgmma. kOut = true is the one-pass forward (o in the walk), kOut = false the
// two-pass forward's state pass (hs and vn out; delta_out_kernel then forms o).
//
// Why: the mma.sync walk runs one block per SM at 255 registers and is bound by its products' latency and
// by each warp's ldmatrix copies of the B operands (the state, vn); its chunk took ~8 us of SM time at
// Gated DeltaNet D = 128, T = 2048 (ncu: 455-530 us for 8192 chunks). Here each product's operands are
// read once per warpgroup from shared memory, and the chunk's first three products go out as one batch.
//
// Work split, as linear_chunk's wgmma forward (linear_chunk_fwd_wgmma.cuh), two warpgroups: warpgroup g
// computes the value columns 64 g .. + 64 of X = W S, of vn = U - X and of o, and owns the state rows
// 64 g .. + 64 (K) over all 128 value columns; both compute the whole 64 x 64 P = q k^T and each stores
// half of its masked, decayed 16-bit copy. Per chunk:
//   barrier 1 (the stage's copies and the state copy are in) -> save the entering state (hs) from its
//   16-bit copy -> batch 1: X = W S, P = q k^T -> vn = U - X and Vw = vn exp(G_last - G_s) into their
//   tiles, P masked and decayed into its tile -> barrier 2 -> batch 2: O = q S and S = exp(G_last) S +
//   k^T Vw, then O = scale exp(G_t) O + P vn -> o out (through the dead q panel), the new state copy.
// Two stages of q, k, w, u (the state pass: three of k, w, u). One block per SM (202 KB / 211 KB).
#pragma once

#include "kernels/delta_chunk/delta_chunk_kernels.cuh"
#include "kernels/linear_chunk/linear_chunk_wgmma.cuh"

namespace attnlab::kernels::delta_chunk {

template <bool kOut>
struct WgFwdSmem {
  static constexpr int kD = 128;
  static constexpr int kPanel = wgt::kPanel;  // [64][64] 16-bit
  static constexpr int kTile = 2 * kPanel;    // [64][128] as two 64-column panels
  static constexpr int kSPanel = wgt::kSPanel<kD>;
  static constexpr int kStages = kOut ? 2 : 3;
  static constexpr int kQ = 0;  // kOut only
  static constexpr int kK = kOut ? kTile : 0;
  static constexpr int kW = kK + kTile, kU = kW + kTile, kG = kU + kTile;
  static constexpr int kStage = kG + 1024;      // the gates (256 bytes), padded: stages stay 1024-aligned
  static constexpr int kS = kStages * kStage;   // the 16-bit state copy: two [128][64] panels
  static constexpr int kVn = kS + 2 * kSPanel;  // vn [64][128]
  static constexpr int kVw = kVn + kTile;       // vn exp(G_last - G_s) (gated)
  static constexpr int kP = kVw + kTile;        // [64][64] scale (q.k) exp(G_t - G_s), s <= t (kOut)
  static constexpr int kBytes = kP + (kOut ? kPanel : 0);
  static constexpr int kThreads = 256;
  static_assert(kBytes <= 227 * 1024, "one block per SM");
};

template <typename T, bool kGated, bool kOut>
__global__ void __launch_bounds__(256, 1) delta_fwd_wgmma_kernel(const DeltaChunkParams p) {
  using L = WgFwdSmem<kOut>;
  constexpr int kD = 128;
  // Dynamic shared memory only, 1024-aligned as the 128-byte swizzle of wgmma's operands needs.
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;
  const int h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0 = smem_u32(smem);

  auto issue = [&](int c) {
    if (c < nt) {
      const int st = c % L::kStages, t0 = c * kC;
      const uint32_t base = s0 + st * L::kStage;
      const int64_t off = row_offset(b, t0, h, p.T, p.H, kD);
      if constexpr (kOut)
        wgt::load_panels<kD, T>(base + L::kQ, static_cast<const T*>(p.q) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kK, static_cast<const T*>(p.k) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kW, static_cast<const T*>(p.w) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kU, static_cast<const T*>(p.u) + off, row_stride, p.T - t0, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.G, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < L::kStages - 1; ++i) issue(i);

  float S[kD / 2];  // state rows 64 wg .. + 64, all 128 columns (m64n128 accumulator layout)
  wgt::load_state<kD>(S, p.h0 ? p.h0 + bh * kD * kD : nullptr, wg, wr, lane);
  wgt::store_state_panels<kD, T>(smem + L::kS, S, wg, wr, lane);
  T* hs = p.hs ? static_cast<T*>(p.hs) + bh * nt * kD * kD : nullptr;
  const int r0 = 16 * wr + (lane >> 2);  // this thread's token rows r0, r0 + 8 in the m64 outputs

  for (int c = 0; c < nt; ++c) {
    const int st = c % L::kStages, t0 = c * kC, rows = min(kC, p.T - t0);
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    cp_async_wait<L::kStages - 2>();
    wgmma::fence_proxy_async();  // this chunk's copies and the state copy, before the tensor cores read them
    __syncthreads();             // ... and every read of chunk c - 1's stage, vn, Vw and P is done
    issue(c + L::kStages - 1);

    // Batch 1, X first (vn is on the walk's critical path). The first k16 step of each product does not
    // read its accumulators (scale-d 0), so nothing is zero-filled.
    float X[32], P[32];
    wgmma::fence();
    wgt::times_state<kD, T>(X, sst + L::kW, s0 + L::kS, wg);
    wgmma::commit();
    if constexpr (kOut) {
      wgt::scores<kD, T>(P, sst + L::kQ, sst + L::kK);
      wgmma::commit();
    }

    // Under the products: the gates this thread needs. Rows past T take the last real row's G (their q, k, w,
    // u are zero), so every exp stays finite; G_last = G[rows - 1].
    const float* G = reinterpret_cast<const float*>(stage + L::kG);
    float g_last = 0.f, gr[2] = {0.f, 0.f}, orow[2] = {p.scale, p.scale}, vrow[2] = {1.f, 1.f};
    if constexpr (kGated) {
      g_last = G[rows - 1];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        gr[half] = G[min(r0 + 8 * half, rows - 1)];
        orow[half] = p.scale * __expf(gr[half]);
        vrow[half] = __expf(g_last - gr[half]);
      }
    }

    wgmma::wait<kOut ? 1 : 0>();  // X
    // vn = U - X over this warpgroup's value columns (panel wg of U, vn and Vw): each thread reads and
    // writes only its own accumulator elements.
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t off = wg * L::kPanel + panel_off(r0 + 8 * half, wgt::acc_col(j, lane));
        const float2 u = unpack2<T>(*reinterpret_cast<const uint32_t*>(stage + L::kU + off));
        const float a = u.x - X[4 * j + 2 * half], e = u.y - X[4 * j + 2 * half + 1];
        *reinterpret_cast<uint32_t*>(smem + L::kVn + off) = MmaType<T>::pack(a, e);
        if constexpr (kGated)
          *reinterpret_cast<uint32_t*>(smem + L::kVw + off) =
              MmaType<T>::pack(a * vrow[half], e * vrow[half]);
      }

    if constexpr (kOut) {
      wgmma::wait<0>();  // P
      // Both warpgroups hold the whole P (the same bits); each stores every other 8-column block.
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          if ((j & 1) != wg) continue;  // compile-time j, warpgroup-uniform test
          const int r = r0 + 8 * half, col = wgt::acc_col(j, lane);
          float d0 = 1.f, d1 = 1.f;
          if constexpr (kGated) {
            d0 = __expf(gr[half] - G[min(col, rows - 1)]);
            d1 = __expf(gr[half] - G[min(col + 1, rows - 1)]);
          }
          // Selects, not branches: the mask drops even an overflow to inf where col > r.
          const float x0 = col <= r ? P[4 * j + 2 * half] * p.scale * d0 : 0.f;
          const float x1 = col + 1 <= r ? P[4 * j + 2 * half + 1] * p.scale * d1 : 0.f;
          *reinterpret_cast<uint32_t*>(smem + L::kP + panel_off(r, col)) = MmaType<T>::pack(x0, x1);
        }
    }
    // The entering state to hs (from its 16-bit copy, as the backward reads it), once X and P are out of the
    // registers: under them it cost a 40-byte spill.
    if (!kOut || hs) {
#pragma unroll
      for (int pn = 0; pn < 2; ++pn)
        store_tile<kD, 64, L::kThreads, T>(hs + static_cast<int64_t>(c) * kD * kD + 64 * pn, kD,
                                           smem + L::kS + pn * L::kSPanel, kD, tid);
    }
    wgmma::fence_proxy_async();  // vn, Vw, P
    __syncthreads();             // they are whole; every read of the state copy by X and hs is done

    if constexpr (kGated) {
      const float d = __expf(g_last);
#pragma unroll
      for (int i = 0; i < kD / 2; ++i) S[i] *= d;
    }
    // Batch 2: O = q S (the old state copy is rewritten only after this batch) and the update; then, once
    // q S is scaled, O += P vn. Forming q S here rather than in batch 1 keeps at most four accumulators
    // (S, and X and P or O) live: with all five, ptxas spilled.
    float O[32];
    wgmma::fence();
    if constexpr (kOut) {
      wgt::times_state<kD, T>(O, sst + L::kQ, s0 + L::kS, wg);
      wgmma::commit();
    }
    wgt::outer_update<kD, T>(S, sst + L::kK, kGated ? s0 + L::kVw : s0 + L::kVn, wg);
    wgmma::commit();
    const int64_t off = row_offset(b, t0, h, p.T, p.H, kD);
    if constexpr (kOut) {
      wgmma::wait<1>();  // q S
      wgt::scale_acc(O, orow);
      wgmma::fence();
      wgt::scores_times<T>(O, s0 + L::kP, s0 + L::kVn, wg);
      wgmma::commit();
      wgmma::wait<0>();  // O and S
      // o through the warp's own rows of the q panel wg (no warp reads q any more).
      wgt::store_acc_rows<T>(static_cast<T*>(p.o) + off + 64 * wg, row_stride, O,
                             stage + L::kQ + wg * L::kPanel, rows, wr, lane);
    } else {
      // vn out while the update runs (the tile is rewritten only after the next chunk's first barrier).
#pragma unroll
      for (int pn = 0; pn < 2; ++pn)
        store_tile<kC, 64, L::kThreads, T>(static_cast<T*>(p.vn) + off + 64 * pn, row_stride,
                                           smem + L::kVn + pn * L::kPanel, rows, tid);
    }
    if constexpr (!kOut) wgmma::wait<0>();  // S
    wgt::store_state_panels<kD, T>(smem + L::kS, S, wg, wr, lane);
  }
  cp_async_wait<0>();
  if (p.ht) wgt::store_state<kD>(p.ht + bh * kD * kD, S, wg, wr, lane);
}

}  // namespace attnlab::kernels::delta_chunk
