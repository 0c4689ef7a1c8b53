// Runtime setup.
#include "attnlab/core/runtime.h"

#include <cstdlib>
#include <fstream>
#include <thread>

#include "attnlab/core/error.h"

namespace attnlab {

int setup_threads(int threads) {
  if (threads <= 0) {
    if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) {
      threads = std::atoi(env);
    } else {
      threads = static_cast<int>(std::thread::hardware_concurrency());
      if (threads <= 0) threads = 1;
    }
  }
  at::set_num_threads(threads);
  return at::get_num_threads();
}

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (name == "cpu") return torch::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      fail("device '{}' asked for, but this libtorch ({}) sees no CUDA device; use device: cpu or auto", name,
           TORCH_VERSION);
    try {
      return torch::Device(name);
    } catch (const std::exception&) {
      fail("device: expected cuda or cuda:N, got '{}'", name);
    }
  }
  fail("device: expected one of auto, cpu, cuda, cuda:N; got '{}'", name);
}

std::string blas_name() {
  // /proc/self/maps lists the shared objects actually loaded; that is the truth about which BLAS runs.
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::string found;
  while (std::getline(maps, line)) {
    if (line.find("openblas") != std::string::npos) {
      found = line.find("pthread") != std::string::npos ? "OpenBLAS (pthread)" : "OpenBLAS";
      if (line.find("pthread") != std::string::npos) break;
    } else if (found.empty() && line.find("libmkl") != std::string::npos) {
      found = "MKL";
    } else if (found.empty() && line.find("libblas.so") != std::string::npos) {
      found = "reference BLAS (slow: install libopenblas0-pthread)";
    }
  }
  if (found.empty()) found = "unknown (statically linked or MKL inside libtorch)";
  return found;
}

}  // namespace attnlab
