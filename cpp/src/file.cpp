#include "magmasr/file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "magmasr/error.hpp"

namespace magmasr {

void detail::throw_file_error(const std::string& path, const std::string& what) {
  const int code = errno;
  throw FileError(cat(path, ": cannot ", what, ": ", std::strerror(code)), code);
}

using detail::throw_file_error;

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) throw ValueError("AtomicFile: an empty path");
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path_.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  std::random_device rd;
  std::mt19937_64 gen((uint64_t(rd()) << 32) ^ rd() ^ uint64_t(::getpid()));
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[20];
    std::snprintf(suffix, sizeof suffix, "%012llx", static_cast<unsigned long long>(gen() & 0xFFFFFFFFFFFFull));
    tmp_ = dir + "." + base + "." + suffix + ".tmp";
    // Mode 0666, so the umask applies as to any new file.
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) return;
    if (errno != EEXIST) throw_file_error(tmp_, "create a temporary file");
  }
  throw_file_error(tmp_, "create a temporary file");
}

AtomicFile::~AtomicFile() {
  if (committed_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  if (committed_ || fd_ < 0) throw ValueError(detail::cat(path_, ": write after commit"));
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t put = ::write(fd_, p, std::min<size_t>(n, 1u << 30));
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) throw_file_error(tmp_, "write");
    p += put, n -= size_t(put);
  }
}

void AtomicFile::commit() {
  if (committed_) throw ValueError(detail::cat(path_, ": committed twice"));
  if (::fsync(fd_) != 0) throw_file_error(tmp_, "flush");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw_file_error(tmp_, "close");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw_file_error(path_, detail::cat("rename ", tmp_, " to"));
  committed_ = true;
  // Make the rename durable (best effort: some file systems cannot fsync a folder).
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace magmasr
