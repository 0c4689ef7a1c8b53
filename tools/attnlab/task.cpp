// `attnlab task NAME`: train and evaluate mixers on a synthetic task (MQAR, copying, MAD, passkey).
#include <spdlog/spdlog.h>

#include <iostream>
#include <sstream>

#include "attnlab/core/fs.h"
#include "attnlab/core/log.h"
#include "attnlab/data/tasks/task.h"
#include "attnlab/train/task_runner.h"
#include "commands.h"

namespace attnlab::cli {
namespace {

std::string human_bytes(int64_t b) {
  if (b >= (int64_t(1) << 20)) return fmt::format("{:.1f} MiB", double(b) / double(1 << 20));
  if (b >= 1024) return fmt::format("{:.1f} KiB", double(b) / 1024.0);
  return fmt::format("{} B", b);
}

// A plain text table of the best run per setting.
void print_best(const std::vector<TaskRow>& rows) {
  std::cout << fmt::format("\n{:<18} {:<16} {:>7} {:>7} {:>9} {:>5} {:<16} {:>9} {:>7} {:>10} {:>8}\n",
                           "task", "mixer", "d_model", "seq_len", "lr", "wd", "eval_set", "accuracy", "exact",
                           "state", "seconds");
  for (const auto& r : best_rows(rows))
    std::cout << fmt::format(
        "{:<18} {:<16} {:>7} {:>7} {:>9.2e} {:>5} {:<16} {:>9.4f} {:>7.3f} {:>10} {:>8.1f}\n", r.task,
        r.mixer, r.d_model, r.seq_len, r.lr, r.weight_decay, r.eval_set, r.accuracy, r.exact_match,
        human_bytes(r.state_bytes), r.train_seconds);
}

template <class T>
std::string list_text(const std::vector<T>& v) {
  return fmt::format("[{}]", fmt::join(v, ","));
}

}  // namespace

void add_task(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "task",
      "Train and evaluate mixers on a synthetic task (mqar, copying, MAD tasks, passkey); CSV results");
  struct Args {
    std::string name, config, out, preset;
    std::vector<std::string> mixers, sets;
    std::vector<int64_t> d_models, seq_lens, seeds;
    std::vector<double> lrs;
    bool list = false;
  };
  static Args a;
  cmd->add_option("name", a.name, "task name (--list shows them)");
  cmd->add_flag("--list", a.list, "list the tasks and their options");
  cmd->add_option("-c,--config", a.config, "YAML file with sections sweep, task, mixer");
  cmd->add_option("-s,--set", a.sets, "override: sweep.KEY=V, task.KEY=V or mixer.NAME.KEY=V (repeatable)");
  cmd->add_option("--mixer", a.mixers, "mixers to compare (comma separated)")->delimiter(',');
  cmd->add_option("--d-model", a.d_models, "model widths (comma separated)")->delimiter(',');
  cmd->add_option("--seq-len", a.seq_lens, "task lengths (comma separated)")->delimiter(',');
  cmd->add_option("--lr", a.lrs, "learning rates (comma separated); the best is reported")->delimiter(',');
  cmd->add_option("--seed", a.seeds, "seeds (comma separated)")->delimiter(',');
  cmd->add_option("--preset", a.preset, "quick (2 CPU cores, minutes) | paper (the published protocol)");
  cmd->add_option("-o,--out", a.out, "output directory (default runs/tasks/<task>); a rerun resumes");
  cmd->callback([] {
    auto& reg = tasks::TaskRegistry::instance();
    if (a.list || a.name.empty()) {
      for (const auto& n : reg.names()) {
        const auto& e = reg.get(n);
        std::cout << fmt::format("{:<18} {}\n", n, e.help);
        for (const auto& o : e.make_options()->describe())
          std::cout << fmt::format("    task.{:<18} {:<12} {:<14} {}\n", o.name, o.type, o.default_value,
                                   o.help);
      }
      if (a.name.empty() && !a.list)
        fail("attnlab task: name a task (one of {})", fmt::join(reg.names(), ", "));
      return;
    }
    TaskConfig cfg(a.name);
    if (!a.config.empty()) cfg.load_file(a.config);
    for (const auto& s : a.sets) cfg.set(s);
    if (!a.preset.empty()) cfg.set("sweep.preset=" + a.preset);
    if (!a.mixers.empty()) cfg.set("sweep.mixers=" + list_text(a.mixers));
    if (!a.d_models.empty()) cfg.set("sweep.d_models=" + list_text(a.d_models));
    if (!a.seq_lens.empty()) cfg.set("sweep.seq_lens=" + list_text(a.seq_lens));
    if (!a.lrs.empty()) cfg.set("sweep.lrs=" + list_text(a.lrs));
    if (!a.seeds.empty()) cfg.set("sweep.seeds=" + list_text(a.seeds));
    const std::string out = a.out.empty() ? "runs/tasks/" + a.name : a.out;
    fs::create_directories(out);
    add_log_file((fs::path(out) / "log.txt").string());
    spdlog::info("attnlab task {} -> {}", a.name, out);
    auto summary = run_task_sweep(cfg, out);
    print_best(summary.rows);
    std::cout << fmt::format(
        "\n{} runs trained, {} already in {}/results.csv (best lr per setting: best.csv)\n", summary.trained,
        summary.skipped, out);
    if (summary.interrupted) {
      std::cout << "interrupted: rerun the same command to resume\n";
      exit_code() = 130;
    }
  });
}

}  // namespace attnlab::cli
