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
  std::cout << "validating each implementation against a peer (relative RMS of o, dq, dk, dv), then timing\n";
  std::cout << bench::op_bench_table({}, /*header=*/true) << std::flush;
  auto rows = bench::run_op_bench(a.cfg, [](const bench::OpBenchRow& r) {
    std::cout << bench::op_bench_table({r}, /*header=*/false) << std::flush;  // each row as it is done
  });
  std::cout << "TFLOP/s: FlashAttention's convention (forward 4 B H T^2 D, halved when causal; backward 2.5x "
               "forward); ours/x: ours' TFLOP/s over x's (> 1: ours faster)\n";
  if (!a.out.empty()) {
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
      "Our attention kernels against their peers (SDPA flash, SDPA cuDNN) on CUDA: errors, ms, TFLOP/s");
  static BenchOpsArgs a;
  cmd->add_option("--ops", a.cfg.ops, "ops to time (comma-separated): softmax")
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
  cmd->add_option("--out", a.out, "CSV file to write (atomically), e.g. bench/results/NAME.csv");
  cmd->add_option("--commit", a.commit, "commit to record in the CSV's header");
  cmd->callback([] { bench_ops(a); });
}

}  // namespace attnlab::cli
