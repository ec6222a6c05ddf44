// The CUDA resampling kernel (kernels/resize.cu) against the CPU reference (cpp/src/cpu/resize.cpp) on random
// shapes, both in float and in MATLAB's uint8 mode, through the raw kernel layer and through ops::resample_axis
// with a ResampleTable held on the GPU. Both backends accumulate float * float products (exact in double) in
// double in the same order, so the results must be identical, not merely close. Outputs are poisoned with NaN
// first, so an element the kernel forgets to write fails. Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "backend.hpp"
#include "magmasr/magmasr.hpp"

using namespace magmasr;

namespace {

constexpr int kDev = 0;

#define SKIP_WITHOUT_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device"

// A typed device buffer from the caching allocator, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    p_ = static_cast<T*>(cuda::alloc(kDev, n_ * sizeof(T)));
    cuda::copy(p_, true, host.data(), false, n_ * sizeof(T), kDev);
  }
  ~DeviceArray() { cuda::free(kDev, p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return p_; }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cuda::copy(h.data(), false, p_, true, n_ * sizeof(T), kDev);
    return h;
  }

 private:
  size_t n_;
  T* p_ = nullptr;
};

struct Problem {
  int64_t outer, in_len, inner, out_len, taps;
  std::vector<double> w;
  std::vector<float> x;
  std::vector<int32_t> idx;
};

Problem random_problem(std::mt19937& rng, bool pixels) {
  std::uniform_int_distribution<int64_t> small(1, 6), len(1, 80), inner_d(1, 70), taps_d(1, 18);
  Problem p;
  p.outer = small(rng);
  p.in_len = len(rng);
  p.inner = (rng() % 3 == 0) ? 1 : inner_d(rng);  // the last-axis (inner == 1) path often
  p.out_len = len(rng);
  p.taps = taps_d(rng);
  std::uniform_real_distribution<double> wd(-0.5, 1.5);
  std::uniform_real_distribution<float> xd(-2.f, 2.f);
  std::uniform_int_distribution<int32_t> id(0, int32_t(p.in_len - 1));
  std::uniform_int_distribution<int> pix(0, 255);
  p.w.resize(size_t(p.out_len * p.taps));
  p.idx.resize(p.w.size());
  for (auto& v : p.w) v = wd(rng) / double(p.taps);
  for (auto& v : p.idx) v = id(rng);
  p.x.resize(size_t(p.outer * p.in_len * p.inner));
  for (auto& v : p.x) v = pixels ? float(pix(rng)) : xd(rng);
  return p;
}

}  // namespace

TEST(CudaResize, KernelMatchesCpuOnRandomShapes) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  for (int trial = 0; trial < 60; ++trial) {
    const bool round_uint8 = trial % 2 == 1;
    const Problem p = random_problem(rng, round_uint8);
    const size_t ny = size_t(p.outer * p.out_len * p.inner);
    std::vector<float> ref(ny);
    cpu::resample_axis(p.outer, p.in_len, p.inner, p.out_len, p.taps, p.w.data(), p.idx.data(), p.x.data(),
                       ref.data(), round_uint8);
    DeviceArray<double> w(p.w);
    DeviceArray<float> x(p.x), y(std::vector<float>(ny, std::numeric_limits<float>::quiet_NaN()));
    DeviceArray<int32_t> idx(p.idx);
    cuda::resample_axis(kDev, p.outer, p.in_len, p.inner, p.out_len, p.taps, w.get(), idx.get(), x.get(), y.get(),
                        round_uint8);
    const auto got = y.download();
    for (size_t k = 0; k < ny; ++k)
      ASSERT_EQ(got[k], ref[k]) << "trial " << trial << ": outer=" << p.outer << " in=" << p.in_len
                                << " inner=" << p.inner << " out=" << p.out_len << " taps=" << p.taps
                                << " round_uint8=" << round_uint8 << " at " << k;
  }
}

TEST(CudaResize, LargeFrameMatchesCpu) {
  // A 1080p-sized frame resized along both axes, as a video pipeline does (grid-stride loops wrap).
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  const int64_t H = 1080, W = 1920;
  std::vector<float> xv(size_t(3 * H * W));
  std::uniform_int_distribution<int> pix(0, 255);
  for (auto& v : xv) v = float(pix(rng));
  const Tensor x = Tensor::from_vector(xv, {1, 3, H, W});
  const Tensor xg = x.to(Device::cuda(kDev));
  for (int axis : {2, 3}) {
    const int64_t in_len = axis == 2 ? H : W, out_len = in_len / 3, taps = 14;
    std::vector<double> w(size_t(out_len * taps), 1.0 / double(taps));
    std::vector<int32_t> idx(w.size());
    for (int64_t j = 0; j < out_len; ++j)
      for (int64_t t = 0; t < taps; ++t)
        idx[size_t(j * taps + t)] = int32_t(std::min<int64_t>(in_len - 1, std::max<int64_t>(0, 3 * j + t - 6)));
    const ops::ResampleTable tc(w, idx, out_len, in_len), tg = tc.to(Device::cuda(kDev));
    EXPECT_EQ(tg.device(), Device::cuda(kDev));
    for (bool r : {false, true}) {
      const Tensor yc = ops::resample_axis(x, axis, tc, r), yg = ops::resample_axis(xg, axis, tg, r);
      EXPECT_EQ(yg.device(), Device::cuda(kDev));
      EXPECT_EQ(yg.shape(), yc.shape());
      EXPECT_EQ(yg.to_vector(), yc.to_vector()) << "axis " << axis << " round_uint8 " << r;
    }
  }
}

TEST(CudaResize, TensorOpOnGpuMatchesCpuAndChecksDevices) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  const Shape shape = {2, 3, 9, 13};
  std::vector<float> xv(size_t(shape_numel(shape)));
  std::uniform_real_distribution<float> d(0.f, 1.f);
  for (auto& v : xv) v = d(rng);
  const Tensor x = Tensor::from_vector(xv, shape), xg = x.to(Device::cuda(kDev));
  for (int axis = -4; axis < 4; ++axis) {
    const int64_t in_len = x.size(axis), out_len = 3 * in_len - 1, taps = 4;
    std::vector<double> w(size_t(out_len * taps));
    std::vector<int32_t> idx(w.size());
    std::uniform_int_distribution<int32_t> id(0, int32_t(in_len - 1));
    for (auto& v : w) v = double(d(rng));
    for (auto& v : idx) v = id(rng);
    const ops::ResampleTable tg(w, idx, out_len, in_len, Device::cuda(kDev));
    const ops::ResampleTable tc = tg.to(Device::cpu());
    EXPECT_EQ(tc.device(), Device::cpu());
    const Tensor yc = ops::resample_axis(x, axis, tc);
    EXPECT_EQ(ops::resample_axis(xg, axis, tg).to_vector(), yc.to_vector());
    EXPECT_EQ(ops::resample_axis(xg, axis, w, idx, taps).to_vector(), yc.to_vector());  // host table, per call
    EXPECT_EQ(tg.weights_host(), w);
    EXPECT_EQ(tg.indices_host(), idx);
    EXPECT_THROW(ops::resample_axis(xg, axis, tc), DeviceError);
    EXPECT_THROW(ops::resample_axis(x, axis, tg), DeviceError);
  }
}
