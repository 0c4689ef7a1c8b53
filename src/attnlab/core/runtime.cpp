// Runtime setup.
#include "attnlab/core/runtime.h"

#include <dlfcn.h>

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
      // Half the cores for libtorch's own (OpenMP) threads: OpenBLAS runs the matrix products on its own
      // pthreads over all cores, and the two pools fight. Measured on a 2-core machine, 40 steps of
      // configs/quick.yaml: 1 libtorch thread 17.7-21.6 s, 2 threads 33.3-38.9 s.
      threads = static_cast<int>(std::thread::hardware_concurrency()) / 2;
      if (threads <= 0) threads = 1;
    }
  }
  at::set_num_threads(threads);
  return at::get_num_threads();
}

torch::Device resolve_device(const std::string& name) {
  if (name == "auto")
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
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

namespace attnlab {

int blas_threads() {
  // OpenBLAS exports openblas_get_num_threads; look it up at run time so that other BLASes link too.
  using Fn = int (*)();
  auto fn = reinterpret_cast<Fn>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn ? fn() : 0;
}

}  // namespace attnlab
