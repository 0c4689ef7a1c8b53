// `attnlab study CONFIG`: the whole study, stage by stage, into one folder with a report; and
// `attnlab bench efficiency|memory|scaling|latency|profile`: one benchmark stage on its own.
#include <spdlog/spdlog.h>

#include <iostream>

#include "attnlab/core/fs.h"
#include "attnlab/core/log.h"
#include "attnlab/study/study.h"
#include "commands.h"

namespace attnlab::cli {
namespace {

study::StudyConfig study_config(const std::string& file, const std::vector<std::string>& sets) {
  study::StudyConfig cfg;
  if (!file.empty()) cfg.load_file(file);
  for (const auto& s : sets) cfg.set(s);
  cfg.resolve();
  return cfg;
}

}  // namespace

void add_study(CLI::App& app) {
  auto* cmd = app.add_subcommand("study",
                                 "Run the whole study (pretrain, efficiency, memory, tasks, perplexity, "
                                 "scaling, latency, profile) and write report.html; a rerun resumes");
  struct Args {
    std::string config, out;
    std::vector<std::string> sets, only;
    bool force = false;
  };
  static Args a;
  cmd->add_option("config", a.config, "study YAML (sections study, model, data, train, mixer)")->required();
  cmd->add_option("-s,--set", a.sets, "override: study.KEY=V or section.KEY=V (repeatable)");
  cmd->add_option("-o,--out", a.out, "study folder (default runs/<study.name>)");
  cmd->add_option("--only", a.only, "run only these stages (comma separated)")->delimiter(',');
  cmd->add_flag("--force", a.force, "redo stages that finished before");
  cmd->callback([] {
    auto cfg = study_config(a.config, a.sets);
    const std::string dir = a.out.empty() ? "runs/" + cfg.study.name : a.out;
    fs::create_directories(dir);
    add_log_file((fs::path(dir) / "log.txt").string());
    spdlog::info("attnlab study {} -> {}", a.config, dir);
    auto run = study::run_study(cfg, dir, a.force, a.only);
    std::cout << fmt::format(
        "\nstudy folder   {}\nran            {}\nskipped        {}\nreport         {}/report.html\n", dir,
        fmt::join(run.ran, ", "), fmt::join(run.skipped, ", "), dir);
    if (run.interrupted) {
      std::cout << "interrupted: rerun the same command to resume\n";
      exit_code() = 130;
    }
  });
}

void add_bench_stages(CLI::App* bench) {
  for (const char* stage : {"efficiency", "memory", "scaling", "latency", "profile"}) {
    auto* cmd = bench->add_subcommand(stage, std::string("The study's ") + stage +
                                                 " stage on its own (study options from a config and --set)");
    struct Args {
      std::string config, out;
      std::vector<std::string> sets;
    };
    auto args = std::make_shared<Args>();
    cmd->add_option("-c,--config", args->config, "study YAML (default: the built-in defaults)");
    cmd->add_option("-s,--set", args->sets,
                    "override: study.KEY=V (repeatable), e.g. study.mixers=[softmax,gla]");
    cmd->add_option("-o,--out", args->out, "folder for results/ (default runs/bench-<stage>)");
    cmd->callback([args, stage] {
      auto cfg = study_config(args->config, args->sets);
      const std::string dir = args->out.empty() ? std::string("runs/bench-") + stage : args->out;
      if (!study::run_stage(stage, cfg, dir)) exit_code() = 130;
      std::cout << fmt::format("results in {}/results\n", dir);
    });
  }
}

}  // namespace attnlab::cli
