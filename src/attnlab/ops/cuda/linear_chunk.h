// Binding of the chunked linear-family kernels (kernels/linear_chunk/params.h) to torch tensors, with
// autograd: linear attention (no gate) and simple GLA (one log decay per head and step: RetNet, Mamba2).
//
// Like the flash binding, only the tensor API and <cuda_runtime.h> are used, launches go to the legacy
// default stream, and the device is set to the tensors' device for the duration of a call.
#pragma once

#include <torch/torch.h>

#include <string>

#include "attnlab/ops/recurrent.h"

namespace attnlab::ops::cuda {

// Empty when the chunk kernels take `args` (gated: args.g [B,T,H] is read, else it must be undefined):
// CUDA tensors; q, k, v of one dtype, bf16 or fp16; K = V = 64 or 128; g float32 (converted otherwise);
// h0 float32 [B,H,K,V]. Otherwise the reason, phrased for a log line: "head dim 96 not in the kernels".
std::string linear_chunk_unusable_reason(const RecurrentArgs& args, bool gated);

// o [B,T,H,V] (v's dtype) and, when args.output_final_state, ht [B,H,K,V] float32, differentiable in q, k,
// v, g and h0. S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t; without a gate exp(g_t) = 1.
// args.chunk_size is ignored (the kernels use 64). Throws attnlab::Error when the reason above is not empty.
RecurrentOut linear_chunk(const RecurrentArgs& args, bool gated);

}  // namespace attnlab::ops::cuda
