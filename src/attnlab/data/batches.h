// Token streams and batches: random contiguous windows (seeded) for training, fixed evenly spaced windows
// for validation.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace attnlab {

class TokenStream {
 public:
  TokenStream() = default;
  TokenStream(std::vector<int32_t> tokens, std::string name);

  int64_t size() const { return tokens_.numel(); }
  const std::string& name() const { return name_; }
  const torch::Tensor& tokens() const { return tokens_; }  // [N] int32

  // Checks that windows of seq_len + 1 tokens fit; the error names the split and both numbers.
  void require_window(int64_t seq_len) const;

  // x, y [B, T] int64 (y is x shifted by one) from windows starting at `starts`.
  std::pair<torch::Tensor, torch::Tensor> windows(const std::vector<int64_t>& starts, int64_t seq_len) const;

  // B random window starts from `rng`.
  std::vector<int64_t> random_starts(std::mt19937_64& rng, int64_t batch, int64_t seq_len) const;

  // `count` starts spread evenly over the stream (deterministic; used for validation loss).
  std::vector<int64_t> even_starts(int64_t count, int64_t seq_len) const;

 private:
  torch::Tensor tokens_;
  std::string name_;
};

// Cross-entropy (nats per token) of a unigram model of the training tokens, add-one smoothed, on `eval`:
// the baseline a language model must clearly beat.
double unigram_cross_entropy(const TokenStream& train, const TokenStream& eval, int64_t vocab_size);

}  // namespace attnlab
