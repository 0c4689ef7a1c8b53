// The one place that knows the differences between libtorch versions (Debian's 1.13 on the CPU machines,
// the 2.x inside pip's torch on the GPU machines).
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#define ATTNLAB_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention appeared in 2.0; its `scale` argument in 2.1.
#define ATTNLAB_HAS_SDPA ATTNLAB_TORCH_AT_LEAST(2, 1)

namespace attnlab::compat {

// The type of the totals in c10::MemoryReportingInfoBase::reportMemoryUsage: int64_t up to 1.13, size_t
// from 2.0 (study/measure.cpp overrides it).
#if ATTNLAB_TORCH_AT_LEAST(2, 0)
using MemoryTotal = size_t;
#else
using MemoryTotal = int64_t;
#endif

inline std::string torch_version() {
  return TORCH_VERSION;
}

inline constexpr bool has_sdpa() {
  return ATTNLAB_HAS_SDPA;
}

// Scaled dot-product attention through ATen where it exists. q [B,H,Tq,D], k/v [B,H,Tk,D] (same H).
// Returns std::nullopt on versions without it; callers fall back to the naive path (and log it once).
inline std::optional<torch::Tensor> sdpa(const torch::Tensor& q, const torch::Tensor& k,
                                         const torch::Tensor& v, const std::optional<torch::Tensor>& mask,
                                         bool causal, double scale) {
#if ATTNLAB_HAS_SDPA
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)causal, (void)scale;
  return std::nullopt;
#endif
}

// SDPA's fused backends, selectable one at a time through at::globalContext()'s toggles (benchmarks time
// each peer explicitly). Flash / efficient / math toggles exist since 2.0; cuDNN's since 2.3 (gated at 2.4,
// where its backward landed).
enum class SdpaBackend { flash, cudnn, efficient, math };

inline const char* sdpa_backend_name(SdpaBackend b) {
  switch (b) {
    case SdpaBackend::flash:
      return "flash";
    case SdpaBackend::cudnn:
      return "cudnn";
    case SdpaBackend::efficient:
      return "efficient";
    case SdpaBackend::math:
      return "math";
  }
  return "?";
}

// Whether this libtorch can run SDPA with only backend `b` enabled.
inline constexpr bool can_select_sdpa_backend(SdpaBackend b) {
  if (!has_sdpa()) return false;
  return b != SdpaBackend::cudnn || ATTNLAB_TORCH_AT_LEAST(2, 4);
}

// RAII: for its lifetime SDPA may use only `b` (it throws "No available kernel" when `b` cannot take the
// inputs, rather than silently picking another); the previous toggles come back at the end. The toggles
// are process-wide: not for use while other threads run SDPA.
class SdpaBackendScope {
 public:
  explicit SdpaBackendScope(SdpaBackend b) {
#if ATTNLAB_HAS_SDPA
    auto& c = at::globalContext();
    flash_ = c.userEnabledFlashSDP(), efficient_ = c.userEnabledMemEfficientSDP(),
    math_ = c.userEnabledMathSDP();
    c.setSDPUseFlash(b == SdpaBackend::flash);
    c.setSDPUseMemEfficient(b == SdpaBackend::efficient);
    c.setSDPUseMath(b == SdpaBackend::math);
#if ATTNLAB_TORCH_AT_LEAST(2, 4)
    cudnn_ = c.userEnabledCuDNNSDP();
    c.setSDPUseCuDNN(b == SdpaBackend::cudnn);
#endif
#else
    (void)b;
#endif
  }
  ~SdpaBackendScope() {
#if ATTNLAB_HAS_SDPA
    auto& c = at::globalContext();
    c.setSDPUseFlash(flash_), c.setSDPUseMemEfficient(efficient_), c.setSDPUseMath(math_);
#if ATTNLAB_TORCH_AT_LEAST(2, 4)
    c.setSDPUseCuDNN(cudnn_);
#endif
#endif
  }
  SdpaBackendScope(const SdpaBackendScope&) = delete;
  SdpaBackendScope& operator=(const SdpaBackendScope&) = delete;

 private:
  bool flash_ = true, efficient_ = true, math_ = true, cudnn_ = true;
};

// bf16 autocast on CUDA. The enable/dtype calls took a device type from 2.4 on.
inline void set_cuda_autocast(bool enabled, c10::ScalarType dtype = at::kBFloat16) {
#if ATTNLAB_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  if (!enabled) at::autocast::clear_cache();
}

// RAII guard: autocast on for its lifetime (only if `enabled`).
class CudaAutocast {
 public:
  explicit CudaAutocast(bool enabled) : enabled_(enabled) {
    if (enabled_) set_cuda_autocast(true);
  }
  ~CudaAutocast() {
    if (enabled_) set_cuda_autocast(false);
  }
  CudaAutocast(const CudaAutocast&) = delete;
  CudaAutocast& operator=(const CudaAutocast&) = delete;

 private:
  bool enabled_;
};

// ---- libtorch's op profiler (torch/csrc/autograd/profiler_kineto.h; compat.cpp). The same calls exist in
// 1.13 and 2.x (prepareProfiler, enableProfiler(ProfilerConfig, activities), disableProfiler() returning a
// ProfilerResult with events() and save(path)); what differs: KinetoEvent's times (startUs()/durationUs()
// up to 2.0, startNs()/durationNs() later), and whether the build has Kineto, without which save() throws
// (Debian's 1.13) while events() still holds every op.

// One event of libtorch's profiler: a CPU op (aten::mm, autograd::engine::..., cudaLaunchKernel) or a
// device activity (a CUDA kernel, memcpy, memset: `on_device`).
struct OpEvent {
  std::string name;
  int64_t start_ns = 0;  // Unix epoch, the clock of attnlab's tracer
  int64_t dur_ns = 0;
  uint64_t tid = 0;  // libtorch's thread id (1, 2, ... for CPU ops; the stream for device activities)
  bool on_device = false;
  int device_index = -1;  // device activities
  // A device activity's linked_correlation is the correlation of the CPU op that launched it.
  uint64_t correlation = 0, linked_correlation = 0;
};

struct OpProfile {
  bool collected = false;      // the profiler ran and returned its events
  bool trace_written = false;  // libtorch wrote its own Chrome trace (needs Kineto)
  std::string note;            // why no trace was written (libtorch's message), or why nothing was collected
  std::vector<OpEvent> events;
};

// Starts libtorch's profiler on this thread: CPU ops, and CUDA activities when `cuda`. Returns "" when it
// runs, else why not (a MemoryMeter or another profiler holds the thread's profiler slot: they cannot
// nest; libtorch refused). Never throws.
std::string start_op_profiler(bool cuda);
// Stops the profiler started by start_op_profiler and returns its events; writes libtorch's own Chrome
// trace to `chrome_trace_path` (unless empty) where the build can. Never throws.
OpProfile stop_op_profiler(const std::string& chrome_trace_path);

}  // namespace attnlab::compat
