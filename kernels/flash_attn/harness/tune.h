// Alternative tile configurations, compiled only into the harness, timed against the defaults
// (flash_config.cuh). bf16 only. Each runs on validated params (the harness builds them).
#pragma once

#include "kernels/flash_attn/params.h"

namespace flash_tune {

struct Variant {
  const char* name;  // the config, e.g. "fwd D128 Br128 Bc64 w4 s2 qsmem"
  int head_dim;      // head dim it was built for
  cudaError_t (*run)(const attnlab::kernels::FlashAttnParams&);
};

// The variants, terminated by count.
const Variant* fwd_variants(int* count);
const Variant* bwd_variants(int* count);

}  // namespace flash_tune
