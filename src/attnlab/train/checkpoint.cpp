// Checkpoints.
#include "attnlab/train/checkpoint.h"

#include <nlohmann/json.hpp>

#include <sstream>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab {

void save_checkpoint(const std::string& dir, LanguageModel& model, torch::optim::Optimizer& optimizer,
                     const TrainState& state, const RunConfig& config, const CharTokenizer& tokenizer) {
  fs::path final_dir(dir);
  fs::path tmp = final_dir;
  tmp += ".tmp";
  remove_tree(tmp);
  fs::create_directories(tmp);
  torch::save(model, (tmp / "model.pt").string());
  torch::save(optimizer, (tmp / "optim.pt").string());
  std::ostringstream rng;
  rng << state.batch_rng;
  auto torch_rng = at::detail::getDefaultCPUGenerator().get_state();
  std::vector<uint8_t> torch_rng_bytes(torch_rng.data_ptr<uint8_t>(),
                                       torch_rng.data_ptr<uint8_t>() + torch_rng.numel());
  nlohmann::json j = {{"step", state.step},           {"elapsed_s", state.elapsed_s},
                      {"tokens", state.tokens},       {"batch_rng", rng.str()},
                      {"torch_rng", torch_rng_bytes}, {"history", state.history.to_json()}};
  write_file_atomic(tmp / "state.json", j.dump() + "\n");
  write_file_atomic(tmp / "config.yaml", config.to_yaml_string());
  tokenizer.save((tmp / "tokenizer.json").string());
  replace_dir_atomic(tmp, final_dir);
}

std::string find_checkpoint(const std::string& path) {
  fs::path p(path);
  std::error_code ec;
  if (!fs::exists(p, ec)) fail("checkpoint: '{}' does not exist", path);
  if (!fs::is_directory(p, ec))
    fail("checkpoint: expected a run directory or a checkpoint directory, '{}' is a file", path);
  for (const fs::path& c : {p, p / "checkpoints" / "last", p / "checkpoints" / "last.old"})
    if (fs::is_regular_file(c / "model.pt", ec) && fs::is_regular_file(c / "state.json", ec))
      return c.string();
  fail("checkpoint: no checkpoint in '{}': expected {}/checkpoints/last/model.pt or {}/model.pt", path, path,
       path);
}

RunConfig read_checkpoint_config(const std::string& dir) {
  RunConfig cfg;
  cfg.load_file((fs::path(dir) / "config.yaml").string());
  cfg.resolve();
  return cfg;
}

CharTokenizer read_checkpoint_tokenizer(const std::string& dir) {
  return CharTokenizer::load((fs::path(dir) / "tokenizer.json").string());
}

void load_checkpoint(const std::string& dir, LanguageModel& model, torch::optim::Optimizer* optimizer,
                     TrainState* state) {
  fs::path d(dir);
  try {
    torch::load(model, (d / "model.pt").string());
  } catch (const c10::Error& e) {
    fail("checkpoint '{}': its weights do not fit this model (a checkpoint of a different config?): {}", dir,
         e.what_without_backtrace());
  }
  if (optimizer) torch::load(*optimizer, (d / "optim.pt").string());
  if (state) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(d / "state.json", "checkpoint state"));
      state->step = j.at("step");
      state->elapsed_s = j.at("elapsed_s");
      state->tokens = j.at("tokens");
      std::istringstream rng(j.at("batch_rng").get<std::string>());
      rng >> state->batch_rng;
      auto bytes = j.at("torch_rng").get<std::vector<uint8_t>>();
      auto t = torch::from_blob(bytes.data(), {static_cast<int64_t>(bytes.size())}, torch::kUInt8).clone();
      at::Generator gen = at::detail::getDefaultCPUGenerator();  // shares the default generator
      gen.set_state(t);
      state->history = History::from_json(j.at("history"));
    } catch (const nlohmann::json::exception& e) {
      fail("checkpoint '{}': state.json is incomplete or corrupt: {}", dir, e.what());
    }
  }
}

}  // namespace attnlab
