// The trainer: AdamW, warm-up + cosine schedule, gradient clipping and accumulation, bf16 autocast on CUDA,
// validation, history, atomic checkpoints, exact resume, Ctrl-C and NaN handling.
#pragma once

#include <functional>
#include <string>

#include "attnlab/data/corpus.h"
#include "attnlab/model/lm.h"
#include "attnlab/train/checkpoint.h"
#include "attnlab/train/config.h"

namespace attnlab {

// Raised when the loss becomes NaN or inf; the last good checkpoint is kept untouched.
class TrainingDiverged : public Error {
 public:
  using Error::Error;
};

struct TrainResult {
  int64_t steps_done = 0;
  bool interrupted = false;  // Ctrl-C: a checkpoint was written, rerun with --resume
  double final_train_loss = 0;
  double val_loss = 0, val_ppl = 0;
  int64_t val_step = 0;    // the step at which val_loss was measured
  double unigram_ppl = 0;  // the baseline on the same validation tokens
  int64_t parameters = 0;
  double tokens_per_s = 0;
  std::string run_dir;
};

struct TrainerHooks {
  // Called after every optimiser step with (step, loss); tests use it to inject faults.
  std::function<void(int64_t, double)> after_step;
  // Replaces the computed loss of a step (tests: simulate a NaN).
  std::function<torch::Tensor(int64_t, torch::Tensor)> loss_filter;
};

class Trainer {
 public:
  // `run_dir` receives config.yaml, log.txt, history.json, metrics.csv and checkpoints/. With `resume`,
  // training continues from run_dir's last checkpoint (the config must agree with the saved one).
  Trainer(RunConfig config, std::string run_dir, bool resume, TrainerHooks hooks = {});
  TrainResult run();

  // Mean validation loss over `windows` evenly spaced windows of a stream (deterministic).
  static double evaluate(LanguageModel& model, const TokenStream& stream, int64_t seq_len, int64_t batch,
                         int64_t windows, const torch::Device& device, bool autocast);

 private:
  RunConfig cfg_;
  std::string run_dir_;
  bool resume_;
  TrainerHooks hooks_;
};

// Asks a running Trainer to checkpoint and stop at the end of its current step (what SIGINT does).
void request_stop();
// Whether a stop was requested (SIGINT or request_stop()) since the innermost SigintScope began.
bool stop_requested();

// While alive, SIGINT requests a stop instead of killing the process (training loops poll
// stop_requested() after each step, save and exit 130). Clears any earlier request; restores the previous
// handler on exit.
class SigintScope {
 public:
  SigintScope();
  ~SigintScope();
  SigintScope(const SigintScope&) = delete;
  SigintScope& operator=(const SigintScope&) = delete;

 private:
  void (*prev_)(int);
};

}  // namespace attnlab
