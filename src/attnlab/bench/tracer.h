// A span tracer for profiling: RAII scopes per thread, written as a Chrome/Perfetto trace, as folded stacks
// for flame graphs (flamegraph.pl, speedscope) and as a table of the most expensive spans.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "attnlab/report/csv.h"

namespace attnlab::bench {

namespace fs = std::filesystem;

// Collects spans. Disabled (the default), a Span costs one relaxed atomic load and one branch; enabled, it
// takes a mutex at its start and end (spans are meant for steps, layers and ops, not inner loops).
class Tracer {
 public:
  struct Event {
    std::string name, cat;
    int64_t start_ns = 0;  // steady clock, since the tracer's epoch (construction or clear())
    int64_t dur_ns = -1;   // -1 while the span is open
    uint32_t tid = 0;      // 1, 2, ... in the order threads first opened a span here
    int64_t parent = -1;   // index of the enclosing open span of the same thread, -1 at the top
  };

  Tracer();
  // The process-wide tracer that Span(name) and ATTNLAB_TRACE use.
  static Tracer& global();

  void enable(bool on = true) { enabled_.store(on, std::memory_order_relaxed); }
  void disable() { enable(false); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  // Drops every span (spans still open are dropped when they end) and restarts the clock.
  void clear();
  // A copy of the spans, in the order they were opened.
  std::vector<Event> events() const;

  // Chrome trace JSON ({"traceEvents": [...]}, complete events "ph":"X", microseconds), readable by
  // chrome://tracing and ui.perfetto.dev. Timestamps are Unix-epoch microseconds, the clock of libtorch's
  // profiler, so the events of each file in `merge` (an object with "traceEvents" or a bare array) line up
  // with ours: a file's "baseTimeNanoseconds" (Kineto 2.x writes "ts" relative to it) is added back, and
  // its events on this process's pid move to pid + 1 + (index in merge), named "<file> (merged)", so that
  // they show as a process of their own. Throws attnlab::Error naming a merge file that is not a trace.
  std::string chrome_trace(const std::vector<fs::path>& merge = {}) const;
  void write_chrome_trace(const fs::path& path, const std::vector<fs::path>& merge = {}) const;

  // Folded stacks: one line per unique stack, "outer;inner;leaf <self microseconds>", sorted; stacks with
  // less than 1 us of self time are left out. ';' inside names becomes ':'.
  std::string folded_stacks() const;
  void write_folded_stacks(const fs::path& path) const;

  // One row per span name: name, calls, total_ms (outermost spans of that name only, so recursion does not
  // count twice), self_ms (without the time of nested spans), mean_us (total / calls), percent (of all self
  // time); sorted by self time, largest first.
  report::Table top_ops() const;

  // For Span: opens a span on this thread; returns its index. close() ends it.
  size_t open(std::string_view name, std::string_view cat, uint64_t& generation);
  void close(size_t index, uint64_t generation);

 private:
  struct ThreadState {
    uint32_t tid = 0;
    std::vector<size_t> open;  // indices of the open spans, innermost last
  };
  int64_t now_ns() const;
  std::atomic<bool> enabled_{false};
  mutable std::mutex mutex_;
  std::vector<Event> events_;
  std::unordered_map<std::thread::id, ThreadState> threads_;
  uint64_t generation_ = 0;      // bumped by clear(), so that spans opened before it are dropped
  int64_t epoch_steady_ns_ = 0;  // steady clock at the epoch
  int64_t epoch_unix_ns_ = 0;    // system clock at the epoch: the offset of the Chrome timestamps
};

// An RAII span: from construction to destruction, on the constructing thread.
class Span {
 public:
  Span(Tracer& tracer, std::string_view name, std::string_view cat = {}) {
    if (tracer.enabled()) {
      tracer_ = &tracer;
      index_ = tracer.open(name, cat, generation_);
    }
  }
  explicit Span(std::string_view name, std::string_view cat = {}) : Span(Tracer::global(), name, cat) {}
  ~Span() {
    if (tracer_) tracer_->close(index_, generation_);
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  Tracer* tracer_ = nullptr;
  size_t index_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace attnlab::bench

#define ATTNLAB_TRACE_CONCAT_(a, b) a##b
#define ATTNLAB_TRACE_CONCAT(a, b) ATTNLAB_TRACE_CONCAT_(a, b)
// ATTNLAB_TRACE("forward") or ATTNLAB_TRACE("matmul", "op"): a span on the global tracer until the end of
// the enclosing scope.
#define ATTNLAB_TRACE(...) \
  ::attnlab::bench::Span ATTNLAB_TRACE_CONCAT(attnlab_trace_span_, __LINE__)(__VA_ARGS__)
