// The CUDA build's capabilities.
#include "attnlab/ops/cuda/info.h"

#include "kernels/common/device_info.h"

namespace attnlab::ops::cuda {

std::vector<std::string> gpu_names() {
  return kernels::describe_devices();
}

// Filled as kernels land (flash attention, the linear family).
std::vector<std::string> kernel_names() {
  return {};
}

}  // namespace attnlab::ops::cuda
