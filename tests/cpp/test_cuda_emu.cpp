// The CUDA emulator itself (tests/cuda_emu; built only with -DMAGMASR_CUDA=EMULATE): each fault it is meant to
// catch, planted in a small kernel here, must come back as a launch failure that says what happened, and the
// warp exchange, barriers and built-in variables must behave as CUDA defines them.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

// Launches and returns the launch's error (cleared), with its message.
template <class L, class... A>
cudaError_t launch(const L& l, std::string* message, A... args) {
  l(args...);
  const cudaError_t e = cudaGetLastError();
  if (message != nullptr) *message = e == cudaSuccess ? "" : cudaGetErrorString(e);
  return e;
}

struct DeviceFloats {
  explicit DeviceFloats(size_t n) : n(n) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), cudaSuccess); }
  ~DeviceFloats() { cudaFree(p); }
  std::vector<float> host() const {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  size_t n;
  float* p = nullptr;
};

__global__ void builtins_kernel(float* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[b * (blockDim.x * blockDim.y * blockDim.z) + t] = float(b * 1000 + t);
}

// Each warp sums its lanes' values with shuffles; lane 0 writes the sum.
__global__ void warp_sum_kernel(const float* in, float* out) {
  float v = in[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

// Reverses 64 values through shared memory; with_barrier = 0 leaves out the __syncthreads() between the
// writes and the reads.
__global__ void reverse_kernel(const float* in, float* out, int with_barrier) {
  CUDA_EMU_SHARED(float, tile, [64]);
  tile[threadIdx.x] = in[threadIdx.x];
  if (with_barrier) __syncthreads();
  out[threadIdx.x] = tile[63 - threadIdx.x];
}

// Reads a shared value that no thread of this block wrote. A template, as most of our kernels are (GCC ignores
// a section attribute on a template's static variables: the emulator's poisoning must not depend on one).
template <int N>
__global__ void unwritten_shared_kernel(float* out) {
  CUDA_EMU_SHARED(float, tile, [N]);
  if (blockIdx.x == 0) tile[threadIdx.x] = 1.f;
  __syncthreads();
  out[blockIdx.x * 32 + threadIdx.x] = tile[threadIdx.x];
}

// Threads with an odd index return before the barrier that the others wait at.
__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x % 2 == 1) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void write_past_end_kernel(float* out, int n) { out[n + 100 + threadIdx.x] = 1.f; }

// cp.async (kernels/common.cuh's dev::cp_async_f32): thread t copies in[t] into tile[t] (even t; odd t zero-fills),
// then reads the tile reversed. wait = 1: each thread waits for its copies before the barrier, as it must;
// wait = 0: it waits only after reading; wait = -1: it never waits.
__global__ void cp_async_kernel(const float* in, float* out, int wait) {
  CUDA_EMU_SHARED(float, tile, [64]);
  cuda_emu::cp_async(&tile[threadIdx.x], in + threadIdx.x, 4, threadIdx.x % 2 == 0 ? 4 : 0);
  if (wait == 1) cuda_emu::cp_async_wait_all();
  __syncthreads();
  out[threadIdx.x] = tile[63 - threadIdx.x];
  if (wait == 0) cuda_emu::cp_async_wait_all();
}

// A cp.async whose destination is global memory (cp.async writes shared memory only).
__global__ void cp_async_to_global_kernel(const float* in, float* out) {
  cuda_emu::cp_async(out + threadIdx.x, in + threadIdx.x, 4, 4);
  cuda_emu::cp_async_wait_all();
}

TEST(CudaEmulator, BuiltinVariablesCoverTheGridOnce) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  DeviceFloats out(12 * 24);
  ASSERT_EQ(launch(cuda_emu::launch("builtins", grid, block, 0, nullptr, builtins_kernel), nullptr, out.p), cudaSuccess);
  const std::vector<float> h = out.host();
  for (size_t b = 0; b < 12; ++b)
    for (size_t t = 0; t < 24; ++t) EXPECT_EQ(h[b * 24 + t], float(b * 1000 + t));
}

TEST(CudaEmulator, WarpShuffleSumsEachWarp) {
  DeviceFloats in(96), out(3);
  std::vector<float> h(96);
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(i);
  ASSERT_EQ(cudaMemcpy(in.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(launch(cuda_emu::launch("warp_sum", 1, 96, 0, nullptr, warp_sum_kernel), nullptr, in.p, out.p), cudaSuccess);
  const std::vector<float> s = out.host();
  for (int w = 0; w < 3; ++w) EXPECT_EQ(s[size_t(w)], float(32 * 32 * w + 31 * 32 / 2)) << "warp " << w;
}

TEST(CudaEmulator, AMissingBarrierGivesWrongResults) {
  DeviceFloats in(64), out(64);
  std::vector<float> h(64);
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(i);
  ASSERT_EQ(cudaMemcpy(in.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  for (int with_barrier = 1; with_barrier >= 0; --with_barrier) {
    ASSERT_EQ(launch(cuda_emu::launch("reverse", 1, 64, 0, nullptr, reverse_kernel), nullptr, in.p, out.p, with_barrier),
              cudaSuccess);
    const std::vector<float> r = out.host();
    int right = 0;
    for (int i = 0; i < 64; ++i) right += r[size_t(i)] == float(63 - i);
    if (with_barrier)
      EXPECT_EQ(right, 64);
    else
      EXPECT_LT(right, 64) << "the threads ran in an order that hides the missing __syncthreads()";
  }
}

TEST(CudaEmulator, SharedMemoryStartsAsNaNInEveryBlock) {
  DeviceFloats out(64);
  ASSERT_EQ(launch(cuda_emu::launch("unwritten_shared", 2, 32, 0, nullptr, unwritten_shared_kernel<32>), nullptr, out.p),
            cudaSuccess);
  const std::vector<float> h = out.host();
  for (int i = 0; i < 32; ++i) EXPECT_EQ(h[size_t(i)], 1.f);
  for (int i = 32; i < 64; ++i) EXPECT_TRUE(std::isnan(h[size_t(i)])) << i;
}

TEST(CudaEmulator, FreshDeviceMemoryIsNaN) {
  DeviceFloats buf(10);
  for (float v : buf.host()) EXPECT_TRUE(std::isnan(v));
}

TEST(CudaEmulator, ABarrierSomeThreadsNeverReachIsALaunchFailure) {
  DeviceFloats out(64);
  std::string msg;
  EXPECT_EQ(launch(cuda_emu::launch("divergent_barrier", 1, 64, 0, nullptr, divergent_barrier_kernel), &msg, out.p),
            cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("divergent_barrier"), std::string::npos) << msg;
  EXPECT_NE(msg.find("__syncthreads() reached by 32 of 64 threads"), std::string::npos) << msg;
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // reading the error cleared it
}

TEST(CudaEmulator, AWriteOutsideAnAllocationIsALaunchFailure) {
  DeviceFloats out(64);
  std::string msg;
  EXPECT_EQ(launch(cuda_emu::launch("write_past_end", 1, 4, 0, nullptr, write_past_end_kernel), &msg, out.p, 0),
            cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("write_past_end: a write outside the device allocation of 256 bytes"), std::string::npos) << msg;
  // Reported once, at the launch that made it: the next launch is not blamed.
  EXPECT_EQ(launch(cuda_emu::launch("builtins", 1, 64, 0, nullptr, builtins_kernel), &msg, out.p), cudaSuccess);
}

TEST(CudaEmulator, BadLaunchConfigurationsAreRefused) {
  DeviceFloats out(1);
  std::string msg;
  EXPECT_EQ(launch(cuda_emu::launch("builtins", 1, 2048, 0, nullptr, builtins_kernel), &msg, out.p),
            cudaErrorInvalidConfiguration);
  EXPECT_NE(msg.find("block (2048,1,1)"), std::string::npos) << msg;
  EXPECT_EQ(launch(cuda_emu::launch("builtins", dim3(1, 70000), 32, 0, nullptr, builtins_kernel), &msg, out.p),
            cudaErrorInvalidConfiguration);
  EXPECT_NE(msg.find("grid (1,70000,1)"), std::string::npos) << msg;
}

TEST(CudaEmulator, CopiesOutsideAnAllocationAreRefused) {
  DeviceFloats buf(8);
  std::vector<float> h(16, 0.f);
  EXPECT_EQ(cudaMemcpy(buf.p, h.data(), 16 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(h.data(), h.data() + 8, 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(buf.p, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
}

}  // namespace

TEST(CudaEmulator, AsyncCopiesLandAtTheWaitNotBefore) {
  DeviceFloats in(64), out(64);
  std::vector<float> h(64);
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(i + 1);
  ASSERT_EQ(cudaMemcpy(in.p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(launch(cuda_emu::launch("cp_async", 1, 64, 0, nullptr, cp_async_kernel), nullptr, in.p, out.p, 1), cudaSuccess);
  std::vector<float> r = out.host();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(r[size_t(i)], (63 - i) % 2 == 0 ? float(64 - i) : 0.f) << i;
  // Read before the copying thread's wait: wherever that thread has not waited yet (half the block, in either
  // order), the shared memory still holds its poison.
  ASSERT_EQ(launch(cuda_emu::launch("cp_async", 1, 64, 0, nullptr, cp_async_kernel), nullptr, in.p, out.p, 0), cudaSuccess);
  r = out.host();
  int poisoned = 0;
  for (int i = 0; i < 64; ++i) poisoned += std::isnan(r[size_t(i)]) ? 1 : 0;
  EXPECT_EQ(poisoned, 32);
}

TEST(CudaEmulator, AsyncCopiesNeverWaitedForOrOutsideSharedMemoryAreLaunchFailures) {
  DeviceFloats in(64), out(64);
  std::string msg;
  EXPECT_EQ(launch(cuda_emu::launch("cp_async", 1, 64, 0, nullptr, cp_async_kernel), &msg, in.p, out.p, -1),
            cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("exited with 1 cp.async copies it never waited for"), std::string::npos) << msg;
  EXPECT_EQ(launch(cuda_emu::launch("cp_async_to_global", 1, 32, 0, nullptr, cp_async_to_global_kernel), &msg, in.p,
                   out.p),
            cudaErrorLaunchFailure);
  EXPECT_NE(msg.find("a destination outside the block's shared variables"), std::string::npos) << msg;
}
