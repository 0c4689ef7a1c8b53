// Copying as in "Repeat After Me" (Jelassi et al. 2024): `$ s | s .` with s uniform over 26 letters.
// Training packs examples of lengths [min_len, max_len] into one context; the loss is on the copy (and
// the final '.'). Evaluation puts one example per row at lengths up to 4x the training length and scores
// character accuracy and exact match of the whole copy.
#include <algorithm>

#include "attnlab/core/error.h"
#include "attnlab/data/tasks/task.h"

namespace attnlab::tasks {
namespace {

// Token ids: 0 pad, 1..26 letters, then the three markers.
constexpr int64_t kPad = 0, kBos = 27, kSep = 28, kEos = 29, kCopyVocab = 30;

struct CopyingOptions {
  int64_t min_len = 5;
  int64_t max_len = 20;
  int64_t seq_len = 220;  // training row length (examples packed)
  std::vector<int64_t> eval_lengths = {10, 20, 40, 60, 80};

  static const OptionSet<CopyingOptions>& schema() {
    static const OptionSet<CopyingOptions> s = [] {
      OptionSet<CopyingOptions> o("task");
      o.add("min_len", &CopyingOptions::min_len, "shortest training string", check::positive<int64_t>());
      o.add("max_len", &CopyingOptions::max_len, "longest training string", check::positive<int64_t>());
      o.add("seq_len", &CopyingOptions::seq_len, "training row length (examples are packed into it)",
            check::positive<int64_t>());
      o.add("eval_lengths", &CopyingOptions::eval_lengths, "string lengths evaluated (one set each)");
      return o;
    }();
    return s;
  }
};

class CopyingTask final : public Task {
 public:
  explicit CopyingTask(const CopyingOptions& o) : o_(o) {
    ATTNLAB_CHECK(o_.min_len <= o_.max_len, "copying: min_len {} > max_len {}", o_.min_len, o_.max_len);
    ATTNLAB_CHECK(2 * o_.max_len + 3 <= o_.seq_len,
                  "copying: a training example of max_len {} needs {} tokens but seq_len is {}", o_.max_len,
                  2 * o_.max_len + 3, o_.seq_len);
    ATTNLAB_CHECK(!o_.eval_lengths.empty(), "copying: eval_lengths is empty; give at least one length");
    for (auto n : o_.eval_lengths) ATTNLAB_CHECK(n > 0, "copying: eval_lengths must be > 0, got {}", n);
  }

  int64_t vocab_size() const override { return kCopyVocab; }
  int64_t seq_len() const override { return o_.seq_len; }
  int64_t max_len() const override {
    int64_t longest = *std::max_element(o_.eval_lengths.begin(), o_.eval_lengths.end());
    return std::max(o_.seq_len, 2 * longest + 3);
  }
  std::vector<std::string> eval_sets() const override {
    std::vector<std::string> out;
    for (auto n : o_.eval_lengths) out.push_back("len" + std::to_string(n));
    return out;
  }

  TaskData train_data(int64_t n, uint64_t seed) const override {
    Rng rng(split_seed(seed, "train"));
    auto inputs = torch::full({n, o_.seq_len}, kPad, torch::kLong);
    auto labels = torch::full({n, o_.seq_len}, kIgnore, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto lab = labels.accessor<int64_t, 2>();
    for (int64_t r = 0; r < n; ++r) {
      int64_t pos = 0;
      while (true) {
        const int64_t len = rng.range(o_.min_len, o_.max_len);
        if (pos + 2 * len + 3 > o_.seq_len) break;
        pos = write_example(rng, len, pos, in[r], lab[r]);
      }
    }
    return {inputs, labels};
  }

  TaskData eval_data(const std::string& set, int64_t n, uint64_t seed) const override {
    check_eval_set(set);
    const int64_t len = std::stoll(set.substr(3));
    const int64_t L = 2 * len + 3;
    Rng rng(split_seed(seed, "test:" + set));
    auto inputs = torch::full({n, L}, kPad, torch::kLong);
    auto labels = torch::full({n, L}, kIgnore, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto lab = labels.accessor<int64_t, 2>();
    for (int64_t r = 0; r < n; ++r) write_example(rng, len, 0, in[r], lab[r]);
    return {inputs, labels};
  }

 private:
  // Writes `$ s | s .` at `pos`; labels on every position whose next token is part of the copy or the
  // final '.', i.e. from '|' to the last copied letter. Returns the position after the example.
  template <class Row>
  static int64_t write_example(Rng& rng, int64_t len, int64_t pos, Row in, Row lab) {
    std::vector<int64_t> s(static_cast<size_t>(len));
    for (auto& c : s) c = 1 + rng.uniform(26);
    const int64_t start = pos;
    in[pos++] = kBos;
    for (auto c : s) in[pos++] = c;
    in[pos++] = kSep;
    for (auto c : s) in[pos++] = c;
    in[pos++] = kEos;
    for (int64_t t = start + len + 1; t < pos - 1; ++t) lab[t] = in[t + 1];
    return pos;
  }

  CopyingOptions o_;
};

TaskPreset preset(const std::string& name) {
  check_preset_name(name);
  TaskPreset p;
  if (name == "quick") {
    p.seq_lens = {110};  // a smaller packed context; evaluation still goes to 4x the longest string
    p.d_models = {64};
    p.lrs = {3e-3};
    p.train_examples = 4000;
    p.test_examples = 200;
    p.epochs = 6;
    p.batch_size = 32;
    p.task_options["eval_lengths"] = "[10, 20, 40]";
  } else {  // Jelassi et al.: 220-token contexts, lengths 5..20, evaluation up to 4x
    p.seq_lens = {220};
    p.d_models = {256};
    p.lrs = {1e-4, 3e-4, 1e-3};
    p.train_examples = 200000;
    p.test_examples = 1000;
    p.epochs = 4;
    p.batch_size = 64;
  }
  p.n_layers = 4;
  p.mlp_ratio = 4;
  p.weight_decay = 0.1;
  p.target_accuracy = 1.0;  // never stop early: length generalisation is the point, not the training set
  return p;
}

}  // namespace

ATTNLAB_REGISTER_TASK("copying", CopyingOptions, CopyingTask,
                      "copy a random string (Repeat After Me): exact match by length, up to 4x training",
                      preset);

}  // namespace attnlab::tasks
