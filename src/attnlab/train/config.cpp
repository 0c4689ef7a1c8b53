// The run configuration.
#include "attnlab/train/config.h"

#include <set>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/mixers/registry.h"

namespace attnlab {

const OptionSet<TrainOptions>& TrainOptions::schema() {
  static const OptionSet<TrainOptions> s = [] {
    OptionSet<TrainOptions> o("train");
    o.add("steps", &TrainOptions::steps, "optimiser steps", check::positive<int64_t>());
    o.add("lr", &TrainOptions::lr, "peak learning rate (AdamW)", check::positive<double>());
    o.add("min_lr_ratio", &TrainOptions::min_lr_ratio, "final lr / peak lr of the cosine decay",
          check::in_range(0.0, 1.0));
    o.add("warmup", &TrainOptions::warmup, "linear warm-up steps", check::non_negative<int64_t>());
    o.add("weight_decay", &TrainOptions::weight_decay, "AdamW decoupled weight decay (matrices only)",
          check::non_negative<double>());
    o.add("beta1", &TrainOptions::beta1, "AdamW beta1", check::in_range(0.0, 0.9999));
    o.add("beta2", &TrainOptions::beta2, "AdamW beta2", check::in_range(0.0, 0.99999));
    o.add("grad_clip", &TrainOptions::grad_clip, "max global gradient norm (0 = off)",
          check::non_negative<double>());
    o.add("grad_accum", &TrainOptions::grad_accum, "micro-batches per optimiser step",
          check::positive<int64_t>());
    o.add("log_every", &TrainOptions::log_every, "steps between train_loss records",
          check::positive<int64_t>());
    o.add("eval_every", &TrainOptions::eval_every, "steps between validation evaluations",
          check::positive<int64_t>());
    o.add("eval_batches", &TrainOptions::eval_batches, "validation batches per evaluation",
          check::positive<int64_t>());
    o.add("ckpt_every", &TrainOptions::ckpt_every, "steps between checkpoints", check::positive<int64_t>());
    o.add("device", &TrainOptions::device, "auto | cpu | cuda | cuda:N");
    o.add("dtype", &TrainOptions::dtype, "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16",
          check::one_of({"auto", "fp32", "bf16"}));
    o.add("seed", &TrainOptions::seed, "seed of init and batch sampling");
    o.add("threads", &TrainOptions::threads, "CPU threads (0 = all cores or OMP_NUM_THREADS)",
          check::non_negative<int64_t>());
    return o;
  }();
  return s;
}

namespace {
const std::vector<std::string> kSections = {"model", "data", "train", "mixer"};

std::shared_ptr<AnyOptions>& mixer_slot(RunConfig& cfg, const std::string& name) {
  auto& slot = cfg.mixers[name];
  if (!slot) slot = std::shared_ptr<AnyOptions>(MixerRegistry::instance().get(name).make_options());
  return slot;
}
}  // namespace

void RunConfig::load_file(const std::string& path) {
  std::string text = read_file(path, "config file");
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("config file '{}': not valid YAML: {}", path, e.what());
  }
  apply(root, path);
}

void RunConfig::apply(const YAML::Node& root, const std::string& where) {
  if (!root || root.IsNull()) return;
  if (!root.IsMap()) fail("{}: expected a map with sections {}", where, fmt::join(kSections, ", "));
  for (const auto& kv : root) {
    std::string section = kv.first.as<std::string>();
    if (section == "model")
      ModelOptions::schema().apply(model, kv.second);
    else if (section == "data")
      DataOptions::schema().apply(data, kv.second);
    else if (section == "train")
      TrainOptions::schema().apply(train, kv.second);
    else if (section == "mixer") {
      if (!kv.second.IsMap()) fail("{}: section 'mixer' must map mixer names to their options", where);
      for (const auto& m : kv.second) mixer_slot(*this, m.first.as<std::string>())->apply(m.second);
    } else if (section == "study") {
      // read by `attnlab study` (study/study.h); a study config also trains with `attnlab train`
    } else {
      fail("{}: unknown config section '{}'; valid sections: {}", where, section, fmt::join(kSections, ", "));
    }
  }
}

void RunConfig::set(const std::string& assignment) {
  auto [key, text] = split_assignment(assignment);
  auto value = parse_value_text(text);
  auto dot = key.find('.');
  if (dot == std::string::npos)
    fail("--set {}: expected section.key=value with section one of {}", assignment,
         fmt::join(kSections, ", "));
  std::string section = key.substr(0, dot), rest = key.substr(dot + 1);
  if (section == "model")
    ModelOptions::schema().set(model, rest, value);
  else if (section == "data")
    DataOptions::schema().set(data, rest, value);
  else if (section == "train")
    TrainOptions::schema().set(train, rest, value);
  else if (section == "mixer") {
    auto dot2 = rest.find('.');
    if (dot2 == std::string::npos)
      fail("--set {}: expected mixer.<name>.<key>=value, e.g. mixer.softmax.window=64", assignment);
    mixer_slot(*this, rest.substr(0, dot2))->set(rest.substr(dot2 + 1), value);
  } else {
    fail("--set {}: unknown config section '{}'; valid sections: {}", assignment, section,
         fmt::join(kSections, ", "));
  }
}

void RunConfig::resolve() {
  ModelOptions::schema().validate(model);
  DataOptions::schema().validate(data);
  TrainOptions::schema().validate(train);
  for (const auto& name : model.layer_mixers()) mixer_slot(*this, name);
  for (auto& kv : mixers) kv.second->validate();
}

YAML::Node RunConfig::to_yaml() const {
  YAML::Node root;
  root["model"] = ModelOptions::schema().to_yaml(model);
  root["data"] = DataOptions::schema().to_yaml(data);
  root["train"] = TrainOptions::schema().to_yaml(train);
  YAML::Node m(YAML::NodeType::Map);
  for (const auto& kv : mixers) m[kv.first] = kv.second->to_yaml();
  root["mixer"] = m;
  return root;
}

std::string RunConfig::to_yaml_string() const {
  YAML::Emitter out;
  out << to_yaml();
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> RunConfig::differences(const RunConfig& a, const RunConfig& b,
                                                const std::vector<std::string>& sections) {
  std::vector<std::string> out;
  auto ya = a.to_yaml(), yb = b.to_yaml();
  auto str = [](const YAML::Node& n) {
    YAML::Emitter e;
    e << YAML::Flow << n;
    return std::string(e.c_str());
  };
  for (const auto& s : sections) {
    auto na = ya[s], nb = yb[s];
    std::set<std::string> keys;
    for (const auto& kv : na) keys.insert(kv.first.as<std::string>());
    for (const auto& kv : nb) keys.insert(kv.first.as<std::string>());
    for (const auto& k : keys) {
      std::string va = na[k] ? str(na[k]) : "(unset)", vb = nb[k] ? str(nb[k]) : "(unset)";
      if (va != vb) out.push_back(fmt::format("{}.{}: {} vs {}", s, k, va, vb));
    }
  }
  return out;
}

}  // namespace attnlab
