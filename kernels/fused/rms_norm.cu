// RMSNorm forward and backward: kernels, launchers and parameter checks (see params.h).
//
// Design. Both passes are bound by memory: the forward reads x once and writes y, the backward reads x and
// dy once and writes dx. A team of kTeam threads owns a row; thread `lane` of the team holds packs
// lane, lane + kTeam, ... (kCache of them, 16 bytes each) in registers, so a warp's accesses are coalesced
// and the second step (normalise, or form dx) needs no second read. Rows longer than kTeam * kCache packs
// re-read the rest from L2 (only with one team per block; see rms_team). The row sums go through warp
// shuffles, then shared memory across the warps of a team, always in the same order.
//
// dw = sum_r dy_r * xhat_r without float atomics: each thread accumulates its columns over the rows its team
// visits (team g of the grid takes rows g, g + teams, ...), the teams of a block add theirs in team order in
// shared memory, the block writes one row of partials, and rms_norm_dw_kernel adds the rows in order. The
// grid depends only on (rows, N, dtype, alignment, device), so reruns give identical bits.
#include <algorithm>
#include <atomic>
#include <climits>
#include <type_traits>

#include "kernels/fused/fused_common.cuh"
#include "kernels/fused/params.h"

namespace attnlab::kernels {
namespace fused {
namespace {

// Packs of a row each thread holds in registers. Two: the backward keeps x, dy (packed) and dw (float32)
// for them, ~80 registers at bf16; four packs took ~155 (one 256-thread block per SM) or spilled.
constexpr int kCache = 2;

// Threads per row, by packs per row (N / 8 for 16-bit, N / 4 for float32 on the vector path; N on the
// scalar path): the smallest team that covers the row in kCache packs a thread, from a warp (bf16
// N <= 512, the model width: shuffles only, 8 rows a 256-thread block) to 512 threads (bf16 N <= 8192,
// float32 N <= 4096; longer rows re-read the packs past the cache from L2).
constexpr int rms_team(int npacks) {
  for (int team = 32; team < 512; team *= 2)
    if (npacks <= team * kCache) return team;
  return 512;
}
// 256 threads a block (several rows a block for small teams), 512 for the largest team.
constexpr int rms_block(int team) {
  return team < 256 ? 256 : team;
}

// rms_norm_dw_kernel: 32 columns (one 128-byte row segment a warp) x 16 slices of the partial rows.
constexpr int kDwCols = 32;
constexpr int kDwSlices = 16;

// Sum of v over the threads of a team; every thread of the team gets it. Called by all threads of the block
// the same number of times (teams of > 32 threads use __syncthreads).
template <int kTeam>
__device__ __forceinline__ float team_sum(float v, float* red) {
  v = warp_sum(v);
  if constexpr (kTeam > 32) {
    constexpr int kWarps = kTeam / 32;
    const int warp = threadIdx.x / 32, first = warp / kWarps * kWarps;
    if (threadIdx.x % 32 == 0) red[warp] = v;
    __syncthreads();
    v = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[first + w];
    __syncthreads();  // red is rewritten by the next call
  }
  return v;
}

template <typename T, int kWidth>
__device__ __forceinline__ float sum_sq(const Pack<T, kWidth>& v, float acc) {
#pragma unroll
  for (int k = 0; k < kWidth; ++k) {
    const float f = to_float(v.e[k]);
    acc += f * f;
  }
  return acc;
}

// y = x * rstd * w for one pack (in the order of layers.cpp: (x * rstd) * w).
template <typename T, int kWidth>
__device__ __forceinline__ void normalise(const Pack<T, kWidth>& x, float rstd, const float* w, T* y) {
  float wv[kWidth];
  load_f32<kWidth>(w, wv);
  Pack<T, kWidth> o;
#pragma unroll
  for (int k = 0; k < kWidth; ++k) o.e[k] = from_float<T>(to_float(x.e[k]) * rstd * wv[k]);
  store_pack<T, kWidth>(y, o);
}

template <typename T, int kWidth, int kTeam, int kBlock>
__global__ void __launch_bounds__(kBlock) rms_norm_fwd_kernel(const RmsNormParams p) {
  constexpr int kTeams = kBlock / kTeam;
  using P = Pack<T, kWidth>;
  __shared__ float red[kBlock / 32];
  const int team = threadIdx.x / kTeam, lane = threadIdx.x % kTeam;
  const int npacks = p.N / kWidth;
  const float inv_n = 1.f / static_cast<float>(p.N);
  const int64_t groups = (p.rows + kTeams - 1) / kTeams;
  // The loop bound is the same for the whole block, so every thread meets team_sum's barriers.
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t row = g * kTeams + team;
    const bool valid = row < p.rows;
    const T* x = static_cast<const T*>(p.x) + (valid ? row : 0) * p.x_row_stride;
    P cache[kCache];
    float ss = 0.f;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int v = lane + c * kTeam;
      if (valid && v < npacks) {
        cache[c] = load_pack<T, kWidth>(x + v * kWidth);
        ss = sum_sq(cache[c], ss);
      }
    }
#pragma unroll 1
    for (int v = lane + kCache * kTeam; valid && v < npacks; v += kTeam)
      ss = sum_sq(load_pack<T, kWidth>(x + v * kWidth), ss);
    ss = team_sum<kTeam>(ss, red);
    if (!valid) continue;
    const float rstd = rsqrtf(ss * inv_n + p.eps);
    if (lane == 0 && p.rstd != nullptr) p.rstd[row] = rstd;
    T* y = static_cast<T*>(p.y) + row * p.y_row_stride;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int v = lane + c * kTeam;
      if (v < npacks) normalise<T, kWidth>(cache[c], rstd, p.weight + v * kWidth, y + v * kWidth);
    }
#pragma unroll 1
    for (int v = lane + kCache * kTeam; v < npacks; v += kTeam)
      normalise<T, kWidth>(load_pack<T, kWidth>(x + v * kWidth), rstd, p.weight + v * kWidth, y + v * kWidth);
  }
}

// sum_k w_k dy_k x_k over one pack (the row sum of w dy xhat, before the factor rstd).
template <typename T, int kWidth>
__device__ __forceinline__ float dot_wgx(const Pack<T, kWidth>& x, const Pack<T, kWidth>& g, const float* w,
                                         float acc) {
  float wv[kWidth];
  load_f32<kWidth>(w, wv);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) acc += wv[k] * to_float(g.e[k]) * to_float(x.e[k]);
  return acc;
}

// dx = rstd (w dy - xhat m) for one pack, m = mean(w dy xhat); adds dy xhat to dw.
template <typename T, int kWidth>
__device__ __forceinline__ void grad_x(const Pack<T, kWidth>& x, const Pack<T, kWidth>& g, const float* w,
                                       float rstd, float m, T* dx, float (&dw)[kWidth]) {
  float wv[kWidth];
  load_f32<kWidth>(w, wv);
  Pack<T, kWidth> o;
#pragma unroll
  for (int k = 0; k < kWidth; ++k) {
    const float xh = to_float(x.e[k]) * rstd, gk = to_float(g.e[k]);
    o.e[k] = from_float<T>(rstd * (wv[k] * gk - xh * m));
    dw[k] += gk * xh;
  }
  store_pack<T, kWidth>(dx, o);
}

template <typename T, int kWidth, int kTeam, int kBlock>
__global__ void __launch_bounds__(kBlock) rms_norm_bwd_kernel(const RmsNormParams p) {
  constexpr int kTeams = kBlock / kTeam;
  // Packs past the register cache exist only with one team per block (rms_team); their dw accumulates
  // in this block's row of partials directly: each column belongs to one thread, so no races.
  constexpr bool kSpill = kTeams == 1;
  using P = Pack<T, kWidth>;
  extern __shared__ float dw_team[];  // [kTeams, N] when kTeams > 1: each team's dw, summed in team order
  __shared__ float red[kBlock / 32];
  const int team = threadIdx.x / kTeam, lane = threadIdx.x % kTeam;
  const int N = p.N, npacks = N / kWidth;
  const float inv_n = 1.f / static_cast<float>(N);
  float* part = p.workspace + static_cast<int64_t>(blockIdx.x) * N;  // [N] this block's dw partial
  float acc[kCache][kWidth];
#pragma unroll
  for (int c = 0; c < kCache; ++c)
#pragma unroll
    for (int k = 0; k < kWidth; ++k) acc[c][k] = 0.f;
  if constexpr (kSpill)
    for (int v = lane + kCache * kTeam; v < npacks; v += kTeam)
      for (int k = 0; k < kWidth; ++k) part[v * kWidth + k] = 0.f;

  const int64_t groups = (p.rows + kTeams - 1) / kTeams;
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t row = g * kTeams + team;
    const bool valid = row < p.rows;
    const int64_t r = valid ? row : 0;
    const T* x = static_cast<const T*>(p.x) + r * p.x_row_stride;
    const T* dy = static_cast<const T*>(p.dy) + r * p.dy_row_stride;
    P xc[kCache], gc[kCache];
    float dot = 0.f;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int v = lane + c * kTeam;
      if (valid && v < npacks) {
        xc[c] = load_pack<T, kWidth>(x + v * kWidth);
        gc[c] = load_pack<T, kWidth>(dy + v * kWidth);
        dot = dot_wgx(xc[c], gc[c], p.weight + v * kWidth, dot);
      }
    }
    if constexpr (kSpill)
#pragma unroll 1
      for (int v = lane + kCache * kTeam; valid && v < npacks; v += kTeam)
        dot = dot_wgx(load_pack<T, kWidth>(x + v * kWidth), load_pack<T, kWidth>(dy + v * kWidth),
                      p.weight + v * kWidth, dot);
    dot = team_sum<kTeam>(dot, red);
    if (!valid) continue;
    const float rstd = p.rstd[row];
    const float m = dot * rstd * inv_n;  // mean_j(w_j dy_j xhat_j)
    T* dx = static_cast<T*>(p.dx) + row * p.dx_row_stride;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int v = lane + c * kTeam;
      if (v < npacks) grad_x(xc[c], gc[c], p.weight + v * kWidth, rstd, m, dx + v * kWidth, acc[c]);
    }
    if constexpr (kSpill)
#pragma unroll 1
      for (int v = lane + kCache * kTeam; v < npacks; v += kTeam) {
        float d[kWidth];
        for (int k = 0; k < kWidth; ++k) d[k] = part[v * kWidth + k];
        grad_x(load_pack<T, kWidth>(x + v * kWidth), load_pack<T, kWidth>(dy + v * kWidth),
               p.weight + v * kWidth, rstd, m, dx + v * kWidth, d);
        for (int k = 0; k < kWidth; ++k) part[v * kWidth + k] = d[k];
      }
  }

  if constexpr (kTeams == 1) {
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int v = lane + c * kTeam;
      if (v < npacks)
#pragma unroll
        for (int k = 0; k < kWidth; ++k) part[v * kWidth + k] = acc[c][k];
    }
  } else {
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int v = lane + c * kTeam;
      if (v < npacks)
#pragma unroll
        for (int k = 0; k < kWidth; ++k) dw_team[team * N + v * kWidth + k] = acc[c][k];
    }
    __syncthreads();
    for (int j = threadIdx.x; j < N; j += kBlock) {
      float s = 0.f;
#pragma unroll
      for (int t = 0; t < kTeams; ++t) s += dw_team[t * N + j];
      part[j] = s;
    }
  }
}

// dw[j] = sum over the partial rows (ws [partials, N]), in a fixed order: slice s adds rows s, s + 16, ...;
// the 16 slice sums are added in slice order.
__global__ void __launch_bounds__(kDwCols* kDwSlices)
    rms_norm_dw_kernel(const float* __restrict__ ws, int64_t partials, int N, float* __restrict__ dw) {
  __shared__ float s[kDwSlices][kDwCols + 1];
  const int col = blockIdx.x * kDwCols + threadIdx.x;
  float acc = 0.f;
  if (col < N) {
#pragma unroll 4
    for (int64_t r = threadIdx.y; r < partials; r += kDwSlices) acc += ws[r * N + col];
  }
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < kDwSlices; ++k) t += s[k][threadIdx.x];
    dw[col] = t;
  }
}

// The 16-byte path needs every row start 16-byte aligned: aligned pointers, N and the row strides multiples
// of the pack; the weight is read as float4.
template <typename T>
bool vector_ok(const RmsNormParams& p, bool backward) {
  constexpr int W = pack_width<T>();
  bool ok = p.N % W == 0 && aligned16(p.x) && aligned16(p.weight) && p.x_row_stride % W == 0;
  if (backward)
    ok = ok && aligned16(p.dy) && aligned16(p.dx) && p.dy_row_stride % W == 0 && p.dx_row_stride % W == 0;
  else
    ok = ok && aligned16(p.y) && p.y_row_stride % W == 0;
  return ok;
}

template <int V>
using IntC = std::integral_constant<int, V>;

// Calls f(T{}, IntC<kWidth>{}, IntC<kTeam>{}) with the instantiation that handles p.
template <typename F>
cudaError_t visit(const RmsNormParams& p, bool backward, F&& f) {
  return FUSED_DTYPE_SWITCH(p.dtype, T, [&] {
    constexpr int W = pack_width<T>();
    const bool vec = vector_ok<T>(p, backward);
    const int team = rms_team(vec ? p.N / W : p.N);
    auto with_team = [&](auto width) -> cudaError_t {
      switch (team) {
        case 32:
          return f(T{}, width, IntC<32>{});
        case 64:
          return f(T{}, width, IntC<64>{});
        case 128:
          return f(T{}, width, IntC<128>{});
        case 256:
          return f(T{}, width, IntC<256>{});
        default:
          return f(T{}, width, IntC<512>{});
      }
    };
    return vec ? with_team(IntC<W>{}) : with_team(IntC<1>{});
  });
}

constexpr int kMaxDevices = 64;

// The backward's grid: as many blocks as are resident at once on the current device (queried once per
// device), so that all run in one wave with no tail, each taking ~rows / grid rows; fewer when there are
// fewer row groups. The occupancy is taken at the most shared memory the instantiation can use, so it
// does not depend on N. Deterministic per (rows, N, dtype, alignment, device).
template <typename T, int kWidth, int kTeam>
cudaError_t bwd_grid(int64_t rows, int64_t& blocks) {
  constexpr int kBlock = rms_block(kTeam), kTeams = kBlock / kTeam;
  constexpr size_t kSmem = kTeams > 1 ? size_t(kBlock) * kCache * kWidth * sizeof(float) : 0;
  static std::atomic<int> cached[kMaxDevices] = {};  // resident blocks per device; 0 = not yet queried
  int dev = 0;
  if (cudaError_t err = cudaGetDevice(&dev); err != cudaSuccess) return err;
  int resident = dev < kMaxDevices ? cached[dev].load(std::memory_order_relaxed) : 0;
  if (resident == 0) {
    int per_sm = 0, sms = 0;
    cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, rms_norm_bwd_kernel<T, kWidth, kTeam, kBlock>, kBlock, kSmem);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err != cudaSuccess) return err;
    resident = std::max(1, per_sm) * std::max(1, sms);
    if (dev < kMaxDevices) cached[dev].store(resident, std::memory_order_relaxed);
  }
  const int64_t groups = (rows + kTeams - 1) / kTeams;
  blocks = std::min<int64_t>(groups, resident);
  return cudaSuccess;
}

template <typename T, int kWidth, int kTeam>
cudaError_t run_fwd(const RmsNormParams& p) {
  constexpr int kBlock = rms_block(kTeam), kTeams = kBlock / kTeam;
  const int64_t blocks = std::min<int64_t>((p.rows + kTeams - 1) / kTeams, INT_MAX);
  if (blocks > 0)
    rms_norm_fwd_kernel<T, kWidth, kTeam, kBlock>
        <<<unsigned(blocks), kBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  return cudaGetLastError();
}

template <typename T, int kWidth, int kTeam>
cudaError_t run_bwd(const RmsNormParams& p) {
  constexpr int kBlock = rms_block(kTeam), kTeams = kBlock / kTeam;
  auto stream = static_cast<cudaStream_t>(p.stream);
  int64_t blocks = 0;
  if (cudaError_t err = bwd_grid<T, kWidth, kTeam>(p.rows, blocks); err != cudaSuccess) return err;
  const size_t smem = kTeams > 1 ? size_t(kTeams) * p.N * sizeof(float) : 0;
  if (blocks > 0)
    rms_norm_bwd_kernel<T, kWidth, kTeam, kBlock><<<unsigned(blocks), kBlock, smem, stream>>>(p);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  // With rows == 0 there are no partials and dw is written as zeros.
  rms_norm_dw_kernel<<<unsigned((p.N + kDwCols - 1) / kDwCols), dim3(kDwCols, kDwSlices), 0, stream>>>(
      p.workspace, blocks, p.N, p.dweight);
  return cudaGetLastError();
}

}  // namespace
}  // namespace fused

const char* rms_norm_check(const RmsNormParams& p, bool backward) {
  if (p.dtype != FusedDtype::kFloat32 && p.dtype != FusedDtype::kBF16 && p.dtype != FusedDtype::kFP16)
    return "rms_norm: dtype must be float32, bf16 or fp16";
  if (p.N < 1 || p.N > kRmsNormMaxN) return "rms_norm: N must be in 1 .. 65536";
  if (p.rows < 0) return "rms_norm: rows must be >= 0";
  if (!(p.eps >= 0.f) || p.eps > 1e30f) return "rms_norm: eps must be finite and >= 0";
  if (!p.x || !p.weight) return "rms_norm: x and weight must be set";
  if (p.x_row_stride < 0) return "rms_norm: the row stride of x must be >= 0";
  if (!backward) {
    if (!p.y) return "rms_norm: y must be set";
    if (p.y_row_stride < p.N) return "rms_norm: the row stride of y must be >= N (rows must not overlap)";
    return nullptr;
  }
  if (!p.rstd || !p.dy || !p.dx || !p.dweight) return "rms_norm: rstd, dy, dx and dweight must be set";
  if (!p.workspace && p.rows > 0) return "rms_norm: the dw workspace must be set";
  if (p.dy_row_stride < 0) return "rms_norm: the row stride of dy must be >= 0";
  if (p.dx_row_stride < p.N) return "rms_norm: the row stride of dx must be >= N (rows must not overlap)";
  return nullptr;
}

cudaError_t launch_rms_norm_fwd(const RmsNormParams& p) {
  if (rms_norm_check(p, /*backward=*/false) != nullptr) return cudaErrorInvalidValue;
  return fused::visit(p, /*backward=*/false, [&](auto t, auto width, auto team) {
    return fused::run_fwd<decltype(t), decltype(width)::value, decltype(team)::value>(p);
  });
}

cudaError_t rms_norm_bwd_partials(const RmsNormParams& p, int64_t* partials) {
  *partials = 0;
  if (p.N < 1 || p.N > kRmsNormMaxN || p.rows <= 0) return cudaSuccess;
  return fused::visit(p, /*backward=*/true, [&](auto t, auto width, auto team) {
    return fused::bwd_grid<decltype(t), decltype(width)::value, decltype(team)::value>(p.rows, *partials);
  });
}

cudaError_t launch_rms_norm_bwd(const RmsNormParams& p) {
  if (rms_norm_check(p, /*backward=*/true) != nullptr) return cudaErrorInvalidValue;
  return fused::visit(p, /*backward=*/true, [&](auto t, auto width, auto team) {
    return fused::run_bwd<decltype(t), decltype(width)::value, decltype(team)::value>(p);
  });
}

}  // namespace attnlab::kernels
