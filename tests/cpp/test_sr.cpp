// magmasr::SrcnnModel: the whole-picture pipeline checked against independent computations. (Bit-for-bit
// agreement with the Python package's ImageSR.upscale is tested in tests/python/test_cpp_weights.py.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "magmasr/magmasr.hpp"

using namespace magmasr;

namespace {

// SRCNN 1-1-1 with one filter per layer, weights 1 and biases 0: the identity on non-negative inputs, so the
// pipeline reduces to its colour and bicubic steps.
SrcnnModel identity_model(int64_t scale) {
  auto net = srcnn(1, 1, 1, 1, 1);
  std::map<std::string, Tensor> state;
  for (const char* conv : {"conv1", "conv2", "conv3"}) {
    state[std::string(conv) + ".weight"] = Tensor::from_vector({1.0f}, {1, 1, 1, 1});
    state[std::string(conv) + ".bias"] = Tensor::from_vector({0.0f}, {1});
  }
  net->load_state_dict(state);
  return SrcnnModel(net, scale);
}

// MATLAB bicubic x scale of a gray picture / 255 with the library's float32 resampling op (rows, then columns),
// clipped and rounded: an independent route to what the identity model must give.
std::vector<uint8_t> bicubic_gray(const Picture& in, int64_t s) {
  std::vector<float> x(in.pixels.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(in.pixels[i]) / 255.0f;
  Tensor t = Tensor::from_vector(x, {1, 1, in.height, in.width});
  t = ops::resample_axis(t, -2, ops::bicubic_table(in.height, in.height * s, double(s)));
  t = ops::resample_axis(t, -1, ops::bicubic_table(in.width, in.width * s, double(s)));
  std::vector<uint8_t> out;
  for (float v : t.to_vector())
    out.push_back(uint8_t(std::floor(std::min(std::max(double(v), 0.0), 1.0) * 255.0 + 0.5)));
  return out;
}

Picture random_picture(std::mt19937& rng, int64_t h, int64_t w, int64_t c) {
  Picture p(h, w, c);
  std::uniform_int_distribution<int> d(0, 255);
  for (auto& v : p.pixels) v = uint8_t(d(rng));
  return p;
}

}  // namespace

TEST(SrcnnModel, IdentityNetworkGivesTheBicubicPicture) {
  std::mt19937 rng(std::random_device{}());
  for (int64_t s : {2, 3, 4}) {
    const Picture in = random_picture(rng, 5 + rng() % 20, 5 + rng() % 20, 1);
    const Picture out = identity_model(s).upscale(in);
    ASSERT_EQ(out.height, in.height * s);
    ASSERT_EQ(out.width, in.width * s);
    ASSERT_EQ(out.channels, 1);
    const std::vector<uint8_t> ref = bicubic_gray(in, s);
    // The library's pipeline resamples in double, the reference in float32 rows: a sample may land on the
    // other side of a rounding boundary, one grey level away, rarely.
    int64_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_LE(std::abs(int(out.pixels[i]) - int(ref[i])), 1) << "pixel " << i;
      differ += out.pixels[i] != ref[i];
    }
    EXPECT_LE(differ, int64_t(ref.size() / 100 + 1));
  }
}

TEST(SrcnnModel, RgbRoundTripsThroughYCbCr) {
  // A flat RGB picture: bicubic keeps it flat and the identity network keeps Y, so YCbCr -> RGB gives the
  // colour back (to within rounding: Y passes through float32).
  for (const auto& rgb : std::vector<std::array<int, 3>>{{200, 30, 90}, {0, 0, 0}, {255, 255, 255}, {12, 240, 128}}) {
    Picture in(7, 9, 3);
    for (int64_t i = 0; i < 7 * 9; ++i)
      for (int k = 0; k < 3; ++k) in.pixels[size_t(3 * i + k)] = uint8_t(rgb[size_t(k)]);
    const Picture out = identity_model(3).upscale(in);
    ASSERT_EQ(out.channels, 3);
    ASSERT_EQ(out.pixels.size(), size_t(21 * 27 * 3));
    for (size_t i = 0; i < out.pixels.size(); ++i)
      ASSERT_LE(std::abs(int(out.pixels[i]) - rgb[i % 3]), 1) << "sample " << i;
  }
}

TEST(SrcnnModel, TilesGiveTheWholePictureBitForBit) {
  std::mt19937 rng(std::random_device{}());
  auto net = srcnn(5, 3, 3, 8, 4);  // random weights (the layers' default initialisation), receptive radius 4
  std::map<std::string, Tensor> state = net->state_dict();
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (auto& [name, t] : state) {
    std::vector<float> v(size_t(t.numel()));
    for (auto& x : v) x = d(rng);
    state[name] = Tensor::from_vector(v, t.shape());
  }
  net->load_state_dict(state);
  const SrcnnModel m(net, 3);
  EXPECT_EQ(m.receptive_radius(), 4);
  for (int64_t ch : {1, 3}) {
    const Picture in = random_picture(rng, 9 + rng() % 9, 9 + rng() % 9, ch);
    const Picture whole = m.upscale(in);
    for (int64_t tile : {3, 5, 16, 1000}) EXPECT_EQ(m.upscale(in, 0, tile).pixels, whole.pixels) << "tile " << tile;
    EXPECT_EQ(m.upscale(in, 2, 7).pixels, m.upscale(in, 2).pixels);
  }
}

TEST(SrcnnModel, OnTheGpuTilesAreExactAndTheCpuIsWithinOneLevel) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(std::random_device{}());
  const std::string path = ::testing::TempDir() + "magmasr_sr_gpu_" + std::to_string(::getpid()) + ".safetensors";
  auto net = srcnn(9, 5, 5, 64, 32);
  save_safetensors(path, net->state_dict(), {{"architecture", "srcnn"}, {"scale", "3"}});
  SrcnnModel cpu = SrcnnModel::load(path), gpu = SrcnnModel::load(path);
  ::unlink(path.c_str());
  gpu.to(Device::cuda(0));
  // On the CUDA emulator (tests/cuda_emu) each kernel runs thread by thread on one core, and auto_direct times its
  // three kernels on every new tile shape: a smaller picture there, still two tile sizes with interior and edge
  // tiles (the upscaled picture is 63-108 pixels a side).
#ifdef MAGMASR_CUDA_EMULATED
  const Picture in = random_picture(rng, 21 + rng() % 16, 21 + rng() % 16, 3);
  const std::vector<int64_t> tiles{37, 50};
#else
  const Picture in = random_picture(rng, 40 + rng() % 30, 40 + rng() % 30, 3);
  const std::vector<int64_t> tiles{37, 64, 100};
#endif
  const Picture whole = gpu.upscale(in), ref = cpu.upscale(in);
  for (int64_t tile : tiles) EXPECT_EQ(gpu.upscale(in, 0, tile).pixels, whole.pixels) << "tile " << tile;
  int64_t differ = 0;
  for (size_t i = 0; i < ref.pixels.size(); ++i) {
    ASSERT_LE(std::abs(int(whole.pixels[i]) - int(ref.pixels[i])), 1) << "sample " << i;
    differ += whole.pixels[i] != ref.pixels[i];
  }
  EXPECT_LE(differ, int64_t(ref.pixels.size() / 1000 + 1));
}

TEST(SrcnnModel, ScaleOneIsTheNetworkAlone) {
  std::mt19937 rng(std::random_device{}());
  const Picture in = random_picture(rng, 11, 13, 1);
  const Picture out = identity_model(3).upscale(in, 1);
  EXPECT_EQ(out.pixels, in.pixels);  // v / 255 through float32 and back rounds to v
}

TEST(SrcnnModel, BadInputIsAValueErrorThatSaysWhy) {
  const SrcnnModel m = identity_model(2);
  auto message = [&](const Picture& p, int64_t s) {
    try {
      m.upscale(p, s);
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(Picture(0, 5, 1), 0).find("empty picture"), std::string::npos);
  EXPECT_NE(message(Picture(3, 5, 2), 0).find("expected 1 (gray) or 3 (RGB) channels, got 2"), std::string::npos);
  Picture short_of_pixels(3, 5, 3);
  short_of_pixels.pixels.pop_back();
  EXPECT_NE(message(short_of_pixels, 0).find("has 45 samples, got 44"), std::string::npos);
  EXPECT_NE(message(Picture(3, 5, 1), 17).find("scale 17 is not in 1..16"), std::string::npos);
  EXPECT_THROW(Picture(-1, 5, 1), ValueError);
  EXPECT_THROW(Picture(1 << 30, 1 << 30, 3), ValueError);
  EXPECT_THROW(srcnn(9, 4, 5), ValueError);
  EXPECT_THROW(SrcnnModel(nullptr, 2), ValueError);
}

TEST(SrcnnModel, LoadReadsArchitectureAndScaleFromTheMetadata) {
  const std::string path = ::testing::TempDir() + "magmasr_sr_" + std::to_string(::getpid()) + ".safetensors";
  auto net = srcnn(3, 1, 3, 4, 2);
  save_safetensors(path, net->state_dict(), {{"architecture", "srcnn"}, {"arch_kwargs", "f1=3,f2=1,f3=3,n1=4,n2=2"},
                                             {"scale", "4"}, {"note", "x"}});
  const SrcnnModel m = SrcnnModel::load(path);
  EXPECT_EQ(m.scale(), 4);
  EXPECT_EQ(m.metadata().at("note"), "x");
  EXPECT_EQ(m.net()->state_dict().at("conv1.weight").shape(), (Shape{4, 1, 3, 3}));
  save_safetensors(path, net->state_dict(), {{"architecture", "tdsrnet"}, {"scale", "4"}});
  EXPECT_THROW(SrcnnModel::load(path), ValueError);
  save_safetensors(path, net->state_dict(), {{"architecture", "srcnn"}, {"arch_kwargs", "f1=3,f2=1,f3=3,n1=4,n2=2"}});
  EXPECT_THROW(SrcnnModel::load(path), ValueError);  // no scale
  save_safetensors(path, net->state_dict(), {{"architecture", "srcnn"}, {"scale", "4"}});
  EXPECT_THROW(SrcnnModel::load(path), ValueError);  // 9-5-5 defaults: every shape differs
  ::unlink(path.c_str());
}
