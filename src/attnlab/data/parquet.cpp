// Parquet string-column reader: Thrift compact decoding of the footer and page headers, then the pages.
#include "attnlab/data/parquet.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/data/snappy.h"

namespace attnlab {
namespace {

// Every error names the file, so that a failure deep inside a page still says which input was bad.
template <class... Args>
[[noreturn]] void bad(const std::string& path, fmt::format_string<Args...> f, Args&&... args) {
  fail("parquet file '{}': {}", path, fmt::format(f, std::forward<Args>(args)...));
}

// Names for the enums of parquet.thrift, for messages.
template <size_t N>
std::string enum_name(const char* const (&names)[N], int64_t v) {
  if (v >= 0 && static_cast<size_t>(v) < N && names[v][0]) return names[v];
  return fmt::format("#{}", v);
}
const char* const kTypes[] = {"BOOLEAN", "INT32",  "INT64",      "INT96",
                              "FLOAT",   "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"};
const char* const kCodecs[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
const char* const kEncodings[] = {
    "PLAIN",          "GROUP_VAR_INT",       "PLAIN_DICTIONARY",        "RLE",
    "BIT_PACKED",     "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
    "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};

enum : int32_t { kByteArray = 6 };
enum : int32_t { kUncompressed = 0, kSnappy = 1 };
enum : int32_t { kPlain = 0, kPlainDictionary = 2, kRle = 3, kRleDictionary = 8 };
enum : int32_t { kDataPage = 0, kDictionaryPage = 2, kDataPageV2 = 3 };
enum : int32_t { kOptional = 1, kRepeated = 2 };

// Thrift compact protocol
// (https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md).
constexpr int kStop = 0, kTrue = 1, kFalse = 2, kByte = 3, kI16 = 4, kI32 = 5, kI64 = 6, kDouble = 7,
              kBinary = 8, kList = 9, kSet = 10, kMap = 11, kStruct = 12, kUuid = 13;

class Thrift {
 public:
  Thrift(const uint8_t* p, const uint8_t* end, const std::string& path, std::string what)
      : begin_(p), p_(p), end_(end), path_(path), what_(std::move(what)) {}

  size_t consumed() const { return static_cast<size_t>(p_ - begin_); }

  // A field of an unexpected type means a corrupt file (or a writer that disagrees with parquet.thrift).
  void expect(int type, int want, const char* name) {
    if (type != want)
      bad(path_, "{}: expected a Thrift {} (type {}) at byte {}, found type {}", what_, name, want,
          consumed(), type);
  }

  // Reads a field header; returns false at the struct's STOP. `last` is the previous field id of the
  // struct being read, since ids are delta-encoded.
  bool field(int16_t& last, int16_t& id, int& type) {
    uint8_t b = byte();
    if (b == kStop) return false;
    type = b & 0x0f;
    id = (b >> 4) ? static_cast<int16_t>(last + (b >> 4)) : static_cast<int16_t>(zigzag());
    last = id;
    return true;
  }

  int32_t i32(int type) {
    expect(type, kI32, "i32");
    return static_cast<int32_t>(zigzag());
  }
  int64_t i64(int type) {
    expect(type, kI64, "i64");
    return zigzag();
  }
  bool boolean(int type) {
    if (type != kTrue && type != kFalse) expect(type, kTrue, "bool");
    return type == kTrue;
  }
  std::string binary(int type) {
    expect(type, kBinary, "binary");
    size_t n = length();
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  // List header: element count and element type.
  size_t list(int type, int& elem) {
    expect(type, kList, "list");
    uint8_t b = byte();
    elem = b & 0x0f;
    size_t n = b >> 4;
    if (n == 15) n = length();
    // Every element takes at least one byte, so a larger count can only be a corrupt header.
    if (n > remaining()) truncated(fmt::format("a list of {} elements", n));
    return n;
  }

  // Skips a value of any type, so that fields this reader does not know (or a newer writer added) pass.
  void skip(int type, int depth = 0, bool in_container = false) {
    if (depth > 64) bad(path_, "{}: Thrift structures nested deeper than 64 levels", what_);
    switch (type) {
      case kTrue:
      case kFalse:
        if (in_container) byte();  // bools are a byte each inside lists, sets and maps
        return;
      case kByte:
        byte();
        return;
      case kI16:
      case kI32:
      case kI64:
        zigzag();
        return;
      case kDouble:
        take(8);
        return;
      case kBinary:
        take(length());
        return;
      case kUuid:
        take(16);
        return;
      case kList:
      case kSet: {
        int elem;
        size_t n = list(kList, elem);
        for (size_t i = 0; i < n; ++i) skip(elem, depth + 1, true);
        return;
      }
      case kMap: {
        size_t n = length();
        if (n == 0) return;
        uint8_t kv = byte();
        for (size_t i = 0; i < n; ++i) {
          skip(kv >> 4, depth + 1, true);
          skip(kv & 0x0f, depth + 1, true);
        }
        return;
      }
      case kStruct: {
        int16_t last = 0, id;
        int t;
        while (field(last, id, t)) skip(t, depth + 1);
        return;
      }
      default:
        bad(path_, "{}: unknown Thrift type {} at byte {}", what_, type, consumed());
    }
  }

 private:
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  [[noreturn]] void truncated(const std::string& wanted) {
    bad(path_, "truncated {}: expected {} at byte {}, but only {} bytes are left", what_, wanted, consumed(),
        remaining());
  }
  uint8_t byte() {
    if (p_ == end_) truncated("1 more byte");
    return *p_++;
  }
  void take(size_t n) {
    if (n > remaining()) truncated(fmt::format("{} bytes", n));
    p_ += n;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = byte();
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad(path_, "{}: varint longer than 10 bytes at byte {}", what_, consumed());
  }
  int64_t zigzag() {
    uint64_t v = varint();
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }
  size_t length() {
    uint64_t n = varint();
    if (n > remaining()) truncated(fmt::format("{} bytes", n));
    return static_cast<size_t>(n);
  }

  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  const std::string& path_;
  std::string what_;
};

// The parts of parquet.thrift this reader needs; field ids are the ones in that file.
struct SchemaElement {
  int32_t type = -1;
  int32_t repetition = 0;
  std::string name;
  int32_t num_children = 0;
};

struct ColumnMeta {
  int32_t type = -1;
  std::vector<std::string> path;
  int32_t codec = 0;
  int64_t num_values = 0;
  int64_t total_compressed_size = 0;
  int64_t data_page_offset = -1;
  int64_t dictionary_page_offset = -1;
};

struct ColumnChunk {
  std::string file_path;
  bool has_meta = false;
  ColumnMeta meta;
};

struct RowGroup {
  std::vector<ColumnChunk> columns;
};

struct FileMeta {
  std::vector<SchemaElement> schema;
  std::vector<RowGroup> row_groups;
};

struct PageHeader {
  int32_t type = -1;
  int32_t uncompressed_size = 0;
  int32_t compressed_size = 0;
  int32_t num_values = 0;  // of the data (v1 or v2) or dictionary page header
  int32_t encoding = -1;
  int32_t def_encoding = kRle;  // v1 only
  int32_t def_length = 0;       // v2 only: level bytes sit uncompressed before the values
  int32_t rep_length = 0;
  bool v2_compressed = true;
};

// Reads a struct (checking that the field holding it is one) with `on(id, type)` for each field; `on`
// returns false for fields it does not know, which are then skipped.
template <class F>
void read_struct(Thrift& t, int type, F&& on) {
  t.expect(type, kStruct, "struct");
  int16_t last = 0, id;
  int field_type;
  while (t.field(last, id, field_type))
    if (!on(id, field_type)) t.skip(field_type);
}

template <class F>
void read_list(Thrift& t, int type, int want, F&& each) {
  int elem;
  size_t n = t.list(type, elem);
  for (size_t i = 0; i < n; ++i) {
    if (elem == want)
      each();
    else
      t.skip(elem, 0, true);
  }
}

// Where a known scalar field goes: the table form keeps each struct's reader to a line per field.
struct Slot {
  int16_t id;
  int32_t* i32 = nullptr;
  int64_t* i64 = nullptr;
  std::string* str = nullptr;
  bool* flag = nullptr;
  Slot(int16_t i, int32_t* p) : id(i), i32(p) {}
  Slot(int16_t i, int64_t* p) : id(i), i64(p) {}
  Slot(int16_t i, std::string* p) : id(i), str(p) {}
  Slot(int16_t i, bool* p) : id(i), flag(p) {}
};

bool set(Thrift& t, int16_t id, int type, std::initializer_list<Slot> slots) {
  for (const Slot& s : slots) {
    if (s.id != id) continue;
    if (s.i32) *s.i32 = t.i32(type);
    if (s.i64) *s.i64 = t.i64(type);
    if (s.str) *s.str = t.binary(type);
    if (s.flag) *s.flag = t.boolean(type);
    return true;
  }
  return false;
}

ColumnMeta read_column_meta(Thrift& t, int type) {
  ColumnMeta m;
  read_struct(t, type, [&](int16_t id, int type) {
    if (id == 3) return read_list(t, type, kBinary, [&] { m.path.push_back(t.binary(kBinary)); }), true;
    return set(t, id, type,
               {{1, &m.type},
                {4, &m.codec},
                {5, &m.num_values},
                {7, &m.total_compressed_size},
                {9, &m.data_page_offset},
                {11, &m.dictionary_page_offset}});
  });
  return m;
}

FileMeta read_file_meta(Thrift& t) {
  FileMeta fm;
  read_struct(t, kStruct, [&](int16_t id, int type) {
    if (id == 2) {
      read_list(t, type, kStruct, [&] {
        SchemaElement& e = fm.schema.emplace_back();
        read_struct(t, kStruct, [&](int16_t id, int type) {
          return set(t, id, type, {{1, &e.type}, {3, &e.repetition}, {4, &e.name}, {5, &e.num_children}});
        });
      });
      return true;
    }
    if (id != 4) return false;
    read_list(t, type, kStruct, [&] {
      RowGroup& rg = fm.row_groups.emplace_back();
      read_struct(t, kStruct, [&](int16_t id, int type) {
        if (id != 1) return false;
        read_list(t, type, kStruct, [&] {
          ColumnChunk& c = rg.columns.emplace_back();
          read_struct(t, kStruct, [&](int16_t id, int type) {
            if (id != 3) return set(t, id, type, {{1, &c.file_path}});
            c.meta = read_column_meta(t, type);
            c.has_meta = true;
            return true;
          });
        });
        return true;
      });
    });
    return true;
  });
  return fm;
}

PageHeader read_page_header(Thrift& t) {
  PageHeader h;
  read_struct(t, kStruct, [&](int16_t id, int type) {
    if (id == 5) {  // DataPageHeader
      read_struct(t, type, [&](int16_t id, int type) {
        return set(t, id, type, {{1, &h.num_values}, {2, &h.encoding}, {3, &h.def_encoding}});
      });
    } else if (id == 7) {  // DictionaryPageHeader
      read_struct(t, type, [&](int16_t id, int type) {
        return set(t, id, type, {{1, &h.num_values}, {2, &h.encoding}});
      });
    } else if (id == 8) {  // DataPageHeaderV2
      read_struct(t, type, [&](int16_t id, int type) {
        return set(t, id, type,
                   {{1, &h.num_values},
                    {4, &h.encoding},
                    {5, &h.def_length},
                    {6, &h.rep_length},
                    {7, &h.v2_compressed}});
      });
    } else {
      return set(t, id, type, {{1, &h.type}, {2, &h.uncompressed_size}, {3, &h.compressed_size}});
    }
    return true;
  });
  return h;
}

// A leaf of the schema tree, with the levels that its nesting implies.
struct Leaf {
  std::string path;  // dotted
  int32_t type;
  int max_def;
  int max_rep;
};

void walk_schema(const std::string& file, const std::vector<SchemaElement>& s, size_t& i, int children,
                 const std::string& prefix, int def, int rep, int depth, std::vector<Leaf>& out) {
  if (depth > 64) bad(file, "schema nested deeper than 64 levels");
  for (int c = 0; c < children; ++c) {
    if (i >= s.size())
      bad(file, "schema ends after {} elements, but a group announces more children", s.size());
    const SchemaElement& e = s[i++];
    std::string name = prefix.empty() ? e.name : prefix + "." + e.name;
    int d = def + (e.repetition == kOptional || e.repetition == kRepeated);
    int r = rep + (e.repetition == kRepeated);
    if (e.num_children > 0)
      walk_schema(file, s, i, e.num_children, name, d, r, depth + 1, out);
    else
      out.push_back({name, e.type, d, r});
  }
}

// RLE / bit-packed hybrid (the Parquet "RLE" encoding), used for levels and dictionary indices.
void decode_hybrid(const std::string& file, const std::string& what, const uint8_t* p, const uint8_t* end,
                   int bit_width, size_t count, std::vector<uint32_t>& out) {
  if (bit_width < 0 || bit_width > 32) bad(file, "{}: bit width {} is outside 0..32", what, bit_width);
  out.clear();
  out.reserve(count);
  const int value_bytes = (bit_width + 7) / 8;
  while (out.size() < count) {
    if (p >= end) bad(file, "{}: data ends after {} of {} values", what, out.size(), count);
    uint64_t header = 0;
    for (int shift = 0;; shift += 7) {
      if (p >= end || shift > 63) bad(file, "{}: truncated run header", what);
      uint8_t b = *p++;
      header |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    if (header & 1) {
      // Bit-packed: (header >> 1) groups of 8 values, least significant bit first. The last group is
      // padded past `count`; only the bits of the values we take must be present.
      uint64_t values = (header >> 1) * 8;
      size_t want = static_cast<size_t>(std::min<uint64_t>(values, count - out.size()));
      size_t need = (want * bit_width + 7) / 8;
      if (static_cast<size_t>(end - p) < need)
        bad(file, "{}: bit-packed run needs {} bytes, only {} are left", what, need, end - p);
      for (size_t v = 0; v < want; ++v) {
        uint64_t bit = v * bit_width, x = 0;
        for (int b = 0; b < bit_width; ++b, ++bit)
          x |= static_cast<uint64_t>((p[bit / 8] >> (bit % 8)) & 1) << b;
        out.push_back(static_cast<uint32_t>(x));
      }
      const uint64_t left = static_cast<uint64_t>(end - p), groups = header >> 1;
      p += groups >= left ? left : std::min(groups * bit_width, left);
    } else {
      uint64_t run = header >> 1;
      if (end - p < value_bytes) bad(file, "{}: truncated RLE run value", what);
      uint32_t v = 0;
      for (int b = 0; b < value_bytes; ++b) v |= static_cast<uint32_t>(p[b]) << (8 * b);
      p += value_bytes;
      size_t n = static_cast<size_t>(std::min<uint64_t>(run, count - out.size()));
      out.insert(out.end(), n, v);
    }
  }
}

int bit_width_of(int max_value) {
  int w = 0;
  while ((1u << w) <= static_cast<unsigned>(max_value)) ++w;
  return w;
}

// PLAIN BYTE_ARRAY values: a 4-byte little-endian length, then the bytes.
void decode_plain(const std::string& file, const std::string& what, const uint8_t* p, const uint8_t* end,
                  size_t count, std::vector<std::string>& out) {
  for (size_t i = 0; i < count; ++i) {
    if (end - p < 4) bad(file, "{}: PLAIN values end after {} of {} strings", what, i, count);
    uint32_t n;
    std::memcpy(&n, p, 4);  // little-endian hosts only, like the rest of this project's file formats
    p += 4;
    if (static_cast<size_t>(end - p) < n)
      bad(file, "{}: PLAIN string {} announces {} bytes, only {} are left in the page", what, i, n, end - p);
    out.emplace_back(reinterpret_cast<const char*>(p), n);
    p += n;
  }
}

std::string decompress(const std::string& file, int32_t codec, const uint8_t* p, size_t n, size_t expected,
                       int64_t offset) {
  std::string out;
  if (codec == kUncompressed) {
    out.assign(reinterpret_cast<const char*>(p), n);
  } else if (codec == kSnappy) {
    try {
      out = snappy::decompress(reinterpret_cast<const char*>(p), n);
    } catch (const Error& e) {
      bad(file, "page at byte {}: {}", offset, e.what());
    }
  } else {
    bad(file, "compression codec {} is not supported, expected UNCOMPRESSED or SNAPPY",
        enum_name(kCodecs, codec));
  }
  if (out.size() != expected)
    bad(file, "page at byte {} decompresses to {} bytes, but its header announces {}", offset, out.size(),
        expected);
  return out;
}

}  // namespace

std::vector<std::string> read_parquet_strings(const std::string& path, const std::string& column) {
  const std::string data = read_file(path, "parquet file");
  const auto* base = reinterpret_cast<const uint8_t*>(data.data());
  const size_t size = data.size();
  auto quoted = [&](size_t at) {  // the 4 magic bytes, printable or escaped
    std::string q = "'";
    for (size_t i = at; i < at + 4; ++i) {
      const auto c = static_cast<unsigned char>(data[i]);
      q += c >= 32 && c < 127 ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02x}", c);
    }
    return q + "'";
  };

  if (size < 12)
    bad(path, "file too short: {} bytes, a Parquet file has at least 12 (PAR1, footer, PAR1)", size);
  if (std::memcmp(base, "PARE", 4) == 0 || std::memcmp(base + size - 4, "PARE", 4) == 0)
    bad(path, "encrypted Parquet files (magic 'PARE') are not supported");
  if (std::memcmp(base, "PAR1", 4) != 0)
    bad(path, "bad magic: expected 'PAR1' at the start, found {}", quoted(0));
  if (std::memcmp(base + size - 4, "PAR1", 4) != 0)
    bad(path, "bad magic: expected 'PAR1' at the end, found {} (truncated file?)", quoted(size - 4));
  uint32_t footer_len;
  std::memcpy(&footer_len, base + size - 8, 4);
  if (footer_len > size - 12)
    bad(path, "footer length {} does not fit in a file of {} bytes (truncated file?)", footer_len, size);
  const size_t footer_start = size - 8 - footer_len;
  Thrift ft(base + footer_start, base + size - 8, path, "footer");
  const FileMeta meta = read_file_meta(ft);

  if (meta.schema.empty()) bad(path, "footer has an empty schema");
  std::vector<Leaf> leaves;
  size_t next = 1;
  walk_schema(path, meta.schema, next, meta.schema[0].num_children, "", 0, 0, 0, leaves);
  size_t li = 0;
  while (li < leaves.size() && leaves[li].path != column) ++li;
  if (li == leaves.size()) {
    std::vector<std::string> names;
    for (const auto& l : leaves) names.push_back(l.path);
    bad(path, "column '{}' not found; the file has columns: {}", column, fmt::join(names, ", "));
  }
  const Leaf& leaf = leaves[li];
  if (leaf.type != kByteArray)
    bad(path, "column '{}' has type {}, expected BYTE_ARRAY (strings)", column, enum_name(kTypes, leaf.type));
  if (leaf.max_rep > 0)
    bad(path, "column '{}' is repeated (a list); only flat columns are supported", column);
  const int def_width = bit_width_of(leaf.max_def);

  std::vector<std::string> out;
  std::vector<std::string> dict;
  std::vector<uint32_t> defs, indices;
  for (size_t g = 0; g < meta.row_groups.size(); ++g) {
    const RowGroup& rg = meta.row_groups[g];
    if (rg.columns.size() != leaves.size())
      bad(path, "row group {} has {} column chunks, expected {} (one per schema leaf)", g, rg.columns.size(),
          leaves.size());
    const ColumnChunk& cc = rg.columns[li];
    if (!cc.file_path.empty())
      bad(path, "row group {} stores column '{}' in another file ('{}'), which is not supported", g, column,
          cc.file_path);
    if (!cc.has_meta) bad(path, "row group {}: column '{}' has no metadata", g, column);
    const ColumnMeta& cm = cc.meta;
    const std::string chunk_path = fmt::format("{}", fmt::join(cm.path, "."));
    if (!cm.path.empty() && chunk_path != leaf.path)
      bad(path, "row group {}: column chunk {} is for column '{}', expected '{}'", g, li, chunk_path,
          leaf.path);
    dict.clear();
    // A dictionary page, when there is one, comes first; some writers store offset 0 to mean "none".
    int64_t start = cm.data_page_offset;
    if (cm.dictionary_page_offset > 0 && cm.dictionary_page_offset < start) start = cm.dictionary_page_offset;
    if (start < 4 || cm.total_compressed_size < 0 ||
        static_cast<uint64_t>(start) + static_cast<uint64_t>(cm.total_compressed_size) > footer_start)
      bad(path, "row group {}: column chunk at byte {} with {} bytes lies outside the data region 4..{}", g,
          start, cm.total_compressed_size, footer_start);
    const uint8_t* pos = base + start;
    const uint8_t* chunk_end = pos + cm.total_compressed_size;

    int64_t seen = 0;  // values (nulls included) of this chunk decoded so far
    while (seen < cm.num_values) {
      const int64_t offset = pos - base;
      Thrift ht(pos, chunk_end, path, fmt::format("page header at byte {}", offset));
      const PageHeader h = read_page_header(ht);
      const uint8_t* body = pos + ht.consumed();
      if (h.compressed_size < 0 || h.uncompressed_size < 0 || chunk_end - body < h.compressed_size)
        bad(path, "truncated page at byte {}: expected {} bytes of page data, the column chunk has {} left",
            offset, h.compressed_size, chunk_end - body);
      pos = body + h.compressed_size;

      if (h.type == kDictionaryPage) {
        if (h.encoding != kPlain && h.encoding != kPlainDictionary)
          bad(path, "dictionary page at byte {} has encoding {}, expected PLAIN", offset,
              enum_name(kEncodings, h.encoding));
        std::string page = decompress(path, cm.codec, body, h.compressed_size, h.uncompressed_size, offset);
        const auto* p = reinterpret_cast<const uint8_t*>(page.data());
        dict.clear();
        decode_plain(path, fmt::format("dictionary page at byte {}", offset), p, p + page.size(),
                     static_cast<size_t>(std::max(h.num_values, 0)), dict);
        continue;
      }
      if (h.type != kDataPage && h.type != kDataPageV2) continue;  // index pages carry no values

      // Split the page into definition levels and values, decompressing what the version compresses.
      std::string page;
      const uint8_t *lv = nullptr, *lv_end = nullptr, *vals = nullptr, *vals_end = nullptr;
      const size_t n = static_cast<size_t>(std::max(h.num_values, 0));
      if (h.type == kDataPage) {
        page = decompress(path, cm.codec, body, h.compressed_size, h.uncompressed_size, offset);
        vals = reinterpret_cast<const uint8_t*>(page.data());
        vals_end = vals + page.size();
        if (leaf.max_def > 0) {
          if (h.def_encoding != kRle)
            bad(path, "data page at byte {}: definition levels use {}, expected RLE", offset,
                enum_name(kEncodings, h.def_encoding));
          uint32_t len;
          if (vals_end - vals < 4) bad(path, "data page at byte {}: truncated definition levels", offset);
          std::memcpy(&len, vals, 4);
          if (static_cast<size_t>(vals_end - vals - 4) < len)
            bad(path, "data page at byte {}: definition levels announce {} bytes, page has {}", offset, len,
                vals_end - vals - 4);
          lv = vals + 4;
          lv_end = lv + len;
          vals = lv_end;
        }
      } else {
        const int64_t levels = static_cast<int64_t>(h.rep_length) + h.def_length;
        if (h.rep_length < 0 || h.def_length < 0 || levels > h.compressed_size ||
            levels > h.uncompressed_size)
          bad(path, "data page v2 at byte {}: level lengths {} + {} exceed the page size {}", offset,
              h.rep_length, h.def_length, h.compressed_size);
        lv = body + h.rep_length;
        lv_end = lv + h.def_length;
        const int32_t codec = h.v2_compressed ? cm.codec : kUncompressed;
        page =
            decompress(path, codec, lv_end, h.compressed_size - levels, h.uncompressed_size - levels, offset);
        vals = reinterpret_cast<const uint8_t*>(page.data());
        vals_end = vals + page.size();
      }

      size_t present = n;
      if (leaf.max_def > 0) {
        decode_hybrid(path, fmt::format("data page at byte {}: definition levels", offset), lv, lv_end,
                      def_width, n, defs);
        present = 0;
        for (uint32_t d : defs) present += d == static_cast<uint32_t>(leaf.max_def);
      }

      if (h.encoding == kPlain) {
        decode_plain(path, fmt::format("data page at byte {}", offset), vals, vals_end, present, out);
      } else if (h.encoding == kPlainDictionary || h.encoding == kRleDictionary) {
        if (dict.empty() && present > 0)
          bad(path, "data page at byte {} is dictionary-encoded, but no dictionary page came before it",
              offset);
        if (present > 0) {
          if (vals == vals_end) bad(path, "data page at byte {}: missing dictionary index bit width", offset);
          decode_hybrid(path, fmt::format("data page at byte {}: dictionary indices", offset), vals + 1,
                        vals_end, *vals, present, indices);
          for (uint32_t i : indices) {
            if (i >= dict.size())
              bad(path,
                  "data page at byte {}: dictionary index {} is out of range (dictionary has {} entries)",
                  offset, i, dict.size());
            out.push_back(dict[i]);
          }
        }
      } else {
        bad(path, "data page at byte {} uses encoding {}, expected PLAIN, PLAIN_DICTIONARY or RLE_DICTIONARY",
            offset, enum_name(kEncodings, h.encoding));
      }
      seen += static_cast<int64_t>(n);
      if (seen < cm.num_values && pos >= chunk_end)
        bad(path, "row group {}: column chunk ends after {} of {} values", g, seen, cm.num_values);
    }
  }
  return out;
}

}  // namespace attnlab
