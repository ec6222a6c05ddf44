// The kernel layer: raw-pointer entry points of every op, one namespace per backend.
//
// magmasr::cpu  — cpp/src/cpu/*.cpp, the reference implementation (OpenMP + OpenBLAS).
// magmasr::cuda — kernels/*.cu and cpp/src/cuda/*.cpp in a CUDA build, cpp/src/cuda_stub.cpp otherwise
//                 (the stub answers device_count() == 0 and throws on everything else).
//
// Both namespaces declare the same ops with the same argument order, so an op's CPU and CUDA versions
// are found by name alone. The tensor-level dispatch (cpp/src/ops.cpp) checks shapes and devices; the
// functions here trust their arguments. Every CUDA function runs on the stream of the device's execution
// context and returns without synchronising unless it says otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "magmasr/geometry.hpp"
#include "magmasr/optim_params.hpp"

namespace magmasr {

// ConvAlgo (geometry.hpp) picks the CUDA convolution strategy; the CPU picks its own (cpu/conv.cpp).

namespace cpu {

// y = conv(x, w) + b, then max(y, 0) if relu. b may be null.
void conv_forward(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu);
// Inference forward of a layer with 3x3 or 5x5 kernels in space by Winograd's minimal filtering, F(6x6, 3x3) or
// F(4x4, 5x5) (cpu/conv.cpp; ConvAlgo::Winograd): 2-D, or 3-D with the depth taps as more input channels of each
// 2-D product. 2.3x / 4x fewer multiplications than the direct sums, within a few 1e-6 of them relative to the
// output's scale, but an output's bits depend on its place in its tile of m x m outputs (m = winograd_tile(k, Cin,
// Cout), counted from the output's first row and column). False, and nothing done, for another geometry
// (winograd_tile 0, or kH != kW).
bool conv_forward_winograd(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu);
// The strategy of forward and backward-weight for layers of several output channels: "taps" (the products read
// the padded input in place), "columns" (a column matrix per block) or "auto" (taps unless the rows are
// extremely wide). Both forward strategies give the same bits; backward-weight sums in other groups.
// For tests and benchmarks; false for another name. Not thread-safe against running convolutions.
bool set_conv_strategy(const std::string& which);
// dx = d(loss)/dx given dy (overwrites dx).
// winograd (ConvAlgo::Winograd): without replicated borders, where the adjoint is the forward convolution of dy
// with the flipped, transposed weights, that convolution by conv_forward_winograd when it applies.
void conv_backward_data(const ConvGeom& g, const float* dy, const float* w, float* dx, bool winograd = false);
// dw = d(loss)/dw, db = d(loss)/db (overwrite; db may be null). winograd (ConvAlgo::Winograd): dw by
// conv_backward_weight_winograd where it applies.
void conv_backward_weight(const ConvGeom& g, const float* x, const float* dy, float* dw, float* db,
                          bool winograd = false);
// The weight gradient of a layer that conv_forward_winograd computes, by the adjoint of its transforms: dW = G^T
// (sum over tiles of (A dY A^T) . (B^T d B)) G, the sums over tiles 64 products per task (gemm_narrow), the tasks
// in fixed groups whose partial gradients are added in order (the result does not depend on the thread count).
// Within a few 1e-6 of the direct sums relative to the gradient's scale. False, and nothing done, for another
// geometry.
bool conv_backward_weight_winograd(const ConvGeom& g, const float* x, const float* dy, float* dw);

void relu_forward(int64_t n, const float* x, float* y);                     // y = max(x, 0); may alias
void relu_backward(int64_t n, const float* y, const float* dy, float* dx);  // dx = dy * (y > 0); may alias
// Mean of (a - b)^2 over n elements, accumulated in double.
double mse_loss(int64_t n, const float* a, const float* b);
// g = scale * 2 * (a - b) / n: the gradient of scale * mse_loss with respect to a.
void mse_grad(int64_t n, const float* a, const float* b, float scale, float* g);
// Depth-to-space as PyTorch's PixelShuffle: x [N, C*r*r, H, W] -> y [N, C, H*r, W*r],
// y[n, c, h*r + i, w*r + j] = x[n, c*r*r + i*r + j, h, w].
void pixel_shuffle_forward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* x, float* y);
void pixel_shuffle_backward(int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* dy, float* dx);
void add(int64_t n, const float* a, const float* b, float* y);  // y = a + b; may alias
void scale(int64_t n, float alpha, const float* x, float* y);   // y = alpha * x; may alias
void fill(int64_t n, float value, float* y);
// One optimizer step on n parameters (see optim_params.hpp for the exact update rules).
void sgd_update(int64_t n, float* p, const float* g, float* velocity, const SgdParams& hp);
void adam_update(int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& hp, int64_t step);

// Separable 1-D resampling along the middle axis of x [outer, in_len, inner] (MATLAB imresize's per-axis
// pass): y[o, j, i] = sum_t weights[j, t] * x[o, indices[j, t], i] for y [outer, out_len, inner], with
// weights and indices [out_len, taps] and every index already in [0, in_len). The sum is accumulated in
// double, in ascending t, each product rounded before it is added (no FMA), as NumPy and MATLAB do. With
// round_uint8 the result is then rounded half away from zero and clamped to [0, 255] (MATLAB's uint8 mode).
// The weights are double because MATLAB's are: float weights break the exact x.5 ties of upscaling by
// non-dyadic factors (0.2% of the uint8 outputs differ at x2.7). x and y must not alias.
void resample_axis(int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps, const double* weights,
                   const int32_t* indices, const float* x, float* y, bool round_uint8);

}  // namespace cpu

namespace cuda {

struct MemoryStats {
  size_t allocated_bytes = 0;  // held by live tensors
  size_t reserved_bytes = 0;   // held by the caching allocator (allocated + cached)
  size_t peak_allocated_bytes = 0;
  size_t num_device_allocs = 0;  // cudaMalloc calls so far
  size_t num_cache_hits = 0;
};

// ---- runtime: never throws when there is no GPU or no driver ----
bool compiled();        // true in a CUDA build
int device_count();     // 0 when there is no driver, no GPU or no CUDA build
std::string device_name(int device);

// ---- memory (caching allocator per device) ----
void* alloc(int device, size_t bytes);
void free(int device, void* ptr);
MemoryStats memory_stats(int device);
// Free and total device memory as the driver sees it (cudaMemGetInfo); the cache counts as used.
void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes);
void empty_cache(int device);
// Copies between host and device memory (or device and device); kinds inferred from the flags.
// Blocks until the copy is complete when either side is host memory.
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes, int device);
void synchronize(int device);
void* stream(int device);  // the context's cudaStream_t, as void*

// ---- ops: same contracts as magmasr::cpu, pointers are device memory of `device` ----
void conv_forward(int device, const ConvGeom& g, const float* x, const float* w, const float* b, float* y, bool relu,
                  ConvAlgo algo);
void conv_backward_data(int device, const ConvGeom& g, const float* dy, const float* w, float* dx, ConvAlgo algo);
void conv_backward_weight(int device, const ConvGeom& g, const float* x, const float* dy, float* dw, float* db,
                          ConvAlgo algo);
void relu_forward(int device, int64_t n, const float* x, float* y);
void relu_backward(int device, int64_t n, const float* y, const float* dy, float* dx);
double mse_loss(int device, int64_t n, const float* a, const float* b);  // synchronises
void mse_grad(int device, int64_t n, const float* a, const float* b, float scale, float* g);
void pixel_shuffle_forward(int device, int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* x,
                           float* y);
void pixel_shuffle_backward(int device, int64_t N, int64_t C, int64_t H, int64_t W, int64_t r, const float* dy,
                            float* dx);
void add(int device, int64_t n, const float* a, const float* b, float* y);
void scale(int device, int64_t n, float alpha, const float* x, float* y);
void fill(int device, int64_t n, float value, float* y);
void sgd_update(int device, int64_t n, float* p, const float* g, float* velocity, const SgdParams& hp);
void adam_update(int device, int64_t n, float* p, const float* g, float* m, float* v, const AdamParams& hp,
                 int64_t step);
// weights and indices are device memory too (the tables stay on the device between calls).
void resample_axis(int device, int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps,
                   const double* weights, const int32_t* indices, const float* x, float* y, bool round_uint8);

}  // namespace cuda
}  // namespace magmasr
