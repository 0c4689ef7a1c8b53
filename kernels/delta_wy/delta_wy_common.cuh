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
__device__ __forceinline__ void invert(float* M, const float* KD, const float* beta, float* Tmp, int tid) {
  if (tid < 4 * kBlk) {
    const int o = kBlk * (tid / kBlk), c = tid % kBlk;
    float x[kBlk];
#pragma unroll
    for (int r = 0; r < kBlk; ++r) {
      const float* a = KD + (o + r) * kF + o;
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < r; ++j) s += a[j] * x[j];
      x[r] = (r == c ? 1.f : 0.f) - beta[o + r] * s;
    }
#pragma unroll
    for (int r = 0; r < kBlk; ++r) M[(o + r) * kF + o + c] = x[r];
  }
  __syncthreads();
#pragma unroll
  for (int diag = 1; diag < kC / kBlk; ++diag) {
    const int pairs = kC / kBlk - diag;  // blocks (i, j) = (p + diag, p), p < pairs
    for (int e = tid; e < pairs * kBlk * kBlk; e += kThreads) {
      const int p = e / (kBlk * kBlk), r = (e / kBlk) % kBlk, c = e % kBlk;
      const int i = p + diag, j = p;
      const float* a = KD + (kBlk * i + r) * kF;
      float s = 0.f;
#pragma unroll
      for (int q = 0; q < diag; ++q) {
        const int l = j + q;
#pragma unroll
        for (int u = 0; u < kBlk; ++u) s += a[kBlk * l + u] * M[(kBlk * l + u) * kF + kBlk * j + c];
      }
      Tmp[e] = beta[kBlk * i + r] * s;
    }
    __syncthreads();
    for (int e = tid; e < pairs * kBlk * kBlk; e += kThreads) {
      const int p = e / (kBlk * kBlk), r = (e / kBlk) % kBlk, c = e % kBlk;
      const int i = p + diag, j = p;
      const float* mi = M + (kBlk * i + r) * kF + kBlk * i;
      const float* t = Tmp + p * kBlk * kBlk + c;
      float s = 0.f;
#pragma unroll
      for (int u = 0; u < kBlk; ++u) s += mi[u] * t[u * kBlk];  // mi[u] = 0 for u > r
      M[(kBlk * i + r) * kF + kBlk * j + c] = -s;
    }
    __syncthreads();
  }
}

// hi = 16-bit(x), lo = 16-bit(x - hi), two elements at a time.
template <typename T>
__device__ __forceinline__ void split2(uint32_t& hi, uint32_t& lo, float x0, float x1) {
  hi = MmaType<T>::pack(x0, x1);
  const float2 h = unpack2<T>(hi);
  lo = MmaType<T>::pack(x0 - h.x, x1 - h.y);
}

// hi + lo = M_rc * colscale(c) (zero above the diagonal) as two swizzled 16-bit [C][C] tiles; all threads.
template <typename T, typename F>
__device__ __forceinline__ void split_lower(unsigned char* hi, unsigned char* lo, const float* M, int tid,
                                            F&& colscale) {
  constexpr int kChunksPerRow = kC / 8;
#pragma unroll
  for (int i = 0; i < kC * kChunksPerRow / kThreads; ++i) {
    const int ch = tid + i * kThreads, row = ch / kChunksPerRow, cc = ch % kChunksPerRow;
    uint4 h = make_uint4(0, 0, 0, 0), l = make_uint4(0, 0, 0, 0);
    if (cc * 8 <= row) {
      uint32_t* hp = reinterpret_cast<uint32_t*>(&h);
      uint32_t* lp = reinterpret_cast<uint32_t*>(&l);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = cc * 8 + 2 * j;
        const float x0 = c <= row ? M[row * kF + c] * colscale(c) : 0.f;
        const float x1 = c + 1 <= row ? M[row * kF + c + 1] * colscale(c + 1) : 0.f;
        split2<T>(hp[j], lp[j], x0, x1);
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
