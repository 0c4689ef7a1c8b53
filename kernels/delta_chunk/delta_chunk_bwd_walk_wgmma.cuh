// The two-pass backward's walk on Hopper's warpgroup MMA (sm_90a, K = V = 128, V-split 2): an opt-in
// variant of delta_bwd_walk_kernel<128, 64, .., kLocalIn = false> (same params, same results up to
// summation order and one rounding: see Dg below), selected by DeltaChunkParams::bwd_walk_wgmma. The walk's
// recurrence is stated at the two-pass backward in delta_chunk_kernels.cuh; this file only changes how it
// is computed.
//
// Why: at 64 heads the mma.sync walk (128 blocks of 64 value columns) takes ~3 us per chunk, bound by its
// products' latency and each warp's ldmatrix copies of the B operands (ncu, run 2026-12-04a, T = 8192: 398
// us without a gate, 587 gated, the largest kernel but one of the backward), as its forward twin did
// before the half-V wgmma walk (delta_chunk_fwd_wgmma.cuh, 440 -> 319 us).
//
// Block (x, h, b) owns the value columns 64 x .. + 64 of dS ([128][64] in registers: warpgroup wg its rows
// 64 wg .. + 64, an m64n64 accumulator), walking the chunks from the last. The warpgroups split by product,
// as in the half-V forward walk:
//   barrier 1 (the chunk's stage and the 16-bit dS copy: the dS entering from the chunk after) -> dS to
//   dhs -> batch 1: warpgroup 0 Y = K dS (m64n64k128), warpgroup 1 P = q k^T (m64n64k128); everyone
//   Dg = scale exp(G_t) do -> warpgroup 1 P masked
//   and decayed into its tile, warpgroup 0 Y scaled by w_s = exp(G_last - G_s) -> barrier 2 ->
//   batch 2: warpgroup 0 Y += P^T do (P's tile read M-major: P^T as A); both dS = exp(G_last) dS + q^T Dg
//   over their rows -> warpgroup 0 dvn = Y to du and -dvn into its tile -> barrier 3 -> batch 3: both
//   dS += W^T (-dvn) over their rows -> the new 16-bit dS copy.
// Run 2026-12-04d (bench/results/h200-2026-12-04d, 64 heads, T = 8192): forward + backward 2.067 -> 2.010 ms
// without a gate; gated 2.611 -> 2.627 (no gain: warpgroup 1 forms P's exponentials, and every thread
// read S_in's slice for exp(G_last) <dS, S_in>, before barrier 2), so the default takes it without a gate
// only. That dot has since moved to the second kernel (delta_bwd_out_kernel), and with it S_in's loads.
//
// DeltaChunkParams::split_scores: P = q k^T by columns (m64n32) in both warpgroups, so that warpgroup 0
// takes half of its product and of its exponentials beside Y; opt-in until measured.
//
// Dg: q^T Dg = Qg^T do with Qg = scale exp(G_t) q (the mma.sync walk's form), but the 16-bit rounding falls
// on the 64 x 64 Dg rather than the 64 x 128 Qg (half the scaling work). Two stages of q, k, w (whole) and
// the block's do; 154 KB, one block per SM.
#pragma once

#include "kernels/delta_chunk/delta_chunk_fwd_wgmma.cuh"

namespace attnlab::kernels::delta_chunk {

template <bool kGated>
struct WgBwdWalkSmem {
  static constexpr int kD = 128;
  static constexpr int kPanel = wgt::kPanel;  // [64][64] 16-bit
  static constexpr int kTile = 2 * kPanel;    // [64][128] as two 64-column panels
  static constexpr int kSlice = kD * 64 * 2;  // [128][64] 16-bit: a state slice
  static constexpr int kQ = 0, kK = kTile, kW = 2 * kTile, kDo = 3 * kTile;
  static constexpr int kG = kDo + kPanel;    // [C] floats
  static constexpr int kStage = kG + 1024;   // stages stay 1024-aligned
  static constexpr int kdS = 2 * kStage;     // the 16-bit dS copy, one [128][64] panel
  static constexpr int kP = kdS + kSlice;    // [64 t][64 s] masked, decayed scores
  static constexpr int kDg = kP + kPanel;    // [64][64] scale exp(G_t) do
  static constexpr int kdVn = kDg + kPanel;  // [64][64] -dvn
  static constexpr int kBytes = kdVn + kPanel;
  static constexpr int kThreads = 256;
  static_assert(kBytes <= 227 * 1024, "one block per SM");
};

template <typename T, bool kGated>
__global__ void __launch_bounds__(256, 1) delta_bwd_walk_wgmma_kernel(const DeltaChunkParams p) {
  using L = WgBwdWalkSmem<kGated>;
  constexpr int kD = 128;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;
  const int vb = blockIdx.x, v0 = 64 * vb, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0 = smem_u32(smem);
  T* dhs = static_cast<T*>(p.dhs) + bh * nt * kD * kD + v0;

  auto issue = [&](int c) {  // chunk c's stage (nothing for c < 0), one commit group either way
    if (c >= 0) {
      const int t0 = c * kC, st = (c & 1) * L::kStage;
      const uint32_t base = s0 + st;
      const int64_t off = row_offset(b, t0, h, p.T, p.H, kD);
      wgt::load_panels<kD, T>(base + L::kQ, static_cast<const T*>(p.q) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kK, static_cast<const T*>(p.k) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kW, static_cast<const T*>(p.w) + off, row_stride, p.T - t0, tid);
      load_tile<kC, 64, L::kThreads, T>(base + L::kDo, static_cast<const T*>(p.dout) + off + v0, row_stride,
                                        p.T - t0, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + st + L::kG), p.G, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };

  float dS[32];  // rows 64 wg .. + 64 of the block's dS slice
  load_state_half(dS, p.dht ? p.dht + bh * kD * kD + v0 : nullptr, wg, wr, lane);
  wgt::store_state_panels<64, T>(smem + L::kdS, dS, wg, wr, lane);
  const int r0 = 16 * wr + (lane >> 2);  // this thread's token rows r0, r0 + 8 in the m64 outputs
  issue(nt - 1);

  for (int c = nt - 1; c >= 0; --c) {
    const int t0 = c * kC, rows = min(kC, p.T - t0), st = (c & 1) * L::kStage;
    const uint32_t sst = s0 + st;
    unsigned char* stage = smem + st;
    float* G = reinterpret_cast<float*>(stage + L::kG);
    cp_async_wait<0>();
    wgmma::fence_proxy_async();  // the stage and the dS copy, before the tensor cores read them
    __syncthreads();             // ... and every read of the other stage (chunk c + 1) is done
    issue(c - 1);
    if (kGated && rows < kC) {  // rows past T take the last real row's G (their q, k, w, do are zero)
      pad_gates(G, rows, tid);
      __syncthreads();
    }

    // Batch 1: Y = K dS (warpgroup 0) and P = q k^T (warpgroup 1, or with p.split_scores its columns 32 wg ..
    // in each warpgroup); the first k16 step of each overwrites.
    float A[32];   // warpgroup 0: Y, then dvn; warpgroup 1: P (whole)
    float Ph[16];  // split_scores: P's columns 32 wg ..
    const bool split = p.split_scores != 0;
    wgmma::fence();
    if (wg == 0) {
      wgt::times_state<kD, T>(A, sst + L::kK, s0 + L::kdS, 0);
      wgmma::commit();
    }
    if (split) {
      wgt::scores_half<kD, T>(Ph, sst + L::kQ, sst + L::kK, wg);
      wgmma::commit();
    } else if (wg == 1) {
      wgt::scores<kD, T>(A, sst + L::kQ, sst + L::kK);
      wgmma::commit();
    }
    // The dS this chunk uses, for the second pass, under the products.
    store_tile<kD, 64, L::kThreads, T>(dhs + static_cast<int64_t>(c) * kD * kD, kD, smem + L::kdS, kD, tid);
    const float g_last = kGated ? G[kC - 1] : 0.f;
    // Dg = scale exp(G_t) do (all threads; read by batch 2 after the barrier)
    scale_tile_rows<64, T, L::kThreads>(smem + L::kDg, stage + L::kDo, tid,
                                        [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
    wgmma::wait<0>();
    // P[t][s] = scale (q_t . k_s) exp(G_t - G_s) for s <= t, 16-bit into its tile (G is padded past T by
    // pad_gates above, so the clamp to rows - 1 reads the same values)
    auto p_pair = [&](float x0, float x1, int r, int col) {
      mask_decay_pair<kGated>(x0, x1, r, col, kGated ? G[r] : 0.f, G, rows, p.scale);
      *reinterpret_cast<uint32_t*>(smem + L::kP + panel_off(r, col)) = MmaType<T>::pack(x0, x1);
    };
    if (split) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          p_pair(Ph[4 * j + 2 * half], Ph[4 * j + 2 * half + 1], r0 + 8 * half,
                 32 * wg + wgt::acc_col(j, lane));
    } else if (wg == 1) {
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          p_pair(A[4 * j + 2 * half], A[4 * j + 2 * half + 1], r0 + 8 * half, wgt::acc_col(j, lane));
    }
    if constexpr (kGated) {  // Y_s *= w_s = exp(G_last - G_s)
      if (wg == 0) {
        const float wr2[2] = {__expf(g_last - G[r0]), __expf(g_last - G[r0 + 8])};
        wgt::scale_acc(A, wr2);
      }
    }
    wgmma::fence_proxy_async();  // P, Dg
    __syncthreads();             // they are whole
    // Batch 2: warpgroup 0 dvn = Y + P^T do; both dS = exp(G_last) dS + q^T Dg over their rows.
    if constexpr (kGated) {
      const float d = __expf(g_last);
#pragma unroll
      for (int i = 0; i < 32; ++i) dS[i] *= d;
    }
    wgmma::fence();
    if (wg == 0) {
#pragma unroll
      for (int s = 0; s < 4; ++s)  // A = P^T: P's tile [t][s] read M-major, k16 step s over t
        wgmma::Mma<64, T, 1, 1>::run(A, wgmma::make_desc_mn(s0 + L::kP + s * 2048, L::kPanel),
                                     wgmma::make_desc_mn(sst + L::kDo + s * 2048, L::kPanel), 1);
      wgmma::commit();
    }
    wgt::outer_update<64, T>(dS, sst + L::kQ, s0 + L::kDg, wg);
    wgmma::commit();
    if (wg == 0) {
      wgmma::wait<1>();  // dvn
      const int64_t off = row_offset(b, t0, h, p.T, p.H, kD) + v0;
      store_acc_global<T>(static_cast<T*>(p.du) + off, row_stride, wgt::as_frag(A), 16 * wr, 0, rows, lane);
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          *reinterpret_cast<uint32_t*>(smem + L::kdVn + panel_off(r0 + 8 * half, wgt::acc_col(j, lane))) =
              MmaType<T>::pack(-A[4 * j + 2 * half], -A[4 * j + 2 * half + 1]);
    }
    wgmma::fence_proxy_async();  // -dvn
    __syncthreads();
    // Batch 3: dS += W^T (-dvn) over this warpgroup's rows (the negation is exact).
    wgmma::fence();
    wgt::outer_update<64, T>(dS, sst + L::kW, s0 + L::kdVn, wg);
    wgmma::commit();
    wgmma::wait<0>();
    // The dS copy's readers of this chunk (Y, the dhs store) are behind barrier 2.
    wgt::store_state_panels<64, T>(smem + L::kdS, dS, wg, wr, lane);
  }
  cp_async_wait<0>();
  if (p.dh0) store_state_half(p.dh0 + bh * kD * kD + v0, dS, wg, wr, lane);
}

}  // namespace attnlab::kernels::delta_chunk
