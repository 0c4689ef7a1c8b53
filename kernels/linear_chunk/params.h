// Chunked kernels of the linear family with a scalar decay: linear attention (no gate) and simple GLA
// (one log decay per head and step, which is also RetNet's retention and Mamba2's SSD recurrence).
// This struct is the whole interface: kernels never see torch; the binding fills it from tensors.
//
// Semantics (FLA's chunk_simple_gla / chunk_linear_attn), for every batch b and head h:
//   S_t = exp(g_t) S_{t-1} + k_t v_t^T   (S_{-1} = h0, or zeros; exp(g_t) = 1 without a gate)
//   o_t = scale q_t^T S_t,   ht = S_{T-1}
// q, k [B, T, H, K], v, o [B, T, H, V], contiguous, bf16 or fp16 (one type for all); K = V = 64 or 128;
// g [B, T, H] float32 contiguous (log decay, <= 0 in practice; any finite value works, but positive
// values can overflow exp); h0, ht [B, H, K, V] float32 contiguous.
//
// Algorithm (docs/kernels.md, "linear_chunk"): chunks of 64 tokens; inside a chunk the decayed causal
// scores P = tril(scale q k^T * exp(G_t - G_s)) give the local part P v, and the state entering the chunk
// gives scale exp(G_t) q_t^T S. One thread block walks the chunks of one segment in order, with the
// state (K x V float32) in registers. When B * H alone would leave SMs idle, the sequence is cut into
// segments: a first kernel computes each segment's own state contribution in parallel, a scan over
// segments turns those into the state entering each segment (kept in `seg_states` for the backward), and
// the output kernel then runs every segment at once.
//
// Backward: dq in a forward walk over the chunks (state recomputed from seg_states), dk and dv in a
// reverse walk with the state gradient dS in registers (the dS entering each segment from the right comes
// from the same segment-and-scan scheme), and dg from q.dq - k.dk by a reverse cumulative sum within each
// chunk plus the chunk-end term <S, dS> (see linear_chunk_bwd.cu for the derivation and why not a cumsum
// over the whole sequence).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace attnlab::kernels {

enum class LinearDtype : int { kBF16 = 0, kFP16 = 1 };

constexpr int kLinearChunk = 64;  // tokens per chunk

// The two helpers below run on both sides (the binding is plain C++; kernels call them too).
#ifdef __CUDACC__
#define ATTNLAB_LINEAR_HD __host__ __device__
#else
#define ATTNLAB_LINEAR_HD
#endif

struct LinearChunkParams {
  LinearDtype dtype = LinearDtype::kBF16;
  int B = 0, T = 0, H = 0, K = 0, V = 0;
  float scale = 1.f;  // multiplies q

  // ---- forward. 16-bit tensors contiguous [B, T, H, D]; float32 ones as documented.
  const void* q = nullptr;    // [B, T, H, K]
  const void* k = nullptr;    // [B, T, H, K]
  const void* v = nullptr;    // [B, T, H, V]
  const float* g = nullptr;   // [B, T, H] log decay; nullptr: no gate (linear attention)
  const float* h0 = nullptr;  // [B, H, K, V] initial state; nullptr: zeros
  void* o = nullptr;          // [B, T, H, V] output (written by the forward; the backward does not read it)
  float* ht = nullptr;        // [B, H, K, V] final state (written when not nullptr)

  // ---- segments. seg_chunks chunks per segment (>= 1); n_seg = ceil(ceil(T / 64) / seg_chunks).
  // linear_chunk_default_seg_chunks picks it from the shape and the SM count.
  int seg_chunks = 1;
  float* seg_states = nullptr;  // workspace [B, H, n_seg, K, V]: state entering each segment (written by
                                // the forward, read by the backward; untouched when n_seg == 1)
  float* seg_gate = nullptr;    // workspace [B, H, n_seg]: sum of g over each segment (idem)

  // ---- backward. dout/dq/dk/dv contiguous like q/k/v; dg [B, T, H] float32 (when g is given).
  const void* dout = nullptr;    // [B, T, H, V] gradient of o
  const float* dht = nullptr;    // [B, H, K, V] gradient of ht; nullptr: zeros
  void* dq = nullptr;            // [B, T, H, K] (written)
  void* dk = nullptr;            // [B, T, H, K] (written)
  void* dv = nullptr;            // [B, T, H, V] (written)
  float* dg = nullptr;           // [B, T, H] (written when g is given)
  float* dh0 = nullptr;          // [B, H, K, V] (written when not nullptr)
  float* dseg_states = nullptr;  // workspace [B, H, n_seg, K, V]: dS at each segment's end
  float* dg_work = nullptr;      // workspace [B, H, 2, T]: q.dq - k.dk_in, k.dk_st per token (zeroed by the
                                 // launcher; linear_chunk_bwd.cu)
  void* chunk_states = nullptr;  // workspace [B, H, ceil(T / 64), K * V] 16-bit, when g is given: the state
                                 // entering each chunk (dq walk -> dkv walk), in the StateTile order
  float* chunk_dg = nullptr;     // workspace [B, H, ceil(T / 64)], when g is given: exp(G_last) <S_in, dS>

  // 1: the forward's output pass on Hopper's wgmma (linear_chunk_fwd_wgmma.cuh; K = V = 128, and only where
  // linear_chunk_has_wgmma()); 0: the mma.sync kernels. The binding sets 1 wherever it can.
  int fwd_wgmma = 0;
  // 1: the backward's dq and dk/dv walks on wgmma (linear_chunk_bwd_wgmma.cuh; same conditions); 0: mma.sync.
  // Both walks take the same form (chunk_states is in the form's thread order).
  int bwd_wgmma = 0;
  // 1: the segment-state passes of the forward and the backward on wgmma (linear_chunk_state_wgmma.cuh; K = V
  // = 64 or 128, sm_90a builds); 0: mma.sync.
  int state_wgmma = 0;

  cudaStream_t stream = nullptr;
};

ATTNLAB_LINEAR_HD inline int linear_chunk_count(int T) {
  return (T + kLinearChunk - 1) / kLinearChunk;
}
ATTNLAB_LINEAR_HD inline int linear_chunk_segments(const LinearChunkParams& p) {
  const int nt = linear_chunk_count(p.T);
  return nt == 0 ? 0 : (nt + p.seg_chunks - 1) / p.seg_chunks;
}

// Chunks per segment. `blocks_per_sm` is how many blocks of the output pass (and of the backward's walks)
// one multiprocessor runs at once. At 2 (D = 64): B * H * n_seg blocks fill `num_sms` multiprocessors about
// twice over, the whole sequence (no split) when B * H already does. At 1 (D = 128: 152-192 KB of shared
// memory per block) the blocks run in whole waves, so the split minimises a wave count: the state pass's
// (B * H * (n_seg - 1) blocks, two per SM) plus the output pass's, each wave as long as a segment; no split
// once B * H fills the SMs (docs/kernels.md, "linear_chunk").
int linear_chunk_default_seg_chunks(int B, int T, int H, int num_sms, int blocks_per_sm = 2);
// The whole-wave split on its own: walks of walk_blocks_per_sm blocks per SM, each wave as long as a
// segment, and state passes (two blocks per SM) whose wave costs state_cost of a walk's wave; it minimises
// (state waves * state_cost + walk waves) * segment length, no split once B * H fills the walks' slots. The
// binding calls it with the costs of what will run: the forward alone (no gradient can follow) or the forward
// and the backward (linear_chunk.cpp has the measured costs).
int linear_chunk_wave_seg_chunks(int B, int T, int H, int num_sms, int walk_blocks_per_sm, double state_cost);

// Whether this build has the wgmma forward (compiled for sm_90a: CMAKE_CUDA_ARCHITECTURES holds 90a).
bool linear_chunk_has_wgmma();

// Empty when the kernels take p (dims, dtype, pointers, seg_chunks), else why not.
std::string linear_chunk_check(const LinearChunkParams& p, bool backward);
// Empty when dtype is bf16 or fp16 and K = V = 64 or 128 (the linear family's kernels), else why not. Inline
// (host code, no kernel): the torch-free harnesses link a kernel file or two without linear_chunk's.
inline std::string linear_head_check(LinearDtype dtype, int K, int V) {
  if (dtype != LinearDtype::kBF16 && dtype != LinearDtype::kFP16) return "dtype must be bf16 or fp16";
  if (K != V || (K != 64 && K != 128))
    return "head dims K = " + std::to_string(K) + ", V = " + std::to_string(V) +
           " not in the kernels (K = V = 64 or 128)";
  return {};
}
// As linear_head_check, and B, H in 1..65535 (grid dimensions) and T >= 1.
inline std::string linear_grid_check(LinearDtype dtype, int B, int T, int H, int K, int V) {
  if (auto why = linear_head_check(dtype, K, V); !why.empty()) return why;
  if (B < 1 || H < 1 || T < 1 || B > 65535 || H > 65535) return "B and H must be in 1..65535, T >= 1";
  return {};
}

// Floats of workspace: the forward needs seg_states + seg_gate; the backward, given the same seg_states /
// seg_gate, also dseg_states + dg_work + chunk_states (as 16-bit pairs) + chunk_dg.
size_t linear_chunk_fwd_workspace_floats(const LinearChunkParams& p);
size_t linear_chunk_bwd_workspace_floats(const LinearChunkParams& p);

// Launch on p.stream; return the first CUDA error (cudaErrorInvalidValue when linear_chunk_check fails).
cudaError_t launch_linear_chunk_fwd(const LinearChunkParams& p);
cudaError_t launch_linear_chunk_bwd(const LinearChunkParams& p);

}  // namespace attnlab::kernels
