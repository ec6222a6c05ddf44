// magmasr's CUDA emulator, device side: what a kernel in kernels/*.cu may use, defined for a host C++ compiler.
// Included by the emulator's cuda_runtime.h; see that header for what the emulator is for and what it is not.
//
// A launch runs the grid's blocks one after another; the threads of a block are fibers (ucontext), each with its
// own stack, switched only where CUDA threads must wait for each other: __syncthreads() (every thread of the
// block) and the warp-synchronous exchanges (__shfl_down_sync: every lane of the mask). Between two such points a
// fiber runs alone, and the emulator runs the fibers in ascending thread order in one phase and in descending
// order in the next, so a read of shared memory that another thread writes without a barrier in between sees
// the wrong value in one order or the other. Shared memory (CUDA_EMU_SHARED) is filled with NaN at the start of
// every block, as is fresh device memory, so a read of a value no thread wrote shows up as NaN. A cp.async copy
// lands at its thread's cp.async.wait_all, not before. A __syncthreads() that some thread of the block never reaches, a lane that
// leaves a warp exchange, and a launch configuration the hardware rejects are launch failures with a message.
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

struct __attribute__((aligned(8))) float2 {
  float x, y;
};

inline float2 make_float2(float x, float y) { return float2{x, y}; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Shared memory is declared with CUDA_EMU_SHARED(type, name, dimensions) (MAGMASR_SHARED in kernels/common.cuh):
// static storage (the blocks of a grid run one at a time, and one kernel runs at a time) that the first thread of
// each block to reach the declaration fills with NaN. A plain __shared__ would not be poisoned: it is an error.
#define __shared__ _Pragma("GCC error \"declare shared memory with MAGMASR_SHARED(type, name, dims) (kernels/common.cuh)\"")
#define CUDA_EMU_SHARED(T, name, dims)          \
  static __attribute__((aligned(16))) T name dims; \
  ::cuda_emu::shared_declared(name, sizeof(name))

struct CUstream_st;

namespace cuda_emu {

/// The running thread's built-in variables (one kernel runs at a time; the scheduler sets them at each switch).
extern uint3 g_thread_idx, g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

/// A shared variable's declaration: fills it with NaN bytes the first time a thread of the block reaches it.
void shared_declared(void* storage, size_t bytes);
/// __syncthreads(): waits until every thread of the block has arrived.
void syncthreads();
/// cp.async (dev::cp_async_f32 in kernels/common.cuh): bytes from src to the shared dst, of which src_bytes are
/// read and the rest zero-filled; done by the issuing thread's cp_async_wait_all(), not before.
void cp_async(void* dst, const void* src, size_t bytes, size_t src_bytes);
void cp_async_wait_all();
/// __shfl_down_sync on 64 bits: the value of lane + delta within the width-lane segment, or the caller's own.
uint64_t shfl_down(uint64_t bits, unsigned mask, unsigned delta, int width);
/// Runs body once per thread of the grid; a fault is reported through cudaGetLastError().
void run_kernel(const char* name, dim3 grid, dim3 block, size_t dynamic_shared_bytes, CUstream_st* stream,
                const std::function<void()>& body);

/// The launch kernel<<<grid, block, shared, stream>>>(args...): launch(...)(args...).
template <class... P>
struct Launch {
  const char* name;
  dim3 grid, block;
  size_t shared;
  CUstream_st* stream;
  void (*kernel)(P...);

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    // As CUDA does, the arguments are converted and copied at the launch; each thread gets its own copy.
    const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    void (*k)(P...) = kernel;
    run_kernel(name, grid, block, shared, stream, [&params, k] { std::apply(k, params); });
  }
};

template <class... P>
Launch<P...> launch(const char* name, dim3 grid, dim3 block, size_t shared, CUstream_st* stream, void (*kernel)(P...)) {
  return Launch<P...>{name, grid, block, shared, stream, kernel};
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::g_thread_idx)
#define blockIdx (::cuda_emu::g_block_idx)
#define blockDim (::cuda_emu::g_block_dim)
#define gridDim (::cuda_emu::g_grid_dim)

inline void __syncthreads() { ::cuda_emu::syncthreads(); }

template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "__shfl_down_sync of a type over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = ::cuda_emu::shfl_down(bits, mask, delta, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }

// CUDA's device min / max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
