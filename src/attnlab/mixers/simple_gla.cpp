// Simple GLA mixer: GLA with one scalar data-dependent decay per head and step (Dao & Gu 2024's SSD
// recurrence; FLA's SimpleGatedLinearAttention), RMSNorm(o) * swish(W_r x), W_o.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/mixers/widths.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/simple_gla.h"

namespace attnlab {
namespace {

// Widths as GLA's (gla.cpp): Kw = expand_k C (0.5), Vw = expand_v C (1). Parameters = 2 C Kw + 3 C Vw + the
// gate C H + H + the norm V = 4 C^2 + (C + 1) H + V with the defaults. (FLA's layer defaults to
// expand_k = 1; 0.5 keeps it beside GLA and softmax.)
struct SimpleGLAOptions {
  double expand_k = 0.5;
  double expand_v = 1.0;
  double gate_logit_normalizer = 16.0;
  int64_t chunk_size = 64;
  std::string impl = "auto";

  static const OptionSet<SimpleGLAOptions>& schema() {
    static const OptionSet<SimpleGLAOptions> s = [] {
      OptionSet<SimpleGLAOptions> o("mixer.simple_gla");
      o.add("expand_k", &SimpleGLAOptions::expand_k, "key width / d_model", check::positive<double>());
      o.add("expand_v", &SimpleGLAOptions::expand_v, "value width / d_model", check::positive<double>());
      o.add("gate_logit_normalizer", &SimpleGLAOptions::gate_logit_normalizer,
            "g = logsigmoid(W_g x + b) / this (16: decays near 1, as GLA's tau)", check::positive<double>());
      o.add("chunk_size", &SimpleGLAOptions::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      o.add("impl", &SimpleGLAOptions::impl, "auto | naive | chunk | kernel",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      return o;
    }();
    return s;
  }
};

struct SimpleGLACache : MixerCache {
  torch::Tensor state;  // [B, H, K, V] float32 (float64 for float64 models)
};

class SimpleGLAMixer : public Mixer {
 public:
  SimpleGLAMixer(const MixerContext& ctx, const SimpleGLAOptions& opt)
      : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads) {
    int64_t Kw = ratio_width("simple_gla", "expand_k", opt.expand_k, C_),
            Vw = ratio_width("simple_gla", "expand_v", opt.expand_v, C_);
    ATTNLAB_CHECK(H_ > 0 && Kw % H_ == 0 && Vw % H_ == 0,
                  "simple_gla: key width {} and value width {} must be divisible by num_heads {}", Kw, Vw,
                  H_);
    K_ = Kw / H_;
    V_ = Vw / H_;
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [&](int64_t in, int64_t out, bool bias = false) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
    };
    wq_ = register_module("wq", lin(C_, Kw));
    wk_ = register_module("wk", lin(C_, Kw));
    wv_ = register_module("wv", lin(C_, Vw));
    wr_ = register_module("wr", lin(C_, Vw));
    wg_ = register_module("wg", lin(C_, H_, /*bias=*/true));
    wo_ = register_module("wo", lin(Vw, C_));
    norm_ = register_module("norm", RMSNorm(V_));
    for (auto* l : {&wq_, &wk_, &wv_, &wr_, &wg_}) init_linear(*l, 0.02);
    init_linear(wo_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers)));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    ops::RecurrentArgs args;
    args.q = wq_(x).view({B, T, H_, K_});  // [B, T, H, K]
    args.k = wk_(x).view({B, T, H_, K_});  // [B, T, H, K]
    args.v = wv_(x).view({B, T, H_, V_});  // [B, T, H, V]
    // GLA's gate with one logit per head: log decay in (-inf, 0), computed in float32.
    args.g = torch::log_sigmoid(wg_(x).to(torch::kFloat)) / opt_.gate_logit_normalizer;  // [B, T, H]
    args.chunk_size = opt_.chunk_size;                                                   // scale: K^-0.5
    SimpleGLACache* c = nullptr;
    if (cache) {
      c = dynamic_cast<SimpleGLACache*>(cache);
      ATTNLAB_CHECK(c, "simple_gla: expected a cache made by this mixer's make_cache()");
      ATTNLAB_CHECK(c->state.size(0) == B, "simple_gla: cache made for batch {}, got batch {}",
                    c->state.size(0), B);
      args.h0 = c->state;
      args.output_final_state = true;
    }
    // Decoding one token on the CPU: the naive step is one state update, cheaper than the chunk form's
    // masks. On CUDA the op chooses (its fused decode-step kernel where it has one).
    const auto impl = T == 1 && !x.is_cuda() && impl_ == ops::Impl::automatic ? ops::Impl::naive : impl_;
    auto out = ops::simple_gla(args, impl);  // o [B, T, H, V]
    if (c) {
      c->state = out.ht.detach().to(c->state.scalar_type());
      c->position += T;
    }
    auto o = norm_(out.o).reshape({B, T, H_ * V_});  // [B, T, Vw]: RMSNorm per head, shared weight
    return wo_(o * torch::silu(wr_(x)));
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<SimpleGLACache>();
    auto dt = c10::typeMetaToScalarType(options.dtype()) == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, K_, V_}, options.dtype(dt));
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    const int64_t state = H_ * K_ * V_;
    i.state_bytes = [state](int64_t) { return state * 4; };  // float32, whatever T
    // Projections (2 Kw + 3 Vw) C + the gate C H; recurrent form per head: k v^T and q^T S (2 K V
    // multiply-adds) and the decay exp(g) S (K V multiplies).
    const double C = static_cast<double>(C_), Kw = static_cast<double>(H_ * K_),
                 Vw = static_cast<double>(H_ * V_), H = static_cast<double>(H_);
    const double fl = 2.0 * C * (2.0 * Kw + 3.0 * Vw + H) + 5.0 * static_cast<double>(state);
    i.flops_per_token = [fl](int64_t) { return fl; };
    return i;
  }

 private:
  SimpleGLAOptions opt_;
  int64_t C_, H_, K_ = 0, V_ = 0;
  ops::Impl impl_;
  torch::nn::Linear wq_{nullptr}, wk_{nullptr}, wv_{nullptr}, wr_{nullptr}, wg_{nullptr}, wo_{nullptr};
  RMSNorm norm_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER("simple_gla", SimpleGLAOptions, SimpleGLAMixer,
                       "simple GLA: one data-dependent scalar decay per head, RMSNorm(o) * swish(W_r x)");

}  // namespace attnlab
