// The differences between libtorch versions that need more than a header: libtorch's op profiler.
#include "attnlab/core/compat.h"

#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>

namespace attnlab::compat {
namespace {

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

// KinetoEvent's times: startNs()/durationNs() from 2.1, startUs()/durationUs() before (both Unix epoch).
// Chosen by what the type has, so that no version number has to be right.
template <typename E>
auto start_ns(const E& e, int) -> decltype(static_cast<int64_t>(e.startNs())) {
  return static_cast<int64_t>(e.startNs());
}
template <typename E>
int64_t start_ns(const E& e, long) {
  return static_cast<int64_t>(e.startUs()) * 1000;
}
template <typename E>
auto dur_ns(const E& e, int) -> decltype(static_cast<int64_t>(e.durationNs())) {
  return static_cast<int64_t>(e.durationNs());
}
template <typename E>
int64_t dur_ns(const E& e, long) {
  return static_cast<int64_t>(e.durationUs()) * 1000;
}

std::set<impl::ActivityType> activities(bool cuda) {
  std::set<impl::ActivityType> a = {impl::ActivityType::CPU};
  if (cuda) a.insert(impl::ActivityType::CUDA);
  return a;
}

// The first line of libtorch's message (the rest is a C++ backtrace).
std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

thread_local bool running =
    false;  // started by start_op_profiler and not yet stopped (this thread's session)

}  // namespace

std::string start_op_profiler(bool cuda) {
  if (running) return "libtorch's profiler is already running (start_op_profiler called twice)";
  if (c10::ThreadLocalDebugInfo::get(c10::DebugInfoKind::PROFILER_STATE) != nullptr)
    return "another profiler or a MemoryMeter holds this thread's profiler slot (they cannot nest)";
  try {
    const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
    prof::prepareProfiler(config, activities(cuda));
    prof::enableProfiler(config, activities(cuda));
  } catch (const std::exception& e) {
    return "libtorch's profiler did not start: " + first_line(e.what());
  }
  running = true;
  return "";
}

OpProfile stop_op_profiler(const std::string& chrome_trace_path) {
  OpProfile out;
  if (!running) {
    out.note = "libtorch's profiler was not running";
    return out;
  }
  running = false;
  std::unique_ptr<prof::ProfilerResult> result;
  try {
    result = prof::disableProfiler();
  } catch (const std::exception& e) {
    out.note = "libtorch's profiler failed to stop: " + first_line(e.what());
    return out;
  }
  if (!result) {
    out.note = "libtorch's profiler returned no result";
    return out;
  }
  out.collected = true;
  for (const auto& e : result->events()) {
    OpEvent o;
    o.name = e.name();
    o.start_ns = start_ns(e, 0);
    o.dur_ns = dur_ns(e, 0);
    o.tid = e.startThreadId();
    o.on_device = e.deviceType() != c10::DeviceType::CPU;
    if (o.on_device) {
      o.device_index = static_cast<int>(e.deviceIndex());
      o.tid = static_cast<uint64_t>(e.deviceResourceId());
    }
    o.correlation = e.correlationId();
    o.linked_correlation = e.linkedCorrelationId();
    out.events.push_back(std::move(o));
  }
  if (!chrome_trace_path.empty()) {
    try {
      result->save(chrome_trace_path);  // Kineto's Chrome trace; throws where libtorch has no Kineto
      out.trace_written = true;
    } catch (const std::exception& e) {
      out.note = first_line(e.what());
    }
  }
  return out;
}

}  // namespace attnlab::compat
