// The registry, the model's shapes and gradients, and decoding with the softmax KV cache.
#include <gtest/gtest.h>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/lm.h"
#include "attnlab/ops/check.h"
#include "attnlab/train/config.h"
#include "support/helpers.h"

using namespace attnlab;

namespace {
std::map<std::string, std::shared_ptr<AnyOptions>> no_options() {
  return {};
}

ModelOptions small_model() {
  ModelOptions m;
  m.vocab_size = 50;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  return m;
}
}  // namespace

TEST(Registry, SoftmaxIsRegisteredWithItsOptions) {
  auto& reg = MixerRegistry::instance();
  ASSERT_TRUE(reg.has("softmax"));
  auto opts = reg.get("softmax").make_options();
  auto names = opts->names();
  EXPECT_NE(std::find(names.begin(), names.end(), "num_kv_heads"), names.end());
  EXPECT_ERROR_WITH(reg.get("flash9000"), "unknown mixer 'flash9000'", "known mixers", "softmax");
}

TEST(Registry, BuildChecksHeadDivisibility) {
  auto opts = MixerRegistry::instance().get("softmax").make_options();
  opts->set("num_kv_heads", YAML::Node("3"));
  MixerContext ctx{32, 4, 0, 1};
  EXPECT_ERROR_WITH(build_mixer("softmax", ctx, *opts), "num_kv_heads 3 must divide num_heads 4");
}

TEST(Model, ForwardBackwardShapesAndParameterCount) {
  torch::manual_seed(0);
  LanguageModel model(small_model(), no_options());
  auto x = torch::randint(0, 50, {3, 17}, torch::kLong);
  auto logits = model->forward(x);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({3, 17, 50}));
  logits.sum().backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(ops::all_finite(p.value().grad())) << p.key();
  }
  // embedding 50*32 (tied head) + per layer: attention 4*32*32, two norms 2*32, SwiGLU 3*32*96; final norm.
  int64_t hidden = swiglu_hidden(32, 8.0 / 3.0);
  int64_t expected = 50 * 32 + 2 * (4 * 32 * 32 + 2 * 32 + 3 * 32 * hidden) + 32;
  EXPECT_EQ(model->num_parameters(), expected);
  auto untied = small_model();
  untied.tie_embeddings = false;
  LanguageModel m2(untied, no_options());
  EXPECT_EQ(m2->num_parameters(), expected + 50 * 32);
}

TEST(Model, CausalityFutureTokensDoNotChangeThePast) {
  torch::manual_seed(1);
  LanguageModel model(small_model(), no_options());
  model->eval();
  auto x = torch::randint(0, 50, {2, 12}, torch::kLong);
  auto y = x.clone();
  y.narrow(1, 8, 4).random_(0, 50);
  auto a = model->forward(x).narrow(1, 0, 8), b = model->forward(y).narrow(1, 0, 8);
  EXPECT_LT(ops::rel_rms_error(a, b), 1e-6);
}

struct DecodeCase {
  int64_t kv_heads, window, sinks;
};
class SoftmaxDecode : public ::testing::TestWithParam<DecodeCase> {};

// Prefill T tokens, decode K more one at a time: the logits equal one forward over T + K.
TEST_P(SoftmaxDecode, PrefillThenDecodeEqualsOneForward) {
  auto c = GetParam();
  torch::manual_seed(2);
  auto opts = std::shared_ptr<AnyOptions>(MixerRegistry::instance().get("softmax").make_options());
  opts->set("num_kv_heads", YAML::Node(std::to_string(c.kv_heads)));
  opts->set("window", YAML::Node(std::to_string(c.window)));
  opts->set("n_sink", YAML::Node(std::to_string(c.sinks)));
  LanguageModel model(small_model(), std::map<std::string, std::shared_ptr<AnyOptions>>{{"softmax", opts}});
  model->eval();
  torch::NoGradGuard ng;
  const int64_t T = 9, K = 6;
  auto x = torch::randint(0, 50, {2, T + K}, torch::kLong);
  auto full = model->forward(x);                                                      // [2, T+K, V]
  auto cache = model->make_cache(2, 4, torch::TensorOptions().dtype(torch::kFloat));  // grows past 4
  std::vector<torch::Tensor> parts{model->forward(x.narrow(1, 0, T), &cache)};
  for (int64_t i = 0; i < K; ++i) parts.push_back(model->forward(x.narrow(1, T + i, 1), &cache));
  auto stepped = torch::cat(parts, 1);
  EXPECT_EQ(cache.position(), T + K);
  EXPECT_LT(ops::rel_rms_error(stepped, full), 1e-5);
  // Two pieces of a sequence give the result of one piece.
  auto cache2 = model->make_cache(2, T + K, torch::TensorOptions().dtype(torch::kFloat));
  auto p1 = model->forward(x.narrow(1, 0, 5), &cache2);
  auto p2 = model->forward(x.narrow(1, 5, T + K - 5), &cache2);
  EXPECT_LT(ops::rel_rms_error(torch::cat({p1, p2}, 1), full), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Cases, SoftmaxDecode,
                         ::testing::Values(DecodeCase{0, 0, 0}, DecodeCase{2, 0, 0}, DecodeCase{1, 0, 0},
                                           DecodeCase{0, 4, 0}, DecodeCase{2, 4, 2}),
                         [](const auto& info) {
                           return "kv" + std::to_string(info.param.kv_heads) + "_window" +
                                  std::to_string(info.param.window) + "_sink" +
                                  std::to_string(info.param.sinks);
                         });
