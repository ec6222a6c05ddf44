// safetensors reader and writer, with a small JSON reader for the header (objects, arrays, strings, integers).
// Every check happens before a byte of tensor data is read: a malformed file is a ValueError naming the file and
// the fault, never an out-of-bounds read.
#include "magmasr/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "magmasr/error.hpp"
#include "magmasr/file.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "magmasr's safetensors I/O copies little-endian float32 data as it is: a big-endian host needs byte swaps"
#endif

namespace magmasr {
namespace {

using detail::cat;

// The format's own limit on the header (safetensors rejects larger ones): guards against absurd allocations.
constexpr uint64_t kMaxHeader = 100u << 20;
constexpr int kMaxDepth = 64;  // JSON nesting; a valid header needs 3

// ------------------------------------------------------------------------------------------------ UTF-8

// Length of the well-formed UTF-8 sequence at p (at most n bytes available), 0 when there is none: no overlong
// forms, no surrogates, nothing above U+10FFFF.
size_t utf8_sequence(const unsigned char* p, size_t n) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp, min;
  if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (len > n) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((p[k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0, len; i < s.size(); i += len)
    if ((len = utf8_sequence(p + i, s.size() - i)) == 0) return false;
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// ------------------------------------------------------------------------------------------------- JSON

struct Json {
  enum Kind { Object, Array, String, Integer } kind = Integer;
  std::vector<std::string> keys;  // Object: keys[i] -> values[i], in file order, no duplicates
  std::vector<Json> values;       // Object values, or Array items
  std::string str;                // String
  int64_t integer = 0;            // Integer
};

const char* kind_name(Json::Kind k) {
  switch (k) {
    case Json::Object: return "an object";
    case Json::Array: return "an array";
    case Json::String: return "a string";
    default: return "an integer";
  }
}

class JsonReader {
 public:
  JsonReader(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  Json document() {
    skip_ws();
    Json v = value(0);
    skip_ws();  // the format pads the header with spaces
    if (pos_ != s_.size()) fail("unexpected data after the JSON object");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw ValueError(cat(path_, ": invalid safetensors header: ", what, " (at byte ", pos_, " of the JSON)"));
  }
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }
  void skip_ws() {
    while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  void expect(char c) {
    if (at_end()) fail(cat("the JSON ends where '", c, "' was expected"));
    if (s_[pos_] != c) fail(cat("expected '", c, "', got '", s_[pos_], "'"));
    ++pos_;
  }

  Json value(int depth) {
    if (depth > kMaxDepth) fail(cat("JSON nested deeper than ", kMaxDepth, " levels"));
    if (at_end()) fail("the JSON ends where a value was expected");
    const char c = s_[pos_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') {
      Json v;
      v.kind = Json::String;
      v.str = string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return integer();
    if (c == 't' || c == 'f' || c == 'n')
      fail("true, false and null have no place in a safetensors header (strings, integers, arrays, objects only)");
    fail(cat("unexpected character '", c, "'"));
  }

  // An object or an array: `open`, items separated by commas (each read by `item` into v), `close`.
  template <typename Item>
  Json container(Json::Kind kind, char open, char close, Item item) {
    Json v;
    v.kind = kind;
    expect(open);
    skip_ws();
    if (peek() == close) {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_ws();
      item(v);
      skip_ws();
      if (peek() != ',') break;
      ++pos_;
    }
    expect(close);
    return v;
  }

  Json object(int depth) {
    std::set<std::string> seen;
    return container(Json::Object, '{', '}', [&](Json& v) {
      if (peek() != '"') fail("expected a string key in the object");
      std::string key = string();
      if (!seen.insert(key).second) fail(cat("duplicate name '", key, "'"));
      skip_ws();
      expect(':');
      skip_ws();
      v.keys.push_back(std::move(key));
      v.values.push_back(value(depth + 1));
    });
  }

  Json array(int depth) {
    return container(Json::Array, '[', ']', [&](Json& v) { v.values.push_back(value(depth + 1)); });
  }

  Json integer() {
    Json v;
    const bool neg = peek() == '-';
    if (neg) ++pos_;
    if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit");
    if (peek() == '0' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9')
      fail("a number with a leading zero is not JSON");
    uint64_t mag = 0;
    const uint64_t limit = neg ? uint64_t(std::numeric_limits<int64_t>::max()) + 1 : uint64_t(std::numeric_limits<int64_t>::max());
    while (peek() >= '0' && peek() <= '9') {
      const unsigned d = unsigned(s_[pos_] - '0');
      if (mag > (limit - d) / 10) fail("an integer too large for 64 bits");
      mag = mag * 10 + d;
      ++pos_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E')
      fail("a fractional or exponent number (a safetensors header holds integers only)");
    v.integer = neg ? int64_t(0 - mag) : int64_t(mag);
    return v;
  }

  uint32_t hex4() {
    if (s_.size() - pos_ < 4) fail("a \\u escape needs 4 hexadecimal digits");
    uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      cp <<= 4;
      if (c >= '0' && c <= '9') cp |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f') cp |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') cp |= uint32_t(c - 'A' + 10);
      else fail(cat("'", c, "' is not a hexadecimal digit in a \\u escape"));
    }
    return cp;
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (at_end()) fail("unterminated string");
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail(cat("control character ", int(c), " inside a string (it must be escaped)"));
      if (c == '\\') {
        ++pos_;
        if (at_end()) fail("unterminated escape");
        const char e = s_[pos_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            uint32_t cp = hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail("a \\u escape holds a lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (s_.compare(pos_, 2, "\\u") != 0) fail("a high surrogate \\u escape is not followed by a low one");
              pos_ += 2;
              const uint32_t lo = hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail("a high surrogate \\u escape is not followed by a low one");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default: --pos_; fail(cat("unknown escape '\\", e, "'"));
        }
        continue;
      }
      const size_t len = utf8_sequence(reinterpret_cast<const unsigned char*>(s_.data()) + pos_, s_.size() - pos_);
      if (len == 0) fail("a string that is not valid UTF-8");
      out.append(s_, pos_, len);
      pos_ += len;
    }
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------- file handles

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Reads exactly n bytes at `offset`; ValueError when the file ends first (it shrank under us).
void read_at(int fd, const std::string& path, void* dst, uint64_t n, uint64_t offset) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, size_t(std::min<uint64_t>(n, 1u << 30)), off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) detail::throw_file_error(path, "read");
    if (got == 0) throw ValueError(cat(path, ": the file ended while reading it (was it changed meanwhile?)"));
    p += got, n -= uint64_t(got), offset += uint64_t(got);
  }
}

// ------------------------------------------------------------------------------------------- the header

struct Entry {
  std::string name;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

const Json& field(const Json& obj, const std::string& key) {
  for (size_t i = 0; i < obj.keys.size(); ++i)
    if (obj.keys[i] == key) return obj.values[i];
  throw std::logic_error("field: " + key);  // callers check presence first
}

// One tensor's entry, checked against the data section of `data_len` bytes.
Entry parse_entry(const std::string& path, const std::string& name, const Json& v, uint64_t data_len) {
  const std::string where = cat(path, ": tensor '", name, "': ");
  MAGMASR_REQUIRE(v.kind == Json::Object, ValueError, where, "expected an object {dtype, shape, data_offsets}, got ",
                  kind_name(v.kind));
  static const char* kFields[] = {"dtype", "shape", "data_offsets"};
  for (const char* f : kFields)
    MAGMASR_REQUIRE(std::count(v.keys.begin(), v.keys.end(), f) == 1, ValueError, where, "missing field '", f, "'");
  for (const std::string& k : v.keys)
    MAGMASR_REQUIRE(k == "dtype" || k == "shape" || k == "data_offsets", ValueError, where, "unexpected field '", k,
                    "' (expected dtype, shape, data_offsets)");
  const Json& dtype = field(v, "dtype");
  const Json& shape = field(v, "shape");
  const Json& offsets = field(v, "data_offsets");
  MAGMASR_REQUIRE(dtype.kind == Json::String, ValueError, where, "dtype must be a string, got ", kind_name(dtype.kind));
  MAGMASR_REQUIRE(shape.kind == Json::Array, ValueError, where, "shape must be an array, got ", kind_name(shape.kind));
  MAGMASR_REQUIRE(offsets.kind == Json::Array && offsets.values.size() == 2, ValueError, where,
                  "data_offsets must be an array [begin, end]");
  if (dtype.str != "F32")
    throw TypeError(cat(where, "dtype ", dtype.str, " is not supported; magmasr reads F32 (float32) tensors only"));

  Entry e;
  e.name = name;
  for (const Json& d : shape.values) {
    MAGMASR_REQUIRE(d.kind == Json::Integer && d.integer >= 0, ValueError, where,
                    "shape entries must be integers >= 0");
    e.shape.push_back(d.integer);
  }
  // The element count, or overflow when its byte size exceeds 64 bits (then it cannot match any byte range).
  const bool empty = std::count(e.shape.begin(), e.shape.end(), 0) > 0;
  uint64_t numel = empty ? 0 : 1;
  bool overflow = false;
  for (size_t d = 0; d < e.shape.size() && !empty && !overflow; ++d) {
    overflow = uint64_t(e.shape[d]) > std::numeric_limits<uint64_t>::max() / 4 / numel;
    if (!overflow) numel *= uint64_t(e.shape[d]);
  }
  for (const Json& o : offsets.values)
    MAGMASR_REQUIRE(o.kind == Json::Integer && o.integer >= 0, ValueError, where,
                    "data_offsets must be integers >= 0");
  e.begin = uint64_t(offsets.values[0].integer);
  e.end = uint64_t(offsets.values[1].integer);
  MAGMASR_REQUIRE(e.begin <= e.end, ValueError, where, "data_offsets [", e.begin, ", ", e.end, "] end before they begin");
  MAGMASR_REQUIRE(e.end <= data_len, ValueError, where, "data_offsets [", e.begin, ", ", e.end,
                  "] run past the data section (", data_len, " bytes)");
  MAGMASR_REQUIRE(!overflow && numel * 4 == e.end - e.begin, ValueError, where, "shape ", shape_str(e.shape),
                  " of F32 needs ", overflow ? std::string("more than 2^64") : std::to_string(numel * 4),
                  " bytes but data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin);
  MAGMASR_REQUIRE(!e.shape.empty(), ValueError, where,
                  "a scalar (shape []) cannot be held: magmasr tensors have rank 1 to ", kMaxRank,
                  " (store it with shape [1])");
  MAGMASR_REQUIRE(e.shape.size() <= size_t(kMaxRank), ValueError, where, "rank ", e.shape.size(),
                  " cannot be held: magmasr tensors have rank 1 to ", kMaxRank);
  MAGMASR_REQUIRE(numel > 0, ValueError, where, "shape ", shape_str(e.shape),
                  " has a zero-size dimension; magmasr tensors cannot be empty");
  return e;
}

// The tensors must cover [0, data_len) exactly: sorted by offset, each begins where the previous one ends.
void check_coverage(const std::string& path, std::vector<Entry>& entries, uint64_t data_len) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < covered) {
      const Entry& p = entries[i - 1];
      throw ValueError(cat(path, ": tensors '", p.name, "' [", p.begin, ", ", p.end, ") and '", e.name, "' [",
                           e.begin, ", ", e.end, ") overlap in the data section"));
    }
    MAGMASR_REQUIRE(e.begin == covered, ValueError, path, ": bytes [", covered, ", ", e.begin,
                    ") of the data section belong to no tensor (the tensors must cover it without gaps)");
    covered = e.end;
  }
  MAGMASR_REQUIRE(covered == data_len, ValueError, path, ": bytes [", covered, ", ", data_len,
                  ") at the end of the data section belong to no tensor (the tensors must cover it without gaps)");
}

void put_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

}  // namespace

// ------------------------------------------------------------------------------------------------ load

TensorFile load_safetensors(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) detail::throw_file_error(path, "open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) detail::throw_file_error(path, "stat");
  if (S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    detail::throw_file_error(path, "read");
  }
  const uint64_t size = uint64_t(st.st_size);
  MAGMASR_REQUIRE(size >= 8, ValueError, path, ": not a safetensors file: ", size,
                  " bytes, fewer than the 8-byte header length");
  unsigned char len_bytes[8];
  read_at(fd.get(), path, len_bytes, 8, 0);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | len_bytes[k];
  MAGMASR_REQUIRE(n <= size - 8, ValueError, path, ": the header length ", n, " runs past the end of the file (",
                  size, " bytes)");
  MAGMASR_REQUIRE(n <= kMaxHeader, ValueError, path, ": the header length ", n, " exceeds the format's limit of ",
                  kMaxHeader, " bytes");
  std::string header(size_t(n), '\0');
  read_at(fd.get(), path, header.data(), n, 8);
  const uint64_t data_start = 8 + n, data_len = size - data_start;

  const Json root = JsonReader(header, path).document();
  MAGMASR_REQUIRE(root.kind == Json::Object, ValueError, path, ": invalid safetensors header: expected a JSON object, got ",
                  kind_name(root.kind));
  TensorFile out;
  std::vector<Entry> entries;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const std::string& key = root.keys[i];
    const Json& v = root.values[i];
    if (key == "__metadata__") {
      MAGMASR_REQUIRE(v.kind == Json::Object, ValueError, path, ": __metadata__ must be an object, got ",
                      kind_name(v.kind));
      for (size_t j = 0; j < v.keys.size(); ++j) {
        MAGMASR_REQUIRE(v.values[j].kind == Json::String, ValueError, path, ": __metadata__ '", v.keys[j],
                        "' must be a string, got ", kind_name(v.values[j].kind));
        out.metadata.emplace(v.keys[j], v.values[j].str);
      }
    } else {
      entries.push_back(parse_entry(path, key, v, data_len));
    }
  }
  check_coverage(path, entries, data_len);
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape);
    read_at(fd.get(), path, t.data(), e.end - e.begin, data_start + e.begin);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ save

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      MAGMASR_REQUIRE(valid_utf8(k) && valid_utf8(v), ValueError, "save_safetensors: ", path, ": metadata key '", k,
                      "' or its value is not valid UTF-8");
      if (!first) header += ',';
      first = false;
      put_string(header, k);
      header += ':';
      put_string(header, v);
    }
    header += "},";
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    MAGMASR_REQUIRE(!name.empty() && name != "__metadata__", ValueError, "save_safetensors: ", path,
                    ": invalid tensor name '", name, "'");
    MAGMASR_REQUIRE(valid_utf8(name), ValueError, "save_safetensors: ", path, ": tensor name '", name,
                    "' is not valid UTF-8");
    MAGMASR_REQUIRE(t.defined(), ValueError, "save_safetensors: ", path, ": tensor '", name, "' is undefined");
    put_string(header, name);
    header += ":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t d = 0; d < t.shape().size(); ++d) header += (d ? "," : "") + std::to_string(t.shape()[d]);
    header += cat("],\"data_offsets\":[", offset, ",", offset + t.nbytes(), "]},");
    offset += t.nbytes();
  }
  if (header.back() == ',') header.pop_back();
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  unsigned char len_bytes[8];
  for (int k = 0; k < 8; ++k) len_bytes[k] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * k));

  AtomicFile file(path);
  file.write(len_bytes, 8);
  file.write(header);
  for (const auto& [name, t] : tensors) {
    if (t.device().is_cpu()) {
      file.write(t.data(), t.nbytes());
    } else {
      const std::vector<float> host = t.to_vector();
      file.write(host.data(), t.nbytes());
    }
  }
  file.commit();
}

}  // namespace magmasr
