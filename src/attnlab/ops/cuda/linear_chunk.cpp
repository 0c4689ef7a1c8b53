// The linear_chunk binding: validates tensors, fills LinearChunkParams, launches, and wraps it for autograd.
#include "attnlab/ops/cuda/linear_chunk.h"

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <string>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "kernels/linear_chunk/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "linear_chunk";

// ATTNLAB_LINEAR_FWD=mma / ATTNLAB_LINEAR_BWD=mma / ATTNLAB_LINEAR_STATE=mma force the mma.sync kernels (read
// per call: a test and the bench switch them). Otherwise the forward's output pass runs on wgmma at K = V =
// 64 and 128 on an sm_90a build (checked against the mma.sync kernel and the chunk form on the H200,
// bench/results/h200-2026-12-02b and y), so do the backward's dq and dk/dv walks at K = V = 128 (run x), and
// the segment-state passes of both.
bool forced_mma(const char* name) {
  const char* variant = std::getenv(name);
  return variant && std::string(variant) == "mma";
}
bool use_fwd_wgmma(int64_t K, int64_t V) {
  return K == V && (K == 64 || K == 128) && kn::linear_chunk_has_wgmma() && !forced_mma("ATTNLAB_LINEAR_FWD");
}
bool use_state_wgmma(int64_t K, int64_t V) {
  return K == V && (K == 64 || K == 128) && kn::linear_chunk_has_wgmma() &&
         !forced_mma("ATTNLAB_LINEAR_STATE");
}
bool use_bwd_wgmma(int64_t K, int64_t V) {
  return K == V && K == 128 && kn::linear_chunk_has_wgmma() && !forced_mma("ATTNLAB_LINEAR_BWD");
}

// The default split, from what will run. The state passes' cost per wave, against a wave of the walks (Nsight
// Compute times on the H200, bench/results/h200-2026-12-02x and y): the forward alone at D = 128 0.9 (state
// pass 82 us a wave, output pass 103), at D = 64 on wgmma 0.35 (three output blocks per SM); with the
// backward, whose dq and dk/dv walks dwarf its own state pass, 0.2 at D = 128 and 0.1 at D = 64 (two
// mma.sync walk blocks per SM).
int default_seg_chunks(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, int sms, bool backward) {
  if (backward) return kn::linear_chunk_wave_seg_chunks(B, T, H, sms, K == 128 ? 1 : 2, K == 128 ? 0.2 : 0.1);
  if (K == 128) return kn::linear_chunk_wave_seg_chunks(B, T, H, sms, 1, 0.9);
  // Three blocks per SM fit, but the model's waves are counted at two: a third block per SM shares the SM's
  // tensor and shared-memory throughput rather than adding to it (run y's split tried both).
  if (use_fwd_wgmma(K, V)) return kn::linear_chunk_wave_seg_chunks(B, T, H, sms, 2, 0.35);
  return kn::linear_chunk_default_seg_chunks(B, T, H, sms, 2);
}

// Params of the forward for contiguous q, k, v and float32 contiguous g, h0 (either may be undefined);
// seg_chunks > 0 (linear_chunk() picks the default).
kn::LinearChunkParams make_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& g, const torch::Tensor& h0, double scale,
                                  int64_t seg_chunks) {
  kn::LinearChunkParams p;
  p.dtype = q.scalar_type() == torch::kBFloat16 ? kn::LinearDtype::kBF16 : kn::LinearDtype::kFP16;
  p.B = static_cast<int>(q.size(0)), p.T = static_cast<int>(q.size(1)), p.H = static_cast<int>(q.size(2));
  p.K = static_cast<int>(q.size(3)), p.V = static_cast<int>(v.size(3));
  p.scale = static_cast<float>(scale);
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr();
  p.g = f32(g);
  p.h0 = f32(h0);
  p.seg_chunks = static_cast<int>(std::min<int64_t>(std::max<int64_t>(seg_chunks, 1), INT_MAX));
  p.fwd_wgmma = use_fwd_wgmma(p.K, p.V) ? 1 : 0;
  p.bwd_wgmma = use_bwd_wgmma(p.K, p.V) ? 1 : 0;
  p.state_wgmma = use_state_wgmma(p.K, p.V) ? 1 : 0;
  p.stream = nullptr;  // the legacy default stream (see flash_attn.h)
  return p;
}

void check_params(const kn::LinearChunkParams& p, bool backward) {
  auto why = kn::linear_chunk_check(p, backward);
  if (!why.empty()) fail("{}: {} (from linear_chunk_check)", kOp, why);
}

// (o, ht) = the recurrence over q, k, v, g, h0; gradients for all five.
class LinearChunkFunction : public torch::autograd::Function<LinearChunkFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor v, torch::Tensor g,
                                                torch::Tensor h0, double scale, int64_t seg_chunks) {
    DeviceScope device(q.device().index());
    auto p = make_params(q, k, v, g, h0, scale, seg_chunks);
    auto o = torch::empty(v.sizes(), v.options());  // [B, T, H, V]
    auto f32opt = q.options().dtype(torch::kFloat);
    auto ht = torch::empty({q.size(0), q.size(2), q.size(3), v.size(3)}, f32opt);  // [B, H, K, V]
    const int64_t n_seg = kn::linear_chunk_segments(p);
    torch::Tensor seg_states, seg_gate;
    if (n_seg > 1) {
      seg_states = torch::empty({q.size(0), q.size(2), n_seg, q.size(3), v.size(3)}, f32opt);
      seg_gate = torch::empty({q.size(0), q.size(2), n_seg}, f32opt);
    }
    p.o = o.data_ptr(), p.ht = f32(ht), p.seg_states = f32(seg_states), p.seg_gate = f32(seg_gate);
    check_params(p, false);
    check_cuda(kn::launch_linear_chunk_fwd(p), kOp, "launch_linear_chunk_fwd");
    ctx->save_for_backward({q, k, v, g, h0, seg_states, seg_gate});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["seg_chunks"] = static_cast<int64_t>(p.seg_chunks);
    return {o, ht};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &v = s[2], &g = s[3], &h0 = s[4];
    const auto &seg_states = s[5], &seg_gate = s[6];
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
    torch::Tensor dg, dg_work, chunk_states, chunk_dg, dh0, dseg;
    if (given(g)) {
      const int64_t nt = kn::linear_chunk_count(p.T);
      dg = torch::empty(g.sizes(), f32opt);
      dg_work = torch::empty({q.size(0), q.size(2), 2, q.size(1)}, f32opt);
      chunk_states = torch::empty({q.size(0), q.size(2), nt, q.size(3) * v.size(3)}, q.options());
      chunk_dg = torch::empty({q.size(0), q.size(2), nt}, f32opt);
    }
    if (given(h0)) dh0 = torch::empty(h0.sizes(), f32opt);
    const int64_t n_seg = kn::linear_chunk_segments(p);
    if (n_seg > 1) dseg = torch::empty({q.size(0), q.size(2), n_seg, q.size(3), v.size(3)}, f32opt);
    p.dout = dout.data_ptr(), p.dht = f32(dht);
    p.chunk_states = given(chunk_states) ? chunk_states.data_ptr() : nullptr, p.chunk_dg = f32(chunk_dg);
    p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
    p.dg = f32(dg), p.dg_work = f32(dg_work), p.dh0 = f32(dh0), p.dseg_states = f32(dseg);
    check_params(p, true);
    check_cuda(kn::launch_linear_chunk_bwd(p), kOp, "launch_linear_chunk_bwd");
    return {dq, dk, dv, dg, dh0, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::string linear_chunk_unusable_reason(const RecurrentArgs& a, bool gated) {
  if (!a.q.defined() || !a.k.defined() || !a.v.defined()) return "q, k or v is undefined";
  if (a.q.dim() != 4 || a.k.dim() != 4 || a.v.dim() != 4) return "q, k, v must be [B, T, H, D]";
  for (const auto* t : {&a.q, &a.k, &a.v, &a.g, &a.h0})
    if (t->defined() && !t->is_cuda())
      return fmt::format("tensors on {}, the kernels need CUDA", t->device().str());
  for (const auto* t : {&a.k, &a.v, &a.g, &a.h0})
    if (t->defined() && t->device() != a.q.device())
      return fmt::format("inputs on different devices ({} and {})", a.q.device().str(), t->device().str());
  const auto dt = a.q.scalar_type();
  if (dt != torch::kBFloat16 && dt != torch::kHalf)
    return fmt::format("dtype {} not in the kernels (bf16, fp16)", c10::toString(dt));
  if (a.k.scalar_type() != dt || a.v.scalar_type() != dt)
    return fmt::format("dtypes of q, k, v differ ({}, {}, {}); the kernels need one", c10::toString(dt),
                       c10::toString(a.k.scalar_type()), c10::toString(a.v.scalar_type()));
  const int64_t B = a.q.size(0), T = a.q.size(1), H = a.q.size(2), K = a.q.size(3), V = a.v.size(3);
  if (a.k.sizes() != a.q.sizes() || a.v.size(0) != B || a.v.size(1) != T || a.v.size(2) != H)
    return fmt::format("shapes q {}, k {}, v {} do not match [B,T,H,K] / [B,T,H,V]", shape_str(a.q.sizes()),
                       shape_str(a.k.sizes()), shape_str(a.v.sizes()));
  if (K != V || (K != 64 && K != 128))
    return fmt::format("head dims K = {}, V = {} not in the kernels (K = V = 64 or 128)", K, V);
  if (T == 0) return "T = 0";
  if (B * H > 65535 || T > INT_MAX / 2)
    return fmt::format("B * H = {} / T = {} past the grid limits (B * H <= 65535)", B * H, T);
  if (gated) {
    if (!a.g.defined()) return "the gate g is undefined";
    if (a.g.dim() != 3 || a.g.size(0) != B || a.g.size(1) != T || a.g.size(2) != H)
      return fmt::format("g must be [B,T,H] = [{},{},{}], got {}", B, T, H, shape_str(a.g.sizes()));
  } else if (a.g.defined()) {
    return "a gate g was given to the ungated kernel";
  }
  if (a.h0.defined() &&
      (a.h0.dim() != 4 || a.h0.size(0) != B || a.h0.size(1) != H || a.h0.size(2) != K || a.h0.size(3) != V))
    return fmt::format("h0 must be [B,H,K,V] = [{},{},{},{}], got {}", B, H, K, V, shape_str(a.h0.sizes()));
  return {};
}

RecurrentOut linear_chunk(const RecurrentArgs& args, bool gated) {
  auto why = linear_chunk_unusable_reason(args, gated);
  ATTNLAB_CHECK(why.empty(), "{}: cannot run these inputs: {}", kOp, why);
  const double scale = args.scale > 0 ? args.scale : 1.0 / std::sqrt(static_cast<double>(args.q.size(3)));
  auto none = torch::empty({0}, args.q.options().dtype(torch::kFloat));
  auto g = gated ? args.g.to(torch::kFloat).contiguous() : none;
  auto h0 = args.h0.defined() ? args.h0.to(torch::kFloat).contiguous() : none;
  int64_t seg_chunks = args.kernel_seg_chunks;
  // ATTNLAB_LINEAR_SEG_CHUNKS=n forces the split where the caller left it to us (for measuring the default).
  if (const char* forced = std::getenv("ATTNLAB_LINEAR_SEG_CHUNKS"); seg_chunks <= 0 && forced) {
    char* end = nullptr;
    const long n = std::strtol(forced, &end, 10);
    ATTNLAB_CHECK(end != forced && *end == '\0' && n >= 1,
                  "ATTNLAB_LINEAR_SEG_CHUNKS must be a chunk count >= 1, got '{}'", forced);
    seg_chunks = n;
  }
  if (seg_chunks <= 0) {
    // Split for the backward too when one can follow (its walks cost most of a training step).
    bool backward = false;
    if (torch::autograd::GradMode::is_enabled())
      for (const auto* t : {&args.q, &args.k, &args.v, &args.g, &args.h0})
        backward = backward || (t->defined() && t->requires_grad());
    seg_chunks = default_seg_chunks(args.q.size(0), args.q.size(1), args.q.size(2), args.q.size(3),
                                    args.v.size(3), sm_count(args.q.device().index()), backward);
  }
  auto out = LinearChunkFunction::apply(args.q.contiguous(), args.k.contiguous(), args.v.contiguous(), g, h0,
                                        scale, seg_chunks);
  RecurrentOut r;
  r.o = out[0];
  if (args.output_final_state) r.ht = out[1];
  return r;
}

}  // namespace attnlab::ops::cuda
