// MATLAB imresize's 1-D bicubic tables on the host, the C++ twin of magmasr.image.contributions. Every
// floating-point operation is the one NumPy does, in the same order (this file is compiled without fused
// multiply-adds), so the weights agree to the last bit.
#include <algorithm>
#include <cmath>
#include <limits>

#include "magmasr/error.hpp"
#include "magmasr/ops.hpp"

namespace magmasr::ops {
namespace {

// magmasr.image.cubic: (1.5|x|^3 - 2.5|x|^2 + 1) (|x| <= 1) + (-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2) (1 < |x| <= 2).
// NumPy adds the other term times a false mask, a signed zero, which changes no value.
double cubic(double x) {
  const double ax = std::fabs(x), ax2 = ax * ax, ax3 = ax2 * ax;
  if (ax <= 1.0) return 1.5 * ax3 - 2.5 * ax2 + 1.0;
  if (ax <= 2.0) return -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0;
  return 0.0;
}

// NumPy's pairwise summation of a contiguous float64 row (numpy.sum along the last axis): a plain loop under 8
// items, 8 interleaved partial sums up to 128, halves (multiples of 8) beyond.
double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    std::copy(a, a + 8, r);
    int64_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

}  // namespace

HostResampleTable bicubic_contributions(int64_t in_len, int64_t out_len, double scale) {
  MAGMASR_REQUIRE(in_len >= 1 && out_len >= 1, ValueError, "bicubic_contributions: lengths must be >= 1, got in_len=",
                  in_len, ", out_len=", out_len);
  MAGMASR_REQUIRE(in_len <= std::numeric_limits<int32_t>::max(), ValueError, "bicubic_contributions: in_len ", in_len,
                  " is too large for int32 indices");
  MAGMASR_REQUIRE(scale > 0 && std::isfinite(scale), ValueError,
                  "bicubic_contributions: scale must be positive and finite, got ", scale);
  const bool shrink = scale < 1.0;  // antialiasing: the kernel stretched by 1 / scale
  const double width = shrink ? 4.0 / scale : 4.0;
  const double p_real = std::ceil(width) + 2.0;
  MAGMASR_REQUIRE(p_real * double(out_len) <= double(int64_t(1) << 31), ValueError, "bicubic_contributions: scale ",
                  scale, " needs ", p_real, " taps for each of ", out_len, " outputs: too large a table");
  const int64_t p = int64_t(p_real);

  std::vector<double> w(size_t(out_len * p));
  std::vector<int64_t> idx(w.size());
  for (int64_t j = 0; j < out_len; ++j) {
    const double u = double(j + 1) / scale + 0.5 * (1.0 - 1.0 / scale);  // 1-based input coordinate
    const double left = std::floor(u - width / 2.0);
    double* row = &w[size_t(j * p)];
    for (int64_t k = 0; k < p; ++k) {
      const double index = left + double(k);  // 1-based
      const double d = u - index;
      row[k] = shrink ? scale * cubic(scale * d) : cubic(d);
      idx[size_t(j * p + k)] = std::clamp<int64_t>(int64_t(index) - 1, 0, in_len - 1);
    }
    const double sum = pairwise_sum(row, p);
    for (int64_t k = 0; k < p; ++k) row[k] = row[k] / sum;
  }

  std::vector<int64_t> keep;
  for (int64_t k = 0; k < p; ++k) {
    bool any = false;
    for (int64_t j = 0; j < out_len && !any; ++j) any = w[size_t(j * p + k)] != 0.0;
    if (any) keep.push_back(k);
  }
  HostResampleTable t;
  t.in_len = in_len, t.out_len = out_len, t.taps = int64_t(keep.size());
  t.weights.reserve(size_t(out_len) * keep.size());
  t.indices.reserve(t.weights.capacity());
  for (int64_t j = 0; j < out_len; ++j)
    for (int64_t k : keep) {
      t.weights.push_back(w[size_t(j * p + k)]);
      t.indices.push_back(int32_t(idx[size_t(j * p + k)]));
    }
  return t;
}

ResampleTable bicubic_table(int64_t in_len, int64_t out_len, double scale, const Device& device) {
  const HostResampleTable t = bicubic_contributions(in_len, out_len, scale);
  return ResampleTable(t.weights, t.indices, t.out_len, t.in_len, device);
}

}  // namespace magmasr::ops
