// Text sources: .txt (one document), .jsonl (one document per line, field "text"), .parquet (column
// "text", one row per line as Hugging Face stores WikiText), or a directory of such files (sorted by name).
#pragma once

#include <string>
#include <vector>

namespace attnlab {

struct Document {
  std::string name;  // file name, plus ":line" for jsonl rows
  std::string text;  // valid UTF-8
};

// Reads every document of `path`. Errors name the path: missing, empty, not UTF-8 (with the byte offset),
// a directory with no .txt/.jsonl/.parquet files, a jsonl line that is not an object with a string "text".
std::vector<Document> read_documents(const std::string& path);

// Returns "" if `text` is valid UTF-8, else a description of the first bad byte ("invalid byte 0xff at offset
// 12").
std::string utf8_problem(const std::string& text);

// Deterministic split by document: documents are ordered by a hash of their name and the first
// ceil(n * val_fraction) go to validation. A single document is split by characters instead (its last
// val_fraction), which is logged.
struct Split {
  std::vector<Document> train, val;
};
Split split_documents(std::vector<Document> docs, double val_fraction);

// Concatenates documents, separated by a blank line where a document does not end with a newline.
std::string join_documents(const std::vector<Document>& docs);

}  // namespace attnlab
