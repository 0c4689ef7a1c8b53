// Gated DeltaNet mixer (Yang, Kautz, Hatamizadeh 2025): DeltaNet with a Mamba2-style decay and output gate.
#include "attnlab/mixers/deltanet.h"
#include "attnlab/mixers/registry.h"

namespace attnlab {
namespace {

// The layer is DeltaNetLayer (deltanet.h) with g = -exp(A_log) * softplus(W_a x + dt_bias) per head and
// step (the paper's alpha_t = exp(g_t)), the gated delta rule S_t = alpha_t (I - beta_t k_t k_t^T)
// S_{t-1} + beta_t k_t v_t^T, and the output RMSNorm(o) * SiLU(W_g x), which the paper always uses.
struct GatedDeltaNetOptions {
  bool short_conv = true;
  int64_t conv_size = 4;
  double expand_v = 1.0;
  double norm_eps = 1e-5;
  double a_init_max = 16.0;
  double dt_min = 1e-3;
  double dt_max = 0.1;
  std::string impl = "auto";
  int64_t chunk_size = 64;

  static const OptionSet<GatedDeltaNetOptions>& schema() {
    static const OptionSet<GatedDeltaNetOptions> s = [] {
      using O = GatedDeltaNetOptions;
      OptionSet<O> o("mixer.gated_deltanet");
      o.add("short_conv", &O::short_conv, "causal depthwise conv + SiLU on q, k, v (false: SiLU alone)");
      o.add("conv_size", &O::conv_size, "short conv kernel size", check::positive<int64_t>());
      o.add("expand_v", &O::expand_v, "value head dim / key head dim (key head dim = C / H; FLA uses 2)",
            check::positive<double>());
      o.add("norm_eps", &O::norm_eps, "epsilon of the gated output RMSNorm", check::positive<double>());
      o.add("a_init_max", &O::a_init_max, "A ~ U(0, a_init_max) at init, A_log = log A (paper: 16)",
            check::positive<double>());
      o.add("dt_min", &O::dt_min, "softplus(dt_bias) is initialised log-uniform in [dt_min, dt_max]",
            check::positive<double>());
      o.add("dt_max", &O::dt_max, "upper end of the dt init range (>= dt_min)", check::positive<double>());
      o.add("impl", &O::impl,
            "gated_delta_rule op: auto | naive | chunk | kernel (CUDA: the chunk kernels, the decode step "
            "for one token)",
            check::one_of({"auto", "naive", "chunk", "kernel"}));
      o.add("chunk_size", &O::chunk_size, "chunk length of the chunkwise (WY) form",
            check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

class GatedDeltaNetMixer : public detail::DeltaNetLayer {
 public:
  GatedDeltaNetMixer(const MixerContext& ctx, const GatedDeltaNetOptions& o)
      : DeltaNetLayer(ctx, config(o)) {}

 private:
  static detail::DeltaNetConfig config(const GatedDeltaNetOptions& o) {
    detail::DeltaNetConfig c;
    c.name = "gated_deltanet";
    c.decay = true;
    c.output_gate = true;
    c.short_conv = o.short_conv;
    c.conv_size = o.conv_size;
    c.expand_v = o.expand_v;
    c.norm_eps = o.norm_eps;
    c.a_init_max = o.a_init_max;
    c.dt_min = o.dt_min;
    c.dt_max = o.dt_max;
    c.impl = o.impl;
    c.chunk_size = o.chunk_size;
    return c;
  }
};

}  // namespace

ATTNLAB_REGISTER_MIXER(
    "gated_deltanet", GatedDeltaNetOptions, GatedDeltaNetMixer,
    "Gated DeltaNet: delta rule with a per-head decay, short convs and a gated output norm");

}  // namespace attnlab
