// Host image steps in double precision: the arithmetic of magmasr.image (imresize, rgb2ycbcr / ycbcr2rgb,
// im2uint8) for NumPy arrays and for SrcnnModel, bit for bit the package's NumPy reference formulas (each
// product and each sum rounded, in the same order: cpu/resize.cpp is compiled without fused multiply-adds),
// multi-threaded. Instantiated for In = uint8_t, float and double (each converts to double exactly).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

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

/// Colour under transparency ("alpha bleeding"): pixels[h, w, ch] interleaved, the last channel alpha; the
/// colour channels of every fully transparent pixel (alpha == 0) are replaced, in place, by colour spread from the
/// visible ones, so that resampling next to a transparent area mixes in the colour of its visible neighbours
/// rather than whatever the file stores there (black, usually: dark fringes around an upscaled logo). In layers:
/// layer 0 is the pixels with alpha != 0; a transparent pixel with one or more 8-neighbours in layers < k is in
/// layer k and gets, per channel, their mean: the sum in double, neighbours in row-major order, divided by their
/// count, then rounded half to even for integer types (converted to float for float). Visible pixels and alpha
/// are not changed; a picture with no visible pixel is left as it is. magmasr.sr.ImageSR.upscale_tiles and
/// SrcnnModel::upscale (tests/python/test_alpha.py: the NumPy formula of the same rule).
template <class T>
void bleed_transparent(T* pixels, int64_t h, int64_t w, int64_t ch) {
  const int64_t n = h * w, colours = ch - 1;
  if (n == 0 || colours < 1) return;
  constexpr int32_t kUnfilled = -1, kQueued = -2;
  std::vector<int32_t> layer(static_cast<size_t>(n), kUnfilled);
  std::vector<int64_t> frontier, next;
  for (int64_t i = 0; i < n; ++i)
    if (!(pixels[i * ch + colours] == T(0))) layer[size_t(i)] = 0, frontier.push_back(i);
  if (frontier.empty() || int64_t(frontier.size()) == n) return;
  // f(j) for each 8-neighbour j of pixel i inside the picture, in row-major order (i itself is skipped by the
  // callers: it is never filled when they look).
  const auto neighbours = [h, w](int64_t i, auto&& f) {
    const int64_t r = i / w, c = i % w;
    for (int64_t rr = r - 1; rr <= r + 1; ++rr)
      for (int64_t cc = c - 1; cc <= c + 1; ++cc)
        if (rr >= 0 && rr < h && cc >= 0 && cc < w) f(rr * w + cc);
  };
  std::vector<double> mean(static_cast<size_t>(colours));
  for (int32_t k = 1; !frontier.empty(); ++k) {
    next.clear();
    for (const int64_t i : frontier)
      neighbours(i, [&](int64_t j) {
        if (layer[size_t(j)] != kUnfilled) return;
        layer[size_t(j)] = kQueued;
        next.push_back(j);
      });
    // Each pixel of layer k reads only layers < k (still kUnfilled / kQueued: skipped), so the order is free.
    for (const int64_t i : next) {
      int count = 0;
      std::fill(mean.begin(), mean.end(), 0.0);
      neighbours(i, [&](int64_t j) {
        if (layer[size_t(j)] < 0) return;
        ++count;
        for (int64_t p = 0; p < colours; ++p) mean[size_t(p)] += double(pixels[j * ch + p]);
      });
      for (int64_t p = 0; p < colours; ++p) {
        const double v = mean[size_t(p)] / count;
        pixels[i * ch + p] = std::is_integral_v<T> ? T(std::nearbyint(v)) : T(v);
      }
    }
    for (const int64_t i : next) layer[size_t(i)] = k;
    frontier.swap(next);
  }
}

}  // namespace magmasr::cpu
