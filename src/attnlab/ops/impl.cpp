// Impl names.
#include "attnlab/ops/impl.h"

#include "attnlab/core/error.h"

namespace attnlab::ops {

Impl parse_impl(const std::string& name) {
  if (name == "auto" || name == "automatic") return Impl::automatic;
  if (name == "naive") return Impl::naive;
  if (name == "chunk") return Impl::chunk;
  if (name == "kernel") return Impl::kernel;
  if (name == "sdpa") return Impl::sdpa;
  fail("implementation: expected one of auto, naive, chunk, kernel, sdpa; got '{}'", name);
}

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::automatic:
      return "auto";
    case Impl::naive:
      return "naive";
    case Impl::chunk:
      return "chunk";
    case Impl::kernel:
      return "kernel";
    case Impl::sdpa:
      return "sdpa";
  }
  return "?";
}

}  // namespace attnlab::ops
