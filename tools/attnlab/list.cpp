// `attnlab list`: registered mixers with their options and defaults.
#include <nlohmann/json.hpp>

#include <iostream>

#include "attnlab/mixers/registry.h"
#include "commands.h"

namespace attnlab::cli {

void add_list(CLI::App& app) {
  auto* cmd = app.add_subcommand("list", "List the registered token mixers with their options and defaults");
  static bool as_json = false;
  cmd->add_flag("--json", as_json, "print JSON");
  cmd->callback([] {
    auto& reg = MixerRegistry::instance();
    nlohmann::json j = nlohmann::json::array();
    for (const auto& name : reg.names()) {
      const auto& e = reg.get(name);
      auto opts = e.make_options();
      nlohmann::json m = {{"name", name}, {"help", e.help}, {"options", nlohmann::json::array()}};
      for (const auto& o : opts->describe())
        m["options"].push_back(
            {{"name", o.name}, {"type", o.type}, {"default", o.default_value}, {"help", o.help}});
      j.push_back(m);
    }
    if (as_json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    for (const auto& m : j) {
      std::cout << m["name"].get<std::string>() << ": " << m["help"].get<std::string>() << "\n";
      for (const auto& o : m["options"])
        std::cout << fmt::format("  mixer.{}.{:<14} {:<7} {:<10} {}\n", m["name"].get<std::string>(),
                                 o["name"].get<std::string>(), o["type"].get<std::string>(),
                                 o["default"].get<std::string>(), o["help"].get<std::string>());
    }
  });
}

}  // namespace attnlab::cli
