// CRC-32C (Castagnoli), as TFRecord files (TensorBoard event files) frame their records.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace attnlab::report {

// CRC-32C of `n` bytes, continuing from `crc` (0 to start): reflected polynomial 0x82F63B78, initial value
// and final xor 0xFFFFFFFF. crc32c("123456789") == 0xE3069283, the standard check value.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view s) {
  return crc32c(s.data(), s.size());
}

// TFRecord's masked CRC: rotate right by 15 bits and add a constant. TensorFlow masks CRCs it stores because
// the CRC of data that itself contains CRCs is weak (leveldb's crc32c::Mask, same constant).
inline uint32_t mask_crc(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
inline uint32_t unmask_crc(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace attnlab::report
