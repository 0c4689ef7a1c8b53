// The flash-attention backward on Hopper's warpgroup MMA (wgmma, sm_90a only), D = 64 and 128: the same
// algorithm, inputs, outputs and workspaces as flash_attn_bwd_kernel (flash_bwd_kernel.cuh:
// FlashAttention-2's Algorithm 2, a block owns keys and walks the query blocks that see them), selected by
// FlashAttnParams::bwd_wgmma.
//
// Why: the mma.sync backward is bound by shared-memory reads (Nsight Compute: L1/shared pipe 82% busy,
// tensor pipe 43%), because each of its 8 warps ldmatrix-loads its own copy of every B operand (Q, dO, their
// transposes, dS, K). wgmma reads each operand once per warpgroup, straight from shared memory, and takes
// P^T and dS^T as A operands from registers.
//
// Work split: 128 keys per block, 2 warpgroups (256 threads); warpgroup g owns keys 64 g .. 64 g + 63
// (wgmma's M = 64) and keeps their dK and dV (64 x D float32 each). Per block of kBr queries (64 at D = 128,
// 128 at D = 64: either way S^T, dP^T, dK and dV take 192 accumulator registers per thread):
//   S^T  = K_g Q^T    (m64n{kBr}, K-major A and B: D / 16 k16 steps)   P^T  = exp2(S^T scale log2e - lse
//   log2e) dP^T = V_g dO^T   (same)                                             dS^T = P^T o (dP^T - D) dV_g
//   += P^T dO    (m64n{D}, A = P^T from registers, B = dO MN-major: kBr / 16 k16 steps over the queries) dK_g
//   += dS^T Q    (same with dS^T and Q) dS^T -> shared memory; dQ += dS K over the block's 128 keys (8 k16
//   steps; A = dS^T read M-major, B = K MN-major), one 64 x 64 tile per warpgroup: at D = 128 the columns 64
//   g .., at D = 64 the queries 64 g ..; added to the float32 dq_accum with atomics.
// Tiles are 64-column panels with the 128-byte swizzle (swz<64>; kernels/common/wgmma.cuh): K and V as D / 64
// [128][64] panels, Q and dO (double-buffered through cp.async) as D / 64 [kBr][64] panels, dS^T as kBr / 64
// [128][64] panels.
#pragma once

#include "kernels/common/wgmma.cuh"
#include "kernels/flash_attn/flash_bwd_kernel.cuh"

namespace attnlab::kernels::flash {

template <int kD_>
struct BwdWgSmem {
  static constexpr int kD = kD_, kBc = 128, kBr = kD == 128 ? 64 : 128, kThreads = 256;
  static constexpr int kDP = kD / 64;           // 64-column panels of K, V, Q, dO
  static constexpr int kKPanel = kBc * 64 * 2;  // [128 keys][64 columns] 16-bit: 16 KB
  static constexpr int kQPanel = kBr * 64 * 2;  // [kBr queries][64 columns]
  static constexpr int kK = 0, kV = kDP * kKPanel;
  static constexpr int kQ = 2 * kDP * kKPanel;              // 2 stages x kDP panels
  static constexpr int kdO = kQ + 2 * kDP * kQPanel;        // idem
  static constexpr int kdS = kdO + 2 * kDP * kQPanel;       // dS^T: [128 keys][kBr queries], kBr / 64 panels
  static constexpr int kStat = kdS + (kBr / 64) * kKPanel;  // per stage: lse[kBr], D[kBr] (float32)
  static constexpr int kBytes = kStat + 2 * 2 * kBr * 4;
  static_assert(kD == 64 || kD == 128, "head dim 64 or 128");
  static_assert(kK % 1024 == 0 && kV % 1024 == 0 && kQ % 1024 == 0 && kdO % 1024 == 0 && kdS % 1024 == 0,
                "wgmma operand panels must start at 1024-byte boundaries (128-byte swizzle)");
};

template <int kD_, typename T>
__global__ void __launch_bounds__(256, 1) flash_attn_bwd_wgmma_kernel(const FlashAttnParams p) {
  using L = BwdWgSmem<kD_>;
  using Ty = MmaType<T>;
  constexpr int kD = L::kD, kBc = L::kBc, kBr = L::kBr, kThreads = L::kThreads, kDP = L::kDP;
  constexpr int kNS = kBr / 2, kNDK = kD / 2;  // accumulators per thread: S^T / dP^T, dK / dV
  // Dynamic shared memory only (no static), so its base is the window's, 1024-aligned as the swizzled
  // operands need (the mma.sync kernel declares its own array 128-aligned, hence another name).
  extern __shared__ __align__(1024) unsigned char fbw_smem[];
  unsigned char* const smem = fbw_smem;
  const uint32_t s0 = smem_u32(smem);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, wr = warp & 3;  // warpgroup, warp within it
  const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int n0 = n_block * kBc;
  const int group = p.H / p.Hkv;
  const int offset = p.Tk - p.Tq;
  const bool upper = p.causal || p.window > 0;
  const bool windowed = p.window > 0;
  const int n_last = min(n0 + kBc, p.Tk) - 1;
  // Queries that can see some key of [n0, n_last] (as flash_attn_bwd_kernel).
  const int i_begin = upper ? max(0, n0 - offset) : 0;
  const int i_end = windowed ? min(p.Tq, n_last - offset + p.window) : p.Tq;
  const int mb_begin = i_begin / kBr;
  const int mb_count = i_end > i_begin ? (i_end + kBr - 1) / kBr - mb_begin : 0;
  const int n_iter = group * mb_count;

  const T* kg =
      static_cast<const T*>(p.k) + b * p.k_batch_stride + int64_t(n0) * p.k_row_stride + hk * p.k_head_stride;
  const T* vg =
      static_cast<const T*>(p.v) + b * p.v_batch_stride + int64_t(n0) * p.v_row_stride + hk * p.v_head_stride;
#pragma unroll
  for (int pn = 0; pn < kDP; ++pn) {
    load_tile<kBc, 64, kThreads>(s0 + L::kK + pn * L::kKPanel, kg + 64 * pn, p.k_row_stride, p.Tk - n0, tid);
    load_tile<kBc, 64, kThreads>(s0 + L::kV + pn * L::kKPanel, vg + 64 * pn, p.v_row_stride, p.Tk - n0, tid);
  }

  auto load_q = [&](int it, int stage) {
    const int h = hk * group + it / mb_count;
    const int q0 = (mb_begin + it % mb_count) * kBr;
    const T* qg = static_cast<const T*>(p.q) + b * p.q_batch_stride + int64_t(q0) * p.q_row_stride +
                  h * p.q_head_stride;
    const T* dg = static_cast<const T*>(p.dout) + b * p.do_batch_stride + int64_t(q0) * p.do_row_stride +
                  h * p.do_head_stride;
#pragma unroll
    for (int pn = 0; pn < kDP; ++pn) {
      load_tile<kBr, 64, kThreads>(s0 + L::kQ + (kDP * stage + pn) * L::kQPanel, qg + 64 * pn, p.q_row_stride,
                                   p.Tq - q0, tid);
      load_tile<kBr, 64, kThreads>(s0 + L::kdO + (kDP * stage + pn) * L::kQPanel, dg + 64 * pn,
                                   p.do_row_stride, p.Tq - q0, tid);
    }
    if (tid < kBr) {
      const bool ok = q0 + tid < p.Tq;
      const int64_t r = (int64_t(b) * p.H + h) * p.Tq + q0 + tid;
      const uint32_t st = s0 + L::kStat + stage * (2 * kBr * 4);
      cp_async_4(st + tid * 4, ok ? p.lse + r : p.lse, ok);
      cp_async_4(st + kBr * 4 + tid * 4, ok ? p.softmax_d + r : p.softmax_d, ok);
    }
  };
  if (n_iter > 0) load_q(0, 0);
  cp_async_commit();

  float acc_dk[kNDK], acc_dv[kNDK];
#pragma unroll
  for (int i = 0; i < kNDK; ++i) acc_dk[i] = acc_dv[i] = 0.f;

  const float sl2 = p.scale * kLog2e;
  const int rk = 16 * wr + (lane >> 2);  // this thread's first key row within the warpgroup's 64 (and + 8)
  const int kw0 = n0 + 64 * wg;          // the warpgroup's first key
  const uint32_t sKg = s0 + L::kK + wg * (64 * 128), sVg = s0 + L::kV + wg * (64 * 128);
  // dQ: this warpgroup's 64 x 64 tile, at query panel dq_m (of dS^T) and column panel dq_n (of K)
  const int dq_m = kBr == 128 ? wg : 0, dq_n = kD == 128 ? wg : 0;

  for (int it = 0; it < n_iter; ++it) {
    const int stage = it & 1;
    cp_async_wait<0>();
    wgmma::fence_proxy_async();  // this step's Q / dO (cp.async) before the tensor cores read them
    __syncthreads();             // ... from every thread; everyone done with the other stage and with dS^T
    if (it + 1 < n_iter) load_q(it + 1, stage ^ 1);
    cp_async_commit();

    const int h = hk * group + it / mb_count;
    const int q0 = (mb_begin + it % mb_count) * kBr;
    const uint32_t sQs = s0 + L::kQ + kDP * stage * L::kQPanel, sdOs = s0 + L::kdO + kDP * stage * L::kQPanel;
    const float* lse_s = reinterpret_cast<const float*>(smem + L::kStat + stage * (2 * kBr * 4));
    const float* dd_s = lse_s + kBr;

    // ---- S^T = K_g Q^T and dP^T = V_g dO^T, two groups in flight
    float acc_s[kNS], acc_dp[kNS];
#pragma unroll
    for (int i = 0; i < kNS; ++i) acc_s[i] = acc_dp[i] = 0.f;
    wgmma::fence();
#pragma unroll
    for (int s = 0; s < kD / 16; ++s) {
      const uint32_t k_off = (s / 4) * L::kKPanel + (s % 4) * 32, q_off = (s / 4) * L::kQPanel + (s % 4) * 32;
      wgmma::Mma<kBr, T, 0>::run(acc_s, wgmma::make_desc(sKg + k_off, 16, 1024),
                                 wgmma::make_desc(sQs + q_off, 16, 1024), 1);
    }
    wgmma::commit();
#pragma unroll
    for (int s = 0; s < kD / 16; ++s) {
      const uint32_t k_off = (s / 4) * L::kKPanel + (s % 4) * 32, q_off = (s / 4) * L::kQPanel + (s % 4) * 32;
      wgmma::Mma<kBr, T, 0>::run(acc_dp, wgmma::make_desc(sVg + k_off, 16, 1024),
                                 wgmma::make_desc(sdOs + q_off, 16, 1024), 1);
    }
    wgmma::commit();
    wgmma::wait<1>();  // S^T done; dP^T may still run

    // ---- P^T = exp(scale S^T - lse), masked scores -> -inf first (only on boundary blocks)
    const bool need_mask = q0 + kBr > p.Tq || kw0 + 64 > p.Tk || (upper && kw0 + 63 > q0 + offset) ||
                           (windowed && kw0 <= q0 + kBr - 1 + offset - p.window);
    if (need_mask) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int key = kw0 + rk + 8 * hh;
        const int qlo = upper ? key - offset : -(1 << 30);
        const int qhi = windowed ? min(p.Tq, key - offset + p.window) : p.Tq;
#pragma unroll
        for (int j = 0; j < kBr / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int qi = q0 + 8 * j + 2 * (lane & 3) + e;
            if (key >= p.Tk || qi < qlo || qi >= qhi) acc_s[4 * j + 2 * hh + e] = -INFINITY;
          }
      }
    }
#pragma unroll
    for (int j = 0; j < kBr / 8; ++j) {
      const float2 lse2 = *reinterpret_cast<const float2*>(lse_s + 8 * j + 2 * (lane & 3));
      const float nl0 = -lse2.x * kLog2e, nl1 = -lse2.y * kLog2e;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        acc_s[4 * j + 2 * hh] = fast_exp2(fmaf(acc_s[4 * j + 2 * hh], sl2, nl0));
        acc_s[4 * j + 2 * hh + 1] = fast_exp2(fmaf(acc_s[4 * j + 2 * hh + 1], sl2, nl1));
      }
    }
    wgmma::wait<0>();

    // ---- dS^T = P^T o (dP^T - D); both as A fragments (k16 step kq = queries 16 kq ..), dS^T to shared
    uint32_t pf[kBr / 16][4], sf[kBr / 16][4];
#pragma unroll
    for (int j = 0; j < kBr / 8; ++j) {
      const float2 d2 = *reinterpret_cast<const float2*>(dd_s + 8 * j + 2 * (lane & 3));
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        acc_dp[4 * j + 2 * hh] = acc_s[4 * j + 2 * hh] * (acc_dp[4 * j + 2 * hh] - d2.x);
        acc_dp[4 * j + 2 * hh + 1] = acc_s[4 * j + 2 * hh + 1] * (acc_dp[4 * j + 2 * hh + 1] - d2.y);
      }
    }
#pragma unroll
    for (int kq = 0; kq < kBr / 16; ++kq)
#pragma unroll
      for (int r = 0; r < 4; ++r) {  // r: (rows g, cols 0-7), (g + 8, 0-7), (g, 8-15), (g + 8, 8-15)
        const int i = 8 * kq + 4 * (r >> 1) + 2 * (r & 1);
        pf[kq][r] = Ty::pack(acc_s[i], acc_s[i + 1]);
        sf[kq][r] = Ty::pack(acc_dp[i], acc_dp[i + 1]);
        const int row = 64 * wg + rk + 8 * (r & 1), col = 16 * kq + 8 * (r >> 1) + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(smem + L::kdS + (col / 64) * L::kKPanel + panel_off(row, col % 64)) =
            sf[kq][r];
      }

    // ---- dV_g += P^T dO, dK_g += dS^T Q (A from registers, B MN-major over the two 64-column panels)
    wgmma::fence();
#pragma unroll
    for (int kq = 0; kq < kBr / 16; ++kq)
      wgmma::MmaRs<kD, T, 1>::run(acc_dv, pf[kq], wgmma::make_desc_mn(sdOs + kq * 2048, L::kQPanel), 1);
#pragma unroll
    for (int kq = 0; kq < kBr / 16; ++kq)
      wgmma::MmaRs<kD, T, 1>::run(acc_dk, sf[kq], wgmma::make_desc_mn(sQs + kq * 2048, L::kQPanel), 1);
    wgmma::commit();
    wgmma::fence_proxy_async();  // this thread's dS^T stores, before the tensor cores read them
    __syncthreads();             // dS^T of both warpgroups complete

    // ---- dQ(queries q0 + 64 dq_m .., columns 64 dq_n ..) += dS K over the block's 128 keys
    float acc_dq[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) acc_dq[i] = 0.f;
    wgmma::fence();
#pragma unroll
    for (int s = 0; s < 8; ++s)
      wgmma::Mma<64, T, 1, 1>::run(
          acc_dq, wgmma::make_desc_mn(s0 + L::kdS + dq_m * L::kKPanel + s * 2048, L::kKPanel),
          wgmma::make_desc_mn(s0 + L::kK + dq_n * L::kKPanel + s * 2048, L::kKPanel), 1);
    wgmma::commit();
    wgmma::wait<0>();
    float* dqa = p.dq_accum + ((int64_t(b) * p.H + h) * p.Tq + q0) * kD + 64 * dq_n;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int row = 64 * dq_m + rk + 8 * hh;  // query row of the block (the accumulator's M: the queries)
      if (q0 + row < p.Tq) {
#pragma unroll
        for (int j = 0; j < 8; ++j)
          atomic_add_f32x2(dqa + row * kD + 8 * j + 2 * (lane & 3), acc_dq[4 * j + 2 * hh],
                           acc_dq[4 * j + 2 * hh + 1]);
      }
    }
  }

  // ---- epilogue: dK (scaled) and dV through shared memory as [128][D] swizzled tiles (K / V are free)
  cp_async_wait<0>();
  __syncthreads();
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = 64 * wg + rk + 8 * hh;
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) {
      *reinterpret_cast<uint32_t*>(smem + L::kK + swz<kD>(r, j) + (lane & 3) * 4) =
          Ty::pack(acc_dk[4 * j + 2 * hh] * p.scale, acc_dk[4 * j + 2 * hh + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(smem + L::kV + swz<kD>(r, j) + (lane & 3) * 4) =
          Ty::pack(acc_dv[4 * j + 2 * hh], acc_dv[4 * j + 2 * hh + 1]);
    }
  }
  __syncthreads();
  T* dkg =
      static_cast<T*>(p.dk) + b * p.dk_batch_stride + int64_t(n0) * p.dk_row_stride + hk * p.dk_head_stride;
  T* dvg =
      static_cast<T*>(p.dv) + b * p.dv_batch_stride + int64_t(n0) * p.dv_row_stride + hk * p.dv_head_stride;
  store_tile<kBc, kD, kThreads>(dkg, p.dk_row_stride, smem + L::kK, p.Tk - n0, tid);
  store_tile<kBc, kD, kThreads>(dvg, p.dv_row_stride, smem + L::kV, p.Tk - n0, tid);
}

// The backward's launch sequence with the wgmma main kernel.
template <int kD, typename T>
cudaError_t run_flash_bwd_wgmma(const FlashAttnParams& p) {
  using L = BwdWgSmem<kD>;
  return run_flash_bwd_steps<kD, T>(p, [&](cudaStream_t stream) {
    auto kernel = flash_attn_bwd_wgmma_kernel<kD, T>;
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kBytes);
    if (err != cudaSuccess) return err;
    const dim3 grid((p.Tk + L::kBc - 1) / L::kBc, p.Hkv, p.B);
    kernel<<<grid, L::kThreads, L::kBytes, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace attnlab::kernels::flash
