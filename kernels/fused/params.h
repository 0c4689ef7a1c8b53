// Fused elementwise kernels of the training step: RMSNorm, rotary embedding and the causal short convolution,
// forward and backward.
// These structs are the whole interface: kernels never see torch; the binding
// (src/attnlab/ops/cuda/fused.cpp) fills them from tensors. The libtorch reference of both is in
// src/attnlab/model/layers.cpp.
//
// RMSNorm (Zhang & Sennrich 2019) over the last axis of length N, float32 math:
//   rstd_r = 1 / sqrt(mean_j x_rj^2 + eps),  y_rj = x_rj * rstd_r * w_j
//   backward, xhat = x * rstd:  dx_rj = rstd_r * (w_j dy_rj - xhat_rj * mean_j'(w_j' dy_rj' xhat_rj'))
//                               dw_j  = sum_r dy_rj xhat_rj
// dw is summed deterministically: per-block partials into a [partials, N] float32 workspace, then a second
// kernel adds the partials in a fixed order (no float atomics, so a rerun gives identical bits).
//
// RoPE (Su et al. 2021), the rotate-half layout of GPT-NeoX / Llama, over the first R channels of each head:
//   a_ti = pos_t * theta^(-2i/R),  i < R/2
//   out_i = x_i cos a - x_{i+R/2} sin a,  out_{i+R/2} = x_{i+R/2} cos a + x_i sin a,  channels >= R copied.
// The backward is the rotation by -a applied to dout (inverse = true). inv_freq is computed in float32 as
// libtorch's CUDA kernels do for layers.cpp's formula (exponent -2i * (1/R), powf), so the two agree to
// rounding.
//
// Vectorisation: rows / chunks move as 16-byte packs when every pointer is 16-byte aligned and every size
// and stride is a multiple of the pack (8 bf16 / fp16, 4 float32 elements); otherwise the kernels take the
// same path one element at a time. Any N (RMSNorm) and any even R <= D (RoPE) are accepted.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace attnlab::kernels {

// Element type of the activations (x, y, dy, dx, out); weights, rstd and workspaces are float32.
enum class FusedDtype : int { kFloat32 = 0, kBF16 = 1, kFP16 = 2 };

struct RmsNormParams {
  // ---- row r of a [rows, N] tensor starts at ptr + r * <name>_row_stride elements; the N axis is contiguous
  const void* x = nullptr;        // [rows, N] input, read by forward and backward
  void* y = nullptr;              // [rows, N] forward output (written)
  const float* weight = nullptr;  // [N] contiguous float32 gain w, read by forward and backward
  float* rstd = nullptr;          // [rows] contiguous float32 1/rms: written by the forward (skipped when
                                  // nullptr, e.g. without autograd), read by the backward
  const void* dy = nullptr;       // backward: [rows, N] gradient of y
  void* dx = nullptr;             // backward: [rows, N] gradient of x (written)
  float* dweight = nullptr;       // backward: [N] contiguous float32 gradient of w (written, not accumulated)
  float* workspace = nullptr;     // backward: [partials, N] contiguous float32 dw partials (partials from
                                  // rms_norm_bwd_partials; may be nullptr when rows == 0)
  int64_t x_row_stride = 0;       // x: elements between rows (>= 0; 0 broadcasts one row)
  int64_t y_row_stride = 0;       // y: elements between rows (>= N)
  int64_t dy_row_stride = 0;      // dy: elements between rows (>= 0; 0 broadcasts one row)
  int64_t dx_row_stride = 0;      // dx: elements between rows (>= N)
  int64_t rows = 0;               // number of rows (all leading axes flattened), >= 0
  int N = 0;                      // normalised axis length, 1 .. kRmsNormMaxN
  float eps = 1e-6f;              // added to mean(x^2) before the rsqrt
  FusedDtype dtype = FusedDtype::kBF16;  // element type of x, y, dy, dx
  void* stream = nullptr;                // cudaStream_t to launch on (nullptr: the legacy default stream)
};

// Longest normalised axis accepted. Past 1024 packs per row (bf16 N > 8192, float32 N > 4096) the kernels
// re-read the rest of the row from L2 instead of holding it in registers (slower, still correct); 65536
// keeps the workspace and the int32 column math small.
constexpr int kRmsNormMaxN = 65536;

// One tensor of a RoPE launch (q or k). Element (b, t, h, d) of x is at x + b*x_batch_stride +
// t*x_row_stride + h*x_head_stride + d; likewise for out. Strides are in elements, the D axis contiguous.
struct RopeTensor {
  const void* x = nullptr;       // [B, T, H, D] input (backward: the gradient of the forward's output)
  void* out = nullptr;           // [B, T, H, D] output (written; may be x itself with the same strides)
  int64_t x_batch_stride = 0;    // x: between batches
  int64_t x_row_stride = 0;      // x: between tokens
  int64_t x_head_stride = 0;     // x: between heads
  int64_t out_batch_stride = 0;  // out: between batches
  int64_t out_row_stride = 0;    // out: between tokens
  int64_t out_head_stride = 0;   // out: between heads
  int H = 0;                     // heads of this tensor (q and k may differ: GQA / MQA)
};

struct RopeParams {
  RopeTensor tensors[2];  // q and k (or one tensor): rotated with the same positions in one launch
  int num_tensors = 1;    // 1 or 2 entries of `tensors` in use
  const int64_t* positions = nullptr;  // [T] contiguous int64 absolute position of each token
  int B = 0;                           // batch size (shared by the tensors)
  int T = 0;                           // tokens (shared)
  int D = 0;                           // head dim (shared), 2 .. kRopeMaxD
  int R = 0;                           // rotary dim: even, 2 .. D; channels R .. D-1 pass through unchanged
  float theta = 10000.f;               // frequency base (> 0)
  bool inverse = false;                // false: rotate by +a (forward); true: by -a (backward of the forward)
  FusedDtype dtype = FusedDtype::kBF16;  // element type of every x and out
  void* stream = nullptr;                // cudaStream_t to launch on (nullptr: the legacy default stream)
};

// Largest head dim accepted (the cos / sin table of a token lives in R * 4 bytes of shared memory).
constexpr int kRopeMaxD = 8192;

// Causal depthwise short convolution (the conv of Mamba / Mamba2, DeltaNet, Gated DeltaNet, Based; FLA's
// ShortConvolution) over x [B, T, C], kernel size K, optional bias and SiLU, float32 math:
//   z_btc = bias_c + sum_{j<K} w_cj x_{b, t-K+1+j, c}   (x at t < 0 is zero),   y = silu(z) or z
//   backward, dz = dy * silu'(z) (or dy):  dx_btc = sum_j w_cj dz_{b, t+K-1-j, c}   (dz at t >= T is zero)
//                                          dw_cj = sum_{b,t} dz_btc x_{b, t-K+1+j, c},  dbias_c = sum_{b,t}
//                                          dz_btc
// One thread walks kShortConvRows tokens of one (batch, pack of channels) with the K - 1 previous inputs in
// registers (z is recomputed in the backward, nothing saved but x). dw and dbias are summed without float
// atomics: one row of partials per (batch, token tile) into the workspace, then a second kernel adds the
// rows in order (reruns give identical bits). The libtorch reference is ShortConvImpl's path
// (src/attnlab/mixers/short_conv.cpp).
constexpr int kShortConvRows = 16;  // tokens a thread walks
constexpr int kShortConvMaxK = 4;   // kernel sizes 2 .. 4 (the models use 4; larger fall back to libtorch)

struct ShortConvParams {
  const void* x = nullptr;        // [B, T, C] input, the C axis contiguous; read by forward and backward
  int64_t x_batch_stride = 0;     // x: elements between batches
  int64_t x_row_stride = 0;       // x: elements between tokens (>= C; a slice of a wider tensor is fine)
  void* y = nullptr;              // forward: [B, T, C] contiguous output (written)
  const float* weight = nullptr;  // [C, K] contiguous float32 (ShortConv's [C, 1, K] parameter)
  const float* bias = nullptr;    // [C] float32, or nullptr (no bias)
  const void* dy = nullptr;       // backward: [B, T, C] contiguous gradient of y
  void* dx = nullptr;             // backward: [B, T, C] contiguous gradient of x (written)
  float* dweight = nullptr;       // backward: [C, K] float32 (written, not accumulated)
  float* dbias = nullptr;         // backward: [C] float32 (written when bias is set)
  float* workspace = nullptr;     // backward: [B * ceil(T / kShortConvRows), C * (K + 1)] float32 partials
  int64_t B = 0, T = 0;           // batch size, tokens (>= 1 each)
  int C = 0;                      // channels (>= 1)
  int K = 0;                      // kernel size, 2 .. kShortConvMaxK
  bool silu = true;               // SiLU after the convolution
  FusedDtype dtype = FusedDtype::kBF16;  // element type of x, y, dy, dx
  void* stream = nullptr;                // cudaStream_t to launch on (nullptr: the legacy default stream)
};

// Floats of the backward's workspace for p.
size_t short_conv_workspace_floats(const ShortConvParams& p);

// nullptr when p is valid for the forward (backward = false) or the backward (backward = true), otherwise a
// static string saying what is wrong. The launchers run these and return cudaErrorInvalidValue on failure.
const char* rms_norm_check(const RmsNormParams& p, bool backward);
const char* rope_check(const RopeParams& p);
const char* short_conv_check(const ShortConvParams& p, bool backward);

// Short convolution forward (writes y) and backward (writes dx, dweight, dbias and the workspace: two
// launches, the second adds the partials). Asynchronous on p.stream; return the launch error.
cudaError_t launch_short_conv_fwd(const ShortConvParams& p);
cudaError_t launch_short_conv_bwd(const ShortConvParams& p);

// RMSNorm forward: writes y and (unless nullptr) rstd. One team of threads per row: a warp for rows of up
// to 64 packs (bf16 N <= 512), up to 512 threads for longer rows. Asynchronous on p.stream; returns the
// launch error.
cudaError_t launch_rms_norm_fwd(const RmsNormParams& p);

// Rows of the dw workspace the backward writes (its grid: the blocks resident at once on the current device,
// fewer for few rows). Call with every field but `workspace` set, on the device of the launch.
cudaError_t rms_norm_bwd_partials(const RmsNormParams& p, int64_t* partials);

// RMSNorm backward: reads x, weight, rstd, dy; writes dx and dweight (and the workspace). Two launches in
// order on p.stream: rms_norm_bwd_kernel (dx, per-block dw partials) and rms_norm_dw_kernel (their sum).
cudaError_t launch_rms_norm_bwd(const RmsNormParams& p);

// RoPE forward (inverse = false) or backward (inverse = true): one launch for all p.num_tensors tensors.
cudaError_t launch_rope(const RopeParams& p);
inline cudaError_t launch_rope_fwd(RopeParams p) {
  p.inverse = false;
  return launch_rope(p);
}
inline cudaError_t launch_rope_bwd(RopeParams p) {
  p.inverse = true;
  return launch_rope(p);
}

}  // namespace attnlab::kernels
