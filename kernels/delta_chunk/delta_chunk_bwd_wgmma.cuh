// The delta_chunk one-pass backward on Hopper's warpgroup MMA (sm_90a, K = V = 128): an opt-in variant of
// delta_bwd_kernel<128, ..> (same params, same results up to summation order), selected by
// DeltaChunkParams::bwd_wgmma. delta_chunk_kernels.cuh states the per-chunk gradients; this file only
// changes how they are computed.
//
// Why: the mma.sync backward runs one block per SM and its chunk took ~16 us of SM time at Gated DeltaNet
// D = 128, T = 2048 (ncu, run 2026-12-03b: 1017 us for 8192 chunks, 70% of forward + backward with
// delta_wy's backward), bound by each warp's ldmatrix copies of the B operands and the products' latency.
// Here each product's operands are read once per warpgroup, and the chunk's twelve products go out in four
// batches.
//
// Work split (two warpgroups, as the forward's wgmma walk): warpgroup g owns the rows 64 g .. + 64 of dS
// over all 128 value columns (64 float32 per thread) and computes the columns 64 g .. + 64 of every token
// output (vn, dvn, dq, dk, dW). The three 64 x 64 score matrices are built transposed where a product
// needs them so (Pk = k q^T for P^T do, PgT = vn do^T for Pg^T q), so every A operand is K-major:
//   barrier A (the chunk's tiles are in; the 16-bit dS copy is the dS leaving the chunk)
//   batch 1: X = W S_in, KdS = K dS, Pk = k q^T (warpgroup g its columns 32 g ..)
//            -> vn = U - X, Pk masked and decayed, Qg = scale exp(G_t) q, into their tiles
//   barrier B
//   batch 2: dvn = w KdS + Pk do; warpgroup 0 Pg = do vn^T, 1 PgT = vn do^T; dS = exp(G_last) dS + Qg^T do;
//            DQ = do S_in^T  -> du out and -dvn into its tile, Pg and PgT masked and decayed, DQ scaled
//   barrier C
//   batch 3: dS -= W^T dvn; dW = -dvn S_in^T; dq = DQ + Pg k; DK = vn dS^T
//            -> dW, dq out; DK scaled by w; then dk = DK + PgT q -> dk out; the new dS copy.
// Shared memory holds one stage of the token tiles (q, k, w, u, do) and S_in (216 KB in all), so the next
// chunk's tiles go into each slot once its last reader is done: u after B, do after C, and, by each
// warpgroup for the part only it reads after B (a named barrier of its 128 threads), w's panel and S_in's
// rows after its dW and dq, q's and k's panels and its dS rows after dk. Those last copies would wait
// whole at the next barrier A, so every tile of the next chunk is prefetched into L2 at the top of the
// chunk. Gated: the dG shares of each chunk go to per-warpgroup rows and per-warp sums in shared memory
// (no atomics), summed and written after the next barrier A.
#pragma once

#include "kernels/delta_chunk/delta_chunk_kernels.cuh"
#include "kernels/linear_chunk/linear_chunk_wgmma.cuh"

namespace attnlab::kernels::delta_chunk {

struct WgBwdSmem {
  static constexpr int kD = 128;
  static constexpr int kPanel = wgt::kPanel;        // [64][64] 16-bit: 8 KB
  static constexpr int kTile = 2 * kPanel;          // [64][128] as two 64-column panels
  static constexpr int kSPanel = wgt::kSPanel<kD>;  // [128][64]: 16 KB
  static constexpr int kQ = 0, kK = kTile, kW = 2 * kTile, kU = 3 * kTile, kDo = 4 * kTile;
  static constexpr int kSin = 5 * kTile;          // the entering state (from hs), two [128][64] panels
  static constexpr int kdS = kSin + 2 * kSPanel;  // the 16-bit dS copy, two [128][64] panels
  static constexpr int kVn = kdS + 2 * kSPanel;   // vn = U - W S_in
  static constexpr int kNdvn = kVn + kTile;       // -dvn
  static constexpr int kQg = kNdvn + kTile;       // q rows times scale exp(G_t)
  static constexpr int kPk = kQg + kTile;         // [s][t] scale (k_s.q_t) exp(G_t - G_s), t >= s
  static constexpr int kPg = kPk + kPanel;        // [t][s] scale (do_t.vn_s) exp(G_t - G_s), s <= t
  static constexpr int kPgT = kPg + kPanel;       // its transpose, [s][t]
  static constexpr int kG = kPgT + kPanel;        // [2][C] floats: the gates, by chunk parity
  static constexpr int kdGp = kG + 2 * kC * 4;    // [2][2][C] floats: q.dq - k.dk per warpgroup and row
  static constexpr int kRed = kdGp + 4 * kC * 4;  // [2][8] floats: the warps' shares of the G_last terms
  static constexpr int kBytes = kRed + 2 * 8 * 4;
  static constexpr int kThreads = 256;
  static_assert(kBytes <= 227 * 1024, "one block per SM");
};

namespace wgbwd {

__device__ __forceinline__ void prefetch_l2(const void* ptr) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(ptr));
}

// The 128 threads of warpgroup wg meet (named barriers 1 and 2; 0 is __syncthreads).
__device__ __forceinline__ void wg_sync(int wg) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
}

}  // namespace wgbwd

template <typename T, bool kGated>
__global__ void __launch_bounds__(256, 1) delta_bwd_wgmma_kernel(const DeltaChunkParams p) {
  using L = WgBwdSmem;
  constexpr int kD = 128;
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  unsigned char* smem = wg_smem;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4, wr = warp % 4, wtid = tid % 128;
  const int h = blockIdx.y, b = blockIdx.z;
  const int nt = linear_chunk_count(p.T);
  const int64_t bh = static_cast<int64_t>(b) * p.H + h;
  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t s0_ = smem_u32(smem);
  const T* hs = static_cast<const T*>(p.hs) + bh * nt * kD * kD;
  float* dGp = reinterpret_cast<float*>(smem + L::kdGp);
  float* red = reinterpret_cast<float*>(smem + L::kRed);
  auto gates = [&](int c) { return reinterpret_cast<float*>(smem + L::kG) + (c & 1) * kC; };
  auto chunk_off = [&](int c) { return row_offset(b, c * kC, h, p.T, p.H, kD); };

  // Copies of chunk c: a whole token tile (all threads), this warpgroup's panel of one (its threads), the
  // rows 64 wg .. of S_in (its threads).
  auto load_tile_all = [&](int slot, const void* src, int c) {
    wgt::load_panels<kD, T>(s0_ + slot, static_cast<const T*>(src) + chunk_off(c), row_stride, p.T - c * kC,
                            tid);
  };
  auto load_panel_wg = [&](int slot, const void* src, int c) {
    load_tile<kC, 64, 128, T>(s0_ + slot + wg * L::kPanel,
                              static_cast<const T*>(src) + chunk_off(c) + 64 * wg, row_stride, p.T - c * kC,
                              wtid);
  };
  auto load_sin_rows = [&](int c) {
#pragma unroll
    for (int pn = 0; pn < 2; ++pn)
      load_tile<64, 64, 128, T>(s0_ + L::kSin + pn * L::kSPanel + 64 * wg * 128,
                                hs + static_cast<int64_t>(c) * kD * kD + 64 * wg * kD + 64 * pn, kD, 64,
                                wtid);
  };
  // Every line chunk c's copies will read, into L2: five token tiles (64 rows of 256 bytes) and S_in.
  auto prefetch = [&](int c) {
    const int t0 = c * kC, rows = min(kC, p.T - t0);
    for (int i = tid; i < 5 * 2 * kC + kD * kD * 2 / 128; i += L::kThreads) {
      if (i < 5 * 2 * kC) {
        const int tensor = i / (2 * kC), r = (i / 2) % kC, half = i & 1;
        const void* src = tensor == 0   ? p.q
                          : tensor == 1 ? p.k
                          : tensor == 2 ? p.w
                          : tensor == 3 ? p.u
                                        : p.dout;
        if (r < rows)
          wgbwd::prefetch_l2(static_cast<const T*>(src) + chunk_off(c) + r * row_stride + 64 * half);
      } else {
        wgbwd::prefetch_l2(hs + static_cast<int64_t>(c) * kD * kD + (i - 5 * 2 * kC) * 64);
      }
    }
  };
  // Chunk c's dG (gated), once both warpgroups' shares are in: threads 0 .. C-1.
  auto flush_dg = [&](int c) {
    if constexpr (kGated) {
      const int t0 = c * kC, rows = min(kC, p.T - t0);
      if (tid < rows) {
        const float* part = dGp + (c & 1) * 2 * kC;
        float d = part[tid] + part[kC + tid];
        if (tid == rows - 1) {
#pragma unroll
          for (int w = 0; w < 8; ++w) d += red[(c & 1) * 8 + w];
        }
        p.dG[(static_cast<int64_t>(b) * p.T + t0 + tid) * p.H + h] = d;
      }
    }
  };

  {
    const int c = nt - 1;
    load_tile_all(L::kQ, p.q, c), load_tile_all(L::kK, p.k, c), load_tile_all(L::kW, p.w, c);
    load_tile_all(L::kU, p.u, c), load_tile_all(L::kDo, p.dout, c);
#pragma unroll
    for (int pn = 0; pn < 2; ++pn)
      load_tile<kD, 64, L::kThreads, T>(s0_ + L::kSin + pn * L::kSPanel,
                                        hs + static_cast<int64_t>(c) * kD * kD + 64 * pn, kD, kD, tid);
    if constexpr (kGated) load_gates(gates(c), p.G, b, c * kC, h, p.T, p.H, tid);
    cp_async_commit();
  }
  float dS[kD / 2];  // rows 64 wg .. + 64 of dS, all 128 columns (m64n128 accumulator layout)
  wgt::load_state<kD>(dS, p.dht ? p.dht + bh * kD * kD : nullptr, wg, wr, lane);
  wgt::store_state_panels<kD, T>(smem + L::kdS, dS, wg, wr, lane);
  const int r0 = 16 * wr + (lane >> 2);  // this thread's token rows r0, r0 + 8 in the m64 outputs

  for (int c = nt - 1; c >= 0; --c) {
    const int t0 = c * kC, rows = min(kC, p.T - t0);
    const int64_t off = chunk_off(c);
    // This thread's byte offset of (row r0 + 8 half, column 8 j + 2 (lane % 4)) in a swizzled [64][64]
    // panel is (fo + 1024 half) ^ (j << 4): the swizzle XORs chunk j with row % 8 = lane / 4. fo goes
    // through an opaque move each chunk, so ptxas derives the offsets in the loop from one register
    // instead of keeping the 16 of every tile hoisted out of it (which spilled).
    uint32_t fo = panel_off(r0, 2 * (lane & 3)), s0 = s0_;
    asm volatile("" : "+r"(fo), "+r"(s0));
    auto foff = [&](int j, int half) { return (fo + 1024u * half) ^ static_cast<uint32_t>(j << 4); };
    cp_async_wait<0>();
    wgmma::fence_proxy_async();  // this chunk's copies and the dS copy, before the tensor cores read them
    __syncthreads();             // A: ... and every read of chunk c + 1's tiles is done
    if (kGated && rows < kC) {   // the last chunk: rows past T take the last real row's gate
      pad_gates(gates(c), rows, tid);
      __syncthreads();
    }
    if (c + 1 < nt) flush_dg(c + 1);
    if (c > 0) {
      if constexpr (kGated) {  // into chunk c + 1's gate slot
        load_gates(gates(c - 1), p.G, b, (c - 1) * kC, h, p.T, p.H, tid);
        cp_async_commit();
      }
      prefetch(c - 1);
    }

    // ---- batch 1. The first k16 step of each product overwrites its accumulators (scale-d 0).
    float X[32], KdS[32], Pk[16];
    wgmma::fence();
    wgt::times_state<kD, T>(X, s0 + L::kW, s0 + L::kSin, wg);  // W S_in
    wgmma::commit();
    wgt::times_state<kD, T>(KdS, s0 + L::kK, s0 + L::kdS, wg);  // K dS
    wgmma::commit();
    wgt::scores_half<kD, T>(Pk, s0 + L::kK, s0 + L::kQ, wg);  // k q^T, columns 32 wg ..
    wgmma::commit();

    // Under the products: this thread's gates (rows past T hold the last real row's G, and their q, k, w, u,
    // do are zero, so every exp stays finite) and Qg.
    const float* G = gates(c);
    float g_last = 0.f, gr[2] = {0.f, 0.f}, wrow[2] = {1.f, 1.f}, qrow[2] = {p.scale, p.scale};
    if constexpr (kGated) {
      g_last = G[rows - 1];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        gr[half] = G[r0 + 8 * half];
        wrow[half] = __expf(g_last - gr[half]);
        qrow[half] = p.scale * __expf(gr[half]);
      }
    }
    // G at columns col, col + 1 (col even), one 8-byte read
    auto gcol2 = [&](int col) { return *reinterpret_cast<const float2*>(G + col); };
#pragma unroll
    for (int pn = 0; pn < 2; ++pn)
      scale_tile_rows<64, T, L::kThreads>(smem + L::kQg + pn * L::kPanel, smem + L::kQ + pn * L::kPanel, tid,
                                          [&](int r) { return kGated ? p.scale * __expf(G[r]) : p.scale; });
    wgmma::wait<2>();  // X: vn = U - X into panel wg of vn (each thread its own elements)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const uint32_t o = wg * L::kPanel + foff(j, half);
        const float2 u = unpack2<T>(*reinterpret_cast<const uint32_t*>(smem + L::kU + o));
        *reinterpret_cast<uint32_t*>(smem + L::kVn + o) =
            MmaType<T>::pack(u.x - X[4 * j + 2 * half], u.y - X[4 * j + 2 * half + 1]);
      }
    wgmma::wait<1>();  // KdS, times w_s = exp(G_last - G_s)
    if constexpr (kGated) wgt::scale_acc(KdS, wrow);
    wgmma::wait<0>();  // Pk's columns 32 wg ..: kept where t = col >= s = r
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = r0 + 8 * half, col = 32 * wg + wgt::acc_col(j, lane);
        float d0 = p.scale, d1 = p.scale;
        if constexpr (kGated) {
          const float2 g = gcol2(col);
          d0 = p.scale * __expf(g.x - gr[half]), d1 = p.scale * __expf(g.y - gr[half]);
        }
        // Selects, not branches: the mask drops even an overflow to inf.
        const float x0 = col >= r ? Pk[4 * j + 2 * half] * d0 : 0.f;
        const float x1 = col + 1 >= r ? Pk[4 * j + 2 * half + 1] * d1 : 0.f;
        *reinterpret_cast<uint32_t*>(smem + L::kPk + foff(4 * wg + j, half)) = MmaType<T>::pack(x0, x1);
      }
    // exp(G_last) <dS, S_in> over this thread's dS entries (gated), here rather than under the products:
    // next to their 96 in-flight accumulators it spilled.
    float red_part = 0.f;  // this lane's share of the G_last terms
    if constexpr (kGated) {
#pragma unroll
      for (int j = 0; j < kD / 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float2 x = unpack2<T>(*reinterpret_cast<const uint32_t*>(
              smem + L::kSin + (j / 8) * L::kSPanel + 64 * wg * 128 + foff(j % 8, half)));
          red_part += dS[4 * j + 2 * half] * x.x + dS[4 * j + 2 * half + 1] * x.y;
        }
      red_part *= __expf(g_last);
    }

    wgmma::fence_proxy_async();  // vn, Pk, Qg
    __syncthreads();             // B: they are whole; every read of U is done
    if (c > 0) {
      load_tile_all(L::kU, p.u, c - 1);
      cp_async_commit();
    }

    // ---- batch 2
    if constexpr (kGated) {
      const float e = __expf(g_last);
#pragma unroll
      for (int i = 0; i < kD / 2; ++i) dS[i] *= e;
    }
    float Pg[32], DQ[32];
    wgmma::fence();
    wgt::scores_times<T>(KdS, s0 + L::kPk, s0 + L::kDo, wg);  // dvn = w K dS + P^T do
    wgmma::commit();
    // warpgroup 0: Pg = do vn^T; 1: PgT = vn do^T
    wgt::scores<kD, T>(Pg, s0 + (wg ? L::kVn : L::kDo), s0 + (wg ? L::kDo : L::kVn));
    wgmma::commit();
    wgt::outer_update<kD, T>(dS, s0 + L::kQg, s0 + L::kDo, wg);  // dS += Qg^T do
    wgmma::commit();
    wgt::times_state_t<T>(DQ, s0 + L::kDo, s0 + L::kSin, wg);  // do S_in^T
    wgmma::commit();

    wgmma::wait<3>();  // dvn: du out, -dvn into panel wg of its tile
    store_acc_global<T>(static_cast<T*>(p.du) + off + 64 * wg, row_stride, wgt::as_frag(KdS), 16 * wr, 0,
                        rows, lane);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        *reinterpret_cast<uint32_t*>(smem + L::kNdvn + wg * L::kPanel + foff(j, half)) =
            MmaType<T>::pack(-KdS[4 * j + 2 * half], -KdS[4 * j + 2 * half + 1]);
    wgmma::wait<2>();  // Pg (kept where s = col <= t = r) or PgT (where t = col >= s = r)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = r0 + 8 * half, col = wgt::acc_col(j, lane);
        float x0, x1;
        float d0 = p.scale, d1 = p.scale;
        if constexpr (kGated) {
          const float2 g = gcol2(col);
          const float sg = wg ? 1.f : -1.f;  // exp(G_r - G_col) for Pg, exp(G_col - G_r) for PgT
          d0 = p.scale * __expf(sg * (g.x - gr[half])), d1 = p.scale * __expf(sg * (g.y - gr[half]));
        }
        if (wg == 0) {
          x0 = col <= r ? Pg[4 * j + 2 * half] * d0 : 0.f;
          x1 = col + 1 <= r ? Pg[4 * j + 2 * half + 1] * d1 : 0.f;
        } else {
          x0 = col >= r ? Pg[4 * j + 2 * half] * d0 : 0.f;
          x1 = col + 1 >= r ? Pg[4 * j + 2 * half + 1] * d1 : 0.f;
        }
        *reinterpret_cast<uint32_t*>(smem + (wg ? L::kPgT : L::kPg) + foff(j, half)) =
            MmaType<T>::pack(x0, x1);
      }
    wgmma::wait<0>();  // dS and DQ (do is read no more after this)
    wgt::scale_acc(DQ, qrow);
    wgmma::fence_proxy_async();  // -dvn, Pg, PgT
    __syncthreads();             // C: they are whole; every read of do is done
    if (c > 0) {
      load_tile_all(L::kDo, p.dout, c - 1);
      cp_async_commit();
    }

    // ---- batch 3
    float DW[32], DK[32];
    wgmma::fence();
    wgt::outer_update<kD, T>(dS, s0 + L::kW, s0 + L::kNdvn, wg);  // dS -= W^T dvn
    wgmma::commit();
    wgt::times_state_t<T>(DW, s0 + L::kNdvn, s0 + L::kSin, wg);  // dW = -dvn S_in^T
    wgmma::commit();
    wgt::scores_times<T>(DQ, s0 + L::kPg, s0 + L::kK, wg);  // dq = DQ + Pg k
    wgmma::commit();
    wgt::times_state_t<T>(DK, s0 + L::kVn, s0 + L::kdS, wg);  // vn dS^T
    wgmma::commit();

    wgmma::wait<2>();  // dS, dW
    store_acc_global<T>(static_cast<T*>(p.dw) + off + 64 * wg, row_stride, wgt::as_frag(DW), 16 * wr, 0, rows,
                        lane);
    wgmma::wait<1>();  // dq
    store_acc_global<T>(static_cast<T*>(p.dq) + off + 64 * wg, row_stride, wgt::as_frag(DQ), 16 * wr, 0, rows,
                        lane);
    float2 qdq = make_float2(0.f, 0.f);
    if constexpr (kGated) qdq = wgt::row_dot_panel<T>(DQ, smem + L::kQ + wg * L::kPanel, wr, lane);
    wgmma::wait<0>();  // DK: times w_s; gated, k_s . (w_s (vn dS^T)[s]) into the G_last terms
    if constexpr (kGated) {
      wgt::scale_acc(DK, wrow);
      const float2 d = wgt::row_dot_panel<T>(DK, smem + L::kK + wg * L::kPanel, wr, lane);
      if ((lane & 3) == 0) red_part += d.x + d.y;
    }
    wgmma::fence();
    wgt::scores_times<T>(DK, s0 + L::kPgT, s0 + L::kQ, wg);  // dk = DK + Pg^T q
    wgmma::commit();
    // Under it: w's panel wg and S_in's rows 64 wg .. are read after B only by this warpgroup, whose
    // products with them (dS, dW; DQ) are done in every one of its warps after this barrier.
    wgbwd::wg_sync(wg);
    if (c > 0) {
      load_panel_wg(L::kW, p.w, c - 1);
      load_sin_rows(c - 1);
      cp_async_commit();
    }
    if constexpr (kGated) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) red_part += __shfl_xor_sync(0xffffffffu, red_part, o);
      if (lane == 0) red[(c & 1) * 8 + warp] = red_part;
    }
    wgmma::wait<0>();  // dk
    store_acc_global<T>(static_cast<T*>(p.dk) + off + 64 * wg, row_stride, wgt::as_frag(DK), 16 * wr, 0, rows,
                        lane);
    if constexpr (kGated) {
      const float2 kdk = wgt::row_dot_panel<T>(DK, smem + L::kK + wg * L::kPanel, wr, lane);
      if ((lane & 3) == 0) {
        float* part = dGp + (c & 1) * 2 * kC + wg * kC;
        part[r0] = qdq.x - kdk.x;
        part[r0 + 8] = qdq.y - kdk.y;
      }
    }
    // q's and k's panels wg and the dS copy's rows 64 wg .. are read after B only by this warpgroup.
    wgbwd::wg_sync(wg);
    wgt::store_state_panels<kD, T>(smem + L::kdS, dS, wg, wr, lane);
    if (c > 0) {
      load_panel_wg(L::kQ, p.q, c - 1);
      load_panel_wg(L::kK, p.k, c - 1);
      cp_async_commit();
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  flush_dg(0);
  if (p.dh0) wgt::store_state<kD>(p.dh0 + bh * kD * kD, dS, wg, wr, lane);
}

}  // namespace attnlab::kernels::delta_chunk
