// Standalone test and benchmark of the flash-attention kernels (kernels/flash_attn). CUDA C++,
// compiled with `nvcc -x cu` by build.sh; not part of the project's CMake build (kernels/**/*.cu
// are globbed into the library, .cpp files under kernels/ are not).
//
//   ./flash_attn_harness [out.csv] [--quick]   # all of the below (--quick: no tuning, one pass)
//   ./flash_attn_harness --small                # two small checks only (compute-sanitizer runs)
//   ./flash_attn_harness --profile              # one fwd + bwd per head dim at T=8192 (ncu runs)
//   ./flash_attn_harness --bwd-wgmma ...        # backward through the wgmma kernel (sm_90a build)
//
// 1. correctness: random inputs (never zeros), outputs poisoned with NaN before every run, a
//    float32 reference computed on the GPU by naive kernels, relative RMS ||out-ref|| / ||ref|| for
//    o, lse, dq, dk, dv, next to the "floor" ||round(ref)-ref|| / ||ref|| of merely storing the
//    reference in the 16-bit type; a second forward run must reproduce o bit for bit.
// 2. tuning: every tile variant of harness/tune_*.cpp is checked and timed at two shapes.
// 3. benchmark, two passes: the default kernels, causal bf16, B*T = 32768, H = 16, D = 128 and 64,
//    T = 512..16384 (and non-causal at 4096, 16384); forward, backward and forward+backward with
//    cudaEvents (warm-up, median of 30), TFLOP/s with the FlashAttention convention (forward 4*B*H*T^2*D,
//    halved when causal; backward 2.5x forward); a CSV of the rows to out.csv.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/common/harness/harness_util.h"
#include "kernels/flash_attn/harness/tune.h"
#include "kernels/flash_attn/params.h"

using attnlab::kernels::FlashAttnParams;
using attnlab::kernels::FlashDtype;

// ------------------------------------------------------------------------------------------------
// device helpers
template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half x) {
  return __half2float(x);
}
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float x) {
  return __float2half(x);
}

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// Roughly normal values (sum of 4 uniforms, unit variance) times amp; never all zero.
template <typename T>
__global__ void fill_random_kernel(T* buf, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int r = 0; r < 4; ++r) s += hash32(seed * 0x9e3779b97f4a7c15ull + i * 4 + r) * (1.f / 4294967296.f);
    buf[i] = from_f<T>((s - 2.f) * 1.7320508f * amp);
  }
}

struct View {  // element (b, t, h, d) at ptr + b*sb + t*sr + h*sh + d
  void* ptr;
  int64_t sb, sr, sh;
};

template <typename T>
__device__ __forceinline__ float ld(const View& v, int b, int t, int h, int d) {
  return to_f<T>(static_cast<const T*>(v.ptr)[b * v.sb + int64_t(t) * v.sr + int64_t(h) * v.sh + d]);
}

struct RefArgs {
  View q, k, v, dout;
  int B, Tq, Tk, H, Hkv, D;
  float scale;
  bool causal;
  int window;
  float* o;    // [B, Tq, H, D]
  float* lse;  // [B, H, Tq]
  float* dd;   // [B, H, Tq]: D_i from P and dP (independent of the kernel's o)
  float* dq;   // [B, Tq, H, D]
  float* dk;   // [B, Tk, Hkv, D]
  float* dv;   // [B, Tk, Hkv, D]
};

__device__ __forceinline__ bool visible(const RefArgs& a, int i, int j) {
  const int ii = i + a.Tk - a.Tq;
  if ((a.causal || a.window > 0) && j > ii) return false;
  if (a.window > 0 && j <= ii - a.window) return false;
  return true;
}

// blockDim.x = 128: sum / max over the block through shared memory.
__device__ float block_reduce(float x, bool is_max, float* red) {
  for (int s = 16; s > 0; s >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, s);
    x = is_max ? fmaxf(x, y) : x + y;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < int(blockDim.x >> 5); ++w) r = is_max ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

// One block per (query row, head, batch): o, lse in float32.
template <typename T>
__global__ void ref_fwd_kernel(RefArgs a) {
  extern __shared__ float sh[];
  float* sq = sh;        // D
  float* ss = sh + a.D;  // Tk
  __shared__ float red[32];
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (a.H / a.Hkv);
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) sq[d] = ld<T>(a.q, b, i, h, d);
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < a.Tk; j += blockDim.x) {
    float s = -INFINITY;
    if (visible(a, i, j)) {
      s = 0.f;
      for (int d = 0; d < a.D; ++d) s += sq[d] * ld<T>(a.k, b, j, hk, d);
      s *= a.scale;
    }
    ss[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_reduce(mx, true, red);
  const int64_t orow = ((int64_t(b) * a.Tq + i) * a.H + h) * a.D;
  if (mx == -INFINITY) {
    for (int d = threadIdx.x; d < a.D; d += blockDim.x) a.o[orow + d] = 0.f;
    if (threadIdx.x == 0) a.lse[(int64_t(b) * a.H + h) * a.Tq + i] = INFINITY;
    return;
  }
  float sum = 0.f;
  for (int j = threadIdx.x; j < a.Tk; j += blockDim.x) {
    const float p = expf(ss[j] - mx);
    ss[j] = p;
    sum += p;
  }
  sum = block_reduce(sum, false, red);
  __syncthreads();
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < a.Tk; ++j)
      if (ss[j] != 0.f) acc += ss[j] * ld<T>(a.v, b, j, hk, d);
    a.o[orow + d] = acc / sum;
  }
  if (threadIdx.x == 0) a.lse[(int64_t(b) * a.H + h) * a.Tq + i] = mx + logf(sum);
}

// One block per (query row, head, batch): dq and D_i.
template <typename T>
__global__ void ref_bwd_dq_kernel(RefArgs a) {
  extern __shared__ float sh[];
  float* sq = sh;            // D
  float* sdo = sh + a.D;     // D
  float* sp = sh + 2 * a.D;  // Tk
  float* sdp = sp + a.Tk;    // Tk
  __shared__ float red[32];
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (a.H / a.Hkv);
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    sq[d] = ld<T>(a.q, b, i, h, d);
    sdo[d] = ld<T>(a.dout, b, i, h, d);
  }
  __syncthreads();
  const float lse = a.lse[(int64_t(b) * a.H + h) * a.Tq + i];
  float di = 0.f;
  for (int j = threadIdx.x; j < a.Tk; j += blockDim.x) {
    float p = 0.f, dp = 0.f;
    if (visible(a, i, j) && lse != INFINITY) {
      float s = 0.f;
      for (int d = 0; d < a.D; ++d) {
        s += sq[d] * ld<T>(a.k, b, j, hk, d);
        dp += sdo[d] * ld<T>(a.v, b, j, hk, d);
      }
      p = expf(s * a.scale - lse);
    }
    sp[j] = p;
    sdp[j] = dp;
    di += p * dp;
  }
  di = block_reduce(di, false, red);
  __syncthreads();
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < a.Tk; ++j)
      if (sp[j] != 0.f) acc += sp[j] * (sdp[j] - di) * ld<T>(a.k, b, j, hk, d);
    a.dq[((int64_t(b) * a.Tq + i) * a.H + h) * a.D + d] = acc * a.scale;
  }
  if (threadIdx.x == 0) a.dd[(int64_t(b) * a.H + h) * a.Tq + i] = di;
}

// One block (128 threads) per (key, key head, batch): dk, dv summed over the group's query heads.
template <typename T>
__global__ void ref_bwd_dkv_kernel(RefArgs a) {
  extern __shared__ float sh[];
  float* sk = sh;            // D
  float* sv = sh + a.D;      // D
  float* sp = sh + 2 * a.D;  // 128
  float* sds = sp + 128;     // 128
  const int j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, group = a.H / a.Hkv;
  for (int d = threadIdx.x; d < a.D; d += blockDim.x) {
    sk[d] = ld<T>(a.k, b, j, hk, d);
    sv[d] = ld<T>(a.v, b, j, hk, d);
  }
  __syncthreads();
  float dk = 0.f, dv = 0.f;  // thread d < D
  for (int h = hk * group; h < (hk + 1) * group; ++h)
    for (int i0 = 0; i0 < a.Tq; i0 += 128) {
      const int i = i0 + threadIdx.x;
      float p = 0.f, ds = 0.f;
      if (i < a.Tq && visible(a, i, j)) {
        const float lse = a.lse[(int64_t(b) * a.H + h) * a.Tq + i];
        if (lse != INFINITY) {
          float s = 0.f, dp = 0.f;
          for (int d = 0; d < a.D; ++d) {
            s += ld<T>(a.q, b, i, h, d) * sk[d];
            dp += ld<T>(a.dout, b, i, h, d) * sv[d];
          }
          p = expf(s * a.scale - lse);
          ds = p * (dp - a.dd[(int64_t(b) * a.H + h) * a.Tq + i]);
        }
      }
      __syncthreads();
      sp[threadIdx.x] = p;
      sds[threadIdx.x] = ds;
      __syncthreads();
      if (int(threadIdx.x) < a.D) {
        const int n = min(128, a.Tq - i0);
        for (int ii = 0; ii < n; ++ii) {
          if (sp[ii] != 0.f) {
            dv += sp[ii] * ld<T>(a.dout, b, i0 + ii, h, threadIdx.x);
            dk += sds[ii] * ld<T>(a.q, b, i0 + ii, h, threadIdx.x);
          }
        }
      }
    }
  if (int(threadIdx.x) < a.D) {
    const int64_t r = ((int64_t(b) * a.Tk + j) * a.Hkv + hk) * a.D + threadIdx.x;
    a.dk[r] = dk * a.scale;
    a.dv[r] = dv;
  }
}

// sums[0] += (out-ref)^2, sums[1] += ref^2, sums[2] += (round(ref)-ref)^2; bad += non-finite outs.
template <typename T>
__global__ void compare_kernel(View out, const float* ref, int B, int T_, int H, int D, double* sums,
                               unsigned long long* bad, unsigned long long* worst) {
  __shared__ double red[3][8];
  const int64_t n = int64_t(B) * T_ * H * D;
  double s0 = 0, s1 = 0, s2 = 0;
  unsigned long long nb = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int d = int(e % D);
    const int h = int((e / D) % H);
    const int t = int((e / (int64_t(D) * H)) % T_);
    const int b = int(e / (int64_t(D) * H * T_));
    const float o = ld<T>(out, b, t, h, d);
    const float r = ref[e];
    if (!isfinite(o)) ++nb;
    const float ad = isfinite(o) ? fabsf(o - r) : INFINITY;  // worst |out-ref| and where (debugging aid)
    atomicMax(worst, (static_cast<unsigned long long>(__float_as_uint(ad)) << 32) | static_cast<uint32_t>(e));
    const double df = double(o) - double(r);
    s0 += df * df;
    s1 += double(r) * r;
    const double rr = double(to_f<T>(from_f<T>(r))) - r;
    s2 += rr * rr;
  }
  for (int s = 16; s > 0; s >>= 1) {
    s0 += __shfl_xor_sync(0xffffffffu, s0, s);
    s1 += __shfl_xor_sync(0xffffffffu, s1, s);
    s2 += __shfl_xor_sync(0xffffffffu, s2, s);
  }
  if ((threadIdx.x & 31) == 0) {
    red[0][threadIdx.x >> 5] = s0;
    red[1][threadIdx.x >> 5] = s1;
    red[2][threadIdx.x >> 5] = s2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; ++w) {
      s0 += red[0][w];
      s1 += red[1][w];
      s2 += red[2][w];
    }
    atomicAdd(&sums[0], s0);
    atomicAdd(&sums[1], s1);
    atomicAdd(&sums[2], s2);
  }
  if (nb) atomicAdd(bad, nb);
}

// lse: rows where the reference is +inf must be +inf; elsewhere relative RMS over finite rows.
__global__ void compare_lse_kernel(const float* out, const float* ref, int64_t n, double* sums,
                                   unsigned long long* bad) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const float o = out[e], r = ref[e];
    if (r == INFINITY) {
      if (o != INFINITY) atomicAdd(bad, 1ull);
      continue;
    }
    if (!isfinite(o)) {
      atomicAdd(bad, 1ull);
      continue;
    }
    atomicAdd(&sums[0], (double(o) - r) * (double(o) - r));
    atomicAdd(&sums[1], double(r) * r);
  }
}

__global__ void count_diff_kernel(const uint16_t* x, const uint16_t* y, int64_t n, unsigned long long* diff) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    if (x[e] != y[e]) atomicAdd(diff, 1ull);
}

// ------------------------------------------------------------------------------------------------
// host side
struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t n) : bytes(n) { CK(cudaMalloc(&p, n)); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  float* f() const { return static_cast<float*>(p); }
};

enum class Layout { kBTHD, kBHTD, kPackedQKV };

struct Case {
  const char* name;
  int B, Tq, Tk, H, Hkv, D;
  bool causal;
  int window;
  FlashDtype dtype;
  Layout layout;
  float qamp;  // amplitude of q (sharper softmax for > 1)
};

struct Err {
  double rel = 0, floor = 0;
  double ref_rms = 0, abs_rms = 0;  // for an all-zero reference (e.g. dq with window 1) rel is meaningless
  unsigned long long bad = 0;
  std::string worst;  // "(b,t,h,d) out=.. ref=.." of the largest |out-ref|
};

float host_to_float(uint16_t bits, bool bf) {
  if (bf) {
    uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  std::memcpy(&h, &bits, 2);
  return __half2float(h);
}

template <typename T>
Err compare(const View& out, const float* ref, int B, int T_, int H, int D) {
  Buf sums(3 * sizeof(double)), bad(sizeof(unsigned long long)), worst(sizeof(unsigned long long));
  CK(cudaMemset(sums.p, 0, sums.bytes));
  CK(cudaMemset(bad.p, 0, bad.bytes));
  CK(cudaMemset(worst.p, 0, worst.bytes));
  compare_kernel<T><<<1024, 256>>>(out, ref, B, T_, H, D, static_cast<double*>(sums.p),
                                   static_cast<unsigned long long*>(bad.p),
                                   static_cast<unsigned long long*>(worst.p));
  CK(cudaGetLastError());
  double s[3];
  unsigned long long w;
  Err e;
  CK(cudaMemcpy(s, sums.p, sizeof(s), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(&e.bad, bad.p, sizeof(e.bad), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(&w, worst.p, sizeof(w), cudaMemcpyDeviceToHost));
  e.rel = std::sqrt(s[0] / std::max(s[1], 1e-300));
  e.floor = std::sqrt(s[2] / std::max(s[1], 1e-300));
  const double n = double(B) * T_ * H * D;
  e.ref_rms = std::sqrt(s[1] / n);
  e.abs_rms = std::sqrt(s[0] / n);
  const int64_t idx = int64_t(w & 0xffffffffu);
  const int d = int(idx % D), h = int((idx / D) % H), t = int((idx / (int64_t(D) * H)) % T_),
            b = int(idx / (int64_t(D) * H * T_));
  float r;
  uint16_t ob;
  CK(cudaMemcpy(&r, ref + idx, 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(&ob, static_cast<const char*>(out.ptr) + (b * out.sb + t * out.sr + h * out.sh + d) * 2, 2,
                cudaMemcpyDeviceToHost));
  char buf[160];
  std::snprintf(buf, sizeof(buf), "worst at (b%d,t%d,h%d,d%d): out %.5g ref %.5g", b, t, h, d,
                host_to_float(ob, std::is_same<T, __nv_bfloat16>::value), r);
  e.worst = buf;
  return e;
}

Err compare_lse(const float* out, const float* ref, int64_t n) {
  Buf sums(2 * sizeof(double)), bad(sizeof(unsigned long long));
  CK(cudaMemset(sums.p, 0, sums.bytes));
  CK(cudaMemset(bad.p, 0, bad.bytes));
  compare_lse_kernel<<<256, 256>>>(out, ref, n, static_cast<double*>(sums.p),
                                   static_cast<unsigned long long*>(bad.p));
  CK(cudaGetLastError());
  double s[2];
  Err e;
  CK(cudaMemcpy(s, sums.p, sizeof(s), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(&e.bad, bad.p, sizeof(e.bad), cudaMemcpyDeviceToHost));
  e.rel = std::sqrt(s[0] / std::max(s[1], 1e-300));
  return e;
}

template <typename T>
void fill(void* p, size_t n, uint64_t seed, float amp) {
  fill_random_kernel<T><<<1024, 256>>>(static_cast<T*>(p), n, seed, amp);
  CK(cudaGetLastError());
}

// Device tensors of one case (views in the case's layout) plus the float32 reference.
struct Problem {
  FlashAttnParams p{};
  std::vector<Buf*> owned;
  View q{}, k{}, v{}, o{}, dout{}, dq{}, dk{}, dv{};
  float* lse = nullptr;
  ~Problem() {
    for (Buf* b : owned) delete b;
  }
  void* alloc(size_t bytes) {
    owned.push_back(new Buf(bytes));
    return owned.back()->p;
  }
};

// Lays out q/k/v/o/do/dq/dk/dv per the case's layout and fills the params (no workspace yet).
void make_problem(Problem& pr, const Case& c, uint64_t seed) {
  const size_t es = 2;
  const int64_t B = c.B, Tq = c.Tq, Tk = c.Tk, H = c.H, Hkv = c.Hkv, D = c.D;
  auto bthd = [&](int64_t T_, int64_t Hh) {
    void* ptr = pr.alloc(size_t(B * T_ * Hh * D) * es);
    return View{ptr, T_ * Hh * D, Hh * D, D};
  };
  auto bhtd = [&](int64_t T_, int64_t Hh) {
    void* ptr = pr.alloc(size_t(B * T_ * Hh * D) * es);
    return View{ptr, Hh * T_ * D, D, T_ * D};
  };
  auto fillv = [&](const View& v, size_t elems, uint64_t s, float amp) {
    if (c.dtype == FlashDtype::kBF16)
      fill<__nv_bfloat16>(v.ptr, elems, s, amp);
    else
      fill<__half>(v.ptr, elems, s, amp);
  };
  if (c.layout == Layout::kPackedQKV) {  // q, k, v and dq, dk, dv as slices of [B, T, 3, H, D]
    const int64_t T_ = Tq;
    auto packed = [&](View* a, View* b_, View* c_) {
      char* base = static_cast<char*>(pr.alloc(size_t(B * T_ * 3 * H * D) * es));
      *a = View{base, T_ * 3 * H * D, 3 * H * D, D};
      *b_ = View{base + H * D * es, T_ * 3 * H * D, 3 * H * D, D};
      *c_ = View{base + 2 * H * D * es, T_ * 3 * H * D, 3 * H * D, D};
    };
    packed(&pr.q, &pr.k, &pr.v);
    packed(&pr.dq, &pr.dk, &pr.dv);
    pr.o = bhtd(Tq, H);
    pr.dout = bhtd(Tq, H);
    fillv(pr.q, size_t(B * T_ * 3 * H * D), seed, 1.f);  // q, k, v in one go
  } else {
    auto mk = [&](int64_t T_, int64_t Hh) { return c.layout == Layout::kBTHD ? bthd(T_, Hh) : bhtd(T_, Hh); };
    pr.q = mk(Tq, H);
    pr.k = mk(Tk, Hkv);
    pr.v = mk(Tk, Hkv);
    pr.o = mk(Tq, H);
    pr.dout = mk(Tq, H);
    pr.dq = mk(Tq, H);
    pr.dk = mk(Tk, Hkv);
    pr.dv = mk(Tk, Hkv);
    fillv(pr.q, size_t(B * Tq * H * D), seed, c.qamp);
    fillv(pr.k, size_t(B * Tk * Hkv * D), seed + 1, 1.f);
    fillv(pr.v, size_t(B * Tk * Hkv * D), seed + 2, 1.f);
  }
  fillv(pr.dout, size_t(B * Tq * H * D), seed + 3, 1.f);
  pr.lse = static_cast<float*>(pr.alloc(size_t(B * H * Tq) * 4));

  FlashAttnParams& p = pr.p;
  p.q = pr.q.ptr;
  p.k = pr.k.ptr;
  p.v = pr.v.ptr;
  p.o = pr.o.ptr;
  p.lse = pr.lse;
  p.dout = pr.dout.ptr;
  p.dq = pr.dq.ptr;
  p.dk = pr.dk.ptr;
  p.dv = pr.dv.ptr;
  auto set = [](const View& v, int64_t& sb, int64_t& sr, int64_t& sh) {
    sb = v.sb;
    sr = v.sr;
    sh = v.sh;
  };
  set(pr.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  set(pr.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  set(pr.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  set(pr.o, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
  set(pr.dout, p.do_batch_stride, p.do_row_stride, p.do_head_stride);
  set(pr.dq, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride);
  set(pr.dk, p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride);
  set(pr.dv, p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride);
  p.B = c.B;
  p.Tq = c.Tq;
  p.Tk = c.Tk;
  p.H = c.H;
  p.Hkv = c.Hkv;
  p.D = c.D;
  p.scale = 1.f / std::sqrt(float(c.D));
  p.causal = c.causal;
  p.window = c.window;
  p.dtype = c.dtype;
  p.stream = nullptr;
  void* ws = pr.alloc(attnlab::kernels::flash_attn_bwd_workspace_bytes(p));
  attnlab::kernels::flash_attn_set_bwd_workspace(p, ws);
}

struct Ref {
  Buf o, lse, dd, dq, dk, dv;
  explicit Ref(const Case& c)
      : o(size_t(c.B) * c.Tq * c.H * c.D * 4),
        lse(size_t(c.B) * c.H * c.Tq * 4),
        dd(size_t(c.B) * c.H * c.Tq * 4),
        dq(size_t(c.B) * c.Tq * c.H * c.D * 4),
        dk(size_t(c.B) * c.Tk * c.Hkv * c.D * 4),
        dv(size_t(c.B) * c.Tk * c.Hkv * c.D * 4) {}
};

template <typename T>
void run_reference(const Problem& pr, Ref& r) {
  const FlashAttnParams& p = pr.p;
  RefArgs a{pr.q,    pr.k,     pr.v,     pr.dout, p.B,       p.Tq,     p.Tk,     p.H,      p.Hkv,   p.D,
            p.scale, p.causal, p.window, r.o.f(), r.lse.f(), r.dd.f(), r.dq.f(), r.dk.f(), r.dv.f()};
  const size_t sm1 = size_t(p.D + p.Tk) * 4, sm2 = size_t(2 * p.D + 2 * p.Tk) * 4,
               sm3 = size_t(2 * p.D + 256) * 4;
  CK(cudaFuncSetAttribute(ref_fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm1)));
  CK(cudaFuncSetAttribute(ref_bwd_dq_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm2)));
  ref_fwd_kernel<T><<<dim3(p.Tq, p.H, p.B), 128, sm1>>>(a);
  CK(cudaGetLastError());
  ref_bwd_dq_kernel<T><<<dim3(p.Tq, p.H, p.B), 128, sm2>>>(a);
  CK(cudaGetLastError());
  ref_bwd_dkv_kernel<T><<<dim3(p.Tk, p.Hkv, p.B), 128, sm3>>>(a);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
}

using FwdFn = cudaError_t (*)(const FlashAttnParams&);

struct CaseResult {
  Err o, lse, dq, dk, dv;
  unsigned long long nondet = 0;
  bool pass = false;
};

template <typename T>
CaseResult check_case(const Case& c, uint64_t seed, FwdFn fwd, FwdFn bwd, bool do_bwd) {
  Problem pr;
  make_problem(pr, c, seed);
  Ref ref(c);
  run_reference<T>(pr, ref);
  const FlashAttnParams& p = pr.p;
  const size_t o_bytes = size_t(c.B) * c.Tq * c.H * c.D * 2;
  CaseResult res;
  // forward, poisoned outputs (the o view's whole buffer)
  const size_t o_buf = c.layout == Layout::kPackedQKV ? o_bytes : o_bytes;
  CK(cudaMemset(pr.o.ptr, 0xFF, o_buf));
  CK(cudaMemset(pr.lse, 0xFF, size_t(c.B) * c.H * c.Tq * 4));
  CK(fwd(p));
  CK(cudaDeviceSynchronize());
  res.o = compare<T>(pr.o, ref.o.f(), c.B, c.Tq, c.H, c.D);
  res.lse = compare_lse(pr.lse, ref.lse.f(), int64_t(c.B) * c.H * c.Tq);
  {  // determinism / race check: a second run must give the same bits
    Buf first(o_buf);
    CK(cudaMemcpy(first.p, pr.o.ptr, o_buf, cudaMemcpyDeviceToDevice));
    CK(cudaMemset(pr.o.ptr, 0xFF, o_buf));
    CK(fwd(p));
    CK(cudaDeviceSynchronize());
    Buf diff(sizeof(unsigned long long));
    CK(cudaMemset(diff.p, 0, diff.bytes));
    count_diff_kernel<<<256, 256>>>(static_cast<const uint16_t*>(first.p),
                                    static_cast<const uint16_t*>(pr.o.ptr), int64_t(o_buf / 2),
                                    static_cast<unsigned long long*>(diff.p));
    CK(cudaGetLastError());
    CK(cudaMemcpy(&res.nondet, diff.p, sizeof(res.nondet), cudaMemcpyDeviceToHost));
  }
  const bool bf = c.dtype == FlashDtype::kBF16;
  const double tol = bf ? 1e-2 : 4e-3;
  bool ok = res.o.bad == 0 && res.o.rel < tol && res.lse.bad == 0 && res.lse.rel < 1e-4 && res.nondet == 0;
  if (do_bwd) {
    const size_t dq_buf = c.layout == Layout::kPackedQKV ? size_t(c.B) * c.Tq * 3 * c.H * c.D * 2 : o_bytes;
    CK(cudaMemset(pr.dq.ptr, 0xFF, dq_buf));
    if (c.layout != Layout::kPackedQKV) {
      CK(cudaMemset(pr.dk.ptr, 0xFF, size_t(c.B) * c.Tk * c.Hkv * c.D * 2));
      CK(cudaMemset(pr.dv.ptr, 0xFF, size_t(c.B) * c.Tk * c.Hkv * c.D * 2));
    }
    CK(bwd(p));
    CK(cudaDeviceSynchronize());
    res.dq = compare<T>(pr.dq, ref.dq.f(), c.B, c.Tq, c.H, c.D);
    res.dk = compare<T>(pr.dk, ref.dk.f(), c.B, c.Tk, c.Hkv, c.D);
    res.dv = compare<T>(pr.dv, ref.dv.f(), c.B, c.Tk, c.Hkv, c.D);
    const double gtol = bf ? 2e-2 : 8e-3;
    // an (exactly) zero reference gradient, as with window 1 (P = 1: dS = 0), is judged absolutely
    auto good = [&](const Err& e) {
      return e.bad == 0 && (e.rel < gtol || (e.ref_rms < 1e-6 && e.abs_rms < 1e-4));
    };
    ok = ok && good(res.dq) && good(res.dk) && good(res.dv);
  }
  res.pass = ok;
  return res;
}

CaseResult check_case_any(const Case& c, uint64_t seed, FwdFn fwd, FwdFn bwd, bool do_bwd) {
  if (c.dtype == FlashDtype::kBF16) return check_case<__nv_bfloat16>(c, seed, fwd, bwd, do_bwd);
  return check_case<__half>(c, seed, fwd, bwd, do_bwd);
}

void print_result(const char* name, const CaseResult& r, bool do_bwd) {
  std::printf("%-44s o %.2e (floor %.1e)%s lse %.1e%s", name, r.o.rel, r.o.floor, r.o.bad ? " NaN!" : "",
              r.lse.rel, r.lse.bad ? " BAD!" : "");
  if (r.nondet) std::printf(" NONDET(%llu)", r.nondet);
  auto g = [](const Err& e) {  // relative error, or "abs=.." for an all-zero reference
    char b[32];
    if (e.ref_rms < 1e-6)
      std::snprintf(b, sizeof(b), "abs=%.0e", e.abs_rms);
    else
      std::snprintf(b, sizeof(b), "%.2e", e.rel);
    return std::string(b);
  };
  if (do_bwd)
    std::printf(" | dq %s dk %s dv %s (floor %.1e)%s", g(r.dq).c_str(), g(r.dk).c_str(), g(r.dv).c_str(),
                r.dk.floor, (r.dq.bad || r.dk.bad || r.dv.bad) ? " NaN!" : "");
  std::printf("  %s\n", r.pass ? "PASS" : "FAIL");
  if (!r.pass) {
    std::printf("    o: %s\n", r.o.worst.c_str());
    if (do_bwd)
      std::printf("    dq: %s\n    dk: %s\n    dv: %s\n", r.dq.worst.c_str(), r.dk.worst.c_str(),
                  r.dv.worst.c_str());
  }
  std::fflush(stdout);
}

// ------------------------------------------------------------------------------------------------
// timing
struct Timing {
  double fwd_ms = 0, bwd_ms = 0, total_ms = 0;
};

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

Timing time_it(const FlashAttnParams& p, FwdFn fwd, FwdFn bwd, int reps) {
  cudaEvent_t e0, e1, e2;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventCreate(&e2));
  Timing t;
  std::vector<float> vf, vb, vt;
  if (fwd) {
    for (int i = 0; i < 3; ++i) CK(fwd(p));
    for (int i = 0; i < reps; ++i) {
      CK(cudaEventRecord(e0));
      CK(fwd(p));
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      vf.push_back(ms);
    }
    t.fwd_ms = median(vf);
  }
  if (fwd && bwd) {
    for (int i = 0; i < 3; ++i) {
      CK(fwd(p));
      CK(bwd(p));
    }
    for (int i = 0; i < reps; ++i) {
      CK(cudaEventRecord(e0));
      CK(fwd(p));
      CK(cudaEventRecord(e1));
      CK(bwd(p));
      CK(cudaEventRecord(e2));
      CK(cudaEventSynchronize(e2));
      float a, b;
      CK(cudaEventElapsedTime(&a, e0, e1));
      CK(cudaEventElapsedTime(&b, e1, e2));
      vb.push_back(b);
      vt.push_back(a + b);
    }
    t.bwd_ms = median(vb);
    t.total_ms = median(vt);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaEventDestroy(e2));
  return t;
}

double fwd_flops(const FlashAttnParams& p) {
  return 4.0 * p.B * p.H * double(p.Tq) * p.Tk * p.D / (p.causal ? 2.0 : 1.0);
}

// A [B, T, H, D] bf16 benchmark problem carved from one arena (filled with random values once).
struct Arena {
  Buf* buf = nullptr;
  size_t elems = 0;
};

FlashAttnParams bench_params(char* base, size_t elems_per_tensor, int B, int T, int H, int D, bool causal,
                             void* ws) {
  FlashAttnParams p{};
  char* t[8];
  for (int i = 0; i < 8; ++i) t[i] = base + i * elems_per_tensor * 2;
  p.q = t[0];
  p.k = t[1];
  p.v = t[2];
  p.o = t[3];
  p.dout = t[4];
  p.dq = t[5];
  p.dk = t[6];
  p.dv = t[7];
  const int64_t sb = int64_t(T) * H * D, sr = int64_t(H) * D, sh = D;
  p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.o_batch_stride = sb;
  p.do_batch_stride = p.dq_batch_stride = p.dk_batch_stride = p.dv_batch_stride = sb;
  p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = sr;
  p.do_row_stride = p.dq_row_stride = p.dk_row_stride = p.dv_row_stride = sr;
  p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = sh;
  p.do_head_stride = p.dq_head_stride = p.dk_head_stride = p.dv_head_stride = sh;
  p.B = B;
  p.Tq = p.Tk = T;
  p.H = p.Hkv = H;
  p.D = D;
  p.scale = 1.f / std::sqrt(float(D));
  p.causal = causal;
  p.window = 0;
  p.dtype = FlashDtype::kBF16;
  p.lse = static_cast<float*>(ws);
  attnlab::kernels::flash_attn_set_bwd_workspace(p, static_cast<char*>(ws) + size_t(B) * H * T * 4 + 256);
  return p;
}

// --bwd-wgmma: every backward of this run (checks, benchmark) through the wgmma main kernel
// (FlashAttnParams::bwd_wgmma; an sm_90a build).
bool g_bwd_wgmma = false;
cudaError_t launch_bwd(const FlashAttnParams& p0) {
  FlashAttnParams p = p0;
  p.bwd_wgmma = g_bwd_wgmma ? 1 : 0;
  return attnlab::kernels::launch_flash_attn_bwd(p);
}

int main(int argc, char** argv) {
  const char* csv_path = nullptr;
  bool quick = false, small = false, profile = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[i], "--small"))
      small = true;  // compute-sanitizer runs: small cases only
    else if (!std::strcmp(argv[i], "--bwd-wgmma"))
      g_bwd_wgmma = true;
    else if (!std::strcmp(argv[i], "--profile"))
      profile = true;  // ncu runs: one forward and one backward per head dim at T=8192, nothing else
    else
      csv_path = argv[i];
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, sm_%d%d, %d SMs, L2 %d MiB, smem/block opt-in %zu KiB\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              prop.sharedMemPerBlockOptin / 1024);
  int failures = 0;
  if (profile) {
    const size_t elems = size_t(32768) * 16 * 128;
    Buf arena(elems * 8 * 2);
    fill<__nv_bfloat16>(arena.p, elems * 8, 777, 1.f);
    Buf ws(size_t(32768) * 16 * 4 + 256 + elems * 4 + size_t(32768) * 16 * 4 + 1024);
    for (int D : {128, 64}) {
      FlashAttnParams p = bench_params(static_cast<char*>(arena.p), elems, 4, 8192, 16, D, true, ws.p);
      CK(attnlab::kernels::launch_flash_attn_fwd(p));
      CK(launch_bwd(p));
    }
    CK(cudaDeviceSynchronize());
    std::printf("profile runs done\n");
    return 0;
  }

  // ---------------------------------------------------------------- 1. correctness
  using attnlab::kernels::launch_flash_attn_fwd;
  const FlashDtype BF = FlashDtype::kBF16, FP = FlashDtype::kFP16;
  const Layout L0 = Layout::kBTHD, L1 = Layout::kBHTD, LP = Layout::kPackedQKV;
  const std::vector<Case> cases = {
      {"bf16 D128 T1000 GQA16/4 causal", 2, 1000, 1000, 16, 4, 128, true, 0, BF, L0, 1.f},
      {"bf16 D128 T1000 GQA16/4 full", 2, 1000, 1000, 16, 4, 128, false, 0, BF, L0, 1.f},
      {"bf16 D64 T1000 GQA16/4 causal", 2, 1000, 1000, 16, 4, 64, true, 0, BF, L0, 1.f},
      {"bf16 D64 T1000 GQA16/4 full", 2, 1000, 1000, 16, 4, 64, false, 0, BF, L0, 1.f},
      {"fp16 D128 T1000 GQA16/4 causal", 2, 1000, 1000, 16, 4, 128, true, 0, FP, L0, 1.f},
      {"fp16 D64 T1000 GQA16/4 full", 2, 1000, 1000, 16, 4, 64, false, 0, FP, L0, 1.f},
      {"fp16 D128 T77 H16 causal", 3, 77, 77, 16, 16, 128, true, 0, FP, L0, 1.f},
      {"bf16 D64 T77 GQA8/2 full", 3, 77, 77, 8, 2, 64, false, 0, BF, L0, 1.f},
      {"bf16 D128 T1000 GQA16/4 window256", 2, 1000, 1000, 16, 4, 128, true, 256, BF, L0, 1.f},
      {"fp16 D64 T1000 H16 window100", 1, 1000, 1000, 16, 16, 64, true, 100, FP, L0, 1.f},
      {"bf16 D64 T300 window1 (self only)", 1, 300, 300, 4, 2, 64, false, 1, BF, L0, 1.f},
      {"bf16 D128 Tq300 Tk1000 causal (b-r)", 2, 300, 1000, 16, 4, 128, true, 0, BF, L0, 1.f},
      {"bf16 D128 Tq1000 Tk300 causal (empty rows)", 2, 1000, 300, 16, 4, 128, true, 0, BF, L0, 1.f},
      {"fp16 D128 Tq513 Tk1031 MQA16/1 full", 1, 513, 1031, 16, 1, 128, false, 0, FP, L0, 1.f},
      {"bf16 D128 T1000 packed qkv, o [B,H,T,D]", 2, 1000, 1000, 16, 16, 128, true, 0, BF, LP, 1.f},
      {"bf16 D64 T777 [B,H,T,D] causal", 2, 777, 777, 8, 4, 64, true, 0, BF, L1, 1.f},
      {"bf16 D128 T1000 causal sharp (q x4)", 1, 1000, 1000, 8, 8, 128, true, 0, BF, L0, 4.f},
      {"fp16 D64 T2048 causal sharp (q x4)", 1, 2048, 2048, 4, 4, 64, true, 0, FP, L0, 4.f},
  };
  const std::vector<Case> small_cases = {
      {"bf16 D128 T77 GQA4/2 causal", 1, 77, 77, 4, 2, 128, true, 0, BF, L0, 1.f},
      {"fp16 D64 Tq70 Tk133 window40", 1, 70, 133, 2, 1, 64, false, 40, FP, L0, 1.f},
  };
  std::printf(
      "\n== correctness (relative RMS vs float32 reference; floor = rounding the reference to the type)\n");
  uint64_t seed = 1234;
  if (small) {
    for (const Case& c : small_cases) {
      const CaseResult r = check_case_any(c, seed += 10, launch_flash_attn_fwd, launch_bwd, true);
      print_result(c.name, r, true);
      failures += !r.pass;
    }
    std::printf("\n%d passed, %d failed\n", int(small_cases.size()) - failures, failures);
    return failures ? 1 : 0;
  }
  for (const Case& c : cases) {
    const CaseResult r = check_case_any(c, seed += 10, launch_flash_attn_fwd, launch_bwd, true);
    print_result(c.name, r, true);
    failures += !r.pass;
  }

  // ---------------------------------------------------------------- 2. tuning table
  int nf = 0, nb = 0;
  const flash_tune::Variant* fv = flash_tune::fwd_variants(&nf);
  const flash_tune::Variant* bv = flash_tune::bwd_variants(&nb);
  const size_t max_elems = size_t(32768) * 16 * 128;  // B*T*H*D of every benchmark shape
  Buf arena(max_elems * 8 * 2);
  fill<__nv_bfloat16>(arena.p, max_elems * 8, 777, 1.f);
  Buf ws(size_t(32768) * 16 * 4 + 256 + size_t(32768) * 16 * 128 * 4 + size_t(32768) * 16 * 4 + 1024);
  CK(cudaDeviceSynchronize());
  std::FILE* csv = csv_path ? std::fopen(csv_path, "w") : nullptr;
  if (csv)
    std::fprintf(csv,
                 "kind,config,D,B,T,H,causal,fwd_ms,bwd_ms,fwdbwd_ms,fwd_tflops,bwd_tflops,fwdbwd_tflops\n");
  if (!quick) {
    std::printf("\n== tuning (bf16 causal, H=16, B*T=32768; check = GQA16/4 causal T=1000)\n");
    const int tune_T[] = {2048, 8192};
    for (int i = 0; i < nf + nb; ++i) {
      const bool is_fwd = i < nf;
      const flash_tune::Variant& var = is_fwd ? fv[i] : bv[i - nf];
      const Case c{var.name, 2, 1000, 1000, 16, 4, var.head_dim, true, 0, BF, L0, 1.f};
      const CaseResult r = is_fwd
                               ? check_case<__nv_bfloat16>(c, 99 + i, var.run, nullptr, false)
                               : check_case<__nv_bfloat16>(c, 99 + i, launch_flash_attn_fwd, var.run, true);
      print_result(var.name, r, !is_fwd);
      failures += !r.pass;
      for (int T : tune_T) {
        const int B = 32768 / T;
        FlashAttnParams p =
            bench_params(static_cast<char*>(arena.p), max_elems, B, T, 16, var.head_dim, true, ws.p);
        double ms, tf;
        if (is_fwd) {
          ms = time_it(p, var.run, nullptr, 20).fwd_ms;
          tf = fwd_flops(p) / (ms * 1e-3) / 1e12;
        } else {
          CK(launch_flash_attn_fwd(p));
          Timing t = time_it(p, launch_flash_attn_fwd, var.run, 20);
          ms = t.bwd_ms;
          tf = 2.5 * fwd_flops(p) / (ms * 1e-3) / 1e12;
        }
        std::printf("    T=%5d: %8.3f ms  %6.1f TFLOP/s\n", T, ms, tf);
        if (csv)
          std::fprintf(csv, "tune,%s,%d,%d,%d,16,1,%.4f,,,%.1f,,\n", var.name, var.head_dim, B, T,
                       is_fwd ? ms : 0.0, tf);
      }
    }
  }

  // ---------------------------------------------------------------- 3. benchmark
  const int Ts[] = {512, 1024, 2048, 4096, 8192, 16384};
  for (int pass = 1; pass <= (quick ? 1 : 2); ++pass) {  // twice: the spread between passes is the noise
    std::printf("\n== benchmark pass %d: defaults, bf16, H=16, B*T=32768 (median of 30 after warm-up)\n",
                pass);
    std::printf("%4s %6s %4s %6s | %9s %9s %9s | %7s %7s %7s TFLOP/s\n", "D", "T", "B", "causal", "fwd ms",
                "bwd ms", "f+b ms", "fwd", "bwd", "f+b");
    for (int D : {128, 64}) {
      for (int causal = 1; causal >= 0; --causal) {
        for (int T : Ts) {
          if (!causal && T != 4096 && T != 16384) continue;  // non-causal: two shapes for reference
          const int B = 32768 / T;
          FlashAttnParams p = bench_params(static_cast<char*>(arena.p), max_elems, B, T, 16, D, causal, ws.p);
          const Timing t = time_it(p, launch_flash_attn_fwd, launch_bwd, quick ? 10 : 30);
          const double f = fwd_flops(p);
          const double tf = f / (t.fwd_ms * 1e-3) / 1e12, tb = 2.5 * f / (t.bwd_ms * 1e-3) / 1e12,
                       tt = 3.5 * f / (t.total_ms * 1e-3) / 1e12;
          std::printf("%4d %6d %4d %6d | %9.3f %9.3f %9.3f | %7.1f %7.1f %7.1f\n", D, T, B, causal, t.fwd_ms,
                      t.bwd_ms, t.total_ms, tf, tb, tt);
          std::fflush(stdout);
          if (csv)
            std::fprintf(csv, "bench,default pass %d,%d,%d,%d,16,%d,%.4f,%.4f,%.4f,%.1f,%.1f,%.1f\n", pass, D,
                         B, T, causal, t.fwd_ms, t.bwd_ms, t.total_ms, tf, tb, tt);
        }
      }
    }
  }
  if (csv) std::fclose(csv);
  std::printf("\n%d passed, %d failed\n", int(cases.size()) + (quick ? 0 : nf + nb) - failures, failures);
  return failures ? 1 : 0;
}
