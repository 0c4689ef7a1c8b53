// The delta_wy forward kernel (params.h): per chunk, G, KD, M = (I + diag(beta) KD)^-1 and W = (M diag(beta
// e^G)) K, U = (M diag(beta)) V; plus the checks. The column scalings go into M before its hi/lo split, so
// K and V enter the tensor cores exactly as given and nothing but W and U themselves is rounded to 16 bits.
#include <string>
#include <type_traits>

#include "kernels/common/flags.cuh"
#include "kernels/delta_wy/delta_wy_common.cuh"

namespace attnlab::kernels {

std::string delta_wy_check(const DeltaWyParams& p, bool backward) {
  if (auto why = linear_grid_check(p.dtype, p.B, p.T, p.H, p.K, p.V); !why.empty()) return why;
  if (!p.k || !p.v || !p.beta) return "k, v and beta must be set";
  if (!backward && (!p.w || !p.u)) return "w and u must be set";
  if (!backward && p.g && !p.G) return "G must be set when g is";
  if (!backward && p.ready &&
      (linear_chunk_count(p.T) > 65535 || static_cast<long long>(p.B) * p.H > 2147483647))
    return "ready (the chunk-major grid) takes at most 65535 chunks and 2^31 - 1 heads, got " +
           std::to_string(linear_chunk_count(p.T)) + " chunks";
  if (backward) {
    if (!p.dw || !p.du || !p.dk || !p.dv || !p.dbeta) return "dw, du, dk, dv and dbeta must be set";
    if (p.g && !p.dg) return "dg must be set when g is";
  }
  return {};
}

namespace delta_wy {

// Shared memory of the forward (D = 128: 71 KB, three blocks per SM; D = 64: 55 KB). The hi/lo tiles of the
// scaled M reuse KD's space once the inverse is done (16 KB of its 17).
template <int kD>
struct FwdSmem {
  static constexpr int kTile = kC * kD * 2;
  static constexpr int kK = 0, kV = kTile;
  static constexpr int kKD = 2 * kTile;           // float32 [C][kF]; then M hi, M lo (16-bit [C][C])
  static constexpr int kM = kKD + kF32Tile;       // float32 [C][kF]
  static constexpr int kTmp = kM + kF32Tile;      // the inverse's scratch
  static constexpr int kBeta = kTmp + kTmpBytes;  // [C] floats
  static constexpr int kG = kBeta + kC * 4;       // [C] floats
  static constexpr int kXs = kG + kC * 4;         // [C] floats: W's column scale beta e^G (gated)
  static constexpr int kBytes = kXs + kC * 4;
  static_assert(2 * kH16Tile <= kF32Tile, "the hi/lo tiles must fit in KD's space");
};

// W or U: (Mhi + Mlo) X over the key blocks at or below each row block (M is lower triangular), stored
// 16-bit to rows < rows_valid; two row blocks per warp (paired_row_block: five key blocks each, where one
// row block of half the columns per warp gave warps 3 and 7 four and warps 0 and 4 one).
template <int kD, typename T>
__device__ __forceinline__ void lower_times(T* out, int64_t row_stride, uint32_t sMhi, uint32_t sMlo,
                                            uint32_t sX, int rows_valid, int warp, int lane) {
  constexpr int kNT = kD / 32;
  const int n0 = (kD / 4) * (warp % 4);
  // Row block rb as a constant (warps 0-3 take {0, 3}, warps 4-7 {1, 2}), so that each product's k loop is
  // unrolled whole with constant offsets, where a loop to a variable bound was unrolled by four with a
  // remainder and its addresses computed per step.
  const auto row_block = [&](auto rb_c) {
    constexpr int rb = decltype(rb_c)::value, m0 = 16 * rb;
    float acc[1][kNT][4];
    zero_acc(acc);
    pair_mma<kNT, false, true, kC, kD, T>(acc, sMhi, sMlo, m0, sX, 0, n0, 0, rb, lane);
    store_acc_global<T>(out, row_stride, acc, m0, n0, rows_valid, lane);
  };
  static_assert(paired_row_block(0, 0) == 0 && paired_row_block(0, 1) == 3 && paired_row_block(4, 0) == 1 &&
                    paired_row_block(4, 1) == 2,
                "lower_times' constant row blocks follow paired_row_block");
  if (warp < 4) {
    row_block(std::integral_constant<int, 0>{});
    row_block(std::integral_constant<int, 3>{});
  } else {
    row_block(std::integral_constant<int, 1>{});
    row_block(std::integral_constant<int, 2>{});
  }
}

// Three blocks per SM at D = 128 (80 registers, 3 x 71 KB), four at D = 64 (64 registers, 4 x 55 KB): ncu
// found two (89 registers), 25% occupancy on a kernel of one chunk per block, where only the other blocks
// of the SM hide its loads and barriers.
template <int kD, typename T, bool kGated>
__global__ void __launch_bounds__(kThreads, kD == 64 ? 4 : 3) delta_wy_fwd_kernel(const DeltaWyParams p) {
  using L = FwdSmem<kD>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // p.ready: grid (B * H, chunks), so that the blocks run chunk by chunk (the walk's order); else (chunks, H,
  // B)
  const int n = p.ready ? blockIdx.y : blockIdx.x;
  const int h = p.ready ? blockIdx.x % p.H : blockIdx.y, b = p.ready ? blockIdx.x / p.H : blockIdx.z;
  const int t0 = n * kC, rows = min(kC, p.T - t0);
  const uint32_t s0 = smem_u32(smem);
  float* beta = reinterpret_cast<float*>(smem + L::kBeta);
  float* G = reinterpret_cast<float*>(smem + L::kG);
  float* KD = reinterpret_cast<float*>(smem + L::kKD);
  float* M = reinterpret_cast<float*>(smem + L::kM);
  float* xs = reinterpret_cast<float*>(smem + L::kXs);

  // V in a copy group of its own: only U's product reads it, so it lands during KD and the inverse.
  load_chunk<kD>(s0 + L::kK, static_cast<const T*>(p.k), b, t0, h, p.T, p.H, tid);
  load_gates(beta, p.beta, b, t0, h, p.T, p.H, tid);  // zero past T
  if constexpr (kGated) load_gates(G, p.g, b, t0, h, p.T, p.H, tid);
  cp_async_commit();
  load_chunk<kD>(s0 + L::kV, static_cast<const T*>(p.v), b, t0, h, p.T, p.H, tid);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();
  if constexpr (kGated) {
    gate_cumsum(G, warp, lane);  // padded rows (g = 0) repeat the last real row's G
    __syncthreads();
    store_vec(p.G, G, b, t0, h, p.T, p.H, tid);
    if (tid < kC) xs[tid] = beta[tid] * __expf(G[tid]);  // read after the inverse's barriers
  }

  {
    float kd[1][4][4];
    kk_decay<kD, T, kGated>(kd, KD, s0 + L::kK, G, warp, lane);
  }
  __syncthreads();
  invert_as(p.inverse, M, KD, beta, reinterpret_cast<float*>(smem + L::kTmp), tid);
  if (p.m) store_m(saved_m(p.m, b, h, n, p.H, p.T), M, tid);  // for the backward

  const int64_t row_stride = static_cast<int64_t>(p.H) * kD;
  const uint32_t sHi = s0 + L::kKD, sLo = s0 + L::kKD + kH16Tile;
  unsigned char* hi = smem + L::kKD;
  unsigned char* lo = smem + L::kKD + kH16Tile;
  // W = (M diag(beta e^G)) K
  split_lower<T>(hi, lo, M, tid, kGated ? xs : beta);
  cp_async_wait<0>();  // V
  __syncthreads();
  lower_times<kD, T>(static_cast<T*>(p.w) + row_offset(b, t0, h, p.T, p.H, kD), row_stride, sHi, sLo,
                     s0 + L::kK, rows, warp, lane);
  // U = (M diag(beta)) V: without a gate the same scaled M
  if constexpr (kGated) {
    __syncthreads();
    split_lower<T>(hi, lo, M, tid, beta);
    __syncthreads();
  }
  lower_times<kD, T>(static_cast<T*>(p.u) + row_offset(b, t0, h, p.T, p.H, kD), row_stride, sHi, sLo,
                     s0 + L::kV, rows, warp, lane);
  if (p.ready) {
    __syncthreads();  // every store of W, U (and G) is done
    if (tid == 0) post_flag(p.ready + (static_cast<int64_t>(b) * p.H + h) * linear_chunk_count(p.T) + n);
  }
}

}  // namespace delta_wy

cudaError_t launch_delta_wy_fwd(const DeltaWyParams& p) {
  if (!delta_wy_check(p, false).empty()) return cudaErrorInvalidValue;
  using namespace delta_wy;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] {
    auto* kernel = p.g ? &delta_wy_fwd_kernel<kD, T, true> : &delta_wy_fwd_kernel<kD, T, false>;
    const int nt = linear_chunk_count(p.T);
    return launch_kernel(kernel, p.ready ? dim3(p.B * p.H, nt) : dim3(nt, p.H, p.B), FwdSmem<kD>::kBytes, p);
  });
}

cudaError_t load_delta_wy_fwd(const DeltaWyParams& p) {
  if (!delta_wy_check(p, false).empty()) return cudaErrorInvalidValue;
  using namespace delta_wy;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] {
    auto* kernel = p.g ? &delta_wy_fwd_kernel<kD, T, true> : &delta_wy_fwd_kernel<kD, T, false>;
    cudaFuncAttributes attr;
    cudaError_t err = cudaFuncGetAttributes(&attr, kernel);  // loads the module under lazy loading
    if (err != cudaSuccess) return err;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, FwdSmem<kD>::kBytes);
  });
}

}  // namespace attnlab::kernels
