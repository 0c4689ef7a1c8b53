// The chunk recurrence of DeltaNet and Gated DeltaNet (the WY / UT-transform chunk algorithm of Yang et al.
// 2024, gated as in Gated DeltaNet), forward and backward. This struct is the whole interface: kernels never
// see torch; the binding fills it from tensors.
//
// The per-chunk WY factors come from the caller (ops::delta_rule's chunk preparation: a batched triangular
// solve, differentiated by autograd there): for chunk n with in-chunk cumulative log decay G (G_t = g_0 +
// ... + g_t within the chunk, G = 0 without a gate), M = (I + strictly_lower(diag(beta) K K^T * exp(G_t -
// G_s)))^-1, W = M (beta exp(G) K) and U = M (beta V). The kernels then run, chunk after chunk, from S = h0:
//   vn = U - W S                                     (the corrected values, C x V)
//   o  = scale exp(G_t) q_t^T S + sum_{s <= t} scale (q_t . k_s) exp(G_t - G_s) vn_s
//   S  = exp(G_last) S + sum_s exp(G_last - G_s) k_s vn_s^T
// and ht = S after the last chunk. The backward returns dq, dk (the direct terms), dW, dU, dG and dh0; the
// caller's autograd carries dW, dU, dG back to k, v, beta and g.
//
// q, k, w [B, T, H, K] and u, o [B, T, H, V], contiguous, bf16 or fp16; K = V = 64 or 128; G [B, T, H]
// float32 contiguous (chunks of 64 tokens from t = 0); h0, ht [B, H, K, V] float32 contiguous.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "kernels/linear_chunk/params.h"  // LinearDtype, kLinearChunk, linear_chunk_count

namespace attnlab::kernels {

struct DeltaChunkParams {
  LinearDtype dtype = LinearDtype::kBF16;
  int B = 0, T = 0, H = 0, K = 0, V = 0;
  float scale = 1.f;

  // ---- forward
  const void* q = nullptr;    // [B, T, H, K]
  const void* k = nullptr;    // [B, T, H, K]
  const void* w = nullptr;    // [B, T, H, K] W of each chunk's WY factors
  const void* u = nullptr;    // [B, T, H, V] U of each chunk's WY factors
  const float* G = nullptr;   // [B, T, H] in-chunk cumulative log decay; nullptr: no gate (DeltaNet)
  const float* h0 = nullptr;  // [B, H, K, V]; nullptr: zeros
  void* o = nullptr;          // [B, T, H, V] (written by the forward; the backward does not read it)
  float* ht = nullptr;        // [B, H, K, V] (written when not nullptr)
  void* hs = nullptr;         // workspace [B, H, ceil(T / 64), K, V], 16-bit: the state entering each chunk
                              // (written by the forward, read by the backward); nullptr: a one-pass forward
                              // that no backward follows skips it
  int v_split = 1;            // the walks' blocks per (b, h), each over V / v_split value columns: 1, 2,
                              // or 4 at V = 128 (delta_chunk_default_v_split picks it); the same results
  int fwd_wgmma = 0;          // 1: the forward's walk on Hopper's wgmma (delta_chunk_fwd_wgmma.cuh; K = V =
                      // 128, v_split 1 or 2, and only where linear_chunk_has_wgmma()); 0: mma.sync. Same
                      // results up to summation order; the binding sets 1 wherever it can
  int split_scores = 0;  // 1: the half-V wgmma walks (the one-pass forward's with fwd_wgmma and v_split 2,
                         // and bwd_walk_wgmma) split the chunk's scores P = q k^T by columns between their
                         // two warpgroups (m64n32 each), so that the one that forms X = W S (forward) or Y =
                         // K dS (backward) also takes half of P's product and of its exponentials, which the
                         // other carried alone before the barrier that both wait at. Same results up to
                         // summation order
  bool bwd_out_wide = false;  // the two-pass backward's second kernel with every tile resident at D = 128
                              // (one block per SM) instead of its lean layout (two); the same results
  void* vn = nullptr;         // workspace [B, T, H, V] 16-bit, or nullptr. When set, the forward runs in two
                              // passes: the walk over the chunks stores the states (hs) and vn = U - W S
                              // only, then one block per chunk computes o from them (all chunks at once).
                              // Same results, bit for bit; faster where B * H blocks leave SMs idle
                              // (delta_chunk_default_two_pass)
  int state_only = 0;  // 1: the two-pass forward without vn (vn null): the walk (fwd_part 1, mma.sync) stores
                       // hs and ht only, and takes u = nullptr as zeros; the output pass (fwd_part 2) forms
                       // vn = U - W S itself from u, w and hs. For the segmented forward (the binding's
                       // ATTNLAB_DELTA_SEGMENTS), which walks segments of the sequence from zero states and
                       // the products of their transitions (u zero, h0 = I), then corrects hs before the
                       // output pass
  int segments = 1;    // > 1: launch_delta_chunk_seg_fix's segment count (the segmented forms)
  const void* seg_hs = nullptr;   // [B segments, H, nt / segments, K, V] 16-bit: the segments' walk from zero
                                  // (forward: segment 0 from h0; backward: dS, the last segment from dht)
  const void* seg_p = nullptr;    // [B segments, H, nt / segments, K, K] 16-bit: the walk from the identity
                                  // with U = 0 (forward: the products of each segment's transitions up to
                                  // each chunk) or do = 0 (backward: of the transposed ones after it)
  const void* seg_in = nullptr;   // [B segments, H, K, V] 16-bit: the state entering each segment (backward:
                                  // the gradient entering it from its right); unread for the uncorrected one
  const int* wy_ready = nullptr;  // [B, H, ceil(T / 64)] int32, or nullptr. When set, the walk (mma.sync, or
                                  // the half-V wgmma state pass) waits for chunk n's flag before it reads
                                  // that chunk's w, u and G: delta_wy's forward (DeltaWyParams::ready) is
                                  // still writing them, on another stream, while the walk runs. Only where
                                  // the walk's blocks leave SMs free for the producer
                                  // (delta_chunk_default_stream_wy)
  int walk_alone = 0;  // 1: the streamed walks (the forward's and the two-pass backward's) ask for all the
                       // shared memory a block may have, so that no block of a kernel running beside them
                       // (the streamed forms' producer or output pass) shares their multiprocessors: the
                       // walk is the critical path, and a few hundred us of co-resident blocks slow every
                       // chunk of it. The same results; pointless where nothing runs beside the walk
  int fwd_part = 0;    // 0: the whole forward; 1: the walk only; 2: only what follows the walk (the
                       // two-pass output pass; nothing for a one-pass forward). The streamed forward
                       // launches the walk, then the producer, then waits for the producer before part 2.
                       // With walk_sync (two-pass only): 3 the output pass streamed behind the walk (grid
                       // B * H by chunks, chunk 0 first; as bwd_part 3), 4 the chunks that 3 gave up
  int* walk_sync = nullptr;  // workspace int32 [1 + B * H * ceil(T / 64)], zeroed, or nullptr: the streamed
                             // output pass of the two-pass forms, forward or backward (docs/kernels.md
                             // "Streamed forward", "Streamed backward"). [0] counts the walk's blocks that
                             // have started; [1 + (b H + h) nt + c] counts the walk's slices done with chunk
                             // c (forward: hs, vn stored; backward: dhs, du), then v_split + 1 once the
                             // output pass has done it. Only with the mma.sync walks and the forward's
                             // half-V wgmma state pass; a fresh zeroed buffer for each forward or backward
  int sync_give_up = 0;      // tests only: 1 makes a streamed output pass (part 3) give every chunk up, so
                             // that part 4 does them all (the path a walk that is not placed in time takes)
  // ---- backward
  void* dhs = nullptr;     // workspace [B, H, ceil(T / 64), K, V] 16-bit, or nullptr. When set, the backward
                           // runs in two passes: the walk over the chunks (v_split blocks per (b, h) over
                           // the value columns, as the forward) computes dS and dU only, saving the dS
                           // of every chunk here; then one block per chunk computes dq, dk, dW, dG.
                           // Same results (dG up to the order of a float sum)
  int bwd_walk_wgmma = 0;  // with dhs, v_split 2, K = V = 128 and bwd_local 0: 1 runs the two-pass walk on
                           // Hopper's wgmma (delta_chunk_bwd_walk_wgmma.cuh, only where
                           // linear_chunk_has_wgmma()); the same results up to summation order and one
                           // rounding (delta_chunk_default_bwd_walk_wgmma picks it)
  int bwd_local = 0;       // with dhs: 1 forms P^T do (the part of dU that does not depend on the state) for
                           // every chunk at once before the walk, which then skips the scores P (float32,
                           // parked in dq and dk until the last kernel writes them); the same bits
                           // (delta_chunk_default_bwd_local picks it)
  int bwd_part = 0;  // with dhs: 0 the whole backward in order; 1 P^T do only (bwd_local; nothing without);
                     // 2 the walk only; 3 the output pass streamed behind the walk (grid B * H by chunks,
                     // last chunk first; each block waits for its chunk's count, and gives the chunk up if
                     // the walk's blocks are not all running within 50 us, so it never waits on a walk that
                     // cannot be placed); 4 the output pass for the chunks that 3 gave up (after 3 and the
                     // walk), or without walk_sync for every chunk (the segmented backward's output pass,
                     // after its own walks and correction). 3 needs walk_sync
  const void* dout = nullptr;  // [B, T, H, V]
  const float* dht = nullptr;  // [B, H, K, V]; nullptr: zeros
  void* dq = nullptr;          // [B, T, H, K] (written)
  void* dk = nullptr;          // [B, T, H, K] (written: the direct term only)
  void* dw = nullptr;          // [B, T, H, K] (written)
  void* du = nullptr;          // [B, T, H, V] (written)
  float* dG = nullptr;         // [B, T, H] (written when G is given)
  float* dh0 = nullptr;        // [B, H, K, V] (written when not nullptr)
  int bwd_wgmma = 0;           // 1: the one-pass backward (dhs null) on Hopper's wgmma
                               // (delta_chunk_bwd_wgmma.cuh; K = V = 128, only where
                               // linear_chunk_has_wgmma()); 0: mma.sync. Same results up to summation
                               // order; the binding sets 1 wherever it can

  cudaStream_t stream = nullptr;
};

// Empty when the kernels take p, else why not.
std::string delta_chunk_check(const DeltaChunkParams& p, bool backward);

// The walks' V-split: slices of 32 columns (4 at V = 128, 2 at V = 64) when B * H * v_split blocks still
// fit one per multiprocessor, else 2 at V = 128 when B * H alone would leave `num_sms` multiprocessors idle,
// else 1.
int delta_chunk_default_v_split(int B, int H, int V, int num_sms);

// Whether the two-pass forward (DeltaChunkParams::vn) is the faster one for this shape, from the walk's
// B * H * v_split blocks: gated, up to 4 per multiprocessor at V = 128 and up to one (B * H) at V = 64;
// without a gate, under one per two (measured on an H200, bench/results/h200-2026-12-02h, q and
// h200-2026-12-03a: docs/kernels.md, "delta_chunk"). The binding takes the one-pass form wherever the
// wgmma walk runs (DeltaChunkParams::fwd_wgmma).
bool delta_chunk_default_two_pass(int B, int H, int V, bool gated, int num_sms);

// Whether the two-pass backward (DeltaChunkParams::dhs) is the faster one for this shape: the one-pass
// backward runs one block per (b, h), so it leaves multiprocessors idle where B * H is under one per
// multiprocessor (at V = 128, under 9 in 10 of them); the two-pass walk splits V as the forward does and its
// second pass fills the GPU.
bool delta_chunk_default_two_pass_bwd(int B, int H, int V, int num_sms);

// The V-split of the forward's walk on wgmma (DeltaChunkParams::fwd_wgmma: 1, the whole-V walk, or 2, the
// half-V one), or 0 for the mma.sync walk, for this shape, given an sm_90a build and K = V = 128: 1 where
// B * H blocks alone fill 9 in 10 multiprocessors, 2 where 2 B * H blocks do; with fewer, the mma.sync
// walk's V-split 4 keeps more of them busy.
int delta_chunk_default_fwd_wgmma(int B, int H, int V, int num_sms);

// Whether the two-pass backward's walk runs on wgmma (DeltaChunkParams::bwd_walk_wgmma) for this shape,
// given an sm_90a build, K = V = 128 and the walk's V-split and bwd_local choice: at V-split 2 without
// bwd_local, and without a gate (measured on an H200, bench/results/h200-2026-12-04d).
bool delta_chunk_default_bwd_walk_wgmma(int B, int H, int V, int v_split, bool bwd_local, bool gated,
                                        int num_sms);

// Whether the two-pass backward forms P^T do before its walk (DeltaChunkParams::bwd_local), from the walk's
// B * H * v_split blocks, since each of them formed the scores again: gated, up to one per two
// multiprocessors at V = 128 and one per multiprocessor at V = 64; without a gate, up to one per two at
// V = 128 only (measured on an H200, bench/results/h200-2026-12-03h).
bool delta_chunk_default_bwd_local(int B, int H, int V, int v_split, bool gated, int num_sms);

// Whether the forward's walk should run at the same time as delta_wy's forward (DeltaChunkParams::wy_ready)
// for this shape: where it is the two-pass mma.sync walk (fwd_wgmma 0; two_pass, v_split as chosen) and its
// B * H * v_split blocks take at most half the multiprocessors, so the producer has the rest. Never where
// the walk's blocks would not leave a multiprocessor free (the walk spins on the producer's flags).
bool delta_chunk_default_stream_wy(int B, int H, int v_split, bool fwd_wgmma, bool two_pass, int num_sms);

// Whether the two-pass backward should run its output pass behind its walk on another stream
// (DeltaChunkParams::walk_sync, bwd_part 2-4) for this shape: at V = 128 with the mma.sync walk
// (bwd_walk_wgmma 0) whose B * H * v_split blocks take at most half the multiprocessors. Measured on an H100
// (bench/results/h100-2026-12-07a): B * T = 32768, H = 16, T = 32768 (V-split 4, 64 blocks) backward 0.21 ms
// (DeltaNet) and 0.33 ms (Gated DeltaNet) faster; at V = 64 and at 64 heads slower.
bool delta_chunk_default_stream_bwd(int B, int H, int V, int v_split, bool two_pass, bool bwd_walk_wgmma,
                                    int num_sms);

// Elements of the 16-bit hs workspace.
size_t delta_chunk_hs_elems(const DeltaChunkParams& p);

cudaError_t launch_delta_chunk_fwd(const DeltaChunkParams& p);
// The segmented forms' correction: hs of chunk c (in segment j, chunk n of it) = seg_hs[j, n] +
// seg_p[j, n] seg_in[j] (float32 sums, rounded once; segment 0 copied), written into hs in [B, H, nt]
// order. backward: the same into dhs (the last segment copied), and du (= dvn, [B, T, H, V], in place) +=
// diag(exp(G_last - G)) k (seg_p seg_in) per chunk. Needs segments > 1 dividing the chunk count, T a multiple
// of 64, hs, seg_hs, seg_p, seg_in set (backward: dhs and du too).
cudaError_t launch_delta_chunk_seg_fix(const DeltaChunkParams& p, bool backward);
// Empty when launch_delta_chunk_seg_fix takes p, else why not.
std::string delta_chunk_seg_fix_check(const DeltaChunkParams& p, bool backward);
cudaError_t launch_delta_chunk_bwd(const DeltaChunkParams& p);

}  // namespace attnlab::kernels
