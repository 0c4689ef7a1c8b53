// Softmax attention against PyTorch's SDPA fixture (output and gradients), the mask semantics against a
// loop, and the safetensors reader that the fixtures need.
#include <gtest/gtest.h>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/core/safetensors.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/softmax_attention.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::repo_path;

namespace {
// Tolerance: float32 against float32 (the fixture came from SDPA's math path) lands near 1e-7; 1e-5 leaves
// room for a different summation order without hiding a real error (a wrong mask gives > 1e-2).
constexpr double kTol = 1e-5;

void check_fixture(ops::Impl impl) {
  auto f = SafetensorFile::load(repo_path("tests/data/softmax_attention.safetensors"));
  EXPECT_EQ(f.metadata().at("scale"), "0.25");
  ops::SoftmaxArgs a;
  a.q = f.tensor("q").requires_grad_(true);
  a.k = f.tensor("k").requires_grad_(true);
  a.v = f.tensor("v").requires_grad_(true);
  a.scale = 0.25;
  auto o = ops::softmax_attention(a, impl);
  EXPECT_TRUE(ops::all_finite(o));
  EXPECT_LT(ops::rel_rms_error(o, f.tensor("o")), kTol);
  (o * f.tensor("do")).sum().backward();
  EXPECT_LT(ops::rel_rms_error(a.q.grad(), f.tensor("dq")), kTol);
  EXPECT_LT(ops::rel_rms_error(a.k.grad(), f.tensor("dk")), kTol);
  EXPECT_LT(ops::rel_rms_error(a.v.grad(), f.tensor("dv")), kTol);
}

// The definition, one query at a time, for the mask semantics.
torch::Tensor loop_reference(const ops::SoftmaxArgs& a) {
  int64_t B = a.q.size(0), Tq = a.q.size(1), H = a.q.size(2), Tk = a.k.size(1), G = H / a.k.size(2);
  double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(a.q.size(3)));
  int64_t off = a.q_offset >= 0 ? a.q_offset : Tk - Tq;
  auto o = torch::zeros({B, Tq, H, a.v.size(3)});
  for (int64_t t = 0; t < Tq; ++t) {
    int64_t pos = off + t;
    std::vector<int64_t> keys;
    for (int64_t s = 0; s < Tk; ++s) {
      bool vis = !a.causal || s <= pos;
      if (a.window > 0) vis = vis && ((s > pos - a.window && s <= pos) || s < a.n_sink);
      if (vis) keys.push_back(s);
    }
    auto idx = torch::tensor(keys, torch::kLong);
    for (int64_t h = 0; h < H; ++h) {
      auto q = a.q.select(1, t).select(1, h);                                         // [B, K]
      auto k = a.k.index_select(1, idx).select(2, h / G);                             // [B, n, K]
      auto v = a.v.index_select(1, idx).select(2, h / G);                             // [B, n, V]
      auto p = torch::softmax(torch::bmm(k, q.unsqueeze(2)).squeeze(2) * scale, -1);  // [B, n]
      o.select(1, t).select(1, h).copy_(torch::bmm(p.unsqueeze(1), v).squeeze(1));
    }
  }
  return o;
}
}  // namespace

TEST(SoftmaxOp, NaiveMatchesSdpaFixture) {
  check_fixture(ops::Impl::naive);
}

TEST(SoftmaxOp, AutomaticMatchesSdpaFixture) {
  check_fixture(ops::Impl::automatic);
}

struct MaskCase {
  int64_t Tq, Tk, H, Hkv, window, sinks;
  bool causal;
};
class SoftmaxMask : public ::testing::TestWithParam<MaskCase> {};

TEST_P(SoftmaxMask, MatchesTheLoop) {
  auto c = GetParam();
  torch::manual_seed(3);
  ops::SoftmaxArgs a;
  a.q = torch::randn({2, c.Tq, c.H, 8});
  a.k = torch::randn({2, c.Tk, c.Hkv, 8});
  a.v = torch::randn({2, c.Tk, c.Hkv, 6});
  a.causal = c.causal;
  a.window = c.window;
  a.n_sink = c.sinks;
  auto ref = loop_reference(a);
  EXPECT_LT(ops::rel_rms_error(ops::softmax_attention(a, ops::Impl::naive), ref), 1e-5);
  EXPECT_LT(ops::rel_rms_error(ops::softmax_attention(a, ops::Impl::automatic), ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SoftmaxMask,
    ::testing::Values(MaskCase{13, 13, 4, 4, 0, 0, true}, MaskCase{13, 13, 4, 2, 0, 0, true},
                      MaskCase{13, 13, 4, 1, 0, 0, false}, MaskCase{13, 13, 2, 2, 5, 0, true},
                      MaskCase{13, 13, 2, 2, 5, 2, true}, MaskCase{1, 20, 4, 2, 0, 0, true},
                      MaskCase{3, 20, 2, 1, 6, 1, true}),
    [](const auto& info) {
      const auto& p = info.param;
      return "Tq" + std::to_string(p.Tq) + "_Tk" + std::to_string(p.Tk) + "_H" + std::to_string(p.H) +
             "_Hkv" + std::to_string(p.Hkv) + "_w" + std::to_string(p.window) + "_sink" +
             std::to_string(p.sinks) + (p.causal ? "_causal" : "_full");
    });

TEST(SoftmaxOp, BadShapesNameTheTensor) {
  ops::SoftmaxArgs a;
  a.q = torch::randn({2, 5, 4, 8});
  a.k = torch::randn({2, 5, 4, 7});
  a.v = torch::randn({2, 5, 4, 8});
  EXPECT_ERROR_WITH(ops::softmax_attention(a), "softmax_attention: k must be [B,T,Hkv,K]=[2,*,*,8]",
                    "[2, 5, 4, 7]");
  a.k = torch::randn({2, 5, 3, 8});
  a.v = torch::randn({2, 5, 3, 8});
  EXPECT_ERROR_WITH(ops::softmax_attention(a), "3 kv heads must divide the 4 query heads");
}

TEST(Safetensors, RoundTripAndTruncation) {
  attnlab::testing::TempDir dir;
  auto a = torch::randn({3, 4});
  auto b = torch::arange(5, torch::kLong);
  save_safetensors(dir / "x.safetensors", {{"a", a}, {"b", b}}, {{"note", "hi"}});
  auto f = SafetensorFile::load(dir / "x.safetensors");
  EXPECT_TRUE(torch::equal(f.tensor("a"), a));
  EXPECT_TRUE(torch::equal(f.tensor("b"), b));
  EXPECT_EQ(f.metadata().at("note"), "hi");
  EXPECT_ERROR_WITH(f.tensor("c"), "no tensor named 'c'", "a, b");
  std::ifstream in(dir / "x.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  attnlab::testing::write_text(dir / "cut.safetensors", bytes.substr(0, bytes.size() - 10));
  EXPECT_ERROR_WITH(SafetensorFile::load(dir / "cut.safetensors"), "cut.safetensors", "truncated");
  attnlab::testing::write_text(dir / "tiny.safetensors", "abc");
  EXPECT_ERROR_WITH(SafetensorFile::load(dir / "tiny.safetensors"), "truncated", "8 bytes");
  EXPECT_ERROR_WITH(SafetensorFile::load(dir.path().string()), "is a directory");
}

// Child et al. 2019's patterns, checked position by position against their definitions.
TEST(SoftmaxOp, SparsePatternsMatchTheirDefinition) {
  torch::manual_seed(4);
  const int64_t T = 23, stride = 4, c = 2;
  for (auto pattern : {ops::SparsePattern::strided, ops::SparsePattern::fixed}) {
    ops::SoftmaxArgs a;
    a.q = torch::randn({1, T, 2, 8});
    a.k = torch::randn({1, T, 2, 8});
    a.v = torch::randn({1, T, 2, 8});
    a.pattern = pattern;
    a.stride = stride;
    a.pattern_c = c;
    auto mask = ops::softmax_visibility(a, torch::kCPU);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < T; ++s) {
        bool want = s <= t && (pattern == ops::SparsePattern::strided
                                   ? (t - s < stride || (t - s) % stride == 0)
                                   : (s / stride == t / stride || s % stride >= stride - c));
        ASSERT_EQ(mask[t][s].item<bool>(), want) << "t " << t << " s " << s;
      }
    // The masked softmax equals a softmax over the visible keys only.
    auto o = ops::softmax_attention(a, ops::Impl::naive);
    auto scores = torch::matmul(a.q.transpose(1, 2), a.k.transpose(1, 2).transpose(-1, -2)) / std::sqrt(8.0);
    auto p = torch::softmax(scores.masked_fill(mask.logical_not(), -1e30), -1);
    auto ref = torch::matmul(p, a.v.transpose(1, 2)).transpose(1, 2);
    EXPECT_LT(ops::rel_rms_error(o, ref), 1e-6);
  }
  EXPECT_ERROR_WITH(ops::parse_sparse_pattern("bigbird"), "dense, strided, fixed", "bigbird");
}
