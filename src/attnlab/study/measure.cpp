// Time and memory of a region.
#include "attnlab/study/measure.h"

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "attnlab/bench/op_bench.h"
#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"

namespace attnlab::study {

struct MemoryMeter::State {
  std::atomic<int64_t> current{0}, peak{0};
};

namespace {

// libtorch calls reportMemoryUsage(ptr, +bytes) on every allocation and (ptr, -bytes) on every free while
// a reporter that says memoryProfilingEnabled() sits in the thread-local PROFILER_STATE slot.
class Reporter final : public c10::MemoryReportingInfoBase {
 public:
  explicit Reporter(std::shared_ptr<MemoryMeter::State> s) : s_(std::move(s)) {}
  void reportMemoryUsage(void*, int64_t alloc_size, compat::MemoryTotal, compat::MemoryTotal,
                         c10::Device) override {
    const int64_t now = s_->current.fetch_add(alloc_size) + alloc_size;
    int64_t peak = s_->peak.load();
    while (now > peak && !s_->peak.compare_exchange_weak(peak, now)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }

 private:
  std::shared_ptr<MemoryMeter::State> s_;
};

}  // namespace

struct MeterGuard {
  explicit MeterGuard(std::shared_ptr<c10::DebugInfoBase> r)
      : guard(c10::DebugInfoKind::PROFILER_STATE, std::move(r)) {}
  c10::DebugInfoGuard guard;
};

MemoryMeter::MemoryMeter() : state_(std::make_shared<State>()) {
  ATTNLAB_CHECK(
      c10::ThreadLocalDebugInfo::get(c10::DebugInfoKind::PROFILER_STATE) == nullptr,
      "MemoryMeter: another meter or libtorch's profiler is active on this thread; they cannot nest");
  guard_ = std::make_unique<MeterGuard>(std::make_shared<Reporter>(state_));
}

MemoryMeter::~MemoryMeter() = default;

int64_t MemoryMeter::peak_bytes() const {
  return state_->peak.load();
}
int64_t MemoryMeter::current_bytes() const {
  return state_->current.load();
}
void MemoryMeter::reset_peak() {
  state_->peak.store(state_->current.load());
}
const char* MemoryMeter::source() {
  return "libtorch_allocator_reports";
}

Timing time_region(const std::function<void()>& fn, const torch::Device& device, int warmup, int repeat) {
  ATTNLAB_CHECK(repeat >= 1 && warmup >= 0,
                "time_region: expected repeat >= 1 and warmup >= 0, got {} and {}", repeat, warmup);
  Timing t;
  t.repeat = repeat;
  if (device.is_cuda()) {
    t.clock = "cuda_events";
    t.median_ms = t.min_ms = t.max_ms = bench::time_cuda_ms(fn, warmup, repeat);
    return t;
  }
  t.clock = "steady_clock";
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  t.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  return t;
}

bool is_oom(const std::exception& e) {
  const std::string m = e.what();
  return m.find("out of memory") != std::string::npos || m.find("OutOfMemory") != std::string::npos ||
         m.find("DefaultCPUAllocator: can't allocate") != std::string::npos ||
         m.find("not enough memory") != std::string::npos;
}

}  // namespace attnlab::study
