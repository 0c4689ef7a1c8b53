// Device building blocks of the delta_wy kernels (params.h): chunk loads, the decayed key products
// KD = strictly_lower(K K^T * exp(G_t - G_s)), the float32 inverse M = (I + diag(beta) KD)^-1 and its split
// into 16-bit hi + lo tiles for the tensor-core products. One block of 8 warps per (chunk, head, batch).
//
// Float32 C x C tiles are row-major with kF = 68 floats per row (16-byte rows for float2 / float4 access;
// rows 4 banks apart, so the two rows a warp reads at once never share a bank). 16-bit C x C tiles are
// swizzled [C][C] tiles as in kernels/linear_chunk (swz<64>).
//
// Precision: a product M X with M in float32 runs as M_hi X + M_lo X, M_hi = 16-bit(M), M_lo = 16-bit(M -
// M_hi), fp32 accumulators: M keeps 16 (bf16) or 22 (fp16) mantissa bits instead of 8 or 11, so W and U are
// float32-accurate up to their final rounding (X is a 16-bit input here, exact as given).
#pragma once

#include "kernels/delta_wy/params.h"
#include "kernels/linear_chunk/linear_chunk_common.cuh"

namespace attnlab::kernels::delta_wy {

using namespace attnlab::kernels::linear_chunk;  // kC, kThreads, warp_mma, load_chunk, gate_cumsum, ...

constexpr int kF = kC + 4;                      // floats per row of a float32 C x C tile
constexpr int kF32Tile = kC * kF * 4;           // bytes of a float32 C x C tile
constexpr int kH16Tile = kC * kC * 2;           // bytes of a 16-bit swizzled C x C tile
constexpr int kBlk = 16;                        // diagonal block of the inverse
constexpr int kTmpBytes = 3 * kBlk * kBlk * 4;  // the inverse's scratch: up to three 16 x 16 blocks

__device__ __forceinline__ int64_t row_offset(int b, int t, int h, int T, int H, int D) {
  return ((static_cast<int64_t>(b) * T + t) * H + h) * D;
}

// Writes v[0 .. C) of a [B, T, H] float32 vector for rows t0 + i < T; threads 0 .. C-1.
__device__ __forceinline__ void store_vec(float* out, const float* v, int b, int t0, int h, int T, int H,
                                          int tid) {
  if (tid < kC && t0 + tid < T) out[(static_cast<int64_t>(b) * T + t0 + tid) * H + h] = v[tid];
}

// Chunk n's M in the [B, H, nt, C, C] float32 buffer m (DeltaWyParams::m).
__device__ __forceinline__ float* saved_m(float* m, int b, int h, int n, int H, int T) {
  return m + ((static_cast<int64_t>(b) * H + h) * linear_chunk_count(T) + n) * kC * kC;
}

// The float32 [C][kF] tile M to its saved copy (entries above the diagonal as zeros); all threads.
__device__ __forceinline__ void store_m(float* dst, const float* M, int tid) {
#pragma unroll
  for (int i = 0; i < kC * kC / 4 / kThreads; ++i) {
    const int e = tid + i * kThreads, r = e / (kC / 4), c = 4 * (e % (kC / 4));
    float4 x = *reinterpret_cast<const float4*>(M + r * kF + c);
    x.x = c <= r ? x.x : 0.f, x.y = c + 1 <= r ? x.y : 0.f, x.z = c + 2 <= r ? x.z : 0.f;
    x.w = c + 3 <= r ? x.w : 0.f;
    *reinterpret_cast<float4*>(dst + r * kC + c) = x;
  }
}

// Issues the copies of a saved M into the float32 [C][kF] tile at s; all threads.
__device__ __forceinline__ void load_m(uint32_t s, const float* src, int tid) {
#pragma unroll
  for (int i = 0; i < kC * kC / 4 / kThreads; ++i) {
    const int e = tid + i * kThreads, r = e / (kC / 4), c = 4 * (e % (kC / 4));
    cp_async_16(s + (r * kF + c) * 4, src + r * kC + c);
  }
}

// One warp's 16 x 32 piece (rows 16 (warp % 4), columns 32 (warp / 4)) of KD = strictly_lower(K K^T *
// exp(G_t - G_s)), float32: stored into the [C][kF] tile KD and returned in kd (accumulator layout). The
// mask comes before exp, so every exponent is <= 0 (no overflow at strong decay). Pieces wholly above the
// diagonal skip the product.
template <int kD, typename T, bool kGated>
__device__ __forceinline__ void kk_decay(float (&kd)[1][4][4], float* KD, uint32_t sK, const float* G,
                                         int warp, int lane) {
  const int m0 = 16 * (warp % 4), n0 = 32 * (warp / 4);
  zero_acc(kd);
  if (n0 < m0 + 16) warp_mma<1, 4, kD / 16, false, false, kD, kD, T>(kd, sK, m0, 0, sK, 0, n0, lane);
#pragma unroll
  for (int nj = 0; nj < 4; ++nj)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = m0 + (lane >> 2) + half * 8, c = n0 + nj * 8 + 2 * (lane & 3);
      float x[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float a = kd[0][nj][2 * half + e];
        x[e] = c + e < r ? (kGated ? a * expf(G[r] - G[c + e]) : a) : 0.f;
        kd[0][nj][2 * half + e] = x[e];
      }
      *reinterpret_cast<float2*>(KD + r * kF + c) = make_float2(x[0], x[1]);
    }
}

// M = (I + A)^-1 with A_rc = beta_r KD_rc (strictly lower), float32 throughout; all threads, synced on
// return. The four 16 x 16 diagonal blocks by forward substitution (threads 0..63: one column of one block
// each, kept in registers), then the blocks below the diagonal one sub-diagonal at a time,
// M_ij = -M_ii (sum_{j <= l < i} A_il M_lj) (the factor in Tmp, then the product). Entries above the
// diagonal blocks are never written: readers of M take only c <= r.
//
// Shared-memory traffic, not arithmetic, bounds this (ncu, run m: a third of delta_wy's forward, mostly
// LDS waits): rows are read as float4 and each thread of the block products owns a strip of four columns,
// so one row element read serves four products. Every sum keeps the order of the scalar loops it replaced
// (j, then (l, u) ascending), so M is the same bits.
__device__ __forceinline__ void invert(float* M, const float* KD, const float* beta, float* Tmp, int tid) {
  if (tid < 4 * kBlk) {
    const int o = kBlk * (tid / kBlk), c = tid % kBlk;
    float bt[kBlk], x[kBlk];
#pragma unroll
    for (int j4 = 0; j4 < kBlk / 4; ++j4) {
      const float4 b4 = *reinterpret_cast<const float4*>(beta + o + 4 * j4);
      bt[4 * j4] = b4.x, bt[4 * j4 + 1] = b4.y, bt[4 * j4 + 2] = b4.z, bt[4 * j4 + 3] = b4.w;
    }
#pragma unroll
    for (int r = 0; r < kBlk; ++r) {
      const float4* a4 = reinterpret_cast<const float4*>(KD + (o + r) * kF + o);
      float s = 0.f;
#pragma unroll
      for (int j4 = 0; j4 < (r + 3) / 4; ++j4) {
        const float4 v = a4[j4];
        const float a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (4 * j4 + e < r) s += a[e] * x[4 * j4 + e];
      }
      x[r] = (r == c ? 1.f : 0.f) - bt[r] * s;
    }
#pragma unroll
    for (int r = 0; r < kBlk; ++r) M[(o + r) * kF + o + c] = x[r];
  }
  __syncthreads();
  constexpr int kStrips = kBlk * kBlk / 4;  // strips of four columns in a 16 x 16 block
#pragma unroll
  for (int diag = 1; diag < kC / kBlk; ++diag) {
    const int pairs = kC / kBlk - diag;  // blocks (i, j) = (p + diag, p), p < pairs
    for (int e = tid; e < pairs * kStrips; e += kThreads) {
      const int p = e / kStrips, r = (e / 4) % kBlk, c = 4 * (e % 4);
      const int i = p + diag, j = p;
      const float* a = KD + (kBlk * i + r) * kF;
      float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int q = 0; q < diag; ++q) {
        const int l = j + q;
#pragma unroll
        for (int u4 = 0; u4 < kBlk / 4; ++u4) {
          const float4 v = *reinterpret_cast<const float4*>(a + kBlk * l + 4 * u4);
          const float av[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int uu = 0; uu < 4; ++uu) {
            const float4 m =
                *reinterpret_cast<const float4*>(M + (kBlk * l + 4 * u4 + uu) * kF + kBlk * j + c);
            s[0] += av[uu] * m.x, s[1] += av[uu] * m.y, s[2] += av[uu] * m.z, s[3] += av[uu] * m.w;
          }
        }
      }
      const float b = beta[kBlk * i + r];
      *reinterpret_cast<float4*>(Tmp + p * kBlk * kBlk + r * kBlk + c) =
          make_float4(b * s[0], b * s[1], b * s[2], b * s[3]);
    }
    __syncthreads();
    for (int e = tid; e < pairs * kStrips; e += kThreads) {
      const int p = e / kStrips, r = (e / 4) % kBlk, c = 4 * (e % 4);
      const int i = p + diag, j = p;
      const float* mi = M + (kBlk * i + r) * kF + kBlk * i;  // mi[u] = 0 for u > r
      const float* t = Tmp + p * kBlk * kBlk + c;
      float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int u4 = 0; u4 < kBlk / 4; ++u4) {
        const float4 v = *reinterpret_cast<const float4*>(mi + 4 * u4);
        const float mv[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int uu = 0; uu < 4; ++uu) {
          const float4 x = *reinterpret_cast<const float4*>(t + (4 * u4 + uu) * kBlk);
          s[0] += mv[uu] * x.x, s[1] += mv[uu] * x.y, s[2] += mv[uu] * x.z, s[3] += mv[uu] * x.w;
        }
      }
      *reinterpret_cast<float4*>(M + (kBlk * i + r) * kF + kBlk * j + c) =
          make_float4(-s[0], -s[1], -s[2], -s[3]);
    }
    __syncthreads();
  }
}

// The C x D products over M's lower triangle (W, U; dk, dv with M^T) give row block m work in proportion to
// m + 1 (or 4 - m): each warp takes a quarter of the columns (warp % 4) of two row blocks, {0, 3} or {1, 2}
// by warp / 4, five units each. This is the row block of the warp's pass 0 or 1.
__device__ __forceinline__ int paired_row_block(int warp, int pass) {
  return pass == 0 ? warp / 4 : 3 - warp / 4;
}

// hi = 16-bit(x), lo = 16-bit(x - hi), two elements at a time.
template <typename T>
__device__ __forceinline__ void split2(uint32_t& hi, uint32_t& lo, float x0, float x1) {
  hi = MmaType<T>::pack(x0, x1);
  const float2 h = unpack2<T>(hi);
  lo = MmaType<T>::pack(x0 - h.x, x1 - h.y);
}

// hi + lo = M_rc * colscale[c] (zero above the diagonal; colscale nullptr: 1) as two swizzled 16-bit [C][C]
// tiles; all threads. M's rows and the scales are read as float4 (the scales once per chunk, not per
// element).
template <typename T>
__device__ __forceinline__ void split_lower(unsigned char* hi, unsigned char* lo, const float* M, int tid,
                                            const float* colscale) {
  constexpr int kChunksPerRow = kC / 8;
#pragma unroll
  for (int i = 0; i < kC * kChunksPerRow / kThreads; ++i) {
    const int ch = tid + i * kThreads, row = ch / kChunksPerRow, cc = ch % kChunksPerRow;
    uint4 h = make_uint4(0, 0, 0, 0), l = make_uint4(0, 0, 0, 0);
    if (cc * 8 <= row) {
      uint32_t* hp = reinterpret_cast<uint32_t*>(&h);
      uint32_t* lp = reinterpret_cast<uint32_t*>(&l);
      float x[8];
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const float4 m = *reinterpret_cast<const float4*>(M + row * kF + cc * 8 + 4 * q);
        const float4 f = colscale ? *reinterpret_cast<const float4*>(colscale + cc * 8 + 4 * q)
                                  : make_float4(1.f, 1.f, 1.f, 1.f);
        x[4 * q] = m.x * f.x, x[4 * q + 1] = m.y * f.y, x[4 * q + 2] = m.z * f.z, x[4 * q + 3] = m.w * f.w;
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = cc * 8 + 2 * j;
        split2<T>(hp[j], lp[j], c <= row ? x[2 * j] : 0.f, c + 1 <= row ? x[2 * j + 1] : 0.f);
      }
    }
    const uint32_t off = swz<kC>(row, cc);
    *reinterpret_cast<uint4*>(hi + off) = h;
    *reinterpret_cast<uint4*>(lo + off) = l;
  }
}

// Stores a C x C accumulator piece (one 16-row tile, rows m0.., columns n0..) as hi + lo 16-bit tiles.
template <typename T, int NT>
__device__ __forceinline__ void store_split(unsigned char* hi, unsigned char* lo,
                                            const float (&acc)[1][NT][4], int m0, int n0, int lane) {
#pragma unroll
  for (int nj = 0; nj < NT; ++nj)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + (lane >> 2) + half * 8, col = n0 + nj * 8 + 2 * (lane & 3);
      const uint32_t off = swz<kC>(row, col / 8) + (col % 8) * 2;
      uint32_t h, l;
      split2<T>(h, l, acc[0][nj][2 * half], acc[0][nj][2 * half + 1]);
      *reinterpret_cast<uint32_t*>(hi + off) = h;
      *reinterpret_cast<uint32_t*>(lo + off) = l;
    }
}

}  // namespace attnlab::kernels::delta_wy
