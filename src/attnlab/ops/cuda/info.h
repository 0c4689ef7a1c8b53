// What the CUDA side of this build offers (only compiled with CUDA torch).
#pragma once

#include <string>
#include <vector>

namespace attnlab::ops::cuda {

std::vector<std::string> gpu_names();
std::vector<std::string> kernel_names();

}  // namespace attnlab::ops::cuda
