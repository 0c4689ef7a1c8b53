// The state passes of linear_chunk on Hopper's warpgroup MMA (sm_90a, D = 64 and 128): opt-in variants of
// fwd_kernel<.., kOutput = false> (each segment's own state contribution) and bwd_dkv_kernel<.., kDkv =
// false> (each segment's own state-gradient contribution), selected by LinearChunkParams::state_wgmma; same
// params, same results up to summation order.
//
// Why: a state pass is one product per chunk, S = exp(G_last) S + A^T B with A, B [64][D] token tiles (the
// forward: A = k, B = v exp(G_last - G_s); the backward, walking back: A = q scale exp(G_t), B = do). It
// reads two tiles and writes nothing until the end, so it should run at the memory floor; on mma.sync each of
// the 8 warps ldmatrix-loads its own copy of B, and the forward's took 82 us at simple GLA D128 T = 8192 for
// 200 MB of k and v (run x's ncu), twice that floor. Here the tensor cores read each operand once per
// warpgroup.
//
// Per chunk: wait for the copies, one barrier (it also retires the other stage, which the next chunk's copies
// then take), the gate sums, the scaled operand W into its own buffer, a second barrier, one wgmma batch
// (m64nD, A's panel wg read M-major as in the forward's update), wait. Two stages; two blocks per SM at D =
// 128 (two warpgroups, 83 KB), four at D = 64 (one warpgroup, 42 KB): the blocks of an SM overlap each
// other's waits.
#pragma once

#include "kernels/linear_chunk/linear_chunk_wgmma.cuh"

namespace attnlab::kernels::linear_chunk {

template <int kD>
struct WgStateSmem {
  static constexpr int kStages = 2;
  static constexpr int kPanel = wgt::kPanel;
  static constexpr int kTile = (kD / 64) * kPanel;
  static constexpr int kA = 0, kB = kTile;  // k, v (forward) or q, do (backward)
  static constexpr int kStage = 2 * kTile;
  static constexpr int kW = kStages * kStage;        // the scaled operand: Vw (forward) or Qw (backward)
  static constexpr int kG = kW + kTile;              // [kStages][kC] floats: each stage's gates
  static constexpr int kGw = kG + kStages * kC * 4;  // each warp's cumulative gates
  static constexpr int kBytes = kGw + (kD / 64) * 4 * kC * 4;
  static constexpr int kThreads = 2 * kD;
  static constexpr int kBlocksPerSm = kD == 128 ? 2 : 4;
};

// kReverse = false: segment blockIdx.x's state contribution (from a zero state) and its gate sum, into
// seg_states / seg_gate. kReverse = true: segment blockIdx.x + 1's state-gradient contribution (from a zero
// gradient at its end), walking its chunks backwards, into dseg_states.
template <int kD, typename T, bool kGated, bool kReverse>
__global__ void __launch_bounds__(WgStateSmem<kD>::kThreads, WgStateSmem<kD>::kBlocksPerSm)
    state_wgmma_kernel(const LinearChunkParams p) {
  using L = WgStateSmem<kD>;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;
  const int seg = kReverse ? blockIdx.x + 1 : blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), n_seg = linear_chunk_segments(p);
  const int c_begin = seg * p.seg_chunks, c_end = min(nt, c_begin + p.seg_chunks);
  const int64_t bh = bh_index(b, h, p.H);
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0 = smem_u32(smem);
  const T* a_src = static_cast<const T*>(kReverse ? p.q : p.k);
  const T* b_src = static_cast<const T*>(kReverse ? p.dout : p.v);

  auto chunk = [&](int i) { return kReverse ? c_end - 1 - i : c_begin + i; };
  const int steps = c_end - c_begin;
  auto issue = [&](int i) {
    if (i < steps) {
      const int c = chunk(i), t0 = c * kC;
      const uint32_t base = s0 + (i & 1) * L::kStage;
      const int64_t off = ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      wgt::load_panels<kD, T>(base + L::kA, a_src + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kB, b_src + off, row_stride, p.T - t0, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + L::kG) + (i & 1) * kC, p.g, b, t0, h, p.T, p.H, tid);
    }
    cp_async_commit();
  };
  issue(0);

  float S[kD / 2];
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) S[i] = 0.f;
  float seg_g = 0.f;
  float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;

  for (int i = 0; i < steps; ++i) {
    const int st = i & 1;
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();  // this chunk's copies are in; every read of the other stage and of W is done
    issue(i + 1);

    float g_last = 0.f;
    if constexpr (kGated) {
      gate_cumsum_warp(reinterpret_cast<const float*>(smem + L::kG) + st * kC, G, lane);
      g_last = G[kC - 1];
    }
    // W: the forward's V exp(G_last - G_s) (gated only), the backward's q scale exp(G_t) (always: scale).
    constexpr bool kScaled = kReverse || kGated;
    if constexpr (kScaled) {
#pragma unroll
      for (int pn = 0; pn < kD / 64; ++pn)
        scale_tile_rows<64, T, L::kThreads>(
            smem + L::kW + pn * L::kPanel, stage + (kReverse ? L::kA : L::kB) + pn * L::kPanel, tid,
            [&](int r) {
              return kReverse ? (kGated ? p.scale * __expf(G[r]) : p.scale) : __expf(g_last - G[r]);
            });
      wgmma::fence_proxy_async();
      __syncthreads();  // W is whole
    }
    if constexpr (kGated) {
      const float d = __expf(g_last);
#pragma unroll
      for (int k = 0; k < kD / 2; ++k) S[k] *= d;
    }
    const uint32_t a = kReverse ? s0 + L::kW : sst + L::kA;
    const uint32_t bb = kReverse ? sst + L::kB : (kGated ? s0 + L::kW : sst + L::kB);
    wgmma::fence();
    wgt::outer_update<kD, T>(S, a, bb, wg);
    wgmma::commit();
    wgmma::wait<0>();
    seg_g += g_last;
  }
  cp_async_wait<0>();
  if constexpr (kReverse) {
    wgt::store_state<kD>(p.dseg_states + (bh * n_seg + seg) * kD * kD, S, wg, wr, lane);
  } else {
    wgt::store_state<kD>(p.seg_states + (bh * n_seg + seg) * kD * kD, S, wg, wr, lane);
    if (tid == 0) p.seg_gate[bh * n_seg + seg] = seg_g;
  }
}

}  // namespace attnlab::kernels::linear_chunk
