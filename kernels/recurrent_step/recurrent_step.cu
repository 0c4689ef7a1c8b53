// The fused one-token decode step of the linear family (see params.h): kernel, launcher, parameter checks.
//
// Design. Decoding reads and writes the whole float32 state once per token and does ~4 FLOPs per state
// element, so the step is bound by memory latency and launch overhead, not arithmetic. Grid
// (V / kVB, H, B): a block owns one (b, h) and a slice of kVB value columns over all K rows, so even B = 1
// puts H * V / kVB blocks on the GPU, and the delta rule's S^T k (a sum over the whole K column of each value
// column) never leaves the block. 128 threads: kVB / 4 threads across a row slice, each holding 4 columns
// (one float4) of K / (128 / (kVB / 4)) rows in registers; a warp reads whole rows of the slice, so the
// state moves in coalesced 16-byte accesses exactly once each way.
//
// One reduction per step. With D the decayed state (D = S, exp(g) S or diag(exp(g)) S) and u the column
// update (u = v, or beta (v - D^T k) for the delta rule), S' = D + k u^T and
//   o = scale S'^T q = scale (D^T q + (q . k) u),
// so D^T q and D^T k are reduced together (warp shuffles across row groups, then shared memory across the
// 4 warps) and the output needs no second pass over S'. q . k (and |q|^2, |k|^2 for the in-kernel L2
// normalisation) are block sums over K, taken while q and k are staged in shared memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "kernels/common/convert.cuh"
#include "kernels/recurrent_step/params.h"

namespace attnlab::kernels {
namespace {

constexpr int kThreads = 128;  // 4 warps: enough loads in flight per block, the reduction stays short
constexpr int kWarps = kThreads / 32;
constexpr float kL2Eps = 1e-6f;  // ops::l2_normalize's eps (FLA's l2norm)
constexpr int kMaxV = 4096;

__device__ __forceinline__ void fma4(float4& acc, float a, const float4& x) {
  acc.x = fmaf(a, x.x, acc.x), acc.y = fmaf(a, x.y, acc.y);
  acc.z = fmaf(a, x.z, acc.z), acc.w = fmaf(a, x.w, acc.w);
}
__device__ __forceinline__ void scale4(float4& x, float a) {
  x.x *= a, x.y *= a, x.z *= a, x.w *= a;
}
__device__ __forceinline__ void add4(float4& acc, const float4& x) {
  acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
}
// Sum over the lanes that share this lane's columns (lane ^ kTC, lane ^ 2 kTC, ... within the warp).
template <int kTC>
__device__ __forceinline__ void reduce_row_groups(float4& x) {
#pragma unroll
  for (int off = kTC; off < 32; off *= 2) {
    x.x += __shfl_xor_sync(0xffffffffu, x.x, off);
    x.y += __shfl_xor_sync(0xffffffffu, x.y, off);
    x.z += __shfl_xor_sync(0xffffffffu, x.z, off);
    x.w += __shfl_xor_sync(0xffffffffu, x.w, off);
  }
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// One step for (b, h) = (blockIdx.z, blockIdx.y), value columns [blockIdx.x * kVB, + kVB).
// T: element type of q, k, v, o; kK: key dim; kVB: value columns per block (16 or 32).
template <StepVariant kVar, typename T, int kK, int kVB>
__global__ void __launch_bounds__(kThreads) recurrent_step_kernel(const RecurrentStepParams p) {
  constexpr bool kDeltaRule = kVar == StepVariant::kDelta || kVar == StepVariant::kGatedDelta;
  constexpr bool kScalarDecay = kVar == StepVariant::kScalarGate || kVar == StepVariant::kGatedDelta;
  constexpr bool kKeyDecay = kVar == StepVariant::kKeyGate;
  constexpr int kTC = kVB / 4;         // threads across a row slice, one float4 each
  constexpr int kRG = kThreads / kTC;  // row groups: rows r, r + kRG, ... belong to row group r
  constexpr int kRows = kK / kRG;      // state rows per thread
  static_assert(kVB % 4 == 0 && 32 % kTC == 0 && kK % kRG == 0 && kK <= 2 * kThreads, "bad tiling");

  __shared__ float sq[kK], sk[kK];                     // q, k in float32 (not yet normalised)
  __shared__ float sdecay[kKeyDecay ? kK : 1];         // exp(g) per key row (key_gate)
  __shared__ __align__(16) float sv[kVB];              // this block's value columns
  __shared__ __align__(16) float red[2][kWarps][kVB];  // per-warp column sums of D^T q, D^T k
  __shared__ float dots[kWarps][3];                    // per-warp |q|^2, |k|^2, q . k

  const int b = blockIdx.z, h = blockIdx.y, col0 = blockIdx.x * kVB;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int c = tid % kTC, r = tid / kTC;  // this thread: columns col0 + 4c .. + 3, rows r + i kRG
  const int64_t V = p.V;
  // Element (row 0, column col0 + 4c) of this (b, h)'s state [K, V].
  const int64_t state0 = (static_cast<int64_t>(b) * p.H + h) * kK * V + col0 + 4 * c;

  // The state first: the longest-latency loads, all independent, issued before anything waits on them.
  // Plain (coherent) loads: ht may alias h0, so the read-only path is not allowed.
  float4 s[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    if (p.h0)
      s[i] = *reinterpret_cast<const float4*>(p.h0 + state0 + static_cast<int64_t>(r + i * kRG) * V);
    else
      s[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  }

  // Stage q, k, v (and the key gate) in shared memory as float32, with the block sums over K.
  const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride;
  float qq = 0.f, kk = 0.f, qk = 0.f;
#pragma unroll
  for (int i = tid; i < kK; i += kThreads) {
    const float qi = to_float(q[i]), ki = to_float(k[i]);
    sq[i] = qi, sk[i] = ki;
    qq = fmaf(qi, qi, qq), kk = fmaf(ki, ki, kk), qk = fmaf(qi, ki, qk);
    if constexpr (kKeyDecay) sdecay[i] = expf(p.g[b * p.g_batch_stride + h * p.g_head_stride + i]);
  }
  if (tid < kVB) sv[tid] = to_float(v[col0 + tid]);
  qq = warp_sum(qq), kk = warp_sum(kk), qk = warp_sum(qk);
  if (lane == 0) dots[warp][0] = qq, dots[warp][1] = kk, dots[warp][2] = qk;
  float decay = 1.f, beta = 0.f;
  if constexpr (kScalarDecay) decay = expf(p.g[b * p.g_batch_stride + h * p.g_head_stride]);
  if constexpr (kDeltaRule) beta = p.beta[b * p.beta_batch_stride + h * p.beta_head_stride];
  __syncthreads();

  qq = kk = qk = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) qq += dots[w][0], kk += dots[w][1], qk += dots[w][2];
  const float rq = p.l2norm_qk ? rsqrtf(qq + kL2Eps) : 1.f;  // q <- rq q, k <- rk k
  const float rk = p.l2norm_qk ? rsqrtf(kk + kL2Eps) : 1.f;
  qk *= rq * rk;

  // D = the decayed state; partial column sums of D^T q and D^T k over this thread's rows.
  float4 pq = make_float4(0.f, 0.f, 0.f, 0.f), pk = pq;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int row = r + i * kRG;
    if constexpr (kScalarDecay) scale4(s[i], decay);
    if constexpr (kKeyDecay) scale4(s[i], sdecay[row]);
    fma4(pq, sq[row] * rq, s[i]);
    if constexpr (kDeltaRule) fma4(pk, sk[row] * rk, s[i]);
  }
  reduce_row_groups<kTC>(pq);
  if constexpr (kDeltaRule) reduce_row_groups<kTC>(pk);
  if (lane < kTC) {
    *reinterpret_cast<float4*>(&red[0][warp][4 * c]) = pq;
    if constexpr (kDeltaRule) *reinterpret_cast<float4*>(&red[1][warp][4 * c]) = pk;
  }
  __syncthreads();

  float4 tq = make_float4(0.f, 0.f, 0.f, 0.f), tk = tq;  // D^T q, D^T k for columns 4c .. 4c+3
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    add4(tq, *reinterpret_cast<const float4*>(&red[0][w][4 * c]));
    if constexpr (kDeltaRule) add4(tk, *reinterpret_cast<const float4*>(&red[1][w][4 * c]));
  }
  float4 u = *reinterpret_cast<const float4*>(&sv[4 * c]);  // the column update: v, or beta (v - D^T k)
  if constexpr (kDeltaRule) {
    u.x = beta * (u.x - tk.x), u.y = beta * (u.y - tk.y);
    u.z = beta * (u.z - tk.z), u.w = beta * (u.w - tk.w);
  }

  // S' = D + k u^T, written back in place of (or beside) h0.
  if (p.ht) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int row = r + i * kRG;
      fma4(s[i], sk[row] * rk, u);
      *reinterpret_cast<float4*>(p.ht + state0 + static_cast<int64_t>(row) * V) = s[i];
    }
  }

  // o = scale (D^T q + (q . k) u); the lanes of row group 0 hold every column of the slice once.
  if (tid < kTC) {
    T* o = static_cast<T*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride + col0 + 4 * c;
    o[0] = from_float<T>(p.scale * fmaf(qk, u.x, tq.x));
    o[1] = from_float<T>(p.scale * fmaf(qk, u.y, tq.y));
    o[2] = from_float<T>(p.scale * fmaf(qk, u.z, tq.z));
    o[3] = from_float<T>(p.scale * fmaf(qk, u.w, tq.w));
  }
}

template <StepVariant kVar, typename T, int kK, int kVB>
cudaError_t run_recurrent_step(const RecurrentStepParams& p) {
  dim3 grid(static_cast<unsigned>(p.V / kVB), static_cast<unsigned>(p.H), static_cast<unsigned>(p.B));
  recurrent_step_kernel<kVar, T, kK, kVB><<<grid, kThreads, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  return cudaGetLastError();
}

// STEP_*_SWITCH(value, name, body): runs `body` (a lambda returning cudaError_t) with `name` a compile-time
// constant (type) for the runtime value; a value outside the list yields cudaErrorInvalidValue (the check
// rejects those first).
#define STEP_VARIANT_SWITCH(VARIANT, NAME, ...)                       \
  [&]() -> cudaError_t {                                              \
    switch (VARIANT) {                                                \
      case StepVariant::kLinear: {                                    \
        static constexpr StepVariant NAME = StepVariant::kLinear;     \
        return __VA_ARGS__();                                         \
      }                                                               \
      case StepVariant::kScalarGate: {                                \
        static constexpr StepVariant NAME = StepVariant::kScalarGate; \
        return __VA_ARGS__();                                         \
      }                                                               \
      case StepVariant::kKeyGate: {                                   \
        static constexpr StepVariant NAME = StepVariant::kKeyGate;    \
        return __VA_ARGS__();                                         \
      }                                                               \
      case StepVariant::kDelta: {                                     \
        static constexpr StepVariant NAME = StepVariant::kDelta;      \
        return __VA_ARGS__();                                         \
      }                                                               \
      case StepVariant::kGatedDelta: {                                \
        static constexpr StepVariant NAME = StepVariant::kGatedDelta; \
        return __VA_ARGS__();                                         \
      }                                                               \
    }                                                                 \
    return cudaErrorInvalidValue;                                     \
  }()
#define STEP_DTYPE_SWITCH(DTYPE, T, ...) \
  [&]() -> cudaError_t {                 \
    switch (DTYPE) {                     \
      case StepDtype::kBF16: {           \
        using T = __nv_bfloat16;         \
        return __VA_ARGS__();            \
      }                                  \
      case StepDtype::kFP16: {           \
        using T = __half;                \
        return __VA_ARGS__();            \
      }                                  \
      case StepDtype::kFP32: {           \
        using T = float;                 \
        return __VA_ARGS__();            \
      }                                  \
    }                                    \
    return cudaErrorInvalidValue;        \
  }()
// Two-way switch of an int over {A, B}.
#define STEP_INT_SWITCH(VALUE, NAME, A, B, ...) \
  [&]() -> cudaError_t {                        \
    if ((VALUE) == (A)) {                       \
      static constexpr int NAME = (A);          \
      return __VA_ARGS__();                     \
    }                                           \
    if ((VALUE) == (B)) {                       \
      static constexpr int NAME = (B);          \
      return __VA_ARGS__();                     \
    }                                           \
    return cudaErrorInvalidValue;               \
  }()

bool aligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0;
}

}  // namespace

int recurrent_step_cols_per_block(const RecurrentStepParams& p) {
  if (p.cols_per_block != 0) return p.cols_per_block;
  if (p.V % 32 != 0) return 16;
  // 32 columns (8 float4 per row slice) unless that leaves fewer than 256 blocks (~2 per SM of an
  // H100 / H200, 132 SMs): B = 1, H = 16, V = 128 is 64 blocks of 32 columns but 128 of 16, which keeps
  // twice as many SMs loading the state.
  const int64_t blocks = static_cast<int64_t>(p.B) * p.H * (p.V / 32);
  return blocks < 256 ? 16 : 32;
}

const char* recurrent_step_check(const RecurrentStepParams& p) {
  const int v = static_cast<int>(p.variant);
  if (v < 0 || v > static_cast<int>(StepVariant::kGatedDelta)) return "recurrent_step: unknown variant";
  const int d = static_cast<int>(p.dtype);
  if (d < 0 || d > static_cast<int>(StepDtype::kFP32)) return "recurrent_step: unknown dtype";
  if (p.K != 64 && p.K != 128) return "recurrent_step: key dim K must be 64 or 128";
  if (p.V < 16 || p.V > kMaxV || p.V % 16 != 0)
    return "recurrent_step: value dim V must be a multiple of 16 in [16, 4096]";
  if (p.B < 1 || p.H < 1 || p.B > 65535 || p.H > 65535)
    return "recurrent_step: B and H must be in [1, 65535] (grid limits)";
  if (p.cols_per_block != 0 && p.cols_per_block != 16 && p.cols_per_block != 32)
    return "recurrent_step: cols_per_block must be 0 (automatic), 16 or 32";
  if (p.V % recurrent_step_cols_per_block(p) != 0)
    return "recurrent_step: V must be a multiple of cols_per_block";
  if (!std::isfinite(p.scale)) return "recurrent_step: scale must be finite";
  if (!p.q || !p.k || !p.v || !p.o) return "recurrent_step: q, k, v, o must be set";
  const bool gated = p.variant == StepVariant::kScalarGate || p.variant == StepVariant::kKeyGate ||
                     p.variant == StepVariant::kGatedDelta;
  if (gated && !p.g) return "recurrent_step: this variant needs the log decay g";
  const bool delta = p.variant == StepVariant::kDelta || p.variant == StepVariant::kGatedDelta;
  if (delta && !p.beta) return "recurrent_step: the delta variants need beta";
  if (!aligned16(p.h0) || !aligned16(p.ht))
    return "recurrent_step: h0 and ht must be 16-byte aligned (float4 access)";
  if (p.h0 && p.ht && p.h0 != p.ht) {
    // In place or disjoint: a partial overlap would let one block overwrite another's unread state.
    const auto a = reinterpret_cast<uintptr_t>(p.h0), b = reinterpret_cast<uintptr_t>(p.ht);
    const auto bytes = static_cast<uintptr_t>(p.B) * p.H * p.K * p.V * sizeof(float);
    if (a < b + bytes && b < a + bytes) return "recurrent_step: ht must equal h0 or not overlap it";
  }
  return "";
}

cudaError_t launch_recurrent_step(const RecurrentStepParams& p) {
  if (recurrent_step_check(p)[0] != '\0') return cudaErrorInvalidValue;
  const int cols = recurrent_step_cols_per_block(p);
  return STEP_VARIANT_SWITCH(p.variant, kVar, [&] {
    return STEP_DTYPE_SWITCH(p.dtype, T, [&] {
      return STEP_INT_SWITCH(p.K, kK, 64, 128, [&] {
        return STEP_INT_SWITCH(cols, kVB, 16, 32, [&] { return run_recurrent_step<kVar, T, kK, kVB>(p); });
      });
    });
  });
}

}  // namespace attnlab::kernels
