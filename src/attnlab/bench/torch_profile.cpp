// libtorch's profiler events as a Chrome trace and a top-ops table.
#include "attnlab/bench/torch_profile.h"

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <unordered_map>

#include "attnlab/core/fs.h"

namespace attnlab::bench {

std::string torch_events_chrome_trace(const std::vector<compat::OpEvent>& events,
                                      const std::string& process_name) {
  using nlohmann::json;
  const int pid = static_cast<int>(::getpid());
  json out = json::array();
  out.push_back(
      {{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", process_name}}}});
  std::set<std::pair<int, uint64_t>> threads;
  for (const auto& e : events) {
    const int p = e.on_device ? 1000000 + std::max(e.device_index, 0) : pid;
    threads.insert({p, e.tid});
    json ev = {{"name", e.name},
               {"cat", e.on_device ? "kernel" : "cpu_op"},
               {"ph", "X"},
               {"ts", static_cast<double>(e.start_ns) / 1e3},
               {"dur", static_cast<double>(e.dur_ns) / 1e3},
               {"pid", p},
               {"tid", e.tid}};
    if (e.correlation) ev["args"] = {{"correlation", e.correlation}};
    out.push_back(std::move(ev));
  }
  for (const auto& [p, t] : threads) {
    if (p != pid)
      out.push_back({{"name", "process_name"},
                     {"ph", "M"},
                     {"pid", p},
                     {"tid", 0},
                     {"args", {{"name", fmt::format("device {}", p - 1000000)}}}});
    out.push_back({{"name", "thread_name"},
                   {"ph", "M"},
                   {"pid", p},
                   {"tid", t},
                   {"args", {{"name", fmt::format("{} {}", p == pid ? "thread" : "stream", t)}}}});
  }
  return json({{"traceEvents", std::move(out)}, {"displayTimeUnit", "ms"}}).dump() + "\n";
}

void write_torch_events_chrome_trace(const fs::path& path, const std::vector<compat::OpEvent>& events,
                                     const std::string& process_name) {
  write_file_atomic(path, torch_events_chrome_trace(events, process_name));
}

report::Table torch_top_ops(const std::vector<compat::OpEvent>& events) {
  // CPU ops, nested per thread by their intervals: sorted by (thread, start, longest first), each op's
  // parent is the innermost earlier op still open at its start.
  std::vector<size_t> cpu;
  for (size_t i = 0; i < events.size(); ++i)
    if (!events[i].on_device) cpu.push_back(i);
  std::stable_sort(cpu.begin(), cpu.end(), [&](size_t a, size_t b) {
    const auto &x = events[a], &y = events[b];
    if (x.tid != y.tid) return x.tid < y.tid;
    if (x.start_ns != y.start_ns) return x.start_ns < y.start_ns;
    return x.dur_ns > y.dur_ns;
  });
  const size_t n = cpu.size();
  std::vector<int64_t> parent(n, -1), self(n), cuda_self(n, 0), cuda_incl(n, 0);
  std::vector<size_t> stack;
  for (size_t k = 0; k < n; ++k) {
    const auto& e = events[cpu[k]];
    while (!stack.empty()) {
      const auto& top = events[cpu[stack.back()]];
      if (top.tid == e.tid && e.start_ns < top.start_ns + top.dur_ns) break;
      stack.pop_back();
    }
    if (!stack.empty()) parent[k] = static_cast<int64_t>(stack.back());
    stack.push_back(k);
    self[k] = e.dur_ns;
  }
  for (size_t k = 0; k < n; ++k)
    if (parent[k] >= 0) self[static_cast<size_t>(parent[k])] -= events[cpu[k]].dur_ns;
  for (auto& s : self) s = std::max<int64_t>(s, 0);  // microsecond rounding (1.13) can overlap siblings
  // Device time: each activity to the CPU op that launched it (its correlation), then up the nesting.
  std::unordered_map<uint64_t, size_t> by_correlation;
  for (size_t k = 0; k < n; ++k)
    if (events[cpu[k]].correlation) by_correlation[events[cpu[k]].correlation] = k;
  struct Agg {
    int64_t calls = 0, total = 0, self = 0, cuda_total = 0, cuda_self = 0;
  };
  std::map<std::string, Agg> dev;
  int64_t all_dev = 0;
  for (const auto& e : events) {
    if (!e.on_device) continue;
    Agg& a = dev[e.name];
    ++a.calls;
    a.cuda_total += e.dur_ns;
    a.cuda_self += e.dur_ns;
    all_dev += e.dur_ns;
    auto it = by_correlation.find(e.linked_correlation);
    if (it != by_correlation.end()) cuda_self[it->second] += e.dur_ns;
  }
  for (size_t k = 0; k < n; ++k) cuda_incl[k] = cuda_self[k];
  for (size_t k = n; k-- > 0;)  // children come after their parents
    if (parent[k] >= 0) cuda_incl[static_cast<size_t>(parent[k])] += cuda_incl[k];
  std::map<std::string, Agg> ops;
  int64_t all_self = 0;
  for (size_t k = 0; k < n; ++k) {
    const auto& e = events[cpu[k]];
    Agg& a = ops[e.name];
    ++a.calls;
    a.self += self[k];
    a.cuda_self += cuda_self[k];
    all_self += self[k];
    bool nested_in_same = false;  // count totals for the outermost call of a name only
    for (int64_t p = parent[k]; p >= 0; p = parent[static_cast<size_t>(p)])
      if (events[cpu[static_cast<size_t>(p)]].name == e.name) nested_in_same = true;
    if (!nested_in_same) {
      a.total += e.dur_ns;
      a.cuda_total += cuda_incl[k];
    }
  }
  const bool any_dev = !dev.empty();
  report::Table t;
  t.columns = {"name",          "device",       "calls",   "cpu_total_ms", "cpu_self_ms",
               "cuda_total_ms", "cuda_self_ms", "mean_us", "percent"};
  auto ms = [](int64_t ns) { return report::Cell(static_cast<double>(ns) / 1e6); };
  std::vector<std::pair<std::string, Agg>> rows(ops.begin(), ops.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.self > b.second.self; });
  for (const auto& [name, a] : rows)
    t.add_row({name, std::string("cpu"), a.calls, ms(a.total), ms(a.self),
               any_dev ? ms(a.cuda_total) : report::Cell{}, any_dev ? ms(a.cuda_self) : report::Cell{},
               static_cast<double>(a.total) / 1e3 / static_cast<double>(a.calls),
               all_self > 0 ? 100.0 * static_cast<double>(a.self) / static_cast<double>(all_self) : 0.0});
  rows.assign(dev.begin(), dev.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.cuda_total > b.second.cuda_total; });
  for (const auto& [name, a] : rows)
    t.add_row({name, std::string("cuda"), a.calls, report::Cell{}, report::Cell{}, ms(a.cuda_total),
               ms(a.cuda_self), static_cast<double>(a.cuda_total) / 1e3 / static_cast<double>(a.calls),
               all_dev > 0 ? 100.0 * static_cast<double>(a.cuda_total) / static_cast<double>(all_dev) : 0.0});
  return t;
}

}  // namespace attnlab::bench
