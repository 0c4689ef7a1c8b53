// safetensors reader and writer.
#include "attnlab/core/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab {
namespace {

struct DtypeInfo {
  const char* name;
  c10::ScalarType type;
  size_t bytes;
};

const DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeInfo& dtype_by_name(const std::string& name, const std::string& path, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d;
  fail("{}: tensor '{}' has dtype '{}', expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL",
       path, tensor, name);
}

const DtypeInfo& dtype_by_type(c10::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  fail("safetensors: cannot store dtype {}", c10::toString(t));
}

}  // namespace

SafetensorFile SafetensorFile::load(const std::string& path) {
  std::string bytes = read_file(path, "safetensors file");
  SafetensorFile f;
  f.path_ = path;
  if (bytes.size() < 8)
    fail("{}: truncated safetensors file: expected at least 8 bytes of header length, got {}", path,
         bytes.size());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_len > bytes.size() - 8)
    fail("{}: truncated safetensors file: header of {} bytes announced, only {} bytes follow", path,
         header_len, bytes.size() - 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(header_len));
  } catch (const std::exception& e) {
    fail("{}: bad safetensors header (not JSON): {}", path, e.what());
  }
  if (!header.is_object()) fail("{}: bad safetensors header: expected a JSON object", path);
  f.data_ = bytes.substr(8 + header_len);
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        f.metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const auto& v = it.value();
    if (!v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail("{}: tensor '{}': expected dtype, shape and data_offsets in the header", path, it.key());
    SafetensorEntry e;
    e.dtype = v["dtype"].get<std::string>();
    e.shape = v["shape"].get<std::vector<int64_t>>();
    auto off = v["data_offsets"].get<std::vector<size_t>>();
    if (off.size() != 2 || off[0] > off[1])
      fail("{}: tensor '{}': bad data_offsets {}", path, it.key(), v["data_offsets"].dump());
    e.begin = off[0];
    e.end = off[1];
    const auto& d = dtype_by_name(e.dtype, path, it.key());
    size_t numel = 1;
    for (auto s : e.shape) numel *= static_cast<size_t>(s);
    if (numel * d.bytes != e.end - e.begin)
      fail("{}: tensor '{}': shape {} of {} needs {} bytes, data_offsets give {}", path, it.key(),
           shape_str(e.shape), e.dtype, numel * d.bytes, e.end - e.begin);
    if (e.end > f.data_.size())
      fail("{}: truncated safetensors file: tensor '{}' ends at byte {} of the data, which has only {}", path,
           it.key(), e.end, f.data_.size());
    f.entries_[it.key()] = e;
  }
  return f;
}

std::vector<std::string> SafetensorFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

const SafetensorEntry& SafetensorFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    fail("{}: no tensor named '{}'; it holds: {}", path_, name, fmt::join(names(), ", "));
  return it->second;
}

torch::Tensor SafetensorFile::tensor(const std::string& name) const {
  const auto& e = entry(name);
  const auto& d = dtype_by_name(e.dtype, path_, name);
  auto t = torch::empty(e.shape, torch::TensorOptions().dtype(d.type));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), data_.data() + e.begin, e.end - e.begin);
  return t;
}

void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string data;
  for (const auto& [name, t0] : tensors) {
    auto t = t0.detach().to(torch::kCPU).contiguous();
    const auto& d = dtype_by_type(t.scalar_type());
    size_t nbytes = static_cast<size_t>(t.numel()) * d.bytes;
    header[name] = {{"dtype", d.name},
                    {"shape", std::vector<int64_t>(t.sizes().begin(), t.sizes().end())},
                    {"data_offsets", {data.size(), data.size() + nbytes}}};
    data.append(static_cast<const char*>(t.data_ptr()), nbytes);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // the format pads the header to 8-byte alignment
  std::string out(8, '\0');
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += h;
  out += data;
  write_file_atomic(path, out);
}

}  // namespace attnlab
