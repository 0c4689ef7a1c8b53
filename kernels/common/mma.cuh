// Tensor-core and shared-memory helpers shared by the kernels (flash_attn, linear_chunk): element types,
// inline-PTX wrappers for the sm_80 / sm_90 mma.sync path (m16n8k16, m16n8k8 tf32, ldmatrix, cp.async),
// the 128-byte XOR swizzle, fast exp2. No torch, no host code.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), with g = lane / 4 and
// t = lane % 4:
//   A 16x16 (row-major), 4 x b32:  a0 = (g, 2t..2t+1)   a1 = (g+8, 2t..)   a2 = (g, 2t+8..)  a3 = (g+8,
//   2t+8..) B 16x8  ("col"),     2 x b32:  b0 = (k 2t..2t+1, n g)                  b1 = (k 2t+8.., n g) C
//   16x8  (f32),       4 x f32:  c0,c1 = (g, 2t, 2t+1)                   c2,c3 = (g+8, 2t, 2t+1)
// ldmatrix.x4 loads four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i and
// each lane receives (row lane/4, columns 2(lane%4), +1) of each matrix, i.e. exactly an A or B
// fragment piece; `.trans` delivers the transpose (used when the k index runs along rows of the
// stored tile, as for V in P*V).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attnlab::kernels {

// ---------------------------------------------------------------- element types
template <typename T>
struct MmaType;
template <>
struct MmaType<__nv_bfloat16> {
  // two floats -> one b32 register holding (lo, hi) as bf16, lo in the low half (lower index)
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
};
template <>
struct MmaType<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
};

// D += A * B for one m16n8k16 tile, fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                  uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D += A * B for one m16n8k8 tile of tf32 operands (32-bit registers, low 13 mantissa bits ignored), fp32
// accumulators. Fragments (g = lane / 4, t = lane % 4): a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4),
// a3 = (g+8, t+4); b0 = (k t, n g), b1 = (k t+4, n g); C as for m16n8k16.
__device__ __forceinline__ void mma_1688_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                              uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// x = hi + lo with hi, lo tf32 (rounded to nearest): the 3xTF32 split, hi*hi + hi*lo + lo*hi keeps ~21 of
// float32's 24 mantissa bits in a product.
__device__ __forceinline__ void split_tf32(uint32_t& hi, uint32_t& lo, float x) {
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(hi) : "f"(x));
  const float r = x - __uint_as_float(hi);
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(lo) : "f"(r));
}

// ---------------------------------------------------------------- shared memory
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Swizzled tile of rows of kRowElems 16-bit elements (kRowElems / 8 chunks of 16 bytes per row, at
// least 8): chunk c of row r lives at chunk c ^ (r % 8). ldmatrix reads 8 rows at one logical
// chunk per phase and cp.async / the epilogue write whole rows, so both are conflict-free, with
// no padding (a padded row would cost 1/8 more shared memory and break the 128-byte alignment a
// later TMA/wgmma layout wants; this XOR is the 128B swizzle those use).
// Rows of 32 elements (64 bytes, 4 chunks; the delta rule's 32-column value slices): two rows share a
// 128-byte line, so the XOR takes (row / 2) % 4 and any 8 consecutive rows from a multiple of 8 at one
// logical chunk still fill the 8 distinct 16-byte slots of a line (ldmatrix and the 4-lane pair stores).
template <int kRowElems>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  if constexpr (kRowElems == 32) {
    return static_cast<uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
  } else {
    static_assert(kRowElems % 64 == 0, "swizzle needs >= 8 chunks of 16 bytes per row, or rows of 32");
    return static_cast<uint32_t>(row * (kRowElems * 2) + ((chunk ^ (row & 7)) << 4));
  }
}

// Byte offset of 16-bit element (row, col) in a swizzled [rows][64] panel (the wgmma operand tiles).
__device__ __forceinline__ uint32_t panel_off(int row, int col) {
  return swz<64>(row, col / 8) + (col % 8) * 2;
}

// Per-lane ldmatrix addressing of a swizzled tile, for one lane role. A role gives each lane a row
// offset lane_row (< 16) and a chunk bit lane_bit (0/1); an ldmatrix then reads logical
// (row0 + lane_row, 2*c2 + lane_bit) with row0 a multiple of 8 and c2 a compile-time constant.
// Since row0 % 8 == 0, the XOR term is lane_row % 8 for every row0, and
//   phys chunk = 8*(c2/4) + ((2*(c2%4)) ^ (lane_bit ^ lane_row%8)),
// so 4 per-lane offsets plus an immediate cover every (row0, c2): 4 registers per role instead of
// one hoisted address per unrolled ldmatrix.
template <int kRowElems>
struct SwzLane {
  static_assert(kRowElems % 64 == 0, "SwzLane's offsets assume the 8-chunk swizzle");
  uint32_t off[4];
  __device__ __forceinline__ SwzLane(int lane_row, int lane_bit) {
    const int y = lane_bit ^ (lane_row & 7);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      off[j] = static_cast<uint32_t>(lane_row * (kRowElems * 2) + (((2 * j) ^ y) << 4));
  }
  __device__ __forceinline__ uint32_t operator()(uint32_t base, int row0, int c2) const {
    return base + off[c2 & 3] + static_cast<uint32_t>(row0 * (kRowElems * 2) + ((c2 >> 2) << 7));
  }
};

// ---------------------------------------------------------------- cp.async
// 16-byte global->shared copy; when !pred nothing is read and the 16 bytes are zero-filled (rows
// past the end of the sequence become zeros, never garbage: a NaN in V would poison P*V).
__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* gmem, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(gmem));
}
// 4-byte variant (row statistics: lse and D, whose rows need not be 16-byte aligned).
__device__ __forceinline__ void cp_async_4(uint32_t smem, const void* gmem, bool pred) {
  const int src_bytes = pred ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Copies a tile of kRows rows x kD elements (row r at g + r * row_stride) into a swizzled shared
// tile; rows >= rows_valid are zero-filled. Consecutive threads take consecutive 16-byte chunks of
// a row, so each warp reads whole 128-byte lines. A thread keeps one chunk column and steps down
// kRowStep rows (a multiple of 8, so its swizzle term is fixed): one shared offset, one pointer.
template <int kRows, int kD, int kThreads, typename T>
__device__ __forceinline__ void load_tile(uint32_t s, const T* g, int64_t row_stride, int rows_valid,
                                          int tid) {
  constexpr int kChunksPerRow = kD / 8;
  constexpr int kRowStep = kThreads / kChunksPerRow;
  static_assert(kThreads % kChunksPerRow == 0 && kRowStep % 8 == 0 && kRows % kRowStep == 0,
                "tile must split evenly over the threads");
  const int row = tid / kChunksPerRow;
  const int ch = tid % kChunksPerRow;
  // In-tile offsets in 32 bits (flash_attn_check bounds row strides by 2^24 elements): each
  // address is then one IMAD off the thread's base instead of a hoisted 64-bit pointer per row.
  const int stride = static_cast<int>(row_stride);
  const uint32_t dst = s + swz<kD>(row, ch);
  const T* src = g + row * stride + ch * 8;
  if (rows_valid >= kRows) {  // whole tile in range (all but the last tile): no predicates
#pragma unroll
    for (int i = 0; i < kRows / kRowStep; ++i)
      cp_async_16(dst + i * kRowStep * (kD * 2), src + i * kRowStep * stride);
  } else {
#pragma unroll
    for (int i = 0; i < kRows / kRowStep; ++i) {
      const bool ok = row + i * kRowStep < rows_valid;
      cp_async_16(dst + i * kRowStep * (kD * 2), ok ? src + i * kRowStep * stride : g, ok);
    }
  }
}

// Copies a swizzled shared tile (kRows x kD) to global rows r < rows_valid with 16-byte stores.
template <int kRows, int kD, int kThreads, typename T>
__device__ __forceinline__ void store_tile(T* g, int64_t row_stride, const unsigned char* s, int rows_valid,
                                           int tid) {
  constexpr int kChunksPerRow = kD / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int c = tid + i * kThreads;
    const int row = c / kChunksPerRow;
    const int ch = c % kChunksPerRow;
    if (row < rows_valid) {
      const uint4 v = *reinterpret_cast<const uint4*>(s + swz<kD>(row, ch));
      *reinterpret_cast<uint4*>(g + row * row_stride + ch * 8) = v;
    }
  }
}

// ---------------------------------------------------------------- math
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

constexpr float kLog2e = 1.4426950408889634f;

}  // namespace attnlab::kernels
