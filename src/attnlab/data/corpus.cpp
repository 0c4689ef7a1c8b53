// Corpus loading.
#include "attnlab/data/corpus.h"

#include <spdlog/spdlog.h>

#include "attnlab/core/error.h"
#include "attnlab/data/text.h"

namespace attnlab {

const OptionSet<DataOptions>& DataOptions::schema() {
  static const OptionSet<DataOptions> s = [] {
    OptionSet<DataOptions> o("data");
    o.add("path", &DataOptions::path,
          "corpus: .txt, .jsonl (field text), .parquet (column text) or a directory");
    o.add("val_path", &DataOptions::val_path, "separate validation corpus (empty: split path by document)");
    o.add("val_fraction", &DataOptions::val_fraction, "share of documents held out for validation",
          check::in_range(1e-6, 0.999));
    o.add("seq_len", &DataOptions::seq_len, "tokens per training window", check::positive<int64_t>());
    o.add("batch_size", &DataOptions::batch_size, "windows per micro-batch", check::positive<int64_t>());
    o.add("vocab_limit", &DataOptions::vocab_limit, "character vocabulary: the N most frequent, plus <unk>",
          check::positive<int64_t>());
    return o;
  }();
  return s;
}

Corpus load_corpus(const DataOptions& opt, const std::optional<CharTokenizer>& tokenizer) {
  Corpus c;
  Split split;
  if (opt.val_path.empty()) {
    split = split_documents(read_documents(opt.path), opt.val_fraction);
  } else {
    split.train = read_documents(opt.path);
    split.val = read_documents(opt.val_path);
  }
  c.train_documents = static_cast<int64_t>(split.train.size());
  c.val_documents = static_cast<int64_t>(split.val.size());
  std::string train_text = join_documents(split.train);
  std::string val_text = join_documents(split.val);
  c.tokenizer = tokenizer ? *tokenizer : CharTokenizer::train(train_text, opt.vocab_limit);
  c.train = TokenStream(c.tokenizer.encode(train_text), "training");
  c.val = TokenStream(c.tokenizer.encode(val_text), "validation");
  c.train.require_window(opt.seq_len);
  c.val.require_window(opt.seq_len);
  spdlog::info("corpus {}: {} train documents ({} tokens), {} validation documents ({} tokens), vocab {}",
               opt.path, c.train_documents, c.train.size(), c.val_documents, c.val.size(),
               c.tokenizer.vocab_size());
  return c;
}

TokenStream load_stream(const std::string& path, const CharTokenizer& tokenizer, const std::string& name) {
  return TokenStream(tokenizer.encode(join_documents(read_documents(path))), name);
}

}  // namespace attnlab
