// Files written atomically: a reader sees the old file or the whole new one, never a half-written one.
#pragma once

#include <cstddef>
#include <string>

namespace magmasr {

/// A new file written through a temporary file in the same folder ("dir/.name.XXXXXXXXXXXX.tmp", created
/// exclusively, so two writers of one path never share it), flushed to disk and renamed over `path` by
/// commit(). Destroyed without commit() (an exception on the way), it removes the temporary file and leaves an
/// existing `path` as it was.
///
///  - An existing file keeps its permission bits (a new one gets 0666 minus the umask, as any new file).
///  - A symbolic link is written through, as `cp` and editors do: the file it points to (followed through chains
///    of links, created when the link dangles) is replaced atomically, and the link stays a link.
///  - A name too long for a temporary name beside it ("." + name + 17 characters) gets a temporary name made
///    from the name's beginning; a name longer than the file system allows is a FileError (ENAMETOOLONG).
///  - Failures are FileError naming `path` (and the file a link leads to), what failed and the system's reason.
///
///   AtomicFile f("out.pgm");
///   f.write(header.data(), header.size());
///   f.write(pixels.data(), pixels.size());
///   f.commit();
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  /// Flushes, closes and renames the temporary file into place (then flushes the folder, best effort).
  void commit();

  /// The path given.
  const std::string& path() const { return path_; }
  /// The file commit() replaces: path(), or the file a symbolic link path() leads to.
  const std::string& target() const { return target_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string describe() const;  // path_, and where a link leads, for messages
  std::string path_, target_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace magmasr
