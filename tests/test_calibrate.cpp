// Parameter matching: every registered mixer lands within +-2% of the target, and the reported costs add up.
#include <gtest/gtest.h>

#include "attnlab/mixers/registry.h"
#include "attnlab/model/calibrate.h"
#include "support/helpers.h"

using namespace attnlab;

class Calibrate : public ::testing::TestWithParam<std::string> {};

TEST_P(Calibrate, EveryMixerLandsWithinTwoPercent) {
  for (int64_t target : {1'000'000, 10'000'000}) {
    CalibrationTarget t;
    t.parameters = target;
    t.vocab_size = 100;
    auto c = calibrate(GetParam(), t);
    EXPECT_LE(std::fabs(c.error), 0.02) << GetParam() << " at " << target << ": " << c.parameters;
    LanguageModel lm(c.model, std::map<std::string, std::shared_ptr<AnyOptions>>{});
    EXPECT_EQ(lm->num_parameters(), c.parameters);
    EXPECT_GT(c.flops_per_token, 2.0 * static_cast<double>(c.parameters - 100 * c.model.d_model) * 0.5);
    EXPECT_GT(c.state_bytes, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Mixers, Calibrate, ::testing::ValuesIn(MixerRegistry::instance().names()),
                         [](const auto& info) { return info.param; });

TEST(CalibrateCosts, KvCacheGrowsWithContextAndNoMlpIsKept) {
  ModelOptions m;
  m.vocab_size = 100;
  auto a = measure(m, {}, 1024), b = measure(m, {}, 4096);
  EXPECT_EQ(b.state_bytes, 4 * a.state_bytes);  // a softmax KV cache is linear in T
  EXPECT_GT(b.flops_per_token, a.flops_per_token);
  CalibrationTarget t;
  t.parameters = 500'000;
  t.vocab_size = 100;
  ModelOptions no_mlp;
  no_mlp.mlp_ratio = 0;  // Zoology's MQAR models have no MLP: only the width moves
  auto c = calibrate("softmax", t, {}, no_mlp);
  EXPECT_EQ(c.model.mlp_ratio, 0.0);
  EXPECT_LE(std::fabs(c.error), 0.02);
  t.parameters = 50;
  EXPECT_ERROR_WITH(calibrate("softmax", t), "calibrate: softmax", "target of 50");
}
