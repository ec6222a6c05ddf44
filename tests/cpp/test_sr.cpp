// magmasr::SrcnnModel: the whole-picture pipeline checked against independent computations. (Bit-for-bit
// agreement with the Python package's ImageSR.upscale is tested in tests/python/test_cpp_weights.py.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"
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
  EXPECT_NE(message(Picture(3, 5, 5), 0).find("expected 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels, got 5"),
            std::string::npos);
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

// ------------------------------------------------------------------------------ networks SrcnnModel refuses

namespace {

using test::says;
using test::value_error_of;

std::shared_ptr<Sequential> one_conv(int64_t cin, int64_t cout, std::vector<int64_t> k, std::vector<int64_t> p) {
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Conv2d>(cin, cout, std::move(k), std::move(p), PadMode::Replicate), "conv");
  return net;
}

// Random weights (the default initialisation is small and smooth; these make every tap matter).
void randomise(Sequential& net, std::mt19937& rng) {
  std::map<std::string, Tensor> state = net.state_dict();
  std::normal_distribution<float> d(0.0f, 0.3f);
  for (auto& [name, t] : state) {
    std::vector<float> v(size_t(t.numel()));
    for (auto& x : v) x = d(rng);
    state[name] = Tensor::from_vector(v, t.shape());
  }
  net.load_state_dict(state);
}

std::string temp_path(const std::string& tag) {
  return ::testing::TempDir() + "magmasr_sr_" + tag + "_" + std::to_string(::getpid()) + ".safetensors";
}

}  // namespace

// upscale() lays the network's output pixel for pixel over the bicubic picture: a network that changes a
// one-channel picture's shape used to be accepted and then read past the end of its output.
TEST(SrcnnModel, RefusesNetworksThatDoNotKeepAOneChannelPictureShape) {
  const std::string keep = "must map a one-channel picture [N, 1, H, W] to [N, 1, H, W]";
  const std::string valid = value_error_of([] { SrcnnModel(one_conv(1, 1, {9}, {0}), 2); });  // 'valid': shrinks
  EXPECT_TRUE(says(valid, keep)) << valid;
  const std::string grows = value_error_of([] { SrcnnModel(one_conv(1, 1, {3}, {2}), 2); });  // pads more than it eats
  EXPECT_TRUE(says(grows, keep) && says(grows, "to [1, 1, 3, 3]")) << grows;
  const std::string rgb_in = value_error_of([] { SrcnnModel(one_conv(3, 1, {3}, {1}), 2); });
  EXPECT_TRUE(says(rgb_in, keep) && says(rgb_in, "channels")) << rgb_in;
  const std::string two_out = value_error_of([] { SrcnnModel(one_conv(1, 2, {3}, {1}), 2); });
  EXPECT_TRUE(says(two_out, keep) && says(two_out, "to [1, 2, 1, 1]")) << two_out;
  auto shuffle = one_conv(1, 4, {3}, {1});
  shuffle->add(std::make_shared<PixelShuffle>(2), "shuffle");  // one channel out, twice the size
  EXPECT_TRUE(says(value_error_of([&] { SrcnnModel(shuffle, 2); }), keep));

  EXPECT_TRUE(says(value_error_of([] { SrcnnModel(std::make_shared<Sequential>(), 2); }), "no layers"));
  // What it accepts: any shape-keeping network (here one non-square convolution).
  SrcnnModel ok(one_conv(1, 1, {5, 3}, {2, 1}), 2);
  EXPECT_EQ(ok.upscale(Picture(4, 5, 1)).pixels.size(), 8u * 10u);
  // A network changed after the model was made is caught before its output is read.
  ok.net()->add(std::make_shared<Conv2d>(1, 1, std::vector<int64_t>{3}, std::vector<int64_t>{0}), "valid");
  EXPECT_TRUE(says(value_error_of([&] { ok.upscale(Picture(4, 5, 1)); }), "must keep a one-channel picture's shape"));
}

// The halo of a tile must cover every axis of every convolution: with kernels 9x1 and 3x1 an output pixel sees 5
// rows up and down and no column (the radius used to come from the last axis only: 0 here).
TEST(SrcnnModel, NonSquareKernelsAndNestedNetworksTileLikeTheWholePicture) {
  std::mt19937 rng(std::random_device{}());
  auto net = one_conv(1, 1, {9, 1}, {4, 0});
  net->add(std::make_shared<Conv2d>(1, 1, std::vector<int64_t>{3, 1}, std::vector<int64_t>{1, 0},
                                    PadMode::Replicate),
           "conv2");
  randomise(*net, rng);
  const SrcnnModel rows(net, 2);
  EXPECT_EQ(rows.receptive_radius(), 5);

  auto inner = one_conv(1, 1, {1, 7}, {0, 3});  // 3 columns each side, inside a nested Sequential
  auto outer = std::make_shared<Sequential>();
  outer->add(inner, "block").add(std::make_shared<ReLU>(), "relu");
  outer->add(std::make_shared<Conv2d>(1, 1, std::vector<int64_t>{1, 5}, std::vector<int64_t>{0, 2},
                                      PadMode::Replicate),
             "conv");
  randomise(*outer, rng);
  const SrcnnModel cols(outer, 3);
  EXPECT_EQ(cols.receptive_radius(), 5);

  for (const SrcnnModel* m : {&rows, &cols})
    for (int64_t ch : {1, 3}) {
      const Picture in = random_picture(rng, 7 + rng() % 9, 7 + rng() % 9, ch);
      const Picture whole = m->upscale(in);
      for (int64_t tile : {2, 4, 7, 9}) EXPECT_EQ(m->upscale(in, 0, tile).pixels, whole.pixels) << "tile " << tile;
    }
}

// Sizes from arguments and from the public Picture fields are checked products: unchecked, 2^32 x 2^32 wraps to 0
// (and matched an empty vector), 2^62 x 4 wraps as well.
TEST(SrcnnModel, SizesThatOverflowAreValueErrors) {
  const SrcnnModel m = identity_model(2);
  const std::string refine =
      value_error_of([&] { m.refine(std::vector<double>{}, int64_t(1) << 32, int64_t(1) << 32); });
  EXPECT_TRUE(says(refine, "SrcnnModel::refine: height * width") && says(refine, "overflows")) << refine;
  Picture p(4, 4, 1);
  p.height = int64_t(1) << 62;
  const std::string fields = value_error_of([&] { m.upscale(p); });
  EXPECT_TRUE(says(fields, "SrcnnModel::upscale: height * width") && says(fields, "overflows")) << fields;
  p.height = int64_t(1) << 31;
  p.width = int64_t(1) << 31;
  p.channels = 3;  // h * w fits, h * w * 3 does not
  EXPECT_TRUE(says(value_error_of([&] { m.upscale(p); }), "height * width * channels"));
  EXPECT_TRUE(says(value_error_of([&] { m.refine(std::vector<double>(5), 2, 2); }), "expected 2 x 2 values, got 5"));
}

// ------------------------------------------------------------------------------ weight files and metadata

// arch_kwargs come from the file: they are checked against the stored tensors before a network of that size is
// built (n1 = 4e9 or 2^62 used to allocate and randomly initialise gigabytes, or overflow, before any check).
TEST(SrcnnModel, LoadChecksArchKwargsAgainstTheStoredTensorsFirst) {
  const std::string path = temp_path("kwargs");
  const auto state = srcnn(3, 1, 3, 4, 2)->state_dict();
  auto load_with = [&](const std::string& kwargs) {
    save_safetensors(path, state, {{"architecture", "srcnn"}, {"arch_kwargs", kwargs}, {"scale", "2"}});
    return value_error_of([&] { SrcnnModel::load(path); });
  };
  for (const std::string n1 : {"4000000000", "4611686018427387904", "20000000"}) {
    const std::string m = load_with("f1=3,f2=1,f3=3,n1=" + n1 + ",n2=2");
    EXPECT_TRUE(says(m, path + ": tensor 'conv1.bias' has shape [4] but the metadata's srcnn(") &&
                says(m, "n1=" + n1))
        << m;
  }
  const std::string f1 = load_with("f1=2000001,f2=1,f3=3,n1=4,n2=2");
  EXPECT_TRUE(says(f1, path + ": tensor 'conv1.weight' has shape [4, 1, 3, 3]") && says(f1, "[4, 1, 2000001, 2000001]"))
      << f1;
  EXPECT_TRUE(says(load_with("f1=4,f2=1,f3=3,n1=4,n2=2"), "f1=4: SRCNN kernel sizes must be odd"));
  EXPECT_TRUE(says(load_with("f1=3,f2=1,f3=3,n1=0,n2=2"), "n1=0: filter counts must be positive"));
  EXPECT_TRUE(says(load_with("f1=3,f2=1,f3=3,n1=99999999999999999999,n2=2"), "expected an integer"));
  EXPECT_TRUE(says(load_with("f1=3,f2=1,f3=3,n1= 4,n2=2"), "expected an integer"));  // Python reads ' 4' as text
  save_safetensors(path, {{"conv1.weight", state.at("conv1.weight")}},
                   {{"architecture", "srcnn"}, {"arch_kwargs", "f1=3,f2=1,f3=3,n1=4,n2=2"}, {"scale", "2"}});
  EXPECT_TRUE(says(value_error_of([&] { SrcnnModel::load(path); }), "no tensor 'conv1.bias'"));
  EXPECT_EQ(load_with("f1=3,f2=1,f3=3,n1=4,n2=2"), "no ValueError");
  ::unlink(path.c_str());
}

// What Python's SRModel.save writes for ImageSR.srcnn('9-1-5', 3, seed=2) (and padding / padding_mode when given):
// sorted "key=value" items, seed included. C++ reads it; seed is ignored (the file's weights replace the initial
// ones) and padding / padding_mode must be what upscale() computes.
TEST(SrcnnModel, LoadsTheArchKwargsPythonWrites) {
  std::mt19937 rng(std::random_device{}());
  const std::string path = temp_path("python");
  auto net = srcnn(3, 1, 3, 4, 2);
  randomise(*net, rng);
  const Picture in = random_picture(rng, 9, 11, 3);
  const Picture expected = SrcnnModel(net, 3).upscale(in);
  auto load_with = [&](const std::string& kwargs) {
    save_safetensors(path, net->state_dict(), {{"architecture", "srcnn"}, {"arch_kwargs", kwargs}, {"scale", "3"}});
    return SrcnnModel::load(path);
  };
  for (const std::string kwargs :
       {"f1=3,f2=1,f3=3,n1=4,n2=2,seed=2", "f1=3,f2=1,f3=3,n1=4,n2=2,padding=same,padding_mode=replicate,seed=-7",
        "f1=3,f2=1,f3=3,n1=4,n2=2,"})
    EXPECT_EQ(load_with(kwargs).upscale(in).pixels, expected.pixels) << kwargs;
  auto message = [&](const std::string& kwargs) { return value_error_of([&] { load_with(kwargs); }); };
  const std::string valid = message("f1=3,f2=1,f3=3,n1=4,n2=2,padding=valid");
  EXPECT_TRUE(says(valid, path + ": arch_kwargs padding=valid: SrcnnModel needs padding=same")) << valid;
  const std::string zeros = message("f1=3,f2=1,f3=3,n1=4,n2=2,padding_mode=zeros");
  EXPECT_TRUE(says(zeros, "padding_mode=zeros: SrcnnModel supports padding_mode=replicate only")) << zeros;
  EXPECT_TRUE(says(message("f1=3,f2=1,f3=3,n1=4,n2=2,seed=two"), "arch_kwargs seed: expected an integer"));
  EXPECT_TRUE(says(message("f1=3,f2=1,f3=3,n1=4,n2=2,fb=1"), "arch_kwargs item 'fb=1' is not one of"));
  ::unlink(path.c_str());
}

// SrcnnModel::save writes what Python's SRModel.save writes (architecture, arch_kwargs in _format_kwargs' format,
// scale, the model's metadata and the caller's), so SrcnnModel::load and Python's ImageSR.load read it back.
TEST(SrcnnModel, SaveWritesAFileLoadRebuildsBitForBit) {
  std::mt19937 rng(std::random_device{}());
  const std::string path = temp_path("save");
  auto net = srcnn(5, 1, 3, 6, 3);
  randomise(*net, rng);
  const SrcnnModel model(net, 3, {{"note", "mine"}, {"scale", "9"}, {"arch_kwargs", "stale"}});
  model.save(path, {{"source", "test"}, {"architecture", "ignored"}});
  const TensorFile file = load_safetensors(path);
  const std::map<std::string, std::string> expected{{"architecture", "srcnn"},
                                                    {"arch_kwargs", "f1=5,f2=1,f3=3,n1=6,n2=3"},
                                                    {"scale", "3"},
                                                    {"note", "mine"},
                                                    {"source", "test"}};
  EXPECT_EQ(file.metadata, expected);
  const SrcnnModel back = SrcnnModel::load(path);
  EXPECT_EQ(back.scale(), 3);
  for (const auto& [name, t] : net->state_dict()) EXPECT_EQ(back.net()->state_dict().at(name).to_vector(), t.to_vector()) << name;
  for (int64_t ch : {1, 3}) {
    const Picture in = random_picture(rng, 8 + rng() % 8, 8 + rng() % 8, ch);
    EXPECT_EQ(back.upscale(in).pixels, model.upscale(in).pixels);
  }
  // A network no loader could rebuild from arch_kwargs is refused, and nothing is written.
  ::unlink(path.c_str());
  const std::string other = value_error_of([&] { SrcnnModel(one_conv(1, 1, {3}, {1}), 2).save(path); });
  EXPECT_TRUE(says(other, "SrcnnModel::save: " + path + ": the network is not an SRCNN")) << other;
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}
