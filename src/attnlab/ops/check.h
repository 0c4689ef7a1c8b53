// Shape checks for op arguments, with messages that name the op, the tensor, the expected and the actual
// shape.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace attnlab::ops {

// Throws unless `t` is defined with `dims` dimensions; -1 in `expected` matches any size.
// Message: "gated_delta_rule: k must be [B,T,H,K]=[2,64,4,32], got [2,64,4,16]".
void check_shape(const char* op, const char* name, const torch::Tensor& t, const char* letters,
                 const std::vector<int64_t>& expected);

// Throws if `t` holds NaN or inf (used by tests and `ops verify`, never in hot paths).
bool all_finite(const torch::Tensor& t);

// rms(a - b) / rms(b): the comparison FLA and our tests use. Computed in float64.
double rel_rms_error(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace attnlab::ops
