// SrcnnModel: magmasr.sr.ImageSR.upscale in C++. Every host step mirrors the Python package's arithmetic
// operation by operation (double precision, the same order of products and sums), and this file is compiled
// without floating-point contraction (no fused multiply-adds: NumPy rounds each product and each sum), so that
// on the CPU the pictures are the Python package's bit for bit (tests/python/test_cpp_weights.py checks it).
#include "magmasr/sr.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <numeric>
#include <utility>

#include "cpu/image.hpp"
#include "magmasr/error.hpp"
#include "magmasr/ops.hpp"
#include "magmasr/safetensors.hpp"

namespace magmasr {
namespace {

using detail::cat;

// MATLAB rgb2ycbcr's BT.601 studio-range matrix and offset (0..255 units), as magmasr.image.
constexpr double kYcc[3][3] = {{65.481, 128.553, 24.966}, {-37.797, -74.203, 112.0}, {112.0, -93.786, -18.214}};
constexpr double kYccOffset[3] = {16.0, 128.0, 128.0};

struct Inverse {
  double m[3][3];
  double offset[3];  // inv(kYcc) @ kYccOffset
};

// magmasr.image._inverse3 and _ycbcr_inverse, formula for formula.
Inverse ycc_inverse() {
  const auto& a = kYcc;
  const double adj[3][3] = {
      {a[1][1] * a[2][2] - a[1][2] * a[2][1], a[0][2] * a[2][1] - a[0][1] * a[2][2],
       a[0][1] * a[1][2] - a[0][2] * a[1][1]},
      {a[1][2] * a[2][0] - a[1][0] * a[2][2], a[0][0] * a[2][2] - a[0][2] * a[2][0],
       a[0][2] * a[1][0] - a[0][0] * a[1][2]},
      {a[1][0] * a[2][1] - a[1][1] * a[2][0], a[0][1] * a[2][0] - a[0][0] * a[2][1],
       a[0][0] * a[1][1] - a[0][1] * a[1][0]}};
  const double det = a[0][0] * adj[0][0] + a[0][1] * adj[1][0] + a[0][2] * adj[2][0];
  Inverse inv{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) inv.m[i][j] = adj[i][j] / det;
  for (int i = 0; i < 3; ++i)
    inv.offset[i] = inv.m[i][0] * kYccOffset[0] + inv.m[i][1] * kYccOffset[1] + inv.m[i][2] * kYccOffset[2];
  return inv;
}

// Output samples [o0, o1) of one axis of MATLAB's imresize, on a planar double image [planes, rows, cols] whose
// first row (axis 0) or column (axis 1) is input sample `in0`: the table's rows o0..o1, shifted to the block,
// through the kernel of magmasr.image.resize_along_axis (the same sums whatever the region).
std::vector<double> resample(const std::vector<double>& x, int64_t planes, int64_t rows, int64_t cols, int axis,
                             const ops::HostResampleTable& t, int64_t o0, int64_t o1, int64_t in0) {
  std::vector<int32_t> idx(t.indices.begin() + o0 * t.taps, t.indices.begin() + o1 * t.taps);
  for (int32_t& i : idx) i -= int32_t(in0);
  const double* w = t.weights.data() + o0 * t.taps;
  const int64_t n = o1 - o0;
  std::vector<double> y(size_t(planes * (axis == 0 ? n * cols : rows * n)));
  if (axis == 0)  // [planes, rows, cols] along rows
    cpu::resample_host(planes, rows, cols, n, t.taps, w, idx.data(), x.data(), y.data());
  else  // [planes * rows, cols, 1] along columns
    cpu::resample_host(planes * rows, cols, int64_t(1), n, t.taps, w, idx.data(), x.data(), y.data());
  return y;
}

// The input samples [first, last + 1) that output samples [o0, o1) of a table read.
std::pair<int64_t, int64_t> input_range(const ops::HostResampleTable& t, int64_t o0, int64_t o1) {
  int64_t lo = t.in_len, hi = 0;
  for (int64_t k = o0 * t.taps; k < o1 * t.taps; ++k) {
    lo = std::min<int64_t>(lo, t.indices[size_t(k)]);
    hi = std::max<int64_t>(hi, t.indices[size_t(k)] + 1);
  }
  return {lo, hi};
}

// magmasr.image.to_uint8 of a value already clipped to [0, 1]: x 255, rounded half away from zero (NaN: 0).
uint8_t to_uint8(double v) { return cpu::saturate_uint8(v * 255.0); }


// An integer as Python's _parse_kwargs reads one (an optional '-', then digits only), in range.
int64_t parse_int(const std::string& text, const std::string& what) {
  const size_t digits = text.size() - (text.empty() || text[0] != '-' ? 0 : 1);
  bool ok = digits > 0 && std::all_of(text.end() - std::ptrdiff_t(digits), text.end(),
                                      [](char c) { return c >= '0' && c <= '9'; });
  int64_t v = 0;
  if (ok) {
    try {
      v = std::stoll(text);
    } catch (const std::exception&) {
      ok = false;
    }
  }
  MAGMASR_REQUIRE(ok, ValueError, what, ": expected an integer, got '", text, "'");
  return v;
}

// Every convolution of a network, nested Sequentials included, in order.
void for_each_conv(Layer& layer, const std::function<void(Conv&)>& f) {
  if (auto* conv = dynamic_cast<Conv*>(&layer)) {
    f(*conv);
  } else if (auto* seq = dynamic_cast<Sequential*>(&layer)) {
    for (size_t i = 0; i < seq->size(); ++i) for_each_conv(*seq->at(i), f);
  }
}

// The conv layer `name` of an SRCNN network, or nullptr when it is not a 2-D convolution with biases, a square odd
// kernel and 'same' replicate padding (what srcnn() builds and Python's models.srcnn builds by default).
Conv* srcnn_conv(Sequential& net, const std::string& name) {
  std::shared_ptr<Layer> layer;
  try {
    layer = net.get(name);
  } catch (const ValueError&) {
    return nullptr;
  }
  auto* conv = dynamic_cast<Conv*>(layer.get());
  if (conv == nullptr || conv->spatial_dims() != 2 || !conv->has_bias() || conv->pad_mode() != PadMode::Replicate)
    return nullptr;
  const auto& k = conv->kernel();
  const auto& p = conv->padding();
  if (k.size() != 2 || k[0] != k[1] || k[0] % 2 != 1 || p.size() != 2 || p[0] != (k[0] - 1) / 2 || p[1] != p[0])
    return nullptr;
  return conv;
}

// An SRCNN's arch_kwargs, in Python's format (_format_kwargs: "key=value" sorted by key, joined by commas).
std::string format_kwargs(const std::map<std::string, int64_t>& kw) {
  std::string out;
  for (const auto& [k, v] : kw) out += (out.empty() ? "" : ",") + k + "=" + std::to_string(v);
  return out;
}

}  // namespace

Picture::Picture(int64_t h, int64_t w, int64_t c) : height(h), width(w), channels(c) {
  MAGMASR_REQUIRE(h >= 0 && w >= 0 && c >= 0 && (h == 0 || w == 0 || c == 0 || h <= (int64_t(1) << 40) / w / c),
                  ValueError, "Picture: a ", h, " x ", w, " x ", c, " picture");
  pixels.resize(size_t(h * w * c));
}

std::shared_ptr<Sequential> srcnn(int64_t f1, int64_t f2, int64_t f3, int64_t n1, int64_t n2) {
  auto conv = [](int64_t cin, int64_t cout, int64_t f) {
    MAGMASR_REQUIRE(f >= 1 && f % 2 == 1, ValueError, "SRCNN: 'same' output needs odd kernel sizes, got ", f);
    return std::make_shared<Conv2d>(cin, cout, std::vector<int64_t>{f}, std::vector<int64_t>{(f - 1) / 2},
                                    PadMode::Replicate);
  };
  MAGMASR_REQUIRE(n1 >= 1 && n2 >= 1, ValueError, "SRCNN: filter counts must be positive, got ", n1, " and ", n2);
  auto model = std::make_shared<Sequential>();
  model->add(conv(1, n1, f1), "conv1");
  model->add(std::make_shared<ReLU>(), "relu1");
  model->add(conv(n1, n2, f2), "conv2");
  model->add(std::make_shared<ReLU>(), "relu2");
  model->add(conv(n2, 1, f3), "conv3");
  return model;
}

SrcnnModel::SrcnnModel(std::shared_ptr<Sequential> net, int64_t scale, std::map<std::string, std::string> metadata)
    : net_(std::move(net)), scale_(scale), metadata_(std::move(metadata)) {
  MAGMASR_REQUIRE(net_ != nullptr, ValueError, "SrcnnModel: no network");
  MAGMASR_REQUIRE(scale_ >= 1 && scale_ <= 16, ValueError, "SrcnnModel: scale ", scale_, " is not in 1..16");
  MAGMASR_REQUIRE(net_->size() > 0, ValueError, "SrcnnModel: the network has no layers");
  // upscale() puts the network's output pixel for pixel over the bicubic picture: it must keep a one-channel
  // picture's shape. Stride-1 convolutions change each size by a constant, so two probes (one of a single pixel,
  // which a shrinking 'valid' convolution cannot take) cover every size.
  for (const Shape& probe : {Shape{1, 1, 1, 1}, Shape{1, 1, 19, 23}}) {
    Shape out;
    try {
      out = net_->output_shape(probe);
    } catch (const std::invalid_argument& e) {
      throw ValueError(cat("SrcnnModel: the network must map a one-channel picture [N, 1, H, W] to [N, 1, H, W], "
                           "but it cannot take ", shape_str(probe), ": ", e.what()));
    }
    MAGMASR_REQUIRE(out == probe, ValueError,
                    "SrcnnModel: the network must map a one-channel picture [N, 1, H, W] to [N, 1, H, W], but it maps ",
                    shape_str(probe), " to ", shape_str(out));
  }
  if (device().is_cpu()) for_each_conv(*net_, [](Conv& conv) { conv.set_algo(ConvAlgo::Winograd); });
}

SrcnnModel SrcnnModel::load(const std::string& path) {
  TensorFile file = load_safetensors(path);
  const auto meta = [&](const std::string& key) {
    const auto it = file.metadata.find(key);
    MAGMASR_REQUIRE(it != file.metadata.end(), ValueError, path,
                    ": not a magmasr model file (the metadata has no '", key, "')");
    return it->second;
  };
  MAGMASR_REQUIRE(meta("architecture") == "srcnn", ValueError, path, ": architecture '", meta("architecture"),
                  "' is not 'srcnn'");
  // arch_kwargs as Python's _format_kwargs writes them ("f1=9,n1=64,seed=2": sorted "key=value", empty items
  // skipped as _parse_kwargs does) over models.srcnn's defaults. seed only chose the initial weights, which the
  // file replaces; padding and padding_mode must be what upscale() needs ('same' output, replicate borders).
  std::map<std::string, int64_t> kw{{"f1", 9}, {"f2", 5}, {"f3", 5}, {"n1", 64}, {"n2", 32}};
  const auto kwargs = file.metadata.count("arch_kwargs") ? file.metadata.at("arch_kwargs") : std::string();
  for (size_t start = 0; start <= kwargs.size();) {
    const size_t end = std::min(kwargs.find(',', start), kwargs.size());
    const std::string item = kwargs.substr(start, end - start);
    start = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, std::min(eq, item.size())),
                      value = eq == std::string::npos ? std::string() : item.substr(eq + 1);
    MAGMASR_REQUIRE(eq != std::string::npos && (kw.count(key) || key == "seed" || key == "padding" ||
                                                 key == "padding_mode"),
                    ValueError, path, ": arch_kwargs item '", item,
                    "' is not one of f1, f2, f3, n1, n2, seed = integer, padding = same, padding_mode = replicate");
    if (key == "padding") {
      MAGMASR_REQUIRE(value == "same", ValueError, path, ": arch_kwargs padding=", value,
                      ": SrcnnModel needs padding=same (an output the size of its input)",
                      value == "valid" ? "; a 'valid' SRCNN is for training on patches" : "");
    } else if (key == "padding_mode") {
      MAGMASR_REQUIRE(value == "replicate", ValueError, path, ": arch_kwargs padding_mode=", value,
                      ": SrcnnModel supports padding_mode=replicate only (the original SRCNN's borders)");
    } else if (key == "seed") {
      parse_int(value, path + ": arch_kwargs seed");  // an integer, as Python writes it; the weights are the file's
    } else {
      kw[key] = parse_int(value, path + ": arch_kwargs " + key);
    }
  }
  const int64_t scale = parse_int(meta("scale"), path + ": metadata scale");
  MAGMASR_REQUIRE(scale >= 1 && scale <= 16, ValueError, path, ": scale ", scale, " is not in 1..16");
  // The sizes come from the file: check them against the stored tensors before building (and allocating and
  // initialising) a network of that size. A match bounds the network by the file's own size.
  for (const char* f : {"f1", "f2", "f3"})
    MAGMASR_REQUIRE(kw[f] >= 1 && kw[f] % 2 == 1, ValueError, path, ": arch_kwargs ", f, "=", kw[f],
                    ": SRCNN kernel sizes must be odd and positive ('same' output)");
  for (const char* n : {"n1", "n2"})
    MAGMASR_REQUIRE(kw[n] >= 1, ValueError, path, ": arch_kwargs ", n, "=", kw[n], ": filter counts must be positive");
  const std::map<std::string, Shape> expected{
      {"conv1.weight", {kw["n1"], 1, kw["f1"], kw["f1"]}}, {"conv1.bias", {kw["n1"]}},
      {"conv2.weight", {kw["n2"], kw["n1"], kw["f2"], kw["f2"]}}, {"conv2.bias", {kw["n2"]}},
      {"conv3.weight", {1, kw["n2"], kw["f3"], kw["f3"]}}, {"conv3.bias", {1}}};
  const std::string arch = cat("srcnn(", format_kwargs(kw), ")");
  for (const auto& [name, shape] : expected) {
    const auto it = file.tensors.find(name);
    MAGMASR_REQUIRE(it != file.tensors.end(), ValueError, path, ": no tensor '", name, "' (the metadata says ", arch,
                    ")");
    MAGMASR_REQUIRE(it->second.shape() == shape, ValueError, path, ": tensor '", name, "' has shape ",
                    shape_str(it->second.shape()), " but the metadata's ", arch, " needs ", shape_str(shape));
  }
  auto net = srcnn(kw["f1"], kw["f2"], kw["f3"], kw["n1"], kw["n2"]);
  try {
    net->load_state_dict(file.tensors);
  } catch (const ValueError& e) {
    throw ValueError(path + ": " + e.what());
  }
  return SrcnnModel(net, scale, std::move(file.metadata));
}

void SrcnnModel::save(const std::string& path, const std::map<std::string, std::string>& extra) const {
  // The architecture is read off the network (not the metadata, which may be stale or absent).
  Conv *c1 = srcnn_conv(*net_, "conv1"), *c2 = srcnn_conv(*net_, "conv2"), *c3 = srcnn_conv(*net_, "conv3");
  const bool layout = net_->size() == 5 && net_->name_at(0) == "conv1" && net_->name_at(1) == "relu1" &&
                      net_->name_at(2) == "conv2" && net_->name_at(3) == "relu2" && net_->name_at(4) == "conv3" &&
                      dynamic_cast<ReLU*>(net_->at(1).get()) && dynamic_cast<ReLU*>(net_->at(3).get());
  MAGMASR_REQUIRE(layout && c1 && c2 && c3 && c1->in_channels() == 1 && c2->in_channels() == c1->out_channels() &&
                      c3->in_channels() == c2->out_channels() && c3->out_channels() == 1,
                  ValueError, "SrcnnModel::save: ", path,
                  ": the network is not an SRCNN (conv1 relu1 conv2 relu2 conv3, square odd kernels with 'same' "
                  "replicate padding and biases, 1 -> n1 -> n2 -> 1 channels): no loader could rebuild it");
  const std::map<std::string, int64_t> kw{{"f1", c1->kernel()[0]}, {"f2", c2->kernel()[0]}, {"f3", c3->kernel()[0]},
                                          {"n1", c1->out_channels()}, {"n2", c2->out_channels()}};
  // As Python's SRModel.save: the model's metadata, then the caller's, then the architecture and the scale.
  std::map<std::string, std::string> meta = metadata_;
  for (const auto& [k, v] : extra) meta[k] = v;
  meta["architecture"] = "srcnn";
  meta["arch_kwargs"] = format_kwargs(kw);
  meta["scale"] = std::to_string(scale_);
  save_safetensors(path, net_->state_dict(), meta);
}

SrcnnModel& SrcnnModel::to(const Device& device) {
  net_->to(device);
  // On a GPU, the fastest of the direct kernels: one summation order per output pixel whatever the block or the
  // kernel, so tiles give the whole picture's pixels (the 'auto' selector may pick cuBLAS for some block shapes
  // and not others). On the CPU, Winograd where it applies (upscale cuts its tiles on its grid).
  const ConvAlgo algo = device.is_cuda() ? ConvAlgo::AutoDirect : ConvAlgo::Winograd;
  for_each_conv(*net_, [algo](Conv& conv) { conv.set_algo(algo); });
  return *this;
}

SrcnnModel::TileGrid SrcnnModel::tile_grid() const {
  TileGrid grid;
  if (!device().is_cpu()) return grid;
  for_each_conv(*net_, [&grid](Conv& conv) {
    const auto& k = conv.kernel();
    const int m = conv.algo() == ConvAlgo::Winograd && k.size() == 2 && k[0] == k[1]
                      ? winograd_tile(k[0], conv.in_channels(), conv.out_channels())
                      : 0;
    if (m > 0) grid.align = std::lcm(grid.align, int64_t(m)), grid.extra += m - 1;
  });
  return grid;
}

Device SrcnnModel::device() const {
  const auto params = net_->parameters();
  return params.empty() ? Device::cpu() : params.front()->value.device();
}

std::vector<float> SrcnnModel::refine(const std::vector<double>& y, int64_t height, int64_t width) const {
  MAGMASR_REQUIRE(height >= 1 && width >= 1, ValueError, "SrcnnModel::refine: expected a positive size, got ", height,
                  " x ", width);
  MAGMASR_REQUIRE(int64_t(y.size()) == detail::checked_mul(height, width, "SrcnnModel::refine: height * width"),
                  ValueError, "SrcnnModel::refine: expected ", height, " x ", width, " values, got ", y.size());
  std::vector<float> x(y.size());
  std::transform(y.begin(), y.end(), x.begin(), [](double v) { return float(v); });
  const Shape shape{1, 1, height, width};
  const Tensor out = net_->forward(Tensor::from_vector(x, shape, device()), /*training=*/false);
  // The constructor checked the network; this catches one changed afterwards (net() is not const).
  MAGMASR_REQUIRE(out.shape() == shape, ValueError, "SrcnnModel::refine: the network gave ", shape_str(out.shape()),
                  " for ", shape_str(shape), "; it must keep a one-channel picture's shape");
  return out.to_vector();
}

int64_t SrcnnModel::receptive_radius() const {
  // Per axis, how far the convolutions reach beyond an output pixel; a network that keeps the picture's size has
  // padding (k - 1) / 2 on both sides of each kernel, but the larger side is taken in any case.
  int64_t rows = 0, cols = 0;
  for_each_conv(*net_, [&](Conv& conv) {
    const auto& k = conv.kernel();
    const auto& p = conv.padding();
    const size_t n = k.size();
    rows += std::max(p[n - 2], k[n - 2] - 1 - p[n - 2]);
    cols += std::max(p[n - 1], k[n - 1] - 1 - p[n - 1]);
  });
  return std::max(rows, cols);
}

Picture SrcnnModel::upscale(const Picture& in, int64_t scale, int64_t tile) const {
  const int64_t s = scale == 0 ? scale_ : scale;
  const int64_t h = in.height, w = in.width, ch = in.channels;
  MAGMASR_REQUIRE(h >= 1 && w >= 1, ValueError, "SrcnnModel::upscale: an empty picture (", h, " x ", w, ")");
  MAGMASR_REQUIRE(ch >= 1 && ch <= 4, ValueError,
                  "SrcnnModel::upscale: expected 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels, got ", ch);
  const int64_t samples = detail::checked_mul(detail::checked_mul(h, w, "SrcnnModel::upscale: height * width"), ch,
                                              "SrcnnModel::upscale: height * width * channels");
  MAGMASR_REQUIRE(int64_t(in.pixels.size()) == samples, ValueError, "SrcnnModel::upscale: a ", h, " x ", w, " x ",
                  ch, " picture has ", samples, " samples, got ", in.pixels.size());
  MAGMASR_REQUIRE(s >= 1 && s <= 16, ValueError, "SrcnnModel::upscale: scale ", s, " is not in 1..16");
  MAGMASR_REQUIRE(tile >= 0, ValueError, "SrcnnModel::upscale: tile must be >= 0 (0: the whole picture), got ", tile);

  // With alpha, the colour under fully transparent pixels is first spread from the visible ones (as
  // magmasr.sr.ImageSR.upscale_tiles does: no dark fringes from the black a file stores there).
  std::vector<uint8_t> bled;
  const uint8_t* pixels = in.pixels.data();
  if (ch == 2 || ch == 4) {
    bled = in.pixels;
    cpu::bleed_transparent(bled.data(), h, w, ch);
    pixels = bled.data();
  }
  // Planar double channels / 255: gray, or Y, Cb, Cr (magmasr.image.rgb2ycbcr on floats), then the alpha
  // channel if there is one (upscaled bicubically as CbCr, as magmasr.sr.ImageSR.upscale_tiles does).
  const int64_t n = h * w, colours = ch >= 3 ? 3 : 1;
  std::vector<double> planes(size_t(ch * n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* px = pixels + ch * i;
    if (colours == 1) {
      planes[size_t(i)] = double(px[0]) / 255.0;
    } else {
      const double r = double(px[0]) / 255.0, g = double(px[1]) / 255.0, b = double(px[2]) / 255.0;
      for (int k = 0; k < 3; ++k)
        planes[size_t(k * n + i)] =
            r * (kYcc[k][0] / 255.0) + g * (kYcc[k][1] / 255.0) + b * (kYcc[k][2] / 255.0) + kYccOffset[k] / 255.0;
    }
    if (ch > colours) planes[size_t(colours * n + i)] = double(px[colours]) / 255.0;
  }
  const int64_t H = h * s, W = w * s;
  const ops::HostResampleTable rows = ops::bicubic_contributions(h, H, double(s)),
                               cols = ops::bicubic_contributions(w, W, double(s));
  static const Inverse inv = ycc_inverse();
  Picture out(H, W, ch);
  // With Winograd layers (the CPU's default), a block starts on their grid of output tiles and reads m - 1 more
  // pixels of halo per such layer (an output's bits depend on its whole tile's input window), so that tiles
  // still give the whole picture's pixels.
  const TileGrid grid = tile_grid();
  const int64_t t = tile == 0 ? std::max(H, W) : tile, halo = receptive_radius() + grid.extra;
  const auto start = [&](int64_t p) { return std::max<int64_t>((p - halo) / grid.align * grid.align, 0); };
  // Tile by tile (magmasr.sr.ImageSR.upscale_tiles): each block of output pixels from the bicubic upscale of
  // the block and a halo as wide as the receptive radius (the same sums as for the whole picture), the
  // network on that (replicate padding only where the halo meets the picture's edge), the halo dropped.
  for (int64_t r = 0; r < H; r += t)
    for (int64_t c = 0; c < W; c += t) {
      const int64_t r1 = std::min(r + t, H), c1 = std::min(c + t, W);
      const int64_t e0 = start(r), e1 = std::min(r1 + halo, H);
      const int64_t f0 = start(c), f1 = std::min(c1 + halo, W);
      // MATLAB's imresize: rows first (equal scales); an unchanged axis (scale 1) is skipped.
      const auto [a0, a1] = s == 1 ? std::pair<int64_t, int64_t>{e0, e1} : input_range(rows, e0, e1);
      const auto [b0, b1] = s == 1 ? std::pair<int64_t, int64_t>{f0, f1} : input_range(cols, f0, f1);
      std::vector<double> block(size_t(ch * (a1 - a0) * (b1 - b0)));
      for (int64_t p = 0; p < ch; ++p)
        for (int64_t i = a0; i < a1; ++i)
          std::copy_n(planes.begin() + p * n + i * w + b0, b1 - b0,
                      block.begin() + (p * (a1 - a0) + (i - a0)) * (b1 - b0));
      if (s != 1) {
        block = resample(block, ch, a1 - a0, b1 - b0, 0, rows, e0, e1, a0);
        block = resample(block, ch, e1 - e0, b1 - b0, 1, cols, f0, f1, b0);
      }
      const int64_t bh = e1 - e0, bw = f1 - f0, bn = bh * bw;
      const std::vector<float> y = refine(std::vector<double>(block.begin(), block.begin() + bn), bh, bw);
      for (int64_t i = r; i < r1; ++i)
        for (int64_t j = c; j < c1; ++j) {
          const int64_t b = (i - e0) * bw + (j - f0);
          uint8_t* px = out.pixels.data() + ch * (i * W + j);
          const double yy = double(y[size_t(b)]);
          if (colours == 1) {
            px[0] = to_uint8(cpu::clip01(yy));
          } else {
            const double cb = block[size_t(bn + b)], cr = block[size_t(2 * bn + b)];
            for (int k = 0; k < 3; ++k) {
              const double v = yy * (255.0 * inv.m[k][0]) + cb * (255.0 * inv.m[k][1]) +
                               cr * (255.0 * inv.m[k][2]) + -inv.offset[k];
              px[k] = to_uint8(cpu::clip01(v));
            }
          }
          if (ch > colours) px[colours] = to_uint8(cpu::clip01(block[size_t(colours * bn + b)]));
        }
    }
  return out;
}

}  // namespace magmasr
