// Softmax attention mixer: q, k, v, o projections; RoPE on q and k; GQA through num_kv_heads; optional
// qk-norm, sliding window and attention sinks; a contiguous KV cache for decoding.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/softmax_attention.h"

namespace attnlab {
namespace {

struct SoftmaxOptions {
  int64_t num_kv_heads = 0;  // 0: as many as query heads (MHA); 1: MQA; else GQA
  double rope_theta = 10000.0;
  bool rope = true;
  bool qk_norm = false;
  int64_t window = 0;
  int64_t n_sink = 0;
  std::string impl = "auto";
  std::string pattern = "dense";
  int64_t stride = 32;
  int64_t pattern_c = 1;

  static const OptionSet<SoftmaxOptions>& schema() {
    static const OptionSet<SoftmaxOptions> s = [] {
      OptionSet<SoftmaxOptions> o("mixer.softmax");
      o.add("num_kv_heads", &SoftmaxOptions::num_kv_heads, "key/value heads (0 = num_heads; must divide it)",
            check::non_negative<int64_t>());
      o.add("rope", &SoftmaxOptions::rope, "rotary position embedding on q and k");
      o.add("rope_theta", &SoftmaxOptions::rope_theta, "RoPE base", check::positive<double>());
      o.add("qk_norm", &SoftmaxOptions::qk_norm, "RMSNorm on q and k per head before RoPE");
      o.add("window", &SoftmaxOptions::window, "sliding window in tokens (0 = full causal attention)",
            check::non_negative<int64_t>());
      o.add("n_sink", &SoftmaxOptions::n_sink, "attention sinks: first tokens always visible (with a window)",
            check::non_negative<int64_t>());
      o.add("pattern", &SoftmaxOptions::pattern,
            "sparse pattern (Child et al. 2019): dense | strided | fixed",
            check::one_of({"dense", "strided", "fixed"}));
      o.add("stride", &SoftmaxOptions::stride, "stride of the strided pattern, block size of the fixed one",
            check::positive<int64_t>());
      o.add("pattern_c", &SoftmaxOptions::pattern_c, "fixed pattern: summary positions per block (<= stride)",
            check::positive<int64_t>());
      o.add("impl", &SoftmaxOptions::impl, "auto | naive | sdpa | kernel",
            check::one_of({"auto", "naive", "sdpa", "kernel"}));
      return o;
    }();
    return s;
  }
};

struct KVCache : MixerCache {
  torch::Tensor k, v;  // [B, capacity, Hkv, D]; the first `position` rows are filled
};

class SoftmaxMixer : public Mixer {
 public:
  SoftmaxMixer(const MixerContext& ctx, const SoftmaxOptions& opt)
      : opt_(opt), H_(ctx.n_heads), Hkv_(opt.num_kv_heads > 0 ? opt.num_kv_heads : ctx.n_heads) {
    ATTNLAB_CHECK(H_ > 0 && ctx.d_model % H_ == 0, "softmax: d_model {} must be divisible by num_heads {}",
                  ctx.d_model, H_);
    ATTNLAB_CHECK(H_ % Hkv_ == 0, "softmax: num_kv_heads {} must divide num_heads {}", Hkv_, H_);
    D_ = ctx.d_model / H_;
    impl_ = ops::parse_impl(opt.impl);
    pattern_ = ops::parse_sparse_pattern(opt.pattern);
    ATTNLAB_CHECK(opt.pattern == "dense" || opt.pattern_c <= opt.stride,
                  "softmax: pattern_c {} must be <= stride {}", opt.pattern_c, opt.stride);
    auto lin = [&](int64_t in, int64_t out) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
    };
    wq_ = register_module("wq", lin(ctx.d_model, H_ * D_));
    wk_ = register_module("wk", lin(ctx.d_model, Hkv_ * D_));
    wv_ = register_module("wv", lin(ctx.d_model, Hkv_ * D_));
    wo_ = register_module("wo", lin(H_ * D_, ctx.d_model));
    if (opt.qk_norm) {
      q_norm_ = register_module("q_norm", RMSNorm(D_));
      k_norm_ = register_module("k_norm", RMSNorm(D_));
    }
    init_linear(wq_, 0.02);
    init_linear(wk_, 0.02);
    init_linear(wv_, 0.02);
    init_linear(wo_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers)));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    auto q = wq_(x).view({B, T, H_, D_});
    auto k = wk_(x).view({B, T, Hkv_, D_});
    auto v = wv_(x).view({B, T, Hkv_, D_});
    if (opt_.qk_norm) {
      q = q_norm_(q);
      k = k_norm_(k);
    }
    int64_t start = cache ? cache->position : 0;
    if (opt_.rope) {
      q = apply_rope(q, start, opt_.rope_theta);
      k = apply_rope(k, start, opt_.rope_theta);
    }
    ops::SoftmaxArgs args;
    args.causal = true;
    args.window = opt_.window;
    args.n_sink = opt_.n_sink;
    args.pattern = pattern_;
    args.stride = opt_.stride;
    args.pattern_c = opt_.pattern_c;
    if (cache) {
      auto* kv = dynamic_cast<KVCache*>(cache);
      ATTNLAB_CHECK(kv, "softmax: expected a KV cache made by this mixer's make_cache()");
      append(*kv, k, v);
      args.k = kv->k.narrow(1, 0, kv->position);
      args.v = kv->v.narrow(1, 0, kv->position);
      args.q_offset = start;
    } else {
      args.k = k;
      args.v = v;
    }
    args.q = q;
    auto o = ops::softmax_attention(args, impl_);  // [B, T, H, D]
    return wo_(o.reshape({B, T, H_ * D_}));
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<KVCache>();
    c->k = torch::zeros({batch, std::max<int64_t>(max_len, 1), Hkv_, D_}, options);
    c->v = torch::zeros_like(c->k);
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    int64_t kv_width = 2 * Hkv_ * D_;
    int64_t window = opt_.window;
    int64_t sinks = opt_.n_sink;
    int64_t d_model = H_ * D_;
    // bytes: K and V for every cached token (bf16 at inference: 2 bytes each), bounded by the window.
    i.state_bytes = [kv_width, window, sinks](int64_t T) {
      int64_t kept = window > 0 ? std::min<int64_t>(T, window + sinks) : T;
      return kept * kv_width * 2;
    };
    i.flops_per_token = [d_model, kv_width, window, this](int64_t T) {
      double proj = 2.0 * d_model * (2.0 * d_model + static_cast<double>(kv_width));
      double ctx = static_cast<double>(window > 0 ? std::min<int64_t>(T, window) : T);
      return proj + 4.0 * static_cast<double>(H_ * D_) * ctx / 2.0;  // causal: half the context on average
    };
    return i;
  }

 private:
  // Writes k, v [B, T, Hkv, D] at the cache's position, growing the buffers if a prompt outruns them.
  void append(KVCache& c, const torch::Tensor& k, const torch::Tensor& v) {
    int64_t T = k.size(1), need = c.position + T;
    if (need > c.k.size(1)) {
      int64_t cap = std::max<int64_t>(need, 2 * c.k.size(1));
      auto grow = [&](const torch::Tensor& old) {
        auto t = torch::zeros({old.size(0), cap, old.size(2), old.size(3)}, old.options());
        t.narrow(1, 0, c.position).copy_(old.narrow(1, 0, c.position));
        return t;
      };
      c.k = grow(c.k);
      c.v = grow(c.v);
    }
    ATTNLAB_CHECK(k.size(0) == c.k.size(0), "softmax: cache made for batch {}, got batch {}", c.k.size(0),
                  k.size(0));
    c.k.narrow(1, c.position, T).copy_(k.detach().to(c.k.scalar_type()));
    c.v.narrow(1, c.position, T).copy_(v.detach().to(c.v.scalar_type()));
    c.position = need;
  }

  SoftmaxOptions opt_;
  int64_t H_, Hkv_, D_ = 0;
  ops::Impl impl_;
  ops::SparsePattern pattern_ = ops::SparsePattern::dense;
  torch::nn::Linear wq_{nullptr}, wk_{nullptr}, wv_{nullptr}, wo_{nullptr};
  RMSNorm q_norm_{nullptr}, k_norm_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER("softmax", SoftmaxOptions, SoftmaxMixer,
                       "causal softmax attention with RoPE, GQA, optional sliding window and sinks");

}  // namespace attnlab
