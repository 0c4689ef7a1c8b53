// The CUDA build's capabilities.
#include "attnlab/ops/cuda/info.h"

#include "kernels/common/device_info.h"

namespace attnlab::ops::cuda {

std::vector<std::string> gpu_names() {
  return kernels::describe_devices();
}

// Filled as kernels land (the linear family next); the names are those of kernels/<family>/ launchers.
std::vector<std::string> kernel_names() {
  return {"flash_attn_fwd", "flash_attn_bwd"};
}

}  // namespace attnlab::ops::cuda
