// Small helpers shared by the kernel bindings under src/attnlab/ops/cuda/ (CUDA runtime only, no c10/cuda,
// so that a CPU-only libtorch compiles them too).
#pragma once

#include <cuda_runtime.h>
#include <torch/torch.h>

#include <cstdint>
#include <mutex>

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

// One of two streams per device that the bindings run work on beside the legacy default stream (the streamed
// delta forward: delta_wy on the low-priority one, the walk that waits for it on the high-priority one, so
// that the walk's blocks are placed first). Non-blocking (no implicit order with the default stream: the
// callers order them with events), created once per device and kept for the process.
inline cudaStream_t side_stream(int device, bool high_priority) {
  constexpr int kMaxDevices = 64;
  static cudaStream_t streams[kMaxDevices][2] = {};
  static std::mutex mu;
  ATTNLAB_CHECK(device >= 0 && device < kMaxDevices, "side_stream: device {} out of 0..{}", device,
                kMaxDevices - 1);
  std::lock_guard<std::mutex> lock(mu);
  cudaStream_t& s = streams[device][high_priority ? 1 : 0];
  if (!s) {
    int lo = 0, hi = 0;
    check_cuda(cudaDeviceGetStreamPriorityRange(&lo, &hi), "side_stream", "cudaDeviceGetStreamPriorityRange");
    check_cuda(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, high_priority ? hi : lo), "side_stream",
               "cudaStreamCreateWithPriority");
  }
  return s;
}

// An event recorded on `stream` now (no timing), for another stream to wait on; the caller destroys it.
inline cudaEvent_t record_event(cudaStream_t stream, const char* op) {
  cudaEvent_t e = nullptr;
  check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), op, "cudaEventCreateWithFlags");
  check_cuda(cudaEventRecord(e, stream), op, "cudaEventRecord");
  return e;
}

// `waiter` waits for everything queued on `stream` so far.
inline void stream_after(cudaStream_t waiter, cudaStream_t stream, const char* op) {
  cudaEvent_t e = record_event(stream, op);
  check_cuda(cudaStreamWaitEvent(waiter, e, 0), op, "cudaStreamWaitEvent");
  check_cuda(cudaEventDestroy(e), op, "cudaEventDestroy");  // released once it has completed
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
