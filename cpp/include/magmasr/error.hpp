// Exceptions thrown by magmasr. The Python bindings map them to TypeError, ValueError, RuntimeError and OSError.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace magmasr {

/// A wrong argument: bad shape, rank, size, option. Python: ValueError.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A wrong kind of argument: dtype, non-contiguous memory, wrong object. Python: TypeError.
class TypeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A device that does not exist or is not compiled in, or tensors on different devices. Python: RuntimeError.
class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A failed CUDA runtime or cuBLAS call; the message names the call, the file and the line.
/// Python: magmasr.CudaError (a RuntimeError).
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file that cannot be opened, read, written or renamed; code() is the errno value (0 when none applies).
/// Python: OSError with that errno (FileNotFoundError for ENOENT, PermissionError for EACCES, ...).
class FileError : public std::runtime_error {
 public:
  explicit FileError(const std::string& what, int code = 0) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// Throws FileError "<path>: cannot <what>: <the system's reason>" carrying errno (cpp/src/file.cpp).
[[noreturn]] void throw_file_error(const std::string& path, const std::string& what);

/// a * b, or a ValueError "<what>: <a> * <b> overflows a 64-bit integer" (sizes from arguments or files must never
/// wrap around: a wrapped size passes the checks that follow it).
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw ValueError(cat(what, ": ", a, " * ", b, " overflows a 64-bit integer"));
  return r;
}

/// a + b, or a ValueError "<what>: <a> + <b> overflows a 64-bit integer".
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw ValueError(cat(what, ": ", a, " + ", b, " overflows a 64-bit integer"));
  return r;
}
}  // namespace detail

}  // namespace magmasr

/// Throws `ExcType` with the streamed message when `cond` is false.
#define MAGMASR_REQUIRE(cond, ExcType, ...)                          \
  do {                                                               \
    if (!(cond)) throw ::magmasr::ExcType(::magmasr::detail::cat(__VA_ARGS__)); \
  } while (0)
