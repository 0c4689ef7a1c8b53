// Minimal Parquet reader: extracts one flat string column, with no dependency beyond the standard library.
#pragma once

#include <string>
#include <vector>

namespace attnlab {

// Returns the values of the BYTE_ARRAY column `column` (a top-level name, or a dotted path for a leaf
// inside groups), in file order across all row groups and pages.
//
// Null values of an OPTIONAL column are skipped, not returned as empty strings: a training corpus has
// nothing to learn from a missing line, and an empty string stays distinguishable as a real empty line.
// So the result can be shorter than the file's row count when the column holds nulls.
//
// Supported: data pages v1 and v2, PLAIN and dictionary (PLAIN_DICTIONARY / RLE_DICTIONARY) encodings,
// codecs UNCOMPRESSED and SNAPPY, REQUIRED or OPTIONAL columns, any number of row groups and pages.
// Not supported (clear attnlab::Error naming the file): other codecs (GZIP, ZSTD, ...), DELTA_* encodings,
// repeated (list) columns, non-BYTE_ARRAY columns, encrypted files, column chunks stored in other files.
//
// A build that links Apache Arrow could read Parquet through it instead; this reader exists so that the
// project needs no such dependency to train on the Hugging Face dataset files.
std::vector<std::string> read_parquet_strings(const std::string& path, const std::string& column = "text");

}  // namespace attnlab
