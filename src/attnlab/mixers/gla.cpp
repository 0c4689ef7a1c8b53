// GLA mixer, gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
// Hardware-Efficient Training"): a low-rank data-dependent decay per key channel, RMSNorm(o) * swish gate.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/mixers/widths.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/gla.h"

namespace attnlab {
namespace {

// Widths as in the paper (section 4.4) and FLA's GatedLinearAttention: key width Kw = expand_k C (0.5),
// value width Vw = expand_v C (1). Parameters = 2 C Kw (W_q, W_k) + 2 C Vw (W_v, W_r) + Vw C (W_o) + the
// gate C r + r Kw + Kw + the norm V = 4 C^2 + (C + Kw + 1) r + Kw + V with the defaults: softmax's 4 C^2
// plus a low-rank gate.
struct GLAOptions {
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t gate_low_rank_dim = 16;
  double gate_logit_normalizer = 16.0;
  int64_t chunk_size = 64;
  std::string impl = "auto";

  static const OptionSet<GLAOptions>& schema() {
    static const OptionSet<GLAOptions> s = [] {
      OptionSet<GLAOptions> o("mixer.gla");
      o.add("expand_k", &GLAOptions::expand_k, "key width / d_model", check::positive<double>());
      o.add("expand_v", &GLAOptions::expand_v, "value width / d_model", check::positive<double>());
      o.add("gate_low_rank_dim", &GLAOptions::gate_low_rank_dim, "rank r of the decay projection W2 W1",
            check::positive<int64_t>());
      o.add("gate_logit_normalizer", &GLAOptions::gate_logit_normalizer,
            "g = logsigmoid(W2 W1 x + b) / this (16: decays near 1, the paper's tau)",
            check::positive<double>());
      o.add("chunk_size", &GLAOptions::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      o.add("impl", &GLAOptions::impl, "auto | naive | chunk | kernel",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      return o;
    }();
    return s;
  }
};

struct GLACache : MixerCache {
  torch::Tensor state;  // [B, H, K, V] float32 (float64 for float64 models)
};

class GLAMixer : public Mixer {
 public:
  GLAMixer(const MixerContext& ctx, const GLAOptions& opt) : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads) {
    int64_t Kw = ratio_width("gla", "expand_k", opt.expand_k, C_),
            Vw = ratio_width("gla", "expand_v", opt.expand_v, C_);
    ATTNLAB_CHECK(H_ > 0 && Kw % H_ == 0 && Vw % H_ == 0,
                  "gla: key width {} and value width {} must be divisible by num_heads {}", Kw, Vw, H_);
    K_ = Kw / H_;
    V_ = Vw / H_;
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [&](int64_t in, int64_t out, bool bias = false) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
    };
    const int64_t r = opt.gate_low_rank_dim;
    wq_ = register_module("wq", lin(C_, Kw));
    wk_ = register_module("wk", lin(C_, Kw));
    wv_ = register_module("wv", lin(C_, Vw));
    wr_ = register_module("wr", lin(C_, Vw));
    w1_ = register_module("w1", lin(C_, r));
    w2_ = register_module("w2", lin(r, Kw, /*bias=*/true));
    wo_ = register_module("wo", lin(Vw, C_));
    norm_ = register_module("norm", RMSNorm(V_));
    for (auto* l : {&wq_, &wk_, &wv_, &wr_, &w1_, &w2_}) init_linear(*l, 0.02);
    init_linear(wo_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers)));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    ops::RecurrentArgs args;
    args.q = wq_(x).view({B, T, H_, K_});  // [B, T, H, K]
    args.k = wk_(x).view({B, T, H_, K_});  // [B, T, H, K]
    args.v = wv_(x).view({B, T, H_, V_});  // [B, T, H, V]
    // Section 4.4: alpha = sigmoid(W2 W1 x + b)^(1/16); in log space, computed in float32.
    args.g = (torch::log_sigmoid(w2_(w1_(x)).to(torch::kFloat)) / opt_.gate_logit_normalizer)
                 .view({B, T, H_, K_});  // [B, T, H, K]
    args.chunk_size = opt_.chunk_size;   // scale: the op's K^-0.5
    GLACache* c = nullptr;
    if (cache) {
      c = dynamic_cast<GLACache*>(cache);
      ATTNLAB_CHECK(c, "gla: expected a cache made by this mixer's make_cache()");
      ATTNLAB_CHECK(c->state.size(0) == B, "gla: cache made for batch {}, got batch {}", c->state.size(0), B);
      args.h0 = c->state;
      args.output_final_state = true;
    }
    // Decoding one token on the CPU: the naive step is one state update, cheaper than the chunk form's
    // masks. On CUDA the op chooses (its fused decode-step kernel where it has one).
    const auto impl = T == 1 && !x.is_cuda() && impl_ == ops::Impl::automatic ? ops::Impl::naive : impl_;
    auto out = ops::gla(args, impl);  // o [B, T, H, V]
    if (c) {
      c->state = out.ht.detach().to(c->state.scalar_type());
      c->position += T;
    }
    // Output RMSNorm(o) * swish(W_r x) (section 4.4), the norm per head with a weight shared by heads.
    auto o = norm_(out.o).reshape({B, T, H_ * V_});  // [B, T, Vw]
    return wo_(o * torch::silu(wr_(x)));
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<GLACache>();
    auto dt = c10::typeMetaToScalarType(options.dtype()) == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, K_, V_}, options.dtype(dt));
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    const int64_t state = H_ * K_ * V_;
    i.state_bytes = [state](int64_t) { return state * 4; };  // float32, whatever T
    // Projections (2 Kw + 3 Vw) C + the gate (C + Kw) r; recurrent form per head: k v^T and q^T S (2 K V
    // multiply-adds) and the decay diag(exp g) S (K V multiplies).
    const double C = static_cast<double>(C_), Kw = static_cast<double>(H_ * K_),
                 Vw = static_cast<double>(H_ * V_), r = static_cast<double>(opt_.gate_low_rank_dim);
    const double fl = 2.0 * C * (2.0 * Kw + 3.0 * Vw) + 2.0 * (C + Kw) * r + 5.0 * static_cast<double>(state);
    i.flops_per_token = [fl](int64_t) { return fl; };
    return i;
  }

 private:
  GLAOptions opt_;
  int64_t C_, H_, K_ = 0, V_ = 0;
  ops::Impl impl_;
  torch::nn::Linear wq_{nullptr}, wk_{nullptr}, wv_{nullptr}, wr_{nullptr}, w1_{nullptr}, w2_{nullptr},
      wo_{nullptr};
  RMSNorm norm_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER("gla", GLAOptions, GLAMixer,
                       "GLA (Yang 2024): low-rank per-channel decay, RMSNorm(o) * swish(W_r x)");

}  // namespace attnlab
