// Linear attention (Katharopoulos et al. 2020), its feature maps, and helpers shared by the linear family.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>

#include "attnlab/ops/impl.h"
#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

// S_t = S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t (unnormalised; FLA's naive_linear_attn / the fixture).
// Reads q, k [B,T,H,K], v [B,T,H,V] and the optional h0 [B,H,K,V]. Impl: naive (a loop over t), chunk
// (chunkwise parallel, args.chunk_size), kernel (CUDA: the decode step for T == 1 without autograd, else the
// linear_chunk kernels, K = V = 64 or 128, bf16 / fp16; an error saying why when they cannot run), automatic
// (the decode step on CUDA where it applies, else chunk until the chunk kernels have passed their GPU test).
// Accumulates in float32 (float64 for float64 inputs); o has v's dtype, ht the accumulation dtype.
RecurrentOut linear_attention(const RecurrentArgs& args, Impl impl = Impl::automatic);

// Normalised linear attention on already feature-mapped q and k (the caller applies feature_map):
//   S_t = S_{t-1} + k_t v_t^T,  z_t = z_{t-1} + k_t,  o_t = q_t^T S_t / (q_t^T z_t + eps).
// args.scale multiplies q as in every op; it cancels in the ratio except against eps, so pass 1.0 for the
// textbook form. The normaliser rides along as an extra value column: h0 and ht are [B,H,K,V+1], S in the
// first V columns and z in the last (zeros when h0 is undefined), so that streaming keeps both states.
// Impl kernel (and automatic, once the chunk kernels are its default): the numerator through the CUDA
// kernels (K = V), the normaliser from a float32 cumulative sum of k.
RecurrentOut linear_attention_normalized(const RecurrentArgs& args, Impl impl = Impl::automatic,
                                         double eps = 1e-6);

// Feature maps phi for linear attention, applied over the last dim d of x [..., d]:
//   "elu1"     elu(x) + 1 (the default of Katharopoulos et al.), [..., d]
//   "relu"     max(x, 0), [..., d]
//   "identity" x, [..., d]
//   "taylor"   Based's second-order Taylor map [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))], with vec(x
//   x^T)
//              reduced to its upper triangle (off-diagonal entries times sqrt(2)), so that
//              phi(q).phi(k) = 1 + q.k / sqrt(d) + (q.k)^2 / (2d) exactly; [..., 1 + d + d(d+1)/2].
// An unknown name is an error listing the valid ones.
torch::Tensor feature_map(const torch::Tensor& x, const std::string& name);
int64_t feature_dim(int64_t d, const std::string& name);  // the last dim that feature_map returns

// Helpers shared by the linear-family ops (linear_attention, simple_gla, gla, rwkv6, based). Internal
// tensors use the heads-first layout [B, H, T, D] in the accumulation dtype.
namespace linear {

struct Prepared {
  int64_t B = 0, T = 0, H = 0, K = 0, V = 0;
  torch::ScalarType dtype = torch::kFloat;    // accumulation dtype: float32, or float64 for float64 q
  torch::ScalarType v_dtype = torch::kFloat;  // dtype of the returned o
  torch::Tensor q, k, v;                      // [B, H, T, K] (q times scale), [B, H, T, K], [B, H, T, V]
  torch::Tensor S0;                           // [B, H, K, V]: h0, or zeros
};

// Checks q, k, v, h0 (when defined) and chunk_size: shapes and floating point types.
void check_inputs(const char* op, const RecurrentArgs& a);

// check_inputs, then converts to the heads-first layout and applies the scale.
// Gates and other inputs are the caller's to check (check_shape with the op's letters).
Prepared prepare(const char* op, const RecurrentArgs& a);

// [B, T, H, ...] -> [B, H, T, ...] in dtype.
torch::Tensor heads_first(const torch::Tensor& x, torch::ScalarType dtype);

// The chunk length actually used: args.chunk_size capped at T (one chunk covers a short sequence).
int64_t chunk_len(int64_t chunk_size, int64_t T);

// [B, H, T, ...] -> [B, H, N, C, ...], zero-padded at the end of T up to N * C. Zero k, v and zero log gates
// make the padded steps leave the state unchanged, so the final state is the state after step T.
torch::Tensor to_chunks(const torch::Tensor& x, int64_t C);
// [B, H, N, C, ...] -> [B, H, T, ...], dropping the padding.
torch::Tensor from_chunks(const torch::Tensor& x, int64_t T);

// Sums of log gates that cover exactly the steps a decay spans, along `dim`:
//   exclusive_cumsum:         out_t = sum_{s < t} x_s  (the first is the constant 0)
//   reverse_exclusive_cumsum: out_t = sum_{s > t} x_s  (the last is the constant 0)
// Why not G_t - G_s of one cumsum: an empty span then is G_s - G_s, whose gradient adds and subtracts the
// same large term (decay 1) into dg; with strong gates dg is small and float32 keeps only ~1e-5 of it.
torch::Tensor exclusive_cumsum(const torch::Tensor& x, int64_t dim);
torch::Tensor reverse_exclusive_cumsum(const torch::Tensor& x, int64_t dim);

// The inter-chunk recurrence S_{n+1} = decay_n * S_n + U_n from S_0 = S0. U [B, H, N, K, V]; decay
// broadcastable to it ([B, H, N, K, 1] or [B, H, N, 1, 1]) or undefined for no decay.
// Returns the states entering each chunk [B, H, N, K, V] and the final state [B, H, K, V].
std::pair<torch::Tensor, torch::Tensor> scan_states(const torch::Tensor& S0, const torch::Tensor& decay,
                                                    const torch::Tensor& U);

// o [B, H, T, V] -> RecurrentOut with o [B, T, H, V] in v's dtype, and ht when asked for.
RecurrentOut finish(const Prepared& p, const torch::Tensor& o, const torch::Tensor& S, bool final_state);

// An op's CUDA kernel path, for dispatch. `unusable` returns why the kernel cannot take these arguments
// (empty: it can; it also says so for CPU tensors or a build without the kernels); `run` runs it.
// Both unset: the op has no kernel.
struct KernelPath {
  bool on_cuda = false;  // the inputs are CUDA tensors (only then is a fallback worth a log line)
  std::function<std::string()> unusable;
  std::function<RecurrentOut()> run;
};

// The kernel path of the scalar-decay ops (linear attention: gated = false; simple GLA / retention: true):
// the fused one-token step kernel for T == 1 without autograd, cuda::linear_chunk otherwise, when the build
// has them. `args` must outlive the returned path.
KernelPath chunk_kernel_path(const RecurrentArgs& args, bool gated);

// Runs the implementation `impl` names. automatic: the kernel when the inputs are on CUDA and it takes
// them (otherwise chunk, logged once with the reason); kernel: the kernel or an error saying why not;
// sdpa: an error (softmax only).
RecurrentOut dispatch(const char* op, Impl impl, const std::function<RecurrentOut()>& naive,
                      const std::function<RecurrentOut()>& chunk, const KernelPath& kernel = {});

}  // namespace linear
}  // namespace attnlab::ops
