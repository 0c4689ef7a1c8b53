// Logging helpers.
#include "attnlab/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>

#include <mutex>
#include <set>

#include "attnlab/core/error.h"

namespace attnlab {

void log_once(const std::string& key, const std::string& message) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(key).second) spdlog::warn("{}", message);
}

void set_log_level(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    fail("log level: expected one of trace, debug, info, warn, error, off; got '{}'", level);
  spdlog::set_level(lvl);
}

void add_log_file(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  spdlog::default_logger()->sinks().push_back(sink);
}

}  // namespace attnlab
