// labels: cpu
// Study variants (study.variants): one registered mixer in other shapes or with other options, named in
// study.mixers by a label. Parsing and its errors, the calibration rule (a variant that fixes the shape is
// used as given, one that only changes mixer options is parameter-matched), and a tiny study with two
// variants through pretrain and report.
#include <gtest/gtest.h>

#include "attnlab/model/calibrate.h"
#include "attnlab/report/csv.h"
#include "attnlab/study/stages.h"
#include "attnlab/study/study.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::TempDir;

namespace {

const char* kVariants = R"(
study:
  mixers: [gla, gla_wide, gla_k1]
  parameters: 300000
  variants:
    gla_wide: {mixer: gla, set: [model.d_model=96, model.n_layers=2, model.n_heads=3]}
    gla_k1: {mixer: gla, set: [mixer.gla.expand_k=1.0]}
model: {d_model: 64, n_layers: 4, n_heads: 2}
mixer:
  gla: {expand_k: 0.5}
)";

study::StudyConfig load(const std::string& yaml) {
  TempDir tmp;
  const std::string path = tmp / "study.yaml";
  attnlab::testing::write_text(path, yaml);
  study::StudyConfig cfg;
  cfg.load_file(path);
  return cfg;
}

double expand_k(const study::StudyEntry& e) {
  return e.run.mixers.at("gla")->to_yaml()["expand_k"].as<double>();
}

}  // namespace

TEST(StudyVariants, ParseResolveAndRoundTrip) {
  auto cfg = load(kVariants);
  cfg.resolve();
  auto entries = study::study_entries(cfg);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].label, "gla");
  EXPECT_FALSE(entries[0].variant);
  EXPECT_EQ(entries[1].label, "gla_wide");
  EXPECT_EQ(entries[1].mixer, "gla");
  EXPECT_TRUE(entries[1].variant);
  EXPECT_TRUE(entries[1].fixed_shape);
  EXPECT_EQ(entries[1].run.model.d_model, 96);
  EXPECT_EQ(entries[1].run.model.n_layers, 2);
  EXPECT_EQ(entries[1].run.model.mixer, "gla");
  EXPECT_TRUE(entries[2].variant);
  EXPECT_FALSE(entries[2].fixed_shape);
  EXPECT_DOUBLE_EQ(expand_k(entries[2]), 1.0);
  // The variant's overrides live on its own copy: the study's mixer section is untouched.
  EXPECT_DOUBLE_EQ(expand_k(entries[0]), 0.5);
  EXPECT_DOUBLE_EQ(cfg.run.mixers.at("gla")->to_yaml()["expand_k"].as<double>(), 0.5);
  EXPECT_EQ(cfg.run.model.d_model, 64);

  // The saved config reads back with the same variants.
  auto back = load(cfg.to_yaml_string());
  back.resolve();
  ASSERT_EQ(back.study.variants.size(), 2u);
  EXPECT_EQ(back.study.variants.at("gla_wide").set, cfg.study.variants.at("gla_wide").set);
  EXPECT_EQ(back.study.variants.at("gla_k1").mixer, "gla");

  // --set: one key of one variant, or the whole map.
  study::StudyConfig s;
  s.set("study.variants.gla_deep.mixer=gla");
  s.set("study.variants.gla_deep.set=[model.n_layers=6]");
  s.set("study.mixers=[gla,gla_deep]");
  s.resolve();
  EXPECT_TRUE(study::study_entry(s, "gla_deep").fixed_shape);
  EXPECT_EQ(study::study_entry(s, "gla_deep").run.model.n_layers, 6);
  s.set("study.variants={k1: {mixer: gla, set: [mixer.gla.expand_k=1]}}");
  s.set("study.mixers=[k1]");
  s.resolve();
  EXPECT_EQ(s.study.variants.count("gla_deep"), 0u);
  EXPECT_FALSE(study::study_entry(s, "k1").fixed_shape);
}

TEST(StudyVariants, ErrorsSayWhatWasExpected) {
  // An unknown key of a variant lists the valid ones.
  EXPECT_ERROR_WITH(load("study: {variants: {v: {mixer: gla, sett: []}}}"), "study.variants.v", "sett",
                    "mixer, set");
  study::StudyConfig cfg;
  EXPECT_ERROR_WITH(cfg.set("study.variants.v.mixr=gla"), "study.variants.v", "mixr", "mixer, set");
  // An unknown mixer lists the registered ones.
  EXPECT_ERROR_WITH(load("study: {variants: {v: {mixer: glaa}}}"), "study.variants.v", "glaa",
                    "gated_deltanet", "softmax");
  // A variant without a mixer, found when the study resolves.
  {
    study::StudyConfig c;
    c.set("study.variants.v.set=[model.n_layers=2]");
    c.set("study.mixers=[v]");
    EXPECT_ERROR_WITH(c.resolve(), "study.variants.v", "mixer", "softmax");
  }
  // Bad assignment strings: no '=', a section other than model / mixer.
  EXPECT_ERROR_WITH(load("study: {variants: {v: {mixer: gla, set: [model.d_model]}}}"), "study.variants.v",
                    "model.KEY=VALUE", "model.d_model");
  EXPECT_ERROR_WITH(load("study: {variants: {v: {mixer: gla, set: [train.lr=1e-3]}}}"), "train.lr=1e-3",
                    "mixer.<mixer>.KEY=VALUE");
  // Unknown keys and bad values inside an assignment, found when the study resolves.
  auto resolve_with = [](const std::string& set) {
    study::StudyConfig c;
    c.set("study.variants.v.mixer=gla");
    c.set("study.variants.v.set=[" + set + "]");
    c.set("study.mixers=[gla,v]");
    c.resolve();
  };
  EXPECT_ERROR_WITH(resolve_with("model.d_modle=96"), "study.variants.v.set", "model.d_modle", "d_model",
                    "n_layers");
  EXPECT_ERROR_WITH(resolve_with("mixer.gla.expand=1"), "study.variants.v.set", "expand_k", "expand_v");
  EXPECT_ERROR_WITH(resolve_with("model.n_layers=two"), "study.variants.v.set", "expected an integer");
  EXPECT_ERROR_WITH(resolve_with("mixer.softmax.window=8"), "another mixer", "mixer.gla.KEY=VALUE");
  EXPECT_ERROR_WITH(resolve_with("model.mixer=softmax"), "not a variant override");
  EXPECT_ERROR_WITH(resolve_with("model.d_model=100,model.n_heads=3"), "not a multiple of model.n_heads 3");
  // Labels: folder names, not registered mixers.
  EXPECT_ERROR_WITH(load("study: {variants: {gla: {mixer: gla}}}"), "study.variants",
                    "other than registered mixer names");
  EXPECT_ERROR_WITH(load("study: {variants: {a/b: {mixer: gla}}}"), "study.variants", "a/b");
  // A name of study.mixers that is neither lists both kinds.
  {
    auto c = load(kVariants);
    c.set("study.mixers=[gla,gla_tall]");
    EXPECT_ERROR_WITH(c.resolve(), "unknown mixer or variant 'gla_tall'", "softmax", "gla_k1, gla_wide");
  }
}

TEST(StudyVariants, ShapeFixingVariantIsUsedAsGivenOthersAreCalibrated) {
  auto cfg = load(kVariants);
  cfg.resolve();
  const int64_t vocab = 101, target = 300000;
  // Fixed shape: exactly as written, its own parameter count.
  const auto wide = study::study_entry(cfg, "gla_wide");
  const auto cw = study::calibrated(wide, target, vocab);
  EXPECT_EQ(cw.model.d_model, 96);
  EXPECT_EQ(cw.model.n_layers, 2);
  EXPECT_EQ(cw.model.n_heads, 3);
  EXPECT_EQ(cw.model.vocab_size, vocab);
  EXPECT_DOUBLE_EQ(cw.model.mlp_ratio, cfg.run.model.mlp_ratio);
  const auto measured = measure(cw.model, wide.run.mixers, 2048);
  EXPECT_EQ(cw.parameters, measured.parameters);
  EXPECT_GT(std::fabs(cw.error), 0.02);  // far from the target: it was not matched
  // The plain mixer and the option-only variant: parameter-matched within the zoo's 2%.
  const auto cg = study::calibrated(cfg, "gla", target, vocab);
  const auto k1 = study::study_entry(cfg, "gla_k1");
  const auto ck = study::calibrated(k1, target, vocab);
  EXPECT_LE(std::fabs(cg.error), 0.02);
  EXPECT_LE(std::fabs(ck.error), 0.02);
  EXPECT_NEAR(double(ck.parameters), double(target), 0.02 * target);
  // Calibration counted the variant's wider keys: with the study's expand_k the same shape is smaller.
  EXPECT_EQ(measure(ck.model, k1.run.mixers, 2048).parameters, ck.parameters);
  EXPECT_LT(measure(ck.model, cfg.run.mixers, 2048).parameters, ck.parameters);
}

TEST(StudyVariants, TinyStudyPretrainsAndReportsVariantsByLabel) {
  if (!fs::exists(attnlab::testing::repo_path("data/sotu")))
    GTEST_SKIP() << "data/sotu missing: run scripts/setup.sh";
  auto cfg = load(R"(
study:
  name: variants
  mixers: [gla_small, gla_k1]
  parameters: 300000
  stages: [pretrain, report]
  variants:
    gla_small: {mixer: gla, set: [model.d_model=32, model.n_layers=2, model.n_heads=2]}
    gla_k1: {mixer: gla, set: [mixer.gla.expand_k=1.0]}
data: {seq_len: 32, batch_size: 2}
train: {steps: 2, eval_every: 2, eval_batches: 1, ckpt_every: 2, warmup: 1, log_every: 1, threads: 1}
)");
  cfg.run.data.path = attnlab::testing::repo_path("data/sotu");
  TempDir tmp;
  const std::string dir = tmp / "study";
  auto run = study::run_study(cfg, dir, false);
  EXPECT_FALSE(run.interrupted);
  EXPECT_EQ(run.ran, (std::vector<std::string>{"pretrain", "report"}));

  auto t = report::read_csv(fs::path(dir) / "results" / "pretrain.csv");
  report::require_columns(t,
                          {"mixer", "parameters", "d_model", "n_layers", "n_heads", "base_mixer",
                           "calibrated", "target_parameters"},
                          "pretrain.csv");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.text(0, "mixer"), "gla_small");
  EXPECT_EQ(t.text(0, "base_mixer"), "gla");
  EXPECT_EQ(t.text(0, "calibrated"), "no");
  EXPECT_EQ(*t.number(0, "d_model"), 32);
  EXPECT_EQ(*t.number(0, "n_layers"), 2);
  EXPECT_FALSE(t.number(0, "target_parameters").has_value());
  EXPECT_EQ(t.text(1, "mixer"), "gla_k1");
  EXPECT_EQ(t.text(1, "base_mixer"), "gla");
  EXPECT_EQ(t.text(1, "calibrated"), "yes");
  EXPECT_EQ(*t.number(1, "target_parameters"), 300000);
  EXPECT_NEAR(*t.number(1, "parameters"), 300000, 0.02 * 300000);

  // Run folders by label; each model's saved config carries the variant's overrides.
  for (const char* label : {"gla_small", "gla_k1"})
    EXPECT_TRUE(fs::exists(fs::path(dir) / "models" / label / "metrics.csv")) << label;
  const std::string k1_cfg = attnlab::read_file(fs::path(dir) / "models" / "gla_k1" / "config.yaml");
  EXPECT_NE(k1_cfg.find("expand_k: 1"), std::string::npos) << k1_cfg;

  // The report names the variants: its setup table and the legends' labels.
  const std::string html = attnlab::read_file(fs::path(dir) / "report.html");
  EXPECT_NE(html.find("gla_small"), std::string::npos);
  EXPECT_NE(html.find("mixer.gla.expand_k=1.0"), std::string::npos);
  EXPECT_NE(html.find("shape as given"), std::string::npos);
  EXPECT_TRUE(fs::exists(fs::path(dir) / "tb" / "gla_k1"));
}
