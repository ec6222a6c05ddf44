// Element-wise kernels of the CUDA backend: ReLU forward / backward, add, scale, fill, pixel shuffle.
//
// ew_kernel (relu, relu_backward, add, scale, fill, and mse_grad in loss.cu)
//   Strategy: grid-stride loop, 256 threads per block, grid capped at 32 blocks per SM. When every pointer
//   is 16-byte aligned each thread moves float4s (one 128-bit load per input and one store per 4 elements)
//   and a scalar loop finishes the n % 4 tail; otherwise the scalar loop does everything. Inputs may alias
//   the output (each element is read before it is written, by the same thread).
//   Speed: bandwidth bound by design; not yet measured on a GPU.
//
// pixel_shuffle_forward_kernel / pixel_shuffle_backward_kernel
//   Strategy: one thread per output element (grid-stride), so the stores are coalesced and the loads are
//   gathers with stride r in the fast dimension (served from L1/L2).
//   Speed: not yet measured on a GPU.
#include "backend.hpp"
#include "common.cuh"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "elementwise.cuh"

namespace magmasr {
namespace cuda {

namespace {

struct ReluOp {
  __device__ float operator()(float x, float, float) const { return x <= 0.f ? 0.f : x; }
};
struct ReluBackwardOp {
  __device__ float operator()(float y, float dy, float) const { return y <= 0.f ? 0.f : dy; }
};
struct AddOp {
  __device__ float operator()(float a, float b, float) const { return a + b; }
};
struct ScaleOp {
  float alpha;
  __device__ float operator()(float x, float, float) const { return alpha * x; }
};
struct FillOp {
  float value;
  __device__ float operator()(float, float, float) const { return value; }
};

__global__ void pixel_shuffle_forward_kernel(int64_t total, int C, int H, int W, int r, const float* __restrict__ x,
                                             float* __restrict__ y) {
  const int64_t Wr = int64_t(W) * r, Hr = int64_t(H) * r;
  for (int64_t i = dev::global_tid(); i < total; i += dev::grid_stride()) {
    // y[n, c, hh, ww] with hh = h*r + a, ww = w*r + b  <-  x[n, c*r*r + a*r + b, h, w]
    const int64_t ww = i % Wr;
    int64_t t = i / Wr;
    const int64_t hh = t % Hr;
    t /= Hr;  // t = n*C + c
    const int64_t h = hh / r, a = hh % r, w = ww / r, b = ww % r;
    const int64_t c = t % C, n = t / C;
    const int64_t src = (((n * C + c) * r * r + a * r + b) * H + h) * W + w;
    y[i] = x[src];
  }
}

__global__ void pixel_shuffle_backward_kernel(int64_t total, int C, int H, int W, int r,
                                              const float* __restrict__ dy, float* __restrict__ dx) {
  const int64_t Wr = int64_t(W) * r, Hr = int64_t(H) * r;
  const int rr = r * r;
  for (int64_t i = dev::global_tid(); i < total; i += dev::grid_stride()) {
    // dx[n, cc, h, w] with cc = c*r*r + a*r + b  <-  dy[n, c, h*r + a, w*r + b]
    const int64_t w = i % W;
    int64_t t = i / W;
    const int64_t h = t % H;
    t /= H;
    const int64_t cc = t % (int64_t(C) * rr), n = t / (int64_t(C) * rr);
    const int64_t c = cc / rr, a = (cc % rr) / r, b = cc % r;
    dx[i] = dy[((n * C + c) * Hr + h * r + a) * Wr + w * r + b];
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

void relu_forward(int device, int64_t n, const float* x, float* y) {
  launch_elementwise<1>(context(device), n, x, nullptr, nullptr, y, ReluOp{});
}

void relu_backward(int device, int64_t n, const float* y, const float* dy, float* dx) {
  launch_elementwise<2>(context(device), n, y, dy, nullptr, dx, ReluBackwardOp{});
}

void add(int device, int64_t n, const float* a, const float* b, float* y) {
  launch_elementwise<2>(context(device), n, a, b, nullptr, y, AddOp{});
}

void scale(int device, int64_t n, float alpha, const float* x, float* y) {
  launch_elementwise<1>(context(device), n, x, nullptr, nullptr, y, ScaleOp{alpha});
}

void fill(int device, int64_t n, float value, float* y) {
  launch_elementwise<0>(context(device), n, nullptr, nullptr, nullptr, y, FillOp{value});
}

void pixel_shuffle_forward(int device, int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* x,
                           float* y) {
  Context& ctx = context(device);
  const int64_t total = N * C * H * W * r * r;
  if (total <= 0) return;
  MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), pixel_shuffle_forward_kernel)(total, int(C), int(H), int(W),
                                                                                  int(r), x, y);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

void pixel_shuffle_backward(int device, int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* dy,
                            float* dx) {
  Context& ctx = context(device);
  const int64_t total = N * C * H * W * r * r;
  if (total <= 0) return;
  MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), pixel_shuffle_backward_kernel)(total, int(C), int(H), int(W),
                                                                                   int(r), dy, dx);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace magmasr
