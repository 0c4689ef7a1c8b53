// Device queries through the CUDA runtime.
#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/common/device_info.h"

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

}  // namespace attnlab::kernels
