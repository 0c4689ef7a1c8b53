// Snappy decompression (raw block format), enough to read snappy-compressed Parquet pages.
#pragma once

#include <cstddef>
#include <string>

namespace attnlab::snappy {

// Decompresses one raw Snappy block: a varint with the uncompressed length, then literal and copy
// elements (https://github.com/google/snappy/blob/main/format_description.txt). This is the block
// format Parquet uses, not the framed ".sz" stream format. Throws attnlab::Error on any malformed input.
std::string decompress(const char* data, size_t n);

}  // namespace attnlab::snappy
