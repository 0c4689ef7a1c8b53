// Mamba2 mixer (Dao & Gu 2024, "Transformers are SSMs"): the SSD layer, with its scalar-decay recurrence run
// through the simple_gla op (q = C, k = B, v = x dt, g = A dt).
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/mixers/short_conv.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/simple_gla.h"

namespace attnlab {
namespace {

// Widths, for d_model C: inner width Di = expand C split into H heads of P = Di / H channels; one group of
// B and C (d_state N) shared by every head. Parameters = in_proj C (2 Di + 2 N + H) + conv (Di + 2 N)(K + 1)
// + dt_bias, A_log, D (3 H) + norm Di + out_proj Di C, about 6 C^2 + 2 N C with expand 2: Mamba2 blocks
// carry their width in the mixer (the paper's models have no MLP); parameter matching picks the depth.
struct Mamba2Options {
  double expand = 2.0;
  int64_t d_state = 64;
  int64_t d_conv = 4;
  double dt_min = 1e-3;
  double dt_max = 0.1;
  int64_t chunk_size = 64;
  std::string impl = "auto";

  static const OptionSet<Mamba2Options>& schema() {
    static const OptionSet<Mamba2Options> s = [] {
      OptionSet<Mamba2Options> o("mixer.mamba2");
      o.add("expand", &Mamba2Options::expand, "inner width / d_model", check::positive<double>());
      o.add("d_state", &Mamba2Options::d_state, "state size N of B and C (one group, shared by the heads)",
            check::positive<int64_t>());
      o.add("d_conv", &Mamba2Options::d_conv, "kernel size of the causal depthwise conv on x, B, C",
            check::positive<int64_t>());
      o.add("dt_min", &Mamba2Options::dt_min, "smallest initial step dt (log-uniform init)",
            check::positive<double>());
      o.add("dt_max", &Mamba2Options::dt_max, "largest initial step dt (log-uniform init)",
            check::positive<double>());
      o.add("chunk_size", &Mamba2Options::chunk_size, "chunk length of the chunkwise form",
            check::positive<int64_t>());
      o.add("impl", &Mamba2Options::impl, "auto | naive | chunk | kernel",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      return o;
    }();
    return s;
  }
};

struct Mamba2Cache : MixerCache {
  torch::Tensor state;  // [B, H, N, P] float32 (float64 for float64 models)
  torch::Tensor conv;   // [B, d_conv - 1, Di + 2 N]: the last inputs of the short convolution
};

class Mamba2Mixer : public Mixer {
 public:
  Mamba2Mixer(const MixerContext& ctx, const Mamba2Options& opt)
      : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads), N_(opt.d_state) {
    double di = opt.expand * static_cast<double>(C_);
    Di_ = static_cast<int64_t>(std::llround(di));
    ATTNLAB_CHECK(Di_ > 0 && std::abs(di - static_cast<double>(Di_)) < 1e-9,
                  "mamba2: expand times d_model {} must be a positive whole number, got {}", C_, di);
    ATTNLAB_CHECK(H_ > 0 && Di_ % H_ == 0, "mamba2: inner width {} must be divisible by num_heads {}", Di_,
                  H_);
    ATTNLAB_CHECK(opt.dt_min <= opt.dt_max, "mamba2: expected dt_min <= dt_max, got dt_min {} and dt_max {}",
                  opt.dt_min, opt.dt_max);
    P_ = Di_ / H_;
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [&](int64_t in, int64_t out) {
      return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
    };
    in_proj_ = register_module("in_proj", lin(C_, 2 * Di_ + 2 * N_ + H_));  // z, x, B, C, dt
    conv_ = register_module("conv", ShortConv(Di_ + 2 * N_, opt.d_conv, /*bias=*/true, /*silu=*/true));
    out_proj_ = register_module("out_proj", lin(Di_, C_));
    norm_ = register_module("norm", RMSNorm(Di_));
    init_linear(in_proj_, 0.02);
    init_linear(out_proj_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers)));
    // Mamba2's init: dt log-uniform in [dt_min, dt_max] stored through softplus^-1 in dt_bias; A ~ U(1, 16)
    // stored as A_log, so the decay exp(-A dt) starts between e^-1.6 and ~1; D = 1 (a skip connection).
    auto u = torch::rand({H_}, torch::kDouble);
    auto dt = torch::exp(u * (std::log(opt.dt_max) - std::log(opt.dt_min)) + std::log(opt.dt_min))
                  .clamp_min(1e-4);  // [H]
    dt_bias_ = register_parameter("dt_bias", (dt + torch::log(-torch::expm1(-dt))).to(torch::kFloat));
    A_log_ = register_parameter("A_log", torch::empty({H_}).uniform_(1.0, 16.0).log());
    D_ = register_parameter("D", torch::ones({H_}));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    Mamba2Cache* c = nullptr;
    if (cache) {
      c = dynamic_cast<Mamba2Cache*>(cache);
      ATTNLAB_CHECK(c, "mamba2: expected a cache made by this mixer's make_cache()");
      ATTNLAB_CHECK(c->state.size(0) == B, "mamba2: cache made for batch {}, got batch {}", c->state.size(0),
                    B);
    }
    auto zxbcdt = in_proj_(x);                                                       // [B, T, 2 Di + 2 N + H]
    auto z = zxbcdt.narrow(-1, 0, Di_);                                              // [B, T, Di]
    auto xbc = conv_(zxbcdt.narrow(-1, Di_, Di_ + 2 * N_), c ? &c->conv : nullptr);  // [B, T, Di + 2 N]
    auto xs = xbc.narrow(-1, 0, Di_).view({B, T, H_, P_});                           // [B, T, H, P]
    auto Bm = xbc.narrow(-1, Di_, N_).unsqueeze(2).expand({B, T, H_, N_});           // [B, T, H, N]
    auto Cm = xbc.narrow(-1, Di_ + N_, N_).unsqueeze(2).expand({B, T, H_, N_});      // [B, T, H, N]
    auto dt =
        torch::softplus(zxbcdt.narrow(-1, 2 * Di_ + 2 * N_, H_).to(torch::kFloat) + dt_bias_);  // [B,T,H]
    // The discretised SSM h_t = exp(A dt_t) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t (SSD with a scalar A
    // per head): simple_gla with g = A dt in log space and scale 1 (an SSM has no 1/sqrt(N)).
    ops::RecurrentArgs args;
    args.q = Cm;
    args.k = Bm;
    args.v = (xs.to(torch::kFloat) * dt.unsqueeze(-1)).to(x.scalar_type());  // [B, T, H, P]
    args.g = -torch::exp(A_log_) * dt;                                       // [B, T, H]
    args.scale = 1.0;
    args.chunk_size = opt_.chunk_size;
    if (c) {
      args.h0 = c->state;
      args.output_final_state = true;
    }
    // Decoding one token on the CPU: the naive step is one state update, cheaper than the chunk form's
    // masks. On CUDA the op chooses (its fused decode-step kernel where it has one).
    const auto impl = T == 1 && !x.is_cuda() && impl_ == ops::Impl::automatic ? ops::Impl::naive : impl_;
    auto out = ops::simple_gla(args, impl);  // o [B, T, H, P]
    if (c) {
      c->state = out.ht.detach().to(c->state.scalar_type());
      c->position += T;
    }
    auto y = out.o + xs * D_.to(x.scalar_type()).view({H_, 1});  // [B, T, H, P]: the D skip
    // Gated RMSNorm, gate before the norm (Mamba2's RMSNormGated, norm_before_gate = False).
    y = norm_(y.reshape({B, T, Di_}) * torch::silu(z));  // [B, T, Di]
    return out_proj_(y);
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<Mamba2Cache>();
    auto dt = c10::typeMetaToScalarType(options.dtype()) == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->state = torch::zeros({batch, H_, N_, P_}, options.dtype(dt));
    c->conv = conv_->make_buffer(batch, options);
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    // The SSM state in float32 plus the conv's last d_conv - 1 inputs in the inference dtype (bf16, as the
    // softmax KV cache counts), whatever T.
    const int64_t state = H_ * N_ * P_, conv = (opt_.d_conv - 1) * (Di_ + 2 * N_);
    i.state_bytes = [state, conv](int64_t) { return state * 4 + conv * 2; };
    // in_proj, conv, out_proj; recurrent form per head: B x^T and C^T h (2 N P multiply-adds) and the decay
    // (N P multiplies); the D skip and the gate are O(Di).
    const double C = static_cast<double>(C_), Di = static_cast<double>(Di_), N = static_cast<double>(N_);
    const double fl = 2.0 * C * (2.0 * Di + 2.0 * N + static_cast<double>(H_)) +
                      2.0 * static_cast<double>(opt_.d_conv) * (Di + 2.0 * N) + 2.0 * Di * C +
                      5.0 * static_cast<double>(state) + 4.0 * Di;
    i.flops_per_token = [fl](int64_t) { return fl; };
    return i;
  }

 private:
  Mamba2Options opt_;
  int64_t C_, H_, N_, Di_ = 0, P_ = 0;
  ops::Impl impl_;
  torch::nn::Linear in_proj_{nullptr}, out_proj_{nullptr};
  ShortConv conv_{nullptr};
  RMSNorm norm_{nullptr};
  torch::Tensor dt_bias_, A_log_, D_;
};

}  // namespace

ATTNLAB_REGISTER_MIXER("mamba2", Mamba2Options, Mamba2Mixer,
                       "Mamba2 (SSD): short conv on x, B, C; scalar decay A dt per head; gated RMSNorm");

}  // namespace attnlab
