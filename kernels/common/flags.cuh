// Ready flags between two kernels that run at the same time on two streams: a producer that writes one
// piece of work per block and never waits, and a consumer that spins until the piece it needs is posted
// (delta_wy's forward feeding delta_chunk's walk, docs/kernels.md "Streamed forward"; delta_chunk's backward
// walk feeding its output pass, "Streamed backward"). One int per piece,
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

// Counters for a consumer that needs n posts (one per producer block that writes a part of the piece): the
// streamed backward's walk posts once per value slice, and delta_bwd_out waits for all of them.
__device__ __forceinline__ void post_count(int* counter) {
  __threadfence();
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;" ::"l"(counter), "r"(1) : "memory");
}

__device__ __forceinline__ int load_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Waits until *counter >= n; false if timeout_ns passed first (0: no timeout). One thread calls it and then
// a barrier publishes the result (the acquire and the barrier order the block's later reads, as CUTLASS's
// semaphore does). The timeout is how a consumer stays deadlock-free where it cannot know that its producer
// is resident: it gives up and leaves the piece to a pass that runs after the producer.
__device__ __forceinline__ bool wait_count(const int* counter, int n, unsigned long long timeout_ns = 0) {
  if (load_acquire(counter) >= n) return true;
  const unsigned long long t0 = global_ns();
  while (load_acquire(counter) < n) {
    __nanosleep(200);
    if (timeout_ns && global_ns() - t0 > timeout_ns) return false;
  }
  return true;
}

}  // namespace attnlab::kernels
