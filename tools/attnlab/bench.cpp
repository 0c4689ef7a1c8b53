// `attnlab bench ops`: our kernels against their peers on CUDA (validated, timed), as a table and a CSV.
#include <ctime>
#include <iostream>
#include <string>
#include <vector>

#include "attnlab/bench/op_bench.h"
#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "commands.h"

namespace attnlab::cli {
namespace {

struct BenchOpsArgs {
  bench::OpBenchConfig cfg;
  std::string out;     // CSV path; empty: only the table
  std::string commit;  // recorded in the CSV's header when given
};

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void bench_ops(const BenchOpsArgs& a) {
  // Fails with a clear message (exit status 2) on a machine without CUDA, before any work.
  std::string device = bench::cuda_device_description();
  std::string date = utc_now();
  std::cout << fmt::format(
      "bench ops: {} on {}, libtorch {}; {} {}, H {}, B*T {}, median of {} after {} warm-ups\n",
      fmt::join(a.cfg.ops, ","), device, compat::torch_version(), a.cfg.dtype,
      a.cfg.causal ? "causal" : "full", a.cfg.heads, a.cfg.tokens, a.cfg.repeat, a.cfg.warmup);
  bool any_softmax = false, any_linear = false;
  for (const auto& op : a.cfg.ops) (bench::is_linear_op(op) ? any_linear : any_softmax) = true;
  if (any_linear)
    std::cout << fmt::format(
        "linear family: impl kernel (our CUDA kernel) validated against the chunk form in float32 (o, final "
        "state, gradients of q, k, v, g, beta, h0), impl chunk (our libtorch chunk form) as a baseline; "
        "memory floor at {:.0f} GB/s{}\n",
        a.cfg.bandwidth_gbs, a.cfg.fla_csv.empty() ? "" : "; FLA's times from " + a.cfg.fla_csv);
  if (any_softmax)
    std::cout
        << "validating each implementation against a peer (relative RMS of o, dq, dk, dv), then timing\n";
  std::vector<std::string> comments = {
      "attnlab bench ops: our kernels against their peers, validated then timed (CUDA events, median)",
      "device: " + device,
      "date: " + date,
      "commit: " + (a.commit.empty() ? std::string("not given (--commit)") : a.commit),
      "libtorch: " + compat::torch_version(),
      "command: " + command_line(),
      fmt::format("shapes: B = {} / T, H = {}, {}, warm-up {}, median of {}", a.cfg.tokens, a.cfg.heads,
                  a.cfg.causal ? "causal" : "full", a.cfg.warmup, a.cfg.repeat),
      "flops: forward 4*B*H*T^2*D (/2 causal), backward 2.5x forward; ratio_* = ours' TFLOP/s / this row's",
      "err_*: rms(this - ref) / rms(ref) of o and the gradients of sum(o * do)",
  };
  if (any_linear) {
    comments.push_back(
        fmt::format("linear family: impl kernel = ops::<op>(args, Impl::kernel), impl chunk = Impl::chunk "
                    "(libtorch, median of {} after 1 warm-up); errors of kernel against the chunk form on "
                    "float32 copies, with h0 and dht ~ N(0,1) (ref chunk_f32), gradients of sum(o*do) + "
                    "sum(ht*dht); timing with h0 none, no final state",
                    a.cfg.chunk_repeat));
    comments.push_back(
        "linear inputs: q, k ~ N(0,1), k (and q for the delta rule) L2-normalised, v ~ N(0,1), g = "
        "logsigmoid(N(0,1))/16 float32, beta = sigmoid(N(0,1)); a 256 MiB L2 flush before each timed run");
    comments.push_back(
        fmt::format("floor_ms: bytes of q, k, v read + o written; floor_fwdbwd_ms adds do read + dq, dk, dv "
                    "written; at bandwidth_gbs = {:.0f} GB/s (--bandwidth-gbs); peak_mib: MemoryMeter peak "
                    "of one fwd+bwd + the inputs (q, k, v, gates, do)",
                    a.cfg.bandwidth_gbs));
    comments.push_back("linear ratio_*: FLA's ms / this row's ms (> 1: ours faster); fla_*: " +
                       (a.cfg.fla_csv.empty() ? std::string("no --fla-csv given") : a.cfg.fla_csv));
    comments.push_back(
        "gated_delta_rule_step: one token (T = 1) through ops::gated_delta_rule with h0 and the final state, "
        "no autograd; fwd_ms in ms; errors against the naive form in float32 (o, ht)");
  }
  // Each row as it is done, under the header of its kind (softmax and the linear family differ); the CSV is
  // rewritten after each row, so that a run stopped from outside (a time limit) keeps the rows it finished.
  std::string last_kind;
  std::vector<bench::OpBenchRow> so_far;
  auto rows = bench::run_op_bench(a.cfg, [&](const bench::OpBenchRow& r) {
    std::string kind = bench::is_linear_op(r.op) ? "linear" : "softmax";
    std::cout << bench::op_bench_table({r}, /*header=*/kind != last_kind) << std::flush;
    last_kind = kind;
    so_far.push_back(r);
    if (!a.out.empty()) write_file_atomic(a.out, bench::op_bench_csv(so_far, comments));
  });
  if (any_softmax)
    std::cout << "TFLOP/s: FlashAttention's convention (forward 4 B H T^2 D, halved when causal; backward "
                 "2.5x forward); ours/x: ours' TFLOP/s over x's (> 1: ours faster)\n";
  if (any_linear)
    std::cout << "FLA/x: FLA's time over this row's (> 1: ours faster); floor: bytes of q, k, v, o (fwd; "
                 "fwd+bwd adds do, dq, dk, dv) at the bandwidth; peak: one fwd+bwd, inputs included; err "
                 "grad: the largest gradient error; gated_delta_rule_step in microseconds\n";
  if (!a.out.empty()) {
    write_file_atomic(a.out, bench::op_bench_csv(rows, comments));
    std::cout << "wrote " << a.out << "\n";
  }
  if (bench::any_mismatch(rows)) {
    std::cerr << "bench ops: some implementations disagree beyond the tolerance (MISMATCH rows above)\n";
    exit_code() = 1;
  }
}

}  // namespace

void add_bench(CLI::App& app) {
  auto* bench_cmd = app.add_subcommand(
      "bench", "Benchmarks: ops (validated, then timed on the GPU) and the study's stages");
  add_bench_stages(bench_cmd);
  bench_cmd->require_subcommand(1);
  auto* cmd = bench_cmd->add_subcommand(
      "ops",
      "Our attention kernels against their peers on CUDA: softmax against SDPA flash / cuDNN (errors, ms, "
      "TFLOP/s); the linear family's CUDA kernels against our chunk form and FLA's times (--fla-csv)");
  static BenchOpsArgs a;
  cmd->add_option("--ops", a.cfg.ops,
                  "ops to time (comma-separated): softmax, linear_attention, simple_gla, gla, delta_rule, "
                  "gated_delta_rule, gated_delta_rule_step")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--dtype", a.cfg.dtype, "element type: bf16 or fp16")
      ->check(CLI::IsMember({"bf16", "fp16"}))
      ->capture_default_str();
  cmd->add_option("--head-dims", a.cfg.head_dims, "head dims D (comma-separated; ours: 64, 128)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--seq-lens", a.cfg.seq_lens,
                  "sequence lengths T (comma-separated), each dividing --tokens")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--tokens", a.cfg.tokens, "tokens per shape: B = tokens / T")->capture_default_str();
  cmd->add_option("--heads", a.cfg.heads, "heads H (q, k and v alike)")->capture_default_str();
  cmd->add_option("--warmup", a.cfg.warmup, "untimed runs before timing")->capture_default_str();
  cmd->add_option("--repeat", a.cfg.repeat, "timed runs; the median is reported")->capture_default_str();
  cmd->add_option("--seed", a.cfg.seed, "random seed of the inputs")->capture_default_str();
  cmd->add_option("--bandwidth-gbs", a.cfg.bandwidth_gbs,
                  "memory bandwidth in GB/s of the linear family's floor_ms (H200 4800, H100 SXM 3350)")
      ->capture_default_str();
  cmd->add_option("--chunk-repeat", a.cfg.chunk_repeat,
                  "timed runs of the libtorch chunk form (linear family; 0: not timed)")
      ->capture_default_str();
  cmd->add_option("--decode-batches", a.cfg.decode_batches,
                  "batch sizes of gated_delta_rule_step (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--decode-dim", a.cfg.decode_dim, "K = V of gated_delta_rule_step")->capture_default_str();
  cmd->add_option("--fla-csv", a.cfg.fla_csv,
                  "bench/fla_bench.py's CSV: FLA's times beside ours, ratio = FLA ms / ours (linear family)");
  cmd->add_option("--out", a.out, "CSV file to write (atomically), e.g. bench/results/NAME.csv");
  cmd->add_option("--commit", a.commit, "commit to record in the CSV's header");
  cmd->callback([] { bench_ops(a); });
}

}  // namespace attnlab::cli
