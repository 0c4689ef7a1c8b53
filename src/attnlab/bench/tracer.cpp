// The span tracer: recording, and the Chrome trace, folded stacks and top-spans outputs.
#include "attnlab/bench/tracer.h"

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab::bench {

namespace {

int64_t steady_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

int64_t unix_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}

// The folded format separates frames by ';' and the count by the last space: keep names on one line and
// free of ';'.
std::string frame_name(const std::string& name) {
  std::string s = name;
  for (char& c : s) {
    if (c == ';') c = ':';
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

// Self time of every closed span: its duration less that of its closed children.
std::vector<int64_t> self_times(const std::vector<Tracer::Event>& ev) {
  std::vector<int64_t> self(ev.size(), 0);
  for (size_t i = 0; i < ev.size(); ++i)
    if (ev[i].dur_ns >= 0) self[i] += ev[i].dur_ns;
  for (size_t i = 0; i < ev.size(); ++i)
    if (ev[i].dur_ns >= 0 && ev[i].parent >= 0) self[static_cast<size_t>(ev[i].parent)] -= ev[i].dur_ns;
  for (auto& s : self) s = std::max<int64_t>(s, 0);  // clock granularity can make a child outlast its parent
  return self;
}

}  // namespace

Tracer::Tracer() {
  epoch_steady_ns_ = steady_ns();
  epoch_unix_ns_ = unix_ns();
}

Tracer& Tracer::global() {
  static Tracer tracer;
  return tracer;
}

int64_t Tracer::now_ns() const {
  return steady_ns() - epoch_steady_ns_;
}

void Tracer::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  events_.clear();
  threads_.clear();
  ++generation_;
  epoch_steady_ns_ = steady_ns();
  epoch_unix_ns_ = unix_ns();
}

std::vector<Tracer::Event> Tracer::events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_;
}

size_t Tracer::open(std::string_view name, std::string_view cat, uint64_t& generation) {
  int64_t t = now_ns();
  std::lock_guard<std::mutex> lock(mutex_);
  ThreadState& ts = threads_[std::this_thread::get_id()];
  if (ts.tid == 0) ts.tid = static_cast<uint32_t>(threads_.size());
  Event e;
  e.name = std::string(name);
  e.cat = std::string(cat);
  e.start_ns = t;
  e.tid = ts.tid;
  e.parent = ts.open.empty() ? -1 : static_cast<int64_t>(ts.open.back());
  events_.push_back(std::move(e));
  ts.open.push_back(events_.size() - 1);
  generation = generation_;
  return events_.size() - 1;
}

void Tracer::close(size_t index, uint64_t generation) {
  int64_t t = now_ns();
  std::lock_guard<std::mutex> lock(mutex_);
  if (generation != generation_ || index >= events_.size()) return;  // cleared while the span was open
  Event& e = events_[index];
  e.dur_ns = std::max<int64_t>(t - e.start_ns, 0);
  for (auto& [id, ts] : threads_) {
    if (ts.tid != e.tid) continue;
    // Normally the innermost open span; search in case a span ended on another thread.
    auto it = std::find(ts.open.rbegin(), ts.open.rend(), index);
    if (it != ts.open.rend()) ts.open.erase(std::next(it).base());
    break;
  }
}

std::string Tracer::chrome_trace(const std::vector<fs::path>& merge) const {
  using nlohmann::json;
  std::vector<Event> ev;
  int64_t epoch_unix;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ev = events_;
    epoch_unix = epoch_unix_ns_;
  }
  const int pid = static_cast<int>(::getpid());
  json events = json::array();
  events.push_back(
      {{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", "attnlab"}}}});
  uint32_t max_tid = 0;
  for (const auto& e : ev) {
    if (e.dur_ns < 0) continue;
    max_tid = std::max(max_tid, e.tid);
    // Microseconds with the nanoseconds as a fraction: Chrome's format allows fractional ts and dur.
    events.push_back({{"name", e.name},
                      {"cat", e.cat.empty() ? "attnlab" : e.cat},
                      {"ph", "X"},
                      {"ts", static_cast<double>(epoch_unix + e.start_ns) / 1e3},
                      {"dur", static_cast<double>(e.dur_ns) / 1e3},
                      {"pid", pid},
                      {"tid", e.tid}});
  }
  for (uint32_t t = 1; t <= max_tid; ++t)
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", pid},
                      {"tid", t},
                      {"args", {{"name", fmt::format("thread {}", t)}}}});
  for (const auto& path : merge) {
    json other;
    try {
      other = json::parse(read_file(path, "trace to merge"));
    } catch (const json::exception& e) {
      fail("trace to merge '{}': not JSON: {}", path.string(), e.what());
    }
    const json* list = nullptr;
    if (other.is_object() && other.contains("traceEvents") && other["traceEvents"].is_array())
      list = &other["traceEvents"];
    else if (other.is_array())
      list = &other;
    if (!list)
      fail(
          "trace to merge '{}': expected a Chrome trace (an object with a \"traceEvents\" array, or an "
          "array)",
          path.string());
    // Kineto (libtorch 2.x) writes "ts" relative to "baseTimeNanoseconds" (Unix epoch): shift back onto
    // the Unix-epoch clock of our spans. Events on this process's pid (libtorch's CPU ops) move to a pid of
    // their own, so that Perfetto shows them as a track beside ours; their process name says whose.
    const double base_us =
        other.is_object() && other.contains("baseTimeNanoseconds") && other["baseTimeNanoseconds"].is_number()
            ? other["baseTimeNanoseconds"].get<double>() / 1e3
            : 0.0;
    const int moved_pid = pid + 1 + static_cast<int>(&path - merge.data());
    bool moved = false;
    for (json e : *list) {
      if (base_us != 0 && e.is_object() && e.contains("ts") && e["ts"].is_number() &&
          e.value("ph", "") != "M")
        e["ts"] = e["ts"].get<double>() + base_us;
      if (e.is_object() && e.contains("pid") && e["pid"].is_number_integer() &&
          e["pid"].get<int64_t>() == pid) {
        if (e.value("ph", "") == "M" && e.value("name", "") == "process_name") continue;
        e["pid"] = moved_pid;
        moved = true;
      }
      events.push_back(std::move(e));
    }
    if (moved)
      events.push_back({{"name", "process_name"},
                        {"ph", "M"},
                        {"pid", moved_pid},
                        {"tid", 0},
                        {"args", {{"name", fmt::format("{} (merged)", path.filename().string())}}}});
  }
  json out = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  return out.dump() + "\n";
}

void Tracer::write_chrome_trace(const fs::path& path, const std::vector<fs::path>& merge) const {
  write_file_atomic(path, chrome_trace(merge));
}

std::string Tracer::folded_stacks() const {
  std::vector<Event> ev = events();
  std::vector<int64_t> self = self_times(ev);
  // The stack of each span: its parent's stack, then its own name (parents come before children).
  std::vector<std::string> stack(ev.size());
  std::map<std::string, int64_t> total;  // sorted output
  for (size_t i = 0; i < ev.size(); ++i) {
    stack[i] = ev[i].parent >= 0 ? stack[static_cast<size_t>(ev[i].parent)] + ";" + frame_name(ev[i].name)
                                 : frame_name(ev[i].name);
    if (ev[i].dur_ns >= 0) total[stack[i]] += self[i];
  }
  std::string out;
  for (const auto& [s, ns] : total) {
    auto us = static_cast<int64_t>(std::llround(static_cast<double>(ns) / 1e3));
    if (us > 0) out += fmt::format("{} {}\n", s, us);
  }
  return out;
}

void Tracer::write_folded_stacks(const fs::path& path) const {
  write_file_atomic(path, folded_stacks());
}

report::Table Tracer::top_ops() const {
  std::vector<Event> ev = events();
  std::vector<int64_t> self = self_times(ev);
  struct Agg {
    int64_t calls = 0, total_ns = 0, self_ns = 0;
  };
  std::map<std::string, Agg> by_name;
  int64_t all_self = 0;
  for (size_t i = 0; i < ev.size(); ++i) {
    if (ev[i].dur_ns < 0) continue;
    Agg& a = by_name[ev[i].name];
    ++a.calls;
    a.self_ns += self[i];
    all_self += self[i];
    // Count the total only for the outermost span of a name, so that recursion is not counted twice.
    bool nested_in_same = false;
    for (int64_t p = ev[i].parent; p >= 0; p = ev[static_cast<size_t>(p)].parent)
      if (ev[static_cast<size_t>(p)].name == ev[i].name) nested_in_same = true;
    if (!nested_in_same) a.total_ns += ev[i].dur_ns;
  }
  std::vector<std::pair<std::string, Agg>> rows(by_name.begin(), by_name.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.self_ns > b.second.self_ns; });
  report::Table t;
  t.columns = {"name", "calls", "total_ms", "self_ms", "mean_us", "percent"};
  for (const auto& [name, a] : rows)
    t.add_row({name, a.calls, a.total_ns / 1e6, a.self_ns / 1e6,
               a.total_ns / 1e3 / static_cast<double>(a.calls),
               all_self > 0 ? 100.0 * a.self_ns / static_cast<double>(all_self) : 0.0});
  return t;
}

}  // namespace attnlab::bench
