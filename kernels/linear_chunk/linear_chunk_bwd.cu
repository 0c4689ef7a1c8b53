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
// a chunk ending at step e:   dg_t = sum_{t' = t}^{e} (q.dq - k.dk)_t' + <S_e, dS_e>,
// and no sum runs over more than one chunk: a reverse cumsum over the whole sequence keeps the rounding of
// its O(1) terms, and its relative error grew as sqrt(T) (1.5e-2 at T = 2048, 5e-2 at T = 32768 on the H200,
// 2026-12-01).
//
// That form still subtracts large terms under a strong gate: S_e is mostly the chunk's last few tokens, and
// so is sum_{t' >= t} k.dk_st, dk_st_s = exp(G_last - G_s) dS_e v_s being the part of dk through S_e; what is
// left, dg, is much smaller, and the 16-bit copies of S_e and dS made it a 6.1e-2 error (H200, 2026-12-02).
// With S_e = exp(G_last) S_in + sum_s exp(G_last - G_s) k_s v_s^T (S_in the chunk-entering state),
//   <S_e, dS_e> - sum_{t' >= t} k.dk_st = exp(G_last) <S_in, dS_e> + sum_{s < t} k.dk_st,
// so the kernels compute
//   dg_t = sum_{t' = t}^{e} (q.dq - k.dk_in)_t' + sum_{s < t} (k.dk_st)_s + exp(G_last) <S_in, dS_e>,
// every term of the result's size. The dq walk writes S_in for every chunk (chunk_states, 16-bit) and adds
// q.dq into dg_work; the dkv walk has dS_e in registers and writes exp(G_last) <S_in, dS_e> (chunk_dg),
// subtracts k.dk_in from dg_work and adds k.dk_st into its second half; dg_kernel takes the in-chunk sums.
#include "kernels/linear_chunk/linear_chunk_bwd_wgmma.cuh"
#include "kernels/linear_chunk/linear_chunk_common.cuh"
#include "kernels/linear_chunk/linear_chunk_kernels.cuh"
#include "kernels/linear_chunk/linear_chunk_state_wgmma.cuh"

namespace attnlab::kernels {
namespace linear_chunk {
namespace {

// dg[b, t, h] = chunk_dg[b, h, c] + sum of dg_work[b, h, 0, t'] over t' = t .. the end of t's chunk c
// + sum of dg_work[b, h, 1, s] over s = the start of c .. t - 1. One thread per chunk, blockIdx.x = b * H +
// h.
__global__ void dg_kernel(const LinearChunkParams p) {
  const int64_t bh = blockIdx.x;
  const int b = static_cast<int>(bh / p.H), h = static_cast<int>(bh % p.H);
  const int nt = linear_chunk_count(p.T);
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= nt) return;
  const float* x = p.dg_work + bh * 2 * p.T;
  const float* st = x + p.T;
  const int t_begin = c * kC, t_end = min(p.T, (c + 1) * kC);
  float acc = p.chunk_dg[bh * nt + c];
  for (int t = t_end - 1; t >= t_begin; --t) {
    acc += x[t];
    p.dg[(static_cast<int64_t>(b) * p.T + t) * p.H + h] = acc;
  }
  float pre = 0.f;
  for (int t = t_begin; t < t_end; ++t) {
    p.dg[(static_cast<int64_t>(b) * p.T + t) * p.H + h] += pre;
    pre += st[t];
  }
}

template <int kD, typename T, bool kGated>
cudaError_t run_bwd(const LinearChunkParams& p) {
  const int n_seg = linear_chunk_segments(p);
  if (n_seg == 0) return cudaSuccess;
  cudaError_t err;
  if constexpr (kGated) {
    err = cudaMemsetAsync(p.dg_work, 0, sizeof(float) * 2 * static_cast<size_t>(p.B) * p.H * p.T, p.stream);
    if (err != cudaSuccess) return err;
  }
  bool wgmma = false;
  if constexpr (kD == 128) wgmma = p.bwd_wgmma != 0;
  if (wgmma) {
    if ((err = launch_kernel(&bwd_dq_wgmma_kernel<T, kGated>, dim3(n_seg, p.H, p.B), WgDqSmem<kGated>::kBytes,
                             p)))
      return err;
  } else if ((err = launch_kernel(&bwd_dq_kernel<kD, T, kGated>, dim3(n_seg, p.H, p.B), DqSmem<kD>::kBytes,
                                  p))) {
    return err;
  }
  if (n_seg > 1) {
    if (p.state_wgmma) {
      using L = WgStateSmem<kD>;
      if ((err = launch_kernel(&state_wgmma_kernel<kD, T, kGated, true>, dim3(n_seg - 1, p.H, p.B), L::kBytes,
                               p, L::kThreads)))
        return err;
    } else if ((err = launch_kernel(&bwd_dkv_kernel<kD, T, kGated, false>, dim3(n_seg - 1, p.H, p.B),
                                    DkvSmem<kD, false>::kBytes, p))) {
      return err;
    }
    const int kv4 = kD * kD / 4;
    scan_bwd_kernel<kGated><<<dim3((kv4 + 255) / 256, p.B * p.H), 256, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  if (wgmma) {
    if ((err = launch_kernel(&bwd_dkv_wgmma_kernel<T, kGated>, dim3(n_seg, p.H, p.B), WgDkvSmem::kBytes, p)))
      return err;
  } else if ((err = launch_kernel(&bwd_dkv_kernel<kD, T, kGated, true>, dim3(n_seg, p.H, p.B),
                                  DkvSmem<kD, true>::kBytes, p))) {
    return err;
  }
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
