// Options: YAML and --set parsing, validation, errors that name the key and list the valid ones.
#include <gtest/gtest.h>

#include "attnlab/core/error.h"
#include "attnlab/train/config.h"
#include "support/helpers.h"

using namespace attnlab;
using attnlab::testing::TempDir;

TEST(Options, DefaultsComeFromTheStruct) {
  RunConfig cfg;
  EXPECT_EQ(cfg.model.d_model, 128);
  EXPECT_EQ(cfg.model.mixer, "softmax");
  EXPECT_DOUBLE_EQ(cfg.train.lr, 3e-3);
}

TEST(Options, SetParsesEveryType) {
  RunConfig cfg;
  cfg.set("train.lr=3e-4");
  cfg.set("model.d_model=256");
  cfg.set("model.tie_embeddings=false");
  cfg.set("data.path=/tmp/x.txt");
  cfg.set("model.layers=[softmax, softmax]");
  cfg.set("model.n_layers=2");
  EXPECT_DOUBLE_EQ(cfg.train.lr, 3e-4);
  EXPECT_EQ(cfg.model.d_model, 256);
  EXPECT_FALSE(cfg.model.tie_embeddings);
  EXPECT_EQ(cfg.data.path, "/tmp/x.txt");
  ASSERT_EQ(cfg.model.layers.size(), 2u);
  cfg.set("model.layers=softmax,softmax");  // the comma form
  EXPECT_EQ(cfg.model.layers.size(), 2u);
  cfg.set("train.steps=10K");  // people write counts like that
  EXPECT_EQ(cfg.train.steps, 10000);
}

TEST(Options, UnknownKeyIsNamedAndValidKeysListed) {
  RunConfig cfg;
  EXPECT_ERROR_WITH(cfg.set("train.lrr=1"), "train.lrr", "valid keys", "lr", "warmup");
  EXPECT_ERROR_WITH(cfg.set("trian.lr=1"), "trian", "model", "data", "train");
  EXPECT_ERROR_WITH(cfg.set("train.lr"), "section.key=value");
  EXPECT_ERROR_WITH(cfg.set("mixer.softmax.windw=3"), "mixer.softmax.windw", "window");
}

TEST(Options, BadValuesSayWhatWasExpected) {
  RunConfig cfg;
  EXPECT_ERROR_WITH(cfg.set("train.lr=fast"), "train.lr", "number", "fast");
  EXPECT_ERROR_WITH(cfg.set("model.d_model=1.5"), "model.d_model", "integer", "1.5");
  EXPECT_ERROR_WITH(cfg.set("model.d_model=-4"), "model.d_model", "> 0", "-4");
  EXPECT_ERROR_WITH(cfg.set("model.tie_embeddings=maybe"), "true or false", "maybe");
  EXPECT_ERROR_WITH(cfg.set("train.dtype=fp8"), "train.dtype", "one of", "bf16");
  EXPECT_ERROR_WITH(cfg.set("mixer.softmax.window=-1"), "mixer.softmax.window", ">= 0");
}

TEST(Options, UnknownMixerListsTheKnownOnes) {
  RunConfig cfg;
  EXPECT_ERROR_WITH(cfg.set("mixer.nosuch.window=3"), "unknown mixer 'nosuch'", "softmax");
  cfg.set("model.mixer=nosuch");
  EXPECT_ERROR_WITH(cfg.resolve(), "unknown mixer 'nosuch'", "softmax");
}

TEST(Options, YamlFileAndSavedConfigRoundTrip) {
  TempDir dir;
  attnlab::testing::write_text(dir / "c.yaml",
                               "model:\n  d_model: 64\n  n_layers: 2\ntrain:\n  lr: 1.0e-3\n"
                               "mixer:\n  softmax:\n    window: 16\n");
  RunConfig cfg;
  cfg.load_file(dir / "c.yaml");
  cfg.set("train.steps=7");
  cfg.resolve();
  EXPECT_EQ(cfg.model.d_model, 64);
  EXPECT_EQ(cfg.train.steps, 7);
  // The resolved config, saved and read back, is the same config.
  attnlab::testing::write_text(dir / "saved.yaml", cfg.to_yaml_string());
  RunConfig back;
  back.load_file(dir / "saved.yaml");
  back.resolve();
  EXPECT_TRUE(RunConfig::differences(cfg, back, {"model", "data", "train", "mixer"}).empty());
  EXPECT_EQ(back.mixers.at("softmax")->to_yaml()["window"].as<int>(), 16);
  back.set("model.d_model=32");
  auto diff = RunConfig::differences(cfg, back, {"model"});
  ASSERT_EQ(diff.size(), 1u);
  EXPECT_NE(diff[0].find("model.d_model"), std::string::npos);
}

TEST(Options, YamlErrorsNameTheFileAndSection) {
  TempDir dir;
  attnlab::testing::write_text(dir / "bad.yaml", "model: [1, 2\n");
  RunConfig cfg;
  EXPECT_ERROR_WITH(cfg.load_file(dir / "bad.yaml"), "bad.yaml", "YAML");
  attnlab::testing::write_text(dir / "sec.yaml", "modle:\n  d_model: 3\n");
  EXPECT_ERROR_WITH(cfg.load_file(dir / "sec.yaml"), "unknown config section 'modle'", "model");
  attnlab::testing::write_text(dir / "list.yaml", "model:\n  d_model: [1, 2]\n");
  EXPECT_ERROR_WITH(cfg.load_file(dir / "list.yaml"), "model.d_model", "integer", "list");
  EXPECT_ERROR_WITH(cfg.load_file(dir / "missing.yaml"), "missing.yaml", "does not exist");
  EXPECT_ERROR_WITH(cfg.load_file(dir.path().string()), "is a directory");
}

TEST(Options, LayerPatternMustMatchDepth) {
  RunConfig cfg;
  cfg.set("model.n_layers=3");
  cfg.set("model.layers=[softmax, softmax]");
  EXPECT_ERROR_WITH(cfg.resolve(), "model.layers names 2 mixers", "n_layers is 3");
}
