// FlashAttention-2 forward kernel (mma.sync m16n8k16 + ldmatrix + cp.async, swizzled shared memory).
//
// One thread block computes kBr query rows of one (batch, head): Q stays in shared memory (or in
// registers, kQInRegs) while K/V tiles of kBc keys stream through a kStages-deep cp.async ring.
// Each warp owns kBr / kWarps query rows (16 or 32: kMT m16 tiles) and all kBc keys of a tile, so
// the softmax row statistics never leave the warp (a quad of 4 lanes shares a row: 2 shuffles).
// Per key tile:  S = Q K^T (fp32) -> mask (only on tiles that cross a boundary) -> online softmax
// with exp2 and scale*log2(e) folded into one FFMA -> O = O*corr + P V, with P re-packed from
// the S accumulators straight into A fragments (no shared-memory round trip). With kLazyRescale
// O and l are rescaled only when a row max grows by more than 2^8. The row sum stays per-thread
// until the end (one quad reduction per row, not per tile).
//
// Later (wgmma / TMA): Q/K/V already sit in shared memory with the 128-byte swizzle that
// wgmma descriptors and TMA boxes use, and the ring of stages maps onto an mbarrier pipeline.
#pragma once

#include "kernels/flash_attn/flash_common.cuh"

namespace attnlab::kernels::flash {

template <int kD_, int kBr_, int kBc_, int kWarps_, int kStages_, bool kQInRegs_, bool kLazyRescale_ = true>
struct FwdConfig {
  static constexpr int kD = kD_;          // head dim
  static constexpr int kBr = kBr_;        // query rows per block
  static constexpr int kBc = kBc_;        // keys per pipeline stage
  static constexpr int kWarps = kWarps_;  // warps per block, each owns kBr / kWarps rows
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = kStages_;     // K/V tiles resident (one computed, kStages-1 in flight)
  static constexpr bool kQInRegs = kQInRegs_;  // keep Q's A fragments in registers (16-row warps)
  // Rescale O and l only when a row max grows by more than 2^8 (FlashAttention-4's trick): the
  // stale max stays a valid offset (P <= 256, fine in fp32 / bf16 / fp16) and is used for both O
  // and l, so the result is exact; it saves the 128 FMULs per row pair and tile almost always.
  static constexpr bool kLazyRescale = kLazyRescale_;
  static constexpr int kWarpRows = kBr / kWarps;
  static constexpr int kMT = kWarpRows / 16;  // m16 tiles per warp
  static constexpr int kNT = kBc / 8;         // n8 tiles of S per warp
  static constexpr int kDT = kD / 8;          // n8 tiles of O per warp
  static constexpr int kKS = kD / 16;         // k16 steps of Q K^T
  static constexpr int kSmemQ = kBr * kD * 2;
  static constexpr int kSmemKV = kBc * kD * 2;
  static constexpr int kSmemBytes = kSmemQ + 2 * kStages * kSmemKV;
  // 255 registers for a 4-warp block leaves room for two blocks per SM (8 warps), like FA2.
  static constexpr int kMinBlocks = kWarps == 4 ? 2 : 1;
  static_assert(kD == 64 || kD == 128, "head dim 64 or 128");
  static_assert(kWarpRows % 16 == 0 && kMT >= 1 && kMT <= 2, "16 or 32 rows per warp");
  static_assert(kBc % 16 == 0 && kStages >= 2, "bad tile");
  static_assert(!kQInRegs || kMT == 1, "Q in registers only for 16-row warps (register budget)");
};

template <typename Cfg, typename T>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    flash_attn_fwd_kernel(const FlashAttnParams p) {
  using Ty = MmaType<T>;
  constexpr int kD = Cfg::kD, kBr = Cfg::kBr, kBc = Cfg::kBc, kMT = Cfg::kMT, kNT = Cfg::kNT;
  constexpr int kDT = Cfg::kDT, kKS = Cfg::kKS, kStages = Cfg::kStages, kThreads = Cfg::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // Causal: the last row blocks see the most keys; launch them first so the tail is short.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (p.H / p.Hkv);
  const int m0 = m_block * kBr;
  const int offset = p.Tk - p.Tq;  // bottom-right alignment: row i sees keys j <= i + offset
  const bool upper = p.causal || p.window > 0;
  const bool windowed = p.window > 0;
  const int m_last = min(m0 + kBr, p.Tq) - 1;
  int n_end = p.Tk;  // keys [n_start, n_end) can be visible to some row of this block
  if (upper) n_end = min(n_end, m_last + offset + 1);
  const int n_start = windowed ? max(0, m0 + offset - p.window + 1) : 0;
  const int t_begin = n_start / kBc;
  const int t_end = n_end > n_start ? (n_end + kBc - 1) / kBc : t_begin;

  const T* qg =
      static_cast<const T*>(p.q) + b * p.q_batch_stride + int64_t(m0) * p.q_row_stride + h * p.q_head_stride;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
  const uint32_t sQ = smem_u32(smem);
  const uint32_t sK = sQ + Cfg::kSmemQ;
  const uint32_t sV = sK + kStages * Cfg::kSmemKV;

  auto load_kv = [&](int t, int stage) {
    const int n0 = t * kBc;
    load_tile<kBc, kD, kThreads>(sK + stage * Cfg::kSmemKV, kg + int64_t(n0) * p.k_row_stride, p.k_row_stride,
                                 p.Tk - n0, tid);
    load_tile<kBc, kD, kThreads>(sV + stage * Cfg::kSmemKV, vg + int64_t(n0) * p.v_row_stride, p.v_row_stride,
                                 p.Tk - n0, tid);
  };

  // Prologue: Q and the first kStages-1 K/V tiles; one commit group per tile (empty past the end,
  // so that wait_group<kStages-2> always means "the tile about to be used has landed").
  load_tile<kBr, kD, kThreads>(sQ, qg, p.q_row_stride, p.Tq - m0, tid);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (t_begin + s < t_end) load_kv(t_begin + s, s);
    cp_async_commit();
  }

  float acc_o[kMT][kDT][4];
  float row_max[kMT][2], row_sum[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }
  uint32_t q_frag[Cfg::kQInRegs ? kMT : 1][Cfg::kQInRegs ? kKS : 1][4];

  const float sl2 = p.scale * kLog2e;  // exp(scale * s) = exp2(sl2 * s)
  const int wrow = warp * Cfg::kWarpRows;
  // ldmatrix lane roles: A (non-trans): row lane%16, chunk +lane/16; B (non-trans, two n8 tiles):
  // row lane%8 + 8*(lane/16), chunk +(lane/8)%2; B (trans, two n8 tiles): row lane%8 + 8*((lane/8)%2),
  // chunk +lane/16.
  const int l16 = lane & 15, lhi = lane >> 4, l8 = lane & 7, lb3 = (lane >> 3) & 1;
  const SwzLane<kD> q_a(l16, lhi), k_b(l8 + lhi * 8, lb3), v_bt(l8 + lb3 * 8, lhi);
  const uint32_t sQw = sQ + wrow * (kD * 2);  // this warp's Q rows

  int stage = 0;
  for (int t = t_begin; t < t_end; ++t) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile t visible to all; everyone is done with the stage refilled below
    {
      int sn = stage + kStages - 1;
      if (sn >= kStages) sn -= kStages;
      if (t + kStages - 1 < t_end) load_kv(t + kStages - 1, sn);
      cp_async_commit();
    }
    if constexpr (Cfg::kQInRegs) {
      if (t == t_begin) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int ks = 0; ks < kKS; ++ks) ldmatrix_x4(q_frag[mt][ks], q_a(sQw, mt * 16, ks));
      }
    }
    const uint32_t sKs = sK + stage * Cfg::kSmemKV;
    const uint32_t sVs = sV + stage * Cfg::kSmemKV;

    // ---- S = Q K^T
    float acc_s[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_s[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if constexpr (Cfg::kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mt][e] = q_frag[mt][ks][e];
        } else {
          ldmatrix_x4(a[mt], q_a(sQw, mt * 16, ks));
        }
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, k_b(sKs, np * 16, ks));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<T>(acc_s[mt][2 * np], a[mt], bf[0], bf[1]);
          mma_16816<T>(acc_s[mt][2 * np + 1], a[mt], bf[2], bf[3]);
        }
      }
    }

    // ---- mask, only on tiles crossing the sequence end, the causal diagonal or the window edge
    const int n0 = t * kBc;
    const bool need_mask = n0 + kBc > p.Tk || (upper && n0 + kBc - 1 > m0 + offset) ||
                           (windowed && n0 <= m0 + kBr - 1 + offset - p.window);
    if (need_mask) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = m0 + wrow + mt * 16 + (lane >> 2) + hh * 8;
          const int hi = upper ? min(row + offset, p.Tk - 1) : p.Tk - 1;  // visible: lo < col <= hi
          const int lo = windowed ? row + offset - p.window : -1;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = n0 + nt * 8 + (lane & 3) * 2 + e;
              if (col > hi || col <= lo) acc_s[mt][nt][hh * 2 + e] = -INFINITY;
            }
        }
    }

    // ---- online softmax (row max over the quad, exp2 with the scale folded in, rescale O)
    if constexpr (Cfg::kLazyRescale) {
      float mx[kMT][2];
      bool need = false;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float m = row_max[mt][hh];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            m = fmaxf(m, fmaxf(acc_s[mt][nt][hh * 2], acc_s[mt][nt][hh * 2 + 1]));
          m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
          m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
          mx[mt][hh] = m;
          // grows by > 8 in log2 units (old max -inf and a finite new one: +inf; both -inf: NaN, false)
          need |= (m - row_max[mt][hh]) * sl2 > 8.f;
        }
      if (__any_sync(0xffffffffu, need)) {  // warp-uniform: rarely taken after the first tile
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const bool up = (mx[mt][hh] - row_max[mt][hh]) * sl2 > 8.f;
            const float corr = up ? fast_exp2((row_max[mt][hh] - mx[mt][hh]) * sl2) : 1.f;  // old -inf -> 0
            row_max[mt][hh] = up ? mx[mt][hh] : row_max[mt][hh];
            row_sum[mt][hh] *= corr;
#pragma unroll
            for (int dt = 0; dt < kDT; ++dt) {
              acc_o[mt][dt][hh * 2] *= corr;
              acc_o[mt][dt][hh * 2 + 1] *= corr;
            }
          }
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const float m_scaled = row_max[mt][hh] == -INFINITY ? 0.f : row_max[mt][hh] * sl2;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float pe = fast_exp2(fmaf(acc_s[mt][nt][hh * 2 + e], sl2, -m_scaled));
              acc_s[mt][nt][hh * 2 + e] = pe;
              sum += pe;
            }
          row_sum[mt][hh] += sum;
        }
    } else {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float mx = row_max[mt][hh];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            mx = fmaxf(mx, fmaxf(acc_s[mt][nt][hh * 2], acc_s[mt][nt][hh * 2 + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_scaled = mx == -INFINITY ? 0.f : mx * sl2;  // a fully masked row stays all-zero
          const float corr = fast_exp2(row_max[mt][hh] * sl2 - m_scaled);  // old max -inf -> 0
          row_max[mt][hh] = mx;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float pe = fast_exp2(fmaf(acc_s[mt][nt][hh * 2 + e], sl2, -m_scaled));
              acc_s[mt][nt][hh * 2 + e] = pe;
              sum += pe;
            }
          row_sum[mt][hh] = row_sum[mt][hh] * corr + sum;
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt) {
            acc_o[mt][dt][hh * 2] *= corr;
            acc_o[mt][dt][hh * 2 + 1] *= corr;
          }
        }
    }

    // ---- O += P V  (P: accumulators of two n8 tiles = one A fragment of a k16 step)
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        a[mt][0] = Ty::pack(acc_s[mt][2 * kk][0], acc_s[mt][2 * kk][1]);
        a[mt][1] = Ty::pack(acc_s[mt][2 * kk][2], acc_s[mt][2 * kk][3]);
        a[mt][2] = Ty::pack(acc_s[mt][2 * kk + 1][0], acc_s[mt][2 * kk + 1][1]);
        a[mt][3] = Ty::pack(acc_s[mt][2 * kk + 1][2], acc_s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, v_bt(sVs, kk * 16, dp));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<T>(acc_o[mt][2 * dp], a[mt], bf[0], bf[1]);
          mma_16816<T>(acc_o[mt][2 * dp + 1], a[mt], bf[2], bf[3]);
        }
      }
    }
    stage = stage + 1 == kStages ? 0 : stage + 1;
  }

  // ---- epilogue: normalise, lse, O through shared memory (reusing Q's tile) for 16-byte stores
  cp_async_wait<0>();
  __syncthreads();
  float* lse_row = p.lse + (int64_t(b) * p.H + h) * p.Tq;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float sum = row_sum[mt][hh];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int lr = wrow + mt * 16 + (lane >> 2) + hh * 8;
      if ((lane & 3) == 0 && m0 + lr < p.Tq)
        lse_row[m0 + lr] = sum > 0.f ? row_max[mt][hh] * p.scale + logf(sum) : INFINITY;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
        *reinterpret_cast<uint32_t*>(smem + swz<kD>(lr, dt) + (lane & 3) * 4) =
            Ty::pack(acc_o[mt][dt][hh * 2] * inv, acc_o[mt][dt][hh * 2 + 1] * inv);
    }
  __syncthreads();
  T* og = static_cast<T*>(p.o) + b * p.o_batch_stride + int64_t(m0) * p.o_row_stride + h * p.o_head_stride;
  store_tile<kBr, kD, kThreads>(og, p.o_row_stride, smem, p.Tq - m0, tid);
}

// Launches flash_attn_fwd_kernel<Cfg, T> for p (already validated).
template <typename Cfg, typename T>
cudaError_t run_flash_fwd(const FlashAttnParams& p) {
  auto kernel = flash_attn_fwd_kernel<Cfg, T>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid((p.Tq + Cfg::kBr - 1) / Cfg::kBr, p.H, p.B);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, static_cast<cudaStream_t>(p.stream)>>>(p);
  return cudaGetLastError();
}

}  // namespace attnlab::kernels::flash
