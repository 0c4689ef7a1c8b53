// The environment report.
#include "attnlab/core/env.h"

#include <fmt/format.h>

#include <torch/torch.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "attnlab/core/compat.h"
#include "attnlab/core/runtime.h"
#ifdef ATTNLAB_WITH_CUDA
#include "attnlab/ops/cuda/info.h"
#endif

namespace attnlab {
namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

}  // namespace

std::vector<std::string> compiled_kernels() {
  std::vector<std::string> out;
#ifdef ATTNLAB_WITH_CUDA
  out = ops::cuda::kernel_names();
#endif
  return out;
}

nlohmann::json environment_json() {
  nlohmann::json j;
  j["attnlab_version"] = ATTNLAB_VERSION;
  j["libtorch_version"] = compat::torch_version();
  j["sdpa"] = compat::has_sdpa();
  j["threads"] = at::get_num_threads();
  j["blas_threads"] = blas_threads();
  j["hardware_threads"] = std::thread::hardware_concurrency();
  j["cpu"] = cpu_model();
  j["blas"] = blas_name();
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  j["hostname"] = host;
  bool cuda = torch::cuda::is_available();
  j["cuda_available"] = cuda;
  j["cuda_devices"] = cuda ? torch::cuda::device_count() : 0;
  j["cudnn_available"] = torch::cuda::cudnn_is_available();
  j["gpus"] = nlohmann::json::array();
#ifdef ATTNLAB_WITH_CUDA
  for (const auto& g : ops::cuda::gpu_names()) j["gpus"].push_back(g);
#endif
  j["kernels"] = compiled_kernels();
  return j;
}

std::string format_environment(const nlohmann::json& j) {
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) { out += fmt::format("{:<18} {}\n", k, v); };
  row("attnlab", j["attnlab_version"].get<std::string>());
  row("libtorch", j["libtorch_version"].get<std::string>() +
                      (j["sdpa"].get<bool>() ? " (SDPA available)" : " (no SDPA: naive attention)"));
  row("threads", fmt::format("{} libtorch + {} BLAS, {} hardware threads", j["threads"].get<int>(),
                             j["blas_threads"].get<int>(), j["hardware_threads"].get<unsigned>()));
  row("cpu", j["cpu"].get<std::string>());
  row("blas", j["blas"].get<std::string>());
  row("cuda", j["cuda_available"].get<bool>() ? fmt::format("yes, {} device(s)", j["cuda_devices"].get<int>())
                                              : "no");
  row("cudnn", j["cudnn_available"].get<bool>() ? "yes" : "no");
  std::string gpus;
  for (const auto& g : j["gpus"]) gpus += (gpus.empty() ? "" : "; ") + g.get<std::string>();
  row("gpu", gpus.empty() ? "none" : gpus);
  std::string kernels;
  for (const auto& k : j["kernels"]) kernels += (kernels.empty() ? "" : ", ") + k.get<std::string>();
  row("fast kernels", kernels.empty() ? "none compiled in (CPU build)" : kernels);
  return out;
}

}  // namespace attnlab
