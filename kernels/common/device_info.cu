// Device queries through the CUDA runtime, and what this build of the kernels holds.
#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/common/device_info.h"
#include "kernels/linear_chunk/params.h"

namespace attnlab::kernels {

std::vector<std::string> describe_devices() {
  std::vector<std::string> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
                  p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    out.emplace_back(buf);
  }
  return out;
}

// Here, in the smallest kernel file, so that the torch-free harnesses that link one or two kernel files get
// it too: the whole kernel library is compiled with or without ATTNLAB_SM90A.
bool linear_chunk_has_wgmma() {
#ifdef ATTNLAB_SM90A
  return true;
#else
  return false;
#endif
}

}  // namespace attnlab::kernels
