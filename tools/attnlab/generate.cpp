// `attnlab generate`: sample text from a checkpoint (prompt, length, temperature, top-k), decoding with the
// mixers' caches.
#include <iostream>

#include "attnlab/core/error.h"
#include "attnlab/core/runtime.h"
#include "attnlab/infer/sample.h"
#include "attnlab/train/checkpoint.h"
#include "commands.h"

namespace attnlab::cli {

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Sample text from a checkpoint");
  struct Args {
    std::string checkpoint, prompt = "\n", device = "auto";
    int64_t length = 200, top_k = 0, seed = 0;
    double temperature = 0.8;
  };
  static Args a;
  cmd->add_option("checkpoint", a.checkpoint, "run directory or checkpoint directory")->required();
  cmd->add_option("-p,--prompt", a.prompt, "text to continue");
  cmd->add_option("-n,--length", a.length, "characters to generate")->capture_default_str();
  cmd->add_option("-t,--temperature", a.temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("-k,--top-k", a.top_k, "sample among the k most likely (0 = all)")->capture_default_str();
  cmd->add_option("--seed", a.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--device", a.device, "auto, cpu, cuda")->capture_default_str();
  cmd->callback([] {
    ATTNLAB_CHECK(a.length >= 0, "--length must be >= 0, got {}", a.length);
    ATTNLAB_CHECK(a.temperature >= 0, "--temperature must be >= 0, got {}", a.temperature);
    ATTNLAB_CHECK(a.top_k >= 0, "--top-k must be >= 0, got {}", a.top_k);
    std::string dir = find_checkpoint(a.checkpoint);
    RunConfig cfg = read_checkpoint_config(dir);
    CharTokenizer tok = read_checkpoint_tokenizer(dir);
    setup_threads(static_cast<int>(cfg.train.threads));
    torch::Device device = resolve_device(a.device);
    LanguageModel model(cfg.model, cfg.mixers);
    load_checkpoint(dir, model, nullptr, nullptr);
    model->to(device);
    auto prompt = tok.encode(a.prompt.empty() ? std::string("\n") : a.prompt);
    SamplingOptions s;
    s.temperature = a.temperature;
    s.top_k = a.top_k;
    s.seed = static_cast<uint64_t>(a.seed);
    auto ids = generate(model, prompt, a.length, s, device);
    std::cout << a.prompt << tok.decode(ids) << "\n";
  });
}

}  // namespace attnlab::cli
