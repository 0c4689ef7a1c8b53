// `attnlab list`: registered mixers with their options and defaults.
#include <nlohmann/json.hpp>

#include <iostream>

#include "attnlab/core/progress.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/calibrate.h"
#include "commands.h"

namespace attnlab::cli {

namespace {

void print_calibration(const std::vector<std::string>& names, const CalibrationTarget& t, bool as_json) {
  nlohmann::json rows = nlohmann::json::array();
  if (!as_json)
    std::cout << fmt::format("target {} parameters, vocab {}, state and FLOPs at T = {}\n",
                             human_count(t.parameters), t.vocab_size, t.report_T)
              << fmt::format("{:<16} {:>6} {:>6} {:>6} {:>8} {:>12} {:>7} {:>14} {:>12}\n", "mechanism",
                             "width", "layers", "heads", "mlp", "parameters", "error", "state bytes",
                             "FLOPs/token");
  for (const auto& name : names) {
    auto c = calibrate(name, t);
    int64_t mlp = c.model.mlp_ratio > 0 ? swiglu_hidden(c.model.d_model, c.model.mlp_ratio) : 0;
    rows.push_back({{"mixer", name},
                    {"d_model", c.model.d_model},
                    {"n_layers", c.model.n_layers},
                    {"n_heads", c.model.n_heads},
                    {"mlp_hidden", mlp},
                    {"mlp_ratio", c.model.mlp_ratio},
                    {"parameters", c.parameters},
                    {"error", c.error},
                    {"state_bytes", c.state_bytes},
                    {"flops_per_token", c.flops_per_token},
                    {"T", t.report_T}});
    if (!as_json)
      std::cout << fmt::format("{:<16} {:>6} {:>6} {:>6} {:>8} {:>12} {:>+6.2f}% {:>14} {:>12}\n", name,
                               c.model.d_model, c.model.n_layers, c.model.n_heads, mlp, c.parameters,
                               100 * c.error, c.state_bytes, human_count(c.flops_per_token));
  }
  if (as_json) std::cout << rows.dump(2) << "\n";
}

}  // namespace

void add_list(CLI::App& app) {
  auto* cmd = app.add_subcommand("list", "List the registered token mixers with their options and defaults");
  static bool as_json = false;
  static std::string params, mixers_arg;
  static int64_t vocab = 5001, T = 2048, n_layers = 0, head_dim = 0;
  cmd->add_flag("--json", as_json, "print JSON");
  cmd->add_option("--params", params,
                  "parameter-matched configs for a target count (e.g. 10M): width, layers, heads, "
                  "parameters, state bytes, FLOPs per token");
  cmd->add_option("--mixers", mixers_arg, "with --params: the mixers to calibrate (default: all)");
  cmd->add_option("--vocab", vocab, "with --params: vocabulary size")->capture_default_str();
  cmd->add_option("--T", T, "with --params: context length for state bytes and FLOPs")->capture_default_str();
  cmd->add_option("--layers", n_layers, "with --params: fix the depth (0 = from the target)")
      ->capture_default_str();
  cmd->add_option("--head-dim", head_dim, "with --params: fix the head dim (0 = from the target)")
      ->capture_default_str();
  cmd->callback([] {
    if (!params.empty()) {
      CalibrationTarget t;
      t.parameters = opt_detail::parse_int(params, "--params");
      t.vocab_size = vocab;
      t.report_T = T;
      t.n_layers = n_layers;
      t.head_dim = head_dim;
      auto names = mixers_arg.empty() ? MixerRegistry::instance().names()
                                      : opt_detail::parse_list(YAML::Node(mixers_arg), "--mixers");
      print_calibration(names, t, as_json);
      return;
    }
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
