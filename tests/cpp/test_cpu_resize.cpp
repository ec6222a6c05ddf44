// The CPU resampling kernel (one pass of MATLAB's imresize) and its tensor-level op against the definition
// y[o, j, i] = sum_t w[j, t] * x[o, idx[j, t], i], written here as a plain loop in double; MATLAB's uint8 rounding
// (half away from zero, then saturation) on hand-made ties; and the argument checks of ops::resample_axis.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "backend.hpp"
#include "magmasr/magmasr.hpp"

using namespace magmasr;

namespace {

struct Table {
  int64_t out_len, taps;
  std::vector<double> w;
  std::vector<int32_t> idx;
};

Table random_table(int64_t in_len, int64_t out_len, int64_t taps, std::mt19937& rng) {
  Table t{out_len, taps, std::vector<double>(size_t(out_len * taps)), std::vector<int32_t>(size_t(out_len * taps))};
  std::uniform_real_distribution<double> wd(-0.5, 1.5);
  std::uniform_int_distribution<int32_t> id(0, int32_t(in_len - 1));
  for (auto& v : t.w) v = wd(rng);
  for (auto& v : t.idx) v = id(rng);
  return t;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// The definition, in double, with its own indexing.
std::vector<double> direct(int64_t outer, int64_t in_len, int64_t inner, const Table& t, const std::vector<float>& x) {
  std::vector<double> y(size_t(outer * t.out_len * inner));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < t.out_len; ++j)
      for (int64_t i = 0; i < inner; ++i) {
        double s = 0.0;
        for (int64_t k = 0; k < t.taps; ++k) {
          const int64_t src = (o * in_len + t.idx[size_t(j * t.taps + k)]) * inner + i;
          s += t.w[size_t(j * t.taps + k)] * double(x[size_t(src)]);
        }
        y[size_t((o * t.out_len + j) * inner + i)] = s;
      }
  return y;
}

double matlab_uint8(double v) {  // MATLAB's double -> uint8: round half away from zero, saturate
  const double r = v < 0 ? -std::floor(-v + 0.5) : std::floor(v + 0.5);
  return r < 0 ? 0 : (r > 255 ? 255 : r);
}

struct Case {
  int64_t outer, in_len, inner, out_len, taps;
};

const Case kCases[] = {
    {1, 1, 1, 1, 1},     {3, 10, 1, 5, 8},    {2, 9, 7, 17, 4},   {1, 64, 300, 32, 10},  // > one 256-chunk
    {5, 33, 2, 11, 14},  {4, 7, 1, 21, 6},    {1, 200, 1, 67, 18}, {2, 3, 513, 3, 3},
};

}  // namespace

TEST(CpuResize, MatchesDefinitionFloat) {
  std::mt19937 rng(1);
  for (const Case& c : kCases) {
    const Table t = random_table(c.in_len, c.out_len, c.taps, rng);
    const auto x = random_vec(size_t(c.outer * c.in_len * c.inner), rng, -2.f, 2.f);
    std::vector<float> y(size_t(c.outer * c.out_len * c.inner), NAN);
    cpu::resample_axis(c.outer, c.in_len, c.inner, c.out_len, c.taps, t.w.data(), t.idx.data(), x.data(), y.data(),
                       false);
    const auto ref = direct(c.outer, c.in_len, c.inner, t, x);
    for (size_t k = 0; k < y.size(); ++k)
      ASSERT_NEAR(y[k], ref[k], 1e-6 * (1.0 + std::fabs(ref[k])))
          << "outer=" << c.outer << " in=" << c.in_len << " inner=" << c.inner << " out=" << c.out_len << " at " << k;
  }
}

TEST(CpuResize, MatchesDefinitionUint8) {
  std::mt19937 rng(2);
  for (const Case& c : kCases) {
    const Table t = random_table(c.in_len, c.out_len, c.taps, rng);
    std::vector<float> x(size_t(c.outer * c.in_len * c.inner));
    std::uniform_int_distribution<int> pix(0, 255);
    for (float& v : x) v = float(pix(rng));
    std::vector<float> y(size_t(c.outer * c.out_len * c.inner), NAN);
    cpu::resample_axis(c.outer, c.in_len, c.inner, c.out_len, c.taps, t.w.data(), t.idx.data(), x.data(), y.data(),
                       true);
    const auto ref = direct(c.outer, c.in_len, c.inner, t, x);
    for (size_t k = 0; k < y.size(); ++k) ASSERT_EQ(double(y[k]), matlab_uint8(ref[k])) << "at " << k;
  }
}

TEST(CpuResize, Uint8RoundsHalfAwayFromZeroAndSaturates) {
  // Each output row j averages two inputs (or scales one), chosen to land exactly on x.5 or outside 0..255.
  const std::vector<float> x = {1, 2, 3, 254, 255, 0};
  const std::vector<double> w = {0.5, 0.5,   // (1 + 2) / 2 = 1.5   -> 2
                                 0.5, 0.5,   // (2 + 3) / 2 = 2.5   -> 3 (half to even would give 2)
                                 0.5, 0.5,   // (254 + 255) / 2 = 254.5 -> 255
                                 2.0, 0.0,   // 2 * 255 = 510 -> 255
                                 -0.5, 0.0,  // -0.5 -> -1 -> 0
                                 0.25, 0.0,  // 0.25 -> 0
                                 0.5, 0.0};  // 0.5 -> 1
  const std::vector<int32_t> idx = {0, 1, 1, 2, 3, 4, 4, 0, 0, 5, 0, 5, 0, 5};
  std::vector<float> y(7, NAN);
  cpu::resample_axis(1, 6, 1, 7, 2, w.data(), idx.data(), x.data(), y.data(), true);
  EXPECT_EQ(y, (std::vector<float>{2, 3, 255, 255, 0, 0, 1}));
  cpu::resample_axis(1, 6, 1, 7, 2, w.data(), idx.data(), x.data(), y.data(), false);
  EXPECT_EQ(y, (std::vector<float>{1.5f, 2.5f, 254.5f, 510.f, -0.5f, 0.25f, 0.5f}));
}

TEST(CpuResize, TensorOpResamplesEveryAxis) {
  std::mt19937 rng(3);
  const Shape shape = {2, 3, 5, 7};
  const auto xv = random_vec(size_t(shape_numel(shape)), rng, 0.f, 1.f);
  const Tensor x = Tensor::from_vector(xv, shape);
  for (int axis = -4; axis < 4; ++axis) {
    const int a = axis < 0 ? axis + 4 : axis;
    const int64_t in_len = shape[size_t(a)], out_len = 2 * in_len + 1;
    const Table t = random_table(in_len, out_len, 3, rng);
    const ops::ResampleTable table(t.w, t.idx, out_len, in_len);
    EXPECT_EQ(table.in_len(), in_len);
    EXPECT_EQ(table.out_len(), out_len);
    EXPECT_EQ(table.taps(), 3);
    const Tensor y = ops::resample_axis(x, axis, table);
    Shape ys = shape;
    ys[size_t(a)] = out_len;
    ASSERT_EQ(y.shape(), ys);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < a; ++d) outer *= shape[size_t(d)];
    for (int d = a + 1; d < 4; ++d) inner *= shape[size_t(d)];
    const auto ref = direct(outer, in_len, inner, t, xv);
    const auto got = y.to_vector();
    for (size_t k = 0; k < got.size(); ++k) ASSERT_NEAR(got[k], ref[k], 1e-6 * (1.0 + std::fabs(ref[k])));
    // The host-table overload gives the same result; the table reads back unchanged.
    EXPECT_EQ(ops::resample_axis(x, axis, t.w, t.idx, 3).to_vector(), got);
    EXPECT_EQ(table.weights_host(), t.w);
    EXPECT_EQ(table.indices_host(), t.idx);
  }
}

TEST(CpuResize, IdentityAndConstantPreserved) {
  // An identity table copies the input; rows that sum to one keep a constant image constant.
  const Tensor x = Tensor::full({3, 4}, 7.25f);
  const ops::ResampleTable id({1, 1, 1, 1}, {0, 1, 2, 3}, 4, 4);
  EXPECT_EQ(ops::resample_axis(x, 1, id).to_vector(), x.to_vector());
  const ops::ResampleTable avg({0.25, 0.75, 0.6, 0.4}, {0, 1, 2, 1}, 2, 3);
  const Tensor y = ops::resample_axis(x, 0, avg);
  EXPECT_EQ(y.shape(), (Shape{2, 4}));
  for (float v : y.to_vector()) EXPECT_FLOAT_EQ(v, 7.25f);
}

TEST(CpuResize, ArgumentChecks) {
  const Tensor x = Tensor::zeros({2, 5});
  const ops::ResampleTable t({0.5, 0.5}, {0, 4}, 1, 5);
  EXPECT_THROW(ops::resample_axis(x, 2, t), ValueError);            // axis out of range
  EXPECT_THROW(ops::resample_axis(x, -3, t), ValueError);
  EXPECT_THROW(ops::resample_axis(x, 0, t), ValueError);            // axis 0 has length 2, table wants 5
  EXPECT_THROW(ops::resample_axis(Tensor(), 1, t), ValueError);     // undefined input
  EXPECT_THROW(ops::resample_axis(x, 1, ops::ResampleTable()), ValueError);
  EXPECT_NO_THROW(ops::resample_axis(x, 1, t));
  EXPECT_NO_THROW(ops::resample_axis(x, -1, t));
  using RT = ops::ResampleTable;
  EXPECT_THROW(RT({0.5, 0.5}, {0, 5}, 1, 5), ValueError);           // index outside [0, in_len)
  EXPECT_THROW(RT({0.5, 0.5}, {-1, 0}, 1, 5), ValueError);
  EXPECT_THROW(RT({0.5, 0.5}, {0}, 1, 5), ValueError);              // indices and weights disagree
  EXPECT_THROW(RT({0.5, 0.5, 0.5}, {0, 1, 2}, 2, 5), ValueError);   // 3 weights are not 2 rows
  EXPECT_THROW(RT({}, {}, 1, 5), ValueError);
  EXPECT_THROW(RT({1.0}, {0}, 0, 5), ValueError);
  EXPECT_THROW(RT({1.0}, {0}, 1, 0), ValueError);
  EXPECT_THROW(ops::resample_axis(x, 1, {0.5, 0.5}, {0, 1, 2}, 2), ValueError);
  EXPECT_THROW(ops::resample_axis(x, 1, {0.5, 0.5, 0.5}, {0, 1, 2}, 2), ValueError);  // not rows of 2 taps
  EXPECT_THROW(ops::resample_axis(x, 1, {0.5, 0.5}, {0, 1}, 0), ValueError);
  EXPECT_THROW(ops::resample_axis(x, 0, {0.5, 0.5}, {0, 4}, 2), ValueError);  // 4 is outside axis 0 (length 2)
  EXPECT_THROW(ops::resample_axis(x, 7, {0.5, 0.5}, {0, 1}, 2), ValueError);
  EXPECT_NO_THROW(ops::resample_axis(x, 1, {0.5, 0.5}, {0, 4}, 2));
  if (cuda::device_count() == 0) EXPECT_THROW(RT({1.0}, {0}, 1, 1, Device::cuda(0)), DeviceError);
}

TEST(CpuResize, TableToSameDeviceIsShared) {
  const ops::ResampleTable t({1.0, 0.0}, {0, 1}, 1, 2);
  const ops::ResampleTable u = t.to(Device::cpu());
  EXPECT_EQ(u.indices(), t.indices());
  EXPECT_EQ(u.weights(), t.weights());
}
