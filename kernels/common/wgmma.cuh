// Hopper's warpgroup MMA (wgmma.mma_async, sm_90a only): shared-memory matrix descriptors, the fences, and
// m64nNk16 products with float32 accumulators for bf16 / fp16, both operands in shared memory. The road past
// mma.sync for the flash and linear-family kernels (docs/kernels.md): four warps issue one product whose
// operands the tensor cores read from shared memory once, where mma.sync makes each warp ldmatrix its own
// copy of B (the shared-memory bandwidth that bounds our mma.sync kernels).
//
// Used by linear_chunk's forward (linear_chunk_fwd_wgmma.cuh) and the flash backward (flash_bwd_wgmma.cuh);
// kernels/common/harness/wgmma_check.cpp runs the descriptor forms against a CPU GEMM on a GPU.
//
// Layouts (PTX ISA, "Asynchronous Warpgroup Level Matrix Shared Memory Layout"), with the 128-byte swizzle
// that kernels/common/mma.cuh's swz<64> already produces (chunk c of row r at chunk c ^ (r % 8), rows of
// 128 bytes, tile base 1024-byte aligned):
//   K-major operand (A [M][K] or B [N][K], k contiguous): a panel of rows x 64 k; one k16 step is the 32
//     bytes at byte offset 32 s of every row (the hardware applies the XOR from the address bits); SBO =
//     1024 (8 rows x 128 bytes) steps to the next 8-row group; LBO is unused with this swizzle (1).
//   MN-major operand (B [K][N], n contiguous; transposed by the instruction): panels of K rows x 64 n; a k16
//     step is 16 rows (2048 bytes) further; the strides between 8-row groups and between 64-column panels
//     are the descriptor's SBO and LBO (which is which is what the harness checks).
// Accumulators of m64nN (per thread N / 2 floats): warp w of the warpgroup holds rows 16 w .. 16 w + 15; for
// each 8-column block j, d[4j], d[4j+1] = (row 16 w + lane / 4, columns 8 j + 2 (lane % 4), +1) and d[4j+2],
// d[4j+3] the same 8 rows lower: mma.sync's C fragment, repeated over j.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace attnlab::kernels::wgmma {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ATTNLAB_WGMMA 1
#endif

// Shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): bits 0-13 start address >> 4,
// 16-29 leading-dimension byte offset >> 4, 32-45 stride-dimension byte offset >> 4, 49-51 base offset (0:
// the swizzle pattern starts at a 1024-byte boundary), 62-63 swizzle mode (1 = 128-byte).
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= static_cast<uint64_t>(1) << 62;  // 128-byte swizzle
  return d;
}

// Descriptor of an MN-major operand (B [K][N] with n contiguous, or A [K][M] for tnsp-a) in 64-column
// panels `panel_bytes` apart, 8-row groups 1024 bytes apart. kMnLboIsPanel says which field takes which
// stride: the PTX ISA's reading (LBO: between repeats along MN; SBO: between 8-row groups along K), which
// kernels/common/harness/wgmma_check confirmed on an H200 (2026-12-02; the swapped assignment faults).
constexpr bool kMnLboIsPanel = true;
__device__ __forceinline__ uint64_t make_desc_mn(uint32_t smem_addr, uint32_t panel_bytes) {
  return kMnLboIsPanel ? make_desc(smem_addr, panel_bytes, 1024) : make_desc(smem_addr, 1024, panel_bytes);
}

// Orders this thread's earlier generic-proxy writes to shared memory (st.shared, cp.async) before the async
// proxy's reads (wgmma operands); then a __syncthreads makes all threads' writes visible.
__device__ __forceinline__ void fence_proxy_async() {
#ifdef ATTNLAB_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Before the first wgmma of a group that reads registers the thread wrote (the accumulators).
__device__ __forceinline__ void fence() {
#ifdef ATTNLAB_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void commit() {
#ifdef ATTNLAB_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wait() {
#ifdef ATTNLAB_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// The accumulators as asm operands, and the instruction text of one m64nNk16 product (both operands from
// descriptors; scale-d as a predicate: 0 overwrites d, 1 accumulates; tnsp-a 1 for an M-major A, i.e. A
// stored [K][M], as k^T in the state update S += k^T v; tnsp-b 1 for an MN-major B).
#define ATTNLAB_WG_D8(i)                                                                      \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define ATTNLAB_WG_D32(i) ATTNLAB_WG_D8(i), ATTNLAB_WG_D8(i + 8), ATTNLAB_WG_D8(i + 16), ATTNLAB_WG_D8(i + 24)

template <int N, typename T, int kTransB, int kTransA = 0>
struct Mma;

#define ATTNLAB_WG_R32                                                                                   \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, "                                                                                                \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31"
#define ATTNLAB_WG_R64                                                                                     \
  ATTNLAB_WG_R32                                                                                           \
  ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, " \
  "%52, "                                                                                                  \
  "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// m64n32k16: 16 accumulators per thread; operands %16 (a), %17 (b), %18 (scale-d), %19 (tnsp-b), %20
// (tnsp-a).
#define ATTNLAB_WG_N32(TY)                                                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\nwgmma.mma_async.sync.aligned.m64n32k16.f32." TY \
               "." TY                                                                                     \
               " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, "   \
               "1, 1, %20, %19;\n}\n"                                                                     \
               : ATTNLAB_WG_D8(0), ATTNLAB_WG_D8(8)                                                       \
               : "l"(a), "l"(b), "r"(scale_d), "n"(kTransB), "n"(kTransA))
// m64n64k16: 32 accumulators per thread; operands %32 (a), %33 (b), %34 (scale-d), %35 (tnsp-b), %36
// (tnsp-a).
#define ATTNLAB_WG_N64(TY)                                                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\nwgmma.mma_async.sync.aligned.m64n64k16.f32." TY \
               "." TY " {" ATTNLAB_WG_R32 "}, %32, %33, p, 1, 1, %36, %35;\n}\n"                          \
               : ATTNLAB_WG_D32(0)                                                                        \
               : "l"(a), "l"(b), "r"(scale_d), "n"(kTransB), "n"(kTransA))
// m64n128k16: 64 accumulators per thread; operands %64 (a), %65 (b), %66 (scale-d), %67 (tnsp-b), %68
// (tnsp-a).
#define ATTNLAB_WG_N128(TY)                                                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\nwgmma.mma_async.sync.aligned.m64n128k16.f32." TY \
               "." TY " {" ATTNLAB_WG_R64 "}, %64, %65, p, 1, 1, %68, %67;\n}\n"                           \
               : ATTNLAB_WG_D32(0), ATTNLAB_WG_D32(32)                                                     \
               : "l"(a), "l"(b), "r"(scale_d), "n"(kTransB), "n"(kTransA))

#define ATTNLAB_WG_SS_STRUCT(NN, CT, TY)                                                                  \
  template <int kTransB, int kTransA>                                                                     \
  struct Mma<NN, CT, kTransB, kTransA> {                                                                  \
    static __device__ __forceinline__ void run(float (&d)[NN / 2], uint64_t a, uint64_t b, int scale_d) { \
      ATTNLAB_WG_SS_BODY(NN, TY)                                                                          \
    }                                                                                                     \
  };
#ifdef ATTNLAB_WGMMA
#define ATTNLAB_WG_SS_BODY(NN, TY) ATTNLAB_WG_N##NN(TY);
#else
#define ATTNLAB_WG_SS_BODY(NN, TY) (void)d, (void)a, (void)b, (void)scale_d, __trap();
#endif
ATTNLAB_WG_SS_STRUCT(32, __nv_bfloat16, "bf16")
ATTNLAB_WG_SS_STRUCT(32, __half, "f16")
ATTNLAB_WG_SS_STRUCT(64, __nv_bfloat16, "bf16")
ATTNLAB_WG_SS_STRUCT(64, __half, "f16")
ATTNLAB_WG_SS_STRUCT(128, __nv_bfloat16, "bf16")
ATTNLAB_WG_SS_STRUCT(128, __half, "f16")
#undef ATTNLAB_WG_SS_STRUCT
#undef ATTNLAB_WG_SS_BODY

// The same products with A from registers (wgmma's "RS" form): a[4] is this thread's A fragment of the
// m64k16 slice, laid out as mma.sync's m16n8k16 A fragment within each warp's 16 rows (warp w of the
// warpgroup: rows 16 w ..), so an m64nN accumulator turns into the A of a next product in registers, as
// P^T does in the flash backward (dV += P^T dO). Operands after the accumulators: a (4), b, scale-d, tnsp-b.
#define ATTNLAB_WG_RS_N64(TY)                                                                             \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\nwgmma.mma_async.sync.aligned.m64n64k16.f32." TY \
               "." TY " {" ATTNLAB_WG_R32 "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"              \
               : ATTNLAB_WG_D32(0)                                                                        \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d), "n"(kTransB))
#define ATTNLAB_WG_RS_N128(TY)                                                                             \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\nwgmma.mma_async.sync.aligned.m64n128k16.f32." TY \
               "." TY " {" ATTNLAB_WG_R64 "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"               \
               : ATTNLAB_WG_D32(0), ATTNLAB_WG_D32(32)                                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d), "n"(kTransB))

template <int N, typename T, int kTransB>
struct MmaRs;
#define ATTNLAB_WG_RS_STRUCT(NN, CT, TY)                                                               \
  template <int kTransB>                                                                               \
  struct MmaRs<NN, CT, kTransB> {                                                                      \
    static __device__ __forceinline__ void run(float (&d)[NN / 2], const uint32_t (&a)[4], uint64_t b, \
                                               int scale_d) {                                          \
      ATTNLAB_WG_RS_BODY(NN, TY)                                                                       \
    }                                                                                                  \
  };
#ifdef ATTNLAB_WGMMA
#define ATTNLAB_WG_RS_BODY(NN, TY) ATTNLAB_WG_RS_N##NN(TY);
#else
#define ATTNLAB_WG_RS_BODY(NN, TY) (void)d, (void)a, (void)b, (void)scale_d, __trap();
#endif
ATTNLAB_WG_RS_STRUCT(64, __nv_bfloat16, "bf16")
ATTNLAB_WG_RS_STRUCT(64, __half, "f16")
ATTNLAB_WG_RS_STRUCT(128, __nv_bfloat16, "bf16")
ATTNLAB_WG_RS_STRUCT(128, __half, "f16")

#undef ATTNLAB_WG_RS_STRUCT
#undef ATTNLAB_WG_RS_BODY
#undef ATTNLAB_WG_RS_N64
#undef ATTNLAB_WG_RS_N128
#undef ATTNLAB_WG_N32
#undef ATTNLAB_WG_N64
#undef ATTNLAB_WG_N128
#undef ATTNLAB_WG_R32
#undef ATTNLAB_WG_R64
#undef ATTNLAB_WG_D8
#undef ATTNLAB_WG_D32

}  // namespace attnlab::kernels::wgmma
