// The mixer registry: a mechanism registers itself once, by name, with its options struct:
//   ATTNLAB_REGISTER_MIXER("softmax", SoftmaxOptions, SoftmaxMixer, "causal softmax attention with RoPE");
// The options struct provides `static const OptionSet<Options>& schema()`; the mixer a constructor
// `Mixer(const MixerContext&, const Options&)`.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/options.h"
#include "attnlab/mixers/mixer.h"

namespace attnlab {

struct MixerEntry {
  std::string name;
  std::string help;
  std::function<std::unique_ptr<AnyOptions>()> make_options;  // defaults
  std::function<std::shared_ptr<Mixer>(const MixerContext&, const AnyOptions&)> build;
};

class MixerRegistry {
 public:
  static MixerRegistry& instance();
  void add(MixerEntry entry);
  // Throws an Error listing the registered names when `name` is unknown.
  const MixerEntry& get(const std::string& name) const;
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> names() const;

 private:
  std::map<std::string, MixerEntry> entries_;
};

// Builds a mixer by name; `options` must come from that entry's make_options().
std::shared_ptr<Mixer> build_mixer(const std::string& name, const MixerContext& ctx,
                                   const AnyOptions& options);

namespace registry_detail {
template <class Options, class MixerT>
struct Registrar {
  Registrar(const char* name, const char* help) {
    MixerEntry e;
    e.name = name;
    e.help = help;
    e.make_options = [] { return std::make_unique<TypedOptions<Options>>(); };
    e.build = [](const MixerContext& ctx, const AnyOptions& opts) -> std::shared_ptr<Mixer> {
      const auto* typed = dynamic_cast<const TypedOptions<Options>*>(&opts);
      if (!typed) throw Error("mixer options of the wrong type passed to build()");
      return std::make_shared<MixerT>(ctx, typed->value);
    };
    MixerRegistry::instance().add(std::move(e));
  }
};
}  // namespace registry_detail

}  // namespace attnlab

#define ATTNLAB_CONCAT_INNER(a, b) a##b
#define ATTNLAB_CONCAT(a, b) ATTNLAB_CONCAT_INNER(a, b)
#define ATTNLAB_REGISTER_MIXER(name, Options, MixerT, help)                                              \
  static ::attnlab::registry_detail::Registrar<Options, MixerT> ATTNLAB_CONCAT(attnlab_mixer_registrar_, \
                                                                               __LINE__)(name, help)
