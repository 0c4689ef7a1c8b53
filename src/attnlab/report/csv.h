// CSV tables for results: typed cells, RFC 4180 quoting, atomic writes and row appends for resumable sweeps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace attnlab::report {

namespace fs = std::filesystem;

// One cell: missing (written as an empty field), text, integer or real number.
using Cell = std::variant<std::monostate, std::string, int64_t, double>;

// A header and rows of cells. `comments` are written above the header as "# line" (device, date, commit:
// DESIGN.md wants them in every committed result) and read back from there.
struct Table {
  std::vector<std::string> comments;
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;

  // Index of column `name`, or nullopt.
  std::optional<size_t> find_column(const std::string& name) const;
  // Index of column `name`; throws naming the column and listing the present ones.
  size_t column(const std::string& name) const;
  // Appends a row; throws unless it has one cell per column.
  void add_row(std::vector<Cell> row);
  // The cell at (row, column name).
  const Cell& at(size_t row, const std::string& name) const;
  // The cell as a number (int or real); nullopt when missing; throws for text that is not a number.
  std::optional<double> number(size_t row, const std::string& name) const;
  // The cell as text ("" when missing; numbers formatted as in the file).
  std::string text(size_t row, const std::string& name) const;
};

// A cell as it is written to the file, before quoting: integers in decimal, reals with the fewest digits
// that read back to the same double ("nan", "inf", "-inf" for the non-finite ones), missing as "".
std::string cell_string(const Cell& cell);

// The table as CSV text ("\n" line ends). A text cell is quoted when it holds a comma, a quote, a line
// break or surrounding spaces, and also when it would read back as a number or as missing ("123", ""),
// so that a cell's type survives the round trip.
std::string to_csv(const Table& table);

// Parses CSV text: quoted fields may hold commas, doubled quotes and line breaks; "\r\n" or "\n" line ends.
// Unquoted fields read as integers or reals when they parse as one, empty ones as missing, anything else
// as text; quoted fields are always text. `what` names the source in errors (a ragged row, an open quote).
Table parse_csv(const std::string& text, const std::string& what = "csv");

// Writes `table` to `path` atomically (a reader sees the old file or the whole new one).
void write_csv(const fs::path& path, const Table& table);

// Reads a CSV file written by write_csv (or any RFC 4180 file with a header row).
Table read_csv(const fs::path& path);

// Throws attnlab::Error unless `table` has every column of `expected`; the message names `what` (the
// file), the missing columns, the expected and the actual ones.
void require_columns(const Table& table, const std::vector<std::string>& expected, const std::string& what);

// Appends one row to the CSV file at `path`, atomically (read, add, write): creates the file with header
// `columns` when it does not exist; throws when the existing header differs. For sweeps that resume.
void append_csv_row(const fs::path& path, const std::vector<std::string>& columns,
                    const std::vector<Cell>& row);

// The table as aligned plain text for the terminal (numbers right-aligned, reals to 4 significant digits).
std::string to_text(const Table& table);

// A number as people read it in a report: integers in full, reals to 4 significant digits without an
// exponent between 1e-3 and 1e15 ("0.01234", "12.35", "123457"), with one outside ("1.234e-05").
std::string format_number(double value);

}  // namespace attnlab::report
