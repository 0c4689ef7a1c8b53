// Ready flags between two kernels that run at the same time on two streams: a producer that writes one
// piece of work per block and never waits, and a consumer that spins until the piece it needs is posted
// (delta_wy's forward feeding delta_chunk's walk, docs/kernels.md "Streamed forward"). One int per piece,
// zeroed before the producer starts. Deadlock-free only while the consumer's blocks leave the producer
// room to run: the launcher's condition, not these helpers'.
#pragma once

namespace attnlab::kernels {

// Marks *flag ready: call from one thread after a __syncthreads() that follows every store of the piece.
// The fence makes the block's stores (ordered before this thread by the barrier) visible at gpu scope
// before the release store.
__device__ __forceinline__ void post_flag(int* flag) {
  __threadfence();
  asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(flag), "r"(1) : "memory");
}

// Waits until *flag is ready; every thread that then reads the piece calls it (an acquire per thread orders
// its own later reads, cp.async included, without a barrier).
__device__ __forceinline__ void wait_flag(const int* flag) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
  while (v == 0) {
    __nanosleep(100);
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
  }
}

}  // namespace attnlab::kernels
