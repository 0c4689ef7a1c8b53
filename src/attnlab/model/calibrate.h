// Parameter matching (seed 000's calibrate_model_configs): for a target parameter count, choose width,
// depth, heads and the MLP width of each mechanism so that every model lands within +-2% of the target,
// and report what each costs (state bytes per sequence, FLOPs per token).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/options.h"
#include "attnlab/model/lm.h"

namespace attnlab {

struct CalibratedModel {
  std::string mixer;
  ModelOptions model;          // d_model, n_layers, n_heads, mlp_ratio set
  int64_t parameters = 0;      // all parameters, embeddings included
  double error = 0;            // parameters / target - 1
  int64_t state_bytes = 0;     // inference state per sequence at the reported T (all layers)
  double flops_per_token = 0;  // forward, at the reported T (mixers + MLPs + head)
};

struct CalibrationTarget {
  int64_t parameters = 10'000'000;
  int64_t vocab_size = 5001;  // the character vocabulary of seed 000 (5000 + <unk>)
  int64_t head_dim = 0;       // 0: 32 below 5M parameters, 64 above
  int64_t n_layers = 0;       // 0: from the target (4 up to 2M, 6 up to 10M, 8 up to 50M, 12 above)
  int64_t report_T = 2048;    // context length at which state bytes and FLOPs are reported
  double tolerance = 0.02;
};

// Calibrates one mixer (its options from `mixer_options`, defaults otherwise). Throws an Error naming the
// mixer when no configuration lands within the tolerance.
CalibratedModel calibrate(const std::string& mixer, const CalibrationTarget& target,
                          const std::map<std::string, std::shared_ptr<AnyOptions>>& mixer_options = {},
                          const ModelOptions& base = ModelOptions{});

// The counts of a model as configured: parameters, state bytes and FLOPs per token at T.
CalibratedModel measure(const ModelOptions& model,
                        const std::map<std::string, std::shared_ptr<AnyOptions>>& mixer_options, int64_t T);

}  // namespace attnlab
