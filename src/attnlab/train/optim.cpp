// The optimiser and the precision policy.
#include "attnlab/train/optim.h"

#include "attnlab/core/error.h"

namespace attnlab {

std::unique_ptr<torch::optim::AdamW> make_optimizer(torch::nn::Module& model, const TrainOptions& t) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model.parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  auto opts = torch::optim::AdamWOptions(t.lr).betas({t.beta1, t.beta2}).weight_decay(t.weight_decay);
  auto opts_nd = torch::optim::AdamWOptions(t.lr).betas({t.beta1, t.beta2}).weight_decay(0.0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(opts));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(opts_nd));
  return std::make_unique<torch::optim::AdamW>(groups, opts);
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

bool use_autocast(const TrainOptions& t, const torch::Device& device) {
  if (t.dtype == "fp32") return false;
  if (t.dtype == "bf16" && !device.is_cuda())
    fail("train.dtype bf16 is for CUDA devices; on the CPU training runs in fp32 (use dtype: auto or fp32)");
  return device.is_cuda();
}

}  // namespace attnlab
