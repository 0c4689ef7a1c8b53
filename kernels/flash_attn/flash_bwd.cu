// Backward launcher and workspace helpers of the flash-attention kernels (see params.h).
#include "kernels/flash_attn/flash_bwd_wgmma.cuh"
#include "kernels/flash_attn/flash_config.cuh"
#include "kernels/flash_attn/params.h"

namespace attnlab::kernels {

namespace {
size_t round256(size_t n) {
  return (n + 255) / 256 * 256;
}
size_t dq_accum_bytes(const FlashAttnParams& p) {
  return round256(size_t(p.B) * p.H * p.Tq * p.D * sizeof(float));
}
}  // namespace

size_t flash_attn_bwd_workspace_bytes(const FlashAttnParams& p) {
  return dq_accum_bytes(p) + round256(size_t(p.B) * p.H * p.Tq * sizeof(float));
}

void flash_attn_set_bwd_workspace(FlashAttnParams& p, void* workspace) {
  p.dq_accum = static_cast<float*>(workspace);
  p.softmax_d = reinterpret_cast<float*>(static_cast<char*>(workspace) + dq_accum_bytes(p));
}

bool flash_attn_has_wgmma() {
#ifdef ATTNLAB_SM90A
  return true;
#else
  return false;
#endif
}

cudaError_t launch_flash_attn_bwd(const FlashAttnParams& p) {
  if (flash_attn_check(p, /*backward=*/true) != nullptr) return cudaErrorInvalidValue;
  return FLASH_DTYPE_SWITCH(p.dtype, T, [&] {
    return FLASH_HEADDIM_SWITCH(p.D, kD, [&] {
      return p.bwd_wgmma ? flash::run_flash_bwd_wgmma<kD, T>(p)
                         : flash::run_flash_bwd<flash::BwdDefault<kD>, T>(p);
    });
  });
}

}  // namespace attnlab::kernels
