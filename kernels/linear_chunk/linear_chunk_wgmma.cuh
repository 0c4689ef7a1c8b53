// Building blocks of the linear_chunk kernels on Hopper's warpgroup MMA (sm_90a): the forward's output pass
// (linear_chunk_fwd_wgmma.cuh, D = 64 and 128) and the backward's two walks (linear_chunk_bwd_wgmma.cuh,
// D = 128).
//
// Layout shared by all of them, for D = K = V = 64 n: n warpgroups (128 n threads); warp wr (0-3) of
// warpgroup wg holds, in an m64nN accumulator, rows 16 wr + lane / 4 (+ 8) and columns 8 j + 2 (lane % 4)
// (+ 1) (kernels/common/wgmma.cuh). Token tiles [64][D] sit in shared memory as n swizzled [64][64] panels
// (swz<64>, 8 KB each). The K x V state (or its gradient) is split by rows: warpgroup wg holds rows 64 wg ..
// + 64 over all D columns in an m64nD accumulator (D / 2 floats per thread), and its 16-bit copy sits in n
// [D][64] panels (value columns 0-63, 64-127). That one copy serves both ways: read MN-major it is S as a B
// operand [K][V] (q S, k dS), read K-major (rows 64 wg .., 16-column steps) it is S^T as a B operand (do S^T,
// v dS^T).
// Namespace wgt ("warpgroup tiles"): the local name wg stays free for the warpgroup index.
#pragma once

#include "kernels/common/wgmma.cuh"
#include "kernels/linear_chunk/linear_chunk_kernels.cuh"

namespace attnlab::kernels::linear_chunk::wgt {

constexpr int kPanel = kC * 64 * 2;  // [64 rows][64 columns] 16-bit: 8 KB
template <int kD>
constexpr int kSPanel = kD * 64 * 2;  // [kD K rows][64 value columns]: 16 KB at D = 128

__device__ __forceinline__ int acc_row(int wg, int wr, int lane, int half) {
  return 64 * wg + 16 * wr + (lane >> 2) + 8 * half;
}
__device__ __forceinline__ int acc_col(int j, int lane) {
  return 8 * j + 2 * (lane & 3);
}

// The state from float32 [kD][kD] (zeros when src is null) into warpgroup wg's m64nD accumulator.
template <int kD>
__device__ __forceinline__ void load_state(float (&S)[kD / 2], const float* src, int wg, int wr, int lane) {
#pragma unroll
  for (int j = 0; j < kD / 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = acc_row(wg, wr, lane, half), col = acc_col(j, lane);
      const float2 x = src ? *reinterpret_cast<const float2*>(src + row * kD + col) : make_float2(0.f, 0.f);
      S[4 * j + 2 * half] = x.x, S[4 * j + 2 * half + 1] = x.y;
    }
}
template <int kD>
__device__ __forceinline__ void store_state(float* dst, const float (&S)[kD / 2], int wg, int wr, int lane) {
#pragma unroll
  for (int j = 0; j < kD / 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = acc_row(wg, wr, lane, half), col = acc_col(j, lane);
      *reinterpret_cast<float2*>(dst + row * kD + col) =
          make_float2(S[4 * j + 2 * half], S[4 * j + 2 * half + 1]);
    }
}

// The 16-bit state copy: the accumulators into the [kD][64] panels at s.
template <int kD, typename T>
__device__ __forceinline__ void store_state_panels(unsigned char* s, const float (&S)[kD / 2], int wg, int wr,
                                                   int lane) {
#pragma unroll
  for (int j = 0; j < kD / 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = acc_row(wg, wr, lane, half), col = acc_col(j, lane);
      *reinterpret_cast<uint32_t*>(s + (col / 64) * kSPanel<kD> + panel_off(row, col % 64)) =
          MmaType<T>::pack(S[4 * j + 2 * half], S[4 * j + 2 * half + 1]);
    }
}

// The 16-bit copy of the state entering a chunk that the dq walk leaves for the dk/dv walk (chunk_states),
// in thread order: word i * 256 + tid holds (S[2 i], S[2 i + 1]). Both walks hold the state in this same
// accumulator layout, so the dk/dv walk reads back exactly its own elements (coalesced both ways).
template <typename T>
__device__ __forceinline__ void store_state_packed(uint32_t* dst, const float (&S)[64], int tid) {  // D = 128
#pragma unroll
  for (int i = 0; i < 32; ++i) dst[i * kThreads + tid] = MmaType<T>::pack(S[2 * i], S[2 * i + 1]);
}
template <typename T>
__device__ __forceinline__ float dot_state_packed(const uint32_t* src, const float (&S)[64], int tid) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const float2 x = unpack2<T>(src[i * kThreads + tid]);
    s += x.x * S[2 * i] + x.y * S[2 * i + 1];
  }
  return s;
}

// An m64n64 accumulator is mma.sync's C fragment repeated over 8 column blocks, per warp (wgmma.cuh): the
// mma.sync helpers (store_acc_global, row_dot) take it as one.
__device__ __forceinline__ const float (&as_frag(const float (&X)[32]))[1][8][4] {
  return reinterpret_cast<const float(&)[1][8][4]>(X);
}

// Per-row sums of an m64n64 accumulator times the 16-bit panel x (rows 16 wr + lane / 4 (+ 8) of the panel,
// the accumulator's columns), reduced over the 4 lanes of a quad: .x for the upper row, .y the lower.
template <typename T>
__device__ __forceinline__ float2 row_dot_panel(const float (&X)[32], const unsigned char* panel, int wr,
                                                int lane) {
  return row_dot<64, T, 8>(as_frag(X), panel, 16 * wr, 0, lane);
}

// An m64n64 accumulator out to global rows (dst: row 0 of the warpgroup's 64 rows, column 0 of its 64), 16
// bits: the warp's 16 rows go through its own 16 rows of `rows` (a dead 64-column panel of the stage: no
// other warp reads them any more) and leave as whole 128-byte rows. rows_valid counts from the warpgroup's
// row 0.
template <typename T>
__device__ __forceinline__ void store_acc_rows(T* dst, int64_t row_stride, const float (&X)[32],
                                               unsigned char* panel, int rows_valid, int wr, int lane) {
  unsigned char* rows = panel + 16 * wr * 128;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
      *reinterpret_cast<uint32_t*>(rows + panel_off((lane >> 2) + 8 * half, acc_col(j, lane))) =
          MmaType<T>::pack(X[4 * j + 2 * half], X[4 * j + 2 * half + 1]);
  __syncwarp();
  store_tile<16, 64, 32, T>(dst + 16 * wr * row_stride, row_stride, rows, rows_valid - 16 * wr, lane);
}

// Loads a [64][kD] token tile at x (row stride row_stride) into kD / 64 panels at s, by 2 kD threads.
template <int kD, typename T>
__device__ __forceinline__ void load_panels(uint32_t s, const T* x, int64_t row_stride, int rows_valid,
                                            int tid) {
#pragma unroll
  for (int pn = 0; pn < kD / 64; ++pn)
    load_tile<kC, 64, 2 * kD, T>(s + pn * kPanel, x + 64 * pn, row_stride, rows_valid, tid);
}

// C = A B^T over K = kD with A and B [64][kD] token tiles (K-major panels), m64n64: P = q k^T and its kin.
// The first k16 step overwrites C (scale-d 0), so no zero fill is needed.
template <int kD, typename T>
__device__ __forceinline__ void scores(float (&P)[32], uint32_t a, uint32_t b) {
#pragma unroll
  for (int s = 0; s < kD / 16; ++s) {
    const uint32_t k_off = (s / 4) * kPanel + (s % 4) * 32;
    wgmma::Mma<64, T, 0>::run(P, wgmma::make_desc(a + k_off, 16, 1024), wgmma::make_desc(b + k_off, 16, 1024),
                              s > 0);
  }
}
// The columns 32 h .. + 32 of the same, m64n32 (B's rows 32 h ..): two warpgroups split one score matrix.
template <int kD, typename T>
__device__ __forceinline__ void scores_half(float (&P)[16], uint32_t a, uint32_t b, int h) {
#pragma unroll
  for (int s = 0; s < kD / 16; ++s) {
    const uint32_t k_off = (s / 4) * kPanel + (s % 4) * 32;
    wgmma::Mma<32, T, 0>::run(P, wgmma::make_desc(a + k_off, 16, 1024),
                              wgmma::make_desc(b + k_off + 32 * h * 128, 16, 1024), s > 0);
  }
}
// C = A S[:, 64 wg ..] (S MN-major from its panels at s_copy), A a [64][kD] token tile: q S, k dS.
template <int kD, typename T>
__device__ __forceinline__ void times_state(float (&C)[32], uint32_t a, uint32_t s_copy, int wg) {
#pragma unroll
  for (int s = 0; s < kD / 16; ++s)
    wgmma::Mma<64, T, 1>::run(C, wgmma::make_desc(a + (s / 4) * kPanel + (s % 4) * 32, 16, 1024),
                              wgmma::make_desc_mn(s_copy + wg * kSPanel<kD> + s * 2048, kSPanel<kD>), s > 0);
}
// C = A S^T[:, 64 wg ..] (S^T read K-major: rows 64 wg .. of each panel), A a [64][128] token tile: do S^T,
// v dS^T. D = 128.
template <typename T>
__device__ __forceinline__ void times_state_t(float (&C)[32], uint32_t a, uint32_t s_copy, int wg) {
#pragma unroll
  for (int s = 0; s < 8; ++s) {
    const uint32_t k_off = (s / 4) * kPanel + (s % 4) * 32;
    wgmma::Mma<64, T, 0>::run(
        C, wgmma::make_desc(a + k_off, 16, 1024),
        wgmma::make_desc(s_copy + (s / 4) * kSPanel<128> + wg * 64 * 128 + (s % 4) * 32, 16, 1024), s > 0);
  }
}
// C += P X[:, 64 wg ..]: P a [64][64] panel (K-major), X a [64][kD] token tile read MN-major (P V, P' k).
template <typename T>
__device__ __forceinline__ void scores_times(float (&C)[32], uint32_t p, uint32_t x, int wg) {
#pragma unroll
  for (int s = 0; s < 4; ++s)
    wgmma::Mma<64, T, 1>::run(C, wgmma::make_desc(p + s * 32, 16, 1024),
                              wgmma::make_desc_mn(x + wg * kPanel + s * 2048, kPanel), 1);
}
// S[64 wg .., :] += A^T B with A, B [64][kD] token tiles: A's panel wg read M-major (its columns 64 wg ..
// are S's rows), B read MN-major over all its panels (the state update S += k^T Vw, dS += Qw^T do).
template <int kD, typename T>
__device__ __forceinline__ void outer_update(float (&S)[kD / 2], uint32_t a, uint32_t b, int wg) {
#pragma unroll
  for (int s = 0; s < 4; ++s)
    wgmma::Mma<kD, T, 1, 1>::run(S, wgmma::make_desc_mn(a + wg * kPanel + s * 2048, kPanel),
                                 wgmma::make_desc_mn(b + s * 2048, kPanel), 1);
}

// Scales this thread's two rows of an m64n64 accumulator (row[half] for row 16 wr + lane / 4 + 8 half).
__device__ __forceinline__ void scale_acc(float (&X)[32], const float (&row)[2]) {
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) X[4 * j + e] *= row[e / 2];
}

}  // namespace attnlab::kernels::linear_chunk::wgt
