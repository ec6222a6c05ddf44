// The execution context of one CUDA device, internal to the CUDA backend.
//
// A Context bundles what every op on a device needs: a non-blocking stream (every kernel, cuBLAS call
// and copy of the device runs on it, so work on a device is totally ordered), a cuBLAS handle bound to
// that stream in pedantic fp32 math (no TF32), a growable workspace, the device's properties and the
// convolution algorithm cache of ConvAlgo::Auto. Contexts are created lazily, one per device, and owned
// by the registry in runtime.cpp; nothing else holds CUDA handles.
//
// Memory comes from the device's caching allocator (magmasr::cuda::alloc / free). Because every user of
// a device's memory is ordered on the one context stream, a block freed on the host while kernels that use
// it are still queued can be handed to the next allocation without synchronising: the next user's kernels
// run after them on the same stream (the "stream-ordered" contract). Work on other streams must not touch
// this memory.
//
// Thread safety: creating contexts and the allocator are thread safe. The workspace, the cuBLAS handle and
// the Auto timing are shared by the ops of a device: an op that uses them holds lock_shared_state() for its
// whole host part (Python releases the GIL around ops, so two threads may run ops on one device at once).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include "backend.hpp"
#include "cuda/check.hpp"

namespace magmasr {
namespace cuda {

/// Which pass of a convolution a cached algorithm choice belongs to.
enum class ConvDir : int { Forward = 0, BackwardData = 1, BackwardWeight = 2 };

/// Everything that identifies a convolution problem for the algorithm cache.
using ConvKey = std::array<int64_t, 16>;
// direct_only: the choice of ConvAlgo::AutoDirect (among the direct kernels), cached apart from Auto's.
ConvKey make_conv_key(ConvDir dir, const ConvGeom& g, bool with_bias, bool direct_only = false);

class Context {
 public:
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  int sm_count() const { return sm_count_; }
  const cudaDeviceProp& props() const { return props_; }

  /// A device buffer of at least `bytes` bytes (256-byte aligned), valid until the next call. Growing it
  /// hands the old buffer back to the caching allocator, which is safe because every user is ordered on
  /// stream(). One op takes the workspace once and partitions it.
  void* workspace(size_t bytes);
  size_t workspace_bytes() const { return ws_bytes_; }
  /// Returns the workspace to the caching allocator (empty_cache calls this before freeing the cache).
  void release_workspace();

  /// Held by an op for as long as it uses the workspace or the cuBLAS handle (recursive: an op may call another).
  std::unique_lock<std::recursive_mutex> lock_shared_state() {
    return std::unique_lock<std::recursive_mutex>(ops_mutex_);
  }

  /// The algorithm ConvAlgo::Auto chose for a problem, if it has been timed (Gemm or Direct), else Auto.
  ConvAlgo cached_algo(const ConvKey& key) const;
  void cache_algo(const ConvKey& key, ConvAlgo algo);

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudaDeviceProp props_{};
  int sm_count_ = 1;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  std::recursive_mutex ops_mutex_;
  mutable std::mutex algo_mutex_;
  std::map<ConvKey, ConvAlgo> algo_cache_;
};

/// The context of `device` (created on first use); makes `device` current on the calling thread.
/// Throws DeviceError for a device that does not exist.
Context& context(int device);

/// Blocks of at most this many threads, as all kernels of the backend use.
constexpr int kBlock = 256;

/// Grid size for a grid-stride loop over n items: enough blocks to fill the device a few times over.
inline unsigned grid_for(int64_t n, const Context& ctx, int block = kBlock) {
  const int64_t want = (n + block - 1) / block;
  const int64_t cap = int64_t(ctx.sm_count()) * 32;
  const int64_t g = want < cap ? want : cap;
  return unsigned(g < 1 ? 1 : g);
}

}  // namespace cuda
}  // namespace magmasr
