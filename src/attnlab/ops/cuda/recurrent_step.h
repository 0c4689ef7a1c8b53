// Binding of the fused one-token decode step (kernels/recurrent_step/params.h) to torch tensors, no autograd.
//
// Like the flash binding, only the plain tensor API and <cuda_runtime.h> are used (a CPU-only libtorch
// compiles this too), launches go to the legacy default stream, and the device is set to the tensors'
// device for the duration of a call.
#pragma once

#include <torch/torch.h>

#include <string>

#include "attnlab/ops/recurrent.h"

namespace attnlab::ops::cuda {

// Which recurrence one step computes (params.h has the formulas):
//   linear       S = S + k v^T                                   (linear_attention)
//   scalar_gate  S = exp(g) S + k v^T, g [B,1,H]                 (simple_gla, RetNet, Mamba2)
//   key_gate     S = diag(exp(g)) S + k v^T, g [B,1,H,K]         (gla)
//   delta        S = S + k (beta (v - S^T k))^T, beta [B,1,H]    (delta_rule)
//   gated_delta  S = exp(g) S, then the delta update             (gated_delta_rule)
// and o = scale S^T q after the update.
enum class StepKind { linear, scalar_gate, key_gate, delta, gated_delta };
const char* step_kind_name(StepKind kind);

// Empty when the step kernel takes `args` for `kind`: CUDA tensors on one device, T == 1, q, k, v of one
// dtype (bf16, fp16 or float32), K = 64 or 128, V a multiple of 16 up to 4096, the gates / beta / h0 the kind
// needs with the shapes of recurrent.h, and no autograd (the kernel has no backward: not when grad mode is
// on and an input requires grad). Otherwise the reason, phrased for a log line: "K 96 not in the step
// kernel (64, 128)".
std::string recurrent_step_unusable_reason(StepKind kind, const RecurrentArgs& args, bool l2norm_qk);

// One step in the op layout of recurrent.h: q, k [B,1,H,K], v [B,1,H,V], g [B,1,H] or [B,1,H,K], beta
// [B,1,H], h0 [B,H,K,V] (optional: zeros), scale <= 0 meaning K^-0.5; l2norm_qk normalises q and k in the
// kernel (x / sqrt(sum x^2 + 1e-6), in float32). Returns o [B,1,H,V] in v's dtype and, when
// args.output_final_state, ht [B,H,K,V] float32 (a new tensor; h0 is not modified). g, beta and h0 are
// converted to contiguous float32 where needed. Throws attnlab::Error when the reason above is not empty.
RecurrentOut recurrent_step(StepKind kind, const RecurrentArgs& args, bool l2norm_qk = false);

// The raw step with caller-owned outputs (tests poison them): o [B,H,V] of q's dtype with a contiguous last
// axis; ht [B,H,K,V] float32 contiguous, which may be h0 itself (in place) or undefined (not written). q, k
// [B,H,K] and v [B,H,V] with contiguous last axes; g [B,H] / [B,H,K] and beta [B,H] float32 with contiguous
// last axes; h0 float32 contiguous or undefined (zeros). scale > 0 as given.
void recurrent_step_into(StepKind kind, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const torch::Tensor& g, const torch::Tensor& beta,
                         const torch::Tensor& h0, const torch::Tensor& o, const torch::Tensor& ht,
                         double scale, bool l2norm_qk);

}  // namespace attnlab::ops::cuda
