// Forward of the GLA chunk kernels (params.h): the segment-state kernel, the scan over segments, and the
// output kernel. Also the parameter checks shared with the backward.
#include <string>

#include "kernels/gla_chunk/gla_chunk_kernels.cuh"

namespace attnlab::kernels {

int gla_chunk_default_seg_chunks(int B, int T, int H, int num_sms) {
  return linear_chunk_default_seg_chunks(B, T, H, num_sms);
}

std::string gla_chunk_check(const GlaChunkParams& p, bool backward) {
  if (auto why = linear_head_check(p.dtype, p.K, p.V); !why.empty()) return why;
  if (p.B < 1 || p.H < 1 || p.T < 0) return "B and H must be >= 1 and T >= 0";
  if (p.seg_chunks < 1) return "seg_chunks must be >= 1";
  if (!p.q || !p.k || !p.v || !p.g) return "q, k, v and g must be set";
  if (!backward && !p.o) return "o must be set";
  const int n_seg = gla_chunk_segments(p);
  if (n_seg > 1 && (!p.seg_states || !p.seg_gate))
    return "seg_states and seg_gate must be set when n_seg > 1";
  if (backward) {
    if (!p.dout || !p.dq || !p.dk || !p.dv || !p.dg) return "dout, dq, dk, dv and dg must be set";
    if (!p.chunk_states) return "chunk_states must be set";
    if (!p.scores) return "scores (the forward's in-chunk scores) must be set";
    if (n_seg > 1 && !p.dseg_states) return "dseg_states must be set when n_seg > 1";
  }
  return {};
}

namespace gla_chunk {
namespace {

template <int kD, typename T>
cudaError_t run_fwd(const GlaChunkParams& p) {
  const int n_seg = gla_chunk_segments(p);
  if (n_seg == 0) return cudaSuccess;
  cudaError_t err;
  if (n_seg > 1) {
    if ((err = launch_kernel(&gla_fwd_kernel<kD, T, false>, dim3(n_seg - 1, p.H, p.B),
                             FwdSmem<kD, false>::kBytes, p)))
      return err;
    const int kv4 = kD * kD / 4;
    gla_scan_fwd_kernel<kD><<<dim3((kv4 + 255) / 256, p.B * p.H), 256, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  return launch_kernel(&gla_fwd_kernel<kD, T, true>, dim3(n_seg, p.H, p.B), FwdSmem<kD, true>::kBytes, p);
}

}  // namespace
}  // namespace gla_chunk

cudaError_t launch_gla_chunk_fwd(const GlaChunkParams& p) {
  if (!gla_chunk_check(p, false).empty()) return cudaErrorInvalidValue;
  using namespace gla_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] { return run_fwd<kD, T>(p); });
}

}  // namespace attnlab::kernels
