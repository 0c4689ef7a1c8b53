// The fixed sparse attention patterns of Child et al. 2019, "Generating Long Sequences with Sparse
// Transformers" (section 4.2), as visibility masks that combine with the causal mask:
//   strided: query t sees key s when t - s < stride (the local band) or (t - s) % stride == 0;
//   fixed:   query t sees key s when floor(s / stride) == floor(t / stride) (its own block) or
//            s % stride >= stride - c (the last c "summary" positions of every block).
#pragma once

#include <torch/torch.h>

#include <string>

namespace attnlab::ops {

enum class SparsePattern { dense, strided, fixed };

// "dense" | "strided" | "fixed"; anything else is an error listing those.
SparsePattern parse_sparse_pattern(const std::string& name);

// Visibility [Tq, Tk] (true = visible) of the pattern for queries at absolute positions offset .. offset+Tq-1
// over keys 0 .. Tk-1; undefined for dense. stride >= 1, 1 <= c <= stride.
torch::Tensor sparse_pattern_mask(SparsePattern pattern, int64_t stride, int64_t c, int64_t Tq, int64_t Tk,
                                  int64_t offset, const torch::Device& device);

}  // namespace attnlab::ops
