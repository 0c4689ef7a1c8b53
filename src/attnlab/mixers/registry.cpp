// The mixer registry.
#include "attnlab/mixers/registry.h"

namespace attnlab {

int64_t Mixer::count_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

MixerRegistry& MixerRegistry::instance() {
  static MixerRegistry r;  // built on first use, so registrars in any translation unit may run first
  return r;
}

void MixerRegistry::add(MixerEntry entry) {
  if (entries_.count(entry.name)) throw Error("mixer '" + entry.name + "' registered twice");
  std::string name = entry.name;
  entries_.emplace(name, std::move(entry));
}

const MixerEntry& MixerRegistry::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("unknown mixer '{}'; known mixers: {}", name, fmt::join(names(), ", "));
  return it->second;
}

std::vector<std::string> MixerRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

std::shared_ptr<Mixer> build_mixer(const std::string& name, const MixerContext& ctx,
                                   const AnyOptions& options) {
  const auto& e = MixerRegistry::instance().get(name);
  options.validate();
  return e.build(ctx, options);
}

}  // namespace attnlab
