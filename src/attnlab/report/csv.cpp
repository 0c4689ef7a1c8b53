// CSV tables: typed cells, RFC 4180 quoting, atomic writes.
#include "attnlab/report/csv.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab::report {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Parses a whole string as an int64 ("-12", "+7"); nullopt for anything else, overflow included.
std::optional<int64_t> parse_int(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (size_t j = i; j < s.size(); ++j)
    if (!is_digit(s[j])) return std::nullopt;
  int64_t v = 0;
  const char* first = s.data() + (s[0] == '+' ? 1 : 0);
  auto [ptr, ec] = std::from_chars(first, s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// Parses a whole string as a double ("1.5", "-2e-3", "nan", "inf"); nullopt for anything else.
// std::from_chars: locale-independent, unlike strtod, and it rejects hex and leading spaces.
std::optional<double> parse_real(const std::string& s) {
  if (s.empty()) return std::nullopt;
  const char* first = s.data();
  if (s[0] == '+' && s.size() > 1 && (is_digit(s[1]) || s[1] == '.')) ++first;
  double v = 0;
  auto [ptr, ec] = std::from_chars(first, s.data() + s.size(), v, std::chars_format::general);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

Cell parse_unquoted(const std::string& s) {
  if (s.empty()) return std::monostate{};
  if (auto i = parse_int(s)) return *i;
  if (auto d = parse_real(s)) return *d;
  return s;
}

bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;  // "" is an empty text; a bare empty field is a missing cell
  if (s.find_first_of(",\"\r\n") != std::string::npos) return true;
  if (s.front() == ' ' || s.front() == '\t' || s.back() == ' ' || s.back() == '\t') return true;
  if (s.front() == '#') return true;  // would read as a comment line in the first column of the header
  return parse_int(s) || parse_real(s);
}

std::string quote_if_needed(const std::string& s) {
  if (!needs_quotes(s)) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

struct Field {
  std::string text;
  bool quoted = false;
};

// Splits CSV text into records of fields; comment lines ("# ...") before the first record go to `comments`.
std::vector<std::vector<Field>> split_records(const std::string& text, const std::string& what,
                                              std::vector<std::string>& comments) {
  std::vector<std::vector<Field>> records;
  size_t i = 0, n = text.size(), line = 1;
  while (i < n) {
    // Comments: only before the header, each a whole line.
    if (records.empty() && text[i] == '#') {
      size_t end = text.find('\n', i);
      if (end == std::string::npos) end = n;
      std::string c = text.substr(i + 1, end - i - 1);
      if (!c.empty() && c.back() == '\r') c.pop_back();
      if (!c.empty() && c.front() == ' ') c.erase(0, 1);
      comments.push_back(c);
      i = end + 1;
      ++line;
      continue;
    }
    std::vector<Field> record;
    size_t record_line = line;
    while (true) {
      Field f;
      if (i < n && text[i] == '"') {
        f.quoted = true;
        ++i;
        while (true) {
          if (i >= n)
            fail("{}: line {}: a quoted field is not closed before the end of the file", what, record_line);
          if (text[i] == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              f.text += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          f.text += text[i++];
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
          fail("{}: line {}: expected ',' or a line end after a closing quote, got '{}'", what, line,
               text[i]);
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' &&
               !(text[i] == '\r' && i + 1 < n && text[i + 1] == '\n'))
          f.text += text[i++];
        if (!f.text.empty() && f.text.back() == '\r' && i >= n) f.text.pop_back();
      }
      record.push_back(std::move(f));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      // End of the record: "\r\n", "\n" or the end of the text.
      if (i < n && text[i] == '\r') ++i;
      if (i < n && text[i] == '\n') ++i;
      ++line;
      break;
    }
    records.push_back(std::move(record));
  }
  return records;
}

bool is_number(const Cell& c) {
  return std::holds_alternative<int64_t>(c) || std::holds_alternative<double>(c);
}

}  // namespace

std::optional<size_t> Table::find_column(const std::string& name) const {
  auto it = std::find(columns.begin(), columns.end(), name);
  if (it == columns.end()) return std::nullopt;
  return static_cast<size_t>(it - columns.begin());
}

size_t Table::column(const std::string& name) const {
  if (auto c = find_column(name)) return *c;
  fail("table has no column '{}'; its columns: {}", name, fmt::join(columns, ", "));
}

void Table::add_row(std::vector<Cell> row) {
  if (row.size() != columns.size())
    fail("table row has {} cells, the table has {} columns ({})", row.size(), columns.size(),
         fmt::join(columns, ", "));
  rows.push_back(std::move(row));
}

const Cell& Table::at(size_t row, const std::string& name) const {
  size_t c = column(name);
  ATTNLAB_CHECK(row < rows.size(), "table row {} does not exist; the table has {} rows", row, rows.size());
  return rows[row][c];
}

std::optional<double> Table::number(size_t row, const std::string& name) const {
  const Cell& c = at(row, name);
  if (std::holds_alternative<std::monostate>(c)) return std::nullopt;
  if (auto i = std::get_if<int64_t>(&c)) return static_cast<double>(*i);
  if (auto d = std::get_if<double>(&c)) return *d;
  fail("table column '{}' row {}: expected a number, got '{}'", name, row, std::get<std::string>(c));
}

std::string Table::text(size_t row, const std::string& name) const {
  return cell_string(at(row, name));
}

std::string cell_string(const Cell& cell) {
  if (auto s = std::get_if<std::string>(&cell)) return *s;
  if (auto i = std::get_if<int64_t>(&cell)) return std::to_string(*i);
  if (auto d = std::get_if<double>(&cell)) {
    // fmt's "{}" is the shortest string that reads back to the same double; keep a '.' or an exponent so
    // that 1.0 reads back as a real, not as the integer 1.
    std::string s = fmt::format("{}", *d);
    if (std::isfinite(*d) && s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
  }
  return "";
}

std::string to_csv(const Table& table) {
  std::string out;
  for (const auto& c : table.comments) {
    ATTNLAB_CHECK(c.find('\n') == std::string::npos, "csv comment must be one line, got '{}'", c);
    out += "# " + c + "\n";
  }
  for (size_t j = 0; j < table.columns.size(); ++j) {
    if (j) out += ',';
    out += quote_if_needed(table.columns[j]);
  }
  out += '\n';
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    ATTNLAB_CHECK(row.size() == table.columns.size(), "csv row {} has {} cells, the header has {}", r,
                  row.size(), table.columns.size());
    for (size_t j = 0; j < row.size(); ++j) {
      if (j) out += ',';
      if (auto s = std::get_if<std::string>(&row[j]))
        out += quote_if_needed(*s);
      else
        out += cell_string(row[j]);
    }
    out += '\n';
  }
  return out;
}

Table parse_csv(const std::string& text, const std::string& what) {
  Table t;
  auto records = split_records(text, what, t.comments);
  if (records.empty()) fail("{}: no header row (the file is empty)", what);
  for (auto& f : records[0]) t.columns.push_back(std::move(f.text));
  for (size_t r = 1; r < records.size(); ++r) {
    auto& rec = records[r];
    // A blank line is a row only in a one-column table (a missing cell); elsewhere it is skipped.
    if (rec.size() == 1 && !rec[0].quoted && rec[0].text.empty() && t.columns.size() != 1) continue;
    if (rec.size() != t.columns.size())
      fail("{}: data row {} has {} fields, the header has {} ({})", what, r, rec.size(), t.columns.size(),
           fmt::join(t.columns, ", "));
    std::vector<Cell> row;
    row.reserve(rec.size());
    for (auto& f : rec) row.push_back(f.quoted ? Cell(std::move(f.text)) : parse_unquoted(f.text));
    t.rows.push_back(std::move(row));
  }
  return t;
}

void write_csv(const fs::path& path, const Table& table) {
  write_file_atomic(path, to_csv(table));
}

Table read_csv(const fs::path& path) {
  return parse_csv(read_file(path, "csv file"), path.string());
}

void require_columns(const Table& table, const std::vector<std::string>& expected, const std::string& what) {
  std::vector<std::string> missing;
  for (const auto& c : expected)
    if (!table.find_column(c)) missing.push_back(c);
  if (missing.empty()) return;
  fail("{}: missing column{} {}; expected columns: {}; the file has: {}", what, missing.size() > 1 ? "s" : "",
       fmt::join(missing, ", "), fmt::join(expected, ", "), fmt::join(table.columns, ", "));
}

void append_csv_row(const fs::path& path, const std::vector<std::string>& columns,
                    const std::vector<Cell>& row) {
  Table t;
  if (fs::exists(path)) {
    t = read_csv(path);
    if (t.columns != columns)
      fail("{}: cannot append a row: the file's columns are [{}], the row's are [{}]", path.string(),
           fmt::join(t.columns, ", "), fmt::join(columns, ", "));
  } else {
    t.columns = columns;
  }
  t.add_row(row);
  write_csv(path, t);
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e15 || a < 1e-3) return fmt::format("{:.3e}", v);
  if (a >= 1e4) return fmt::format("{:.0f}", v);
  // 4 significant digits, trailing zeros kept only up to the digit that is significant.
  int decimals = 3 - static_cast<int>(std::floor(std::log10(a)));
  decimals = std::max(0, decimals);
  return fmt::format("{:.{}f}", v, decimals);
}

std::string to_text(const Table& table) {
  size_t nc = table.columns.size();
  std::vector<std::vector<std::string>> cells(table.rows.size(), std::vector<std::string>(nc));
  std::vector<size_t> width(nc);
  std::vector<bool> numeric(nc, true);
  for (size_t j = 0; j < nc; ++j) width[j] = table.columns[j].size();
  for (size_t r = 0; r < table.rows.size(); ++r)
    for (size_t j = 0; j < nc && j < table.rows[r].size(); ++j) {
      const Cell& c = table.rows[r][j];
      auto d = std::get_if<double>(&c);
      cells[r][j] = d ? format_number(*d) : cell_string(c);
      width[j] = std::max(width[j], cells[r][j].size());
      if (!is_number(c) && !std::holds_alternative<std::monostate>(c)) numeric[j] = false;
    }
  auto line = [&](const std::vector<std::string>& v) {
    std::string s;
    for (size_t j = 0; j < nc; ++j) {
      if (j) s += "  ";
      s += numeric[j] ? fmt::format("{:>{}}", v[j], width[j]) : fmt::format("{:<{}}", v[j], width[j]);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(table.columns);
  for (const auto& row : cells) out += line(row);
  return out;
}

}  // namespace attnlab::report
