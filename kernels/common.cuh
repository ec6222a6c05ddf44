// Small device helpers shared by the kernels of the CUDA backend.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// A kernel launch: MAGMASR_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...) is
// kernel<<<grid, block, shared_bytes, stream>>>(args...) (the kernel last, so that a template-id's commas need no
// parentheses). In a -DMAGMASR_CUDA=EMULATE build (tests/cuda_emu) the kernel runs on the CPU emulator instead.
#ifdef MAGMASR_CUDA_EMULATED
#define MAGMASR_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::cuda_emu::launch(#__VA_ARGS__, grid, block, shared_bytes, stream, __VA_ARGS__)
#else
#define MAGMASR_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#endif

// A shared-memory array, 16-byte aligned (float4 accesses): MAGMASR_SHARED(float, tile, [32][33]); is
// __shared__ __align__(16) float tile[32][33]; (the emulator also fills it with NaN at the start of each block).
#ifdef MAGMASR_CUDA_EMULATED
#define MAGMASR_SHARED(T, name, dims) CUDA_EMU_SHARED(T, name, dims)
#else
#define MAGMASR_SHARED(T, name, dims) __shared__ __align__(16) T name dims
#endif

namespace magmasr {
namespace cuda {
namespace dev {

/// Index of this thread in a 1-D grid and the grid-stride step, in 64 bits.
__device__ __forceinline__ int64_t global_tid() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(blockDim.x) * gridDim.x; }

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/// An asynchronous copy of one float from global to shared memory (cp.async, sm_80 and later): *smem = valid ?
/// *gmem : 0, where gmem is not read when !valid. The copy is complete for this thread after its
/// cp_async_wait_all(), and visible to the other threads of the block after a __syncthreads() that follows that
/// wait. On older architectures it is a plain load and store (complete at once, which the contract allows).
__device__ __forceinline__ void cp_async_f32(float* smem, const float* gmem, bool valid) {
#if defined(MAGMASR_CUDA_EMULATED)
  ::cuda_emu::cp_async(smem, gmem, 4, valid ? 4 : 0);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 4 : 0) : "memory");
#else
  *smem = valid ? __ldg(gmem) : 0.f;
#endif
}

/// Waits until every cp_async_f32 this thread issued is complete (cp.async.wait_all).
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(MAGMASR_CUDA_EMULATED)
  ::cuda_emu::cp_async_wait_all();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

/// True when every pointer is 16-byte aligned, so float4 accesses are legal.
inline bool aligned16(const void* a, const void* b = nullptr, const void* c = nullptr, const void* d = nullptr) {
  return ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) | reinterpret_cast<uintptr_t>(c) |
           reinterpret_cast<uintptr_t>(d)) &
          15u) == 0;
}

/// Sum of a double over the warp (all 32 lanes must take part).
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

/// Sum of a double over a block of kBlockThreads threads (a multiple of 32); the result is valid in thread 0.
/// Every thread of the block must call it.
template <int kBlockThreads>
__device__ __forceinline__ double block_sum(double v) {
  static_assert(kBlockThreads % 32 == 0 && kBlockThreads <= 1024, "block size");
  MAGMASR_SHARED(double, partial, [kBlockThreads / 32]);
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = 0.0;
  if (warp == 0) {
    if (lane < kBlockThreads / 32) v = partial[lane];
    v = warp_sum(v);
  }
  __syncthreads();  // partial may be reused by a following call
  return v;
}

}  // namespace dev
}  // namespace cuda
}  // namespace magmasr
