// Backward of the GLA chunk kernels (params.h).
//
// Gradient of the gate. With B_t = g_0 + ... + g_t the cumulative log decay over the whole sequence (per key
// channel c), q~_tc = q_tc exp(B_tc) and k~_sc = k_sc exp(-B_sc):
//   o_t = scale sum_c q~_tc (h0[c] + sum_{s <= t} k~_sc v_s),
//   ht[c] = exp(B_{T-1,c}) (h0[c] + sum_s k~_sc v_s).
// B_tc enters o only through q~_tc and k~_tc, and ht through its prefactor, so
//   dL/dB_tc = q_tc dq_tc - k_tc dk_tc + [t = T-1] sum_v dht[c][v] ht[c][v]
// with dq, dk the gradients of the inputs q, k themselves (dk including the dht term; dL/dq~ q~ = dL/dq q),
// and dg_tc = sum_{t' >= t} dL/dB_t'c.
//
// The same holds for any prefix 0 .. e of the sequence, with the state S_e at its end as the final state and
// dS_e (the gradient of the loss with respect to S_e, everything after e included) as that state's gradient:
// the rest of the sequence sees the prefix only through S_e. So for t in a chunk that ends at step e,
//   dg_tc = sum_{t' = t}^{e} (q dq - k dk)_t'c + sum_v S_e[c][v] dS_e[c][v],
// and no sum runs over more than one chunk (a reverse cumsum over the whole sequence keeps the rounding of
// its O(1) terms, growing as sqrt(T): linear_chunk's simple-GLA dg reached 1.5e-2 relative at T = 2048 so on
// the H200, 2026-12-01).
//
// That form still subtracts large terms under strong gates: S_e is mostly the chunk's last few tokens, and so
// is sum_{t' >= t} k dk through dk's part dk_st = exp(G_last - G_s) (dS_e v_s) that comes through S_e; their
// difference, what dg is, is e^-5 smaller, and the 16-bit copies the kernels keep of S_e and dS made it an
// O(1) error (rel RMS 1.2 to 4.1 for strong gates with dht on the H200, 2026-12-02). With
// S_e = diag(exp(G_last)) S_in + sum_s (k_s exp(G_last - G_s))^T v_s, S_in the chunk-entering state,
//   sum_v S_e dS_e - sum_{t' >= t} k dk_st = exp(G_last) sum_v S_in dS_e + sum_{s < t} k dk_st,
// so the kernels compute
//   dg_tc = sum_{t' = t}^{e} (q dq - k dk_in)_t'c + sum_{s < t} (k dk_st)_sc + exp(G_last,c) sum_v S_in dS_e,
// dk_in = dk - dk_st, whose terms are each of the size of the result. The dq walk writes q dq into dg and
// S_in into chunk_states (16-bit); the dk walk has dS_e in registers and dk_st in its accumulator before the
// in-chunk terms join it, takes the in-chunk suffix and prefix sums and adds the state term.
#include "kernels/gla_chunk/gla_chunk_kernels.cuh"

namespace attnlab::kernels {
namespace gla_chunk {
namespace {

template <int kD, typename T>
cudaError_t run_bwd(const GlaChunkParams& p) {
  const int n_seg = gla_chunk_segments(p);
  if (n_seg == 0) return cudaSuccess;
  cudaError_t err;
  if ((err = launch_kernel(&gla_bwd_dq_kernel<kD, T>, dim3(n_seg, p.H, p.B), DqSmem<kD>::kBytes, p)))
    return err;
  if (n_seg > 1) {
    if ((err = launch_kernel(&gla_bwd_dkv_kernel<kD, T, false>, dim3(n_seg - 1, p.H, p.B),
                             DkvSmem<kD, false>::kBytes, p)))
      return err;
    const int kv4 = kD * kD / 4;
    gla_scan_bwd_kernel<kD><<<dim3((kv4 + 255) / 256, p.B * p.H), 256, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  return launch_kernel(&gla_bwd_dkv_kernel<kD, T, true>, dim3(n_seg, p.H, p.B), DkvSmem<kD, true>::kBytes, p);
}

}  // namespace
}  // namespace gla_chunk

cudaError_t launch_gla_chunk_bwd(const GlaChunkParams& p) {
  if (!gla_chunk_check(p, true).empty()) return cudaErrorInvalidValue;
  using namespace gla_chunk;
  return LINEAR_CHUNK_SWITCH(p, T, kD, [&] { return run_bwd<kD, T>(p); });
}

}  // namespace attnlab::kernels
