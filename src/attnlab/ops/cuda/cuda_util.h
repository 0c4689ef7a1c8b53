// Small helpers shared by the kernel bindings under src/attnlab/ops/cuda/ (CUDA runtime only, no c10/cuda,
// so that a CPU-only libtorch compiles them too).
#pragma once

#include <cuda_runtime.h>
#include <torch/torch.h>

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

// Compute capability major of `device` (9 on Hopper: where the sm_90a wgmma kernels run).
inline int compute_major(int device) {
  int major = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "compute_major",
             "cudaDeviceGetAttribute(cudaDevAttrComputeCapabilityMajor)");
  return major;
}

// Absent optional inputs (g, h0, ...) cross the bindings' autograd Functions as empty tensors: libtorch
// records the device of every tensor input, and an undefined one has none.
inline bool given(const torch::Tensor& t) {
  return t.defined() && t.numel() > 0;
}
// The float32 data of a given tensor, nullptr for an absent one (the kernels' "not given").
inline float* f32(const torch::Tensor& t) {
  return given(t) ? static_cast<float*>(t.data_ptr()) : nullptr;
}
inline const float* cf32(const torch::Tensor& t) {
  return f32(t);
}

}  // namespace attnlab::ops::cuda
