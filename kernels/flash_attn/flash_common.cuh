// Host-side dispatch macros of the flash-attention kernels. The device helpers they use (mma.sync,
// ldmatrix, cp.async, the swizzle, tile copies) live in kernels/common/mma.cuh, shared with linear_chunk.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/mma.cuh"
#include "kernels/flash_attn/params.h"

namespace attnlab::kernels::flash {

// ---------------------------------------------------------------- dispatch (host side)
// FLASH_DTYPE_SWITCH(dtype, T, body): runs `body` (a lambda returning cudaError_t) with `T` the CUDA
// element type (__nv_bfloat16 or __half); an unknown dtype yields cudaErrorInvalidValue.
#define FLASH_DTYPE_SWITCH(DTYPE, T, ...)           \
  [&]() -> cudaError_t {                            \
    switch (DTYPE) {                                \
      case ::attnlab::kernels::FlashDtype::kBF16: { \
        using T = __nv_bfloat16;                    \
        return __VA_ARGS__();                       \
      }                                             \
      case ::attnlab::kernels::FlashDtype::kFP16: { \
        using T = __half;                           \
        return __VA_ARGS__();                       \
      }                                             \
    }                                               \
    return cudaErrorInvalidValue;                   \
  }()

// FLASH_HEADDIM_SWITCH(head_dim, kD, body): runs `body` with `kD` a compile-time head dim (64 or
// 128); any other head dim yields cudaErrorInvalidValue (callers check flash_attn_supported first).
#define FLASH_HEADDIM_SWITCH(HEAD_DIM, kD, ...) \
  [&]() -> cudaError_t {                        \
    if ((HEAD_DIM) == 64) {                     \
      static constexpr int kD = 64;             \
      return __VA_ARGS__();                     \
    }                                           \
    if ((HEAD_DIM) == 128) {                    \
      static constexpr int kD = 128;            \
      return __VA_ARGS__();                     \
    }                                           \
    return cudaErrorInvalidValue;               \
  }()

}  // namespace attnlab::kernels::flash
