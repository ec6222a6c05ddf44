#include "magmasr/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "magmasr/error.hpp"

namespace magmasr {

namespace {

// FileError "<path>: cannot <what>: <reason>" for the errno value `code`, read right after the failed call (building
// the message may change errno).
[[noreturn]] void fail(const std::string& path, const std::string& what, int code) {
  throw FileError(detail::cat(path, ": cannot ", what, ": ", std::strerror(code)), code);
}

// The file that writing `path` should replace: `path`, or when it is a symbolic link the file it leads to (chains
// of links followed, a relative link read from the link's folder; a dangling link gives the missing file's path).
std::string follow_links(const std::string& path) {
  std::string p = path;
  for (int hops = 0; hops < 40; ++hops) {  // Linux's own limit on a chain of links
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    std::string link(PATH_MAX, '\0');
    const ssize_t n = ::readlink(p.c_str(), &link[0], link.size());
    if (n < 0) fail(path, detail::cat("read the symbolic link ", p), errno);
    if (size_t(n) >= link.size() || n == 0)
      fail(path, detail::cat("follow the symbolic link ", p), n == 0 ? ENOENT : ENAMETOOLONG);
    link.resize(size_t(n));
    const size_t slash = p.rfind('/');
    p = link[0] == '/' || slash == std::string::npos ? link : p.substr(0, slash + 1) + link;
  }
  fail(path, "follow its symbolic links", ELOOP);
}

// The longest prefix of `s` of at most `n` bytes that does not cut a UTF-8 character.
std::string utf8_prefix(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

}  // namespace

void detail::throw_file_error(const std::string& path, const std::string& what) { fail(path, what, errno); }

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) throw ValueError("AtomicFile: an empty path");
  target_ = follow_links(path_);
  const size_t slash = target_.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : target_.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? target_ : target_.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") fail(describe(), "write it: the path names a folder", EISDIR);
  // ".<base>.<12 hex digits>.tmp" must fit the file system's limit on a name: shorten <base> when it does not.
  const long name_max_conf = ::pathconf(dir.empty() ? "." : dir.c_str(), _PC_NAME_MAX);
  const size_t name_max = name_max_conf > 0 ? size_t(name_max_conf) : 255, extra = 18;
  if (base.size() > name_max)
    fail(describe(), detail::cat("create it (a name of ", base.size(), " bytes, the limit is ", name_max, ")"),
         ENAMETOOLONG);
  const std::string stem = utf8_prefix(base, name_max > extra ? name_max - extra : 0);
  // An existing file keeps its permission bits; a new one gets 0666 minus the umask (open's mode below).
  struct stat existing {};
  const bool keep_mode = ::stat(target_.c_str(), &existing) == 0 && S_ISREG(existing.st_mode);
  std::random_device rd;
  std::mt19937_64 gen((uint64_t(rd()) << 32) ^ rd() ^ uint64_t(::getpid()));
  int code = EEXIST;
  for (int attempt = 0; attempt < 100; ++attempt) {
    char suffix[20];
    std::snprintf(suffix, sizeof suffix, "%012llx", static_cast<unsigned long long>(gen() & 0xFFFFFFFFFFFFull));
    tmp_ = dir + "." + stem + "." + suffix + ".tmp";
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) {
      // Best effort: a file system without permissions (vfat) refuses, and the file is still written.
      if (keep_mode) (void)::fchmod(fd_, existing.st_mode & 07777);
      return;
    }
    code = errno;
    if (code != EEXIST) break;
  }
  fail(describe(), detail::cat("create a temporary file in ", dir.empty() ? "the current folder" : dir), code);
}

std::string AtomicFile::describe() const {
  return target_ == path_ || target_.empty() ? path_ : detail::cat(path_, " (a symbolic link to ", target_, ")");
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
    if (put < 0) fail(describe(), "write (to its temporary file)", errno);
    p += put, n -= size_t(put);
  }
}

void AtomicFile::commit() {
  if (committed_) throw ValueError(detail::cat(path_, ": committed twice"));
  if (::fsync(fd_) != 0) fail(describe(), "flush its temporary file to disk", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(describe(), "close its temporary file", errno);
  if (::rename(tmp_.c_str(), target_.c_str()) != 0) fail(describe(), "replace it with its temporary file", errno);
  committed_ = true;
  // Make the rename durable (best effort: some file systems cannot fsync a folder).
  const size_t slash = target_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : target_.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace magmasr
