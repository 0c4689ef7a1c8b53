// Sampling.
#include "attnlab/infer/sample.h"

#include "attnlab/core/error.h"

namespace attnlab {

int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& o, torch::Generator& gen) {
  auto l = logits.to(torch::kCPU, torch::kFloat);
  if (o.temperature <= 0) return l.argmax().item<int64_t>();
  l = l / o.temperature;
  if (o.top_k > 0 && o.top_k < l.size(0)) {
    auto kth = std::get<0>(l.topk(o.top_k)).min();
    l = l.masked_fill(l < kth, -std::numeric_limits<float>::infinity());
  }
  auto p = torch::softmax(l, 0);
  return at::multinomial(p, 1, false, gen).item<int64_t>();
}

std::vector<int32_t> generate(LanguageModel& model, const std::vector<int32_t>& prompt, int64_t length,
                              const SamplingOptions& o, const torch::Device& device) {
  ATTNLAB_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  torch::NoGradGuard no_grad;
  model->eval();
  auto gen = at::detail::createCPUGenerator(o.seed);
  auto cache = model->make_cache(1, static_cast<int64_t>(prompt.size()) + length,
                                 torch::TensorOptions().dtype(torch::kFloat).device(device));
  std::vector<int64_t> p(prompt.begin(), prompt.end());
  auto x = torch::tensor(p, torch::kLong).unsqueeze(0).to(device);  // [1, T]
  std::vector<int32_t> out;
  for (int64_t i = 0; i < length; ++i) {
    auto logits = model->forward(x, &cache);  // [1, T, V]
    int64_t next = sample_token(logits[0][-1], o, gen);
    out.push_back(static_cast<int32_t>(next));
    x = torch::full({1, 1}, next, torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  return out;
}

}  // namespace attnlab
