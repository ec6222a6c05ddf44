// The CUDA runtime of magmasr: device discovery, the per-device registry that owns the execution contexts
// and the caching allocators, and the memory entry points of backend.hpp.
//
// Caching allocator (one per device). Sizes are rounded up to a multiple of 512 bytes; freed blocks are kept
// in a size-ordered free list (the bins) and handed out again to a request of the same or a slightly smaller
// size (best fit: a cached block is reused when it is at most 2x the request below 1 MiB, at most 1.25x
// the request above), so steady-state training and inference do no cudaMalloc / cudaFree at all. Reuse is
// stream-ordered (see cuda/context.hpp): all users of a device's memory run on its context stream, so a
// block freed while kernels that read it are still queued can be reused at once. When cudaMalloc fails the
// allocator synchronises the device, returns the whole cache to the driver and tries once more.
// empty_cache() synchronises and frees every cached block (and the idle workspace).
#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace magmasr {
namespace cuda {
namespace {

constexpr size_t kRound = 512;
constexpr size_t kSmall = size_t(1) << 20;

size_t round_size(size_t bytes) { return (bytes + kRound - 1) / kRound * kRound; }

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // The caller has made device_ current.
  void* alloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t max_fit = size < kSmall ? 2 * size : size + size / 4;
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= max_fit) {
      void* p = it->second;
      const size_t got = it->first;
      free_.erase(it);
      cached_bytes_ -= got;
      live_.emplace(p, got);
      stats_.allocated_bytes += got;
      stats_.num_cache_hits += 1;
      note_peak();
      return p;
    }
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky; clear it and retry with an empty cache
      release_cached_locked();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw CudaError(::magmasr::detail::cat("CUDA error: cudaMalloc(", size, " bytes) on device ", device_,
                                             " failed with ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                             "); ", stats_.allocated_bytes, " bytes allocated by magmasr"));
    }
    live_.emplace(p, size);
    stats_.allocated_bytes += size;
    stats_.num_device_allocs += 1;
    note_peak();
    return p;
  }

  void free(void* p) {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(p);
    MAGMASR_REQUIRE(it != live_.end(), ValueError, "magmasr.cuda.free: pointer ", p,
                    " was not allocated by magmasr on device ", device_);
    const size_t size = it->second;
    live_.erase(it);
    stats_.allocated_bytes -= size;
    free_.emplace(size, p);
    cached_bytes_ += size;
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    MemoryStats s = stats_;
    s.reserved_bytes = stats_.allocated_bytes + cached_bytes_;
    return s;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached_locked();
  }

 private:
  void note_peak() {
    if (stats_.allocated_bytes > stats_.peak_allocated_bytes) stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }

  // Cached blocks may still be read by queued kernels (stream-ordered reuse): wait for the device first.
  void release_cached_locked() {
    if (free_.empty()) return;
    MAGMASR_CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& kv : free_) MAGMASR_CUDA_CHECK(cudaFree(kv.second));
    free_.clear();
    cached_bytes_ = 0;
  }

  int device_;
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;        // cached blocks by size
  std::unordered_map<void*, size_t> live_;  // handed-out blocks
  size_t cached_bytes_ = 0;
  MemoryStats stats_;
};

struct DeviceState {
  std::once_flag context_once;
  std::unique_ptr<Context> context;
  std::unique_ptr<CachingAllocator> allocator;
};

// Owns every context and allocator. It is created on first use and deliberately never destroyed: at process
// exit the CUDA runtime may already have torn down its state when static destructors run, and destroying
// streams, cuBLAS handles or device memory then crashes or fails; the driver reclaims everything anyway.
class Registry {
 public:
  explicit Registry(int n) : states_(size_t(n)) {
    for (int d = 0; d < n; ++d) states_[size_t(d)].allocator = std::make_unique<CachingAllocator>(d);
  }
  int size() const { return int(states_.size()); }
  DeviceState& state(int device) { return states_[size_t(device)]; }

 private:
  std::vector<DeviceState> states_;
};

Registry& registry() {
  static Registry* r = new Registry(device_count());
  return *r;
}

void check_device(int device) {
  const int n = device_count();
  MAGMASR_REQUIRE(device >= 0 && device < n, DeviceError, "CUDA device ", device, " does not exist (",
                  n == 0 ? std::string("no CUDA device is available") : ::magmasr::detail::cat(n, " device(s)"),
                  ")");
}

CachingAllocator& allocator(int device) {
  check_device(device);
  return *registry().state(device).allocator;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Context

Context::Context(int device) : device_(device) {
  MAGMASR_CUDA_CHECK(cudaSetDevice(device));
  MAGMASR_CUDA_CHECK(cudaGetDeviceProperties(&props_, device));
  sm_count_ = props_.multiProcessorCount > 0 ? props_.multiProcessorCount : 1;
  MAGMASR_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    MAGMASR_CUBLAS_CHECK(cublasCreate(&cublas_));
    MAGMASR_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // fp32 stays fp32: no TF32 tensor-core math, no reduced-precision reductions.
    MAGMASR_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_PEDANTIC_MATH));
    MAGMASR_CUBLAS_CHECK(cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));
  } catch (...) {
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
    throw;
  }
}

Context::~Context() {
  // Destructors do not throw: errors here are ignored (the handles are gone either way).
  if (ws_ != nullptr) {
    try {
      allocator(device_).free(ws_);
    } catch (...) {
    }
  }
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void* Context::workspace(size_t bytes) {
  if (bytes <= ws_bytes_ && ws_ != nullptr) return ws_;
  // Grow by at least 1.5x so that a sequence of growing requests does not reallocate every time.
  const size_t grown = ws_bytes_ + ws_bytes_ / 2;
  size_t want = bytes < grown ? grown : bytes;
  want = round_size(want < (size_t(1) << 20) ? (size_t(1) << 20) : want);
  CachingAllocator& a = allocator(device_);
  if (ws_ != nullptr) {
    a.free(ws_);  // stream-ordered: kernels still using it run before any later user
    ws_ = nullptr;
    ws_bytes_ = 0;
  }
  ws_ = a.alloc(want);
  ws_bytes_ = want;
  return ws_;
}

void Context::release_workspace() {
  if (ws_ == nullptr) return;
  allocator(device_).free(ws_);
  ws_ = nullptr;
  ws_bytes_ = 0;
}

ConvAlgo Context::cached_algo(const ConvKey& key) const {
  std::lock_guard<std::mutex> lock(algo_mutex_);
  auto it = algo_cache_.find(key);
  return it == algo_cache_.end() ? ConvAlgo::Auto : it->second;
}

void Context::cache_algo(const ConvKey& key, ConvAlgo algo) {
  std::lock_guard<std::mutex> lock(algo_mutex_);
  algo_cache_[key] = algo;
}

Context& context(int device) {
  check_device(device);
  DeviceState& s = registry().state(device);
  std::call_once(s.context_once, [&] { s.context = std::make_unique<Context>(device); });
  MAGMASR_CUDA_CHECK(cudaSetDevice(device));
  return *s.context;
}

// ---------------------------------------------------------------------------------------------------------
// backend.hpp: runtime and memory

bool compiled() { return true; }

int device_count() {
  static const int n = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // no driver / no device: clear the error, report zero devices
      return 0;
    }
    return count;
  }();
  return n;
}

std::string device_name(int device) {
  check_device(device);
  cudaDeviceProp p{};
  MAGMASR_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return std::string(p.name);
}

void* alloc(int device, size_t bytes) {
  CachingAllocator& a = allocator(device);
  context(device);  // makes the device current for cudaMalloc
  return a.alloc(bytes);
}

void free(int device, void* ptr) {
  if (ptr == nullptr) return;
  allocator(device).free(ptr);
}

MemoryStats memory_stats(int device) { return allocator(device).stats(); }

void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes) {
  context(device);  // makes the device current
  MAGMASR_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void empty_cache(int device) {
  Context& c = context(device);
  const auto lock = c.lock_shared_state();
  c.release_workspace();
  allocator(device).empty_cache();
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes, int device) {
  if (bytes == 0) return;
  if (!dst_on_device && !src_on_device) {
    std::memcpy(dst, src, bytes);
    return;
  }
  Context& c = context(device);
  const cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                            : cudaMemcpyDeviceToHost;
  MAGMASR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, c.stream()));
  if (!dst_on_device || !src_on_device) MAGMASR_CUDA_CHECK(cudaStreamSynchronize(c.stream()));
}

void synchronize(int device) { MAGMASR_CUDA_CHECK(cudaStreamSynchronize(context(device).stream())); }

void* stream(int device) { return static_cast<void*>(context(device).stream()); }

}  // namespace cuda
}  // namespace magmasr
