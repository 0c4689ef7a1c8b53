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

constexpr int kF = kC + 4;                                // floats per row of a float32 C x C tile
constexpr int kF32Tile = kC * kF * 4;                     // bytes of a float32 C x C tile
constexpr int kH16Tile = kC * kC * 2;                     // bytes of a 16-bit swizzled C x C tile
constexpr int kBlk = 16;                                  // diagonal block of the inverse
constexpr int kTmpBytes = 2 * kBlk * (2 * kBlk + 4) * 4;  // the inverse's scratch: a 32 x 32 block, padded

__device__ __forceinline__ int64_t row_offset(int b, int t, int h, int T, int H, int D) {
  return ((static_cast<int64_t>(b) * T + t) * H + h) * D;
}

// Writes v[0 .. C) of a [B, T, H] float32 vector for rows t0 + i < T; threads 0 .. C-1.
__device__ __forceinline__ void store_vec(float* out, const float* v, int b, int t0, int h, int T, int H,
                                          int tid) {
  if (tid < kC && t0 + tid < T) out[(static_cast<int64_t>(b) * T + t0 + tid) * H + h] = v[tid];
}

// acc += (A_hi + A_lo) (B_hi [+ B_lo]) over k blocks ks0 .. ks1 (16 each), A ([m][k] rows, or [k][m] with
// kACols; row length RA) and B (as in warp_mma; row length RB) in 16-bit shared tiles, 1 x NT n-tiles.
// Each fragment is loaded once per k block, where a warp_mma per term loaded the shared operand once per
// term (the wy kernels are bound by shared-memory traffic). Per accumulator and k block the terms go in
// the order A_lo B_hi, A_hi B_hi, then A_hi B_lo (sBlo set: both operands float32, as hi/lo pairs), so the
// results do not depend on which pieces share a call.
template <int NT, bool kACols, bool kBCols, int RA, int RB, typename T, bool kBPair = false>
__device__ __forceinline__ void pair_mma(float (&acc)[1][NT][4], uint32_t sAhi, uint32_t sAlo, int m0,
                                         uint32_t sBhi, uint32_t sBlo, int n0, int ks0, int ks1, int lane) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
  for (int ks = ks0; ks <= ks1; ++ks) {
    uint32_t ahi[4], alo[4];
    load_a_frag<kACols, RA>(alo, sAlo, m0, 16 * ks, lane);
    load_a_frag<kACols, RA>(ahi, sAhi, m0, 16 * ks, lane);
#pragma unroll
    for (int nj = 0; nj < NT; nj += 2) {
      uint32_t b[4];
      load_b_frag<kBCols, RB>(b, sBhi, 16 * ks, n0 + nj * 8, lane);
      mma_16816<T>(acc[0][nj], alo, b[0], b[1]);
      mma_16816<T>(acc[0][nj + 1], alo, b[2], b[3]);
      mma_16816<T>(acc[0][nj], ahi, b[0], b[1]);
      mma_16816<T>(acc[0][nj + 1], ahi, b[2], b[3]);
      if constexpr (kBPair) {
        load_b_frag<kBCols, RB>(b, sBlo, 16 * ks, n0 + nj * 8, lane);
        mma_16816<T>(acc[0][nj], ahi, b[0], b[1]);
        mma_16816<T>(acc[0][nj + 1], ahi, b[2], b[3]);
      }
    }
  }
}

// Chunk n's M in the [B, H, nt, kDeltaWySavedM] float32 buffer m (DeltaWyParams::m, params.h: the lower
// triangle's rows in whole pieces of 8 floats).
__device__ __forceinline__ float* saved_m(float* m, int b, int h, int n, int H, int T) {
  return m + ((static_cast<int64_t>(b) * H + h) * linear_chunk_count(T) + n) * kDeltaWySavedM;
}

// Whether the 4 floats of row r from column c are in a saved M: their piece of 8 is at or left of the
// diagonal's.
__device__ __forceinline__ bool in_saved_m(int r, int c) {
  return (c >> 3) <= (r >> 3);
}

// The float32 [C][kF] tile M to its saved copy (entries above the diagonal as zeros); all threads.
__device__ __forceinline__ void store_m(float* dst, const float* M, int tid) {
#pragma unroll
  for (int i = 0; i < kC * kC / 4 / kThreads; ++i) {
    const int e = tid + i * kThreads, r = e / (kC / 4), c = 4 * (e % (kC / 4));
    if (!in_saved_m(r, c)) continue;
    float4 x = *reinterpret_cast<const float4*>(M + r * kF + c);
    x.x = c <= r ? x.x : 0.f, x.y = c + 1 <= r ? x.y : 0.f, x.z = c + 2 <= r ? x.z : 0.f;
    x.w = c + 3 <= r ? x.w : 0.f;
    *reinterpret_cast<float4*>(dst + delta_wy_saved_m_row(r) + c) = x;
  }
}

// Issues the copies of a saved M into the float32 [C][kF] tile at s; all threads. Pieces right of the
// diagonal's are not copied: their tile entries are garbage, which no reader takes (split_lower reads the
// pieces of 8 at or left of the diagonal's, which the saved M holds with zeros above the diagonal).
__device__ __forceinline__ void load_m(uint32_t s, const float* src, int tid) {
#pragma unroll
  for (int i = 0; i < kC * kC / 4 / kThreads; ++i) {
    const int e = tid + i * kThreads, r = e / (kC / 4), c = 4 * (e % (kC / 4));
    if (in_saved_m(r, c)) cp_async_16(s + (r * kF + c) * 4, src + delta_wy_saved_m_row(r) + c);
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
  // G of the thread's two rows and two columns of each column block, read into registers before that
  // block's stores (12 loads): read per element, G was read again after every store into KD, which may
  // alias it for the compiler (32 loads). The decay is computed for every element and then selected, without
  // a branch per element; above the diagonal its exponent may overflow to inf, which the select drops.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int nj = 0; nj < 4; ++nj) {
    const int c = n0 + nj * 8 + 2 * t;
    const float2 gc = kGated ? *reinterpret_cast<const float2*>(G + c) : make_float2(0.f, 0.f);
    const float gr[2] = {kGated ? G[m0 + g] : 0.f, kGated ? G[m0 + g + 8] : 0.f};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = m0 + g + half * 8;
      float x[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float a = kd[0][nj][2 * half + e];
        const float d = kGated ? a * __expf(gr[half] - (e ? gc.y : gc.x)) : a;
        x[e] = c + e < r ? d : 0.f;
        kd[0][nj][2 * half + e] = x[e];
      }
      *reinterpret_cast<float2*>(KD + r * kF + c) = make_float2(x[0], x[1]);
    }
  }
}

// acc (one 16 x 8 tile) += X Y over k = k0 .. k0 + 8 ksteps of two float32 tiles in shared memory: X at
// rows m0.. of a row-major tile of stride kSX floats; Y[k][n] at Yt[n * kSY + k] (kYT) or Y[k * kSY + n],
// columns n0... In 3xTF32 (split_tf32: lo*hi + hi*lo + hi*hi per k-step), so float32-accurate to ~2^-21.
template <int kSX, int kSY, bool kYT>
__device__ __forceinline__ void tf32x3_mma(float (&acc)[4], const float* X, const float* Y, int m0, int n0,
                                           int k0, int ksteps, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll 2
  for (int s = 0; s < ksteps; ++s) {
    const int k = k0 + 8 * s;
    const float* x = X + (m0 + g) * kSX + k + t;
    const float xa[4] = {x[0], x[8 * kSX], x[4], x[8 * kSX + 4]};
    const float yb[2] = {kYT ? Y[(n0 + g) * kSY + k + t] : Y[(k + t) * kSY + n0 + g],
                         kYT ? Y[(n0 + g) * kSY + k + t + 4] : Y[(k + t + 4) * kSY + n0 + g]};
    uint32_t ah[4], al[4], bh[2], bl[2];
#pragma unroll
    for (int e = 0; e < 4; ++e) split_tf32(ah[e], al[e], xa[e]);
#pragma unroll
    for (int e = 0; e < 2; ++e) split_tf32(bh[e], bl[e], yb[e]);
    mma_1688_tf32(acc, al, bh[0], bh[1]);
    mma_1688_tf32(acc, ah, bl[0], bl[1]);
    mma_1688_tf32(acc, ah, bh[0], bh[1]);
  }
}

// Stores acc * f (one 16 x 8 tile, rows m0.., columns n0..) to a float32 tile: row-major of stride kS, or
// transposed (kT: element (r, c) at c * kS + r) for a later read as the Y of tf32x3_mma<.., kYT = true>.
// f(r) scales row r.
template <int kS, bool kT, typename F>
__device__ __forceinline__ void store_tile_f32(float* dst, const float (&acc)[4], int m0, int n0, int lane,
                                               F f) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = m0 + g + 8 * half, c = n0 + 2 * t;
    const float x0 = acc[2 * half] * f(r), x1 = acc[2 * half + 1] * f(r);
    if constexpr (kT) {
      dst[c * kS + r] = x0, dst[(c + 1) * kS + r] = x1;
    } else {
      *reinterpret_cast<float2*>(dst + r * kS + c) = make_float2(x0, x1);
    }
  }
}

// The four 16 x 16 diagonal blocks of M = (I + A)^-1, A_rc = beta_r KD_rc, by forward substitution in float32
// (threads 0..63: one column of one block each, kept in registers), written whole into M (zeros above the
// diagonal). Not synced: the caller's barrier follows.
__device__ __forceinline__ void invert_diagonal_blocks(float* M, const float* KD, const float* beta,
                                                       int tid) {
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
}

// M = (I + A)^-1 with A_rc = beta_r KD_rc (strictly lower), float32; all threads, synced on return. Block
// by block, with L = I + A = [[L11, 0], [A21, L22]] and L^-1 = [[L11^-1, 0], [-L22^-1 A21 L11^-1, L22^-1]]:
//   1. the four 16 x 16 diagonal blocks by forward substitution (threads 0..63: one column of one block
//      each, kept in registers);
//   2. the two 32 x 32 diagonal blocks: M10 = -M11 (A10 M00), M32 = -M33 (A32 M22);
//   3. the lower-left 32 x 32 block: M[32:, :32] = -M[32:, 32:] (A[32:, :32] M[:32, :32]).
// Steps 2 and 3 are two products each on the tensor cores (tf32x3_mma, 16 x 8 tiles, one per warp), the
// inner one stored transposed into Tmp. Entries above the diagonal blocks are never written: readers of M
// take only c <= r, and no product here reads them.
//
// The float32 SIMT products this replaced (run 2026-12-03c: delta_wy's forward L1-bound at 88%) read every
// operand row once per four outputs; here a warp reads each operand element once per 16 x 8 tile.
__device__ __forceinline__ void invert(float* M, const float* KD, const float* beta, float* Tmp, int tid) {
  invert_diagonal_blocks(M, KD, beta, tid);
  __syncthreads();
  const int warp = tid / 32, lane = tid % 32;
  constexpr int kS2 = kBlk + 4;      // Tmp's stride in step 2 (two transposed 16 x 16 blocks)
  constexpr int kS3 = 2 * kBlk + 4;  // and in step 3 (one transposed 32 x 32 block)
  static_assert(2 * kBlk * kS2 * 4 <= kTmpBytes && 2 * kBlk * kS3 * 4 <= kTmpBytes, "Tmp too small");
  const auto negate = [](int) { return -1.f; };
  // 2. warps 0..3: blocks (i, j) = (1, 0), (3, 2) (warp / 2), columns 8 (warp % 2) of the block
  const int p2 = warp / 2, n2 = 8 * (warp % 2);
  const int i2 = kBlk * (2 * p2 + 1), j2 = kBlk * 2 * p2;
  if (warp < 4) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    tf32x3_mma<kF, kF, false>(acc, KD, M, i2, j2 + n2, j2, kBlk / 8, lane);  // A_ij M_jj
    store_tile_f32<kS2, true>(Tmp + p2 * kBlk * kS2, acc, 0, n2, lane, [&](int r) { return beta[i2 + r]; });
  }
  __syncthreads();
  if (warp < 4) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    tf32x3_mma<kF, kS2, true>(acc, M + i2, Tmp + p2 * kBlk * kS2, i2, n2, 0, kBlk / 8, lane);  // M_ii (...)
    store_tile_f32<kF, false>(M + j2, acc, i2, n2, lane, negate);
  }
  __syncthreads();
  // 3. every warp: rows 32 + 16 (warp / 4), columns 16 ((warp / 2) % 2) + 8 (warp % 2)
  const int m3 = 2 * kBlk + kBlk * (warp / 4), n3 = 8 * (warp % 4), j3 = n3 / kBlk;
  {
    // A[32:, :32] M[:32, :32], where M's block column j3 is zero above row 16 j3
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    tf32x3_mma<kF, kF, false>(acc, KD, M, m3, n3, kBlk * j3, (2 - j3) * kBlk / 8, lane);
    store_tile_f32<kS3, true>(Tmp, acc, m3 - 2 * kBlk, n3, lane, [&](int r) { return beta[2 * kBlk + r]; });
  }
  __syncthreads();
  {
    // M[32:, 32:] (...), where row block i3 of M[32:, 32:] is zero past column 16 (i3 + 1)
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    const int i3 = warp / 4;
    tf32x3_mma<kF, kS3, true>(acc, M + 2 * kBlk, Tmp, m3, n3, 0, (i3 + 1) * kBlk / 8, lane);
    store_tile_f32<kF, false>(M, acc, m3, n3, lane, negate);
  }
  __syncthreads();
}

// The C x D products over M's lower triangle (W, U; dk, dv with M^T) give row block m work in proportion to
// m + 1 (or 4 - m): each warp takes a quarter of the columns (warp % 4) of two row blocks, {0, 3} or {1, 2}
// by warp / 4, five units each. This is the row block of the warp's pass 0 or 1.
__host__ __device__ constexpr int paired_row_block(int warp, int pass) {
  return pass == 0 ? warp / 4 : 3 - warp / 4;
}

// hi = 16-bit(x), lo = 16-bit(x - hi), two elements at a time.
template <typename T>
__device__ __forceinline__ void split2(uint32_t& hi, uint32_t& lo, float x0, float x1) {
  hi = MmaType<T>::pack(x0, x1);
  const float2 h = unpack2<T>(hi);
  lo = MmaType<T>::pack(x0 - h.x, x1 - h.y);
}

// ---- The inverse's block products as bf16 hi/lo pairs chained in registers (DeltaWyInverse::kBf16x3)
//
// x = hi + lo with hi = bf16(x), lo = bf16(x - hi) keeps 16 of float32's 24 mantissa bits, and a product
// hi hi' + hi lo' + lo hi' drops only lo lo' (2^-16 relative): far under the 16-bit rounding of W and U, and
// of the same order as FLA's inverse, which is rounded to 16 bits whole. Against the tf32x3 products above
// (m16n8k8, every operand fragment split per k step of 8, the inner product through Tmp and a barrier), each
// product here is m16n8k16 (half the MMAs per k), and the inner product stays in registers: an m16n8
// accumulator pair is exactly an m16n8k16 A fragment (as P in flash attention's P V), so each pair of
// products is computed transposed, R^T = (Y^T X^T) Z^T, and needs no shared memory and no barrier between
// its two halves. Warps 0..3 do both steps; the others wait at the barriers.

// A fragment (16 x 16 at (m0, k0), mma.cuh's layout) of the transpose of a float32 [..][kF] tile X, A[m][k] =
// X[k][m], as bf16 hi/lo. The reads are conflict-free: lane (g, t) reads bank (8 t + g) mod 32.
__device__ __forceinline__ void a_frag_split_t(uint32_t (&hi)[4], uint32_t (&lo)[4], const float* X, int m0,
                                               int k0, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + g + 8 * (i & 1), k = k0 + 2 * t + 8 * (i >> 1);
    split2<__nv_bfloat16>(hi[i], lo[i], X[k * kF + m], X[(k + 1) * kF + m]);
  }
}

// B fragment (16 x 8 at (k0, n0)) with B[k][n] = s[n] X[n][k] (X's rows are B's columns; s nullptr: 1), as
// bf16 hi/lo; the scale goes in before the split.
__device__ __forceinline__ void b_frag_split(uint32_t (&hi)[2], uint32_t (&lo)[2], const float* X,
                                             const float* s, int k0, int n0, int lane) {
  const int n = n0 + (lane >> 2), k = k0 + 2 * (lane & 3);
  const float f = s ? s[n] : 1.f;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const float2 x = *reinterpret_cast<const float2*>(X + n * kF + k + 8 * j);
    split2<__nv_bfloat16>(hi[j], lo[j], f * x.x, f * x.y);
  }
}

// The A fragment of k block kb (columns 16 kb ..) of a product held in n-tile accumulators (n-tiles 2 kb and
// 2 kb + 1), as bf16 hi/lo.
template <int NT>
__device__ __forceinline__ void acc_frag_split(uint32_t (&hi)[4], uint32_t (&lo)[4],
                                               const float (&acc)[NT][4], int kb) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float(&c)[4] = acc[2 * kb + (i >> 1)];
    split2<__nv_bfloat16>(hi[i], lo[i], c[2 * (i & 1)], c[2 * (i & 1) + 1]);
  }
}

// acc += (ahi + alo)(bhi + blo) less alo blo, in the order alo bhi, ahi blo, ahi bhi (smallest first).
__device__ __forceinline__ void mma_hilo(float (&acc)[4], const uint32_t (&ahi)[4], const uint32_t (&alo)[4],
                                         const uint32_t (&bhi)[2], const uint32_t (&blo)[2]) {
  mma_16816<__nv_bfloat16>(acc, alo, bhi[0], bhi[1]);
  mma_16816<__nv_bfloat16>(acc, ahi, blo[0], blo[1]);
  mma_16816<__nv_bfloat16>(acc, ahi, bhi[0], bhi[1]);
}

// X[n][m] = -acc[m][n] for one n-tile accumulator (rows m0 .., columns n0 ..): a transposed product stored
// back untransposed and negated. Lane (g, t) writes bank (8 t + 4 e + g) mod 32: conflict-free.
__device__ __forceinline__ void store_neg_t(float* X, const float (&acc)[4], int m0, int n0, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int e = 0; e < 4; ++e) X[(n0 + 2 * t + (e & 1)) * kF + m0 + g + 8 * (e >> 1)] = -acc[e];
}

// M = (I + A)^-1 as invert() computes it (the same blocks in the same order, the same diagonal blocks), with
// the block products in bf16 hi/lo chained in registers; all threads, synced on return. With L = I + A:
//   2. M_ij = -M_ii A_ij M_jj for (i, j) = (1, 0), (3, 2), as M_ij^T = -(M_jj^T A_ij^T) M_ii^T: warps 2p and
//      2p + 1 take pair p, each the whole 16 x 16 inner product and one 8-column n-tile of the outer one;
//   3. X = M[32:, :32] = -M_R (A21 M_L) with M_L = M[:32, :32], A21 = A[32:, :32], M_R = M[32:, 32:], as
//      X^T = -(M_L^T A21^T) M_R^T: warp (rb, cb) = (warp / 2, warp % 2) the 16 x 32 row block rb of the inner
//      product (M_L^T is zero left of its diagonal block: k blocks rb .. 1), then the 16 x 16 block (rb, cb)
//      of X^T (M_R^T is zero below its diagonal block: k blocks 0 .. cb).
// Every read of M is of a block that is written (the diagonal blocks whole, zeros above their diagonal).
__device__ __forceinline__ void invert_bf16x3(float* M, const float* KD, const float* beta, int tid) {
  invert_diagonal_blocks(M, KD, beta, tid);
  __syncthreads();
  const int warp = tid / 32, lane = tid % 32;
  uint32_t ahi[4], alo[4], bhi[2], blo[2];
  if (warp < 4) {
    const int oi = kBlk * (2 * (warp >> 1) + 1), oj = oi - kBlk, nh = warp & 1;
    float inner[2][4] = {};  // (A_ij M_jj)^T = M_jj^T A_ij^T, A_ij[n][k] = beta_n KD[n][k]
    a_frag_split_t(ahi, alo, M, oj, oj, lane);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      b_frag_split(bhi, blo, KD, beta, oj, oi + 8 * nt, lane);
      mma_hilo(inner[nt], ahi, alo, bhi, blo);
    }
    float outer[4] = {};  // (M_ii A_ij M_jj)^T, columns 8 nh ..
    acc_frag_split(ahi, alo, inner, 0);
    b_frag_split(bhi, blo, M, nullptr, oi, oi + 8 * nh, lane);
    mma_hilo(outer, ahi, alo, bhi, blo);
    store_neg_t(M, outer, oj, oi + 8 * nh, lane);
  }
  __syncthreads();
  if (warp < 4) {
    const int rb = warp >> 1, cb = warp & 1;
    float inner[4][4] = {};  // row block rb of M_L^T A21^T, A21[n][k] = beta_{32+n} KD[32 + n][k]
#pragma unroll
    for (int kb = 0; kb < 2; ++kb) {
      if (kb < rb) continue;
      a_frag_split_t(ahi, alo, M, kBlk * rb, kBlk * kb, lane);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        b_frag_split(bhi, blo, KD + 2 * kBlk * kF, beta + 2 * kBlk, kBlk * kb, 8 * nt, lane);
        mma_hilo(inner[nt], ahi, alo, bhi, blo);
      }
    }
    float outer[2][4] = {};  // block (rb, cb) of (M_L^T A21^T) M_R^T, M_R[n][k] = M[32 + n][32 + k]
#pragma unroll
    for (int kb = 0; kb < 2; ++kb) {
      if (kb > cb) continue;
      acc_frag_split(ahi, alo, inner, kb);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        b_frag_split(bhi, blo, M + 2 * kBlk * (kF + 1), nullptr, kBlk * kb, kBlk * cb + 8 * nt, lane);
        mma_hilo(outer[nt], ahi, alo, bhi, blo);
      }
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
      store_neg_t(M + 2 * kBlk * kF, outer[nt], kBlk * rb, kBlk * cb + 8 * nt, lane);
  }
  __syncthreads();
}

// M = (I + A)^-1 by the products DeltaWyParams::inverse names.
__device__ __forceinline__ void invert_as(DeltaWyInverse how, float* M, const float* KD, const float* beta,
                                          float* Tmp, int tid) {
  if (how == DeltaWyInverse::kBf16x3)
    invert_bf16x3(M, KD, beta, tid);
  else
    invert(M, KD, beta, Tmp, tid);
}

// hi + lo = M_rc * colscale[c] (zero above the diagonal; colscale nullptr: 1) as two swizzled 16-bit [C][C]
// tiles; all threads. M's rows and the scales are read as float4 (the scales once per chunk, not per
// element). Eight-column pieces wholly above the diagonal are not read (M is not written there). A piece
// that holds the diagonal lies in a diagonal 16 x 16 block, which M holds whole, with exact zeros above the
// diagonal (invert_diagonal_blocks; a saved M is zero there too), so its elements need no mask.
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
      for (int j = 0; j < 4; ++j) split2<T>(hp[j], lp[j], x[2 * j], x[2 * j + 1]);
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
