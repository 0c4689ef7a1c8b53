// Op benchmarks: random inputs, validation against a peer, CUDA-event timing, CSV and table output.
#include "attnlab/bench/op_bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#ifdef ATTNLAB_WITH_CUDA
#include <cuda_runtime.h>

#include "attnlab/ops/cuda/flash_attn.h"
#include "attnlab/ops/cuda/info.h"
#endif

namespace attnlab::bench {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void require_cuda(const char* what) {
  ATTNLAB_CHECK(
      torch::cuda::is_available(),
      "{}: needs a CUDA GPU; this machine has none (torch::cuda::is_available() is false, libtorch {})", what,
      compat::torch_version());
#ifndef ATTNLAB_WITH_CUDA
  fail("{}: this build has no CUDA kernels (no CUDA compiler when it was configured); rebuild with nvcc",
       what);
#endif
}

[[maybe_unused]] std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

std::string csv_cell(double x, const char* spec) {
  if (!std::isfinite(x)) return "";
  return fmt::format(fmt::runtime(spec), x);
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c == '\n' ? ' ' : c);
  return out + "\"";
}

#ifdef ATTNLAB_WITH_CUDA

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    fail("bench: {} failed: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

// Tolerances between two 16-bit implementations. Each sits at 1.2-1.5x the storage floor of the float32
// truth (docs/kernels.md: bf16 ~2.5e-3, fp16 ~3e-4), so two of them differ by about sqrt(2) times that;
// these bounds (the kernel harness's) leave 3x room and stay far below a wrong mask or scale (> 1e-1).
struct Tol {
  double o, grad;
};
Tol tolerance(const std::string& dtype) {
  return dtype == "bf16" ? Tol{1e-2, 2e-2} : Tol{4e-3, 8e-3};
}

// rms(a - b) / rms(b) on the GPU in float32 (the tensors reach 100s of MB; ops::rel_rms_error copies to
// the CPU in float64).
double rel_rms(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.detach().to(torch::kFloat), y = b.detach().to(torch::kFloat);
  double num = (x - y).pow(2).mean().sqrt().item<double>();
  double den = y.pow(2).mean().sqrt().item<double>();
  if (!std::isfinite(num)) return std::numeric_limits<double>::infinity();
  return den > 0 ? num / den : num;
}

// One implementation of an op in its own native layout, so that no layout copy is timed.
struct Impl {
  std::string name;
  std::function<torch::Tensor(const torch::Tensor&)> prepare;  // [B, T, H, D] -> native (a copy or itself)
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)> run;
  std::function<torch::Tensor(const torch::Tensor&)> to_bthd;  // native -> [B, T, H, D] view
};

std::vector<Impl> softmax_impls(double scale, bool causal) {
  auto same = [](const torch::Tensor& x) { return x; };
  std::vector<Impl> impls;
  // Ours reads [B, T, H, D] (the model's layout) directly.
  impls.push_back({"ours", same,
                   [=](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
                     return ops::cuda::flash_attn_forward(q, k, v, {scale, causal, 0});
                   },
                   same});
  // SDPA gets contiguous [B, H, T, D], its native layout. Its backward is the op the forward chose, so the
  // backend scope needs to cover only the forward.
  for (auto backend : {compat::SdpaBackend::flash, compat::SdpaBackend::cudnn}) {
    impls.push_back({std::string("sdpa_") + compat::sdpa_backend_name(backend),
                     [](const torch::Tensor& x) { return x.transpose(1, 2).contiguous(); },
                     [=](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
                       if (!compat::can_select_sdpa_backend(backend))
                         fail("SDPA's {} backend cannot be selected in libtorch {}",
                              compat::sdpa_backend_name(backend), compat::torch_version());
                       compat::SdpaBackendScope only(backend);
                       auto o = compat::sdpa(q, k, v, std::nullopt, causal, scale);
                       if (!o)
                         fail("at::scaled_dot_product_attention is not in libtorch {}",
                              compat::torch_version());
                       return *o;
                     },
                     [](const torch::Tensor& x) { return x.transpose(1, 2); }});
  }
  return impls;
}

struct Outputs {
  torch::Tensor o, dq, dk, dv;  // [B, T, H, D] views
  std::string error;            // why the implementation could not run
};

// Forward and the gradients of sum(o * dout) for one implementation; errors become Outputs::error.
Outputs run_once(const Impl& impl, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                 const torch::Tensor& dout) {
  Outputs out;
  try {
    auto qn = impl.prepare(q).detach().requires_grad_(true);
    auto kn = impl.prepare(k).detach().requires_grad_(true);
    auto vn = impl.prepare(v).detach().requires_grad_(true);
    auto o = impl.run(qn, kn, vn);
    auto d = torch::empty_like(o);  // the upstream gradient in o's own layout
    impl.to_bthd(d).copy_(dout);
    auto g = torch::autograd::grad({o}, {qn, kn, vn}, {d});
    out.o = impl.to_bthd(o).detach(), out.dq = impl.to_bthd(g[0]), out.dk = impl.to_bthd(g[1]);
    out.dv = impl.to_bthd(g[2]);
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a validation run");
  } catch (const c10::Error& e) {
    out.error = first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    out.error = first_line(e.what());
  }
  return out;
}

// Times the forward (no autograd) and forward + backward of one implementation into `row`.
void time_impl(const Impl& impl, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
               const torch::Tensor& dout, const OpBenchConfig& cfg, OpBenchRow& row) {
  auto qn = impl.prepare(q), kn = impl.prepare(k), vn = impl.prepare(v);
  {
    torch::NoGradGuard no_grad;
    row.fwd_ms = time_cuda_ms([&] { (void)impl.run(qn, kn, vn); }, cfg.warmup, cfg.repeat);
  }
  auto qg = qn.detach().requires_grad_(true), kg = kn.detach().requires_grad_(true);
  auto vg = vn.detach().requires_grad_(true);
  torch::Tensor d;
  {
    torch::NoGradGuard no_grad;
    d = torch::empty_like(impl.run(qn, kn, vn));
    impl.to_bthd(d).copy_(dout);
  }
  // torch::autograd::grad rather than backward(): no accumulation into .grad is timed.
  row.fwdbwd_ms = time_cuda_ms(
      [&] {
        auto o = impl.run(qg, kg, vg);
        (void)torch::autograd::grad({o}, {qg, kg, vg}, {d});
      },
      cfg.warmup, cfg.repeat);
}

std::vector<OpBenchRow> bench_softmax_shape(const OpBenchConfig& cfg, int64_t D, int64_t T) {
  const int64_t B = cfg.tokens / T, H = cfg.heads;
  auto dt = cfg.dtype == "bf16" ? torch::kBFloat16 : torch::kHalf;
  auto opts = torch::TensorOptions().dtype(dt).device(torch::kCUDA);
  // Random normal inputs (never zeros): scores q.k * D^-0.5 ~ N(0, 1), a realistic softmax.
  auto q = torch::randn({B, T, H, D}, opts), k = torch::randn({B, T, H, D}, opts);
  auto v = torch::randn({B, T, H, D}, opts), dout = torch::randn({B, T, H, D}, opts);
  double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto impls = softmax_impls(scale, cfg.causal);
  const double flops = softmax_fwd_flops(B, H, T, D, cfg.causal);

  std::vector<OpBenchRow> rows(impls.size());
  std::vector<Outputs> outs;
  for (const auto& impl : impls) outs.push_back(run_once(impl, q, k, v, dout));
  // Reference: the first peer that ran (SDPA flash); that peer itself is checked against ours.
  int ref = -1;
  for (size_t i = 1; i < impls.size() && ref < 0; ++i)
    if (outs[i].error.empty()) ref = static_cast<int>(i);
  Tol tol = tolerance(cfg.dtype);
  for (size_t i = 0; i < impls.size(); ++i) {
    auto& r = rows[i];
    r.op = "softmax", r.impl = impls[i].name, r.dtype = cfg.dtype, r.B = B, r.T = T, r.H = H, r.D = D;
    r.causal = cfg.causal;
    r.fwd_ms = r.fwdbwd_ms = r.fwd_tflops = r.fwdbwd_tflops = r.ratio_fwd = r.ratio_fwdbwd = kNaN;
    r.err_o = r.err_dq = r.err_dk = r.err_dv = kNaN;
    if (!outs[i].error.empty()) {
      r.note = "unavailable: " + outs[i].error;
      continue;
    }
    int against = static_cast<int>(i) == ref ? (outs[0].error.empty() ? 0 : -1) : ref;
    if (against >= 0) {
      const auto& a = outs[i];
      const auto& b = outs[static_cast<size_t>(against)];
      r.ref = impls[static_cast<size_t>(against)].name;
      r.err_o = rel_rms(a.o, b.o), r.err_dq = rel_rms(a.dq, b.dq);
      r.err_dk = rel_rms(a.dk, b.dk), r.err_dv = rel_rms(a.dv, b.dv);
      if (!(r.err_o <= tol.o && r.err_dq <= tol.grad && r.err_dk <= tol.grad && r.err_dv <= tol.grad))
        r.note = fmt::format("MISMATCH: against {} beyond tolerance (o {:.0e}, gradients {:.0e})", r.ref,
                             tol.o, tol.grad);
    }
  }
  outs.clear();  // free the validation tensors before timing

  for (size_t i = 0; i < impls.size(); ++i) {
    auto& r = rows[i];
    if (r.note.rfind("unavailable", 0) == 0) continue;
    try {
      time_impl(impls[i], q, k, v, dout, cfg, r);
      r.fwd_tflops = flops / (r.fwd_ms * 1e-3) / 1e12;
      r.fwdbwd_tflops = 3.5 * flops / (r.fwdbwd_ms * 1e-3) / 1e12;
    } catch (const c10::Error& e) {
      r.note = "unavailable: " + first_line(e.what_without_backtrace());
    } catch (const Error& e) {
      r.note = "unavailable: " + first_line(e.what());
    }
  }
  for (auto& r : rows) {
    r.ratio_fwd = rows[0].fwd_tflops / r.fwd_tflops;
    r.ratio_fwdbwd = rows[0].fwdbwd_tflops / r.fwdbwd_tflops;
  }
  return rows;
}

#endif  // ATTNLAB_WITH_CUDA

void check_config(const OpBenchConfig& c) {
  const char* w = "bench ops";
  ATTNLAB_CHECK(!c.ops.empty(), "{}: --ops is empty; known: softmax", w);
  for (const auto& op : c.ops) ATTNLAB_CHECK(op == "softmax", "{}: unknown op '{}'; known: softmax", w, op);
  ATTNLAB_CHECK(c.dtype == "bf16" || c.dtype == "fp16", "{}: --dtype must be bf16 or fp16, got '{}'", w,
                c.dtype);
  ATTNLAB_CHECK(!c.head_dims.empty() && !c.seq_lens.empty(),
                "{}: --head-dims and --seq-lens must be non-empty", w);
  for (auto d : c.head_dims) ATTNLAB_CHECK(d > 0, "{}: head dims must be > 0, got {}", w, d);
  ATTNLAB_CHECK(c.tokens > 0 && c.heads > 0, "{}: --tokens and --heads must be > 0, got {} and {}", w,
                c.tokens, c.heads);
  for (auto t : c.seq_lens)
    ATTNLAB_CHECK(t > 0 && t <= c.tokens && c.tokens % t == 0,
                  "{}: every sequence length must divide --tokens {} (B = tokens / T), got {}", w, c.tokens,
                  t);
  ATTNLAB_CHECK(c.warmup >= 0 && c.repeat >= 1, "{}: --warmup must be >= 0 and --repeat >= 1, got {} and {}",
                w, c.warmup, c.repeat);
}

}  // namespace

double softmax_fwd_flops(int64_t B, int64_t H, int64_t T, int64_t D, bool causal) {
  double f = 4.0 * static_cast<double>(B) * static_cast<double>(H) * static_cast<double>(T) *
             static_cast<double>(T) * static_cast<double>(D);
  return causal ? f / 2 : f;
}

double time_cuda_ms(const std::function<void()>& fn, int warmup, int repeat) {
  require_cuda("time_cuda_ms");
  ATTNLAB_CHECK(repeat >= 1, "time_cuda_ms: repeat must be >= 1, got {}", repeat);
#ifdef ATTNLAB_WITH_CUDA
  cudaEvent_t start = nullptr, stop = nullptr;
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  struct Destroy {
    cudaEvent_t a, b;
    ~Destroy() { (void)cudaEventDestroy(a), (void)cudaEventDestroy(b); }
  } destroy{start, stop};
  for (int i = 0; i < warmup; ++i) fn();
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the warm-up");
  std::vector<double> ms;
  for (int i = 0; i < repeat; ++i) {
    // nullptr: the legacy default stream, where PyTorch (and our binding) launch unless told otherwise.
    check_cuda(cudaEventRecord(start, nullptr), "cudaEventRecord");
    fn();
    check_cuda(cudaEventRecord(stop, nullptr), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0;
    check_cuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<std::ptrdiff_t>(ms.size() / 2), ms.end());
  double hi = ms[ms.size() / 2];
  if (ms.size() % 2 == 1) return hi;
  return (hi + *std::max_element(ms.begin(), ms.begin() + static_cast<std::ptrdiff_t>(ms.size() / 2))) / 2;
#else
  (void)fn, (void)warmup;
  return kNaN;
#endif
}

std::string cuda_device_description() {
  require_cuda("cuda_device_description");
#ifdef ATTNLAB_WITH_CUDA
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  auto names = ops::cuda::gpu_names();
  ATTNLAB_CHECK(device < static_cast<int>(names.size()), "bench: device {} not among the {} listed", device,
                names.size());
  return names[static_cast<size_t>(device)];
#else
  return "";
#endif
}

std::vector<OpBenchRow> run_op_bench(const OpBenchConfig& cfg,
                                     const std::function<void(const OpBenchRow&)>& on_row) {
  require_cuda("bench ops");
  check_config(cfg);
  std::vector<OpBenchRow> rows;
#ifdef ATTNLAB_WITH_CUDA
  torch::manual_seed(cfg.seed);
  for (const auto& op : cfg.ops) {
    (void)op;  // softmax is the only op so far (check_config)
    for (auto D : cfg.head_dims)
      for (auto T : cfg.seq_lens)
        for (auto& r : bench_softmax_shape(cfg, D, T)) {
          if (on_row) on_row(r);
          rows.push_back(std::move(r));
        }
  }
#else
  (void)on_row;
#endif
  return rows;
}

bool any_mismatch(const std::vector<OpBenchRow>& rows) {
  return std::any_of(rows.begin(), rows.end(),
                     [](const OpBenchRow& r) { return r.note.rfind("MISMATCH", 0) == 0; });
}

std::string op_bench_csv(const std::vector<OpBenchRow>& rows, const std::vector<std::string>& comments) {
  std::ostringstream out;
  for (const auto& c : comments) out << "# " << c << "\n";
  out << "op,impl,dtype,B,T,H,D,causal,fwd_ms,fwdbwd_ms,fwd_tflops,fwdbwd_tflops,ratio_fwd,ratio_fwdbwd,ref,"
         "err_o,err_dq,err_dk,err_dv,note\n";
  for (const auto& r : rows)
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", r.op, r.impl, r.dtype,
                       r.B, r.T, r.H, r.D, r.causal ? 1 : 0, csv_cell(r.fwd_ms, "{:.4f}"),
                       csv_cell(r.fwdbwd_ms, "{:.4f}"), csv_cell(r.fwd_tflops, "{:.1f}"),
                       csv_cell(r.fwdbwd_tflops, "{:.1f}"), csv_cell(r.ratio_fwd, "{:.3f}"),
                       csv_cell(r.ratio_fwdbwd, "{:.3f}"), r.ref, csv_cell(r.err_o, "{:.3e}"),
                       csv_cell(r.err_dq, "{:.3e}"), csv_cell(r.err_dk, "{:.3e}"),
                       csv_cell(r.err_dv, "{:.3e}"), csv_quote(r.note));
  return out.str();
}

std::string op_bench_table(const std::vector<OpBenchRow>& rows, bool header) {
  auto num = [](double x, const char* spec) {
    return std::isfinite(x) ? fmt::format(fmt::runtime(spec), x) : "-";
  };
  std::string out;
  if (header) {
    out += fmt::format(
        "{:<8} {:>4} {:>6} {:>4} {:<11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:<11} {:>8} {:>8} {:>8} {:>8}  "
        "{}\n",
        "op", "D", "T", "B", "impl", "fwd ms", "TFLOP/s", "f+b ms", "TFLOP/s", "ours/x", "ours/x",
        "errors vs", "o", "dq", "dk", "dv", "note");
    out += fmt::format("{:<8} {:>4} {:>6} {:>4} {:<11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n", "", "", "", "",
                       "", "", "fwd", "", "f+b", "fwd", "f+b");
  }
  for (const auto& r : rows)
    out += fmt::format(
        "{:<8} {:>4} {:>6} {:>4} {:<11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:<11} {:>8} {:>8} {:>8} {:>8}  "
        "{}\n",
        r.op, r.D, r.T, r.B, r.impl, num(r.fwd_ms, "{:.3f}"), num(r.fwd_tflops, "{:.1f}"),
        num(r.fwdbwd_ms, "{:.3f}"), num(r.fwdbwd_tflops, "{:.1f}"), num(r.ratio_fwd, "{:.2f}"),
        num(r.ratio_fwdbwd, "{:.2f}"), r.ref.empty() ? "-" : r.ref, num(r.err_o, "{:.1e}"),
        num(r.err_dq, "{:.1e}"), num(r.err_dk, "{:.1e}"), num(r.err_dv, "{:.1e}"), r.note);
  return out;
}

}  // namespace attnlab::bench
