// The fused short convolution binding: validates tensors, fills ShortConvParams, launches, wraps for
// autograd.
#include "attnlab/ops/cuda/short_conv.h"

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "kernels/fused/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "short_conv";

kn::FusedDtype dtype_of(torch::ScalarType dt) {
  return dt == torch::kFloat  ? kn::FusedDtype::kFloat32
         : dt == torch::kHalf ? kn::FusedDtype::kFP16
                              : kn::FusedDtype::kBF16;
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (auto why = short_conv_unusable_reason(x, weight, bias); !why.empty()) fail("{}: {}", kOp, why);
}

// An output the kernel writes densely: [B, T, C] contiguous, x's device and dtype.
void check_out(const char* name, const torch::Tensor& t, const torch::Tensor& x) {
  ATTNLAB_CHECK(t.defined() && t.is_cuda() && t.device() == x.device() && t.scalar_type() == x.scalar_type(),
                "{}: {} must be a CUDA tensor of x's device {} and dtype {}", kOp, name, x.device().str(),
                c10::toString(x.scalar_type()));
  ATTNLAB_CHECK(t.sizes() == x.sizes() && t.is_contiguous(),
                "{}: {} must be contiguous {}, got {} strides {}", kOp, name, shape_str(x.sizes()),
                shape_str(t.sizes()), shape_str(t.strides()));
}

void check_f32_out(const char* name, const torch::Tensor& t, const torch::Tensor& x,
                   const std::vector<int64_t>& shape) {
  ATTNLAB_CHECK(t.defined() && t.device() == x.device() && t.scalar_type() == torch::kFloat &&
                    t.is_contiguous() && t.sizes() == torch::IntArrayRef(shape),
                "{}: {} must be float32 contiguous {} on {}, got {}", kOp, name, shape_str(shape),
                x.device().str(), t.defined() ? shape_str(t.sizes()) : std::string("none"));
}

kn::ShortConvParams make_params(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias, bool silu) {
  kn::ShortConvParams p;
  p.x = x.data_ptr();
  p.x_batch_stride = x.size(0) <= 1 ? x.size(1) * x.stride(1) : x.stride(0);
  p.x_row_stride = x.size(1) <= 1 ? x.size(2) : x.stride(1);
  p.weight = static_cast<const float*>(weight.data_ptr());
  p.bias = given(bias) ? static_cast<const float*>(bias.data_ptr()) : nullptr;
  p.B = x.size(0), p.T = x.size(1), p.C = static_cast<int>(x.size(2)), p.K = static_cast<int>(weight.size(1));
  p.silu = silu;
  p.dtype = dtype_of(x.scalar_type());
  p.stream = nullptr;  // the legacy default stream: PyTorch's current stream unless a caller changed it
  return p;
}

void check_params(const kn::ShortConvParams& p, bool backward) {
  if (const char* why = kn::short_conv_check(p, backward)) fail("{} (from short_conv_check)", why);
}

class ShortConvFunction : public torch::autograd::Function<ShortConvFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor weight,
                               torch::Tensor bias, bool silu) {
    auto y = torch::empty(x.sizes(), x.options());
    short_conv_fwd_into(x, weight, bias, silu, y);
    ctx->save_for_backward({x, weight, bias});
    ctx->saved_data["silu"] = silu;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &x = s[0], &weight = s[1], &bias = s[2];
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    auto dy = grads[0].to(x.scalar_type()).contiguous();
    auto dx = torch::empty(x.sizes(), x.options());
    auto dw = torch::empty(weight.sizes(), weight.options());
    auto db = given(bias) ? torch::empty(bias.sizes(), bias.options()) : torch::Tensor();
    short_conv_bwd_into(dy, x, weight, bias, ctx->saved_data["silu"].toBool(), dx, dw, db);
    return {dx, dw, given(bias) ? db : torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::string short_conv_unusable_reason(const torch::Tensor& x, const torch::Tensor& weight,
                                       const torch::Tensor& bias) {
  if (!x.defined() || !x.is_cuda()) return "x not on a CUDA device, the fused short_conv kernel needs CUDA";
  const auto dt = x.scalar_type();
  if (dt != torch::kFloat && dt != torch::kBFloat16 && dt != torch::kHalf)
    return fmt::format("x is {}, the fused short_conv kernel takes float32, bf16 or fp16", c10::toString(dt));
  if (x.dim() != 3) return fmt::format("x must be [B, T, C], got {}", shape_str(x.sizes()));
  if (x.numel() == 0) return "x is empty";
  if (x.stride(2) != 1)
    return fmt::format("x's channel axis must be contiguous, got strides {}", shape_str(x.strides()));
  if (!weight.defined() || weight.dim() != 2 || weight.size(0) != x.size(2))
    return fmt::format("weight must be [C, K] with C = {}, got {}", x.size(2),
                       weight.defined() ? shape_str(weight.sizes()) : std::string("none"));
  if (weight.size(1) < 2 || weight.size(1) > kn::kShortConvMaxK)
    return fmt::format("kernel size {} outside the fused kernel's 2 .. {}", weight.size(1),
                       kn::kShortConvMaxK);
  if (weight.scalar_type() != torch::kFloat || !weight.is_contiguous() || weight.device() != x.device())
    return "weight must be float32, contiguous, on x's device";
  if (given(bias) && (bias.dim() != 1 || bias.size(0) != x.size(2) || bias.scalar_type() != torch::kFloat ||
                      !bias.is_contiguous() || bias.device() != x.device()))
    return fmt::format("bias must be float32 contiguous [{}] on x's device, got {}", x.size(2),
                       shape_str(bias.sizes()));
  if (x.size(2) > INT32_MAX) return "C too large";
  return {};
}

torch::Tensor short_conv(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         bool silu) {
  check_inputs(x, weight, bias);
  return ShortConvFunction::apply(x, weight, given(bias) ? bias : torch::empty({0}, weight.options()), silu);
}

void short_conv_fwd_into(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         bool silu, const torch::Tensor& y) {
  check_inputs(x, weight, bias);
  check_out("y", y, x);
  auto p = make_params(x, weight, bias, silu);
  p.y = y.data_ptr();
  check_params(p, false);
  DeviceScope device(x.device().index());
  check_cuda(kn::launch_short_conv_fwd(p), kOp, "launch_short_conv_fwd");
}

void short_conv_bwd_into(const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, bool silu, const torch::Tensor& dx,
                         const torch::Tensor& dweight, const torch::Tensor& dbias) {
  check_inputs(x, weight, bias);
  check_out("dy", dy, x);
  check_out("dx", dx, x);
  check_f32_out("dweight", dweight, x, {x.size(2), weight.size(1)});
  if (given(bias)) check_f32_out("dbias", dbias, x, {x.size(2)});
  auto p = make_params(x, weight, bias, silu);
  p.dy = dy.data_ptr(), p.dx = dx.data_ptr();
  p.dweight = static_cast<float*>(dweight.data_ptr());
  p.dbias = given(bias) ? static_cast<float*>(dbias.data_ptr()) : nullptr;
  // the dw / dbias partials, from torch's caching allocator (freed at return: reused only for work queued
  // after ours on the same stream)
  auto ws = torch::empty({static_cast<int64_t>(kn::short_conv_workspace_floats(p))},
                         x.options().dtype(torch::kFloat));
  p.workspace = static_cast<float*>(ws.data_ptr());
  check_params(p, true);
  DeviceScope device(x.device().index());
  check_cuda(kn::launch_short_conv_bwd(p), kOp, "launch_short_conv_bwd");
}

}  // namespace attnlab::ops::cuda
