// The report stage: figures from the stages' CSV files (PNG, PDF, SVG through gnuplot), TensorBoard event
// files with the scalars, and report.html. It reads only files, so it can be rerun on its own at any time
// (`attnlab study CONFIG --only report`), and it shows whatever stages have produced so far.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>

#include "attnlab/core/fs.h"
#include "attnlab/report/csv.h"
#include "attnlab/report/figures.h"
#include "attnlab/report/fit.h"
#include "attnlab/report/html.h"
#include "attnlab/report/tensorboard.h"
#include "attnlab/study/stages.h"

namespace fs = std::filesystem;

namespace attnlab::study {
namespace {

std::optional<report::Table> maybe_csv(const fs::path& p) {
  if (!fs::exists(p)) return std::nullopt;
  return report::read_csv(p);
}

bool ok_row(const report::Table& t, size_t i) {
  return !t.find_column("status") || t.text(i, "status") == "ok";
}

report::Figure make_figure(std::string name, std::string title, std::string xlabel, std::string ylabel) {
  report::Figure f;
  f.name = std::move(name);
  f.title = std::move(title);
  f.xlabel = std::move(xlabel);
  f.ylabel = std::move(ylabel);
  return f;
}

report::Series make_series(std::string name, std::string style) {
  report::Series s;
  s.name = std::move(name);
  s.style = std::move(style);
  return s;
}

// One series per value of `group` (in order of appearance): (x, y) of the rows with status ok.
std::vector<report::Series> series_by(const report::Table& t, const std::string& group, const std::string& x,
                                      const std::string& y, const std::string& style = "linespoints",
                                      const std::string& suffix = "") {
  std::vector<report::Series> out;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    if (!ok_row(t, i)) continue;
    auto xv = t.number(i, x), yv = t.number(i, y);
    if (!xv || !yv) continue;
    const std::string g = t.text(i, group);
    if (!index.count(g)) {
      index[g] = out.size();
      out.push_back(make_series(g + suffix, style));
    }
    out[index[g]].xs.push_back(*xv);
    out[index[g]].ys.push_back(*yv);
  }
  return out;
}

struct Figures {
  fs::path dir;
  report::RenderResult render(report::Figure f) {
    auto r = report::render(f, dir);
    if (!r.ok()) spdlog::warn("figure {}: {}", f.name, r.error);
    return r;
  }
};

// The first n rows of a table.
report::Table head_rows(const report::Table& t, size_t n) {
  report::Table out;
  out.columns = t.columns;
  for (size_t i = 0; i < t.rows.size() && i < n; ++i) out.rows.push_back(t.rows[i]);
  return out;
}

}  // namespace

bool stage_report(const StudyConfig& cfg, const std::string& dir) {
  const fs::path root(dir), results = root / "results";
  Figures figs{root / "figures"};
  fs::create_directories(figs.dir);
  report::Report rep;
  rep.title = "attnlab study: " + cfg.study.name;
  {
    std::time_t now = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    rep.subtitle = fmt::format("{} · mixers {} · {}", dir, fmt::join(cfg.study.mixers, ", "), buf);
  }
  if (fs::exists(root / "env.json")) rep.environment = nlohmann::json::parse(read_file(root / "env.json"));
  // TensorBoard: one run folder per model (loss curves) plus one for the benchmark scalars.
  const fs::path tb = root / "tb";

  {
    auto& s = rep.add_section("Setup");
    s.paragraph(
        fmt::format("Mechanisms: {}. Pretraining target: {} parameters each (parameter-matched by the "
                    "zoo's calibration, except variants that fix their shape). Every number below was "
                    "measured by `attnlab study` from the config "
                    "that follows; each stage's CSV is in results/.",
                    fmt::join(cfg.study.mixers, ", "), cfg.study.parameters));
    // The variants: which mixer each label changes, how, and whether it was parameter-matched.
    report::Table vt;
    vt.columns = {"mixer", "base_mixer", "set", "calibrated"};
    for (const auto& e : study_entries(cfg))
      if (e.variant)
        vt.add_row({e.label, e.mixer, fmt::format("{}", fmt::join(e.sets, " ")),
                    std::string(e.fixed_shape ? "no: shape as given" : "yes")});
    if (!vt.rows.empty())
      s.table(
          vt,
          "variants: a registered mixer with the overrides of study.variants; one that sets model.d_model, "
          "n_layers, n_heads or mlp_ratio keeps that shape (its parameter count reported, not matched)");
    if (fs::exists(root / "config.yaml")) s.preformatted(read_file(root / "config.yaml"));
  }

  if (auto t = maybe_csv(results / "pretrain.csv")) {
    auto& s = rep.add_section("Pretraining");
    s.table(*t, "parameter-matched models on the study's corpus; val_ppl against the unigram model's");
    auto loss = make_figure("loss_curves", "Training loss", "step", "loss (nats/token)");
    auto ppl = make_figure("val_ppl", "Validation perplexity", "step", "perplexity");
    for (const auto& mixer : cfg.study.mixers) {
      const fs::path metrics = fs::path(model_dir(dir, mixer)) / "metrics.csv";
      if (!fs::exists(metrics)) continue;
      auto m = report::read_csv(metrics);
      report::Series tr = make_series(mixer, "lines"), val = make_series(mixer, "linespoints");
      report::EventWriter ev(tb / mixer);
      for (size_t i = 0; i < m.rows.size(); ++i) {
        const double step = *m.number(i, "step"), l = *m.number(i, "loss");
        const bool is_val = m.text(i, "kind") == "val";
        (is_val ? val : tr).xs.push_back(step);
        (is_val ? val : tr).ys.push_back(is_val ? *m.number(i, "ppl") : l);
        if (is_val) {
          ev.add_scalars({{"val/loss", l}, {"val/ppl", *m.number(i, "ppl")}}, int64_t(step));
        } else {
          ev.add_scalars({{"train/loss", l}, {"train/tokens_per_s", *m.number(i, "tokens_per_s")}},
                         int64_t(step));
        }
      }
      loss.series.push_back(tr);
      ppl.series.push_back(val);
    }
    s.figure(figs.render(loss), "training loss of each model");
    ppl.logy = true;
    s.figure(figs.render(ppl), "validation perplexity during training");
  }

  if (auto t = maybe_csv(results / "perplexity.csv")) {
    auto& s = rep.add_section("Perplexity");
    s.table(*t, "validation (in-domain) and out-of-domain perplexity of the pretrained models");
  }

  report::EventWriter bench_events(tb / "benchmarks");
  if (auto t = maybe_csv(results / "efficiency.csv")) {
    auto& s = rep.add_section("Training efficiency");
    s.paragraph(
        "Whole training steps against the context length T at a fixed number of tokens per step. Linear-time "
        "mechanisms should keep tokens/s flat; softmax attention slows as T grows.");
    s.table(*t);
    auto f = make_figure("throughput_vs_T", "Training throughput", "T (tokens)", "tokens/s");
    f.logx = true;
    f.series = series_by(*t, "mixer", "T", "tokens_per_s");
    s.figure(figs.render(f), "training tokens/s against T");
    auto m = make_figure("step_memory_vs_T", "Peak memory of a training step", "T (tokens)", "peak bytes");
    m.logx = m.logy = true;
    m.series = series_by(*t, "mixer", "T", "peak_bytes");
    s.figure(figs.render(m), "peak memory of a whole training step against T");
    for (size_t i = 0; i < t->rows.size(); ++i)
      if (ok_row(*t, i))
        bench_events.add_scalar("efficiency/" + t->text(i, "mixer") + "/tokens_per_s",
                                *t->number(i, "tokens_per_s"), int64_t(*t->number(i, "T")));
  }

  if (auto t = maybe_csv(results / "memory.csv")) {
    auto& s = rep.add_section("Memory scaling of the op alone");
    s.paragraph(
        "Forward and backward of the attention op alone; the slope of log(peak memory) against log(T) is 1 "
        "for linear memory and 2 for materialised T x T scores.");
    auto f = make_figure("op_memory_vs_T", "Op memory (forward + backward)", "T (tokens)", "peak bytes");
    f.logx = f.logy = true;
    f.series = series_by(*t, "mixer", "T", "peak_bytes", "points");
    if (auto fits = maybe_csv(results / "memory_fit.csv")) {
      for (size_t i = 0; i < fits->rows.size(); ++i) {
        f.key_notes.push_back(fmt::format("{}: slope {:.2f}, r² {:.3f}", fits->text(i, "mixer"),
                                          *fits->number(i, "slope"), *fits->number(i, "r2")));
        // the fitted line, dashed, beside its points
        for (auto& ser : f.series)
          if (ser.name == fits->text(i, "mixer") && ser.xs.size() >= 2) {
            auto fit = report::fit_power_law(ser.xs, ser.ys);
            report::Series line = make_series(ser.name + " fit", "lines");
            line.xs = ser.xs;
            line.dashed = true;
            for (double x : ser.xs) line.ys.push_back(fit.predict(x));
            line.color = static_cast<int>(&ser - &f.series[0]);
            f.series.push_back(line);
            break;
          }
      }
      s.table(*fits, "log-log slopes of peak memory against T");
    }
    s.figure(figs.render(f), "peak memory of the op against T, with the fitted power laws");
    s.table(*t);
  }

  if (auto t = maybe_csv(results / "tasks.csv")) {
    auto& s = rep.add_section("Synthetic tasks");
    s.paragraph(
        "Best learning rate per setting, as the papers report. Recurrent models need state that grows with "
        "the number of pairs to recall (Based, theorem 3.1): accuracy is plotted against state size.");
    s.table(*t);
    auto f = make_figure("task_accuracy_vs_state", "Task accuracy against state size",
                         "state bytes per sequence", "accuracy");
    f.logx = true;
    f.series = series_by(*t, "mixer", "state_bytes", "accuracy", "points");  // one series per mixer
    s.figure(figs.render(f), "accuracy of each mixer against its inference state size");
  }

  if (auto t = maybe_csv(results / "scaling.csv")) {
    auto& s = rep.add_section("Model scaling");
    s.table(*t);
    auto f =
        make_figure("scaling_throughput", "Training throughput against model size", "parameters", "tokens/s");
    f.logx = f.logy = true;
    f.series = series_by(*t, "mixer", "parameters", "tokens_per_s");
    s.figure(figs.render(f), "tokens/s of a training step against parameters");
  }

  if (auto pre = maybe_csv(results / "latency_prefill.csv")) {
    auto& s = rep.add_section("Inference latency");
    auto f = make_figure("prefill_latency", "Prefill latency", "prompt length", "ms");
    f.logx = f.logy = true;
    f.series = series_by(*pre, "mixer", "prompt_len", "prefill_ms");
    s.figure(figs.render(f), "time to prefill a prompt (batch 1)");
    s.table(*pre);
    if (auto dec = maybe_csv(results / "latency_decode.csv")) {
      auto d = make_figure("decode_latency", "Decode latency per token", "context length", "ms per token");
      d.logx = true;
      d.series = series_by(*dec, "mixer", "context", "decode_ms_per_token");
      s.figure(figs.render(d), "one decoding step against the context already in the cache (batch 1)");
      auto m = make_figure("decode_state", "Inference state per sequence", "context length", "bytes");
      m.logx = m.logy = true;
      m.series = series_by(*dec, "mixer", "context", "state_bytes");
      s.figure(figs.render(m), "KV cache (softmax) against recurrent state (linear family)");
      s.table(*dec);
      for (size_t i = 0; i < dec->rows.size(); ++i)
        bench_events.add_scalar("decode/" + dec->text(i, "mixer") + "/ms_per_token",
                                *dec->number(i, "decode_ms_per_token"), int64_t(*dec->number(i, "context")));
    }
  }

  if (auto t = maybe_csv(results / "profile.csv")) {
    auto& s = rep.add_section("Profile");
    s.paragraph(
        "Spans of a training step from attnlab's tracer (step phases; each layer's mixer and MLP in the "
        "forward and in the backward). The same steps ran again under libtorch's profiler: its trace, the "
        "merged trace (our spans and libtorch's ops as two processes), and its most expensive ops. The "
        "Chrome/Perfetto traces (ui.perfetto.dev) and folded stacks (speedscope, flamegraph.pl) are in "
        "profiler/.");
    s.table(head_rows(*t, 60), "the most expensive spans by self time");
    if (auto runs = maybe_csv(results / "profile_torch.csv")) s.table(*runs, "libtorch's profiler");
    std::vector<fs::path> files;
    if (fs::exists(root / "profiler"))
      for (const auto& e : fs::directory_iterator(root / "profiler")) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    const std::string suffix = "_torch_top_ops.csv";
    std::string names;
    for (const auto& f : files) {
      names += f.filename().string() + "\n";
      const std::string n = f.filename().string();
      if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
        s.table(head_rows(report::read_csv(f), 30),
                "libtorch's most expensive ops by self CPU time: " + n.substr(0, n.size() - suffix.size()));
    }
    if (!names.empty()) s.preformatted(names);
  }

  report::write_html(root / "report.html", rep);
  spdlog::info("report: {}", (root / "report.html").string());
  return true;
}

}  // namespace attnlab::study
