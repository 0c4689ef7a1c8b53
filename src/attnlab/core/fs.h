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

// Removes a file or a directory tree (no error if it does not exist). Written on POSIX nftw rather than
// std::filesystem::remove_all, which crashed in the GPU machine's build (libstdc++ of GCC 13 against the
// runtime there; seen 2026-11-23 in every test that removed a directory).
void remove_tree(const fs::path& path);

// Replaces directory `dst` by `src` (both in the same parent), atomically for readers of `dst`'s files:
// the old directory is moved aside first and removed only after `src` took its place.
void replace_dir_atomic(const fs::path& src, const fs::path& dst);

}  // namespace attnlab
