// The study: its config, the stage runner, and the stages that train (pretrain, tasks, perplexity).
#include "attnlab/study/study.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <filesystem>
#include <map>

#include "attnlab/core/env.h"
#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/core/runtime.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/calibrate.h"
#include "attnlab/report/csv.h"
#include "attnlab/study/stages.h"
#include "attnlab/train/checkpoint.h"
#include "attnlab/train/task_runner.h"
#include "attnlab/train/trainer.h"

namespace fs = std::filesystem;

namespace attnlab::study {

namespace {

// The model keys that fix a variant's shape (calibration would choose them).
const std::vector<std::string> kShapeKeys = {"model.d_model", "model.n_layers", "model.n_heads",
                                             "model.mlp_ratio"};

bool valid_label(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!std::isalnum(c) && c != '_' && c != '-') return false;
  return true;
}

// "" when every entry is section.key=value with section model or mixer.
std::string check_variant_sets(const std::vector<std::string>& sets) {
  for (const auto& a : sets) {
    const auto eq = a.find('=');
    const bool ok = eq != std::string::npos && eq > 0 &&
                    (a.rfind("model.", 0) == 0 || a.rfind("mixer.", 0) == 0) && a.find('.') + 1 < eq;
    if (!ok)
      return fmt::format(
          "assignments model.KEY=VALUE or mixer.<mixer>.KEY=VALUE (e.g. model.d_model=256, "
          "mixer.gla.expand_k=1.0), not '{}'",
          a);
  }
  return "";
}

}  // namespace

const OptionSet<StudyVariant>& StudyVariant::schema() {
  static const OptionSet<StudyVariant> s = [] {
    using V = StudyVariant;
    OptionSet<V> o("variant");
    o.add("mixer", &V::mixer, "the registered mixer the variant changes (see `attnlab list`)",
          Check<std::string>([](const std::string& m) {
            return MixerRegistry::instance().has(m)
                       ? std::string()
                       : fmt::format("a registered mixer: {}",
                                     fmt::join(MixerRegistry::instance().names(), ", "));
          }));
    o.add("set", &V::set,
          "overrides of the study's config: model.KEY=V (d_model, n_layers, n_heads or mlp_ratio fix the "
          "shape: not calibrated) and mixer.<mixer>.KEY=V",
          Check<std::vector<std::string>>(check_variant_sets));
    return o;
  }();
  return s;
}

const OptionSet<StudyOptions>& StudyOptions::schema() {
  static const OptionSet<StudyOptions> s = [] {
    using S = StudyOptions;
    OptionSet<S> o("study");
    o.add("name", &S::name, "study name (the default output folder is runs/<name>)");
    o.add("mixers", &S::mixers,
          "mechanisms compared in every stage: registered mixers (see `attnlab list`) or labels of variants");
    o.add("variants", &S::variants,
          "named variants usable in mixers: LABEL: {mixer: NAME, set: [model.KEY=V, mixer.NAME.KEY=V]}",
          Check<std::map<std::string, StudyVariant>>([](const std::map<std::string, StudyVariant>& m) {
            for (const auto& [label, v] : m) {
              if (!valid_label(label))
                return fmt::format("labels of letters, digits, '_' and '-' (a folder name), not '{}'", label);
              if (MixerRegistry::instance().has(label))
                return fmt::format("labels other than registered mixer names, not '{}'", label);
            }
            return std::string();
          }));
    o.add("stages", &S::stages, "stages to run, in the canonical order (empty: all)");
    o.add("parameters", &S::parameters, "parameter-matched size of the pretrained models",
          check::positive<int64_t>());
    o.add("efficiency_seq_lens", &S::efficiency_seq_lens,
          "efficiency: context lengths T of whole training steps");
    o.add("efficiency_tokens", &S::efficiency_tokens, "efficiency: tokens per step (B = tokens / T)",
          check::positive<int64_t>());
    o.add("bench_vocab", &S::bench_vocab,
          "vocabulary of the models that the benchmark stages build on random tokens (0: the corpus's; e.g. "
          "5000 to match PERFORMANCE.md's 30M model, whose head and loss grow with it)",
          check::non_negative<int64_t>());
    o.add("memory_seq_lens", &S::memory_seq_lens, "memory scaling: T of the op alone");
    o.add("memory_batch", &S::memory_batch, "memory scaling: batch", check::positive<int64_t>());
    o.add("scaling_parameters", &S::scaling_parameters, "model scaling: parameter targets");
    o.add("scaling_seq_len", &S::scaling_seq_len, "model scaling: T", check::positive<int64_t>());
    o.add("scaling_batch", &S::scaling_batch, "model scaling: batch", check::positive<int64_t>());
    o.add("prompt_lens", &S::prompt_lens, "latency: prompt lengths of the prefill");
    o.add("decode_contexts", &S::decode_contexts, "latency: contexts at which one decode step is timed");
    o.add("profile_seq_lens", &S::profile_seq_lens, "profile: T of the profiled training steps");
    o.add("profile_torch_steps", &S::profile_torch_steps,
          "profile: training steps run again under libtorch's profiler (0: none; its trace grows with each)",
          check::non_negative<int>());
    o.add("tasks", &S::tasks, "synthetic tasks (see `attnlab task --list`)");
    o.add("task_preset", &S::task_preset, "preset of the tasks", check::one_of({"quick", "paper"}));
    o.add("task_sets", &S::task_sets, "extra task settings, e.g. [sweep.epochs=2, task.num_pairs=4]");
    o.add("ood_path", &S::ood_path, "out-of-domain text for the perplexity summary (empty: none)");
    o.add("eval_windows", &S::eval_windows, "windows per perplexity evaluation", check::positive<int64_t>());
    o.add("warmup", &S::warmup, "untimed runs before timing", check::non_negative<int>());
    o.add("repeat", &S::repeat, "timed runs (medians reported)", check::positive<int>());
    o.add("device", &S::device, "auto | cpu | cuda | cuda:N (the benchmark stages)");
    return o;
  }();
  return s;
}

void StudyConfig::load_file(const std::string& path) {
  std::string text = read_file(path, "study config file");
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("study config file '{}': not valid YAML: {}", path, e.what());
  }
  if (!root || root.IsNull()) return;
  if (!root.IsMap()) fail("{}: expected a map with sections study, model, data, train, mixer", path);
  YAML::Node rest(YAML::NodeType::Map);
  for (const auto& kv : root) {
    const std::string section = kv.first.as<std::string>();
    if (section == "study")
      StudyOptions::schema().apply(study, kv.second);
    else
      rest[section] = kv.second;
  }
  run.apply(rest, path);
}

void StudyConfig::set(const std::string& assignment) {
  if (assignment.rfind("study.variants.", 0) == 0) {
    // study.variants.LABEL.KEY=V: one key of one variant (created when new)
    auto [key, text] = split_assignment(assignment);
    const std::string rest = key.substr(15);
    const auto dot = rest.find('.');
    if (dot == std::string::npos || dot == 0)
      fail("--set {}: expected study.variants.LABEL.KEY=VALUE with KEY one of {}, or study.variants={{...}}",
           assignment, fmt::join(StudyVariant::schema().names(), ", "));
    const std::string label = rest.substr(0, dot);
    auto variants = study.variants;
    try {
      StudyVariant::schema().set(variants[label], rest.substr(dot + 1), parse_value_text(text));
    } catch (const Error& e) {
      fail("study.variants.{}: {}", label, e.what());
    }
    study.variants = std::move(variants);
    StudyOptions::schema().validate(study);  // the labels (the variant's own keys: when the study resolves)
  } else if (assignment.rfind("study.", 0) == 0) {
    auto [key, text] = split_assignment(assignment);
    StudyOptions::schema().set(study, key.substr(6), parse_value_text(text));
  } else {
    run.set(assignment);
  }
}

void StudyConfig::resolve() {
  StudyOptions::schema().validate(study);
  ATTNLAB_CHECK(!study.mixers.empty(), "study.mixers is empty; name at least one mixer (see `attnlab list`)");
  for (const auto& s : study.stages) {
    const auto& all = stage_names();
    if (std::find(all.begin(), all.end(), s) == all.end())
      fail("study.stages: unknown stage '{}'; stages: {}", s, fmt::join(all, ", "));
  }
  run.resolve();
  for (size_t i = 0; i < study.mixers.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      ATTNLAB_CHECK(study.mixers[i] != study.mixers[j], "study.mixers: '{}' is named twice", study.mixers[i]);
  // Every variant (listed or not) and every name of study.mixers must resolve.
  for (const auto& kv : study.variants) (void)study_entry(*this, kv.first);
  for (const auto& name : study.mixers) (void)study_entry(*this, name);
}

StudyEntry study_entry(const StudyConfig& cfg, const std::string& name) {
  StudyEntry e;
  e.label = name;
  e.run = cfg.run;
  for (auto& kv : e.run.mixers) kv.second = std::shared_ptr<AnyOptions>(kv.second->clone());  // own copies
  auto it = cfg.study.variants.find(name);
  if (it == cfg.study.variants.end()) {
    if (!MixerRegistry::instance().has(name)) {
      std::vector<std::string> labels;
      for (const auto& kv : cfg.study.variants) labels.push_back(kv.first);
      fail(
          "study.mixers: unknown mixer or variant '{}'; registered mixers: {}; variants (study.variants): {}",
          name, fmt::join(MixerRegistry::instance().names(), ", "),
          labels.empty() ? "none" : fmt::format("{}", fmt::join(labels, ", ")));
    }
    e.mixer = name;
  } else {
    const StudyVariant& v = it->second;
    const std::string where = "study.variants." + name;
    try {
      StudyVariant::schema().validate(v);
    } catch (const Error& err) {
      fail("{}: {}", where, err.what());
    }
    e.variant = true;
    e.mixer = v.mixer;
    e.sets = v.set;
    for (const auto& a : v.set) {
      const std::string key = split_assignment(a).first;
      if (key == "model.mixer" || key == "model.layers" || key == "model.vocab_size")
        fail(
            "{}.set: '{}' is not a variant override (the variant's mixer is its `mixer` key; the vocabulary "
            "comes from the corpus)",
            where, a);
      if (key.rfind("mixer.", 0) == 0 && key.rfind("mixer." + v.mixer + ".", 0) != 0)
        fail("{}.set: '{}' sets another mixer's options; the variant's mixer is {} (mixer.{}.KEY=VALUE)",
             where, a, v.mixer, v.mixer);
      try {
        e.run.set(a);
      } catch (const Error& err) {
        fail("{}.set: {}", where, err.what());
      }
      if (std::find(kShapeKeys.begin(), kShapeKeys.end(), key) != kShapeKeys.end()) e.fixed_shape = true;
    }
  }
  e.run.model.mixer = e.mixer;
  e.run.model.layers.clear();
  if (e.fixed_shape)
    ATTNLAB_CHECK(e.run.model.d_model % e.run.model.n_heads == 0,
                  "study.variants.{}: model.d_model {} is not a multiple of model.n_heads {}", name,
                  e.run.model.d_model, e.run.model.n_heads);
  try {
    e.run.resolve();
  } catch (const Error& err) {
    fail("study.mixers entry '{}': {}", name, err.what());
  }
  return e;
}

std::vector<StudyEntry> study_entries(const StudyConfig& cfg) {
  std::vector<StudyEntry> out;
  for (const auto& name : cfg.study.mixers) out.push_back(study_entry(cfg, name));
  return out;
}

std::string StudyConfig::to_yaml_string() const {
  YAML::Node root = run.to_yaml();
  root["study"] = StudyOptions::schema().to_yaml(study);
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

const std::vector<std::string>& stage_names() {
  static const std::vector<std::string> names = {"env",        "pretrain", "efficiency", "memory",  "tasks",
                                                 "perplexity", "scaling",  "latency",    "profile", "report"};
  return names;
}

// ---- the training stages --------------------------------------------------------------------------------

std::string model_dir(const std::string& dir, const std::string& mixer) {
  return (fs::path(dir) / "models" / mixer).string();
}

CalibratedModel calibrated(const StudyEntry& e, int64_t parameters, int64_t vocab) {
  ModelOptions base = e.run.model;
  base.vocab_size = vocab;
  if (e.fixed_shape) {  // as given: the parameter count is reported, not matched
    auto c = measure(base, e.run.mixers, CalibrationTarget{}.report_T);
    c.mixer = e.mixer;
    c.error = static_cast<double>(c.parameters) / static_cast<double>(parameters) - 1.0;
    return c;
  }
  CalibrationTarget t;
  t.parameters = parameters;
  t.vocab_size = vocab;
  auto c = calibrate(e.mixer, t, e.run.mixers, base);
  c.model.vocab_size = vocab;
  return c;
}

CalibratedModel calibrated(const StudyConfig& cfg, const std::string& name, int64_t parameters,
                           int64_t vocab) {
  return calibrated(study_entry(cfg, name), parameters, vocab);
}

namespace {

bool stage_env(const StudyConfig&, const std::string& dir) {
  write_file_atomic(fs::path(dir) / "env.json", environment_json().dump(2) + "\n");
  return true;
}

bool stage_pretrain(const StudyConfig& cfg, const std::string& dir) {
  report::Table t;
  t.columns = {"mixer",        "parameters", "d_model",    "n_layers",   "n_heads",
               "steps",        "train_loss", "val_loss",   "val_ppl",    "unigram_ppl",
               "tokens_per_s", "run_dir",    "base_mixer", "calibrated", "target_parameters"};
  // The vocabulary comes from the corpus: calibrate for it so that every model matches with its embedding.
  const int64_t vocab = load_corpus(cfg.run.data).tokenizer.vocab_size();
  for (const auto& e : study_entries(cfg)) {
    auto c = calibrated(e, cfg.study.parameters, vocab);
    RunConfig rc = e.run;
    rc.model = c.model;
    rc.model.vocab_size = vocab;
    rc.resolve();
    const std::string run_dir = model_dir(dir, e.label);
    fs::create_directories(run_dir);
    const bool resume = fs::exists(fs::path(run_dir) / "checkpoints" / "last");
    spdlog::info("pretrain {}{}: {} parameters (d_model {}, {} layers, {} heads){}{}", e.label,
                 e.variant ? " (" + e.mixer + ")" : std::string(), c.parameters, c.model.d_model,
                 c.model.n_layers, c.model.n_heads,
                 e.fixed_shape
                     ? fmt::format(", shape as given ({:+.1f}% against study.parameters)", 100 * c.error)
                     : std::string(),
                 resume ? ", resuming" : "");
    Trainer trainer(rc, run_dir, resume);
    auto r = trainer.run();
    if (r.interrupted) return false;
    t.add_row({e.label, r.parameters, c.model.d_model, c.model.n_layers, c.model.n_heads, r.steps_done,
               r.final_train_loss, r.val_loss, r.val_ppl, r.unigram_ppl, r.tokens_per_s, run_dir, e.mixer,
               std::string(e.fixed_shape ? "no" : "yes"),
               e.fixed_shape ? report::Cell{} : report::Cell{cfg.study.parameters}});
  }
  report::write_csv(fs::path(dir) / "results" / "pretrain.csv", t);
  return true;
}

// A variant's overrides as lines of the task sweep: its mixer options as they are, its shape through the
// sweep's own keys (the tasks choose their sizes: model.d_model becomes the sweep's only width); other model
// keys do not apply to the tasks.
std::vector<std::string> task_sets_of_variant(const StudyEntry& e) {
  static const std::map<std::string, std::string> shape = {{"model.d_model", "sweep.d_models"},
                                                           {"model.n_layers", "sweep.n_layers"},
                                                           {"model.n_heads", "sweep.n_heads"},
                                                           {"model.mlp_ratio", "sweep.mlp_ratio"}};
  std::vector<std::string> out;
  for (const auto& a : e.sets) {
    auto [key, value] = split_assignment(a);
    if (key.rfind("mixer.", 0) == 0) {
      out.push_back(a);
    } else if (auto it = shape.find(key); it != shape.end()) {
      out.push_back(it->second + "=" + (key == "model.d_model" ? "[" + value + "]" : value));
    } else {
      spdlog::warn("tasks: variant {}: {} does not apply to the synthetic tasks; ignored", e.label, a);
    }
  }
  return out;
}

bool stage_tasks(const StudyConfig& cfg, const std::string& dir) {
  struct Row {
    TaskRow r;
    std::string base;
  };
  std::vector<Row> all;
  const auto entries = study_entries(cfg);
  std::vector<std::string> plain;
  for (const auto& e : entries)
    if (!e.variant) plain.push_back(e.mixer);
  for (const auto& name : cfg.study.tasks) {
    auto sweep = [&](const std::vector<std::string>& mixers, const std::vector<std::string>& extra,
                     const fs::path& out) {
      TaskConfig tc(name);
      tc.set("sweep.preset=" + cfg.study.task_preset);
      tc.set(fmt::format("sweep.mixers=[{}]", fmt::join(mixers, ",")));
      tc.set("sweep.device=" + cfg.study.device);
      for (const auto& s : cfg.study.task_sets) tc.set(s);
      for (const auto& s : extra) tc.set(s);
      return run_task_sweep(tc, out.string());
    };
    // The registered mixers in one sweep (tasks/<task>/), as before; each variant in its own
    // (tasks/<task>/<label>/), its rows under its label.
    if (!plain.empty()) {
      auto s = sweep(plain, {}, fs::path(dir) / "tasks" / name);
      if (s.interrupted) return false;
      for (auto& r : best_rows(s.rows)) all.push_back({r, r.mixer});
    }
    for (const auto& e : entries) {
      if (!e.variant) continue;
      auto s = sweep({e.mixer}, task_sets_of_variant(e), fs::path(dir) / "tasks" / name / e.label);
      if (s.interrupted) return false;
      for (auto& r : best_rows(s.rows)) {
        r.mixer = e.label;
        all.push_back({r, e.mixer});
      }
    }
  }
  report::Table t;
  t.columns = {"task",        "mixer",      "d_model",       "seq_len",
               "lr",          "eval_set",   "accuracy",      "exact_match",
               "state_bytes", "parameters", "train_seconds", "base_mixer"};
  for (const auto& [r, base] : all)
    t.add_row({r.task, r.mixer, r.d_model, r.seq_len, r.lr, r.eval_set, r.accuracy, r.exact_match,
               r.state_bytes, r.parameters, r.train_seconds, base});
  report::write_csv(fs::path(dir) / "results" / "tasks.csv", t);
  return true;
}

bool stage_perplexity(const StudyConfig& cfg, const std::string& dir) {
  report::Table t;
  t.columns = {"mixer", "parameters", "split", "tokens", "loss", "ppl", "base_mixer"};
  const torch::Device device = resolve_device(cfg.study.device);
  for (const auto& e : study_entries(cfg)) {
    const std::string& mixer = e.label;
    const std::string ckpt = find_checkpoint(model_dir(dir, mixer));
    RunConfig rc = read_checkpoint_config(ckpt);
    CharTokenizer tok = read_checkpoint_tokenizer(ckpt);
    LanguageModel model(rc.model, rc.mixers);
    load_checkpoint(ckpt, model, nullptr, nullptr);
    model->to(device);
    Corpus corpus = load_corpus(rc.data, tok);
    std::vector<std::pair<std::string, TokenStream>> splits = {{"validation", corpus.val}};
    if (!cfg.study.ood_path.empty()) {
      if (fs::exists(cfg.study.ood_path))
        splits.emplace_back("ood:" + fs::path(cfg.study.ood_path).filename().string(),
                            load_stream(cfg.study.ood_path, tok, "out-of-domain"));
      else
        spdlog::warn("perplexity: study.ood_path '{}' does not exist; out-of-domain perplexity skipped",
                     cfg.study.ood_path);
    }
    for (const auto& [name, stream] : splits) {
      const double loss = Trainer::evaluate(model, stream, rc.data.seq_len, rc.data.batch_size,
                                            cfg.study.eval_windows, device, device.is_cuda());
      t.add_row({mixer, model->num_parameters(), name, cfg.study.eval_windows * rc.data.seq_len, loss,
                 std::exp(loss), e.mixer});
    }
  }
  report::write_csv(fs::path(dir) / "results" / "perplexity.csv", t);
  return true;
}

}  // namespace

bool run_stage(const std::string& stage, const StudyConfig& cfg_in, const std::string& dir) {
  StudyConfig cfg = cfg_in;
  cfg.resolve();
  fs::create_directories(fs::path(dir) / "results");
  if (stage == "env") return stage_env(cfg, dir);
  if (stage == "pretrain") return stage_pretrain(cfg, dir);
  if (stage == "efficiency") return stage_efficiency(cfg, dir);
  if (stage == "memory") return stage_memory(cfg, dir);
  if (stage == "tasks") return stage_tasks(cfg, dir);
  if (stage == "perplexity") return stage_perplexity(cfg, dir);
  if (stage == "scaling") return stage_scaling(cfg, dir);
  if (stage == "latency") return stage_latency(cfg, dir);
  if (stage == "profile") return stage_profile(cfg, dir);
  if (stage == "report") return stage_report(cfg, dir);
  fail("unknown stage '{}'; stages: {}", stage, fmt::join(stage_names(), ", "));
}

StudyRun run_study(const StudyConfig& cfg_in, const std::string& dir, bool force,
                   const std::vector<std::string>& only) {
  StudyConfig cfg = cfg_in;
  cfg.resolve();
  StudyRun run;
  run.dir = dir;
  fs::create_directories(fs::path(dir) / "stages");
  write_file_atomic(fs::path(dir) / "config.yaml", cfg.to_yaml_string());
  SigintScope sigint;  // Ctrl-C: the current stage stops at a safe point; its marker is not written
  const auto& wanted = !only.empty() ? only : cfg.study.stages;
  for (const auto& s : wanted)
    if (std::find(stage_names().begin(), stage_names().end(), s) == stage_names().end())
      fail("unknown stage '{}'; stages: {}", s, fmt::join(stage_names(), ", "));
  for (const auto& stage : stage_names()) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), stage) == wanted.end()) continue;
    const fs::path marker = fs::path(dir) / "stages" / (stage + ".done");
    if (fs::exists(marker) && !force && stage != "report") {
      spdlog::info("stage {}: done before ({}), skipped; --force redoes it", stage, marker.string());
      run.skipped.push_back(stage);
      continue;
    }
    spdlog::info("stage {}", stage);
    const auto t0 = std::chrono::steady_clock::now();
    if (!run_stage(stage, cfg, dir) || stop_requested()) {
      run.interrupted = true;
      spdlog::warn("stage {} interrupted; rerun the same command to resume", stage);
      return run;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_file_atomic(marker, fmt::format("{:.1f} s\n", s));
    spdlog::info("stage {} done in {:.1f} s", stage, s);
    run.ran.push_back(stage);
  }
  return run;
}

}  // namespace attnlab::study
