// The trainer.
#include "attnlab/train/trainer.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>

#include "attnlab/core/compat.h"
#include "attnlab/core/fs.h"
#include "attnlab/core/log.h"
#include "attnlab/core/progress.h"
#include "attnlab/core/runtime.h"
#include "attnlab/train/optim.h"
#include "attnlab/train/schedule.h"

namespace attnlab {
namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) {
  g_stop.store(true);
}

torch::Tensor lm_loss(LanguageModel& model, const torch::Tensor& x, const torch::Tensor& y) {
  auto logits = model->forward(x);  // [B, T, V]
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                              y.reshape({-1}));
}

}  // namespace

SigintScope::SigintScope() : prev_(std::signal(SIGINT, on_sigint)) {
  g_stop.store(false);
}
SigintScope::~SigintScope() {
  std::signal(SIGINT, prev_);
}

bool stop_requested() {
  return g_stop.load();
}

void request_stop() {
  g_stop.store(true);
}

double Trainer::evaluate(LanguageModel& model, const TokenStream& stream, int64_t seq_len, int64_t batch,
                         int64_t windows, const torch::Device& device, bool autocast) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  compat::CudaAutocast ac(autocast);
  auto starts = stream.even_starts(windows, seq_len);
  double total = 0;
  int64_t count = 0;
  for (size_t i = 0; i < starts.size(); i += static_cast<size_t>(batch)) {
    std::vector<int64_t> chunk(
        starts.begin() + static_cast<long>(i),
        starts.begin() + static_cast<long>(std::min(starts.size(), i + static_cast<size_t>(batch))));
    auto [x, y] = stream.windows(chunk, seq_len);
    auto loss = lm_loss(model, x.to(device), y.to(device));
    total += loss.item<double>() * static_cast<double>(chunk.size());
    count += static_cast<int64_t>(chunk.size());
  }
  if (was_training) model->train();
  return total / static_cast<double>(std::max<int64_t>(count, 1));
}

Trainer::Trainer(RunConfig config, std::string run_dir, bool resume, TrainerHooks hooks)
    : cfg_(std::move(config)), run_dir_(std::move(run_dir)), resume_(resume), hooks_(std::move(hooks)) {}

TrainResult Trainer::run() {
  const auto& T = cfg_.train;
  const auto& D = cfg_.data;
  fs::create_directories(run_dir_);
  const std::string ckpt_dir = (fs::path(run_dir_) / "checkpoints" / "last").string();

  // A resumed run keeps the saved model, mixer and data sections: other weights or other token ids
  // would make the checkpoint meaningless.
  std::optional<CharTokenizer> saved_tokenizer;
  std::string resume_from;
  if (resume_) {
    resume_from = find_checkpoint(run_dir_);
    RunConfig saved = read_checkpoint_config(resume_from);
    if (cfg_.model.vocab_size == 0)
      cfg_.model.vocab_size = saved.model.vocab_size;  // 0 = "from the tokenizer"
    cfg_.resolve();
    auto diff = RunConfig::differences(saved, cfg_, {"model", "mixer", "data"});
    if (!diff.empty())
      fail(
          "--resume {}: the checkpoint was made with a different config:\n  {}\n(checkpoint vs now; resume "
          "without changing these, or start a new run)",
          run_dir_, fmt::join(diff, "\n  "));
    saved_tokenizer = read_checkpoint_tokenizer(resume_from);
  }

  int threads = setup_threads(static_cast<int>(T.threads));
  torch::Device device = resolve_device(T.device);
  bool autocast = use_autocast(T, device);
  torch::manual_seed(static_cast<uint64_t>(T.seed));

  Corpus corpus = load_corpus(D, saved_tokenizer);
  if (cfg_.model.vocab_size == 0) cfg_.model.vocab_size = corpus.tokenizer.vocab_size();
  ATTNLAB_CHECK(cfg_.model.vocab_size >= corpus.tokenizer.vocab_size(),
                "model.vocab_size {} is smaller than the tokenizer's {} symbols", cfg_.model.vocab_size,
                corpus.tokenizer.vocab_size());
  cfg_.resolve();
  write_file_atomic(fs::path(run_dir_) / "config.yaml", cfg_.to_yaml_string());
  corpus.tokenizer.save((fs::path(run_dir_) / "tokenizer.json").string());

  LanguageModel model(cfg_.model, cfg_.mixers);
  model->to(device);
  auto optimizer = make_optimizer(*model, T);
  TrainState state;
  state.batch_rng.seed(static_cast<uint64_t>(T.seed));
  if (resume_) {
    load_checkpoint(resume_from, model, optimizer.get(), &state);
    state.history.truncate_after(state.step);
    spdlog::info("resumed {} at step {}", resume_from, state.step);
  }

  TrainResult result;
  result.run_dir = run_dir_;
  result.parameters = model->num_parameters();
  spdlog::info("model: {} layers [{}], d_model {}, {} heads, vocab {}: {} parameters ({} without embeddings)",
               cfg_.model.n_layers, fmt::join(cfg_.model.layer_mixers(), ", "), cfg_.model.d_model,
               cfg_.model.n_heads, cfg_.model.vocab_size, result.parameters,
               model->num_non_embedding_parameters());
  spdlog::info("device {}{}, {} threads, {} steps of {} x {} x {} tokens", device.str(),
               autocast ? " (bf16 autocast)" : " (fp32)", threads, T.steps, T.grad_accum, D.batch_size,
               D.seq_len);

  const int64_t eval_windows = T.eval_batches * D.batch_size;
  auto checkpoint = [&] { save_checkpoint(ckpt_dir, model, *optimizer, state, cfg_, corpus.tokenizer); };
  auto record_val = [&](double elapsed, bool into_history) {
    double vl = evaluate(model, corpus.val, D.seq_len, D.batch_size, eval_windows, device, autocast);
    if (into_history) state.history.add({state.step, "val", vl, std::exp(vl), 0, 0, elapsed});
    result.val_loss = vl;
    result.val_ppl = std::exp(vl);
    result.val_step = state.step;
    return vl;
  };

  SigintScope sigint;
  Progress progress("train", T.steps, T.log_every);
  model->train();
  auto t0 = std::chrono::steady_clock::now();
  const double elapsed_before = state.elapsed_s;
  auto elapsed = [&] {
    return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  int64_t tokens_since_log = 0;
  auto t_log = std::chrono::steady_clock::now();
  double last_loss = NAN;

  while (state.step < T.steps) {
    double lr = lr_at(state.step, T.steps, T.lr, T.warmup, T.min_lr_ratio);
    set_lr(*optimizer, lr);
    optimizer->zero_grad();
    double step_loss = 0;
    for (int64_t micro = 0; micro < T.grad_accum; ++micro) {
      auto [x, y] = corpus.train.windows(corpus.train.random_starts(state.batch_rng, D.batch_size, D.seq_len),
                                         D.seq_len);
      torch::Tensor loss;
      {
        compat::CudaAutocast ac(autocast);
        loss = lm_loss(model, x.to(device), y.to(device));
      }
      if (hooks_.loss_filter) loss = hooks_.loss_filter(state.step, loss);
      double lv = loss.item<double>();
      if (!std::isfinite(lv)) {
        progress.finish();
        throw TrainingDiverged(fmt::format(
            "training diverged: the loss is {} at step {} (lr {:.3g}); stopped without saving. The last good "
            "checkpoint ({}) is kept; lower train.lr or raise train.warmup and resume or restart",
            lv, state.step + 1, lr, fs::exists(ckpt_dir) ? ckpt_dir : std::string("none written yet")));
      }
      (loss / static_cast<double>(T.grad_accum)).backward();
      step_loss += lv / static_cast<double>(T.grad_accum);
      tokens_since_log += D.batch_size * D.seq_len;
      state.tokens += D.batch_size * D.seq_len;
    }
    if (T.grad_clip > 0) {
      double norm = torch::nn::utils::clip_grad_norm_(model->parameters(), T.grad_clip);
      if (!std::isfinite(norm)) {
        progress.finish();
        throw TrainingDiverged(fmt::format(
            "training diverged: the gradient norm is {} at step {}; stopped without saving. The last good "
            "checkpoint ({}) is kept",
            norm, state.step + 1, fs::exists(ckpt_dir) ? ckpt_dir : std::string("none written yet")));
      }
    }
    optimizer->step();
    ++state.step;
    last_loss = step_loss;
    if (hooks_.after_step) hooks_.after_step(state.step, step_loss);

    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_log).count();
    double tps = dt > 0 ? static_cast<double>(tokens_since_log) / dt : 0;
    progress.update(state.step,
                    fmt::format("loss {:.4f}  lr {:.2e}  {} tok/s", step_loss, lr, human_count(tps)));
    if (state.step % T.log_every == 0 || state.step == T.steps) {
      state.history.add({state.step, "train", step_loss, std::exp(step_loss), lr, tps, elapsed()});
      result.tokens_per_s = tps;
      tokens_since_log = 0;
      t_log = std::chrono::steady_clock::now();
    }
    bool eval_now = state.step % T.eval_every == 0 || state.step == T.steps;
    if (eval_now) {
      double vl = record_val(elapsed(), true);
      progress.finish();
      spdlog::info("step {}: train_loss {:.4f}  val_loss {:.4f}  val_ppl {:.3f}", state.step, step_loss, vl,
                   std::exp(vl));
    }
    bool stop = g_stop.load();
    if (state.step % T.ckpt_every == 0 || state.step == T.steps || stop) {
      state.elapsed_s = elapsed();
      checkpoint();
      state.history.write(run_dir_);
    }
    if (stop) {
      progress.finish();
      spdlog::warn("interrupted at step {}: checkpoint written to {}; rerun with --resume {} to continue",
                   state.step, ckpt_dir, run_dir_);
      result.interrupted = true;
      break;
    }
  }
  progress.finish();
  // A resumed run that was already complete has not evaluated in this process: report, do not record.
  if (result.val_ppl == 0) record_val(elapsed(), false);
  result.steps_done = state.step;
  result.final_train_loss = last_loss;
  result.unigram_ppl = std::exp(unigram_cross_entropy(corpus.train, corpus.val, cfg_.model.vocab_size));
  state.history.write(run_dir_);
  return result;
}

}  // namespace attnlab
