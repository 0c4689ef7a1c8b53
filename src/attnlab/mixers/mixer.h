// The token-mixer seam: every mechanism (softmax, linear attention, GLA, DeltaNet, ...) is a Mixer,
// registered by name with its options schema (registry.h). The model builds mixers only through the registry.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace attnlab {

// Per-sequence inference state of one mixer: a KV cache for softmax, a recurrent state for the linear
// family, rolling buffers for short convolutions. `position` counts the tokens already consumed.
struct MixerCache {
  virtual ~MixerCache() = default;
  int64_t position = 0;
};

// What a mixer costs, for parameter matching and the report.
struct MixerInfo {
  int64_t parameters = 0;
  // Bytes of inference state per sequence after T tokens (KV cache grows with T; a recurrent state does not).
  std::function<int64_t(int64_t T)> state_bytes;
  // Forward FLOPs per token at context length T (multiply-adds count 2).
  std::function<double(int64_t T)> flops_per_token;
};

// What a mixer is built from besides its own options.
struct MixerContext {
  int64_t d_model = 0;
  int64_t n_heads = 0;
  int64_t layer_index = 0;  // 0-based
  int64_t n_layers = 1;
};

class Mixer : public torch::nn::Module {
 public:
  // x [B, T, C] -> [B, T, C]. Without a cache: training (causal over the whole T). With a cache: T tokens
  // that follow the cache's `position` (a prompt to prefill, or one token to decode); the cache is updated.
  virtual torch::Tensor forward(const torch::Tensor& x, MixerCache* cache = nullptr) = 0;

  // An empty cache for `batch` sequences of up to `max_len` tokens on `device`.
  virtual std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                                 const torch::TensorOptions& options) const = 0;

  virtual MixerInfo info() const = 0;

  // Counts this module's parameters (for info()).
  int64_t count_parameters() const;
};

}  // namespace attnlab
