// `attnlab eval`: perplexity of a checkpoint on a split or on any text source.
#include <nlohmann/json.hpp>

#include <cmath>
#include <iostream>

#include "attnlab/core/runtime.h"
#include "attnlab/data/corpus.h"
#include "attnlab/train/checkpoint.h"
#include "attnlab/train/trainer.h"
#include "commands.h"

namespace attnlab::cli {

void add_eval(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("eval", "Perplexity of a checkpoint on a split (val, train) or a text source");
  struct Args {
    std::string checkpoint, split = "val", data, device = "auto";
    int64_t max_tokens = 262144, batch = 16, seq_len = 0;
    bool json = false;
  };
  static Args a;
  cmd->add_option("checkpoint", a.checkpoint, "run directory or checkpoint directory")->required();
  cmd->add_option("--split", a.split, "val or train (of the run's own corpus)")
      ->check(CLI::IsMember({"val", "train"}))
      ->capture_default_str();
  cmd->add_option("--data", a.data, "evaluate on this text source instead (e.g. data/moby-dick)");
  cmd->add_option("--max-tokens", a.max_tokens, "evaluate at most this many tokens")->capture_default_str();
  cmd->add_option("--batch", a.batch, "windows per batch")->capture_default_str();
  cmd->add_option("--seq-len", a.seq_len, "window length (0 = the training seq_len)")->capture_default_str();
  cmd->add_option("--device", a.device, "auto, cpu, cuda")->capture_default_str();
  cmd->add_flag("--json", a.json, "print JSON");
  cmd->callback([] {
    std::string dir = find_checkpoint(a.checkpoint);
    RunConfig cfg = read_checkpoint_config(dir);
    CharTokenizer tok = read_checkpoint_tokenizer(dir);
    setup_threads(static_cast<int>(cfg.train.threads));
    torch::Device device = resolve_device(a.device);
    LanguageModel model(cfg.model, cfg.mixers);
    load_checkpoint(dir, model, nullptr, nullptr);
    model->to(device);
    int64_t seq_len = a.seq_len > 0 ? a.seq_len : cfg.data.seq_len;
    TokenStream stream;
    std::string source;
    if (!a.data.empty()) {
      stream = load_stream(a.data, tok, a.data);
      source = a.data;
    } else {
      Corpus c = load_corpus(cfg.data, tok);
      stream = a.split == "val" ? c.val : c.train;
      source = cfg.data.path + " (" + a.split + ")";
    }
    stream.require_window(seq_len);
    // Non-overlapping windows covering up to max_tokens of the stream.
    int64_t windows = std::max<int64_t>(1, std::min(stream.size() - 1, a.max_tokens) / seq_len);
    double loss = Trainer::evaluate(model, stream, seq_len, a.batch, windows, device, device.is_cuda());
    nlohmann::json j = {{"checkpoint", dir},  {"source", source}, {"tokens", windows * seq_len},
                        {"seq_len", seq_len}, {"loss", loss},     {"ppl", std::exp(loss)}};
    if (a.json)
      std::cout << j.dump(2) << "\n";
    else
      std::cout << fmt::format(
          "{}: {} tokens in {} windows of {}: loss {:.4f} nats/token, perplexity {:.3f}\n", source,
          windows * seq_len, windows, seq_len, loss, std::exp(loss));
  });
}

}  // namespace attnlab::cli
