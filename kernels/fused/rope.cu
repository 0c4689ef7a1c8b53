// Rotary embedding (rotate-half layout) forward and backward: kernel, launcher and parameter checks
// (see params.h).
//
// Design. Bound by memory: each element is read and written once. Grid (T, row slices, tensors): a block
// owns one token t of one tensor (q or k) and a slice of its B * H (batch, head) rows. It first puts the
// token's cos / sin of the R/2 frequencies in shared memory (R/2 powf + sincosf per block, shared by the
// slice's rows instead of recomputed per element), then its threads walk the slice's items: a rotary item
// is kWidth channels i .. i+kWidth-1 of the first half with their partners i+R/2 (two 16-byte loads and
// stores), a pass-through item kWidth channels >= R (copied). Consecutive threads take consecutive items of
// a row, so a warp reads whole rows.
//
// Rounding. The angle (float(pos) * inv_freq, inv_freq = powf(theta, -2i * (1/R))) and the products are
// formed as libtorch's CUDA kernels form them for layers.cpp's reference (one multiply by the reciprocal
// for "/ R", powf, sincosf, then x1*cos and x2*sin rounded separately before the add: no FMA), so the
// float32 results agree to the last bit or so.
#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/fused/fused_common.cuh"
#include "kernels/fused/params.h"

namespace attnlab::kernels {
namespace fused {
namespace {

// 128 threads: 4 warps, several blocks per SM; the table is built by R/2 of them.
constexpr int kThreads = 128;
// Items each thread takes in a block (rows a block = kThreads * kItems / items a row): enough work per
// block to amortise the table (for D = R = 64 bf16, 128 rows: all heads of a token when B * H = 128).
constexpr int kItems = 4;

template <typename T, int kWidth>
__global__ void __launch_bounds__(kThreads) rope_kernel(const RopeParams p, int rows_per_block) {
  extern __shared__ float table[];  // [R]: cos of the R/2 angles, then sin (negated for the inverse)
  // Select rather than index: a runtime index into the parameter array would copy it to local memory.
  const RopeTensor s = blockIdx.z == 0 ? p.tensors[0] : p.tensors[1];
  const int t = blockIdx.x, half = p.R / 2;
  const float pos = static_cast<float>(p.positions[t]);
  const float inv_r = 1.f / static_cast<float>(p.R);
  for (int i = threadIdx.x; i < half; i += kThreads) {
    const float inv_freq = powf(p.theta, static_cast<float>(-2 * i) * inv_r);
    float sn, cs;
    sincosf(pos * inv_freq, &sn, &cs);
    table[i] = cs;
    table[half + i] = p.inverse ? -sn : sn;
  }
  __syncthreads();

  const int pairs = half / kWidth, per_row = pairs + (p.D - p.R) / kWidth;
  const int64_t nrows = static_cast<int64_t>(p.B) * s.H;
  for (int64_t r0 = int64_t(blockIdx.y) * rows_per_block; r0 < nrows;
       r0 += int64_t(gridDim.y) * rows_per_block) {
    const int items = static_cast<int>(nrows - r0 < rows_per_block ? nrows - r0 : rows_per_block) * per_row;
    for (int it = threadIdx.x; it < items; it += kThreads) {
      const int r = static_cast<int>(r0) + it / per_row, c = it % per_row;
      const int b = r / s.H, h = r % s.H;
      const T* x =
          static_cast<const T*>(s.x) + b * s.x_batch_stride + t * s.x_row_stride + h * s.x_head_stride;
      T* o = static_cast<T*>(s.out) + b * s.out_batch_stride + t * s.out_row_stride + h * s.out_head_stride;
      if (c < pairs) {
        const int i = c * kWidth;
        const Pack<T, kWidth> a = load_pack<T, kWidth>(x + i), z = load_pack<T, kWidth>(x + half + i);
        Pack<T, kWidth> oa, oz;
#pragma unroll
        for (int k = 0; k < kWidth; ++k) {
          const float x1 = to_float(a.e[k]), x2 = to_float(z.e[k]);
          const float cs = table[i + k], sn = table[half + i + k];
          oa.e[k] = from_float<T>(__fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn)));
          oz.e[k] = from_float<T>(__fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn)));
        }
        store_pack<T, kWidth>(o + i, oa);
        store_pack<T, kWidth>(o + half + i, oz);
      } else {
        const int i = p.R + (c - pairs) * kWidth;
        store_pack<T, kWidth>(o + i, load_pack<T, kWidth>(x + i));
      }
    }
  }
}

// The 16-byte path: R/2 and D multiples of the pack (so both halves and the pass-through start on a pack),
// every stride a multiple of it and every pointer 16-byte aligned.
template <typename T>
bool vector_ok(const RopeParams& p) {
  constexpr int W = pack_width<T>();
  if ((p.R / 2) % W != 0 || p.D % W != 0) return false;
  for (int n = 0; n < p.num_tensors; ++n) {
    const RopeTensor& s = p.tensors[n];
    if (!aligned16(s.x) || !aligned16(s.out)) return false;
    for (int64_t st : {s.x_batch_stride, s.x_row_stride, s.x_head_stride, s.out_batch_stride,
                       s.out_row_stride, s.out_head_stride})
      if (st % W != 0) return false;
  }
  return true;
}

template <typename T, int kWidth>
cudaError_t run(const RopeParams& p) {
  const int per_row = p.R / 2 / kWidth + (p.D - p.R) / kWidth;
  const int rows_per_block = std::max(1, kThreads * kItems / per_row);
  int64_t rows = 0;
  for (int n = 0; n < p.num_tensors; ++n) rows = std::max(rows, int64_t(p.B) * p.tensors[n].H);
  // Row slices beyond the grid's y limit are taken by the kernel's slice loop.
  const int64_t slices = std::min<int64_t>((rows + rows_per_block - 1) / rows_per_block, 65535);
  const dim3 grid(unsigned(p.T), unsigned(slices), unsigned(p.num_tensors));
  rope_kernel<T, kWidth>
      <<<grid, kThreads, size_t(p.R) * sizeof(float), static_cast<cudaStream_t>(p.stream)>>>(p,
                                                                                             rows_per_block);
  return cudaGetLastError();
}

}  // namespace
}  // namespace fused

const char* rope_check(const RopeParams& p) {
  if (p.dtype != FusedDtype::kFloat32 && p.dtype != FusedDtype::kBF16 && p.dtype != FusedDtype::kFP16)
    return "rope: dtype must be float32, bf16 or fp16";
  if (p.num_tensors != 1 && p.num_tensors != 2) return "rope: num_tensors must be 1 or 2";
  if (p.B < 0 || p.T < 0) return "rope: B and T must be >= 0";
  if (p.D < 2 || p.D > kRopeMaxD) return "rope: head dim D must be in 2 .. 8192";
  if (p.R < 2 || p.R > p.D || p.R % 2 != 0) return "rope: rotary dim R must be even and in 2 .. D";
  if (!(p.theta > 0.f) || !std::isfinite(p.theta)) return "rope: theta must be finite and > 0";
  if (p.T > 0 && !p.positions) return "rope: positions must be set";
  for (int n = 0; n < p.num_tensors; ++n) {
    const RopeTensor& s = p.tensors[n];
    if (!s.x || !s.out) return "rope: every tensor's x and out must be set";
    if (s.H < 1) return "rope: every tensor's H must be >= 1";
    if (int64_t(p.B) * s.H > INT_MAX) return "rope: B * H must fit in int";
  }
  return nullptr;
}

cudaError_t launch_rope(const RopeParams& p) {
  if (rope_check(p) != nullptr) return cudaErrorInvalidValue;
  if (p.B == 0 || p.T == 0) return cudaSuccess;  // nothing to rotate (an empty grid is a launch error)
  return FUSED_DTYPE_SWITCH(p.dtype, T, [&] {
    return fused::vector_ok<T>(p) ? fused::run<T, fused::pack_width<T>()>(p) : fused::run<T, 1>(p);
  });
}

}  // namespace attnlab::kernels
