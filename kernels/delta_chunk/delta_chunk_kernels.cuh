// The delta_chunk kernels (params.h has the semantics, docs/kernels.md the design). Grid (V-split, H, B) for
// the forward, (1, H, B) for the backward, 8 warps; each block walks every chunk of one (batch, head) with
// the K x V state (or its gradient; the forward's may be a slice of the value columns) in float32
// registers. The delta rule's state transition (exp(G_last) I - K_d^T W) is a K x K matrix per chunk, so,
// unlike linear_chunk, the sequence is not cut into segments: a scan over segments would multiply K x K
// matrices. Built on linear_chunk's building blocks (warp products on swizzled tiles, state tiles).
#pragma once

#include "kernels/common/flags.cuh"
#include "kernels/delta_chunk/params.h"
#include "kernels/linear_chunk/linear_chunk_common.cuh"

namespace attnlab::kernels::delta_chunk {

using namespace attnlab::kernels::linear_chunk;

__device__ __forceinline__ int64_t row_offset(int b, int t, int h, int T, int H, int D) {
  return ((static_cast<int64_t>(b) * T + t) * H + h) * D;
}

// Rows past T of the last chunk take the gate of the last real row, so that every exp(G_t - G_s) stays
// finite (their q, k, w, u, do are zero, so they add nothing). Call between two barriers.
__device__ __forceinline__ void pad_gates(float* G, int rows, int tid) {
  if (tid < kC && tid >= rows) G[tid] = G[rows - 1];
}

// vn = U - W S for this warp's C x kVb piece (rows 16 (warp % 4), columns (kVb / 2)(warp / 4)), stored
// 16-bit into the [C][kVb] tile vn and, when vw is not null, times exp(G_last - G_s) into vw. W, S, U:
// swizzled tiles ([C][kD], [kD][kVb], [C][kVb]); kVb = kD, or a slice of the value columns (V-split).
template <int kD, typename T, bool kGated, int kVb = kD>
__device__ __forceinline__ void corrected_values(unsigned char* vn, unsigned char* vw, uint32_t sW,
                                                 uint32_t sS, const unsigned char* U, const float* G,
                                                 float g_last, int warp, int lane) {
  const int m0 = 16 * (warp % 4), n0 = (kVb / 2) * (warp / 4);
  float X[1][kVb / 16][4];
  zero_acc(X);
  warp_mma<1, kVb / 16, kD / 16, false, true, kD, kVb, T>(X, sW, m0, 0, sS, 0, n0, lane);
#pragma unroll
  for (int nj = 0; nj < kVb / 16; ++nj)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = m0 + (lane >> 2) + half * 8, col = n0 + nj * 8 + 2 * (lane & 3);
      const uint32_t off = swz<kVb>(r, col / 8) + (col % 8) * 2;
      const float2 u = unpack2<T>(*reinterpret_cast<const uint32_t*>(U + off));
      const float a = u.x - X[0][nj][2 * half], b = u.y - X[0][nj][2 * half + 1];
      *reinterpret_cast<uint32_t*>(vn + off) = MmaType<T>::pack(a, b);
      if (vw) {
        const float w = kGated ? __expf(g_last - G[r]) : 1.f;
        *reinterpret_cast<uint32_t*>(vw + off) = MmaType<T>::pack(a * w, b * w);
      }
    }
}

// ---------------------------------------------------------------- forward
// The value columns of the state evolve independently given W and U (vn = U - W S column by column), so
// the forward may split them: block (x, h, b) owns columns x kVb .. + kVb (kVb = kD: no split), and every
// block recomputes the chunk's q k^T scores (cheap next to the state products).
// kOut: the one-pass kernel's layout (q in each stage, P, two stages). !kOut, the state pass: no q and no
// P, and kStatePassStages stages where they fit. Four stages (run 2026-12-04e) left its time where it was
// (ncu, DeltaNet D128 T = 32768: 600 -> 615 us): its chunk step is bound by the latency of its two dependent
// products, not by the copies, and two stages leave room for delta_wy's blocks beside it (streamed forward).
constexpr int kStatePassStages = 2;

// ---- The streamed output passes (docs/kernels.md "Streamed forward", "Streamed backward"): the two-pass
// forms' output pass runs on another stream beside the walk and takes each chunk as soon as the walk has
// stored it. p.walk_sync (params.h): the walk counts its started blocks in [0] and, after the barrier that
// follows its stores of chunk c, adds one to [1 + (b H + h) nt + c] per value slice. The output pass's part 3
// runs over (B * H, chunks) in the order the walk finishes them; part 4, after both in stream order, does the
// chunks that part 3 gave up.

struct OutBlock {
  int c, h, b;
};

// Block -> (chunk, head, batch) of an output pass: grid (chunks, H, B), or (B * H, chunks) for part 3, chunk
// 0 first, or the last first (last_first: the backward's walk runs in reverse).
__device__ __forceinline__ OutBlock out_block(int part, bool last_first, int nt, int H) {
  if (part != 3)
    return {static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z)};
  const int c = static_cast<int>(blockIdx.y);
  return {last_first ? nt - 1 - c : c, static_cast<int>(blockIdx.x) % H, static_cast<int>(blockIdx.x) / H};
}

// Whether this block of an output pass does its chunk (slot = (b H + h) nt + c); every thread calls it. Part
// 3 waits, one thread then a barrier, until every walk block runs (or gives the chunk up after 50 us: the
// walk may not be placed while this pass's blocks hold the SMs; once every walk block runs, waiting cannot
// block, since the walk waits for nothing this pass does) and then until the chunk's v_split slices are
// posted. Part 4 skips what part 3 did; parts 0 and 2 (no sync) do every chunk.
__device__ __forceinline__ bool out_block_go(int* sync, int part, int walk_blocks, int v_split, int64_t slot,
                                             bool give_up) {
  if (!sync || (part != 3 && part != 4)) return true;
  if (part == 4) return sync[1 + slot] != v_split + 1;
  if (give_up) return false;  // DeltaChunkParams::sync_give_up (tests)
  __shared__ int go;
  if (threadIdx.x == 0) go = wait_count(sync, walk_blocks, 50000) && wait_count(sync + 1 + slot, v_split);
  __syncthreads();
  return go != 0;
}

// Part 3 marks its chunk done for part 4 (which the stream order runs after the whole of part 3).
__device__ __forceinline__ void out_block_done(int* sync, int part, int v_split, int64_t slot) {
  if (sync && part == 3 && threadIdx.x == 0) sync[1 + slot] = v_split + 1;
}

template <int kD, int kVb, bool kOut = true>
struct FwdSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kVTile = kC * kVb * 2;
  static constexpr int kQ = 0, kK = kOut ? kTile : 0, kW = kK + kTile, kU = kW + kTile, kG = kU + kVTile;
  static constexpr int kStage = kG + kC * 4;
  static constexpr int kPBytes = kOut ? kC * kC * 2 : 0;
  static constexpr int kRest = kD * kVb * 2 + 2 * kVTile + kPBytes;
  static constexpr int kFit = (227 * 1024 - kRest) / kStage;
  static constexpr int kStages = kOut ? 2 : (kFit < kStatePassStages ? kFit : kStatePassStages);
  static_assert(kStages >= 2, "the forward walk needs two stages");
  static constexpr int kS = kStages * kStage;    // [kD][kVb] entering state, 16-bit
  static constexpr int kVn = kS + kD * kVb * 2;  // [C][kVb] vn
  static constexpr int kVw = kVn + kVTile;       // [C][kVb] vn rows times exp(G_last - G_s)
  static constexpr int kP = kVw + kVTile;        // [C][C] scale (q.k) exp(G_t - G_s), s <= t (kOut)
  static constexpr int kBytes = kP + kPBytes;
  // The one-pass kernel's second state copy where it fits (every shape but D = kVb = 128): chunk c reads
  // copy c % 2 and writes copy (c + 1) % 2, which saves the barrier before the rewrite.
  static constexpr int kS2 = kBytes;
  static constexpr bool kTwoStates = kBytes + kD * kVb * 2 <= 227 * 1024;
  static constexpr int kOutBytes = kTwoStates ? kBytes + kD * kVb * 2 : kBytes;  // the one-pass kernel's
};

// kOut = true: the one-pass forward (o computed in the walk). kOut = false: the state pass of the two-pass
// forward (p.vn set): the walk only stores the states and vn, and delta_out_kernel computes o afterwards,
// every chunk at once (for few (batch, head) pairs, where the walk runs on a fraction of the SMs).
template <int kD, int kVb, typename T, bool kGated, bool kOut = true>
__global__ void __launch_bounds__(kThreads, kD == 64 && kOut ? 2 : 1)
    delta_fwd_kernel(const DeltaChunkParams p) {
  using L = FwdSmem<kD, kVb, kOut>;
  using ST = StateTile<kD, kVb>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int v0 = blockIdx.x * kVb, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const uint32_t s0 = smem_u32(smem);
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;  // of every [B, T, H, D] tensor (K = V = kD)

  auto issue = [&](int c) {
    if (c < nt) {
      if (p.wy_ready) wait_flag(p.wy_ready + bh * nt + c);  // w, u, G of chunk c stored (streamed forward)
      const int st = c % L::kStages, t0 = c * kC;
      const uint32_t base = s0 + st * L::kStage;
      if constexpr (kOut) load_chunk<kD>(base + L::kQ, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(base + L::kW, static_cast<const T*>(p.w), b, t0, h, p.T, p.H, tid);
      // u null (state_only's transition walk): zeros, by copies of no bytes
      load_tile<kC, kVb, kThreads, T>(
          base + L::kU,
          p.u ? static_cast<const T*>(p.u) + row_offset(b, t0, h, p.T, p.H, kD) + v0
              : static_cast<const T*>(p.w),
          row_stride, p.u ? p.T - t0 : 0, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.G, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };
  constexpr bool kTwoS = kOut && L::kTwoStates;
  auto s_copy = [](int c) { return kTwoS && (c & 1) ? L::kS2 : L::kS; };  // chunk c's entering state copy
  issue(0);
  if constexpr (!kOut) {
    for (int i = 1; i < L::kStages - 1; ++i) issue(i);
  } else if constexpr (!kTwoS) {
    issue(1);
  }

  // Streamed output pass (two-pass form only): the output pass's blocks start waiting on this walk's chunks
  // only once every walk block runs.
  if (!kOut && p.walk_sync && tid == 0) atomicAdd(p.walk_sync, 1);
  float S[ST::MT][ST::NT][4];
  ST::load(S, p.h0 ? p.h0 + bh * kD * kD + v0 : nullptr, warp, lane, kD);
  store_acc_smem<kVb, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);

  const int m0 = 16 * (warp % 4), n0o = (kVb / 2) * (warp / 4);  // token rows, output columns
  T* hs = p.hs ? static_cast<T*>(p.hs) + bh * nt * kD * kD + v0 : nullptr;
  // Barriers per chunk: two (stage and state copy ready; vn, Vw, P ready), each on the critical path of every
  // chunk. The state pass reads the state copy only before its second barrier, so each warp rewrites its
  // piece at once, and the next stage's wait and its barrier close the chunk. The one-pass form reads it
  // after (o = q S), so it writes the other copy (kTwoS; the next chunk's first barrier orders both), or,
  // at D = kVb = 128 where one copy fills the shared memory, takes a third barrier before the rewrite.
  if constexpr (!kOut) {
    cp_async_wait<L::kStages - 2>();
    __syncthreads();  // chunk 0's stage, the state copy
  }
  for (int c = 0; c < nt; ++c) {
    const int st = c % L::kStages, t0 = c * kC, rows = min(kC, p.T - t0);
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    float* G = reinterpret_cast<float*>(stage + L::kG);
    const int sc = s_copy(c);
    if constexpr (kTwoS) {
      cp_async_wait<0>();  // chunk c's stage: the only copies in flight
      __syncthreads();     // it and state copy sc ready; every read of chunk c - 1's stage, vn, Vw, P done
      issue(c + 1);        // into chunk c - 1's stage
    } else if constexpr (kOut) {
      cp_async_wait<1>();
      __syncthreads();
    } else {
      issue(c + L::kStages - 1);  // into chunk c - 1's stage, whose reads are behind the last barrier
    }
    if (kGated && rows < kC) {
      pad_gates(G, rows, tid);
      __syncthreads();
    }
    const float g_last = kGated ? G[kC - 1] : 0.f;
    // The entering state (this block's columns), saved for the backward (16-bit, as the products read it),
    // unless no backward follows a one-pass forward (p.hs null).
    if (!kOut || p.hs)
      store_tile<kD, kVb, kThreads, T>(hs + static_cast<int64_t>(c) * kD * kD, kD, smem + sc, kD, tid);
    // vn = U - W S, stored as is and times exp(G_last - G_s)
    corrected_values<kD, T, kGated, kVb>(smem + L::kVn, smem + L::kVw, sst + L::kW, s0 + sc, stage + L::kU, G,
                                         g_last, warp, lane);
    // P = scale (q k^T) exp(G_t - G_s), s <= t
    if constexpr (kOut)
      decayed_scores<kD, T, kGated, false>(smem + L::kP, sst + L::kQ, sst + L::kK, G, p.scale, warp, lane);
    __syncthreads();    // vn, Vw, P ready
    if (!kOut && p.vn)  // (state_only: the output pass forms vn from hs)
      store_tile<kC, kVb, kThreads, T>(static_cast<T*>(p.vn) + row_offset(b, t0, h, p.T, p.H, kD) + v0,
                                       row_stride, smem + L::kVn, rows, tid);
    if constexpr (kOut) {
      float O[1][kVb / 16][4];
      zero_acc(O);
      warp_mma<1, kVb / 16, kD / 16, false, true, kD, kVb, T>(O, sst + L::kQ, m0, 0, s0 + sc, 0, n0o, lane);
      scale_rows(O, m0, lane, [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
      warp_mma<1, kVb / 16, kC / 16, false, true, kC, kVb, T>(O, s0 + L::kP, m0, 0, s0 + L::kVn, 0, n0o,
                                                              lane);
      store_acc_global<T>(static_cast<T*>(p.o) + row_offset(b, t0, h, p.T, p.H, kD) + v0, row_stride, O, m0,
                          n0o, rows, lane);
    }
    if constexpr (kGated) ST::scale(S, __expf(g_last));
    warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kVb, T>(S, sst + L::kK, ST::m0(warp), 0, s0 + L::kVw, 0,
                                                              ST::n0(warp), lane);
    if constexpr (kTwoS) {
      // copy (c + 1) % 2 was last read by chunk c - 1, whose reads are behind this chunk's first barrier
      store_acc_smem<kVb, T>(smem + s_copy(c + 1), S, ST::m0(warp), ST::n0(warp), lane);
    } else if constexpr (kOut) {
      __syncthreads();  // every read of this stage, the state copy, vn, Vw, P is done
      store_acc_smem<kVb, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
    } else {
      store_acc_smem<kVb, T>(smem + L::kS, S, ST::m0(warp), ST::n0(warp), lane);
      cp_async_wait<L::kStages - 2>();  // chunk c + 1's stage (the later ones may still be in flight)
      __syncthreads();  // it and the state copy ready; every read of this stage, vn and Vw is done
      // chunk c's hs and vn slices are stored (before this barrier): the streamed output pass may take it
      if (p.walk_sync && tid == 0) post_count(p.walk_sync + 1 + bh * nt + c);
    }
    if constexpr (kOut && !kTwoS) issue(c + 2);
  }
  cp_async_wait<0>();
  if (p.ht) ST::store(p.ht + bh * kD * kD + v0, S, warp, lane, kD);
}

// The output pass of the two-pass forward: block (c, h, b) computes chunk c's o = scale exp(G_t) q_t S_in +
// P vn from the state the walk saved (hs) and its vn, with the same products in the same order as the
// one-pass kernel, so o comes out as the same bits. With state_only it forms vn = U - W S_in first, as the
// walk would have (W in a tile of its own). 104 KB of shared memory at D = 128: two blocks per SM.
template <int kD>
struct OutSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0, kK = kTile, kVn = 2 * kTile, kS = 3 * kTile;  // kS: [kD][kD] 16-bit
  static constexpr int kP = kS + kD * kD * 2;                                // [C][C]
  static constexpr int kG = kP + kC * kC * 2;
  static constexpr int kW = kG + kC * 4;  // state_only: W ([C][kD])
  static constexpr int kBytes = kW + kTile;
};

template <int kD, typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, kD == 64 ? 4 : 2) delta_out_kernel(const DeltaChunkParams p) {
  using L = OutSmem<kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int nt = linear_chunk_count(p.T);
  const OutBlock ob = out_block(p.fwd_part, false, nt, p.H);  // streamed (part 3): chunk 0 first
  const int c = ob.c, h = ob.h, b = ob.b, t0 = c * kC, rows = min(kC, p.T - t0);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  if (!out_block_go(p.walk_sync, p.fwd_part, p.B * p.H * p.v_split, p.v_split, bh * nt + c, p.sync_give_up))
    return;
  const uint32_t s0 = smem_u32(smem);
  float* G = reinterpret_cast<float*>(smem + L::kG);
  // Two copy groups: the scores need q, k and the gates only, so they are formed while S and vn land.
  load_chunk<kD>(s0 + L::kQ, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
  if constexpr (kGated) load_gates(G, p.G, b, t0, h, p.T, p.H, tid);
  cp_async_commit();
  // vn, or with state_only U (vn formed in its place below) and W
  load_chunk<kD>(s0 + L::kVn, static_cast<const T*>(p.state_only ? p.u : p.vn), b, t0, h, p.T, p.H, tid);
  if (p.state_only) load_chunk<kD>(s0 + L::kW, static_cast<const T*>(p.w), b, t0, h, p.T, p.H, tid);
  load_tile<kD, kD, kThreads, T>(s0 + L::kS, static_cast<const T*>(p.hs) + (bh * nt + c) * kD * kD, kD, kD,
                                 tid);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();
  if (kGated && rows < kC) {
    pad_gates(G, rows, tid);
    __syncthreads();
  }
  decayed_scores<kD, T, kGated, false>(smem + L::kP, s0 + L::kQ, s0 + L::kK, G, p.scale, warp, lane);
  cp_async_wait<0>();
  __syncthreads();
  if (p.state_only) {  // vn = U - W S_in in place (each element read and written by the same thread)
    corrected_values<kD, T, kGated>(smem + L::kVn, nullptr, s0 + L::kW, s0 + L::kS, smem + L::kVn, G, 0.f,
                                    warp, lane);
    __syncthreads();
  }
  const int m0 = 16 * (warp % 4), n0o = (kD / 2) * (warp / 4);
  float O[1][kD / 16][4];
  zero_acc(O);
  warp_mma<1, kD / 16, kD / 16, false, true, kD, kD, T>(O, s0 + L::kQ, m0, 0, s0 + L::kS, 0, n0o, lane);
  scale_rows(O, m0, lane, [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
  warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(O, s0 + L::kP, m0, 0, s0 + L::kVn, 0, n0o, lane);
  store_acc_global<T>(static_cast<T*>(p.o) + row_offset(b, t0, h, p.T, p.H, kD),
                      static_cast<int64_t>(p.H) * kD, O, m0, n0o, rows, lane);
  out_block_done(p.walk_sync, p.fwd_part, p.v_split, bh * nt + c);
}

// The segmented forms' correction (launch_delta_chunk_seg_fix). Forward: block (c, h, b) forms the state
// entering chunk c, L + P S_in (L: its segment's walk from zero, P: the product of the segment's transitions
// before it, S_in: the state entering the segment), summed in float32 from the 16-bit tiles and rounded once,
// and writes it to hs in [B, H, nt] order; segment 0 (from h0) is copied. kBwd: the same for the backward's
// dS (L: the walk from a zero gradient, Q: the products of the transposed transitions after chunk c, X: the
// gradient entering the segment from its right; the last segment, from dht, is copied) into dhs, and dU
// (= dvn = diag(exp(G_last - G)) K dS + P^T do, linear in dS) gets diag(exp(G_last - G)) K (Q X) added in
// place. Shared memory: three [kD][kD] tiles, and K and G for kBwd: 112 KB at D = 128, two blocks per SM.
template <int kD>
struct SegFixSmem {
  static constexpr int kTile = kD * kD * 2;
  static constexpr int kL = 0, kP = kTile, kIn = 2 * kTile, kK = 3 * kTile;  // kK: [C][kD] (kBwd)
  static constexpr int kG = kK + kC * kD * 2;
  static constexpr int kBytes = kG + kC * 4;
};

template <int kD, typename T, bool kBwd>
__global__ void __launch_bounds__(kThreads) delta_seg_fix_kernel(const DeltaChunkParams p) {
  using L = SegFixSmem<kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), nts = nt / p.segments, j = c / nts, n = c % nts;
  const bool fix = kBwd ? j < p.segments - 1 : j > 0;  // the segment that started from h0 / dht: a copy
  const int64_t seg_bh = (static_cast<int64_t>(b) * p.segments + j) * p.H + h;
  const uint32_t s0 = smem_u32(smem);
  load_tile<kD, kD, kThreads, T>(s0 + L::kL, static_cast<const T*>(p.seg_hs) + (seg_bh * nts + n) * kD * kD,
                                 kD, kD, tid);
  if (fix) {
    load_tile<kD, kD, kThreads, T>(s0 + L::kP, static_cast<const T*>(p.seg_p) + (seg_bh * nts + n) * kD * kD,
                                   kD, kD, tid);
    load_tile<kD, kD, kThreads, T>(s0 + L::kIn, static_cast<const T*>(p.seg_in) + seg_bh * kD * kD, kD, kD,
                                   tid);
    if constexpr (kBwd) {
      load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, c * kC, h, p.T, p.H, tid);
      if (p.G) load_gates(reinterpret_cast<float*>(smem + L::kG), p.G, b, c * kC, h, p.T, p.H, tid);
    }
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  // Warps over the kD / 16 row blocks and, at D = 64, two column halves each.
  constexpr int kRowBlocks = kD / 16, kCols = kD * kRowBlocks / (kThreads / 32), NT = kCols / 8;
  const int m0 = 16 * (warp % kRowBlocks), n0 = kCols * (warp / kRowBlocks);
  float acc[1][NT][4];  // P S_in (Q X), then plus L
  zero_acc(acc);
  if (fix) warp_mma<1, NT, kD / 16, false, true, kD, kD, T>(acc, s0 + L::kP, m0, 0, s0 + L::kIn, 0, n0, lane);
  if (kBwd && fix) {  // Q X (16-bit) into the product tile once every warp has read it
    __syncthreads();
    store_acc_smem<kD, T>(smem + L::kP, acc, m0, n0, lane);
  }
#pragma unroll
  for (int nj = 0; nj < NT; ++nj)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + (lane >> 2) + half * 8, col = n0 + nj * 8 + 2 * (lane & 3);
      const float2 x = tile_pair<kD, T>(smem + L::kL, row, col);
      acc[0][nj][2 * half] += x.x, acc[0][nj][2 * half + 1] += x.y;
    }
  store_acc_global<T>(
      static_cast<T*>(kBwd ? p.dhs : p.hs) + ((static_cast<int64_t>(b) * p.H + h) * nt + c) * kD * kD, kD,
      acc, m0, n0, kD, lane);
  if constexpr (kBwd) {
    if (!fix) return;
    __syncthreads();  // Q X stored
    // dU += diag(exp(G_last - G)) K (Q X): this warp's C x kD / 2 piece, read and written by the same thread
    const float* G = reinterpret_cast<const float*>(smem + L::kG);
    const int r0 = 16 * (warp % 4), c0 = (kD / 2) * (warp / 4);
    float d[1][kD / 16][4];
    zero_acc(d);
    warp_mma<1, kD / 16, kD / 16, false, true, kD, kD, T>(d, s0 + L::kK, r0, 0, s0 + L::kP, 0, c0, lane);
    T* du = static_cast<T*>(p.du) + row_offset(b, c * kC, h, p.T, p.H, kD);
    const int64_t stride = static_cast<int64_t>(p.H) * kD;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = r0 + (lane >> 2) + half * 8;
      const float w = p.G ? __expf(G[kC - 1] - G[row]) : 1.f;
#pragma unroll
      for (int nj = 0; nj < kD / 16; ++nj) {
        const int col = c0 + nj * 8 + 2 * (lane & 3);
        uint32_t* at = reinterpret_cast<uint32_t*>(du + row * stride + col);
        const float2 u = unpack2<T>(*at);
        *at = MmaType<T>::pack(u.x + w * d[0][nj][2 * half], u.y + w * d[0][nj][2 * half + 1]);
      }
    }
  }
}

// ---------------------------------------------------------------- backward
// The products of one chunk's backward, shared by the one-pass kernel and the two-pass form's two kernels
// (the same code, so their results are the same bits). Tile addresses are shared-memory (swizzled, 16-bit);
// m0 / n0o the warp's token rows and value columns (n0o within the kVb-column slice).

// The float32 [C][kVb] tile of P^T do that the two-pass walk reads (delta_bwd_local_kernel writes it): rows
// padded to kVb + 8 floats, so that the half-warps' float2 reads in the accumulator layout miss each other's
// banks.
template <int kVb>
struct LocalTile {
  static constexpr int kStride = kVb + 8;
  static constexpr int kBytes = kC * kStride * 4;
};

// dvn = w_s (K dS)[s] + P^T do over the slice's kVb value columns (= dU): to du (global, already at the
// slice's first column) and to the [C][kVb] tile dvn. The two terms are summed in float32 after both
// products, so the two-pass walk, which reads P^T do (kLocalIn: from the LocalTile `local`, computed before
// the walk by delta_bwd_local_kernel with these same products), gets the one-pass kernel's bits.
// kNegTile: the tile gets -dvn (du still dvn), so that the state step takes W^T (-dvn) from W as loaded
// (the negation is exact: the same bits as (-W)^T dvn).
template <int kD, int kVb, typename T, bool kGated, bool kLocalIn, bool kNegTile = false, typename Wf>
__device__ __forceinline__ void bwd_dvn(unsigned char* dvn, uint32_t sK, uint32_t sdS, uint32_t sP,
                                        uint32_t sDo, const float* local, T* du, int64_t row_stride, int rows,
                                        int m0, int n0o, int lane, Wf&& w) {
  // At kVb = 128 the warp's 64 columns go in two parts, so that both products' accumulators fit the
  // registers the kernels have left.
  constexpr int kParts = kVb >= 128 ? 2 : 1, kNT = kVb / 16 / kParts;
#pragma unroll
  for (int part = 0; part < kParts; ++part) {
    const int n0 = n0o + part * 8 * kNT;
    float Y[1][kNT][4];
    if constexpr (kLocalIn) {
#pragma unroll
      for (int nj = 0; nj < kNT; ++nj)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = m0 + (lane >> 2) + half * 8, c = n0 + nj * 8 + 2 * (lane & 3);
          const float2 y = *reinterpret_cast<const float2*>(local + r * LocalTile<kVb>::kStride + c);
          Y[0][nj][2 * half] = y.x, Y[0][nj][2 * half + 1] = y.y;
        }
    } else {
      zero_acc(Y);
      warp_mma<1, kNT, kC / 16, true, true, kC, kVb, T>(Y, sP, m0, 0, sDo, 0, n0, lane);
    }
    float X[1][kNT][4];
    zero_acc(X);
    warp_mma<1, kNT, kD / 16, false, true, kD, kVb, T>(X, sK, m0, 0, sdS, 0, n0, lane);
    if constexpr (kGated) scale_rows(X, m0, lane, w);
#pragma unroll
    for (int nj = 0; nj < kNT; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e) X[0][nj][e] += Y[0][nj][e];
    store_acc_global<T>(du, row_stride, X, m0, n0, rows, lane);
    if constexpr (kNegTile) scale_rows(X, m0, lane, [](int) { return -1.f; });
    store_acc_smem<kVb, T>(dvn, X, m0, n0, lane);
  }
}

// exp(G_last) <dS, S_in> over this warp's piece of the state (kD x kVb: rows and columns as StateTile's),
// both 16-bit tiles in the same swizzled layout (dS from its 16-bit copy, the one every product reads, so
// the one-pass backward and the two-pass one's second kernel sum the same values), summed over the warp:
// every lane gets it.
template <int kD, int kVb, typename T>
__device__ __forceinline__ float bwd_state_dot(const unsigned char* sds, const unsigned char* sin,
                                               float g_last, int warp, int lane) {
  using ST = StateTile<kD, kVb>;
  float e = 0.f;
#pragma unroll
  for (int mi = 0; mi < ST::MT; ++mi)
#pragma unroll
    for (int nj = 0; nj < ST::NT; ++nj)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = ST::m0(warp) + mi * 16 + (lane >> 2) + half * 8;
        const int col = ST::n0(warp) + nj * 8 + 2 * (lane & 3);
        const float2 d = tile_pair<kVb, T>(sds, r, col), x = tile_pair<kVb, T>(sin, r, col);
        e += d.x * x.x + d.y * x.y;
      }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) e += __shfl_xor_sync(0xffffffffu, e, off);
  return e * __expf(g_last);
}

// The lean output pass's refill of the state slot with dS, gated: the [kD][kD] 16-bit tile at s (S_in, in
// load_tile's layout) is replaced by dS from global memory (src, row-major [kD][kD], as load_tile would copy
// it), piece by piece through registers, and each thread sums its pieces' <dS, S_in> before it overwrites
// them: the dot needs both tiles, and the slot holds one. Returns exp(G_last) times the warp's share (every
// lane). dS is read through L2 (ld.global.cg): in the streamed backward another kernel wrote it moments ago.
template <int kD, typename T>
__device__ __forceinline__ float swap_in_state_dot(unsigned char* s, const T* src, float g_last, int tid,
                                                   int lane) {
  constexpr int kChunksPerRow = kD / 8, kRowStep = kThreads / kChunksPerRow, kN = kD / kRowStep;
  constexpr int kBatch = kN < 2 ? kN : 2;  // pieces in flight per thread (4 registers each)
  const int row = tid / kChunksPerRow, ch = tid % kChunksPerRow;
  float e = 0.f;
#pragma unroll
  for (int i0 = 0; i0 < kN; i0 += kBatch) {
    uint4 d[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      d[j] = __ldcg(reinterpret_cast<const uint4*>(src + (row + (i0 + j) * kRowStep) * kD + ch * 8));
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      uint4* slot = reinterpret_cast<uint4*>(s + swz<kD>(row, ch) + (i0 + j) * kRowStep * (kD * 2));
      const uint4 x = *slot;
      const uint32_t* dp = reinterpret_cast<const uint32_t*>(&d[j]);
      const uint32_t* xp = reinterpret_cast<const uint32_t*>(&x);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float2 a = unpack2<T>(dp[q]), b = unpack2<T>(xp[q]);
        e += a.x * b.x + a.y * b.y;
      }
      *slot = d[j];
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) e += __shfl_xor_sync(0xffffffffu, e, off);
  return e * __expf(g_last);
}

// dS_in = exp(G_last) dS + Qg^T do + A^T B in two steps, A^T B = (-W)^T dvn or W^T (-dvn) (do and dvn the
// slice's columns): the first needs nothing of this chunk's dvn, so the two-pass walk runs it before the
// barrier that dvn waits for, beside dvn's own products.
template <int kD, int kVb, typename T, bool kGated>
__device__ __forceinline__ void bwd_state_local(
    float (&dS)[StateTile<kD, kVb>::MT][StateTile<kD, kVb>::NT][4], uint32_t sQg, uint32_t sDo, float g_last,
    int warp, int lane) {
  using ST = StateTile<kD, kVb>;
  if constexpr (kGated) ST::scale(dS, __expf(g_last));
  warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kVb, T>(dS, sQg, ST::m0(warp), 0, sDo, 0, ST::n0(warp),
                                                            lane);
}
template <int kD, int kVb, typename T>
__device__ __forceinline__ void bwd_state_dvn(float (&dS)[StateTile<kD, kVb>::MT][StateTile<kD, kVb>::NT][4],
                                              uint32_t sA, uint32_t sB, int warp, int lane) {
  using ST = StateTile<kD, kVb>;
  warp_mma<ST::MT, ST::NT, kC / 16, true, true, kD, kVb, T>(dS, sA, ST::m0(warp), 0, sB, 0, ST::n0(warp),
                                                            lane);
}
template <int kD, int kVb, typename T, bool kGated>
__device__ __forceinline__ void bwd_state_step(float (&dS)[StateTile<kD, kVb>::MT][StateTile<kD, kVb>::NT][4],
                                               uint32_t sQg, uint32_t sDo, uint32_t sWneg, uint32_t sdVn,
                                               float g_last, int warp, int lane) {
  bwd_state_local<kD, kVb, T, kGated>(dS, sQg, sDo, g_last, warp, lane);
  bwd_state_dvn<kD, kVb, T>(dS, sWneg, sdVn, warp, lane);
}

// dW = -dvn S_in^T, dq = scale exp(G_t) (do S_in^T)_t + Pg k, dk = w_s (vn dS^T)[s] + Pg^T q, written to
// global at row offset roff; gated, their dG shares: q.dq - k.dk per row into dGs and sum_s k_s.(w_s (vn
// dS^T)[s]) into sums[0] (shared-memory atomics). L: the kernel's shared-memory layout (its tiles kQ, kK,
// kDo, kVn, kdVn, kSin, kdS, kPg at full width kD), at smem (address s0). after_dw and after_dq run (in
// every thread) after the dW and the dq products: a layout that refills tiles does it there.
struct NoHook {
  __device__ void operator()() const {}
};
template <int kD, typename L, typename T, bool kGated, typename Wf, typename H1 = NoHook,
          typename H2 = NoHook>
__device__ __forceinline__ void bwd_chunk_grads(const DeltaChunkParams& p, const unsigned char* smem,
                                                uint32_t s0, int64_t roff, int rows, const float* G, Wf&& w,
                                                float* dGs, float* sums, int m0, int n0o, int lane,
                                                H1&& after_dw = H1{}, H2&& after_dq = H2{}) {
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  {  // dW = -dvn S_in^T
    float X[1][kD / 16][4];
    zero_acc(X);
    warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(X, s0 + L::kdVn, m0, 0, s0 + L::kSin, 0, n0o,
                                                           lane);
    scale_rows(X, m0, lane, [](int) { return -1.f; });
    store_acc_global<T>(static_cast<T*>(p.dw) + roff, row_stride, X, m0, n0o, rows, lane);
  }
  after_dw();
  {  // dq = scale exp(G_t) (do S_in^T)_t + Pg k
    float X[1][kD / 16][4];
    zero_acc(X);
    warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(X, s0 + L::kDo, m0, 0, s0 + L::kSin, 0, n0o, lane);
    scale_rows(X, m0, lane, [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
    warp_mma<1, kD / 16, kC / 16, false, true, kC, kD, T>(X, s0 + L::kPg, m0, 0, s0 + L::kK, 0, n0o, lane);
    store_acc_global<T>(static_cast<T*>(p.dq) + roff, row_stride, X, m0, n0o, rows, lane);
    if constexpr (kGated) {
      const float2 d = row_dot<kD, T>(X, smem + L::kQ, m0, n0o, lane);
      if ((lane & 3) == 0) {
        atomicAdd(dGs + m0 + (lane >> 2), d.x);
        atomicAdd(dGs + m0 + (lane >> 2) + 8, d.y);
      }
    }
  }
  after_dq();
  {  // dk = w_s (vn dS^T)[s] + Pg^T q
    float X[1][kD / 16][4];
    zero_acc(X);
    warp_mma<1, kD / 16, kD / 16, false, false, kD, kD, T>(X, s0 + L::kVn, m0, 0, s0 + L::kdS, 0, n0o, lane);
    if constexpr (kGated) {
      scale_rows(X, m0, lane, w);
      const float2 d = row_dot<kD, T>(X, smem + L::kK, m0, n0o, lane);  // k_s . (w_s (vn dS^T)[s])
      float part = (lane & 3) == 0 ? d.x + d.y : 0.f;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
      if (lane == 0) atomicAdd(sums, part);
    }
    warp_mma<1, kD / 16, kC / 16, true, true, kC, kD, T>(X, s0 + L::kPg, m0, 0, s0 + L::kQ, 0, n0o, lane);
    store_acc_global<T>(static_cast<T*>(p.dk) + roff, row_stride, X, m0, n0o, rows, lane);
    if constexpr (kGated) {
      const float2 d = row_dot<kD, T>(X, smem + L::kK, m0, n0o, lane);
      if ((lane & 3) == 0) {
        atomicAdd(dGs + m0 + (lane >> 2), -d.x);
        atomicAdd(dGs + m0 + (lane >> 2) + 8, -d.y);
      }
    }
  }
}

// Per chunk, from the last one back, with S_in the saved entering state, dS the gradient of the state
// leaving the chunk, vn = U - W S_in, P as in the forward and Pg[t][s] = scale exp(G_t - G_s) (do_t . vn_s):
//   dvn = dU = P^T do + w_s (K dS)[s]            dW = -dvn S_in^T
//   dq  = scale exp(G_t) (do S_in^T)_t + Pg k    dk = Pg^T q + w_s (vn dS^T)[s]
//   dG_t = q_t.dq_t - k_t.dk_t, and G_last also gets sum_s k_s.(w_s (vn dS^T)[s]) + exp(G_last) <dS, S_in>
//   dS_in = exp(G_last) dS + (scale exp(G) q)^T do - W^T dvn
// One stage of tiles (five C x D tiles, two states and five scratch tiles fill 214 KB at D = 128), so the
// next chunk's tiles load into the slots as this chunk's last reads of them are done: w and u after the
// dS step (which runs before the chunk's gradients: it needs only dvn, and they read the saved 16-bit dS),
// S_in and do after dq, q and k after dk (the gates have two slots). Only the first chunk's copies wait
// whole; the others overlap the products that follow their slot's last read.
template <int kD>
struct BwdSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0, kK = kTile, kW = 2 * kTile, kU = 3 * kTile, kDo = 4 * kTile;
  static constexpr int kSin = 5 * kTile;          // [kD][kD] entering state (from hs)
  static constexpr int kdS = kSin + kD * kD * 2;  // [kD][kD] dS, 16-bit
  static constexpr int kVn = kdS + kD * kD * 2;   // [C][kD]
  static constexpr int kdVn = kVn + kTile;        // [C][kD]
  static constexpr int kQg = kdVn + kTile;        // [C][kD] q rows times scale exp(G_t)
  static constexpr int kP = kQg + kTile;          // [C][C]
  static constexpr int kPg = kP + kC * kC * 2;    // [C][C]
  static constexpr int kG = kPg + kC * kC * 2;    // [2][C] floats: the gates of this chunk and the next
  static constexpr int kdG = kG + 2 * kC * 4;     // [C] floats: dG of the chunk
  static constexpr int kSums = kdG + kC * 4;      // 2 floats: the G_last terms
  static constexpr int kBytes = kSums + 16;
};

template <int kD, typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, kD == 64 ? 2 : 1) delta_bwd_kernel(const DeltaChunkParams p) {
  using L = BwdSmem<kD>;
  using ST = StateTile<kD, kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const uint32_t s0 = smem_u32(smem);
  float* dGs = reinterpret_cast<float*>(smem + L::kdG);
  float* sums = reinterpret_cast<float*>(smem + L::kSums);
  const T* hs = static_cast<const T*>(p.hs) + bh * nt * kD * kD;

  float dS[ST::MT][ST::NT][4];
  ST::load(dS, p.dht ? p.dht + bh * kD * kD : nullptr, warp, lane);
  store_acc_smem<kD, T>(smem + L::kdS, dS, ST::m0(warp), ST::n0(warp), lane);
  if (tid < kC) dGs[tid] = 0.f;
  if (tid < 2) sums[tid] = 0.f;

  const int m0 = 16 * (warp % 4), n0o = (kD / 2) * (warp / 4);  // token rows, output columns
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  auto gates = [&](int c) { return reinterpret_cast<float*>(smem + L::kG) + (c & 1) * kC; };
  // The copies of chunk c's tiles in three groups, each issued once its slots are free (c >= 0).
  auto load_wu = [&](int c) {
    const int t0 = c * kC;
    load_chunk<kD>(s0 + L::kW, static_cast<const T*>(p.w), b, t0, h, p.T, p.H, tid);
    load_chunk<kD>(s0 + L::kU, static_cast<const T*>(p.u), b, t0, h, p.T, p.H, tid);
    if constexpr (kGated) load_gates(gates(c), p.G, b, t0, h, p.T, p.H, tid);
    cp_async_commit();
  };
  auto load_sdo = [&](int c) {
    load_chunk<kD>(s0 + L::kDo, static_cast<const T*>(p.dout), b, c * kC, h, p.T, p.H, tid);
    load_tile<kD, kD, kThreads, T>(s0 + L::kSin, hs + static_cast<int64_t>(c) * kD * kD, kD, kD, tid);
    cp_async_commit();
  };
  auto load_qk = [&](int c) {
    load_chunk<kD>(s0 + L::kQ, static_cast<const T*>(p.q), b, c * kC, h, p.T, p.H, tid);
    load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, c * kC, h, p.T, p.H, tid);
    cp_async_commit();
  };
  load_wu(nt - 1), load_sdo(nt - 1), load_qk(nt - 1);
  for (int c = nt - 1; c >= 0; --c) {
    const int t0 = c * kC, rows = min(kC, p.T - t0);
    float* G = gates(c);
    cp_async_wait<0>();
    __syncthreads();
    if (kGated && rows < kC) {
      pad_gates(G, rows, tid);
      __syncthreads();
    }
    const float g_last = kGated ? G[kC - 1] : 0.f;
    auto w = [&](int r) { return kGated ? __expf(g_last - G[r]) : 1.f; };
    // vn = U - W S_in; P = scale (q k^T) exp(G_t - G_s), s <= t
    corrected_values<kD, T, kGated>(smem + L::kVn, nullptr, s0 + L::kW, s0 + L::kSin, smem + L::kU, G, g_last,
                                    warp, lane);
    decayed_scores<kD, T, kGated, false>(smem + L::kP, s0 + L::kQ, s0 + L::kK, G, p.scale, warp, lane);
    scale_tile_rows<kD, T>(smem + L::kQg, smem + L::kQ, tid,
                           [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
    __syncthreads();  // vn, P, Qg ready; W is read no more before its negation below
    scale_tile_rows<kD, T>(smem + L::kW, smem + L::kW, tid, [](int) { return -1.f; });  // for dS_in
    {  // Pg = scale exp(G_t - G_s) (do_t . vn_s), s <= t
      decayed_scores<kD, T, kGated, false>(smem + L::kPg, s0 + L::kDo, s0 + L::kVn, G, p.scale, warp, lane);
    }
    bwd_dvn<kD, kD, T, kGated, false>(smem + L::kdVn, s0 + L::kK, s0 + L::kdS, s0 + L::kP, s0 + L::kDo,
                                      nullptr, static_cast<T*>(p.du) + row_offset(b, t0, h, p.T, p.H, kD),
                                      row_stride, rows, m0, n0o, lane, w);
    if constexpr (kGated) {  // exp(G_last) <dS, S_in>, from the 16-bit dS copy and S_in
      const float e = bwd_state_dot<kD, kD, T>(smem + L::kdS, smem + L::kSin, g_last, warp, lane);
      if (lane == 0) atomicAdd(sums + 1, e);
    }
    __syncthreads();  // Pg, dvn ready
    // dS_in into the registers (the gradients below read this chunk's dS from its 16-bit copy)
    bwd_state_step<kD, kD, T, kGated>(dS, s0 + L::kQg, s0 + L::kDo, s0 + L::kW, s0 + L::kdVn, g_last, warp,
                                      lane);
    __syncthreads();  // w (and u) are read no more
    if (c > 0) load_wu(c - 1);
    bwd_chunk_grads<kD, L, T, kGated>(p, smem, s0, row_offset(b, t0, h, p.T, p.H, kD), rows, G, w, dGs, sums,
                                      m0, n0o, lane, NoHook{}, [&] {
                                        __syncthreads();  // S_in and do are read no more
                                        if (c > 0) load_sdo(c - 1);
                                      });
    __syncthreads();  // every read of the tiles, dS, dvn, and every atomic into dGs / sums is done
    if (c > 0) load_qk(c - 1);
    if constexpr (kGated) {
      if (tid < rows) {
        float d = dGs[tid];
        if (tid == rows - 1) d += sums[0] + sums[1];
        p.dG[(static_cast<int64_t>(b) * p.T + t0 + tid) * p.H + h] = d;
      }
    }
    store_acc_smem<kD, T>(smem + L::kdS, dS, ST::m0(warp), ST::n0(warp), lane);
    __syncthreads();  // dG written out before the next chunk's atomics (and dS copied)
    if (tid < kC) dGs[tid] = 0.f;
    if (tid < 2) sums[tid] = 0.f;
  }
  if (p.dh0) ST::store(p.dh0 + bh * kD * kD, dS, warp, lane);
}

// ---------------------------------------------------------------- two-pass backward
// With p.dhs set, the backward runs in two passes (the same split as FLA's chunk_bwd_dhu + chunk_bwd_dqkwg),
// with p.bwd_local three (+ chunk_bwd_dv_local). The walk over the chunks keeps only what the recurrence of
// dS needs:
//   P, dvn = w_s (K dS)[s] + P^T do (= dU, written), dS_in = exp(G_last) dS + Qg^T do - W^T dvn
// (vn is not among them: it enters dq, dk and dW only) and saves the dS each chunk used (16-bit, as the
// one-pass kernel's products read it) into dhs. Every one of these is column-local in the value axis, so the
// walk splits V over v_split blocks like the forward, and reads no state: gated, dG_last's term
// exp(G_last) <dS, S_in> is summed by the second kernel, which holds both tiles anyway (the walk used to
// load S_in's slice for it alone, on its critical path). Then delta_bwd_out_kernel, one block per chunk,
// forms dW, dq, dk and dG from the saved S_in (hs), dS (dhs) and dvn (du) with the one-pass kernel's
// products in its order: dq, dk, dw, du and dh0 are the same bits; dG the same sums up to the order of its
// float atomics.
//
// p.bwd_local takes the scores P and P^T do out of the walk, into delta_bwd_local_kernel, one block per
// chunk before it: at 16 heads each of the walk's v_split blocks formed them again, chunk after chunk, on
// the walk's critical path (run 2026-12-03e: delta_bwd_walk 2002 us of Gated DeltaNet's 4.6 ms at D = 128,
// T = 32768). P^T do, float32 [B, T, H, V], is parked in dq and dk, whose 16-bit rows hold half a float32
// row each (local_row), and which only the last kernel writes. Run 2026-12-03g parked it as two 16-bit
// halves of each float32, in du and dhs, with 4-byte stores: forward + backward 5-9% slower than run f's
// float32 in dhs (which fits only at D = 128).
//
// The tiles read from global memory per chunk (q, k, w, the slice's do and P^T do, the gates) form one
// stage; as many stages as fit in the 227 KB a block may have, up to four (at D = 128: three with 32-column
// slices, two or three with 64, one unsplit), load ahead while this chunk is computed, since the walk's
// blocks are few and nothing else on the SM would hide the copies' latency: with two stages the copies of
// chunk c - 1 had one chunk's time (~1.8 us at D = 128, 32 columns) to land.

// Shared memory of delta_bwd_local_kernel: q, k, do and the scores (58 KB at D = 128).
template <int kD>
struct BwdLocalSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kQ = 0, kK = kTile, kDo = 2 * kTile, kP = 3 * kTile;
  static constexpr int kG = kP + kC * kC * 2;  // [C] floats
  static constexpr int kBytes = kG + kC * 4;
};

// Row t of P^T do's columns v0 .. (kD / 2 of them from a multiple of kD / 2) as float32: in dq's 16-bit row t
// for the first half of the columns, in dk's for the second.
template <int kD, typename T>
__device__ __forceinline__ float* local_row(const DeltaChunkParams& p, int b, int t, int h, int v0) {
  T* base = static_cast<T*>(v0 < kD / 2 ? p.dq : p.dk) + row_offset(b, t, h, p.T, p.H, kD);
  return reinterpret_cast<float*>(base) + v0 % (kD / 2);
}

// P^T do for chunk blockIdx.x, P[t][s] = scale (q_t . k_s) exp(G_t - G_s) for s <= t (the one-pass kernel's
// decayed_scores and product), float32, to local_row (rows < T).
template <int kD, typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, kD == 64 ? 4 : 3)
    delta_bwd_local_kernel(const DeltaChunkParams p) {
  using L = BwdLocalSmem<kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int t0 = c * kC, rows = min(kC, p.T - t0);
  const uint32_t s0 = smem_u32(smem);
  float* G = reinterpret_cast<float*>(smem + L::kG);
  load_chunk<kD>(s0 + L::kQ, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kDo, static_cast<const T*>(p.dout), b, t0, h, p.T, p.H, tid);
  if constexpr (kGated) load_gates(G, p.G, b, t0, h, p.T, p.H, tid);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  if (kGated && rows < kC) {
    pad_gates(G, rows, tid);
    __syncthreads();
  }
  decayed_scores<kD, T, kGated, false>(smem + L::kP, s0 + L::kQ, s0 + L::kK, G, p.scale, warp, lane);
  __syncthreads();  // P ready; q is read no more
  // Qg = scale exp(G_t) q_t (the walk's dS_in term Qg^T do), 16-bit, in place and then to dw, which only the
  // last kernel writes: the walk loads it for q. Both loops give each thread the same 16-byte pieces.
  scale_tile_rows<kD, T>(smem + L::kQ, smem + L::kQ, tid,
                         [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
  store_tile<kC, kD, kThreads, T>(static_cast<T*>(p.dw) + row_offset(b, t0, h, p.T, p.H, kD),
                                  static_cast<int64_t>(p.H) * kD, smem + L::kQ, rows, tid);
  constexpr int kNT = kD / 16;  // this warp's 16 rows x kD / 2 columns
  const int m0 = 16 * (warp % 4), n0 = (kD / 2) * (warp / 4);
  float Y[1][kNT][4];
  zero_acc(Y);
  warp_mma<1, kNT, kC / 16, true, true, kC, kD, T>(Y, s0 + L::kP, m0, 0, s0 + L::kDo, 0, n0, lane);
#pragma unroll
  for (int nj = 0; nj < kNT; ++nj)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = m0 + (lane >> 2) + half * 8, v = n0 + nj * 8 + 2 * (lane & 3);
      if (r < rows)
        *reinterpret_cast<float2*>(local_row<kD, T>(p, b, t0 + r, h, v)) =
            make_float2(Y[0][nj][2 * half], Y[0][nj][2 * half + 1]);
    }
}

template <int kD, int kVb, bool kLocalIn>
struct BwdWalkSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kVTile = kC * kVb * 2;
  static constexpr int kQ = 0, kK = kTile, kW = 2 * kTile, kDo = 3 * kTile;
  static constexpr int kLocal = kDo + kVTile;  // LocalTile<kVb>: P^T do (kLocalIn)
  static constexpr int kG = kLocal + (kLocalIn ? LocalTile<kVb>::kBytes : 0);  // [C] floats
  static constexpr int kStage = kG + kC * 4;  // one stage's bytes (a multiple of 128)
  static constexpr int kPBytes = kLocalIn ? 0 : kC * kC * 2;
  static constexpr int kQgBytes = kLocalIn ? 0 : kTile;  // kLocalIn: the stage's q slot holds Qg (from dw)
  static constexpr int kRest = kQgBytes + kVTile + kD * kVb * 2 + kPBytes;
  // As many stages as fit, up to 4 (at D = 128: 3 with 32-column slices, 3 with 64 without P^T do in and 2
  // with it, 1 unsplit).
  static constexpr int kFit = (227 * 1024 - kRest) / kStage;
  // The unsplit walk at D = 128 keeps one stage: two fit (since the gated walk stopped loading S_in), but
  // they spill 44 bytes (ptxas, sm_90) where one spills 4.
  static constexpr int kStages = kD == 128 && kVb == 128 ? 1 : (kFit < 4 ? kFit : 4);
  static constexpr int kQg = kStages * kStage;   // [C][kD] q rows times scale exp(G_t) (!kLocalIn)
  static constexpr int kdVn = kQg + kQgBytes;    // [C][kVb] -dvn
  static constexpr int kdS = kdVn + kVTile;      // [kD][kVb] dS slice, 16-bit
  static constexpr int kP = kdS + kD * kVb * 2;  // [C][C] (!kLocalIn)
  static constexpr int kBytes = kP + kPBytes;
  static_assert(kStage % 128 == 0 && kBytes <= 227 * 1024, "the walk's tiles must fit one block");
};

template <int kD, int kVb, typename T, bool kGated, bool kLocalIn>
__global__ void __launch_bounds__(kThreads, 1) delta_bwd_walk_kernel(const DeltaChunkParams p) {
  using L = BwdWalkSmem<kD, kVb, kLocalIn>;
  using ST = StateTile<kD, kVb>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int vb = blockIdx.x, v0 = vb * kVb, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const uint32_t s0 = smem_u32(smem);
  T* dhs = static_cast<T*>(p.dhs) + bh * nt * kD * kD + v0;
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  auto stage_of = [](int c) { return (c % L::kStages) * L::kStage; };
  auto issue = [&](int c) {  // chunk c's stage (nothing for c < 0), one commit group either way
    if (c >= 0) {
      const int t0 = c * kC, rows = min(kC, p.T - t0), st = stage_of(c);
      const int64_t roff = row_offset(b, t0, h, p.T, p.H, kD);
      // q, or with kLocalIn Qg (delta_bwd_local_kernel's, in dw)
      load_chunk<kD>(s0 + st + L::kQ, static_cast<const T*>(kLocalIn ? p.dw : p.q), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(s0 + st + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
      load_chunk<kD>(s0 + st + L::kW, static_cast<const T*>(p.w), b, t0, h, p.T, p.H, tid);
      load_tile<kC, kVb, kThreads, T>(s0 + st + L::kDo, static_cast<const T*>(p.dout) + roff + v0, row_stride,
                                      rows, tid);
      if constexpr (kLocalIn) {           // P^T do, float32 (rows past T: zeros, as P^T do is there)
        constexpr int kPerRow = kVb / 4;  // 16-byte copies per row
#pragma unroll
        for (int e = tid; e < kC * kPerRow; e += kThreads) {
          const int r = e / kPerRow, j = e % kPerRow;
          const uint32_t dst = s0 + st + L::kLocal + (r * LocalTile<kVb>::kStride + 4 * j) * 4;
          if (r < rows)
            cp_async_16(dst, local_row<kD, T>(p, b, t0 + r, h, v0 + 4 * j));
          else
            cp_async_16(dst, p.dq, false);
        }
      }
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + st + L::kG), p.G, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };

  // Streamed: the output pass's blocks start waiting on this walk's chunks only once every walk block runs.
  if (p.walk_sync && tid == 0) atomicAdd(p.walk_sync, 1);
  float dS[ST::MT][ST::NT][4];
  ST::load(dS, p.dht ? p.dht + bh * kD * kD + v0 : nullptr, warp, lane, kD);
  store_acc_smem<kVb, T>(smem + L::kdS, dS, ST::m0(warp), ST::n0(warp), lane);

  const int m0 = 16 * (warp % 4), n0o = (kVb / 2) * (warp / 4);  // token rows, value columns of the slice
  for (int i = 1; i < L::kStages; ++i) issue(nt - i);            // chunks nt - 1 .. nt - kStages + 1
  for (int c = nt - 1; c >= 0; --c) {
    const int t0 = c * kC, rows = min(kC, p.T - t0), st = stage_of(c);
    const int64_t roff = row_offset(b, t0, h, p.T, p.H, kD);
    const uint32_t sst = s0 + st;
    unsigned char* stage = smem + st;
    float* G = reinterpret_cast<float*>(stage + L::kG);
    if (L::kStages == 1) issue(c);
    cp_async_wait<(L::kStages > 1 ? L::kStages - 2 : 0)>();  // chunk c's stage (later ones may be in flight)
    __syncthreads();  // the tiles, and the 16-bit dS written at the end of the last chunk (or before the
                      // walk); every read of the other stage (the chunk after this one) is done
    // chunk c - kStages + 1 into chunk c + 1's stage (nothing for a chunk below 0, still one commit group)
    if (L::kStages > 1) issue(c - L::kStages + 1);
    // the dS this chunk uses, saved for the second pass
    store_tile<kD, kVb, kThreads, T>(dhs + static_cast<int64_t>(c) * kD * kD, kD, smem + L::kdS, kD, tid);
    if (kGated && rows < kC) {
      pad_gates(G, rows, tid);
      __syncthreads();
    }
    const float g_last = kGated ? G[kC - 1] : 0.f;
    auto w = [&](int r) { return kGated ? __expf(g_last - G[r]) : 1.f; };
    uint32_t sQg = sst + L::kQ;  // kLocalIn: loaded
    if constexpr (!kLocalIn) {
      decayed_scores<kD, T, kGated, false>(smem + L::kP, sst + L::kQ, sst + L::kK, G, p.scale, warp, lane);
      scale_tile_rows<kD, T>(smem + L::kQg, stage + L::kQ, tid,
                             [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
      sQg = s0 + L::kQg;
      __syncthreads();  // P, Qg ready
    }
    // dS_in's terms that need no dvn, then dvn (-dvn into its tile): independent products, which the
    // compiler interleaves (the walk is bound by their latency, not their issue)
    bwd_state_local<kD, kVb, T, kGated>(dS, sQg, sst + L::kDo, g_last, warp, lane);
    bwd_dvn<kD, kVb, T, kGated, kLocalIn, true>(
        smem + L::kdVn, sst + L::kK, s0 + L::kdS, s0 + L::kP, sst + L::kDo,
        reinterpret_cast<const float*>(stage + L::kLocal), static_cast<T*>(p.du) + roff + v0, row_stride,
        rows, m0, n0o, lane, w);
    __syncthreads();  // -dvn ready
    // This slice of chunk c is done (dhs and du stored before the barrier above): the streamed output pass
    // may take the chunk once every slice has posted.
    if (p.walk_sync && tid == 0) post_count(p.walk_sync + 1 + bh * nt + c);
    bwd_state_dvn<kD, kVb, T>(dS, sst + L::kW, s0 + L::kdVn, warp, lane);  // + W^T (-dvn)
    // dS's 16-bit copy is read no more in this chunk (its last readers, the dhs store and dvn, are behind the
    // barrier above), so each warp rewrites its piece at once. One stage: the next chunk's copies go into
    // this stage at the top of the loop, so every read of it must be done first. Two: the next chunk's first
    // barrier orders the rest.
    if constexpr (L::kStages == 1) __syncthreads();
    store_acc_smem<kVb, T>(smem + L::kdS, dS, ST::m0(warp), ST::n0(warp), lane);
  }
  if (p.dh0) ST::store(p.dh0 + bh * kD * kD + v0, dS, warp, lane, kD);
}

// The second pass: one block per chunk, dW, dq, dk and dG as in delta_bwd_kernel from S_in, dS and dvn.
// kLean: four tile slots and one state slot, refilled as the products go (W, then k; dvn, then q; S_in,
// then dS): 105 KB at D = 128, two blocks per SM, where all tiles at once (172 KB) allowed one, and nothing
// hid its copies (ncu, run l: 717 us at T = 32768, ~60% of the memory floor's rate). The refills wait in
// the block; the SM's other block runs meanwhile.
template <int kD, bool kLean>
struct BwdOutSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kW = 0, kK = kLean ? 0 : kTile;
  static constexpr int kVn = kLean ? kTile : 2 * kTile;
  static constexpr int kDo = kLean ? 2 * kTile : 3 * kTile;
  static constexpr int kdVn = kLean ? 3 * kTile : 4 * kTile;
  static constexpr int kQ = kLean ? 3 * kTile : 5 * kTile;
  static constexpr int kSin = kLean ? 4 * kTile : 6 * kTile;     // [kD][kD]
  static constexpr int kdS = kLean ? kSin : kSin + kD * kD * 2;  // [kD][kD]
  static constexpr int kPg = kdS + kD * kD * 2;                  // [C][C]
  static constexpr int kG = kPg + kC * kC * 2;                   // [C] floats
  static constexpr int kdG = kG + kC * 4;                        // [C] floats
  // 2 floats: sum_s k_s . (w_s (vn dS^T)[s]) and exp(G_last) <dS, S_in>
  static constexpr int kSums = kdG + kC * 4;
  static constexpr int kBytes = kSums + 16;
};

template <int kD, typename T, bool kGated, bool kLean>
__global__ void __launch_bounds__(kThreads, kLean ? 2 : (kD == 64 ? 3 : 1))
    delta_bwd_out_kernel(const DeltaChunkParams p) {
  using L = BwdOutSmem<kD, kLean>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int nt = linear_chunk_count(p.T);
  // streamed (part 3): the last chunk first, the order in which the walk finishes them
  const OutBlock ob = out_block(p.bwd_part, true, nt, p.H);
  const int c = ob.c, h = ob.h, b = ob.b, t0 = c * kC, rows = min(kC, p.T - t0);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  if (!out_block_go(p.walk_sync, p.bwd_part, p.B * p.H * p.v_split, p.v_split, bh * nt + c, p.sync_give_up))
    return;
  const uint32_t s0 = smem_u32(smem);
  float* G = reinterpret_cast<float*>(smem + L::kG);
  float* dGs = reinterpret_cast<float*>(smem + L::kdG);
  float* sums = reinterpret_cast<float*>(smem + L::kSums);
  const int64_t roff = row_offset(b, t0, h, p.T, p.H, kD);
  const int64_t st = (bh * nt + c) * kD * kD;
  // Two copy groups: what vn = U - W S_in needs, then the rest (kLean: only do and dvn), which lands while
  // vn is formed.
  load_chunk<kD>(s0 + L::kW, static_cast<const T*>(p.w), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kVn, static_cast<const T*>(p.u), b, t0, h, p.T, p.H, tid);  // U, then vn in place
  load_tile<kD, kD, kThreads, T>(s0 + L::kSin, static_cast<const T*>(p.hs) + st, kD, kD, tid);
  if constexpr (kGated) load_gates(G, p.G, b, t0, h, p.T, p.H, tid);
  cp_async_commit();
  if constexpr (!kLean) {
    load_chunk<kD>(s0 + L::kQ, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
    load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
  }
  load_chunk<kD>(s0 + L::kDo, static_cast<const T*>(p.dout), b, t0, h, p.T, p.H, tid);
  load_chunk<kD>(s0 + L::kdVn, static_cast<const T*>(p.du), b, t0, h, p.T, p.H, tid);
  if constexpr (!kLean)
    load_tile<kD, kD, kThreads, T>(s0 + L::kdS, static_cast<const T*>(p.dhs) + st, kD, kD, tid);
  cp_async_commit();
  if (tid < kC) dGs[tid] = 0.f;
  if (tid < 2) sums[tid] = 0.f;
  cp_async_wait<1>();
  __syncthreads();
  if (kGated && rows < kC) {
    pad_gates(G, rows, tid);
    __syncthreads();
  }
  const float g_last = kGated ? G[kC - 1] : 0.f;
  auto w = [&](int r) { return kGated ? __expf(g_last - G[r]) : 1.f; };
  // vn = U - W S_in, in place (each element is read and written by the same thread)
  corrected_values<kD, T, kGated>(smem + L::kVn, nullptr, s0 + L::kW, s0 + L::kSin, smem + L::kVn, G, g_last,
                                  warp, lane);
  if constexpr (kLean) {
    __syncthreads();  // W read: k into its slot, landing while Pg and dW are formed
    load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
    cp_async_commit();
    cp_async_wait<1>();  // do, dvn
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
  decayed_scores<kD, T, kGated, false>(smem + L::kPg, s0 + L::kDo, s0 + L::kVn, G, p.scale, warp, lane);
  __syncthreads();
  const int m0 = 16 * (warp % 4), n0o = (kD / 2) * (warp / 4);
  if constexpr (kLean) {
    auto refill = [&](uint32_t dst, auto&& load) {
      __syncthreads();  // the slot's last reads are done
      load(dst);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
    };
    bwd_chunk_grads<kD, L, T, kGated>(
        p, smem, s0, roff, rows, G, w, dGs, sums, m0, n0o, lane,
        [&] {  // dvn read: q into its slot (k has landed too after this)
          refill(s0 + L::kQ, [&](uint32_t dst) {
            load_chunk<kD>(dst, static_cast<const T*>(p.q), b, t0, h, p.T, p.H, tid);
          });
        },
        [&] {  // S_in read by the products: dS into its slot (gated: and exp(G_last) <dS, S_in> on the way)
          if constexpr (kGated) {
            __syncthreads();  // every product's read of S_in is done; each thread now reads only its pieces
            const float e =
                swap_in_state_dot<kD, T>(smem + L::kdS, static_cast<const T*>(p.dhs) + st, g_last, tid, lane);
            if (lane == 0) atomicAdd(sums + 1, e);
            __syncthreads();
          } else {
            refill(s0 + L::kdS, [&](uint32_t dst) {
              load_tile<kD, kD, kThreads, T>(dst, static_cast<const T*>(p.dhs) + st, kD, kD, tid);
            });
          }
        });
  } else {
    if constexpr (kGated) {  // exp(G_last) <dS, S_in>, both tiles resident (as the one-pass kernel sums it)
      const float e = bwd_state_dot<kD, kD, T>(smem + L::kdS, smem + L::kSin, g_last, warp, lane);
      if (lane == 0) atomicAdd(sums + 1, e);
    }
    bwd_chunk_grads<kD, L, T, kGated>(p, smem, s0, roff, rows, G, w, dGs, sums, m0, n0o, lane);
  }
  if constexpr (kGated) {
    __syncthreads();
    if (tid < rows) {
      float d = dGs[tid];
      if (tid == rows - 1) d += sums[0] + sums[1];
      p.dG[(static_cast<int64_t>(b) * p.T + t0 + tid) * p.H + h] = d;
    }
  }
  out_block_done(p.walk_sync, p.bwd_part, p.v_split, bh * nt + c);
}

// ---------------------------------------------------------------- host: launch helpers

// The dynamic shared memory of a walk that needs `own` bytes: all that a block may have on this
// device where p.walk_alone (params.h), so that no other kernel's block is placed on the walk's SMs.
inline int walk_smem(const DeltaChunkParams& p, int own) {
  if (!p.walk_alone) return own;
  int dev = 0, most = own;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return own;
  return most > own ? most : own;
}

}  // namespace attnlab::kernels::delta_chunk
