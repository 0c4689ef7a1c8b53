// The gla_chunk binding: validates tensors, fills GlaChunkParams, launches, and wraps it for autograd.
#include "attnlab/ops/cuda/gla_chunk.h"

#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "attnlab/ops/cuda/linear_chunk.h"
#include "kernels/gla_chunk/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "gla_chunk";

// Params of the forward for contiguous q, k, v and float32 contiguous g, h0 (h0 may be empty).
kn::GlaChunkParams make_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& g, const torch::Tensor& h0, double scale,
                               int64_t seg_chunks) {
  kn::GlaChunkParams p;
  p.dtype = q.scalar_type() == torch::kBFloat16 ? kn::LinearDtype::kBF16 : kn::LinearDtype::kFP16;
  p.B = static_cast<int>(q.size(0)), p.T = static_cast<int>(q.size(1)), p.H = static_cast<int>(q.size(2));
  p.K = static_cast<int>(q.size(3)), p.V = static_cast<int>(v.size(3));
  p.scale = static_cast<float>(scale);
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr();
  p.g = f32(g);
  p.h0 = f32(h0);
  p.seg_chunks = seg_chunks > 0
                     ? static_cast<int>(std::min<int64_t>(seg_chunks, INT_MAX))
                     : kn::gla_chunk_default_seg_chunks(p.B, p.T, p.H, sm_count(q.device().index()));
  p.stream = nullptr;  // the legacy default stream (see flash_attn.h)
  return p;
}

void check_params(const kn::GlaChunkParams& p, bool backward) {
  auto why = kn::gla_chunk_check(p, backward);
  if (!why.empty()) fail("{}: {} (from gla_chunk_check)", kOp, why);
}

// (o, ht) = the recurrence over q, k, v, g, h0; gradients for all five.
class GlaChunkFunction : public torch::autograd::Function<GlaChunkFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor v, torch::Tensor g,
                                                torch::Tensor h0, double scale, int64_t seg_chunks) {
    DeviceScope device(q.device().index());
    auto p = make_params(q, k, v, g, h0, scale, seg_chunks);
    auto o = torch::empty(v.sizes(), v.options());  // [B, T, H, V]
    auto f32opt = q.options().dtype(torch::kFloat);
    const int64_t B = q.size(0), H = q.size(2), K = q.size(3), V = v.size(3);
    auto ht = torch::empty({B, H, K, V}, f32opt);
    const int64_t n_seg = kn::gla_chunk_segments(p);
    torch::Tensor seg_states, seg_gate;
    if (n_seg > 1) {
      seg_states = torch::empty({B, H, n_seg, K, V}, f32opt);
      seg_gate = torch::empty({B, H, n_seg, K}, f32opt);
    } else {
      seg_states = seg_gate = torch::empty({0}, f32opt);
    }
    p.o = o.data_ptr(), p.ht = f32(ht), p.seg_states = f32(seg_states), p.seg_gate = f32(seg_gate);
    // The in-chunk scores, kept for the backward (B * H * T * 64 16-bit values: half of q at D = 128) when
    // it can run: the inputs keep their requires_grad inside forward.
    const bool grad = q.requires_grad() || k.requires_grad() || v.requires_grad() || g.requires_grad() ||
                      h0.requires_grad();
    const int64_t nt = kn::gla_chunk_count(p.T);
    auto scores = grad ? torch::empty({B, H, nt, kn::kGlaChunk * kn::kGlaChunk}, q.options())
                       : torch::empty({0}, q.options());
    p.scores = grad ? scores.data_ptr() : nullptr;
    check_params(p, false);
    check_cuda(kn::launch_gla_chunk_fwd(p), kOp, "launch_gla_chunk_fwd");
    ctx->save_for_backward({q, k, v, g, h0, seg_states, seg_gate, scores});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["seg_chunks"] = static_cast<int64_t>(p.seg_chunks);
    return {o, ht};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &v = s[2], &g = s[3], &h0 = s[4];
    const auto &seg_states = s[5], &seg_gate = s[6], &scores = s[7];
    ATTNLAB_CHECK(scores.numel() > 0, "{}: backward without the forward's scores (no input required grad)",
                  kOp);
    DeviceScope device(q.device().index());
    auto p = make_params(q, k, v, g, h0, ctx->saved_data["scale"].toDouble(),
                         ctx->saved_data["seg_chunks"].toInt());
    p.seg_states = f32(seg_states), p.seg_gate = f32(seg_gate);
    // Upstream gradients can be any view (sum()'s backward hands an expanded, stride-0 tensor) or undefined.
    torch::Tensor dout =
        grads[0].defined() ? grads[0].to(v.scalar_type()).contiguous() : torch::zeros_like(v);
    torch::Tensor dht = grads[1].defined() ? grads[1].to(torch::kFloat).contiguous() : torch::Tensor();
    auto dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    auto f32opt = q.options().dtype(torch::kFloat);
    auto dg = torch::empty(g.sizes(), f32opt);  // [B, T, H, K]
    torch::Tensor dh0, dseg;
    if (given(h0)) dh0 = torch::empty(h0.sizes(), f32opt);
    const int64_t n_seg = kn::gla_chunk_segments(p), nt = kn::gla_chunk_count(p.T);
    if (n_seg > 1) dseg = torch::empty({q.size(0), q.size(2), n_seg, q.size(3), v.size(3)}, f32opt);
    // The state at every chunk end, 16-bit (dq walk -> dk walk): [B, H, N, K * V]
    auto chunk_states = torch::empty({q.size(0), q.size(2), nt, q.size(3) * v.size(3)}, q.options());
    p.dout = dout.data_ptr(), p.dht = f32(dht);
    p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
    p.dg = f32(dg), p.dh0 = f32(dh0), p.dseg_states = f32(dseg), p.chunk_states = chunk_states.data_ptr();
    p.scores = scores.data_ptr();
    check_params(p, true);
    check_cuda(kn::launch_gla_chunk_bwd(p), kOp, "launch_gla_chunk_bwd");
    return {dq, dk, dv, dg, dh0, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::string gla_chunk_unusable_reason(const RecurrentArgs& a) {
  // The q, k, v, h0 conditions are linear_chunk's (devices, one 16-bit dtype, K = V = 64 or 128, grid
  // limits); the per-key gate is checked here.
  RecurrentArgs plain = a;
  plain.g = torch::Tensor();
  auto why = linear_chunk_unusable_reason(plain, /*gated=*/false);
  if (!why.empty()) return why;
  const int64_t B = a.q.size(0), T = a.q.size(1), H = a.q.size(2), K = a.q.size(3);
  if (!a.g.defined()) return "the gate g is undefined";
  if (!a.g.is_cuda() || a.g.device() != a.q.device())
    return fmt::format("g on {}, q on {}: the kernels need one CUDA device", a.g.device().str(),
                       a.q.device().str());
  if (a.g.dim() != 4 || a.g.size(0) != B || a.g.size(1) != T || a.g.size(2) != H || a.g.size(3) != K)
    return fmt::format("g must be [B,T,H,K] = [{},{},{},{}], got {}", B, T, H, K, shape_str(a.g.sizes()));
  return {};
}

RecurrentOut gla_chunk(const RecurrentArgs& args) {
  auto why = gla_chunk_unusable_reason(args);
  ATTNLAB_CHECK(why.empty(), "{} kernel: cannot run these inputs: {}", kOp, why);
  const double scale = args.scale > 0 ? args.scale : 1.0 / std::sqrt(static_cast<double>(args.q.size(3)));
  auto none = torch::empty({0}, args.q.options().dtype(torch::kFloat));
  auto g = args.g.to(torch::kFloat).contiguous();
  auto h0 = args.h0.defined() ? args.h0.to(torch::kFloat).contiguous() : none;
  auto out = GlaChunkFunction::apply(args.q.contiguous(), args.k.contiguous(), args.v.contiguous(), g, h0,
                                     scale, args.kernel_seg_chunks);
  RecurrentOut r;
  r.o = out[0];
  if (args.output_final_state) r.ht = out[1];
  return r;
}

}  // namespace attnlab::ops::cuda
