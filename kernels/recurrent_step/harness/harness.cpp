// Standalone test and benchmark of the one-token decode step (kernels/recurrent_step). CUDA C++, compiled
// with `nvcc -x cu` by build.sh; not part of the project's CMake build (kernels/**/*.cu are globbed into the
// library, .cpp files under kernels/ are not).
//
//   ./recurrent_step_harness out.csv [--check-only]
//
// 1. correctness: every variant x dtype (bf16, fp16, fp32) x K, V in {64, 128} x columns per block (16, 32)
//    x in place / separate / no h0, L2 normalisation on and off for the delta variants, B = 3, H = 5, with
//    padded (non-contiguous) q, k, v, o, g, beta strides. Random inputs (never zeros), o and ht poisoned with
//    NaN before the launch, a float64 CPU reference on the same (rounded) inputs, relative RMS error
//    ||out - ref|| / ||ref|| of o and ht. Fails (exit 1) past 1e-2 for 16-bit o, 1e-5 for float32 o and for
//    ht in every dtype (the state is float32 throughout; only o is rounded to the 16-bit type, whose
//    half-ulp is 2^-9 = 2e-3 for bf16, so 1e-2 leaves 5x), or on any NaN.
// 2. benchmark (after every check passed): gated_delta, bf16, H = 16, K = V = 128, B = 1 and 32, in place,
//    with and without the in-kernel L2 normalisation, 16 and 32 columns per block: the median of 200 single
//    launches timed with cudaEvents around each, the mean of 200 back-to-back launches, and the per-step time
//    of a CUDA graph of 100 captured steps (median of 20 graph launches / 100). One CSV row per measure.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/common/harness/harness_util.h"
#include "kernels/recurrent_step/params.h"

using attnlab::kernels::launch_recurrent_step;
using attnlab::kernels::recurrent_step_check;
using attnlab::kernels::recurrent_step_cols_per_block;
using attnlab::kernels::RecurrentStepParams;
using attnlab::kernels::StepDtype;
using attnlab::kernels::StepVariant;

namespace {

const char* variant_name(StepVariant v) {
  switch (v) {
    case StepVariant::kLinear:
      return "linear";
    case StepVariant::kScalarGate:
      return "scalar_gate";
    case StepVariant::kKeyGate:
      return "key_gate";
    case StepVariant::kDelta:
      return "delta";
    case StepVariant::kGatedDelta:
      return "gated_delta";
  }
  return "?";
}
const char* dtype_name(StepDtype d) {
  return d == StepDtype::kBF16 ? "bf16" : d == StepDtype::kFP16 ? "fp16" : "fp32";
}
size_t elem_bytes(StepDtype d) {
  return d == StepDtype::kFP32 ? 4 : 2;
}

// Host rounding to the element type and back (the reference sees exactly what the kernel reads).
uint16_t to_bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (inputs are finite)
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16_bits(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
// Element bytes of x in dtype d, appended to `out`; returns the value the kernel will read.
float store(StepDtype d, float x, std::vector<uint8_t>& out, size_t index) {
  if (d == StepDtype::kFP32) {
    std::memcpy(&out[index * 4], &x, 4);
    return x;
  }
  if (d == StepDtype::kBF16) {
    uint16_t b = to_bf16_bits(x);
    std::memcpy(&out[index * 2], &b, 2);
    return from_bf16_bits(b);
  }
  __half h = __float2half_rn(x);
  std::memcpy(&out[index * 2], &h, 2);
  return __half2float(h);
}
float load(StepDtype d, const std::vector<uint8_t>& in, size_t index) {
  if (d == StepDtype::kFP32) {
    float x;
    std::memcpy(&x, &in[index * 4], 4);
    return x;
  }
  uint16_t b;
  std::memcpy(&b, &in[index * 2], 2);
  if (d == StepDtype::kBF16) return from_bf16_bits(b);
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

struct Case {
  StepVariant variant;
  StepDtype dtype;
  int K, V, cols;
  bool l2norm;
  std::string state;  // "inplace" (ht = h0), "separate", "zeros" (h0 null)
};

std::string case_name(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s-%s-B3-H5-K%d-V%d-cols%d%s-%s", variant_name(c.variant),
                dtype_name(c.dtype), c.K, c.V, c.cols, c.l2norm ? "-l2norm" : "", c.state.c_str());
  return buf;
}

double rel_rms(const std::vector<double>& out, const std::vector<double>& ref, bool* nan) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) *nan = true;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// One step on the GPU against the float64 reference; true when within tolerance.
bool check_case(const Case& c, std::mt19937& rng) {
  const int B = 3, H = 5, K = c.K, V = c.V;
  const bool gated = c.variant == StepVariant::kScalarGate || c.variant == StepVariant::kKeyGate ||
                     c.variant == StepVariant::kGatedDelta;
  const bool delta = c.variant == StepVariant::kDelta || c.variant == StepVariant::kGatedDelta;
  const bool key_gate = c.variant == StepVariant::kKeyGate;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> unif(0.f, 1.f);
  // Padded layouts: every head and batch stride is larger than the packed one (odd paddings included).
  const int64_t qk_hs = K + 8, qk_bs = H * qk_hs + 3, v_hs = V + 5, v_bs = H * v_hs + 16;
  const int64_t o_hs = V + 3, o_bs = H * o_hs + 1, g_hs = key_gate ? K + 4 : 2, g_bs = H * g_hs + 1;
  const int64_t beta_hs = 3, beta_bs = H * beta_hs + 2;
  const size_t eb = elem_bytes(c.dtype);
  std::vector<uint8_t> hq(B * qk_bs * eb), hk(B * qk_bs * eb), hv(B * v_bs * eb);
  std::vector<float> hg(B * g_bs, -0.1f), hbeta(B * beta_bs, 0.5f), h0(static_cast<size_t>(B) * H * K * V);
  std::vector<double> q(B * H * K), k(B * H * K), v(B * H * V), g(B * H * K), beta(B * H);
  // k without normalisation is scaled to norm ~1 so that beta k k^T stays a contraction, as in use.
  const float k_amp = c.l2norm || !delta ? 1.f : 1.f / std::sqrt(static_cast<float>(K));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < K; ++i) {
        q[(b * H + h) * K + i] = store(c.dtype, normal(rng), hq, b * qk_bs + h * qk_hs + i);
        k[(b * H + h) * K + i] = store(c.dtype, k_amp * normal(rng), hk, b * qk_bs + h * qk_hs + i);
      }
      for (int j = 0; j < V; ++j)
        v[(b * H + h) * V + j] = store(c.dtype, normal(rng), hv, b * v_bs + h * v_hs + j);
      // Log decays in [log 0.3, log 0.999]: strong and weak heads alike; beta in (0.05, 1).
      for (int i = 0; i < (key_gate ? K : 1); ++i) {
        float gi = std::log(0.3f + 0.699f * unif(rng));
        hg[b * g_bs + h * g_hs + i] = gi;
        for (int ii = key_gate ? i : 0; ii < (key_gate ? i + 1 : K); ++ii) g[(b * H + h) * K + ii] = gi;
      }
      float bt = 0.05f + 0.95f * unif(rng);
      hbeta[b * beta_bs + h * beta_hs] = bt;
      beta[b * H + h] = bt;
    }
  for (auto& x : h0) x = 0.5f * normal(rng);
  if (c.state == "zeros") std::fill(h0.begin(), h0.end(), 0.f);

  // float64 reference.
  std::vector<double> ref_o(B * H * V), ref_s(h0.size());
  for (int bh = 0; bh < B * H; ++bh) {
    std::vector<double> qq(q.begin() + bh * K, q.begin() + (bh + 1) * K);
    std::vector<double> kk(k.begin() + bh * K, k.begin() + (bh + 1) * K);
    if (c.l2norm) {
      for (auto* x : {&qq, &kk}) {
        double ss = 0;
        for (double e : *x) ss += e * e;
        for (double& e : *x) e /= std::sqrt(ss + 1e-6);
      }
    }
    double* S = &ref_s[static_cast<size_t>(bh) * K * V];
    for (int i = 0; i < K * V; ++i) S[i] = h0[static_cast<size_t>(bh) * K * V + i];
    if (gated)
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < V; ++j) S[i * V + j] *= std::exp(g[bh * K + i]);
    std::vector<double> u(v.begin() + bh * V, v.begin() + (bh + 1) * V);
    if (delta)
      for (int j = 0; j < V; ++j) {
        double kS = 0;
        for (int i = 0; i < K; ++i) kS += kk[i] * S[i * V + j];
        u[j] = beta[bh] * (u[j] - kS);
      }
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < V; ++j) S[i * V + j] += kk[i] * u[j];
    const double scale = 1.0 / std::sqrt(static_cast<double>(K));
    for (int j = 0; j < V; ++j) {
      double o = 0;
      for (int i = 0; i < K; ++i) o += qq[i] * S[i * V + j];
      ref_o[bh * V + j] = scale * o;
    }
  }

  // GPU run: o and ht poisoned with NaN (0xff bytes: NaN in float32, bf16 and fp16).
  void *dq, *dk, *dv, *d_o;
  float *dg, *dbeta, *dh0, *dht = nullptr;
  const size_t state_bytes = h0.size() * 4, o_bytes = B * o_bs * eb;
  CK(cudaMalloc(&dq, hq.size()));
  CK(cudaMalloc(&dk, hk.size()));
  CK(cudaMalloc(&dv, hv.size()));
  CK(cudaMalloc(&d_o, o_bytes));
  CK(cudaMalloc(&dg, hg.size() * 4));
  CK(cudaMalloc(&dbeta, hbeta.size() * 4));
  CK(cudaMalloc(&dh0, state_bytes));
  CK(cudaMemcpy(dq, hq.data(), hq.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, hk.data(), hk.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, hv.data(), hv.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dg, hg.data(), hg.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dbeta, hbeta.data(), hbeta.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(d_o, 0xff, o_bytes));
  if (c.state == "inplace") {
    CK(cudaMemcpy(dh0, h0.data(), state_bytes, cudaMemcpyHostToDevice));
    dht = dh0;
  } else {
    if (c.state == "separate") CK(cudaMemcpy(dh0, h0.data(), state_bytes, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&dht, state_bytes));
    CK(cudaMemset(dht, 0xff, state_bytes));
  }

  RecurrentStepParams p;
  p.q = dq, p.k = dk, p.v = dv, p.o = d_o;
  p.g = gated ? dg : nullptr, p.beta = delta ? dbeta : nullptr;
  p.h0 = c.state == "zeros" ? nullptr : dh0, p.ht = dht;
  p.q_batch_stride = p.k_batch_stride = qk_bs, p.q_head_stride = p.k_head_stride = qk_hs;
  p.v_batch_stride = v_bs, p.v_head_stride = v_hs, p.o_batch_stride = o_bs, p.o_head_stride = o_hs;
  p.g_batch_stride = g_bs, p.g_head_stride = g_hs, p.beta_batch_stride = beta_bs,
  p.beta_head_stride = beta_hs;
  p.B = B, p.H = H, p.K = K, p.V = V;
  p.scale = 1.f / std::sqrt(static_cast<float>(K));
  p.l2norm_qk = c.l2norm, p.variant = c.variant, p.dtype = c.dtype, p.cols_per_block = c.cols;
  const char* why = recurrent_step_check(p);
  if (why[0] != '\0') {
    std::printf("FAIL %s: check: %s\n", case_name(c).c_str(), why);
    return false;
  }
  CK(launch_recurrent_step(p));
  CK(cudaDeviceSynchronize());

  std::vector<uint8_t> ho(o_bytes);
  std::vector<float> hs(h0.size());
  CK(cudaMemcpy(ho.data(), d_o, o_bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hs.data(), dht, state_bytes, cudaMemcpyDeviceToHost));
  std::vector<double> out_o(B * H * V), out_s(hs.begin(), hs.end());
  bool nan = false;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < V; ++j) out_o[(b * H + h) * V + j] = load(c.dtype, ho, b * o_bs + h * o_hs + j);
  // The padding between o's heads must stay poisoned (the kernel writes only [B, H, V]).
  for (int b = 0; b < B; ++b)
    for (int64_t j = V; j < o_hs; ++j)
      if (!std::isnan(load(c.dtype, ho, b * o_bs + j))) nan = true;  // reported as a NaN-check failure
  const double e_o = rel_rms(out_o, ref_o, &nan), e_s = rel_rms(out_s, ref_s, &nan);
  const double tol_o = c.dtype == StepDtype::kFP32 ? 1e-5 : 1e-2, tol_s = 1e-5;
  const bool ok = !nan && e_o < tol_o && e_s < tol_s;
  std::printf("%s %-58s o %.2e (tol %.0e)  ht %.2e (tol %.0e)%s\n", ok ? "ok  " : "FAIL",
              case_name(c).c_str(), e_o, tol_o, e_s, tol_s, nan ? "  NaN or padding overwritten" : "");
  for (void* ptr : {dq, dk, dv, d_o, static_cast<void*>(dg), static_cast<void*>(dbeta)}) CK(cudaFree(ptr));
  if (dht != dh0) CK(cudaFree(dht));
  CK(cudaFree(dh0));
  return ok;
}

// An invalid parameter set must be refused with a reason and cudaErrorInvalidValue, without launching.
bool check_refusals() {
  RecurrentStepParams p;
  p.B = 1, p.H = 1, p.K = 96, p.V = 64, p.scale = 1.f;
  int dummy[4];
  p.q = p.k = p.v = p.o = dummy;
  bool ok = recurrent_step_check(p)[0] != '\0' && launch_recurrent_step(p) == cudaErrorInvalidValue;
  p.K = 64, p.V = 72;  // not a multiple of 16
  ok = ok && recurrent_step_check(p)[0] != '\0';
  p.V = 64, p.variant = StepVariant::kGatedDelta;  // no g, no beta
  ok = ok && recurrent_step_check(p)[0] != '\0';
  std::printf("%s refusals (K 96, V 72, gated_delta without g / beta)\n", ok ? "ok  " : "FAIL");
  return ok;
}

struct BenchRow {
  std::string mode;
  int B, cols;
  bool l2norm;
  double us;
};

double median(std::vector<float> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

std::vector<BenchRow> bench(int B, int cols, bool l2norm) {
  const int H = 16, K = 128, V = 128;
  const size_t n_state = static_cast<size_t>(B) * H * K * V;
  void *dq, *dk, *dv, *d_o;
  float *dg, *dbeta, *ds;
  CK(cudaMalloc(&dq, B * H * K * 2));
  CK(cudaMalloc(&dk, B * H * K * 2));
  CK(cudaMalloc(&dv, B * H * V * 2));
  CK(cudaMalloc(&d_o, B * H * V * 2));
  CK(cudaMalloc(&dg, B * H * 4));
  CK(cudaMalloc(&dbeta, B * H * 4));
  CK(cudaMalloc(&ds, n_state * 4));
  // Small finite inputs (the benchmark does not check values): bf16 0x3c00 = 0.0078, g = 0, beta 0.5.
  CK(cudaMemset(dq, 0x3c, B * H * K * 2));
  CK(cudaMemset(dk, 0x3c, B * H * K * 2));
  CK(cudaMemset(dv, 0x3c, B * H * V * 2));
  CK(cudaMemset(dg, 0, B * H * 4));
  std::vector<float> half(B * H, 0.5f);
  CK(cudaMemcpy(dbeta, half.data(), B * H * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(ds, 0, n_state * 4));
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  RecurrentStepParams p;
  p.q = dq, p.k = dk, p.v = dv, p.o = d_o, p.g = dg, p.beta = dbeta, p.h0 = ds, p.ht = ds;  // in place
  p.q_batch_stride = p.k_batch_stride = H * K, p.q_head_stride = p.k_head_stride = K;
  p.v_batch_stride = p.o_batch_stride = H * V, p.v_head_stride = p.o_head_stride = V;
  p.g_batch_stride = p.beta_batch_stride = H, p.g_head_stride = p.beta_head_stride = 1;
  p.B = B, p.H = H, p.K = K, p.V = V, p.scale = 1.f / std::sqrt(128.f), p.l2norm_qk = l2norm;
  p.variant = StepVariant::kGatedDelta, p.dtype = StepDtype::kBF16, p.cols_per_block = cols;
  p.stream = stream;
  const int cols_used = recurrent_step_cols_per_block(p);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 50; ++i) CK(launch_recurrent_step(p));  // warm-up
  CK(cudaStreamSynchronize(stream));

  std::vector<BenchRow> rows;
  std::vector<float> t;
  for (int i = 0; i < 200; ++i) {  // single launches, each between two events
    CK(cudaEventRecord(e0, stream));
    CK(launch_recurrent_step(p));
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  rows.push_back({"single_launch_median", B, cols_used, l2norm, 1e3 * median(t)});

  t.clear();
  for (int rep = 0; rep < 5; ++rep) {  // back-to-back launches (what an eager decode loop queues)
    CK(cudaEventRecord(e0, stream));
    for (int i = 0; i < 200; ++i) CK(launch_recurrent_step(p));
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms / 200);
  }
  rows.push_back({"back_to_back_mean", B, cols_used, l2norm, 1e3 * median(t)});

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < 100; ++i) CK(launch_recurrent_step(p));
  CK(cudaStreamEndCapture(stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(exec, stream));
  CK(cudaStreamSynchronize(stream));
  t.clear();
  for (int rep = 0; rep < 20; ++rep) {
    CK(cudaEventRecord(e0, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms / 100);
  }
  rows.push_back({"graph_per_step_median", B, cols_used, l2norm, 1e3 * median(t)});
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaStreamDestroy(stream));
  for (void* ptr :
       {dq, dk, dv, d_o, static_cast<void*>(dg), static_cast<void*>(dbeta), static_cast<void*>(ds)})
    CK(cudaFree(ptr));
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s out.csv [--check-only]\n", argv[0]);
    return 2;
  }
  const char* csv_path = argv[1];
  const bool check_only = argc > 2 && !std::strcmp(argv[2], "--check-only");
  int dev;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);

  std::mt19937 rng(20240607);
  int failed = 0, total = 0;
  const StepVariant variants[] = {StepVariant::kLinear, StepVariant::kScalarGate, StepVariant::kKeyGate,
                                  StepVariant::kDelta, StepVariant::kGatedDelta};
  for (StepVariant var : variants)
    for (StepDtype dt : {StepDtype::kBF16, StepDtype::kFP16, StepDtype::kFP32})
      for (int K : {64, 128})
        for (int V : {64, 128})
          for (int cols : {16, 32})
            for (bool l2 : {false, true}) {
              const bool delta = var == StepVariant::kDelta || var == StepVariant::kGatedDelta;
              if (l2 && !delta) continue;
              // Every state mode on one shape per variant and dtype; in place elsewhere (the decode path).
              const bool all_modes = K == 128 && V == 64 && cols == 16;
              for (const char* st : {"inplace", "separate", "zeros"}) {
                if (!all_modes && std::strcmp(st, "inplace") != 0) continue;
                ++total;
                if (!check_case({var, dt, K, V, cols, l2, st}, rng)) ++failed;
              }
            }
  ++total;
  if (!check_refusals()) ++failed;
  std::printf("%d / %d checks passed\n", total - failed, total);
  if (failed) {
    std::printf("FAILED: no benchmark\n");
    return 1;
  }
  if (check_only) return 0;

  std::FILE* csv = std::fopen(csv_path, "w");
  if (!csv) {
    std::fprintf(stderr, "cannot write %s\n", csv_path);
    return 2;
  }
  // cols_requested 0: the launcher's own choice (the library's path), which cols_per_block reports.
  std::fprintf(csv,
               "variant,dtype,B,H,K,V,cols_requested,cols_per_block,l2norm_qk,mode,us_per_step,state_GBps\n");
  std::printf("\ngated_delta step, bf16, H=16, K=V=128, in place (state read + written: GB/s)\n");
  std::printf("%-4s %-5s %-7s %-24s %10s %10s\n", "B", "cols", "l2norm", "mode", "us/step", "GB/s");
  for (int B : {1, 32})
    for (bool l2 : {false, true})
      for (int cols : {0, 16, 32})
        for (const auto& r : bench(B, cols, l2)) {
          const double gbps = 2.0 * B * 16 * 128 * 128 * 4 / (r.us * 1e3);
          const char* cols_name = cols == 0 ? "auto" : "";
          std::printf("%-4d %-2d%-3s %-7s %-24s %10.2f %10.0f\n", r.B, r.cols, cols_name, l2 ? "yes" : "no",
                      r.mode.c_str(), r.us, gbps);
          std::fprintf(csv, "gated_delta,bf16,%d,16,128,128,%d,%d,%d,%s,%.3f,%.1f\n", r.B, cols, r.cols,
                       l2 ? 1 : 0, r.mode.c_str(), r.us, gbps);
        }
  std::fclose(csv);
  std::printf("wrote %s\n", csv_path);
  return 0;
}
