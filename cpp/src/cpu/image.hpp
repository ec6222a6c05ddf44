// Host image steps in double precision: the arithmetic of magmasr.image (imresize, rgb2ycbcr / ycbcr2rgb,
// im2uint8) for NumPy arrays and for SrcnnModel, bit for bit the package's NumPy reference formulas (each
// product and each sum rounded, in the same order: cpu/resize.cpp is compiled without fused multiply-adds),
// multi-threaded. Instantiated for In = uint8_t, float and double (each converts to double exactly).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace magmasr::cpu {

/// MATLAB's double -> uint8 (magmasr.image._saturate_uint8): clamped to [0, 255], then rounded half away from
/// zero from the exact fraction (floor(v + 0.5) would round 0.49999999999999994 up). NaN gives 0.
inline uint8_t saturate_uint8(double v) {
  const double c = v > 0.0 ? (v < 255.0 ? v : 255.0) : 0.0;
  const double f = std::floor(c);
  return static_cast<uint8_t>(f + (c - f >= 0.5 ? 1.0 : 0.0));
}

/// np.clip(v, 0, 1): a NaN stays NaN.
inline double clip01(double v) { return v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v; }

/// One pass of imresize along the middle axis of x [outer, in_len, inner] (C order) into y [outer, out_len,
/// inner]: the sums of resample_axis (backend.hpp) on In samples, kept as double (Out = double), or in MATLAB's
/// uint8 mode (Out = uint8_t: saturate_uint8 of each sum). Indices must lie in [0, in_len).
template <class In, class Out>
void resample_host(int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps, const double* weights,
                   const int32_t* indices, const In* x, Out* y);

/// For the pixels (i, j) of a rows x cols grid, the 3 channels of each at x + i * row_stride + j * col_stride
/// (strides in elements, channels adjacent): v[k] = x0 * m[k, 0] + x1 * m[k, 1] + x2 * m[k, 2] + offset[k],
/// summed left to right, for k < k_out (m row-major [k_out, 3]); with `clip`, clip01(v). y [rows, cols, k_out]
/// (C order) gets v (Out = double) or saturate_uint8(v * factor) (Out = uint8_t). x and y must not alias.
template <class In, class Out>
void colour_transform(const In* x, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                      const double* m, const double* offset, int64_t k_out, bool clip, double factor, Out* y);

/// y[i] = saturate_uint8(double(x[i]) * factor) (im2uint8 with factor 255).
template <class In>
void scale_to_uint8(const In* x, int64_t n, double factor, uint8_t* y);

}  // namespace magmasr::cpu
