// labels: cpu
// The profile stage's libtorch side: compat's op profiler (events here; its own trace only where libtorch
// has Kineto, else a note that says so), attnlab's top-ops table of its events, the tracer's merge of a
// libtorch trace, per-layer backward spans, and the stage's files (our trace, folded stacks, libtorch's
// trace, the merged trace, libtorch's top ops).
#include <gtest/gtest.h>

#include <unistd.h>
#include <map>

#include <nlohmann/json.hpp>

#include <set>

#include "attnlab/bench/torch_profile.h"
#include "attnlab/bench/tracer.h"
#include "attnlab/core/compat.h"
#include "attnlab/model/lm.h"
#include "attnlab/report/csv.h"
#include "attnlab/study/measure.h"
#include "attnlab/study/study.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::TempDir;
using nlohmann::json;

namespace {

bool has_name_prefix(const json& events, const std::string& prefix) {
  for (const auto& e : events)
    if (e.value("ph", "") == "X" && e.value("name", "").rfind(prefix, 0) == 0) return true;
  return false;
}

}  // namespace

TEST(OpProfiler, CollectsOpsAndWritesATraceOrSaysWhyNot) {
  TempDir tmp;
  ASSERT_EQ(compat::start_op_profiler(false), "");
  EXPECT_NE(compat::start_op_profiler(false), "");  // no second session
  auto a = torch::randn({32, 32}, torch::requires_grad());
  torch::mm(a, a).sum().backward();
  const std::string path = tmp / "t.json";
  auto p = compat::stop_op_profiler(path);
  ASSERT_TRUE(p.collected) << p.note;
  bool mm = false;
  for (const auto& e : p.events) {
    if (e.name == "aten::mm") mm = true;
    EXPECT_GE(e.dur_ns, 0);
  }
  EXPECT_TRUE(mm);
  // Timestamps on the Unix-epoch clock of our tracer (within a minute of now).
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  EXPECT_LT(std::llabs(p.events.front().start_ns - now_ns), int64_t(60) * 1000000000);
  if (p.trace_written) {
    auto j = json::parse(read_file(path));
    EXPECT_TRUE(j.contains("traceEvents"));
  } else {
    std::cout << "[ note ] libtorch wrote no trace here: " << p.note << "\n";
    EXPECT_NE(p.note.find("Kineto"), std::string::npos) << p.note;
  }
  EXPECT_FALSE(compat::stop_op_profiler("").collected);  // not running any more
}

TEST(OpProfiler, CannotNestWithTheMemoryMeter) {
  {
    study::MemoryMeter meter;
    EXPECT_NE(compat::start_op_profiler(false).find("MemoryMeter"), std::string::npos);
  }
  ASSERT_EQ(compat::start_op_profiler(false), "");
  EXPECT_ERROR_WITH(study::MemoryMeter(), "cannot nest");
  compat::stop_op_profiler("");
}

TEST(TorchTopOps, NestsByIntervalsAndLinksDeviceTime) {
  auto ev = [](std::string name, int64_t start_us, int64_t dur_us, uint64_t tid, uint64_t corr = 0) {
    compat::OpEvent e;
    e.name = std::move(name);
    e.start_ns = start_us * 1000;
    e.dur_ns = dur_us * 1000;
    e.tid = tid;
    e.correlation = corr;
    return e;
  };
  std::vector<compat::OpEvent> events = {ev("aten::linear", 0, 100, 1, 1), ev("aten::mm", 10, 60, 1, 2),
                                         ev("aten::mm", 200, 40, 1, 3), ev("aten::add", 0, 30, 2, 4)};
  compat::OpEvent k = ev("gemm_kernel", 20, 50, 7);
  k.on_device = true;
  k.linked_correlation = 2;
  events.push_back(k);
  auto t = bench::torch_top_ops(events);
  std::map<std::string, size_t> row;
  for (size_t i = 0; i < t.rows.size(); ++i) row[t.text(i, "name") + "/" + t.text(i, "device")] = i;
  ASSERT_EQ(row.size(), 4u);
  EXPECT_EQ(t.rows.size(), 4u);
  const size_t mm = row.at("aten::mm/cpu"), lin = row.at("aten::linear/cpu"), add = row.at("aten::add/cpu"),
               ker = row.at("gemm_kernel/cuda");
  EXPECT_EQ(*t.number(mm, "calls"), 2);
  EXPECT_DOUBLE_EQ(*t.number(mm, "cpu_self_ms"), 0.1);
  EXPECT_DOUBLE_EQ(*t.number(lin, "cpu_total_ms"), 0.1);
  EXPECT_DOUBLE_EQ(*t.number(lin, "cpu_self_ms"), 0.04);
  EXPECT_DOUBLE_EQ(*t.number(add, "cpu_self_ms"), 0.03);  // another thread: not nested in linear
  EXPECT_DOUBLE_EQ(*t.number(mm, "cuda_self_ms"), 0.05);
  EXPECT_DOUBLE_EQ(*t.number(lin, "cuda_total_ms"), 0.05);
  EXPECT_DOUBLE_EQ(*t.number(lin, "cuda_self_ms"), 0.0);
  EXPECT_DOUBLE_EQ(*t.number(ker, "cuda_total_ms"), 0.05);
  EXPECT_EQ(t.text(0, "name"), "aten::mm");  // the most CPU self time first
}

TEST(Tracer, MergeShiftsKinetoBaseTimeAndMovesLibtorchToItsOwnProcess) {
  TempDir tmp;
  const int pid = static_cast<int>(::getpid());
  const int64_t base_ns = int64_t(1700000000) * 1000000000;
  json kineto = {{"baseTimeNanoseconds", base_ns},
                 {"traceEvents",
                  {{{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", "x"}}}},
                   {{"name", "aten::mm"}, {"ph", "X"}, {"ts", 5.0}, {"dur", 2.0}, {"pid", pid}, {"tid", 1}},
                   {{"name", "kernel"}, {"ph", "X"}, {"ts", 6.0}, {"dur", 1.0}, {"pid", 0}, {"tid", 7}}}}};
  const std::string path = tmp / "kineto.json";
  write_file_atomic(path, kineto.dump());
  bench::Tracer tracer;
  tracer.enable();
  { bench::Span s(tracer, "ours"); }
  auto j = json::parse(tracer.chrome_trace({path}));
  std::set<int64_t> pids;
  bool found_mm = false;
  for (const auto& e : j["traceEvents"]) {
    if (e.value("name", "") == "aten::mm") {
      found_mm = true;
      EXPECT_EQ(e["pid"].get<int64_t>(), pid + 1);
      EXPECT_DOUBLE_EQ(e["ts"].get<double>(), base_ns / 1e3 + 5.0);
    }
    if (e.value("name", "") == "kernel") {
      EXPECT_EQ(e["pid"].get<int64_t>(), 0);
    }
    if (e.value("name", "") == "ours") {
      EXPECT_EQ(e["pid"].get<int64_t>(), pid);
    }
    if (e.value("name", "") == "process_name") pids.insert(e["pid"].get<int64_t>());
  }
  EXPECT_TRUE(found_mm);
  EXPECT_EQ(pids, (std::set<int64_t>{pid, pid + 1}));  // libtorch's own name for our pid is dropped
}

TEST(BackwardSpans, OnePerBlockNestedInTheBackwardInReverseOrder) {
  torch::manual_seed(0);
  ModelOptions mo;
  mo.vocab_size = 50;
  mo.d_model = 32;
  mo.n_layers = 2;
  mo.n_heads = 2;
  mo.mixer = "softmax";
  LanguageModel model(mo, std::map<std::string, std::shared_ptr<AnyOptions>>{});
  auto x = torch::randint(50, {1, 8}, torch::kLong);
  auto& tracer = bench::Tracer::global();
  tracer.clear();
  tracer.enable();
  {
    bench::Span bwd("backward");
    auto loss = model->forward(x).sum();
    loss.backward();
  }
  tracer.disable();
  auto ev = tracer.events();
  tracer.clear();
  std::vector<std::string> names;
  for (const auto& e : ev)
    if (e.cat == "backward") {
      names.push_back(e.name);
      EXPECT_GE(e.dur_ns, 0) << e.name;
      ASSERT_GE(e.parent, 0) << e.name;
      EXPECT_EQ(ev[size_t(e.parent)].name, "backward");
    }
  EXPECT_EQ(names, (std::vector<std::string>{"layer1.mlp.backward", "layer1.softmax.backward",
                                             "layer0.mlp.backward", "layer0.softmax.backward"}));
  // No hooks (and no spans) when the tracer is off.
  auto loss = model->forward(x).sum();
  loss.backward();
  EXPECT_TRUE(tracer.events().empty());
}

// study.bench_vocab sets the vocabulary of the benchmark stages' models (random tokens): with an untied head,
// the parameter count grows by 2 * d_model per token of vocabulary (embedding row + head row).
TEST(EfficiencyStage, BenchVocabSetsTheModelsVocabulary) {
  std::map<int64_t, int64_t> params;
  for (int64_t vocab : {64, 4096}) {
    TempDir tmp;
    study::StudyConfig cfg;
    for (const std::string& s :
         {std::string("study.mixers=[tiny]"), std::string("study.efficiency_seq_lens=[16]"),
          std::string("study.efficiency_tokens=32"), std::string("study.warmup=1"),
          std::string("study.repeat=1"), std::string("train.threads=1"),
          std::string("model.tie_embeddings=false"), "study.bench_vocab=" + std::to_string(vocab)})
      cfg.set(s);
    cfg.study.variants["tiny"] = {"softmax", {"model.d_model=32", "model.n_layers=1", "model.n_heads=2"}};
    cfg.run.data.path = tmp / "no-corpus";
    const std::string dir = tmp / "out";
    ASSERT_TRUE(study::run_stage("efficiency", cfg, dir));
    auto t = report::read_csv(fs::path(dir) / "results" / "efficiency.csv");
    ASSERT_EQ(t.rows.size(), 1u);
    EXPECT_EQ(t.text(0, "status"), "ok");
    params[vocab] = std::stoll(t.text(0, "parameters"));
  }
  EXPECT_EQ(params[4096] - params[64], (4096 - 64) * 32 * 2);
}

TEST(ProfileStage, WritesOurTraceLibtorchsTraceTheMergedTraceAndTopOps) {
  TempDir tmp;
  study::StudyConfig cfg;
  for (const char* s : {"study.mixers=[softmax]", "study.parameters=300000", "study.profile_seq_lens=[32]",
                        "study.efficiency_tokens=64", "study.warmup=1", "study.repeat=1", "train.threads=1"})
    cfg.set(s);
  cfg.run.data.path = tmp / "no-corpus";  // seed 000's vocabulary, no corpus to load
  const std::string dir = tmp / "out";
  ASSERT_TRUE(study::run_stage("profile", cfg, dir));
  const fs::path p = fs::path(dir) / "profiler";
  for (const char* f : {"softmax_T32_trace.json", "softmax_T32_stacks.txt", "softmax_T32_torch_trace.json",
                        "softmax_T32_merged_trace.json", "softmax_T32_torch_top_ops.csv"})
    EXPECT_TRUE(fs::exists(p / f)) << f;
  const std::string stacks = read_file(p / "softmax_T32_stacks.txt");
  EXPECT_NE(stacks.find("train_step;backward;layer0.softmax.backward "), std::string::npos) << stacks;

  auto runs = report::read_csv(fs::path(dir) / "results" / "profile_torch.csv");
  ASSERT_EQ(runs.rows.size(), 1u);
  EXPECT_EQ(runs.text(0, "status"), "ok") << runs.text(0, "note");
  if (runs.text(0, "trace_source") != "libtorch") {
    EXPECT_EQ(runs.text(0, "trace_source"), "attnlab");
    EXPECT_NE(runs.text(0, "note").find("Kineto"), std::string::npos) << runs.text(0, "note");
  }

  // The merged trace: our spans and libtorch's ops, on two processes.
  auto merged = json::parse(read_file(p / "softmax_T32_merged_trace.json"));
  const json& events = merged.at("traceEvents");
  std::set<int64_t> ours, theirs;
  for (const auto& e : events) {
    if (e.value("ph", "") != "X") continue;
    const std::string n = e.value("name", "");
    if (n == "train_step" || n.find(".backward") != std::string::npos) ours.insert(e["pid"].get<int64_t>());
    if (n.rfind("aten::", 0) == 0) theirs.insert(e["pid"].get<int64_t>());
  }
  EXPECT_TRUE(has_name_prefix(events, "layer0.softmax.backward"));
  EXPECT_TRUE(has_name_prefix(events, "aten::"));
  ASSERT_EQ(ours.size(), 1u);
  ASSERT_FALSE(theirs.empty());
  EXPECT_EQ(theirs.count(*ours.begin()), 0u);
  // libtorch's ops happen inside our train_step span (one clock).
  double step_ts = 0, step_end = 0;
  for (const auto& e : events)
    if (e.value("name", "") == "train_step") {
      step_ts = e["ts"].get<double>();
      step_end = step_ts + e["dur"].get<double>();
    }
  int inside = 0, ops = 0;
  for (const auto& e : events)
    if (e.value("ph", "") == "X" && e.value("name", "").rfind("aten::", 0) == 0) {
      ++ops;
      const double ts = e["ts"].get<double>();
      if (ts >= step_ts - 1 && ts <= step_end + 1) ++inside;
    }
  EXPECT_GT(ops, 0);
  EXPECT_GT(inside, ops * 9 / 10);

  auto top = report::read_csv(p / "softmax_T32_torch_top_ops.csv");
  report::require_columns(top, {"name", "device", "calls", "cpu_total_ms", "cpu_self_ms", "cuda_total_ms"},
                          "torch_top_ops.csv");
  ASSERT_FALSE(top.rows.empty());
  bool mm = false;
  for (size_t i = 0; i < top.rows.size(); ++i)
    if (top.text(i, "name") == "aten::mm" || top.text(i, "name") == "aten::bmm") mm = true;
  EXPECT_TRUE(mm);

  auto spans = report::read_csv(fs::path(dir) / "results" / "profile.csv");
  bool bwd = false;
  for (size_t i = 0; i < spans.rows.size(); ++i)
    if (spans.text(i, "span") == "layer0.mlp.backward") bwd = true;
  EXPECT_TRUE(bwd);
}
