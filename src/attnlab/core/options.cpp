// Parsing of option values (shared by YAML files and --set).
#include "attnlab/core/options.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace attnlab {

namespace opt_detail {

std::string join_names(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string yaml_kind(const YAML::Node& n) {
  if (!n) return "null";
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      return "scalar";
    case YAML::NodeType::Sequence:
      return "list";
    case YAML::NodeType::Map:
      return "map";
    default:
      return "null";
  }
}

std::string scalar_text(const YAML::Node& node, const std::string& key, const char* type) {
  if (!node || !node.IsScalar()) fail("config key '{}': expected {}, got a {}", key, type, yaml_kind(node));
  return node.Scalar();
}

long long parse_int(const std::string& text, const std::string& key) {
  // Accept 1e6-style and 10M/10K-style integers: people write parameter counts that way.
  std::string t = text;
  double mult = 1;
  if (!t.empty()) {
    char last = t.back();
    if (last == 'K' || last == 'k') mult = 1e3;
    if (last == 'M' || last == 'm') mult = 1e6;
    if (last == 'G' || last == 'g' || last == 'B' || last == 'b') mult = 1e9;
    if (mult != 1) t.pop_back();
  }
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(t.c_str(), &end, 10);
  if (!t.empty() && end && *end == '\0' && errno == 0) return static_cast<long long>(v * mult);
  double d = std::strtod(t.c_str(), &end);
  if (!t.empty() && end && *end == '\0' && std::isfinite(d) && std::floor(d * mult) == d * mult)
    return static_cast<long long>(d * mult);
  fail("config key '{}': expected an integer, got '{}'", key, text);
}

double parse_float(const std::string& text, const std::string& key) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || !end || *end != '\0' || errno != 0 || !std::isfinite(v))
    fail("config key '{}': expected a finite number, got '{}'", key, text);
  return v;
}

bool parse_bool(const std::string& text, const std::string& key) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  fail("config key '{}': expected true or false, got '{}'", key, text);
}

std::vector<std::string> parse_list(const YAML::Node& node, const std::string& key) {
  std::vector<std::string> out;
  if (!node || node.IsNull()) return out;
  if (node.IsSequence()) {
    for (const auto& item : node) out.push_back(scalar_text(item, key, "a list of scalars"));
    return out;
  }
  // A scalar "a,b,c" (how --set writes lists) or a single item.
  std::string text = scalar_text(node, key, "a list");
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string format_float(double v) {
  // Shortest text that reads back to the same double ("0.0003", "1e-08").
  std::string s = fmt::format("{}", v);
  return s;
}

}  // namespace opt_detail

YAML::Node parse_value_text(const std::string& text) {
  if (!text.empty() && (text.front() == '[' || text.front() == '{')) {
    try {
      return YAML::Load(text);
    } catch (const YAML::Exception& e) {
      fail("could not read the {} '{}': {}", text.front() == '[' ? "list" : "map", text, e.what());
    }
  }
  return YAML::Node(text);
}

std::pair<std::string, std::string> split_assignment(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("expected --set section.key=value (for example --set train.lr=3e-4), got '{}'", text);
  return {text.substr(0, eq), text.substr(eq + 1)};
}

}  // namespace attnlab
