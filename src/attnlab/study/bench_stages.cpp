// The benchmark stages of the study: efficiency, memory scaling of the op alone, model scaling, inference
// latency and profiling. Each row says what its memory number is (memory_source) and how it was timed
// (clock); a failure of one point (an OOM) is a row with that status, and the sweep goes on.
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "attnlab/bench/torch_profile.h"
#include "attnlab/bench/tracer.h"
#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/core/runtime.h"
#include "attnlab/data/corpus.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/ops/registry.h"
#include "attnlab/ops/softmax_attention.h"
#include "attnlab/report/csv.h"
#include "attnlab/report/fit.h"
#include "attnlab/study/measure.h"
#include "attnlab/study/stages.h"
#include "attnlab/train/optim.h"
#include "attnlab/train/trainer.h"

namespace fs = std::filesystem;

namespace attnlab::study {
namespace {

// The vocabulary of the benchmark stages' models: study.bench_vocab when set, else that of the study's corpus
// (the models the study trains), or 5001 (seed 000's) without one.
int64_t study_vocab(const StudyConfig& cfg) {
  if (cfg.study.bench_vocab > 0) return cfg.study.bench_vocab;
  static std::map<std::string, int64_t> cache;
  const std::string& path = cfg.run.data.path;
  if (!cache.count(path)) {
    if (fs::exists(path)) {
      cache[path] = load_corpus(cfg.run.data).tokenizer.vocab_size();
    } else {
      spdlog::warn("data.path '{}' does not exist: benchmarks use seed 000's vocabulary of 5001", path);
      cache[path] = 5001;
    }
  }
  return cache[path];
}

struct StepResult {
  std::string status = "ok";  // ok | OOM | error: ...
  double step_ms = NAN, tokens_per_s = NAN;
  int64_t peak_bytes = -1;
  std::string clock;
};

// A model, its AdamW and a batch of random tokens: one training step (forward, loss, backward, AdamW) at a
// time, with the tracer's step spans.
struct TrainRig {
  LanguageModel model;
  std::unique_ptr<torch::optim::AdamW> opt;
  bool autocast = false;
  int64_t vocab = 0;
  torch::Tensor x, y;

  TrainRig(const ModelOptions& mo, const std::map<std::string, std::shared_ptr<AnyOptions>>& mixers,
           int64_t B, int64_t T, const torch::Device& device)
      : model(mo, mixers), vocab(mo.vocab_size) {
    model->to(device);
    TrainOptions topt;
    opt = make_optimizer(*model, topt);
    autocast = use_autocast(topt, device);
    const auto o = torch::TensorOptions().dtype(torch::kLong).device(device);
    x = torch::randint(vocab, {B, T}, o);
    y = torch::randint(vocab, {B, T}, o);
  }

  void step() {
    ATTNLAB_TRACE("train_step", "step");
    opt->zero_grad();
    torch::Tensor loss;
    {
      ATTNLAB_TRACE("forward", "step");
      compat::CudaAutocast ac(autocast);
      auto logits = model->forward(x);
      loss = torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}).to(torch::kFloat),
                                                  y.reshape({-1}));
    }
    {
      ATTNLAB_TRACE("backward", "step");
      loss.backward();
    }
    ATTNLAB_TRACE("optimizer", "step");
    opt->step();
  }
};

// Whole training steps (forward, loss, backward, AdamW) of a model on random tokens; the peak counts the
// parameters, gradients, optimiser state and activations (the meter starts before the model exists).
StepResult bench_train_step(const ModelOptions& mo,
                            const std::map<std::string, std::shared_ptr<AnyOptions>>& mixers, int64_t B,
                            int64_t T, const torch::Device& device, int warmup, int repeat,
                            bool trace = false) {
  StepResult r;
  try {
    MemoryMeter meter;
    TrainRig rig(mo, mixers, B, T, device);
    auto step = [&] { rig.step(); };
    if (trace) {
      for (int i = 0; i < warmup; ++i) step();
      bench::Tracer::global().clear();
      bench::Tracer::global().enable();
    }
    auto t = time_region(step, device, trace ? 0 : warmup, repeat);
    bench::Tracer::global().disable();
    r.step_ms = t.median_ms;
    r.clock = t.clock;
    r.tokens_per_s = double(B * T) / (t.median_ms / 1000.0);
    r.peak_bytes = meter.peak_bytes();
  } catch (const std::exception& e) {
    bench::Tracer::global().disable();
    if (!is_oom(e)) throw;
    r.status = "OOM";
    spdlog::warn("out of memory at B {} T {}: recorded as OOM", B, T);
  }
  return r;
}

// What the libtorch-profiler pass of one profiled point produced (a row of results/profile_torch.csv).
struct TorchProfileRun {
  std::string status = "ok";  // ok | OOM | unavailable
  std::string trace_source;   // libtorch (its own Kineto trace) | attnlab (written from libtorch's events)
  int64_t events = 0;
  std::string note;
};

// The same training steps again, without the MemoryMeter (it holds the profiler's slot), under libtorch's
// profiler and our tracer together: profiler/<stem>_torch_trace.json (libtorch's Chrome trace, or, where
// libtorch cannot write one, its events written by attnlab), <stem>_merged_trace.json (our spans of this run
// and libtorch's events in one trace, two processes), <stem>_torch_top_ops.csv.
TorchProfileRun torch_profile_steps(const ModelOptions& mo,
                                    const std::map<std::string, std::shared_ptr<AnyOptions>>& mixers,
                                    int64_t B, int64_t T, const torch::Device& device, int warmup, int repeat,
                                    const fs::path& pdir, const std::string& stem) {
  TorchProfileRun run;
  auto& tracer = bench::Tracer::global();
  const fs::path torch_trace = pdir / (stem + "_torch_trace.json");
  compat::OpProfile prof;
  try {
    TrainRig rig(mo, mixers, B, T, device);
    for (int i = 0; i < warmup; ++i) rig.step();
    if (device.is_cuda()) torch::cuda::synchronize();
    tracer.clear();
    tracer.enable();
    const std::string why = compat::start_op_profiler(device.is_cuda());
    if (!why.empty()) {
      tracer.disable();
      run.status = "unavailable";
      run.note = why;
      return run;
    }
    try {
      for (int i = 0; i < repeat; ++i) rig.step();
      if (device.is_cuda()) torch::cuda::synchronize();
    } catch (...) {
      tracer.disable();
      (void)compat::stop_op_profiler("");
      throw;
    }
    prof = compat::stop_op_profiler(torch_trace.string());
    tracer.disable();
  } catch (const std::exception& e) {
    tracer.disable();
    if (!is_oom(e)) throw;
    run.status = "OOM";
    run.note = "out of memory";
    return run;
  }
  if (!prof.collected) {
    run.status = "unavailable";
    run.note = prof.note;
    tracer.clear();
    return run;
  }
  run.events = static_cast<int64_t>(prof.events.size());
  if (prof.trace_written) {
    run.trace_source = "libtorch";
  } else {
    run.trace_source = "attnlab";
    run.note = "libtorch wrote no trace (" + prof.note + "); its events, written by attnlab";
    bench::write_torch_events_chrome_trace(torch_trace, prof.events,
                                           "libtorch profiler (events via attnlab)");
  }
  tracer.write_chrome_trace(pdir / (stem + "_merged_trace.json"), {torch_trace});
  report::Table top = bench::torch_top_ops(prof.events);
  top.comments = {fmt::format("libtorch's profiler over {} training step(s), {} events, trace by {}{}",
                              repeat, run.events, run.trace_source, run.note.empty() ? "" : ": " + run.note)};
  report::write_csv(pdir / (stem + "_torch_top_ops.csv"), top);
  tracer.clear();
  return run;
}

// The model of an entry for the study's vocabulary (parameter-matched, or as given for a fixed-shape variant)
// (its parameter count included, so that no stage builds a model only to count).
CalibratedModel model_for(const StudyConfig& cfg, const StudyEntry& e, int64_t parameters) {
  auto c = calibrated(e, parameters, study_vocab(cfg));
  c.model.vocab_size = study_vocab(cfg);
  return c;
}

std::string device_name(const torch::Device& d) {
  return d.str();
}

}  // namespace

bool stage_efficiency(const StudyConfig& cfg, const std::string& dir) {
  const torch::Device device = resolve_device(cfg.study.device);
  report::Table t;
  t.comments = {
      "whole training steps on random tokens (forward, loss, backward, AdamW); peak_bytes counts weights, "
      "gradients, optimiser state and activations"};
  t.columns = {"mixer",  "parameters",    "T",     "batch",  "step_ms",   "tokens_per_s", "peak_bytes",
               "status", "memory_source", "clock", "device", "base_mixer"};
  for (const auto& e : study_entries(cfg)) {
    const std::string& mixer = e.label;
    const CalibratedModel c = model_for(cfg, e, cfg.study.parameters);
    const ModelOptions& mo = c.model;
    for (int64_t T : cfg.study.efficiency_seq_lens) {
      const int64_t B = std::max<int64_t>(1, cfg.study.efficiency_tokens / T);
      auto r = bench_train_step(mo, e.run.mixers, B, T, device, cfg.study.warmup, cfg.study.repeat);
      spdlog::info("efficiency {} T {} B {}: {:.2f} ms/step, {:.0f} tok/s, peak {:.1f} MiB {}", mixer, T, B,
                   r.step_ms, r.tokens_per_s, double(r.peak_bytes) / (1 << 20), r.status);
      t.add_row({mixer, c.parameters, T, B, r.step_ms, r.tokens_per_s, r.peak_bytes, r.status,
                 MemoryMeter::source(), r.clock, device_name(device), e.mixer});
      if (stop_requested()) return false;
    }
  }
  report::write_csv(fs::path(dir) / "results" / "efficiency.csv", t);
  return true;
}

// The op each mixer runs (the memory stage measures the op alone).
std::string op_of_mixer(const std::string& mixer) {
  static const std::map<std::string, std::string> m = {{"softmax", "softmax_attention"},
                                                       {"linear_attention", "linear_attention"},
                                                       {"retnet", "retention"},
                                                       {"simple_gla", "simple_gla"},
                                                       {"mamba2", "simple_gla"},
                                                       {"gla", "gla"},
                                                       {"deltanet", "delta_rule"},
                                                       {"gated_deltanet", "gated_delta_rule"},
                                                       {"rwkv6", "rwkv6"},
                                                       {"based", "based"},
                                                       {"hgrn2", "gla"},
                                                       {"gsa", "gla"}};
  auto it = m.find(mixer);
  return it == m.end() ? std::string() : it->second;
}

bool stage_memory(const StudyConfig& cfg, const std::string& dir) {
  const torch::Device device = resolve_device(cfg.study.device);
  const auto dtype = device.is_cuda() ? torch::kBFloat16 : torch::kFloat;
  const int64_t H = 4, D = 64, B = cfg.study.memory_batch;
  report::Table t, fits;
  t.comments = {
      "the op alone, forward + backward on random inputs [B, T, H=4, D=64]; peak_bytes: allocations during "
      "the op (outputs, saved tensors, gradients), inputs excluded"};
  t.columns = {"mixer",         "op",    "T",      "batch",     "fwd_bwd_ms", "peak_bytes", "status",
               "memory_source", "clock", "device", "base_mixer"};
  fits.columns = {"mixer", "op", "slope", "r2", "points", "base_mixer"};
  for (const auto& e : study_entries(cfg)) {
    const std::string& mixer = e.label;
    const std::string op = op_of_mixer(e.mixer);
    if (op.empty()) {
      spdlog::warn("memory: no op known for mixer '{}'; {} skipped", e.mixer, mixer);
      continue;
    }
    std::vector<double> xs, ys;
    for (int64_t T : cfg.study.memory_seq_lens) {
      auto o = torch::TensorOptions().dtype(dtype).device(device);
      const int64_t K = op == "based" ? 16 : D;  // Based's Taylor features grow as K^2: the paper's K = 16
      auto q = torch::randn({B, T, H, K}, o).requires_grad_(),
           v = torch::randn({B, T, H, D}, o).requires_grad_();
      // Unit-norm keys keep the delta rule stable (its layers L2-normalise k) and do no harm elsewhere.
      auto k = torch::nn::functional::normalize(torch::randn({B, T, H, K}, o),
                                                torch::nn::functional::NormalizeFuncOptions().dim(-1))
                   .requires_grad_();
      std::vector<torch::Tensor> leaves = {q, k, v};
      std::function<torch::Tensor()> run;
      if (op == "softmax_attention") {
        run = [&] {
          ops::SoftmaxArgs a;
          a.q = q;
          a.k = k;
          a.v = v;
          return ops::softmax_attention(a);
        };
      } else {
        const auto& entry = ops::OpRegistry::instance().get(op);
        ops::RecurrentArgs a;
        a.q = q;
        a.k = k;
        a.v = v;
        auto f32 = o.dtype(torch::kFloat);
        for (const auto& in : entry.inputs) {
          if (in == "g") {  // log decays near 0 (decays near 1), per channel for gla and rwkv6
            const bool per_channel = op == "gla" || op == "rwkv6";
            auto shape = per_channel ? std::vector<int64_t>{B, T, H, K} : std::vector<int64_t>{B, T, H};
            a.g = torch::nn::functional::logsigmoid(torch::randn(shape, f32) + 3).div(16).requires_grad_();
            leaves.push_back(a.g);
          } else if (in == "beta") {
            a.beta = torch::rand({B, T, H}, f32).requires_grad_();
            leaves.push_back(a.beta);
          } else if (in == "u") {
            a.u = torch::randn({H, K}, f32).requires_grad_();
            leaves.push_back(a.u);
          }
        }
        run = [&entry, a] { return entry.fn(a, ops::Impl::automatic).o; };
      }
      std::string status = "ok";
      double ms = NAN;
      int64_t peak = -1;
      std::string clock;
      try {
        auto once = [&] {
          auto out = run();
          auto grads = torch::autograd::grad({out}, leaves, {torch::ones_like(out)});
        };
        {
          MemoryMeter meter;
          once();
          peak = meter.peak_bytes();
        }
        auto tm = time_region(once, device, cfg.study.warmup, cfg.study.repeat);
        ms = tm.median_ms;
        clock = tm.clock;
        xs.push_back(double(T));
        ys.push_back(double(peak));
      } catch (const std::exception& e) {
        if (!is_oom(e)) throw;
        status = "OOM";
      }
      spdlog::info("memory {} ({}) T {}: {:.2f} ms, peak {:.2f} MiB {}", mixer, op, T, ms,
                   double(peak) / (1 << 20), status);
      t.add_row(
          {mixer, op, T, B, ms, peak, status, MemoryMeter::source(), clock, device_name(device), e.mixer});
      if (stop_requested()) return false;
    }
    if (xs.size() >= 2) {
      auto f = report::fit_power_law(xs, ys, "memory of " + op);
      fits.add_row({mixer, op, f.slope, f.r2, int64_t(f.n), e.mixer});
    }
  }
  report::write_csv(fs::path(dir) / "results" / "memory.csv", t);
  report::write_csv(fs::path(dir) / "results" / "memory_fit.csv", fits);
  return true;
}

bool stage_scaling(const StudyConfig& cfg, const std::string& dir) {
  const torch::Device device = resolve_device(cfg.study.device);
  report::Table t;
  t.columns = {"mixer",      "target_parameters", "parameters", "d_model", "n_layers",      "T",     "batch",
               "step_ms",    "tokens_per_s",      "peak_bytes", "status",  "memory_source", "clock", "device",
               "base_mixer", "calibrated"};
  for (const auto& e : study_entries(cfg)) {
    const std::string& mixer = e.label;
    // A variant that fixes the shape has one size: one row, as given (target_parameters empty).
    std::vector<int64_t> targets = cfg.study.scaling_parameters;
    if (e.fixed_shape && !targets.empty()) {
      spdlog::info("scaling {}: the variant fixes the shape; one row, as given", mixer);
      targets.resize(1);
    }
    for (int64_t target : targets) {
      const CalibratedModel c = model_for(cfg, e, target);
      const ModelOptions& mo = c.model;
      const int64_t B = cfg.study.scaling_batch, T = cfg.study.scaling_seq_len;
      auto r = bench_train_step(mo, e.run.mixers, B, T, device, cfg.study.warmup, cfg.study.repeat);
      spdlog::info("scaling {} {} parameters: {:.1f} ms/step, {:.0f} tok/s", mixer, c.parameters, r.step_ms,
                   r.tokens_per_s);
      t.add_row({mixer, e.fixed_shape ? report::Cell{} : report::Cell{target}, c.parameters, mo.d_model,
                 mo.n_layers, T, B, r.step_ms, r.tokens_per_s, r.peak_bytes, r.status, MemoryMeter::source(),
                 r.clock, device_name(device), e.mixer, std::string(e.fixed_shape ? "no" : "yes")});
      if (stop_requested()) return false;
    }
  }
  report::write_csv(fs::path(dir) / "results" / "scaling.csv", t);
  return true;
}

bool stage_latency(const StudyConfig& cfg, const std::string& dir) {
  const torch::Device device = resolve_device(cfg.study.device);
  const bool autocast = device.is_cuda();
  report::Table pre, dec;
  pre.columns = {"mixer",        "parameters", "prompt_len", "prefill_ms",
                 "tokens_per_s", "clock",      "device",     "base_mixer"};
  dec.columns = {
      "mixer",         "parameters", "context", "decode_ms_per_token", "state_bytes", "cache_bytes_measured",
      "memory_source", "clock",      "device",  "base_mixer"};
  torch::NoGradGuard ng;
  for (const auto& e : study_entries(cfg)) {
    const std::string& mixer = e.label;
    const ModelOptions mo = model_for(cfg, e, cfg.study.parameters).model;
    LanguageModel model(mo, e.run.mixers);
    model->to(device);
    model->eval();
    const auto cache_opts =
        torch::TensorOptions().dtype(autocast ? torch::kBFloat16 : torch::kFloat).device(device);
    const auto tok = torch::TensorOptions().dtype(torch::kLong).device(device);
    for (int64_t P : cfg.study.prompt_lens) {
      auto prompt = torch::randint(mo.vocab_size, {1, P}, tok);
      auto tm = time_region(
          [&] {
            compat::CudaAutocast ac(autocast);
            auto cache = model->make_cache(1, P + 1, cache_opts);
            (void)model->forward(prompt, &cache);
          },
          device, cfg.study.warmup, cfg.study.repeat);
      pre.add_row({mixer, model->num_parameters(), P, tm.median_ms, double(P) / (tm.median_ms / 1000),
                   tm.clock, device_name(device), e.mixer});
    }
    for (int64_t C : cfg.study.decode_contexts) {
      const int64_t extra = cfg.study.warmup + cfg.study.repeat + 1;
      int64_t measured = 0;
      ModelCache cache;
      {
        MemoryMeter meter;
        cache = model->make_cache(1, C + extra, cache_opts);
        compat::CudaAutocast ac(autocast);
        (void)model->forward(torch::randint(mo.vocab_size, {1, C}, tok), &cache);
        measured = meter.current_bytes();  // what stays allocated: the cache (or state) and nothing else
      }
      auto next = torch::randint(mo.vocab_size, {1, 1}, tok);
      auto tm = time_region(
          [&] {
            compat::CudaAutocast ac(autocast);
            (void)model->forward(next, &cache);
          },
          device, cfg.study.warmup, cfg.study.repeat);
      int64_t state = 0;
      for (const auto& m : model->mixers()) state += m->info().state_bytes(C);
      spdlog::info("latency {} context {}: {:.3f} ms/token, state {} B (measured {} B)", mixer, C,
                   tm.median_ms, state, measured);
      dec.add_row({mixer, model->num_parameters(), C, tm.median_ms, state, measured, MemoryMeter::source(),
                   tm.clock, device_name(device), e.mixer});
      if (stop_requested()) return false;
    }
  }
  report::write_csv(fs::path(dir) / "results" / "latency_prefill.csv", pre);
  report::write_csv(fs::path(dir) / "results" / "latency_decode.csv", dec);
  return true;
}

bool stage_profile(const StudyConfig& cfg, const std::string& dir) {
  const torch::Device device = resolve_device(cfg.study.device);
  const fs::path pdir = fs::path(dir) / "profiler";
  fs::create_directories(pdir);
  report::Table all, torch_runs;
  all.columns = {"mixer",   "T",       "batch",           "span",      "calls", "total_ms", "self_ms",
                 "mean_us", "percent", "step_peak_bytes", "base_mixer"};
  torch_runs.comments = {
      "libtorch's profiler over the same training steps (a second run, without the memory meter): "
      "profiler/<mixer>_T<T>_torch_trace.json, _merged_trace.json (with our spans), _torch_top_ops.csv"};
  torch_runs.columns = {"mixer", "T", "batch", "status", "trace_source", "events", "note", "base_mixer"};
  for (const auto& e : study_entries(cfg)) {
    const std::string& mixer = e.label;
    const ModelOptions mo = model_for(cfg, e, cfg.study.parameters).model;
    for (int64_t T : cfg.study.profile_seq_lens) {
      const int64_t B = std::max<int64_t>(1, cfg.study.efficiency_tokens / T);
      const int warmup = std::max(1, cfg.study.warmup);
      auto r = bench_train_step(mo, e.run.mixers, B, T, device, warmup, cfg.study.repeat, /*trace=*/true);
      auto& tracer = bench::Tracer::global();
      const std::string stem = fmt::format("{}_T{}", mixer, T);
      tracer.write_chrome_trace(pdir / (stem + "_trace.json"));
      tracer.write_folded_stacks(pdir / (stem + "_stacks.txt"));
      auto top = tracer.top_ops();
      for (size_t i = 0; i < top.rows.size(); ++i)
        all.add_row({mixer, T, B, top.text(i, "name"), int64_t(*top.number(i, "calls")),
                     *top.number(i, "total_ms"), *top.number(i, "self_ms"), *top.number(i, "mean_us"),
                     *top.number(i, "percent"), r.peak_bytes, e.mixer});
      tracer.clear();
      if (stop_requested()) return false;
      if (cfg.study.profile_torch_steps == 0) continue;
      auto tp = torch_profile_steps(mo, e.run.mixers, B, T, device, warmup, cfg.study.profile_torch_steps,
                                    pdir, stem);
      spdlog::info("profile {} T {}: libtorch profiler {} ({} events{}{})", mixer, T, tp.status, tp.events,
                   tp.trace_source.empty() ? "" : ", trace by " + tp.trace_source,
                   tp.note.empty() ? "" : "; " + tp.note);
      torch_runs.add_row({mixer, T, B, tp.status, tp.trace_source, tp.events, tp.note, e.mixer});
      if (stop_requested()) return false;
    }
  }
  report::write_csv(fs::path(dir) / "results" / "profile.csv", all);
  if (cfg.study.profile_torch_steps > 0)
    report::write_csv(fs::path(dir) / "results" / "profile_torch.csv", torch_runs);
  return true;
}

}  // namespace attnlab::study
