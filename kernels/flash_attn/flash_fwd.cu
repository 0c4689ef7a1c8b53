// Forward launcher and parameter checks of the flash-attention kernels (see params.h).
#include "kernels/flash_attn/flash_config.cuh"
#include "kernels/flash_attn/params.h"

namespace attnlab::kernels {

bool flash_attn_supported(int head_dim, FlashDtype dtype) {
  return (head_dim == 64 || head_dim == 128) && (dtype == FlashDtype::kBF16 || dtype == FlashDtype::kFP16);
}

namespace {
bool aligned16(const void* ptr) {
  return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0;
}
// 16-byte chunks need strides in multiples of 8 elements; in-tile row offsets are 32-bit, so a row
// stride is bounded by 2^24 elements (128 rows of it stay below 2^31).
bool strides_ok(int64_t batch, int64_t row, int64_t head) {
  return batch % 8 == 0 && row % 8 == 0 && head % 8 == 0 && row <= (int64_t(1) << 24) &&
         row >= -(int64_t(1) << 24);
}
}  // namespace

const char* flash_attn_check(const FlashAttnParams& p, bool backward) {
  if (!flash_attn_supported(p.D, p.dtype))
    return "flash_attn: unsupported head dim (64, 128) or dtype (bf16, fp16)";
  if (p.B < 1 || p.Tq < 1 || p.Tk < 1 || p.H < 1 || p.Hkv < 1)
    return "flash_attn: B, Tq, Tk, H, Hkv must be >= 1";
  if (p.H % p.Hkv != 0) return "flash_attn: Hkv must divide H";
  if (!(p.scale > 0.f)) return "flash_attn: scale must be > 0";
  if (p.window < 0) return "flash_attn: window must be >= 0";
  if (p.B > 65535 || p.H > 65535) return "flash_attn: B and H must be <= 65535 (grid limits)";
  if (!p.q || !p.k || !p.v || !p.o || !p.lse) return "flash_attn: q, k, v, o, lse must be set";
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.o) || !aligned16(p.lse))
    return "flash_attn: q, k, v, o, lse must be 16-byte aligned";
  if (!strides_ok(p.q_batch_stride, p.q_row_stride, p.q_head_stride) ||
      !strides_ok(p.k_batch_stride, p.k_row_stride, p.k_head_stride) ||
      !strides_ok(p.v_batch_stride, p.v_row_stride, p.v_head_stride) ||
      !strides_ok(p.o_batch_stride, p.o_row_stride, p.o_head_stride))
    return "flash_attn: q/k/v/o strides must be multiples of 8 elements (row strides within 2^24)";
  if (backward) {
    if (!p.dout || !p.dq || !p.dk || !p.dv || !p.dq_accum || !p.softmax_d)
      return "flash_attn: dout, dq, dk, dv and the workspaces (dq_accum, softmax_d) must be set";
    if (!aligned16(p.dout) || !aligned16(p.dq) || !aligned16(p.dk) || !aligned16(p.dv) ||
        !aligned16(p.dq_accum) || !aligned16(p.softmax_d))
      return "flash_attn: backward tensors and workspaces must be 16-byte aligned";
    if (!strides_ok(p.do_batch_stride, p.do_row_stride, p.do_head_stride) ||
        !strides_ok(p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride) ||
        !strides_ok(p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride) ||
        !strides_ok(p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride))
      return "flash_attn: dout/dq/dk/dv strides must be multiples of 8 elements (row strides within 2^24)";
    if (p.bwd_wgmma && !flash_attn_has_wgmma())
      return "flash_attn: bwd_wgmma set, but this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES 90a)";
  }
  return nullptr;
}

cudaError_t launch_flash_attn_fwd(const FlashAttnParams& p) {
  if (flash_attn_check(p, /*backward=*/false) != nullptr) return cudaErrorInvalidValue;
  return FLASH_DTYPE_SWITCH(p.dtype, T, [&] {
    return FLASH_HEADDIM_SWITCH(p.D, kD, [&] { return flash::run_flash_fwd<flash::FwdDefault<kD>, T>(p); });
  });
}

}  // namespace attnlab::kernels
