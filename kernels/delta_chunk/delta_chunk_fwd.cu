// The delta_chunk forward's launcher (params.h): the one-pass walk, or the walk and the output pass, on
// mma.sync or wgmma by the parameters.
#include "kernels/delta_chunk/delta_chunk_fwd_wgmma.cuh"
#include "kernels/delta_chunk/delta_chunk_kernels.cuh"

namespace attnlab::kernels {

namespace delta_chunk {
namespace {

template <int kD, int kVb, typename T, bool kGated>
cudaError_t launch_fwd_gated(const DeltaChunkParams& p) {
  const dim3 grid(kD / kVb, p.H, p.B);
  if (!p.vn && !p.state_only) {  // one pass: the walk computes o (nothing to do for fwd_part 2 and up)
    if (p.fwd_part >= 2) return cudaSuccess;
    if constexpr (kD == 128 && kVb == 128) {
      if (p.fwd_wgmma)
        return launch_kernel(&delta_fwd_wgmma_kernel<T, kGated, true>, grid, WgFwdSmem<true>::kBytes, p,
                             WgFwdSmem<true>::kThreads);
    }
    if constexpr (kD == 128 && kVb == 64) {
      if (p.fwd_wgmma)  // half the value columns per block (delta_chunk_fwd_wgmma.cuh)
        return launch_kernel(&delta_fwd_wgmma_half_kernel<T, kGated, true>, grid, WgFwdHalfSmem<true>::kBytes,
                             p, WgFwdHalfSmem<true>::kThreads);
    }
    return launch_kernel(&delta_fwd_kernel<kD, kVb, T, kGated, true>, grid,
                         walk_smem(p, FwdSmem<kD, kVb>::kOutBytes), p);
  }
  // two passes: the walk (states and vn), then o for every chunk at once; params.h: fwd_part
  if (p.fwd_part <= 1) {
    auto walk = [&]() -> cudaError_t {
      if constexpr (kD == 128 && kVb == 128) {
        if (p.fwd_wgmma)
          return launch_kernel(&delta_fwd_wgmma_kernel<T, kGated, false>, grid, WgFwdSmem<false>::kBytes, p,
                               WgFwdSmem<false>::kThreads);
      }
      if constexpr (kD == 128 && kVb == 64) {
        if (p.fwd_wgmma)  // the half-V state pass, which streams as the mma.sync one does (wy_ready,
                          // walk_sync)
          return launch_kernel(&delta_fwd_wgmma_half_kernel<T, kGated, false>, grid,
                               walk_smem(p, WgFwdHalfSmem<false>::kBytes), p, WgFwdHalfSmem<false>::kThreads);
      }
      return launch_kernel(&delta_fwd_kernel<kD, kVb, T, kGated, false>, grid,
                           walk_smem(p, FwdSmem<kD, kVb, false>::kBytes), p);
    };
    const cudaError_t err = walk();
    if (err != cudaSuccess || p.fwd_part == 1) return err;
  }
  // streamed (part 3): over (B * H, chunks), chunk 0 first (delta_out_kernel)
  const int nt = linear_chunk_count(p.T);
  const dim3 out_grid = p.fwd_part == 3 ? dim3(static_cast<unsigned>(p.B) * p.H, nt) : dim3(nt, p.H, p.B);
  return launch_kernel(&delta_out_kernel<kD, T, kGated>, out_grid, OutSmem<kD>::kBytes, p);
}

template <int kD, int kVb, typename T>
cudaError_t launch_fwd(const DeltaChunkParams& p) {
  return p.G ? launch_fwd_gated<kD, kVb, T, true>(p) : launch_fwd_gated<kD, kVb, T, false>(p);
}

}  // namespace
}  // namespace delta_chunk

cudaError_t launch_delta_chunk_fwd(const DeltaChunkParams& p) {
  if (!delta_chunk_check(p, false).empty()) return cudaErrorInvalidValue;
  using namespace delta_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] {
    if (p.v_split == 2) return launch_fwd<kD, kD / 2, T>(p);
    if constexpr (kD == 128) {
      if (p.v_split == 4) return launch_fwd<kD, 32, T>(p);
    }
    return launch_fwd<kD, kD, T>(p);
  });
}

}  // namespace attnlab::kernels
