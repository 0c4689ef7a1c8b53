// Op benchmarks on CUDA: our kernels against their peers in the same run (validated first, CUDA events,
// medians), for `attnlab bench ops` and the studies.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace attnlab::bench {

struct OpBenchConfig {
  std::vector<std::string> ops = {"softmax"};  // known: softmax
  std::string dtype = "bf16";                  // bf16 | fp16
  std::vector<int64_t> head_dims = {128, 64};
  std::vector<int64_t> seq_lens = {512, 1024, 2048, 4096, 8192, 16384, 32768};
  int64_t tokens = 32768;  // B * T of every shape (B = tokens / T), as in PERFORMANCE.md
  int64_t heads = 16;
  bool causal = true;
  int warmup = 5;   // untimed runs before the timed ones (clocks, caches, cuDNN plans)
  int repeat = 20;  // timed runs; the median is reported
  uint64_t seed = 0;
};

// One implementation at one shape. Times are NaN where the implementation could not run (see note).
struct OpBenchRow {
  std::string op, impl, dtype;  // impl (softmax): ours, sdpa_flash, sdpa_cudnn
  int64_t B = 0, T = 0, H = 0, D = 0;
  bool causal = true;
  double fwd_ms = 0, fwdbwd_ms = 0;          // median milliseconds: forward; forward + backward
  double fwd_tflops = 0, fwdbwd_tflops = 0;  // FlashAttention's FLOP convention (softmax_fwd_flops)
  double ratio_fwd = 0, ratio_fwdbwd = 0;    // ours' TFLOP/s over this row's (> 1: ours is faster)
  std::string ref;                           // the implementation the errors below are measured against
  double err_o = 0, err_dq = 0, err_dk = 0, err_dv = 0;  // rms(this - ref) / rms(ref)
  std::string note;                                      // "unavailable: ...", "MISMATCH: ..." or empty
};

// Runs every (op, head dim, sequence length): each implementation's output and gradients are first
// compared with a reference implementation (relative RMS), then timed. on_row (if set) sees each row as it
// is done. Throws attnlab::Error when there is no CUDA device or an option is invalid; a disagreement
// beyond the tolerance is not thrown but marked "MISMATCH" in the row's note.
std::vector<OpBenchRow> run_op_bench(const OpBenchConfig& cfg,
                                     const std::function<void(const OpBenchRow&)>& on_row = {});

// True when some row's note says MISMATCH.
bool any_mismatch(const std::vector<OpBenchRow>& rows);

// CSV: the comment lines (each written as "# line"), a header row, one line per row; NaN as empty cells.
std::string op_bench_csv(const std::vector<OpBenchRow>& rows, const std::vector<std::string>& comments);

// A fixed-width table of the rows for the terminal, with its two header lines if `header`.
std::string op_bench_table(const std::vector<OpBenchRow>& rows, bool header = true);

// Causal / full softmax attention FLOPs, FlashAttention's convention: forward 4 B H T^2 D, halved when
// causal; the backward counts 2.5x the forward, so forward + backward is 3.5x.
double softmax_fwd_flops(int64_t B, int64_t H, int64_t T, int64_t D, bool causal);

// Median of `fn`'s time in milliseconds between two CUDA events on the legacy default stream (the one
// PyTorch launches on here), after `warmup` untimed calls. Throws without CUDA.
double time_cuda_ms(const std::function<void()>& fn, int warmup, int repeat);

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" for the current device; throws without CUDA.
std::string cuda_device_description();

}  // namespace attnlab::bench
