// Snappy block decompressor: a direct reading of the format description, with every bound checked.
#include "attnlab/data/snappy.h"

#include <algorithm>
#include <cstdint>

#include "attnlab/core/error.h"

namespace attnlab::snappy {
namespace {

// A literal of at most 64 bytes in 1 + 64 input bytes or a copy of 64 bytes in 3 input bytes: no valid
// block expands by more than 64/3 per input byte. Bounding the announced length by this lets us allocate
// the output once without trusting a corrupt header that announces gigabytes.
constexpr uint64_t kMaxExpansion = 22;

uint32_t read_le(const uint8_t* p, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

std::string decompress(const char* data, size_t n) {
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  const uint8_t* end = p + n;

  // Uncompressed length: little-endian base-128 varint, at most 32 bits (5 bytes).
  uint64_t len = 0;
  for (int shift = 0;; shift += 7) {
    if (p == end) fail("snappy: truncated length header ({} bytes of input)", n);
    if (shift > 28) fail("snappy: length header longer than 5 bytes");
    uint8_t b = *p++;
    len |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  if (len > 0xffffffffull) fail("snappy: announced length {} exceeds 32 bits", len);
  if (len > kMaxExpansion * n + 16)
    fail("snappy: announced length {} is impossible for {} compressed bytes", len, n);

  std::string out(static_cast<size_t>(len), '\0');
  size_t pos = 0;  // bytes of `out` written so far
  while (p < end) {
    const size_t at = static_cast<size_t>(p - reinterpret_cast<const uint8_t*>(data));
    const uint8_t tag = *p++;
    const int kind = tag & 3;
    if (kind == 0) {
      // Literal: length-1 in the upper 6 bits, or in the 1..4 bytes that follow for 60..63.
      uint64_t lit = tag >> 2;
      if (lit >= 60) {
        const int extra = static_cast<int>(lit) - 59;
        if (end - p < extra) fail("snappy: truncated literal length at input byte {}", at);
        lit = read_le(p, extra);
        p += extra;
      }
      lit += 1;
      if (static_cast<uint64_t>(end - p) < lit)
        fail("snappy: literal of {} bytes at input byte {} runs past the end of the input ({} bytes left)",
             lit, at, end - p);
      if (lit > len - pos)
        fail("snappy: literal of {} bytes at input byte {} overruns the announced length {}", lit, at, len);
      std::copy(p, p + lit, out.begin() + static_cast<std::ptrdiff_t>(pos));
      p += lit;
      pos += lit;
      continue;
    }
    size_t copy_len = 0;
    size_t offset = 0;
    if (kind == 1) {
      // Copy with a 1-byte offset: 3 bits of length (4..11), 11 bits of offset.
      if (end - p < 1) fail("snappy: truncated copy-1 element at input byte {}", at);
      copy_len = 4 + ((tag >> 2) & 7);
      offset = (static_cast<size_t>(tag >> 5) << 8) | *p++;
    } else {
      const int bytes = kind == 2 ? 2 : 4;
      if (end - p < bytes) fail("snappy: truncated copy-{} element at input byte {}", bytes, at);
      copy_len = (tag >> 2) + 1;
      offset = read_le(p, bytes);
      p += bytes;
    }
    if (offset == 0) fail("snappy: copy with offset 0 at input byte {}", at);
    if (offset > pos)
      fail("snappy: copy at input byte {} reaches back {} bytes but only {} were written", at, offset, pos);
    if (copy_len > len - pos)
      fail("snappy: copy of {} bytes at input byte {} overruns the announced length {}", copy_len, at, len);
    // Byte by byte on purpose: offset < length means the copy reads what it writes ("abab..." from "ab").
    for (size_t i = 0; i < copy_len; ++i, ++pos) out[pos] = out[pos - offset];
  }
  if (pos != len) fail("snappy: decompressed {} bytes but the header announced {}", pos, len);
  return out;
}

}  // namespace attnlab::snappy
