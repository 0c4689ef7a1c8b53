// The language model.
#include "attnlab/model/lm.h"

#include <cmath>
#include <memory>
#include <mutex>
#include <optional>

#include "attnlab/bench/tracer.h"
#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"

namespace attnlab {

namespace {

// Backward spans per block (mixer, MLP) from gradient hooks on the residual stream. Block k maps b_k to
// b_{k+1} (b_0 the embeddings); autograd computes the gradient of b_{k+1} before any of block k's backward
// runs and that of b_k (complete: the residual path and the block's) after all of it, so a hook on b_{k+1}
// opens block k's span and a hook on b_k closes it. The hooks run on the thread that runs the backward of
// these tensors: the calling thread on the CPU, the device's autograd thread on CUDA (top-level spans of
// that thread there).
class BackwardSpans : public std::enable_shared_from_this<BackwardSpans> {
 public:
  // The input of the first block.
  void boundary(const torch::Tensor& b) { hook(b, 0); }
  // The block just run: its name and its output (the next block's input).
  void block(std::string name, const torch::Tensor& out) {
    spans_.push_back({std::move(name)});
    hook(out, spans_.size());
  }

 private:
  struct Open {
    std::string name;
    bool open = false;
    size_t index = 0;
    uint64_t generation = 0;
  };
  void hook(const torch::Tensor& b, size_t k) {
    // The hooks own the object (the graph keeps it alive until the backward is done; no cycle: it holds
    // no tensors).
    b.register_hook([self = shared_from_this(), k](const torch::Tensor&) { self->reached(k); });
  }
  // The gradient of b_k is complete: block k's backward is over and block k-1's begins.
  void reached(size_t k) {
    auto& tracer = bench::Tracer::global();
    std::lock_guard<std::mutex> lock(mutex_);
    if (k < spans_.size() && spans_[k].open) {
      tracer.close(spans_[k].index, spans_[k].generation);
      spans_[k].open = false;
    }
    if (k > 0 && tracer.enabled()) {
      Open& o = spans_[k - 1];
      o.index = tracer.open(o.name, "backward", o.generation);
      o.open = true;
    }
  }
  std::mutex mutex_;
  std::vector<Open> spans_;
};

}  // namespace

const OptionSet<ModelOptions>& ModelOptions::schema() {
  static const OptionSet<ModelOptions> s = [] {
    OptionSet<ModelOptions> o("model");
    o.add("vocab_size", &ModelOptions::vocab_size, "vocabulary size (0 = from the tokenizer)",
          check::non_negative<int64_t>());
    o.add("d_model", &ModelOptions::d_model, "model width", check::positive<int64_t>());
    o.add("n_layers", &ModelOptions::n_layers, "number of blocks", check::positive<int64_t>());
    o.add("n_heads", &ModelOptions::n_heads, "heads per mixer", check::positive<int64_t>());
    o.add("mixer", &ModelOptions::mixer, "token mixer of every layer (see `attnlab list`)");
    o.add("layers", &ModelOptions::layers, "one mixer name per layer (hybrid pattern); overrides mixer");
    o.add("mlp_ratio", &ModelOptions::mlp_ratio, "SwiGLU hidden width / d_model (0 = no MLP)",
          check::non_negative<double>());
    o.add("positions", &ModelOptions::positions, "position embeddings added to tokens: none | learned",
          check::one_of({"none", "learned"}));
    o.add("max_positions", &ModelOptions::max_positions,
          "rows of the learned position table (needed when positions = learned)",
          check::non_negative<int64_t>());
    o.add("tie_embeddings", &ModelOptions::tie_embeddings, "share the embedding and output head weights");
    o.add("norm_eps", &ModelOptions::norm_eps, "RMSNorm epsilon", check::positive<double>());
    o.add("init_std", &ModelOptions::init_std, "std of the normal init of embeddings and linears",
          check::positive<double>());
    return o;
  }();
  return s;
}

std::vector<std::string> ModelOptions::layer_mixers() const {
  if (layers.empty()) return std::vector<std::string>(static_cast<size_t>(n_layers), mixer);
  if (static_cast<int64_t>(layers.size()) != n_layers)
    fail("model.layers names {} mixers but model.n_layers is {}; give one mixer per layer", layers.size(),
         n_layers);
  return layers;
}

LanguageModelImpl::LanguageModelImpl(const ModelOptions& opt,
                                     const std::map<std::string, std::shared_ptr<AnyOptions>>& mixer_options)
    : opt_(opt) {
  ModelOptions::schema().validate(opt);
  ATTNLAB_CHECK(opt.vocab_size > 0, "model.vocab_size must be set (> 0) before building the model, got {}",
                opt.vocab_size);
  embed_ = register_module("embed", torch::nn::Embedding(opt.vocab_size, opt.d_model));
  {
    torch::NoGradGuard g;
    embed_->weight.normal_(0.0, opt.init_std);
  }
  if (opt.positions == "learned") {
    ATTNLAB_CHECK(opt.max_positions > 0,
                  "model.positions is learned but model.max_positions is {}; set it to the longest sequence",
                  opt.max_positions);
    pos_embed_ = register_module("pos_embed", torch::nn::Embedding(opt.max_positions, opt.d_model));
    torch::NoGradGuard g;
    pos_embed_->weight.normal_(0.0, opt.init_std);
  }
  auto names = opt.layer_mixers();
  auto& reg = MixerRegistry::instance();
  for (int64_t i = 0; i < opt.n_layers; ++i) {
    const std::string& name = names[static_cast<size_t>(i)];
    const auto& entry = reg.get(name);
    MixerContext ctx{opt.d_model, opt.n_heads, i, opt.n_layers};
    auto it = mixer_options.find(name);
    std::unique_ptr<AnyOptions> defaults;
    const AnyOptions* mo = nullptr;
    if (it != mixer_options.end() && it->second) {
      mo = it->second.get();
    } else {
      defaults = entry.make_options();
      mo = defaults.get();
    }
    auto mixer = build_mixer(name, ctx, *mo);
    mixers_.push_back(register_module("mixer" + std::to_string(i), mixer));
    norm1_.push_back(register_module("norm1_" + std::to_string(i), RMSNorm(opt.d_model, opt.norm_eps)));
    if (opt.mlp_ratio > 0) {
      norm2_.push_back(register_module("norm2_" + std::to_string(i), RMSNorm(opt.d_model, opt.norm_eps)));
      auto mlp = register_module("mlp" + std::to_string(i),
                                 SwiGLU(opt.d_model, swiglu_hidden(opt.d_model, opt.mlp_ratio)));
      init_linear(mlp->w1, opt.init_std);
      init_linear(mlp->w3, opt.init_std);
      init_linear(mlp->w2, opt.init_std / std::sqrt(2.0 * static_cast<double>(opt.n_layers)));
      mlps_.push_back(mlp);
    }
  }
  final_norm_ = register_module("final_norm", RMSNorm(opt.d_model, opt.norm_eps));
  if (!opt.tie_embeddings) {
    head_ = register_module(
        "head", torch::nn::Linear(torch::nn::LinearOptions(opt.d_model, opt.vocab_size).bias(false)));
    init_linear(head_, opt.init_std);
  }
}

torch::Tensor LanguageModelImpl::forward(const torch::Tensor& tokens, ModelCache* cache) {
  return head(hidden(tokens, cache));  // [B, T, V]
}

torch::Tensor LanguageModelImpl::head(const torch::Tensor& h) {
  ATTNLAB_TRACE("head", "forward");
  return opt_.tie_embeddings ? torch::matmul(h, embed_->weight.t()) : head_(h);
}

torch::Tensor LanguageModelImpl::hidden(const torch::Tensor& tokens, ModelCache* cache) {
  ATTNLAB_CHECK(tokens.dim() == 2, "model: tokens must be [B,T], got {}", shape_str(tokens.sizes()));
  if (cache)
    ATTNLAB_CHECK(cache->layers.size() == mixers_.size(), "model: cache has {} layers, the model {}",
                  cache->layers.size(), mixers_.size());
  auto x = embed_(tokens);  // [B, T, C]
  if (pos_embed_) {
    const int64_t start = cache ? cache->position() : 0, T = tokens.size(1);
    ATTNLAB_CHECK(start + T <= opt_.max_positions,
                  "model: positions {}..{} exceed the learned table's {} rows (model.max_positions)", start,
                  start + T - 1, opt_.max_positions);
    x = x + pos_embed_(torch::arange(start, start + T, tokens.options()));
  }
  // Profiling spans per layer (the study's profile stage); a disabled tracer costs one branch per layer.
  const bool tracing = bench::Tracer::global().enabled();
  const auto names = tracing ? opt_.layer_mixers() : std::vector<std::string>{};
  std::shared_ptr<BackwardSpans> bwd;
  if (tracing && x.requires_grad() && torch::GradMode::is_enabled()) bwd = std::make_shared<BackwardSpans>();
  if (bwd) bwd->boundary(x);
  for (size_t i = 0; i < mixers_.size(); ++i) {
    {
      std::optional<bench::Span> span;
      if (tracing) span.emplace(fmt::format("layer{}.{}", i, names[i]), "forward");
      x = x + mixers_[i]->forward(norm1_[i](x), cache ? cache->layers[i].get() : nullptr);
    }
    if (bwd) bwd->block(fmt::format("layer{}.{}.backward", i, names[i]), x);
    if (!mlps_.empty()) {
      std::optional<bench::Span> span;
      if (tracing) span.emplace(fmt::format("layer{}.mlp", i), "forward");
      x = x + mlps_[i](norm2_[i](x));
    }
    if (bwd && !mlps_.empty()) bwd->block(fmt::format("layer{}.mlp.backward", i), x);
  }
  return final_norm_(x);
}

ModelCache LanguageModelImpl::make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const {
  ModelCache c;
  for (const auto& m : mixers_) c.layers.push_back(m->make_cache(batch, max_len, options));
  return c;
}

int64_t LanguageModelImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

int64_t LanguageModelImpl::num_non_embedding_parameters() const {
  return num_parameters() - embed_->weight.numel();
}

}  // namespace attnlab
