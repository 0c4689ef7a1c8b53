// Widths given as ratios of d_model (expand_k, expand_v), shared by the mixers that have them.
#pragma once

#include <cmath>
#include <cstdint>

#include "attnlab/core/error.h"

namespace attnlab {

// round(f * n), insisting that it is a positive whole number: a ratio that does not divide the width is a
// config error naming the mixer and the option, not a silently truncated layer.
inline int64_t ratio_width(const char* mixer, const char* what, double f, int64_t n) {
  const double w = f * static_cast<double>(n);
  const auto r = static_cast<int64_t>(std::llround(w));
  ATTNLAB_CHECK(r > 0 && std::abs(w - static_cast<double>(r)) < 1e-9,
                "{}: {} times d_model {} must be a positive whole number, got {}", mixer, what, n, w);
  return r;
}

}  // namespace attnlab
