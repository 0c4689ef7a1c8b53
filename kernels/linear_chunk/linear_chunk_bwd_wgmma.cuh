// The backward's two walks of linear_chunk on Hopper's warpgroup MMA (sm_90a, D = 128): opt-in variants of
// bwd_dq_kernel and bwd_dkv_kernel<.., kDkv = true> (same params, same results up to summation order),
// selected by LinearChunkParams::bwd_wgmma. The state pass of the backward (bwd_dkv_kernel<.., false>, two
// blocks per SM) stays on mma.sync. Both walks must take the same form: chunk_states, which the dq walk
// writes and the dk/dv walk reads, is in the thread order of each form's state accumulators.
//
// Why (docs/kernels.md, "linear_chunk"): the mma.sync walks ran one block per SM at 244-255 registers, each
// warp ldmatrix-loading its own copy of every B operand; at T = 8192 they held 80-85% of the forward +
// backward time (dk/dv 460 / 742 us, dq 238 / 398 us for linear attention / simple GLA).
//
// The dq walk is the forward's output pass with other operands (linear_chunk_fwd_wgmma.cuh has the pipeline):
//   batch 1: P' = do v^T (both warpgroups, all of it) and DQ[:, 64 wg ..] = do S^T (S^T: the state copy read
//            K-major); under it the gate sums, Vw and the decays;
//   then     P' masked and decayed into shared memory (each warpgroup half of the column blocks), DQ scaled
//            by scale exp(G_t);
//   batch 2: DQ += P' k[:, 64 wg ..], and S = exp(G_last) S + k^T Vw as in the forward;
//   then     q.dq into dg_work (gated), dq out through the warp's rows of the dead do panel, the new copy.
// Gated it also keeps q in the stage (for q.dq), so it runs two stages there instead of three.
//
// The dk/dv walk, in reverse chunk order, the state gradient dS split by rows as the forward splits S:
//   batch 1: warpgroup 0 forms Pk = k q^T, warpgroup 1 Pv = v do^T (each all of one, so the pair costs one
//            score product per warpgroup); X = k dS[:, 64 wg ..] and Y = v dS^T[:, 64 wg ..]; under it the
//            gates, Qw = q scale exp(G_t), the decays and dg's chunk-end term exp(G_last) <S_in, dS>;
//   then     Pk, Pv masked (t >= s) and decayed into shared memory; X, Y scaled by w_s = exp(G_last - G_s),
//            k.dk_st = k . Y (gated);
//   batch 2: dv = X + Pk do[:, 64 wg ..], dk = Y + Pv q[:, 64 wg ..], dS = exp(G_last) dS + Qw^T do;
//   then     dv out through the dead v panel, k.dk into dg_work, dk out through the warp's rows of the k
//            panel (its last reader), the new dS copy.
// Two stages (q, do, k, v per chunk: 64 KB each).
#pragma once

#include "kernels/linear_chunk/linear_chunk_wgmma.cuh"

namespace attnlab::kernels::linear_chunk {

template <bool kGated>
struct WgDqSmem {
  static constexpr int kStages = kGated ? 2 : 3;
  static constexpr int kPanel = wgt::kPanel, kSPanel = wgt::kSPanel<128>;
  static constexpr int kDo = 0, kV = 2 * kPanel, kK = 4 * kPanel, kQ = 6 * kPanel;  // q only when gated
  static constexpr int kG = (kGated ? 8 : 6) * kPanel;
  static constexpr int kStage = kG + 1024;  // + the gates, padded to keep every panel 1024-aligned
  static constexpr int kS = kStages * kStage;
  static constexpr int kVw = kS + 2 * kSPanel;
  static constexpr int kP = kVw + (kGated ? 2 * kPanel : 0);
  static constexpr int kGw = kP + kPanel;
  static constexpr int kBytes = kGw + kWarpGateBytes;
};

template <typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, 1) bwd_dq_wgmma_kernel(const LinearChunkParams p) {
  constexpr int kD = 128;
  using L = WgDqSmem<kGated>;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;
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
      wgt::load_panels<kD, T>(base + L::kDo, static_cast<const T*>(p.dout) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kV, static_cast<const T*>(p.v) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kK, static_cast<const T*>(p.k) + off, row_stride, p.T - t0, tid);
      if constexpr (kGated) {
        wgt::load_panels<kD, T>(base + L::kQ, static_cast<const T*>(p.q) + off, row_stride, p.T - t0, tid);
        load_gates(reinterpret_cast<float*>(smem + st * L::kStage + L::kG), p.g, b, t0, h, p.T, p.H, tid);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < L::kStages - 1; ++i) issue(c_begin + i);

  float S[64];
  wgt::load_state<kD>(
      S, n_seg > 1 ? p.seg_states + (bh * n_seg + seg) * kD * kD : (p.h0 ? p.h0 + bh * kD * kD : nullptr), wg,
      wr, lane);
  wgt::store_state_panels<kD, T>(smem + L::kS, S, wg, wr, lane);
  float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;

  for (int c = c_begin; c < c_end; ++c) {
    const int st = (c - c_begin) % L::kStages, t0 = c * kC;
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    // The state entering the chunk, for dg's state term in the dk/dv walk (linear_chunk_bwd.cu).
    if constexpr (kGated)
      wgt::store_state_packed<T>(static_cast<uint32_t*>(p.chunk_states) + (bh * nt + c) * (kD * kD / 2), S,
                                 tid);
    cp_async_wait<L::kStages - 2>();
    wgmma::fence_proxy_async();
    __syncthreads();  // this chunk's copies are in; every read of chunk c - 1's stage is done
    issue(c + L::kStages - 1);

    float P[32], DQ[32];
    wgmma::fence();
    wgt::scores<kD, T>(P, sst + L::kDo, sst + L::kV);  // P' = do v^T
    wgmma::commit();
    wgt::times_state_t<T>(DQ, sst + L::kDo, s0 + L::kS, wg);  // do S^T
    wgmma::commit();

    float g_last = 0.f;
    float dec[4][2][2], qrow[2] = {p.scale, p.scale};
    if constexpr (kGated) {
      gate_cumsum_warp(reinterpret_cast<const float*>(stage + L::kG), G, lane);
      g_last = G[kC - 1];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float gr = G[16 * wr + (lane >> 2) + 8 * half];
        qrow[half] = p.scale * __expf(gr);
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
          const int col = wgt::acc_col(2 * jj + wg, lane);
          dec[jj][half][0] = __expf(gr - G[col]);
          dec[jj][half][1] = __expf(gr - G[col + 1]);
        }
      }
#pragma unroll
      for (int pn = 0; pn < 2; ++pn)
        scale_tile_rows<64, T>(smem + L::kVw + pn * L::kPanel, stage + L::kV + pn * L::kPanel, tid,
                               [&](int r) { return __expf(g_last - G[r]); });
    }

    wgmma::wait<1>();  // P'
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        if ((j & 1) != wg) continue;
        const int r = 16 * wr + (lane >> 2) + 8 * half, col = wgt::acc_col(j, lane);
        const float d0 = kGated ? dec[j / 2][half][0] : 1.f, d1 = kGated ? dec[j / 2][half][1] : 1.f;
        const float x0 = col <= r ? P[4 * j + 2 * half] * p.scale * d0 : 0.f;
        const float x1 = col + 1 <= r ? P[4 * j + 2 * half + 1] * p.scale * d1 : 0.f;
        *reinterpret_cast<uint32_t*>(smem + L::kP + panel_off(r, col)) = MmaType<T>::pack(x0, x1);
      }
    wgmma::wait<0>();  // do S^T
    wgt::scale_acc(DQ, qrow);
    wgmma::fence_proxy_async();
    __syncthreads();  // P' and Vw are whole; every read of do and of the old state copy is done

    if constexpr (kGated) {
      const float d = __expf(g_last);
#pragma unroll
      for (int i = 0; i < 64; ++i) S[i] *= d;
    }
    wgmma::fence();
    wgt::scores_times<T>(DQ, s0 + L::kP, sst + L::kK, wg);  // DQ += P' k
    wgmma::commit();
    wgt::outer_update<kD, T>(S, sst + L::kK, kGated ? s0 + L::kVw : sst + L::kV, wg);
    wgmma::commit();
    wgmma::wait<1>();  // DQ
    if constexpr (kGated) {
      const float2 d = wgt::row_dot_panel<T>(DQ, stage + L::kQ + wg * L::kPanel, wr, lane);
      if ((lane & 3) == 0) {
        const int r = t0 + 16 * wr + (lane >> 2);
        if (r < p.T) atomicAdd(p.dg_work + bh * 2 * p.T + r, d.x);
        if (r + 8 < p.T) atomicAdd(p.dg_work + bh * 2 * p.T + r + 8, d.y);
      }
    }
    wgt::store_acc_rows<T>(
        static_cast<T*>(p.dq) + ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD + 64 * wg, row_stride,
        DQ, stage + L::kDo + wg * L::kPanel, p.T - t0, wr, lane);
    wgmma::wait<0>();  // S
    wgt::store_state_panels<kD, T>(smem + L::kS, S, wg, wr, lane);
  }
  cp_async_wait<0>();
}

struct WgDkvSmem {
  static constexpr int kPanel = wgt::kPanel, kSPanel = wgt::kSPanel<128>;
  static constexpr int kQ = 0, kDo = 2 * kPanel, kK = 4 * kPanel, kV = 6 * kPanel, kG = 8 * kPanel;
  static constexpr int kStage = kG + 1024;
  static constexpr int kS = 2 * kStage;         // the 16-bit dS copy
  static constexpr int kQw = kS + 2 * kSPanel;  // q rows times scale exp(G_t)
  static constexpr int kP = kQw + 2 * kPanel;   // Pk (warpgroup 0's) then Pv (warpgroup 1's)
  static constexpr int kGw = kP + 2 * kPanel;
  static constexpr int kBytes = kGw + kWarpGateBytes + 2 * kWarps * 4;  // + chunk_end_dot
};

template <typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, 1) bwd_dkv_wgmma_kernel(const LinearChunkParams p) {
  constexpr int kD = 128;
  using L = WgDkvSmem;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4;
  const int seg = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T), n_seg = linear_chunk_segments(p);
  const int c_begin = seg * p.seg_chunks, c_end = min(nt, c_begin + p.seg_chunks);
  const int64_t bh = bh_index(b, h, p.H);
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0 = smem_u32(smem);

  // Step i handles chunk c_end - 1 - i.
  auto issue = [&](int i) {
    const int c = c_end - 1 - i;
    if (c >= c_begin) {
      const uint32_t base = s0 + (i & 1) * L::kStage;
      const int t0 = c * kC;
      const int64_t off = ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD;
      wgt::load_panels<kD, T>(base + L::kQ, static_cast<const T*>(p.q) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kDo, static_cast<const T*>(p.dout) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kK, static_cast<const T*>(p.k) + off, row_stride, p.T - t0, tid);
      wgt::load_panels<kD, T>(base + L::kV, static_cast<const T*>(p.v) + off, row_stride, p.T - t0, tid);
      if constexpr (kGated)
        load_gates(reinterpret_cast<float*>(smem + (i & 1) * L::kStage + L::kG), p.g, b, t0, h, p.T, p.H,
                   tid);
    }
    cp_async_commit();
  };
  issue(0);

  float dS[64];
  wgt::load_state<kD>(
      dS, n_seg > 1 ? p.dseg_states + (bh * n_seg + seg) * kD * kD : (p.dht ? p.dht + bh * kD * kD : nullptr),
      wg, wr, lane);
  wgt::store_state_panels<kD, T>(smem + L::kS, dS, wg, wr, lane);
  float* G = reinterpret_cast<float*>(smem + L::kGw) + warp * kC;
  float* chunk_end_dot = reinterpret_cast<float*>(smem + L::kGw + kWarpGateBytes);  // [2][kWarps]

  const int steps = c_end - c_begin;
  for (int i = 0; i < steps; ++i) {
    const int c = c_end - 1 - i, st = i & 1, t0 = c * kC;
    const uint32_t sst = s0 + st * L::kStage;
    unsigned char* stage = smem + st * L::kStage;
    if constexpr (kGated) {
      // dS is the gradient of the state at this chunk's end: dg's state term exp(G_last) <S_in, dS>.
      float d = wgt::dot_state_packed<T>(
          static_cast<const uint32_t*>(p.chunk_states) + (bh * nt + c) * (kD * kD / 2), dS, tid);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
      if (lane == 0) chunk_end_dot[st * kWarps + warp] = d;
    }
    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();  // this chunk's copies are in; every read of the other stage is done
    issue(i + 1);

    // Warpgroup 0: Pk = k q^T; warpgroup 1: Pv = v do^T (rows s, columns t).
    float P[32], X[32], Y[32];
    wgmma::fence();
    wgt::scores<kD, T>(P, sst + (wg ? L::kV : L::kK), sst + (wg ? L::kDo : L::kQ));
    wgmma::commit();
    wgt::times_state<kD, T>(X, sst + L::kK, s0 + L::kS, wg);  // k dS
    wgmma::commit();
    wgt::times_state_t<T>(Y, sst + L::kV, s0 + L::kS, wg);  // v dS^T
    wgmma::commit();

    // Under the products: the gates, Qw and wrow[half] = exp(G_last - G_r) (this thread's rows r = s).
    float g_last = 0.f, gr[2] = {0.f, 0.f}, wrow[2] = {1.f, 1.f};
    if constexpr (kGated) {
      gate_cumsum_warp(reinterpret_cast<const float*>(stage + L::kG), G, lane);
      g_last = G[kC - 1];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        gr[half] = G[16 * wr + (lane >> 2) + 8 * half];
        wrow[half] = __expf(g_last - gr[half]);
      }
    }
#pragma unroll
    for (int pn = 0; pn < 2; ++pn)
      scale_tile_rows<64, T>(smem + L::kQw + pn * L::kPanel, stage + L::kQ + pn * L::kPanel, tid,
                             [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });

    wgmma::wait<2>();  // P
    // Kept where t = col >= s = r, times scale exp(G_t - G_s) (the select drops the rest, overflowed or not).
    // The decays are taken here, not under the first products as in the forward: X and Y are still on the
    // tensor cores, and 32 more live registers next to P, X, Y and dS would not fit.
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = 16 * wr + (lane >> 2) + 8 * half, col = wgt::acc_col(j, lane);
        const float d0 = kGated ? p.scale * __expf(G[col] - gr[half]) : p.scale;
        const float d1 = kGated ? p.scale * __expf(G[col + 1] - gr[half]) : p.scale;
        const float x0 = col >= r ? P[4 * j + 2 * half] * d0 : 0.f;
        const float x1 = col + 1 >= r ? P[4 * j + 2 * half + 1] * d1 : 0.f;
        *reinterpret_cast<uint32_t*>(smem + L::kP + wg * L::kPanel + panel_off(r, col)) =
            MmaType<T>::pack(x0, x1);
      }
    wgmma::wait<1>();  // X
    if constexpr (kGated) wgt::scale_acc(X, wrow);
    wgmma::wait<0>();                    // Y
    float2 dst = make_float2(0.f, 0.f);  // k.dk_st: the part of k.dk through the chunk-end state
    if constexpr (kGated) {
      wgt::scale_acc(Y, wrow);
      dst = wgt::row_dot_panel<T>(Y, stage + L::kK + wg * L::kPanel, wr, lane);
    }
    wgmma::fence_proxy_async();
    __syncthreads();  // Pk, Pv, Qw are whole; every read of v and of the old dS copy is done
    if constexpr (kGated) {
      if (tid == 0) {
        float d = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) d += chunk_end_dot[st * kWarps + w];
        p.chunk_dg[bh * nt + c] = __expf(g_last) * d;
      }
      const float e = __expf(g_last);
#pragma unroll
      for (int k = 0; k < 64; ++k) dS[k] *= e;
    }
    wgmma::fence();
    wgt::scores_times<T>(X, s0 + L::kP, sst + L::kDo, wg);  // dv = X + Pk do
    wgmma::commit();
    wgt::scores_times<T>(Y, s0 + L::kP + L::kPanel, sst + L::kQ, wg);  // dk = Y + Pv q
    wgmma::commit();
    wgt::outer_update<kD, T>(dS, s0 + L::kQw, sst + L::kDo, wg);  // dS += Qw^T do
    wgmma::commit();

    const int64_t off = ((static_cast<int64_t>(b) * p.T + t0) * p.H + h) * kD + 64 * wg;
    wgmma::wait<2>();  // dv
    wgt::store_acc_rows<T>(static_cast<T*>(p.dv) + off, row_stride, X, stage + L::kV + wg * L::kPanel,
                           p.T - t0, wr, lane);
    wgmma::wait<1>();  // dk
    if constexpr (kGated) {
      // dg_work: -k.dk_in = -(k.dk - k.dk_st) (float32: no 16-bit rounding between the two), and k.dk_st
      // into the second half.
      const float2 d = wgt::row_dot_panel<T>(Y, stage + L::kK + wg * L::kPanel, wr, lane);
      if ((lane & 3) == 0) {
        const int r = t0 + 16 * wr + (lane >> 2);
        float* work = p.dg_work + bh * 2 * p.T;
        if (r < p.T) atomicAdd(work + r, dst.x - d.x), atomicAdd(work + p.T + r, dst.x);
        if (r + 8 < p.T) atomicAdd(work + r + 8, dst.y - d.y), atomicAdd(work + p.T + r + 8, dst.y);
      }
    }
    // The k panel wg's rows 16 wr .. are read after the middle barrier only by this warp's row dots.
    wgt::store_acc_rows<T>(static_cast<T*>(p.dk) + off, row_stride, Y, stage + L::kK + wg * L::kPanel,
                           p.T - t0, wr, lane);
    wgmma::wait<0>();  // dS
    wgt::store_state_panels<kD, T>(smem + L::kS, dS, wg, wr, lane);
  }
  cp_async_wait<0>();
  if (seg == 0 && p.dh0) wgt::store_state<kD>(p.dh0 + bh * kD * kD, dS, wg, wr, lane);
}

}  // namespace attnlab::kernels::linear_chunk
