// The optimiser and the precision policy shared by every training loop (language models, synthetic tasks).
#pragma once

#include <torch/torch.h>

#include <memory>

#include "attnlab/train/config.h"

namespace attnlab {

// AdamW with decoupled weight decay on matrices only (embeddings and linears), none on norms and biases
// (decaying a gain or a log-decay parameter towards zero changes what it means, not just its size).
std::unique_ptr<torch::optim::AdamW> make_optimizer(torch::nn::Module& model, const TrainOptions& t);

// Sets the learning rate of every parameter group (the schedule is applied by the caller each step).
void set_lr(torch::optim::Optimizer& opt, double lr);

// Whether to train under bf16 autocast: train.dtype auto -> on CUDA only; bf16 on the CPU is an error.
bool use_autocast(const TrainOptions& t, const torch::Device& device);

}  // namespace attnlab
