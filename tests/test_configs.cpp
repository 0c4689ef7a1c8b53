// Every preset under configs/ loads and validates: a study config (one with a `study` section) as a
// StudyConfig with every entry of study.mixers resolved, any other as a RunConfig. A typo in a preset's key,
// mixer or variant fails here rather than at the start of someone's run.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "attnlab/study/study.h"
#include "attnlab/train/config.h"
#include "support/helpers.h"

using namespace attnlab;

TEST(Configs, EveryPresetLoads) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(attnlab::testing::repo_path("configs")))
    if (e.is_regular_file() && e.path().extension() == ".yaml") files.push_back(e.path().string());
  ASSERT_GE(files.size(), 5u);
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    if (YAML::LoadFile(f)["study"]) {
      study::StudyConfig cfg;
      EXPECT_NO_THROW({
        cfg.load_file(f);
        cfg.resolve();
        EXPECT_EQ(study::study_entries(cfg).size(), cfg.study.mixers.size());
      });
    } else {
      RunConfig cfg;
      EXPECT_NO_THROW({
        cfg.load_file(f);
        cfg.resolve();
      });
    }
  }
}
