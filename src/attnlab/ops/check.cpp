// Shape checks and error measures for ops.
#include "attnlab/ops/check.h"

#include "attnlab/core/error.h"

namespace attnlab::ops {

void check_shape(const char* op, const char* name, const torch::Tensor& t, const char* letters,
                 const std::vector<int64_t>& expected) {
  std::vector<std::string> want;
  for (auto e : expected) want.push_back(e < 0 ? "*" : std::to_string(e));
  if (!t.defined()) fail("{}: {} must be [{}]=[{}], got no tensor", op, name, letters, fmt::join(want, ","));
  bool ok = t.dim() == static_cast<int64_t>(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i)
    if (expected[i] >= 0 && t.size(static_cast<int64_t>(i)) != expected[i]) ok = false;
  if (!ok)
    fail("{}: {} must be [{}]=[{}], got {}", op, name, letters, fmt::join(want, ","), shape_str(t.sizes()));
}

bool all_finite(const torch::Tensor& t) {
  return torch::isfinite(t).all().item<bool>();
}

double rel_rms_error(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.detach().to(torch::kCPU, torch::kDouble);
  auto y = b.detach().to(torch::kCPU, torch::kDouble);
  double num = (x - y).pow(2).mean().sqrt().item<double>();
  double den = y.pow(2).mean().sqrt().item<double>();
  if (!std::isfinite(num)) return std::numeric_limits<double>::infinity();
  return den > 0 ? num / den : num;
}

}  // namespace attnlab::ops
