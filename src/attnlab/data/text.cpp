// Text sources.
#include "attnlab/data/text.h"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/data/parquet.h"

namespace attnlab {
namespace {

std::string extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

bool supported(const fs::path& p) {
  auto e = extension(p);
  return e == ".txt" || e == ".jsonl" || e == ".parquet";
}

void check_utf8(const std::string& text, const std::string& where) {
  auto problem = utf8_problem(text);
  if (!problem.empty()) fail("{}: expected UTF-8 text, found {}", where, problem);
}

void read_file_documents(const fs::path& p, std::vector<Document>& out) {
  auto e = extension(p);
  std::string name = p.filename().string();
  if (e == ".txt") {
    std::string text = read_file(p, "text file");
    check_utf8(text, p.string());
    out.push_back({name, std::move(text)});
  } else if (e == ".jsonl") {
    std::istringstream in(read_file(p, "jsonl file"));
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception& ex) {
        fail("{}:{}: expected a JSON object per line, could not parse it: {}", p.string(), lineno, ex.what());
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        fail("{}:{}: expected an object with a string field \"text\", got {}", p.string(), lineno,
             line.substr(0, 80));
      std::string text = j["text"].get<std::string>();
      check_utf8(text, fmt::format("{}:{}", p.string(), lineno));
      out.push_back({fmt::format("{}:{}", name, lineno), std::move(text)});
    }
  } else if (e == ".parquet") {
    auto rows = read_parquet_strings(p.string(), "text");
    std::string text;
    for (auto& r : rows) {
      text += r;
      if (!r.empty() && r.back() != '\n') text += '\n';
    }
    check_utf8(text, p.string());
    out.push_back({name, std::move(text)});
  } else {
    fail("{}: expected a .txt, .jsonl or .parquet file, got '{}'", p.string(), e);
  }
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::string utf8_problem(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || (len == 2 && c < 0xc2)) return fmt::format("invalid byte 0x{:02x} at offset {}", c, i);
    if (i + len > n) return fmt::format("a truncated UTF-8 sequence at offset {}", i);
    for (size_t j = 1; j < len; ++j)
      if ((static_cast<unsigned char>(s[i + j]) & 0xc0) != 0x80)
        return fmt::format("invalid byte 0x{:02x} at offset {}", static_cast<unsigned char>(s[i + j]), i + j);
    i += len;
  }
  return "";
}

std::vector<Document> read_documents(const std::string& path) {
  fs::path p(path);
  std::error_code ec;
  if (!fs::exists(p, ec))
    fail("corpus '{}' does not exist (run scripts/setup.sh to fetch the default corpora)", path);
  std::vector<Document> docs;
  if (fs::is_directory(p, ec)) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(p))
      if (entry.is_regular_file() && supported(entry.path())) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail("corpus directory '{}' holds no .txt, .jsonl or .parquet files", path);
    for (const auto& f : files) read_file_documents(f, docs);
  } else {
    require_file(p, "corpus");
    if (!supported(p))
      fail("corpus '{}': expected a .txt, .jsonl or .parquet file or a directory of them", path);
    read_file_documents(p, docs);
  }
  size_t chars = 0;
  for (const auto& d : docs) chars += d.text.size();
  if (chars == 0) fail("corpus '{}' is empty (0 bytes of text)", path);
  return docs;
}

Split split_documents(std::vector<Document> docs, double val_fraction) {
  ATTNLAB_CHECK(val_fraction > 0 && val_fraction < 1, "data.val_fraction: expected a value in (0, 1), got {}",
                val_fraction);
  Split s;
  if (docs.size() < 2) {
    // One document: split it by characters, on a UTF-8 boundary.
    const std::string& t = docs.at(0).text;
    size_t cut = static_cast<size_t>(static_cast<double>(t.size()) * (1.0 - val_fraction));
    while (cut < t.size() && (static_cast<unsigned char>(t[cut]) & 0xc0) == 0x80) ++cut;
    spdlog::info("one document ({}): the last {:.0f}% of its text is the validation split", docs[0].name,
                 100 * val_fraction);
    s.train.push_back({docs[0].name, t.substr(0, cut)});
    s.val.push_back({docs[0].name, t.substr(cut)});
    return s;
  }
  std::vector<size_t> order(docs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    auto ha = fnv1a(docs[a].name), hb = fnv1a(docs[b].name);
    return ha != hb ? ha < hb : docs[a].name < docs[b].name;
  });
  size_t n_val = static_cast<size_t>(std::ceil(static_cast<double>(docs.size()) * val_fraction));
  n_val = std::min(std::max<size_t>(n_val, 1), docs.size() - 1);
  std::vector<bool> is_val(docs.size(), false);
  for (size_t i = 0; i < n_val; ++i) is_val[order[i]] = true;
  // Keep the original (sorted by name) order inside each split.
  for (size_t i = 0; i < docs.size(); ++i) (is_val[i] ? s.val : s.train).push_back(std::move(docs[i]));
  return s;
}

std::string join_documents(const std::vector<Document>& docs) {
  std::string out;
  for (const auto& d : docs) {
    out += d.text;
    if (!d.text.empty() && d.text.back() != '\n') out += "\n\n";
  }
  return out;
}

}  // namespace attnlab
