// Autoregressive sampling with the model's caches: prefill the prompt once, then decode one token at a time.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "attnlab/model/lm.h"

namespace attnlab {

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 0;
};

// Returns the `length` new token ids that follow `prompt` (which must not be empty).
std::vector<int32_t> generate(LanguageModel& model, const std::vector<int32_t>& prompt, int64_t length,
                              const SamplingOptions& options, const torch::Device& device);

// Picks one token id from logits [V] (float32).
int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& options, torch::Generator& gen);

}  // namespace attnlab
