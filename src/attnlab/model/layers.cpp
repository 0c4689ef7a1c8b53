// Building blocks.
#include "attnlab/model/layers.h"

#include "attnlab/core/error.h"
#include "attnlab/core/log.h"

#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/fused.h"
#endif

namespace attnlab {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto xf = x.to(torch::kFloat);
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (y * weight.to(torch::kFloat)).to(x.scalar_type());
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
#ifdef ATTNLAB_WITH_CUDA
  if (x.is_cuda()) {
    auto w = weight.to(torch::kFloat);  // a no-op for the float32 parameter; the reference casts the same way
    auto why = ops::cuda::rms_norm_unusable_reason(x, w);
    if (why.empty()) return ops::cuda::rms_norm(x, w, eps);
    log_once("rms_norm.kernel: " + why, fmt::format("RMSNorm: {}; using the libtorch path", why));
  }
#endif
  return rms_norm_reference(x, weight, eps);
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden) {
  w1 = register_module("w1", torch::nn::Linear(torch::nn::LinearOptions(dim, hidden).bias(false)));
  w2 = register_module("w2", torch::nn::Linear(torch::nn::LinearOptions(hidden, dim).bias(false)));
  w3 = register_module("w3", torch::nn::Linear(torch::nn::LinearOptions(dim, hidden).bias(false)));
}

torch::Tensor SwiGLUImpl::forward(const torch::Tensor& x) {
  return w2(torch::silu(w1(x)) * w3(x));
}

int64_t swiglu_hidden(int64_t dim, double ratio) {
  // The epsilon keeps a ratio computed as k * 16 / dim from rounding up to the next step.
  auto h = static_cast<int64_t>(std::ceil(ratio * static_cast<double>(dim) - 1e-6));
  return (h + 15) / 16 * 16;
}

torch::Tensor rope_reference(const torch::Tensor& x, const torch::Tensor& positions, double theta,
                             int64_t rotary_dim) {
  int64_t D = x.size(-1);
  int64_t R = rotary_dim > 0 ? rotary_dim : D;
  ATTNLAB_CHECK(R % 2 == 0 && R <= D, "rope: rotary dim must be even and <= head dim {}, got {}", D, R);
  auto fopts = torch::TensorOptions().dtype(torch::kFloat).device(x.device());
  // inv_freq_i = theta^(-2i/R), i = 0 .. R/2-1
  auto inv_freq = torch::pow(theta, -torch::arange(0, R, 2, fopts) / static_cast<double>(R));  // [R/2]
  auto angles = positions.to(fopts).unsqueeze(1) * inv_freq.unsqueeze(0);                      // [T, R/2]
  auto cos = torch::cat({angles.cos(), angles.cos()}, -1).unsqueeze(0).unsqueeze(2);           // [1,T,1,R]
  auto sin = torch::cat({angles.sin(), angles.sin()}, -1).unsqueeze(0).unsqueeze(2);
  auto xr = x.narrow(-1, 0, R).to(torch::kFloat);
  auto x1 = xr.narrow(-1, 0, R / 2), x2 = xr.narrow(-1, R / 2, R / 2);
  auto rotated = torch::cat({-x2, x1}, -1);
  auto out = (xr * cos + rotated * sin).to(x.scalar_type());
  if (R == D) return out;
  return torch::cat({out, x.narrow(-1, R, D - R)}, -1);
}

torch::Tensor apply_rope_positions(const torch::Tensor& x, const torch::Tensor& positions, double theta,
                                   int64_t rotary_dim) {
  int64_t D = x.size(-1);
  int64_t R = rotary_dim > 0 ? rotary_dim : D;
  ATTNLAB_CHECK(R % 2 == 0 && R <= D, "rope: rotary dim must be even and <= head dim {}, got {}", D, R);
#ifdef ATTNLAB_WITH_CUDA
  if (x.is_cuda()) {
    auto pos = positions.to(x.device(), torch::kLong);  // a no-op for apply_rope's positions
    auto why = ops::cuda::rope_unusable_reason(x, pos, R);
    if (why.empty()) return ops::cuda::rope(x, pos, theta, R);
    log_once("rope.kernel: " + why, fmt::format("rope: {}; using the libtorch path", why));
  }
#endif
  return rope_reference(x, positions, theta, R);
}

torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, double theta, int64_t rotary_dim) {
  auto positions =
      torch::arange(start, start + x.size(1), torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  return apply_rope_positions(x, positions, theta, rotary_dim);
}

void init_linear(torch::nn::Linear& layer, double std) {
  torch::NoGradGuard g;
  layer->weight.normal_(0.0, std);
  if (layer->bias.defined()) layer->bias.zero_();
}

}  // namespace attnlab
