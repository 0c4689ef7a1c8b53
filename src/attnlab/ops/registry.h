// The op registry: every recurrent op registers its function by name, so that `attnlab ops verify`, the
// benchmarks and the tests reach all of them the same way:
//   ATTNLAB_REGISTER_OP("gated_delta_rule", gated_delta_rule, {"q","k","v","g","beta"}, "S_t = ...");
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "attnlab/ops/recurrent.h"

namespace attnlab::ops {

using RecurrentFn = std::function<RecurrentOut(const RecurrentArgs&, Impl)>;

struct OpEntry {
  std::string name;
  RecurrentFn fn;
  std::vector<std::string> inputs;  // which RecurrentArgs fields it reads: q, k, v, g, beta, u, h0
  std::string equation;             // one line, for --help and error messages
};

class OpRegistry {
 public:
  static OpRegistry& instance();
  void add(OpEntry e);
  const OpEntry& get(const std::string& name) const;  // error lists the known ops
  std::vector<std::string> names() const;

 private:
  std::map<std::string, OpEntry> ops_;
};

struct OpRegistrar {
  OpRegistrar(const char* name, RecurrentFn fn, std::vector<std::string> inputs, const char* equation) {
    OpRegistry::instance().add({name, std::move(fn), std::move(inputs), equation});
  }
};

}  // namespace attnlab::ops

#define ATTNLAB_OP_CONCAT_INNER(a, b) a##b
#define ATTNLAB_OP_CONCAT(a, b) ATTNLAB_OP_CONCAT_INNER(a, b)
#define ATTNLAB_REGISTER_OP(name, fn, inputs, equation)                                                   \
  static ::attnlab::ops::OpRegistrar ATTNLAB_OP_CONCAT(attnlab_op_registrar_, __LINE__)(name, fn, inputs, \
                                                                                        equation)
