// The mechanism zoo, part 1 (linear attention, RetNet, GLA, Mamba2, simple GLA): shapes, gradients,
// causality, streaming against one forward, naive against chunk, info(), options, the short conv, and whole
// models.
#include <gtest/gtest.h>

#include <cmath>
#include <utility>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/mixers/short_conv.h"
#include "attnlab/model/layers.h"
#include "attnlab/model/lm.h"
#include "attnlab/ops/check.h"
#include "support/helpers.h"

using namespace attnlab;

namespace {

constexpr int64_t kC = 32, kH = 4;  // d_model 32, 4 heads, as the model tests

// Tolerances, relative RMS in float32. Causality: outputs before the change see bit-identical inputs;
// masked scores are exact zeros, so only summation order may differ (1e-6). Streaming and naive vs chunk:
// the same sums in another order through a float32 state, ~1e-7 in practice; 1e-5 as the issue asks.
constexpr double kCausalTol = 1e-6, kStreamTol = 1e-5;

struct MixerCase {
  std::string label;  // the test name's suffix
  std::string mixer;
  std::vector<std::pair<std::string, std::string>> options;
};

std::unique_ptr<AnyOptions> options_for(const MixerCase& c) {
  auto opts = MixerRegistry::instance().get(c.mixer).make_options();
  for (const auto& kv : c.options) opts->set(kv.first, YAML::Node(kv.second));
  return opts;
}

std::shared_ptr<Mixer> build(const MixerCase& c, uint64_t seed = 0) {
  torch::manual_seed(seed);
  return build_mixer(c.mixer, MixerContext{kC, kH, 0, 2}, *options_for(c));
}

class MixerA : public ::testing::TestWithParam<MixerCase> {};

}  // namespace

TEST_P(MixerA, ForwardShapeIsBTC) {
  auto m = build(GetParam());
  auto y = m->forward(torch::randn({2, 37, kC}), nullptr);
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 37, kC}));
  EXPECT_TRUE(ops::all_finite(y));
}

TEST_P(MixerA, BackwardGivesFiniteGradientsForEveryParameter) {
  auto m = build(GetParam());
  auto x = torch::randn({2, 37, kC}, torch::requires_grad());
  auto y = m->forward(x, nullptr);
  (y * torch::randn_like(y)).sum().backward();
  ASSERT_FALSE(m->named_parameters().is_empty());
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
    EXPECT_TRUE(ops::all_finite(p.value().grad())) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key() << ": gradient all zero (unused?)";
  }
  EXPECT_TRUE(ops::all_finite(x.grad()));
}

TEST_P(MixerA, FutureTokensDoNotChangeThePast) {
  auto m = build(GetParam());
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 37, kC});
  auto x2 = x.clone();
  x2.narrow(1, 20, 17).normal_();
  auto a = m->forward(x, nullptr).narrow(1, 0, 20), b = m->forward(x2, nullptr).narrow(1, 0, 20);
  EXPECT_LT(ops::rel_rms_error(b, a), kCausalTol);
  EXPECT_GT(ops::rel_rms_error(m->forward(x2, nullptr), m->forward(x, nullptr)), 1e-3) << "future ignored";
}

// Prefill T = 9 through make_cache, decode K = 6 one token at a time: equals one forward over T + K.
TEST_P(MixerA, PrefillThenDecodeEqualsOneForward) {
  auto m = build(GetParam());
  torch::NoGradGuard ng;
  const int64_t T = 9, K = 6;
  auto x = torch::randn({2, T + K, kC});
  auto full = m->forward(x, nullptr);  // [2, T+K, C]
  auto cache = m->make_cache(2, T + K, torch::TensorOptions().dtype(torch::kFloat));
  std::vector<torch::Tensor> parts{m->forward(x.narrow(1, 0, T), cache.get())};
  for (int64_t i = 0; i < K; ++i) parts.push_back(m->forward(x.narrow(1, T + i, 1), cache.get()));
  EXPECT_EQ(cache->position, T + K);
  EXPECT_LT(ops::rel_rms_error(torch::cat(parts, 1), full), kStreamTol);
}

TEST_P(MixerA, TwoPiecesEqualOnePiece) {
  auto m = build(GetParam());
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 15, kC});
  auto full = m->forward(x, nullptr);
  auto cache = m->make_cache(2, 15, torch::TensorOptions().dtype(torch::kFloat));
  auto p1 = m->forward(x.narrow(1, 0, 5), cache.get());
  auto p2 = m->forward(x.narrow(1, 5, 10), cache.get());
  EXPECT_LT(ops::rel_rms_error(torch::cat({p1, p2}, 1), full), kStreamTol);
}

// The chunk form (several chunks at T = 37 when chunk_size is 8) against the op's definition, same weights.
TEST_P(MixerA, NaiveEqualsChunk) {
  auto naive_case = GetParam(), chunk_case = GetParam();
  naive_case.options.push_back({"impl", "naive"});
  chunk_case.options.push_back({"impl", "chunk"});
  auto a = build(naive_case, 7), b = build(chunk_case, 7);
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 37, kC});
  EXPECT_LT(ops::rel_rms_error(b->forward(x, nullptr), a->forward(x, nullptr)), kStreamTol);
}

TEST_P(MixerA, InfoCountsParametersConstantStateAndFlops) {
  auto m = build(GetParam());
  auto info = m->info();
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(info.parameters, n);
  ASSERT_TRUE(info.state_bytes && info.flops_per_token);
  EXPECT_GT(info.state_bytes(2048), 0);
  EXPECT_EQ(info.state_bytes(2048), info.state_bytes(4096)) << "a recurrent state does not grow with T";
  EXPECT_GT(info.flops_per_token(2048), 0.0);
}

TEST_P(MixerA, BadOptionValuesNameTheKey) {
  auto opts = MixerRegistry::instance().get(GetParam().mixer).make_options();
  const std::string key = "mixer." + GetParam().mixer + ".chunk_size";
  EXPECT_ERROR_WITH(opts->set("chunk_size", YAML::Node("0")), key, std::string("expected a value > 0"),
                    std::string("got 0"));
  EXPECT_ERROR_WITH(opts->set("impl", YAML::Node("fast")), "impl", "one of auto, naive, chunk, kernel");
  EXPECT_ERROR_WITH(opts->set("chunk_sz", YAML::Node("8")), "unknown config key", "chunk_sz", "chunk_size");
  for (const auto& o : opts->describe()) EXPECT_FALSE(o.help.empty()) << o.name << " has no help";
}

INSTANTIATE_TEST_SUITE_P(
    Zoo, MixerA,
    ::testing::Values(MixerCase{"linear_attention", "linear_attention", {}},
                      MixerCase{"linear_attention_chunk8", "linear_attention", {{"chunk_size", "8"}}},
                      MixerCase{"linear_attention_taylor", "linear_attention", {{"feature_map", "taylor"}}},
                      MixerCase{"linear_attention_relu_unnormalized",
                                "linear_attention",
                                {{"feature_map", "relu"}, {"normalize", "false"}, {"chunk_size", "8"}}},
                      MixerCase{"retnet", "retnet", {}},
                      MixerCase{"retnet_chunk8", "retnet", {{"chunk_size", "8"}}},
                      MixerCase{
                          "retnet_odd_key_dim3", "retnet", {{"expand_k", "0.375"}, {"chunk_size", "8"}}},
                      MixerCase{"gla", "gla", {}}, MixerCase{"gla_chunk8", "gla", {{"chunk_size", "8"}}},
                      MixerCase{"mamba2", "mamba2", {}},
                      MixerCase{"mamba2_chunk8_dstate16", "mamba2", {{"chunk_size", "8"}, {"d_state", "16"}}},
                      MixerCase{"simple_gla", "simple_gla", {}},
                      MixerCase{"simple_gla_chunk8", "simple_gla", {{"chunk_size", "8"}}}),
    [](const auto& info) { return info.param.label; });

TEST(MixerAOptions, UnknownFeatureMapListsTheValidOnes) {
  auto opts = MixerRegistry::instance().get("linear_attention").make_options();
  EXPECT_ERROR_WITH(opts->set("feature_map", YAML::Node("cosine")), "mixer.linear_attention.feature_map",
                    "one of elu1, relu, identity, taylor", "cosine");
}

TEST(MixerAOptions, WidthsThatDoNotSplitIntoHeadsAreErrors) {
  auto build_with = [](const std::string& name, int64_t heads) {
    auto opts = MixerRegistry::instance().get(name).make_options();
    return build_mixer(name, MixerContext{kC, heads, 0, 1}, *opts);
  };
  EXPECT_ERROR_WITH(build_with("retnet", 3), "retnet", "divisible by num_heads 3");
  EXPECT_ERROR_WITH(build_with("gla", 3), "gla", "divisible by num_heads 3");
  EXPECT_ERROR_WITH(build_with("simple_gla", 3), "simple_gla", "divisible by num_heads 3");
  EXPECT_ERROR_WITH(build_with("mamba2", 3), "mamba2", "divisible by num_heads 3");
  EXPECT_ERROR_WITH(build_with("linear_attention", 3), "linear_attention", "divisible by num_heads 3");
}

// Layer references written from the papers, token by token in float64, with the mixer's own weights: they
// check the wiring (splits, scales, gates, norms) that streaming and naive-vs-chunk cannot see.
namespace {
torch::Tensor param(const std::shared_ptr<Mixer>& m, const std::string& name) {
  auto params = m->named_parameters();
  EXPECT_TRUE(params.contains(name)) << name;
  return params[name].detach().to(torch::kDouble);
}
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * w;
}
// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t, token by token. q, k [B, T, H, K],
// v [B, T, H, V], g broadcastable to k -> o [B, T, H, V].
torch::Tensor gated_recurrence(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& g) {
  auto gk = g.expand_as(k);
  auto S = torch::zeros({q.size(0), q.size(2), q.size(3), v.size(3)}, torch::kDouble);  // [B, H, K, V]
  std::vector<torch::Tensor> os;
  for (int64_t t = 0; t < q.size(1); ++t) {
    S = gk.select(1, t).exp().unsqueeze(-1) * S + k.select(1, t).unsqueeze(-1) * v.select(1, t).unsqueeze(-2);
    os.push_back(torch::matmul(q.select(1, t).unsqueeze(-2), S).squeeze(-2) /
                 std::sqrt(static_cast<double>(q.size(3))));
  }
  return torch::stack(os, 1);
}
torch::Tensor linear(const std::shared_ptr<Mixer>& m, const std::string& name, const torch::Tensor& x) {
  auto params = m->named_parameters();
  auto y = torch::matmul(x, param(m, name + ".weight").t());
  return params.contains(name + ".bias") ? y + param(m, name + ".bias") : y;
}
}  // namespace

// Katharopoulos et al. 2020, normalised causal form: o_t = sum_{s<=t} phi(q_t).phi(k_s) v_s / sum_{s<=t}
// phi(q_t).phi(k_s), phi = elu + 1, as the quadratic matrix form.
TEST(MixerAReference, LinearAttentionMatchesTheQuadraticForm) {
  auto m = build(MixerCase{"", "linear_attention", {{"chunk_size", "8"}}});
  torch::NoGradGuard ng;
  const int64_t B = 2, T = 21, D = kC / kH;
  auto x = torch::randn({B, T, kC});
  auto xd = x.to(torch::kDouble);
  auto heads = [&](const char* w) {  // [B, H, T, D]
    return torch::matmul(xd, param(m, w).t()).view({B, T, kH, D}).transpose(1, 2);
  };
  auto q = torch::elu(heads("wq.weight")) + 1, k = torch::elu(heads("wk.weight")) + 1, v = heads("wv.weight");
  auto A = torch::matmul(q, k.transpose(-1, -2)).tril();       // [B, H, T, T]
  auto o = torch::matmul(A, v) / A.sum(-1, /*keepdim=*/true);  // [B, H, T, D]
  auto ref = torch::matmul(o.transpose(1, 2).reshape({B, T, kC}), param(m, "wo.weight").t());
  EXPECT_LT(ops::rel_rms_error(m->forward(x, nullptr), ref), 1e-5);
}

// Mamba2 (Dao & Gu 2024): conv + SiLU on [x, B, C]; dt = softplus(dt + dt_bias); h_t = exp(-exp(A_log) dt_t)
// h_{t-1} + dt_t x_t B_t^T; y_t = h_t C_t + D x_t; out_proj(RMSNorm(y * silu(z))).
TEST(MixerAReference, Mamba2MatchesTheSequentialSSM) {
  auto m = build(MixerCase{"", "mamba2", {{"chunk_size", "8"}, {"d_state", "16"}}});
  torch::NoGradGuard ng;
  const int64_t B = 2, T = 21, Di = 2 * kC, P = Di / kH, N = 16, K = 4;
  auto x = torch::randn({B, T, kC});
  auto proj = torch::matmul(x.to(torch::kDouble), param(m, "in_proj.weight").t());  // [B, T, 2Di+2N+H]
  auto z = proj.narrow(-1, 0, Di);
  auto xbc = torch::conv1d(proj.narrow(-1, Di, Di + 2 * N).transpose(1, 2), param(m, "conv.weight"),
                           param(m, "conv.bias"), 1, K - 1, 1, Di + 2 * N);
  xbc = torch::silu(xbc.narrow(2, 0, T).transpose(1, 2));  // [B, T, Di + 2N]
  auto xs = xbc.narrow(-1, 0, Di).reshape({B, T, kH, P}), Bm = xbc.narrow(-1, Di, N),
       Cm = xbc.narrow(-1, Di + N, N);
  auto dt = torch::softplus(proj.narrow(-1, 2 * Di + 2 * N, kH) + param(m, "dt_bias"));  // [B, T, H]
  auto A = -torch::exp(param(m, "A_log")), Dskip = param(m, "D");                        // [H]
  auto h = torch::zeros({B, kH, P, N}, torch::kDouble);
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    auto dtt = dt.select(1, t);  // [B, H]
    auto xt = xs.select(1, t);   // [B, H, P]
    h = torch::exp(A * dtt).view({B, kH, 1, 1}) * h +
        (dtt.unsqueeze(-1) * xt).unsqueeze(-1) * Bm.select(1, t).view({B, 1, 1, N});
    ys.push_back(torch::matmul(h, Cm.select(1, t).view({B, 1, N, 1})).squeeze(-1) + Dskip.view({kH, 1}) * xt);
  }
  auto y = torch::stack(ys, 1).reshape({B, T, Di});
  y = rms_norm(y * torch::silu(z), param(m, "norm.weight"));
  auto ref = torch::matmul(y, param(m, "out_proj.weight").t());
  EXPECT_LT(ops::rel_rms_error(m->forward(x, nullptr), ref), 1e-5);
}

// GLA (Yang et al. 2024, section 4.4) and simple GLA: g = logsigmoid(W2 W1 x + b) / 16 per key channel
// (simple GLA: logsigmoid(W_g x + b) / 16 per head); out = W_o (RMSNorm(o) * silu(W_r x)).
TEST(MixerAReference, GLAAndSimpleGLAMatchTheRecurrence) {
  for (const std::string name : {"gla", "simple_gla"}) {
    auto m = build(MixerCase{"", name, {{"chunk_size", "8"}}});
    torch::NoGradGuard ng;
    const int64_t B = 2, T = 21, K = kC / 2 / kH, V = kC / kH;
    auto x = torch::randn({B, T, kC});
    auto xd = x.to(torch::kDouble);
    auto q = linear(m, "wq", xd).view({B, T, kH, K}), k = linear(m, "wk", xd).view({B, T, kH, K});
    auto v = linear(m, "wv", xd).view({B, T, kH, V});
    auto g = name == "gla"
                 ? (torch::log_sigmoid(linear(m, "w2", linear(m, "w1", xd))) / 16).view({B, T, kH, K})
                 : (torch::log_sigmoid(linear(m, "wg", xd)) / 16).unsqueeze(-1);
    auto o = rms_norm(gated_recurrence(q, k, v, g), param(m, "norm.weight")).reshape({B, T, kC});
    auto ref = linear(m, "wo", o * torch::silu(linear(m, "wr", xd)));
    EXPECT_LT(ops::rel_rms_error(m->forward(x, nullptr), ref), 1e-5) << name;
  }
}

// RetNet (Sun et al. 2023, section 2.2): RoPE on q, k; gamma_h = 1 - 2^(-5-h); per-head norm without affine;
// out = W_o (silu(W_G x) * norm(o)).
TEST(MixerAReference, RetNetMatchesTheRecurrence) {
  auto m = build(MixerCase{"", "retnet", {{"chunk_size", "8"}}});
  torch::NoGradGuard ng;
  const int64_t B = 2, T = 21, K = kC / 2 / kH, V = 2 * K;
  auto x = torch::randn({B, T, kC});
  auto xd = x.to(torch::kDouble);
  auto q = apply_rope(linear(m, "wq", xd).view({B, T, kH, K}), 0, 10000.0).to(torch::kDouble);
  auto k = apply_rope(linear(m, "wk", xd).view({B, T, kH, K}), 0, 10000.0).to(torch::kDouble);
  auto v = linear(m, "wv", xd).view({B, T, kH, V});
  auto h = torch::arange(kH, torch::kDouble);
  auto g = torch::log(1 - torch::pow(2.0, -5.0 - h)).view({kH, 1});  // [H, 1]
  auto o = rms_norm(gated_recurrence(q, k, v, g), torch::ones({V}, torch::kDouble)).reshape({B, T, kC});
  auto ref = linear(m, "wo", torch::silu(linear(m, "wg", xd)) * o);
  EXPECT_LT(ops::rel_rms_error(m->forward(x, nullptr), ref), 1e-5);
}

// The short convolution against PyTorch's depthwise conv1d, and streamed in pieces against one piece.
TEST(ShortConv, MatchesConv1dAndStreams) {
  torch::manual_seed(3);
  const int64_t B = 2, T = 11, C = 6, K = 4;
  ShortConv conv(C, K, /*bias=*/true, /*silu=*/false);
  torch::NoGradGuard ng;
  auto x = torch::randn({B, T, C});
  auto ref = torch::conv1d(x.transpose(1, 2), conv->weight, conv->bias, 1, K - 1, 1, C)
                 .narrow(2, 0, T)
                 .transpose(1, 2);  // [B, T, C]: left padding K-1, the right overhang dropped
  auto y = conv->forward(x);
  EXPECT_LT(ops::rel_rms_error(y, ref), 1e-6);
  auto buffer = conv->make_buffer(B, torch::TensorOptions().dtype(torch::kFloat));
  EXPECT_EQ(buffer.sizes(), torch::IntArrayRef({B, K - 1, C}));
  // Pieces of 2, 1, 1 and 7 tokens: shorter and longer than the buffer.
  std::vector<torch::Tensor> parts;
  int64_t start = 0;
  for (int64_t len : {2, 1, 1, 7}) {
    parts.push_back(conv->forward(x.narrow(1, start, len), &buffer));
    start += len;
  }
  EXPECT_LT(ops::rel_rms_error(torch::cat(parts, 1), ref), 1e-6);
  EXPECT_LT(ops::rel_rms_error(buffer, x.narrow(1, T - (K - 1), K - 1)), 1e-7);
  torch::Tensor undefined;  // an undefined buffer counts as zeros and is filled
  EXPECT_LT(ops::rel_rms_error(conv->forward(x, &undefined), ref), 1e-6);
  EXPECT_EQ(undefined.sizes(), torch::IntArrayRef({B, K - 1, C}));
  EXPECT_ERROR_WITH(conv->forward(x.narrow(2, 0, 5)), "short_conv", "C=6", "[2, 11, 5]");
}

// ---- whole models: each mixer, and hybrids ------------------------------------------------------------
namespace {

ModelOptions small_model(const std::vector<std::string>& layers) {
  ModelOptions m;
  m.vocab_size = 50;
  m.d_model = kC;
  m.n_layers = 2;
  m.n_heads = kH;
  if (layers[0] == layers[1])
    m.mixer = layers[0];  // one mixer for every layer: the plain `mixer` path
  else
    m.layers = layers;  // a hybrid pattern
  return m;
}

class ModelA : public ::testing::TestWithParam<std::vector<std::string>> {};

}  // namespace

TEST_P(ModelA, ForwardBackwardAndDecode) {
  torch::manual_seed(4);
  LanguageModel model(small_model(GetParam()), std::map<std::string, std::shared_ptr<AnyOptions>>{});
  auto x = torch::randint(0, 50, {2, 15}, torch::kLong);
  auto logits = model->forward(x);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({2, 15, 50}));
  torch::nn::functional::cross_entropy(logits.reshape({-1, 50}), x.reshape({-1})).backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(ops::all_finite(p.value().grad())) << p.key();
  }
  // Prefill 9 tokens, decode 6 through the model cache: the logits of one forward.
  torch::NoGradGuard ng;
  auto cache = model->make_cache(2, 15, torch::TensorOptions().dtype(torch::kFloat));
  std::vector<torch::Tensor> parts{model->forward(x.narrow(1, 0, 9), &cache)};
  for (int64_t i = 9; i < 15; ++i) parts.push_back(model->forward(x.narrow(1, i, 1), &cache));
  EXPECT_EQ(cache.position(), 15);
  EXPECT_LT(ops::rel_rms_error(torch::cat(parts, 1), logits.detach()), kStreamTol);
}

INSTANTIATE_TEST_SUITE_P(Zoo, ModelA,
                         ::testing::Values(std::vector<std::string>{"linear_attention", "linear_attention"},
                                           std::vector<std::string>{"retnet", "retnet"},
                                           std::vector<std::string>{"gla", "gla"},
                                           std::vector<std::string>{"mamba2", "mamba2"},
                                           std::vector<std::string>{"simple_gla", "simple_gla"},
                                           std::vector<std::string>{"gla", "softmax"},
                                           std::vector<std::string>{"mamba2", "retnet"}),
                         [](const auto& info) {
                           std::string name;
                           for (const auto& l : info.param) name += (name.empty() ? "" : "_") + l;
                           return name;
                         });
