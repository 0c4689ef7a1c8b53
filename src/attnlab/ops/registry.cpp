// The op registry.
#include "attnlab/ops/registry.h"

#include "attnlab/core/error.h"

namespace attnlab::ops {

OpRegistry& OpRegistry::instance() {
  static OpRegistry r;
  return r;
}

void OpRegistry::add(OpEntry e) {
  if (ops_.count(e.name)) throw Error("op '" + e.name + "' registered twice");
  std::string name = e.name;
  ops_.emplace(name, std::move(e));
}

const OpEntry& OpRegistry::get(const std::string& name) const {
  auto it = ops_.find(name);
  if (it == ops_.end()) fail("unknown op '{}'; known ops: {}", name, fmt::join(names(), ", "));
  return it->second;
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& kv : ops_) out.push_back(kv.first);
  return out;
}

}  // namespace attnlab::ops
