// The synthetic-task runner.
#include "attnlab/train/task_runner.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>
#include <tuple>

#include "attnlab/core/compat.h"
#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/core/progress.h"
#include "attnlab/core/runtime.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/lm.h"
#include "attnlab/report/csv.h"
#include "attnlab/train/optim.h"
#include "attnlab/train/schedule.h"
#include "attnlab/train/trainer.h"

namespace fs = std::filesystem;

namespace attnlab {

const OptionSet<TaskSweepOptions>& TaskSweepOptions::schema() {
  static const OptionSet<TaskSweepOptions> s = [] {
    using S = TaskSweepOptions;
    OptionSet<S> o("sweep");
    o.add("preset", &S::preset,
          "sizes of the sweep: quick (2 CPU cores, minutes) | paper (the papers' protocol)",
          check::one_of({"quick", "paper"}));
    o.add("mixers", &S::mixers, "mixers to train (see `attnlab list`)");
    o.add("d_models", &S::d_models, "model widths (empty: preset)");
    o.add("seq_lens", &S::seq_lens, "task lengths (empty: preset)");
    o.add("lrs", &S::lrs, "peak learning rates; the best is reported (empty: preset)");
    o.add("weight_decays", &S::weight_decays, "AdamW weight decays (empty: preset)");
    o.add("seeds", &S::seeds, "seeds of data and initialisation");
    o.add("n_layers", &S::n_layers, "blocks (0: preset)", check::non_negative<int64_t>());
    o.add("n_heads", &S::n_heads, "heads of every mixer", check::positive<int64_t>());
    o.add("mlp_ratio", &S::mlp_ratio, "SwiGLU width / d_model after each mixer (0: none; < 0: preset)");
    o.add("train_examples", &S::train_examples, "training examples (0: preset)",
          check::non_negative<int64_t>());
    o.add("test_examples", &S::test_examples, "examples per evaluation set (0: preset)",
          check::non_negative<int64_t>());
    o.add("epochs", &S::epochs, "passes over the training examples (0: preset)",
          check::non_negative<int64_t>());
    o.add("batch_size", &S::batch_size, "examples per step (0: preset)", check::non_negative<int64_t>());
    o.add("target_accuracy", &S::target_accuracy, "early stop at this accuracy on the first set (0: preset)",
          check::in_range(0.0, 1.0));
    o.add("evals_per_epoch", &S::evals_per_epoch, "early-stop checks per epoch", check::positive<int64_t>());
    o.add("warmup_fraction", &S::warmup_fraction, "linear warm-up, fraction of all steps",
          check::in_range(0.0, 1.0));
    o.add("min_lr_ratio", &S::min_lr_ratio, "final lr / peak lr of the cosine decay",
          check::in_range(0.0, 1.0));
    o.add("grad_clip", &S::grad_clip, "max global gradient norm (0 = off)", check::non_negative<double>());
    o.add("positions", &S::positions, "softmax positions: auto (the task decides) | rope | learned",
          check::one_of({"auto", "rope", "learned"}));
    o.add("device", &S::device, "auto | cpu | cuda | cuda:N");
    o.add("threads", &S::threads, "CPU threads (0: default)", check::non_negative<int64_t>());
    return o;
  }();
  return s;
}

namespace {

std::shared_ptr<AnyOptions>& mixer_slot(std::map<std::string, std::shared_ptr<AnyOptions>>& m,
                                        const std::string& name) {
  auto& slot = m[name];
  if (!slot) slot = std::shared_ptr<AnyOptions>(MixerRegistry::instance().get(name).make_options());
  return slot;
}

const char* kSections = "sweep, task, mixer";

// A mixer that takes positions from RoPE and can use learned ones instead (softmax-family mixers).
bool has_rope_option(const AnyOptions& o) {
  for (const auto& n : o.names())
    if (n == "rope") return true;
  return false;
}

}  // namespace

TaskConfig::TaskConfig(std::string task_name) : task(std::move(task_name)) {
  task_options = std::shared_ptr<AnyOptions>(tasks::TaskRegistry::instance().get(task).make_options());
}

void TaskConfig::load_file(const std::string& path) {
  std::string text = read_file(path, "task config file");
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("task config file '{}': not valid YAML: {}", path, e.what());
  }
  if (!root || root.IsNull()) return;
  if (!root.IsMap()) fail("{}: expected a map with sections {}", path, kSections);
  for (const auto& kv : root) {
    const std::string section = kv.first.as<std::string>();
    if (section == "sweep") {
      TaskSweepOptions::schema().apply(sweep, kv.second);
    } else if (section == "task") {
      if (!kv.second.IsMap()) fail("{}: section 'task' must be a map of the task's options", path);
      for (const auto& t : kv.second) {
        YAML::Emitter e;
        e << YAML::Flow << t.second;
        task_sets.push_back(t.first.as<std::string>() + "=" + e.c_str());
      }
    } else if (section == "mixer") {
      if (!kv.second.IsMap()) fail("{}: section 'mixer' must map mixer names to their options", path);
      for (const auto& m : kv.second) mixer_slot(mixers, m.first.as<std::string>())->apply(m.second);
    } else {
      fail("{}: unknown section '{}'; valid sections: {}", path, section, kSections);
    }
  }
}

void TaskConfig::set(const std::string& assignment) {
  auto [key, text] = split_assignment(assignment);
  auto dot = key.find('.');
  if (dot == std::string::npos)
    fail("--set {}: expected section.key=value with section one of {}", assignment, kSections);
  const std::string section = key.substr(0, dot), rest = key.substr(dot + 1);
  if (section == "sweep") {
    TaskSweepOptions::schema().set(sweep, rest, parse_value_text(text));
  } else if (section == "task") {
    task_options->set(rest, parse_value_text(text));  // checks the key now; applied again after presets
    task_sets.push_back(rest + "=" + text);
  } else if (section == "mixer") {
    auto dot2 = rest.find('.');
    if (dot2 == std::string::npos) fail("--set {}: expected mixer.<name>.<key>=value", assignment);
    mixer_slot(mixers, rest.substr(0, dot2))->set(rest.substr(dot2 + 1), parse_value_text(text));
  } else {
    fail("--set {}: unknown section '{}'; valid sections: {}", assignment, section, kSections);
  }
}

void TaskConfig::resolve() {
  const auto& entry = tasks::TaskRegistry::instance().get(task);
  TaskSweepOptions::schema().validate(sweep);
  const tasks::TaskPreset p = entry.preset(sweep.preset);
  auto& s = sweep;
  if (s.d_models.empty()) s.d_models = p.d_models;
  if (s.seq_lens.empty()) s.seq_lens = p.seq_lens;
  if (s.lrs.empty()) s.lrs = p.lrs;
  if (s.weight_decays.empty()) s.weight_decays = {p.weight_decay};
  if (s.n_layers == 0) s.n_layers = p.n_layers;
  if (s.mlp_ratio < 0) s.mlp_ratio = p.mlp_ratio;
  if (s.train_examples == 0) s.train_examples = p.train_examples;
  if (s.test_examples == 0) s.test_examples = p.test_examples;
  if (s.epochs == 0) s.epochs = p.epochs;
  if (s.batch_size == 0) s.batch_size = p.batch_size;
  if (s.target_accuracy == 0) s.target_accuracy = p.target_accuracy;
  // The preset's task options first, then the user's, which win.
  auto fresh = std::shared_ptr<AnyOptions>(entry.make_options());
  for (const auto& [k, v] : p.task_options) fresh->set(k, parse_value_text(v));
  for (const auto& a : task_sets) {
    auto [k, v] = split_assignment(a);
    fresh->set(k, parse_value_text(v));
  }
  task_options = fresh;
  ATTNLAB_CHECK(!s.mixers.empty(), "sweep.mixers is empty; name at least one mixer (see `attnlab list`)");
  for (const auto& m : s.mixers) mixer_slot(mixers, m);
  for (const auto* list : {&s.d_models, &s.seq_lens, &s.seeds})
    ATTNLAB_CHECK(!list->empty(),
                  "task '{}': a sweep list is empty after the preset (d_models, seq_lens, seeds)", task);
  ATTNLAB_CHECK(!s.lrs.empty() && !s.weight_decays.empty(),
                "task '{}': sweep.lrs and weight_decays must not be empty", task);
  for (double lr : s.lrs) ATTNLAB_CHECK(lr > 0, "sweep.lrs: expected values > 0, got {}", lr);
  for (auto d : s.d_models)
    ATTNLAB_CHECK(d > 0 && d % s.n_heads == 0, "sweep.d_models: {} is not a positive multiple of n_heads {}",
                  d, s.n_heads);
  ATTNLAB_CHECK(s.train_examples > 0 && s.test_examples > 0 && s.epochs > 0 && s.batch_size > 0,
                "task '{}': train_examples, test_examples, epochs and batch_size must be > 0", task);
  for (auto& kv : mixers) kv.second->validate();
}

std::string TaskConfig::to_yaml_string() const {
  YAML::Node root;
  root["task_name"] = task;
  root["sweep"] = TaskSweepOptions::schema().to_yaml(sweep);
  root["task"] = task_options->to_yaml();
  YAML::Node m(YAML::NodeType::Map);
  for (const auto& kv : mixers) m[kv.first] = kv.second->to_yaml();
  root["mixer"] = m;
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

// ---- results files --------------------------------------------------------------------------------
namespace {

const std::vector<std::string> kColumns = {
    "task",         "mixer",         "d_model",    "seq_len",       "lr",
    "weight_decay", "seed",          "eval_set",   "accuracy",      "exact_match",
    "examples",     "positions",     "parameters", "state_bytes",   "steps",
    "epochs_run",   "early_stopped", "final_loss", "train_seconds", "device"};

report::Table to_table(const std::vector<TaskRow>& rows) {
  report::Table t;
  t.columns = kColumns;
  for (const auto& r : rows)
    t.add_row({r.task,
               r.mixer,
               r.d_model,
               r.seq_len,
               r.lr,
               r.weight_decay,
               r.seed,
               r.eval_set,
               r.accuracy,
               r.exact_match,
               r.examples,
               r.positions,
               r.parameters,
               r.state_bytes,
               r.steps,
               r.epochs_run,
               int64_t(r.early_stopped ? 1 : 0),
               r.final_loss,
               r.train_seconds,
               r.device});
  return t;
}

std::vector<TaskRow> from_table(const report::Table& t, const std::string& path) {
  report::require_columns(t, kColumns, path);
  std::vector<TaskRow> out;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    auto num = [&](const char* c) {
      auto v = t.number(i, c);
      if (!v) fail("{}: row {} has no value in column '{}'", path, i + 1, c);
      return *v;
    };
    auto whole = [&](const char* c) { return static_cast<int64_t>(num(c)); };
    TaskRow r;
    r.task = t.text(i, "task");
    r.mixer = t.text(i, "mixer");
    r.eval_set = t.text(i, "eval_set");
    r.device = t.text(i, "device");
    r.d_model = whole("d_model");
    r.seq_len = whole("seq_len");
    r.seed = whole("seed");
    r.lr = num("lr");
    r.weight_decay = num("weight_decay");
    r.accuracy = num("accuracy");
    r.exact_match = num("exact_match");
    r.examples = whole("examples");
    r.positions = whole("positions");
    r.parameters = whole("parameters");
    r.state_bytes = whole("state_bytes");
    r.steps = whole("steps");
    r.epochs_run = whole("epochs_run");
    r.early_stopped = whole("early_stopped") == 1;
    r.final_loss = num("final_loss");
    r.train_seconds = num("train_seconds");
    out.push_back(r);
  }
  return out;
}

using RunKey = std::tuple<std::string, std::string, int64_t, int64_t, double, double, int64_t>;
RunKey key_of(const TaskRow& r) {
  return {r.task, r.mixer, r.d_model, r.seq_len, r.lr, r.weight_decay, r.seed};
}

// Logits at the scored positions only: [M, V] for the M labels that are not kIgnore, those labels, and
// their flat indices into y.
struct Scored {
  torch::Tensor logits, labels, index;
};
Scored scored_logits(LanguageModel& model, const torch::Tensor& x, const torch::Tensor& y) {
  auto h = model->hidden(x);  // [B, T, C]
  auto idx = y.reshape({-1}).ne(tasks::kIgnore).nonzero().squeeze(1);
  auto rows = h.reshape({-1, h.size(-1)}).index_select(0, idx);
  return {model->head(rows), y.reshape({-1}).index_select(0, idx), idx};
}

// Predictions (argmax) of the model on `data` at the scored positions, in batches, without gradients;
// unscored positions are predicted as kIgnore (never compared).
tasks::TaskScore evaluate(LanguageModel& model, const tasks::TaskData& data, int64_t batch,
                          const torch::Device& device, bool autocast) {
  torch::NoGradGuard ng;
  model->eval();
  std::vector<torch::Tensor> preds;
  const int64_t n = data.inputs.size(0);
  for (int64_t i = 0; i < n; i += batch) {
    auto x = data.inputs.slice(0, i, std::min(n, i + batch)).to(device);
    auto y = data.labels.slice(0, i, std::min(n, i + batch)).to(device);
    compat::CudaAutocast ac(autocast);
    auto sc = scored_logits(model, x, y);
    auto p = torch::full(y.sizes(), tasks::kIgnore, y.options());
    p.reshape({-1}).index_copy_(0, sc.index, sc.logits.argmax(-1));
    preds.push_back(p.cpu());
  }
  model->train();
  return tasks::score(torch::cat(preds), data.labels);
}

}  // namespace

std::vector<TaskRow> best_rows(const std::vector<TaskRow>& rows) {
  std::map<std::tuple<std::string, std::string, int64_t, int64_t, int64_t>, std::string>
      best_run;  // -> lr/wd
  std::map<std::tuple<std::string, std::string, int64_t, int64_t, int64_t>, double> best_acc;
  // The best (lr, wd) is chosen on the first evaluation set of each run (the one early stopping watches),
  // then every set of that run is reported: one choice per setting, not one per set.
  std::map<RunKey, std::string> first_set;
  for (const auto& r : rows)
    if (!first_set.count(key_of(r))) first_set[key_of(r)] = r.eval_set;
  for (const auto& r : rows) {
    if (first_set[key_of(r)] != r.eval_set) continue;
    auto k = std::make_tuple(r.task, r.mixer, r.d_model, r.seq_len, r.seed);
    auto tag = fmt::format("{}/{}", r.lr, r.weight_decay);
    if (!best_acc.count(k) || r.accuracy > best_acc[k]) {
      best_acc[k] = r.accuracy;
      best_run[k] = tag;
    }
  }
  std::vector<TaskRow> out;
  for (const auto& r : rows) {
    auto k = std::make_tuple(r.task, r.mixer, r.d_model, r.seq_len, r.seed);
    if (best_run[k] == fmt::format("{}/{}", r.lr, r.weight_decay)) out.push_back(r);
  }
  return out;
}

TaskRunSummary run_task_sweep(const TaskConfig& config_in, const std::string& out_dir) {
  TaskConfig config = config_in;
  config.resolve();
  const auto& S = config.sweep;
  fs::create_directories(out_dir);
  const std::string results_path = (fs::path(out_dir) / "results.csv").string();
  write_file_atomic(fs::path(out_dir) / "config.yaml", config.to_yaml_string());

  TaskRunSummary summary;
  if (fs::exists(results_path)) summary.rows = from_table(report::read_csv(results_path), results_path);
  std::set<RunKey> done;
  for (const auto& r : summary.rows) done.insert(key_of(r));

  setup_threads(static_cast<int>(S.threads));
  const torch::Device device = resolve_device(S.device);
  TrainOptions topt;  // AdamW betas and the precision policy of the language-model trainer
  const bool autocast = use_autocast(topt, device);
  SigintScope sigint;

  for (int64_t seq_len : S.seq_lens) {
    auto task_opts = config.task_options->clone();
    task_opts->set("seq_len", YAML::Node(seq_len));
    auto task = tasks::build_task(config.task, *task_opts);
    for (int64_t seed : S.seeds) {
      bool data_ready = false;
      tasks::TaskData train;
      std::vector<std::pair<std::string, tasks::TaskData>> evals;
      for (const auto& mixer : S.mixers)
        for (int64_t d_model : S.d_models)
          for (double lr : S.lrs)
            for (double wd : S.weight_decays) {
              TaskRow base;
              base.task = config.task;
              base.mixer = mixer;
              base.d_model = d_model;
              base.seq_len = seq_len;
              base.lr = lr;
              base.weight_decay = wd;
              base.seed = seed;
              base.device = device.str();
              if (done.count(key_of(base))) {
                ++summary.skipped;
                continue;
              }
              if (!data_ready) {  // generated once per (length, seed), shared by every model
                train = task->train_data(S.train_examples, static_cast<uint64_t>(seed));
                for (const auto& set : task->eval_sets())
                  evals.emplace_back(set, task->eval_data(set, S.test_examples, static_cast<uint64_t>(seed)));
                data_ready = true;
              }
              // The model: as Zoology, softmax gets learned absolute positions where the task asks for them.
              ModelOptions mo;
              mo.vocab_size = task->vocab_size();
              mo.d_model = d_model;
              mo.n_layers = S.n_layers;
              mo.n_heads = S.n_heads;
              mo.mixer = mixer;
              mo.mlp_ratio = S.mlp_ratio;
              std::map<std::string, std::shared_ptr<AnyOptions>> mopts;
              mopts[mixer] = std::shared_ptr<AnyOptions>(config.mixers.at(mixer)->clone());
              const bool rope = has_rope_option(*mopts[mixer]);
              const bool learned =
                  rope && (S.positions == "learned" || (S.positions == "auto" && task->learned_positions()));
              if (learned) {
                mo.positions = "learned";
                mo.max_positions = task->max_len();
                mopts[mixer]->set("rope", YAML::Node(false));
              }
              torch::manual_seed(static_cast<uint64_t>(seed));
              LanguageModel model(mo, mopts);
              model->to(device);
              TrainOptions t = topt;
              t.lr = lr;
              t.weight_decay = wd;
              auto optimizer = make_optimizer(*model, t);
              base.parameters = model->num_parameters();
              for (const auto& m : model->mixers())
                base.state_bytes += m->info().state_bytes(task->max_len());

              const int64_t n = train.inputs.size(0);
              const int64_t per_epoch = (n + S.batch_size - 1) / S.batch_size;
              const int64_t total = per_epoch * S.epochs;
              const int64_t warmup = static_cast<int64_t>(std::llround(S.warmup_fraction * double(total)));
              const int64_t eval_every = std::max<int64_t>(1, per_epoch / S.evals_per_epoch);
              Progress progress(
                  fmt::format("{} {} d{} L{} lr {:.1e}", config.task, mixer, d_model, seq_len, lr), total);
              auto t0 = std::chrono::steady_clock::now();
              int64_t step = 0, epoch = 0;
              double loss_v = NAN, watched = 0;
              bool stop_early = false;
              for (epoch = 0; epoch < S.epochs && !stop_early; ++epoch) {
                tasks::Rng rng(tasks::split_seed(static_cast<uint64_t>(seed), "order") +
                               static_cast<uint64_t>(epoch));
                std::vector<int64_t> order(static_cast<size_t>(n));
                std::iota(order.begin(), order.end(), 0);
                rng.shuffle(order);
                auto perm = torch::from_blob(order.data(), {n}, torch::kLong).clone();
                for (int64_t b = 0; b < per_epoch && !stop_early; ++b) {
                  auto idx = perm.slice(0, b * S.batch_size, std::min(n, (b + 1) * S.batch_size));
                  auto x = train.inputs.index_select(0, idx).to(device);
                  auto y = train.labels.index_select(0, idx).to(device);
                  set_lr(*optimizer, lr_at(step, total, lr, warmup, S.min_lr_ratio));
                  optimizer->zero_grad();
                  torch::Tensor loss;
                  {
                    compat::CudaAutocast ac(autocast);
                    auto sc = scored_logits(model, x, y);
                    loss = torch::nn::functional::cross_entropy(sc.logits.to(torch::kFloat), sc.labels);
                  }
                  loss.backward();
                  loss_v = loss.item<double>();
                  if (!std::isfinite(loss_v)) break;  // recorded as a failed run (accuracy of the last eval)
                  if (S.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), S.grad_clip);
                  optimizer->step();
                  ++step;
                  if (step % eval_every == 0 || step == total) {
                    watched = evaluate(model, evals.front().second, S.batch_size, device, autocast).accuracy;
                    if (watched >= S.target_accuracy) stop_early = true;
                  }
                  progress.update(step, fmt::format("loss {:.4f}  acc {:.3f}", loss_v, watched));
                  if (stop_requested()) break;
                }
                if (!std::isfinite(loss_v) || stop_requested()) break;
              }
              progress.finish();
              if (stop_requested()) {
                summary.interrupted = true;
                spdlog::warn("interrupted: {} finished runs are in {}; rerun the same command to resume",
                             summary.trained, results_path);
                return summary;
              }
              const double seconds =
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
              std::vector<TaskRow> new_rows;
              for (const auto& [set, data] : evals) {
                TaskRow r = base;
                auto sc = evaluate(model, data, S.batch_size, device, autocast);
                r.eval_set = set;
                r.accuracy = sc.accuracy;
                r.exact_match = sc.exact_match;
                r.examples = sc.examples;
                r.positions = sc.positions;
                r.steps = step;
                r.epochs_run = std::min(epoch, S.epochs);
                r.early_stopped = stop_early;
                r.final_loss = loss_v;
                r.train_seconds = seconds;
                new_rows.push_back(r);
              }
              spdlog::info(
                  "{} {} d_model {} seq_len {} lr {:.2e} wd {}: {} {:.4f} after {} steps ({:.1f} s){}",
                  config.task, mixer, d_model, seq_len, lr, wd, new_rows.front().eval_set,
                  new_rows.front().accuracy, step, seconds, stop_early ? ", early stop" : "");
              summary.rows.insert(summary.rows.end(), new_rows.begin(), new_rows.end());
              report::write_csv(results_path, to_table(summary.rows));  // atomic: a crash keeps the old file
              report::write_csv((fs::path(out_dir) / "best.csv").string(), to_table(best_rows(summary.rows)));
              done.insert(key_of(base));
              ++summary.trained;
            }
    }
  }
  report::write_csv((fs::path(out_dir) / "best.csv").string(), to_table(best_rows(summary.rows)));
  return summary;
}

}  // namespace attnlab
