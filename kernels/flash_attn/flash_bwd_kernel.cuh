// FlashAttention-2 backward (Algorithm 2) with mma.sync m16n8k16, ldmatrix and cp.async.
//
// One block owns kBc keys of one (batch, key head) and loops over every (query head of the GQA
// group, query block) pair that can see them, so dK / dV of the group are summed in registers and
// written once, with no atomics. Each warp owns 16 keys and works in the transposed ("key-major")
// formulation, which puts P^T and dS^T straight into A fragments:
//   S^T  = K_w Q^T            P^T = exp2(S^T * scale*log2e - lse*log2e)   (masked)
//   dP^T = V_w dO^T           dS^T = P^T o (dP^T - D)
//   dV_w += P^T dO            dK_w += dS^T Q          (scale applied once at the end)
//   dS^T -> shared memory; dQ(q block) += dS K, split over the warps, added to a float32 accumulator
//   with atomics (vector red.global.add.v2.f32 on sm_90); a last kernel scales and converts it.
// Q, dO, lse and D for the next query block land through cp.async while this one is computed.
#pragma once

#include "kernels/flash_attn/flash_common.cuh"

namespace attnlab::kernels::flash {

template <int kD_, int kBc_, int kBr_, int kWarps_, int kDqMT_ = 2>
struct BwdConfig {
  static constexpr int kD = kD_;          // head dim
  static constexpr int kBc = kBc_;        // keys per block (16 per warp)
  static constexpr int kBr = kBr_;        // query rows per step
  static constexpr int kWarps = kWarps_;  // warps per block
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = 2;      // Q / dO / lse / D double buffer
  static constexpr int kNTq = kBr / 8;   // n8 tiles of S^T / dP^T (queries)
  static constexpr int kKSd = kD / 16;   // k16 steps over the head dim (S^T, dP^T)
  static constexpr int kKSq = kBr / 16;  // k16 steps over queries (dV, dK)
  static constexpr int kDT = kD / 8;     // n8 tiles of dK / dV
  // dQ = dS K: warp w takes kDqMT m16 query tiles (group w % kQGroups) and the head-dim slice
  // w / kQGroups. kDqMT = 2 (32 x 32 warp tiles at D=128) reads 32 ldmatrix per 64 mma instead
  // of 40 with 16 x 64 tiles.
  static constexpr int kDqMT = kDqMT_;
  static constexpr int kQGroups = kBr / (16 * kDqMT);
  static constexpr int kDParts = kWarps / kQGroups;
  static constexpr int kDqCols = kD / kDParts;
  static constexpr int kDqDT = kDqCols / 8;
  static constexpr int kSmemKV = kBc * kD * 2;
  static constexpr int kSmemQ = kBr * kD * 2;
  static constexpr int kSmemDS = kBc * kBr * 2;
  static constexpr int kSmemStat = kBr * 4;
  static constexpr int kMinBlocks = kWarps <= 4 ? 2 : 1;  // 4-warp blocks: two per SM
  static constexpr int kSmemBytes = 2 * kSmemKV + 2 * kStages * kSmemQ + kSmemDS + 2 * kStages * kSmemStat;
  static_assert(kD == 64 || kD == 128, "head dim 64 or 128");
  static_assert(kBc == 16 * kWarps, "16 keys per warp");
  static_assert(kBr % 64 == 0, "dS^T rows must be >= 128 bytes for the swizzle");
  static_assert(kWarps % kQGroups == 0 && kDParts * kQGroups == kWarps && kDqCols % 16 == 0, "dQ warp split");
  static_assert(kThreads >= kBr, "one thread per query row for lse / D");
};

__device__ __forceinline__ void atomic_add_f32x2(float* addr, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(addr), make_float2(x, y));  // one red.global.add.v2.f32
#else
  atomicAdd(addr, x);
  atomicAdd(addr + 1, y);
#endif
}

template <typename Cfg, typename T>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    flash_attn_bwd_kernel(const FlashAttnParams p) {
  using Ty = MmaType<T>;
  constexpr int kD = Cfg::kD, kBc = Cfg::kBc, kBr = Cfg::kBr, kThreads = Cfg::kThreads;
  constexpr int kNTq = Cfg::kNTq, kKSd = Cfg::kKSd, kKSq = Cfg::kKSq, kDT = Cfg::kDT;
  extern __shared__ __align__(128) unsigned char smem[];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int n0 = n_block * kBc;
  const int group = p.H / p.Hkv;
  const int offset = p.Tk - p.Tq;
  const bool upper = p.causal || p.window > 0;
  const bool windowed = p.window > 0;
  const int n_last = min(n0 + kBc, p.Tk) - 1;
  // Queries that can see some key of [n0, n_last]: i >= n0 - offset (causal), i < n_last - offset + window.
  const int i_begin = upper ? max(0, n0 - offset) : 0;
  const int i_end = windowed ? min(p.Tq, n_last - offset + p.window) : p.Tq;
  const int mb_begin = i_begin / kBr;
  const int mb_count = i_end > i_begin ? (i_end + kBr - 1) / kBr - mb_begin : 0;
  const int n_iter = group * mb_count;

  unsigned char* const smem_k = smem;
  unsigned char* const smem_v = smem_k + Cfg::kSmemKV;
  unsigned char* const smem_q = smem_v + Cfg::kSmemKV;
  unsigned char* const smem_do = smem_q + Cfg::kStages * Cfg::kSmemQ;
  unsigned char* const smem_ds = smem_do + Cfg::kStages * Cfg::kSmemQ;
  unsigned char* const smem_lse = smem_ds + Cfg::kSmemDS;
  unsigned char* const smem_dd = smem_lse + Cfg::kStages * Cfg::kSmemStat;
  const uint32_t sK = smem_u32(smem_k), sV = smem_u32(smem_v), sQ = smem_u32(smem_q), sdO = smem_u32(smem_do);
  const uint32_t sdS = smem_u32(smem_ds);

  const T* kg =
      static_cast<const T*>(p.k) + b * p.k_batch_stride + int64_t(n0) * p.k_row_stride + hk * p.k_head_stride;
  const T* vg =
      static_cast<const T*>(p.v) + b * p.v_batch_stride + int64_t(n0) * p.v_row_stride + hk * p.v_head_stride;
  load_tile<kBc, kD, kThreads>(sK, kg, p.k_row_stride, p.Tk - n0, tid);
  load_tile<kBc, kD, kThreads>(sV, vg, p.v_row_stride, p.Tk - n0, tid);

  auto load_q = [&](int it, int stage) {
    const int h = hk * group + it / mb_count;
    const int q0 = (mb_begin + it % mb_count) * kBr;
    const T* qg = static_cast<const T*>(p.q) + b * p.q_batch_stride + int64_t(q0) * p.q_row_stride +
                  h * p.q_head_stride;
    const T* dg = static_cast<const T*>(p.dout) + b * p.do_batch_stride + int64_t(q0) * p.do_row_stride +
                  h * p.do_head_stride;
    load_tile<kBr, kD, kThreads>(sQ + stage * Cfg::kSmemQ, qg, p.q_row_stride, p.Tq - q0, tid);
    load_tile<kBr, kD, kThreads>(sdO + stage * Cfg::kSmemQ, dg, p.do_row_stride, p.Tq - q0, tid);
    if (tid < kBr) {
      const bool ok = q0 + tid < p.Tq;
      const int64_t r = (int64_t(b) * p.H + h) * p.Tq + q0 + tid;
      cp_async_4(smem_u32(smem_lse + stage * Cfg::kSmemStat + tid * 4), ok ? p.lse + r : p.lse, ok);
      cp_async_4(smem_u32(smem_dd + stage * Cfg::kSmemStat + tid * 4), ok ? p.softmax_d + r : p.softmax_d,
                 ok);
    }
  };
  if (n_iter > 0) load_q(0, 0);
  cp_async_commit();

  float acc_dk[kDT][4], acc_dv[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dk[dt][e] = acc_dv[dt][e] = 0.f;

  const float sl2 = p.scale * kLog2e;
  const int l16 = lane & 15, lhi = lane >> 4, l8 = lane & 7, lb3 = (lane >> 3) & 1;
  const int wkey = warp * 16;                               // this warp's keys within the block
  const int q_tile0 = (warp % Cfg::kQGroups) * Cfg::kDqMT;  // first m16 query tile of this warp's dQ
  const int dq_col0 = (warp / Cfg::kQGroups) * Cfg::kDqCols;
  // ldmatrix roles: A (K_w, V_w), B (Q, dO as n-major), B transposed (dO, Q as k-major)
  const SwzLane<kD> a_role(l16, lhi), b_role(l8 + lhi * 8, lb3), bt_role(l8 + lb3 * 8, lhi);
  const uint32_t sKw = sK + wkey * (kD * 2), sVw = sV + wkey * (kD * 2);
  // dQ operands: fixed per-thread addresses at key row 0 (k16 steps add whole rows: swizzle unchanged)
  uint32_t dq_a[Cfg::kDqMT], dq_b[Cfg::kDqDT / 2];
#pragma unroll
  for (int mt = 0; mt < Cfg::kDqMT; ++mt) dq_a[mt] = sdS + swz<kBr>(l8 + lhi * 8, (q_tile0 + mt) * 2 + lb3);
#pragma unroll
  for (int dp = 0; dp < Cfg::kDqDT / 2; ++dp)
    dq_b[dp] = sK + swz<kD>(l8 + lb3 * 8, dq_col0 / 8 + dp * 2 + lhi);

  for (int it = 0; it < n_iter; ++it) {
    const int stage = it & 1;
    cp_async_wait<0>();
    __syncthreads();  // this step's Q/dO visible; everyone done with the other stage and with dS^T
    if (it + 1 < n_iter) load_q(it + 1, stage ^ 1);
    cp_async_commit();

    const int h = hk * group + it / mb_count;
    const int q0 = (mb_begin + it % mb_count) * kBr;
    const uint32_t sQs = sQ + stage * Cfg::kSmemQ, sdOs = sdO + stage * Cfg::kSmemQ;
    const float* lse_s = reinterpret_cast<const float*>(smem_lse + stage * Cfg::kSmemStat);
    const float* dd_s = reinterpret_cast<const float*>(smem_dd + stage * Cfg::kSmemStat);

    // ---- S^T = K_w Q^T (16 keys x kBr queries)
    float acc_s[kNTq][4];
#pragma unroll
    for (int nt = 0; nt < kNTq; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_s[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSd; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, a_role(sKw, 0, ks));
#pragma unroll
      for (int np = 0; np < kNTq / 2; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, b_role(sQs, np * 16, ks));
        mma_16816<T>(acc_s[2 * np], a, bf[0], bf[1]);
        mma_16816<T>(acc_s[2 * np + 1], a, bf[2], bf[3]);
      }
    }

    // ---- P^T = exp(scale * S^T - lse); masked scores -> -inf first (only on boundary blocks)
    const bool need_mask = q0 + kBr > p.Tq || n0 + kBc > p.Tk || (upper && n0 + kBc - 1 > q0 + offset) ||
                           (windowed && n0 <= q0 + kBr - 1 + offset - p.window);
    if (need_mask) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int key = n0 + wkey + (lane >> 2) + hh * 8;
        // visible: lo < qi <= hi for key; qi >= key - offset (causal), qi < key - offset + window
        const int qlo = upper ? key - offset : -(1 << 30);
        const int qhi = windowed ? min(p.Tq, key - offset + p.window) : p.Tq;
#pragma unroll
        for (int nt = 0; nt < kNTq; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int qi = q0 + nt * 8 + (lane & 3) * 2 + e;
            if (key >= p.Tk || qi < qlo || qi >= qhi) acc_s[nt][hh * 2 + e] = -INFINITY;
          }
      }
    }
#pragma unroll
    for (int nt = 0; nt < kNTq; ++nt) {
      const int qc = nt * 8 + (lane & 3) * 2;
      const float2 lse2 = *reinterpret_cast<const float2*>(lse_s + qc);
      const float nl0 = -lse2.x * kLog2e, nl1 = -lse2.y * kLog2e;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        acc_s[nt][hh * 2] = fast_exp2(fmaf(acc_s[nt][hh * 2], sl2, nl0));
        acc_s[nt][hh * 2 + 1] = fast_exp2(fmaf(acc_s[nt][hh * 2 + 1], sl2, nl1));
      }
    }

    // ---- dP^T = V_w dO^T
    float acc_dp[kNTq][4];
#pragma unroll
    for (int nt = 0; nt < kNTq; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_dp[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSd; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, a_role(sVw, 0, ks));
#pragma unroll
      for (int np = 0; np < kNTq / 2; ++np) {
        uint32_t bf[4];
        ldmatrix_x4(bf, b_role(sdOs, np * 16, ks));
        mma_16816<T>(acc_dp[2 * np], a, bf[0], bf[1]);
        mma_16816<T>(acc_dp[2 * np + 1], a, bf[2], bf[3]);
      }
    }

    // ---- dV_w += P^T dO
#pragma unroll
    for (int kq = 0; kq < kKSq; ++kq) {
      uint32_t a[4];
      a[0] = Ty::pack(acc_s[2 * kq][0], acc_s[2 * kq][1]);
      a[1] = Ty::pack(acc_s[2 * kq][2], acc_s[2 * kq][3]);
      a[2] = Ty::pack(acc_s[2 * kq + 1][0], acc_s[2 * kq + 1][1]);
      a[3] = Ty::pack(acc_s[2 * kq + 1][2], acc_s[2 * kq + 1][3]);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, bt_role(sdOs, kq * 16, dp));
        mma_16816<T>(acc_dv[2 * dp], a, bf[0], bf[1]);
        mma_16816<T>(acc_dv[2 * dp + 1], a, bf[2], bf[3]);
      }
    }

    // ---- dS^T = P^T o (dP^T - D)   (in place in acc_dp)
#pragma unroll
    for (int nt = 0; nt < kNTq; ++nt) {
      const int qc = nt * 8 + (lane & 3) * 2;
      const float2 d2 = *reinterpret_cast<const float2*>(dd_s + qc);
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        acc_dp[nt][hh * 2] = acc_s[nt][hh * 2] * (acc_dp[nt][hh * 2] - d2.x);
        acc_dp[nt][hh * 2 + 1] = acc_s[nt][hh * 2 + 1] * (acc_dp[nt][hh * 2 + 1] - d2.y);
      }
    }

    // ---- dK_w += dS^T Q, and dS^T -> shared memory (16-bit) for dQ
#pragma unroll
    for (int kq = 0; kq < kKSq; ++kq) {
      uint32_t a[4];
      a[0] = Ty::pack(acc_dp[2 * kq][0], acc_dp[2 * kq][1]);
      a[1] = Ty::pack(acc_dp[2 * kq][2], acc_dp[2 * kq][3]);
      a[2] = Ty::pack(acc_dp[2 * kq + 1][0], acc_dp[2 * kq + 1][1]);
      a[3] = Ty::pack(acc_dp[2 * kq + 1][2], acc_dp[2 * kq + 1][3]);
      // n8 tile 2kq -> chunk 2kq of rows g / g+8; tile 2kq+1 -> chunk 2kq+1
      const int r0 = wkey + (lane >> 2);
      *reinterpret_cast<uint32_t*>(smem_ds + swz<kBr>(r0, 2 * kq) + (lane & 3) * 4) = a[0];
      *reinterpret_cast<uint32_t*>(smem_ds + swz<kBr>(r0 + 8, 2 * kq) + (lane & 3) * 4) = a[1];
      *reinterpret_cast<uint32_t*>(smem_ds + swz<kBr>(r0, 2 * kq + 1) + (lane & 3) * 4) = a[2];
      *reinterpret_cast<uint32_t*>(smem_ds + swz<kBr>(r0 + 8, 2 * kq + 1) + (lane & 3) * 4) = a[3];
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, bt_role(sQs, kq * 16, dp));
        mma_16816<T>(acc_dk[2 * dp], a, bf[0], bf[1]);
        mma_16816<T>(acc_dk[2 * dp + 1], a, bf[2], bf[3]);
      }
    }
    __syncthreads();  // dS^T complete

    // ---- dQ(query tiles q_tile0.., columns dq_col0..) += dS K, float32 atomics
    float acc_dq[Cfg::kDqMT][Cfg::kDqDT][4];
#pragma unroll
    for (int mt = 0; mt < Cfg::kDqMT; ++mt)
#pragma unroll
      for (int dt = 0; dt < Cfg::kDqDT; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_dq[mt][dt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[Cfg::kDqMT][4];  // A = dS (queries x keys) read transposed from dS^T
#pragma unroll
      for (int mt = 0; mt < Cfg::kDqMT; ++mt) ldmatrix_x4_trans(a[mt], dq_a[mt] + kk * 16 * (kBr * 2));
#pragma unroll
      for (int dp = 0; dp < Cfg::kDqDT / 2; ++dp) {
        uint32_t bf[4];  // B = K (keys x head dim), k-major: .trans
        ldmatrix_x4_trans(bf, dq_b[dp] + kk * 16 * (kD * 2));
#pragma unroll
        for (int mt = 0; mt < Cfg::kDqMT; ++mt) {
          mma_16816<T>(acc_dq[mt][2 * dp], a[mt], bf[0], bf[1]);
          mma_16816<T>(acc_dq[mt][2 * dp + 1], a[mt], bf[2], bf[3]);
        }
      }
    }
    float* dqa = p.dq_accum + ((int64_t(b) * p.H + h) * p.Tq + q0) * kD;
#pragma unroll
    for (int mt = 0; mt < Cfg::kDqMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = (q_tile0 + mt) * 16 + (lane >> 2) + hh * 8;
        if (q0 + row < p.Tq) {
#pragma unroll
          for (int dt = 0; dt < Cfg::kDqDT; ++dt)
            atomic_add_f32x2(dqa + row * kD + dq_col0 + dt * 8 + (lane & 3) * 2, acc_dq[mt][dt][hh * 2],
                             acc_dq[mt][dt][hh * 2 + 1]);
        }
      }
  }

  // ---- epilogue: dK (scaled) and dV through shared memory (K / V tiles are free now)
  cp_async_wait<0>();
  __syncthreads();
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = wkey + (lane >> 2) + hh * 8;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      *reinterpret_cast<uint32_t*>(smem_k + swz<kD>(r, dt) + (lane & 3) * 4) =
          Ty::pack(acc_dk[dt][hh * 2] * p.scale, acc_dk[dt][hh * 2 + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(smem_v + swz<kD>(r, dt) + (lane & 3) * 4) =
          Ty::pack(acc_dv[dt][hh * 2], acc_dv[dt][hh * 2 + 1]);
    }
  }
  __syncthreads();
  T* dkg =
      static_cast<T*>(p.dk) + b * p.dk_batch_stride + int64_t(n0) * p.dk_row_stride + hk * p.dk_head_stride;
  T* dvg =
      static_cast<T*>(p.dv) + b * p.dv_batch_stride + int64_t(n0) * p.dv_row_stride + hk * p.dv_head_stride;
  store_tile<kBc, kD, kThreads>(dkg, p.dk_row_stride, smem_k, p.Tk - n0, tid);
  store_tile<kBc, kD, kThreads>(dvg, p.dv_row_stride, smem_v, p.Tk - n0, tid);
}

// D_i = sum_d do[b,i,h,d] * o[b,i,h,d] (float32), one warp per (b, i, h) row.
template <int kD, typename T>
__global__ void __launch_bounds__(256) flash_attn_bwd_dot_do_o_kernel(const FlashAttnParams p) {
  using Ty = MmaType<T>;
  const int64_t row = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= int64_t(p.B) * p.Tq * p.H) return;
  const int h = static_cast<int>(row % p.H);
  const int i = static_cast<int>((row / p.H) % p.Tq);
  const int b = static_cast<int>(row / (int64_t(p.H) * p.Tq));
  const T* og =
      static_cast<const T*>(p.o) + b * p.o_batch_stride + int64_t(i) * p.o_row_stride + h * p.o_head_stride;
  const T* dg = static_cast<const T*>(p.dout) + b * p.do_batch_stride + int64_t(i) * p.do_row_stride +
                h * p.do_head_stride;
  float acc = 0.f;
#pragma unroll
  for (int e = 0; e < kD / 32; ++e) acc += Ty::to_float(og[e * 32 + lane]) * Ty::to_float(dg[e * 32 + lane]);
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (lane == 0) p.softmax_d[(int64_t(b) * p.H + h) * p.Tq + i] = acc;
}

// dq[b,i,h,:] = scale * dq_accum[b,h,i,:] in the element type, 8 elements per thread.
template <int kD, typename T>
__global__ void __launch_bounds__(256) flash_attn_bwd_convert_dq_kernel(const FlashAttnParams p) {
  using Ty = MmaType<T>;
  const int64_t c = int64_t(blockIdx.x) * 256 + threadIdx.x;  // 8-element chunk
  const int64_t rows = int64_t(p.B) * p.H * p.Tq;
  if (c >= rows * (kD / 8)) return;
  const int64_t row = c / (kD / 8);
  const int d0 = static_cast<int>(c % (kD / 8)) * 8;
  const int i = static_cast<int>(row % p.Tq);
  const int h = static_cast<int>((row / p.Tq) % p.H);
  const int b = static_cast<int>(row / (int64_t(p.Tq) * p.H));
  const float4* src = reinterpret_cast<const float4*>(p.dq_accum + row * kD + d0);
  const float4 x = src[0], y = src[1];
  const float s = p.scale;
  uint4 out;
  out.x = Ty::pack(x.x * s, x.y * s);
  out.y = Ty::pack(x.z * s, x.w * s);
  out.z = Ty::pack(y.x * s, y.y * s);
  out.w = Ty::pack(y.z * s, y.w * s);
  T* dst = static_cast<T*>(p.dq) + b * p.dq_batch_stride + int64_t(i) * p.dq_row_stride +
           h * p.dq_head_stride + d0;
  *reinterpret_cast<uint4*>(dst) = out;
}

// The backward's launch sequence for p (validated, workspaces set): zero dq_accum, D, main(stream) (the
// main kernel, mma.sync here or wgmma in flash_bwd_wgmma.cuh), convert dq.
template <int kD, typename T, typename Main>
cudaError_t run_flash_bwd_steps(const FlashAttnParams& p, Main&& main) {
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  const int64_t rows = int64_t(p.B) * p.H * p.Tq;
  cudaError_t err = cudaMemsetAsync(p.dq_accum, 0, size_t(rows) * kD * sizeof(float), stream);
  if (err != cudaSuccess) return err;
  flash_attn_bwd_dot_do_o_kernel<kD, T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(p);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if ((err = main(stream)) != cudaSuccess) return err;
  const int64_t chunks = rows * (kD / 8);
  flash_attn_bwd_convert_dq_kernel<kD, T><<<static_cast<unsigned>((chunks + 255) / 256), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename Cfg, typename T>
cudaError_t run_flash_bwd(const FlashAttnParams& p) {
  return run_flash_bwd_steps<Cfg::kD, T>(p, [&](cudaStream_t stream) {
    auto kernel = flash_attn_bwd_kernel<Cfg, T>;
    cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (err != cudaSuccess) return err;
    const dim3 grid((p.Tk + Cfg::kBc - 1) / Cfg::kBc, p.Hkv, p.B);
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace attnlab::kernels::flash
