// The synthetic-task runner behind `attnlab task`: for each (seq_len, mixer, d_model, lr, weight decay,
// seed) of a sweep it trains a small model on a task's generated data, evaluates every evaluation set,
// and appends one CSV row per set to <out>/results.csv (atomically). A rerun skips the rows already there,
// so an interrupted sweep resumes; best.csv keeps the best lr per setting, as the papers report.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/options.h"
#include "attnlab/data/tasks/task.h"

namespace attnlab {

// The `sweep` section. Empty lists and zeros take the values of the preset (quick | paper) of the task.
struct TaskSweepOptions {
  std::string preset = "quick";
  std::vector<std::string> mixers = {"softmax", "linear_attention", "deltanet", "gated_deltanet"};
  std::vector<int64_t> d_models;
  std::vector<int64_t> seq_lens;
  std::vector<double> lrs;
  std::vector<double> weight_decays;
  std::vector<int64_t> seeds = {0};
  int64_t n_layers = 0;
  int64_t n_heads = 1;    // Zoology: attention with one head; the same heads for every mixer keeps
                          // state sizes comparable
  double mlp_ratio = -1;  // < 0: the preset's (0 = no MLP)
  int64_t train_examples = 0;
  int64_t test_examples = 0;
  int64_t epochs = 0;
  int64_t batch_size = 0;
  double target_accuracy = 0;   // early stop once the first evaluation set reaches it (0: preset)
  int64_t evals_per_epoch = 1;  // evaluations of the first set per epoch (early-stop checks)
  double warmup_fraction = 0.05;
  double min_lr_ratio = 0.0;  // cosine decays to lr * min_lr_ratio
  double grad_clip = 1.0;
  std::string positions = "auto";  // auto: learned absolute positions for softmax where the task says so
  std::string device = "auto";
  int64_t threads = 0;

  static const OptionSet<TaskSweepOptions>& schema();
};

// What `attnlab task` reads: the sweep, the task's own options and per-mixer options.
struct TaskConfig {
  std::string task;
  TaskSweepOptions sweep;
  std::shared_ptr<AnyOptions> task_options;                   // the task entry's options
  std::map<std::string, std::shared_ptr<AnyOptions>> mixers;  // mixer name -> options
  std::vector<std::string> task_sets;                         // user's task.* assignments (win over presets)

  explicit TaskConfig(std::string task_name);
  // YAML file with sections sweep, task, mixer.
  void load_file(const std::string& path);
  // "sweep.lrs=[1e-3,3e-3]", "task.num_pairs=8", "mixer.gla.expand_k=1"
  void set(const std::string& assignment);
  // Fills the preset's values into the sweep fields left empty; validates.
  void resolve();
  std::string to_yaml_string() const;
};

struct TaskRow {
  std::string task, mixer, eval_set;
  int64_t d_model = 0, seq_len = 0, seed = 0;
  double lr = 0, weight_decay = 0;
  double accuracy = 0, exact_match = 0;
  int64_t examples = 0, positions = 0;
  int64_t parameters = 0, state_bytes = 0;
  int64_t steps = 0, epochs_run = 0;
  bool early_stopped = false;
  double final_loss = 0, train_seconds = 0;
  std::string device;
};

struct TaskRunSummary {
  std::vector<TaskRow> rows;  // every row of results.csv (previous runs included)
  int64_t trained = 0, skipped = 0;
  bool interrupted = false;
};

// Runs the sweep into `out_dir` (results.csv, best.csv, config.yaml). Ctrl-C stops after the current
// step without writing a partial row (interrupted = true); rerunning resumes.
TaskRunSummary run_task_sweep(const TaskConfig& config, const std::string& out_dir);

// Best accuracy over lr and weight decay for each (task, mixer, d_model, seq_len, seed, eval_set).
std::vector<TaskRow> best_rows(const std::vector<TaskRow>& rows);

}  // namespace attnlab
