// The causal depthwise short convolution, forward and backward: kernels, launchers and checks (params.h has
// the formulas).
//
// Design. Both passes are bound by memory: the forward reads x once and writes y, the backward reads x and dy
// once (plus K - 1 halo rows per tile) and writes dx. A thread owns one pack of channels (16 bytes: 8 bf16 /
// fp16 or 4 float32 channels, or one channel when the tensors are not aligned for packs) and walks
// kShortConvRows consecutive tokens of one batch, keeping the K - 1 previous inputs (and, backward, the K - 1
// previous dz) in registers; consecutive threads take consecutive packs of a row, so a warp reads whole
// 128-byte lines. The libtorch path it replaces makes ~10 elementwise launches forward and ~15 backward
// (the shifted products, their sums for dw, the SiLU), each a full pass over [B, T, C].
#include <algorithm>

#include "kernels/fused/fused_common.cuh"
#include "kernels/fused/params.h"

namespace attnlab::kernels {
namespace fused {
namespace {

constexpr int kThreads = 256;
constexpr int kRows = kShortConvRows;

__device__ __forceinline__ float sigmoid(float z) {
  return 1.f / (1.f + __expf(-z));
}

// W channels of row `row` (pointer to its first channel of this pack) as floats.
template <typename T, int W>
__device__ __forceinline__ void load_row(const T* row, float (&out)[W]) {
  const Pack<T, W> v = load_pack<T, W>(row);
#pragma unroll
  for (int e = 0; e < W; ++e) out[e] = to_float(v.e[e]);
}
template <typename T, int W>
__device__ __forceinline__ void store_row(T* row, const float (&in)[W]) {
  Pack<T, W> v;
#pragma unroll
  for (int e = 0; e < W; ++e) v.e[e] = from_float<T>(in[e]);
  store_pack<T, W>(row, v);
}

// The thread's (batch, token tile, first channel); false past the end of the grid.
struct Slot {
  int64_t b, tile, t0;
  int c0;
};
template <int W>
__device__ __forceinline__ bool slot(const ShortConvParams& p, Slot& s) {
  const int64_t packs = p.C / W, tiles = (p.T + kRows - 1) / kRows;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= p.B * tiles * packs) return false;
  s.c0 = static_cast<int>(idx % packs) * W;
  const int64_t rest = idx / packs;
  s.tile = rest % tiles;
  s.b = rest / tiles;
  s.t0 = s.tile * kRows;
  return true;
}

template <int K, int W>
__device__ __forceinline__ void load_weights(const ShortConvParams& p, int c0, float (&w)[K][W],
                                             float (&bias)[W]) {
#pragma unroll
  for (int e = 0; e < W; ++e) {
#pragma unroll
    for (int j = 0; j < K; ++j) w[j][e] = __ldg(p.weight + static_cast<int64_t>(c0 + e) * K + j);
    bias[e] = p.bias ? __ldg(p.bias + c0 + e) : 0.f;
  }
}

// win[j] = x at token t - K + 1 + j for j < K - 1 (zero before the sequence), for the first token t = t0.
template <typename T, int K, int W>
__device__ __forceinline__ void load_halo(const T* xb, int64_t stride, int64_t t0, float (&win)[K][W]) {
#pragma unroll
  for (int j = 0; j < K - 1; ++j) {
    const int64_t t = t0 - (K - 1) + j;
    if (t >= 0) {
      load_row<T, W>(xb + t * stride, win[j]);
    } else {
#pragma unroll
      for (int e = 0; e < W; ++e) win[j][e] = 0.f;
    }
  }
}

template <int K, int W>
__device__ __forceinline__ void shift(float (&win)[K][W]) {
#pragma unroll
  for (int j = 0; j < K - 1; ++j)
#pragma unroll
    for (int e = 0; e < W; ++e) win[j][e] = win[j + 1][e];
}

template <typename T, int K, int W>
__global__ void __launch_bounds__(kThreads) short_conv_fwd_kernel(const ShortConvParams p) {
  Slot s;
  if (!slot<W>(p, s)) return;
  float w[K][W], bias[W], win[K][W];
  load_weights<K, W>(p, s.c0, w, bias);
  const T* xb = static_cast<const T*>(p.x) + s.b * p.x_batch_stride + s.c0;
  T* yb = static_cast<T*>(p.y) + s.b * p.T * p.C + s.c0;
  load_halo<T, K, W>(xb, p.x_row_stride, s.t0, win);
  const int64_t t_end = min(s.t0 + kRows, p.T);
  for (int64_t t = s.t0; t < t_end; ++t) {
    load_row<T, W>(xb + t * p.x_row_stride, win[K - 1]);
    float y[W];
#pragma unroll
    for (int e = 0; e < W; ++e) {
      float z = bias[e];
#pragma unroll
      for (int j = 0; j < K; ++j) z = fmaf(w[j][e], win[j][e], z);
      y[e] = p.silu ? z * sigmoid(z) : z;
    }
    store_row<T, W>(yb + t * p.C, y);
    shift<K, W>(win);
  }
}

// Backward grid: blocks of 8 warps x 32 lanes; lane = a pack of channels (32 packs per blockIdx.y), warp =
// one of 8 consecutive (batch, token tile) slots (blockIdx.x). The 8 warps' dw / dbias are added in shared
// memory in warp order, so the workspace holds one row of partials per block column, ceil(B * tiles / 8).
constexpr int kTileWarps = 8;

__host__ __device__ inline int64_t short_conv_partial_rows(const ShortConvParams& p) {
  return (p.B * ((p.T + kRows - 1) / kRows) + kTileWarps - 1) / kTileWarps;
}

// dz for the tokens t = t0 .. t_end + K - 2 in order (zero from T on): dx of token t - K + 1 once its K dz
// are known, and the dw / dbias partials over the tile's own tokens t0 .. t_end - 1.
template <typename T, int K, int W>
__global__ void __launch_bounds__(kThreads) short_conv_bwd_kernel(const ShortConvParams p) {
  __shared__ float red[kTileWarps][32 * W];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t packs = p.C / W, tiles = (p.T + kRows - 1) / kRows;
  const int64_t pack = static_cast<int64_t>(blockIdx.y) * 32 + lane;
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kTileWarps + warp;
  float dw[K][W], db[W];
#pragma unroll
  for (int e = 0; e < W; ++e) {
    db[e] = 0.f;
#pragma unroll
    for (int j = 0; j < K; ++j) dw[j][e] = 0.f;
  }
  if (pack < packs && g < p.B * tiles) {  // no early return: every thread takes part in the reduction
    const int64_t b = g / tiles, t0 = (g % tiles) * kRows;
    const int c0 = static_cast<int>(pack) * W;
    float w[K][W], bias[W], xw[K][W], dzw[K][W];
    load_weights<K, W>(p, c0, w, bias);
    const T* xb = static_cast<const T*>(p.x) + b * p.x_batch_stride + c0;
    const T* dyb = static_cast<const T*>(p.dy) + b * p.T * p.C + c0;
    T* dxb = static_cast<T*>(p.dx) + b * p.T * p.C + c0;
    load_halo<T, K, W>(xb, p.x_row_stride, t0, xw);
#pragma unroll
    for (int e = 0; e < W; ++e)
#pragma unroll
      for (int j = 0; j < K; ++j) dzw[j][e] = 0.f;
    const int64_t t_end = min(t0 + kRows, p.T);
    for (int64_t t = t0; t < t_end + K - 1; ++t) {
      if (t < p.T) {
        float dy[W];
        load_row<T, W>(xb + t * p.x_row_stride, xw[K - 1]);
        load_row<T, W>(dyb + t * p.C, dy);
#pragma unroll
        for (int e = 0; e < W; ++e) {
          float dz = dy[e];
          if (p.silu) {
            float z = bias[e];
#pragma unroll
            for (int j = 0; j < K; ++j) z = fmaf(w[j][e], xw[j][e], z);
            const float sg = sigmoid(z);
            dz *= sg * (1.f + z * (1.f - sg));
          }
          dzw[K - 1][e] = dz;
        }
      } else {
#pragma unroll
        for (int e = 0; e < W; ++e) dzw[K - 1][e] = 0.f;
      }
      if (t < t_end) {
#pragma unroll
        for (int e = 0; e < W; ++e) {
          db[e] += dzw[K - 1][e];
#pragma unroll
          for (int j = 0; j < K; ++j) dw[j][e] = fmaf(dzw[K - 1][e], xw[j][e], dw[j][e]);
        }
      }
      const int64_t u = t - (K - 1);
      if (u >= t0) {  // dx_u = sum_j w_j dz_{u + K - 1 - j} = sum_j w_j dzw[K - 1 - j]
        float dx[W];
#pragma unroll
        for (int e = 0; e < W; ++e) {
          float acc = 0.f;
#pragma unroll
          for (int j = 0; j < K; ++j) acc = fmaf(w[j][e], dzw[K - 1 - j][e], acc);
          dx[e] = acc;
        }
        store_row<T, W>(dxb + u * p.C, dx);
      }
      shift<K, W>(xw);
      shift<K, W>(dzw);
    }
  }
  // the block's partial row: the 8 warps added in order, one tap at a time
  const int64_t cols = static_cast<int64_t>(p.C) * (K + 1);
  float* part = p.workspace + static_cast<int64_t>(blockIdx.x) * cols;
#pragma unroll
  for (int j = 0; j <= K; ++j) {
#pragma unroll
    for (int e = 0; e < W; ++e) red[warp][lane * W + e] = j < K ? dw[j][e] : db[e];
    __syncthreads();
    for (int i = threadIdx.x; i < 32 * W; i += kThreads) {
      float acc = 0.f;
#pragma unroll
      for (int v = 0; v < kTileWarps; ++v) acc += red[v][i];
      const int64_t pk = static_cast<int64_t>(blockIdx.y) * 32 + i / W;
      if (pk < packs) part[(pk * W + i % W) * (K + 1) + j] = acc;
    }
    __syncthreads();
  }
}

// dweight / dbias = the workspace's partial rows added in order: blocks of 32 columns x 8 row slices (each
// slice strides over the rows), the slices added in order in shared memory.
__global__ void __launch_bounds__(kThreads) short_conv_dw_kernel(const ShortConvParams p) {
  __shared__ float red[kThreads / 32][32];
  const int lane = threadIdx.x % 32, slice = threadIdx.x / 32;
  const int64_t cols = static_cast<int64_t>(p.C) * (p.K + 1), rows = short_conv_partial_rows(p);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  float acc = 0.f;
  if (col < cols)
    for (int64_t r = slice; r < rows; r += kThreads / 32) acc += p.workspace[r * cols + col];
  red[slice][lane] = acc;
  __syncthreads();
  if (slice != 0 || col >= cols) return;
  float total = 0.f;
#pragma unroll
  for (int v = 0; v < kThreads / 32; ++v) total += red[v][lane];
  const int c = static_cast<int>(col / (p.K + 1)), j = static_cast<int>(col % (p.K + 1));
  if (j < p.K)
    p.dweight[static_cast<int64_t>(c) * p.K + j] = total;
  else if (p.dbias)
    p.dbias[c] = total;
}

// Channels per thread: a 16-byte pack when x, dy, y, dx and every stride allow it, else one.
template <typename T>
bool packed(const ShortConvParams& p, bool backward) {
  constexpr int W = pack_width<T>();
  bool ok = p.C % W == 0 && p.x_batch_stride % W == 0 && p.x_row_stride % W == 0 && aligned16(p.x);
  if (backward)
    ok = ok && aligned16(p.dy) && aligned16(p.dx);
  else
    ok = ok && aligned16(p.y);
  return ok;
}

template <typename T, int W, typename Kernel>
cudaError_t launch(Kernel kernel, const ShortConvParams& p) {
  const int64_t threads = p.B * ((p.T + kRows - 1) / kRows) * (p.C / W);
  const unsigned blocks = static_cast<unsigned>((threads + kThreads - 1) / kThreads);
  kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  return cudaGetLastError();
}

template <typename T, int W, typename Kernel>
cudaError_t launch_bwd(Kernel kernel, const ShortConvParams& p) {
  const int64_t packs = p.C / W;
  const dim3 grid(static_cast<unsigned>(short_conv_partial_rows(p)),
                  static_cast<unsigned>((packs + 31) / 32));
  kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  return cudaGetLastError();
}

// Runs body(std::integral_constant<int, K>) for the runtime p.K (2 .. kShortConvMaxK).
template <typename Body>
cudaError_t k_switch(int K, Body&& body) {
  switch (K) {
    case 2:
      return body(std::integral_constant<int, 2>{});
    case 3:
      return body(std::integral_constant<int, 3>{});
    case 4:
      return body(std::integral_constant<int, 4>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace fused

size_t short_conv_workspace_floats(const ShortConvParams& p) {
  return static_cast<size_t>(fused::short_conv_partial_rows(p)) * p.C * (p.K + 1);
}

const char* short_conv_check(const ShortConvParams& p, bool backward) {
  if (p.B < 1 || p.T < 1 || p.C < 1) return "short_conv: B, T and C must be >= 1";
  if (p.K < 2 || p.K > kShortConvMaxK) return "short_conv: kernel size K must be in 2 .. kShortConvMaxK (4)";
  if (p.x_row_stride < p.C || p.x_batch_stride < 0) return "short_conv: x's row stride must be >= C";
  if (!p.x || !p.weight) return "short_conv: x and weight must be set";
  if (p.dtype != FusedDtype::kFloat32 && p.dtype != FusedDtype::kBF16 && p.dtype != FusedDtype::kFP16)
    return "short_conv: dtype must be float32, bf16 or fp16";
  if (!backward && !p.y) return "short_conv: y must be set";
  if (backward) {
    if (!p.dy || !p.dx || !p.dweight || !p.workspace)
      return "short_conv: dy, dx, dweight and workspace must be set";
    if (p.bias && !p.dbias) return "short_conv: dbias must be set when bias is";
  }
  return nullptr;
}

cudaError_t launch_short_conv_fwd(const ShortConvParams& p) {
  if (short_conv_check(p, false)) return cudaErrorInvalidValue;
  return FUSED_DTYPE_SWITCH(p.dtype, T, [&] {
    return fused::k_switch(p.K, [&](auto kc) {
      constexpr int K = decltype(kc)::value;
      constexpr int W = fused::pack_width<T>();
      return fused::packed<T>(p, false) ? fused::launch<T, W>(fused::short_conv_fwd_kernel<T, K, W>, p)
                                        : fused::launch<T, 1>(fused::short_conv_fwd_kernel<T, K, 1>, p);
    });
  });
}

cudaError_t launch_short_conv_bwd(const ShortConvParams& p) {
  if (short_conv_check(p, true)) return cudaErrorInvalidValue;
  cudaError_t err = FUSED_DTYPE_SWITCH(p.dtype, T, [&] {
    return fused::k_switch(p.K, [&](auto kc) {
      constexpr int K = decltype(kc)::value;
      constexpr int W = fused::pack_width<T>();
      return fused::packed<T>(p, true) ? fused::launch_bwd<T, W>(fused::short_conv_bwd_kernel<T, K, W>, p)
                                       : fused::launch_bwd<T, 1>(fused::short_conv_bwd_kernel<T, K, 1>, p);
    });
  });
  if (err != cudaSuccess) return err;
  const int64_t cols = static_cast<int64_t>(p.C) * (p.K + 1);
  fused::short_conv_dw_kernel<<<static_cast<unsigned>((cols + 31) / 32), fused::kThreads, 0,
                                static_cast<cudaStream_t>(p.stream)>>>(p);
  return cudaGetLastError();
}

}  // namespace attnlab::kernels
