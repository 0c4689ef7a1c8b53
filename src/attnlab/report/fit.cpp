// Power-law fits on log-log axes.
#include "attnlab/report/fit.h"

#include <fmt/format.h>

#include <cmath>

#include "attnlab/core/error.h"

namespace attnlab::report {

double PowerFit::predict(double x) const {
  return std::exp(intercept + slope * std::log(x));
}

PowerFit fit_power_law(const std::vector<double>& xs, const std::vector<double>& ys,
                       const std::string& what) {
  if (xs.size() != ys.size()) fail("{}: {} x values but {} y values", what, xs.size(), ys.size());
  if (xs.size() < 2) fail("{}: needs at least 2 points, got {}", what, xs.size());
  const size_t n = xs.size();
  std::vector<double> lx(n), ly(n);
  for (size_t i = 0; i < n; ++i) {
    if (!(xs[i] > 0) || !std::isfinite(xs[i]))
      fail("{}: x[{}] = {} (y = {}) is not a positive finite number; a log-log fit needs x > 0 and y > 0",
           what, i, xs[i], ys[i]);
    if (!(ys[i] > 0) || !std::isfinite(ys[i]))
      fail("{}: y[{}] = {} (x = {}) is not a positive finite number; a log-log fit needs x > 0 and y > 0",
           what, i, ys[i], xs[i]);
    lx[i] = std::log(xs[i]);
    ly[i] = std::log(ys[i]);
  }
  // Centred sums: more accurate than the textbook n*sum(xy) - sum(x)*sum(y) form.
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += lx[i];
    my += ly[i];
  }
  mx /= n;
  my /= n;
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxx += (lx[i] - mx) * (lx[i] - mx);
    sxy += (lx[i] - mx) * (ly[i] - my);
    syy += (ly[i] - my) * (ly[i] - my);
  }
  if (!(sxx > 0)) fail("{}: all {} x values are equal ({}); the slope is undefined", what, n, xs[0]);
  PowerFit f;
  f.n = n;
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  double ss_res = 0;
  for (size_t i = 0; i < n; ++i) {
    double e = ly[i] - (f.intercept + f.slope * lx[i]);
    ss_res += e * e;
  }
  // Constant y is fitted exactly by slope 0: call that r² = 1 rather than 0/0.
  f.r2 = syy > 0 ? 1.0 - ss_res / syy : 1.0;
  return f;
}

std::string describe(const PowerFit& fit) {
  return fmt::format("slope {:.2f}, r² {:.3f}", fit.slope, fit.r2);
}

}  // namespace attnlab::report
