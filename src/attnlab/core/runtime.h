// Process-wide runtime setup: threads, devices, dtypes.
#pragma once

#include <torch/torch.h>

#include <string>

namespace attnlab {

// Sets libtorch's intra-op threads: `threads` if > 0, else OMP_NUM_THREADS if set, else half the cores
// (OpenBLAS uses all cores for matrix products on its own threads; see runtime.cpp). Returns the number.
int setup_threads(int threads = 0);

// "auto" -> cuda if available else cpu; "cpu"; "cuda"; "cuda:N". An unknown name or an unavailable CUDA
// is an error saying what was expected.
torch::Device resolve_device(const std::string& name);

// The BLAS libtorch is linked against, read from the loaded shared objects ("OpenBLAS (pthread)", ...).
std::string blas_name();

// Threads of OpenBLAS's own pool (0 if the BLAS is not OpenBLAS).
int blas_threads();

}  // namespace attnlab
