// labels: cpu slow
// Every registered mixer trains: 30 steps on the SOTU corpus lower the loss.
#include <gtest/gtest.h>

#include "attnlab/core/fs.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/train/trainer.h"
#include "support/helpers.h"

using namespace attnlab;

class TrainEveryMixer : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainEveryMixer, ThirtyStepsLowerTheLoss) {
  std::string corpus = attnlab::testing::repo_path("data/sotu");
  ASSERT_TRUE(fs::exists(corpus)) << "the SOTU corpus is missing at " << corpus << ": run scripts/setup.sh";
  RunConfig cfg;
  cfg.set("model.mixer=" + GetParam());
  cfg.data.path = corpus;
  cfg.data.seq_len = 32;
  cfg.data.batch_size = 8;
  cfg.model.d_model = 32;
  cfg.model.n_layers = 2;
  cfg.model.n_heads = 2;
  cfg.train.steps = 30;
  cfg.train.lr = 3e-3;
  cfg.train.warmup = 3;
  cfg.train.log_every = 1;
  cfg.train.eval_every = 1000;
  cfg.train.eval_batches = 1;
  cfg.train.ckpt_every = 1000;
  cfg.train.threads = 1;
  cfg.resolve();
  attnlab::testing::TempDir dir;
  auto r = Trainer(cfg, dir / "run", false).run();
  auto h = History::from_json(nlohmann::json::parse(read_file(fs::path(dir / "run") / "history.json")));
  std::vector<double> losses;
  for (const auto& row : h.rows())
    if (row.kind == "train") losses.push_back(row.loss);
  ASSERT_EQ(losses.size(), 30u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i)
    first += losses[static_cast<size_t>(i)] / 5, last += losses[25 + static_cast<size_t>(i)] / 5;
  EXPECT_LT(last, first - 0.3) << GetParam() << ": first " << first << ", last " << last;
  EXPECT_TRUE(std::isfinite(r.val_loss));
}

INSTANTIATE_TEST_SUITE_P(Mixers, TrainEveryMixer, ::testing::ValuesIn(MixerRegistry::instance().names()),
                         [](const auto& info) { return info.param; });
