// Builds an SRCNN 9-5-5 network with the magmasr C++ API, runs it on an image buffer and prints the result.
// Usage: srcnn_example [image.pgm]   (binary 8-bit PGM; without one, a synthetic 96x80 test pattern)
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <magmasr/magmasr.hpp>

using namespace magmasr;

static bool read_pgm(const std::string& path, std::vector<float>& pixels, int& w, int& h) {
  std::ifstream f(path, std::ios::binary);
  std::string magic;
  int maxval = 0;
  if (!(f >> magic >> w >> h >> maxval) || magic != "P5" || maxval != 255 || w <= 0 || h <= 0) return false;
  f.get();
  std::vector<unsigned char> raw(size_t(w) * size_t(h));
  if (!f.read(reinterpret_cast<char*>(raw.data()), std::streamsize(raw.size()))) return false;
  pixels.assign(raw.begin(), raw.end());
  for (float& p : pixels) p /= 255.0f;
  return true;
}

int main(int argc, char** argv) {
  int w = 96, h = 80;
  std::vector<float> pixels;
  if (argc > 1) {
    if (!read_pgm(argv[1], pixels, w, h)) {
      std::cerr << "error: " << argv[1] << " is not a binary 8-bit PGM (P5, maxval 255)\n";
      return 2;
    }
  } else {
    pixels.resize(size_t(w) * size_t(h));
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        pixels[size_t(y) * size_t(w) + size_t(x)] = 0.5f + 0.5f * std::sin(0.2f * float(x)) * std::cos(0.15f * float(y));
  }

  try {
    // SRCNN 9-5-5 as the original authors apply it to whole images: 'same' output with replicate borders.
    Sequential model;
    model.add(std::make_shared<Conv2d>(1, 64, std::vector<int64_t>{9}, std::vector<int64_t>{4}, PadMode::Replicate),
              "conv1");
    model.add(std::make_shared<ReLU>(), "relu1");
    model.add(std::make_shared<Conv2d>(64, 32, std::vector<int64_t>{5}, std::vector<int64_t>{2}, PadMode::Replicate),
              "conv2");
    model.add(std::make_shared<ReLU>(), "relu2");
    model.add(std::make_shared<Conv2d>(32, 1, std::vector<int64_t>{5}, std::vector<int64_t>{2}, PadMode::Replicate),
              "conv3");

    const Device device = cuda_available() ? Device::cuda(0) : Device::cpu();
    model.to(device);
    std::cout << "magmasr " << MAGMASR_VERSION_STRING << " on " << device.str() << "\n";
    std::cout << model.summary({1, 1, h, w});

    Tensor x = Tensor::from_vector(pixels, {1, 1, h, w}, device);
    Tensor y = model.forward(x, /*training=*/false);
    std::vector<float> out = y.to_vector();
    double mn = out[0], mx = out[0], mean = 0;
    for (float v : out) {
      mn = std::min<double>(mn, v);
      mx = std::max<double>(mx, v);
      mean += v;
    }
    mean /= double(out.size());
    std::printf("input  %dx%d\noutput %s  min %.5f  max %.5f  mean %.5f\n", w, h, shape_str(y.shape()).c_str(), mn,
                mx, mean);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
