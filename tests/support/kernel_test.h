// For the kernel tests: skip, saying why, when libtorch sees no CUDA device; the relative RMS error.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attnlab/core/compat.h"

#define SKIP_WITHOUT_CUDA()                                                         \
  if (!torch::cuda::is_available())                                                 \
  GTEST_SKIP() << "no CUDA device (torch::cuda::is_available() is false, libtorch " \
               << ::attnlab::compat::torch_version() << "); this test needs a GPU"

namespace attnlab::testing {

// ||a - ref|| / ||ref||, in float64 (a zero reference counts as 1e-30).
inline double rel_rms(const torch::Tensor& a, const torch::Tensor& ref) {
  auto x = a.to(torch::kDouble), r = ref.to(torch::kDouble);
  return ((x - r).norm() / r.norm().clamp_min(1e-30)).item<double>();
}

}  // namespace attnlab::testing
