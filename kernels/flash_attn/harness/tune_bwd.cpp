// Backward tile variants for the harness's tuning table (compiled with nvcc -x cu).
#include "kernels/flash_attn/flash_config.cuh"
#include "kernels/flash_attn/harness/tune.h"

namespace flash_tune {
namespace fl = attnlab::kernels::flash;
using bf16 = __nv_bfloat16;

#define BWD_VARIANT(D, BC, BR, W, MT)                             \
  {                                                               \
    "bwd D" #D " Bc" #BC " Br" #BR " w" #W " dqmt" #MT, D,        \
        &fl::run_flash_bwd<fl::BwdConfig<D, BC, BR, W, MT>, bf16> \
  }

static const Variant kBwd[] = {
    BWD_VARIANT(128, 128, 64, 8, 2),  // the default (flash_config.cuh)
    BWD_VARIANT(128, 128, 64, 8, 1),  // v1 dQ tiling (16 x 64 per warp)
    BWD_VARIANT(128, 64, 64, 4, 2),   // 4-warp blocks, two per SM
    BWD_VARIANT(64, 128, 128, 8, 1),  // the default at D=64 (as v1)
    BWD_VARIANT(64, 128, 64, 8, 2),   // v2 default at D=64
    BWD_VARIANT(64, 64, 64, 4, 2),
};

const Variant* bwd_variants(int* count) {
  *count = static_cast<int>(sizeof(kBwd) / sizeof(kBwd[0]));
  return kBwd;
}

}  // namespace flash_tune
