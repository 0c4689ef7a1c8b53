// RetNet multi-scale retention mixer (Sun et al. 2023, "Retentive Network"): q, k, v projections, RoPE on q
// and k, retention with a fixed decay per head, a per-head norm on o, a swish output gate and W_o.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/mixers/widths.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/simple_gla.h"

namespace attnlab {
namespace {

// Widths, for d_model C, key width Kw = expand_k C, value width Vw = expand_v Kw (the paper's d_v = 2 d_k):
//   parameters = 2 C Kw (W_Q, W_K) + 2 C Vw (W_V, W_G) + Vw C (W_O) = C^2 (2 e_k + 3 e_k e_v).
// The paper keeps d_k = C, so retention costs 8 C^2 and it halves the FFN to stay matched. Our FFN is shared
// by every mixer, so the defaults e_k = 0.5, e_v = 2 give Kw = C/2, Vw = C and exactly softmax's 4 C^2.
struct RetNetOptions {
  double expand_k = 0.5;
  double expand_v = 2.0;
  double rope_theta = 10000.0;
  int64_t chunk_size = 64;
  std::string impl = "auto";

  static const OptionSet<RetNetOptions>& schema() {
    static const OptionSet<RetNetOptions> s = [] {
      OptionSet<RetNetOptions> o("mixer.retnet");
      o.add("expand_k", &RetNetOptions::expand_k, "key width / d_model (0.5: parameters match softmax's)",
            check::positive<double>());
      o.add("expand_v", &RetNetOptions::expand_v, "value width / key width (the paper's 2)",
            check::positive<double>());
      o.add("rope_theta", &RetNetOptions::rope_theta, "RoPE base (RoPE in place of xPos)",
            check::positive<double>());
      o.add("chunk_size", &RetNetOptions::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      o.add("impl", &RetNetOptions::impl, "auto | naive | chunk | kernel",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      return o;
    }();
    return s;
  }
};

struct RetNetCache : MixerCache {
  torch::Tensor state;  // [B, H, K, V] float32 (float64 for float64 models)
};

class RetNetMixer : public Mixer {
 public:
  RetNetMixer(const MixerContext& ctx, const RetNetOptions& opt)
      : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads) {
    int64_t Kw = ratio_width("retnet", "expand_k", opt.expand_k, C_),
            Vw = ratio_width("retnet", "expand_v", opt.expand_v, Kw);
    ATTNLAB_CHECK(H_ > 0 && Kw % H_ == 0 && Vw % H_ == 0,
                  "retnet: key width {} and value width {} must be divisible by num_heads {}", Kw, Vw, H_);
    K_ = Kw / H_;
    V_ = Vw / H_;
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [&](int64_t in, int64_t out) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
    };
    wq_ = register_module("wq", lin(C_, Kw));
    wk_ = register_module("wk", lin(C_, Kw));
    wv_ = register_module("wv", lin(C_, Vw));
    wg_ = register_module("wg", lin(C_, Vw));
    wo_ = register_module("wo", lin(Vw, C_));
    for (auto* l : {&wq_, &wk_, &wv_, &wg_}) init_linear(*l, 0.02);
    init_linear(wo_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers)));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    RetNetCache* c = nullptr;
    if (cache) {
      c = dynamic_cast<RetNetCache*>(cache);
      ATTNLAB_CHECK(c, "retnet: expected a cache made by this mixer's make_cache()");
      ATTNLAB_CHECK(c->state.size(0) == B, "retnet: cache made for batch {}, got batch {}", c->state.size(0),
                    B);
    }
    const int64_t start = c ? c->position : 0;
    // RoPE stands in for xPos (the paper's relative position in q k^T): xPos additionally scales q by
    // zeta^n and k by zeta^-n, a length-extrapolation damping on top of the decay gamma; not needed here.
    auto q = rope(wq_(x).view({B, T, H_, K_}), start);  // [B, T, H, K]
    auto k = rope(wk_(x).view({B, T, H_, K_}), start);  // [B, T, H, K]
    auto v = wv_(x).view({B, T, H_, V_});               // [B, T, H, V]
    ops::RecurrentArgs args;
    args.q = q;
    args.k = k;
    args.v = v;
    args.chunk_size = opt_.chunk_size;  // scale: the op's K^-0.5, the paper's k / sqrt(d_k)
    if (c) {
      args.h0 = c->state;
      args.output_final_state = true;
    }
    // Decoding one token on the CPU: the naive step is one state update, cheaper than the chunk form's
    // masks. On CUDA the op chooses (its fused decode-step kernel where it has one).
    const auto impl = T == 1 && !x.is_cuda() && impl_ == ops::Impl::automatic ? ops::Impl::naive : impl_;
    auto out = ops::retention(args, impl);  // o [B, T, H, V]; gamma_h = 1 - 2^(-5-h)
    if (c) {
      c->state = out.ht.detach().to(c->state.scalar_type());
      c->position += T;
    }
    // GroupNorm with one group per head (section 2.2) as RMSNorm per head without affine, as the
    // authors' torchscale code does: each head's scale differs with its decay, the norm evens them out.
    auto o = out.o.to(torch::kFloat);
    o = (o * torch::rsqrt(o.pow(2).mean(-1, /*keepdim=*/true) + 1e-6)).to(x.scalar_type());  // [B, T, H, V]
    return wo_(torch::silu(wg_(x)) * o.reshape({B, T, H_ * V_}));                            // swish gate
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<RetNetCache>();
    auto dt = c10::typeMetaToScalarType(options.dtype()) == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, K_, V_}, options.dtype(dt));
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    const int64_t state = H_ * K_ * V_;
    i.state_bytes = [state](int64_t) { return state * 4; };  // float32, whatever T
    // Projections (2 Kw + 3 Vw) C; recurrent form per head: k v^T and q^T S (2 K V multiply-adds) and the
    // decay gamma S (K V multiplies).
    const double C = static_cast<double>(C_), Kw = static_cast<double>(H_ * K_),
                 Vw = static_cast<double>(H_ * V_);
    const double fl = 2.0 * C * (2.0 * Kw + 3.0 * Vw) + 5.0 * static_cast<double>(state);
    i.flops_per_token = [fl](int64_t) { return fl; };
    return i;
  }

 private:
  // RoPE rotates channel pairs: an odd head key dim leaves its last channel unrotated (none for K = 1).
  torch::Tensor rope(const torch::Tensor& x, int64_t start) const {
    int64_t rotary = K_ - K_ % 2;
    return rotary > 0 ? apply_rope(x, start, opt_.rope_theta, rotary) : x;
  }

  RetNetOptions opt_;
  int64_t C_, H_, K_ = 0, V_ = 0;
  ops::Impl impl_;
  torch::nn::Linear wq_{nullptr}, wk_{nullptr}, wv_{nullptr}, wg_{nullptr}, wo_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER("retnet", RetNetOptions, RetNetMixer,
                       "RetNet retention: RoPE, fixed per-head decay, per-head norm, swish gate");

}  // namespace attnlab
