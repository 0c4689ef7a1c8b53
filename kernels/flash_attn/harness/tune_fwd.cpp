// Forward tile variants for the harness's tuning table (compiled with nvcc -x cu).
#include "kernels/flash_attn/flash_config.cuh"
#include "kernels/flash_attn/harness/tune.h"

namespace flash_tune {
namespace fl = attnlab::kernels::flash;
using bf16 = __nv_bfloat16;

#define FWD_VARIANT(D, BR, BC, W, S, QR, LAZY)                                     \
  {                                                                                \
    "fwd D" #D " Br" #BR " Bc" #BC " w" #W " s" #S " qreg=" #QR " lazy=" #LAZY, D, \
        &fl::run_flash_fwd<fl::FwdConfig<D, BR, BC, W, S, QR, LAZY>, bf16>         \
  }

static const Variant kFwd[] = {
    FWD_VARIANT(128, 128, 64, 4, 2, false, true),   // the default (flash_config.cuh)
    FWD_VARIANT(128, 128, 64, 4, 2, false, false),  // v1: rescale on every tile
    FWD_VARIANT(128, 128, 32, 4, 2, false, true),   // smaller S tile, more Q re-reads
    FWD_VARIANT(128, 128, 64, 8, 2, true, true),    // 16-row warps, Q in registers
    FWD_VARIANT(128, 128, 128, 8, 2, true, true),   // 16-row warps, wide key tile
    FWD_VARIANT(64, 128, 64, 4, 3, false, true),    // the default at D=64
    FWD_VARIANT(64, 128, 64, 4, 2, false, true),    // v2 default at D=64
    FWD_VARIANT(64, 128, 64, 4, 2, false, false),  FWD_VARIANT(64, 128, 128, 8, 2, true, true),
    FWD_VARIANT(64, 64, 64, 4, 2, true, true),
};

const Variant* fwd_variants(int* count) {
  *count = static_cast<int>(sizeof(kFwd) / sizeof(kFwd[0]));
  return kFwd;
}

}  // namespace flash_tune
