// The environment report (`attnlab env`, env.json of a study): versions, threads, BLAS, devices, kernels.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace attnlab {

nlohmann::json environment_json();
std::string format_environment(const nlohmann::json& env);

// Names of the CUDA kernels compiled into this build (empty in a CPU build).
std::vector<std::string> compiled_kernels();

}  // namespace attnlab
