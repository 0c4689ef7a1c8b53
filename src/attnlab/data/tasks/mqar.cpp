// MQAR, multi-query associative recall, generated as Zoology does (Arora et al. 2023, zoology/data/
// associative_recall.py; ../shared/tasks.md): N key-value pairs, then a query region in which every key
// appears once, at a gap drawn from a power law that favours short distances.
#include "attnlab/core/error.h"
#include "attnlab/data/tasks/task.h"

#include <cmath>

namespace attnlab::tasks {
namespace {

struct MqarOptions {
  int64_t vocab_size = 8192;
  int64_t seq_len = 64;
  int64_t num_pairs = 0;  // 0: Zoology's pairing for the length (64->4, 128->8, 256->16, 512->64), else L/16
  double power_a = 0.01;
  bool random_fillers = false;  // fill the query region's non-query slots with random tokens instead of 0

  static const OptionSet<MqarOptions>& schema() {
    static const OptionSet<MqarOptions> s = [] {
      OptionSet<MqarOptions> o("task");
      o.add("vocab_size", &MqarOptions::vocab_size, "vocabulary: keys from [1, V/2), values from [V/2, V)",
            check::positive<int64_t>());
      o.add("seq_len", &MqarOptions::seq_len, "input length L (4 * num_pairs <= L)",
            check::positive<int64_t>());
      o.add("num_pairs", &MqarOptions::num_pairs,
            "key-value pairs N (0: Zoology's N for L: 64->4, 128->8, 256->16, 512->64, else L/16)",
            check::non_negative<int64_t>());
      o.add("power_a", &MqarOptions::power_a, "query gaps drawn with probability ~ a * i^(a-1)",
            check::positive<double>());
      o.add("random_fillers", &MqarOptions::random_fillers,
            "random tokens instead of 0 between the queries (Zoology's random_non_queries)");
      return o;
    }();
    return s;
  }
};

int64_t pairs_for(int64_t L) {
  switch (L) {
    case 64:
      return 4;
    case 128:
      return 8;
    case 256:
      return 16;
    case 512:
      return 64;
    default:
      return std::max<int64_t>(1, L / 16);
  }
}

class MqarTask final : public SingleSetTask {
 public:
  explicit MqarTask(const MqarOptions& o) : o_(o), n_(o.num_pairs > 0 ? o.num_pairs : pairs_for(o.seq_len)) {
    // Zoology asserts the same: the query region must hold every key at an even offset.
    ATTNLAB_CHECK(4 * n_ <= o_.seq_len,
                  "mqar: 4 * num_pairs <= seq_len is required (the query region needs room for every key), "
                  "got num_pairs {} and seq_len {}",
                  n_, o_.seq_len);
    ATTNLAB_CHECK(o_.vocab_size / 2 - 1 >= n_ && o_.vocab_size - o_.vocab_size / 2 >= n_,
                  "mqar: vocab_size {} is too small for {} distinct keys and values", o_.vocab_size, n_);
    const int64_t space = (o_.seq_len - 2 * n_) / 2;
    weights_.resize(static_cast<size_t>(space));
    for (int64_t i = 0; i < space; ++i)
      weights_[static_cast<size_t>(i)] = o_.power_a * std::pow(double(i + 1), o_.power_a - 1.0);
  }

  int64_t vocab_size() const override { return o_.vocab_size; }
  int64_t max_len() const override { return o_.seq_len; }
  int64_t seq_len() const override { return o_.seq_len; }
  bool learned_positions() const override { return true; }

 private:
  TaskData make(int64_t count, uint64_t seed, bool /*training*/) const override {
    const int64_t L = o_.seq_len, N = n_, half = o_.vocab_size / 2;
    auto inputs = torch::zeros({count, L}, torch::kLong);
    auto labels = torch::full({count, L}, kIgnore, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto lab = labels.accessor<int64_t, 2>();
    Rng rng(seed);
    std::vector<int64_t> example(static_cast<size_t>(L + 1)), target(static_cast<size_t>(L + 1));
    for (int64_t e = 0; e < count; ++e) {
      std::fill(example.begin(), example.end(), 0);
      std::fill(target.begin(), target.end(), kIgnore);
      auto keys = rng.distinct(half - 1, N);  // + 1 below: keys in [1, V/2)
      auto values = rng.distinct(o_.vocab_size - half, N);
      for (int64_t i = 0; i < N; ++i) {
        example[static_cast<size_t>(2 * i)] = keys[static_cast<size_t>(i)] + 1;
        example[static_cast<size_t>(2 * i + 1)] = values[static_cast<size_t>(i)] + half;
      }
      auto gaps = rng.weighted_without_replacement(weights_, N);
      std::vector<bool> is_query(static_cast<size_t>(L + 1), false);
      for (int64_t i = 0; i < N; ++i) {
        const int64_t pos = 2 * N + 2 * gaps[static_cast<size_t>(i)];
        example[static_cast<size_t>(pos)] = keys[static_cast<size_t>(i)] + 1;
        target[static_cast<size_t>(pos + 1)] = values[static_cast<size_t>(i)] + half;
        is_query[static_cast<size_t>(pos)] = true;
      }
      if (o_.random_fillers)
        for (int64_t p = 2 * N; p <= L; ++p)
          if (!is_query[static_cast<size_t>(p)]) example[static_cast<size_t>(p)] = rng.uniform(o_.vocab_size);
      // Input is example[:-1]; the label of position t is target[t + 1] (the value follows its key).
      for (int64_t t = 0; t < L; ++t) {
        in[e][t] = example[static_cast<size_t>(t)];
        lab[e][t] = target[static_cast<size_t>(t + 1)];
      }
    }
    return {inputs, labels};
  }

  MqarOptions o_;
  int64_t n_;
  std::vector<double> weights_;
};

TaskPreset preset(const std::string& name) {
  check_preset_name(name);
  TaskPreset p;
  if (name == "quick") {  // one point of Zoology's figure 2, small enough for 2 CPU cores
    p.seq_lens = {64};
    p.d_models = {64};
    p.lrs = {1e-3, 3e-3};
    p.train_examples = 20000;
    p.test_examples = 1000;
    p.epochs = 8;  // softmax passes 0.95 after ~800 steps at lr 1e-3 (docs/findings.md)
    p.batch_size = 128;
  } else {  // Zoology figure 2
    p.seq_lens = {64, 128, 256, 512};
    p.d_models = {64, 128, 256, 512};
    p.lrs = {1e-4, 4.6415888e-4, 2.1544347e-3, 1e-2};  // logspace(-4, -2, 4)
    p.train_examples = 100000;
    p.test_examples = 3000;
    p.epochs = 64;
    p.batch_size = 256;  // Zoology: 512 (L <= 128), 256 (256), 128 (512); 256 keeps one value
  }
  p.n_layers = 2;
  p.mlp_ratio = 0;
  p.weight_decay = 0.1;
  p.target_accuracy = 0.99;
  return p;
}

}  // namespace

ATTNLAB_REGISTER_TASK("mqar", MqarOptions, MqarTask,
                      "multi-query associative recall (Zoology): recall N values from their keys", preset);

}  // namespace attnlab::tasks
