// Fixed sparse attention patterns.
#include "attnlab/ops/sparse_patterns.h"

#include "attnlab/core/error.h"

namespace attnlab::ops {

SparsePattern parse_sparse_pattern(const std::string& name) {
  if (name == "dense") return SparsePattern::dense;
  if (name == "strided") return SparsePattern::strided;
  if (name == "fixed") return SparsePattern::fixed;
  fail("sparse pattern: expected one of dense, strided, fixed; got '{}'", name);
}

torch::Tensor sparse_pattern_mask(SparsePattern pattern, int64_t stride, int64_t c, int64_t Tq, int64_t Tk,
                                  int64_t offset, const torch::Device& device) {
  if (pattern == SparsePattern::dense) return {};
  ATTNLAB_CHECK(stride >= 1, "sparse pattern: stride must be >= 1, got {}", stride);
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto t = (torch::arange(Tq, opts) + offset).unsqueeze(1);  // [Tq, 1]
  auto s = torch::arange(Tk, opts).unsqueeze(0);             // [1, Tk]
  if (pattern == SparsePattern::strided) {
    auto d = t - s;
    return (d.abs() < stride) | (torch::remainder(d, stride) == 0);
  }
  ATTNLAB_CHECK(c >= 1 && c <= stride, "sparse pattern fixed: c must be in [1, stride={}], got {}", stride,
                c);
  auto same_block = torch::div(s, stride, "floor") == torch::div(t, stride, "floor");
  auto summary = torch::remainder(s, stride) >= stride - c;
  return same_block | summary;
}

}  // namespace attnlab::ops
