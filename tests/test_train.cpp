// labels: cpu slow
// The trainer on the real corpus: the loss falls, resume is exact, NaN stops cleanly, bad resumes are
// refused.
#include <gtest/gtest.h>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/train/checkpoint.h"
#include "attnlab/train/trainer.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::TempDir;

namespace {

// A tiny model on SOTU (scripts/setup.sh fetches it; `make test` runs setup first).
RunConfig tiny_config(int64_t steps) {
  std::string corpus = attnlab::testing::repo_path("data/sotu");
  if (!fs::exists(corpus)) throw Error("the SOTU corpus is missing at " + corpus + ": run scripts/setup.sh");
  RunConfig cfg;
  cfg.data.path = corpus;
  cfg.data.seq_len = 32;
  cfg.data.batch_size = 8;
  cfg.model.d_model = 32;
  cfg.model.n_layers = 2;
  cfg.model.n_heads = 2;
  cfg.train.steps = steps;
  cfg.train.lr = 3e-3;
  cfg.train.warmup = 5;
  cfg.train.log_every = 1;
  cfg.train.eval_every = 1000;
  cfg.train.eval_batches = 2;
  cfg.train.ckpt_every = 5;
  cfg.train.threads = 1;
  cfg.resolve();
  return cfg;
}

std::vector<double> train_losses(const History& h) {
  std::vector<double> out;
  for (const auto& r : h.rows())
    if (r.kind == "train") out.push_back(r.loss);
  return out;
}

History read_history(const std::string& run) {
  return History::from_json(nlohmann::json::parse(read_file(fs::path(run) / "history.json")));
}

}  // namespace

TEST(Train, FiftyStepsLowerTheLoss) {
  TempDir dir;
  Trainer t(tiny_config(50), dir / "run", false);
  auto r = t.run();
  auto losses = train_losses(read_history(dir / "run"));
  ASSERT_EQ(losses.size(), 50u);
  double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[47] + losses[48] + losses[49]) / 3;
  EXPECT_LT(last, first - 0.5) << "first " << first << " last " << last;
  EXPECT_TRUE(std::isfinite(r.val_loss));
  EXPECT_LT(r.val_ppl, r.unigram_ppl * 1.5);  // 50 steps approach the unigram model
  for (auto f : {"config.yaml", "tokenizer.json", "history.json", "metrics.csv", "checkpoints/last/model.pt",
                 "checkpoints/last/optim.pt", "checkpoints/last/state.json"})
    EXPECT_TRUE(fs::exists(fs::path(dir / "run") / f)) << f;
}

TEST(Train, ResumeGivesTheSameLossesAsAnUninterruptedRun) {
  TempDir dir;
  Trainer(tiny_config(20), dir / "straight", false).run();
  // Stop after 10 steps (as Ctrl-C would), then resume to 20.
  TrainerHooks hooks;
  hooks.after_step = [](int64_t step, double) {
    if (step == 10) request_stop();
  };
  auto first = Trainer(tiny_config(20), dir / "resumed", false, hooks).run();
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.steps_done, 10);
  auto second = Trainer(tiny_config(20), dir / "resumed", true).run();
  EXPECT_EQ(second.steps_done, 20);
  auto a = train_losses(read_history(dir / "straight")), b = train_losses(read_history(dir / "resumed"));
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_DOUBLE_EQ(a[i], b[i]) << "step " << i + 1;
}

TEST(Train, NanLossStopsAndKeepsTheLastGoodCheckpoint) {
  TempDir dir;
  TrainerHooks hooks;
  hooks.loss_filter = [](int64_t step, torch::Tensor loss) {
    return step == 7 ? loss * std::numeric_limits<double>::quiet_NaN() : loss;
  };
  EXPECT_THROW(
      {
        try {
          Trainer(tiny_config(20), dir / "run", false, hooks).run();
        } catch (const TrainingDiverged& e) {
          std::string msg = e.what();
          EXPECT_NE(msg.find("nan"), std::string::npos) << msg;
          EXPECT_NE(msg.find("step 8"), std::string::npos) << msg;
          EXPECT_NE(msg.find("checkpoints/last"), std::string::npos) << msg;
          throw;
        }
      },
      TrainingDiverged);
  // The checkpoint of step 5 is intact and loadable.
  TrainState state;
  auto cfg = read_checkpoint_config(find_checkpoint(dir / "run"));
  LanguageModel model(cfg.model, cfg.mixers);
  load_checkpoint(find_checkpoint(dir / "run"), model, nullptr, &state);
  EXPECT_EQ(state.step, 5);
}

TEST(Train, ResumeWithADifferentModelIsRefused) {
  TempDir dir;
  Trainer(tiny_config(5), dir / "run", false).run();
  auto cfg = tiny_config(10);
  cfg.model.d_model = 48;
  EXPECT_ERROR_WITH(Trainer(cfg, dir / "run", true).run(), "different config", "model.d_model: 32 vs 48");
  EXPECT_ERROR_WITH(find_checkpoint(dir / "nothing"), "does not exist");
  EXPECT_ERROR_WITH(find_checkpoint(dir.path().string()), "no checkpoint in");
}
