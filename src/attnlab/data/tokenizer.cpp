// Character tokenizer.
#include "attnlab/data/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab {

std::u32string utf8_to_u32(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    char32_t cp;
    size_t len;
    if (c < 0x80)
      cp = c, len = 1;
    else if ((c >> 5) == 0x6)
      cp = c & 0x1f, len = 2;
    else if ((c >> 4) == 0xe)
      cp = c & 0x0f, len = 3;
    else
      cp = c & 0x07, len = 4;
    for (size_t j = 1; j < len && i + j < s.size(); ++j)
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + j]) & 0x3f);
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::string u32_to_utf8(char32_t c) {
  std::string out;
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  }
  return out;
}

CharTokenizer CharTokenizer::train(const std::string& text, int64_t max_chars) {
  ATTNLAB_CHECK(max_chars > 0, "tokenizer: vocab size must be > 0, got {}", max_chars);
  std::map<char32_t, int64_t> counts;
  for (char32_t c : utf8_to_u32(text)) ++counts[c];
  std::vector<std::pair<char32_t, int64_t>> items(counts.begin(), counts.end());
  std::stable_sort(items.begin(), items.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  CharTokenizer t;
  for (size_t i = 0; i < items.size() && static_cast<int64_t>(i) < max_chars; ++i)
    t.chars_.push_back(items[i].first);
  t.index();
  return t;
}

void CharTokenizer::index() {
  ids_.clear();
  for (size_t i = 0; i < chars_.size(); ++i) ids_[chars_[i]] = static_cast<int32_t>(i + 1);
}

std::vector<int32_t> CharTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> out;
  auto u = utf8_to_u32(text);
  out.reserve(u.size());
  for (char32_t c : u) {
    auto it = ids_.find(c);
    out.push_back(it == ids_.end() ? kUnk : it->second);
  }
  return out;
}

std::string CharTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id <= 0 || id > static_cast<int32_t>(chars_.size()))
      out += "\xef\xbf\xbd";  // U+FFFD for <unk>
    else
      out += u32_to_utf8(chars_[static_cast<size_t>(id - 1)]);
  }
  return out;
}

void CharTokenizer::save(const std::string& path) const {
  nlohmann::json j;
  j["type"] = "char";
  j["unk"] = "<unk>";
  std::vector<uint32_t> cps(chars_.begin(), chars_.end());
  j["code_points"] = cps;  // id i+1 is code_points[i]; id 0 is <unk>
  write_file_atomic(path, j.dump() + "\n");
}

CharTokenizer CharTokenizer::load(const std::string& path) {
  std::string text = read_file(path, "tokenizer");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("tokenizer '{}': not JSON: {}", path, e.what());
  }
  if (!j.is_object() || j.value("type", "") != "char" || !j.contains("code_points") ||
      !j["code_points"].is_array())
    fail("tokenizer '{}': expected {{\"type\": \"char\", \"code_points\": [...]}}", path);
  CharTokenizer t;
  for (const auto& c : j["code_points"]) t.chars_.push_back(static_cast<char32_t>(c.get<uint32_t>()));
  t.index();
  return t;
}

}  // namespace attnlab
