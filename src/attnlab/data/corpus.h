// A corpus ready for training: the tokenizer and the train / validation token streams, built from the
// data section of a config.
#pragma once

#include <optional>
#include <string>

#include "attnlab/core/options.h"
#include "attnlab/data/batches.h"
#include "attnlab/data/tokenizer.h"

namespace attnlab {

struct DataOptions {
  std::string path = "data/sotu";  // a .txt/.jsonl/.parquet file or a directory of them
  std::string val_path;            // optional separate validation source; empty: split `path` by document
  double val_fraction = 0.05;      // share of documents held out for validation
  int64_t seq_len = 128;
  int64_t batch_size = 32;
  int64_t vocab_limit = 5000;  // the N most frequent characters, plus <unk>
  static const OptionSet<DataOptions>& schema();
};

struct Corpus {
  CharTokenizer tokenizer;
  TokenStream train, val;
  int64_t train_documents = 0, val_documents = 0;
};

// Reads and splits the corpus. With `tokenizer` given (a resumed run, eval, generate) it is reused, so
// that ids mean the same as in training; otherwise one is trained on the training split.
Corpus load_corpus(const DataOptions& opt, const std::optional<CharTokenizer>& tokenizer = std::nullopt);

// Encodes any text source with a tokenizer (for out-of-domain evaluation, e.g. Moby Dick).
TokenStream load_stream(const std::string& path, const CharTokenizer& tokenizer, const std::string& name);

}  // namespace attnlab
