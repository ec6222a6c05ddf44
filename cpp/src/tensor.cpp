#include "magmasr/tensor.hpp"

#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <sstream>
#include <utility>

#include "backend.hpp"
#include "magmasr/error.hpp"

namespace magmasr {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s)
    if (__builtin_mul_overflow(n, d, &n))
      throw ValueError(detail::cat("shape_numel: the element count of shape ", shape_str(s),
                                   " overflows a 64-bit integer"));
  return n;
}

namespace {
// "Tensor::<method>: the tensor is undefined (default-constructed)": an undefined tensor has no shape to report.
void require_defined(const Tensor& t, const char* method, const char* which = "the tensor") {
  MAGMASR_REQUIRE(t.defined(), ValueError, "Tensor::", method, ": ", which,
                  " is undefined (a default-constructed Tensor has no shape, device or data)");
}
}  // namespace

void check_shape(const Shape& shape) {
  MAGMASR_REQUIRE(!shape.empty() && shape.size() <= size_t(kMaxRank), ValueError,
                  "tensors have rank 1 to ", kMaxRank, ", got rank ", shape.size(), " (shape ", shape_str(shape), ")");
  for (int64_t d : shape)
    MAGMASR_REQUIRE(d >= 1, ValueError, "every dimension must be >= 1, got shape ", shape_str(shape));
  // 2^48 elements (1 PiB of float32) is beyond any machine; above it the int64 byte count could overflow.
  double n = 1.0;
  for (int64_t d : shape) n *= double(d);
  MAGMASR_REQUIRE(n <= double(int64_t(1) << 48), ValueError, "shape ", shape_str(shape), " has ", n,
                  " elements, more than the 2^48 a tensor can hold");
}

// ---------------------------------------------------------------------------------------------- Storage

namespace {

// Host blocks of 1 MiB or more are kept when freed, up to a cap, and handed out again for the same size: a network
// allocates the same feature maps at every call (every tile, frame or training step), and the C library returns
// blocks that large to the system at once (mmap / munmap), so each call paid the kernel's zeroing of fresh pages:
// SRCNN 9-5-5 on a 512x512 picture, `magmasr bench` on 2 cores, 136-141 ms without the cache, 100 ms with 256 MiB,
// 102 with 512, 79-82 with 1024 (2026-12-07). The cap, 512 MiB by default, is MAGMASR_CPU_CACHE_MB (0: off).
// The oldest blocks go first when a new one would not fit. Never destroyed: storages freed during the program's
// exit still find it (and the blocks it holds stay reachable).
class HostCache {
 public:
  static HostCache& get() {
    static HostCache* cache = new HostCache();
    return *cache;
  }

  void* take(size_t bytes) {
    if (bytes < kMin || cap_ == 0) return nullptr;
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it)  // the most recent first
      if (it->first == bytes) {
        void* p = it->second;
        blocks_.erase(std::next(it).base());
        held_ -= bytes, ++hits_;
        return p;
      }
    ++misses_;
    return nullptr;
  }

  // Keeps p (of `bytes`) or frees it.
  void give(void* p, size_t bytes) {
    if (bytes >= kMin && bytes <= cap_) {
      std::deque<std::pair<size_t, void*>> evicted;
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        while (held_ + bytes > cap_) {
          evicted.push_back(blocks_.front());
          held_ -= blocks_.front().first;
          blocks_.pop_front();
        }
        blocks_.emplace_back(bytes, p);
        held_ += bytes;
      }
      for (const auto& e : evicted) std::free(e.second);
      return;
    }
    std::free(p);
  }

  HostCacheStats stats() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return {held_, blocks_.size(), hits_, misses_, cap_};
  }

  void clear() {
    std::deque<std::pair<size_t, void*>> all;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      all.swap(blocks_);
      held_ = 0;
    }
    for (const auto& e : all) std::free(e.second);
  }

 private:
  static constexpr size_t kMin = size_t(1) << 20;
  HostCache() {
    const char* env = std::getenv("MAGMASR_CPU_CACHE_MB");
    if (env && *env) {
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(env, &end, 10);
      if (end && *end == '\0') cap_ = size_t(mb) << 20;
    }
  }
  std::mutex mutex_;
  std::deque<std::pair<size_t, void*>> blocks_;  // oldest first
  size_t held_ = 0, hits_ = 0, misses_ = 0;
  size_t cap_ = size_t(512) << 20;
};

// The size of the host block behind a storage of `bytes`: whole 64-byte lines, at least one.
size_t host_block_bytes(size_t bytes) { return bytes == 0 ? 64 : (bytes + 63) / 64 * 64; }

}  // namespace

HostCacheStats host_cache_stats() { return HostCache::get().stats(); }
void host_cache_clear() { HostCache::get().clear(); }

std::shared_ptr<Storage> Storage::allocate(const Device& device, size_t bytes) {
  check_device(device);
  void* p = nullptr;
  if (device.is_cpu()) {
    const size_t block = host_block_bytes(bytes);
    p = HostCache::get().take(block);
    if (!p) p = std::aligned_alloc(64, block);
    if (!p) throw std::bad_alloc();
  } else {
    p = cuda::alloc(device.index(), bytes);
  }
  return std::shared_ptr<Storage>(new Storage(device, p, bytes, nullptr));
}

std::shared_ptr<Storage> Storage::borrow(const Device& device, void* data, size_t bytes,
                                         std::function<void()> release) {
  if (!release) release = [] {};
  return std::shared_ptr<Storage>(new Storage(device, data, bytes, std::move(release)));
}

Storage::~Storage() {
  if (release_) {
    release_();
  } else if (device_.is_cpu()) {
    HostCache::get().give(data_, host_block_bytes(bytes_));
  } else {
    try {
      cuda::free(device_.index(), data_);
    } catch (...) {
      // A destructor must not throw; the caching allocator reports errors on the next call.
    }
  }
}

// ----------------------------------------------------------------------------------------------- Tensor

Tensor Tensor::empty(const Shape& shape, const Device& device) {
  check_shape(shape);
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.storage_ = Storage::allocate(device, t.nbytes());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, const Device& device) { return full(shape, 0.0f, device); }

Tensor Tensor::full(const Shape& shape, float value, const Device& device) {
  Tensor t = empty(shape, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, const Device& device) {
  check_shape(shape);
  MAGMASR_REQUIRE(int64_t(values.size()) == shape_numel(shape), ValueError, "from_vector: ", values.size(),
                  " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, device);
  if (device.is_cpu())
    std::memcpy(t.data(), values.data(), t.nbytes());
  else
    cuda::copy(t.data(), true, values.data(), false, t.nbytes(), device.index());
  return t;
}

Tensor Tensor::borrow(float* data, const Shape& shape, const Device& device, std::function<void()> release) {
  check_shape(shape);
  MAGMASR_REQUIRE(data != nullptr, ValueError, "borrow: null data pointer");
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.storage_ = Storage::borrow(device, data, t.nbytes(), std::move(release));
  return t;
}

int64_t Tensor::size(int dim) const {
  require_defined(*this, "size");
  const int r = rank();
  const int d = dim < 0 ? dim + r : dim;
  MAGMASR_REQUIRE(d >= 0 && d < r, ValueError, "dimension ", dim, " out of range for a rank-", r, " tensor");
  return shape_[size_t(d)];
}

Device Tensor::device() const {
  require_defined(*this, "device");
  return storage_->device();
}

float* Tensor::data() const {
  require_defined(*this, "data");
  return static_cast<float*>(storage_->data());
}

Tensor Tensor::reshape(const Shape& shape) const {
  require_defined(*this, "reshape");
  check_shape(shape);
  MAGMASR_REQUIRE(shape_numel(shape) == numel_, ValueError, "cannot reshape ", shape_str(shape_), " (", numel_,
                  " elements) to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::to(const Device& device) const {
  require_defined(*this, "to");
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::clone() const {
  require_defined(*this, "clone");
  Tensor t = empty(shape_, device());
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  require_defined(*this, "copy_from", "the destination tensor");
  require_defined(src, "copy_from", "the source tensor");
  MAGMASR_REQUIRE(src.shape_ == shape_, ValueError, "copy_from: shape ", shape_str(src.shape_), " into ",
                  shape_str(shape_));
  if (src.data() == data()) return;
  const Device d = device(), s = src.device();
  if (d.is_cpu() && s.is_cpu()) {
    std::memcpy(data(), src.data(), nbytes());
  } else {
    // Between a host and a GPU, or within / between GPUs: the CUDA runtime resolves unified addresses.
    const int dev = d.is_cuda() ? d.index() : s.index();
    cuda::copy(data(), d.is_cuda(), src.data(), s.is_cuda(), nbytes(), dev);
  }
}

void Tensor::fill_(float value) {
  require_defined(*this, "fill_");
  if (device().is_cpu())
    cpu::fill(numel_, value, data());
  else
    cuda::fill(device().index(), numel_, value, data());
}

std::vector<float> Tensor::to_vector() const {
  require_defined(*this, "to_vector");
  std::vector<float> v(static_cast<size_t>(numel_));
  if (device().is_cpu())
    std::memcpy(v.data(), data(), nbytes());
  else
    cuda::copy(v.data(), false, data(), true, nbytes(), device().index());
  return v;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor(shape=" + shape_str(shape_) + ", device=" + device().str() + ")";
}

}  // namespace magmasr
