// Synthetic tasks (../shared/tasks.md): data generators for MQAR, copying, the MAD suite and passkey
// retrieval. A task registers itself with its options, like a mixer:
//   ATTNLAB_REGISTER_TASK("mqar", MqarOptions, MqarTask, "multi-query associative recall (Zoology)");
// Every generator is a pure function of (options, n, seed): the same seed gives the same tensors on every
// machine (our own RNG, not std::*_distribution, whose output differs between standard libraries).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/options.h"

namespace attnlab::tasks {

// Label of a position that is neither trained on nor scored (PyTorch's ignore_index convention).
constexpr int64_t kIgnore = -100;

// Examples of one task: row i is one example (or, for packed training data, several).
struct TaskData {
  torch::Tensor inputs;  // [N, L] int64 token ids
  torch::Tensor labels;  // [N, L] int64: the token expected at each position, kIgnore where none
};

// xoshiro256** seeded through splitmix64: small, fast and identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  // Uniform in [0, n), n >= 1, without modulo bias (Lemire's method with rejection).
  int64_t uniform(int64_t n);
  // Uniform in [lo, hi] (inclusive).
  int64_t range(int64_t lo, int64_t hi) { return lo + uniform(hi - lo + 1); }
  double uniform01();  // [0, 1) with 53 random bits
  template <class T>
  void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(uniform(int64_t(i)))]);
  }
  // k distinct indices of [0, weights.size()), drawn one after another with probability proportional to
  // the remaining weights (what numpy's choice(replace=False, p=...) does).
  std::vector<int64_t> weighted_without_replacement(const std::vector<double>& weights, int64_t k);
  // k distinct values of [0, n) in random order.
  std::vector<int64_t> distinct(int64_t n, int64_t k);

 private:
  uint64_t s_[4];
};

// The seed of one data split: train and test streams never share a seed (the same `seed` option is used
// for both, the split is mixed in).
uint64_t split_seed(uint64_t seed, const std::string& split);

class Task {
 public:
  virtual ~Task() = default;
  virtual int64_t vocab_size() const = 0;
  // The longest input row over the training data and every evaluation set (sizes the position table).
  virtual int64_t max_len() const = 0;
  // n training rows from `seed`.
  virtual TaskData train_data(int64_t n, uint64_t seed) const = 0;
  // Named evaluation sets (e.g. "test", or "len40" for copying at length 40); the first one is the one
  // early stopping watches.
  virtual std::vector<std::string> eval_sets() const { return {"test"}; }
  virtual TaskData eval_data(const std::string& set, int64_t n, uint64_t seed) const = 0;
  // Whether softmax attention should use learned absolute positions on this task (Zoology's MQAR setup)
  // rather than RoPE.
  virtual bool learned_positions() const { return false; }
  // Tokens that the sweep's seq_len option sets (0 when the task has no single length).
  virtual int64_t seq_len() const = 0;

 protected:
  // Throws unless `set` is one of eval_sets().
  void check_eval_set(const std::string& set) const;
};

// A task with one evaluation set ("test") drawn like its training data: subclasses write make(), which
// gets the split's seed and whether the rows are for training (some tasks score more tokens then).
class SingleSetTask : public Task {
 public:
  TaskData train_data(int64_t n, uint64_t seed) const final {
    return make(n, split_seed(seed, "train"), true);
  }
  TaskData eval_data(const std::string& set, int64_t n, uint64_t seed) const final {
    check_eval_set(set);
    return make(n, split_seed(seed, "test"), false);
  }

 protected:
  virtual TaskData make(int64_t n, uint64_t seed, bool training) const = 0;
};

// Scores of a model's predictions on one evaluation set.
struct TaskScore {
  double accuracy = 0;     // mean over examples of the fraction of scored positions predicted right
  double exact_match = 0;  // fraction of examples with every scored position right
  int64_t examples = 0;
  int64_t positions = 0;  // scored positions in total
};

// predictions [N, L] (argmax ids) against labels [N, L]; rows without any scored position are skipped.
TaskScore score(const torch::Tensor& predictions, const torch::Tensor& labels);

// ---- registry ---------------------------------------------------------------------------------------

// What the sweep of a preset (quick / paper) sets for a task; see train/task_runner.h.
struct TaskPreset {
  std::vector<int64_t> seq_lens;  // one run per length (the task's seq_len option)
  std::vector<int64_t> d_models;
  std::vector<double> lrs;
  int64_t n_layers = 2;
  double mlp_ratio = 0;  // 0: no MLP (Zoology's MQAR); MAD interleaves SwiGLU blocks
  int64_t train_examples = 0;
  int64_t test_examples = 0;
  int64_t epochs = 0;
  int64_t batch_size = 0;
  double weight_decay = 0.1;
  double target_accuracy = 0.99;
  std::map<std::string, std::string> task_options;  // key -> YAML value, applied to the task's options
};

struct TaskEntry {
  std::string name;
  std::string help;
  std::function<std::unique_ptr<AnyOptions>()> make_options;
  std::function<std::unique_ptr<Task>(const AnyOptions&)> build;
  std::function<TaskPreset(const std::string& preset)> preset;  // "quick" | "paper"
};

class TaskRegistry {
 public:
  static TaskRegistry& instance();
  void add(TaskEntry entry);
  const TaskEntry& get(const std::string& name) const;  // an unknown name lists the known ones
  std::vector<std::string> names() const;

 private:
  std::map<std::string, TaskEntry> entries_;
};

// Builds a task by name from its options (which must come from that entry's make_options()).
std::unique_ptr<Task> build_task(const std::string& name, const AnyOptions& options);

namespace task_detail {
template <class Options, class TaskT>
struct Registrar {
  Registrar(const char* name, const char* help, TaskPreset (*preset)(const std::string&)) {
    TaskEntry e;
    e.name = name;
    e.help = help;
    e.make_options = [] { return std::make_unique<TypedOptions<Options>>(); };
    e.build = [name = std::string(name)](const AnyOptions& opts) -> std::unique_ptr<Task> {
      const auto* typed = dynamic_cast<const TypedOptions<Options>*>(&opts);
      if (!typed) throw Error("task '" + name + "': options of the wrong type passed to build()");
      typed->validate();
      return std::make_unique<TaskT>(typed->value);
    };
    e.preset = preset;
    TaskRegistry::instance().add(std::move(e));
  }
};
}  // namespace task_detail

// The presets' sizes are fixed by name; anything else is an error naming both.
void check_preset_name(const std::string& preset);

}  // namespace attnlab::tasks

#define ATTNLAB_TASK_CONCAT_INNER(a, b) a##b
#define ATTNLAB_TASK_CONCAT(a, b) ATTNLAB_TASK_CONCAT_INNER(a, b)
#define ATTNLAB_REGISTER_TASK(name, Options, TaskT, help, preset)                      \
  static ::attnlab::tasks::task_detail::Registrar<Options, TaskT> ATTNLAB_TASK_CONCAT( \
      attnlab_task_registrar_, __LINE__)(name, help, preset)
