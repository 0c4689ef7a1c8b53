// Based mixer (Arora et al. 2024): normalised linear attention through a 2nd-order Taylor feature map.
//
// The Based architecture is a hybrid: Based linear attention for long-range recall plus sliding-window
// softmax attention (window 64) for precise local shifts. The window layer is not a new mixer: it is the
// softmax mixer with `window`. Compose the hybrid as a layer pattern in the run config:
//   model:
//     n_layers: 4
//     layers: [based, softmax, based, softmax]
//   mixer:
//     based: {feature_dim: 16}
//     softmax: {window: 64}
// (or `--set mixer.softmax.window=64`). Every softmax layer of that model is then windowed.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/mixers/short_conv.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/linear_attention.h"

namespace attnlab {
namespace {

struct BasedOptions {
  int64_t feature_dim = 16;
  bool short_conv = false;
  int64_t conv_size = 4;
  double eps = 1e-6;
  std::string impl = "auto";
  int64_t chunk_size = 64;

  static const OptionSet<BasedOptions>& schema() {
    static const OptionSet<BasedOptions> s = [] {
      OptionSet<BasedOptions> o("mixer.based");
      o.add("feature_dim", &BasedOptions::feature_dim,
            "projected q, k dim d per head; the Taylor features have 1 + d + d(d+1)/2 dims (paper: 16)",
            check::positive<int64_t>());
      o.add("short_conv", &BasedOptions::short_conv,
            "causal depthwise conv (no activation) on the projected q, k, v");
      o.add("conv_size", &BasedOptions::conv_size, "short conv kernel size", check::positive<int64_t>());
      o.add("eps", &BasedOptions::eps, "added to the normaliser phi(q).z", check::positive<double>());
      o.add("impl", &BasedOptions::impl, "linear_attention_normalized op: auto | naive | chunk",
            check::one_of({"auto", "naive", "chunk"}));
      o.add("chunk_size", &BasedOptions::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

// State [B, H, F, V+1]: S in the first V columns, the normaliser z in the last (linear_attention_normalized).
struct BasedCache : MixerCache {
  torch::Tensor state;                   // [B, H, F, V + 1], F = 1 + d + d(d+1)/2
  torch::Tensor conv_q, conv_k, conv_v;  // [B, conv_size - 1, H*d | H*d | H*V]
};

class BasedMixer : public Mixer {
 public:
  BasedMixer(const MixerContext& ctx, const BasedOptions& opt)
      : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads), D_(opt.feature_dim) {
    ATTNLAB_CHECK(H_ > 0 && C_ % H_ == 0, "based: d_model {} must be divisible by num_heads {}", C_, H_);
    V_ = C_ / H_;
    F_ = ops::feature_dim(D_, "taylor");
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [](int64_t in, int64_t out, double sd) {
      torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
      init_linear(l, sd);
      return l;
    };
    q_proj_ = register_module("q_proj", lin(C_, H_ * D_, 0.02));
    k_proj_ = register_module("k_proj", lin(C_, H_ * D_, 0.02));
    v_proj_ = register_module("v_proj", lin(C_, H_ * V_, 0.02));
    o_proj_ = register_module("o_proj",
                              lin(H_ * V_, C_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers))));
    if (opt.short_conv) {
      q_conv_ = register_module("q_conv1d", ShortConv(H_ * D_, opt.conv_size, false, false));
      k_conv_ = register_module("k_conv1d", ShortConv(H_ * D_, opt.conv_size, false, false));
      v_conv_ = register_module("v_conv1d", ShortConv(H_ * V_, opt.conv_size, false, false));
    }
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    ATTNLAB_CHECK(x.dim() == 3 && x.size(2) == C_, "based: x must be [B,T,C] with C={}, got {}", C_,
                  shape_str(x.sizes()));
    const int64_t B = x.size(0), T = x.size(1);
    BasedCache* c = nullptr;
    if (cache) {
      c = dynamic_cast<BasedCache*>(cache);
      ATTNLAB_CHECK(c, "based: expected a cache made by this mixer's make_cache(), got another kind");
    }
    auto q = q_proj_(x), k = k_proj_(x), v = v_proj_(x);  // [B, T, H*d], [B, T, H*d], [B, T, H*V]
    if (opt_.short_conv) {
      q = q_conv_(q, c ? &c->conv_q : nullptr);
      k = k_conv_(k, c ? &c->conv_k : nullptr);
      v = v_conv_(v, c ? &c->conv_v : nullptr);
    }
    ops::RecurrentArgs a;
    // phi(q).phi(k) = 1 + q.k/sqrt(d) + (q.k)^2/(2d) (Arora et al. 2024): the Taylor approximation
    // of exp(q.k/sqrt(d)), always > 0, so the normaliser never vanishes.
    a.q = ops::feature_map(q.view({B, T, H_, D_}), "taylor");  // [B, T, H, F]
    a.k = ops::feature_map(k.view({B, T, H_, D_}), "taylor");  // [B, T, H, F]
    a.v = v.view({B, T, H_, V_});                              // [B, T, H, V]
    a.scale = 1.0;  // the textbook ratio; the scale only weighs against eps
    a.chunk_size = opt_.chunk_size;
    if (c) {
      a.h0 = c->state;
      a.output_final_state = true;
    }
    auto out = ops::linear_attention_normalized(a, impl_, opt_.eps);  // o [B, T, H, V]
    if (c) {
      c->state = out.ht.detach();
      c->position += T;
    }
    return o_proj_(out.o.reshape({B, T, H_ * V_}));
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t /*max_len*/,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<BasedCache>();
    auto acc = options.dtype() == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, F_, V_ + 1}, options.dtype(acc));
    if (opt_.short_conv) {
      c->conv_q = q_conv_->make_buffer(batch, options);
      c->conv_k = k_conv_->make_buffer(batch, options);
      c->conv_v = v_conv_->make_buffer(batch, options);
    }
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    // float32 state: d_v * (1 + d + d(d+1)/2) per head (153 d_v for d = 16), plus the normaliser column z.
    int64_t state = 4 * H_ * F_ * (V_ + 1);
    int64_t conv = opt_.short_conv ? 2 * (opt_.conv_size - 1) * (2 * H_ * D_ + H_ * V_) : 0;  // bf16
    i.state_bytes = [state, conv](int64_t) { return state + conv; };
    const double C = static_cast<double>(C_), H = static_cast<double>(H_), D = static_cast<double>(D_),
                 V = static_cast<double>(V_), F = static_cast<double>(F_);
    double proj = 2.0 * C * H * (2.0 * D + V) + 2.0 * H * V * C;
    double convf = opt_.short_conv ? 2.0 * static_cast<double>(opt_.conv_size) * H * (2.0 * D + V) : 0.0;
    double features = 2.0 * H * F;              // one product per Taylor feature, for q and k
    double op = 4.0 * H * F * (V + 1) + H * V;  // state update + read (recurrent form), the division
    i.flops_per_token = [total = proj + convf + features + op](int64_t) { return total; };
    return i;
  }

 private:
  BasedOptions opt_;
  int64_t C_, H_, D_, V_ = 0, F_ = 0;
  ops::Impl impl_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, o_proj_{nullptr};
  ShortConv q_conv_{nullptr}, k_conv_{nullptr}, v_conv_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER(
    "based", BasedOptions, BasedMixer,
    "Based: normalised linear attention with the Taylor feature map (pair with a windowed softmax)");

}  // namespace attnlab
