// File helpers: atomic writes (write to a temporary, fsync, rename) and clear errors for missing paths.
#pragma once

#include <filesystem>
#include <string>

namespace attnlab {

namespace fs = std::filesystem;

// Writes `content` to `path` so that a reader sees either the old file or the whole new one, never a
// partial file, even after a crash or Ctrl-C in the middle.
void write_file_atomic(const fs::path& path, const std::string& content);

// Reads a whole file; errors name the path and say whether it is missing, a directory or unreadable.
std::string read_file(const fs::path& path, const std::string& what = "file");

// Throws unless `path` is an existing regular file.
void require_file(const fs::path& path, const std::string& what);

// Throws unless `path` is an existing directory.
void require_dir(const fs::path& path, const std::string& what);

// Replaces directory `dst` by `src` (both in the same parent), atomically for readers of `dst`'s files:
// the old directory is moved aside first and removed only after `src` took its place.
void replace_dir_atomic(const fs::path& src, const fs::path& dst);

}  // namespace attnlab
