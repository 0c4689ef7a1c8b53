// Binding of the GLA chunk kernels (kernels/gla_chunk/params.h) to torch tensors, with autograd.
//
// Like the linear_chunk binding, only the tensor API and <cuda_runtime.h> are used, launches go to the
// legacy default stream, and the device is set to the tensors' device for the duration of a call.
#pragma once

#include <torch/torch.h>

#include <string>

#include "attnlab/ops/recurrent.h"

namespace attnlab::ops::cuda {

// Empty when the GLA chunk kernels take `args`: CUDA tensors on one device; q, k, v of one dtype, bf16 or
// fp16; K = V = 64 or 128; g [B,T,H,K] (converted to float32); h0 [B,H,K,V] (float32). Otherwise the reason,
// phrased for a log line: "head dims K = 96, V = 96 not in the kernels (K = V = 64 or 128)".
std::string gla_chunk_unusable_reason(const RecurrentArgs& args);

// o [B,T,H,V] (v's dtype) and, when args.output_final_state, ht [B,H,K,V] float32, differentiable in q, k,
// v, g and h0. S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t. args.chunk_size is ignored
// (the kernels use 64). Throws attnlab::Error when the reason above is not empty.
RecurrentOut gla_chunk(const RecurrentArgs& args);

}  // namespace attnlab::ops::cuda
