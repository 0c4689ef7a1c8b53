// attnlab: the command-line entry point.
#include <spdlog/spdlog.h>

#include <iostream>

#include "attnlab/core/error.h"
#include "attnlab/core/log.h"
#include "attnlab/core/runtime.h"
#include "commands.h"

namespace attnlab::cli {

int& exit_code() {
  static int code = 0;
  return code;
}

std::string& command_line() {
  static std::string line;
  return line;
}

RunConfig load_config(const std::string& config_file, const std::vector<std::string>& sets) {
  RunConfig cfg;
  if (!config_file.empty()) cfg.load_file(config_file);
  for (const auto& s : sets) cfg.set(s);
  return cfg;
}

}  // namespace attnlab::cli

int main(int argc, char** argv) {
  CLI::App app{
      "attnlab: a workbench for attention mechanisms (softmax, linear attention, GLA, DeltaNet, ...)"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->each([](const std::string& level) { attnlab::set_log_level(level); });
  app.set_version_flag("--version", std::string("attnlab ") + ATTNLAB_VERSION);
  attnlab::cli::add_env(app);
  attnlab::cli::add_list(app);
  attnlab::cli::add_train(app);
  attnlab::cli::add_eval(app);
  attnlab::cli::add_generate(app);
  attnlab::cli::add_ops(app);
  attnlab::cli::add_bench(app);
  attnlab::cli::add_task(app);
  attnlab::cli::add_study(app);
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.find_first_of(" \t\"'") != std::string::npos) arg = "'" + arg + "'";  // readable, not re-quoted
    attnlab::cli::command_line() += (i ? " " : "") + arg;
  }
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  attnlab::setup_threads();  // subcommands with a threads option set it again
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const attnlab::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error (libtorch): " << e.what_without_backtrace() << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 3;
  }
  return attnlab::cli::exit_code();
}
