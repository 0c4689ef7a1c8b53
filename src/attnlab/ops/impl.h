// Which implementation of an op runs: the definition (naive loop / materialised scores), the chunkwise
// tensor form, our CUDA kernel, or the best available (automatic).
#pragma once

#include <string>

namespace attnlab::ops {

enum class Impl { automatic, naive, chunk, kernel, sdpa };

// "auto" | "naive" | "chunk" | "kernel" | "sdpa"; anything else is an error listing those.
Impl parse_impl(const std::string& name);
const char* impl_name(Impl impl);

}  // namespace attnlab::ops
