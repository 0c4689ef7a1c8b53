// Binding of the fused RMSNorm and RoPE kernels (kernels/fused/params.h) to torch tensors, with autograd.
//
// Only the plain tensor API and <cuda_runtime.h> are used (a CPU-only libtorch compiles this too). Every
// launch goes to the legacy default stream, PyTorch's stream unless a caller switched streams; the device is
// set to the tensors' device for the duration of a call. The libtorch references (and the CPU path) are
// rms_norm_reference / rope_reference in attnlab/model/layers.h.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace attnlab::ops::cuda {

// y = x * rsqrt(mean(x^2, -1) + eps) * weight, differentiable in x and weight. x [..., N] float32, bf16 or
// fp16 on a CUDA device (any layout: it is viewed as [rows, N], copied when that needs a copy), weight [N]
// float32 on x's device, 1 <= N <= 65536. Returns y of x's shape and dtype, contiguous. The backward saves
// x, weight and rstd [rows] float32, and allocates dx, dweight and a [partials, N] float32 workspace.
// Throws attnlab::Error on inputs rms_norm_unusable_reason rejects.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Empty when rms_norm takes these inputs; otherwise the reason, phrased for a log line ("x on cpu, the
// fused rms_norm kernel needs CUDA").
std::string rms_norm_unusable_reason(const torch::Tensor& x, const torch::Tensor& weight);

// Rotary embedding, the rotate-half layout (layers.h's apply_rope_positions), differentiable in x:
// x [B, T, H, D] float32, bf16 or fp16 on a CUDA device (any strides; copied when the last axis is not
// contiguous), positions [T] int64 on x's device, rotary dim R even <= D (0: D), D <= 8192. Returns a
// contiguous [B, T, H, D] tensor of x's dtype.
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& positions, double theta,
                   int64_t rotary_dim = 0);

// q and k rotated in one launch (each may have its own head count and strides: GQA, slices of one fused
// qkv projection). Returns {q_rotated, k_rotated}.
std::vector<torch::Tensor> rope_qk(const torch::Tensor& q, const torch::Tensor& k,
                                   const torch::Tensor& positions, double theta, int64_t rotary_dim = 0);

// Empty when rope takes these inputs; otherwise the reason, phrased for a log line.
std::string rope_unusable_reason(const torch::Tensor& x, const torch::Tensor& positions,
                                 int64_t rotary_dim = 0);

// ---- raw passes with caller-owned outputs (tests poison them; no autograd)
// x [..., N] as for rms_norm; y contiguous of x's shape and dtype; rstd [rows] float32 contiguous, or
// undefined (not written).
void rms_norm_fwd_into(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                       const torch::Tensor& y, const torch::Tensor& rstd);
// dy, x [..., N] (any layout); rstd [rows] from the forward; dx contiguous of x's shape and dtype; dweight
// [N] float32 contiguous (overwritten, not accumulated).
void rms_norm_bwd_into(const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& weight,
                       const torch::Tensor& rstd, const torch::Tensor& dx, const torch::Tensor& dweight);
// x, out [B, T, H, D] of one dtype, last axes contiguous, other strides free (out may be x: in place);
// inverse = true rotates by -angle (the backward applied to a gradient).
void rope_into(const torch::Tensor& x, const torch::Tensor& positions, double theta, int64_t rotary_dim,
               const torch::Tensor& out, bool inverse);

}  // namespace attnlab::ops::cuda
