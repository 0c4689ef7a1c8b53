// The MAD synthetic suite (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures",
// github.com/athms/mad-lab, mad/data/instances.py), generated as mad-lab does:
//   in_context_recall  key-value pairs from a small vocabulary, keys repeat; multi-query: every value whose
//                      key was seen before is scored
//   noisy_recall       the same with 20% of the pairs replaced by tokens of a separate noise vocabulary
//   fuzzy_recall       keys and values of 1..3 tokens
//   selective_copying  16 tokens scattered among blanks, copied in order after a copy token
//   memorization       a fixed key -> value map that lives in the weights, not in the context
// As in mad-lab, training rows are scored on every next token (language modelling on the instances) and
// evaluation rows only on the recalled values / copies. Two departures, both to avoid mad-lab's rare
// failures: the pair that is never noise is drawn among the pairs actually generated (mad-lab may pick the
// final probe slot and then find no key to probe), and every draw uses our seeded RNG (mad-lab's selective
// copying uses numpy's global RNG for the blank positions).
#include <algorithm>
#include <map>

#include "attnlab/core/error.h"
#include "attnlab/data/tasks/task.h"

namespace attnlab::tasks {
namespace {

enum class Recall { plain, noisy, fuzzy };

template <Recall K>
struct RecallOptions {
  int64_t vocab_size = K == Recall::noisy ? 32 : 16;
  int64_t seq_len = 128;
  bool multi_query = true;
  int64_t noise_vocab_size = K == Recall::noisy ? 16 : 0;
  double frac_noise = K == Recall::noisy ? 0.2 : 0.0;
  int64_t k_motif_size = K == Recall::fuzzy ? 3 : 1;  // fuzzy recall only
  int64_t v_motif_size = K == Recall::fuzzy ? 3 : 1;

  static const OptionSet<RecallOptions>& schema() {
    static const OptionSet<RecallOptions> s = [] {
      OptionSet<RecallOptions> o("task");
      o.add("vocab_size", &RecallOptions::vocab_size, "vocabulary (special and noise tokens included)",
            check::positive<int64_t>());
      o.add("seq_len", &RecallOptions::seq_len, "instance length (even)", check::positive<int64_t>());
      o.add("multi_query", &RecallOptions::multi_query,
            "score every repeated key's value (else only a final probe after a copy token)");
      o.add("noise_vocab_size", &RecallOptions::noise_vocab_size, "tokens reserved for noise",
            check::non_negative<int64_t>());
      o.add("frac_noise", &RecallOptions::frac_noise, "probability that a pair is replaced by noise",
            check::in_range(0.0, 0.99));
      if (K == Recall::fuzzy) {
        o.add("k_motif_size", &RecallOptions::k_motif_size, "longest key, in tokens",
              check::positive<int64_t>());
        o.add("v_motif_size", &RecallOptions::v_motif_size, "longest value, in tokens",
              check::positive<int64_t>());
      }
      return o;
    }();
    return s;
  }
};

// Appends `n` distinct tokens of [lo, lo + size) in random order (a random ordered motif).
void append_motif(Rng& rng, int64_t lo, int64_t size, int64_t n, std::vector<int64_t>& out) {
  for (auto v : rng.distinct(size, n)) out.push_back(lo + v);
}

// Turns one generated instance into a row: input = seq[:-1]; label = the next token (training) or the
// scored targets (evaluation), both shifted by one.
void emit(const std::vector<int64_t>& seq, const std::vector<int64_t>& targets, bool training, int64_t width,
          int64_t row, torch::TensorAccessor<int64_t, 2>& in, torch::TensorAccessor<int64_t, 2>& lab) {
  ATTNLAB_CHECK(static_cast<int64_t>(seq.size()) == width + 1, "internal: instance of {} tokens, expected {}",
                seq.size(), width + 1);
  for (int64_t t = 0; t < width; ++t) {
    in[row][t] = seq[static_cast<size_t>(t)];
    lab[row][t] = training ? seq[static_cast<size_t>(t + 1)] : targets[static_cast<size_t>(t + 1)];
  }
}

template <Recall K>
class RecallTask final : public SingleSetTask {
 public:
  using Options = RecallOptions<K>;
  explicit RecallTask(const Options& o) : o_(o) {
    ATTNLAB_CHECK(o_.seq_len % 2 == 0 && o_.seq_len >= 4, "recall: seq_len must be even and >= 4, got {}",
                  o_.seq_len);
    const int64_t special = K == Recall::fuzzy ? (o_.multi_query ? 1 : 2) : (o_.multi_query ? 0 : 1);
    nsv_ = o_.vocab_size - special - o_.noise_vocab_size;
    ATTNLAB_CHECK(nsv_ >= 4,
                  "recall: vocab_size {} leaves {} key/value tokens after {} special and {} noise tokens; "
                  "expected at least 4",
                  o_.vocab_size, nsv_, special, o_.noise_vocab_size);
    ATTNLAB_CHECK(o_.frac_noise == 0 || o_.noise_vocab_size > 0,
                  "recall: frac_noise {} needs noise_vocab_size > 0", o_.frac_noise);
    if (K == Recall::fuzzy) {
      ATTNLAB_CHECK(o_.k_motif_size <= nsv_ / 2 && o_.v_motif_size <= nsv_ - nsv_ / 2,
                    "fuzzy_recall: motifs of {} / {} distinct tokens do not fit {} key and {} value tokens",
                    o_.k_motif_size, o_.v_motif_size, nsv_ / 2, nsv_ - nsv_ / 2);
      ATTNLAB_CHECK(o_.seq_len > 4 * (o_.k_motif_size + o_.v_motif_size),
                    "fuzzy_recall: seq_len {} is too short for motifs of {} + {} tokens", o_.seq_len,
                    o_.k_motif_size, o_.v_motif_size);
    }
  }
  int64_t vocab_size() const override { return o_.vocab_size; }
  int64_t seq_len() const override { return o_.seq_len; }
  int64_t max_len() const override { return width(); }

 private:
  // Row width: mad-lab's multi-query instances are one token shorter (no copy token before the probe).
  int64_t width() const {
    if (K == Recall::fuzzy) return o_.seq_len;
    return o_.multi_query ? o_.seq_len - 1 : o_.seq_len;
  }

  TaskData make(int64_t n, uint64_t seed, bool training) const override {
    const int64_t W = width();
    auto inputs = torch::zeros({n, W}, torch::kLong);
    auto labels = torch::full({n, W}, kIgnore, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto lab = labels.accessor<int64_t, 2>();
    Rng rng(seed);
    std::vector<int64_t> seq, targets;
    for (int64_t r = 0; r < n; ++r) {
      seq.clear();
      targets.clear();
      if (K == Recall::fuzzy)
        fuzzy(rng, training, seq, targets);
      else
        plain(rng, seq, targets);
      emit(seq, targets, training, W, r, in, lab);
    }
    return {inputs, labels};
  }

  void plain(Rng& rng, std::vector<int64_t>& seq, std::vector<int64_t>& targets) const {
    const int64_t keys = nsv_ / 2, values = nsv_ - keys, copy_prefix = o_.vocab_size - 1;
    const int64_t pairs = o_.seq_len / 2;
    const int64_t not_noise = rng.uniform(pairs - 1);
    std::map<int64_t, int64_t> kv;
    std::vector<int64_t> presented;  // keys in order of first appearance (the probe is drawn among them)
    for (int64_t i = 0; i + 1 < pairs; ++i) {
      const bool noise = o_.frac_noise > 0 && i != not_noise && rng.uniform01() < o_.frac_noise;
      if (noise) {
        for (int j = 0; j < 2; ++j) {
          seq.push_back(nsv_ + rng.uniform(o_.noise_vocab_size));
          targets.push_back(kIgnore);
        }
        continue;
      }
      const int64_t k = rng.uniform(keys);
      auto it = kv.find(k);
      const bool seen = it != kv.end();
      const int64_t v = seen ? it->second : keys + rng.uniform(values);
      if (!seen) {
        kv[k] = v;
        presented.push_back(k);
      }
      seq.push_back(k);
      seq.push_back(v);
      targets.push_back(kIgnore);
      targets.push_back(seen && o_.multi_query ? v : kIgnore);
    }
    const int64_t kp = presented[static_cast<size_t>(rng.uniform(int64_t(presented.size())))];
    if (!o_.multi_query) {
      seq.push_back(copy_prefix);
      targets.push_back(kIgnore);
    }
    seq.push_back(kp);
    seq.push_back(kv[kp]);
    targets.push_back(kIgnore);
    targets.push_back(kv[kp]);
  }

  void fuzzy(Rng& rng, bool training, std::vector<int64_t>& seq, std::vector<int64_t>& targets) const {
    using Motif = std::vector<int64_t>;
    const int64_t keys = nsv_ / 2, values = nsv_ - keys;
    const int64_t kmax = o_.k_motif_size, vmax = o_.v_motif_size, L = o_.seq_len;
    const int64_t copy_prefix = o_.vocab_size - 1,
                  pad = o_.multi_query ? o_.vocab_size - 1 : o_.vocab_size - 2;
    auto key_size = [&] { return training ? rng.range(1, kmax) : kmax; };  // evaluation: longest keys
    auto motif = [&](int64_t lo, int64_t size, int64_t len) {
      Motif m;
      append_motif(rng, lo, size, len, m);
      return m;
    };
    const int64_t kps = key_size(), vps = rng.range(1, vmax);
    const Motif k_probe = motif(0, keys, kps), v_probe = motif(keys, values, vps);
    const int64_t probe_size = kps + vps;
    const int64_t probe_idx = rng.uniform(L - 2 * probe_size);
    bool probe_added = false;
    std::map<Motif, Motif> kv;  // keys of different lengths never compare equal
    std::map<Motif, bool> presented;
    auto add = [&](const Motif& m, bool scored) {
      for (auto t : m) {
        seq.push_back(t);
        targets.push_back(scored ? t : kIgnore);
      }
    };
    while (static_cast<int64_t>(seq.size()) < L - probe_size - (kmax + vmax)) {
      const int64_t ks = key_size(), vs = rng.range(1, vmax);
      if (static_cast<int64_t>(seq.size()) >= probe_idx && !probe_added) {
        add(k_probe, false);
        add(v_probe, false);
        kv[k_probe] = v_probe;
        presented[k_probe] = true;
        probe_added = true;
        continue;
      }
      if (o_.frac_noise > 0 && rng.uniform01() < o_.frac_noise) {
        for (int64_t j = 0; j < ks + vs; ++j) {
          seq.push_back(nsv_ + rng.uniform(o_.noise_vocab_size));
          targets.push_back(kIgnore);
        }
        continue;
      }
      const Motif k = motif(0, keys, ks);
      Motif v;
      if (k == k_probe) {
        v = v_probe;
        probe_added = true;
      } else {
        auto it = kv.find(k);
        v = it != kv.end() ? it->second : motif(keys, values, vs);
        kv[k] = v;
      }
      const bool seen = presented.count(k) != 0;
      add(k, false);
      add(v, seen && o_.multi_query);
      presented[k] = true;
    }
    if (!o_.multi_query) {
      seq.push_back(copy_prefix);
      targets.push_back(kIgnore);
    }
    add(k_probe, false);
    add(v_probe, true);
    // Left-pad to L + 1 tokens, as mad-lab does.
    const int64_t missing = L + 1 - static_cast<int64_t>(seq.size());
    ATTNLAB_CHECK(missing >= 0, "internal: fuzzy recall instance of {} tokens exceeds {}", seq.size(), L + 1);
    seq.insert(seq.begin(), static_cast<size_t>(missing), pad);
    targets.insert(targets.begin(), static_cast<size_t>(missing), kIgnore);
  }

  Options o_;
  int64_t nsv_ = 0;
};

struct SelectiveCopyingOptions {
  int64_t vocab_size = 16;
  int64_t seq_len = 256;
  int64_t num_tokens = 16;
  static const OptionSet<SelectiveCopyingOptions>& schema() {
    static const OptionSet<SelectiveCopyingOptions> s = [] {
      OptionSet<SelectiveCopyingOptions> o("task");
      o.add("vocab_size", &SelectiveCopyingOptions::vocab_size, "vocabulary (blank and copy tokens included)",
            check::positive<int64_t>());
      o.add("seq_len", &SelectiveCopyingOptions::seq_len, "instance length", check::positive<int64_t>());
      o.add("num_tokens", &SelectiveCopyingOptions::num_tokens, "tokens to copy", check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

class SelectiveCopyingTask final : public SingleSetTask {
 public:
  explicit SelectiveCopyingTask(const SelectiveCopyingOptions& o) : o_(o) {
    ATTNLAB_CHECK(o_.seq_len > 2 * o_.num_tokens + 1, "selective_copying: seq_len {} must be > 2 * {} + 1",
                  o_.seq_len, o_.num_tokens);
    ATTNLAB_CHECK(o_.vocab_size >= 3, "selective_copying: vocab_size must be >= 3, got {}", o_.vocab_size);
  }
  int64_t vocab_size() const override { return o_.vocab_size; }
  int64_t seq_len() const override { return o_.seq_len; }
  int64_t max_len() const override { return o_.seq_len; }

 private:
  // mad-lab's layout, labels aligned with inputs (no shift): the copies are predicted at the blanks that
  // follow the copy token, so training and evaluation both score the copy only.
  TaskData make(int64_t n, uint64_t seed, bool /*training*/) const override {
    const int64_t L = o_.seq_len, N = o_.num_tokens, copy = o_.vocab_size - 1, blank = o_.vocab_size - 2;
    const int64_t blanks = L - 2 * N - 1;
    auto inputs = torch::full({n, L}, blank, torch::kLong);
    auto labels = torch::full({n, L}, kIgnore, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto lab = labels.accessor<int64_t, 2>();
    Rng rng(seed);
    std::vector<int64_t> before(static_cast<size_t>(N));
    for (int64_t r = 0; r < n; ++r) {
      std::vector<int64_t> tokens(static_cast<size_t>(N));
      for (auto& t : tokens) t = rng.uniform(o_.vocab_size - 2);
      // Each blank goes before a uniformly chosen token (numpy.insert at random indices).
      std::fill(before.begin(), before.end(), 0);
      for (int64_t b = 0; b < blanks; ++b) ++before[static_cast<size_t>(rng.uniform(N))];
      int64_t pos = 0;
      for (int64_t i = 0; i < N; ++i) {
        pos += before[static_cast<size_t>(i)];  // already blank
        in[r][pos++] = tokens[static_cast<size_t>(i)];
      }
      in[r][pos++] = copy;
      for (int64_t i = 0; i < N; ++i) lab[r][pos + i] = tokens[static_cast<size_t>(i)];
    }
    return {inputs, labels};
  }
  SelectiveCopyingOptions o_;
};

struct MemorizationOptions {
  int64_t vocab_size = 256;
  int64_t seq_len = 32;
  int64_t map_seed = 12345;  // the key -> value map is the same for every instance and split
  static const OptionSet<MemorizationOptions>& schema() {
    static const OptionSet<MemorizationOptions> s = [] {
      OptionSet<MemorizationOptions> o("task");
      o.add("vocab_size", &MemorizationOptions::vocab_size, "vocabulary (insert token included)",
            check::positive<int64_t>());
      o.add("seq_len", &MemorizationOptions::seq_len, "instance length (even)", check::positive<int64_t>());
      o.add("map_seed", &MemorizationOptions::map_seed, "seed of the fixed key -> value map");
      return o;
    }();
    return s;
  }
};

class MemorizationTask final : public SingleSetTask {
 public:
  explicit MemorizationTask(const MemorizationOptions& o) : o_(o) {
    ATTNLAB_CHECK(o_.seq_len % 2 == 0, "memorization: seq_len must be even, got {}", o_.seq_len);
    ATTNLAB_CHECK(o_.vocab_size >= 5, "memorization: vocab_size must be >= 5, got {}", o_.vocab_size);
    const int64_t nsv = o_.vocab_size - 1, keys = nsv / 2;
    Rng rng(static_cast<uint64_t>(o_.map_seed));
    auto v = rng.distinct(nsv - keys, nsv - keys);  // a random bijection onto the value tokens
    for (int64_t k = 0; k < keys; ++k) map_.push_back(keys + v[static_cast<size_t>(k % (nsv - keys))]);
  }
  int64_t vocab_size() const override { return o_.vocab_size; }
  int64_t seq_len() const override { return o_.seq_len; }
  int64_t max_len() const override { return o_.seq_len; }

 private:
  // `k insert k insert ...`; the value is predicted at each insert token (labels aligned, as mad-lab).
  TaskData make(int64_t n, uint64_t seed, bool /*training*/) const override {
    const int64_t L = o_.seq_len, insert = o_.vocab_size - 1;
    auto inputs = torch::full({n, L}, insert, torch::kLong);
    auto labels = torch::full({n, L}, kIgnore, torch::kLong);
    auto in = inputs.accessor<int64_t, 2>();
    auto lab = labels.accessor<int64_t, 2>();
    Rng rng(seed);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < L / 2; ++i) {
        const int64_t k = rng.uniform(int64_t(map_.size()));
        in[r][2 * i] = k;
        lab[r][2 * i + 1] = map_[static_cast<size_t>(k)];
      }
    return {inputs, labels};
  }
  MemorizationOptions o_;
  std::vector<int64_t> map_;
};

// MAD's protocol (paper section 3): width 128, [mixer, SwiGLU, mixer, SwiGLU], AdamW, lr {1e-4, 5e-4, 1e-3}
// x weight decay {0, 0.1}, 200 epochs of 12,800 instances, batch 128, best run per setting.
TaskPreset mad_preset(const std::string& name) {
  check_preset_name(name);
  TaskPreset p;
  p.n_layers = 2;
  p.mlp_ratio = 4;
  p.target_accuracy = 1.0;
  if (name == "quick") {
    p.d_models = {64};
    p.lrs = {2e-3};
    p.train_examples = 4000;
    p.test_examples = 500;
    p.epochs = 10;
    p.batch_size = 64;
    p.weight_decay = 0.1;
  } else {
    p.d_models = {128};
    p.lrs = {1e-4, 5e-4, 1e-3};
    p.train_examples = 12800;
    p.test_examples = 1280;
    p.epochs = 200;
    p.batch_size = 128;
    p.weight_decay = 0.1;  // the sweep's weight_decays option adds 0 (see train/task_runner.h)
  }
  return p;
}

TaskPreset recall_preset(const std::string& name) {
  auto p = mad_preset(name);
  p.seq_lens = {name == "quick" ? int64_t(64) : int64_t(128)};
  return p;
}
TaskPreset selective_preset(const std::string& name) {
  auto p = mad_preset(name);
  p.seq_lens = {name == "quick" ? int64_t(96) : int64_t(256)};
  if (name == "quick") p.task_options["num_tokens"] = "8";
  return p;
}
TaskPreset memorization_preset(const std::string& name) {
  auto p = mad_preset(name);
  p.seq_lens = {32};
  return p;
}

}  // namespace

ATTNLAB_REGISTER_TASK("in_context_recall", RecallOptions<Recall::plain>, RecallTask<Recall::plain>,
                      "MAD in-context recall: values of repeated keys, vocabulary 16", recall_preset);
ATTNLAB_REGISTER_TASK("noisy_recall", RecallOptions<Recall::noisy>, RecallTask<Recall::noisy>,
                      "MAD noisy in-context recall: 20% noise tokens from a separate vocabulary",
                      recall_preset);
ATTNLAB_REGISTER_TASK("fuzzy_recall", RecallOptions<Recall::fuzzy>, RecallTask<Recall::fuzzy>,
                      "MAD fuzzy in-context recall: keys and values of 1-3 tokens", recall_preset);
ATTNLAB_REGISTER_TASK("selective_copying", SelectiveCopyingOptions, SelectiveCopyingTask,
                      "MAD selective copying: copy the non-blank tokens in order", selective_preset);
ATTNLAB_REGISTER_TASK("memorization", MemorizationOptions, MemorizationTask,
                      "MAD memorization: a fixed key -> value map learned into the weights",
                      memorization_preset);

}  // namespace attnlab::tasks
