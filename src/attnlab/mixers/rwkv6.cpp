// RWKV6 "Finch" time-mixing mixer (Peng et al. 2024): ddlerp token shift, data-dependent decay, bonus u.
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/rwkv6.h"

namespace attnlab {
namespace {

struct Rwkv6Options {
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t proj_low_rank_dim = 32;
  int64_t gate_low_rank_dim = 64;
  double norm_eps = 1e-5;
  std::string impl = "auto";
  int64_t chunk_size = 64;

  static const OptionSet<Rwkv6Options>& schema() {
    static const OptionSet<Rwkv6Options> s = [] {
      using O = Rwkv6Options;
      OptionSet<O> o("mixer.rwkv6");
      o.add("expand_k", &O::expand_k, "key (receptance, decay) width / d_model", check::positive<double>());
      o.add("expand_v", &O::expand_v, "value width / d_model", check::positive<double>());
      o.add("proj_low_rank_dim", &O::proj_low_rank_dim, "rank of the ddlerp projection (RWKV's D_MIX_LORA)",
            check::positive<int64_t>());
      o.add("gate_low_rank_dim", &O::gate_low_rank_dim, "rank of the decay projection (RWKV's D_DECAY_LORA)",
            check::positive<int64_t>());
      o.add("norm_eps", &O::norm_eps, "epsilon of the per-head GroupNorm", check::positive<double>());
      o.add("impl", &O::impl, "rwkv6 op: auto | naive | chunk", check::one_of({"auto", "naive", "chunk"}));
      o.add("chunk_size", &O::chunk_size, "chunk length of the chunkwise form", check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

// The recurrent state plus the previous token, which the token shift of the next piece reads.
struct Rwkv6Cache : MixerCache {
  torch::Tensor state;   // [B, H, K, V], float32 (float64 for float64 activations)
  torch::Tensor prev_x;  // [B, 1, C]: the last input token (zeros at the start)
};

int64_t whole(const char* what, double ratio, int64_t C) {
  double w = ratio * static_cast<double>(C);
  auto n = static_cast<int64_t>(std::llround(w));
  ATTNLAB_CHECK(n >= 1 && std::abs(w - static_cast<double>(n)) < 1e-9,
                "rwkv6: {} * d_model must be a whole number >= 1, got {} * {} = {}", what, ratio, C, w);
  return n;
}

class Rwkv6Mixer : public Mixer {
 public:
  Rwkv6Mixer(const MixerContext& ctx, const Rwkv6Options& opt) : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads) {
    Kd_ = whole("expand_k", opt.expand_k, C_);
    Vd_ = whole("expand_v", opt.expand_v, C_);
    ATTNLAB_CHECK(H_ > 0 && Kd_ % H_ == 0 && Vd_ % H_ == 0,
                  "rwkv6: key width {} and value width {} must be divisible by num_heads {}", Kd_, Vd_, H_);
    K_ = Kd_ / H_;
    V_ = Vd_ / H_;
    impl_ = ops::parse_impl(opt.impl);
    const int64_t R = opt.proj_low_rank_dim, Rw = opt.gate_low_rank_dim;
    auto lin = [](int64_t in, int64_t out, double sd, bool bias = false) {
      torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(bias));
      init_linear(l, sd);
      return l;
    };
    // Init after RWKV-LM's RWKV_Tmix_x060, with r = layer / (n_layers - 1), ratio = 1 - layer / n_layers:
    // static mixes 1 - (i/C)^ratio, decay bias -6 + 5 (n/(K-1))^(0.7 + 1.3 r), bonus r (1 - n/(K-1)) +
    // zigzag.
    const double L = static_cast<double>(ctx.n_layers), l = static_cast<double>(ctx.layer_index);
    const double r01 = ctx.n_layers > 1 ? l / (L - 1.0) : 0.0, r1 = 1.0 - l / L;
    auto ddd = torch::arange(C_, torch::kFloat) / static_cast<double>(C_);  // [C]
    mu_x_ = register_parameter("mu_x", 1.0 - ddd.pow(r1));
    // x_bias rows r, w, k, v, g: RWKV's time_maa_{r,w,k,v,g}.
    x_bias_ = register_parameter("x_bias",
                                 torch::stack({1.0 - ddd.pow(0.5 * r1), 1.0 - ddd.pow(r1), 1.0 - ddd.pow(r1),
                                               1.0 - (ddd.pow(r1) + 0.3 * r01), 1.0 - ddd.pow(0.5 * r1)}));
    // RWKV initialises the first LoRA factors to zero; small uniform values here let every parameter get a
    // gradient from the first step (and the tests exercise the data-dependent path).
    x_proj1_ = register_module("x_proj1", lin(C_, 5 * R, 0.02));
    x_proj2_ = register_parameter("x_proj2", torch::empty({C_, 5 * R}).uniform_(-0.01, 0.01));  // [C, 5, R]
    r_proj_ = register_module("r_proj", lin(C_, Kd_, 0.02));
    w_proj1_ = register_module("w_proj1", lin(C_, Rw, 0.02));
    w_proj2_ = register_module("w_proj2", lin(Rw, Kd_, 0.02, /*bias=*/true));
    k_proj_ = register_module("k_proj", lin(C_, Kd_, 0.02));
    v_proj_ = register_module("v_proj", lin(C_, Vd_, 0.02));
    g_proj_ = register_module("g_proj", lin(C_, Vd_, 0.02));
    auto n = torch::arange(Kd_, torch::kFloat) / static_cast<double>(std::max<int64_t>(Kd_ - 1, 1));  // [Kd]
    {
      torch::NoGradGuard ng;
      w_proj2_->bias.copy_(-6.0 + 5.0 * n.pow(0.7 + 1.3 * r01));  // the decay bias: RWKV's time_decay
    }
    auto zigzag = (torch::arange(Kd_, torch::kLong) + 1).remainder(3).to(torch::kFloat) - 1.0;
    bonus_ = register_parameter("bonus", (r01 * (1.0 - n) + 0.1 * zigzag).view({H_, K_}));  // u [H, K]
    norm_w_ = register_parameter("g_norm_weight", torch::ones({Vd_}));
    norm_b_ = register_parameter("g_norm_bias", torch::zeros({Vd_}));
    o_proj_ = register_module("o_proj", lin(Vd_, C_, 0.02 / std::sqrt(2.0 * L)));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    ATTNLAB_CHECK(x.dim() == 3 && x.size(2) == C_, "rwkv6: x must be [B,T,C] with C={}, got {}", C_,
                  shape_str(x.sizes()));
    const int64_t B = x.size(0), T = x.size(1), R = opt_.proj_low_rank_dim;
    Rwkv6Cache* c = nullptr;
    if (cache) {
      c = dynamic_cast<Rwkv6Cache*>(cache);
      ATTNLAB_CHECK(c, "rwkv6: expected a cache made by this mixer's make_cache(), got another kind");
      ATTNLAB_CHECK(c->prev_x.size(0) == B, "rwkv6: cache made for batch {}, got batch {}", c->prev_x.size(0),
                    B);
    }
    // Token shift: x_{t-1} (the cached token for the first one, zeros at a sequence start).
    auto first = c ? c->prev_x.to(x.scalar_type()) : torch::zeros({B, 1, C_}, x.options());
    auto shifted = torch::cat({first, x.narrow(1, 0, T - 1)}, 1);  // [B, T, C]
    if (c) c->prev_x = x.narrow(1, T - 1, 1).detach().to(c->prev_x.scalar_type());
    auto delta = shifted - x;  // [B, T, C]
    // ddlerp (Peng et al. 2024): a low-rank, data-dependent mix per target r, w, k, v, g.
    auto z = torch::tanh(x_proj1_(x + delta * mu_x_)).view({B, T, 5, R});                // [B, T, 5, R]
    auto m = torch::einsum("btnr,cnr->btnc", {z, x_proj2_.view({C_, 5, R})}) + x_bias_;  // [B, T, 5, C]
    auto mix = [&](int64_t i) { return x + delta * m.select(2, i); };                    // [B, T, C]
    auto r = r_proj_(mix(0)), k = k_proj_(mix(2)), v = v_proj_(mix(3)), gate = g_proj_(mix(4));
    // Data-dependent decay w_t = exp(-exp(d_t)), so log w_t = -exp(d_t) <= 0.
    auto d = w_proj2_(torch::tanh(w_proj1_(mix(1)))).to(torch::kFloat);  // [B, T, Kd]
    ops::RecurrentArgs a;
    a.q = r.view({B, T, H_, K_});         // [B, T, H, K]
    a.k = k.view({B, T, H_, K_});         // [B, T, H, K]
    a.v = v.view({B, T, H_, V_});         // [B, T, H, V]
    a.g = -d.exp().view({B, T, H_, K_});  // [B, T, H, K]
    a.u = bonus_;                         // [H, K]
    a.scale = 1.0;                        // RWKV does not scale r (FLA's RWKV6Attention passes scale=1)
    a.chunk_size = opt_.chunk_size;
    if (c) {
      a.h0 = c->state;
      a.output_final_state = true;
    }
    auto out = ops::rwkv6(a, impl_);  // o [B, T, H, V]
    if (c) {
      c->state = out.ht.detach();
      c->position += T;
    }
    // GroupNorm with one group per head (RWKV's ln_x): a per-head LayerNorm with a per-channel affine.
    auto o = torch::group_norm(out.o.reshape({B * T, Vd_}), H_, norm_w_, norm_b_, opt_.norm_eps);
    o = o.view({B, T, Vd_}) * torch::silu(gate);  // [B, T, Vd]
    return o_proj_(o);
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t /*max_len*/,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<Rwkv6Cache>();
    auto acc = options.dtype() == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, K_, V_}, options.dtype(acc));
    c->prev_x = torch::zeros({batch, 1, C_}, options);
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    int64_t state = 4 * H_ * K_ * V_ + 2 * C_;  // float32 S; the previous token in bf16
    i.state_bytes = [state](int64_t) { return state; };
    const double C = static_cast<double>(C_), Kd = static_cast<double>(Kd_), Vd = static_cast<double>(Vd_),
                 R = static_cast<double>(opt_.proj_low_rank_dim),
                 Rw = static_cast<double>(opt_.gate_low_rank_dim);
    double ddlerp = 2.0 * C * 5.0 * R * 2.0;                                             // C -> 5R -> 5 x C
    double proj = 2.0 * C * (2.0 * Kd + 2.0 * Vd) + 2.0 * Rw * (C + Kd) + 2.0 * Vd * C;  // r k v g, decay, o
    double op = static_cast<double>(H_) * 7.0 * static_cast<double>(K_ * V_);  // decay, update, read, bonus
    i.flops_per_token = [total = ddlerp + proj + op](int64_t) { return total; };
    return i;
  }

 private:
  Rwkv6Options opt_;
  int64_t C_, H_, Kd_ = 0, Vd_ = 0, K_ = 0, V_ = 0;
  ops::Impl impl_;
  torch::Tensor mu_x_, x_bias_, x_proj2_, bonus_, norm_w_, norm_b_;
  torch::nn::Linear x_proj1_{nullptr}, r_proj_{nullptr}, w_proj1_{nullptr}, w_proj2_{nullptr};
  torch::nn::Linear k_proj_{nullptr}, v_proj_{nullptr}, g_proj_{nullptr}, o_proj_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER(
    "rwkv6", Rwkv6Options, Rwkv6Mixer,
    "RWKV6 Finch time mixing: ddlerp token shift, data-dependent decay, bonus, GroupNorm gate");

}  // namespace attnlab
