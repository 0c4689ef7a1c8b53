// The linear_chunk kernels (params.h has the semantics, docs/kernels.md the design). Grids are
// (segment, head, batch) with 8 warps per block; each block walks the 64-token chunks of its segment,
// two chunks in flight through cp.async, the K x V state (or its gradient) in float32 registers and a
// 16-bit copy of it in shared memory as the operand of the next chunk's products.
#pragma once

#include "kernels/linear_chunk/linear_chunk_common.cuh"

namespace attnlab::kernels::linear_chunk {

__device__ __forceinline__ int64_t bh_index(int b, int h, int H) {
  return static_cast<int64_t>(b) * H + h;
}

// The start of every chunk step: waits for the chunk's copies (the next chunk's may still be in flight),
// then (with a gate) turns the chunk's gates g into the in-chunk cumsum G, this warp's own copy: no warp
// waits on another's scan. Returns G_last (0 without gate).
template <bool kGated>
__device__ __forceinline__ float begin_chunk(const float* g, float* G, int lane) {
  cp_async_wait<1>();
  __syncthreads();
  if constexpr (kGated) {
    gate_cumsum_warp(g, G, lane);
    return G[kC - 1];
  }
  return 0.f;
}

// Each warp's cumulative gates (begin_chunk), [kWarps][kC] floats at the end of every kernel's shared memory.
constexpr int kWarpGateBytes = kWarps * kC * 4;

// S = exp(G_last) S + K^T Vw for the state tile in registers (Vw: V rows times exp(G_last - G_s), or V).
template <int kD, typename T, bool kGated, int MT, int NT>
__device__ __forceinline__ void update_state(float (&S)[MT][NT][4], float g_last, uint32_t sK, uint32_t sVw,
                                             int warp, int lane) {
  using ST = StateTile<kD, kD>;
  if constexpr (kGated) ST::scale(S, __expf(g_last));
  warp_mma<MT, NT, kC / 16, true, true, kD, kD, T>(S, sK, ST::m0(warp), 0, sVw, 0, ST::n0(warp), lane);
}

// ---------------------------------------------------------------- forward
// Shared memory of fwd_kernel: two stages of (Q, K, V tiles, gates), then the 16-bit state, the scaled V
// and the scores. Q, the state copy and the scores only when the kernel writes outputs.
template <int kD, bool kOutput>
struct FwdSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0;
  static constexpr int kK = kOutput ? kTile : 0;
  static constexpr int kV = kK + kTile;
  static constexpr int kG = kV + kTile;
  static constexpr int kStage = kG + kC * 4;
  static constexpr int kS = 2 * kStage;                         // [kD][kD] state, 16-bit
  static constexpr int kVw = kS + (kOutput ? kD * kD * 2 : 0);  // [C][kD] V rows times exp(G_last - G_s)
  static constexpr int kP = kVw + kTile;                        // [C][C] decayed masked scores
  static constexpr int kGw = kP + (kOutput ? kC * kC * 2 : 0);
  static constexpr int kBytes = kGw + kWarpGateBytes;
};

// kOutput = false: the state contribution of segment blockIdx.x (from a zero state) and its gate sum, into
// seg_states / seg_gate. kOutput = true: o for segment blockIdx.x from the state entering it (seg_states
// after the scan, or h0), and ht from the last segment.
// Two blocks per SM (<= 128 registers) wherever two fit in shared memory: the state pass (kOutput = false;
// at D = 128 it took 146-160 registers, one block per SM, and ran its (n_seg - 1) B H blocks in two waves
// where one fits in 80 KB per block), and the output pass at D = 64 (126-140 registers: the gated one ran
// one block per SM, against the two per SM linear_chunk_default_seg_chunks assumes there).
template <int kD, typename T, bool kGated, bool kOutput>
__global__ void __launch_bounds__(kThreads, (kOutput && kD == 128) ? 1 : 2)
    fwd_kernel(const LinearChunkParams p) {
  using L = FwdSmem<kD, kOutput>;
  using ST = StateTile<kD, kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), n_seg = linear_chunk_segments(p);
  const int c_begin = seg * p.seg_chunks, c_end = min(nt, c_begin + p.seg_chunks);
  const int64_t bh = bh_index(b, h, p.H);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const uint32_t s0 = smem_u32(smem);

  auto issue = [&](int c) {
    if (c < c_end) {
      const int st = (c - c_begin) & 1, t0 = c * kC;
      const uint32_t base = s0 + st * L::kStage;
      if constexpr (kOutput) load_chunk<kD>(base + L::kQ, q, b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kK, k, b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kV, v, b, t0, h, p.T, p.H, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.g, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();  // empty groups past the end keep wait_group<1> exact
  };
  issue(c_begin);
  issue(c_begin + 1);

  float S[ST::MT][ST::NT][4];
  const float* S_init = nullptr;
  if constexpr (kOutput)
    S_init = n_seg > 1 ? p.seg_states + (bh * n_seg + seg) * kD * kD : (p.h0 ? p.h0 + bh * kD * kD : nullptr);
  ST::load(S, S_init, warp, lane);
  if constexpr (kOutput) store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
  float seg_g = 0.f;

  const int m0 = 16 * (warp % 4);         // token rows of this warp in C x * tiles
  const int n0o = (kD / 2) * (warp / 4);  // output columns

  for (int c = c_begin; c < c_end; ++c) {
    const int st = (c - c_begin) & 1, t0 = c * kC;
    unsigned char* stage = smem + st * L::kStage;
    const float* g_chunk = reinterpret_cast<const float*>(stage + L::kG);
    float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;
    const float g_last = begin_chunk<kGated>(g_chunk, G, lane);
    if constexpr (kGated)
      scale_tile_rows<kD, T>(smem + L::kVw, stage + L::kV, tid, [&](int r) { return __expf(g_last - G[r]); });
    if constexpr (kOutput) {
      decayed_scores<kD, T, kGated, false>(smem + L::kP, s0 + st * L::kStage + L::kQ,
                                           s0 + st * L::kStage + L::kK, G, p.scale, warp, lane);
    }
    __syncthreads();  // Vw and P ready
    if constexpr (kOutput) {
      float O[1][kD / 16][4];
      zero_acc(O);
      // inter-chunk part: scale exp(G_t) q_t^T S
      warp_mma<1, kD / 16, kD / 16, false, true, kD, kD, T>(O, s0 + st * L::kStage + L::kQ, m0, 0, s0 + L::kS,
                                                            0, n0o, lane);
      scale_rows(O, m0, lane, [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
      // intra-chunk part: P v
      warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(O, s0 + L::kP, m0, 0, s0 + st * L::kStage + L::kV,
                                                            0, n0o, lane);
      T* o = static_cast<T*>(p.o) + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      store_acc_global<T>(o, static_cast<int64_t>(p.H) * kD, O, m0, n0o, p.T - t0, lane);
    }
    // state: S = exp(G_last) S + K^T (V exp(G_last - G_s))
    update_state<kD, T, kGated>(S, g_last, s0 + st * L::kStage + L::kK,
                                s0 + (kGated ? L::kVw : st * L::kStage + L::kV), warp, lane);
    seg_g += g_last;
    __syncthreads();  // every read of this stage, the state copy, Vw and P is done
    if constexpr (kOutput) store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
    issue(c + 2);
  }
  cp_async_wait<0>();

  if constexpr (kOutput) {
    if (seg == n_seg - 1 && p.ht) ST::store(p.ht + bh * kD * kD, S, warp, lane);
    // The last segment's gate sum: the forward scan never needs it (no segment follows), the backward's
    // reverse scan does (the state gradient crosses it first), and only this pass walks that segment.
    if (seg == n_seg - 1 && n_seg > 1 && tid == 0) p.seg_gate[bh * n_seg + seg] = seg_g;
  } else {
    ST::store(p.seg_states + (bh * n_seg + seg) * kD * kD, S, warp, lane);
    if (tid == 0) p.seg_gate[bh * n_seg + seg] = seg_g;
  }
}

// seg_states[s] <- the state entering segment s: h = h0; for each segment, (entering = h,
// h = exp(seg_gate) h + contribution). Each thread owns 4 consecutive state entries of one (b, h).
template <bool kGated>
__global__ void scan_fwd_kernel(const LinearChunkParams p) {
  const int kv = p.K * p.V;
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
  if (i >= kv) return;
  const int64_t bh = blockIdx.y;
  const int n_seg = linear_chunk_segments(p);
  const float4 h0 =
      p.h0 ? *reinterpret_cast<const float4*>(p.h0 + bh * kv + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  segment_scan<false>(p.seg_states + bh * n_seg * kv + i, kv, n_seg, h0,
                      [&](int s) { return kGated ? __expf(p.seg_gate[bh * n_seg + s]) : 1.f; });
}

// ---------------------------------------------------------------- backward
// Gradients (derivation in linear_chunk_bwd.cu). Inside a chunk, with G the in-chunk cumulative gate,
// w_s = exp(G_last - G_s) and the decayed causal masks
//   Pq[t][s] = scale (do_t . v_s) exp(G_t - G_s) (s <= t),  Pk[s][t] = scale (q_t . k_s) exp(G_t - G_s),
//   Pv[s][t] = scale (do_t . v_s) exp(G_t - G_s) (t >= s):
//   dq_t = scale exp(G_t) S_in do_t + sum_s Pq[t][s] k_s
//   dv_s = w_s dS_out^T k_s + sum_t Pk[s][t] do_t,   dk_s = w_s dS_out v_s + sum_t Pv[s][t] q_t
//   dS_in = exp(G_last) dS_out + sum_t scale exp(G_t) q_t do_t^T
// S_in is the state entering the chunk (forward walk), dS_out the gradient of the state leaving it
// (reverse walk).

// dq: the forward walk again (state recomputed from the entering state the forward saved), dq per chunk,
// and with a gate q.dq per token added into dg_work and the chunk-entering states into chunk_states.
template <int kD>
struct DqSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kDo = 0, kV = kTile, kK = 2 * kTile, kQ = 3 * kTile, kG = 4 * kTile;
  static constexpr int kStage = kG + kC * 4;
  static constexpr int kS = 2 * kStage;
  static constexpr int kVw = kS + kD * kD * 2;
  static constexpr int kP = kVw + kTile;
  static constexpr int kGw = kP + kC * kC * 2;
  static constexpr int kBytes = kGw + kWarpGateBytes;
};

template <int kD, typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, kD == 128 ? 1 : 2) bwd_dq_kernel(const LinearChunkParams p) {
  using L = DqSmem<kD>;
  using ST = StateTile<kD, kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), n_seg = linear_chunk_segments(p);
  const int c_begin = seg * p.seg_chunks, c_end = min(nt, c_begin + p.seg_chunks);
  const int64_t bh = bh_index(b, h, p.H);
  const uint32_t s0 = smem_u32(smem);

  auto issue = [&](int c) {
    if (c < c_end) {
      const int st = (c - c_begin) & 1, t0 = c * kC;
      const uint32_t base = s0 + st * L::kStage;
      load_chunk<kD>(base + L::kDo, static_cast<const T*>(p.dout), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kV, static_cast<const T*>(p.v), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
      if constexpr (kGated) {
        load_chunk<kD>(base + L::kQ, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
        load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.g, b, t0, h, p.T, p.H, tid);
      }
    }
    cp_async_commit();
  };
  issue(c_begin);
  issue(c_begin + 1);

  float S[ST::MT][ST::NT][4];
  ST::load(S,
           n_seg > 1 ? p.seg_states + (bh * n_seg + seg) * kD * kD : (p.h0 ? p.h0 + bh * kD * kD : nullptr),
           warp, lane);
  store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);

  const int m0 = 16 * (warp % 4), n0o = (kD / 2) * (warp / 4);  // token rows, output columns
  for (int c = c_begin; c < c_end; ++c) {
    const int st = (c - c_begin) & 1, t0 = c * kC;
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    const float* g_chunk = reinterpret_cast<const float*>(stage + L::kG);
    float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;
    // The state entering the chunk, for dg's state term in the dkv walk (linear_chunk_bwd.cu).
    if constexpr (kGated)
      ST::template store_packed<T>(static_cast<uint32_t*>(p.chunk_states) + (bh * nt + c) * (kD * kD / 2), S,
                                   tid);
    const float g_last = begin_chunk<kGated>(g_chunk, G, lane);
    if constexpr (kGated)
      scale_tile_rows<kD, T>(smem + L::kVw, stage + L::kV, tid, [&](int r) { return __expf(g_last - G[r]); });
    decayed_scores<kD, T, kGated, false>(smem + L::kP, sst + L::kDo, sst + L::kV, G, p.scale, warp, lane);
    __syncthreads();
    {
      float DQ[1][kD / 16][4];
      zero_acc(DQ);
      warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(DQ, sst + L::kDo, m0, 0, s0 + L::kS, 0, n0o,
                                                             lane);
      scale_rows(DQ, m0, lane, [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
      warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(DQ, s0 + L::kP, m0, 0, sst + L::kK, 0, n0o, lane);
      T* dq = static_cast<T*>(p.dq) + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      store_acc_global<T>(dq, static_cast<int64_t>(p.H) * kD, DQ, m0, n0o, p.T - t0, lane);
      if constexpr (kGated) {
        const float2 d = row_dot<kD, T>(DQ, stage + L::kQ, m0, n0o, lane);
        if ((lane & 3) == 0) {
          const int r = m0 + (lane >> 2);
          if (t0 + r < p.T) atomicAdd(p.dg_work + bh * 2 * p.T + t0 + r, d.x);
          if (t0 + r + 8 < p.T) atomicAdd(p.dg_work + bh * 2 * p.T + t0 + r + 8, d.y);
        }
      }
    }
    update_state<kD, T, kGated>(S, g_last, sst + L::kK, kGated ? s0 + L::kVw : sst + L::kV, warp, lane);
    __syncthreads();
    store_acc_smem<kD, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
    issue(c + 2);
  }
  cp_async_wait<0>();
}

// dS contributions: kDkv = false: the state-gradient contribution of segment blockIdx.x + 1 from a zero
// gradient at its end (reverse walk), into dseg_states. kDkv = true: dk, dv for segment blockIdx.x from
// the gradient at its end (dseg_states after the scan, or dht), k.dk_in per token subtracted from dg_work
// and k.dk_st added into its second half, the state term exp(G_last) <S_in, dS_out> into chunk_dg,
// and dh0 from segment 0.
template <int kD, bool kDkv>
struct DkvSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0, kDo = kTile;
  static constexpr int kK = 2 * kTile, kV = 3 * kTile;
  static constexpr int kG = (kDkv ? 4 : 2) * kTile;
  static constexpr int kStage = kG + kC * 4;
  static constexpr int kQw = 2 * kStage;         // [C][kD] q rows times scale exp(G_t)
  static constexpr int kS = kQw + kTile;         // [kD][kD] 16-bit dS (dkv only)
  static constexpr int kP1 = kS + kD * kD * 2;   // [C][C] Pk
  static constexpr int kP2 = kP1 + kC * kC * 2;  // [C][C] Pv
  static constexpr int kGw = kDkv ? kP2 + kC * kC * 2 : kS;
  static constexpr int kBytes = kGw + kWarpGateBytes;
};

template <int kD, typename T, bool kGated, bool kDkv>
__global__ void __launch_bounds__(kThreads, (kDkv && kD == 128) ? 1 : 2)
    bwd_dkv_kernel(const LinearChunkParams p) {
  using L = DkvSmem<kD, kDkv>;
  using ST = StateTile<kD, kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seg = kDkv ? blockIdx.x : blockIdx.x + 1, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), n_seg = linear_chunk_segments(p);
  const int c_begin = seg * p.seg_chunks, c_end = min(nt, c_begin + p.seg_chunks);
  const int64_t bh = bh_index(b, h, p.H);
  const uint32_t s0 = smem_u32(smem);

  // The walk goes backwards: step i handles chunk c_end - 1 - i.
  auto issue = [&](int i) {
    const int c = c_end - 1 - i;
    if (c >= c_begin) {
      const int st = i & 1, t0 = c * kC;
      const uint32_t base = s0 + st * L::kStage;
      load_chunk<kD>(base + L::kQ, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kDo, static_cast<const T*>(p.dout), b, t0, h, p.T, p.H, tid);
      if constexpr (kDkv) {
        load_chunk<kD>(base + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
        load_chunk<kD>(base + L::kV, static_cast<const T*>(p.v), b, t0, h, p.T, p.H, tid);
      }
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.g, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };
  issue(0);
  issue(1);

  float dS[ST::MT][ST::NT][4];
  const float* dS_init = nullptr;
  if constexpr (kDkv)
    dS_init =
        n_seg > 1 ? p.dseg_states + (bh * n_seg + seg) * kD * kD : (p.dht ? p.dht + bh * kD * kD : nullptr);
  ST::load(dS, dS_init, warp, lane);
  if constexpr (kDkv) store_acc_smem<kD, T>(smem + L::kS, dS, ST::m0(warp), ST::n0(warp), lane);

  const int m0 = 16 * (warp % 4), n0o = (kD / 2) * (warp / 4);  // token rows, output columns
  const int steps = c_end - c_begin;
  __shared__ float chunk_end_dot[2][kWarps];  // per-warp shares of <S_in, dS_out>, by step parity
  for (int i = 0; i < steps; ++i) {
    const int c = c_end - 1 - i, st = i & 1, t0 = c * kC;
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    const float* g_chunk = reinterpret_cast<const float*>(stage + L::kG);
    float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;
    if constexpr (kDkv && kGated) {
      // dS is the gradient of the state at this chunk's end: dg's state term exp(G_last) <S_in, dS>
      // (linear_chunk_bwd.cu).
      float d = ST::template dot_packed<T>(
          static_cast<const uint32_t*>(p.chunk_states) + (bh * nt + c) * (kD * kD / 2), dS, tid);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
      if (lane == 0) chunk_end_dot[st][warp] = d;
    }
    const float g_last = begin_chunk<kGated>(g_chunk, G, lane);
    scale_tile_rows<kD, T>(smem + L::kQw, stage + L::kQ, tid,
                           [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
    if constexpr (kDkv) {
      // rows s, columns t >= s
      decayed_scores<kD, T, kGated, true>(smem + L::kP1, sst + L::kK, sst + L::kQ, G, p.scale, warp, lane);
      decayed_scores<kD, T, kGated, true>(smem + L::kP2, sst + L::kV, sst + L::kDo, G, p.scale, warp, lane);
    }
    __syncthreads();  // Qw, P1, P2 ready
    if constexpr (kDkv && kGated) {
      if (tid == 0) {
        float d = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) d += chunk_end_dot[st][w];
        p.chunk_dg[bh * nt + c] = __expf(g_last) * d;
      }
    }
    if constexpr (kDkv) {
      auto w = [&](int r) { return kGated ? __expf(g_last - G[r]) : 1.f; };
      const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
      const int64_t off = ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      float X[1][kD / 16][4];
      // dv = w_s (K dS)[s] + Pk do
      zero_acc(X);
      warp_mma<1, kD / 16, kD / 16, false, true, kD, kD, T>(X, sst + L::kK, m0, 0, s0 + L::kS, 0, n0o, lane);
      if constexpr (kGated) scale_rows(X, m0, lane, w);
      warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(X, s0 + L::kP1, m0, 0, sst + L::kDo, 0, n0o,
                                                            lane);
      store_acc_global<T>(static_cast<T*>(p.dv) + off, row_stride, X, m0, n0o, p.T - t0, lane);
      // dk = w_s (V dS^T)[s] + Pv q
      zero_acc(X);
      warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(X, sst + L::kV, m0, 0, s0 + L::kS, 0, n0o, lane);
      float2 dst = make_float2(0.f, 0.f);  // k.dk_st: the part of k.dk through the chunk-end state
      if constexpr (kGated) {
        scale_rows(X, m0, lane, w);
        dst = row_dot<kD, T>(X, stage + L::kK, m0, n0o, lane);
      }
      warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(X, s0 + L::kP2, m0, 0, sst + L::kQ, 0, n0o, lane);
      store_acc_global<T>(static_cast<T*>(p.dk) + off, row_stride, X, m0, n0o, p.T - t0, lane);
      if constexpr (kGated) {
        // dg_work: -k.dk_in = -(k.dk - k.dk_st) (float32: no 16-bit rounding between the two), and k.dk_st
        // into the second half.
        const float2 d = row_dot<kD, T>(X, stage + L::kK, m0, n0o, lane);
        if ((lane & 3) == 0) {
          const int r = m0 + (lane >> 2);
          float* work = p.dg_work + bh * 2 * p.T;
          if (t0 + r < p.T) atomicAdd(work + t0 + r, dst.x - d.x), atomicAdd(work + p.T + t0 + r, dst.x);
          if (t0 + r + 8 < p.T)
            atomicAdd(work + t0 + r + 8, dst.y - d.y), atomicAdd(work + p.T + t0 + r + 8, dst.y);
        }
      }
    }
    // dS = exp(G_last) dS + Qw^T do
    if constexpr (kGated) ST::scale(dS, __expf(g_last));
    warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kD, T>(dS, s0 + L::kQw, ST::m0(warp), 0, sst + L::kDo,
                                                             0, ST::n0(warp), lane);
    __syncthreads();
    if constexpr (kDkv) store_acc_smem<kD, T>(smem + L::kS, dS, ST::m0(warp), ST::n0(warp), lane);
    issue(i + 2);
  }
  cp_async_wait<0>();
  if constexpr (kDkv) {
    if (seg == 0 && p.dh0) ST::store(p.dh0 + bh * kD * kD, dS, warp, lane);
  } else {
    ST::store(p.dseg_states + (bh * n_seg + seg) * kD * kD, dS, warp, lane);
  }
}

// dseg_states[s] <- dS at the end of segment s: d = dht; walking back over the segments, (at the end
// = d, d = exp(seg_gate) d + contribution).
template <bool kGated>
__global__ void scan_bwd_kernel(const LinearChunkParams p) {
  const int kv = p.K * p.V;
  const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
  if (i >= kv) return;
  const int64_t bh = blockIdx.y;
  const int n_seg = linear_chunk_segments(p);
  const float4 dht =
      p.dht ? *reinterpret_cast<const float4*>(p.dht + bh * kv + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  segment_scan<true>(p.dseg_states + bh * n_seg * kv + i, kv, n_seg, dht,
                     [&](int s) { return kGated ? __expf(p.seg_gate[bh * n_seg + s]) : 1.f; });
}

}  // namespace attnlab::kernels::linear_chunk
