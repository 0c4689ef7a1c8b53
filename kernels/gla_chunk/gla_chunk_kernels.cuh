// The gla_chunk kernels (params.h has the semantics, docs/kernels.md the design). Grids are (segment, head,
// batch) with 8 warps per block; each block walks the 64-token chunks of its segment with the K x V state
// (or its gradient) in float32 registers and a 16-bit copy of it in shared memory. q, k, v, do of the next
// chunk stream in through cp.async while the current one is computed (two stages); the float32 gate tile
// has one buffer, refilled as soon as a chunk is done with it.
//
// Per chunk, with G the in-chunk cumulative gate per key (log2 units in the tile), r_i = G at the row
// before query sub-chunk i (0 for i = 0) and R_j = G at the last row of key sub-chunk j:
//   forward  A[t][s] = scale sum_c q_tc k_sc exp(G_tc - G_sc), s <= t (gated_scores_block below the
//            diagonal, and on it when the chunk is tame; else diag_scores); o = (scale q exp(G)) S_in + A v;
//            S_out = diag(exp(G_last)) S_in + (k exp(G_last - G))^T v.
//   dq       X = (do S_in^T) scale exp(r_i); X += dA (k exp(r_i - G_s)) over the keys before sub-chunk i;
//            X *= exp(G_t - r_i); the diagonal block in the product when tame, else pairwise after it.
//            dA = scale do v^T (s <= t).
//   dk       X = (v dS_out^T) exp(G_last - R_j); X += dA^T (q exp(G_t - R_j)) over the queries after
//            sub-chunk j; X *= exp(R_j - G_s); the diagonal block as for dq.
//   dv       A^T do + (k exp(G_last - G)) dS_out;   dS_in = diag(exp(G_last)) dS_out + (scale q exp(G))^T do.
// Every exponent is a later G minus an earlier one, so <= 0, except on a tame chunk's diagonal blocks,
// bounded there by tame_span (tests/test_gla_chunk_algorithm.cpp checks
// these formulas against autograd in float64).
#pragma once

#include "kernels/gla_chunk/gla_chunk_common.cuh"

namespace attnlab::kernels::gla_chunk {

using linear_chunk::load_chunk;
using linear_chunk::scale_rows;
using linear_chunk::StateTile;
using linear_chunk::store_acc_global;
using linear_chunk::store_acc_smem;
using linear_chunk::warp_mma;
using linear_chunk::zero_acc;

__device__ __forceinline__ int64_t bh_index(int b, int h, int H) {
  return static_cast<int64_t>(b) * H + h;
}

// The chunk range [c_begin, c_end) of segment `seg`.
__device__ __forceinline__ int2 segment_chunks(const GlaChunkParams& p, int seg) {
  const int c_begin = seg * p.seg_chunks;
  return make_int2(c_begin, min(gla_chunk_count(p.T), c_begin + p.seg_chunks));
}

// The start of every chunk step: waits for the chunk's copies (the next chunk's tiles may still be in
// flight), turns the gate tile into the in-chunk cumsum. Returns the column total of thread tid < kD.
template <int kD>
__device__ __forceinline__ float begin_chunk(float* G, float* scratch, int tid) {
  cp_async_wait<1>();
  __syncthreads();
  const float total = gate_cumsum<kD>(G, scratch, tid);
  __syncthreads();
  return total;
}

// The in-chunk scores (scale included) into the [C][C] tile sA: warps 0..5 one block below the diagonal
// each; the diagonal blocks by warps 6 and 7 (two each) through the tensor cores when the chunk is tame
// (chunk_tame), else by all warps pairwise. The blocks above the diagonal stay as zero_tile_cc left them.
template <int kD, typename T>
__device__ __forceinline__ void chunk_scores(unsigned char* sA, uint32_t sQ, uint32_t sK,
                                             const unsigned char* q, const unsigned char* k, const float* G,
                                             float scale, bool tame, int warp, int lane) {
  // Block (i, j): query sub-chunk i, key sub-chunk j <= i, reference r = G before sub-chunk i (row -1 of the
  // tile for i = 0); on the diagonal, keys after the query are zeroed.
  auto block = [&](int i, int j) {
    float acc[1][2][4];
    zero_acc(acc);
    gated_scores_block<kD, T>(acc, sQ, sK, G, kSub * i, kSub * j, kSub * i - 1, lane);
#pragma unroll
    for (int nj = 0; nj < 2; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = (lane >> 2) + 8 * (e >> 1), s = nj * 8 + 2 * (lane & 3) + (e & 1);
        acc[0][nj][e] = i == j && s > t ? 0.f : acc[0][nj][e] * scale;
      }
    store_acc_smem<kC, T>(sA, acc, kSub * i, kSub * j, lane);
  };
  if (warp < 6) {
    const int2 ij = offdiag_pair(warp);
    block(ij.x, ij.y);
  }
  if (!tame) {
    diag_scores<kD, T>(sA, q, k, G, scale, warp, lane);
  } else if (warp >= 6) {
    const int i0 = 2 * (warp - 6);
    block(i0, i0);
    block(i0 + 1, i0 + 1);
  }
}

// Chunk c's tile of p.scores (the forward's in-chunk scores, [C][C] 16-bit as in shared memory).
__device__ __forceinline__ unsigned char* scores_tile(const GlaChunkParams& p, int64_t bh, int c) {
  return static_cast<unsigned char*>(p.scores) + (bh * gla_chunk_count(p.T) + c) * (kC * kC * 2);
}

// Zeros the [C][C] tile (the blocks above the diagonal are never written afterwards); before the first sync.
__device__ __forceinline__ void zero_tile_cc(unsigned char* s, int tid) {
  for (int i = tid; i < kC * kC * 2 / 16; i += kThreads)
    reinterpret_cast<uint4*>(s)[i] = make_uint4(0, 0, 0, 0);
}

// ---------------------------------------------------------------- forward
// Shared memory of fwd_kernel: two stages of (Q, K, V tiles), the gate tile and its scratch, then the 16-bit
// state and the scores. Q, the state copy and the scores only when the kernel writes outputs.
template <int kD, bool kOutput>
struct FwdSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0;
  static constexpr int kK = kOutput ? kTile : 0;
  static constexpr int kV = kK + kTile;
  static constexpr int kStage = kV + kTile;
  static constexpr int kG = 2 * kStage;
  static constexpr int kScr = kG + GateTile<kD>::kBytes;
  static constexpr int kS = kScr + GateTile<kD>::kScratchBytes;  // [kD][kD] state, 16-bit
  static constexpr int kA = kS + (kOutput ? kD * kD * 2 : 0);    // [C][C] scores
  static constexpr int kBytes = kA + (kOutput ? kC * kC * 2 : 0);
};

// kOutput = false: the state contribution of segment blockIdx.x (from a zero state) and its gate sums per
// key, into seg_states / seg_gate. kOutput = true: o for segment blockIdx.x from the state entering it
// (seg_states after the scan, or h0), ht from the last segment.
template <int kD, typename T, bool kOutput>
__global__ void __launch_bounds__(kThreads, 1) gla_fwd_kernel(const GlaChunkParams p) {
  using L = FwdSmem<kD, kOutput>;
  using ST = StateTile<kD, kD>;
  constexpr int kGS = GateTile<kD>::kGS;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int n_seg = gla_chunk_segments(p);
  const int2 cr = segment_chunks(p, seg);
  const int c_begin = cr.x, c_end = cr.y;
  const int64_t bh = bh_index(b, h, p.H);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const uint32_t s0 = smem_u32(smem);
  float* G = gate_tile<kD>(smem + L::kG, tid);
  float* scratch = reinterpret_cast<float*>(smem + L::kScr);
  const float* Glast = G + (kC - 1) * kGS;

  auto issue_gates = [&](int c) {
    if (c < c_end) load_gate_tile<kD>(G, p.g, b, c * kC, h, p.T, p.H, tid);
    cp_async_commit();
  };
  auto issue = [&](int c) {
    if (c < c_end) {
      const uint32_t base = s0 + ((c - c_begin) & 1) * L::kStage;
      if constexpr (kOutput) load_chunk<kD>(base + L::kQ, q, b, c * kC, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kK, k, b, c * kC, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kV, v, b, c * kC, h, p.T, p.H, tid);
    }
    cp_async_commit();  // empty groups past the end keep wait_group<1> exact
  };
  issue_gates(c_begin);
  issue(c_begin);
  issue(c_begin + 1);

  float S[ST::MT][ST::NT][4];
  const float* S_init = nullptr;
  if constexpr (kOutput)
    S_init = n_seg > 1 ? p.seg_states + (bh * n_seg + seg) * kD * kD : (p.h0 ? p.h0 + bh * kD * kD : nullptr);
  ST::load(S, S_init, warp, lane);
  if constexpr (kOutput) {
    store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
    zero_tile_cc(smem + L::kA, tid);
  }
  float seg_g = 0.f;  // thread tid < kD: sum of g over the segment, key tid

  const int m0 = 16 * (warp % 4);         // token rows of this warp in C x * tiles
  const int n0o = (kD / 2) * (warp / 4);  // output columns

  for (int c = c_begin; c < c_end; ++c) {
    const int t0 = c * kC;
    const uint32_t sst = s0 + ((c - c_begin) & 1) * L::kStage;
    unsigned char* stage = smem + ((c - c_begin) & 1) * L::kStage;
    seg_g += begin_chunk<kD>(G, scratch, tid);
    if constexpr (kOutput) {
      chunk_scores<kD, T>(smem + L::kA, sst + L::kQ, sst + L::kK, stage + L::kQ, stage + L::kK, G, p.scale,
                          chunk_tame<kD, T>(G, lane), warp, lane);
      __syncthreads();  // raw q, k read; the scores ready
      if (p.scores) {   // for the backward's dk / dv walk
        uint4* dst = reinterpret_cast<uint4*>(scores_tile(p, bh, c));
        for (int i2 = tid; i2 < kC * kC * 2 / 16; i2 += kThreads)
          dst[i2] = reinterpret_cast<const uint4*>(smem + L::kA)[i2];
      }
      scale_tile<kD, T>(stage + L::kQ, G, tid, [&](float g, int) { return p.scale * fast_exp2(g); });
    }
    scale_tile<kD, T>(stage + L::kK, G, tid, [&](float g, int col) { return fast_exp2(Glast[col] - g); });
    __syncthreads();  // Qg = scale q exp(G), Kg = k exp(G_last - G) ready
    if constexpr (kOutput) {
      float O[1][kD / 16][4];
      zero_acc(O);
      warp_mma<1, kD / 16, kD / 16, false, true, kD, kD, T>(O, sst + L::kQ, m0, 0, s0 + L::kS, 0, n0o, lane);
      warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(O, s0 + L::kA, m0, 0, sst + L::kV, 0, n0o, lane);
      T* o = static_cast<T*>(p.o) + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      store_acc_global<T>(o, static_cast<int64_t>(p.H) * kD, O, m0, n0o, p.T - t0, lane);
    }
    // S = diag(exp(G_last)) S + Kg^T v
    scale_rows(S, ST::m0(warp), lane, [&](int r) { return fast_exp2(Glast[r]); });
    warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kD, T>(S, sst + L::kK, ST::m0(warp), 0, sst + L::kV, 0,
                                                             ST::n0(warp), lane);
    __syncthreads();  // every read of this stage, the gate tile, the state copy and the scores is done
    if constexpr (kOutput) store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
    issue_gates(c + 1);
    issue(c + 2);
  }
  cp_async_wait<0>();

  if constexpr (kOutput) {
    if (seg == n_seg - 1 && p.ht) ST::store(p.ht + bh * kD * kD, S, warp, lane);
    // The last segment's gate sums: the forward scan never needs them (no segment follows), the backward's
    // reverse scan does (the state gradient crosses it first), and only this pass walks that segment.
    if (seg == n_seg - 1 && n_seg > 1 && tid < kD) p.seg_gate[(bh * n_seg + seg) * kD + tid] = seg_g;
  } else {
    ST::store(p.seg_states + (bh * n_seg + seg) * kD * kD, S, warp, lane);
    if (tid < kD) p.seg_gate[(bh * n_seg + seg) * kD + tid] = seg_g;
  }
}

// seg_states[s] <- the state entering segment s: h = h0; for each segment, (entering = h,
// h = diag(exp(seg_gate)) h + contribution). Each thread owns 4 consecutive state entries (one key row).
template <int kD>
__global__ void gla_scan_fwd_kernel(const GlaChunkParams p) {
  constexpr int kv = kD * kD;
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
  if (i >= kv) return;
  const int64_t bh = blockIdx.y;
  const int n_seg = gla_chunk_segments(p), row = i / kD;
  const float4 h0 =
      p.h0 ? *reinterpret_cast<const float4*>(p.h0 + bh * kv + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  linear_chunk::segment_scan<false>(p.seg_states + bh * n_seg * kv + i, kv, n_seg, h0,
                                    [&](int s) { return __expf(p.seg_gate[(bh * n_seg + s) * kD + row]); });
}

// ---------------------------------------------------------------- backward: dq
// The forward walk again (state recomputed from the entering state the forward saved): dq per chunk, q dq
// per token and key into dg (float32), which the dk walk completes, and the state entering every chunk into
// chunk_states (16-bit) for the dk walk's share of dg.
template <int kD>
struct DqSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kDo = 0, kV = kTile, kK = 2 * kTile, kQ = 3 * kTile;
  static constexpr int kStage = 4 * kTile;
  static constexpr int kG = 2 * kStage;
  static constexpr int kScr = kG + GateTile<kD>::kBytes;
  static constexpr int kS = kScr + GateTile<kD>::kScratchBytes;  // [kD][kD] state, 16-bit
  static constexpr int kP = kS + kD * kD * 2;                    // [C][C] dA = scale do v^T, s <= t
  static constexpr int kBytes = kP + kC * kC * 2;
};

template <int kD, typename T>
__global__ void __launch_bounds__(kThreads, 1) gla_bwd_dq_kernel(const GlaChunkParams p) {
  using L = DqSmem<kD>;
  using ST = StateTile<kD, kD>;
  constexpr int kGS = GateTile<kD>::kGS;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int n_seg = gla_chunk_segments(p);
  [[maybe_unused]] const int nt = gla_chunk_count(p.T);
  const int2 cr = segment_chunks(p, seg);
  const int c_begin = cr.x, c_end = cr.y;
  const int64_t bh = bh_index(b, h, p.H);
  const uint32_t s0 = smem_u32(smem);
  float* G = gate_tile<kD>(smem + L::kG, tid);
  float* scratch = reinterpret_cast<float*>(smem + L::kScr);
  const float* Glast = G + (kC - 1) * kGS;

  auto issue_gates = [&](int c) {
    if (c < c_end) load_gate_tile<kD>(G, p.g, b, c * kC, h, p.T, p.H, tid);
    cp_async_commit();
  };
  auto issue = [&](int c) {
    if (c < c_end) {
      const uint32_t base = s0 + ((c - c_begin) & 1) * L::kStage;
      load_chunk<kD>(base + L::kDo, static_cast<const T*>(p.dout), b, c * kC, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kV, static_cast<const T*>(p.v), b, c * kC, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kK, static_cast<const T*>(p.k), b, c * kC, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kQ, static_cast<const T*>(p.q), b, c * kC, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };
  issue_gates(c_begin);
  issue(c_begin);
  issue(c_begin + 1);

  float S[ST::MT][ST::NT][4];
  ST::load(S,
           n_seg > 1 ? p.seg_states + (bh * n_seg + seg) * kD * kD : (p.h0 ? p.h0 + bh * kD * kD : nullptr),
           warp, lane);
  store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);

  // This warp's query sub-chunk i (token rows m0 ..) and key columns n0 ..
  const int i = warp % 4, m0 = 16 * i, n0 = (kD / 2) * (warp / 4);
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  for (int c = c_begin; c < c_end; ++c) {
    const int t0 = c * kC;
    const uint32_t sst = s0 + ((c - c_begin) & 1) * L::kStage;
    unsigned char* stage = smem + ((c - c_begin) & 1) * L::kStage;
    // The chunk-entering state, for the dk walk's share of dg.
    StateTile<kD, kD>::template store_packed<T>(
        static_cast<uint32_t*>(p.chunk_states) + (bh * nt + c) * (kD * kD / 2), S, tid);
    begin_chunk<kD>(G, scratch, tid);
    const bool tame = chunk_tame<kD, T>(G, lane);
    linear_chunk::decayed_scores<kD, T, false, false>(smem + L::kP, sst + L::kDo, sst + L::kV, G, p.scale,
                                                      warp, lane);
    __syncthreads();  // dA ready
    {
      const float* r = G + (m0 - 1) * kGS;  // G before sub-chunk i (row -1: zeros)
      float X[1][kD / 16][4];
      zero_acc(X);
      warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(X, sst + L::kDo, m0, 0, s0 + L::kS, 0, n0, lane);
      scale_acc(X, m0, n0, lane, [&](int, int col) {
        return make_float2(p.scale * fast_exp2(r[col]), p.scale * fast_exp2(r[col + 1]));
      });
      // The keys before sub-chunk i, and its own (dA is zero past the diagonal) when the chunk is tame.
      const int ks_end = tame ? i + 1 : i;
      if (ks_end > 0)
        gated_pv_mma<kD, T, false, true>(X, s0 + L::kP, m0, sst + L::kK, G, r, n0, 0, ks_end, lane,
                                         tame ? i : -1);
      scale_acc(X, m0, n0, lane, [&](int row, int col) {
        const float2 gt = *reinterpret_cast<const float2*>(G + row * kGS + col);
        return make_float2(fast_exp2(gt.x - r[col]), fast_exp2(gt.y - r[col + 1]));
      });
      if (tame)
        diag_self<kD, T>(X, smem + L::kP, stage + L::kK, m0, n0, lane);
      else
        diag_rows<kD, T, false>(X, smem + L::kP, stage + L::kK, G, m0, n0, lane);
      T* dq = static_cast<T*>(p.dq) + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      store_acc_global<T>(dq, row_stride, X, m0, n0, p.T - t0, lane);
      // q dq (float32) into dg
      float* dg = p.dg + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = m0 + (lane >> 2) + 8 * hh;
        if (row >= p.T - t0) continue;
#pragma unroll
        for (int nj = 0; nj < kD / 16; ++nj) {
          const int col = n0 + nj * 8 + 2 * (lane & 3);
          const float2 qv = tile_pair<kD, T>(stage + L::kQ, row, col);
          *reinterpret_cast<float2*>(dg + row * row_stride + col) =
              make_float2(qv.x * X[0][nj][2 * hh], qv.y * X[0][nj][2 * hh + 1]);
        }
      }
    }
    __syncthreads();  // raw k read
    scale_tile<kD, T>(stage + L::kK, G, tid, [&](float g, int col) { return fast_exp2(Glast[col] - g); });
    __syncthreads();
    scale_rows(S, ST::m0(warp), lane, [&](int r) { return fast_exp2(Glast[r]); });
    warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kD, T>(S, sst + L::kK, ST::m0(warp), 0, sst + L::kV, 0,
                                                             ST::n0(warp), lane);
    __syncthreads();
    store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
    issue_gates(c + 1);
    issue(c + 2);
  }
  cp_async_wait<0>();
}

// ---------------------------------------------------------------- backward: dk, dv, dg
// kDkv = false: the state-gradient contribution of segment blockIdx.x + 1 from a zero gradient at its end
// (reverse walk), into dseg_states. kDkv = true: dk, dv for segment blockIdx.x from the gradient at its end
// (dseg_states after the scan, or dht); dg for its tokens (gla_chunk_bwd.cu: q dq from the dq walk minus
// k dk_in summed from the chunk's end, k dk_st summed from its start, and exp(G_last) sum_v S_in dS_out per
// key, S_in the chunk-entering state of the dq walk), and dh0 from segment 0.
template <int kD, bool kDkv>
struct DkvSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0, kDo = kTile;
  static constexpr int kK = 2 * kTile, kV = 3 * kTile;
  static constexpr int kStage = (kDkv ? 4 : 2) * kTile;
  static constexpr int kG = 2 * kStage;
  static constexpr int kScr = kG + GateTile<kD>::kBytes;
  static constexpr int kS = kScr + GateTile<kD>::kScratchBytes;  // [kD][kD] 16-bit dS (dkv only)
  static constexpr int kPA = kS + kD * kD * 2;                   // [C][C] forward scores A
  static constexpr int kPD = kPA + kC * kC * 2;                  // [C][C] dA = scale do v^T, s <= t
  static constexpr int kTot = kPD + kC * kC * 2;                 // [4][kD] float: dg totals per sub-chunk
  static constexpr int kTotSt = kTot + kNSub * kD * 4;           // [4][kD] float: k dk_st totals
  static constexpr int kRowDot = kTotSt + kNSub * kD * 4;        // [2][kD] float: sum_v S_in dS_out, halves
  static constexpr int kBytes = kDkv ? kRowDot + 2 * kD * 4 : kS;
};

template <int kD, typename T, bool kDkv>
__global__ void __launch_bounds__(kThreads, 1) gla_bwd_dkv_kernel(const GlaChunkParams p) {
  using L = DkvSmem<kD, kDkv>;
  using ST = StateTile<kD, kD>;
  constexpr int kGS = GateTile<kD>::kGS;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seg = kDkv ? blockIdx.x : blockIdx.x + 1, h = blockIdx.y, b = blockIdx.z;
  const int n_seg = gla_chunk_segments(p);
  [[maybe_unused]] const int nt = gla_chunk_count(p.T);
  const int2 cr = segment_chunks(p, seg);
  const int c_begin = cr.x, c_end = cr.y;
  const int64_t bh = bh_index(b, h, p.H);
  const uint32_t s0 = smem_u32(smem);
  float* G = gate_tile<kD>(smem + L::kG, tid);
  float* scratch = reinterpret_cast<float*>(smem + L::kScr);
  const float* Glast = G + (kC - 1) * kGS;

  // The walk goes backwards: step i handles chunk c_end - 1 - i. The forward's scores of the chunk come with
  // its gates (both single-buffered: issued once the previous step is done with them).
  auto issue_gates = [&](int i) {
    const int c = c_end - 1 - i;
    if (c >= c_begin) {
      load_gate_tile<kD>(G, p.g, b, c * kC, h, p.T, p.H, tid);
      if constexpr (kDkv) {
        const unsigned char* src = scores_tile(p, bh, c);
        for (int i2 = tid; i2 < kC * kC * 2 / 16; i2 += kThreads)
          cp_async_16(s0 + L::kPA + i2 * 16, src + i2 * 16, true);
      }
    }
    cp_async_commit();
  };
  auto issue = [&](int i) {
    const int c = c_end - 1 - i;
    if (c >= c_begin) {
      const uint32_t base = s0 + (i & 1) * L::kStage;
      load_chunk<kD>(base + L::kQ, static_cast<const T*>(p.q), b, c * kC, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kDo, static_cast<const T*>(p.dout), b, c * kC, h, p.T, p.H, tid);
      if constexpr (kDkv) {
        load_chunk<kD>(base + L::kK, static_cast<const T*>(p.k), b, c * kC, h, p.T, p.H, tid);
        load_chunk<kD>(base + L::kV, static_cast<const T*>(p.v), b, c * kC, h, p.T, p.H, tid);
      }
    }
    cp_async_commit();
  };
  issue_gates(0);
  issue(0);
  issue(1);

  float dS[ST::MT][ST::NT][4];
  const float* dS_init = nullptr;
  if constexpr (kDkv)
    dS_init =
        n_seg > 1 ? p.dseg_states + (bh * n_seg + seg) * kD * kD : (p.dht ? p.dht + bh * kD * kD : nullptr);
  ST::load(dS, dS_init, warp, lane);
  float* tot = reinterpret_cast<float*>(smem + L::kTot);
  float* tot_st = reinterpret_cast<float*>(smem + L::kTotSt);
  float* rowdot = reinterpret_cast<float*>(smem + L::kRowDot);
  if constexpr (kDkv) store_acc_smem<kD, T>(smem + L::kS, dS, ST::m0(warp), ST::n0(warp), lane);

  const int j = warp % 4, m0 = 16 * j, n0 = (kD / 2) * (warp / 4);  // key sub-chunk, token rows, columns
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const int steps = c_end - c_begin;
  for (int it = 0; it < steps; ++it) {
    const int c = c_end - 1 - it, t0 = c * kC;
    const uint32_t sst = s0 + (it & 1) * L::kStage;
    unsigned char* stage = smem + (it & 1) * L::kStage;
    begin_chunk<kD>(G, scratch, tid);
    if constexpr (kDkv) {
      const bool tame = chunk_tame<kD, T>(G, lane);
      // sum_v S_in[c][v] dS_out[c][v] per key c: the dq walk's chunk-entering state, dS_out (in registers)
      state_row_dots<kD, T>(rowdot,
                            static_cast<const uint32_t*>(p.chunk_states) + (bh * nt + c) * (kD * kD / 2), dS,
                            warp, lane, tid);
      linear_chunk::decayed_scores<kD, T, false, false>(smem + L::kPD, sst + L::kDo, sst + L::kV, G, p.scale,
                                                        warp, lane);
      __syncthreads();  // A, dA ready
      const int64_t off = ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      const int rows_valid = p.T - t0;
      float X[1][kD / 16][4];
      float Y[1][kD / 16][4];  // k dk_st: k times the part of dk through the chunk-end state
      // ---- dk
      {
        const float* R = G + (m0 + kSub - 1) * kGS;  // G at the last row of sub-chunk j
        zero_acc(X);
        warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(X, sst + L::kV, m0, 0, s0 + L::kS, 0, n0,
                                                               lane);
        scale_acc(X, m0, n0, lane, [&](int, int col) {
          return make_float2(fast_exp2(Glast[col] - R[col]), fast_exp2(Glast[col + 1] - R[col + 1]));
        });
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = m0 + (lane >> 2) + 8 * hh;
#pragma unroll
          for (int nj = 0; nj < kD / 16; ++nj) {
            const int col = n0 + nj * 8 + 2 * (lane & 3);
            const float2 gs = *reinterpret_cast<const float2*>(G + row * kGS + col);
            const float2 kv = tile_pair<kD, T>(stage + L::kK, row, col);  // raw k (zero past T)
            Y[0][nj][2 * hh] = kv.x * X[0][nj][2 * hh] * fast_exp2(R[col] - gs.x);
            Y[0][nj][2 * hh + 1] = kv.y * X[0][nj][2 * hh + 1] * fast_exp2(R[col + 1] - gs.y);
          }
        }
        // The queries after sub-chunk j, and its own (dA^T is zero before the diagonal) when tame.
        const int ks_begin = tame ? j : j + 1;
        if (ks_begin < kNSub)
          gated_pv_mma<kD, T, true, false>(X, s0 + L::kPD, m0, sst + L::kQ, G, R, n0, ks_begin, kNSub, lane,
                                           tame ? j : -1);
        scale_acc(X, m0, n0, lane, [&](int row, int col) {
          const float2 gs = *reinterpret_cast<const float2*>(G + row * kGS + col);
          return make_float2(fast_exp2(R[col] - gs.x), fast_exp2(R[col + 1] - gs.y));
        });
        if (tame)
          diag_self<kD, T>(X, smem + L::kPD, stage + L::kQ, m0, n0, lane);
        else
          diag_rows<kD, T, true>(X, smem + L::kPD, stage + L::kQ, G, m0, n0, lane);
        store_acc_global<T>(static_cast<T*>(p.dk) + off, row_stride, X, m0, n0, rows_valid, lane);
      }
      // ---- dg: d = q dq - k dk_in per (token, key), summed from the right, and k dk_st, summed from the
      // left (exclusive): within the warp's 16 rows by shuffles, across the four sub-chunks through `tot` and
      // `tot_st`; plus the state term exp(G_last) rowdot.
      {
        float* dg = p.dg + off;
        const int gq = lane >> 2, cq = lane & 3;
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = m0 + gq + 8 * hh;
#pragma unroll
          for (int nj = 0; nj < kD / 16; ++nj) {
            const int col = n0 + nj * 8 + 2 * cq;
            float2 d = make_float2(0.f, 0.f);
            if (row < rows_valid) {
              const float2 qdq = *reinterpret_cast<const float2*>(dg + row * row_stride + col);
              const float2 kv = tile_pair<kD, T>(stage + L::kK, row, col);
              d = make_float2(qdq.x - kv.x * X[0][nj][2 * hh] + Y[0][nj][2 * hh],
                              qdq.y - kv.y * X[0][nj][2 * hh + 1] + Y[0][nj][2 * hh + 1]);
            }
            X[0][nj][2 * hh] = d.x, X[0][nj][2 * hh + 1] = d.y;
          }
        }
        // Suffix sums over the 8 rows of each half (lanes 4 apart), then half 0 gets half 1's total.
#pragma unroll
        for (int nj = 0; nj < kD / 16; ++nj)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float x = X[0][nj][e];
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) {
              const float y = __shfl_down_sync(0xffffffffu, x, 4 * o);
              if (gq + o < 8) x += y;
            }
            X[0][nj][e] = x;
          }
#pragma unroll
        for (int nj = 0; nj < kD / 16; ++nj)
#pragma unroll
          for (int e = 0; e < 2; ++e) X[0][nj][e] += __shfl_sync(0xffffffffu, X[0][nj][2 + e], cq);
        if (gq == 0)
#pragma unroll
          for (int nj = 0; nj < kD / 16; ++nj)
            *reinterpret_cast<float2*>(tot + j * kD + n0 + nj * 8 + 2 * cq) =
                make_float2(X[0][nj][0], X[0][nj][1]);
            // Exclusive prefix sums of k dk_st over the 16 rows: shift down one row (row 8 takes row 7), then
            // an inclusive scan within each half, then half 1 gets half 0's total.
#pragma unroll
        for (int nj = 0; nj < kD / 16; ++nj)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float a0 = Y[0][nj][e], a1 = Y[0][nj][2 + e];  // rows gq, gq + 8
            const float up0 = __shfl_up_sync(0xffffffffu, a0, 4), up1 = __shfl_up_sync(0xffffffffu, a1, 4);
            const float row7 = __shfl_sync(0xffffffffu, a0, 28 + cq);
            float x0 = gq ? up0 : 0.f, x1 = gq ? up1 : row7;
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) {
              const float y0 = __shfl_up_sync(0xffffffffu, x0, 4 * o);
              const float y1 = __shfl_up_sync(0xffffffffu, x1, 4 * o);
              if (gq >= o) x0 += y0, x1 += y1;
            }
            x1 += __shfl_sync(0xffffffffu, x0, 28 + cq);
            Y[0][nj][e] = x0, Y[0][nj][2 + e] = x1;
            if (gq == 7) tot_st[j * kD + n0 + nj * 8 + 2 * cq + e] = x1 + a1;  // the 16 rows' total
          }
        __syncthreads();  // the four sub-chunks' totals
#pragma unroll
        for (int nj = 0; nj < kD / 16; ++nj) {
          const int col = n0 + nj * 8 + 2 * cq;
          const float2 e0 = *reinterpret_cast<const float2*>(rowdot + col);
          const float2 e1 = *reinterpret_cast<const float2*>(rowdot + kD + col);
          float2 rest =
              make_float2(fast_exp2(Glast[col]) * (e0.x + e1.x), fast_exp2(Glast[col + 1]) * (e0.y + e1.y));
          for (int j2 = j + 1; j2 < kNSub; ++j2) {
            const float2 t = *reinterpret_cast<const float2*>(tot + j2 * kD + col);
            rest.x += t.x, rest.y += t.y;
          }
          for (int j2 = 0; j2 < j; ++j2) {
            const float2 t = *reinterpret_cast<const float2*>(tot_st + j2 * kD + col);
            rest.x += t.x, rest.y += t.y;
          }
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int row = m0 + gq + 8 * hh;
            if (row < rows_valid)
              *reinterpret_cast<float2*>(dg + row * row_stride + col) =
                  make_float2(X[0][nj][2 * hh] + Y[0][nj][2 * hh] + rest.x,
                              X[0][nj][2 * hh + 1] + Y[0][nj][2 * hh + 1] + rest.y);
          }
        }
      }
      __syncthreads();  // raw q, k read
      scale_tile<kD, T>(stage + L::kQ, G, tid, [&](float g, int) { return p.scale * fast_exp2(g); });
      scale_tile<kD, T>(stage + L::kK, G, tid, [&](float g, int col) { return fast_exp2(Glast[col] - g); });
      __syncthreads();  // Qg = scale q exp(G), Kg = k exp(G_last - G)
      // ---- dv = A^T do + Kg dS
      zero_acc(X);
      warp_mma<1, kD / 16, kC / 16, true, true, kC, kD, T>(X, s0 + L::kPA, m0, 0, sst + L::kDo, 0, n0, lane);
      warp_mma<1, kD / 16, kD / 16, false, true, kD, kD, T>(X, sst + L::kK, m0, 0, s0 + L::kS, 0, n0, lane);
      store_acc_global<T>(static_cast<T*>(p.dv) + off, row_stride, X, m0, n0, rows_valid, lane);
    } else {
      scale_tile<kD, T>(stage + L::kQ, G, tid, [&](float g, int) { return p.scale * fast_exp2(g); });
      __syncthreads();
    }
    // dS = diag(exp(G_last)) dS + Qg^T do
    scale_rows(dS, ST::m0(warp), lane, [&](int r) { return fast_exp2(Glast[r]); });
    warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kD, T>(dS, sst + L::kQ, ST::m0(warp), 0, sst + L::kDo,
                                                             0, ST::n0(warp), lane);
    __syncthreads();
    if constexpr (kDkv) store_acc_smem<kD, T>(smem + L::kS, dS, ST::m0(warp), ST::n0(warp), lane);
    issue_gates(it + 1);
    issue(it + 2);
  }
  cp_async_wait<0>();
  if constexpr (kDkv) {
    if (seg == 0 && p.dh0) ST::store(p.dh0 + bh * kD * kD, dS, warp, lane);
  } else {
    ST::store(p.dseg_states + (bh * n_seg + seg) * kD * kD, dS, warp, lane);
  }
}

// dseg_states[s] <- dS at the end of segment s: d = dht; walking back over the segments, (at the end = d,
// d = diag(exp(seg_gate)) d + contribution).
template <int kD>
__global__ void gla_scan_bwd_kernel(const GlaChunkParams p) {
  constexpr int kv = kD * kD;
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
  if (i >= kv) return;
  const int64_t bh = blockIdx.y;
  const int n_seg = gla_chunk_segments(p), row = i / kD;
  const float4 dht =
      p.dht ? *reinterpret_cast<const float4*>(p.dht + bh * kv + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  linear_chunk::segment_scan<true>(p.dseg_states + bh * n_seg * kv + i, kv, n_seg, dht,
                                   [&](int s) { return __expf(p.seg_gate[(bh * n_seg + s) * kD + row]); });
}

}  // namespace attnlab::kernels::gla_chunk
