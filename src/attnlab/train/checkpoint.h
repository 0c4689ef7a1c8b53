// Checkpoints: model, optimiser, step, RNG states, history, tokenizer and resolved config in one directory,
// written to a temporary directory first and swapped in, so a crash or Ctrl-C never leaves a half checkpoint.
#pragma once

#include <torch/torch.h>

#include <random>
#include <string>

#include "attnlab/data/tokenizer.h"
#include "attnlab/model/lm.h"
#include "attnlab/train/config.h"
#include "attnlab/train/history.h"

namespace attnlab {

struct TrainState {
  int64_t step = 0;           // optimiser steps done
  std::mt19937_64 batch_rng;  // the batch sampler's generator, exactly where it stopped
  double elapsed_s = 0;       // training time before this checkpoint
  int64_t tokens = 0;         // training tokens consumed
  History history;
};

// Writes `<dir>` (e.g. runs/x/checkpoints/last) atomically.
void save_checkpoint(const std::string& dir, LanguageModel& model, torch::optim::Optimizer& optimizer,
                     const TrainState& state, const RunConfig& config, const CharTokenizer& tokenizer);

// The checkpoint directory for a path that is a run directory or a checkpoint directory; errors say what
// was looked for.
std::string find_checkpoint(const std::string& path);

// Reads config.yaml and tokenizer.json of a checkpoint directory.
RunConfig read_checkpoint_config(const std::string& dir);
CharTokenizer read_checkpoint_tokenizer(const std::string& dir);

// Loads weights into `model` (built from that config); optimiser and state only when given.
void load_checkpoint(const std::string& dir, LanguageModel& model, torch::optim::Optimizer* optimizer,
                     TrainState* state);

}  // namespace attnlab
