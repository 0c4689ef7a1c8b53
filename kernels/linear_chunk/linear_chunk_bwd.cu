// Backward of the chunked linear / simple-GLA kernels (params.h).
//
// Gradient of the gate. With B_t = g_0 + ... + g_t the cumulative log decay over the whole sequence,
//   o_t = scale sum_{s <= t} exp(B_t - B_s) (q_t . k_s) v_s + scale exp(B_t) q_t^T h0,
//   ht  = exp(B_{T-1}) h0 + sum_s exp(B_{T-1} - B_s) k_s v_s^T.
// Every term of o_t carries exp(B_t), so dL/dB_t gets do_t . o_t = q_t . dq_t from the query side; every
// term with key s carries exp(-B_s), so it gets -k_s . dk_s (dk including the dht term); and ht carries
// exp(B_{T-1}) in every term, so B_{T-1} also gets sum(dht * ht). Then dg_t = sum_{t' >= t} dL/dB_t'.
// The dq and dkv kernels add q.dq and -k.dk into dg_work; dg_kernel adds the final-state term (dg_last,
// computed by the caller) and takes the reverse cumulative sum.
#include "kernels/linear_chunk/linear_chunk_common.cuh"
#include "kernels/linear_chunk/linear_chunk_kernels.cuh"

namespace attnlab::kernels {
namespace linear_chunk {
namespace {

// dg[b, t, h] = sum_{t' >= t} dg_work[b, h, t'] (+ dg_last at t' = T - 1). One block per (b, h): each of
// the 256 threads sums a contiguous run, a serial suffix over the 256 run sums, then each run is written.
__global__ void dg_kernel(const LinearChunkParams p) {
  __shared__ float sums[256];
  const int64_t bh = blockIdx.x;
  const int b = static_cast<int>(bh / p.H), h = static_cast<int>(bh % p.H);
  const int run = (p.T + 255) / 256;
  const int t_begin = min(p.T, threadIdx.x * run), t_end = min(p.T, t_begin + run);
  const float* x = p.dg_work + bh * p.T;
  const float last = p.dg_last ? p.dg_last[bh] : 0.f;
  float s = 0.f;
  for (int t = t_begin; t < t_end; ++t) s += x[t] + (t == p.T - 1 ? last : 0.f);
  sums[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float acc = 0.f;
    for (int i = 255; i >= 0; --i) {
      const float v = sums[i];
      sums[i] = acc;  // sum of the runs after run i
      acc += v;
    }
  }
  __syncthreads();
  float acc = sums[threadIdx.x];
  for (int t = t_end - 1; t >= t_begin; --t) {
    acc += x[t] + (t == p.T - 1 ? last : 0.f);
    p.dg[(static_cast<int64_t>(b) * p.T + t) * p.H + h] = acc;
  }
}

template <typename K>
cudaError_t launch(K* kernel, dim3 grid, int smem, const LinearChunkParams& p) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  kernel<<<grid, kThreads, smem, p.stream>>>(p);
  return cudaGetLastError();
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
  if ((err = launch(&bwd_dq_kernel<kD, T, kGated>, dim3(n_seg, p.H, p.B), DqSmem<kD>::kBytes, p))) return err;
  if (n_seg > 1) {
    if ((err = launch(&bwd_dkv_kernel<kD, T, kGated, false>, dim3(n_seg - 1, p.H, p.B),
                      DkvSmem<kD, false>::kBytes, p)))
      return err;
    const int kv4 = kD * kD / 4;
    scan_bwd_kernel<kGated><<<dim3((kv4 + 255) / 256, p.B * p.H), 256, 0, p.stream>>>(p);
    if ((err = cudaGetLastError())) return err;
  }
  if ((err =
           launch(&bwd_dkv_kernel<kD, T, kGated, true>, dim3(n_seg, p.H, p.B), DkvSmem<kD, true>::kBytes, p)))
    return err;
  if constexpr (kGated) {
    dg_kernel<<<p.B * p.H, 256, 0, p.stream>>>(p);
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
