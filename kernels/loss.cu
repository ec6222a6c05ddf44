// Loss kernels of the CUDA backend: mean squared error and its gradient.
//
// mse_partial_kernel + mse_final_kernel (mse_loss)
//   Strategy: a two-stage deterministic reduction. Stage 1: at most 4 blocks per SM of 256 threads walk the
//   input with a grid-stride loop (float4 loads when both inputs are 16-byte aligned), each thread summing
//   (a-b)^2 in double; the block reduces with warp shuffles and one shared-memory step and writes one double
//   partial. Stage 2: one block sums the partials in a fixed order. The sum is copied to the host (the only
//   synchronising op of the backend) and divided by n there. fp64 accumulation makes the result independent
//   of the launch configuration to ~1e-16 and matches the CPU reference, which also accumulates in double.
//   Speed: bandwidth bound (8 bytes per element); not yet measured on a GPU.
//
// mse_grad: the element-wise kernel of elementwise.cuh with g = scale * 2 * (a - b) / n.
#include "backend.hpp"
#include "common.cuh"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "elementwise.cuh"

namespace magmasr {
namespace cuda {

namespace {

template <bool VEC>
__global__ void __launch_bounds__(kBlock) mse_partial_kernel(int64_t n, const float* __restrict__ a,
                                                             const float* __restrict__ b, double* __restrict__ partial) {
  double s = 0.0;
  const int64_t tid = dev::global_tid(), stride = dev::grid_stride();
  int64_t start = 0;
  if (VEC) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      const float4 va = reinterpret_cast<const float4*>(a)[i];
      const float4 vb = reinterpret_cast<const float4*>(b)[i];
      const double dx = double(va.x) - double(vb.x), dy = double(va.y) - double(vb.y);
      const double dz = double(va.z) - double(vb.z), dw = double(va.w) - double(vb.w);
      s += dx * dx + dy * dy + dz * dz + dw * dw;
    }
    start = 4 * n4;
  }
  for (int64_t i = start + tid; i < n; i += stride) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  s = dev::block_sum<kBlock>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kBlock) mse_final_kernel(int count, const double* __restrict__ partial,
                                                           double* __restrict__ out) {
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = dev::block_sum<kBlock>(s);
  if (threadIdx.x == 0) *out = s;
}

struct MseGradOp {
  float c;  // 2 * scale / n, as cpu::mse_grad computes it
  __device__ float operator()(float a, float b, float) const { return c * (a - b); }
};

}  // namespace

double mse_loss(int device, int64_t n, const float* a, const float* b) {
  if (n <= 0) return 0.0;
  Context& ctx = context(device);
  const auto lock = ctx.lock_shared_state();
  const bool vec = dev::aligned16(a, b);
  const int64_t work = vec ? (n + 3) / 4 : n;
  int64_t blocks = (work + kBlock - 1) / kBlock;
  const int64_t cap = int64_t(ctx.sm_count()) * 4;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  double* partial = static_cast<double*>(ctx.workspace(size_t(blocks + 1) * sizeof(double)));
  double* out = partial + blocks;
  if (vec) {
    MAGMASR_LAUNCH(unsigned(blocks), kBlock, 0, ctx.stream(), mse_partial_kernel<true>)(n, a, b, partial);
  } else {
    MAGMASR_LAUNCH(unsigned(blocks), kBlock, 0, ctx.stream(), mse_partial_kernel<false>)(n, a, b, partial);
  }
  MAGMASR_CUDA_LAUNCH_CHECK();
  MAGMASR_LAUNCH(1, kBlock, 0, ctx.stream(), mse_final_kernel)(int(blocks), partial, out);
  MAGMASR_CUDA_LAUNCH_CHECK();
  double sum = 0.0;
  MAGMASR_CUDA_CHECK(cudaMemcpyAsync(&sum, out, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream()));
  MAGMASR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  return sum / double(n);
}

void mse_grad(int device, int64_t n, const float* a, const float* b, float scale, float* g) {
  launch_elementwise<2>(context(device), n, a, b, nullptr, g, MseGradOp{2.0f * scale / float(n)});
}

}  // namespace cuda
}  // namespace magmasr
