// Causal depthwise short convolution with a rolling cache.
#include "attnlab/mixers/short_conv.h"

#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/core/log.h"

#ifdef ATTNLAB_WITH_CUDA
#include <cstdlib>
#include <string>

#include "attnlab/ops/cuda/short_conv.h"
#endif

namespace attnlab {

ShortConvImpl::ShortConvImpl(int64_t channels, int64_t kernel_size, bool with_bias, bool silu)
    : channels_(channels), kernel_size_(kernel_size), silu_(silu) {
  ATTNLAB_CHECK(channels > 0, "short_conv: expected channels > 0, got {}", channels);
  ATTNLAB_CHECK(kernel_size >= 1, "short_conv: expected kernel_size >= 1, got {}", kernel_size);
  // PyTorch's Conv1d default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = K for a depthwise conv.
  double bound = 1.0 / std::sqrt(static_cast<double>(kernel_size));
  weight = register_parameter("weight", torch::empty({channels, 1, kernel_size}).uniform_(-bound, bound));
  if (with_bias) bias = register_parameter("bias", torch::empty({channels}).uniform_(-bound, bound));
}

torch::Tensor ShortConvImpl::forward(const torch::Tensor& x, torch::Tensor* buffer) {
  ATTNLAB_CHECK(x.dim() == 3 && x.size(2) == channels_, "short_conv: x must be [B,T,C] with C={}, got {}",
                channels_, shape_str(x.sizes()));
  const int64_t B = x.size(0), T = x.size(1), K = kernel_size_;
#ifdef ATTNLAB_WITH_CUDA
  // Training on CUDA (no carried history): the fused kernel (kernels/fused/short_conv.cu; GpuShortConv in
  // tests/test_gpu_fused.cpp), ATTNLAB_SHORT_CONV=libtorch forces the path below. On the Gated DeltaNet 30M
  // step (H200) it took the step from 75.3 to 48.7 ms with the two-pass delta backward (run 2026-12-02i).
  const char* mode = std::getenv("ATTNLAB_SHORT_CONV");
  if (x.is_cuda() && !buffer && !(mode && std::string(mode) == "libtorch")) {
    auto w = weight.view({channels_, K}).to(torch::kFloat);
    auto b = bias.defined() ? bias.to(torch::kFloat) : torch::Tensor();
    auto why = ops::cuda::short_conv_unusable_reason(x, w, b);
    if (why.empty()) return ops::cuda::short_conv(x, w, b, silu_);
    log_once("short_conv.kernel: " + why, fmt::format("short_conv: {}; using the libtorch path", why));
  }
#endif
  torch::Tensor prev;  // [B, K-1, C]
  if (buffer && buffer->defined()) {
    ATTNLAB_CHECK(buffer->dim() == 3 && buffer->size(0) == B && buffer->size(1) == K - 1 &&
                      buffer->size(2) == channels_,
                  "short_conv: buffer must be [B,K-1,C]=[{},{},{}], got {}", B, K - 1, channels_,
                  shape_str(buffer->sizes()));
    prev = buffer->to(x.scalar_type());
  } else {
    prev = torch::zeros({B, K - 1, channels_}, x.options());
  }
  auto xp = torch::cat({prev, x}, 1);  // [B, K-1+T, C]
  // K shifted multiply-adds in the [B, T, C] layout: no transposes, and for K = 4 cheaper on the CPU than
  // a grouped conv1d. Tap j of PyTorch's cross-correlation meets input t - (K-1) + j.
  auto w = weight.squeeze(1).to(x.scalar_type());  // [C, K]
  auto y = xp.narrow(1, 0, T) * w.select(1, 0);    // [B, T, C]
  for (int64_t j = 1; j < K; ++j) y = y + xp.narrow(1, j, T) * w.select(1, j);
  if (bias.defined()) y = y + bias.to(x.scalar_type());
  if (silu_) y = torch::silu(y);
  if (buffer) {
    // [B, K-1, C]: the last K-1 inputs, copied so that the buffer does not keep all of xp alive.
    auto dtype = buffer->defined() ? buffer->scalar_type() : x.scalar_type();
    *buffer = xp.narrow(1, T, K - 1).detach().to(dtype, /*non_blocking=*/false, /*copy=*/true);
  }
  return y;
}

torch::Tensor ShortConvImpl::make_buffer(int64_t batch, const torch::TensorOptions& options) const {
  return torch::zeros({batch, kernel_size_ - 1, channels_}, options);
}

}  // namespace attnlab
