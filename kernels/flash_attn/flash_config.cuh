// Tile sizes of the production flash-attention kernels, one constexpr function per choice with the
// reason next to it. The harness (harness/harness.cpp, tune_*.cpp) times alternatives against
// these on an H100; docs/kernels.md has the numbers behind each choice.
#pragma once

#include "kernels/flash_attn/flash_bwd_kernel.cuh"
#include "kernels/flash_attn/flash_fwd_kernel.cuh"

namespace attnlab::kernels::flash {

// ---- forward
// Query rows per block: 128. Each of the 4 warps owns 32 rows (two m16 tiles), so every K / V
// fragment read from shared memory feeds two mma's: 160 B of ldmatrix traffic per m16n8k16 on
// average instead of 256 with 16-row warps, which keeps shared-memory bandwidth (128 B/clk/SM)
// under the tensor-core rate. (Measured: 8 warps x 16 rows with Q in registers is 10-18% slower.)
constexpr int fwd_block_q(int /*head_dim*/) {
  return 128;
}
// Keys per stage: 64. The S tile (32 x 64 per warp = 64 fp32 registers) plus O (32 x D = 128
// registers at D=128) fit in 255 registers (at D=128 with a 4-byte spill, reloaded once per tile by
// the mask test); Bc=32 has no spill but re-reads Q twice as often and measured ~10% slower.
constexpr int fwd_block_k(int /*head_dim*/) {
  return 64;
}
// Warps: 4 (two blocks of 4 warps per SM at <= 255 registers: registers bound the occupancy).
constexpr int fwd_warps(int /*head_dim*/) {
  return 4;
}
// Stages: K/V tiles resident. D=128: 2 (Q + 2*(K+V) = 96 KiB, two blocks per SM; 3 stages would
// allow only one block and measured 30% slower). D=64: 3 (64 KiB, still two blocks; 2 and 3
// stages measured within +-3% of each other, the noise between runs, in both orders).
constexpr int fwd_stages(int head_dim) {
  return head_dim == 64 ? 3 : 2;
}
// Q from shared memory each tile (32-row warps cannot also hold Q's 64 fragment registers at D=128).
constexpr bool fwd_q_in_regs(int /*head_dim*/) {
  return false;
}
// Lazy rescaling of O (see FwdConfig::kLazyRescale): +7% at D=128.
constexpr bool fwd_lazy_rescale(int /*head_dim*/) {
  return true;
}

template <int kD>
using FwdDefault = FwdConfig<kD, fwd_block_q(kD), fwd_block_k(kD), fwd_warps(kD), fwd_stages(kD),
                             fwd_q_in_regs(kD), fwd_lazy_rescale(kD)>;

// ---- backward (FlashAttention-2 Algorithm 2: a block owns keys, loops over query blocks)
// Keys per block: 128 = 8 warps x 16 keys. Each warp keeps dK and dV for its 16 keys in registers
// (2 x 16 x D fp32 = 128 registers at D=128), which is what bounds it to 16 keys. 4-warp blocks of
// 64 keys (two per SM) measured 14% slower: twice the Q / dO traffic per key.
constexpr int bwd_block_k(int /*head_dim*/) {
  return 128;
}
// Query rows per step. D=128: 64 (S^T and dP^T, 16 keys x 64 queries, cost 32 registers each;
// 128 does not fit next to dK / dV). D=64: 128 (dK / dV take half the registers; halves the K / V
// fragment re-reads per query; measured 7% faster than 64). Rows of dS^T are then 128 or 256
// bytes, whole units of the swizzle.
constexpr int bwd_block_q(int head_dim) {
  return head_dim == 64 ? 128 : 64;
}
// dQ = dS K warp tiles: 2 m16 query tiles (32 x 32 at D=128: 32 ldmatrix per 64 mma instead of 40
// with 16 x 64 tiles, +2-4%). D=64 with 128-query steps: 1 (2 spilled there).
constexpr int bwd_dq_mtiles(int head_dim) {
  return head_dim == 64 ? 1 : 2;
}
constexpr int bwd_warps(int head_dim) {
  return bwd_block_k(head_dim) / 16;
}

template <int kD>
using BwdDefault = BwdConfig<kD, bwd_block_k(kD), bwd_block_q(kD), bwd_warps(kD), bwd_dq_mtiles(kD)>;

}  // namespace attnlab::kernels::flash
