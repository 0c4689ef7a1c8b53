// Passkey retrieval (Mohtashami & Jaggi 2023; the S-NIAH tasks of RULER): a random number hidden at a
// chosen depth of filler text, asked for at the end. Character level, so that a small model trained here
// can be probed by depth and context length. Training rows draw the length and the depth at random;
// evaluation has one set per (length, depth): accuracy is per digit, exact match per passkey.
#include <algorithm>
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/data/tasks/task.h"

namespace attnlab::tasks {
namespace {

struct PasskeyOptions {
  int64_t seq_len = 256;  // longest training row
  int64_t min_len = 0;    // shortest training row (0: seq_len / 2)
  int64_t digits = 5;
  std::string filler = "repeat";           // repeat: the classic repeated sentences; noise: random letters
  std::vector<int64_t> eval_lengths = {};  // empty: seq_len / 2, seq_len, 2 * seq_len
  std::vector<int64_t> eval_depths = {0, 25, 50, 75, 100};  // percent of the filler before the needle

  static const OptionSet<PasskeyOptions>& schema() {
    static const OptionSet<PasskeyOptions> s = [] {
      OptionSet<PasskeyOptions> o("task");
      o.add("seq_len", &PasskeyOptions::seq_len, "longest training row, in characters",
            check::positive<int64_t>());
      o.add("min_len", &PasskeyOptions::min_len, "shortest training row (0: seq_len / 2)",
            check::non_negative<int64_t>());
      o.add("digits", &PasskeyOptions::digits, "digits of the passkey", check::in_range<int64_t>(1, 18));
      o.add("filler", &PasskeyOptions::filler, "haystack: repeat (fixed sentences) | noise (random letters)",
            check::one_of({"repeat", "noise"}));
      o.add("eval_lengths", &PasskeyOptions::eval_lengths,
            "row lengths evaluated (empty: seq_len / 2, seq_len, 2 * seq_len)");
      o.add("eval_depths", &PasskeyOptions::eval_depths, "needle depths evaluated, percent of the haystack");
      return o;
    }();
    return s;
  }
};

// Printable ASCII (32..126) as ids 1..95; 0 is padding.
constexpr int64_t kPad = 0, kVocab = 96;
int64_t char_id(char c) {
  return static_cast<int64_t>(static_cast<unsigned char>(c)) - 31;
}

const std::string kHaystack =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
// The needle says "The pass key is 12345." and the row ends with the same words: recalling the number is
// an associative lookup of that phrase (the induction pattern of Mohtashami & Jaggi's prompt).
const std::string kQuestion = " The pass key is ";

class PasskeyTask final : public Task {
 public:
  explicit PasskeyTask(const PasskeyOptions& o) : o_(o) {
    const int64_t shortest = needle_len() + static_cast<int64_t>(kQuestion.size()) + o_.digits + 8;
    if (o_.min_len == 0) o_.min_len = std::min(o_.seq_len, std::max(o_.seq_len / 2, shortest));
    if (o_.eval_lengths.empty()) o_.eval_lengths = {o_.seq_len / 2, o_.seq_len, 2 * o_.seq_len};
    ATTNLAB_CHECK(o_.min_len >= shortest && o_.min_len <= o_.seq_len,
                  "passkey: rows need at least {} characters (needle, question and answer); got min_len {} "
                  "and seq_len {}",
                  shortest, o_.min_len, o_.seq_len);
    for (auto L : o_.eval_lengths)
      ATTNLAB_CHECK(L >= shortest, "passkey: eval length {} is shorter than the {} characters a row needs", L,
                    shortest);
    for (auto d : o_.eval_depths)
      ATTNLAB_CHECK(d >= 0 && d <= 100, "passkey: eval depths are percentages in [0, 100], got {}", d);
    ATTNLAB_CHECK(!o_.eval_depths.empty(), "passkey: eval_depths is empty");
  }

  int64_t vocab_size() const override { return kVocab; }
  int64_t seq_len() const override { return o_.seq_len; }
  int64_t max_len() const override {
    return std::max(o_.seq_len, *std::max_element(o_.eval_lengths.begin(), o_.eval_lengths.end()));
  }
  std::vector<std::string> eval_sets() const override {
    std::vector<std::string> out;
    for (auto L : o_.eval_lengths)
      for (auto d : o_.eval_depths) out.push_back("len" + std::to_string(L) + "_depth" + std::to_string(d));
    return out;
  }

  TaskData train_data(int64_t n, uint64_t seed) const override {
    Rng rng(split_seed(seed, "train"));
    auto inputs = torch::full({n, o_.seq_len}, kPad, torch::kLong);
    auto labels = torch::full({n, o_.seq_len}, kIgnore, torch::kLong);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t L = rng.range(o_.min_len, o_.seq_len);
      write(rng, L, rng.uniform01(), inputs[r], labels[r]);
    }
    return {inputs, labels};
  }

  TaskData eval_data(const std::string& set, int64_t n, uint64_t seed) const override {
    check_eval_set(set);
    const auto sep = set.find("_depth");
    const int64_t L = std::stoll(set.substr(3, sep - 3));
    const double depth = static_cast<double>(std::stoll(set.substr(sep + 6))) / 100.0;
    Rng rng(split_seed(seed, "test:" + set));
    auto inputs = torch::full({n, L}, kPad, torch::kLong);
    auto labels = torch::full({n, L}, kIgnore, torch::kLong);
    for (int64_t r = 0; r < n; ++r) write(rng, L, depth, inputs[r], labels[r]);
    return {inputs, labels};
  }

 private:
  int64_t needle_len() const { return 19 + o_.digits; }  // the needle sentence below

  // One row of exactly L characters: haystack with the needle at `depth`, the question, the answer (whose
  // digits are the scored labels); rows shorter than the tensor are padded on the right.
  void write(Rng& rng, int64_t L, double depth, torch::Tensor in, torch::Tensor lab) const {
    std::string key;
    key.push_back(static_cast<char>('1' + rng.uniform(9)));  // no leading zero
    for (int64_t i = 1; i < o_.digits; ++i) key.push_back(static_cast<char>('0' + rng.uniform(10)));
    const std::string needle = " The pass key is " + key + ". ";
    const int64_t hay = L - static_cast<int64_t>(needle.size() + kQuestion.size()) - o_.digits;
    std::string text;
    if (o_.filler == "repeat") {
      const int64_t offset = rng.uniform(static_cast<int64_t>(kHaystack.size()));
      for (int64_t i = 0; i < hay; ++i)
        text.push_back(kHaystack[static_cast<size_t>((offset + i) % kHaystack.size())]);
    } else {
      for (int64_t i = 0; i < hay; ++i) {
        const int64_t c = rng.uniform(27);
        text.push_back(c == 26 ? ' ' : static_cast<char>('a' + c));
      }
    }
    const auto at = static_cast<size_t>(std::llround(depth * static_cast<double>(hay)));
    text.insert(at, needle);
    text += kQuestion;
    const int64_t answer_start = static_cast<int64_t>(text.size());
    text += key;
    auto ia = in.accessor<int64_t, 1>();
    auto la = lab.accessor<int64_t, 1>();
    for (int64_t t = 0; t < L; ++t) ia[t] = char_id(text[static_cast<size_t>(t)]);
    // The label of position t is the character at t + 1: the answer's digits are predicted from the
    // position before each of them.
    for (int64_t t = answer_start - 1; t < L - 1; ++t) la[t] = ia[t + 1];
    la[L - 1] = kIgnore;
  }

  PasskeyOptions o_;
};

TaskPreset preset(const std::string& name) {
  check_preset_name(name);
  TaskPreset p;
  p.n_layers = 2;
  p.mlp_ratio = 4;
  p.target_accuracy = 1.0;
  p.weight_decay = 0.1;
  if (name == "quick") {
    p.seq_lens = {128};
    p.d_models = {64};
    p.lrs = {2e-3};
    p.train_examples = 4000;
    p.test_examples = 100;
    p.epochs = 8;
    p.batch_size = 32;
    p.task_options["eval_depths"] = "[0, 50, 100]";
  } else {
    p.seq_lens = {1024};
    p.d_models = {256};
    p.n_layers = 4;
    p.lrs = {3e-4, 1e-3};
    p.train_examples = 50000;
    p.test_examples = 200;
    p.epochs = 4;
    p.batch_size = 32;
  }
  return p;
}

}  // namespace

ATTNLAB_REGISTER_TASK("passkey", PasskeyOptions, PasskeyTask,
                      "passkey retrieval: a number hidden at a depth of filler text, by depth and length",
                      preset);

}  // namespace attnlab::tasks
