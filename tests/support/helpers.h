// Small helpers shared by the tests: temporary directories, files, and repository paths.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>

#include "attnlab/core/fs.h"

namespace attnlab::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("attnlab-test-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() { attnlab::remove_tree(path_); }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// Sets an environment variable (value nullptr: unsets it) until the object dies, then restores what was
// there, so a failing assertion in between leaves no setting behind for the next test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_.c_str(), old_->c_str(), 1);
    else
      unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

inline void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string repo_path(const std::string& rel) {
  return std::string(ATTNLAB_SOURCE_DIR) + "/" + rel;
}

// Runs `body` and checks that it throws attnlab::Error whose message contains every `needle`.
#define EXPECT_ERROR_WITH(body, ...)                                                                         \
  do {                                                                                                       \
    bool thrown_ = false;                                                                                    \
    try {                                                                                                    \
      body;                                                                                                  \
    } catch (const ::attnlab::Error& e_) {                                                                   \
      thrown_ = true;                                                                                        \
      std::string msg_ = e_.what();                                                                          \
      for (const std::string& needle_ : std::initializer_list<std::string>{__VA_ARGS__})                     \
        EXPECT_NE(msg_.find(needle_), std::string::npos) << "message: " << msg_ << "\nmissing: " << needle_; \
    }                                                                                                        \
    EXPECT_TRUE(thrown_) << "expected attnlab::Error from: " #body;                                          \
  } while (0)

}  // namespace attnlab::testing
