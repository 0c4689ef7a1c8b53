// The fused RMSNorm / RoPE binding: validates tensors, fills the Params structs, launches, wraps for
// autograd.
#include "attnlab/ops/cuda/fused.h"

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <utility>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "kernels/fused/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;

bool kernel_dtype(torch::ScalarType dt) {
  return dt == torch::kFloat || dt == torch::kBFloat16 || dt == torch::kHalf;
}

kn::FusedDtype fused_dtype(torch::ScalarType dt) {
  return dt == torch::kFloat  ? kn::FusedDtype::kFloat32
         : dt == torch::kHalf ? kn::FusedDtype::kFP16
                              : kn::FusedDtype::kBF16;
}

const char* dtype_str(torch::ScalarType dt) {
  return c10::toString(dt);
}

// An activation: defined, on CUDA, on `like`'s device with its dtype (`like` = x itself for x).
void check_activation(const char* op, const char* name, const torch::Tensor& t, const torch::Tensor& like) {
  ATTNLAB_CHECK(t.defined(), "{}: {} must be a tensor, got none", op, name);
  ATTNLAB_CHECK(t.is_cuda(), "{}: {} must be a CUDA tensor, got one on {}", op, name, t.device().str());
  ATTNLAB_CHECK(kernel_dtype(t.scalar_type()), "{}: {} must be float32, bf16 or fp16, got {}", op, name,
                dtype_str(t.scalar_type()));
  ATTNLAB_CHECK(t.device() == like.device(), "{}: {} must be on x's device {}, got {}", op, name,
                like.device().str(), t.device().str());
  ATTNLAB_CHECK(t.scalar_type() == like.scalar_type(), "{}: {} must have x's dtype {}, got {}", op, name,
                dtype_str(like.scalar_type()), dtype_str(t.scalar_type()));
}

// A float32 contiguous tensor of `shape` on x's device (weight, rstd, dweight).
void check_f32(const char* op, const char* name, const torch::Tensor& t, const torch::Tensor& x,
               const char* letters, const std::vector<int64_t>& shape) {
  check_shape(op, name, t, letters, shape);
  ATTNLAB_CHECK(t.device() == x.device(), "{}: {} must be on x's device {}, got {}", op, name,
                x.device().str(), t.device().str());
  ATTNLAB_CHECK(t.scalar_type() == torch::kFloat, "{}: {} must be float32, got {}", op, name,
                dtype_str(t.scalar_type()));
  ATTNLAB_CHECK(t.is_contiguous(), "{}: {} must be contiguous, got strides {}", op, name,
                shape_str(t.strides()));
}

// An output the kernel writes densely: contiguous, of `like`'s shape, device and dtype.
void check_dense_out(const char* op, const char* name, const torch::Tensor& t, const torch::Tensor& like) {
  check_activation(op, name, t, like);
  ATTNLAB_CHECK(t.sizes() == like.sizes(), "{}: {} must have x's shape {}, got {}", op, name,
                shape_str(like.sizes()), shape_str(t.sizes()));
  ATTNLAB_CHECK(t.is_contiguous(), "{}: {} must be contiguous, got strides {}", op, name,
                shape_str(t.strides()));
}

// ---------------------------------------------------------------- RMSNorm
constexpr const char* kNorm = "rms_norm";

// [..., N] as [rows, N] with a contiguous last axis: a view when the leading axes collapse, else a copy.
torch::Tensor as_rows(const torch::Tensor& t, int64_t N) {
  auto r = t.reshape({-1, N});
  return r.stride(1) == 1 || N == 1 ? r : r.contiguous();
}
// Elements between rows; a single row's stride is arbitrary in torch, the kernel wants >= N for outputs.
int64_t row_stride(const torch::Tensor& rows) {
  return rows.size(0) <= 1 ? rows.size(1) : rows.stride(0);
}

int64_t check_norm_x(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_activation(kNorm, "x", x, x);
  ATTNLAB_CHECK(x.dim() >= 1, "{}: x must be [..., N], got a scalar", kNorm);
  const int64_t N = x.size(-1);
  ATTNLAB_CHECK(N >= 1 && N <= kn::kRmsNormMaxN, "{}: the last dim N of x must be in 1 .. {}, got {} (x {})",
                kNorm, kn::kRmsNormMaxN, N, shape_str(x.sizes()));
  check_f32(kNorm, "weight", weight, x, "N", {N});
  ATTNLAB_CHECK(std::isfinite(eps) && eps >= 0, "{}: eps must be finite and >= 0, got {}", kNorm, eps);
  return N;
}

kn::RmsNormParams norm_params(const torch::Tensor& x2, const torch::Tensor& weight, double eps) {
  kn::RmsNormParams p;
  p.x = x2.data_ptr();
  p.x_row_stride = row_stride(x2);
  p.weight = static_cast<const float*>(weight.data_ptr());
  p.rows = x2.size(0);
  p.N = static_cast<int>(x2.size(1));
  p.eps = static_cast<float>(eps);
  p.dtype = fused_dtype(x2.scalar_type());
  p.stream = nullptr;  // the legacy default stream: PyTorch's current stream unless a caller changed it
  return p;
}

void check_params(const kn::RmsNormParams& p, bool backward) {
  if (const char* why = kn::rms_norm_check(p, backward)) fail("{} (from rms_norm_check)", why);
}

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor weight,
                               double eps) {
    auto y = torch::empty(x.sizes(), x.options());                                         // [..., N]
    auto rstd = torch::empty({x.numel() / x.size(-1)}, x.options().dtype(torch::kFloat));  // [rows]
    rms_norm_fwd_into(x, weight, eps, y, rstd);
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &rstd = saved[2];
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    auto dy = grads[0].to(x.scalar_type());  // any layout: as_rows copies what it cannot view
    auto dx = torch::empty(x.sizes(), x.options());
    auto dw = torch::empty({x.size(-1)}, weight.options());
    rms_norm_bwd_into(dy, x, weight, rstd, dx, dw);
    return {dx, dw, torch::Tensor()};
  }
};

// ---------------------------------------------------------------- RoPE
constexpr const char* kRope = "rope";

struct RopeSlot {
  const char* name;
  torch::Tensor x, out;
};

// Checks the slots (all [B, T, *, D] of one dtype on one device, last axes contiguous) and positions, and
// launches them in one kernel.
void rope_launch(const std::vector<RopeSlot>& slots, const torch::Tensor& positions, double theta,
                 int64_t rotary_dim, bool inverse) {
  const auto& x0 = slots[0].x;
  check_activation(kRope, slots[0].name, x0, x0);
  check_shape(kRope, slots[0].name, x0, "B,T,H,D", {-1, -1, -1, -1});
  const int64_t B = x0.size(0), T = x0.size(1), D = x0.size(3);
  const int64_t R = rotary_dim > 0 ? rotary_dim : D;
  ATTNLAB_CHECK(D >= 2 && D <= kn::kRopeMaxD, "{}: head dim D must be in 2 .. {}, got {}", kRope,
                kn::kRopeMaxD, D);
  ATTNLAB_CHECK(R % 2 == 0 && R <= D, "{}: rotary dim must be even and <= head dim {}, got {}", kRope, D, R);
  ATTNLAB_CHECK(std::isfinite(theta) && theta > 0, "{}: theta must be finite and > 0, got {}", kRope, theta);
  ATTNLAB_CHECK(B <= INT_MAX && T <= INT_MAX, "{}: B and T must fit in int, got {} and {}", kRope, B, T);
  check_shape(kRope, "positions", positions, "T", {T});
  ATTNLAB_CHECK(positions.scalar_type() == torch::kLong, "{}: positions must be int64, got {}", kRope,
                dtype_str(positions.scalar_type()));
  ATTNLAB_CHECK(positions.device() == x0.device(), "{}: positions must be on x's device {}, got {}", kRope,
                x0.device().str(), positions.device().str());
  ATTNLAB_CHECK(positions.is_contiguous(), "{}: positions must be contiguous", kRope);

  kn::RopeParams p;
  p.num_tensors = static_cast<int>(slots.size());
  for (size_t n = 0; n < slots.size(); ++n) {
    const auto& s = slots[n];
    check_activation(kRope, s.name, s.x, x0);
    check_shape(kRope, s.name, s.x, "B,T,H,D", {B, T, -1, D});
    check_activation(kRope, "out", s.out, x0);
    check_shape(kRope, "out", s.out, "B,T,H,D", {B, T, s.x.size(2), D});
    ATTNLAB_CHECK(s.x.stride(3) == 1 && s.out.stride(3) == 1,
                  "{}: {} and its output must have a contiguous last (head-dim) axis, got strides {} and {}",
                  kRope, s.name, shape_str(s.x.strides()), shape_str(s.out.strides()));
    ATTNLAB_CHECK(B * s.x.size(2) <= INT_MAX && s.x.size(2) >= 1,
                  "{}: {} needs 1 <= H and B * H <= 2^31 - 1, got {}", kRope, s.name, shape_str(s.x.sizes()));
    kn::RopeTensor& t = p.tensors[n];
    t.x = s.x.data_ptr(), t.out = s.out.data_ptr();
    t.x_batch_stride = s.x.stride(0), t.x_row_stride = s.x.stride(1), t.x_head_stride = s.x.stride(2);
    t.out_batch_stride = s.out.stride(0), t.out_row_stride = s.out.stride(1),
    t.out_head_stride = s.out.stride(2);
    t.H = static_cast<int>(s.x.size(2));
  }
  if (x0.numel() == 0) return;  // B or T is 0 (an empty tensor may have no data pointer)
  p.positions = static_cast<const int64_t*>(positions.data_ptr());
  p.B = static_cast<int>(B), p.T = static_cast<int>(T), p.D = static_cast<int>(D), p.R = static_cast<int>(R);
  p.theta = static_cast<float>(theta);
  p.inverse = inverse;
  p.dtype = fused_dtype(x0.scalar_type());
  p.stream = nullptr;  // the legacy default stream
  if (const char* why = kn::rope_check(p)) fail("{} (from rope_check)", why);
  DeviceScope device(x0.device().index());
  cuda::check_cuda(kn::launch_rope(p), kRope,
                   inverse ? "launch_rope (rope_kernel, inverse)" : "launch_rope (rope_kernel)");
}

// The kernel reads any strides but needs the head-dim axis contiguous (also of a gradient: sum()'s backward
// hands an expanded, all-stride-0 tensor).
torch::Tensor last_axis_contiguous(const torch::Tensor& t) {
  return t.stride(-1) == 1 ? t : t.contiguous();
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor positions, double theta, int64_t rotary_dim) {
    auto out = torch::empty(x.sizes(), x.options());  // [B, T, H, D]
    rope_launch({{"x", last_axis_contiguous(x), out}}, positions, theta, rotary_dim, /*inverse=*/false);
    ctx->save_for_backward({positions});
    ctx->saved_data["theta"] = theta;
    ctx->saved_data["rotary_dim"] = rotary_dim;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto positions = ctx->get_saved_variables()[0];
    const double theta = ctx->saved_data["theta"].toDouble();
    const int64_t rotary_dim = ctx->saved_data["rotary_dim"].toInt();
    torch::Tensor dx;
    if (grads[0].defined()) {
      auto g = last_axis_contiguous(grads[0]);
      dx = torch::empty(g.sizes(), g.options());
      rope_launch({{"dout", g, dx}}, positions, theta, rotary_dim, /*inverse=*/true);
    }
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class RopeQkFunction : public torch::autograd::Function<RopeQkFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor positions, double theta,
                                                int64_t rotary_dim) {
    auto qo = torch::empty(q.sizes(), q.options()), ko = torch::empty(k.sizes(), k.options());
    rope_launch({{"q", last_axis_contiguous(q), qo}, {"k", last_axis_contiguous(k), ko}}, positions, theta,
                rotary_dim, /*inverse=*/false);
    ctx->save_for_backward({positions});
    ctx->saved_data["theta"] = theta;
    ctx->saved_data["rotary_dim"] = rotary_dim;
    return {qo, ko};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto positions = ctx->get_saved_variables()[0];
    const double theta = ctx->saved_data["theta"].toDouble();
    const int64_t rotary_dim = ctx->saved_data["rotary_dim"].toInt();
    // Either output may be unused (no gradient): launch only the slots that have one.
    std::vector<RopeSlot> slots;
    torch::Tensor dq, dk;
    if (grads[0].defined()) {
      auto g = last_axis_contiguous(grads[0]);
      dq = torch::empty(g.sizes(), g.options());
      slots.push_back({"dq_out", g, dq});
    }
    if (grads[1].defined()) {
      auto g = last_axis_contiguous(grads[1]);
      dk = torch::empty(g.sizes(), g.options());
      slots.push_back({"dk_out", g, dk});
    }
    if (!slots.empty()) rope_launch(slots, positions, theta, rotary_dim, /*inverse=*/true);
    return {dq, dk, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void rms_norm_fwd_into(const torch::Tensor& x, const torch::Tensor& weight, double eps,
                       const torch::Tensor& y, const torch::Tensor& rstd) {
  const int64_t N = check_norm_x(x, weight, eps);
  check_dense_out(kNorm, "y", y, x);
  auto x2 = as_rows(x, N), y2 = y.view({-1, N});  // [rows, N]
  auto p = norm_params(x2, weight, eps);
  p.y = y2.data_ptr(), p.y_row_stride = row_stride(y2);
  if (rstd.defined()) {
    check_f32(kNorm, "rstd", rstd, x, "rows", {p.rows});
    p.rstd = static_cast<float*>(rstd.data_ptr());
  }
  if (p.rows == 0) return;  // nothing to normalise (an empty tensor may have no data pointer)
  check_params(p, /*backward=*/false);
  DeviceScope device(x.device().index());
  cuda::check_cuda(kn::launch_rms_norm_fwd(p), kNorm, "launch_rms_norm_fwd (rms_norm_fwd_kernel)");
}

void rms_norm_bwd_into(const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& weight,
                       const torch::Tensor& rstd, const torch::Tensor& dx, const torch::Tensor& dweight) {
  const int64_t N = check_norm_x(x, weight, 0.0);
  check_activation(kNorm, "dy", dy, x);
  ATTNLAB_CHECK(dy.sizes() == x.sizes(), "{}: dy must have x's shape {}, got {}", kNorm, shape_str(x.sizes()),
                shape_str(dy.sizes()));
  check_dense_out(kNorm, "dx", dx, x);
  check_f32(kNorm, "dweight", dweight, x, "N", {N});
  auto x2 = as_rows(x, N), dy2 = as_rows(dy, N), dx2 = dx.view({-1, N});  // [rows, N]
  auto p = norm_params(x2, weight, 0.0);
  check_f32(kNorm, "rstd", rstd, x, "rows", {p.rows});
  p.rstd = static_cast<float*>(rstd.data_ptr());
  p.dy = dy2.data_ptr(), p.dy_row_stride = row_stride(dy2);
  p.dx = dx2.data_ptr(), p.dx_row_stride = row_stride(dx2);
  p.dweight = static_cast<float*>(dweight.data_ptr());
  if (p.rows == 0) {  // no rows: dw is an empty sum (an empty tensor may have no data pointer)
    dweight.zero_();
    return;
  }
  DeviceScope device(x.device().index());
  // dw partials [partials, N] from torch's caching allocator; freed at return, reused only by work queued
  // after ours on the same (default) stream.
  int64_t partials = 0;
  cuda::check_cuda(kn::rms_norm_bwd_partials(p, &partials), kNorm, "rms_norm_bwd_partials (occupancy query)");
  auto workspace = torch::empty({std::max<int64_t>(partials, 1) * N}, x.options().dtype(torch::kFloat));
  p.workspace = static_cast<float*>(workspace.data_ptr());
  check_params(p, /*backward=*/true);
  cuda::check_cuda(kn::launch_rms_norm_bwd(p), kNorm,
                   "launch_rms_norm_bwd (rms_norm_bwd_kernel, rms_norm_dw_kernel)");
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto why = rms_norm_unusable_reason(x, weight);
  ATTNLAB_CHECK(why.empty(), "{}: cannot run these inputs: {}", kNorm, why);
  return RmsNormFunction::apply(x, weight, eps);
}

std::string rms_norm_unusable_reason(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!x.defined() || !weight.defined()) return "x or weight is undefined";
  if (!x.is_cuda()) return fmt::format("x on {}, the fused rms_norm kernel needs CUDA", x.device().str());
  if (!kernel_dtype(x.scalar_type()))
    return fmt::format("dtype {} not in the fused rms_norm kernel (float32, bf16, fp16)",
                       dtype_str(x.scalar_type()));
  if (x.dim() < 1) return "x is a scalar";
  const int64_t N = x.size(-1);
  if (N < 1 || N > kn::kRmsNormMaxN)
    return fmt::format("last dim {} not in the fused rms_norm kernel (1 .. {})", N, kn::kRmsNormMaxN);
  if (weight.dim() != 1 || weight.size(0) != N)
    return fmt::format("weight {} is not [N] = [{}]", shape_str(weight.sizes()), N);
  if (weight.scalar_type() != torch::kFloat)
    return fmt::format("weight dtype {}, the fused rms_norm kernel takes float32",
                       dtype_str(weight.scalar_type()));
  if (weight.device() != x.device())
    return fmt::format("weight on {}, x on {}", weight.device().str(), x.device().str());
  if (!weight.is_contiguous()) return "weight is not contiguous";
  return {};
}

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& positions, double theta, int64_t rotary_dim) {
  auto why = rope_unusable_reason(x, positions, rotary_dim);
  ATTNLAB_CHECK(why.empty(), "{}: cannot run these inputs: {}", kRope, why);
  return RopeFunction::apply(x, positions.contiguous(), theta, rotary_dim);
}

std::vector<torch::Tensor> rope_qk(const torch::Tensor& q, const torch::Tensor& k,
                                   const torch::Tensor& positions, double theta, int64_t rotary_dim) {
  for (const auto* t : {&q, &k}) {
    auto why = rope_unusable_reason(*t, positions, rotary_dim);
    ATTNLAB_CHECK(why.empty(), "{}: cannot run these inputs: {}: {}", kRope, t == &q ? "q" : "k", why);
  }
  return RopeQkFunction::apply(q, k, positions.contiguous(), theta, rotary_dim);
}

std::string rope_unusable_reason(const torch::Tensor& x, const torch::Tensor& positions, int64_t rotary_dim) {
  if (!x.defined() || !positions.defined()) return "x or positions is undefined";
  if (!x.is_cuda()) return fmt::format("x on {}, the fused rope kernel needs CUDA", x.device().str());
  if (!kernel_dtype(x.scalar_type()))
    return fmt::format("dtype {} not in the fused rope kernel (float32, bf16, fp16)",
                       dtype_str(x.scalar_type()));
  if (x.dim() != 4) return fmt::format("x {} is not [B, T, H, D]", shape_str(x.sizes()));
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t R = rotary_dim > 0 ? rotary_dim : D;
  if (D < 2 || D > kn::kRopeMaxD)
    return fmt::format("head dim {} not in the fused rope kernel (2 .. {})", D, kn::kRopeMaxD);
  if (R % 2 != 0 || R > D) return fmt::format("rotary dim {} is not even and <= head dim {}", R, D);
  if (B > INT_MAX || T > INT_MAX || H < 1 || B * H > INT_MAX)
    return fmt::format("x {} past the fused rope kernel's int limits (B * H, T)", shape_str(x.sizes()));
  if (positions.dim() != 1 || positions.size(0) != T)
    return fmt::format("positions {} is not [T] = [{}]", shape_str(positions.sizes()), T);
  if (positions.scalar_type() != torch::kLong)
    return fmt::format("positions dtype {}, the fused rope kernel takes int64",
                       dtype_str(positions.scalar_type()));
  if (positions.device() != x.device())
    return fmt::format("positions on {}, x on {}", positions.device().str(), x.device().str());
  return {};
}

void rope_into(const torch::Tensor& x, const torch::Tensor& positions, double theta, int64_t rotary_dim,
               const torch::Tensor& out, bool inverse) {
  rope_launch({{"x", x, out}}, positions, theta, rotary_dim, inverse);
}

}  // namespace attnlab::ops::cuda
