// Forward of the chunked linear / simple-GLA kernels (params.h): the segment-state kernel, the scan over
// segments, and the output kernel. Also the parameter checks and workspace sizes shared with the backward.
#include <algorithm>
#include <string>

#include "kernels/linear_chunk/linear_chunk_common.cuh"
#include "kernels/linear_chunk/linear_chunk_fwd_wgmma.cuh"
#include "kernels/linear_chunk/linear_chunk_kernels.cuh"
#include "kernels/linear_chunk/linear_chunk_state_wgmma.cuh"

namespace attnlab::kernels {

int linear_chunk_wave_seg_chunks(int B, int T, int H, int num_sms, int walk_blocks_per_sm,
                                 double state_cost) {
  const int nt = linear_chunk_count(T);
  if (nt <= 1) return 1;
  const long long heads = static_cast<long long>(B) * H, sms = std::max(num_sms, 1);
  const long long slots = sms * std::max(walk_blocks_per_sm, 1);
  if (heads >= slots) return nt;
  // Segments shorter than 4 chunks make the segment-state pass (which reads k and v once more) cost more
  // than the parallelism gains.
  const int max_seg = std::max(1, nt / 4);
  // time ~ (waves of the state passes * state_cost + waves of the walks) * segment length; ties go to fewer
  // segments (less scan, fewer saved states).
  auto waves = [&](long long blocks, long long per_wave) { return (blocks + per_wave - 1) / per_wave; };
  int best = nt;
  double best_cost = static_cast<double>(nt);  // one segment: one wave of the whole sequence
  for (int n = 2; n <= max_seg; ++n) {
    const int len = (nt + n - 1) / n, n_eff = (nt + len - 1) / len;
    if (n_eff != n) continue;  // the same split as a smaller n
    const double cost =
        (state_cost * waves(heads * (n - 1), 2 * sms) + waves(heads * n, slots)) * len * (1.0 + 1e-3 * n);
    if (cost < best_cost) best_cost = cost, best = len;
  }
  return best;
}

int linear_chunk_default_seg_chunks(int B, int T, int H, int num_sms, int blocks_per_sm) {
  const int nt = linear_chunk_count(T);
  if (nt <= 1) return 1;
  const long long heads = static_cast<long long>(B) * H, sms = std::max(num_sms, 1);
  if (blocks_per_sm >= 2) {
    const int max_seg = std::max(1, nt / 4);
    const long long target = 2LL * sms;  // two blocks per SM over the launch
    if (heads >= target) return nt;
    const long long n_seg = std::min<long long>((target + heads - 1) / heads, max_seg);
    return static_cast<int>((nt + n_seg - 1) / n_seg);
  }
  // One block per SM: the forward's state pass costs 0.9 of a wave of the output pass (ncu, H200 run t).
  return linear_chunk_wave_seg_chunks(B, T, H, num_sms, 1, 0.9);
}

std::string linear_chunk_check(const LinearChunkParams& p, bool backward) {
  if (p.state_wgmma) {
    if (!linear_chunk_has_wgmma())
      return "state_wgmma: this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)";
    if (p.K != p.V || (p.K != 64 && p.K != 128))
      return "state_wgmma takes K = V = 64 or 128, got K = " + std::to_string(p.K) +
             ", V = " + std::to_string(p.V);
  }
  if (backward ? p.bwd_wgmma : p.fwd_wgmma) {
    const char* what = backward ? "bwd_wgmma" : "fwd_wgmma";
    if (!linear_chunk_has_wgmma())
      return std::string(what) + ": this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)";
    // The forward's output pass on wgmma takes D = 64 and 128, the backward's walks D = 128.
    if (p.K != p.V || (backward ? p.K != 128 : (p.K != 64 && p.K != 128)))
      return std::string(what) + " takes K = V = " + (backward ? "128" : "64 or 128") +
             ", got K = " + std::to_string(p.K) + ", V = " + std::to_string(p.V);
  }
  if (auto why = linear_head_check(p.dtype, p.K, p.V); !why.empty()) return why;
  if (p.B < 1 || p.H < 1 || p.T < 0) return "B and H must be >= 1 and T >= 0";
  if (p.seg_chunks < 1) return "seg_chunks must be >= 1";
  if (!p.q || !p.k || !p.v) return "q, k and v must be set";
  if (!backward && !p.o) return "o must be set";
  const int n_seg = linear_chunk_segments(p);
  if (n_seg > 1 && (!p.seg_states || !p.seg_gate))
    return "seg_states and seg_gate must be set when n_seg > 1";
  if (backward) {
    if (!p.dout || !p.dq || !p.dk || !p.dv) return "dout, dq, dk and dv must be set";
    if (p.g && (!p.dg || !p.dg_work || !p.chunk_states || !p.chunk_dg))
      return "dg, dg_work, chunk_states and chunk_dg must be set when g is";
    if (n_seg > 1 && !p.dseg_states) return "dseg_states must be set when n_seg > 1";
  }
  return {};
}

size_t linear_chunk_fwd_workspace_floats(const LinearChunkParams& p) {
  const size_t n_seg = static_cast<size_t>(linear_chunk_segments(p));
  const size_t bh = static_cast<size_t>(p.B) * p.H;
  return bh * n_seg * p.K * p.V + bh * n_seg;
}

size_t linear_chunk_bwd_workspace_floats(const LinearChunkParams& p) {
  const size_t n_seg = static_cast<size_t>(linear_chunk_segments(p));
  const size_t bh = static_cast<size_t>(p.B) * p.H;
  const size_t nt = static_cast<size_t>(linear_chunk_count(p.T));
  return bh * n_seg * p.K * p.V + bh * 2 * static_cast<size_t>(p.T) + bh * nt * p.K * p.V / 2 + bh * nt;
}

namespace linear_chunk {
namespace {

template <int kD, typename T, bool kGated>
cudaError_t run_fwd(const LinearChunkParams& p) {
  const int n_seg = linear_chunk_segments(p);
  if (n_seg == 0) return cudaSuccess;
  cudaError_t err;
  if (n_seg > 1) {
    if (p.state_wgmma) {
      using L = WgStateSmem<kD>;
      if ((err = launch_kernel(&state_wgmma_kernel<kD, T, kGated, false>, dim3(n_seg - 1, p.H, p.B),
                               L::kBytes, p, L::kThreads)))
        return err;
    } else if ((err = launch_kernel(&fwd_kernel<kD, T, kGated, false>, dim3(n_seg - 1, p.H, p.B),
                                    FwdSmem<kD, false>::kBytes, p))) {
      return err;
    }
    const int kv4 = kD * kD / 4;
    scan_fwd_kernel<kGated><<<dim3((kv4 + 255) / 256, p.B * p.H), 256, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  if (p.fwd_wgmma)
    return launch_kernel(&fwd_wgmma_kernel<kD, T, kGated>, dim3(n_seg, p.H, p.B), WgFwdSmem<kD>::kBytes, p,
                         WgFwdSmem<kD>::kThreads);
  return launch_kernel(&fwd_kernel<kD, T, kGated, true>, dim3(n_seg, p.H, p.B), FwdSmem<kD, true>::kBytes, p);
}

}  // namespace
}  // namespace linear_chunk

cudaError_t launch_linear_chunk_fwd(const LinearChunkParams& p) {
  if (!linear_chunk_check(p, false).empty()) return cudaErrorInvalidValue;
  using namespace linear_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD,
                             [&] { return p.g ? run_fwd<kD, T, true>(p) : run_fwd<kD, T, false>(p); });
}

}  // namespace attnlab::kernels
