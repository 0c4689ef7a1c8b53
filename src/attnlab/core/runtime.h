// Process-wide runtime setup: threads, devices, dtypes.
#pragma once

#include <torch/torch.h>

#include <string>

namespace attnlab {

// Debian's libtorch starts with one thread: use every core unless OMP_NUM_THREADS says otherwise, or
// `threads` > 0 asks for a number. Returns the number in use.
int setup_threads(int threads = 0);

// "auto" -> cuda if available else cpu; "cpu"; "cuda"; "cuda:N". An unknown name or an unavailable CUDA
// is an error saying what was expected.
torch::Device resolve_device(const std::string& name);

// The BLAS libtorch is linked against, read from the loaded shared objects ("OpenBLAS (pthread)", ...).
std::string blas_name();

}  // namespace attnlab
