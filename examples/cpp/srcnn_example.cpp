// SRCNN with the magmasr C++ API.
//
// Usage:
//   srcnn_example                                     an untrained SRCNN 9-5-5 on a synthetic 96x80 pattern
//   srcnn_example IMAGE.pgm                           the same on a binary 8-bit PGM
//   srcnn_example WEIGHTS.safetensors IN.pgm OUT.pgm  upscales IN with trained weights, e.g. the shipped
//                                                     ${magmasr_WEIGHTS_DIR}/srcnn_x3.safetensors
//
// With weights, the architecture (f1, f2, f3, n1, n2) and the scale come from the file's metadata, and the
// picture goes through the SRCNN authors' protocol as magmasr.sr.ImageSR.upscale does for a gray picture:
// pixels / 255, MATLAB-compatible bicubic upscaling by the scale, the network ('same' output, replicate
// borders), clipped to [0, 1], x 255 rounded half away from zero. Runs on the GPU when one is usable.
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

struct Gray {
  int w = 0, h = 0;
  std::vector<unsigned char> pixels;  // row-major
};

// The next header token of a PGM, skipping whitespace and '#' comments.
std::string pgm_token(std::istream& f) {
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

// A binary 8-bit PGM (P5, maxval 255); ValueError naming the file otherwise.
Gray read_pgm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError(path + ": cannot open: " + std::strerror(errno), errno);
  Gray g;
  const std::string magic = pgm_token(f), ws = pgm_token(f), hs = pgm_token(f), maxval = pgm_token(f);
  try {
    g.w = std::stoi(ws), g.h = std::stoi(hs);
  } catch (const std::exception&) {
    g.w = g.h = 0;
  }
  MAGMASR_REQUIRE(magic == "P5" && maxval == "255" && g.w > 0 && g.h > 0 && g.w <= 1 << 16 && g.h <= 1 << 16,
                  ValueError, path, ": not a binary 8-bit PGM (P5, positive size, maxval 255)");
  g.pixels.resize(size_t(g.w) * size_t(g.h));
  MAGMASR_REQUIRE(f.read(reinterpret_cast<char*>(g.pixels.data()), std::streamsize(g.pixels.size())), ValueError,
                  path, ": the PGM ends before its ", g.w, "x", g.h, " pixels");
  return g;
}

// Written through magmasr::AtomicFile (a temporary file renamed into place): never a half-written picture.
void write_pgm(const std::string& path, const Gray& g) {
  AtomicFile f(path);
  f.write("P5\n" + std::to_string(g.w) + " " + std::to_string(g.h) + "\n255\n");
  f.write(g.pixels.data(), g.pixels.size());
  f.commit();
}

// SRCNN f1-f2-f3 with n1, n2 filters, as the original authors apply it to whole images: 'same' output with
// replicate borders (magmasr.models.srcnn).
std::shared_ptr<Sequential> srcnn(int64_t f1, int64_t f2, int64_t f3, int64_t n1, int64_t n2) {
  auto conv = [](int64_t cin, int64_t cout, int64_t f) {
    MAGMASR_REQUIRE(f >= 1 && f % 2 == 1, ValueError, "SRCNN: 'same' output needs odd kernel sizes, got ", f);
    return std::make_shared<Conv2d>(cin, cout, std::vector<int64_t>{f}, std::vector<int64_t>{(f - 1) / 2},
                                    PadMode::Replicate);
  };
  auto model = std::make_shared<Sequential>();
  model->add(conv(1, n1, f1), "conv1");
  model->add(std::make_shared<ReLU>(), "relu1");
  model->add(conv(n1, n2, f2), "conv2");
  model->add(std::make_shared<ReLU>(), "relu2");
  model->add(conv(n2, 1, f3), "conv3");
  return model;
}

// A whole decimal integer, or a ValueError naming what it is.
int64_t parse_int(const std::string& text, const std::string& what) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MAGMASR_REQUIRE(!text.empty() && used == text.size(), ValueError, what, ": expected an integer, got '", text, "'");
  return v;
}

// The SRCNN a weight file describes (metadata architecture = "srcnn", arch_kwargs "f1=9,f2=5,..." over the
// defaults 9-5-5 with 64 and 32 filters, scale), with its weights loaded.
std::shared_ptr<Sequential> load_srcnn(const std::string& path, int64_t& scale) {
  const TensorFile file = load_safetensors(path);
  const auto meta = [&](const std::string& key) {
    const auto it = file.metadata.find(key);
    MAGMASR_REQUIRE(it != file.metadata.end(), ValueError, path,
                    ": not a magmasr model file (the metadata has no '", key, "')");
    return it->second;
  };
  MAGMASR_REQUIRE(meta("architecture") == "srcnn", ValueError, path, ": architecture '", meta("architecture"),
                  "' is not 'srcnn'; this example runs SRCNN only");
  std::map<std::string, int64_t> kw{{"f1", 9}, {"f2", 5}, {"f3", 5}, {"n1", 64}, {"n2", 32}};
  const auto kwargs = file.metadata.count("arch_kwargs") ? file.metadata.at("arch_kwargs") : std::string();
  for (size_t start = 0; start < kwargs.size();) {
    const size_t end = std::min(kwargs.find(',', start), kwargs.size());
    const std::string item = kwargs.substr(start, end - start);
    const size_t eq = item.find('=');
    MAGMASR_REQUIRE(eq != std::string::npos && kw.count(item.substr(0, eq)), ValueError, path, ": arch_kwargs item '",
                    item, "' is not one of f1, f2, f3, n1, n2 = integer");
    kw[item.substr(0, eq)] = parse_int(item.substr(eq + 1), path + ": arch_kwargs " + item.substr(0, eq));
    start = end + 1;
  }
  scale = parse_int(meta("scale"), path + ": metadata scale");
  MAGMASR_REQUIRE(scale >= 1 && scale <= 16, ValueError, path, ": scale ", scale, " is not in 1..16");
  auto model = srcnn(kw["f1"], kw["f2"], kw["f3"], kw["n1"], kw["n2"]);
  try {
    model->load_state_dict(file.tensors);
  } catch (const ValueError& e) {
    throw ValueError(path + ": " + e.what());
  }
  return model;
}

// magmasr.sr.ImageSR.upscale for a gray picture.
Gray upscale(Sequential& model, const Gray& in, int64_t scale, const Device& device) {
  std::vector<float> x(in.pixels.size());
  std::transform(in.pixels.begin(), in.pixels.end(), x.begin(), [](unsigned char p) { return float(p) / 255.0f; });
  const int64_t h = in.h, w = in.w;
  Tensor t = Tensor::from_vector(x, {1, 1, h, w}, device);
  // MATLAB's imresize: the axis with the smaller scale first, rows on a tie; an unchanged axis is skipped.
  if (scale != 1) {
    t = ops::resample_axis(t, -2, ops::bicubic_table(h, h * scale, double(scale), device));
    t = ops::resample_axis(t, -1, ops::bicubic_table(w, w * scale, double(scale), device));
  }
  const std::vector<float> y = model.forward(t, /*training=*/false).to_vector();
  Gray out;
  out.w = int(w * scale), out.h = int(h * scale);
  out.pixels.resize(y.size());
  std::transform(y.begin(), y.end(), out.pixels.begin(), [](float v) {
    const double c = std::min(std::max(double(v), 0.0), 1.0);  // NaN stays NaN: 0 below
    return static_cast<unsigned char>(c > 0 ? std::floor(c * 255.0 + 0.5) : 0.0);
  });
  return out;
}

int run_with_weights(const std::string& weights, const std::string& in_path, const std::string& out_path) {
  int64_t scale = 0;
  auto model = load_srcnn(weights, scale);
  const Device device = cuda_available() ? Device::cuda(0) : Device::cpu();
  model->to(device);
  const Gray in = read_pgm(in_path);
  const Gray out = upscale(*model, in, scale, device);
  write_pgm(out_path, out);
  std::printf("%s: %dx%d -> %s: %dx%d (x%lld, %s)\n", in_path.c_str(), in.w, in.h, out_path.c_str(), out.w, out.h,
              static_cast<long long>(scale), device.str().c_str());
  return 0;
}

int run_untrained(int argc, char** argv) {
  Gray img;
  std::vector<float> pixels;
  if (argc > 1) {
    img = read_pgm(argv[1]);
    for (unsigned char p : img.pixels) pixels.push_back(float(p) / 255.0f);
  } else {
    img.w = 96, img.h = 80;
    pixels.resize(size_t(img.w) * size_t(img.h));
    for (int y = 0; y < img.h; ++y)
      for (int x = 0; x < img.w; ++x)
        pixels[size_t(y) * size_t(img.w) + size_t(x)] =
            0.5f + 0.5f * std::sin(0.2f * float(x)) * std::cos(0.15f * float(y));
  }
  const int64_t w = img.w, h = img.h;
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
  std::printf("input  %dx%d\noutput %s  min %.5f  max %.5f  mean %.5f\n", img.w, img.h, shape_str(y.shape()).c_str(),
              mn, mx, mean);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 1 && argc != 2 && argc != 4) {
    std::cerr << "usage: " << argv[0] << " [IMAGE.pgm]\n"
              << "       " << argv[0] << " WEIGHTS.safetensors IN.pgm OUT.pgm\n";
    return 2;
  }
  try {
    return argc == 4 ? run_with_weights(argv[1], argv[2], argv[3]) : run_untrained(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
