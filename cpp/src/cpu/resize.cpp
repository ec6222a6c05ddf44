// CPU separable 1-D resampling (one pass of MATLAB's imresize): the reference for kernels/resize.cu.
//
// y[o, j, i] = sum_t w[j, t] * x[o, idx[j, t], i] with double weights, accumulated in double in ascending t
// with every product rounded before the add (CMakeLists.txt compiles this file with -ffp-contract=off): the
// arithmetic of magmasr.image.resize_along_axis (the NumPy reference) operation for operation. Then
// optionally rounded half away from zero and clamped to [0, 255] (MATLAB's uint8 mode). OpenMP splits the
// (o, j) rows; when inner > 1 each row is a contiguous run of `inner` floats and the loop over it vectorises,
// in blocks of kChunk double accumulators.
#include <algorithm>
#include <cmath>

#include "backend.hpp"

namespace magmasr::cpu {
namespace {

inline float finish(double acc, bool round_uint8) {
  if (!round_uint8) return static_cast<float>(acc);
  const double r = std::round(acc);  // half away from zero, as MATLAB's round
  return static_cast<float>(std::min(std::max(r, 0.0), 255.0));
}

constexpr int64_t kChunk = 256;  // doubles per accumulator block (2 KiB on the stack)

}  // namespace

void resample_axis(int64_t outer, int64_t in_len, int64_t inner, int64_t out_len, int64_t taps, const double* weights,
                   const int32_t* indices, const float* x, float* y, bool round_uint8) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < out_len; ++j) {
      const float* xo = x + o * in_len * inner;
      const double* w = weights + j * taps;
      const int32_t* idx = indices + j * taps;
      float* yo = y + (o * out_len + j) * inner;
      if (inner == 1) {
        double acc = 0.0;
        for (int64_t t = 0; t < taps; ++t) acc += w[t] * double(xo[idx[t]]);
        yo[0] = finish(acc, round_uint8);
        continue;
      }
      for (int64_t i0 = 0; i0 < inner; i0 += kChunk) {
        const int64_t n = std::min(kChunk, inner - i0);
        double acc[kChunk];
        for (int64_t i = 0; i < n; ++i) acc[i] = 0.0;
        for (int64_t t = 0; t < taps; ++t) {
          const double wt = w[t];
          const float* src = xo + int64_t(idx[t]) * inner + i0;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) acc[i] += wt * double(src[i]);
        }
        for (int64_t i = 0; i < n; ++i) yo[i0 + i] = finish(acc[i], round_uint8);
      }
    }
}

}  // namespace magmasr::cpu
