// labels: cpu
// Tests of the linear-family ops: chunk vs naive, finite differences, streaming, FLA's fixtures, bad input.
#include <gtest/gtest.h>

#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/core/safetensors.h"
#include "attnlab/ops/based.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/gla.h"
#include "attnlab/ops/linear_attention.h"
#include "attnlab/ops/registry.h"
#include "attnlab/ops/rwkv6.h"
#include "attnlab/ops/simple_gla.h"

namespace {

using namespace attnlab::ops;
using Tensors = std::map<std::string, torch::Tensor>;  // q, k, v, g, u, h0 / o, ht, dq, dk, ...

const std::vector<std::string> kOps = {
    "linear_attention", "linear_attention_normalized", "simple_gla", "retention", "gla", "rwkv6", "based"};

RecurrentFn op_fn(const std::string& op) {
  if (op == "linear_attention_normalized")
    return [](const RecurrentArgs& a, Impl i) { return linear_attention_normalized(a, i, 1e-6); };
  return OpRegistry::instance().get(op).fn;
}

bool has_state(const std::string& op) {
  return op != "based";
}
bool scalar_gate(const std::string& op) {
  return op == "simple_gla";
}
bool channel_gate(const std::string& op) {
  return op == "gla" || op == "rwkv6";
}

// Log decay per step: weak -0.01, medium -0.5, strong -5 (times U(0.5, 1.5)). Strong gates make a chunk's
// cumulative decay reach e^-300, far past float32's e^-88: exp(-cumsum) would overflow.
double gate_strength(const std::string& gate) {
  if (gate == "weak") return 0.01;
  if (gate == "medium") return 0.5;
  if (gate == "strong") return 5.0;
  return 0.0;
}

Tensors make_inputs(const std::string& op, std::vector<int64_t> dims, const std::string& gate, bool h0,
                    torch::ScalarType dt, uint64_t seed) {
  torch::manual_seed(seed);
  int64_t B = dims[0], T = dims[1], H = dims[2], K = dims[3], V = dims[4];
  auto opt = torch::TensorOptions().dtype(dt);
  Tensors in;
  in["q"] = torch::randn({B, T, H, K}, opt);
  in["k"] = torch::randn({B, T, H, K}, opt);
  in["v"] = torch::randn({B, T, H, V}, opt);
  bool normalized = op == "linear_attention_normalized";
  if (normalized) in["q"] = feature_map(in["q"], "elu1"), in["k"] = feature_map(in["k"], "elu1");  // positive
  double s = gate_strength(gate);
  if (scalar_gate(op)) in["g"] = -s * (0.5 + torch::rand({B, T, H}, opt));
  if (channel_gate(op)) in["g"] = -s * (0.5 + torch::rand({B, T, H, K}, opt));
  if (op == "rwkv6") in["u"] = 0.5 * torch::randn({H, K}, opt);
  if (h0 && has_state(op))
    in["h0"] = normalized ? torch::rand({B, H, K, V + 1}, opt) : torch::randn({B, H, K, V}, opt);
  for (auto& kv : in) kv.second.requires_grad_(true);
  return in;
}

RecurrentArgs args_of(const Tensors& in, int64_t chunk, double scale, bool state) {
  auto get = [&](const char* n) { return in.count(n) ? in.at(n) : torch::Tensor(); };
  RecurrentArgs a;
  a.q = get("q"), a.k = get("k"), a.v = get("v"), a.g = get("g"), a.u = get("u"), a.h0 = get("h0");
  a.scale = scale, a.chunk_size = chunk, a.output_final_state = state;
  return a;
}

// Runs the op and backpropagates sum(o*dout) + sum(ht*dht): {o, ht, d<name> for every input}.
Tensors run(const std::string& op, const Tensors& in, Impl impl, int64_t chunk, double scale,
            const torch::Tensor& dout, const torch::Tensor& dht) {
  auto out = op_fn(op)(args_of(in, chunk, scale, dht.defined()), impl);
  auto loss = (out.o * dout).sum();
  if (dht.defined()) loss = loss + (out.ht * dht).sum();
  std::vector<std::string> names;
  std::vector<torch::Tensor> leaves;
  for (const auto& kv : in) names.push_back(kv.first), leaves.push_back(kv.second);
  auto grads = torch::autograd::grad({loss}, leaves);
  Tensors res{{"o", out.o.detach()}};
  if (dht.defined()) res["ht"] = out.ht.detach();
  for (size_t i = 0; i < names.size(); ++i) res["d" + names[i]] = grads[i];
  return res;
}

// Every tensor of `ref` must be in `got`, finite, within `tol` relative RMS. Returns "name err ..." for logs.
std::string expect_close(const Tensors& got, const Tensors& ref, double tol) {
  std::string summary;
  for (const auto& [name, r] : ref) {
    if (!got.count(name)) {
      ADD_FAILURE() << name << " missing";
      continue;
    }
    const auto& g = got.at(name);
    EXPECT_EQ(g.sizes(), r.sizes()) << name;
    if (g.sizes() != r.sizes()) continue;
    double err = rel_rms_error(g, r);
    EXPECT_TRUE(all_finite(g)) << name << " has NaN/inf";
    EXPECT_LT(err, tol) << name;
    summary += fmt::format(" {} {:.1e}", name, err);
  }
  return summary;
}

// ---- chunk vs naive, float32, on awkward shapes and gate strengths.

struct Case {
  std::string op;
  std::vector<int64_t> dims;  // B, T, H, K, V
  int64_t chunk;
  std::string gate;
  bool h0;
};

std::string case_name(const Case& c) {
  return fmt::format("{}_B{}_T{}_H{}_K{}_V{}_chunk{}_gate_{}{}", c.op, c.dims[0], c.dims[1], c.dims[2],
                     c.dims[3], c.dims[4], c.chunk, c.gate, c.h0 ? "_h0" : "");
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << case_name(c);
}

std::vector<Case> sweep() {
  // T = 63 against chunks of 16 (a partial last chunk) and 64 (one chunk, sub-chunks of 9 for GLA);
  // K = 60, V = 40 (not powers of two); T = 1; T = 37 with chunk 5 (many chunks, odd sizes).
  std::vector<std::pair<std::vector<int64_t>, int64_t>> shapes = {
      {{2, 63, 3, 60, 40}, 16}, {{2, 63, 3, 60, 40}, 64}, {{1, 1, 2, 8, 4}, 16}, {{2, 37, 3, 16, 20}, 5}};
  std::vector<Case> cases;
  for (const auto& op : kOps) {
    bool gated = scalar_gate(op) || channel_gate(op);
    for (const auto& [dims, chunk] : shapes) {
      std::vector<std::string> gates =
          gated ? std::vector<std::string>{"weak", "medium", "strong"} : std::vector<std::string>{"none"};
      for (const auto& gate : gates) cases.push_back({op, dims, chunk, gate, has_state(op)});
    }
    if (has_state(op)) cases.push_back({op, {2, 37, 3, 16, 20}, 16, gated ? "medium" : "none", false});
  }
  return cases;
}

class ChunkVsNaive : public ::testing::TestWithParam<Case> {};

TEST_P(ChunkVsNaive, OutputStateAndEveryGradient) {
  const Case& c = GetParam();
  auto in = make_inputs(c.op, c.dims, c.gate, c.h0, torch::kFloat, 1234);
  auto o = torch::randn({c.dims[0], c.dims[1], c.dims[2], c.dims[4]});
  torch::Tensor dht;
  int64_t Vs = c.op == "linear_attention_normalized" ? c.dims[4] + 1 : c.dims[4];
  if (has_state(c.op)) dht = torch::randn({c.dims[0], c.dims[2], c.dims[3], Vs});
  auto ref = run(c.op, in, Impl::naive, c.chunk, -1, o, dht);
  auto got = run(c.op, in, Impl::chunk, c.chunk, -1, o, dht);
  // float32 against float32 lands at 1e-7..5e-7 here; the worst, dg under strong gates, is ~1.2e-6 (the
  // float32 rounding of in-chunk cumulative gates). 1e-5 leaves ~10x room, while a wrong decay, mask or
  // chunk boundary gives 1e-2 and more. (Before empty decay spans became constants, dg reached 1.5e-5 here:
  // the sweep is tight enough to see that.)
  std::cout << "[ errors   ] " << case_name(c) << ":" << expect_close(got, ref, 1e-5) << "\n";
}

INSTANTIATE_TEST_SUITE_P(Ops, ChunkVsNaive, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) { return case_name(info.param); });

// ---- float64: finite differences against autograd (naive), and chunk against naive to 1e-10.

class Float64 : public ::testing::TestWithParam<std::string> {};

TEST_P(Float64, NaiveGradientsMatchFiniteDifferences) {
  const std::string op = GetParam();
  auto in = make_inputs(op, {1, 5, 2, 3, 2}, "medium", true, torch::kDouble, 7);
  auto dout = torch::randn({1, 5, 2, 2}, torch::kDouble);
  torch::Tensor dht;
  if (has_state(op))
    dht = torch::randn({1, 2, 3, op == "linear_attention_normalized" ? 3 : 2}, torch::kDouble);
  auto grads = run(op, in, Impl::naive, 2, -1, dout, dht);
  auto loss = [&]() {
    torch::NoGradGuard no_grad;
    auto out = op_fn(op)(args_of(in, 2, -1, dht.defined()), Impl::naive);
    auto l = (out.o * dout).sum();
    if (dht.defined()) l = l + (out.ht * dht).sum();
    return l.item<double>();
  };
  // Central differences with eps 1e-6: truncation ~eps^2 = 1e-12, rounding ~1e-16 / eps = 1e-10; the bound
  // is 100x above both and 1e3x below what a wrong gradient term gives.
  const double eps = 1e-6;
  for (auto& [name, leaf] : in) {
    auto flat = leaf.detach().view({-1});
    auto ad = grads.at("d" + name).reshape({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      double x0 = flat[i].item<double>();
      flat[i] = x0 + eps;
      double lp = loss();
      flat[i] = x0 - eps;
      double lm = loss();
      flat[i] = x0;
      double fd = (lp - lm) / (2 * eps), a = ad[i].item<double>();
      EXPECT_NEAR(fd, a, 1e-7 + 1e-6 * std::abs(a)) << op << " d" << name << "[" << i << "]";
    }
  }
}

TEST_P(Float64, ChunkMatchesNaiveTo1e10) {
  const std::string op = GetParam();
  for (const std::string gate : {"weak", "medium", "strong"}) {
    auto in = make_inputs(op, {2, 23, 2, 5, 3}, gate, true, torch::kDouble, 11);
    auto dout = torch::randn({2, 23, 2, 3}, torch::kDouble);
    torch::Tensor dht;
    if (has_state(op))
      dht = torch::randn({2, 2, 5, op == "linear_attention_normalized" ? 4 : 3}, torch::kDouble);
    auto ref = run(op, in, Impl::naive, 4, -1, dout, dht);
    auto got = run(op, in, Impl::chunk, 4, -1, dout, dht);
    // float64 sums in a different order agree to ~1e-15; 1e-10 catches any algebraic difference.
    std::cout << "[ errors   ] " << op << " float64 gate " << gate << ":" << expect_close(got, ref, 1e-10)
              << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, Float64, ::testing::ValuesIn(kOps));

// ---- streaming: a sequence cut in two gives the same output and final state as in one piece.

TEST(LinearOps, StateCarriesAcrossPieces) {
  for (const auto& op : kOps) {
    if (!has_state(op)) continue;
    auto in = make_inputs(op, {2, 37, 3, 16, 20}, "medium", true, torch::kFloat, 5);
    torch::NoGradGuard no_grad;
    auto whole = op_fn(op)(args_of(in, 8, -1, true), Impl::automatic);
    Tensors first, second;
    for (const auto& [name, t] : in) {
      bool per_step = name == "q" || name == "k" || name == "v" || name == "g";
      first[name] = per_step ? t.narrow(1, 0, 20) : t;
      second[name] = per_step ? t.narrow(1, 20, 17) : t;
    }
    auto a = op_fn(op)(args_of(first, 8, -1, true), Impl::chunk);
    second["h0"] = a.ht;
    auto b = op_fn(op)(args_of(second, 8, -1, true), Impl::naive);
    EXPECT_LT(rel_rms_error(torch::cat({a.o, b.o}, 1), whole.o), 1e-5) << op;
    EXPECT_LT(rel_rms_error(b.ht, whole.ht), 1e-5) << op;
  }
}

TEST(LinearOps, EmptySequenceKeepsTheState) {
  for (const auto& op : kOps) {
    auto in = make_inputs(op, {2, 0, 3, 16, 20}, "medium", true, torch::kFloat, 5);
    for (Impl impl : {Impl::naive, Impl::chunk}) {
      auto out = op_fn(op)(args_of(in, 16, -1, has_state(op)), impl);
      EXPECT_EQ(out.o.sizes(), torch::IntArrayRef({2, 0, 3, 20})) << op;
      if (has_state(op)) {
        EXPECT_TRUE(out.ht.equal(in.at("h0"))) << op;
      }
    }
  }
}

// ---- the ops as special cases of each other, and gates far stronger than the sweep's.

TEST(LinearOps, SpecialCasesAgree) {
  auto in = make_inputs("gla", {2, 37, 3, 16, 20}, "medium", true, torch::kFloat, 9);
  torch::NoGradGuard no_grad;
  auto a = args_of(in, 16, -1, true);
  auto g = a.g;
  a.g = torch::Tensor();
  auto lin = linear_attention(a);
  a.g = torch::zeros_like(g);  // no decay
  auto gla_no_decay = gla(a);
  EXPECT_LT(rel_rms_error(gla_no_decay.o, lin.o), 1e-6);
  EXPECT_LT(rel_rms_error(gla_no_decay.ht, lin.ht), 1e-6);
  a.g = retention_log_decay(3, a.q.options()).expand({2, 37, 3});  // [B, T, H]
  auto as_simple = simple_gla(a);
  a.g = a.g.unsqueeze(-1).expand({2, 37, 3, 16});  // the same decay on every key channel
  auto as_gla = gla(a);
  a.g = torch::Tensor();
  auto ret = retention(a);
  EXPECT_LT(rel_rms_error(as_simple.o, ret.o), 1e-6);
  EXPECT_LT(rel_rms_error(as_gla.o, ret.o), 1e-6);
  EXPECT_LT(rel_rms_error(as_gla.ht, ret.ht), 1e-6);
}

TEST(LinearOps, ExtremeGatesStayFinite) {
  // g = -50 per step: a 64-step chunk spans e^-3200; exp(-cumsum) would be inf, and inf * 0 NaN.
  for (const std::string op : {"simple_gla", "gla", "rwkv6"}) {
    auto in = make_inputs(op, {1, 63, 2, 8, 4}, "strong", true, torch::kFloat, 13);
    in["g"] = (in["g"].detach() * 10).requires_grad_(true);
    auto dout = torch::randn({1, 63, 2, 4}), dht = torch::randn({1, 2, 8, 4});
    auto ref = run(op, in, Impl::naive, 64, -1, dout, dht);
    auto got = run(op, in, Impl::chunk, 64, -1, dout, dht);
    // dg gets 1e-4: in-sub-chunk cumulative gates reach |L| ~ 700 here, and their float32 rounding (~4e-5
    // absolute) shows in dg, measured up to ~8e-6 (gla); everything else keeps the sweep's 1e-5.
    double dg_err = rel_rms_error(got["dg"], ref["dg"]);
    EXPECT_LT(dg_err, 1e-4) << op;
    EXPECT_TRUE(all_finite(got["dg"])) << op;
    ref.erase("dg");
    std::cout << "[ errors   ] " << op << " g=-50: dg " << fmt::format("{:.1e}", dg_err)
              << expect_close(got, ref, 1e-5) << "\n";
  }
}

// ---- FLA's fixtures (tests/data/<op>.safetensors): output and every stored gradient.

struct FixtureCase {
  std::string op;
  Impl impl;
  int64_t chunk;
};

void PrintTo(const FixtureCase& c, std::ostream* os) {
  *os << c.op << " " << impl_name(c.impl) << c.chunk;
}

class Fixture : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(Fixture, MatchesFLA) {
  const auto& c = GetParam();
  auto file =
      attnlab::SafetensorFile::load(std::string(ATTNLAB_SOURCE_DIR) + "/tests/data/" + c.op + ".safetensors");
  Tensors in, ref;
  for (const char* n : {"q", "k", "v", "g", "h0"})
    if (file.has(n)) in[n] = file.tensor(n).requires_grad_(true);
  for (const auto& n : file.names())
    if (n == "o" || n == "ht" || (n.size() > 1 && n[0] == 'd' && in.count(n.substr(1))))
      ref[n] = file.tensor(n);
  double scale = std::stod(file.metadata().at("scale"));
  auto dht = file.has("dht") ? file.tensor("dht") : torch::Tensor();
  auto got = run(c.op, in, c.impl, c.chunk, scale, file.tensor("do"), dht);
  // FLA's float32 references against ours: near 1e-6 (fixtures/README.md); 1e-4 as `ops verify` uses.
  std::cout << "[ errors   ] " << c.op << " " << impl_name(c.impl) << c.chunk << ":"
            << expect_close(got, ref, 1e-4) << "\n";
  EXPECT_GE(ref.size(), 4u) << "expected o and the gradients of q, k, v at least";
}

std::vector<FixtureCase> fixture_cases() {
  std::vector<FixtureCase> cases;
  for (const std::string op : {"linear_attention", "simple_gla", "retention", "gla", "based"})
    for (auto [impl, chunk] :
         std::vector<std::pair<Impl, int64_t>>{{Impl::naive, 16}, {Impl::chunk, 16}, {Impl::chunk, 64}})
      cases.push_back({op, impl, chunk});  // T = 37: chunk 16 leaves a partial third chunk, 64 covers all
  return cases;
}

INSTANTIATE_TEST_SUITE_P(FLA, Fixture, ::testing::ValuesIn(fixture_cases()),
                         [](const ::testing::TestParamInfo<FixtureCase>& info) {
                           return info.param.op + "_" + impl_name(info.param.impl) +
                                  std::to_string(info.param.chunk);
                         });

// ---- feature maps.

TEST(LinearOps, TaylorFeatureMapGivesTheSecondOrderKernel) {
  auto q = torch::randn({5, 16}, torch::kDouble), k = torch::randn({5, 16}, torch::kDouble);
  auto pq = feature_map(q, "taylor"), pk = feature_map(k, "taylor");
  EXPECT_EQ(pq.size(-1), feature_dim(16, "taylor"));
  EXPECT_EQ(pq.size(-1), 1 + 16 + 136);
  auto x = (q * k).sum(-1);
  auto want = 1 + x / 4.0 + x * x / 32.0;  // 1 + q.k / sqrt(d) + (q.k)^2 / (2d), d = 16
  EXPECT_LT(rel_rms_error((pq * pk).sum(-1), want), 1e-12);
  EXPECT_GT(feature_map(torch::randn({100}), "elu1").min().item<float>(), 0.0f);
  EXPECT_TRUE(feature_map(-torch::ones({3}), "relu").eq(0).all().item<bool>());
  EXPECT_TRUE(feature_map(q, "identity").equal(q));
}

// ---- bad input.

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const attnlab::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected attnlab::Error";
  return "";
}

#define EXPECT_HAS(msg, needle) EXPECT_NE((msg).find(needle), std::string::npos) << "message: " << (msg)

TEST(LinearOps, BadInputIsAClearError) {
  auto base = make_inputs("rwkv6", {2, 37, 3, 16, 20}, "medium", true, torch::kFloat, 3);
  auto with = [&](const std::string& name, const torch::Tensor& t) {
    auto in = base;
    in[name] = t;
    return args_of(in, 16, -1, true);
  };
  auto m = error_of([&] { linear_attention(with("k", torch::randn({2, 37, 3, 15}))); });
  EXPECT_HAS(m, "linear_attention: k must be [B,T,H,K]=[2,37,3,16], got [2, 37, 3, 15]");
  m = error_of([&] { gla(with("g", torch::randn({2, 37, 3}))); });
  EXPECT_HAS(m, "gla: g must be [B,T,H,K]=[2,37,3,16], got [2, 37, 3]");
  m = error_of([&] { simple_gla(with("g", torch::randn({2, 37, 3, 16}))); });
  EXPECT_HAS(m, "simple_gla: g must be [B,T,H]=[2,37,3], got [2, 37, 3, 16]");
  m = error_of([&] { simple_gla(with("g", torch::Tensor())); });
  EXPECT_HAS(m, "simple_gla: g must be [B,T,H]=[2,37,3], got no tensor");
  m = error_of([&] { rwkv6(with("u", torch::randn({3, 15}))); });
  EXPECT_HAS(m, "rwkv6: u must be [H,K]=[3,16], got [3, 15]");
  m = error_of([&] { gla(with("h0", torch::randn({2, 3, 20, 16}))); });
  EXPECT_HAS(m, "gla: h0 must be [B,H,K,V]=[2,3,16,20], got [2, 3, 20, 16]");
  m = error_of([&] { linear_attention_normalized(with("h0", torch::randn({2, 3, 16, 20}))); });
  EXPECT_HAS(m, "h0 must be [B,H,K,V+1]=[2,3,16,21]");
  m = error_of([&] { retention(with("g", torch::randn({2, 37, 3}))); });
  EXPECT_HAS(m, "retention: the decay comes from the head index");
  m = error_of([&] { based(with("g", torch::Tensor())); });
  EXPECT_HAS(m, "based: has no state");
  m = error_of([&] { feature_map(torch::randn({3}), "softplus"); });
  EXPECT_HAS(m, "valid: elu1, relu, identity, taylor");
  for (const auto& op : kOps) {
    auto in = make_inputs(op, {2, 37, 3, 16, 20}, "medium", false, torch::kFloat, 3);
    m = error_of([&] { op_fn(op)(args_of(in, 0, -1, false), Impl::chunk); });
    EXPECT_HAS(m, "chunk_size must be >= 1, got 0");
    // CPU tensors: the kernel path says it cannot run them (or that the op has none), naming the op.
    m = error_of([&] { op_fn(op)(args_of(in, 16, -1, false), Impl::kernel); });
    EXPECT_HAS(m, op + ": ");
    EXPECT_HAS(m, "kernel");
  }
}

}  // namespace
