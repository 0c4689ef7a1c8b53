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

// This thread's gates in a chunk's m64 outputs (token rows r0, r0 + 8): G_last, G of its rows, and the row
// factors of o (scale exp(G_t)) and of Vw (exp(G_last - G_t)). Rows past T take the last real row's G
// (their q, k, w, u are zero), so every exp stays finite; G_last = G[rows - 1]. Without a gate: 0, scale, 1.
struct RowGates {
  float g_last = 0.f, gr[2] = {0.f, 0.f}, orow[2] = {0.f, 0.f}, vrow[2] = {1.f, 1.f};
};
template <bool kGated>
__device__ __forceinline__ RowGates row_gates(const float* G, int rows, int r0, float scale) {
  RowGates g;
  g.orow[0] = g.orow[1] = scale;
  if constexpr (kGated) {
    g.g_last = G[rows - 1];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      g.gr[half] = G[min(r0 + 8 * half, rows - 1)];
      g.orow[half] = scale * __expf(g.gr[half]);
      g.vrow[half] = __expf(g.g_last - g.gr[half]);
    }
  }
  return g;
}

// The scores pair (row r, columns col and col + 1) in place: scale (q_t . k_s) exp(G_t - G_s) for s <= t,
// else 0, with gr = G of row r. Selects, not branches: the mask drops even an overflow to inf where col > r.
template <bool kGated>
__device__ __forceinline__ void mask_decay_pair(float& a0, float& a1, int r, int col, float gr,
                                                const float* G, int rows, float scale) {
  float d0 = 1.f, d1 = 1.f;
  if constexpr (kGated) {
    d0 = __expf(gr - G[min(col, rows - 1)]);
    d1 = __expf(gr - G[min(col + 1, rows - 1)]);
  }
  a0 = col <= r ? a0 * scale * d0 : 0.f;
  a1 = col + 1 <= r ? a1 * scale * d1 : 0.f;
}

// Chunk c's stage of the forward walks (q when kOut, k, w; u's kUCols columns from v0; the gates), one
// commit group either way (nothing past the last chunk). L: the kernel's shared-memory layout. With
// p.wy_ready (the streamed forward) it first waits until delta_wy has stored chunk c's w, u and G.
template <typename L, typename T, bool kGated, bool kOut, int kUCols>
__device__ __forceinline__ void wg_fwd_issue(const DeltaChunkParams& p, unsigned char* smem, int c, int nt,
                                             int b, int h, int v0, int tid) {
  constexpr int kD = 128;
  if (c < nt) {
    if (p.wy_ready) wait_flag(p.wy_ready + (static_cast<int64_t>(b) * p.H + h) * nt + c);
    const int st = c % L::kStages, t0 = c * kC;
    const uint32_t base = smem_u32(smem) + st * L::kStage;
    const int64_t off = row_offset(b, t0, h, p.T, p.H, kD), row_stride = static_cast<int64_t>(p.H) * kD;
    if constexpr (kOut)
      wgt::load_panels<kD, T>(base + L::kQ, static_cast<const T*>(p.q) + off, row_stride, p.T - t0, tid);
    wgt::load_panels<kD, T>(base + L::kK, static_cast<const T*>(p.k) + off, row_stride, p.T - t0, tid);
    wgt::load_panels<kD, T>(base + L::kW, static_cast<const T*>(p.w) + off, row_stride, p.T - t0, tid);
#pragma unroll
    for (int pn = 0; pn < kUCols / 64; ++pn)  // all L::kThreads threads (load_panels<64> takes 128)
      load_tile<kC, 64, L::kThreads, T>(base + L::kU + pn * wgt::kPanel,
                                        static_cast<const T*>(p.u) + off + v0 + 64 * pn, row_stride, p.T - t0,
                                        tid);
    if constexpr (kGated)
      load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.G, b, t0, h, p.T, p.H, tid);
  }
  cp_async_commit();
}

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

  auto issue = [&](int c) { wg_fwd_issue<L, T, kGated, kOut, kD>(p, smem, c, nt, b, h, 0, tid); };
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

    // Under the products: the gates this thread needs.
    const float* G = reinterpret_cast<const float*>(stage + L::kG);
    const RowGates rg = row_gates<kGated>(G, rows, r0, p.scale);

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
              MmaType<T>::pack(a * rg.vrow[half], e * rg.vrow[half]);
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
          float x0 = P[4 * j + 2 * half], x1 = P[4 * j + 2 * half + 1];
          mask_decay_pair<kGated>(x0, x1, r, col, rg.gr[half], G, rows, p.scale);
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
      const float d = __expf(rg.g_last);
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
      wgt::scale_acc(O, rg.orow);
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

namespace attnlab::kernels::delta_chunk {

// ---------------------------------------------------------------- half the value columns per block
// The same walk with V-split 2 (DeltaChunkParams::fwd_wgmma with v_split 2): block (x, h, b) owns the
// value columns 64 x .. + 64, so B * H = 64 heads fill 128 SMs where the whole-V walk above leaves half of
// them idle and the mma.sync V-split walk is bound by its products' latency (bench/results/h200-2026-12-04a;
// run 2026-12-03j: at 64 heads the whole-V wgmma walk and the mma.sync V-split one both ~3 us per chunk).
//
// With 64 value columns the products of a chunk no longer split evenly by columns over two warpgroups (an
// m64n32 B operand would start inside a 128-byte swizzle atom), so the warpgroups split by product:
//   warpgroup 0: X = W S (m64n64k128: the walk's critical path) -> vn = U - X and Vw into their tiles;
//   warpgroup 1: P = q k^T and O = q S (both m64n64k128) -> P masked and decayed, in registers;
//   barrier 2 (vn, Vw whole) -> both: state rows 64 wg .. + 64: S = exp(G_last) S + k^T Vw (m64n64k64);
//   warpgroup 1: O = scale exp(G_t) O + P vn (P from registers: wgmma's RS form) -> o out.
// The state copy is one [128][64] panel; hs gets this block's 64 columns of each entering state. The scores
// P are formed by both blocks of a head (as the mma.sync V-split walk does): 2 of the chunk's 9 m64n64k64
// units. Three stages of q, k, w (whole) and u (the block's half); 203 KB (the state pass: 155 KB).
template <bool kOut>
struct WgFwdHalfSmem {
  static constexpr int kD = 128, kVb = 64;
  static constexpr int kPanel = wgt::kPanel;  // [64][64] 16-bit
  static constexpr int kTile = 2 * kPanel;    // [64][128] as two 64-column panels
  static constexpr int kStages = 3;
  static constexpr int kQ = 0;  // kOut only
  static constexpr int kK = kOut ? kTile : 0;
  static constexpr int kW = kK + kTile, kU = kW + kTile, kG = kU + kPanel;
  static constexpr int kStage = kG + 1024;       // the gates (256 bytes), padded: stages stay 1024-aligned
  static constexpr int kS = kStages * kStage;    // the 16-bit state copy: one [128][64] panel
  static constexpr int kVn = kS + kD * kVb * 2;  // vn [64][64]
  static constexpr int kVw = kVn + kPanel;       // vn exp(G_last - G_s) (gated)
  static constexpr int kP = kVw + kPanel;        // [64][64] P's columns 0 .. 31 (kOut, split_scores)
  static constexpr int kBytes = kP + (kOut ? kPanel : 0);
  static constexpr int kThreads = 256;
  static_assert(kBytes <= 227 * 1024, "one block per SM");
};

// The block's [128][64] slice of a float32 [128][128] state (zeros when src is null) into warpgroup wg's
// m64n64 accumulator (rows 64 wg ..), and back.
__device__ __forceinline__ void load_state_half(float (&S)[32], const float* src, int wg, int wr, int lane) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = wgt::acc_row(wg, wr, lane, half), col = wgt::acc_col(j, lane);
      const float2 x = src ? *reinterpret_cast<const float2*>(src + row * 128 + col) : make_float2(0.f, 0.f);
      S[4 * j + 2 * half] = x.x, S[4 * j + 2 * half + 1] = x.y;
    }
}
__device__ __forceinline__ void store_state_half(float* dst, const float (&S)[32], int wg, int wr, int lane) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = wgt::acc_row(wg, wr, lane, half), col = wgt::acc_col(j, lane);
      *reinterpret_cast<float2*>(dst + row * 128 + col) =
          make_float2(S[4 * j + 2 * half], S[4 * j + 2 * half + 1]);
    }
}

template <typename T, bool kGated, bool kOut>
__global__ void __launch_bounds__(256, 1) delta_fwd_wgmma_half_kernel(const DeltaChunkParams p) {
  using L = WgFwdHalfSmem<kOut>;
  constexpr int kD = 128;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;
  const int v0 = 64 * blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0 = smem_u32(smem);

  auto issue = [&](int c) { wg_fwd_issue<L, T, kGated, kOut, 64>(p, smem, c, nt, b, h, v0, tid); };
#pragma unroll
  for (int i = 0; i < L::kStages - 1; ++i) issue(i);
  // Streamed output pass (the state pass only, as the mma.sync walk): it starts waiting on this walk's
  // chunks once every walk block runs; chunk c is posted after the barrier that follows its hs and vn stores
  // (the next chunk's first barrier, or the one after the loop).
  if (!kOut && p.walk_sync && tid == 0) atomicAdd(p.walk_sync, 1);

  float S[32];  // state rows 64 wg .. + 64, the block's 64 value columns
  load_state_half(S, p.h0 ? p.h0 + bh * kD * kD + v0 : nullptr, wg, wr, lane);
  wgt::store_state_panels<64, T>(smem + L::kS, S, wg, wr, lane);
  T* hs = p.hs ? static_cast<T*>(p.hs) + bh * nt * kD * kD + v0 : nullptr;
  const int r0 = 16 * wr + (lane >> 2);  // this thread's token rows r0, r0 + 8 in the m64 outputs

  for (int c = 0; c < nt; ++c) {
    const int st = c % L::kStages, t0 = c * kC, rows = min(kC, p.T - t0);
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    cp_async_wait<L::kStages - 2>();
    wgmma::fence_proxy_async();  // this chunk's copies and the state copy, before the tensor cores read them
    __syncthreads();             // ... and every read of chunk c - 1's stage, vn and Vw is done
    if (!kOut && p.walk_sync && c > 0 && tid == 0) post_count(p.walk_sync + 1 + bh * nt + c - 1);
    issue(c + L::kStages - 1);

    // Batch 1: X (warpgroup 0), P and q S (warpgroup 1); with p.split_scores P's columns 32 wg .. in each
    // warpgroup (warpgroup 0's half reaches P vn through the tile kP). The first k16 step of each product
    // does not read its accumulators (scale-d 0).
    float A[32], O[32];  // warpgroup 0: X in A; warpgroup 1: P in A, q S in O
    float Ph[16];        // split: P's columns 32 wg ..
    const bool split = kOut && p.split_scores != 0;
    wgmma::fence();
    if (wg == 0) {
      wgt::times_state<kD, T>(A, sst + L::kW, s0 + L::kS, 0);
      wgmma::commit();
      if (split) {
        wgt::scores_half<kD, T>(Ph, sst + L::kQ, sst + L::kK, 0);
        wgmma::commit();
      }
    } else if constexpr (kOut) {
      if (split)
        wgt::scores_half<kD, T>(Ph, sst + L::kQ, sst + L::kK, 1);
      else
        wgt::scores<kD, T>(A, sst + L::kQ, sst + L::kK);
      wgmma::commit();
      wgt::times_state<kD, T>(O, sst + L::kQ, s0 + L::kS, 0);
      wgmma::commit();
    }
    // The entering state to hs (this block's columns, from the 16-bit copy), under the products.
    if (!kOut || hs)
      store_tile<kD, 64, L::kThreads, T>(hs + static_cast<int64_t>(c) * kD * kD, kD, smem + L::kS, kD, tid);

    const float* G = reinterpret_cast<const float*>(stage + L::kG);
    const RowGates rg = row_gates<kGated>(G, rows, r0, p.scale);  // the gates this thread needs

    uint32_t pf[4][4];  // warpgroup 1: P masked and decayed, as the A fragments of P vn (k16 step kq)
    if (wg == 0) {
      if (split)
        wgmma::wait<1>();  // X
      else
        wgmma::wait<0>();  // X
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const uint32_t off = panel_off(r0 + 8 * half, wgt::acc_col(j, lane));
          const float2 u = unpack2<T>(*reinterpret_cast<const uint32_t*>(stage + L::kU + off));
          const float x0 = u.x - A[4 * j + 2 * half], x1 = u.y - A[4 * j + 2 * half + 1];
          *reinterpret_cast<uint32_t*>(smem + L::kVn + off) = MmaType<T>::pack(x0, x1);
          if constexpr (kGated)
            *reinterpret_cast<uint32_t*>(smem + L::kVw + off) =
                MmaType<T>::pack(x0 * rg.vrow[half], x1 * rg.vrow[half]);
        }
      if constexpr (kOut) {
        if (split) {  // P's columns 0 .. 31, masked and decayed, into the tile for warpgroup 1
          wgmma::wait<0>();
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const int r = r0 + 8 * half, col = wgt::acc_col(j, lane);
              float x0 = Ph[4 * j + 2 * half], x1 = Ph[4 * j + 2 * half + 1];
              mask_decay_pair<kGated>(x0, x1, r, col, rg.gr[half], G, rows, p.scale);
              *reinterpret_cast<uint32_t*>(smem + L::kP + panel_off(r, col)) = MmaType<T>::pack(x0, x1);
            }
        }
      }
    } else if constexpr (kOut) {
      wgmma::wait<1>();  // P (split: its columns 32 ..)
      if (split) {
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int half = 0; half < 2; ++half)
            mask_decay_pair<kGated>(Ph[4 * j + 2 * half], Ph[4 * j + 2 * half + 1], r0 + 8 * half,
                                    32 + wgt::acc_col(j, lane), rg.gr[half], G, rows, p.scale);
#pragma unroll
        for (int kq = 2; kq < 4; ++kq)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int i = 8 * (kq - 2) + 4 * (r >> 1) + 2 * (r & 1);
            pf[kq][r] = MmaType<T>::pack(Ph[i], Ph[i + 1]);
          }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            mask_decay_pair<kGated>(A[4 * j + 2 * half], A[4 * j + 2 * half + 1], r0 + 8 * half,
                                    wgt::acc_col(j, lane), rg.gr[half], G, rows, p.scale);
          }
#pragma unroll
        for (int kq = 0; kq < 4; ++kq)
#pragma unroll
          for (int r = 0; r < 4; ++r) {  // r: (rows g, cols 0-7), (g + 8, 0-7), (g, 8-15), (g + 8, 8-15)
            const int i = 8 * kq + 4 * (r >> 1) + 2 * (r & 1);
            pf[kq][r] = MmaType<T>::pack(A[i], A[i + 1]);
          }
      }
      wgmma::wait<0>();  // q S
      wgt::scale_acc(O, rg.orow);
    }
    wgmma::fence_proxy_async();  // vn, Vw (and split: P's columns 0 .. 31)
    __syncthreads();             // they are whole; every read of the state copy (X, q S, hs) is done

    if constexpr (kGated) {
      const float d = __expf(rg.g_last);
#pragma unroll
      for (int i = 0; i < 32; ++i) S[i] *= d;
    }
    // Batch 2: the update of this warpgroup's state rows; warpgroup 1 also O += P vn.
    wgmma::fence();
    wgt::outer_update<64, T>(S, sst + L::kK, kGated ? s0 + L::kVw : s0 + L::kVn, wg);
    wgmma::commit();
    const int64_t off = row_offset(b, t0, h, p.T, p.H, kD) + v0;
    if constexpr (kOut) {
      if (wg == 1) {
#pragma unroll
        for (int kq = 0; kq < 4; ++kq) {
          const uint64_t vn_desc = wgmma::make_desc_mn(s0 + L::kVn + kq * 2048, L::kPanel);
          if (split && kq < 2)  // P's columns 16 kq .. from warpgroup 0's tile (K-major, as q's panels)
            wgmma::Mma<64, T, 1>::run(O, wgmma::make_desc(s0 + L::kP + kq * 32, 16, 1024), vn_desc, 1);
          else
            wgmma::MmaRs<64, T, 1>::run(O, pf[kq], vn_desc, 1);
        }
        wgmma::commit();
      }
    } else {
      // vn out while the update runs (the tile is rewritten only after the next chunk's first barrier).
      store_tile<kC, 64, L::kThreads, T>(static_cast<T*>(p.vn) + off, row_stride, smem + L::kVn, rows, tid);
    }
    wgmma::wait<0>();  // S (and O)
    // o through the warp's own rows of the q panel 0 (no warp reads q any more in this chunk).
    if constexpr (kOut) {
      if (wg == 1)
        wgt::store_acc_rows<T>(static_cast<T*>(p.o) + off, row_stride, O, stage + L::kQ, rows, wr, lane);
    }
    wgt::store_state_panels<64, T>(smem + L::kS, S, wg, wr, lane);
  }
  if (!kOut && p.walk_sync) {
    __syncthreads();  // the last chunk's vn stores
    if (tid == 0) post_count(p.walk_sync + 1 + bh * nt + nt - 1);
  }
  cp_async_wait<0>();
  if (p.ht) store_state_half(p.ht + bh * kD * kD + v0, S, wg, wr, lane);
}

}  // namespace attnlab::kernels::delta_chunk
