// File helpers.
#include "attnlab/core/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "attnlab/core/error.h"

namespace attnlab {

void write_file_atomic(const fs::path& path, const std::string& content) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  fs::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("cannot write '{}': {}", tmp.string(), std::strerror(errno));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail("cannot write '{}': {}", tmp.string(), std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("cannot move '{}' to '{}': {}", tmp.string(), path.string(), ec.message());
}

void require_file(const fs::path& path, const std::string& what) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st)) fail("{}: expected a file, '{}' does not exist", what, path.string());
  if (fs::is_directory(st)) fail("{}: expected a file, '{}' is a directory", what, path.string());
  if (!fs::is_regular_file(st)) fail("{}: expected a regular file, '{}' is not one", what, path.string());
}

void require_dir(const fs::path& path, const std::string& what) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (!fs::exists(st)) fail("{}: expected a directory, '{}' does not exist", what, path.string());
  if (!fs::is_directory(st)) fail("{}: expected a directory, '{}' is a file", what, path.string());
}

std::string read_file(const fs::path& path, const std::string& what) {
  require_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open '{}': {}", what, path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
int remove_entry(const char* path, const struct stat*, int type, struct FTW*) {
  return type == FTW_DP ? ::rmdir(path) : ::unlink(path);
}
}  // namespace

void remove_tree(const fs::path& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // nothing there
  if (!S_ISDIR(st.st_mode)) {
    ::unlink(path.c_str());
    return;
  }
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fail("cannot remove '{}': {}", path.string(), std::strerror(errno));
}

void replace_dir_atomic(const fs::path& src, const fs::path& dst) {
  fs::path old = dst;
  old += ".old";
  remove_tree(old);
  if (fs::exists(dst)) fs::rename(dst, old);
  fs::rename(src, dst);
  remove_tree(old);
}

}  // namespace attnlab
