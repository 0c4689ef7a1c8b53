// DeltaNet mixer (Schlag et al. 2021; Yang et al. 2024), and the layer it shares with gated_deltanet.
#include "attnlab/mixers/deltanet.h"

#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/ops/delta_rule.h"

namespace attnlab {
namespace detail {
namespace {

// Recurrent state plus the rolling inputs of the three short convolutions.
struct DeltaNetCache : MixerCache {
  torch::Tensor state;                   // [B, H, K, V], float32 (float64 for float64 activations)
  torch::Tensor conv_q, conv_k, conv_v;  // [B, conv_size - 1, H*K | H*K | H*V]
};

torch::nn::Linear linear(int64_t in, int64_t out, double std) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
  init_linear(l, std);
  return l;
}

}  // namespace

DeltaNetLayer::DeltaNetLayer(const MixerContext& ctx, DeltaNetConfig cfg) : cfg_(std::move(cfg)) {
  const char* name = cfg_.name.c_str();
  C_ = ctx.d_model;
  H_ = ctx.n_heads;
  ATTNLAB_CHECK(H_ > 0 && C_ % H_ == 0, "{}: d_model {} must be divisible by num_heads {}", name, C_, H_);
  K_ = C_ / H_;
  double v = cfg_.expand_v * static_cast<double>(K_);
  V_ = static_cast<int64_t>(std::llround(v));
  ATTNLAB_CHECK(V_ >= 1 && std::abs(v - static_cast<double>(V_)) < 1e-9,
                "{}: expand_v * head dim must be a whole number >= 1, got {} * {} = {}", name, cfg_.expand_v,
                K_, v);
  ATTNLAB_CHECK(cfg_.dt_min <= cfg_.dt_max, "mixer.{}: expected dt_min <= dt_max, got dt_min={}, dt_max={}",
                name, cfg_.dt_min, cfg_.dt_max);
  impl_ = ops::parse_impl(cfg_.impl);

  const double w_std = 0.02, out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers));
  q_proj_ = register_module("q_proj", linear(C_, H_ * K_, w_std));
  k_proj_ = register_module("k_proj", linear(C_, H_ * K_, w_std));
  v_proj_ = register_module("v_proj", linear(C_, H_ * V_, w_std));
  b_proj_ = register_module("b_proj", linear(C_, H_, w_std));
  if (cfg_.short_conv) {
    q_conv_ = register_module("q_conv1d", ShortConv(H_ * K_, cfg_.conv_size, false, true));
    k_conv_ = register_module("k_conv1d", ShortConv(H_ * K_, cfg_.conv_size, false, true));
    v_conv_ = register_module("v_conv1d", ShortConv(H_ * V_, cfg_.conv_size, false, true));
  }
  if (cfg_.decay) {
    a_proj_ = register_module("a_proj", linear(C_, H_, w_std));
    // Yang, Kautz, Hatamizadeh 2025 (Mamba2's init): A ~ U(0, 16); softplus(dt_bias) log-uniform in
    // [dt_min, dt_max] (floored at 1e-4), so the initial decays exp(-A dt) span slow and fast heads.
    auto A = torch::rand({H_}) * cfg_.a_init_max;
    A_log_ = register_parameter("A_log", torch::log(A.clamp_min(1e-6)));
    auto u = torch::rand({H_});
    auto dt = torch::exp(u * (std::log(cfg_.dt_max) - std::log(cfg_.dt_min)) + std::log(cfg_.dt_min))
                  .clamp_min(1e-4);
    dt_bias_ = register_parameter("dt_bias", dt + torch::log(-torch::expm1(-dt)));  // softplus^-1(dt)
  }
  if (cfg_.output_gate) g_proj_ = register_module("g_proj", linear(C_, H_ * V_, w_std));
  o_norm_ = register_module("o_norm", RMSNorm(V_, cfg_.norm_eps));  // per head, shared weight (FLA)
  o_proj_ = register_module("o_proj", linear(H_ * V_, C_, out_std));
}

torch::Tensor DeltaNetLayer::forward(const torch::Tensor& x, MixerCache* cache) {
  const char* name = cfg_.name.c_str();
  ATTNLAB_CHECK(x.dim() == 3 && x.size(2) == C_, "{}: x must be [B,T,C] with C={}, got {}", name, C_,
                shape_str(x.sizes()));
  const int64_t B = x.size(0), T = x.size(1);
  DeltaNetCache* c = nullptr;
  if (cache) {
    c = dynamic_cast<DeltaNetCache*>(cache);
    ATTNLAB_CHECK(c, "{}: expected a cache made by this mixer's make_cache(), got another kind", name);
    ATTNLAB_CHECK(c->state.size(0) == B, "{}: cache made for batch {}, got batch {}", name, c->state.size(0),
                  B);
  }
  auto q = q_proj_(x), k = k_proj_(x), v = v_proj_(x);  // [B, T, H*K], [B, T, H*K], [B, T, H*V]
  if (cfg_.short_conv) {
    q = q_conv_(q, c ? &c->conv_q : nullptr);
    k = k_conv_(k, c ? &c->conv_k : nullptr);
    v = v_conv_(v, c ? &c->conv_v : nullptr);
  } else {
    q = torch::silu(q), k = torch::silu(k), v = torch::silu(v);
  }
  ops::RecurrentArgs a;
  // Unit-norm keys keep the delta rule's transition I - beta k k^T a contraction (Yang et al. 2024): the op
  // L2-normalises q and k (in the decode step's kernel, else ops::l2_normalize: fused on CUDA).
  a.q = q.view({B, T, H_, K_});  // [B, T, H, K]
  a.k = k.view({B, T, H_, K_});  // [B, T, H, K]
  a.l2norm_qk = true;
  a.v = v.view({B, T, H_, V_});         // [B, T, H, V]
  a.beta = torch::sigmoid(b_proj_(x));  // [B, T, H]
  if (cfg_.decay)
    a.g = -A_log_.exp() * torch::softplus(a_proj_(x).to(torch::kFloat) + dt_bias_);  // [B, T, H], <= 0
  a.chunk_size = cfg_.chunk_size;
  if (c) {
    a.h0 = c->state;
    a.output_final_state = true;
  }
  auto out = cfg_.decay ? ops::gated_delta_rule(a, impl_) : ops::delta_rule(a, impl_);
  if (c) {
    c->state = out.ht.detach();
    c->position += T;
  }
  auto o = o_norm_(out.o);  // [B, T, H, V]
  if (cfg_.output_gate) o = o * torch::silu(g_proj_(x).view({B, T, H_, V_}));
  return o_proj_(o.reshape({B, T, H_ * V_}));
}

std::unique_ptr<MixerCache> DeltaNetLayer::make_cache(int64_t batch, int64_t /*max_len*/,
                                                      const torch::TensorOptions& options) const {
  auto c = std::make_unique<DeltaNetCache>();
  auto acc = options.dtype() == torch::kDouble ? torch::kDouble : torch::kFloat;
  c->state = torch::zeros({batch, H_, K_, V_}, options.dtype(acc));
  if (cfg_.short_conv) {
    c->conv_q = q_conv_->make_buffer(batch, options);
    c->conv_k = k_conv_->make_buffer(batch, options);
    c->conv_v = v_conv_->make_buffer(batch, options);
  }
  return c;
}

MixerInfo DeltaNetLayer::info() const {
  MixerInfo i;
  i.parameters = count_parameters();
  const double C = static_cast<double>(C_), H = static_cast<double>(H_), K = static_cast<double>(K_),
               V = static_cast<double>(V_);
  // State: float32 S [H, K, V]; conv buffers hold conv_size - 1 inputs (bf16 at inference: 2 bytes).
  int64_t state = 4 * H_ * K_ * V_;
  int64_t conv = cfg_.short_conv ? 2 * (cfg_.conv_size - 1) * (2 * H_ * K_ + H_ * V_) : 0;
  i.state_bytes = [state, conv](int64_t) { return state + conv; };
  double proj = 2.0 * C * (2 * H * K + H * V + H) + 2.0 * H * V * C;
  if (cfg_.decay) proj += 2.0 * C * H;
  if (cfg_.output_gate) proj += 2.0 * C * H * V;
  double convf = cfg_.short_conv ? 2.0 * static_cast<double>(cfg_.conv_size) * (2 * H * K + H * V) : 0.0;
  // The recurrent form per head: k^T S, the rank-1 update and q^T S, 2 FLOPs per multiply-add each (the
  // decay adds K V multiplies).
  double op = H * (6.0 * K * V + (cfg_.decay ? K * V : 0.0));
  i.flops_per_token = [total = proj + convf + op](int64_t) { return total; };
  return i;
}

}  // namespace detail

namespace {

struct DeltaNetOptions {
  bool short_conv = true;
  int64_t conv_size = 4;
  bool gate = false;
  double expand_v = 1.0;
  double norm_eps = 1e-5;
  std::string impl = "auto";
  int64_t chunk_size = 64;

  static const OptionSet<DeltaNetOptions>& schema() {
    static const OptionSet<DeltaNetOptions> s = [] {
      OptionSet<DeltaNetOptions> o("mixer.deltanet");
      o.add("short_conv", &DeltaNetOptions::short_conv,
            "causal depthwise conv + SiLU on q, k, v (false: SiLU alone)");
      o.add("conv_size", &DeltaNetOptions::conv_size, "short conv kernel size", check::positive<int64_t>());
      o.add("gate", &DeltaNetOptions::gate, "output gate: RMSNorm(o) * SiLU(W_g x) instead of RMSNorm(o)");
      o.add("expand_v", &DeltaNetOptions::expand_v, "value head dim / key head dim (key head dim = C / H)",
            check::positive<double>());
      o.add("norm_eps", &DeltaNetOptions::norm_eps, "epsilon of the output RMSNorm",
            check::positive<double>());
      o.add("impl", &DeltaNetOptions::impl,
            "delta_rule op: auto | naive | chunk | kernel (CUDA: the chunk kernels, the decode step for one "
            "token)",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      o.add("chunk_size", &DeltaNetOptions::chunk_size, "chunk length of the chunkwise (WY) form",
            check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

class DeltaNetMixer : public detail::DeltaNetLayer {
 public:
  DeltaNetMixer(const MixerContext& ctx, const DeltaNetOptions& o) : DeltaNetLayer(ctx, config(o)) {}

 private:
  static detail::DeltaNetConfig config(const DeltaNetOptions& o) {
    detail::DeltaNetConfig c;
    c.name = "deltanet";
    c.decay = false;
    c.output_gate = o.gate;
    c.short_conv = o.short_conv;
    c.conv_size = o.conv_size;
    c.expand_v = o.expand_v;
    c.norm_eps = o.norm_eps;
    c.impl = o.impl;
    c.chunk_size = o.chunk_size;
    return c;
  }
};

}  // namespace

ATTNLAB_REGISTER_MIXER("deltanet", DeltaNetOptions, DeltaNetMixer,
                       "DeltaNet: delta rule with short convs, L2-normalised q, k and sigmoid beta");

}  // namespace attnlab
