// The mechanism zoo, part 2: deltanet, gated_deltanet, based, hgrn2, rwkv6, gsa as mixers and in the model.
#include <gtest/gtest.h>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/lm.h"
#include "attnlab/ops/check.h"
#include "support/helpers.h"

using namespace attnlab;

namespace {

using OptionMap = std::map<std::string, std::string>;

struct MixerCase {
  std::string name;
  std::string bad_key, bad_value;  // a value the option's check rejects
};

// B2, C32, H4 throughout; layer 1 of 2, so that HGRN2's lower bound (1/2) is on (layer 0 runs in the model).
constexpr int64_t kB = 2, kC = 32, kH = 4;
const MixerContext kCtx{kC, kH, 1, 2};

std::shared_ptr<AnyOptions> options_for(const std::string& name, const OptionMap& set = {}) {
  std::shared_ptr<AnyOptions> o(MixerRegistry::instance().get(name).make_options());
  for (const auto& kv : set) o->set(kv.first, YAML::Node(kv.second));
  return o;
}

std::shared_ptr<Mixer> make(const std::string& name, const OptionMap& set = {}, uint64_t seed = 0) {
  torch::manual_seed(seed);
  return build_mixer(name, kCtx, *options_for(name, set));
}

// Tolerances: float32 accumulation over <= 37 steps leaves ~1e-7 relative differences between the chunk form
// and step-by-step decoding; 1e-5 is the acceptance bound of the issue and 100x above that noise.
constexpr double kTol = 1e-5;

class MixerB : public ::testing::TestWithParam<MixerCase> {};

TEST_P(MixerB, ForwardShapes) {
  auto m = make(GetParam().name);
  auto x = torch::randn({kB, 37, kC});
  auto y = m->forward(x);
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({kB, 37, kC}));
  EXPECT_TRUE(ops::all_finite(y));
}

TEST_P(MixerB, BackwardGivesFiniteGradientsForEveryParameter) {
  auto m = make(GetParam().name);
  auto x = torch::randn({kB, 37, kC}).requires_grad_(true);
  m->forward(x).pow(2).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(ops::all_finite(x.grad()));
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(ops::all_finite(p.value().grad())) << p.key();
  }
}

TEST_P(MixerB, CausalFutureTokensDoNotChangeThePast) {
  auto m = make(GetParam().name);
  torch::NoGradGuard ng;
  auto x = torch::randn({kB, 37, kC});
  auto y = x.clone();
  y.narrow(1, 20, 17).normal_();
  auto a = m->forward(x).narrow(1, 0, 20), b = m->forward(y).narrow(1, 0, 20);
  EXPECT_LT(ops::rel_rms_error(a, b), 1e-6);
}

// Prefill T = 9, then decode K = 6 one token at a time: the outputs equal one forward over T + K.
TEST_P(MixerB, PrefillThenDecodeEqualsOneForward) {
  auto m = make(GetParam().name);
  m->eval();
  torch::NoGradGuard ng;
  const int64_t T = 9, K = 6;
  auto x = torch::randn({kB, T + K, kC});
  auto full = m->forward(x);  // [B, T+K, C]
  auto cache = m->make_cache(kB, T + K, torch::TensorOptions().dtype(torch::kFloat));
  std::vector<torch::Tensor> parts{m->forward(x.narrow(1, 0, T), cache.get())};
  for (int64_t i = 0; i < K; ++i) parts.push_back(m->forward(x.narrow(1, T + i, 1), cache.get()));
  EXPECT_EQ(cache->position, T + K);
  EXPECT_LT(ops::rel_rms_error(torch::cat(parts, 1), full), kTol);
}

TEST_P(MixerB, TwoPiecesEqualOnePiece) {
  auto m = make(GetParam().name);
  torch::NoGradGuard ng;
  auto x = torch::randn({kB, 37, kC});
  auto full = m->forward(x);
  auto cache = m->make_cache(kB, 37, torch::TensorOptions().dtype(torch::kFloat));
  auto p1 = m->forward(x.narrow(1, 0, 20), cache.get());
  auto p2 = m->forward(x.narrow(1, 20, 17), cache.get());
  EXPECT_LT(ops::rel_rms_error(torch::cat({p1, p2}, 1), full), kTol);
}

// The definition (impl naive, loops over t) against the chunk form with several chunks (chunk_size 8).
TEST_P(MixerB, NaiveOpEqualsChunkOp) {
  auto naive = make(GetParam().name, {{"impl", "naive"}}, 7);
  auto chunk = make(GetParam().name, {{"impl", "chunk"}, {"chunk_size", "8"}}, 7);
  torch::NoGradGuard ng;
  auto x = torch::randn({kB, 37, kC});
  EXPECT_LT(ops::rel_rms_error(chunk->forward(x), naive->forward(x)), kTol);
}

TEST_P(MixerB, InfoCountsParametersStateAndFlops) {
  auto m = make(GetParam().name);
  auto info = m->info();
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(info.parameters, n);
  EXPECT_GT(info.state_bytes(2048), 0);
  EXPECT_EQ(info.state_bytes(2048), info.state_bytes(4096));  // a recurrent state does not grow with T
  EXPECT_GT(info.flops_per_token(2048), 0.0);
}

TEST_P(MixerB, BadOptionValuesNameTheKey) {
  const auto& c = GetParam();
  auto o = options_for(c.name);
  const std::string section = "mixer." + c.name + ".";
  EXPECT_ERROR_WITH(o->set(c.bad_key, YAML::Node(c.bad_value)), section + c.bad_key, std::string("expected"));
  EXPECT_ERROR_WITH(o->set("no_such_key", YAML::Node("1")), section + "no_such_key", c.bad_key);
  EXPECT_ERROR_WITH(o->set("impl", YAML::Node("fast")), section + "impl", std::string("naive"));
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, MixerB,
    ::testing::Values(MixerCase{"deltanet", "conv_size", "0"}, MixerCase{"gated_deltanet", "dt_min", "-1e-3"},
                      MixerCase{"based", "feature_dim", "0"}, MixerCase{"hgrn2", "expand_ratio", "-1"},
                      MixerCase{"rwkv6", "proj_low_rank_dim", "0"}, MixerCase{"gsa", "num_slots", "0"}),
    [](const auto& info) { return info.param.name + "_B2_C32_H4"; });

TEST(MixerBOptions, CrossChecksNameTheKeys) {
  EXPECT_ERROR_WITH(build_mixer("gated_deltanet", kCtx, *options_for("gated_deltanet", {{"dt_min", "0.5"}})),
                    "dt_min", "dt_max");
  EXPECT_ERROR_WITH(build_mixer("deltanet", kCtx, *options_for("deltanet", {{"expand_v", "0.3"}})),
                    "expand_v");
  EXPECT_ERROR_WITH(build_mixer("rwkv6", kCtx, *options_for("rwkv6", {{"expand_k", "0.3"}})), "expand_k");
}

// Strong slot decays (f ~ -70 per step): pass 1's chunk form must neither overflow nor lose the naive result.
TEST(MixerBGsa, StrongGatesStayFiniteAndMatchTheDefinition) {
  auto naive = make("gsa", {{"impl", "naive"}, {"gate_logit_normalizer", "0.01"}}, 5);
  auto chunk = make("gsa", {{"impl", "chunk"}, {"gate_logit_normalizer", "0.01"}}, 5);
  auto x = torch::randn({kB, 37, kC}).requires_grad_(true);
  auto y = chunk->forward(x);
  ASSERT_TRUE(ops::all_finite(y));
  EXPECT_LT(ops::rel_rms_error(y, naive->forward(x)), kTol);
  y.pow(2).sum().backward();
  EXPECT_TRUE(ops::all_finite(x.grad()));
}

// ---- the model ---------------------------------------------------------------------------------------

ModelOptions small_model(std::vector<std::string> layers) {
  ModelOptions m;
  m.vocab_size = 50;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.layers = std::move(layers);
  return m;
}

class ModelB : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(ModelB, ForwardBackwardAndDecode) {
  torch::manual_seed(3);
  LanguageModel model(small_model(GetParam()), std::map<std::string, std::shared_ptr<AnyOptions>>{});
  auto x = torch::randint(0, 50, {2, 17}, torch::kLong);
  auto logits = model->forward(x);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({2, 17, 50}));
  logits.logsumexp(-1).mean().backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(ops::all_finite(p.value().grad())) << p.key();
  }
  // Layer 0 of the model covers HGRN2 without a lower bound; decode through the whole stack.
  model->eval();
  torch::NoGradGuard ng;
  auto full = model->forward(x);
  auto cache = model->make_cache(2, 17, torch::TensorOptions().dtype(torch::kFloat));
  std::vector<torch::Tensor> parts{model->forward(x.narrow(1, 0, 12), &cache)};
  for (int64_t t = 12; t < 17; ++t) parts.push_back(model->forward(x.narrow(1, t, 1), &cache));
  EXPECT_EQ(cache.position(), 17);
  EXPECT_LT(ops::rel_rms_error(torch::cat(parts, 1), full), kTol);
}

INSTANTIATE_TEST_SUITE_P(Zoo, ModelB,
                         ::testing::Values(std::vector<std::string>{"deltanet", "deltanet"},
                                           std::vector<std::string>{"gated_deltanet", "gated_deltanet"},
                                           std::vector<std::string>{"based", "based"},
                                           std::vector<std::string>{"hgrn2", "hgrn2"},
                                           std::vector<std::string>{"rwkv6", "rwkv6"},
                                           std::vector<std::string>{"gsa", "gsa"},
                                           std::vector<std::string>{"gated_deltanet", "softmax"}),
                         [](const auto& info) {
                           const auto& l = info.param;
                           std::string name = l[0] == l[1] ? l[0] : l[0] + "_then_" + l[1];
                           return name + "_L2_C32_H4_V50";
                         });

}  // namespace
