// Arguments and results shared by the recurrent ops of the linear family (linear attention, simple GLA,
// GLA, RWKV6, Based, DeltaNet, Gated DeltaNet). Semantics follow flash-linear-attention (FLA) exactly
// (../shared/mechanisms.md): layout [B, T, H, D], state [B, H, K, V] in float32, scale multiplies q,
// gates in log space (the decay at step t is exp(g_t)).
#pragma once

#include <torch/torch.h>

#include "attnlab/ops/impl.h"

namespace attnlab::ops {

struct RecurrentArgs {
  torch::Tensor q;     // [B, T, H, K]
  torch::Tensor k;     // [B, T, H, K]
  torch::Tensor v;     // [B, T, H, V]
  torch::Tensor g;     // log decay: [B, T, H] (one per head and step) or [B, T, H, K] (per key channel)
  torch::Tensor beta;  // [B, T, H] delta-rule step size (delta ops only)
  torch::Tensor u;     // [H, K] RWKV6's bonus for the current token (rwkv6 only)
  torch::Tensor h0;    // [B, H, K, V] initial state (optional; zeros when undefined)
  double scale = -1;   // multiplies q; <= 0 means K^-0.5
  bool output_final_state = false;
  int64_t chunk_size = 64;  // chunk form only; must be >= 1
  // Kernels only: chunks per sequence segment of the chunked CUDA kernels (0 = chosen from the shape and
  // the GPU). Tests set it small to run the segment scan on short sequences.
  int64_t kernel_seg_chunks = 0;
  // Delta ops: L2-normalise q and k over K first (FLA's use_qk_l2norm_in_kernel; ops::l2_normalize's
  // formula). The decode step kernel does it in its own registers; every other path normalises copies first
  // (on CUDA with the fused RMSNorm kernel). The DeltaNet layers set it.
  bool l2norm_qk = false;
};

struct RecurrentOut {
  torch::Tensor o;   // [B, T, H, V], dtype of v
  torch::Tensor ht;  // [B, H, K, V] float32 when output_final_state, else undefined
};

}  // namespace attnlab::ops
