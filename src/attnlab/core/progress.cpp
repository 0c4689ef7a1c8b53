// Progress display.
#include "attnlab/core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace attnlab {

bool Progress::is_terminal() {
  return ::isatty(fileno(stderr)) != 0;
}

Progress::Progress(std::string label, int64_t total, int64_t plain_every)
    : label_(std::move(label)),
      total_(total),
      plain_every_(plain_every > 0 ? plain_every : 1),
      start_(std::chrono::steady_clock::now()),
      tty_(is_terminal()) {}

Progress::~Progress() {
  finish();
}

void Progress::update(int64_t step, const std::string& fields) {
  auto now = std::chrono::steady_clock::now();
  if (first_step_ < 0) {
    first_step_ = step - 1;
    start_ = now;
  }
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double done = static_cast<double>(step - first_step_);
  double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step) : 0.0;
  if (tty_) {
    const int width = 24;
    int filled =
        total_ > 0 ? static_cast<int>(width * static_cast<double>(step) / static_cast<double>(total_)) : 0;
    std::string bar(static_cast<size_t>(std::min(filled, width)), '#');
    bar.resize(width, '.');
    fmt::print(stderr, "\r{} [{}] {}/{}  {}  ETA {}   ", label_, bar, step, total_, fields,
               human_duration(eta));
    std::fflush(stderr);
    open_ = true;
  } else if (step % plain_every_ == 0 || step == total_) {
    fmt::print(stderr, "{} step {}/{}  {}  ETA {}\n", label_, step, total_, fields, human_duration(eta));
    std::fflush(stderr);
  }
}

void Progress::finish() {
  if (tty_ && open_) {
    fmt::print(stderr, "\n");
    open_ = false;
  }
}

std::string human_count(double v) {
  double a = std::fabs(v);
  if (a >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (a >= 1e3) return fmt::format("{:.1f}K", v / 1e3);
  return fmt::format("{:.0f}", v);
}

std::string human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long t = std::lround(s);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

}  // namespace attnlab
