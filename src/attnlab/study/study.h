// `attnlab study CONFIG`: the whole of seed 000's study in one command (DESIGN.md, "A run"). Stages run in
// order, each writing its outputs atomically and a marker stages/<name>.done last; a rerun skips the
// finished stages (--force redoes them) and resumes an interrupted pretraining from its checkpoint.
//   env         env.json
//   pretrain    every mixer, parameter-matched, its own optimiser and schedule: checkpoints/<mixer>/
//   efficiency  whole training steps against T: step time, tokens/s, peak memory (OOM recorded)
//   memory      the op alone, forward + backward, peak memory against T, log-log slope per mechanism
//   tasks       the synthetic tasks' quick preset
//   perplexity  validation perplexity of each pretrained model, in domain and on Moby Dick
//   scaling     ~1M to 30M parameters: step time, tokens/s, memory
//   latency     prefill against prompt length, per-token decode against context, cache / state bytes
//   profile     per T, time and memory of each op; Chrome trace, folded stacks, top ops
//   report      figures (PNG, PDF, SVG), TensorBoard events, report.html
#pragma once

#include <map>
#include <string>
#include <vector>

#include "attnlab/core/options.h"
#include "attnlab/train/config.h"

namespace attnlab::study {

// A variant: a registered mixer in another shape or with other options, named in study.mixers by its
// label (study.variants: {gla_wide: {mixer: gla, set: [model.d_model=256, model.n_heads=8]}}). `set`
// holds model.KEY=V and mixer.<mixer>.KEY=V assignments (the --set syntax), applied on top of the study's
// model and mixer sections. One that sets model.d_model, n_layers, n_heads or mlp_ratio fixes the shape
// and is used as given (its parameter count reported, not matched); one that only sets mixer options is
// calibrated to study.parameters like a plain mixer.
struct StudyVariant {
  std::string mixer;
  std::vector<std::string> set;
  static const OptionSet<StudyVariant>& schema();
};

struct StudyOptions {
  std::string name = "study";
  std::vector<std::string> mixers = {"softmax", "linear_attention", "gated_deltanet"};  // mixers or variants
  std::map<std::string, StudyVariant> variants;  // label -> variant (names usable in `mixers`)
  std::vector<std::string> stages;               // empty: all, in the order above
  int64_t parameters = 1'000'000;  // parameter-matched target of pretraining (the zoo's calibration)
  std::vector<int64_t> efficiency_seq_lens = {128, 256, 512, 1024};
  int64_t efficiency_tokens = 4096;  // tokens per step (B = tokens / T, at least 1)
  int64_t bench_vocab = 0;           // vocabulary of the benchmark stages' models (0: the corpus's)
  std::vector<int64_t> memory_seq_lens = {256, 512, 1024, 2048, 4096};
  int64_t memory_batch = 1;
  std::vector<int64_t> scaling_parameters = {1'000'000, 3'000'000, 10'000'000, 30'000'000};
  int64_t scaling_seq_len = 256;
  int64_t scaling_batch = 4;
  std::vector<int64_t> prompt_lens = {64, 128, 256, 512};
  std::vector<int64_t> decode_contexts = {64, 256, 1024};
  std::vector<int64_t> profile_seq_lens = {256, 1024};
  int profile_torch_steps = 1;  // steps under libtorch's profiler (0: none): its traces grow with each
  std::vector<std::string> tasks = {"mqar"};
  std::string task_preset = "quick";
  std::vector<std::string> task_sets;       // extra --set lines for the tasks (e.g. "sweep.epochs=2")
  std::string ood_path = "data/moby-dick";  // out-of-domain text for the perplexity summary ("" = none)
  int64_t eval_windows = 32;                // windows per perplexity evaluation
  int warmup = 2;
  int repeat = 5;
  std::string device = "auto";

  static const OptionSet<StudyOptions>& schema();
};

struct StudyConfig {
  StudyOptions study;
  RunConfig run;  // model (the base of calibration), data, train, mixer sections for pretraining
  void load_file(const std::string& path);
  void set(const std::string& assignment);  // study.KEY=V or any RunConfig section
  void resolve();
  std::string to_yaml_string() const;
};

// One entry of study.mixers, resolved on the study's config: a registered mixer (label = mixer) or a
// variant (its overrides applied to a copy of the study's model and mixer sections).
struct StudyEntry {
  std::string label;              // what the stages call it: row labels, legends, models/<label>/
  std::string mixer;              // the registered mixer (the CSVs' base_mixer column)
  bool variant = false;           // defined in study.variants
  bool fixed_shape = false;       // the variant sets the shape: used as given, not calibrated
  std::vector<std::string> sets;  // the variant's assignments
  RunConfig run;                  // the study's run config with the overrides; model.mixer = mixer; own
                                  // copies of the mixer options
};

// The entry of a name of study.mixers (a registered mixer or a variant label); an unknown name is an
// error listing the registered mixers and the variants.
StudyEntry study_entry(const StudyConfig& cfg, const std::string& name);
// Every entry of study.mixers, in order.
std::vector<StudyEntry> study_entries(const StudyConfig& cfg);

// Every stage name, in order.
const std::vector<std::string>& stage_names();

struct StudyRun {
  std::string dir;
  std::vector<std::string> ran, skipped;
  bool interrupted = false;
};

// Runs the study into `dir` (created; a rerun continues). `force`: redo finished stages; `only`: these
// stages (in the canonical order), else the config's list or all.
StudyRun run_study(const StudyConfig& cfg, const std::string& dir, bool force,
                   const std::vector<std::string>& only = {});

// One stage on its own (for `attnlab bench efficiency|memory|scaling|latency|profile`): writes its files
// under dir/results (and dir/profiler) as the study does. Returns false if interrupted.
bool run_stage(const std::string& stage, const StudyConfig& cfg, const std::string& dir);

}  // namespace attnlab::study
