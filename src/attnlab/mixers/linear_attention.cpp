// Linear attention mixer (Katharopoulos et al. 2020, "Transformers are RNNs"): q, k, v, o projections, a
// feature map phi on q and k, the causal recurrence S_t = S_{t-1} + phi(k_t) v_t^T, optionally normalised.
// Seed 003 (LAT): its snippet divides q(k^T v) by a cumsum of k without the causal state; this is the correct
// causal form of the paper's normalised attention (mechanisms.md).
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/linear_attention.h"

namespace attnlab {
namespace {

struct LinearAttentionOptions {
  std::string feature_map = "elu1";
  bool normalize = true;
  int64_t chunk_size = 64;
  std::string impl = "auto";

  static const OptionSet<LinearAttentionOptions>& schema() {
    static const OptionSet<LinearAttentionOptions> s = [] {
      OptionSet<LinearAttentionOptions> o("mixer.linear_attention");
      o.add("feature_map", &LinearAttentionOptions::feature_map,
            "phi on q and k: elu1 (elu+1, the paper's), relu, identity, taylor (Based's 2nd-order map)",
            check::one_of({"elu1", "relu", "identity", "taylor"}));
      o.add("normalize", &LinearAttentionOptions::normalize,
            "divide by phi(q_t).z_t, z_t = sum_{s<=t} phi(k_s) (the paper's normalised form)");
      o.add("chunk_size", &LinearAttentionOptions::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      o.add("impl", &LinearAttentionOptions::impl, "auto | naive | chunk | kernel",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      return o;
    }();
    return s;
  }
};

// The recurrent state: S and, when normalised, z as an extra value column (linear_attention_normalized).
struct LinearAttentionCache : MixerCache {
  torch::Tensor state;  // [B, H, F, D] or [B, H, F, D+1], float32 (float64 for float64 models)
};

class LinearAttentionMixer : public Mixer {
 public:
  LinearAttentionMixer(const MixerContext& ctx, const LinearAttentionOptions& opt)
      : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads) {
    ATTNLAB_CHECK(H_ > 0 && C_ % H_ == 0, "linear_attention: d_model {} must be divisible by num_heads {}",
                  C_, H_);
    D_ = C_ / H_;
    F_ = ops::feature_dim(D_, opt.feature_map);
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [&](int64_t in, int64_t out) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
    };
    wq_ = register_module("wq", lin(C_, C_));
    wk_ = register_module("wk", lin(C_, C_));
    wv_ = register_module("wv", lin(C_, C_));
    wo_ = register_module("wo", lin(C_, C_));
    init_linear(wq_, 0.02);
    init_linear(wk_, 0.02);
    init_linear(wv_, 0.02);
    init_linear(wo_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers)));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    auto q = ops::feature_map(wq_(x).view({B, T, H_, D_}), opt_.feature_map);  // [B, T, H, F]
    auto k = ops::feature_map(wk_(x).view({B, T, H_, D_}), opt_.feature_map);  // [B, T, H, F]
    auto v = wv_(x).view({B, T, H_, D_});                                      // [B, T, H, D]
    ops::RecurrentArgs args;
    args.q = q;
    args.k = k;
    args.v = v;
    args.chunk_size = opt_.chunk_size;
    // Normalised: the scale cancels in the ratio, so 1 gives the paper's form. Unnormalised: the op's
    // default F^-0.5 keeps phi(q).phi(k) from growing with the feature dim.
    args.scale = opt_.normalize ? 1.0 : -1.0;
    LinearAttentionCache* c = nullptr;
    if (cache) {
      c = dynamic_cast<LinearAttentionCache*>(cache);
      ATTNLAB_CHECK(c, "linear_attention: expected a cache made by this mixer's make_cache()");
      ATTNLAB_CHECK(c->state.size(0) == B, "linear_attention: cache made for batch {}, got batch {}",
                    c->state.size(0), B);
      args.h0 = c->state;
      args.output_final_state = true;
    }
    // Decoding one token on the CPU: the naive step is one state update, cheaper than the chunk form's
    // masks. On CUDA the op chooses (its fused decode-step kernel where it has one).
    const auto impl = T == 1 && !x.is_cuda() && impl_ == ops::Impl::automatic ? ops::Impl::naive : impl_;
    auto out = opt_.normalize ? ops::linear_attention_normalized(args, impl)
                              : ops::linear_attention(args, impl);  // o [B, T, H, D]
    if (c) {
      c->state = out.ht.detach().to(c->state.scalar_type());
      c->position += T;
    }
    return wo_(out.o.reshape({B, T, C_}));
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<LinearAttentionCache>();
    auto dt = c10::typeMetaToScalarType(options.dtype()) == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, F_, value_columns()}, options.dtype(dt));
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    const int64_t state = H_ * F_ * value_columns();
    i.state_bytes = [state](int64_t) { return state * 4; };  // float32, whatever T
    // Projections 4 C x C; per head the recurrent form does F x Dv multiply-adds for phi(k) v^T and as many
    // for phi(q)^T S (Dv = D, plus the normaliser column). The Taylor map's d(d+1)/2 products are added.
    const double C = static_cast<double>(C_), H = static_cast<double>(H_);
    const double taylor = opt_.feature_map == "taylor" ? 2.0 * H * static_cast<double>(F_) : 0.0;
    const double fl = 2.0 * 4.0 * C * C + 4.0 * static_cast<double>(state) + taylor;
    i.flops_per_token = [fl](int64_t) { return fl; };
    return i;
  }

 private:
  int64_t value_columns() const { return opt_.normalize ? D_ + 1 : D_; }

  LinearAttentionOptions opt_;
  int64_t C_, H_, D_ = 0, F_ = 0;
  ops::Impl impl_;
  torch::nn::Linear wq_{nullptr}, wk_{nullptr}, wv_{nullptr}, wo_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER("linear_attention", LinearAttentionOptions, LinearAttentionMixer,
                       "linear attention (Katharopoulos 2020): feature map on q, k; causal, normalised");

}  // namespace attnlab
