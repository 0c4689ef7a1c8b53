// Backward of the chunked linear / simple-GLA kernels (params.h).
//
// Gradient of the gate. With B_t = g_0 + ... + g_t the cumulative log decay over the whole sequence,
//   o_t = scale sum_{s <= t} exp(B_t - B_s) (q_t . k_s) v_s + scale exp(B_t) q_t^T h0,
//   ht  = exp(B_{T-1}) h0 + sum_s exp(B_{T-1} - B_s) k_s v_s^T.
// Every term of o_t carries exp(B_t), so dL/dB_t gets do_t . o_t = q_t . dq_t from the query side; every
// term with key s carries exp(-B_s), so it gets -k_s . dk_s (dk including the dht term); and ht carries
// exp(B_{T-1}) in every term, so B_{T-1} also gets sum(dht * ht). Then dg_t = sum_{t' >= t} dL/dB_t'.
//
// The same identity holds for any prefix 0 .. e of the sequence with S_e (the state at step e) taken as its
// final state and dS_e (the gradient of the loss with respect to S_e) as that state's gradient, so for t in
// a chunk ending at step e:   dg_t = sum_{t' = t}^{e} (q.dq - k.dk)_t' + <S_e, dS_e>.
// That is what the kernels compute, rather than the reverse cumsum over the whole sequence: the terms
// q.dq - k.dk are O(1) each while dg is not larger (under a strong gate it is a local quantity), so a sum
// over the whole sequence cancels away its float32 and 16-bit rounding errors only to leave them standing:
// its relative error grew as sqrt(T) (1.5e-2 at T = 2048, 5e-2 at T = 32768 on the H200, 2026-12-01). Within
// a chunk at most 64 terms meet. The dq walk writes S_e at every chunk end (chunk_states, 16-bit), the dkv
// walk has dS_e in registers and writes <S_e, dS_e> (chunk_dg), both kernels add their halves of q.dq - k.dk
// into dg_work, and dg_kernel takes the in-chunk reverse sums.
#include "kernels/linear_chunk/linear_chunk_common.cuh"
#include "kernels/linear_chunk/linear_chunk_kernels.cuh"

namespace attnlab::kernels {
namespace linear_chunk {
namespace {

// dg[b, t, h] = chunk_dg[b, h, c] + sum of dg_work[b, h, t'] over t' = t .. the end of t's chunk c. One
// thread per chunk, blockIdx.x = b * H + h.
__global__ void dg_kernel(const LinearChunkParams p) {
  const int64_t bh = blockIdx.x;
  const int b = static_cast<int>(bh / p.H), h = static_cast<int>(bh % p.H);
  const int nt = linear_chunk_count(p.T);
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= nt) return;
  const float* x = p.dg_work + bh * p.T;
  float acc = p.chunk_dg[bh * nt + c];
  for (int t = min(p.T, (c + 1) * kC) - 1; t >= c * kC; --t) {
    acc += x[t];
    p.dg[(static_cast<int64_t>(b) * p.T + t) * p.H + h] = acc;
  }
}

template <int kD, typename T, bool kGated>
cudaError_t run_bwd(const LinearChunkParams& p) {
  const int n_seg = linear_chunk_segments(p);
  if (n_seg == 0) return cudaSuccess;
  cudaError_t err;
  if constexpr (kGated) {
    err = cudaMemsetAsync(p.dg_work, 0, sizeof(float) * static_cast<size_t>(p.B) * p.H * p.T, p.stream);
    if (err != cudaSuccess) return err;
  }
  if ((err = launch_kernel(&bwd_dq_kernel<kD, T, kGated>, dim3(n_seg, p.H, p.B), DqSmem<kD>::kBytes, p)))
    return err;
  if (n_seg > 1) {
    if ((err = launch_kernel(&bwd_dkv_kernel<kD, T, kGated, false>, dim3(n_seg - 1, p.H, p.B),
                             DkvSmem<kD, false>::kBytes, p)))
      return err;
    const int kv4 = kD * kD / 4;
    scan_bwd_kernel<kGated><<<dim3((kv4 + 255) / 256, p.B * p.H), 256, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  if ((err = launch_kernel(&bwd_dkv_kernel<kD, T, kGated, true>, dim3(n_seg, p.H, p.B),
                           DkvSmem<kD, true>::kBytes, p)))
    return err;
  if constexpr (kGated) {
    const int nt = linear_chunk_count(p.T);
    dg_kernel<<<dim3(p.B * p.H, (nt + 127) / 128), 128, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  return cudaSuccess;
}

}  // namespace
}  // namespace linear_chunk

cudaError_t launch_linear_chunk_bwd(const LinearChunkParams& p) {
  if (!linear_chunk_check(p, true).empty()) return cudaErrorInvalidValue;
  using namespace linear_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD,
                             [&] { return p.g ? run_bwd<kD, T, true>(p) : run_bwd<kD, T, false>(p); });
}

}  // namespace attnlab::kernels
