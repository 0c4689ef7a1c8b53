// libtorch's profiler events (compat::stop_op_profiler) as attnlab writes them: a Chrome trace where
// libtorch cannot write its own (a build without Kineto), and a table of the most expensive ops.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "attnlab/core/compat.h"
#include "attnlab/report/csv.h"

namespace attnlab::bench {

namespace fs = std::filesystem;

// Chrome trace JSON of libtorch's events: complete events ("ph":"X", Unix-epoch microseconds, like
// Tracer's), pid this process's, tid libtorch's thread id (device activities on pid 1000000 + device).
std::string torch_events_chrome_trace(const std::vector<compat::OpEvent>& events,
                                      const std::string& process_name);
void write_torch_events_chrome_trace(const fs::path& path, const std::vector<compat::OpEvent>& events,
                                     const std::string& process_name);

// One row per op name and kind: name, device ("cpu" for ops, "cuda" for kernels / copies), calls,
// cpu_total_ms (outermost calls of that name only), cpu_self_ms (without nested ops), cuda_total_ms /
// cuda_self_ms (device time of what the op and its nested ops / the op itself launched; for device rows
// their own time), mean_us (total / calls), percent (of all CPU self time for cpu rows, of all device time
// for device rows). CPU rows first by self time, then device rows by time. Nesting comes from the
// intervals on each thread.
report::Table torch_top_ops(const std::vector<compat::OpEvent>& events);

}  // namespace attnlab::bench
