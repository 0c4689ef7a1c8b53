// labels: cpu slow
// The study end to end on a tiny config: every stage's CSV with its columns, the memory fit, resume
// skipping finished stages (and --force redoing them), TensorBoard files that read back, and report.html
// showing every figure the stages produced (rendered in headless Chromium when it is installed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <regex>
#include <set>

#include "attnlab/report/csv.h"
#include "attnlab/report/figures.h"
#include "attnlab/report/tensorboard.h"
#include "attnlab/study/measure.h"
#include "attnlab/study/study.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::TempDir;

namespace {

study::StudyConfig tiny_config() {
  study::StudyConfig cfg;
  for (const char* s : {"study.mixers=[softmax,gated_deltanet]",
                        "study.parameters=300000",
                        "study.efficiency_seq_lens=[64,128]",
                        "study.efficiency_tokens=256",
                        "study.memory_seq_lens=[64,128,256]",
                        "study.scaling_parameters=[300000,600000]",
                        "study.scaling_seq_len=64",
                        "study.scaling_batch=2",
                        "study.prompt_lens=[16,32]",
                        "study.decode_contexts=[16,64]",
                        "study.profile_seq_lens=[64]",
                        "study.warmup=1",
                        "study.repeat=2",
                        "data.seq_len=64",
                        "data.batch_size=4",
                        "train.steps=4",
                        "train.eval_every=2",
                        "train.eval_batches=2",
                        "train.ckpt_every=2",
                        "train.warmup=1",
                        "train.threads=1"})
    cfg.set(s);
  cfg.study.task_sets = {"sweep.lrs=[3e-3]", "sweep.train_examples=32", "sweep.test_examples=8",
                         "sweep.epochs=1", "sweep.d_models=[32]"};
  cfg.run.data.path = attnlab::testing::repo_path("data/sotu");
  cfg.study.ood_path = attnlab::testing::repo_path("data/moby-dick");
  return cfg;
}

}  // namespace

TEST(MemoryMeter, CountsTensorsAllocatedInsideTheRegion) {
  study::MemoryMeter m;
  {
    auto t = torch::empty({1024, 1024}, torch::kFloat);  // 4 MiB
    EXPECT_GE(m.current_bytes(), 4 << 20);
  }
  EXPECT_GE(m.peak_bytes(), 4 << 20);
  EXPECT_LT(m.peak_bytes(), 5 << 20);
  EXPECT_LT(m.current_bytes(), 1 << 20);
}

TEST(Study, RunsEveryStageResumesAndReports) {
  if (!fs::exists(attnlab::testing::repo_path("data/sotu")))
    GTEST_SKIP() << "data/sotu missing: run scripts/setup.sh";
  TempDir tmp;
  const std::string dir = tmp / "study";
  auto run = study::run_study(tiny_config(), dir, false);
  EXPECT_FALSE(run.interrupted);
  EXPECT_EQ(run.ran, study::stage_names());

  const std::map<std::string, std::vector<std::string>> schemas = {
      {"pretrain.csv", {"mixer", "parameters", "val_ppl", "unigram_ppl", "base_mixer", "calibrated"}},
      {"efficiency.csv",
       {"mixer", "T", "batch", "step_ms", "tokens_per_s", "peak_bytes", "status", "memory_source",
        "base_mixer"}},
      {"memory.csv", {"mixer", "op", "T", "peak_bytes", "status", "base_mixer"}},
      {"memory_fit.csv", {"mixer", "op", "slope", "r2", "points", "base_mixer"}},
      {"tasks.csv", {"task", "mixer", "accuracy", "state_bytes", "base_mixer"}},
      {"perplexity.csv", {"mixer", "split", "ppl", "base_mixer"}},
      {"scaling.csv", {"mixer", "parameters", "tokens_per_s", "peak_bytes", "base_mixer", "calibrated"}},
      {"latency_prefill.csv", {"mixer", "prompt_len", "prefill_ms", "base_mixer"}},
      {"latency_decode.csv", {"mixer", "context", "decode_ms_per_token", "state_bytes", "base_mixer"}},
      {"profile.csv", {"mixer", "T", "span", "self_ms", "percent", "base_mixer"}}};
  for (const auto& [file, cols] : schemas) {
    SCOPED_TRACE(file);
    auto t = report::read_csv(fs::path(dir) / "results" / file);
    report::require_columns(t, cols, file);
    EXPECT_FALSE(t.rows.empty());
  }
  // Softmax's naive op materialises T x T scores (slope near 2 on the CPU); the delta rule is linear.
  auto fits = report::read_csv(fs::path(dir) / "results" / "memory_fit.csv");
  for (size_t i = 0; i < fits.rows.size(); ++i) {
    const double slope = *fits.number(i, "slope");
    // (On CUDA softmax runs a flash kernel, linear in T, so only the linear family is checked there.)
    if (fits.text(i, "mixer") != "softmax") {
      EXPECT_LT(slope, 1.4);
    } else if (!torch::cuda::is_available()) {
      EXPECT_GT(slope, 1.4);
    }
  }
  // Perplexity in and out of domain for both models.
  auto ppl = report::read_csv(fs::path(dir) / "results" / "perplexity.csv");
  EXPECT_EQ(ppl.rows.size(), 4u);
  // Decoding: the KV cache grows with the context, the recurrent state does not.
  auto dec = report::read_csv(fs::path(dir) / "results" / "latency_decode.csv");
  std::map<std::string, std::vector<double>> state;
  for (size_t i = 0; i < dec.rows.size(); ++i)
    state[dec.text(i, "mixer")].push_back(*dec.number(i, "state_bytes"));
  EXPECT_GT(state["softmax"][1], state["softmax"][0]);
  EXPECT_EQ(state["gated_deltanet"][1], state["gated_deltanet"][0]);

  // TensorBoard files read back.
  int event_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(dir) / "tb"))
    if (e.is_regular_file()) {
      auto ev = report::read_events(e.path());
      EXPECT_FALSE(ev.scalars.empty()) << e.path();
      ++event_files;
    }
  EXPECT_EQ(event_files, 3);  // two models and the benchmarks

  // report.html names every PNG the stages produced, embedded.
  const std::string html = attnlab::read_file(fs::path(dir) / "report.html");
  int pngs = 0;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "figures"))
    if (e.path().extension() == ".png") ++pngs;
  if (!report::find_executable("gnuplot").empty()) {
    EXPECT_GE(pngs, 8);
  } else {
    std::cout << "[ note ] gnuplot not installed (scripts/setup.sh installs it): no figures to check\n";
  }
  size_t imgs = 0;
  for (size_t p = html.find("<img"); p != std::string::npos; p = html.find("<img", p + 1)) ++imgs;
  EXPECT_EQ(imgs, size_t(pngs));
  EXPECT_NE(html.find("Memory scaling of the op alone"), std::string::npos);

  // Headless Chromium loads the page and sees the tables and images.
  if (std::system("command -v chromium >/dev/null 2>&1") == 0) {
    const std::string dom = tmp / "dom.html";
    const std::string cmd = "chromium --headless --no-sandbox --disable-gpu --dump-dom file://" + dir +
                            "/report.html > " + dom + " 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    const std::string d = attnlab::read_file(dom);
    size_t seen = 0;
    for (size_t p = d.find("<img"); p != std::string::npos; p = d.find("<img", p + 1)) ++seen;
    EXPECT_EQ(seen, imgs);
    EXPECT_NE(d.find("<table"), std::string::npos);
  } else {
    std::cout << "[ note ] chromium not installed (scripts/setup.sh installs it): DOM check skipped\n";
  }

  // A rerun skips every finished stage but the report; --force redoes them.
  auto again = study::run_study(tiny_config(), dir, false);
  EXPECT_EQ(again.ran, std::vector<std::string>{"report"});
  EXPECT_EQ(again.skipped.size(), study::stage_names().size() - 1);
  auto forced = study::run_study(tiny_config(), dir, true, {"memory"});
  EXPECT_EQ(forced.ran, std::vector<std::string>{"memory"});
  EXPECT_ERROR_WITH(study::run_study(tiny_config(), dir, false, {"nope"}), "unknown stage 'nope'",
                    "efficiency");
}

TEST(StudyConfig, UnknownKeysAreErrorsThatListTheValidOnes) {
  study::StudyConfig cfg;
  EXPECT_ERROR_WITH(cfg.set("study.mixer=[softmax]"), "study.mixer", "mixers");
  EXPECT_ERROR_WITH(cfg.set("study.task_preset=huge"), "quick", "paper");
  cfg.set("study.stages=[pretrain,nope]");
  EXPECT_ERROR_WITH(cfg.resolve(), "unknown stage 'nope'");
}
