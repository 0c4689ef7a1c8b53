// Logging through spdlog, plus log_once for fallbacks (STYLE.md habit 8: a fallback is logged once, by name).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace attnlab {

// Logs `message` at warning level the first time `key` is seen in this process; later calls are silent.
void log_once(const std::string& key, const std::string& message);

// Sets the level from a name (trace, debug, info, warn, error); an unknown name is an error.
void set_log_level(const std::string& level);

// Also writes every log line to `path` (the run directory's log.txt).
void add_log_file(const std::string& path);

}  // namespace attnlab
