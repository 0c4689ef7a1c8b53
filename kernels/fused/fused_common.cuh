// Device helpers of the fused elementwise kernels (see params.h): 16-byte packs, the dtype switch (element
// conversions: kernels/common/convert.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/common/convert.cuh"
#include "kernels/fused/params.h"

namespace attnlab::kernels::fused {

// Elements of T in one 16-byte pack: the vector width of the fast paths.
template <typename T>
constexpr int pack_width() {
  return 16 / static_cast<int>(sizeof(T));
}

// kWidth consecutive elements moved as one access: a 16-byte load / store when kWidth * sizeof(T) == 16
// (the caller guarantees the alignment), a plain scalar access when kWidth == 1. Kept packed in registers
// (two 16-bit elements per register) until converted.
template <typename T, int kWidth>
struct alignas(sizeof(T) * kWidth) Pack {
  T e[kWidth];
};

template <typename T, int kWidth>
__device__ __forceinline__ Pack<T, kWidth> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, kWidth>*>(p);
}
template <typename T, int kWidth>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kWidth>& v) {
  *reinterpret_cast<Pack<T, kWidth>*>(p) = v;
}

// kWidth float32 weights: float4 loads when kWidth is a multiple of 4 (16-byte aligned), else scalars.
template <int kWidth>
__device__ __forceinline__ void load_f32(const float* p, float (&out)[kWidth]) {
  if constexpr (kWidth % 4 == 0) {
#pragma unroll
    for (int k = 0; k < kWidth; k += 4) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p + k));
      out[k] = v.x, out[k + 1] = v.y, out[k + 2] = v.z, out[k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < kWidth; ++k) out[k] = __ldg(p + k);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;  // every lane holds the same sum (the butterfly order is fixed: deterministic)
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// FUSED_DTYPE_SWITCH(dtype, T, body): runs `body` (a lambda returning cudaError_t) with T the element
// type; an unknown dtype yields cudaErrorInvalidValue.
#define FUSED_DTYPE_SWITCH(DTYPE, T, ...)              \
  [&]() -> cudaError_t {                               \
    switch (DTYPE) {                                   \
      case ::attnlab::kernels::FusedDtype::kFloat32: { \
        using T = float;                               \
        return __VA_ARGS__();                          \
      }                                                \
      case ::attnlab::kernels::FusedDtype::kBF16: {    \
        using T = __nv_bfloat16;                       \
        return __VA_ARGS__();                          \
      }                                                \
      case ::attnlab::kernels::FusedDtype::kFP16: {    \
        using T = __half;                              \
        return __VA_ARGS__();                          \
      }                                                \
    }                                                  \
    return cudaErrorInvalidValue;                      \
  }()

}  // namespace attnlab::kernels::fused
