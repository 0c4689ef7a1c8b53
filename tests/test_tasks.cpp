// labels: cpu
// Synthetic tasks: generator invariants (MQAR's distinct keys, labels only at queries, the 4N <= L error,
// the skew of the gap distribution; copying, MAD and passkey layouts), determinism, scoring, and a few
// steps end to end for every task through the runner (CSV rows, resume skipping finished runs).
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "attnlab/data/tasks/task.h"
#include "attnlab/train/task_runner.h"
#include "support/helpers.h"

using namespace attnlab;
using namespace attnlab::tasks;
using attnlab::testing::TempDir;

namespace {

std::unique_ptr<Task> make(const std::string& name, std::map<std::string, std::string> sets = {}) {
  auto opts = TaskRegistry::instance().get(name).make_options();
  for (const auto& [k, v] : sets) opts->set(k, parse_value_text(v));
  return build_task(name, *opts);
}

std::vector<int64_t> row(const torch::Tensor& t, int64_t i) {
  auto r = t[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

}  // namespace

TEST(TaskRng, DeterministicUniformAndDistinct) {
  Rng a(42), b(42), c(43);
  std::vector<int64_t> xa, xb, xc;
  for (int i = 0; i < 100; ++i) {
    xa.push_back(a.uniform(1000));
    xb.push_back(b.uniform(1000));
    xc.push_back(c.uniform(1000));
  }
  EXPECT_EQ(xa, xb);
  EXPECT_NE(xa, xc);
  // uniform(6): every face, roughly equally often
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[static_cast<size_t>(a.uniform(6))];
  for (int cnt : counts) EXPECT_NEAR(cnt, 10000, 400);
  auto d = a.distinct(50, 50);
  EXPECT_EQ(std::set<int64_t>(d.begin(), d.end()).size(), 50u);
  EXPECT_NE(split_seed(1, "train"), split_seed(1, "test"));
}

TEST(TaskRng, WeightedSamplingFollowsTheWeights) {
  Rng rng(7);
  std::vector<int> first(3, 0);
  for (int i = 0; i < 30000; ++i)
    ++first[static_cast<size_t>(rng.weighted_without_replacement({1, 2, 7}, 2)[0])];
  EXPECT_NEAR(first[0] / 30000.0, 0.1, 0.01);
  EXPECT_NEAR(first[2] / 30000.0, 0.7, 0.01);
  auto all = rng.weighted_without_replacement({1, 1, 1, 1}, 4);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 4u);
  EXPECT_ERROR_WITH(rng.weighted_without_replacement({1, 1}, 3), "3", "2");
}

TEST(Mqar, KeysValuesAndLabelsFollowZoology) {
  const int64_t L = 64, N = 4, V = 8192;
  auto task = make("mqar", {{"seq_len", "64"}, {"num_pairs", "4"}});
  auto d = task->train_data(500, 3);
  ASSERT_EQ(d.inputs.sizes(), (std::vector<int64_t>{500, L}));
  ASSERT_EQ(d.labels.sizes(), (std::vector<int64_t>{500, L}));
  for (int64_t e = 0; e < 500; ++e) {
    auto in = row(d.inputs, e), lab = row(d.labels, e);
    std::map<int64_t, int64_t> kv;
    for (int64_t i = 0; i < N; ++i) {
      const int64_t k = in[static_cast<size_t>(2 * i)], v = in[static_cast<size_t>(2 * i + 1)];
      EXPECT_GE(k, 1);
      EXPECT_LT(k, V / 2);
      EXPECT_GE(v, V / 2);
      EXPECT_LT(v, V);
      EXPECT_TRUE(kv.emplace(k, v).second) << "keys must be distinct";
    }
    std::set<int64_t> values;
    for (auto& p : kv) values.insert(p.second);
    EXPECT_EQ(values.size(), size_t(N)) << "values must be distinct";
    int64_t labelled = 0;
    for (int64_t t = 0; t < L; ++t) {
      if (lab[static_cast<size_t>(t)] == kIgnore) continue;
      ++labelled;
      // labels only at query positions: inside the query region, on a key, labelled with its value
      EXPECT_GE(t, 2 * N);
      EXPECT_EQ((t - 2 * N) % 2, 0);
      ASSERT_TRUE(kv.count(in[static_cast<size_t>(t)])) << "label at a non-key position " << t;
      EXPECT_EQ(lab[static_cast<size_t>(t)], kv[in[static_cast<size_t>(t)]]);
    }
    EXPECT_EQ(labelled, N);
    for (int64_t t = 2 * N; t < L; ++t)
      if (lab[static_cast<size_t>(t)] == kIgnore) {
        EXPECT_EQ(in[static_cast<size_t>(t)], 0) << "filler is 0";
      }
  }
}

TEST(Mqar, GapsArePowerLawSkewed) {
  // a = 0.01: p(gap i) ~ (i + 1)^-0.99, so the shortest gap is ~7x more likely than under a uniform draw.
  auto task = make("mqar", {{"seq_len", "64"}, {"num_pairs", "4"}});
  auto d = task->train_data(4000, 11);
  const int64_t N = 4, space = (64 - 2 * N) / 2;
  std::vector<int64_t> hist(static_cast<size_t>(space), 0);
  int64_t total = 0;
  for (int64_t e = 0; e < 4000; ++e) {
    auto lab = row(d.labels, e);
    for (int64_t t = 2 * N; t < 64; ++t)
      if (lab[static_cast<size_t>(t)] != kIgnore) {
        ++hist[static_cast<size_t>((t - 2 * N) / 2)];
        ++total;
      }
  }
  const double uniform = 1.0 / double(space);
  EXPECT_GT(double(hist[0]) / double(total), 4 * uniform);
  EXPECT_GT(hist[0], hist[5]);
  EXPECT_GT(hist[1], hist[space - 1]);
}

TEST(Mqar, RejectsTooManyPairsAndIsDeterministic) {
  EXPECT_ERROR_WITH(make("mqar", {{"seq_len", "64"}, {"num_pairs", "17"}}), "4 * num_pairs <= seq_len", "17",
                    "64");
  auto task = make("mqar", {{"seq_len", "128"}});  // auto: 8 pairs
  auto a = task->train_data(64, 5), b = task->train_data(64, 5), c = task->eval_data("test", 64, 5);
  EXPECT_TRUE(torch::equal(a.inputs, b.inputs));
  EXPECT_TRUE(torch::equal(a.labels, b.labels));
  EXPECT_FALSE(torch::equal(a.inputs, c.inputs)) << "train and test must come from different seeds";
  EXPECT_EQ(a.labels.ne(kIgnore).sum(1).eq(8).all().item<bool>(), true);
  auto r = make("mqar", {{"seq_len", "64"}, {"random_fillers", "true"}})->train_data(8, 1);
  EXPECT_GT(r.inputs.slice(1, 8).ne(0).sum().item<int64_t>(), 8 * 40);
}

TEST(Copying, PackedTrainingAndLongerEvaluation) {
  auto task = make("copying");
  auto d = task->train_data(20, 1);
  ASSERT_EQ(d.inputs.size(1), 220);
  for (int64_t e = 0; e < 20; ++e) {
    auto in = row(d.inputs, e), lab = row(d.labels, e);
    // every labelled position predicts the next input token
    for (int64_t t = 0; t + 1 < 220; ++t)
      if (lab[static_cast<size_t>(t)] != kIgnore) {
        EXPECT_EQ(lab[static_cast<size_t>(t)], in[static_cast<size_t>(t + 1)]);
      }
    EXPECT_GE(std::count(in.begin(), in.end(), 27), 5) << "several examples packed per row";
  }
  EXPECT_EQ(task->eval_sets().back(), "len80");
  auto ev = task->eval_data("len40", 10, 1);
  ASSERT_EQ(ev.inputs.size(1), 83);
  auto in = row(ev.inputs, 0), lab = row(ev.labels, 0);
  EXPECT_EQ(ev.labels.ne(kIgnore).sum(1).eq(41).all().item<bool>(), true);  // 40 letters and the '.'
  for (int64_t i = 0; i < 40; ++i)
    EXPECT_EQ(in[static_cast<size_t>(1 + i)], lab[static_cast<size_t>(41 + i)]);
  EXPECT_ERROR_WITH(task->eval_data("len41", 1, 1), "len41", "len80");
}

TEST(MadRecall, MultiQueryValuesFollowTheirKeys) {
  for (const char* name : {"in_context_recall", "noisy_recall"}) {
    auto task = make(name);
    auto ev = task->eval_data("test", 200, 2);
    auto tr = task->train_data(200, 2);
    ASSERT_EQ(ev.inputs.size(1), 127);
    // training scores every next token
    EXPECT_TRUE(torch::equal(tr.labels.slice(1, 0, 126), tr.inputs.slice(1, 1, 127)));
    int64_t noise = 0;
    for (int64_t e = 0; e < 200; ++e) {
      auto in = row(ev.inputs, e), lab = row(ev.labels, e);
      std::map<int64_t, int64_t> kv;
      int64_t scored = 0;
      for (size_t t = 0; t + 1 < in.size(); t += 2) {
        const int64_t k = in[t], v = in[t + 1];
        if (k >= 16) {  // noise pair (noisy_recall: ids 16..31)
          ++noise;
          EXPECT_EQ(lab[t], kIgnore);
          continue;
        }
        EXPECT_LT(k, 8);
        EXPECT_GE(v, 8);
        auto it = kv.find(k);
        if (it != kv.end()) {
          EXPECT_EQ(v, it->second) << "a key keeps its value within an instance";
          EXPECT_EQ(lab[t], v) << "a repeated key's value is scored";
          ++scored;
        } else {
          EXPECT_EQ(lab[t], kIgnore);
          kv[k] = v;
        }
      }
      EXPECT_GT(scored, 0);
    }
    if (std::string(name) == "noisy_recall") {
      EXPECT_NEAR(double(noise) / (200.0 * 63), 0.2, 0.03);
    } else {
      EXPECT_EQ(noise, 0);
    }
  }
}

TEST(MadRecall, FuzzyKeysAreMotifsAndEvaluationUsesTheLongest) {
  auto task = make("fuzzy_recall");
  auto ev = task->eval_data("test", 50, 4), tr = task->train_data(50, 4);
  ASSERT_EQ(ev.inputs.size(1), 128);
  EXPECT_TRUE(ev.labels.ne(kIgnore).sum(1).ge(1).all().item<bool>());
  EXPECT_TRUE(torch::equal(tr.labels.slice(1, 0, 127), tr.inputs.slice(1, 1, 128)));
  EXPECT_LT(ev.inputs.max().item<int64_t>(), 16);
}

TEST(MadCopying, SelectiveCopyingLabelsTheTokensInOrder) {
  auto task = make("selective_copying");
  auto d = task->eval_data("test", 30, 9);
  ASSERT_EQ(d.inputs.size(1), 256);
  for (int64_t e = 0; e < 30; ++e) {
    auto in = row(d.inputs, e), lab = row(d.labels, e);
    std::vector<int64_t> tokens, copies;
    size_t t = 0;
    for (; in[t] != 15; ++t)
      if (in[t] != 14) tokens.push_back(in[t]);
    for (auto l : lab)
      if (l != kIgnore) copies.push_back(l);
    EXPECT_EQ(tokens.size(), 16u);
    EXPECT_EQ(tokens, copies);
    EXPECT_EQ(t, 256u - 17u) << "the copy token is followed by 16 blanks";
  }
}

TEST(MadMemorization, TheMapIsFixedAcrossSeeds) {
  auto task = make("memorization");
  auto a = task->train_data(40, 1), b = task->eval_data("test", 40, 2);
  std::map<int64_t, int64_t> kv;
  for (const auto* d : {&a, &b})
    for (int64_t e = 0; e < 40; ++e) {
      auto in = row(d->inputs, e), lab = row(d->labels, e);
      for (size_t t = 0; t < in.size(); t += 2) {
        auto [it, fresh] = kv.emplace(in[t], lab[t + 1]);
        EXPECT_EQ(it->second, lab[t + 1]);
        (void)fresh;
      }
    }
  EXPECT_GT(kv.size(), 100u);
}

TEST(Passkey, TheAnswerIsTheHiddenNumberAtTheRequestedDepth) {
  auto task = make("passkey", {{"seq_len", "256"}});
  EXPECT_EQ(task->eval_sets().size(), 15u);
  for (int depth : {0, 50, 100}) {
    auto d = task->eval_data("len256_depth" + std::to_string(depth), 20, 1);
    ASSERT_EQ(d.inputs.size(1), 256);
    for (int64_t e = 0; e < 20; ++e) {
      auto in = row(d.inputs, e), lab = row(d.labels, e);
      std::string text;
      for (auto c : in) text.push_back(static_cast<char>(c + 31));
      std::string answer;
      for (auto l : lab)
        if (l != kIgnore) answer.push_back(static_cast<char>(l + 31));
      ASSERT_EQ(answer.size(), 5u);
      const auto at = text.find("The pass key is " + answer + ".");
      ASSERT_NE(at, std::string::npos) << text;
      const double rel = double(at) / 256.0;
      if (depth == 0) {
        EXPECT_LT(rel, 0.05);
      } else if (depth == 50) {
        EXPECT_NEAR(rel, 0.41, 0.05);  // half the haystack, which is ~4/5 of the row
      } else {
        EXPECT_GT(rel, 0.5);
      }
    }
  }
  EXPECT_ERROR_WITH(make("passkey", {{"seq_len", "40"}}), "passkey", "characters");
}

TEST(TaskScore, AccuracyPerExampleThenMeanAndExactMatch) {
  const int I = static_cast<int>(kIgnore);
  auto labels = torch::tensor({{I, 3, 4}, {5, I, I}, {I, I, I}}).to(torch::kLong);
  auto preds = torch::tensor({{9, 3, 0}, {5, 1, 1}, {0, 0, 0}}).to(torch::kLong);
  auto s = score(preds, labels);
  EXPECT_EQ(s.examples, 2);
  EXPECT_EQ(s.positions, 3);
  EXPECT_DOUBLE_EQ(s.accuracy, (0.5 + 1.0) / 2);
  EXPECT_DOUBLE_EQ(s.exact_match, 0.5);
}

TEST(TaskRunner, EveryTaskRunsEndToEndAndResumes) {
  TempDir tmp;
  for (const auto& name : TaskRegistry::instance().names()) {
    SCOPED_TRACE(name);
    TaskConfig cfg(name);
    cfg.set("sweep.mixers=[softmax,gated_deltanet]");
    cfg.set("sweep.d_models=[32]");
    cfg.set("sweep.lrs=[3e-3]");
    cfg.set("sweep.train_examples=32");
    cfg.set("sweep.test_examples=8");
    cfg.set("sweep.epochs=1");
    cfg.set("sweep.batch_size=16");
    cfg.set("sweep.threads=1");
    if (name == "passkey") cfg.set("task.eval_depths=[50]");
    const std::string out = tmp / name;
    auto s = run_task_sweep(cfg, out);
    EXPECT_EQ(s.trained, 2);
    ASSERT_FALSE(s.rows.empty());
    for (const auto& r : s.rows) {
      EXPECT_GE(r.accuracy, 0.0);
      EXPECT_LE(r.accuracy, 1.0);
      EXPECT_GT(r.parameters, 0);
      EXPECT_GT(r.state_bytes, 0);
      EXPECT_EQ(r.steps, 2);
      EXPECT_TRUE(std::isfinite(r.final_loss));
    }
    EXPECT_TRUE(fs::exists(out + "/results.csv"));
    EXPECT_TRUE(fs::exists(out + "/best.csv"));
    auto again = run_task_sweep(cfg, out);
    EXPECT_EQ(again.trained, 0);
    EXPECT_EQ(again.skipped, 2);
    EXPECT_EQ(again.rows.size(), s.rows.size());
  }
}

TEST(TaskRunner, SoftmaxGetsLearnedPositionsOnMqarAndErrorsNameTheKey) {
  TempDir tmp;
  TaskConfig cfg("mqar");
  cfg.set("sweep.mixers=[softmax]");
  cfg.set("sweep.d_models=[32]");
  cfg.set("sweep.lrs=[1e-3]");
  cfg.set("sweep.train_examples=16");
  cfg.set("sweep.test_examples=8");
  cfg.set("sweep.epochs=1");
  cfg.set("sweep.batch_size=16");
  auto learned = run_task_sweep(cfg, tmp / "a");
  cfg.set("sweep.positions=rope");
  auto rope = run_task_sweep(cfg, tmp / "b");
  // the learned table adds seq_len x d_model parameters
  EXPECT_EQ(learned.rows.at(0).parameters - rope.rows.at(0).parameters, 64 * 32);
  EXPECT_ERROR_WITH(cfg.set("task.pairs=3"), "task.pairs", "num_pairs");
  EXPECT_ERROR_WITH(cfg.set("sweep.preset=huge"), "sweep.preset", "quick");
  EXPECT_ERROR_WITH(TaskConfig("nope"), "unknown task 'nope'", "mqar");
}

TEST(TaskRunner, TheSameSeedGivesTheSameNumbersOnTheCpu) {
  TempDir tmp;
  auto once = [&](const std::string& out) {
    TaskConfig cfg("mqar");
    for (const char* s : {"sweep.mixers=[gated_deltanet]", "sweep.d_models=[32]", "sweep.lrs=[3e-3]",
                          "sweep.train_examples=64", "sweep.test_examples=16", "sweep.epochs=2",
                          "sweep.batch_size=16", "sweep.device=cpu"})
      cfg.set(s);
    return run_task_sweep(cfg, tmp / out).rows.at(0);
  };
  auto a = once("a"), b = once("b");
  EXPECT_EQ(a.final_loss, b.final_loss);
  EXPECT_EQ(a.accuracy, b.accuracy);
  EXPECT_EQ(a.steps, b.steps);
}
