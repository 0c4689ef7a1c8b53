// Options declared once: a struct's members carry the defaults, and one OptionSet<T> line per member gives
// its name, help and check. YAML files, `--set key=value`, `attnlab list`, validation and the saved
// resolved config all read that one declaration (STYLE.md habit 11).
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attnlab/core/error.h"

namespace attnlab {

// What `attnlab list` and error messages show about one option.
struct OptionInfo {
  std::string name;
  std::string type;           // "int", "float", "bool", "string", "list[string]", "list[int]"
  std::string default_value;  // as it would be written in YAML
  std::string help;
};

namespace opt_detail {
// Parsing and printing of one value type. Throws attnlab::Error naming the option on a bad value.
template <class M>
struct Codec;
std::string join_names(const std::vector<std::string>& names);
// "scalar", "list", "map" or "null": what a YAML node is, for error messages.
std::string yaml_kind(const YAML::Node& n);
}  // namespace opt_detail

// A check returns "" when the value is fine, else what was expected ("a value > 0").
template <class M>
using Check = std::function<std::string(const M&)>;

namespace check {
template <class M>
Check<M> positive() {
  return [](const M& v) { return v > M(0) ? std::string() : std::string("a value > 0"); };
}
template <class M>
Check<M> non_negative() {
  return [](const M& v) { return v >= M(0) ? std::string() : std::string("a value >= 0"); };
}
template <class M>
Check<M> in_range(M lo, M hi) {
  return [lo, hi](const M& v) {
    return (v >= lo && v <= hi) ? std::string() : fmt::format("a value in [{}, {}]", lo, hi);
  };
}
inline Check<std::string> one_of(std::vector<std::string> allowed) {
  return [allowed](const std::string& v) {
    for (const auto& a : allowed)
      if (a == v) return std::string();
    return fmt::format("one of {}", opt_detail::join_names(allowed));
  };
}
}  // namespace check

// The schema of an options struct T.
template <class T>
class OptionSet {
 public:
  explicit OptionSet(std::string section) : section_(std::move(section)) {}

  template <class M>
  OptionSet& add(const std::string& name, M T::*member, std::string help, Check<M> chk = {}) {
    Field f;
    f.name = name;
    f.type = opt_detail::Codec<M>::type_name();
    f.help = std::move(help);
    const std::string q = qualified(name);
    f.set = [member, q, chk](T& obj, const YAML::Node& node) {
      M value = opt_detail::Codec<M>::from_yaml(node, q);
      if (chk) {
        std::string expected = chk(value);
        if (!expected.empty())
          fail("config key '{}': expected {}, got {}", q, expected, opt_detail::Codec<M>::to_string(value));
      }
      obj.*member = std::move(value);
    };
    f.validate = [member, q, chk](const T& obj) {
      if (!chk) return;
      std::string expected = chk(obj.*member);
      if (!expected.empty())
        fail("config key '{}': expected {}, got {}", q, expected,
             opt_detail::Codec<M>::to_string(obj.*member));
    };
    f.get = [member](const T& obj) { return opt_detail::Codec<M>::to_yaml(obj.*member); };
    f.show = [member](const T& obj) { return opt_detail::Codec<M>::to_string(obj.*member); };
    fields_.push_back(std::move(f));
    return *this;
  }

  const std::string& section() const { return section_; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& f : fields_) out.push_back(f.name);
    return out;
  }

  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Sets one option from a YAML node (a scalar from `--set` is parsed the same way).
  void set(T& obj, const std::string& key, const YAML::Node& value) const {
    const Field* f = find(key);
    if (!f)
      fail("unknown config key '{}'; valid keys in '{}': {}", qualified(key), section_,
           opt_detail::join_names(names()));
    f->set(obj, value);
  }

  // Applies every key of a YAML map; an unknown key is an error that lists the valid ones.
  void apply(T& obj, const YAML::Node& map) const {
    if (!map || map.IsNull()) return;
    if (!map.IsMap())
      fail("config section '{}': expected a map of key: value, got a {}", section_,
           opt_detail::yaml_kind(map));
    for (const auto& kv : map) set(obj, kv.first.as<std::string>(), kv.second);
  }

  void validate(const T& obj) const {
    for (const auto& f : fields_) f.validate(obj);
  }

  YAML::Node to_yaml(const T& obj) const {
    YAML::Node node(YAML::NodeType::Map);
    for (const auto& f : fields_) node[f.name] = f.get(obj);
    return node;
  }

  std::vector<OptionInfo> describe(const T& defaults = T{}) const {
    std::vector<OptionInfo> out;
    for (const auto& f : fields_) out.push_back({f.name, f.type, f.show(defaults), f.help});
    return out;
  }

 private:
  struct Field {
    std::string name, type, help;
    std::function<void(T&, const YAML::Node&)> set;
    std::function<void(const T&)> validate;
    std::function<YAML::Node(const T&)> get;
    std::function<std::string(const T&)> show;
  };
  const Field* find(const std::string& key) const {
    for (const auto& f : fields_)
      if (f.name == key) return &f;
    return nullptr;
  }
  std::string qualified(const std::string& key) const {
    return section_.empty() ? key : section_ + "." + key;
  }

  std::string section_;
  std::vector<Field> fields_;
};

// Type-erased options, for the mixer registry: each mixer has its own options struct.
class AnyOptions {
 public:
  virtual ~AnyOptions() = default;
  virtual void set(const std::string& key, const YAML::Node& value) = 0;
  virtual void apply(const YAML::Node& map) = 0;
  virtual void validate() const = 0;
  virtual YAML::Node to_yaml() const = 0;
  virtual std::vector<OptionInfo> describe() const = 0;
  virtual std::vector<std::string> names() const = 0;
  virtual std::unique_ptr<AnyOptions> clone() const = 0;
};

// T must provide `static const OptionSet<T>& schema()`.
template <class T>
class TypedOptions final : public AnyOptions {
 public:
  TypedOptions() = default;
  explicit TypedOptions(T v) : value(std::move(v)) {}
  void set(const std::string& key, const YAML::Node& v) override { T::schema().set(value, key, v); }
  void apply(const YAML::Node& map) override { T::schema().apply(value, map); }
  void validate() const override { T::schema().validate(value); }
  YAML::Node to_yaml() const override { return T::schema().to_yaml(value); }
  std::vector<OptionInfo> describe() const override { return T::schema().describe(value); }
  std::vector<std::string> names() const override { return T::schema().names(); }
  std::unique_ptr<AnyOptions> clone() const override { return std::make_unique<TypedOptions<T>>(value); }
  T value;
};

// Parses the right-hand side of `--set key=value` into a YAML node: "3e-4" -> scalar, "[a, b]" -> list,
// "{a: 1}" -> map.
YAML::Node parse_value_text(const std::string& text);

// Splits "a.b=c" into {"a.b", "c"}; an entry without '=' is an error that shows the expected form.
std::pair<std::string, std::string> split_assignment(const std::string& text);

// ---- codecs ----------------------------------------------------------------------------------------
namespace opt_detail {

std::string scalar_text(const YAML::Node& node, const std::string& key, const char* type);
long long parse_int(const std::string& text, const std::string& key);
double parse_float(const std::string& text, const std::string& key);
bool parse_bool(const std::string& text, const std::string& key);
std::vector<std::string> parse_list(const YAML::Node& node, const std::string& key);
std::string format_float(double v);

template <>
struct Codec<int64_t> {
  static const char* type_name() { return "int"; }
  static int64_t from_yaml(const YAML::Node& n, const std::string& key) {
    return parse_int(scalar_text(n, key, "an integer"), key);
  }
  static YAML::Node to_yaml(int64_t v) { return YAML::Node(v); }
  static std::string to_string(int64_t v) { return std::to_string(v); }
};
template <>
struct Codec<int> {
  static const char* type_name() { return "int"; }
  static int from_yaml(const YAML::Node& n, const std::string& key) {
    return static_cast<int>(parse_int(scalar_text(n, key, "an integer"), key));
  }
  static YAML::Node to_yaml(int v) { return YAML::Node(v); }
  static std::string to_string(int v) { return std::to_string(v); }
};
template <>
struct Codec<double> {
  static const char* type_name() { return "float"; }
  static double from_yaml(const YAML::Node& n, const std::string& key) {
    return parse_float(scalar_text(n, key, "a number"), key);
  }
  static YAML::Node to_yaml(double v) { return YAML::Node(format_float(v)); }
  static std::string to_string(double v) { return format_float(v); }
};
template <>
struct Codec<bool> {
  static const char* type_name() { return "bool"; }
  static bool from_yaml(const YAML::Node& n, const std::string& key) {
    return parse_bool(scalar_text(n, key, "true or false"), key);
  }
  static YAML::Node to_yaml(bool v) { return YAML::Node(v); }
  static std::string to_string(bool v) { return v ? "true" : "false"; }
};
template <>
struct Codec<std::string> {
  static const char* type_name() { return "string"; }
  static std::string from_yaml(const YAML::Node& n, const std::string& key) {
    return scalar_text(n, key, "a string");
  }
  static YAML::Node to_yaml(const std::string& v) { return YAML::Node(v); }
  static std::string to_string(const std::string& v) { return v.empty() ? "\"\"" : v; }
};
template <>
struct Codec<std::vector<std::string>> {
  static const char* type_name() { return "list[string]"; }
  static std::vector<std::string> from_yaml(const YAML::Node& n, const std::string& key) {
    return parse_list(n, key);
  }
  static YAML::Node to_yaml(const std::vector<std::string>& v) {
    YAML::Node node(YAML::NodeType::Sequence);
    for (const auto& s : v) node.push_back(s);
    return node;
  }
  static std::string to_string(const std::vector<std::string>& v) {
    return fmt::format("[{}]", fmt::join(v, ", "));
  }
};
template <>
struct Codec<std::vector<int64_t>> {
  static const char* type_name() { return "list[int]"; }
  static std::vector<int64_t> from_yaml(const YAML::Node& n, const std::string& key) {
    std::vector<int64_t> out;
    for (const auto& s : parse_list(n, key)) out.push_back(parse_int(s, key));
    return out;
  }
  static YAML::Node to_yaml(const std::vector<int64_t>& v) {
    YAML::Node node(YAML::NodeType::Sequence);
    for (auto s : v) node.push_back(s);
    return node;
  }
  static std::string to_string(const std::vector<int64_t>& v) {
    return fmt::format("[{}]", fmt::join(v, ", "));
  }
};
template <>
struct Codec<std::vector<double>> {
  static const char* type_name() { return "list[float]"; }
  static std::vector<double> from_yaml(const YAML::Node& n, const std::string& key) {
    std::vector<double> out;
    for (const auto& s : parse_list(n, key)) out.push_back(parse_float(s, key));
    return out;
  }
  static YAML::Node to_yaml(const std::vector<double>& v) {
    YAML::Node node(YAML::NodeType::Sequence);
    for (auto s : v) node.push_back(s);
    return node;
  }
  static std::string to_string(const std::vector<double>& v) {
    return fmt::format("[{}]", fmt::join(v, ", "));
  }
};

// A map from a name to a struct with its own schema (`static const OptionSet<V>& schema()`), e.g.
// study.variants: {gla_wide: {mixer: gla, set: [model.d_model=256]}}. Each entry is read with V's schema
// (unknown keys list the valid ones); errors name the entry ("study.variants.gla_wide: ...").
template <class V>
struct Codec<std::map<std::string, V>> {
  static const char* type_name() {
    static const std::string t = "map[name, {" + join_names(V::schema().names()) + "}]";
    return t.c_str();
  }
  static std::map<std::string, V> from_yaml(const YAML::Node& n, const std::string& key) {
    std::map<std::string, V> out;
    if (!n || n.IsNull()) return out;
    if (!n.IsMap()) fail("config key '{}': expected a map of name: {{...}}, got a {}", key, yaml_kind(n));
    for (const auto& kv : n) {
      const std::string name = kv.first.as<std::string>();
      V v;
      try {
        V::schema().apply(v, kv.second);
      } catch (const Error& e) {
        fail("{}.{}: {}", key, name, e.what());
      }
      out[name] = std::move(v);
    }
    return out;
  }
  static YAML::Node to_yaml(const std::map<std::string, V>& m) {
    YAML::Node node(YAML::NodeType::Map);
    for (const auto& [name, v] : m) node[name] = V::schema().to_yaml(v);
    return node;
  }
  static std::string to_string(const std::map<std::string, V>& m) {
    YAML::Emitter e;
    e << YAML::Flow << to_yaml(m);
    return e.c_str();
  }
};

}  // namespace opt_detail
}  // namespace attnlab
