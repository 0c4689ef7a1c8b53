// Device queries for the binding and `attnlab env`, without torch.
#pragma once

#include <string>
#include <vector>

namespace attnlab::kernels {

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" for each visible device; empty if none.
std::vector<std::string> describe_devices();

}  // namespace attnlab::kernels
