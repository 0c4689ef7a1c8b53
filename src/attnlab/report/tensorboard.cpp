// TensorBoard event files: TFRecord framing and a minimal protobuf encoder / decoder for Event messages.
//
// The messages (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto), the fields used:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// Protobuf wire format: each field is a varint key (field_number << 3 | wire_type) then its value; wire
// types: 0 varint, 1 fixed64 (little-endian), 2 length-delimited (varint length + bytes), 5 fixed32.
#include "attnlab/report/tensorboard.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/report/crc32c.h"

namespace attnlab::report {

namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_key(std::string& out, uint32_t field, WireType type) {
  put_varint(out, (field << 3) | type);
}

template <class T>
void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void put_double(std::string& out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  put_key(out, field, kFixed64);
  put_le(out, bits);
}

void put_float(std::string& out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  put_key(out, field, kFixed32);
  put_le(out, bits);
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_double(e, 1, wall_time);
  put_key(e, 2, kVarint);
  put_varint(e, static_cast<uint64_t>(step));  // int64: negative numbers take 10 bytes, as in protobuf
  return e;
}

std::string scalar_event(const std::vector<std::pair<std::string, double>>& values, int64_t step,
                         double wall) {
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    put_bytes(v, 1, tag);
    put_float(v, 2, static_cast<float>(value));
    put_bytes(summary, 1, v);
  }
  std::string e = event_header(wall, step);
  put_bytes(e, 5, summary);
  return e;
}

// ---- decoding

uint64_t get_le(const unsigned char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// Reads protobuf fields from a byte range; throws (with `what`) on a truncated or malformed message.
class ProtoReader {
 public:
  ProtoReader(std::string_view data, const std::string& what) : data_(data), what_(what) {}
  bool done() const { return pos_ >= data_.size(); }

  // Next field: its number and wire type; the value is read by one of the calls below.
  std::pair<uint32_t, uint32_t> key() {
    uint64_t k = varint();
    return {static_cast<uint32_t>(k >> 3), static_cast<uint32_t>(k & 7)};
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      auto b = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("{}: malformed varint", what_);
  }
  uint64_t fixed(size_t n) {
    need(n);
    uint64_t v = get_le(reinterpret_cast<const unsigned char*>(data_.data() + pos_), n);
    pos_ += n;
    return v;
  }
  std::string_view bytes() {
    uint64_t n = varint();
    need(n);
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  void skip(uint32_t type) {
    switch (type) {
      case kVarint:
        varint();
        break;
      case kFixed64:
        fixed(8);
        break;
      case kLengthDelimited:
        bytes();
        break;
      case kFixed32:
        fixed(4);
        break;
      default:
        fail("{}: unsupported protobuf wire type {}", what_, type);
    }
  }

 private:
  void need(uint64_t n) {
    if (n > data_.size() - pos_) fail("{}: truncated protobuf message", what_);
  }
  std::string_view data_;
  size_t pos_ = 0;
  const std::string& what_;
};

void check_type(uint32_t got, WireType want, const char* field, const std::string& what) {
  if (got != want)
    fail("{}: field {} has wire type {}, expected {}", what, field, got, static_cast<uint32_t>(want));
}

// Decodes a Value; returns the scalar when it has a simple_value.
std::optional<std::pair<std::string, float>> decode_value(std::string_view data, const std::string& what) {
  ProtoReader r(data, what);
  std::string tag;
  std::optional<float> value;
  while (!r.done()) {
    auto [field, type] = r.key();
    if (field == 1) {
      check_type(type, kLengthDelimited, "Value.tag", what);
      tag = std::string(r.bytes());
    } else if (field == 2) {
      check_type(type, kFixed32, "Value.simple_value", what);
      auto bits = static_cast<uint32_t>(r.fixed(4));
      float f;
      std::memcpy(&f, &bits, 4);
      value = f;
    } else {
      r.skip(type);
    }
  }
  if (!value) return std::nullopt;
  return std::make_pair(tag, *value);
}

void decode_event(std::string_view data, const std::string& what, EventFile& out) {
  ProtoReader r(data, what);
  double wall = 0;
  int64_t step = 0;
  std::vector<std::pair<std::string, float>> values;
  while (!r.done()) {
    auto [field, type] = r.key();
    if (field == 1) {
      check_type(type, kFixed64, "Event.wall_time", what);
      uint64_t bits = r.fixed(8);
      std::memcpy(&wall, &bits, 8);
    } else if (field == 2) {
      check_type(type, kVarint, "Event.step", what);
      step = static_cast<int64_t>(r.varint());
    } else if (field == 3) {
      check_type(type, kLengthDelimited, "Event.file_version", what);
      std::string_view v = r.bytes();
      if (out.file_version.empty()) out.file_version = std::string(v);
    } else if (field == 5) {
      check_type(type, kLengthDelimited, "Event.summary", what);
      ProtoReader s(r.bytes(), what);
      while (!s.done()) {
        auto [sf, st] = s.key();
        if (sf == 1) {
          check_type(st, kLengthDelimited, "Summary.value", what);
          if (auto v = decode_value(s.bytes(), what)) values.push_back(std::move(*v));
        } else {
          s.skip(st);
        }
      }
    } else {
      r.skip(type);
    }
  }
  for (auto& [tag, value] : values) out.scalars.push_back({wall, step, std::move(tag), value});
}

std::string hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

}  // namespace

double unix_time_now() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count() * 1e-6;
}

std::string tfrecord_frame(std::string_view data) {
  std::string len;
  put_le<uint64_t>(len, data.size());
  std::string out = len;
  put_le<uint32_t>(out, mask_crc(crc32c(len)));
  out.append(data);
  put_le<uint32_t>(out, mask_crc(crc32c(data)));
  return out;
}

EventWriter::EventWriter(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("tensorboard: cannot create directory '{}': {}", dir.string(), ec.message());
  auto secs = static_cast<long long>(unix_time_now());
  std::string base = "events.out.tfevents." + std::to_string(secs) + "." + hostname();
  // "x": fail rather than truncate when another writer of the same second made that file.
  for (int attempt = 0; attempt < 100 && !file_; ++attempt) {
    path_ = dir / (attempt == 0 ? base : base + "." + std::to_string(attempt));
    file_ = std::fopen(path_.c_str(), "wbx");
    if (!file_ && errno != EEXIST)
      fail("tensorboard: cannot create '{}': {}", path_.string(), std::strerror(errno));
  }
  if (!file_) fail("tensorboard: cannot create a new event file in '{}' (100 names taken)", dir.string());
  std::string first = event_header(unix_time_now(), 0);
  put_bytes(first, 3, "brain.Event:2");
  write_event(first);
}

EventWriter::~EventWriter() {
  if (file_) std::fclose(file_);
}

void EventWriter::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ && std::fclose(file_) != 0) {
    file_ = nullptr;
    fail("tensorboard: cannot close '{}': {}", path_.string(), std::strerror(errno));
  }
  file_ = nullptr;
}

void EventWriter::write_event(const std::string& event) {
  if (!file_) fail("tensorboard: '{}' is closed", path_.string());
  std::string rec = tfrecord_frame(event);
  if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size() || std::fflush(file_) != 0)
    fail("tensorboard: cannot write '{}': {}", path_.string(), std::strerror(errno));
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  add_scalar(tag, value, step, unix_time_now());
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::lock_guard<std::mutex> lock(mutex_);
  write_event(scalar_event({{tag, value}}, step, wall_time));
}

void EventWriter::add_scalars(const std::vector<std::pair<std::string, double>>& values, int64_t step) {
  std::lock_guard<std::mutex> lock(mutex_);
  write_event(scalar_event(values, step, unix_time_now()));
}

EventFile read_events(const fs::path& path) {
  const std::string data = read_file(path, "tensorboard event file");
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  EventFile out;
  size_t pos = 0;
  while (pos < data.size()) {
    std::string where = fmt::format("{}: record {} at byte {}", path.string(), out.records, pos);
    if (data.size() - pos < 12)
      fail("{}: truncated header ({} bytes left, 12 needed)", where, data.size() - pos);
    uint64_t len = get_le(p + pos, 8);
    auto len_crc = static_cast<uint32_t>(get_le(p + pos + 8, 4));
    uint32_t want = mask_crc(crc32c(p + pos, 8));
    if (len_crc != want)
      fail("{}: length CRC mismatch (stored {:#010x}, computed {:#010x})", where, len_crc, want);
    if (len > data.size() - pos - 12 || data.size() - pos - 12 - len < 4)
      fail("{}: truncated: the record says {} data bytes, {} bytes are left", where, len,
           data.size() - pos - 12);
    std::string_view body(data.data() + pos + 12, len);
    auto data_crc = static_cast<uint32_t>(get_le(p + pos + 12 + len, 4));
    want = mask_crc(crc32c(body));
    if (data_crc != want)
      fail("{}: data CRC mismatch (stored {:#010x}, computed {:#010x})", where, data_crc, want);
    decode_event(body, where, out);
    ++out.records;
    pos += 12 + len + 4;
  }
  return out;
}

}  // namespace attnlab::report
