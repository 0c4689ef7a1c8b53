// Op benchmarks: random inputs, validation against a peer, CUDA-event timing, CSV and table output.
#include "attnlab/bench/op_bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <tuple>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/ops/delta_rule.h"
#include "attnlab/ops/gla.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/recurrent.h"
#include "attnlab/ops/simple_gla.h"
#include "attnlab/study/measure.h"
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

// ---- the linear family: our CUDA kernel (Impl::kernel) and our libtorch chunk form (Impl::chunk) through
// the op API, validated against the chunk form on float32 copies, beside FLA's times (bench/fla_bench.py).

struct LinearSpec {
  std::string name;
  int gate = 0;       // 0: none, 1: one log decay per head and step [B,T,H], 2: per key channel [B,T,H,K]
  bool beta = false;  // the delta rule's step size [B,T,H]; q is unit-norm too (FLA's tests)
  std::function<ops::RecurrentOut(const ops::RecurrentArgs&, ops::Impl)> fn;
};

const LinearSpec& linear_spec(const std::string& op) {
  static const std::vector<LinearSpec> specs = {
      {"linear_attention", 0, false,
       [](const ops::RecurrentArgs& a, ops::Impl i) { return ops::linear_attention(a, i); }},
      {"simple_gla", 1, false,
       [](const ops::RecurrentArgs& a, ops::Impl i) { return ops::simple_gla(a, i); }},
      {"gla", 2, false, [](const ops::RecurrentArgs& a, ops::Impl i) { return ops::gla(a, i); }},
      {"delta_rule", 0, true, [](const ops::RecurrentArgs& a, ops::Impl i) { return ops::delta_rule(a, i); }},
      {"gated_delta_rule", 1, true,
       [](const ops::RecurrentArgs& a, ops::Impl i) { return ops::gated_delta_rule(a, i); }},
  };
  for (const auto& s : specs)
    if (s.name == op) return s;
  fail("bench ops: '{}' is not an op of the linear family", op);
}

// The inputs of one shape, as bench/fla_bench.py draws them (FLA's tests): q, k ~ N(0, 1) with k (and q for
// the delta rule) unit-norm, v ~ N(0, 1), log gates logsigmoid(N(0, 1)) / 16 in float32, beta sigmoid(N(0,
// 1)).
struct LinearInputs {
  torch::Tensor q, k, v, g, beta, dout;
};

LinearInputs linear_inputs(const LinearSpec& spec, int64_t B, int64_t T, int64_t H, int64_t D,
                           torch::ScalarType dt) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
  LinearInputs x;
  x.q = torch::randn({B, T, H, D}, f32).to(dt);
  x.k = ops::l2_normalize(torch::randn({B, T, H, D}, f32)).to(dt);
  x.v = torch::randn({B, T, H, D}, f32).to(dt);
  if (spec.beta) x.q = ops::l2_normalize(x.q.to(torch::kFloat)).to(dt);
  if (spec.gate == 1) x.g = torch::log_sigmoid(torch::randn({B, T, H}, f32)) / 16;
  if (spec.gate == 2) x.g = torch::log_sigmoid(torch::randn({B, T, H, D}, f32)) / 16;
  if (spec.beta) x.beta = torch::sigmoid(torch::randn({B, T, H}, f32)).to(dt);
  x.dout = torch::randn({B, T, H, D}, f32).to(dt);
  return x;
}

int64_t bytes_of(const torch::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

// Args whose tensors are fresh leaves (requires_grad when `grad`), in `dt` (undefined: as given; gates stay
// float32 either way), and the leaves in the order q, k, v, g, beta, h0.
struct Leaves {
  ops::RecurrentArgs args;
  std::vector<torch::Tensor> list;
};

Leaves make_leaves(const LinearInputs& x, const torch::Tensor& h0, bool final_state, bool grad,
                   std::optional<torch::ScalarType> dt = std::nullopt) {
  Leaves l;
  auto leaf = [&](const torch::Tensor& t, bool cast) {
    if (!t.defined()) return t;
    auto u = (cast && dt) ? t.to(*dt) : t;
    u = u.detach();
    if (grad) {
      u.requires_grad_(true);
      l.list.push_back(u);
    }
    return u;
  };
  l.args.q = leaf(x.q, true), l.args.k = leaf(x.k, true), l.args.v = leaf(x.v, true);
  l.args.g = leaf(x.g, false), l.args.beta = leaf(x.beta, true), l.args.h0 = leaf(h0, false);
  l.args.output_final_state = final_state;
  return l;
}

// A 256 MiB buffer zeroed before each timed run, as triton.testing.do_bench does (FLA's side): no run finds
// the previous run's data in L2.
struct L2Flush {
  torch::Tensor buf =
      torch::empty({256 << 20}, torch::TensorOptions().dtype(torch::kByte).device(torch::kCUDA));
  void operator()() { buf.zero_(); }
};

struct Grads {
  torch::Tensor o, ht, dq, dk, dv, dg, dbeta, dh0;
  std::string error;
};

// o, ht and the gradients of sum(o * dout) + sum(ht * dht) in q, k, v, g, beta, h0.
Grads run_grads(const LinearSpec& spec, ops::Impl impl, const LinearInputs& x, const torch::Tensor& h0,
                const torch::Tensor& dht, std::optional<torch::ScalarType> dt) {
  Grads r;
  try {
    auto l = make_leaves(x, h0, /*final_state=*/true, /*grad=*/true, dt);
    auto out = spec.fn(l.args, impl);
    ATTNLAB_CHECK(out.ht.defined(), "{}: no final state returned with output_final_state", spec.name);
    auto g = torch::autograd::grad({out.o, out.ht}, l.list,
                                   {x.dout.to(out.o.scalar_type()), dht.to(out.ht.scalar_type())},
                                   /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
    size_t i = 0;
    r.o = out.o.detach(), r.ht = out.ht.detach();
    r.dq = g[i++], r.dk = g[i++], r.dv = g[i++];
    if (x.g.defined()) r.dg = g[i++];
    if (x.beta.defined()) r.dbeta = g[i++];
    if (h0.defined()) r.dh0 = g[i++];
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a validation run");
  } catch (const c10::Error& e) {
    r.error = first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    r.error = first_line(e.what());
  }
  return r;
}

// rel_rms, or NaN when the reference has no such tensor; a gradient missing on one side only is infinite.
double rel_rms_or_nan(const torch::Tensor& a, const torch::Tensor& ref) {
  if (!ref.defined()) return kNaN;
  if (!a.defined()) return std::numeric_limits<double>::infinity();
  return rel_rms(a, ref);
}

std::string error_note(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return first_line(c->what_without_backtrace());
  return first_line(e.what());
}

// Times forward (no autograd) and forward + backward (gradients of sum(o * dout) in every input) of one
// implementation with h0 none, then the peak bytes of one forward + backward (MemoryMeter, the caching
// allocator's tensors) plus the bytes of its inputs (q, k, v, gates, do), like FLA's max_memory_allocated.
void time_linear(const LinearSpec& spec, ops::Impl impl, const LinearInputs& x, int warmup, int repeat,
                 OpBenchRow& row) {
  L2Flush flush;
  {
    torch::NoGradGuard no_grad;
    auto l = make_leaves(x, {}, false, false);
    row.fwd_ms = time_cuda_ms([&] { (void)spec.fn(l.args, impl); }, warmup, repeat, std::ref(flush));
  }
  auto l = make_leaves(x, {}, false, true);
  auto step = [&] {
    auto out = spec.fn(l.args, impl);
    (void)torch::autograd::grad({out.o}, l.list, {x.dout}, false, false, /*allow_unused=*/true);
  };
  row.fwdbwd_ms = time_cuda_ms(step, warmup, repeat, std::ref(flush));
  flush.buf = torch::Tensor();
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize before the memory run");
  int64_t peak = 0;
  {
    study::MemoryMeter meter;
    step();
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the memory run");
    peak = meter.peak_bytes();
  }
  int64_t inputs =
      bytes_of(x.q) + bytes_of(x.k) + bytes_of(x.v) + bytes_of(x.g) + bytes_of(x.beta) + bytes_of(x.dout);
  row.peak_mib = static_cast<double>(peak + inputs) / (1 << 20);
}

OpBenchRow linear_row(const OpBenchConfig& cfg, const std::string& op, const char* impl, int64_t B, int64_t T,
                      int64_t D) {
  OpBenchRow r;
  r.op = op, r.impl = impl, r.dtype = cfg.dtype, r.B = B, r.T = T, r.H = cfg.heads, r.D = D, r.causal = true;
  r.fwd_ms = r.fwdbwd_ms = r.fwd_tflops = r.fwdbwd_tflops = r.ratio_fwd = r.ratio_fwdbwd = kNaN;
  r.err_o = r.err_dq = r.err_dk = r.err_dv = kNaN;
  r.bandwidth_gbs = cfg.bandwidth_gbs;
  return r;
}

std::vector<OpBenchRow> bench_linear_shape(const OpBenchConfig& cfg, const LinearSpec& spec, int64_t D,
                                           int64_t T) {
  const int64_t B = cfg.tokens / T, H = cfg.heads;
  auto dt = cfg.dtype == "bf16" ? torch::kBFloat16 : torch::kHalf;
  auto x = linear_inputs(spec, B, T, H, D, dt);
  std::vector<OpBenchRow> rows = {linear_row(cfg, spec.name, "kernel", B, T, D),
                                  linear_row(cfg, spec.name, "chunk", B, T, D)};
  // The memory floor: q, k, v read and o written; fwd+bwd adds do read and dq, dk, dv written.
  const double tensor = static_cast<double>(bytes_of(x.q)), bw = cfg.bandwidth_gbs * 1e9;
  for (auto& r : rows) r.floor_ms = 4 * tensor / bw * 1e3, r.floor_fwdbwd_ms = 8 * tensor / bw * 1e3;

  // Validation: the kernel against the chunk form on float32 copies, with an initial state and the final
  // state's gradient in play (h0, dht ~ N(0, 1)).
  {
    auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA);
    auto h0 = torch::randn({B, H, D, D}, f32), dht = torch::randn({B, H, D, D}, f32);
    auto got = run_grads(spec, ops::Impl::kernel, x, h0, dht, std::nullopt);
    std::string ref_name = "chunk_f32";
    if (!got.error.empty()) {  // a kernel that takes no initial state (yet) is still checked and timed
      auto without = run_grads(spec, ops::Impl::kernel, x, torch::Tensor(), dht, std::nullopt);
      if (without.error.empty()) got = std::move(without), h0 = torch::Tensor(), ref_name = "chunk_f32_no_h0";
    }
    auto& k = rows[0];
    if (!got.error.empty()) {
      k.note = "unavailable: " + got.error;
    } else {
      auto ref = run_grads(spec, ops::Impl::chunk, x, h0, dht, torch::kFloat);
      if (!ref.error.empty()) {
        k.note = "reference failed: chunk form in float32: " + ref.error;
      } else {
        k.ref = ref_name;
        k.err_o = rel_rms(got.o, ref.o), k.err_ht = rel_rms(got.ht, ref.ht);
        k.err_dq = rel_rms(got.dq, ref.dq), k.err_dk = rel_rms(got.dk, ref.dk),
        k.err_dv = rel_rms(got.dv, ref.dv);
        k.err_dg = rel_rms_or_nan(got.dg, ref.dg), k.err_dbeta = rel_rms_or_nan(got.dbeta, ref.dbeta);
        k.err_dh0 = rel_rms_or_nan(got.dh0, ref.dh0);
        const double tol = cfg.dtype == "bf16" ? 2e-2 : 1e-2;
        bool ok = true;
        for (double e : {k.err_o, k.err_ht, k.err_dq, k.err_dk, k.err_dv}) ok = ok && e <= tol;
        for (double e : {k.err_dg, k.err_dbeta, k.err_dh0}) ok = ok && (std::isnan(e) || e <= tol);
        if (!ok) k.note = fmt::format("MISMATCH: against the chunk form in float32 beyond {:.0e}", tol);
      }
    }
  }
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after validation");

  for (size_t i = 0; i < rows.size(); ++i) {
    auto& r = rows[i];
    if (r.note.rfind("unavailable", 0) == 0) continue;
    const bool chunk = i == 1;
    if (chunk && cfg.chunk_repeat <= 0) {
      r.note = "not timed (--chunk-repeat 0)";
      continue;
    }
    try {
      time_linear(spec, chunk ? ops::Impl::chunk : ops::Impl::kernel, x, chunk ? 1 : cfg.warmup,
                  chunk ? cfg.chunk_repeat : cfg.repeat, r);
    } catch (const std::exception& e) {
      // A MISMATCH found before stays first in the note (any_mismatch reads its start).
      auto msg = (study::is_oom(e) ? "OOM in timing: " : "unavailable in timing: ") + error_note(e);
      r.note = r.note.empty() ? msg : r.note + "; " + msg;
    }
  }
  return rows;
}

// One token of Gated DeltaNet's decode through ops::gated_delta_rule: T = 1, h0 given, the final state out,
// no autograd. Every implementation is checked against the naive form on float32 copies (o, ht).
std::vector<OpBenchRow> bench_decode_step(const OpBenchConfig& cfg, int64_t B) {
  const int64_t H = cfg.heads, D = cfg.decode_dim;
  auto dt = cfg.dtype == "bf16" ? torch::kBFloat16 : torch::kHalf;
  const LinearSpec spec = linear_spec("gated_delta_rule");  // a copy: GCC 13 warns of a reference here
  auto x = linear_inputs(spec, B, 1, H, D, dt);
  auto h0 = torch::randn({B, H, D, D}, torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA));
  torch::NoGradGuard no_grad;
  ops::RecurrentOut ref;
  std::string ref_error;
  try {
    auto l = make_leaves(x, h0.clone(), true, false, torch::kFloat);
    ref = spec.fn(l.args, ops::Impl::naive);
  } catch (const std::exception& e) {
    ref_error = error_note(e);
  }
  std::vector<OpBenchRow> rows;
  const std::pair<const char*, ops::Impl> impls[] = {
      {"kernel", ops::Impl::kernel}, {"chunk", ops::Impl::chunk}, {"naive", ops::Impl::naive}};
  for (const auto& [name, impl] : impls) {
    auto r = linear_row(cfg, "gated_delta_rule_step", name, B, 1, D);
    // The floor of one step: the state read and written (float32), q, k, v read and o written.
    r.floor_ms = (2.0 * static_cast<double>(bytes_of(h0)) + 4.0 * static_cast<double>(bytes_of(x.q))) /
                 (cfg.bandwidth_gbs * 1e9) * 1e3;
    try {
      auto l =
          make_leaves(x, h0.clone(), true, false);  // its own h0: no implementation sees another's writes
      auto out = spec.fn(l.args, impl);
      if (ref_error.empty()) {
        r.ref = "naive_f32", r.err_o = rel_rms(out.o, ref.o), r.err_ht = rel_rms(out.ht, ref.ht);
        const double tol = cfg.dtype == "bf16" ? 2e-2 : 1e-2;
        if (!(r.err_o <= tol && r.err_ht <= tol))
          r.note = fmt::format("MISMATCH: against the naive form in float32 beyond {:.0e}", tol);
      }
      L2Flush flush;
      r.fwd_ms = time_cuda_ms([&] { (void)spec.fn(l.args, impl); }, std::max(cfg.warmup, 10),
                              std::max(cfg.repeat, 100), std::ref(flush));
    } catch (const std::exception& e) {
      r.note = "unavailable: " + error_note(e);
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

#endif  // ATTNLAB_WITH_CUDA

// A CSV line split into cells (RFC 4180 quoting, as Python's csv module writes it).
std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cells.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      cells.emplace_back();
    } else if (c != '\r') {
      cells.back() += c;
    }
  }
  return cells;
}

double cell_number(const std::string& s) {
  if (s.empty()) return kNaN;
  try {
    size_t used = 0;
    double x = std::stod(s, &used);
    return used == s.size() ? x : kNaN;
  } catch (const std::exception&) {
    return kNaN;
  }
}

void check_config(const OpBenchConfig& c) {
  const char* w = "bench ops";
  const auto& known = op_bench_known_ops();
  ATTNLAB_CHECK(!c.ops.empty(), "{}: --ops is empty; known: {}", w, fmt::join(known, ","));
  for (const auto& op : c.ops)
    ATTNLAB_CHECK(std::find(known.begin(), known.end(), op) != known.end(), "{}: unknown op '{}'; known: {}",
                  w, op, fmt::join(known, ","));
  ATTNLAB_CHECK(c.bandwidth_gbs > 0, "{}: --bandwidth-gbs must be > 0, got {}", w, c.bandwidth_gbs);
  ATTNLAB_CHECK(c.chunk_repeat >= 0, "{}: --chunk-repeat must be >= 0, got {}", w, c.chunk_repeat);
  ATTNLAB_CHECK(c.decode_dim > 0, "{}: --decode-dim must be > 0, got {}", w, c.decode_dim);
  for (auto b : c.decode_batches) ATTNLAB_CHECK(b > 0, "{}: decode batches must be > 0, got {}", w, b);
  if (!c.fla_csv.empty())
    ATTNLAB_CHECK(std::ifstream(c.fla_csv).good(), "{}: --fla-csv {}: cannot read the file", w, c.fla_csv);
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

double time_cuda_ms(const std::function<void()>& fn, int warmup, int repeat,
                    const std::function<void()>& before_each) {
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
    if (before_each) before_each();
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
  (void)fn, (void)warmup, (void)before_each;
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
  auto emit = [&](std::vector<OpBenchRow> done) {
    if (!cfg.fla_csv.empty()) attach_fla_csv(done, cfg.fla_csv);
    for (auto& r : done) {
      if (on_row) on_row(r);
      rows.push_back(std::move(r));
    }
  };
  for (const auto& op : cfg.ops) {
    if (op == "softmax") {
      for (auto D : cfg.head_dims)
        for (auto T : cfg.seq_lens) emit(bench_softmax_shape(cfg, D, T));
    } else if (op == "gated_delta_rule_step") {
      for (auto B : cfg.decode_batches) emit(bench_decode_step(cfg, B));
    } else {
      const auto& spec = linear_spec(op);
      for (auto D : cfg.head_dims)
        for (auto T : cfg.seq_lens) {
          std::vector<OpBenchRow> done;
          try {
            done = bench_linear_shape(cfg, spec, D, T);
          } catch (const std::exception& e) {  // e.g. an OOM drawing the inputs: a row, and the sweep goes on
            auto r = linear_row(cfg, op, "kernel", cfg.tokens / T, T, D);
            r.note = (study::is_oom(e) ? "OOM: " : "error: ") + error_note(e);
            done.push_back(std::move(r));
          }
          emit(std::move(done));
        }
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

const std::vector<std::string>& op_bench_known_ops() {
  static const std::vector<std::string> ops = {
      "softmax",    "linear_attention", "simple_gla",           "gla",
      "delta_rule", "gated_delta_rule", "gated_delta_rule_step"};
  return ops;
}

bool is_linear_op(const std::string& op) {
  return op != "softmax";
}

void attach_fla_csv(std::vector<OpBenchRow>& rows, const std::string& path) {
  std::ifstream in(path);
  ATTNLAB_CHECK(in.good(), "bench ops: --fla-csv {}: cannot read the file", path);
  using Key = std::tuple<std::string, int64_t, int64_t, int64_t, int64_t, std::string>;
  struct Fla {
    double fwd, fwdbwd, peak;
    std::string note;
  };
  std::map<Key, Fla> fla;
  std::map<std::string, size_t> col;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto cells = split_csv_line(line);
    if (col.empty()) {
      for (size_t i = 0; i < cells.size(); ++i) col[cells[i]] = i;
      for (const char* need : {"op", "B", "T", "H", "D", "dtype", "fwd_ms", "fwdbwd_ms", "peak_mib", "note"})
        ATTNLAB_CHECK(col.count(need),
                      "bench ops: --fla-csv {}: no column '{}' in its header (bench/fla_bench.py "
                      "writes op,impl,B,T,H,D,dtype,fwd_ms,fwdbwd_ms,peak_mib,note)",
                      path, need);
      continue;
    }
    auto cell = [&](const char* name) {
      return col.at(name) < cells.size() ? cells[col.at(name)] : std::string();
    };
    auto integer = [&](const char* name) {
      double x = cell_number(cell(name));
      return std::isfinite(x) ? static_cast<int64_t>(x) : int64_t{-1};
    };
    fla[Key{cell("op"), integer("B"), integer("T"), integer("H"), integer("D"), cell("dtype")}] =
        Fla{cell_number(cell("fwd_ms")), cell_number(cell("fwdbwd_ms")), cell_number(cell("peak_mib")),
            cell("note")};
  }
  ATTNLAB_CHECK(!col.empty(), "bench ops: --fla-csv {}: no header line", path);
  for (auto& r : rows) {
    if (!is_linear_op(r.op)) continue;
    auto it = fla.find(Key{r.op, r.B, r.T, r.H, r.D, r.dtype});
    if (it == fla.end()) {
      r.fla_note = "no FLA row";
      continue;
    }
    r.fla_fwd_ms = it->second.fwd, r.fla_fwdbwd_ms = it->second.fwdbwd, r.fla_peak_mib = it->second.peak;
    r.fla_note = it->second.note;
    r.ratio_fwd = r.fla_fwd_ms / r.fwd_ms, r.ratio_fwdbwd = r.fla_fwdbwd_ms / r.fwdbwd_ms;
  }
}

std::string op_bench_csv(const std::vector<OpBenchRow>& rows, const std::vector<std::string>& comments) {
  std::ostringstream out;
  for (const auto& c : comments) out << "# " << c << "\n";
  // Columns 1-19 as before the linear family came (scripts/gpu.sh reads 2, 5, 7, 11, 12); its columns before
  // the note, which stays last.
  out << "op,impl,dtype,B,T,H,D,causal,fwd_ms,fwdbwd_ms,fwd_tflops,fwdbwd_tflops,ratio_fwd,ratio_fwdbwd,ref,"
         "err_o,err_dq,err_dk,err_dv,err_ht,err_dg,err_dbeta,err_dh0,floor_ms,floor_fwdbwd_ms,bandwidth_gbs,"
         "peak_mib,fla_fwd_ms,fla_fwdbwd_ms,fla_peak_mib,fla_note,note\n";
  for (const auto& r : rows)
    out << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},", r.op, r.impl, r.dtype,
                       r.B, r.T, r.H, r.D, r.causal ? 1 : 0, csv_cell(r.fwd_ms, "{:.4f}"),
                       csv_cell(r.fwdbwd_ms, "{:.4f}"), csv_cell(r.fwd_tflops, "{:.1f}"),
                       csv_cell(r.fwdbwd_tflops, "{:.1f}"), csv_cell(r.ratio_fwd, "{:.3f}"),
                       csv_cell(r.ratio_fwdbwd, "{:.3f}"), r.ref, csv_cell(r.err_o, "{:.3e}"),
                       csv_cell(r.err_dq, "{:.3e}"), csv_cell(r.err_dk, "{:.3e}"),
                       csv_cell(r.err_dv, "{:.3e}"))
        << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_cell(r.err_ht, "{:.3e}"),
                       csv_cell(r.err_dg, "{:.3e}"), csv_cell(r.err_dbeta, "{:.3e}"),
                       csv_cell(r.err_dh0, "{:.3e}"), csv_cell(r.floor_ms, "{:.4f}"),
                       csv_cell(r.floor_fwdbwd_ms, "{:.4f}"), csv_cell(r.bandwidth_gbs, "{:.0f}"),
                       csv_cell(r.peak_mib, "{:.1f}"), csv_cell(r.fla_fwd_ms, "{:.4f}"),
                       csv_cell(r.fla_fwdbwd_ms, "{:.4f}"), csv_cell(r.fla_peak_mib, "{:.1f}"),
                       csv_quote(r.fla_note), csv_quote(r.note));
  return out.str();
}

namespace {

std::string softmax_table(const std::vector<OpBenchRow>& rows, bool header) {
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

std::string linear_table(const std::vector<OpBenchRow>& rows, bool header) {
  auto num = [](double x, const char* spec) {
    return std::isfinite(x) ? fmt::format(fmt::runtime(spec), x) : "-";
  };
  // The decode step's times are microseconds: the table shows them so (the CSV keeps milliseconds).
  auto ms = [&](const OpBenchRow& r, double x) {
    return r.op == "gated_delta_rule_step" ? (std::isfinite(x) ? fmt::format("{:.1f}us", x * 1e3) : "-")
                                           : num(x, "{:.3f}");
  };
  const char* f =
      "{:<21} {:>4} {:>6} {:>4} {:<6} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} "
      "{:>8}  {}\n";
  std::string out;
  if (header) {
    out += fmt::format(fmt::runtime(f), "op", "D", "T", "B", "impl", "fwd ms", "f+b ms", "floor", "floor",
                       "peak", "FLA fwd", "FLA f+b", "FLA/x", "FLA/x", "err o", "err ht", "err grad", "note");
    out += fmt::format(fmt::runtime(f), "", "", "", "", "", "", "", "fwd ms", "f+b ms", "MiB", "ms", "ms",
                       "fwd", "f+b", "", "", "(max)", "");
  }
  for (const auto& r : rows) {
    double grad = kNaN;
    for (double e : {r.err_dq, r.err_dk, r.err_dv, r.err_dg, r.err_dbeta, r.err_dh0})
      if (!std::isnan(e)) grad = std::isnan(grad) ? e : std::max(grad, e);
    std::string note = r.note;
    if (!r.fla_note.empty()) note += (note.empty() ? "" : "; ") + std::string("FLA: ") + r.fla_note;
    out += fmt::format(fmt::runtime(f), r.op, r.D, r.T, r.B, r.impl, ms(r, r.fwd_ms), ms(r, r.fwdbwd_ms),
                       ms(r, r.floor_ms), ms(r, r.floor_fwdbwd_ms), num(r.peak_mib, "{:.0f}"),
                       ms(r, r.fla_fwd_ms), ms(r, r.fla_fwdbwd_ms), num(r.ratio_fwd, "{:.2f}"),
                       num(r.ratio_fwdbwd, "{:.2f}"), num(r.err_o, "{:.1e}"), num(r.err_ht, "{:.1e}"),
                       num(grad, "{:.1e}"), note);
  }
  return out;
}

}  // namespace

std::string op_bench_table(const std::vector<OpBenchRow>& rows, bool header, bool linear) {
  if (!rows.empty()) linear = is_linear_op(rows.front().op);
  return linear ? linear_table(rows, header) : softmax_table(rows, header);
}

}  // namespace attnlab::bench
