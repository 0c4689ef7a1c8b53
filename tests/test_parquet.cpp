// Tests for the Snappy decompressor and the Parquet string-column reader.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/data/parquet.h"
#include "attnlab/data/snappy.h"

namespace {

using attnlab::Error;
using attnlab::read_parquet_strings;
namespace fs = std::filesystem;

const std::string kFixture = std::string(ATTNLAB_SOURCE_DIR) + "/tests/data/wikitext2_valid.parquet";

// Runs `f`, expects an attnlab::Error, and returns its message (empty if nothing was thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected attnlab::Error";
  return "";
}

std::string snappy_of(const std::string& bytes) {
  return attnlab::snappy::decompress(bytes.data(), bytes.size());
}

// For string literals: the size comes from the array type, so embedded zero bytes count and nobody has to
// count escapes by hand.
template <size_t N>
std::string snappy_of(const char (&bytes)[N]) {
  return attnlab::snappy::decompress(bytes, N - 1);
}

// A fresh directory under the system temp dir, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("attnlab_test_parquet_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    attnlab::remove_tree(path);
    fs::create_directories(path);
  }
  ~TempDir() { attnlab::remove_tree(path); }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return (path / name).string();
  }
};

// ---- Snappy, on streams written by hand from the format description ----

TEST(Snappy, DecodesLiterals) {
  // Length 5, then a literal of 5 bytes (tag (5-1)<<2).
  EXPECT_EQ(snappy_of("\x05\x10hello"), "hello");
  EXPECT_EQ(snappy_of("\x00"), "");
  // A 70-byte literal needs the one-byte extended length form: tag 60<<2, then length-1 = 69.
  std::string body(70, 'x');
  EXPECT_EQ(snappy_of(std::string("\x46\xf0\x45", 3) + body), body);
}

TEST(Snappy, OverlappingCopyRepeatsItsOwnOutput) {
  // "ab" as a literal, then copy-1 of 6 bytes from offset 2: tag = ((6-4)<<2) | 1 = 0x09.
  EXPECT_EQ(snappy_of("\x08\x04"
                      "ab\x09\x02"),
            "abababab");
  // Offset 1 repeats a single byte: "z" then copy-1 of 4 from offset 1.
  EXPECT_EQ(snappy_of("\x05\x00z\x01\x01"), "zzzzz");
}

TEST(Snappy, DecodesTwoAndFourByteOffsets) {
  // "abcd" then copy-2 (tag ((4-1)<<2)|2 = 0x0e) of 4 bytes from offset 4, little-endian 0x0004.
  EXPECT_EQ(snappy_of("\x08\x0c"
                      "abcd\x0e\x04\x00"),
            "abcdabcd");
  // Same with copy-4 (tag 0x0f), then a copy-2 of 3 bytes from offset 6 (tag 0x0a): "abcdabcd" + "cda".
  EXPECT_EQ(snappy_of("\x0b\x0c"
                      "abcd\x0f\x04\x00\x00\x00\x0a\x06\x00"),
            "abcdabcdcda");
}

TEST(Snappy, RejectsMalformedInput) {
  EXPECT_NE(error_of([] {
              snappy_of(
                  "\x08\x04"
                  "ab\x09\x00");
            }).find("offset 0"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              snappy_of(
                  "\x08\x04"
                  "ab\x09\x03");
            }).find("reaches back 3"),
            std::string::npos);
  // Announces 4 bytes, the copy would write 8.
  EXPECT_NE(error_of([] {
              snappy_of(
                  "\x04\x04"
                  "ab\x09\x02");
            }).find("overruns"),
            std::string::npos);
  // Copy-2 missing its second offset byte; literal longer than the input.
  EXPECT_NE(error_of([] {
              snappy_of(
                  "\x08\x04"
                  "ab\x0e\x02");
            }).find("truncated copy-2"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              snappy_of(
                  "\x05\x10"
                  "he");
            }).find("past the end"),
            std::string::npos);
  // Announces 9 bytes, produces 8.
  EXPECT_NE(error_of([] {
              snappy_of(
                  "\x09\x04"
                  "ab\x09\x02");
            }).find("announced 9"),
            std::string::npos);
  EXPECT_NE(error_of([] { snappy_of("\x80"); }).find("truncated length"), std::string::npos);
}

// ---- The WikiText-2 fixture (contents checked with an independent stdlib-only Python decoder) ----

TEST(Parquet, ReadsWikitextFixture) {
  const auto rows = read_parquet_strings(kFixture);
  ASSERT_EQ(rows.size(), 3760u);
  EXPECT_EQ(rows[0], " \n");
  EXPECT_EQ(rows[1], " = Homarus gammarus = \n");
  EXPECT_EQ(
      rows[3].substr(0, 95),
      " Homarus gammarus , known as the European lobster or common lobster , is a species of <unk> lob");
  EXPECT_EQ(rows[3].size(), 696u);
  EXPECT_EQ(rows[3745], " = = Personal life = = \n");
  EXPECT_EQ(rows[3752],
            " <unk> has undertaken the following roles from her screen and <unk> debut in 1993 , to the "
            "present day . \n");
  EXPECT_EQ(rows[3757], " = = = Television roles = = = \n");
  EXPECT_NE(rows[3748].find("Adam <unk> \xe2\x80\x93 son of Love"),
            std::string::npos);  // UTF-8 en dash intact
  size_t total = 0, blank = 0;
  for (const auto& r : rows) total += r.size(), blank += r == " \n";
  EXPECT_EQ(total, 1121681u);
  EXPECT_EQ(blank, 1299u);
}

TEST(Parquet, TruncatedFixtureNamesThePath) {
  TempDir tmp;
  const std::string whole = attnlab::read_file(kFixture);
  const std::string half = tmp.write("half.parquet", whole.substr(0, whole.size() / 2));
  const std::string msg = error_of([&] { read_parquet_strings(half); });
  EXPECT_NE(msg.find(half), std::string::npos) << msg;
  EXPECT_NE(msg.find("PAR1"), std::string::npos) << msg;
}

TEST(Parquet, RejectsDirectoryMissingFileAndShortFile) {
  TempDir tmp;
  std::string msg = error_of([&] { read_parquet_strings(tmp.path.string()); });
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
  msg = error_of([&] { read_parquet_strings((tmp.path / "nope.parquet").string()); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  const std::string tiny = tmp.write("tiny.parquet", "PAR1PAR1");
  msg = error_of([&] { read_parquet_strings(tiny); });
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
  const std::string csv = tmp.write("data.csv", "text\nhello world\nmore lines\n");
  msg = error_of([&] { read_parquet_strings(csv); });
  EXPECT_NE(msg.find("expected 'PAR1' at the start, found 'text'"), std::string::npos) << msg;
}

TEST(Parquet, UnknownColumnListsTheColumns) {
  const std::string msg = error_of([] { read_parquet_strings(kFixture, "content"); });
  EXPECT_NE(msg.find("'content' not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("columns: text"), std::string::npos) << msg;
  EXPECT_NE(msg.find(kFixture), std::string::npos) << msg;
}

// ---- Hand-built files, for the features the fixture does not use ----

// Thrift compact protocol writer, just enough for Parquet footers and page headers.
struct ThriftWriter {
  std::string s;
  std::vector<int> last{0};
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) s += static_cast<char>(v | 0x80);
    s += static_cast<char>(v);
  }
  void zigzag(int64_t v) { varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void field(int id, int type) {
    int delta = id - last.back();
    if (delta > 0 && delta <= 15) {
      s += static_cast<char>(delta << 4 | type);
    } else {
      s += static_cast<char>(type);
      zigzag(id);
    }
    last.back() = id;
  }
  void i32(int id, int64_t v) { field(id, 5), zigzag(v); }
  void i64(int id, int64_t v) { field(id, 6), zigzag(v); }
  void boolean(int id, bool v) { field(id, v ? 1 : 2); }
  void str(int id, const std::string& v) { field(id, 8), varint(v.size()), s += v; }
  void list(int id, int elem, size_t n) {
    field(id, 9);
    if (n < 15) {
      s += static_cast<char>(n << 4 | elem);
    } else {
      s += static_cast<char>(0xf0 | elem);
      varint(n);
    }
  }
  void begin(int id) { field(id, 12), begin(); }
  void begin() { last.push_back(0); }  // a struct inside a list
  void end() { s += '\0', last.pop_back(); }
};

std::string u32le(uint32_t v) {
  return std::string{char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
}

// Snappy with literals only: valid input for the reader, and a check of the extended literal lengths.
std::string snappy_literal(const std::string& raw) {
  ThriftWriter w;
  w.varint(raw.size());
  for (size_t at = 0; at < raw.size(); at += 200) {
    size_t n = std::min<size_t>(200, raw.size() - at);
    w.s += n <= 60 ? std::string(1, char((n - 1) << 2)) : std::string{char(60 << 2), char(n - 1)};
    w.s += raw.substr(at, n);
  }
  return w.s;
}

struct Spec {
  bool optional = false, v2 = false, dictionary = false;
  int codec = 0;             // 0 UNCOMPRESSED, 1 SNAPPY, else written as is
  size_t rows_per_page = 3;  // several pages per column chunk
};

using Rows = std::vector<std::optional<std::string>>;

// Writes a file with an INT64 column "id" (never read) and a BYTE_ARRAY column "text", one row group per
// element of `groups`. Levels are written bit-packed, dictionary indices as RLE runs.
std::string build_parquet(const Spec& sp, const std::vector<Rows>& groups) {
  std::string file = "PAR1";
  auto compress = [&](const std::string& raw) { return sp.codec == 1 ? snappy_literal(raw) : raw; };
  auto page = [&](int type, size_t raw_size, const std::string& body, auto&& sub) {
    ThriftWriter h;
    h.i32(1, type), h.i32(2, raw_size), h.i32(3, body.size());
    sub(h);
    h.end();
    file += h.s + body;
  };
  struct Chunk {
    size_t dict_off = 0, data_off = 0, size = 0, values = 0;
  };
  std::vector<Chunk> chunks;
  for (const Rows& rows : groups) {
    Chunk c;
    const size_t start = file.size();
    std::vector<std::string> dict;
    if (sp.dictionary) {
      for (const auto& r : rows)
        if (r && std::find(dict.begin(), dict.end(), *r) == dict.end()) dict.push_back(*r);
      std::string raw;
      for (const auto& d : dict) raw += u32le(d.size()) + d;
      c.dict_off = file.size();
      page(2, raw.size(), compress(raw),
           [&](ThriftWriter& h) { h.begin(7), h.i32(1, dict.size()), h.i32(2, 0), h.end(); });
    }
    c.data_off = file.size();
    for (size_t at = 0; at < rows.size(); at += sp.rows_per_page) {
      const size_t n = std::min(sp.rows_per_page, rows.size() - at);
      std::string levels, values;
      size_t nulls = 0;
      if (sp.optional) {
        levels = static_cast<char>(((n + 7) / 8) << 1 | 1);  // one bit-packed run, bit width 1
        std::string bits((n + 7) / 8, '\0');
        for (size_t i = 0; i < n; ++i) bits[i / 8] |= static_cast<char>(rows[at + i].has_value() << (i % 8));
        levels += bits;
      }
      if (sp.dictionary) values = std::string(1, char(8));  // bit width of the indices
      for (size_t i = 0; i < n; ++i) {
        const auto& r = rows[at + i];
        if (!r) {
          ++nulls;
          continue;
        }
        if (sp.dictionary)
          values += std::string{char(1 << 1), char(std::find(dict.begin(), dict.end(), *r) - dict.begin())};
        else
          values += u32le(r->size()) + *r;
      }
      const int enc = sp.dictionary ? 8 : 0;
      if (sp.v2) {
        const std::string body = levels + compress(values);
        page(3, levels.size() + values.size(), body, [&](ThriftWriter& h) {
          h.begin(8), h.i32(1, n), h.i32(2, nulls), h.i32(3, n), h.i32(4, enc), h.i32(5, levels.size());
          h.i32(6, 0), h.boolean(7, sp.codec != 0), h.end();
        });
      } else {
        const std::string raw = (sp.optional ? u32le(levels.size()) + levels : "") + values;
        page(0, raw.size(), compress(raw), [&](ThriftWriter& h) {
          h.begin(5), h.i32(1, n), h.i32(2, sp.dictionary ? 2 : 0), h.i32(3, 3), h.i32(4, 3), h.end();
        });
      }
    }
    c.size = file.size() - start;
    c.values = rows.size();
    chunks.push_back(c);
  }

  ThriftWriter f;
  f.i32(1, 2);
  f.list(2, 12, 3);
  f.begin(), f.str(4, "schema"), f.i32(5, 2), f.end();
  f.begin(), f.i32(1, 2), f.i32(3, 0), f.str(4, "id"), f.end();
  f.begin(), f.i32(1, 6), f.i32(3, sp.optional ? 1 : 0), f.str(4, "text"), f.end();
  f.i64(3, 0);
  f.list(4, 12, chunks.size());
  for (const Chunk& c : chunks) {
    f.begin();
    f.list(1, 12, 2);
    f.begin(), f.begin(3), f.i32(1, 2), f.list(3, 8, 1), f.varint(2), f.s += "id", f.i32(4, 0), f.i64(5, 0),
        f.end(), f.end();
    f.begin(), f.i64(2, c.data_off), f.begin(3), f.i32(1, 6), f.list(2, 5, 2), f.zigzag(0), f.zigzag(8);
    f.list(3, 8, 1), f.varint(4), f.s += "text";
    f.i32(4, sp.codec), f.i64(5, c.values), f.i64(7, c.size), f.i64(9, c.data_off);
    if (sp.dictionary) f.i64(11, c.dict_off);
    f.end(), f.end();
    f.i64(3, c.values);
    f.end();
  }
  // Fields this reader does not know, as a newer writer might add, must be skipped: a map, a list of structs
  // holding a list of bools and a double, and a field id too far for the one-byte field header.
  f.field(5, 11), f.varint(1), f.s += static_cast<char>(8 << 4 | 8), f.varint(1), f.s += "k", f.varint(1),
      f.s += "v";
  f.list(42, 12, 1), f.begin(), f.list(1, 1, 2), f.s += "\x01\x02", f.field(2, 7),
      f.s += std::string(8, '\0');
  f.end();
  f.str(200, "created by the test");
  f.end();
  return file + f.s + u32le(f.s.size()) + "PAR1";
}

const std::vector<Rows> kGroups = {{"alpha", "beta", "", "alpha", "gamma", "beta", "delta"},
                                   {"beta", "epsilon"},
                                   {"zeta", "alpha", "alpha", "alpha"}};
const std::vector<std::string> kFlat = {"alpha", "beta",    "",     "alpha", "gamma", "beta", "delta",
                                        "beta",  "epsilon", "zeta", "alpha", "alpha", "alpha"};

TEST(Parquet, ReadsPlainAndDictionaryPagesV1AndV2) {
  TempDir tmp;
  for (bool v2 : {false, true})
    for (bool dictionary : {false, true})
      for (int codec : {0, 1}) {
        Spec sp;
        sp.v2 = v2, sp.dictionary = dictionary, sp.codec = codec;
        const std::string p = tmp.write("f.parquet", build_parquet(sp, kGroups));
        EXPECT_EQ(read_parquet_strings(p), kFlat)
            << "v2=" << v2 << " dictionary=" << dictionary << " codec=" << codec;
      }
}

TEST(Parquet, SkipsNullsOfOptionalColumns) {
  TempDir tmp;
  const std::vector<Rows> groups = {
      {"a", std::nullopt, "", "b", std::nullopt, std::nullopt, std::nullopt, "c", "d"}, {std::nullopt}};
  for (bool v2 : {false, true})
    for (bool dictionary : {false, true}) {
      Spec sp;
      sp.optional = true, sp.v2 = v2, sp.dictionary = dictionary, sp.codec = 1, sp.rows_per_page = 4;
      const std::string p = tmp.write("f.parquet", build_parquet(sp, groups));
      EXPECT_EQ(read_parquet_strings(p), (std::vector<std::string>{"a", "", "b", "c", "d"}))
          << "v2=" << v2 << " dictionary=" << dictionary;
    }
}

TEST(Parquet, RejectsUnsupportedCodecAndNonStringColumn) {
  TempDir tmp;
  Spec sp;
  sp.codec = 6;  // ZSTD
  const std::string p = tmp.write("zstd.parquet", build_parquet(sp, kGroups));
  std::string msg = error_of([&] { read_parquet_strings(p); });
  EXPECT_NE(msg.find("codec ZSTD is not supported"), std::string::npos) << msg;
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  msg = error_of([&] { read_parquet_strings(p, "id"); });
  EXPECT_NE(msg.find("column 'id' has type INT64, expected BYTE_ARRAY"), std::string::npos) << msg;
  msg = error_of([&] { read_parquet_strings(p, "title"); });
  EXPECT_NE(msg.find("the file has columns: id, text"), std::string::npos) << msg;
}

TEST(Parquet, RejectsCorruptPages) {
  TempDir tmp;
  Spec sp;
  sp.dictionary = true;
  std::string bytes = build_parquet(sp, kGroups);
  // Point the first index of the first data page past the dictionary ("alpha" has index 0).
  const size_t at = bytes.find(std::string("\x08\x02\x00", 3));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] = 100;
  const std::string p = tmp.write("bad_index.parquet", bytes);
  const std::string msg = error_of([&] { read_parquet_strings(p); });
  EXPECT_NE(msg.find("dictionary index 100 is out of range"), std::string::npos) << msg;
}

}  // namespace
