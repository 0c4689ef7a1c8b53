// Learning-rate schedule: linear warm-up to the peak, then cosine decay to min_lr_ratio * peak.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace attnlab {

// lr for optimiser step `step` (0-based) of `total`.
inline double lr_at(int64_t step, int64_t total, double peak, int64_t warmup, double min_ratio) {
  if (warmup > 0 && step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}

}  // namespace attnlab
