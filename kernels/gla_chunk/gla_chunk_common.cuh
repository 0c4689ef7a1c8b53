// Device building blocks of the gla_chunk kernels that the scalar-gate ones (linear_chunk_common.cuh, whose
// warp products, state tiles and chunk loads these reuse) do not have: the per-key gate tile and its in-chunk
// cumulative sum, products whose operand fragments are scaled by per-element decays on the way from shared
// memory to the tensor cores, the pairwise diagonal sub-chunk blocks, and element-wise tile scaling.
//
// The gate tile G is float32 [C][kGS] with kGS = kD + 8 (a row is 8 words longer than kD, so the eight rows
// that one float2 fragment read touches fall on distinct banks), and holds log2(e) * the in-chunk cumulative
// gate, so that every decay is one ex2.approx of a difference. Every difference taken is of a later token's
// G minus an earlier token's G (or a reference between them), hence <= 0 for gates <= 0: strong gates
// underflow to zero and never overflow. Accumulator layouts as in linear_chunk_common.cuh.
#pragma once

#include <type_traits>

#include "kernels/common/convert.cuh"
#include "kernels/gla_chunk/params.h"
#include "kernels/linear_chunk/linear_chunk_common.cuh"

namespace attnlab::kernels::gla_chunk {

using linear_chunk::kC;
using linear_chunk::kThreads;
using linear_chunk::launch_kernel;
using linear_chunk::tile_at;
using linear_chunk::tile_pair;
using linear_chunk::unpack2;

constexpr int kSub = kGlaSubChunk;  // 16 tokens per sub-chunk
constexpr int kNSub = kC / kSub;    // 4 sub-chunks per chunk

// The buffer holds one row of zeros, then the C rows of the tile: G's row -1 is the reference "before the
// chunk" (r_0 = 0), so that every sub-chunk's reference is a row of the tile (gate_tile).
template <int kD>
struct GateTile {
  static constexpr int kGS = kD + 8;                  // floats per row
  static constexpr int kBytes = (kC + 1) * kGS * 4;   // the zero row and the tile
  static constexpr int kScratchBytes = kThreads * 4;  // gate_cumsum's part totals
};

// The tile's row 0 inside its buffer `buf` (GateTile::kBytes), with row -1 zeroed; all threads, before the
// first __syncthreads that precedes a read.
template <int kD>
__device__ __forceinline__ float* gate_tile(unsigned char* buf, int tid) {
  constexpr int kGS = GateTile<kD>::kGS;
  float* G = reinterpret_cast<float*>(buf) + kGS;
  for (int i = tid; i < kGS; i += kThreads) G[i - kGS] = 0.f;
  return G;
}

// The diagonal sub-chunk blocks (a token's decays against the earlier tokens of its own sub-chunk) can go
// through the tensor cores like the blocks below the diagonal, as (q exp2(G_t - r)) (k exp2(r - G_s)) with
// r = G before the sub-chunk, when no factor leaves the 16-bit type's comfortable range: the exponents lie
// in [-span, span] with span = r - G at the sub-chunk's last row (per key). Up to 2^64 either way in bf16
// (8 exponent bits, as float32); 2^8 in fp16 (k 2^8 stays far below 65504, q 2^-8 far above the
// subnormals). Past it (strong gates: -5 per step gives 2^115 over 16 steps) the blocks are formed
// pairwise in float32 (diag_scores, diag_rows), where every exponent is <= 0.
template <typename T>
__device__ __forceinline__ constexpr float tame_span() {
  return std::is_same_v<T, __half> ? 8.f : 64.f;
}

// Whether every sub-chunk of the chunk in G has a span within tame_span<T>() for every key: the same answer
// in every warp (each reads the whole tile's sub-chunk ends); after the tile's cumsum is visible.
template <int kD, typename T>
__device__ __forceinline__ bool chunk_tame(const float* G, int lane) {
  constexpr int kGS = GateTile<kD>::kGS;
  float span = 0.f;
#pragma unroll
  for (int i = 0; i < kNSub; ++i)
#pragma unroll
    for (int m = 0; m < kD / 32; ++m) {
      const int c = lane + 32 * m;
      span = fmaxf(span, G[(kSub * i - 1) * kGS + c] - G[(kSub * i + kSub - 1) * kGS + c]);
    }
  return __all_sync(0xffffffffu, span <= tame_span<T>());
}

// ---------------------------------------------------------------- conversions
// (lo, hi) of a 16-bit pair times (a, b), repacked.
template <typename T>
__device__ __forceinline__ uint32_t scale2(uint32_t x, float a, float b) {
  const float2 y = unpack2<T>(x);
  return MmaType<T>::pack(y.x * a, y.y * b);
}

// ---------------------------------------------------------------- gates
// Issues the 16-byte copies of the chunk's gates g[b, t0 + r, h, :] into the [C][kGS] tile (rows past T
// zero-filled: a padded step keeps the state).
template <int kD>
__device__ __forceinline__ void load_gate_tile(float* G, const float* g, int b, int t0, int h, int T_, int H,
                                               int tid) {
  constexpr int kGS = GateTile<kD>::kGS, kPerRow = kD / 4;
  const float* base = g + ((static_cast<int64_t>(b) * T_ + t0) * H + h) * kD;
  const int64_t stride = static_cast<int64_t>(H) * kD;
#pragma unroll
  for (int i = tid; i < kC * kPerRow; i += kThreads) {
    const int row = i / kPerRow, ch = i % kPerRow;
    const bool ok = t0 + row < T_;
    cp_async_16(smem_u32(G + row * kGS + ch * 4), ok ? base + row * stride + ch * 4 : g, ok);
  }
}

// In place over the tile of raw gates: G[r][c] <- log2(e) (g[0][c] + ... + g[r][c]). Each column is cut into
// kThreads / kD parts of rows, summed by one thread each, then offset by the parts before it (through
// `scratch`, kThreads floats). Returns the column total (natural units, for the segment gate sums) to the
// threads tid < kD, column tid; 0 elsewhere. All threads; one __syncthreads inside; the caller syncs before
// reading G. For gates <= 0 the result is non-increasing down every column, exactly (each float addition of
// a non-positive number rounds to a value <= the sum before), which keeps every difference later - earlier
// <= 0.
template <int kD>
__device__ __forceinline__ float gate_cumsum(float* G, float* scratch, int tid) {
  constexpr int kGS = GateTile<kD>::kGS, kParts = kThreads / kD, kRows = kC / kParts;
  const int col = tid % kD, part = tid / kD;
  float* x = G + part * kRows * kGS + col;
  float run = 0.f;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    run += x[r * kGS];
    x[r * kGS] = run;
  }
  scratch[tid] = run;
  __syncthreads();
  float off = 0.f, total = 0.f;
#pragma unroll
  for (int p2 = 0; p2 < kParts; ++p2) {
    const float t = scratch[p2 * kD + col];
    if (p2 < part) off += t;
    total += t;
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) x[r * kGS] = (x[r * kGS] + off) * kLog2e;
  return part == 0 ? total : 0.f;
}

// ---------------------------------------------------------------- products with decayed operands
// One 16 x 16 block of in-chunk scores, query sub-chunk rows t0.., key sub-chunk rows s0..:
// acc[t][s] = sum_c (q[t][c] exp2(G[t][c] - r[c])) (k[s][c] exp2(r[c] - G[s][c])), r = G row `ri` (t0 - 1).
// Below the diagonal (s0 + 16 <= t0) r lies between every key and every query, so both exponents are <= 0;
// on it (s0 == t0) the key factors are >= 1, which only a tame chunk (chunk_tame) may take. The decays
// multiply the operand fragments after ldmatrix (A: rows t, columns c; B: rows s, columns c), in float32,
// rounded once to 16 bits.
template <int kD, typename T>
__device__ __forceinline__ void gated_scores_block(float (&acc)[1][2][4], uint32_t sQ, uint32_t sK,
                                                   const float* G, int t0, int s0, int ri, int lane) {
  constexpr int kGS = GateTile<kD>::kGS;
  const int gq = lane >> 2, c = lane & 3;
  const float* Gr = G + ri * kGS;
  const float* Gt0 = G + (t0 + gq) * kGS;
  const float* Gt1 = Gt0 + 8 * kGS;
  const float* Gs0 = G + (s0 + gq) * kGS;
  const float* Gs1 = Gs0 + 8 * kGS;
  auto ld2 = [](const float* p) { return *reinterpret_cast<const float2*>(p); };
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    uint32_t a[4], b[4];
    ldmatrix_x4(a, sQ + swz<kD>(t0 + (lane & 15), ks * 2 + (lane >> 4)));
    ldmatrix_x4(b, sK + swz<kD>(s0 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
    const int c0 = ks * 16 + 2 * c, c1 = c0 + 8;
    const float2 r0 = ld2(Gr + c0), r1 = ld2(Gr + c1);
    float2 x;
    // a0 (t0+gq, c0) a1 (t0+gq+8, c0) a2 (t0+gq, c1) a3 (t0+gq+8, c1)
    x = ld2(Gt0 + c0), a[0] = scale2<T>(a[0], fast_exp2(x.x - r0.x), fast_exp2(x.y - r0.y));
    x = ld2(Gt1 + c0), a[1] = scale2<T>(a[1], fast_exp2(x.x - r0.x), fast_exp2(x.y - r0.y));
    x = ld2(Gt0 + c1), a[2] = scale2<T>(a[2], fast_exp2(x.x - r1.x), fast_exp2(x.y - r1.y));
    x = ld2(Gt1 + c1), a[3] = scale2<T>(a[3], fast_exp2(x.x - r1.x), fast_exp2(x.y - r1.y));
    // b0 (s0+gq, c0) b1 (s0+gq, c1) b2 (s0+8+gq, c0) b3 (s0+8+gq, c1)
    x = ld2(Gs0 + c0), b[0] = scale2<T>(b[0], fast_exp2(r0.x - x.x), fast_exp2(r0.y - x.y));
    x = ld2(Gs0 + c1), b[1] = scale2<T>(b[1], fast_exp2(r1.x - x.x), fast_exp2(r1.y - x.y));
    x = ld2(Gs1 + c0), b[2] = scale2<T>(b[2], fast_exp2(r0.x - x.x), fast_exp2(r0.y - x.y));
    x = ld2(Gs1 + c1), b[3] = scale2<T>(b[3], fast_exp2(r1.x - x.x), fast_exp2(r1.y - x.y));
    mma_16816<T>(acc[0][0], a, b[0], b[1]);
    mma_16816<T>(acc[0][1], a, b[2], b[3]);
  }
}

// acc[1][NT][4] (rows m0.., columns n0..) += sum over ks in [ks0, ks1) of P'[m][16 ks..] (B o E)[16 ks..][n],
// with P' the [C][C] 16-bit tile sP read as rows (P'[m][u] = P[m][u]) or, kATrans, as columns (P'[m][u] =
// P[u][m]); B the swizzled [C][kD] tile sB read as [u][n]; and the decay E[u][n] = exp2(ref[n] - G[u][n])
// (kRefMinusG) or exp2(G[u][n] - ref[n]), applied to the B fragments after ldmatrix. In block ks_diag (the
// one whose rows u are the rows m, if any) the diagonal P'[m][m] is left out: diag_self adds it in float32.
template <int kD, typename T, bool kATrans, bool kRefMinusG, int NT>
__device__ __forceinline__ void gated_pv_mma(float (&acc)[1][NT][4], uint32_t sP, int m0, uint32_t sB,
                                             const float* G, const float* ref, int n0, int ks0, int ks1,
                                             int lane, int ks_diag = -1) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
  constexpr int kGS = GateTile<kD>::kGS;
  const int gq = lane >> 2, c = lane & 3;
  // The diagonal's elements in the A fragments (a0: row gq, columns 2c and 2c + 1; a3: row gq + 8, columns
  // 2c + 8 and 2c + 9): the 16-bit half to keep.
  const uint32_t keep = gq == 2 * c ? 0xffff0000u : (gq == 2 * c + 1 ? 0x0000ffffu : 0xffffffffu);
  for (int ks = ks0; ks < ks1; ++ks) {
    uint32_t a[4];
    if constexpr (!kATrans)
      ldmatrix_x4(a, sP + swz<kC>(m0 + (lane & 15), ks * 2 + (lane >> 4)));
    else
      ldmatrix_x4_trans(a,
                        sP + swz<kC>(ks * 16 + (lane & 7) + ((lane >> 4) << 3), m0 / 8 + ((lane >> 3) & 1)));
    if (ks == ks_diag) a[0] &= keep, a[3] &= keep;
    const int u0 = ks * 16 + 2 * c;  // B rows of b0 / b2: u0, u0 + 1; of b1 / b3: u0 + 8, u0 + 9
    const float* G0 = G + u0 * kGS;
#pragma unroll
    for (int nj = 0; nj < NT; nj += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(
          b, sB + swz<kD>(ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), (n0 + nj * 8) / 8 + (lane >> 4)));
      const int na = n0 + nj * 8 + gq, nb = na + 8;  // B columns of b0, b1 / b2, b3
      const float ra = ref[na], rb = ref[nb];
      auto e = [&](int du, int n, float r) {
        const float x = G0[du * kGS + n];
        return fast_exp2(kRefMinusG ? r - x : x - r);
      };
      b[0] = scale2<T>(b[0], e(0, na, ra), e(1, na, ra));
      b[1] = scale2<T>(b[1], e(8, na, ra), e(9, na, ra));
      b[2] = scale2<T>(b[2], e(0, nb, rb), e(1, nb, rb));
      b[3] = scale2<T>(b[3], e(8, nb, rb), e(9, nb, rb));
      mma_16816<T>(acc[0][nj], a, b[0], b[1]);
      mma_16816<T>(acc[0][nj + 1], a, b[2], b[3]);
    }
  }
}

// ---------------------------------------------------------------- diagonal sub-chunk blocks, pairwise
// The four 16 x 16 diagonal blocks of the in-chunk scores, in float32, into the [C][C] 16-bit tile sA:
// A[t][s] = scale sum_c q[t][c] k[s][c] exp2(G[t][c] - G[s][c]) for s <= t in one sub-chunk, 0 for s > t.
// Warps 2i and 2i+1 take sub-chunk i; lane (s, quarter) sums every fourth group of 8 columns, and the four
// quarters are added by shuffles. The odd warp's keys are the block's last 8, so its first 8 queries see
// none of them (zeros, no work).
// A lane's key row s is the same for all 16 queries, so its gates (the lane's kD / 4 columns of G[s]) are
// read into registers once: read per query, the eight key rows of a warp (kGS = kD + 8 words apart) meet in
// 4 of the 16 bank pairs, an 8-way conflict. Avoiding it moved the forward's output pass only from 1248 to
// 1229 us (ncu, H200, D = 128, 2026-12-02l): the conflict is not what makes that pass slow.
template <int kD, typename T>
__device__ __forceinline__ void diag_scores(unsigned char* sA, const unsigned char* sQ,
                                            const unsigned char* sK, const float* G, float scale, int warp,
                                            int lane) {
  constexpr int kGS = GateTile<kD>::kGS, kM = kD / 32;  // kM groups of 8 columns per lane
  const int i = warp >> 1, half = warp & 1, quarter = lane & 3;
  const int s = kSub * i + 8 * half + (lane >> 2);
  const float* Gs = G + s * kGS;
  float4 gs[kM][2];
#pragma unroll
  for (int j = 0; j < kM; ++j) {
    gs[j][0] = *reinterpret_cast<const float4*>(Gs + 8 * (quarter + 4 * j));
    gs[j][1] = *reinterpret_cast<const float4*>(Gs + 8 * (quarter + 4 * j) + 4);
  }
  for (int tl = 0; tl < kSub; ++tl) {
    const int t = kSub * i + tl;
    float part = 0.f;
    if (!(half == 1 && tl < 8) && s <= t) {
      const float* Gt = G + t * kGS;
#pragma unroll
      for (int j = 0; j < kM; ++j) {
        const int m = quarter + 4 * j;
        const uint4 qv = *reinterpret_cast<const uint4*>(sQ + swz<kD>(t, m));
        const uint4 kv = *reinterpret_cast<const uint4*>(sK + swz<kD>(s, m));
        const float4 gt0 = *reinterpret_cast<const float4*>(Gt + 8 * m);
        const float4 gt1 = *reinterpret_cast<const float4*>(Gt + 8 * m + 4);
        const uint32_t* qu = reinterpret_cast<const uint32_t*>(&qv);
        const uint32_t* ku = reinterpret_cast<const uint32_t*>(&kv);
        const float gtv[8] = {gt0.x, gt0.y, gt0.z, gt0.w, gt1.x, gt1.y, gt1.z, gt1.w};
        const float gsv[8] = {gs[j][0].x, gs[j][0].y, gs[j][0].z, gs[j][0].w,
                              gs[j][1].x, gs[j][1].y, gs[j][1].z, gs[j][1].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 a = unpack2<T>(qu[e]), bb = unpack2<T>(ku[e]);
          part += a.x * bb.x * fast_exp2(gtv[2 * e] - gsv[2 * e]) +
                  a.y * bb.y * fast_exp2(gtv[2 * e + 1] - gsv[2 * e + 1]);
        }
      }
    }
    part += __shfl_xor_sync(0xffffffffu, part, 1);
    part += __shfl_xor_sync(0xffffffffu, part, 2);
    if (quarter == 0)
      *reinterpret_cast<T*>(sA + swz<kC>(t, s / 8) + (s % 8) * 2) = from_float<T>(scale * part);
  }
}

// The diagonal blocks' share of a gradient, in the accumulator layout (rows m0.. = one sub-chunk, columns
// n0..): acc[row][n] += sum over the row's sub-chunk partners u of P * B[u][n] * exp2(G[t][n] - G[s][n]),
// where kLater = false: u <= row, P = P[row][u], (t, s) = (row, u) (dq: partners are earlier keys);
// kLater = true: u >= row, P = P[u][row], (t, s) = (u, row) (dk: partners are later queries).
template <int kD, typename T, bool kLater, int NT>
__device__ __forceinline__ void diag_rows(float (&acc)[1][NT][4], const unsigned char* sP,
                                          const unsigned char* sB, const float* G, int m0, int n0, int lane) {
  constexpr int kGS = GateTile<kD>::kGS;
  const int gq = lane >> 2, c = lane & 3;
  for (int ul = 0; ul < kSub; ++ul) {
    const int u = m0 + ul;
    const float* Gu = G + u * kGS;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Warp-uniform: no row of this half has u as a partner.
      if (kLater ? (h == 1 && ul < 8) : (h == 0 && ul >= 8)) continue;
      const int rl = gq + 8 * h;
      if (kLater ? ul < rl : ul > rl) continue;
      const int row = m0 + rl;
      const float pv = kLater ? tile_at<kC, T>(sP, u, row) : tile_at<kC, T>(sP, row, u);
      const float* Gr = G + row * kGS;
#pragma unroll
      for (int nj = 0; nj < NT; ++nj) {
        const int col = n0 + nj * 8 + 2 * c;
        const float2 bv = tile_pair<kD, T>(sB, u, col);
        const float2 gr = *reinterpret_cast<const float2*>(Gr + col);
        const float2 gu = *reinterpret_cast<const float2*>(Gu + col);
        const float ex = kLater ? gu.x - gr.x : gr.x - gu.x, ey = kLater ? gu.y - gr.y : gr.y - gu.y;
        acc[0][nj][2 * h] += pv * bv.x * fast_exp2(ex);
        acc[0][nj][2 * h + 1] += pv * bv.y * fast_exp2(ey);
      }
    }
  }
}

// The diagonal's own terms, in float32, in the accumulator layout (rows m0.., columns n0..): acc[row][n] +=
// P[row][row] B[row][n] (the decay of a token against itself is 1). The tame path's products leave them out
// (gated_pv_mma's ks_diag) because dg adds q dq and subtracts k dk, where a token's own term appears in both
// and must cancel: through 16-bit operands scaled by up to 2^64 the two roundings differ, and under strong
// decays dg is much smaller than those terms (the test's medium gates showed 0.17 relative error in dg).
template <int kD, typename T, int NT>
__device__ __forceinline__ void diag_self(float (&acc)[1][NT][4], const unsigned char* sP,
                                          const unsigned char* sB, int m0, int n0, int lane) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = m0 + (lane >> 2) + 8 * h;
    const float pv = tile_at<kC, T>(sP, row, row);
#pragma unroll
    for (int nj = 0; nj < NT; ++nj) {
      const float2 bv = tile_pair<kD, T>(sB, row, n0 + nj * 8 + 2 * (lane & 3));
      acc[0][nj][2 * h] += pv * bv.x;
      acc[0][nj][2 * h + 1] += pv * bv.y;
    }
  }
}

// ---------------------------------------------------------------- element-wise scaling
// acc[row][col] *= f(row, col) for the accumulators of a 16-row token tile (rows m0.., columns n0..); f
// returns the factors of columns col and col + 1 as a float2.
template <int NT, typename F>
__device__ __forceinline__ void scale_acc(float (&acc)[1][NT][4], int m0, int n0, int lane, F&& f) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = m0 + (lane >> 2) + 8 * h;
#pragma unroll
    for (int nj = 0; nj < NT; ++nj) {
      const float2 s = f(row, n0 + nj * 8 + 2 * (lane & 3));
      acc[0][nj][2 * h] *= s.x;
      acc[0][nj][2 * h + 1] *= s.y;
    }
  }
}

// x[r][c] *= f(G[r][c], c) over a swizzled [C][kD] 16-bit tile, in place; all threads.
template <int kD, typename T, typename F>
__device__ __forceinline__ void scale_tile(unsigned char* s, const float* G, int tid, F&& f) {
  constexpr int kGS = GateTile<kD>::kGS, kPerRow = kD / 8;
#pragma unroll
  for (int i = 0; i < kC * kPerRow / kThreads; ++i) {
    const int idx = tid + i * kThreads;
    const int row = idx / kPerRow, ch = idx % kPerRow;
    const uint32_t off = swz<kD>(row, ch);
    uint4 x = *reinterpret_cast<const uint4*>(s + off);
    uint32_t* u = reinterpret_cast<uint32_t*>(&x);
    const float* g = G + row * kGS + ch * 8;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 gg = *reinterpret_cast<const float2*>(g + 2 * j);
      u[j] = scale2<T>(u[j], f(gg.x, ch * 8 + 2 * j), f(gg.y, ch * 8 + 2 * j + 1));
    }
    *reinterpret_cast<uint4*>(s + off) = x;
  }
}

// ---------------------------------------------------------------- chunk-end states
// The chunk-end states are written by linear_chunk::StateTile::store_packed (16-bit pairs in the register
// order, [pair][thread]); state_row_dots reads them back.
// rowdot[w / 4][r] = sum over this warp's columns v of S[r][v] acc[r][v], for the state rows r of warp w,
// with S from StateTile::store_packed (the two column halves of a row land in the two slots).
template <int kD, typename T, int MT, int NT>
__device__ __forceinline__ void state_row_dots(float* rowdot, const uint32_t* src,
                                               const float (&acc)[MT][NT][4], int warp, int lane, int tid) {
  using ST = linear_chunk::StateTile<kD, kD>;
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float s = 0.f;
#pragma unroll
      for (int nj = 0; nj < NT; ++nj) {
        const float2 x = unpack2<T>(src[((mi * NT + nj) * 2 + half) * kThreads + tid]);
        s += x.x * acc[mi][nj][2 * half] + x.y * acc[mi][nj][2 * half + 1];
      }
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      if ((lane & 3) == 0) rowdot[(warp / 4) * kD + ST::m0(warp) + mi * 16 + (lane >> 2) + 8 * half] = s;
    }
}

// The pairs (query sub-chunk i, key sub-chunk j < i) of the six blocks below the diagonal, one per warp 0..5.
__device__ __forceinline__ int2 offdiag_pair(int w) {
  const int i = w < 1 ? 1 : (w < 3 ? 2 : 3);
  const int j = w - (i * (i - 1)) / 2;
  return make_int2(i, j);
}

}  // namespace attnlab::kernels::gla_chunk
