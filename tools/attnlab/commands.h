// The attnlab CLI: one file per subcommand, each adding itself to the app.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "attnlab/train/config.h"

namespace attnlab::cli {

void add_env(CLI::App& app);
void add_list(CLI::App& app);
void add_train(CLI::App& app);
void add_eval(CLI::App& app);
void add_generate(CLI::App& app);
void add_ops(CLI::App& app);
void add_bench(CLI::App& app);
void add_task(CLI::App& app);
void add_study(CLI::App& app);
// `bench efficiency|memory|scaling|latency|profile` under the bench command.
void add_bench_stages(CLI::App* bench);

// The exit code a subcommand asks for (0 unless it set one, e.g. 130 after Ctrl-C).
int& exit_code();

// This process's command line, arguments joined by spaces (result files record it); set by main().
std::string& command_line();

// Config from an optional YAML file plus --set overrides, applied in that order.
RunConfig load_config(const std::string& config_file, const std::vector<std::string>& sets);

}  // namespace attnlab::cli
