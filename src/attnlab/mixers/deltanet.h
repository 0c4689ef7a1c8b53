// The DeltaNet layer shared by the `deltanet` and `gated_deltanet` mixers, which differ only by a decay gate.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "attnlab/mixers/mixer.h"
#include "attnlab/mixers/short_conv.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/impl.h"

namespace attnlab::detail {

// What the two registered mixers resolve their options to (each keeps its own schema).
struct DeltaNetConfig {
  std::string name;          // the registered mixer name, for messages
  bool decay = false;        // Gated DeltaNet: g = -exp(A_log) softplus(W_a x + dt_bias) (Yang et al. 2025)
  bool output_gate = false;  // o = RMSNorm(o) * SiLU(W_g x) instead of RMSNorm(o)
  bool short_conv = true;    // causal depthwise conv + SiLU on q, k, v (else SiLU alone, as FLA)
  int64_t conv_size = 4;
  double expand_v = 1.0;  // value head dim / key head dim (FLA's gated_deltanet defaults to 2)
  double norm_eps = 1e-5;
  double a_init_max = 16.0;  // A ~ U(0, a_init_max), A_log = log A
  double dt_min = 1e-3, dt_max = 0.1;
  std::string impl = "auto";
  int64_t chunk_size = 64;
};

// x [B,T,C] -> q, k [B,T,H,K] (conv, SiLU, L2 norm), v [B,T,H,V] (conv, SiLU), beta = sigmoid(W_b x) [B,T,H];
// the delta rule (Schlag et al. 2021; chunked: Yang et al. 2024) or gated delta rule; per-head RMSNorm on o,
// optionally gated; W_o. K = d_model / n_heads, V = expand_v * K.
class DeltaNetLayer : public Mixer {
 public:
  DeltaNetLayer(const MixerContext& ctx, DeltaNetConfig cfg);

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache = nullptr) override;
  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t max_len,
                                         const torch::TensorOptions& options) const override;
  MixerInfo info() const override;

 private:
  DeltaNetConfig cfg_;
  int64_t C_ = 0, H_ = 0, K_ = 0, V_ = 0;
  ops::Impl impl_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, b_proj_{nullptr};
  torch::nn::Linear a_proj_{nullptr}, g_proj_{nullptr}, o_proj_{nullptr};
  ShortConv q_conv_{nullptr}, k_conv_{nullptr}, v_conv_{nullptr};
  RMSNorm o_norm_{nullptr};
  torch::Tensor A_log_, dt_bias_;  // [H] each, gated only
};

}  // namespace attnlab::detail
