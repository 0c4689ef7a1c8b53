// A progress display: an updating bar (step, loss, tokens/s, ETA) on a terminal, plain lines otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace attnlab {

class Progress {
 public:
  // `total` steps; `label` starts each line; on a non-terminal a line is printed every `plain_every` steps.
  Progress(std::string label, int64_t total, int64_t plain_every = 50);
  ~Progress();

  // Reports step `step` (1-based) with free-form `fields` ("loss 1.23  tok/s 4.5K").
  void update(int64_t step, const std::string& fields);
  // Ends the bar line (on a terminal) so that later log lines start on a fresh line.
  void finish();

  static bool is_terminal();

 private:
  std::string label_;
  int64_t total_, plain_every_;
  int64_t first_step_ = -1;
  std::chrono::steady_clock::time_point start_;
  bool tty_, open_ = false;
};

// "4.5K", "1.2M"
std::string human_count(double v);
// "1m05s", "2h03m"
std::string human_duration(double seconds);

}  // namespace attnlab
