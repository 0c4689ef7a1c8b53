// The decode-step binding: validates tensors, fills RecurrentStepParams, launches (no autograd).
#include "attnlab/ops/cuda/recurrent_step.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "kernels/recurrent_step/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "recurrent_step";

bool gated(StepKind kind) {
  return kind == StepKind::scalar_gate || kind == StepKind::key_gate || kind == StepKind::gated_delta;
}
bool delta(StepKind kind) {
  return kind == StepKind::delta || kind == StepKind::gated_delta;
}

kn::StepVariant variant(StepKind kind) {
  switch (kind) {
    case StepKind::linear:
      return kn::StepVariant::kLinear;
    case StepKind::scalar_gate:
      return kn::StepVariant::kScalarGate;
    case StepKind::key_gate:
      return kn::StepVariant::kKeyGate;
    case StepKind::delta:
      return kn::StepVariant::kDelta;
    case StepKind::gated_delta:
      return kn::StepVariant::kGatedDelta;
  }
  fail("{}: unknown StepKind {}", kOp, static_cast<int>(kind));
}

std::string dims_str(const torch::Tensor& t) {
  return shape_str(t.sizes());
}

uintptr_t address(const torch::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr());
}

// x with a contiguous last axis (a copy only when it is not).
torch::Tensor last_contiguous(const torch::Tensor& x) {
  return x.size(-1) == 1 || x.stride(-1) == 1 ? x : x.contiguous();
}

// A float32 contiguous, 16-byte aligned state (the kernel's float4 access).
torch::Tensor state_f32(const torch::Tensor& h0) {
  auto s = h0.to(torch::kFloat).contiguous();
  return address(s) % 16 == 0 ? s : s.clone();
}

// Device, dtype and shape of one tensor of the raw API, with a contiguous last axis.
void check_raw(const char* name, const torch::Tensor& t, const torch::Tensor& q, const char* letters,
               const std::vector<int64_t>& shape, torch::ScalarType dtype) {
  check_shape(kOp, name, t, letters, shape);
  ATTNLAB_CHECK(t.is_cuda() && t.device() == q.device(), "{}: {} must be on q's CUDA device {}, got {}", kOp,
                name, q.device().str(), t.device().str());
  ATTNLAB_CHECK(t.scalar_type() == dtype, "{}: {} must be {}, got {}", kOp, name, c10::toString(dtype),
                c10::toString(t.scalar_type()));
  ATTNLAB_CHECK(t.size(-1) == 1 || t.stride(-1) == 1,
                "{}: {} must have a contiguous last axis, got strides {}", kOp, name, shape_str(t.strides()));
}

kn::StepDtype step_dtype(torch::ScalarType t) {
  if (t == torch::kBFloat16) return kn::StepDtype::kBF16;
  if (t == torch::kHalf) return kn::StepDtype::kFP16;
  return kn::StepDtype::kFP32;
}

}  // namespace

const char* step_kind_name(StepKind kind) {
  switch (kind) {
    case StepKind::linear:
      return "linear";
    case StepKind::scalar_gate:
      return "scalar_gate";
    case StepKind::key_gate:
      return "key_gate";
    case StepKind::delta:
      return "delta";
    case StepKind::gated_delta:
      return "gated_delta";
  }
  return "unknown";
}

void recurrent_step_into(StepKind kind, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const torch::Tensor& g, const torch::Tensor& beta,
                         const torch::Tensor& h0, const torch::Tensor& o, const torch::Tensor& ht,
                         double scale, bool l2norm_qk) {
  check_shape(kOp, "q", q, "B,H,K", {-1, -1, -1});
  const int64_t B = q.size(0), H = q.size(1), K = q.size(2);
  check_shape(kOp, "v", v, "B,H,V", {B, H, -1});
  const int64_t V = v.size(2);
  const auto dt = q.scalar_type();
  ATTNLAB_CHECK(q.is_cuda(), "{}: q must be a CUDA tensor, got one on {}", kOp, q.device().str());
  ATTNLAB_CHECK(dt == torch::kBFloat16 || dt == torch::kHalf || dt == torch::kFloat,
                "{}: q must be bf16, fp16 or float32, got {}", kOp, c10::toString(dt));
  check_raw("q", q, q, "B,H,K", {B, H, K}, dt);
  check_raw("k", k, q, "B,H,K", {B, H, K}, dt);
  check_raw("v", v, q, "B,H,V", {B, H, V}, dt);
  check_raw("o", o, q, "B,H,V", {B, H, V}, dt);
  if (kind == StepKind::key_gate)
    check_raw("g", g, q, "B,H,K", {B, H, K}, torch::kFloat);
  else if (gated(kind))
    check_raw("g", g, q, "B,H", {B, H}, torch::kFloat);
  if (delta(kind)) check_raw("beta", beta, q, "B,H", {B, H}, torch::kFloat);
  for (const auto* s : {&h0, &ht}) {
    if (!s->defined()) continue;
    const char* name = s == &h0 ? "h0" : "ht";
    check_raw(name, *s, q, "B,H,K,V", {B, H, K, V}, torch::kFloat);
    ATTNLAB_CHECK(s->is_contiguous(), "{}: {} must be contiguous, got strides {}", kOp, name,
                  shape_str(s->strides()));
  }
  ATTNLAB_CHECK(scale > 0 && std::isfinite(scale), "{}: scale must be > 0, got {}", kOp, scale);

  kn::RecurrentStepParams p;
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.o = o.data_ptr();
  p.q_batch_stride = q.stride(0), p.q_head_stride = q.stride(1);
  p.k_batch_stride = k.stride(0), p.k_head_stride = k.stride(1);
  p.v_batch_stride = v.stride(0), p.v_head_stride = v.stride(1);
  p.o_batch_stride = o.stride(0), p.o_head_stride = o.stride(1);
  if (gated(kind)) {
    p.g = g.data_ptr<float>();
    p.g_batch_stride = g.stride(0), p.g_head_stride = g.stride(1);
  }
  if (delta(kind)) {
    p.beta = beta.data_ptr<float>();
    p.beta_batch_stride = beta.stride(0), p.beta_head_stride = beta.stride(1);
  }
  p.h0 = h0.defined() ? h0.data_ptr<float>() : nullptr;
  p.ht = ht.defined() ? ht.data_ptr<float>() : nullptr;
  ATTNLAB_CHECK(B <= 65535 && H <= 65535 && V <= 65535, "{}: B {} / H {} / V {} past the kernel's limits",
                kOp, B, H, V);
  p.B = static_cast<int>(B), p.H = static_cast<int>(H), p.K = static_cast<int>(K), p.V = static_cast<int>(V);
  p.scale = static_cast<float>(scale);
  p.l2norm_qk = l2norm_qk;
  p.variant = variant(kind);
  p.dtype = step_dtype(dt);
  p.stream = nullptr;  // the legacy default stream: PyTorch's current stream unless a caller changed it
  const char* why = kn::recurrent_step_check(p);
  ATTNLAB_CHECK(why[0] == '\0', "{} (from recurrent_step_check; B={}, H={}, K={}, V={}, {})", why, B, H, K, V,
                step_kind_name(kind));
  DeviceScope device(q.device().index());
  check_cuda(kn::launch_recurrent_step(p), kOp, "launch_recurrent_step (recurrent_step_kernel)");
}

std::string recurrent_step_unusable_reason(StepKind kind, const RecurrentArgs& a, bool l2norm_qk) {
  (void)l2norm_qk;  // every kind takes it
  if (!a.q.defined() || !a.k.defined() || !a.v.defined()) return "q, k or v is undefined";
  const bool needs_g = gated(kind), needs_beta = delta(kind);
  std::vector<std::pair<const char*, const torch::Tensor*>> inputs{{"q", &a.q}, {"k", &a.k}, {"v", &a.v}};
  if (needs_g) {
    if (!a.g.defined()) return fmt::format("no gate g (the {} step needs one)", step_kind_name(kind));
    inputs.push_back({"g", &a.g});
  } else if (a.g.defined()) {
    return fmt::format("a gate g given to the ungated {} step", step_kind_name(kind));
  }
  if (needs_beta) {
    if (!a.beta.defined()) return fmt::format("no beta (the {} step needs one)", step_kind_name(kind));
    inputs.push_back({"beta", &a.beta});
  }
  if (a.h0.defined()) inputs.push_back({"h0", &a.h0});
  if (a.u.defined()) return "a bonus u (rwkv6) is not in the step kernel";
  for (const auto& [name, t] : inputs) {
    if (!t->is_cuda())
      return fmt::format("{} on {}, the step kernel needs CUDA tensors", name, t->device().str());
    if (t->device() != a.q.device())
      return fmt::format("{} on {} but q on {}", name, t->device().str(), a.q.device().str());
    if (!t->is_floating_point())
      return fmt::format("{} is {}, not floating point", name, c10::toString(t->scalar_type()));
  }
  if (a.q.dim() != 4 || a.k.dim() != 4 || a.v.dim() != 4) return "q, k, v must be [B, T, H, D]";
  const int64_t B = a.q.size(0), T = a.q.size(1), H = a.q.size(2), K = a.q.size(3), V = a.v.size(3);
  if (T != 1) return fmt::format("T = {}: the step kernel decodes one token (T == 1)", T);
  if (a.k.sizes() != a.q.sizes()) return fmt::format("k {} differs from q {}", dims_str(a.k), dims_str(a.q));
  if (a.v.size(0) != B || a.v.size(1) != 1 || a.v.size(2) != H)
    return fmt::format("v {} does not match q {}", dims_str(a.v), dims_str(a.q));
  const auto dt = a.q.scalar_type();
  if (dt != torch::kBFloat16 && dt != torch::kHalf && dt != torch::kFloat)
    return fmt::format("dtype {} not in the step kernel (bf16, fp16, float32)", c10::toString(dt));
  if (a.k.scalar_type() != dt || a.v.scalar_type() != dt)
    return fmt::format("dtypes of q, k, v differ ({}, {}, {}); the step kernel needs one", c10::toString(dt),
                       c10::toString(a.k.scalar_type()), c10::toString(a.v.scalar_type()));
  if (K != 64 && K != 128) return fmt::format("K {} not in the step kernel (64, 128)", K);
  if (V < 16 || V > 4096 || V % 16 != 0)
    return fmt::format("V {} not in the step kernel (a multiple of 16 up to 4096)", V);
  if (B < 1 || H < 1 || B > 65535 || H > 65535) return fmt::format("B {} / H {} past the grid limits", B, H);
  if (needs_g) {
    const bool per_key = kind == StepKind::key_gate;
    const std::vector<int64_t> want =
        per_key ? std::vector<int64_t>{B, 1, H, K} : std::vector<int64_t>{B, 1, H};
    if (a.g.sizes() != torch::IntArrayRef(want))
      return fmt::format("g {} is not {}", dims_str(a.g), per_key ? "[B, 1, H, K]" : "[B, 1, H]");
  }
  if (needs_beta && a.beta.sizes() != torch::IntArrayRef({B, 1, H}))
    return fmt::format("beta {} is not [B, 1, H]", dims_str(a.beta));
  if (a.h0.defined() && a.h0.sizes() != torch::IntArrayRef({B, H, K, V}))
    return fmt::format("h0 {} is not [B, H, K, V] = [{}, {}, {}, {}]", dims_str(a.h0), B, H, K, V);
  if (torch::autograd::GradMode::is_enabled())
    for (const auto& [name, t] : inputs)
      if (t->requires_grad())
        return fmt::format("{} requires grad; the step kernel has no backward (decode under NoGradGuard)",
                           name);
  return {};
}

RecurrentOut recurrent_step(StepKind kind, const RecurrentArgs& args, bool l2norm_qk) {
  auto why = recurrent_step_unusable_reason(kind, args, l2norm_qk);
  ATTNLAB_CHECK(why.empty(), "{}: cannot run the {} step on these args: {}", kOp, step_kind_name(kind), why);
  const int64_t B = args.q.size(0), H = args.q.size(2), K = args.q.size(3), V = args.v.size(3);
  auto q = last_contiguous(args.q.select(1, 0));  // [B, H, K]
  auto k = last_contiguous(args.k.select(1, 0));  // [B, H, K]
  auto v = last_contiguous(args.v.select(1, 0));  // [B, H, V]
  torch::Tensor g, beta, h0, ht;
  if (gated(kind)) g = last_contiguous(args.g.select(1, 0).to(torch::kFloat));        // [B, H] or [B, H, K]
  if (delta(kind)) beta = last_contiguous(args.beta.select(1, 0).to(torch::kFloat));  // [B, H]
  if (args.h0.defined()) h0 = state_f32(args.h0);                                     // [B, H, K, V]
  auto o = torch::empty({B, 1, H, V}, q.options());                                   // [B, 1, H, V]
  if (args.output_final_state) ht = torch::empty({B, H, K, V}, q.options().dtype(torch::kFloat));
  const double scale = args.scale > 0 ? args.scale : 1.0 / std::sqrt(static_cast<double>(K));
  recurrent_step_into(kind, q, k, v, g, beta, h0, o.select(1, 0), ht, scale, l2norm_qk);
  RecurrentOut out;
  out.o = o;
  out.ht = ht;
  return out;
}

}  // namespace attnlab::ops::cuda
