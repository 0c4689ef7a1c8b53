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

// Zero-padding the head dims is exact, so the fixture still passes at float32's tolerance; the padding
// is what lets the CUDA kernels (K = V = 64 or 128) check the fixtures' K = 16, V = 20 on a GPU.
TEST(Cli, OpsVerifyPaddedHeadDimsStillMatchTheFixture) {
  auto r = run("ops verify --op gla --file tests/data/gla.safetensors --impl chunk --pad-head-dims 64");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("head dims zero-padded from K 16, V 20 to 64"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checks passed"), std::string::npos) << r.output;
  auto d =
      run("ops verify --op gated_delta_rule --file tests/data/gated_delta_rule.safetensors --impl chunk "
          "--pad-head-dims 64");
  EXPECT_EQ(d.status, 0) << d.output;
}

TEST(Cli, OpsVerifyRejectsBadDeviceDtypeAndPadding) {
  auto small = run("ops verify --op gla --file tests/data/gla.safetensors --pad-head-dims 8");
  EXPECT_EQ(small.status, 2) << small.output;
  EXPECT_NE(small.output.find("--pad-head-dims 8 is below the file's head dims (K 16, V 20)"),
            std::string::npos)
      << small.output;
  auto dtype = run("ops verify --op gla --file tests/data/gla.safetensors --dtype int8");
  EXPECT_EQ(dtype.status, 2) << dtype.output;
  EXPECT_NE(dtype.output.find("--dtype must be float32, bf16 or fp16, got 'int8'"), std::string::npos)
      << dtype.output;
  auto device = run("ops verify --op gla --file tests/data/gla.safetensors --device tpu");
  EXPECT_EQ(device.status, 2) << device.output;
  EXPECT_NE(device.output.find("--device must be cpu or cuda, got 'tpu'"), std::string::npos)
      << device.output;
  if (!torch::cuda::is_available()) {
    auto cuda = run("ops verify --op gla --file tests/data/gla.safetensors --device cuda");
    EXPECT_EQ(cuda.status, 2) << cuda.output;
    EXPECT_NE(cuda.output.find("sees no CUDA device"), std::string::npos) << cuda.output;
  }
}
