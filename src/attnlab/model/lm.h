// The language model: embedding, N pre-norm blocks x + mixer(norm(x)), x + SwiGLU(norm(x)), final norm,
// head (tied to the embedding or not). Mixers come from the registry, one per layer (hybrid patterns).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/options.h"
#include "attnlab/mixers/mixer.h"
#include "attnlab/model/layers.h"

namespace attnlab {

struct ModelOptions {
  int64_t vocab_size = 0;  // 0: taken from the tokenizer
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  std::string mixer = "softmax";    // the mixer of every layer, unless `layers` names one per layer
  std::vector<std::string> layers;  // hybrid pattern, e.g. [gated_deltanet, gated_deltanet, softmax]
  double mlp_ratio = 8.0 / 3.0;     // SwiGLU hidden = ratio * d_model (0: no MLP, as in Zoology's MQAR)
  bool tie_embeddings = true;
  // Learned absolute position embeddings added to the token embeddings ("learned", as Zoology's attention
  // on MQAR) or none (the default: softmax uses RoPE, the linear family needs no positions).
  std::string positions = "none";
  int64_t max_positions = 0;  // rows of the learned table (positions must stay below it)
  double norm_eps = 1e-6;
  double init_std = 0.02;

  static const OptionSet<ModelOptions>& schema();
  // The mixer name of each layer.
  std::vector<std::string> layer_mixers() const;
};

// Inference state of the whole model: one cache per layer.
struct ModelCache {
  std::vector<std::unique_ptr<MixerCache>> layers;
  int64_t position() const { return layers.empty() ? 0 : layers.front()->position; }
};

class LanguageModelImpl : public torch::nn::Module {
 public:
  // `mixer_options` maps a mixer name to its options (missing names get defaults).
  LanguageModelImpl(const ModelOptions& opt,
                    const std::map<std::string, std::shared_ptr<AnyOptions>>& mixer_options);

  // tokens [B, T] (int64) -> logits [B, T, vocab]. With a cache: continue from cache->position().
  torch::Tensor forward(const torch::Tensor& tokens, ModelCache* cache = nullptr);
  // The two halves of forward: the final-normed hidden states [B, T, C], and the head applied to any
  // [..., C] (tasks that score a few positions apply the head to those rows only: with a vocabulary of
  // 8192 the head is otherwise most of the step).
  torch::Tensor hidden(const torch::Tensor& tokens, ModelCache* cache = nullptr);
  torch::Tensor head(const torch::Tensor& h);

  ModelCache make_cache(int64_t batch, int64_t max_len, const torch::TensorOptions& options) const;

  int64_t num_parameters() const;
  // Parameters without the embedding table (the usual "non-embedding" count).
  int64_t num_non_embedding_parameters() const;
  const ModelOptions& options() const { return opt_; }
  const std::vector<std::shared_ptr<Mixer>>& mixers() const { return mixers_; }

 private:
  ModelOptions opt_;
  torch::nn::Embedding embed_{nullptr};
  torch::nn::Embedding pos_embed_{nullptr};  // positions == "learned" only
  std::vector<std::shared_ptr<Mixer>> mixers_;
  std::vector<RMSNorm> norm1_, norm2_;
  std::vector<SwiGLU> mlps_;
  RMSNorm final_norm_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(LanguageModel);

}  // namespace attnlab
