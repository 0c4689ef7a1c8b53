// Errors: one exception type for bad input and failed checks, with messages that say what was expected
// and what came.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace attnlab {

// Thrown for every user-facing failure (bad config, bad file, bad shape). The CLI prints what() and
// exits non-zero; the library never calls exit().
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// "[2, 64, 4, 32]"
template <class Seq>
std::string shape_str(const Seq& sizes) {
  return fmt::format("[{}]", fmt::join(sizes.begin(), sizes.end(), ", "));
}

}  // namespace attnlab

// ATTNLAB_CHECK(cond, "fmt", args...): throws attnlab::Error with the formatted message.
#define ATTNLAB_CHECK(cond, ...)    \
  do {                              \
    if (!(cond)) {                  \
      ::attnlab::fail(__VA_ARGS__); \
    }                               \
  } while (0)
