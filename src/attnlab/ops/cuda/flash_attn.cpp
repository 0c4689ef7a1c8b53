// The flash-attention binding: validates tensors, fills FlashAttnParams, launches, and wraps it for autograd.
#include "attnlab/ops/cuda/flash_attn.h"

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "kernels/flash_attn/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "flash_attn";

void check_cuda(cudaError_t err, const char* what) {
  cuda::check_cuda(err, kOp, what);
}

uintptr_t address(const torch::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr());
}

// What the kernels' 16-byte copies need of a [B, T, H, D] tensor (params.h): the head-dim axis contiguous,
// the other strides multiples of 8 elements (row stride within 2^24), the data 16-byte aligned.
bool layout_ok(const torch::Tensor& t) {
  if (t.dim() != 4 || t.stride(3) != 1) return false;
  for (int64_t d = 0; d < 3; ++d)
    if (t.stride(d) % 8 != 0) return false;
  return std::abs(t.stride(1)) <= (int64_t(1) << 24) && address(t) % 16 == 0;
}

torch::Tensor with_kernel_layout(const torch::Tensor& t) {
  return layout_ok(t) ? t : t.clone(at::MemoryFormat::Contiguous);
}

// Device, dtype (that of q), shape and layout of one 16-bit tensor; messages say expected vs got.
void check_tensor(const char* name, const torch::Tensor& t, const torch::Tensor& q, const char* letters,
                  const std::vector<int64_t>& shape) {
  check_shape(kOp, name, t, letters, shape);
  ATTNLAB_CHECK(t.is_cuda(), "{}: {} must be a CUDA tensor, got one on {}", kOp, name, t.device().str());
  ATTNLAB_CHECK(t.device() == q.device(), "{}: {} must be on q's device {}, got {}", kOp, name,
                q.device().str(), t.device().str());
  ATTNLAB_CHECK(t.scalar_type() == q.scalar_type(), "{}: {} must have q's dtype {}, got {}", kOp, name,
                c10::toString(q.scalar_type()), c10::toString(t.scalar_type()));
  ATTNLAB_CHECK(t.stride(3) == 1, "{}: {} must have a contiguous last (head-dim) axis, got strides {}", kOp,
                name, shape_str(t.strides()));
  ATTNLAB_CHECK(t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0 &&
                    std::abs(t.stride(1)) <= (int64_t(1) << 24),
                "{}: {} strides must be multiples of 8 elements (row stride <= 2^24), got {}", kOp, name,
                shape_str(t.strides()));
  ATTNLAB_CHECK(address(t) % 16 == 0, "{}: {} must be 16-byte aligned, got an address {} bytes past that",
                kOp, name, address(t) % 16);
}

// A float32 contiguous tensor of `shape` on q's device, 16-byte aligned (lse).
void check_f32(const char* name, const torch::Tensor& t, const torch::Tensor& q, const char* letters,
               const std::vector<int64_t>& shape) {
  check_shape(kOp, name, t, letters, shape);
  ATTNLAB_CHECK(t.device() == q.device(), "{}: {} must be on q's device {}, got {}", kOp, name,
                q.device().str(), t.device().str());
  ATTNLAB_CHECK(t.scalar_type() == torch::kFloat, "{}: {} must be float32, got {}", kOp, name,
                c10::toString(t.scalar_type()));
  ATTNLAB_CHECK(t.is_contiguous() && address(t) % 16 == 0, "{}: {} must be contiguous and 16-byte aligned",
                kOp, name);
}

struct Sizes {
  int64_t B, Tq, Tk, H, Hkv, D;
};

// Checks q, k, v, o, lse (forward operands) and returns the sizes.
Sizes check_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                    const torch::Tensor& o, const torch::Tensor& lse) {
  check_shape(kOp, "q", q, "B,Tq,H,D", {-1, -1, -1, -1});
  Sizes s{q.size(0), q.size(1), -1, q.size(2), -1, q.size(3)};
  ATTNLAB_CHECK(q.is_cuda(), "{}: q must be a CUDA tensor, got one on {}", kOp, q.device().str());
  ATTNLAB_CHECK(q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf,
                "{}: q must be bf16 or fp16, got {}", kOp, c10::toString(q.scalar_type()));
  ATTNLAB_CHECK(s.D == 64 || s.D == 128, "{}: head dim D must be 64 or 128, got {}", kOp, s.D);
  check_shape(kOp, "k", k, "B,Tk,Hkv,D", {s.B, -1, -1, s.D});
  s.Tk = k.size(1), s.Hkv = k.size(2);
  check_tensor("q", q, q, "B,Tq,H,D", {s.B, s.Tq, s.H, s.D});
  check_tensor("k", k, q, "B,Tk,Hkv,D", {s.B, s.Tk, s.Hkv, s.D});
  check_tensor("v", v, q, "B,Tk,Hkv,D", {s.B, s.Tk, s.Hkv, s.D});
  check_tensor("o", o, q, "B,Tq,H,D", {s.B, s.Tq, s.H, s.D});
  check_f32("lse", lse, q, "B,H,Tq", {s.B, s.H, s.Tq});
  ATTNLAB_CHECK(s.Tq <= INT_MAX && s.Tk <= INT_MAX, "{}: Tq and Tk must fit in int, got {} and {}", kOp, s.Tq,
                s.Tk);
  return s;
}

void set_strides(const torch::Tensor& t, int64_t& batch, int64_t& row, int64_t& head) {
  batch = t.stride(0), row = t.stride(1), head = t.stride(2);
}

kn::FlashAttnParams make_params(const Sizes& s, const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& o, const torch::Tensor& lse,
                                const FlashAttnOptions& opt) {
  ATTNLAB_CHECK(opt.scale > 0 && std::isfinite(opt.scale), "{}: scale must be > 0, got {}", kOp, opt.scale);
  ATTNLAB_CHECK(opt.window >= 0, "{}: window must be >= 0 (0 = off), got {}", kOp, opt.window);
  kn::FlashAttnParams p;
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.o = o.data_ptr();
  p.lse = static_cast<float*>(lse.data_ptr());
  set_strides(q, p.q_batch_stride, p.q_row_stride, p.q_head_stride);
  set_strides(k, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
  set_strides(v, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
  set_strides(o, p.o_batch_stride, p.o_row_stride, p.o_head_stride);
  p.B = static_cast<int>(s.B), p.Tq = static_cast<int>(s.Tq), p.Tk = static_cast<int>(s.Tk);
  p.H = static_cast<int>(s.H), p.Hkv = static_cast<int>(s.Hkv), p.D = static_cast<int>(s.D);
  p.scale = static_cast<float>(opt.scale);
  p.causal = opt.causal || opt.window > 0;
  // Query i' <= Tk - 1 under the bottom-right alignment, so any window >= Tk keeps every causal key: clamp
  // it there (exact) so that it fits in an int.
  p.window = static_cast<int>(std::min(opt.window, s.Tk));
  p.dtype = q.scalar_type() == torch::kBFloat16 ? kn::FlashDtype::kBF16 : kn::FlashDtype::kFP16;
  p.stream = nullptr;  // the legacy default stream: PyTorch's current stream unless a caller changed it
  // The backward's main kernel runs on wgmma on Hopper with an sm_90a build (flash_bwd_wgmma.cuh);
  // ATTNLAB_FLASH_BWD=mma forces the mma.sync kernel (read per call: the bench and a test switch it).
  const char* variant = std::getenv("ATTNLAB_FLASH_BWD");
  const bool force_mma = variant && std::string(variant) == "mma";
  p.bwd_wgmma = !force_mma && kn::flash_attn_has_wgmma() && compute_major(q.device().index()) == 9;
  return p;
}

void check_params(const kn::FlashAttnParams& p, bool backward) {
  if (const char* why = kn::flash_attn_check(p, backward)) fail("{} (from flash_attn_check)", why);
}

// o = attention(q, k, v) with lse saved for the backward; gradients for q, k, v.
class FlashAttnFunction : public torch::autograd::Function<FlashAttnFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor q, torch::Tensor k,
                               torch::Tensor v, double scale, bool causal, int64_t window) {
    FlashAttnOptions opt{scale, causal, window};
    auto o = torch::empty(q.sizes(), q.options());  // [B, Tq, H, D]
    auto lse = torch::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(torch::kFloat));  // [B,H,Tq]
    flash_attn_fwd_into(q, k, v, o, lse, opt);
    ctx->save_for_backward({q, k, v, o, lse});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["window"] = window;
    return o;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &o = saved[3], &lse = saved[4];
    FlashAttnOptions opt{ctx->saved_data["scale"].toDouble(), ctx->saved_data["causal"].toBool(),
                         ctx->saved_data["window"].toInt()};
    // The upstream gradient can be any view (sum()'s backward hands an expanded, stride-0 tensor).
    auto dout = with_kernel_layout(grads[0].to(q.scalar_type()));  // [B, Tq, H, D]
    auto dq = torch::empty(q.sizes(), q.options());
    auto dk = torch::empty(k.sizes(), k.options());
    auto dv = torch::empty(v.sizes(), v.options());
    flash_attn_bwd_into(dout, q, k, v, o, lse, dq, dk, dv, opt);
    return {dq, dk, dv, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void flash_attn_fwd_into(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         const torch::Tensor& o, const torch::Tensor& lse, const FlashAttnOptions& opt) {
  Sizes s = check_forward(q, k, v, o, lse);
  auto p = make_params(s, q, k, v, o, lse, opt);
  check_params(p, /*backward=*/false);
  DeviceScope device(q.device().index());
  check_cuda(kn::launch_flash_attn_fwd(p), "launch_flash_attn_fwd (flash_attn_fwd_kernel)");
}

void flash_attn_bwd_into(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const torch::Tensor& o, const torch::Tensor& lse,
                         const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv,
                         const FlashAttnOptions& opt) {
  Sizes s = check_forward(q, k, v, o, lse);
  check_tensor("do", dout, q, "B,Tq,H,D", {s.B, s.Tq, s.H, s.D});
  check_tensor("dq", dq, q, "B,Tq,H,D", {s.B, s.Tq, s.H, s.D});
  check_tensor("dk", dk, q, "B,Tk,Hkv,D", {s.B, s.Tk, s.Hkv, s.D});
  check_tensor("dv", dv, q, "B,Tk,Hkv,D", {s.B, s.Tk, s.Hkv, s.D});
  auto p = make_params(s, q, k, v, o, lse, opt);
  p.dout = dout.data_ptr(), p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
  set_strides(dout, p.do_batch_stride, p.do_row_stride, p.do_head_stride);
  set_strides(dq, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride);
  set_strides(dk, p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride);
  set_strides(dv, p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride);
  // dq_accum [B, H, Tq, D] and softmax_d [B, H, Tq], float32, in one buffer from torch's caching allocator
  // (its blocks are 512-byte aligned; the kernels need 256). Freed at return: the allocator reuses it only
  // for work queued after ours on the same (default) stream.
  auto workspace = torch::empty({static_cast<int64_t>(kn::flash_attn_bwd_workspace_bytes(p))},
                                q.options().dtype(torch::kUInt8));
  ATTNLAB_CHECK(address(workspace) % 256 == 0, "{}: workspace must be 256-byte aligned, got {} bytes past",
                kOp, address(workspace) % 256);
  kn::flash_attn_set_bwd_workspace(p, workspace.data_ptr());
  check_params(p, /*backward=*/true);
  DeviceScope device(q.device().index());
  check_cuda(kn::launch_flash_attn_bwd(p), "launch_flash_attn_bwd (flash_attn_bwd_kernel and its helpers)");
}

torch::Tensor flash_attn_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const FlashAttnOptions& opt) {
  return FlashAttnFunction::apply(q, k, v, opt.scale, opt.causal, opt.window);
}

torch::Tensor flash_attn_softmax(const SoftmaxArgs& args) {
  auto why = flash_attn_unusable_reason(args);
  ATTNLAB_CHECK(why.empty(), "{}: cannot run these softmax_attention args: {}", kOp, why);
  FlashAttnOptions opt;
  opt.scale = args.scale > 0 ? args.scale : 1.0 / std::sqrt(static_cast<double>(args.q.size(3)));
  opt.causal = args.causal;
  opt.window = args.window;
  return flash_attn_forward(with_kernel_layout(args.q), with_kernel_layout(args.k),
                            with_kernel_layout(args.v), opt);
}

std::string flash_attn_unusable_reason(const SoftmaxArgs& a) {
  if (!a.q.defined() || !a.k.defined() || !a.v.defined()) return "q, k or v is undefined";
  for (const auto* t : {&a.q, &a.k, &a.v})
    if (!t->is_cuda()) return fmt::format("tensors on {}, the flash kernel needs CUDA", t->device().str());
  if (a.k.device() != a.q.device() || a.v.device() != a.q.device())
    return fmt::format("q, k, v on different devices ({}, {}, {})", a.q.device().str(), a.k.device().str(),
                       a.v.device().str());
  auto dt = a.q.scalar_type();
  if (dt != torch::kBFloat16 && dt != torch::kHalf)
    return fmt::format("dtype {} not in the flash kernel (bf16, fp16)", c10::toString(dt));
  if (a.k.scalar_type() != dt || a.v.scalar_type() != dt)
    return fmt::format("dtypes of q, k, v differ ({}, {}, {}); the flash kernel needs one", c10::toString(dt),
                       c10::toString(a.k.scalar_type()), c10::toString(a.v.scalar_type()));
  if (a.q.dim() != 4 || a.k.dim() != 4 || a.v.dim() != 4) return "q, k, v must be [B, T, H, D]";
  int64_t D = a.q.size(3), Dv = a.v.size(3), Tq = a.q.size(1), Tk = a.k.size(1);
  if (a.k.size(3) != D || Dv != D)
    return fmt::format("head dims q {} / k {} / v {} differ; the flash kernel needs them equal", D,
                       a.k.size(3), Dv);
  if (D != 64 && D != 128) return fmt::format("head dim {} not in the flash kernel (64, 128)", D);
  if (a.n_sink > 0) return fmt::format("attention sinks (n_sink {}) not in the flash kernel", a.n_sink);
  if (a.pattern != SparsePattern::dense) return "sparse patterns (strided, fixed) not in the flash kernel";
  if (a.window > 0 && !a.causal)
    return fmt::format(
        "a two-sided window ({} without causal) not in the flash kernel (its window is causal)", a.window);
  if (a.q_offset >= 0 && a.q_offset != Tk - Tq)
    return fmt::format("q_offset {} not in the flash kernel (queries must be the last keys: Tk - Tq = {})",
                       a.q_offset, Tk - Tq);
  if (a.q.numel() == 0 || a.k.numel() == 0) return "empty q or k";
  int64_t H = a.q.size(2), Hkv = a.k.size(2), B = a.q.size(0);
  if (Hkv < 1 || H % Hkv != 0) return fmt::format("{} kv heads do not divide {} query heads", Hkv, H);
  if (B > 65535 || H > 65535 || Tq > INT_MAX || Tk > INT_MAX)
    return fmt::format("B {} / H {} / T {} past the flash kernel's grid limits", B, H, std::max(Tq, Tk));
  return {};
}

bool flash_attn_usable(const SoftmaxArgs& args) {
  return flash_attn_unusable_reason(args).empty();
}

}  // namespace attnlab::ops::cuda
