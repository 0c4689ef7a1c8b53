// The study's report.html: one self-contained page (inline CSS, figures embedded as base64 PNG, no scripts,
// no external resources) with the environment, text, tables and figures of every stage.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "attnlab/report/csv.h"
#include "attnlab/report/figures.h"

namespace attnlab::report {

namespace fs = std::filesystem;

// One part of a section, in the order added.
struct Block {
  enum class Kind { paragraph, preformatted, table, figure };
  Kind kind = Kind::paragraph;
  std::string text;             // paragraph or preformatted text; the table's or the figure's caption
  Table table;                  // Kind::table
  fs::path png;                 // Kind::figure: embedded when the report is rendered
  std::string alt;              // Kind::figure: alt text (the caption when empty)
  std::vector<fs::path> links;  // Kind::figure: other formats (PDF, SVG) linked below the image
  std::string error;            // Kind::figure: shown instead of the image when it could not be made
};

class Section {
 public:
  explicit Section(std::string heading) : heading_(std::move(heading)) {}

  // A paragraph of plain text (escaped; blank lines start new paragraphs).
  Section& paragraph(std::string text);
  // Text shown as is, in a monospace block (a log excerpt, a command line).
  Section& preformatted(std::string text);
  // A table; reals to 4 significant digits, numbers right-aligned, missing cells as a dash.
  Section& table(Table table, std::string caption = "");
  // A figure from its PNG; the PDF and SVG beside it (same stem) are linked when they exist.
  Section& figure(const fs::path& png, std::string caption, std::string alt = "");
  // A figure from render(): its PNG, links to its other files, or its error when it failed.
  Section& figure(const RenderResult& rendered, std::string caption, std::string alt = "");

  const std::string& heading() const { return heading_; }
  const std::vector<Block>& blocks() const { return blocks_; }

 private:
  std::string heading_;
  std::vector<Block> blocks_;
};

struct Report {
  std::string title = "attnlab report";
  std::string subtitle;        // e.g. the study, the date and the command line
  nlohmann::json environment;  // an object (attnlab env --json): shown as a key / value table
  std::vector<Section> sections;

  Section& add_section(std::string heading);
};

// The page as a string; links to figure files are made relative to `base_dir` (the folder the page will be
// written to). Figures whose PNG cannot be read are shown as a note, not an error.
std::string render_html(const Report& report, const fs::path& base_dir);

// Renders the report and writes it to `path` atomically.
void write_html(const fs::path& path, const Report& report);

// &, <, >, " and ' as entities.
std::string html_escape(std::string_view text);

// Standard base64 (RFC 4648, with '=' padding).
std::string base64_encode(std::string_view bytes);

}  // namespace attnlab::report
