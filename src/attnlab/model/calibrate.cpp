// Parameter matching.
#include "attnlab/model/calibrate.h"

#include <cmath>

#include "attnlab/core/error.h"

namespace attnlab {

CalibratedModel measure(const ModelOptions& model,
                        const std::map<std::string, std::shared_ptr<AnyOptions>>& mixer_options, int64_t T) {
  torch::NoGradGuard no_grad;
  LanguageModel lm(model, mixer_options);
  CalibratedModel c;
  c.model = model;
  c.mixer = model.layers.empty() ? model.mixer : fmt::format("{}", fmt::join(model.layers, "+"));
  c.parameters = lm->num_parameters();
  int64_t mlp_hidden = model.mlp_ratio > 0 ? swiglu_hidden(model.d_model, model.mlp_ratio) : 0;
  for (const auto& m : lm->mixers()) {
    auto info = m->info();
    if (info.state_bytes) c.state_bytes += info.state_bytes(T);
    if (info.flops_per_token) c.flops_per_token += info.flops_per_token(T);
    c.flops_per_token += 2.0 * 3.0 * static_cast<double>(model.d_model * mlp_hidden);  // SwiGLU: 3 matrices
  }
  c.flops_per_token += 2.0 * static_cast<double>(model.d_model * model.vocab_size);  // the head
  return c;
}

CalibratedModel calibrate(const std::string& mixer, const CalibrationTarget& target,
                          const std::map<std::string, std::shared_ptr<AnyOptions>>& mixer_options,
                          const ModelOptions& base) {
  ATTNLAB_CHECK(target.parameters > 0, "calibrate: target parameters must be > 0, got {}", target.parameters);
  const double P = static_cast<double>(target.parameters);
  ModelOptions m = base;
  m.mixer = mixer;
  m.layers.clear();
  m.vocab_size = target.vocab_size;
  m.n_layers = target.n_layers > 0 ? target.n_layers : P <= 2e6 ? 4 : P <= 10e6 ? 6 : P <= 50e6 ? 8 : 12;
  const int64_t head_dim = target.head_dim > 0 ? target.head_dim : (P < 5e6 ? 32 : 64);
  const double base_ratio = base.mlp_ratio > 0 ? base.mlp_ratio : 0.0;

  int64_t hd = head_dim;
  auto count = [&](int64_t heads, double ratio) {
    ModelOptions x = m;
    x.n_heads = heads;
    x.d_model = heads * hd;
    x.mlp_ratio = ratio;
    LanguageModel lm(x, mixer_options);
    return static_cast<double>(lm->num_parameters());
  };

  // 1. Width: the largest number of heads (width = heads * head_dim) whose model stays at or under the
  //    target with the base MLP; parameters grow monotonically with width, so bisect.
  int64_t lo = 1, hi = 1;
  while (count(hi, base_ratio) < P && hi < 4096) hi *= 2;
  while (hi - lo > 1) {
    int64_t mid = (lo + hi) / 2;
    (count(mid, base_ratio) <= P ? lo : hi) = mid;
  }
  int64_t heads = count(hi, base_ratio) - P < P - count(lo, base_ratio) ? hi : lo;
  // 2. Depth/width granularity leaves a gap: close it with the MLP width (steps of 16 channels), unless
  //    the model has no MLP (Zoology's MQAR setting), where only width moves.
  double ratio = base_ratio;
  if (base_ratio > 0) {
    // Parameters are affine in the SwiGLU hidden width h (3 * d * h per layer): two counts give the line.
    double d = static_cast<double>(heads * hd);
    double h1 = static_cast<double>(swiglu_hidden(heads * hd, 1.0));
    double h2 = static_cast<double>(swiglu_hidden(heads * hd, 4.0));
    double c1 = count(heads, h1 / d), c2 = count(heads, h2 / d);
    double h = h1 + (P - c1) * (h2 - h1) / (c2 - c1);
    ratio = std::max(16.0, h) / d;
    ratio = std::round(ratio * d / 16.0) * 16.0 / d;  // a whole number of 16-channel steps
  }
  if (base_ratio == 0) {
    // No MLP: the width moves in steps of whole heads, too coarse for +-2% at small sizes (parameters grow
    // with the square of the width). Search the head dim (even, for RoPE) for each head count near the first
    // choice and keep the closest.
    int64_t best_heads = heads, best_hd = hd;
    double best_err = std::fabs(count(heads, 0.0) - P);
    for (int64_t h = std::max<int64_t>(1, heads / 2); h <= 2 * heads; ++h) {
      int64_t lo_d = 1, hi_d = head_dim;  // half head dims: hd = 2 * half
      auto at = [&](int64_t half) {
        hd = 2 * half;
        return count(h, 0.0);
      };
      while (at(hi_d) < P && hi_d < 4096) hi_d *= 2;
      while (hi_d - lo_d > 1) {
        int64_t mid = (lo_d + hi_d) / 2;
        (at(mid) <= P ? lo_d : hi_d) = mid;
      }
      for (int64_t half : {lo_d, hi_d}) {
        double err = std::fabs(at(half) - P);
        if (err < best_err) best_err = err, best_heads = h, best_hd = 2 * half;
      }
    }
    heads = best_heads;
    hd = best_hd;
  }
  m.n_heads = heads;
  m.d_model = heads * hd;
  m.mlp_ratio = ratio;
  auto c = measure(m, mixer_options, target.report_T);
  c.mixer = mixer;
  c.error = static_cast<double>(c.parameters) / P - 1.0;
  if (std::fabs(c.error) > target.tolerance)
    fail(
        "calibrate: {} lands at {} parameters ({:+.1f}%) for a target of {}; no width/MLP setting within "
        "{:.0f}% (try another model.n_layers or head dim)",
        mixer, c.parameters, 100 * c.error, target.parameters, 100 * target.tolerance);
  return c;
}

}  // namespace attnlab
