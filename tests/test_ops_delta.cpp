// Tests of the delta-rule ops: chunk vs naive, float64 finite differences, FLA fixtures, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/core/safetensors.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/delta_rule.h"
#include "attnlab/ops/registry.h"

namespace {

using attnlab::Error;
using namespace attnlab::ops;

using OpFn = RecurrentFn;

// The op's inputs by RecurrentArgs field name (q, k, v, beta, g, h0) and the cotangents of the loss
// sum(o * do) + sum(ht * dht), the loss the fixtures' gradients are of.
struct Inputs {
  std::map<std::string, torch::Tensor> x;
  torch::Tensor d_o;  // [B, T, H, V]
  torch::Tensor dht;  // [B, H, K, V]
};

struct Result {
  torch::Tensor o, ht;
  std::map<std::string, torch::Tensor> grad;  // d loss / d input, by input name
};

RecurrentArgs args_of(const std::map<std::string, torch::Tensor>& x, int64_t chunk, double scale) {
  RecurrentArgs a;
  auto get = [&](const char* n) { return x.count(n) ? x.at(n) : torch::Tensor(); };
  a.q = get("q"), a.k = get("k"), a.v = get("v"), a.beta = get("beta"), a.g = get("g"), a.h0 = get("h0");
  a.chunk_size = chunk;
  a.scale = scale;
  a.output_final_state = true;
  return a;
}

Result run(OpFn fn, const Inputs& in, Impl impl, int64_t chunk, double scale = -1) {
  std::map<std::string, torch::Tensor> leaf;
  for (const auto& [name, t] : in.x) leaf[name] = t.detach().clone().requires_grad_(true);
  auto out = fn(args_of(leaf, chunk, scale), impl);
  auto loss = (out.o * in.d_o).sum() + (out.ht * in.dht).sum();
  loss.backward();
  Result r{out.o.detach(), out.ht.detach(), {}};
  for (const auto& [name, t] : leaf) r.grad[name] = t.grad();
  return r;
}

// Random inputs as the DeltaNet layers make them: unit-norm k, beta = sigmoid(.) in (0, 1), g ~ gate
// (log decay per head and step, uniform in [0.5, 1.5] * gate); gate == 0 means the ungated op.
Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double gate, torch::Dtype dtype,
                   uint64_t seed) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(dtype);
  Inputs in;
  in.x["q"] = torch::randn({B, T, H, K}, o);
  in.x["k"] = l2_normalize(torch::randn({B, T, H, K}, o));
  in.x["v"] = torch::randn({B, T, H, V}, o);
  in.x["beta"] = torch::sigmoid(torch::randn({B, T, H}, o));
  if (gate != 0) in.x["g"] = gate * (0.5 + torch::rand({B, T, H}, o));
  in.x["h0"] = torch::randn({B, H, K, V}, o);
  in.d_o = torch::randn({B, T, H, V}, o);
  in.dht = torch::randn({B, H, K, V}, o);
  return in;
}

// Every compared quantity of `got` against `ref`: o, ht, d<input>.
std::map<std::string, double> errors(const Result& got, const Result& ref) {
  std::map<std::string, double> e{{"o", rel_rms_error(got.o, ref.o)}, {"ht", rel_rms_error(got.ht, ref.ht)}};
  for (const auto& [name, g] : ref.grad) e["d" + name] = rel_rms_error(got.grad.at(name), g);
  return e;
}

void expect_all_below(const std::map<std::string, double>& e, double tol, const std::string& what) {
  std::string line;
  for (const auto& [name, v] : e) {
    line += fmt::format(" {}={:.2e}", name, v);
    EXPECT_LT(v, tol) << what << ": " << name;
  }
  std::printf("[ rel rms  ] %s:%s\n", what.c_str(), line.c_str());
}

void expect_finite(const Result& r) {
  EXPECT_TRUE(all_finite(r.o));
  EXPECT_TRUE(all_finite(r.ht));
  for (const auto& [name, g] : r.grad) EXPECT_TRUE(all_finite(g)) << "d" << name;
}

// ---- chunk vs naive in float32 on awkward shapes and gate strengths.

struct Case {
  int64_t B, T, H, K, V, chunk;
  const char* gate_name;  // "none" for delta_rule
  double gate;            // typical log decay per step; 0 for delta_rule
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return fmt::format("{}_B{}_T{}_H{}_K{}_V{}_chunk{}{}", c.gate == 0 ? "delta" : "gated", c.B, c.T, c.H, c.K,
                     c.V, c.chunk, c.gate == 0 ? "" : std::string("_gate_") + c.gate_name);
}

class ChunkVsNaive : public testing::TestWithParam<Case> {};

// 1e-5: float32 chunk vs float32 naive differ only in summation order; the measured errors (printed) are at
// most 7e-7 (dg, weak gate, T=128), and each form lies within 6e-7 of the float64 definition.
TEST_P(ChunkVsNaive, OutputsStateAndGradients) {
  const Case& c = GetParam();
  OpFn fn = c.gate == 0 ? delta_rule : gated_delta_rule;
  auto in = make_inputs(c.B, c.T, c.H, c.K, c.V, c.gate, torch::kFloat, 1000 + c.T + c.K);
  auto naive = run(fn, in, Impl::naive, c.chunk);
  auto chunk = run(fn, in, Impl::chunk, c.chunk);
  expect_finite(naive);
  expect_finite(chunk);
  EXPECT_EQ(chunk.o.scalar_type(), torch::kFloat);
  EXPECT_EQ(chunk.ht.sizes(), (std::vector<int64_t>{c.B, c.H, c.K, c.V}));
  expect_all_below(errors(chunk, naive), 1e-5, case_name({c, 0}));
  // Which of the two carries the float32 error: both against the definition in float64 (printed only).
  Inputs in64 = in;
  for (auto* t : {&in64.d_o, &in64.dht}) *t = t->to(torch::kDouble);
  for (auto& [name, t] : in64.x) t = t.to(torch::kDouble);
  auto exact = run(fn, in64, Impl::naive, c.chunk);
  for (const auto& [what, r] : {std::pair{"naive", &naive}, std::pair{"chunk", &chunk}}) {
    std::string line;
    for (const auto& [name, v] : errors(*r, exact)) line += fmt::format(" {}={:.2e}", name, v);
    std::printf("[ vs fp64  ] %s float32 %s:%s\n", case_name({c, 0}).c_str(), what, line.c_str());
  }
}

std::vector<Case> float32_cases() {
  struct Shape {
    int64_t B, T, H, K, V, chunk;
  };
  std::vector<Shape> shapes{{2, 63, 3, 60, 40, 16},
                            {2, 63, 3, 60, 40, 64},
                            {2, 1, 2, 60, 40, 16},
                            {1, 128, 2, 32, 48, 64},
                            {1, 128, 2, 32, 48, 16}};
  std::vector<std::pair<const char*, double>> gates{
      {"none", 0.0}, {"weak", -0.01}, {"medium", -0.5}, {"strong", -5.0}};
  std::vector<Case> out;
  for (const auto& s : shapes)
    for (const auto& [name, g] : gates) out.push_back({s.B, s.T, s.H, s.K, s.V, s.chunk, name, g});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Float32, ChunkVsNaive, testing::ValuesIn(float32_cases()), case_name);

// ---- float64 on tiny shapes: naive gradients against finite differences, chunk against naive.

double loss_of(OpFn fn, const Inputs& in, Impl impl, int64_t chunk) {
  torch::NoGradGuard no_grad;
  auto out = fn(args_of(in.x, chunk, -1), impl);
  return ((out.o * in.d_o).sum() + (out.ht * in.dht).sum()).item<double>();
}

class Float64 : public testing::TestWithParam<const char*> {};

// Central differences with step 1e-6: truncation ~1e-12 and rounding ~1e-16 / 1e-6 = 1e-10 relative, so
// 1e-7 leaves room and still catches any wrong term.
TEST_P(Float64, NaiveGradientsMatchFiniteDifferences) {
  bool gated = std::string(GetParam()) == "gated";
  OpFn fn = gated ? gated_delta_rule : delta_rule;
  auto in = make_inputs(1, 7, 2, 4, 3, gated ? -0.5 : 0.0, torch::kDouble, 7);
  auto ref = run(fn, in, Impl::naive, 3);
  const double eps = 1e-6;
  for (auto& [name, x] : in.x) {
    auto fd = torch::zeros_like(x);
    auto flat = x.view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      double x0 = flat[i].item<double>();
      flat[i] = x0 + eps;
      double up = loss_of(fn, in, Impl::naive, 3);
      flat[i] = x0 - eps;
      double down = loss_of(fn, in, Impl::naive, 3);
      flat[i] = x0;
      fd.view({-1})[i] = (up - down) / (2 * eps);
    }
    double e = rel_rms_error(ref.grad.at(name), fd);
    std::printf("[ rel rms  ] %s naive d%s vs finite differences: %.2e\n", GetParam(), name.c_str(), e);
    EXPECT_LT(e, 1e-7) << "d" << name;
  }
}

// Chunk sizes 1 (every token its own chunk), 3 (a tail of 1) and 16 (longer than T).
TEST_P(Float64, ChunkMatchesNaive) {
  bool gated = std::string(GetParam()) == "gated";
  OpFn fn = gated ? gated_delta_rule : delta_rule;
  auto in = make_inputs(2, 7, 2, 4, 3, gated ? -0.5 : 0.0, torch::kDouble, 8);
  auto ref = run(fn, in, Impl::naive, 3);
  EXPECT_EQ(ref.o.scalar_type(), torch::kDouble);
  for (int64_t chunk : {1, 3, 16})
    expect_all_below(errors(run(fn, in, Impl::chunk, chunk), ref), 1e-10,
                     fmt::format("{} float64 chunk{}", GetParam(), chunk));
}

INSTANTIATE_TEST_SUITE_P(Ops, Float64, testing::Values("delta", "gated"));

// ---- the FLA fixtures (tests/data/README.md): B=2, T=37, H=3, K=16, V=20, scale 0.25.

struct FixtureCase {
  const char* op;
  Impl impl;
  int64_t chunk;
};

class Fixture : public testing::TestWithParam<FixtureCase> {};

// 1e-4 relative RMS: ours and FLA's are both float32; FLA quotes ~1e-6 for float32 against float32.
TEST_P(Fixture, MatchesFla) {
  const FixtureCase& c = GetParam();
  auto file =
      attnlab::SafetensorFile::load(std::string(ATTNLAB_SOURCE_DIR) + "/tests/data/" + c.op + ".safetensors");
  Inputs in;
  for (const char* n : {"q", "k", "v", "beta", "g", "h0"})
    if (file.has(n)) in.x[n] = file.tensor(n);
  in.d_o = file.tensor("do");
  in.dht = file.tensor("dht");
  double scale = std::stod(file.metadata().at("scale"));
  auto got = run(OpRegistry::instance().get(c.op).fn, in, c.impl, c.chunk, scale);
  Result ref{file.tensor("o"), file.tensor("ht"), {}};
  for (const auto& [name, t] : in.x) ref.grad[name] = file.tensor("d" + name);
  expect_finite(got);
  expect_all_below(errors(got, ref), 1e-4,
                   fmt::format("{} {} chunk{} vs FLA", c.op, impl_name(c.impl), c.chunk));
}

INSTANTIATE_TEST_SUITE_P(Fla, Fixture,
                         testing::Values(FixtureCase{"delta_rule", Impl::naive, 64},
                                         FixtureCase{"delta_rule", Impl::chunk, 16},
                                         FixtureCase{"delta_rule", Impl::chunk, 64},
                                         FixtureCase{"gated_delta_rule", Impl::naive, 64},
                                         FixtureCase{"gated_delta_rule", Impl::chunk, 16},
                                         FixtureCase{"gated_delta_rule", Impl::chunk, 64}),
                         [](const testing::TestParamInfo<FixtureCase>& i) {
                           return fmt::format("{}_{}_chunk{}", i.param.op, impl_name(i.param.impl),
                                              i.param.chunk);
                         });

// ---- the pieces around the math.

// A sequence cut in two, the second piece starting from the first's final state, gives the same result.
TEST(DeltaRule, SplitSequenceMatchesOnePiece) {
  auto in = make_inputs(2, 63, 3, 16, 20, -0.5, torch::kFloat, 3);
  auto args = args_of(in.x, 16, -1);
  auto whole = gated_delta_rule(args, Impl::chunk);
  auto first = args, second = args;
  for (auto* a : {&first, &second}) {
    bool one = a == &first;
    for (auto* t : {&a->q, &a->k, &a->v, &a->beta, &a->g})
      *t = one ? t->narrow(1, 0, 40) : t->narrow(1, 40, 23);
  }
  auto o1 = gated_delta_rule(first, Impl::chunk);
  second.h0 = o1.ht;
  auto o2 = gated_delta_rule(second, Impl::chunk);
  EXPECT_LT(rel_rms_error(torch::cat({o1.o, o2.o}, 1), whole.o), 1e-6);
  EXPECT_LT(rel_rms_error(o2.ht, whole.ht), 1e-6);
}

TEST(DeltaRule, RegisteredWithTheirInputs) {
  const auto& reg = OpRegistry::instance();
  EXPECT_EQ(reg.get("delta_rule").inputs, (std::vector<std::string>{"q", "k", "v", "beta", "h0"}));
  EXPECT_EQ(reg.get("gated_delta_rule").inputs, (std::vector<std::string>{"q", "k", "v", "g", "beta", "h0"}));
  auto in = make_inputs(1, 5, 1, 4, 3, -0.5, torch::kFloat, 4);
  auto a = args_of(in.x, 2, -1);
  EXPECT_TRUE(
      torch::equal(reg.get("gated_delta_rule").fn(a, Impl::chunk).o, gated_delta_rule(a, Impl::chunk).o));
  // automatic is the chunk form; no final state unless asked for.
  a.output_final_state = false;
  auto out = gated_delta_rule(a, Impl::automatic);
  EXPECT_TRUE(torch::equal(out.o, gated_delta_rule(a, Impl::chunk).o));
  EXPECT_FALSE(out.ht.defined());
}

TEST(DeltaRule, L2Normalize) {
  auto x = torch::randn({2, 3, 5}).to(torch::kDouble);
  auto y = l2_normalize(x);
  EXPECT_EQ(y.scalar_type(), torch::kDouble);
  // FLA's formula x / sqrt(sum x^2 + eps): the norm falls short of 1 by about eps / (2 sum x^2), which
  // depends on the draw, so compare with the formula itself.
  auto want = x / (x.pow(2).sum(-1, true) + 1e-6).sqrt();
  EXPECT_LT((y - want).abs().max().item<double>(), 1e-12);
  EXPECT_TRUE(all_finite(l2_normalize(torch::zeros({2, 4}))));  // eps keeps a zero vector finite
}

// args.l2norm_qk normalises q and k inside the op: the same bits as normalising them first, and gradients
// that flow through the normalisation to the raw q and k (both ops, naive and chunk forms).
TEST(DeltaRule, L2NormQkIsTheOpsOwnNormalisation) {
  for (double gate : {0.0, -0.3}) {
    auto in = make_inputs(2, 37, 3, 8, 5, gate, torch::kFloat, 77);
    in.x["k"] = torch::randn({2, 37, 3, 8}) * 3;  // raw, not unit-norm
    OpFn fn = gate != 0 ? gated_delta_rule : delta_rule;
    for (Impl impl : {Impl::naive, Impl::chunk}) {
      auto raw = args_of(in.x, 16, -1);
      raw.l2norm_qk = true;
      auto pre = args_of(in.x, 16, -1);
      pre.q = l2_normalize(pre.q), pre.k = l2_normalize(pre.k);
      auto a = fn(raw, impl), b = fn(pre, impl);
      EXPECT_TRUE(torch::equal(a.o, b.o)) << "gate " << gate;
      EXPECT_TRUE(torch::equal(a.ht, b.ht)) << "gate " << gate;
      // the gradient of q through the normalisation: orthogonal to q (a scale change of q changes nothing)
      auto q = in.x["q"].clone().requires_grad_(true);
      auto leaf = raw;
      leaf.q = q;
      (fn(leaf, impl).o * in.d_o).sum().backward();
      auto radial = (q.grad() * q.detach()).sum(-1);
      EXPECT_LT(radial.abs().max().item<double>(), 1e-4) << "gate " << gate;
    }
  }
}

// Runs `f` and expects an attnlab::Error whose message contains `expected`.
template <class F>
void expect_error(F&& f, const std::string& expected) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    return;
  }
  ADD_FAILURE() << "expected attnlab::Error containing: " << expected;
}

TEST(DeltaRule, BadInputSaysWhatWasExpected) {
  auto in = make_inputs(2, 9, 3, 8, 5, -0.5, torch::kFloat, 5);
  auto good = args_of(in.x, 4, -1);
  auto gate_free = good;
  gate_free.g = torch::Tensor();

  auto a = gate_free;
  a.k = torch::randn({2, 9, 3, 4});
  expect_error([&] { delta_rule(a, Impl::chunk); },
               "delta_rule: k must be [B,T,H,K]=[2,9,3,8], got [2, 9, 3, 4]");
  a = gate_free;
  a.beta = torch::Tensor();
  expect_error([&] { delta_rule(a, Impl::naive); },
               "delta_rule: beta must be [B,T,H]=[2,9,3], got no tensor");
  a = gate_free;
  a.v = torch::randn({2, 8, 3, 5});
  expect_error([&] { delta_rule(a, Impl::chunk); }, "v must be [B,T,H,V]=[2,9,3,*], got [2, 8, 3, 5]");
  a = gate_free;
  a.h0 = torch::randn({2, 3, 5, 8});
  expect_error([&] { delta_rule(a, Impl::chunk); }, "h0 must be [B,H,K,V]=[2,3,8,5], got [2, 3, 5, 8]");
  a = gate_free;
  a.chunk_size = 0;
  expect_error([&] { delta_rule(a, Impl::chunk); }, "delta_rule: chunk_size must be >= 1, got 0");
  expect_error([&] { delta_rule(good, Impl::chunk); }, "delta_rule: takes no gate g");
  // The kernels need CUDA tensors: CPU ones are refused with the reason, with or without CUDA in the build.
  expect_error([&] { delta_rule(gate_free, Impl::kernel); },
               "delta_rule: impl kernel cannot run these inputs: ");

  expect_error([&] { gated_delta_rule(gate_free, Impl::chunk); },
               "gated_delta_rule: g must be [B,T,H]=[2,9,3], got no tensor");
  a = good;
  a.g = torch::zeros({2, 9, 3, 8});  // a per-channel (GLA) gate
  expect_error([&] { gated_delta_rule(a, Impl::chunk); },
               "gated_delta_rule: g must be [B,T,H]=[2,9,3], got [2, 9, 3, 8]");
  expect_error([&] { gated_delta_rule(good, Impl::kernel); },
               "gated_delta_rule: impl kernel cannot run these inputs: ");
}

}  // namespace
