// SRCNN with the magmasr C++ API.
//
// Usage:
//   srcnn_example                                     an untrained SRCNN 9-5-5 on a synthetic 96x80 pattern
//   srcnn_example IMAGE.pgm                           the same on a binary 8-bit PGM
//   srcnn_example WEIGHTS.safetensors IN OUT          upscales IN (a binary 8-bit PGM, gray, or PPM, RGB) into
//                                                     OUT (the same kind) with trained weights, e.g. the shipped
//                                                     ${magmasr_WEIGHTS_DIR}/srcnn_x3.safetensors
//
// With weights, magmasr::SrcnnModel does the work: the architecture and the scale come from the file's
// metadata, and the picture goes through the SRCNN authors' protocol exactly as magmasr.sr.ImageSR.upscale
// does it in Python (the same pixels, bit for bit, on the CPU): Y of YCbCr through the network, CbCr bicubic.
// The network runs on the GPU when one is usable.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <magmasr/magmasr.hpp>

using namespace magmasr;

namespace {

// The next header token of a PGM or PPM, skipping whitespace and '#' comments.
std::string pnm_token(std::istream& f) {
  std::string tok;
  int c;
  while ((c = f.get()) != EOF) {
    if (c == '#') {
      while ((c = f.get()) != EOF && c != '\n') {
      }
    } else if (std::isspace(c)) {
      if (!tok.empty()) break;
    } else {
      tok += char(c);
    }
  }
  return tok;
}

// A binary 8-bit PGM (P5, gray) or PPM (P6, RGB) with maxval 255; ValueError naming the file otherwise.
Picture read_pnm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError(path + ": cannot open: " + std::strerror(errno), errno);
  const std::string magic = pnm_token(f), ws = pnm_token(f), hs = pnm_token(f), maxval = pnm_token(f);
  int64_t w = 0, h = 0;
  try {
    w = std::stoll(ws), h = std::stoll(hs);
  } catch (const std::exception&) {
    w = h = 0;
  }
  MAGMASR_REQUIRE((magic == "P5" || magic == "P6") && maxval == "255" && w > 0 && h > 0 && w <= 1 << 16 &&
                      h <= 1 << 16,
                  ValueError, path, ": not a binary 8-bit PGM or PPM (P5 or P6, positive size, maxval 255)");
  Picture p(h, w, magic == "P6" ? 3 : 1);
  MAGMASR_REQUIRE(f.read(reinterpret_cast<char*>(p.pixels.data()), std::streamsize(p.pixels.size())), ValueError,
                  path, ": the file ends before its ", w, "x", h, " pixels");
  return p;
}

// Written through magmasr::AtomicFile (a temporary file renamed into place): never a half-written picture.
void write_pnm(const std::string& path, const Picture& p) {
  AtomicFile f(path);
  f.write(std::string(p.channels == 3 ? "P6" : "P5") + "\n" + std::to_string(p.width) + " " +
          std::to_string(p.height) + "\n255\n");
  f.write(p.pixels.data(), p.pixels.size());
  f.commit();
}

int run_with_weights(const std::string& weights, const std::string& in_path, const std::string& out_path) {
  SrcnnModel model = SrcnnModel::load(weights);
  const Device device = cuda_available() ? Device::cuda(0) : Device::cpu();
  model.to(device);
  const Picture in = read_pnm(in_path);
  const Picture out = model.upscale(in);
  write_pnm(out_path, out);
  std::printf("%s: %lldx%lld -> %s: %lldx%lld (x%lld, %s)\n", in_path.c_str(), static_cast<long long>(in.width),
              static_cast<long long>(in.height), out_path.c_str(), static_cast<long long>(out.width),
              static_cast<long long>(out.height), static_cast<long long>(model.scale()), device.str().c_str());
  return 0;
}

int run_untrained(int argc, char** argv) {
  int64_t w = 96, h = 80;
  std::vector<float> pixels;
  if (argc > 1) {
    const Picture img = read_pnm(argv[1]);
    MAGMASR_REQUIRE(img.channels == 1, ValueError, argv[1], ": the untrained demo takes a gray PGM");
    w = img.width, h = img.height;
    for (unsigned char p : img.pixels) pixels.push_back(float(p) / 255.0f);
  } else {
    pixels.resize(size_t(w * h));
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        pixels[size_t(y * w + x)] = 0.5f + 0.5f * std::sin(0.2f * float(x)) * std::cos(0.15f * float(y));
  }
  auto model = srcnn(9, 5, 5, 64, 32);
  const Device device = cuda_available() ? Device::cuda(0) : Device::cpu();
  model->to(device);
  std::cout << "magmasr " << MAGMASR_VERSION_STRING << " on " << device.str() << "\n";
  std::cout << model->summary({1, 1, h, w});

  Tensor x = Tensor::from_vector(pixels, {1, 1, h, w}, device);
  Tensor y = model->forward(x, /*training=*/false);
  std::vector<float> out = y.to_vector();
  double mn = out[0], mx = out[0], mean = 0;
  for (float v : out) {
    mn = std::min<double>(mn, v);
    mx = std::max<double>(mx, v);
    mean += v;
  }
  mean /= double(out.size());
  std::printf("input  %lldx%lld\noutput %s  min %.5f  max %.5f  mean %.5f\n", static_cast<long long>(w),
              static_cast<long long>(h), shape_str(y.shape()).c_str(), mn, mx, mean);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 1 && argc != 2 && argc != 4) {
    std::cerr << "usage: " << argv[0] << " [IMAGE.pgm]\n"
              << "       " << argv[0] << " WEIGHTS.safetensors IN.pgm|IN.ppm OUT.pgm|OUT.ppm\n";
    return 2;
  }
  try {
    return argc == 4 ? run_with_weights(argv[1], argv[2], argv[3]) : run_untrained(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
