// Separable 1-D resampling of the CUDA backend (one pass of MATLAB's imresize); reference: cpp/src/cpu/resize.cpp.
//
// resample_axis_kernel<kInner1>
//   Strategy: one thread per output element y[o, j, i] of y [outer, out_len, inner] (grid-stride, i fastest),
//   so the stores are coalesced. When inner > 1 (e.g. the H pass of [N, C, H, W]) the loads x[o, idx[j, t], i]
//   of a warp are contiguous as well, and the row j of the weight/index table is the same for the whole warp
//   (a broadcast through the read-only cache). When inner == 1 (the W pass; kInner1 saves the divisions)
//   neighbouring threads have neighbouring j, whose indices grow with j, so their gathers share cache lines.
//   Each thread accumulates its taps in double (double weights, as MATLAB's), in ascending t, with explicitly
//   rounded multiplies and adds (__dmul_rn / __dadd_rn: no FMA contraction), i.e. the CPU reference's and
//   NumPy's arithmetic operation for operation: the two backends agree bit for bit and MATLAB's uint8 mode
//   (round half away from zero, clamp to [0, 255]) is reproduced exactly, exact x.5 ties included. The
//   tables stay in device memory: no host round trip per call.
//   Speed: bandwidth bound by design; not yet measured on a GPU.
#include "backend.hpp"
#include "common.cuh"
#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace magmasr {
namespace cuda {

namespace {

template <bool kInner1>
__global__ void resample_axis_kernel(int64_t total, int64_t in_len, int64_t inner, int64_t out_len, int taps,
                                     const double* __restrict__ weights, const int32_t* __restrict__ indices,
                                     const float* __restrict__ x, float* __restrict__ y, bool round_uint8) {
  for (int64_t e = dev::global_tid(); e < total; e += dev::grid_stride()) {
    int64_t i = 0, r = e;
    if (!kInner1) {
      i = e % inner;
      r = e / inner;
    }
    const int64_t j = r % out_len, o = r / out_len;
    const float* xo = x + o * in_len * inner + i;
    const double* w = weights + j * taps;
    const int32_t* idx = indices + j * taps;
    double acc = 0.0;
    for (int t = 0; t < taps; ++t)
      acc = __dadd_rn(acc, __dmul_rn(__ldg(w + t), double(xo[int64_t(__ldg(idx + t)) * inner])));
    if (round_uint8) acc = fmin(fmax(round(acc), 0.0), 255.0);  // round(): half away from zero
    y[e] = float(acc);
  }
}

}  // namespace

void resample_axis(int device, int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps,
                   const double* weights, const int32_t* indices, const float* x, float* y, bool round_uint8) {
  Context& ctx = context(device);
  const int64_t total = outer * out_len * inner;
  if (total <= 0) return;
  if (inner == 1)
    MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), resample_axis_kernel<true>)(
        total, in_len, inner, out_len, int(taps), weights, indices, x, y, round_uint8);
  else
    MAGMASR_LAUNCH(grid_for(total, ctx), kBlock, 0, ctx.stream(), resample_axis_kernel<false>)(
        total, in_len, inner, out_len, int(taps), weights, indices, x, y, round_uint8);
  MAGMASR_CUDA_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace magmasr
