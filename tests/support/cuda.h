// For the gpu-labelled tests: skip, saying why, when libtorch sees no CUDA device.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "attnlab/core/compat.h"

#define SKIP_WITHOUT_CUDA()                                                         \
  if (!torch::cuda::is_available())                                                 \
  GTEST_SKIP() << "no CUDA device (torch::cuda::is_available() is false, libtorch " \
               << ::attnlab::compat::torch_version() << "); this test needs a GPU"
