// A reader and writer of the safetensors format (https://github.com/huggingface/safetensors):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, __metadata__},
// then the raw little-endian data. Used for the op fixtures, `ops verify`, and later for HF checkpoints.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace attnlab {

struct SafetensorEntry {
  std::string dtype;           // "F32", "F64", "BF16", "F16", "I64", "I32", "U8", "BOOL", ...
  std::vector<int64_t> shape;  // row-major
  size_t begin = 0, end = 0;   // byte offsets into the data section
};

class SafetensorFile {
 public:
  // Reads and validates the whole file: a truncated file, a bad header or offsets that leave the data
  // section are errors naming the file.
  static SafetensorFile load(const std::string& path);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> names() const;
  const SafetensorEntry& entry(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

  // A CPU tensor holding a copy of the stored data, in the stored dtype.
  torch::Tensor tensor(const std::string& name) const;

 private:
  std::string path_;
  std::string data_;  // the data section
  std::map<std::string, SafetensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device, contiguous copies are made) and string metadata, atomically.
void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace attnlab
