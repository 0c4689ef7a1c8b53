// Character tokenizer over Unicode code points: the N most frequent characters of the training split plus
// <unk> (seed 000's default, N = 5000), saved with the run and reused for validation and generation.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace attnlab {

class CharTokenizer {
 public:
  static constexpr int32_t kUnk = 0;  // id of <unk>

  // Builds the vocabulary from `text`: characters by descending count, ties by code point.
  static CharTokenizer train(const std::string& text, int64_t max_chars = 5000);
  // Reads tokenizer.json; errors name the file and what was wrong.
  static CharTokenizer load(const std::string& path);
  void save(const std::string& path) const;

  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(chars_.size()) + 1; }
  // The code points, in id order (id = index + 1).
  const std::vector<char32_t>& chars() const { return chars_; }

  bool operator==(const CharTokenizer& o) const { return chars_ == o.chars_; }

 private:
  void index();
  std::vector<char32_t> chars_;
  std::unordered_map<char32_t, int32_t> ids_;
};

// UTF-8 <-> code points (input already validated as UTF-8).
std::u32string utf8_to_u32(const std::string& s);
std::string u32_to_utf8(char32_t c);

}  // namespace attnlab
