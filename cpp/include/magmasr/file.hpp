// Files written atomically: a reader sees the old file or the whole new one, never a half-written one.
#pragma once

#include <cstddef>
#include <string>

namespace magmasr {

/// A new file written through a temporary file in the same folder ("dir/.name.XXXXXXXXXXXX.tmp", created
/// exclusively, so two writers of one path never share it), flushed to disk and renamed over `path` by
/// commit(). Destroyed without commit() (an exception on the way), it removes the temporary file and leaves an
/// existing `path` as it was. Failures are FileError naming the file and the system's reason.
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

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace magmasr
