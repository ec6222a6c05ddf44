// Dense float32 tensors of rank 1 to 5, contiguous (row-major), on one Device.
//
// A Tensor is a handle: copying it shares the storage (like a shared_ptr), it never copies the data.
// Data moves only when asked: `to(device)`, `clone()`, `copy_from()`. Storage is released with the last
// handle (RAII); storage wrapped from outside (NumPy, DLPack) runs the owner's release callback instead.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "magmasr/device.hpp"

namespace magmasr {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[1, 64, 33, 33]"
int64_t shape_numel(const Shape& s);

constexpr int kMaxRank = 5;

/// The host's block cache: freed host blocks of 1 MiB or more are kept (up to `cap` bytes: 512 MiB, or the
/// environment's MAGMASR_CPU_CACHE_MB, 0 turning it off; the oldest go first) and reused for the same size, so a
/// network called again and again (tiles, frames, training steps) does not pay for fresh pages each time (a
/// 512x512 SRCNN inference on 2 cores 1.35x faster, 1.7x with 1024 MiB).
struct HostCacheStats {
  size_t held_bytes = 0, blocks = 0, hits = 0, misses = 0, cap = 0;
};
HostCacheStats host_cache_stats();
/// Frees every block the cache holds (blocks in use are not affected).
void host_cache_clear();

/// A block of memory on a device, owned (allocated here) or borrowed (with a release callback).
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(const Device& device, size_t bytes);
  static std::shared_ptr<Storage> borrow(const Device& device, void* data, size_t bytes,
                                         std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  const Device& device() const { return device_; }
  bool owned() const { return !release_; }

 private:
  Storage(const Device& d, void* p, size_t n, std::function<void()> r)
      : device_(d), data_(p), bytes_(n), release_(std::move(r)) {}
  Device device_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::function<void()> release_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  /// Uninitialised tensor (ValueError for rank outside 1..5 or a non-positive dimension).
  static Tensor empty(const Shape& shape, const Device& device = Device::cpu());
  static Tensor zeros(const Shape& shape, const Device& device = Device::cpu());
  static Tensor full(const Shape& shape, float value, const Device& device = Device::cpu());
  /// Host data copied into a new tensor.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            const Device& device = Device::cpu());
  /// Zero-copy view of memory owned elsewhere; `release` runs when the last handle goes.
  static Tensor borrow(float* data, const Shape& shape, const Device& device, std::function<void()> release);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t size(int dim) const;  // negative dims count from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * sizeof(float); }
  Device device() const;
  float* data() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  /// Same data seen with another shape of equal numel (no copy).
  Tensor reshape(const Shape& shape) const;
  /// This tensor if already on `device`, else a copy there.
  Tensor to(const Device& device) const;
  /// A deep copy on the same device.
  Tensor clone() const;
  /// Copies `src` (same shape, any device) into this tensor's storage.
  void copy_from(const Tensor& src);
  void fill_(float value);
  /// The values, copied to the host.
  std::vector<float> to_vector() const;
  std::string str() const;  // "Tensor(shape=[1, 3], device=cpu)"

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  int64_t numel_ = 0;
};

/// Throws ValueError unless `shape` is a valid tensor shape (rank 1..5, every dimension >= 1).
void check_shape(const Shape& shape);

}  // namespace magmasr
