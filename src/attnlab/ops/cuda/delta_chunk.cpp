// The delta_chunk binding: fills DeltaChunkParams, launches, and wraps the recurrence for autograd.
#include "attnlab/ops/cuda/delta_chunk.h"

#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/cuda/cuda_util.h"
#include "attnlab/ops/cuda/delta_wy.h"
#include "attnlab/ops/cuda/linear_chunk.h"
#include "kernels/delta_chunk/params.h"

namespace attnlab::ops::cuda {
namespace {

namespace kn = attnlab::kernels;
constexpr const char* kOp = "delta_chunk";

// A 0|1 switch from the environment (read per call: the bench and the tests flip them): unset gives
// nullopt, anything but 0 or 1 fails naming the variable and the value.
std::optional<bool> env_switch(const char* name) {
  const char* e = std::getenv(name);
  if (!e) return std::nullopt;
  const std::string f = e;
  ATTNLAB_CHECK(f == "0" || f == "1", "{}: {} must be 0 or 1, got '{}'", kOp, name, f);
  return f == "1";
}

// How the forward runs for a shape: the walks' V-split, the wgmma walk or not, and the two-pass form or not.
struct FwdChoice {
  int v_split = 1;
  int fwd_wgmma = 0;
  bool two_pass = false;
};

// A caller's V-split, or with v_split 0 ATTNLAB_DELTA_V_SPLIT when set (the bench compares the splits with
// it); 0: none given, the shape decides.
int64_t given_v_split(int64_t v_split) {
  const char* forced = v_split > 0 ? nullptr : std::getenv("ATTNLAB_DELTA_V_SPLIT");
  if (!forced) return v_split;
  const std::string f = forced;
  ATTNLAB_CHECK(f == "1" || f == "2" || f == "4", "{}: ATTNLAB_DELTA_V_SPLIT must be 1, 2 or 4, got '{}'",
                kOp, f);
  return std::stoi(f);
}

FwdChoice fwd_choice(int B, int H, int K, int V, bool gated, int device, int64_t v_split) {
  v_split = given_v_split(v_split);
  // The forward's walk on wgmma (K = V = 128, an sm_90a build; V-split 1, or 2 for the half-V walk) where
  // delta_chunk_default_fwd_wgmma says so, or as ATTNLAB_DELTA_FWD_WGMMA=0|1|2 says (the walk's V-split, 0:
  // mma.sync; read per call: the bench and a test switch it). A V-split given by the caller (or
  // ATTNLAB_DELTA_V_SPLIT) wins: 4 runs mma.sync.
  const int sms = sm_count(device);
  const char* wf = std::getenv("ATTNLAB_DELTA_FWD_WGMMA");  // checked whatever the head dims
  const std::string wf_s = wf ? wf : "";
  ATTNLAB_CHECK(!wf || wf_s == "0" || wf_s == "1" || wf_s == "2",
                "{}: ATTNLAB_DELTA_FWD_WGMMA must be 0, 1 or 2, got '{}'", kOp, wf_s);
  int wg_split = 0;
  if (K == 128 && V == 128 && kn::linear_chunk_has_wgmma())
    wg_split = wf ? std::stoi(wf_s) : kn::delta_chunk_default_fwd_wgmma(B, H, V, sms);
  if (v_split > 0 && wg_split > 0) wg_split = v_split <= 2 ? static_cast<int>(v_split) : 0;
  FwdChoice c;
  c.v_split = v_split > 0 ? static_cast<int>(v_split)
                          : (wg_split > 0 ? wg_split : kn::delta_chunk_default_v_split(B, H, V, sms));
  c.fwd_wgmma = wg_split > 0 ? 1 : 0;
  // The two-pass forward (the walk stores vn, then o for all chunks at once) where it is the faster form
  // (kn::delta_chunk_default_two_pass); the same bits as the one-pass one. ATTNLAB_DELTA_FWD=one_pass /
  // two_pass forces either (read per call: the bench and a test switch it).
  // The wgmma walk (fwd_wgmma) computes o faster in the walk than the two passes do (H200, run 2026-12-03a:
  // Gated DeltaNet D = 128 forward 0.617 / 0.605 ms one-pass, 0.797 / 0.789 two-pass, at 1024 and 256
  // heads), so it takes the one-pass form unless ATTNLAB_DELTA_FWD says otherwise.
  const char* form = std::getenv("ATTNLAB_DELTA_FWD");
  c.two_pass = form ? std::string(form) == "two_pass"
                    : !c.fwd_wgmma && kn::delta_chunk_default_two_pass(B, H, V, gated, sms);
  return c;
}

kn::DeltaChunkParams make_params(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                                 const torch::Tensor& u, const torch::Tensor& G, const torch::Tensor& h0,
                                 const torch::Tensor& hs, double scale, const FwdChoice& c) {
  kn::DeltaChunkParams p;
  p.dtype = q.scalar_type() == torch::kBFloat16 ? kn::LinearDtype::kBF16 : kn::LinearDtype::kFP16;
  p.B = static_cast<int>(q.size(0)), p.T = static_cast<int>(q.size(1)), p.H = static_cast<int>(q.size(2));
  p.K = static_cast<int>(q.size(3)), p.V = static_cast<int>(u.size(3));
  p.scale = static_cast<float>(scale);
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.w = w.data_ptr(), p.u = u.data_ptr();
  p.G = cf32(G), p.h0 = cf32(h0), p.hs = hs.defined() ? hs.data_ptr() : nullptr;
  p.v_split = c.v_split;
  p.fwd_wgmma = c.fwd_wgmma;
  // The half-V wgmma walks' scores split between their warpgroups: as ATTNLAB_DELTA_SPLIT_SCORES=0|1 says
  // (read per call: the bench compares both), else off until measured.
  p.split_scores = env_switch("ATTNLAB_DELTA_SPLIT_SCORES").value_or(false) ? 1 : 0;
  p.stream = nullptr;  // the legacy default stream (see flash_attn.h)
  return p;
}

FwdChoice fwd_choice(const torch::Tensor& q, const torch::Tensor& u, bool gated, int64_t v_split) {
  return fwd_choice(static_cast<int>(q.size(0)), static_cast<int>(q.size(2)), static_cast<int>(q.size(3)),
                    static_cast<int>(u.size(3)), gated, q.device().index(), v_split);
}

// Whether the forward's walk can wait for the producer's flags at all: the two-pass form's mma.sync walk or
// half-V wgmma state pass (fwd_wgmma with V-split 2), whose B * H * v_split blocks leave it an SM.
bool walk_can_stream(bool fwd_wgmma, int v_split, bool two_pass, long long blocks, int sms) {
  return (!fwd_wgmma || v_split == 2) && two_pass && blocks < sms;
}

// Whether the forward should run its walk beside delta_wy's forward (kn::delta_chunk_default_stream_wy), or
// as ATTNLAB_DELTA_STREAM=0|1 says; never where the walk's blocks would leave no SM to the producer.
bool stream_wy(const FwdChoice& c, int B, int H, int device) {
  const int sms = sm_count(device);
  const long long blocks = static_cast<long long>(B) * H * c.v_split;
  if (const auto on = env_switch("ATTNLAB_DELTA_STREAM"))
    return *on && walk_can_stream(c.fwd_wgmma != 0, c.v_split, c.two_pass, blocks, sms);
  return kn::delta_chunk_default_stream_wy(B, H, c.v_split, c.fwd_wgmma != 0, c.two_pass, sms);
}

// Whether a streamed walk keeps its SMs to itself (DeltaChunkParams::walk_alone): as
// ATTNLAB_DELTA_WALK_ALONE=0|1 says (read per call: the bench compares both), else off.
int walk_alone() {
  return env_switch("ATTNLAB_DELTA_WALK_ALONE").value_or(false) ? 1 : 0;
}

// Whether the streamed forward's output pass runs behind its walk (fwd_part 3): as
// ATTNLAB_DELTA_OUT_STREAM=0|1 says (read per call), else off until measured; only where the walk's blocks
// leave at least half the SMs (the output pass needs SMs of its own beside the walk).
bool out_stream(int B, int H, int v_split, int device) {
  return env_switch("ATTNLAB_DELTA_OUT_STREAM").value_or(false) && 2LL * B * H * v_split <= sm_count(device);
}

// ATTNLAB_DELTA_SYNC_GIVE_UP=1 (tests only): a streamed output pass gives every chunk to its cleanup launch
// (DeltaChunkParams::sync_give_up), the path taken when the walk is not placed in time.
int sync_give_up() {
  return env_switch("ATTNLAB_DELTA_SYNC_GIVE_UP").value_or(false) ? 1 : 0;
}

void check_params(const kn::DeltaChunkParams& p, bool backward) {
  auto why = kn::delta_chunk_check(p, backward);
  if (!why.empty()) fail("{}: {} (from delta_chunk_check)", kOp, why);
}

void check_seg_fix(const kn::DeltaChunkParams& p, bool backward) {
  auto why = kn::delta_chunk_seg_fix_check(p, backward);
  if (!why.empty()) fail("{}: {} (from delta_chunk_seg_fix_check)", kOp, why);
}

// The segmented forms' segment count: ATTNLAB_DELTA_SEGMENTS=1|2|4|8 (read per call; opt-in until
// measured), halved until the chunks split evenly (the segments are equal views of the sequence); 1 where
// T is not a multiple of 64 (a padded last chunk) or the sequence has a single chunk per segment at most.
int segments(int64_t T) {
  const char* e = std::getenv("ATTNLAB_DELTA_SEGMENTS");
  if (!e) return 1;
  const std::string f = e;
  ATTNLAB_CHECK(f == "1" || f == "2" || f == "4" || f == "8",
                "{}: ATTNLAB_DELTA_SEGMENTS must be 1, 2, 4 or 8, got '{}'", kOp, f);
  const int64_t nt = T / kn::kLinearChunk;
  if (T % kn::kLinearChunk != 0) return 1;
  int n = std::stoi(f);
  while (n > 1 && (nt % n != 0 || nt / n < 2)) n /= 2;
  return n;
}

// Runs first(hi) and second(lo) on the high- and low-priority side streams, both after the default stream's
// work so far; the default stream then waits for both (the segmented forms' two walks).
template <typename First, typename Second>
void beside(int device, First&& first, Second&& second) {
  cudaStream_t hi = side_stream(device, true), lo = side_stream(device, false);
  stream_after(hi, nullptr, kOp);
  stream_after(lo, nullptr, kOp);
  first(hi);
  second(lo);
  stream_after(nullptr, hi, kOp);
  stream_after(nullptr, lo, kOp);
}

// The segmented walks' V-split: both walks (states and transitions) at once in one wave of one block per
// SM (the D = 128 walks take a whole SM), so the largest of 4 (V = 128), 2, 1 with 2 B nseg H v_split <= SMs,
// else 1; a V-split given by the caller or ATTNLAB_DELTA_V_SPLIT wins.
int segmented_v_split(int64_t v_split, int64_t segment_heads, int V, int sms) {
  v_split = given_v_split(v_split);
  if (v_split > 0) return static_cast<int>(v_split);
  for (int s : {4, 2})
    if ((s == 2 || V == 128) && 2 * segment_heads * s <= sms) return s;
  return 1;
}

// The segmented forward (docs/kernels.md, "The segmented forms"): the walk over T / 64 chunks is the
// forward's critical path where few heads leave most SMs idle. The state leaving chunk n is affine in the
// state entering its segment: S_n = L_n + P_n S_in, with L the states of a walk from zero and P_n the product
// of the segment's transitions up to chunk n (the same walk with U = 0 from S = I, since the step is
// S <- exp(g_last) S + K~^T (U - W S)). So both walks run over every segment at once (the segments are
// batch entries of a [B nseg, T / nseg] view; segment 0 starts from h0 and needs no correction), the
// segments' entering states follow from their final L and P in nseg - 1 small products, hs gets P_n S_in
// added (launch_delta_chunk_seg_fix), and the output pass forms vn = U - W S from the corrected hs
// (state_only). hs, o and ht as the plain forward gives them, up to rounding (hs is summed from 16-bit
// pieces).
void segmented_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& w,
                       const torch::Tensor& u, const torch::Tensor& G, const torch::Tensor& h0, double scale,
                       int nseg, int64_t v_split, const torch::Tensor& hs, const torch::Tensor& o,
                       const torch::Tensor& ht) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = u.size(3);
  const int64_t Bs = B * nseg, Ts = T / nseg, nts = Ts / kn::kLinearChunk;
  auto seg = [&](const torch::Tensor& x) { return x.view({Bs, Ts, H, x.size(3)}); };
  const torch::Tensor Gs = given(G) ? G.view({Bs, Ts, H}) : G;
  const auto f32opt = q.options().dtype(torch::kFloat);
  const int dev = q.device().index(), sms = sm_count(dev);
  FwdChoice c;  // the mma.sync walk
  c.two_pass = true;
  c.v_split = segmented_v_split(v_split, Bs * H, static_cast<int>(V), sms);
  // The states' walk: segment 0 from h0, the others from zero.
  auto h0s = torch::zeros({B, nseg, H, K, V}, f32opt);
  if (given(h0)) h0s.select(1, 0).copy_(h0);
  auto hsl = torch::empty({Bs, H, nts, K, V}, q.options());
  auto htl = torch::empty({B, nseg, H, K, V}, f32opt);
  auto p = make_params(seg(q), seg(k), seg(w), seg(u), Gs, h0s.view({Bs, H, K, V}), hsl, scale, c);
  p.o = o.data_ptr(), p.ht = f32(htl), p.state_only = 1, p.fwd_part = 1;
  // The transitions' walk (K = V): U = 0 from S = I; its states are P_n, its final states P of each segment.
  auto eye = torch::eye(K, f32opt).expand({Bs, H, K, K}).contiguous();
  auto hsp = torch::empty({B, nseg, H, nts, K, K}, q.options());
  auto htp = torch::empty({B, nseg, H, K, K}, f32opt);
  kn::DeltaChunkParams pp = p;
  pp.u = nullptr, pp.h0 = cf32(eye), pp.hs = hsp.data_ptr(), pp.ht = f32(htp);
  check_params(p, false);
  check_params(pp, false);
  beside(
      dev,
      [&](cudaStream_t s) {
        p.stream = s;
        check_cuda(kn::launch_delta_chunk_fwd(p), kOp, "launch_delta_chunk_fwd (the segments' states)");
      },
      [&](cudaStream_t s) {
        pp.stream = s;
        check_cuda(kn::launch_delta_chunk_fwd(pp), kOp, "launch_delta_chunk_fwd (the segments' transitions)");
      });
  // The state entering segment j + 1: P_j S_in(j) + L_j, from segment 0's true final state on (float32;
  // nseg - 1 small products on the default stream).
  auto s_in = torch::zeros({B, nseg, H, K, V}, q.options());  // 16-bit, as the correction's products read it
  auto cur = htl.select(1, 0);
  for (int j = 1; j < nseg; ++j) {
    s_in.select(1, j).copy_(cur);
    cur = torch::matmul(htp.select(1, j), cur) + htl.select(1, j);
  }
  ht.copy_(cur);
  // hs in [B, H, nt] order: L_n + P_n S_in of the chunk's segment (launch_delta_chunk_seg_fix).
  auto po = make_params(q, k, w, u, G, h0, hs, scale, c);
  po.o = o.data_ptr(), po.segments = nseg;
  po.seg_hs = hsl.data_ptr(), po.seg_p = hsp.data_ptr(), po.seg_in = s_in.data_ptr();
  check_seg_fix(po, false);
  check_cuda(kn::launch_delta_chunk_seg_fix(po, false), kOp, "launch_delta_chunk_seg_fix");
  // The output pass over the whole sequence, vn formed from the corrected states.
  po.segments = 1, po.seg_hs = po.seg_p = po.seg_in = nullptr;
  po.state_only = 1, po.fwd_part = 2;
  check_params(po, false);
  check_cuda(kn::launch_delta_chunk_fwd(po), kOp, "launch_delta_chunk_fwd (the output pass)");
}

// The segmented backward (docs/kernels.md, "The segmented forms"): the two-pass backward's walk over
// segments at once, as the forward's. dS is affine in the gradient entering a segment from its right (the
// step is dS <- M_n^T dS + R_n, R from do), so one walk runs from zero (the last segment from dht) and one
// with do = 0 from dS = I (the products Q_n of the transposed transitions); the gradients entering the
// segments follow in nseg - 1 small products, delta_seg_fix_kernel adds Q_n X to dhs and diag(exp(G_last -
// G)) K Q_n X to dU (= dvn, linear in dS), dh0 = L_end(0) + Q_end(0) X(0), and the output pass runs as
// usual. p: the backward's two-pass parameters for the whole sequence (dhs, dU, dq, dk, dw, dG set); the
// segments are batch entries of a [B nseg, T / nseg] view, which shares the [B, T, H, D] memory, so the
// walks' parameters differ in B and T only.
void segmented_backward(kn::DeltaChunkParams p, const torch::Tensor& q, const torch::Tensor& dht,
                        const torch::Tensor& dh0, int nseg) {
  const int64_t B = p.B, T = p.T, H = p.H, K = p.K, V = p.V, Bs = B * nseg, nts = T / nseg / kn::kLinearChunk;
  const auto f32opt = q.options().dtype(torch::kFloat);
  const int dev = q.device().index();
  kn::DeltaChunkParams pl = p;  // from zero, the last segment from dht
  pl.B = static_cast<int>(Bs), pl.T = static_cast<int>(T / nseg);
  auto dht_s = torch::zeros({B, nseg, H, K, V}, f32opt);
  if (given(dht)) dht_s.select(1, nseg - 1).copy_(dht);
  auto dhsl = torch::empty({Bs, H, nts, K, V}, q.options());
  auto dh0l = torch::empty({B, nseg, H, K, V}, f32opt);
  pl.dht = cf32(dht_s), pl.dhs = dhsl.data_ptr(), pl.dh0 = f32(dh0l);
  // The transposed transitions (K = V): do = 0 from dS = I, no P^T do before the walk; its dU and the
  // untouched dq, dk, dw go to a workspace.
  auto zero_do = torch::zeros({B, T, H, K}, q.options());
  auto junk = torch::empty({B, T, H, K}, q.options());
  auto eye = torch::eye(K, f32opt).expand({Bs, H, K, K}).contiguous();
  auto dhsq = torch::empty({B, nseg, H, nts, K, K}, q.options());
  auto dh0q = torch::empty({B, nseg, H, K, K}, f32opt);
  kn::DeltaChunkParams pq = pl;
  pq.dout = zero_do.data_ptr(), pq.dht = cf32(eye), pq.dhs = dhsq.data_ptr(), pq.dh0 = f32(dh0q);
  pq.dq = pq.dk = pq.dw = pq.du = junk.data_ptr(), pq.bwd_local = 0;
  check_params(pl, true);
  check_params(pq, true);
  beside(
      dev,
      [&](cudaStream_t s) {
        pl.stream = s, pl.bwd_part = 1;  // P^T do (bwd_local; nothing without)
        check_cuda(kn::launch_delta_chunk_bwd(pl), kOp, "launch_delta_chunk_bwd (the segments' P^T do)");
        pl.bwd_part = 2;
        check_cuda(kn::launch_delta_chunk_bwd(pl), kOp, "launch_delta_chunk_bwd (the segments' walk)");
      },
      [&](cudaStream_t s) {
        pq.stream = s, pq.bwd_part = 2;
        check_cuda(kn::launch_delta_chunk_bwd(pq), kOp, "launch_delta_chunk_bwd (the segments' transitions)");
      });
  // The gradient entering segment j from its right: X(j) = L_end(j + 1) + Q_end(j + 1) X(j + 1), X(last) = 0.
  auto s_in = torch::zeros({B, nseg, H, K, V}, q.options());  // 16-bit, as the correction reads it
  auto x = torch::zeros({B, H, K, V}, f32opt);
  for (int j = nseg - 2; j >= 0; --j) {
    x = dh0l.select(1, j + 1) + torch::matmul(dh0q.select(1, j + 1), x);
    s_in.select(1, j).copy_(x);
  }
  if (given(dh0)) dh0.copy_(dh0l.select(1, 0) + torch::matmul(dh0q.select(1, 0), x));
  kn::DeltaChunkParams pf = p;
  pf.segments = nseg, pf.seg_hs = dhsl.data_ptr(), pf.seg_p = dhsq.data_ptr(), pf.seg_in = s_in.data_ptr();
  check_seg_fix(pf, true);
  check_cuda(kn::launch_delta_chunk_seg_fix(pf, true), kOp, "launch_delta_chunk_seg_fix (backward)");
  p.bwd_part = 4, p.walk_sync = nullptr;  // the output pass for every chunk
  check_params(p, true);
  check_cuda(kn::launch_delta_chunk_bwd(p), kOp, "launch_delta_chunk_bwd (the output pass)");
}

class DeltaChunkFunction : public torch::autograd::Function<DeltaChunkFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor w, torch::Tensor u,
                                                torch::Tensor G, torch::Tensor h0, double scale,
                                                int64_t v_split, bool grad, WyFork* fork) {
    DeviceScope device(q.device().index());
    const int64_t nt = kn::linear_chunk_count(static_cast<int>(q.size(1)));
    const FwdChoice choice = fwd_choice(q, u, given(G), v_split);
    const bool two_pass = choice.two_pass;
    auto p = make_params(q, k, w, u, G, h0, torch::Tensor(), scale, choice);
    // The 16-bit state entering each chunk: for the backward, and the two-pass forward's second kernel. A
    // one-pass forward that no gradient will follow (grad mode off, or no input requiring grad) skips it:
    // at D = 128 it is twice the bytes of q.
    const int nseg = segments(q.size(1));
    torch::Tensor hs;
    if (grad || two_pass || nseg > 1)
      hs = torch::empty({q.size(0), q.size(2), nt, q.size(3), u.size(3)}, q.options());
    p.hs = hs.defined() ? hs.data_ptr() : nullptr;
    auto o = torch::empty(u.sizes(), q.options());
    auto ht = torch::empty({q.size(0), q.size(2), q.size(3), u.size(3)}, q.options().dtype(torch::kFloat));
    p.o = o.data_ptr(), p.ht = f32(ht);
    // vn is a workspace: freed at return, after the launches that use it were queued (and, streamed, after
    // the default stream was made to wait for them).
    torch::Tensor vn;
    if (two_pass && nseg == 1) vn = torch::empty(u.sizes(), q.options()), p.vn = vn.data_ptr();
    // The streamed forward (fork from delta_wy_prepare): the walk on the high-priority side stream, then
    // delta_wy's forward on the low-priority one (so that the walk's blocks are placed first), the walk
    // reading each chunk's w, u, G as soon as its flag is up; the output pass once both are done; then the
    // default stream waits for it all. A fork this forward does not take runs first, in order.
    const int dev = q.device().index();
    const bool streamed = nseg == 1 && fork && fork->pending() &&
                          walk_can_stream(p.fwd_wgmma != 0, p.v_split, two_pass,
                                          static_cast<long long>(p.B) * p.H * p.v_split, sm_count(dev));
    if (fork && !streamed) fork->join();
    if (nseg > 1) {
      segmented_forward(q, k, w, u, G, h0, scale, nseg, v_split, hs, o, ht);
    } else if (!streamed) {
      check_params(p, false);
      check_cuda(kn::launch_delta_chunk_fwd(p), kOp, "launch_delta_chunk_fwd");
    } else {
      fork->preload();
      // The streamed output pass (out_stream): o of each chunk as soon as the walk has stored it, on the
      // low-priority stream after the producer (so that its waiting blocks never hold SMs that the producer,
      // which the walk waits for, needs); the walk posts per chunk in `sync`, zeroed here on the default
      // stream before either side stream starts (a reused buffer's stale counts would let it run ahead).
      const bool stream_out = out_stream(p.B, p.H, p.v_split, dev);
      torch::Tensor sync;
      if (stream_out) {
        sync = torch::zeros({1 + p.B * p.H * nt}, q.options().dtype(torch::kInt));
        p.walk_sync = static_cast<int*>(sync.data_ptr()), p.sync_give_up = sync_give_up();
      }
      cudaStream_t hi = side_stream(dev, true), lo = side_stream(dev, false);
      cudaEvent_t start = record_event(nullptr, kOp);  // both after the default stream's work so far
      check_cuda(cudaStreamWaitEvent(hi, start, 0), kOp, "cudaStreamWaitEvent");
      check_cuda(cudaStreamWaitEvent(lo, start, 0), kOp, "cudaStreamWaitEvent");
      check_cuda(cudaEventDestroy(start), kOp, "cudaEventDestroy");
      p.stream = hi;
      p.wy_ready = static_cast<const int*>(fork->ready.data_ptr());
      p.fwd_part = 1, p.walk_alone = walk_alone();
      check_params(p, false);
      check_cuda(kn::launch_delta_chunk_fwd(p), kOp, "launch_delta_chunk_fwd (the walk)");
      fork->launch(lo);
      p.wy_ready = nullptr, p.walk_alone = 0;
      if (stream_out) {
        p.stream = lo, p.fwd_part = 3;
        check_cuda(kn::launch_delta_chunk_fwd(p), kOp, "launch_delta_chunk_fwd (the streamed output pass)");
        stream_after(hi, lo, kOp);
        p.stream = hi, p.fwd_part = 4;  // the chunks the streamed pass gave up, if any
        check_cuda(kn::launch_delta_chunk_fwd(p), kOp,
                   "launch_delta_chunk_fwd (the rest of the output pass)");
      } else {
        check_cuda(cudaStreamWaitEvent(hi, fork->done, 0), kOp, "cudaStreamWaitEvent");
        p.fwd_part = 2;
        check_cuda(kn::launch_delta_chunk_fwd(p), kOp, "launch_delta_chunk_fwd (the output pass)");
      }
      stream_after(nullptr, hi, kOp);  // after the output pass, which waited for the preparation
      fork->join();                    // (so its wait is already covered; releases the event and tensors)
    }
    if (!grad) hs = torch::empty({0}, q.options());  // no backward follows: nothing to keep
    ctx->save_for_backward({q, k, w, u, G, h0, hs});
    ctx->saved_data["scale"] = scale;
    // The two-pass backward's walk takes a V-split given by the caller or ATTNLAB_DELTA_V_SPLIT; else (0) it
    // picks its own by the shape, since a wgmma forward runs unsplit whatever the backward's walk wants.
    const bool split_given = v_split > 0 || std::getenv("ATTNLAB_DELTA_V_SPLIT");
    ctx->saved_data["v_split"] = static_cast<int64_t>(split_given ? p.v_split : 0);
    return {o, ht};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &w = s[2], &u = s[3], &G = s[4], &h0 = s[5], &hs = s[6];
    ATTNLAB_CHECK(
        hs.numel() > 0,
        "{}: backward of a forward that ran without grad (no state was saved); run the forward with "
        "grad mode on and an input that requires grad",
        kOp);
    DeviceScope device(q.device().index());
    FwdChoice one;  // v_split 1, no wgmma walk: forward-only settings (the backward's are set below)
    auto p = make_params(q, k, w, u, G, h0, hs, ctx->saved_data["scale"].toDouble(), one);
    torch::Tensor dout =
        grads[0].defined() ? grads[0].to(q.scalar_type()).contiguous() : torch::zeros_like(u);
    torch::Tensor dht = grads[1].defined() ? grads[1].to(torch::kFloat).contiguous() : torch::Tensor();
    auto dq = torch::empty_like(q), dk = torch::empty_like(k), dw = torch::empty_like(w),
         du = torch::empty_like(u);
    auto f32opt = q.options().dtype(torch::kFloat);
    torch::Tensor dG = given(G) ? torch::empty(G.sizes(), f32opt) : torch::Tensor();
    torch::Tensor dh0 = given(h0) ? torch::empty(h0.sizes(), f32opt) : torch::Tensor();
    p.dout = dout.data_ptr(), p.dht = dht.defined() ? static_cast<const float*>(dht.data_ptr()) : nullptr;
    p.dq = dq.data_ptr(), p.dk = dk.data_ptr(), p.dw = dw.data_ptr(), p.du = du.data_ptr();
    p.dG = f32(dG), p.dh0 = f32(dh0);
    // The two-pass backward (the walk, split over the value columns, keeps only dS and dU; one block per
    // chunk then forms dq, dk, dW, dG) where delta_chunk_default_two_pass_bwd says it is the faster, or as
    // ATTNLAB_DELTA_BWD=one_pass|two_pass says; dhs is a workspace, as vn above.
    torch::Tensor dhs;
    const char* form = std::getenv("ATTNLAB_DELTA_BWD");
    const int sms = sm_count(q.device().index());
    // The segmented backward (ATTNLAB_DELTA_SEGMENTS, as the forward) takes the two-pass form, its choices
    // made for the segments' B nseg walks.
    const int nseg = segments(p.T);
    const int Bw = p.B * nseg;
    const bool two_pass = nseg > 1 || (form ? std::string(form) == "two_pass"
                                            : kn::delta_chunk_default_two_pass_bwd(p.B, p.H, p.V, sms));
    if (two_pass) {
      const auto split = ctx->saved_data["v_split"].toInt();
      p.v_split = nseg > 1    ? segmented_v_split(split, static_cast<int64_t>(Bw) * p.H, p.V, sms)
                  : split > 0 ? static_cast<int>(split)
                              : kn::delta_chunk_default_v_split(p.B, p.H, p.V, sms);
      // ATTNLAB_DELTA_BWD_OUT=wide: the second kernel's older layout (every tile resident), for comparison.
      const char* out_form = std::getenv("ATTNLAB_DELTA_BWD_OUT");
      p.bwd_out_wide = out_form && std::string(out_form) == "wide";
      dhs = torch::empty(hs.sizes(), hs.options()), p.dhs = dhs.data_ptr();
      // P^T do before the walk where delta_chunk_default_bwd_local says, or as ATTNLAB_DELTA_BWD_LOCAL=0|1
      // says (the same bits either way).
      bool local = kn::delta_chunk_default_bwd_local(Bw, p.H, p.V, p.v_split, given(G), sms);
      if (const auto on = env_switch("ATTNLAB_DELTA_BWD_LOCAL")) local = *on;
      p.bwd_local = local ? 1 : 0;
      // The walk on wgmma where delta_chunk_default_bwd_walk_wgmma says (V-split 2, no bwd_local, no gate,
      // an sm_90a build), or as ATTNLAB_DELTA_BWD_WALK_WGMMA=0|1 says (read per call: the bench and a test
      // switch it).
      bool walk_wgmma = p.K == 128 && p.V == 128 && p.v_split == 2 && !local && kn::linear_chunk_has_wgmma();
      if (const auto on = env_switch("ATTNLAB_DELTA_BWD_WALK_WGMMA")) {
        walk_wgmma = walk_wgmma && *on;
      } else {
        walk_wgmma = walk_wgmma &&
                     kn::delta_chunk_default_bwd_walk_wgmma(Bw, p.H, p.V, p.v_split, local, given(G), sms);
      }
      p.bwd_walk_wgmma = walk_wgmma ? 1 : 0;
    }
    // The one-pass backward on wgmma (K = V = 128, an sm_90a build) unless ATTNLAB_DELTA_BWD_WGMMA=0 (read
    // per call: the bench and a test switch it).
    bool bwd_wgmma = !two_pass && p.K == 128 && p.V == 128 && kn::linear_chunk_has_wgmma();
    if (const auto on = env_switch("ATTNLAB_DELTA_BWD_WGMMA")) bwd_wgmma = bwd_wgmma && *on;
    p.bwd_wgmma = bwd_wgmma ? 1 : 0;
    // The streamed backward (docs/kernels.md "Streamed backward"): the output pass on a low-priority stream
    // behind the walk on a high-priority one, each chunk as soon as the walk's slices are done with it.
    // Where delta_chunk_default_stream_bwd says (V = 128, the mma.sync walk's blocks leave half the SMs), or
    // as ATTNLAB_DELTA_BWD_STREAM=0|1 says (read per call: the bench and a test switch it).
    bool streamed = nseg == 1 && two_pass && !p.bwd_walk_wgmma;
    if (const auto on = env_switch("ATTNLAB_DELTA_BWD_STREAM")) {
      streamed = streamed && *on;
    } else {
      streamed = streamed && kn::delta_chunk_default_stream_bwd(p.B, p.H, p.V, p.v_split, two_pass,
                                                                p.bwd_walk_wgmma != 0, sms);
    }
    if (nseg > 1) {
      segmented_backward(p, q, dht, dh0, nseg);
    } else if (!streamed) {
      check_params(p, true);
      check_cuda(kn::launch_delta_chunk_bwd(p), kOp, "launch_delta_chunk_bwd");
    } else {
      const int dev = q.device().index();
      // zeroed on the default stream, which both side streams follow; freed at return, after the default
      // stream was made to wait for them
      auto sync = torch::zeros({1 + p.B * p.H * hs.size(2)}, q.options().dtype(torch::kInt));
      p.walk_sync = static_cast<int*>(sync.data_ptr()), p.sync_give_up = sync_give_up();
      cudaStream_t hi = side_stream(dev, true), lo = side_stream(dev, false);
      stream_after(hi, nullptr, kOp);
      p.stream = hi, p.bwd_part = 1;  // P^T do (if bwd_local), which the output pass overwrites
      check_params(p, true);
      check_cuda(kn::launch_delta_chunk_bwd(p), kOp, "launch_delta_chunk_bwd (P^T do)");
      stream_after(lo, hi, kOp);  // the walk and the output pass become ready together; the walk first
      p.bwd_part = 2, p.walk_alone = walk_alone();
      check_cuda(kn::launch_delta_chunk_bwd(p), kOp, "launch_delta_chunk_bwd (the walk)");
      p.walk_alone = 0;
      p.stream = lo, p.bwd_part = 3;
      check_cuda(kn::launch_delta_chunk_bwd(p), kOp, "launch_delta_chunk_bwd (the streamed output pass)");
      stream_after(hi, lo, kOp);
      p.stream = hi, p.bwd_part = 4;  // the chunks the streamed pass gave up, if any
      check_cuda(kn::launch_delta_chunk_bwd(p), kOp, "launch_delta_chunk_bwd (the rest of the output pass)");
      stream_after(nullptr, hi, kOp);
    }
    return {dq, dk, dw, du, dG, dh0, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::string delta_chunk_unusable_reason(const RecurrentArgs& a, bool gated) {
  // The q, k, v, h0 conditions are linear_chunk's; beta and g are checked by the op.
  RecurrentArgs plain = a;
  plain.g = torch::Tensor();
  auto why = linear_chunk_unusable_reason(plain, /*gated=*/false);
  if (!why.empty()) return why;
  if (!a.beta.defined() || !a.beta.is_cuda()) return "beta must be a CUDA tensor";
  if (gated && (!a.g.defined() || !a.g.is_cuda())) return "g must be a CUDA tensor";
  return {};
}

std::vector<torch::Tensor> delta_chunk_recurrence(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& w, const torch::Tensor& u,
                                                  const torch::Tensor& G, const torch::Tensor& h0,
                                                  double scale, int64_t v_split, WyFork* fork) {
  auto none = torch::empty({0}, q.options().dtype(torch::kFloat));
  const auto dt = q.scalar_type();
  // Whether a backward can follow, decided here: inside forward grad mode is off and inputs keep their flag.
  bool grad = false;
  if (torch::autograd::GradMode::is_enabled())
    for (const auto* t : {&q, &k, &w, &u, &G, &h0}) grad = grad || (t->defined() && t->requires_grad());
  return DeltaChunkFunction::apply(
      q.contiguous(), k.to(dt).contiguous(), w.to(dt).contiguous(), u.to(dt).contiguous(),
      G.defined() ? G.to(torch::kFloat).contiguous() : none,
      h0.defined() ? h0.to(torch::kFloat).contiguous() : none, scale, v_split, grad, fork);
}

bool delta_chunk_streams_wy(const torch::Tensor& q, const torch::Tensor& v, bool gated) {
  DeviceScope device(q.device().index());
  return stream_wy(fwd_choice(q, v, gated, 0), static_cast<int>(q.size(0)), static_cast<int>(q.size(2)),
                   q.device().index());
}

}  // namespace attnlab::ops::cuda
