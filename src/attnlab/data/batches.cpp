// Token streams and batches.
#include "attnlab/data/batches.h"

#include <cmath>

#include "attnlab/core/error.h"

namespace attnlab {

TokenStream::TokenStream(std::vector<int32_t> tokens, std::string name) : name_(std::move(name)) {
  tokens_ = torch::from_blob(tokens.data(), {static_cast<int64_t>(tokens.size())}, torch::kInt).clone();
}

void TokenStream::require_window(int64_t seq_len) const {
  if (size() < seq_len + 1)
    fail("data.seq_len is {}: a window needs {} tokens, but the {} split has only {}", seq_len, seq_len + 1,
         name_, size());
}

std::pair<torch::Tensor, torch::Tensor> TokenStream::windows(const std::vector<int64_t>& starts,
                                                             int64_t seq_len) const {
  require_window(seq_len);
  auto idx = torch::tensor(starts, torch::kLong).unsqueeze(1) +
             torch::arange(seq_len + 1, torch::kLong).unsqueeze(0);
  auto w = tokens_.index_select(0, idx.flatten())
               .view({static_cast<int64_t>(starts.size()), seq_len + 1})
               .to(torch::kLong);
  return {w.narrow(1, 0, seq_len).contiguous(), w.narrow(1, 1, seq_len).contiguous()};
}

std::vector<int64_t> TokenStream::random_starts(std::mt19937_64& rng, int64_t batch, int64_t seq_len) const {
  require_window(seq_len);
  // uniform_int_distribution is implementation-defined; use a plain modulo of the 64-bit draw so that the
  // same seed gives the same batches with any standard library (the bias is < 2^-40 for our sizes).
  uint64_t range = static_cast<uint64_t>(size() - seq_len);
  std::vector<int64_t> starts(static_cast<size_t>(batch));
  for (auto& s : starts) s = static_cast<int64_t>(rng() % range);
  return starts;
}

std::vector<int64_t> TokenStream::even_starts(int64_t count, int64_t seq_len) const {
  require_window(seq_len);
  int64_t last = size() - seq_len - 1;
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < count; ++i) starts.push_back(count > 1 ? last * i / (count - 1) : 0);
  return starts;
}

double unigram_cross_entropy(const TokenStream& train, const TokenStream& eval, int64_t vocab_size) {
  auto counts = torch::bincount(train.tokens().to(torch::kLong), {}, vocab_size).to(torch::kDouble) + 1.0;
  auto logp = (counts / counts.sum()).log();
  return -logp.index_select(0, eval.tokens().to(torch::kLong)).mean().item<double>();
}

}  // namespace attnlab
