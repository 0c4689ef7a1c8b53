// HGRN2 mixer (Qin et al. 2024): GLA's recurrence with the key tied to the forget gate, k = 1 - f.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/gla.h"

namespace attnlab {
namespace {

// The lower bound of the forget gate grows with depth (HGRN, Qin et al. 2023; kept by HGRN2):
// lower layers may forget fast (local patterns), upper layers keep long memory. We use the fixed schedule
// lambda_l = layer_index / n_layers (0 for the first layer). The paper's learned variant, a cumulative
// softmax over one parameter per layer, needs a parameter shared by all layers, i.e. owned by the model
// rather than one mixer, so it is not offered here.
struct Hgrn2Options {
  int64_t expand_ratio = 0;
  double norm_eps = 1e-5;
  std::string impl = "auto";
  int64_t chunk_size = 64;

  static const OptionSet<Hgrn2Options>& schema() {
    static const OptionSet<Hgrn2Options> s = [] {
      OptionSet<Hgrn2Options> o("mixer.hgrn2");
      o.add("expand_ratio", &Hgrn2Options::expand_ratio,
            "forget/key dim per head, the state expansion (0 = d_model / n_heads; FLA: 128)",
            check::non_negative<int64_t>());
      o.add("norm_eps", &Hgrn2Options::norm_eps, "epsilon of the output RMSNorm", check::positive<double>());
      o.add("impl", &Hgrn2Options::impl, "gla op: auto | naive | chunk",
            check::one_of({"auto", "naive", "chunk"}));
      o.add("chunk_size", &Hgrn2Options::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

struct Hgrn2Cache : MixerCache {
  torch::Tensor state;  // [B, H, Df, Di], float32 (float64 for float64 activations)
};

class Hgrn2Mixer : public Mixer {
 public:
  Hgrn2Mixer(const MixerContext& ctx, const Hgrn2Options& opt) : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads) {
    ATTNLAB_CHECK(H_ > 0 && C_ % H_ == 0, "hgrn2: d_model {} must be divisible by num_heads {}", C_, H_);
    Di_ = C_ / H_;
    Df_ = opt.expand_ratio > 0 ? opt.expand_ratio : Di_;
    lower_bound_ =
        static_cast<double>(ctx.layer_index) / static_cast<double>(std::max<int64_t>(ctx.n_layers, 1));
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [](int64_t in, int64_t out, double sd) {
      torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
      init_linear(l, sd);
      return l;
    };
    q_proj_ = register_module("q_proj", lin(C_, H_ * Df_, 0.02));
    f_proj_ = register_module("f_proj", lin(C_, H_ * Df_, 0.02));
    i_proj_ = register_module("i_proj", lin(C_, C_, 0.02));
    g_norm_ = register_module("g_norm", RMSNorm(C_, opt.norm_eps));  // over all heads, as FLA's HGRN2
    o_proj_ =
        register_module("o_proj", lin(C_, C_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers))));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    ATTNLAB_CHECK(x.dim() == 3 && x.size(2) == C_, "hgrn2: x must be [B,T,C] with C={}, got {}", C_,
                  shape_str(x.sizes()));
    const int64_t B = x.size(0), T = x.size(1);
    Hgrn2Cache* c = nullptr;
    if (cache) {
      c = dynamic_cast<Hgrn2Cache*>(cache);
      ATTNLAB_CHECK(c, "hgrn2: expected a cache made by this mixer's make_cache(), got another kind");
    }
    // f = lambda + (1 - lambda) sigmoid(W_f x) (HGRN2 with its lower bound); the gates in float32.
    auto fl = f_proj_(x).to(torch::kFloat);  // [B, T, H*Df]
    torch::Tensor g, k;
    if (lower_bound_ == 0.0) {
      g = torch::log_sigmoid(fl);  // log f, exact for large |fl|
      k = torch::sigmoid(-fl);     // 1 - f
    } else {
      g = torch::log(lower_bound_ + (1.0 - lower_bound_) * torch::sigmoid(fl));
      k = (1.0 - lower_bound_) * torch::sigmoid(-fl);  // 1 - f without the cancellation of 1 - f
    }
    ops::RecurrentArgs a;
    // S_t = diag(f_t) S_{t-1} + (1 - f_t) i_t^T, o_t = q_t^T S_t: GLA with k = 1 - f, v = i.
    a.q = torch::silu(q_proj_(x)).view({B, T, H_, Df_});  // [B, T, H, Df], swish as in the paper
    a.k = k.to(x.scalar_type()).view({B, T, H_, Df_});    // [B, T, H, Df]
    a.v = i_proj_(x).view({B, T, H_, Di_});               // [B, T, H, Di]
    a.g = g.view({B, T, H_, Df_});                        // [B, T, H, Df], <= 0
    a.chunk_size = opt_.chunk_size;  // scale: the default Df^-0.5, as FLA's HGRN2 (the norm after cancels it)
    if (c) {
      a.h0 = c->state;
      a.output_final_state = true;
    }
    auto out = ops::gla(a, impl_);  // o [B, T, H, Di]
    if (c) {
      c->state = out.ht.detach();
      c->position += T;
    }
    return o_proj_(g_norm_(out.o.reshape({B, T, C_})));
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t /*max_len*/,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<Hgrn2Cache>();
    auto acc = options.dtype() == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, Df_, Di_}, options.dtype(acc));
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    int64_t state = 4 * H_ * Df_ * Di_;  // float32 S per head
    i.state_bytes = [state](int64_t) { return state; };
    const double C = static_cast<double>(C_), H = static_cast<double>(H_), Df = static_cast<double>(Df_),
                 Di = static_cast<double>(Di_);
    double proj = 2.0 * C * (2.0 * H * Df + C) + 2.0 * C * C;
    double op = 5.0 * H * Df * Di;  // recurrent form: decay (1), rank-1 update (2), read (2) per state entry
    i.flops_per_token = [total = proj + op](int64_t) { return total; };
    return i;
  }

 private:
  Hgrn2Options opt_;
  int64_t C_, H_, Di_ = 0, Df_ = 0;
  double lower_bound_ = 0.0;
  ops::Impl impl_;
  torch::nn::Linear q_proj_{nullptr}, f_proj_{nullptr}, i_proj_{nullptr}, o_proj_{nullptr};
  RMSNorm g_norm_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER(
    "hgrn2", Hgrn2Options, Hgrn2Mixer,
    "HGRN2: gated linear RNN with outer-product state, k = 1 - f and a depth-growing lower bound");

}  // namespace attnlab
