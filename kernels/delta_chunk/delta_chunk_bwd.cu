// The delta_chunk backward's launcher (params.h): the one-pass kernel, or the two-pass form (P^T do, the
// walk, the output pass), on mma.sync or wgmma by the parameters.
#include "kernels/delta_chunk/delta_chunk_bwd_walk_wgmma.cuh"
#include "kernels/delta_chunk/delta_chunk_bwd_wgmma.cuh"
#include "kernels/delta_chunk/delta_chunk_kernels.cuh"

namespace attnlab::kernels {

namespace delta_chunk {
namespace {

template <int kD, int kVb, typename T, bool kGated>
cudaError_t launch_bwd_two_pass(const DeltaChunkParams& p) {
  const int nt = linear_chunk_count(p.T), part = p.bwd_part;  // params.h: bwd_part
  const dim3 grid(nt, p.H, p.B), walk(kD / kVb, p.H, p.B);
  cudaError_t err = cudaSuccess;
  if (p.bwd_local && (part == 0 || part == 1)) {  // P^T do of every chunk first, for the walk
                                                  // (delta_chunk_kernels.cuh, "two-pass backward")
    err = launch_kernel(&delta_bwd_local_kernel<kD, T, kGated>, grid, BwdLocalSmem<kD>::kBytes, p);
    if (err != cudaSuccess) return err;
  }
  if (part == 1) return err;
  const bool walk_now = part == 0 || part == 2;  // parts 3 and 4: the output pass only
  if (walk_now && p.bwd_local) {
    err = launch_kernel(&delta_bwd_walk_kernel<kD, kVb, T, kGated, true>, walk,
                        walk_smem(p, BwdWalkSmem<kD, kVb, true>::kBytes), p);
  } else if (walk_now) {
    err = cudaErrorInvalidValue;
    if constexpr (kD == 128 && kVb == 64) {
      if (p.bwd_walk_wgmma)  // on wgmma (delta_chunk_bwd_walk_wgmma.cuh)
        err = launch_kernel(&delta_bwd_walk_wgmma_kernel<T, kGated>, walk, WgBwdWalkSmem<kGated>::kBytes, p,
                            WgBwdWalkSmem<kGated>::kThreads);
    }
    if (!p.bwd_walk_wgmma)
      err = launch_kernel(&delta_bwd_walk_kernel<kD, kVb, T, kGated, false>, walk,
                          walk_smem(p, BwdWalkSmem<kD, kVb, false>::kBytes), p);
  }
  if (err != cudaSuccess || part == 2) return err;
  // The output pass; streamed (part 3) over (B * H, chunks), the last chunk first (delta_bwd_out_kernel).
  const dim3 out_grid = part == 3 ? dim3(static_cast<unsigned>(p.B) * p.H, nt) : grid;
  // The lean layout at D = 128 (two blocks per SM; at D = 64 all tiles fit three blocks), unless
  // p.bwd_out_wide.
  if constexpr (kD == 128) {
    if (!p.bwd_out_wide)
      return launch_kernel(&delta_bwd_out_kernel<kD, T, kGated, true>, out_grid, BwdOutSmem<kD, true>::kBytes,
                           p);
  }
  return launch_kernel(&delta_bwd_out_kernel<kD, T, kGated, false>, out_grid, BwdOutSmem<kD, false>::kBytes,
                       p);
}

template <int kD, int kVb, typename T>
cudaError_t launch_bwd_two_pass(const DeltaChunkParams& p) {
  return p.G ? launch_bwd_two_pass<kD, kVb, T, true>(p) : launch_bwd_two_pass<kD, kVb, T, false>(p);
}

}  // namespace
}  // namespace delta_chunk

cudaError_t launch_delta_chunk_bwd(const DeltaChunkParams& p) {
  if (!delta_chunk_check(p, true).empty()) return cudaErrorInvalidValue;
  using namespace delta_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] {
    if (p.dhs) {
      if (p.v_split == 2) return launch_bwd_two_pass<kD, kD / 2, T>(p);
      if constexpr (kD == 128) {
        if (p.v_split == 4) return launch_bwd_two_pass<kD, 32, T>(p);
      }
      return launch_bwd_two_pass<kD, kD, T>(p);
    }
    const dim3 grid(1, p.H, p.B);
    if constexpr (kD == 128) {
      if (p.bwd_wgmma)
        return p.G ? launch_kernel(&delta_bwd_wgmma_kernel<T, true>, grid, WgBwdSmem::kBytes, p,
                                   WgBwdSmem::kThreads)
                   : launch_kernel(&delta_bwd_wgmma_kernel<T, false>, grid, WgBwdSmem::kBytes, p,
                                   WgBwdSmem::kThreads);
    }
    return p.G ? launch_kernel(&delta_bwd_kernel<kD, T, true>, grid, BwdSmem<kD>::kBytes, p)
               : launch_kernel(&delta_bwd_kernel<kD, T, false>, grid, BwdSmem<kD>::kBytes, p);
  });
}

}  // namespace attnlab::kernels
