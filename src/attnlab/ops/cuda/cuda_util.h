// Small helpers shared by the kernel bindings under src/attnlab/ops/cuda/ (CUDA runtime only, no c10/cuda,
// so that a CPU-only libtorch compiles them too).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attnlab/core/error.h"

namespace attnlab::ops::cuda {

// Throws attnlab::Error "<op>: <what> failed: <message> (<name>)" unless err is cudaSuccess.
inline void check_cuda(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess)
    fail("{}: {} failed: {} ({})", op, what, cudaGetErrorString(err), cudaGetErrorName(err));
}

// Makes `device` current for the scope (the bindings have no c10/cuda DeviceGuard), restoring the previous.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : device_(device) {
    check_cuda(cudaGetDevice(&prev_), "DeviceScope", "cudaGetDevice");
    if (prev_ != device_) check_cuda(cudaSetDevice(device_), "DeviceScope", "cudaSetDevice");
  }
  ~DeviceScope() {
    if (prev_ != device_) (void)cudaSetDevice(prev_);  // nothing to report from a destructor
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int device_;
  int prev_ = 0;
};

// Number of multiprocessors of `device` (for grid heuristics).
inline int sm_count(int device) {
  int n = 0;
  check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "sm_count",
             "cudaDeviceGetAttribute(cudaDevAttrMultiProcessorCount)");
  return n;
}

}  // namespace attnlab::ops::cuda
