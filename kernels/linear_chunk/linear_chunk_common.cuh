// Device building blocks of the linear_chunk kernels: warp-level matrix products on swizzled shared
// tiles, accumulator stores, the in-chunk gate cumsum, chunk loads, and state tiles in registers.
//
// Every 16-bit tile in shared memory is row-major with R = 64 or 128 elements per row and the 128-byte
// XOR swizzle of kernels/common/mma.cuh (swz<R>). A product C += A B reads A as [m][k] rows ("A rows")
// or [k][m] rows ("A cols", ldmatrix.trans), and B as [n][k] rows ("B rows") or [k][n] rows ("B cols",
// ldmatrix.trans): whichever way the operand already sits, no transposed copy is made.
//
// Warp layout (8 warps, 256 threads): a C x D tile of token rows (C = 64) gives warp w the rows
// 16 (w % 4) .. +16 and the columns (D / 2)(w / 4) .. +D/2; the K x V state gives warp w the rows
// (K / 4)(w % 4) .. and the columns (V / 2)(w / 4) .. . Accumulator element e of tile (mi, nj) sits at
// row m0 + 16 mi + lane / 4 (+ 8 for e >= 2), column n0 + 8 nj + 2 (lane % 4) + (e % 2).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/mma.cuh"
#include "kernels/linear_chunk/params.h"

namespace attnlab::kernels::linear_chunk {

constexpr int kC = kLinearChunk;  // tokens per chunk
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// ---------------------------------------------------------------- element conversions
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t x);
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t x) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
}
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t x) {
  return __half22float2(*reinterpret_cast<__half2*>(&x));
}

// ---------------------------------------------------------------- warp products
// acc[MT][NT] += A[m0 .. m0 + 16 MT, k0 .. k0 + 16 KS] * B[k0 .., n0 .. n0 + 8 NT], all in shared memory.
// kACols: A stored [k][m] (else [m][k]); kBCols: B stored [k][n] (else [n][k]). RA, RB: row lengths.
// The fragments warp_mma loads: A's 16 x 16 block at (m0, k0) and B's 16 x 16 block at (k0, n0) (two
// n-tiles of 8), with the layouts of warp_mma.
template <bool kACols, int RA>
__device__ __forceinline__ void load_a_frag(uint32_t (&a)[4], uint32_t sA, int m0, int k0, int lane) {
  if constexpr (!kACols) {
    ldmatrix_x4(a, sA + swz<RA>(m0 + (lane & 15), k0 / 8 + (lane >> 4)));
  } else {
    ldmatrix_x4_trans(a, sA + swz<RA>(k0 + (lane & 7) + ((lane >> 4) << 3), m0 / 8 + ((lane >> 3) & 1)));
  }
}
template <bool kBCols, int RB>
__device__ __forceinline__ void load_b_frag(uint32_t (&b)[4], uint32_t sB, int k0, int n0, int lane) {
  if constexpr (!kBCols) {
    ldmatrix_x4(b, sB + swz<RB>(n0 + (lane & 7) + ((lane >> 4) << 3), k0 / 8 + ((lane >> 3) & 1)));
  } else {
    ldmatrix_x4_trans(b, sB + swz<RB>(k0 + (lane & 7) + (((lane >> 3) & 1) << 3), n0 / 8 + (lane >> 4)));
  }
}

template <int MT, int NT, int KS, bool kACols, bool kBCols, int RA, int RB, typename T>
__device__ __forceinline__ void warp_mma(float (&acc)[MT][NT][4], uint32_t sA, int a_m0, int a_k0,
                                         uint32_t sB, int b_k0, int b_n0, int lane) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mi = 0; mi < MT; ++mi) load_a_frag<kACols, RA>(a[mi], sA, a_m0 + mi * 16, a_k0 + ks * 16, lane);
#pragma unroll
    for (int nj = 0; nj < NT; nj += 2) {
      uint32_t b[4];
      load_b_frag<kBCols, RB>(b, sB, b_k0 + ks * 16, b_n0 + nj * 8, lane);
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        mma_16816<T>(acc[mi][nj], a[mi], b[0], b[1]);
        mma_16816<T>(acc[mi][nj + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

template <int MT, int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int nj = 0; nj < NT; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][nj][e] = 0.f;
}

// Stores the accumulators (rows m0.., columns n0..) as 16-bit pairs into a swizzled [rows][R] tile.
template <int R, typename T, int MT, int NT>
__device__ __forceinline__ void store_acc_smem(unsigned char* s, const float (&acc)[MT][NT][4], int m0,
                                               int n0, int lane) {
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int nj = 0; nj < NT; ++nj)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = m0 + mi * 16 + (lane >> 2) + half * 8;
        const int col = n0 + nj * 8 + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(s + swz<R>(row, col / 8) + (col % 8) * 2) =
            MmaType<T>::pack(acc[mi][nj][2 * half], acc[mi][nj][2 * half + 1]);
      }
}

// Stores the accumulators of a C x D token tile (rows m0.., columns n0..) to global rows r < rows_valid of
// a [.., row_stride] 16-bit tensor.
template <typename T, int NT>
__device__ __forceinline__ void store_acc_global(T* g, int64_t row_stride, const float (&acc)[1][NT][4],
                                                 int m0, int n0, int rows_valid, int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = m0 + (lane >> 2) + half * 8;
    if (row >= rows_valid) continue;
#pragma unroll
    for (int nj = 0; nj < NT; ++nj) {
      const int col = n0 + nj * 8 + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(g + row * row_stride + col) =
          MmaType<T>::pack(acc[0][nj][2 * half], acc[0][nj][2 * half + 1]);
    }
  }
}

// Multiplies accumulator rows by f(row) (row = m0 + 16 mi + lane / 4 (+8)).
template <int MT, int NT, typename F>
__device__ __forceinline__ void scale_rows(float (&acc)[MT][NT][4], int m0, int lane, F&& f) {
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float s = f(m0 + mi * 16 + (lane >> 2) + half * 8);
#pragma unroll
      for (int nj = 0; nj < NT; ++nj) {
        acc[mi][nj][2 * half] *= s;
        acc[mi][nj][2 * half + 1] *= s;
      }
    }
}

// Element (row, col) of a swizzled [rows][R] 16-bit tile, as float.
template <int R, typename T>
__device__ __forceinline__ float tile_at(const unsigned char* s, int row, int col) {
  return MmaType<T>::to_float(*reinterpret_cast<const T*>(s + swz<R>(row, col / 8) + (col % 8) * 2));
}
// Elements (row, col), (row, col + 1) (col even) of a swizzled [rows][R] 16-bit tile.
template <int R, typename T>
__device__ __forceinline__ float2 tile_pair(const unsigned char* s, int row, int col) {
  return unpack2<T>(*reinterpret_cast<const uint32_t*>(s + swz<R>(row, col / 8) + (col % 8) * 2));
}

// Per-row sums over this warp's columns of acc * x, x read from a swizzled [rows][R] tile; returns, for
// half = 0 / 1, the sum for row m0 + lane / 4 (+ 8), reduced over the 4 lanes of a quad.
template <int R, typename T, int NT>
__device__ __forceinline__ float2 row_dot(const float (&acc)[1][NT][4], const unsigned char* s, int m0,
                                          int n0, int lane) {
  float r[2] = {0.f, 0.f};
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = m0 + (lane >> 2) + half * 8;
#pragma unroll
    for (int nj = 0; nj < NT; ++nj) {
      const int col = n0 + nj * 8 + 2 * (lane & 3);
      const float2 x = tile_pair<R, T>(s, row, col);
      r[half] += acc[0][nj][2 * half] * x.x + acc[0][nj][2 * half + 1] * x.y;
    }
    r[half] += __shfl_xor_sync(0xffffffffu, r[half], 1);
    r[half] += __shfl_xor_sync(0xffffffffu, r[half], 2);
  }
  return make_float2(r[0], r[1]);
}

// ---------------------------------------------------------------- state tiles
// The K x V float32 state split over the 8 warps (see the header comment).
template <int kK, int kV>
struct StateTile {
  static constexpr int MT = kK / 64;  // 16-row tiles per warp
  static constexpr int NT = kV / 16;  // 8-column tiles per warp
  static __device__ __forceinline__ int m0(int warp) { return (kK / 4) * (warp % 4); }
  static __device__ __forceinline__ int n0(int warp) { return (kV / 2) * (warp / 4); }

  // acc = S (a [K, V] row-major float32 matrix with rows ld apart: a column slice of a wider one when
  // ld > kV), or zeros when S is nullptr.
  static __device__ __forceinline__ void load(float (&acc)[MT][NT][4], const float* S, int warp, int lane,
                                              int ld = kV) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < NT; ++nj)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = m0(warp) + mi * 16 + (lane >> 2) + half * 8;
          const int col = n0(warp) + nj * 8 + 2 * (lane & 3);
          float2 x = make_float2(0.f, 0.f);
          if (S) x = *reinterpret_cast<const float2*>(S + row * ld + col);
          acc[mi][nj][2 * half] = x.x;
          acc[mi][nj][2 * half + 1] = x.y;
        }
  }
  static __device__ __forceinline__ void store(float* S, const float (&acc)[MT][NT][4], int warp, int lane,
                                               int ld = kV) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < NT; ++nj)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = m0(warp) + mi * 16 + (lane >> 2) + half * 8;
          const int col = n0(warp) + nj * 8 + 2 * (lane & 3);
          *reinterpret_cast<float2*>(S + row * ld + col) =
              make_float2(acc[mi][nj][2 * half], acc[mi][nj][2 * half + 1]);
        }
  }
  // The state as 16-bit pairs in the register order, [pair][thread] (coalesced): a copy only this layout
  // reads back (dot_packed), K * V / 2 words.
  static constexpr int kPairs = MT * NT * 2;
  template <typename T>
  static __device__ __forceinline__ void store_packed(uint32_t* dst, const float (&acc)[MT][NT][4], int tid) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < NT; ++nj)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          dst[((mi * NT + nj) * 2 + half) * kThreads + tid] =
              MmaType<T>::pack(acc[mi][nj][2 * half], acc[mi][nj][2 * half + 1]);
  }
  // This thread's share of sum(S * acc), S written by store_packed.
  template <typename T>
  static __device__ __forceinline__ float dot_packed(const uint32_t* src, const float (&acc)[MT][NT][4],
                                                     int tid) {
    float s = 0.f;
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < NT; ++nj)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float2 x = unpack2<T>(src[((mi * NT + nj) * 2 + half) * kThreads + tid]);
          s += x.x * acc[mi][nj][2 * half] + x.y * acc[mi][nj][2 * half + 1];
        }
    return s;
  }
  static __device__ __forceinline__ void scale(float (&acc)[MT][NT][4], float s) {
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < NT; ++nj)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mi][nj][e] *= s;
  }
};

// ---------------------------------------------------------------- chunk loads and gates
// Issues the cp.async copies of one C-row chunk (rows t0 .. t0 + C of a [B, T, H, D] tensor at head h)
// into a swizzled [C][D] tile; rows past T are zero-filled.
template <int kD, typename T>
__device__ __forceinline__ void load_chunk(uint32_t s, const T* x, int b, int t0, int h, int T_, int H,
                                           int tid) {
  const T* base = x + ((static_cast<int64_t>(b) * T_ + t0) * H + h) * kD;
  load_tile<kC, kD, kThreads, T>(s, base, static_cast<int64_t>(H) * kD, T_ - t0, tid);
}

// Issues the 4-byte copies of the chunk's gates g[b, t0 + i, h] (zero past T: a padded step keeps the
// state). Threads 0 .. C-1 take part.
__device__ __forceinline__ void load_gates(float* s, const float* g, int b, int t0, int h, int T_, int H,
                                           int tid) {
  if (tid < kC) {
    const bool ok = t0 + tid < T_;
    const float* src = ok ? g + (static_cast<int64_t>(b) * T_ + t0 + tid) * H + h : g;
    cp_async_4(smem_u32(s + tid), src, ok);
  }
}

// G[i] = g[0] + ... + g[i] for C = 64 values, by one warp (G may be g); the warp's lanes see G after
// its __syncwarp, other warps after a block sync.
__device__ __forceinline__ void gate_cumsum_warp(const float* g, float* G, int lane) {
  const float a = g[2 * lane], b = g[2 * lane + 1];
  float s = a + b;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, s, off);
    if (lane >= off) s += y;
  }
  const float before = s - (a + b);
  G[2 * lane] = before + a;
  G[2 * lane + 1] = s;
  __syncwarp();
}

// The same in place, by warp 0; the caller syncs afterwards.
__device__ __forceinline__ void gate_cumsum(float* G, int warp, int lane) {
  if (warp == 0) gate_cumsum_warp(G, G, lane);
}

// dst[r][:] = src[r][:] * w(r) for a swizzled [C][kD] tile (dst may be src); all kN threads of the block.
template <int kD, typename T, int kN = kThreads, typename W>
__device__ __forceinline__ void scale_tile_rows(unsigned char* dst, const unsigned char* src, int tid,
                                                W&& w) {
  constexpr int kChunksPerRow = kD / 8;
  static_assert(kC * kChunksPerRow % kN == 0, "tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kC * kChunksPerRow / kN; ++i) {
    const int c = tid + i * kN;
    const int row = c / kChunksPerRow, ch = c % kChunksPerRow;
    const uint32_t off = swz<kD>(row, ch);
    uint4 x = *reinterpret_cast<const uint4*>(src + off);
    const float f = w(row);
    uint32_t* u = reinterpret_cast<uint32_t*>(&x);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 y = unpack2<T>(u[j]);
      u[j] = MmaType<T>::pack(y.x * f, y.y * f);
    }
    *reinterpret_cast<uint4*>(dst + off) = x;
  }
}

// Scores of a C x C tile held as accumulators (rows m0.., columns n0.., one 16-row tile): keeps entry
// (r, c) where `keep(r, c)` and multiplies it by f(r, c); zero elsewhere.
template <int NT, typename Keep, typename F>
__device__ __forceinline__ void mask_scores(float (&acc)[1][NT][4], int m0, int n0, int lane, Keep&& keep,
                                            F&& f) {
#pragma unroll
  for (int nj = 0; nj < NT; ++nj)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = m0 + (lane >> 2) + (e >= 2 ? 8 : 0);
      const int c = n0 + nj * 8 + 2 * (lane & 3) + (e & 1);
      acc[0][nj][e] = keep(r, c) ? acc[0][nj][e] * f(r, c) : 0.f;
    }
}

// One warp's 16 x 32 piece (rows 16 (warp % 4), columns 32 (warp / 4)) of a C x C tile of decayed causal
// scores, stored 16-bit into the swizzled [C][C] tile `out`: entry (r, c) = scale (a_r . b_c) times
// exp(G_r - G_c) for c <= r, or with kUpper exp(G_c - G_r) for c >= r (the transposed mask of the reverse
// walks); zero elsewhere. a, b: swizzled [C][kD] tiles; G: the in-chunk cumulative gates (unused without).
template <int kD, typename T, bool kGated, bool kUpper>
__device__ __forceinline__ void decayed_scores(unsigned char* out, uint32_t sa, uint32_t sb, const float* G,
                                               float scale, int warp, int lane) {
  const int m0 = 16 * (warp % 4), n0 = 32 * (warp / 4);
  float A[1][4][4];
  zero_acc(A);
  warp_mma<1, 4, kD / 16, false, false, kD, kD, T>(A, sa, m0, 0, sb, 0, n0, lane);
  mask_scores(
      A, m0, n0, lane, [](int r, int c) { return kUpper ? c >= r : c <= r; },
      [&](int r, int c) { return kGated ? scale * __expf(kUpper ? G[c] - G[r] : G[r] - G[c]) : scale; });
  store_acc_smem<kC, T>(out, A, m0, n0, lane);
}

// The scan over segments of the chunk kernels' state (or state gradient), for one thread's 4 consecutive
// float32 entries at `base` in segment 0 (segment s at base + s * seg_stride): walking the segments in order
// (backwards when kReverse), each slot receives the carry entering it and the carry becomes decay(s) * carry
// + the slot's old content (the segment's own contribution); the walk's last segment only receives (its
// contribution is never needed). The contributions are read kBatch segments ahead of their use: read one by
// one, each behind the previous store, the walk ran at one DRAM latency per segment (run l's ncu: 75 us for
// 16 segments, a fifth of linear attention's forward). n_seg >= 1.
template <bool kReverse, typename Decay>
__device__ __forceinline__ void segment_scan(float* base, int64_t seg_stride, int n_seg, float4 carry,
                                             Decay&& decay) {
  constexpr int kBatch = 8;
  auto seg = [&](int s) { return kReverse ? n_seg - 1 - s : s; };  // the s-th segment walked
  auto slot = [&](int s) {
    return reinterpret_cast<float4*>(base + static_cast<int64_t>(seg(s)) * seg_stride);
  };
  const int n = n_seg - 1;  // slots whose contribution is folded in
  for (int s0 = 0; s0 < n; s0 += kBatch) {
    float4 loc[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (s0 + j < n) loc[j] = *slot(s0 + j);
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int s = s0 + j;
      if (s >= n) break;
      *slot(s) = carry;
      const float d = decay(seg(s));
      carry = make_float4(d * carry.x + loc[j].x, d * carry.y + loc[j].y, d * carry.z + loc[j].z,
                          d * carry.w + loc[j].w);
    }
  }
  *slot(n) = carry;
}

// Host: launches kernel(p) with kThreads threads and `smem` bytes of dynamic shared memory on p.stream (the
// limit raised past the 48 KB default first); returns the first CUDA error. Every chunk kernel family
// (linear_chunk, gla_chunk, delta_chunk, delta_wy) launches through it.
template <typename Kernel, typename Params>
cudaError_t launch_kernel(Kernel* kernel, dim3 grid, int smem, const Params& p, int threads = kThreads) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  // The whole unified L1 / shared memory as shared: the kernels stage through cp.async (L2 only), and the
  // ones of one chunk per block run several blocks per SM (their launch bounds), which the driver's own
  // carveout choice did not leave room for (ncu: delta_wy's forward at two blocks, not three).
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared);
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, smem, p.stream>>>(p);
  return cudaGetLastError();
}

// Dispatch over (dtype, head dim) on the host: body is a lambda returning cudaError_t, with T the CUDA
// element type and kD the head dim (K = V).
#define LINEAR_CHUNK_SWITCH(P, T, kD, ...)                                         \
  [&]() -> cudaError_t {                                                           \
    auto with_dim = [&](auto tag) -> cudaError_t {                                 \
      using T = typename decltype(tag)::type;                                      \
      if ((P).K == 64) {                                                           \
        static constexpr int kD = 64;                                              \
        return __VA_ARGS__();                                                      \
      }                                                                            \
      if ((P).K == 128) {                                                          \
        static constexpr int kD = 128;                                             \
        return __VA_ARGS__();                                                      \
      }                                                                            \
      return cudaErrorInvalidValue;                                                \
    };                                                                             \
    if ((P).dtype == ::attnlab::kernels::LinearDtype::kBF16)                       \
      return with_dim(::attnlab::kernels::linear_chunk::TypeTag<__nv_bfloat16>{}); \
    if ((P).dtype == ::attnlab::kernels::LinearDtype::kFP16)                       \
      return with_dim(::attnlab::kernels::linear_chunk::TypeTag<__half>{});        \
    return cudaErrorInvalidValue;                                                  \
  }()

template <typename T>
struct TypeTag {
  using type = T;
};

}  // namespace attnlab::kernels::linear_chunk
