// The study: its config, the stage runner, and the stages that train (pretrain, tasks, perplexity).
#include "attnlab/study/study.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "attnlab/core/env.h"
#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/core/runtime.h"
#include "attnlab/model/calibrate.h"
#include "attnlab/report/csv.h"
#include "attnlab/study/stages.h"
#include "attnlab/train/checkpoint.h"
#include "attnlab/train/task_runner.h"
#include "attnlab/train/trainer.h"

namespace fs = std::filesystem;

namespace attnlab::study {

const OptionSet<StudyOptions>& StudyOptions::schema() {
  static const OptionSet<StudyOptions> s = [] {
    using S = StudyOptions;
    OptionSet<S> o("study");
    o.add("name", &S::name, "study name (the default output folder is runs/<name>)");
    o.add("mixers", &S::mixers, "mechanisms compared in every stage (see `attnlab list`)");
    o.add("stages", &S::stages, "stages to run, in the canonical order (empty: all)");
    o.add("parameters", &S::parameters, "parameter-matched size of the pretrained models",
          check::positive<int64_t>());
    o.add("efficiency_seq_lens", &S::efficiency_seq_lens,
          "efficiency: context lengths T of whole training steps");
    o.add("efficiency_tokens", &S::efficiency_tokens, "efficiency: tokens per step (B = tokens / T)",
          check::positive<int64_t>());
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
  if (assignment.rfind("study.", 0) == 0) {
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

CalibratedModel calibrated(const StudyConfig& cfg, const std::string& mixer, int64_t parameters,
                           int64_t vocab) {
  CalibrationTarget t;
  t.parameters = parameters;
  t.vocab_size = vocab;
  ModelOptions base = cfg.run.model;
  base.vocab_size = vocab;
  return calibrate(mixer, t, cfg.run.mixers, base);
}

namespace {

bool stage_env(const StudyConfig&, const std::string& dir) {
  write_file_atomic(fs::path(dir) / "env.json", environment_json().dump(2) + "\n");
  return true;
}

bool stage_pretrain(const StudyConfig& cfg, const std::string& dir) {
  report::Table t;
  t.columns = {"mixer",      "parameters", "d_model", "n_layers",    "n_heads",      "steps",
               "train_loss", "val_loss",   "val_ppl", "unigram_ppl", "tokens_per_s", "run_dir"};
  // The vocabulary comes from the corpus: calibrate for it so that every model matches with its embedding.
  const int64_t vocab = load_corpus(cfg.run.data).tokenizer.vocab_size();
  for (const auto& mixer : cfg.study.mixers) {
    auto c = calibrated(cfg, mixer, cfg.study.parameters, vocab);
    RunConfig rc = cfg.run;
    rc.model = c.model;
    rc.model.vocab_size = vocab;
    rc.resolve();
    const std::string run_dir = model_dir(dir, mixer);
    fs::create_directories(run_dir);
    const bool resume = fs::exists(fs::path(run_dir) / "checkpoints" / "last");
    spdlog::info("pretrain {}: {} parameters (d_model {}, {} layers, {} heads){}", mixer, c.parameters,
                 c.model.d_model, c.model.n_layers, c.model.n_heads, resume ? ", resuming" : "");
    Trainer trainer(rc, run_dir, resume);
    auto r = trainer.run();
    if (r.interrupted) return false;
    t.add_row({mixer, r.parameters, c.model.d_model, c.model.n_layers, c.model.n_heads, r.steps_done,
               r.final_train_loss, r.val_loss, r.val_ppl, r.unigram_ppl, r.tokens_per_s, run_dir});
  }
  report::write_csv(fs::path(dir) / "results" / "pretrain.csv", t);
  return true;
}

bool stage_tasks(const StudyConfig& cfg, const std::string& dir) {
  std::vector<TaskRow> all;
  for (const auto& name : cfg.study.tasks) {
    TaskConfig tc(name);
    tc.set("sweep.preset=" + cfg.study.task_preset);
    tc.set(fmt::format("sweep.mixers=[{}]", fmt::join(cfg.study.mixers, ",")));
    tc.set("sweep.device=" + cfg.study.device);
    for (const auto& s : cfg.study.task_sets) tc.set(s);
    auto s = run_task_sweep(tc, (fs::path(dir) / "tasks" / name).string());
    if (s.interrupted) return false;
    auto best = best_rows(s.rows);
    all.insert(all.end(), best.begin(), best.end());
  }
  report::Table t;
  t.columns = {"task",     "mixer",       "d_model",     "seq_len",    "lr",           "eval_set",
               "accuracy", "exact_match", "state_bytes", "parameters", "train_seconds"};
  for (const auto& r : all)
    t.add_row({r.task, r.mixer, r.d_model, r.seq_len, r.lr, r.eval_set, r.accuracy, r.exact_match,
               r.state_bytes, r.parameters, r.train_seconds});
  report::write_csv(fs::path(dir) / "results" / "tasks.csv", t);
  return true;
}

bool stage_perplexity(const StudyConfig& cfg, const std::string& dir) {
  report::Table t;
  t.columns = {"mixer", "parameters", "split", "tokens", "loss", "ppl"};
  const torch::Device device = resolve_device(cfg.study.device);
  for (const auto& mixer : cfg.study.mixers) {
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
                 std::exp(loss)});
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
