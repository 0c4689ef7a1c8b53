// `attnlab train`: train a language model from a config, or resume one.
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <iostream>

#include "attnlab/core/fs.h"
#include "attnlab/core/log.h"
#include "attnlab/train/checkpoint.h"
#include "attnlab/train/trainer.h"
#include "commands.h"

namespace attnlab::cli {
namespace {

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

}  // namespace

void add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a language model (or resume one with --resume RUN_DIR)");
  struct Args {
    std::string config, out, resume, mixer;
    std::vector<std::string> sets;
  };
  static Args a;
  cmd->add_option("-c,--config", a.config, "YAML config (sections model, data, train, mixer)");
  cmd->add_option("-s,--set", a.sets, "override a key: section.key=value (repeatable), e.g. train.lr=1e-3");
  cmd->add_option("--mixer", a.mixer, "shortcut for --set model.mixer=NAME");
  cmd->add_option("-o,--out", a.out, "run directory (default runs/<mixer>-<timestamp>)");
  cmd->add_option("--resume", a.resume, "continue the run in this directory from its last checkpoint");
  cmd->callback([] {
    RunConfig cfg;
    std::string run_dir = a.out;
    if (!a.resume.empty()) {
      // Start from the saved config; a --config or --set on top must not change model, mixer or data.
      cfg = read_checkpoint_config(find_checkpoint(a.resume));
      if (!a.config.empty()) cfg.load_file(a.config);
      if (!run_dir.empty() && fs::path(run_dir) != fs::path(a.resume))
        fail("--resume {} and --out {} name different run directories; give one", a.resume, run_dir);
      run_dir = a.resume;
    } else if (!a.config.empty()) {
      cfg.load_file(a.config);
    }
    for (const auto& s : a.sets) cfg.set(s);
    if (!a.mixer.empty()) cfg.set("model.mixer=" + a.mixer);
    cfg.resolve();
    if (run_dir.empty()) run_dir = "runs/" + cfg.model.mixer + "-" + timestamp();
    fs::create_directories(run_dir);
    add_log_file((fs::path(run_dir) / "log.txt").string());
    Trainer trainer(cfg, run_dir, !a.resume.empty());
    auto r = trainer.run();
    std::cout << fmt::format("\nrun directory       {}\n", r.run_dir);
    std::cout << fmt::format("parameters          {}\n", r.parameters);
    std::cout << fmt::format("steps               {}\n", r.steps_done);
    std::cout << fmt::format("validation loss     {:.4f} nats/char (at step {})\n", r.val_loss, r.val_step);
    std::cout << fmt::format("validation ppl      {:.3f}\n", r.val_ppl);
    std::cout << fmt::format("unigram model ppl   {:.3f}  (same characters, same validation text)\n",
                             r.unigram_ppl);
    if (r.interrupted) {
      std::cout << fmt::format("interrupted: resume with  attnlab train --resume {}\n", r.run_dir);
      exit_code() = 130;
    }
  });
}

}  // namespace attnlab::cli
