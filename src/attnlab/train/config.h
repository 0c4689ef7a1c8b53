// The run configuration: model, data, train and per-mixer option sections, read from YAML and
// `--set section.key=value`, validated against the declared schemas, saved resolved with every run.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/options.h"
#include "attnlab/data/corpus.h"
#include "attnlab/model/lm.h"

namespace attnlab {

struct TrainOptions {
  int64_t steps = 1000;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
  int64_t warmup = 100;       // linear warm-up steps
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double grad_clip = 1.0;  // max global gradient norm (0 = off)
  int64_t grad_accum = 1;  // micro-batches per optimiser step
  int64_t log_every = 10;
  int64_t eval_every = 100;
  int64_t eval_batches = 8;  // validation windows = eval_batches * batch_size
  int64_t ckpt_every = 200;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string dtype = "auto";   // auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
  int64_t seed = 1337;
  int64_t threads = 0;  // CPU threads (0 = all cores, or OMP_NUM_THREADS)
  static const OptionSet<TrainOptions>& schema();
};

struct RunConfig {
  ModelOptions model;
  DataOptions data;
  TrainOptions train;
  // Options of each mixer, by mixer name. Every mixer the model uses has an entry after resolve().
  std::map<std::string, std::shared_ptr<AnyOptions>> mixers;

  // Reads a YAML file: top-level sections model, data, train, mixer (a map from mixer name to options).
  void load_file(const std::string& path);
  void apply(const YAML::Node& root, const std::string& where);
  // "train.lr=3e-4", "mixer.softmax.window=64"; unknown keys list the valid ones.
  void set(const std::string& assignment);
  // Fills defaults for every mixer the model uses and validates every section.
  void resolve();
  YAML::Node to_yaml() const;
  std::string to_yaml_string() const;

  // Keys whose values differ between two configs within the given sections ("model.d_model: 128 vs 256").
  static std::vector<std::string> differences(const RunConfig& a, const RunConfig& b,
                                              const std::vector<std::string>& sections);
};

}  // namespace attnlab
