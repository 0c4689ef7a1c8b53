// Softmax attention on [B, T, H, D]: o_t = sum_s softmax_s(scale q_t.k_s) v_s over the visible keys s.
// Options: causal or not, GQA/MQA (k and v with fewer heads dividing H), a sliding window and attention
// sinks.
#pragma once

#include <torch/torch.h>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/sparse_patterns.h"

namespace attnlab::ops {

struct SoftmaxArgs {
  torch::Tensor q;     // [B, Tq, H, K]
  torch::Tensor k;     // [B, Tk, Hkv, K], Hkv divides H (GQA: query head h reads kv head h / (H / Hkv))
  torch::Tensor v;     // [B, Tk, Hkv, V]
  double scale = -1;   // multiplies q.k; <= 0 means K^-0.5
  bool causal = true;  // key s is visible to query t only if s <= t (in absolute positions)
  int64_t window = 0;  // > 0: only keys with t - window < s <= t (plus sinks) are visible
  int64_t n_sink = 0;  // the first n_sink keys stay visible to every query (StreamingLLM)
  SparsePattern pattern = SparsePattern::dense;  // Child et al. 2019's strided / fixed patterns (with causal)
  int64_t stride = 0;                            // the pattern's stride (block size for fixed)
  int64_t pattern_c = 1;                         // fixed: summary positions at the end of each block
  int64_t q_offset =
      -1;  // absolute position of the first query; < 0 means Tk - Tq (queries are the last keys)
};

// Returns o [B, Tq, H, V]. Impl: naive (materialised scores, float32 softmax), sdpa (ATen's
// scaled_dot_product_attention where the libtorch version has it), kernel (our flash kernel: CUDA, bf16 /
// fp16, head dim 64 or 128, no sinks), automatic (the kernel where it applies, else SDPA, else naive;
// a fallback on CUDA is logged once per reason).
torch::Tensor softmax_attention(const SoftmaxArgs& args, Impl impl = Impl::automatic);

// The visibility mask [Tq, Tk] (true = visible) for the args' causal / window / sink settings, or an
// undefined tensor when every key is visible.
torch::Tensor softmax_visibility(const SoftmaxArgs& args, const torch::Device& device);

}  // namespace attnlab::ops
