// Causal depthwise short convolution with a rolling cache (Mamba, Mamba2, DeltaNet, Gated DeltaNet, Based).
#pragma once

#include <torch/torch.h>

namespace attnlab {

// y_t = act(sum_{j=0}^{K-1} w[c, j] x_{t-K+1+j} + b[c]) per channel c, causal: a token sees itself and the
// K-1 tokens before it (Gu & Dao 2023, the conv of Mamba; FLA's ShortConvolution). The weight has
// PyTorch's depthwise Conv1d layout [C, 1, K] (so checkpoints map one to one); act is SiLU or nothing.
class ShortConvImpl : public torch::nn::Module {
 public:
  // channels C, kernel_size K >= 1; bias adds b [C]; silu applies SiLU after the convolution.
  ShortConvImpl(int64_t channels, int64_t kernel_size, bool bias = false, bool silu = true);

  // x [B, T, C] -> [B, T, C].
  // buffer == nullptr (training): the sequence starts here; the left is padded with zeros.
  // buffer != nullptr (prefill / decode): *buffer [B, K-1, C] holds the K-1 inputs before x (zeros at the
  // start of a sequence; an undefined tensor counts as zeros). It is read, then replaced by the last K-1
  // inputs of [buffer, x] (detached, in the buffer's dtype), so that pieces of any length T >= 1 chain.
  torch::Tensor forward(const torch::Tensor& x, torch::Tensor* buffer = nullptr);

  // An empty rolling buffer [batch, K-1, C] for `forward(x, &buffer)`.
  torch::Tensor make_buffer(int64_t batch, const torch::TensorOptions& options) const;

  int64_t channels() const { return channels_; }
  int64_t kernel_size() const { return kernel_size_; }

  torch::Tensor weight;  // [C, 1, K]
  torch::Tensor bias;    // [C], undefined without bias

 private:
  int64_t channels_, kernel_size_;
  bool silu_;
};
TORCH_MODULE(ShortConv);

}  // namespace attnlab
