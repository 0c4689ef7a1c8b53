// Op benchmarks on CUDA: our kernels against their peers in the same run (validated first, CUDA events,
// medians), for `attnlab bench ops` and the studies.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace attnlab::bench {

// The ops `bench ops` knows: softmax (our flash kernel against SDPA), the linear family (our CUDA kernel and
// our libtorch chunk form, beside FLA's times from bench/fla_bench.py) and the one-token decode step.
const std::vector<std::string>& op_bench_known_ops();

struct OpBenchConfig {
  std::vector<std::string> ops = {"softmax"};  // op_bench_known_ops()
  std::string dtype = "bf16";                  // bf16 | fp16
  std::vector<int64_t> head_dims = {128, 64};
  std::vector<int64_t> seq_lens = {512, 1024, 2048, 4096, 8192, 16384, 32768};
  int64_t tokens = 32768;  // B * T of every shape (B = tokens / T), as in PERFORMANCE.md
  int64_t heads = 16;
  bool causal = true;
  int warmup = 5;   // untimed runs before the timed ones (clocks, caches, cuDNN plans)
  int repeat = 20;  // timed runs; the median is reported
  uint64_t seed = 0;
  // Linear family (linear_attention, simple_gla, gla, delta_rule, gated_delta_rule, gated_delta_rule_step):
  double bandwidth_gbs = 4800;  // memory bandwidth of the floor_* columns (H200: 4.8 TB/s)
  int chunk_repeat = 3;         // timed runs of the libtorch chunk form (a slow baseline); 0: skip it
  std::vector<int64_t> decode_batches = {1, 32};  // gated_delta_rule_step: B (T = 1, K = V = decode_dim)
  int64_t decode_dim = 128;
  std::string fla_csv;  // bench/fla_bench.py's CSV: FLA's times beside ours (empty: none)
};

// One implementation at one shape. Times are NaN where the implementation could not run (see note).
struct OpBenchRow {
  static constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  std::string op, impl, dtype;  // impl: softmax: ours, sdpa_flash, sdpa_cudnn; linear family: kernel, chunk
                                // (and naive for gated_delta_rule_step)
  int64_t B = 0, T = 0, H = 0, D = 0;
  bool causal = true;
  double fwd_ms = 0, fwdbwd_ms = 0;          // median milliseconds: forward; forward + backward
  double fwd_tflops = 0, fwdbwd_tflops = 0;  // FlashAttention's FLOP convention (softmax_fwd_flops)
  // softmax: ours' TFLOP/s over this row's; linear family: FLA's time over this row's (> 1: ours is faster)
  double ratio_fwd = 0, ratio_fwdbwd = 0;
  std::string ref;  // the implementation the errors below are measured against
  double err_o = 0, err_dq = 0, err_dk = 0, err_dv = 0;  // rms(this - ref) / rms(ref)
  // Linear family only (NaN elsewhere): errors of the final state and of the gradients in g, beta and h0
  // (where the op has them); the memory floor (bytes of q, k, v read and o written; for fwd+bwd also do read
  // and dq, dk, dv written) at bandwidth_gbs; the peak bytes of one fwd+bwd, its inputs included; FLA's row.
  double err_ht = nan, err_dg = nan, err_dbeta = nan, err_dh0 = nan;
  double floor_ms = nan, floor_fwdbwd_ms = nan, bandwidth_gbs = nan;
  double peak_mib = nan;
  double fla_fwd_ms = nan, fla_fwdbwd_ms = nan, fla_peak_mib = nan;
  std::string fla_note;  // FLA's row's note, or "no FLA row" when a CSV was given without this shape
  std::string note;      // "unavailable: ...", "MISMATCH: ..." or empty
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

// A fixed-width table of the rows for the terminal, with its two header lines if `header`. Softmax rows and
// the linear family's rows have different columns: op_bench_table prints either kind (the header of the
// first row's kind, or of `linear` when rows is empty).
std::string op_bench_table(const std::vector<OpBenchRow>& rows, bool header = true, bool linear = false);

// True for the ops of the linear family (their rows have the linear table's columns).
bool is_linear_op(const std::string& op);

// FLA's rows from bench/fla_bench.py's CSV (columns op,impl,B,T,H,D,dtype,fwd_ms,fwdbwd_ms,peak_mib,note;
// '#' lines skipped), put beside ours: every row of `rows` whose (op, B, T, H, D, dtype) FLA has gets its
// fla_* fields and ratio_fwd / ratio_fwdbwd = FLA's ms / this row's ms. Throws when the file cannot be read
// or has no such header.
void attach_fla_csv(std::vector<OpBenchRow>& rows, const std::string& path);

// Causal / full softmax attention FLOPs, FlashAttention's convention: forward 4 B H T^2 D, halved when
// causal; the backward counts 2.5x the forward, so forward + backward is 3.5x.
double softmax_fwd_flops(int64_t B, int64_t H, int64_t T, int64_t D, bool causal);

// Median of `fn`'s time in milliseconds between two CUDA events on the legacy default stream (the one
// PyTorch launches on here), after `warmup` untimed calls. `before_each` (if set) runs before each timed
// call, outside the timed region (e.g. an L2 flush). Throws without CUDA.
double time_cuda_ms(const std::function<void()>& fn, int warmup, int repeat,
                    const std::function<void()>& before_each = {});

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" for the current device; throws without CUDA.
std::string cuda_device_description();

}  // namespace attnlab::bench
