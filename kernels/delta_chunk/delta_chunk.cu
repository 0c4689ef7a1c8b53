// Checks and default rules of the delta_chunk kernels (params.h), and the segmented forms' correction
// kernel. The launchers of the forward and backward kernels are in delta_chunk_fwd.cu and delta_chunk_bwd.cu:
// three translation units that compile in parallel (the one file they were took 57 s for sm_90a on 2 cores,
// the longest of the kernels; now 34 s for the longest part).
#include <string>

#include "kernels/delta_chunk/delta_chunk_kernels.cuh"

namespace attnlab::kernels {

std::string delta_chunk_check(const DeltaChunkParams& p, bool backward) {
  if (auto why = linear_grid_check(p.dtype, p.B, p.T, p.H, p.K, p.V); !why.empty()) return why;
  if (!p.q || !p.k || !p.w || !(p.u || (!backward && p.state_only && p.fwd_part == 1)))
    return "q, k, w and u must be set (u may be null only in the state_only walk, fwd_part 1)";
  if (!backward && p.state_only) {
    if (p.state_only != 1) return "state_only must be 0 or 1, got " + std::to_string(p.state_only);
    if (p.vn || !p.hs || p.fwd_wgmma || p.wy_ready || p.walk_sync || !(p.fwd_part == 1 || p.fwd_part == 2))
      return "state_only takes the mma.sync walk (fwd_part 1) or the output pass (fwd_part 2) alone, with hs "
             "set and no vn, wy_ready or walk_sync";
  }
  if (!p.hs && (backward || p.vn)) return "hs must be set for the backward and the two-pass forward";
  if (!(p.v_split == 1 || p.v_split == 2 || (p.v_split == 4 && p.V == 128)))
    return "v_split must be 1, 2, or 4 at V = 128 (slices of at least 32 columns); got " +
           std::to_string(p.v_split) + " at V = " + std::to_string(p.V);
  if (!backward && !p.o) return "o must be set";
  if (p.walk_alone != 0 && p.walk_alone != 1)
    return "walk_alone must be 0 or 1, got " + std::to_string(p.walk_alone);
  if (!backward && (p.wy_ready || p.fwd_part) && p.fwd_wgmma && !(p.vn && p.v_split == 2))
    return "wy_ready and fwd_part take the mma.sync walk or the half-V wgmma state pass (fwd_wgmma 0, or vn "
           "set and v_split 2)";
  if (!backward && (p.fwd_part < 0 || p.fwd_part > 4))
    return "fwd_part must be 0 .. 4, got " + std::to_string(p.fwd_part);
  if (!backward && (p.fwd_part == 3 || p.fwd_part == 4) && !(p.walk_sync && p.vn))
    return "fwd_part 3 and 4 need walk_sync and the two-pass forward (vn set)";
  if (!backward && p.walk_sync && (!p.vn || (p.fwd_wgmma && p.v_split != 2)))
    return "walk_sync in the forward takes the two-pass form's mma.sync walk or half-V wgmma state pass (vn "
           "set; fwd_wgmma 0, or v_split 2)";
  if (p.walk_sync && linear_chunk_count(p.T) > 65535)
    return "walk_sync: at most 65535 chunks (T <= 4194240), got T = " + std::to_string(p.T);
  if (!backward && p.fwd_wgmma) {
    if (!linear_chunk_has_wgmma())
      return "fwd_wgmma: this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)";
    if (p.K != 128 || p.v_split > 2)
      return "fwd_wgmma takes K = V = 128 and v_split 1 or 2, got K = " + std::to_string(p.K) + ", v_split " +
             std::to_string(p.v_split);
  }
  if (backward) {
    if (!p.dout || !p.dq || !p.dk || !p.dw || !p.du) return "dout, dq, dk, dw and du must be set";
    if (p.G && !p.dG) return "dG must be set when G is";
    if (p.bwd_local && !p.dhs) return "bwd_local takes the two-pass backward (dhs set)";
    if (p.bwd_part < 0 || p.bwd_part > 4) return "bwd_part must be 0 .. 4, got " + std::to_string(p.bwd_part);
    if ((p.bwd_part || p.walk_sync) && !p.dhs)
      return "bwd_part and walk_sync take the two-pass backward (dhs set)";
    if (p.bwd_part == 3 && !p.walk_sync) return "bwd_part 3 needs walk_sync";
    if (p.walk_sync && p.bwd_walk_wgmma) return "walk_sync takes the mma.sync walk (bwd_walk_wgmma 0)";
    if (p.bwd_walk_wgmma) {
      if (!linear_chunk_has_wgmma())
        return "bwd_walk_wgmma: this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)";
      if (p.K != 128 || !p.dhs || p.v_split != 2 || p.bwd_local)
        return "bwd_walk_wgmma takes K = V = 128 and the two-pass backward (dhs set) with v_split 2 and "
               "bwd_local 0, got K = " +
               std::to_string(p.K) + ", v_split " + std::to_string(p.v_split) + ", bwd_local " +
               std::to_string(p.bwd_local) + (p.dhs ? "" : ", dhs null");
    }
    if (p.bwd_wgmma) {
      if (!linear_chunk_has_wgmma())
        return "bwd_wgmma: this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)";
      if (p.K != 128 || p.dhs)
        return "bwd_wgmma takes K = V = 128 and the one-pass backward (dhs null), got K = " +
               std::to_string(p.K) + (p.dhs ? " with dhs set" : "");
    }
  }
  return {};
}

namespace {
// The 64-column split alone: 2 at V = 128 when B * H blocks would leave SMs idle.
int split_64(long long heads, int V, int num_sms) {
  return V == 128 && heads < 2LL * num_sms ? 2 : 1;
}
}  // namespace

int delta_chunk_default_v_split(int B, int H, int V, int num_sms) {
  const long long heads = static_cast<long long>(B) * H;
  // 32-column slices only where even so the blocks stay within one wave (the walk runs one block per SM):
  // they shorten each chunk's step (half the state products) but not the reads of q, k, w.
  if (V == 128 && 4 * heads <= num_sms) return 4;
  if (V == 64 && 2 * heads <= num_sms) return 2;
  return split_64(heads, V, num_sms);
}

namespace {
// Whether B * H blocks fill at least 9 in 10 multiprocessors: 128 heads on the H200's 132 count as full (run
// 2026-12-03j, below).
bool heads_fill(int B, int H, int num_sms) {
  return 10LL * B * H >= 9LL * num_sms;
}
}  // namespace

int delta_chunk_default_fwd_wgmma(int B, int H, int V, int num_sms) {
  // Run 2026-12-03j (H200, D = 128, B * T = 32768, H = 16, forward ms forced wgmma / mma.sync V-split; its
  // files were lost, run 2026-12-04a measured the chosen settings again: bench/results/h200-2026-12-04a): 128
  // heads DeltaNet 0.449 / 0.662, gated 0.557 / 0.806; 64 heads DeltaNet 0.631 / 0.650, gated slower on
  // wgmma, and 16 heads much slower (one block per head leaves 7 in 8 SMs idle).
  // The half-V walk (run 2026-12-04a, forward / forward + backward ms against the default then): 64 heads
  // DeltaNet 0.536 / 2.072 against 0.649 / 2.178, gated 0.675 / 2.607 against 0.800 / 2.708; at 32 heads
  // (64 blocks) slower than the mma.sync walk's V-split 4 (DeltaNet 0.815 / 2.569 against 0.782 / 2.500),
  // and at 128 heads and more slower than the whole-V walk (DeltaNet 0.538 against 0.445 at 128).
  if (V != 128) return 0;
  if (heads_fill(B, H, num_sms)) return 1;
  return heads_fill(2 * B, H, num_sms) ? 2 : 0;
}

bool delta_chunk_default_two_pass(int B, int H, int V, bool gated, int num_sms) {
  // H200 (132 SMs), D = 128, B * T = 32768, H = 16, two-pass time / one-pass time: gated 0.87 (256 heads,
  // 512 blocks), 0.87 (128 blocks), 0.59 (32 blocks); without a gate 1.04 at 128 blocks, 0.67 at 32. The
  // gated walk does more per chunk (the decay of the scores and rows), so moving o out of it pays off sooner.
  // (the walk's blocks with the 64-column split alone, as measured then)
  // Gated at D = 64 (bench/results/h200-2026-12-02q, forward without grad): two-pass 0.91, 0.92, 0.83, 0.53
  // of the one-pass time at 1024, 256, 64, 16 heads; at D = 128, 1024 heads, 1.07.
  // Since the one-pass D = 64 walk runs two blocks per SM (run s), run 2026-12-03a turned that at 1024 and
  // 256 heads: gated D = 64 one-pass 0.435 / 0.423 ms against two-pass 0.465 / 0.459 (two-pass still
  // 0.513 / 0.856 against 0.623 / 1.674 at 64 and 16 heads).
  const long long heads = static_cast<long long>(B) * H;
  const long long blocks = heads * split_64(heads, V, num_sms);
  if (!gated) return 2 * blocks < num_sms;
  return V == 64 ? heads <= num_sms : blocks <= 4LL * num_sms;
}

bool delta_chunk_default_two_pass_bwd(int B, int H, int V, int num_sms) {
  // H200 (132 SMs), B * T = 32768, H = 16, forward + backward with the two-pass backward / the one-pass
  // one (bench/results/h200-2026-12-02j): 16 heads 0.58-0.78, 64 heads 0.87-0.96, 256 heads 1.02-1.19,
  // 1024 heads 1.02-1.13, for D = 64 and 128, with and without a gate.
  // At D = 128 and 128 heads, with the wgmma forward (run 2026-12-03j, f+b ms): one-pass 1.787 / two-pass
  // 2.018 without a gate, 2.144 / 2.474 gated; so at V = 128 the one-pass backward from 9 in 10 SMs (D = 64
  // at 128 heads was not measured side by side: it keeps the older bound).
  const long long heads = static_cast<long long>(B) * H;
  return V == 128 ? !heads_fill(B, H, num_sms) : heads <= num_sms;
}

bool delta_chunk_default_bwd_local(int B, int H, int V, int v_split, bool gated, int num_sms) {
  // H200 (132 SMs), B * T = 32768, H = 16, forward + backward in ms with / without (bench/results/
  // h200-2026-12-03h, side by side; D = 64 "without" from run e): D = 128 gated, 16 heads (64 walk blocks)
  // 4.142 / 4.632, 64 heads (128 blocks) 2.812 / 2.776; D = 128 without a gate 3.477 / 3.524 and 2.237 /
  // 2.236; D = 64 gated, 16 and 64 heads (32 and 128 blocks) 2.598 / 3.100 and 1.548 / 1.587; D = 64
  // without a gate 2.239 / 2.141 and 1.242 / 1.231. The gated walk formed the scores with an exp per entry.
  // Since the kernel also forms the walk's Qg (run 2026-12-03i, the walk's per-chunk rewrites of Qg and -W
  // gone): gated D = 128, 32 heads (128 blocks of 32 columns) 2.964 / 3.157 ms, 64 heads (128 blocks of 64)
  // 2.742 / 2.710; without a gate 16 heads (64 blocks) 3.323 / 3.388, 32 heads 2.586 / 2.503.
  const long long blocks = static_cast<long long>(B) * H * v_split;
  if (!gated) return V == 128 && 2 * blocks <= num_sms;
  return V == 64 ? blocks <= num_sms : blocks <= num_sms && (v_split == 4 || 2 * blocks <= num_sms);
}

bool delta_chunk_default_bwd_walk_wgmma(int B, int H, int V, int v_split, bool bwd_local, bool gated,
                                        int num_sms) {
  // Run 2026-12-04d (H200, 64 heads, T = 8192, D = 128, f + b ms on wgmma / mma.sync): DeltaNet 2.010 /
  // 2.067, Gated DeltaNet 2.627 / 2.611 (its walk forms P's exponentials and reads S_in on the critical
  // path of warpgroup 1, and the mma.sync walk overlaps more of them).
  (void)B, (void)H, (void)num_sms;
  return V == 128 && v_split == 2 && !bwd_local && !gated;
}

bool delta_chunk_default_stream_wy(int B, int H, int v_split, bool fwd_wgmma, bool two_pass, int num_sms) {
  // The walk's blocks spin on delta_wy's flags, so the producer must keep SMs of its own: at most half of
  // them taken by the walk (at 16 heads, V-split 4: 64 of 132). Measured: docs/kernels.md, "Streamed
  // forward".
  const long long blocks = static_cast<long long>(B) * H * v_split;
  return !fwd_wgmma && two_pass && 2 * blocks <= num_sms;
}

bool delta_chunk_default_stream_bwd(int B, int H, int V, int v_split, bool two_pass, bool bwd_walk_wgmma,
                                    int num_sms) {
  const long long blocks = static_cast<long long>(B) * H * v_split;
  return V == 128 && two_pass && !bwd_walk_wgmma && 2 * blocks <= num_sms;
}

size_t delta_chunk_hs_elems(const DeltaChunkParams& p) {
  return static_cast<size_t>(p.B) * p.H * linear_chunk_count(p.T) * p.K * p.V;
}

std::string delta_chunk_seg_fix_check(const DeltaChunkParams& p, bool backward) {
  if (auto why = linear_grid_check(p.dtype, p.B, p.T, p.H, p.K, p.V); !why.empty()) return why;
  const int nt = linear_chunk_count(p.T);
  if (p.segments < 2 || nt % p.segments != 0 || p.T % kLinearChunk != 0)
    return "segments must be >= 2 and divide the chunks of a T that is a multiple of 64, got segments " +
           std::to_string(p.segments) + " at T = " + std::to_string(p.T);
  if (!p.seg_hs || !p.seg_p || !p.seg_in) return "seg_hs, seg_p and seg_in must be set";
  if (backward ? !(p.dhs && p.du && p.k) : !p.hs)
    return backward ? "the backward's correction needs dhs, du and k" : "the forward's correction needs hs";
  return {};
}

cudaError_t launch_delta_chunk_seg_fix(const DeltaChunkParams& p, bool backward) {
  if (!delta_chunk_seg_fix_check(p, backward).empty()) return cudaErrorInvalidValue;
  using namespace delta_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] {
    const dim3 grid(linear_chunk_count(p.T), p.H, p.B);
    return backward ? launch_kernel(&delta_seg_fix_kernel<kD, T, true>, grid, SegFixSmem<kD>::kBytes, p)
                    : launch_kernel(&delta_seg_fix_kernel<kD, T, false>, grid, SegFixSmem<kD>::kBytes, p);
  });
}

}  // namespace attnlab::kernels
