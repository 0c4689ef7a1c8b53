// Host helpers shared by the torch-free kernel harnesses (kernels/*/harness/*.cpp, compiled with nvcc -x cu
// by their build.sh, outside the CMake build): CUDA error checks, device buffers, bf16 conversions, timing by
// CUDA events. Host code only.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// Exits with the file, line, call and CUDA's message on any error.
#define CK(x)                                                                                    \
  do {                                                                                           \
    cudaError_t e_ = (x);                                                                        \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                              \
    }                                                                                            \
  } while (0)

namespace attnlab::harness {

// One device allocation of `bytes` (at least 16), freed with the object.
struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t n) : bytes(n) { CK(cudaMalloc(&p, std::max<size_t>(n, 16))); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  float* f() const { return static_cast<float*>(p); }
  // Fills every byte with 0xFF: NaN in bf16, fp16 and float32, so an element a kernel does not write shows.
  void poison() const { CK(cudaMemset(p, 0xFF, bytes)); }
  template <typename T>
  void upload(const std::vector<T>& h) const {
    CK(cudaMemcpy(p, h.data(), std::min(bytes, h.size() * sizeof(T)), cudaMemcpyHostToDevice));
  }
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> h(bytes / sizeof(T));
    CK(cudaMemcpy(h.data(), p, h.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// float -> bf16 bits, round to nearest even (finite inputs); and back.
inline uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Prints "device: NAME, sm_XY, N SMs" for device 0 and returns its properties.
inline cudaDeviceProp print_device() {
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  return prop;
}

// float -> fp16 bits (round to nearest even) and back, by cuda_fp16.h's host conversions.
inline uint16_t to_fp16(float x) {
  const __half h = __float2half_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
inline float from_fp16(uint16_t b) {
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

// Median milliseconds of `reps` runs of f on the default stream (CUDA events), after five warm-ups.
template <typename F>
double median_ms(F&& f, int reps = 20) {
  for (int i = 0; i < 5; ++i) f();
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace attnlab::harness
