// Time and memory of a region of code, the same way on the CPU and on CUDA, for every benchmark stage.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace attnlab::study {

// Bytes that libtorch's allocators hand out while a MemoryMeter lives (on this thread and the threads
// libtorch runs its work on: intra-op pools and autograd propagate the thread-local state). It listens to
// libtorch's memory reporting, the hook its own profiler uses, so it counts what the CPU allocator and the
// CUDA caching allocator allocate (tensors), not process RSS and not the caching allocator's reserve.
// Peak is relative to the bytes live when the meter started. One meter at a time (it takes the profiler's
// slot: do not nest it inside a libtorch profiler session).
class MemoryMeter {
 public:
  MemoryMeter();
  ~MemoryMeter();
  MemoryMeter(const MemoryMeter&) = delete;
  MemoryMeter& operator=(const MemoryMeter&) = delete;
  int64_t peak_bytes() const;     // highest live total since start (or reset_peak)
  int64_t current_bytes() const;  // live now, relative to the start
  void reset_peak();
  // What the numbers mean, for the CSV's `memory_source` column.
  static const char* source();

  struct State;  // shared with the reporter that libtorch calls (measure.cpp)

 private:
  std::shared_ptr<State> state_;
  std::unique_ptr<struct MeterGuard> guard_;
};

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int repeat = 0;
  std::string clock;  // "steady_clock" on the CPU, "cuda_events" on CUDA
};

// Runs fn `warmup` times untimed, then `repeat` times timed; medians. On CUDA, CUDA events around each call
// (after a synchronize); on the CPU, the monotonic clock.
Timing time_region(const std::function<void()>& fn, const torch::Device& device, int warmup, int repeat);

// True for libtorch's out-of-memory errors (CUDA's "out of memory", the CPU's failed allocations), which the
// sweeps record as OOM and go on.
bool is_oom(const std::exception& e);

}  // namespace attnlab::study
