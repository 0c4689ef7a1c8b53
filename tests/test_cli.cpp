// The attnlab binary: help on every subcommand, env --json, list, and errors with exit status 2.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <memory>

#include "support/helpers.h"

namespace {

struct Result {
  int status;
  std::string output;  // stdout and stderr together
};

Result run(const std::string& args) {
  std::string cmd = std::string(ATTNLAB_BINARY) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe.get())) > 0) out.append(buf.data(), n);
  int status = pclose(pipe.release());
  return {WEXITSTATUS(status), out};
}

}  // namespace

TEST(Cli, EverySubcommandHasHelp) {
  for (std::string sub : {"env", "list", "train", "eval", "generate", "ops", "ops verify"}) {
    auto r = run(sub + " --help");
    EXPECT_EQ(r.status, 0) << sub << ": " << r.output;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << sub << ": " << r.output;
  }
}

TEST(Cli, EnvJsonNamesLibtorchAndKernels) {
  auto r = run("env --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_TRUE(j.contains("libtorch_version"));
  EXPECT_TRUE(j.contains("cuda_available"));
  EXPECT_TRUE(j["kernels"].is_array());
  EXPECT_GE(j["threads"].get<int>(), 1);
}

TEST(Cli, ListShowsMixersWithDefaults) {
  auto r = run("list");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("softmax"), std::string::npos);
  EXPECT_NE(r.output.find("mixer.softmax.num_kv_heads"), std::string::npos);
}

TEST(Cli, BadInputExitsTwoWithAClearMessage) {
  auto r = run("train --set train.lrr=1");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown config key 'train.lrr'"), std::string::npos) << r.output;
  r = run("train --mixer nosuch");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("known mixers: "), std::string::npos) << r.output;
  r = run("eval /nonexistent/run");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
  attnlab::testing::TempDir dir;
  attnlab::testing::write_text(dir / "empty.txt", "");
  r = run("train --set data.path=" + (dir / "empty.txt") + " --out " + (dir / "run"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("is empty"), std::string::npos) << r.output;
}
