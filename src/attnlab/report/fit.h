// Power-law fits on log-log axes: the scaling exponent of time or memory against sequence length or size.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace attnlab::report {

// log(y) = intercept + slope * log(x), natural logarithms: y ~ exp(intercept) * x^slope.
struct PowerFit {
  double slope = 0;
  double intercept = 0;
  double r2 = 0;  // coefficient of determination of the fit in log-log space
  size_t n = 0;   // points used

  // exp(intercept) * x^slope
  double predict(double x) const;
};

// Least squares fit of log(y) against log(x). Throws attnlab::Error (naming `what`) with fewer than 2
// points, xs and ys of different lengths, a non-positive or non-finite value (named with its index), or all
// x equal. Filter missing points (OOM, NaN) before calling.
PowerFit fit_power_law(const std::vector<double>& xs, const std::vector<double>& ys,
                       const std::string& what = "power-law fit");

// "slope 2.01, r² 0.998": the short form for a figure's key or a table.
std::string describe(const PowerFit& fit);

}  // namespace attnlab::report
