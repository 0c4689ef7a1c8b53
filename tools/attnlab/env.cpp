// `attnlab env`: what this build and machine can do (libtorch, threads, BLAS, CUDA, GPU, kernels).
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <thread>

#include "attnlab/core/compat.h"
#include "attnlab/core/env.h"
#include "commands.h"

namespace attnlab::cli {

void add_env(CLI::App& app) {
  auto* cmd = app.add_subcommand("env", "Show libtorch, threads, BLAS, CUDA/cuDNN, GPU and compiled kernels");
  static bool as_json = false;
  cmd->add_flag("--json", as_json, "print JSON (what `attnlab study` saves as env.json)");
  cmd->callback([] {
    auto j = environment_json();
    if (as_json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << format_environment(j);
  });
}

}  // namespace attnlab::cli
