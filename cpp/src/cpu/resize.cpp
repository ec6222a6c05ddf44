// CPU separable 1-D resampling (one pass of MATLAB's imresize): the reference for kernels/resize.cu, and the
// double-precision host steps of magmasr.image (resize, colour conversion, uint8 conversion; cpu/image.hpp).
//
// y[o, j, i] = sum_t w[j, t] * x[o, idx[j, t], i] with double weights, accumulated in double in ascending t
// with every product rounded before the add (CMakeLists.txt compiles this file with -ffp-contract=off): the
// arithmetic of magmasr.image's NumPy reference (_resize_along_axis_numpy) operation for operation, so the
// results are its bits. Then optionally rounded half away from zero and clamped to [0, 255] (MATLAB's uint8
// mode). OpenMP splits the (o, j) rows; when inner > 1 each row is a contiguous run of `inner` values and the
// loop over it vectorises, in blocks of kChunk double accumulators.
#include <algorithm>
#include <cmath>

#include "backend.hpp"
#include "cpu/image.hpp"

namespace magmasr::cpu {
namespace {

constexpr int64_t kChunk = 256;  // doubles per accumulator block (2 KiB on the stack)

// The accumulated sum as the output type: float (rounded to an integer in 0..255 first in uint8 mode, as
// float), double (the sum itself) or uint8 (saturate_uint8 of the sum).
template <class Out>
Out finish(double acc, bool round_uint8) {
  if constexpr (std::is_same_v<Out, uint8_t>) {
    return saturate_uint8(acc);
  } else if constexpr (std::is_same_v<Out, double>) {
    return acc;
  } else {
    if (!round_uint8) return static_cast<float>(acc);
    const double r = std::round(acc);  // half away from zero, as MATLAB's round
    return static_cast<float>(std::min(std::max(r, 0.0), 255.0));
  }
}

template <class In, class Out>
void resample(int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps, const double* weights,
              const int32_t* indices, const In* x, Out* y, bool round_uint8) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < out_len; ++j) {
      const In* xo = x + o * in_len * inner;
      const double* w = weights + j * taps;
      const int32_t* idx = indices + j * taps;
      Out* yo = y + (o * out_len + j) * inner;
      if (inner == 1) {
        double acc = 0.0;
        for (int64_t t = 0; t < taps; ++t) acc += w[t] * double(xo[idx[t]]);
        yo[0] = finish<Out>(acc, round_uint8);
        continue;
      }
      for (int64_t i0 = 0; i0 < inner; i0 += kChunk) {
        const int64_t n = std::min(kChunk, inner - i0);
        double acc[kChunk];
        for (int64_t i = 0; i < n; ++i) acc[i] = 0.0;
        for (int64_t t = 0; t < taps; ++t) {
          const double wt = w[t];
          const In* src = xo + int64_t(idx[t]) * inner + i0;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) acc[i] += wt * double(src[i]);
        }
        for (int64_t i = 0; i < n; ++i) yo[i0 + i] = finish<Out>(acc[i], round_uint8);
      }
    }
}

// Elementwise loops big enough to share out (below this, starting the threads costs more than the work).
constexpr int64_t kParallelMin = 1 << 15;

}  // namespace

void resample_axis(int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps, const double* weights,
                   const int32_t* indices, const float* x, float* y, bool round_uint8) {
  resample(outer, in_len, inner, out_len, taps, weights, indices, x, y, round_uint8);
}

template <class In, class Out>
void resample_host(int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps, const double* weights,
                   const int32_t* indices, const In* x, Out* y) {
  resample(outer, in_len, inner, out_len, taps, weights, indices, x, y, std::is_same_v<Out, uint8_t>);
}

template <class In, class Out>
void colour_transform(const In* x, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                      const double* m, const double* offset, int64_t k_out, bool clip, double factor, Out* y) {
#pragma omp parallel for schedule(static) if (rows * cols * k_out >= kParallelMin)
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const In* px = x + i * row_stride + j * col_stride;
      const double r = double(px[0]), g = double(px[1]), b = double(px[2]);
      Out* out = y + (i * cols + j) * k_out;
      for (int64_t k = 0; k < k_out; ++k) {
        double v = r * m[3 * k] + g * m[3 * k + 1] + b * m[3 * k + 2] + offset[k];
        if (clip) v = clip01(v);
        if constexpr (std::is_same_v<Out, uint8_t>)
          out[k] = saturate_uint8(v * factor);
        else
          out[k] = v;
      }
    }
}

template <class In>
void scale_to_uint8(const In* x, int64_t n, double factor, uint8_t* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = saturate_uint8(double(x[i]) * factor);
}

#define MAGMASR_RESAMPLE_HOST(In, Out)                                                                          \
  template void resample_host<In, Out>(int64_t, int64_t, int64_t, int64_t, int64_t, const double*, const int32_t*, \
                                       const In*, Out*);
#define MAGMASR_HOST_IMAGE(In)                                                                                   \
  MAGMASR_RESAMPLE_HOST(In, double)                                                                              \
  MAGMASR_RESAMPLE_HOST(In, uint8_t)                                                                             \
  template void colour_transform<In, double>(const In*, int64_t, int64_t, int64_t, int64_t, const double*,      \
                                             const double*, int64_t, bool, double, double*);                   \
  template void colour_transform<In, uint8_t>(const In*, int64_t, int64_t, int64_t, int64_t, const double*,     \
                                              const double*, int64_t, bool, double, uint8_t*);                 \
  template void scale_to_uint8<In>(const In*, int64_t, double, uint8_t*);
MAGMASR_HOST_IMAGE(uint8_t)
MAGMASR_HOST_IMAGE(float)
MAGMASR_HOST_IMAGE(double)
#undef MAGMASR_HOST_IMAGE
#undef MAGMASR_RESAMPLE_HOST

}  // namespace magmasr::cpu
