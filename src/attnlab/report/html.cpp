// report.html: rendering of sections, tables and embedded figures.
#include "attnlab/report/html.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab::report {

namespace {

constexpr const char* kCss = R"css(
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde1e8; --stripe: #f6f7f9; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 20px; margin: 40px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 16px; }
nav ol { margin: 8px 0 0; padding-left: 22px; color: var(--muted); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 12px 0 4px; font-size: 13.5px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: var(--stripe); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.missing { color: #a0a7b4; text-align: center; }
.table-wrap { overflow-x: auto; }
caption, figcaption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 13.5px;
                      padding-top: 6px; }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
.links { font-size: 13px; margin-left: 8px; }
.missing-figure { padding: 12px 14px; background: #fff4f2; border: 1px solid #f0c4bc; color: #8a2b1d; }
pre { background: var(--stripe); border: 1px solid var(--line); padding: 10px 12px; overflow-x: auto;
      font-size: 12.5px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12.5px; }
)css";

// "Memory scaling (op alone)" -> "memory-scaling-op-alone"; unique with a numeric suffix.
std::string slug(const std::string& heading, std::vector<std::string>& used) {
  std::string s;
  for (unsigned char c : heading) {
    if (std::isalnum(c))
      s += static_cast<char>(std::tolower(c));
    else if (!s.empty() && s.back() != '-')
      s += '-';
  }
  while (!s.empty() && s.back() == '-') s.pop_back();
  if (s.empty()) s = "section";
  std::string base = s;
  for (int i = 2; std::find(used.begin(), used.end(), s) != used.end(); ++i)
    s = base + "-" + std::to_string(i);
  used.push_back(s);
  return s;
}

// A path as a relative URL from `base_dir` when it lies below it, else a file:// URL; percent-encoded.
std::string file_url(const fs::path& p, const fs::path& base_dir) {
  fs::path abs = fs::absolute(p).lexically_normal();
  fs::path rel = abs.lexically_relative(fs::absolute(base_dir).lexically_normal());
  bool use_rel = !rel.empty() && *rel.begin() != "..";
  std::string s = use_rel ? rel.generic_string() : abs.generic_string();
  std::string out = use_rel ? "" : "file://";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string paragraphs(const std::string& text) {
  std::string out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    std::string p = text.substr(start, end - start);
    if (p.find_first_not_of(" \n\t") != std::string::npos) out += "<p>" + html_escape(p) + "</p>\n";
    start = end + 2;
  }
  return out;
}

std::string table_html(const Table& t, const std::string& caption) {
  std::string out = "<div class=\"table-wrap\"><table>\n";
  if (!caption.empty()) out += "<caption>" + html_escape(caption) + "</caption>\n";
  out += "<thead><tr>";
  for (const auto& c : t.columns) out += "<th>" + html_escape(c) + "</th>";
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    out += "<tr>";
    for (const Cell& c : row) {
      if (std::holds_alternative<std::monostate>(c)) {
        out += "<td class=\"missing\">&ndash;</td>";
      } else if (auto d = std::get_if<double>(&c)) {
        // The full value on hover; the rounded one in the cell.
        out += fmt::format("<td class=\"num\" title=\"{}\">{}</td>", html_escape(cell_string(c)),
                           html_escape(format_number(*d)));
      } else if (std::holds_alternative<int64_t>(c)) {
        out += "<td class=\"num\">" + cell_string(c) + "</td>";
      } else {
        out += "<td>" + html_escape(std::get<std::string>(c)) + "</td>";
      }
    }
    out += "</tr>\n";
  }
  return out + "</tbody></table></div>\n";
}

std::string figure_html(const Block& b, const fs::path& base_dir) {
  std::string caption = html_escape(b.text);
  std::string links;
  for (const auto& l : b.links) {
    std::string ext = l.extension().string();
    if (!ext.empty()) ext.erase(0, 1);
    for (auto& ch : ext) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    links += fmt::format("{}<a href=\"{}\">{}</a>", links.empty() ? "" : " &middot; ",
                         html_escape(file_url(l, base_dir)), html_escape(ext));
  }
  if (!links.empty()) links = "<span class=\"links\">" + links + "</span>";
  std::string png;
  std::string why = b.error;
  if (why.empty()) {
    try {
      png = read_file(b.png, "figure");
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  std::string body;
  if (!why.empty()) {
    body = "<div class=\"missing-figure\">Figure not available: " + html_escape(why) + "</div>";
  } else {
    std::string alt = b.alt.empty() ? b.text : b.alt;
    body = fmt::format("<img src=\"data:image/png;base64,{}\" alt=\"{}\">", base64_encode(png),
                       html_escape(alt));
  }
  return fmt::format("<figure>\n{}\n<figcaption>{}{}</figcaption>\n</figure>\n", body, caption, links);
}

// The environment object flattened to dotted keys; arrays of scalars joined, other values as JSON.
void flatten(const nlohmann::json& j, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto it = j.begin(); it != j.end(); ++it)
      flatten(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
    return;
  }
  std::string v;
  if (j.is_string()) {
    v = j.get<std::string>();
  } else if (j.is_array()) {
    bool scalars = true;
    for (const auto& e : j) scalars = scalars && !e.is_structured();
    if (scalars) {
      for (const auto& e : j)
        v += (v.empty() ? "" : ", ") + (e.is_string() ? e.get<std::string>() : e.dump());
    } else {
      v = j.dump();
    }
  } else if (!j.is_null()) {
    v = j.dump();
  }
  out.emplace_back(prefix, v);
}

}  // namespace

Section& Section::paragraph(std::string text) {
  Block b;
  b.kind = Block::Kind::paragraph;
  b.text = std::move(text);
  blocks_.push_back(std::move(b));
  return *this;
}

Section& Section::preformatted(std::string text) {
  Block b;
  b.kind = Block::Kind::preformatted;
  b.text = std::move(text);
  blocks_.push_back(std::move(b));
  return *this;
}

Section& Section::table(Table table, std::string caption) {
  Block b;
  b.kind = Block::Kind::table;
  b.table = std::move(table);
  b.text = std::move(caption);
  blocks_.push_back(std::move(b));
  return *this;
}

Section& Section::figure(const fs::path& png, std::string caption, std::string alt) {
  Block b;
  b.kind = Block::Kind::figure;
  b.png = png;
  b.text = std::move(caption);
  b.alt = std::move(alt);
  for (const char* ext : {".pdf", ".svg"}) {
    fs::path p = png;
    p.replace_extension(ext);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) b.links.push_back(p);
  }
  blocks_.push_back(std::move(b));
  return *this;
}

Section& Section::figure(const RenderResult& r, std::string caption, std::string alt) {
  Block b;
  b.kind = Block::Kind::figure;
  b.png = r.file("png");
  b.text = std::move(caption);
  b.alt = std::move(alt);
  for (const auto& f : r.files)
    if (f.extension() != ".png") b.links.push_back(f);
  if (b.png.empty()) b.error = r.error.empty() ? "no PNG was rendered" : r.error;
  blocks_.push_back(std::move(b));
  return *this;
}

Section& Report::add_section(std::string heading) {
  sections.emplace_back(std::move(heading));
  return sections.back();
}

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) |
                 (static_cast<unsigned char>(bytes[i + 1]) << 8) | static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = bytes.size() - i;
  if (rest) {
    uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string render_html(const Report& r, const fs::path& base_dir) {
  std::vector<std::string> ids;
  std::vector<std::string> section_ids;
  for (const auto& s : r.sections) section_ids.push_back(slug(s.heading(), ids));
  bool has_env = r.environment.is_object() && !r.environment.empty();
  std::string env_id = has_env ? slug("Environment", ids) : "";

  std::string out = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  out +=
      "<title>" + html_escape(r.title) + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n<main>\n";
  out += "<h1>" + html_escape(r.title) + "</h1>\n";
  if (!r.subtitle.empty()) out += "<p class=\"subtitle\">" + html_escape(r.subtitle) + "</p>\n";

  if (has_env || !r.sections.empty()) {
    out += "<nav><ol>\n";
    if (has_env) out += fmt::format("<li><a href=\"#{}\">Environment</a></li>\n", env_id);
    for (size_t i = 0; i < r.sections.size(); ++i)
      out += fmt::format("<li><a href=\"#{}\">{}</a></li>\n", section_ids[i],
                         html_escape(r.sections[i].heading()));
    out += "</ol></nav>\n";
  }

  if (has_env) {
    std::vector<std::pair<std::string, std::string>> kv;
    flatten(r.environment, "", kv);
    out += fmt::format("<section id=\"{}\">\n<h2>Environment</h2>\n", env_id);
    out += "<div class=\"table-wrap\"><table class=\"env\">\n<tbody>\n";
    for (const auto& [k, v] : kv)
      out += "<tr><th>" + html_escape(k) + "</th><td>" + html_escape(v) + "</td></tr>\n";
    out += "</tbody></table></div>\n</section>\n";
  }

  for (size_t i = 0; i < r.sections.size(); ++i) {
    const Section& s = r.sections[i];
    out += fmt::format("<section id=\"{}\">\n<h2>{}</h2>\n", section_ids[i], html_escape(s.heading()));
    for (const Block& b : s.blocks()) {
      switch (b.kind) {
        case Block::Kind::paragraph:
          out += paragraphs(b.text);
          break;
        case Block::Kind::preformatted:
          out += "<pre>" + html_escape(b.text) + "</pre>\n";
          break;
        case Block::Kind::table:
          out += table_html(b.table, b.text);
          break;
        case Block::Kind::figure:
          out += figure_html(b, base_dir);
          break;
      }
    }
    out += "</section>\n";
  }
#ifdef ATTNLAB_VERSION
  out += "<footer>Written by attnlab " ATTNLAB_VERSION ".</footer>\n";
#else
  out += "<footer>Written by attnlab.</footer>\n";
#endif
  out += "</main>\n</body>\n</html>\n";
  return out;
}

void write_html(const fs::path& path, const Report& report) {
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  write_file_atomic(path, render_html(report, dir));
}

}  // namespace attnlab::report
