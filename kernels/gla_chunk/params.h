// Chunked kernels of GLA (gated linear attention, Yang et al. 2024): a log decay per step and key channel.
// This struct is the whole interface: kernels never see torch; the binding fills it from tensors.
//
// Semantics (FLA's chunk_gla), for every batch b and head h:
//   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T   (S_{-1} = h0, or zeros)
//   o_t = scale q_t^T S_t,   ht = S_{T-1}
// q, k [B, T, H, K], v, o [B, T, H, V], contiguous, bf16 or fp16 (one type for all); K = V = 64 or 128;
// g [B, T, H, K] float32 contiguous (log decay, <= 0: then every exponent the kernels take is <= 0 and no
// gate strength overflows; positive values can overflow exp); h0, ht [B, H, K, V] float32 contiguous.
//
// Algorithm (docs/kernels.md, "gla_chunk"): chunks of 64 tokens, G the in-chunk cumulative gate per key
// channel. The state entering a chunk gives scale (q_t exp(G_t))^T S_in; the state leaving it is
// diag(exp(G_last)) S_in + (k_s exp(G_last - G_s))^T v. The in-chunk scores A[t][s] = scale sum_k q_tk k_sk
// exp(G_tk - G_sk) need the decay inside the contraction, so the chunk is cut into four sub-chunks of 16:
// a block of query sub-chunk i and key sub-chunk j < i is one product of (q exp(G_t - r)) and (k exp(r -
// G_s)) with r = G at the row before sub-chunk i (both exponents <= 0), scaled in the operand fragments; the
// four diagonal blocks the same way when every sub-chunk's decay span fits the 16-bit type (the key factors
// exp(r - G_s) >= 1 then stay bounded: gla_chunk_common.cuh, chunk_tame), else pairwise in float32. One
// thread block walks the chunks of one segment in order with the K x V float32 state in registers; segments
// and a scan over them (per-key decays) give parallelism when B * H is small, as in linear_chunk.
//
// Backward: dq in a forward walk (state recomputed from seg_states; it also writes the state at every chunk
// end), dk and dv in a reverse walk with the state gradient in registers, and dg per key channel c from
// dg_tc = sum_{t' = t}^{e} (q dq - k dk)_t'c + sum_v S_e[c][v] dS_e[c][v], e the end of t's chunk (see
// gla_chunk_bwd.cu for the derivation, and why not a reverse cumsum over the whole sequence).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/linear_chunk/params.h"  // LinearDtype, kLinearChunk

namespace attnlab::kernels {

#ifdef __CUDACC__
#define ATTNLAB_GLA_HD __host__ __device__
#else
#define ATTNLAB_GLA_HD
#endif

constexpr int kGlaChunk = kLinearChunk;  // tokens per chunk (64)
constexpr int kGlaSubChunk = 16;         // tokens per sub-chunk of the in-chunk scores

struct GlaChunkParams {
  LinearDtype dtype = LinearDtype::kBF16;
  int B = 0, T = 0, H = 0, K = 0, V = 0;
  float scale = 1.f;  // multiplies q

  // ---- forward. 16-bit tensors contiguous [B, T, H, D]; float32 ones as documented.
  const void* q = nullptr;    // [B, T, H, K]
  const void* k = nullptr;    // [B, T, H, K]
  const void* v = nullptr;    // [B, T, H, V]
  const float* g = nullptr;   // [B, T, H, K] log decay per key channel (required)
  const float* h0 = nullptr;  // [B, H, K, V] initial state; nullptr: zeros
  void* o = nullptr;          // [B, T, H, V] output (written by the forward; the backward does not read it)
  float* ht = nullptr;        // [B, H, K, V] final state (written when not nullptr)

  // ---- segments. seg_chunks chunks per segment (>= 1); n_seg = ceil(ceil(T / 64) / seg_chunks).
  // gla_chunk_default_seg_chunks picks it from the shape and the SM count.
  int seg_chunks = 1;
  float* seg_states = nullptr;  // workspace [B, H, n_seg, K, V]: state entering each segment (written by
                                // the forward, read by the backward; untouched when n_seg == 1)
  float* seg_gate = nullptr;    // workspace [B, H, n_seg, K]: sum of g over each segment per key (idem)

  // ---- backward. dout/dq/dk/dv contiguous like q/k/v; dg [B, T, H, K] float32.
  const void* dout = nullptr;    // [B, T, H, V] gradient of o
  const float* dht = nullptr;    // [B, H, K, V] gradient of ht; nullptr: zeros
  void* dq = nullptr;            // [B, T, H, K] (written)
  void* dk = nullptr;            // [B, T, H, K] (written)
  void* dv = nullptr;            // [B, T, H, V] (written)
  float* dg = nullptr;           // [B, T, H, K] (written; holds q dq between the two walks)
  float* dh0 = nullptr;          // [B, H, K, V] (written when not nullptr)
  float* dseg_states = nullptr;  // workspace [B, H, n_seg, K, V]: dS at each segment's end (n_seg > 1)
  void* scores = nullptr;        // [B, H, ceil(T / 64), 64 * 64] 16-bit (q's dtype): every chunk's in-chunk
                           // scores A (the forward's [C][C] tile, swizzled as in shared memory), written
                           // by the forward when set and read by the dk/dv walk (required by the
                           // backward, which then does not recompute them, as FLA's saved A)
  void* chunk_states = nullptr;  // workspace [B, H, ceil(T / 64), K * V] 16-bit (q's dtype): the state
                                 // entering each chunk (dq walk -> dk walk), in the register order of the
                                 // state tile (linear_chunk_common.cuh, StateTile::store_packed)

  cudaStream_t stream = nullptr;
};

ATTNLAB_GLA_HD inline int gla_chunk_count(int T) {
  return (T + kGlaChunk - 1) / kGlaChunk;
}
ATTNLAB_GLA_HD inline int gla_chunk_segments(const GlaChunkParams& p) {
  const int nt = gla_chunk_count(p.T);
  return nt == 0 ? 0 : (nt + p.seg_chunks - 1) / p.seg_chunks;
}

// Chunks per segment so that B * H * n_seg thread blocks fill `num_sms` multiprocessors about twice over;
// the whole sequence (no split) when B * H already does (linear_chunk's rule).
int gla_chunk_default_seg_chunks(int B, int T, int H, int num_sms);

// Empty when the kernels take p (dims, dtype, pointers, seg_chunks), else why not.
std::string gla_chunk_check(const GlaChunkParams& p, bool backward);

// Launch on p.stream; return the first CUDA error (cudaErrorInvalidValue when gla_chunk_check fails).
cudaError_t launch_gla_chunk_fwd(const GlaChunkParams& p);
cudaError_t launch_gla_chunk_bwd(const GlaChunkParams& p);

}  // namespace attnlab::kernels
