// The CUDA build's capabilities.
#include "attnlab/ops/cuda/info.h"

#include "kernels/common/device_info.h"

namespace attnlab::ops::cuda {

std::vector<std::string> gpu_names() {
  return kernels::describe_devices();
}

// The kernel families compiled in, by their launchers (kernels/<family>/), with what they are for.
std::vector<std::string> kernel_names() {
  return {"flash_attn_fwd",   "flash_attn_bwd",    // softmax attention
          "linear_chunk_fwd", "linear_chunk_bwd",  // linear attention, simple GLA
          "delta_chunk_fwd",  "delta_chunk_bwd",   // DeltaNet, Gated DeltaNet
          "recurrent_step"};                       // one-token decode, all five
}

}  // namespace attnlab::ops::cuda
