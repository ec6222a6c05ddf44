// Super-resolution of whole pictures with SRCNN: load a magmasr weight file, upscale an 8-bit gray or RGB
// picture. The same pipeline, bit for bit on the CPU, as the Python package's magmasr.sr.ImageSR.upscale:
//
//   pixels / 255 (double); RGB -> YCbCr (MATLAB rgb2ycbcr, BT.601 studio range); MATLAB-compatible bicubic
//   upscaling of every channel (rows first, in double); Y through the network (float32, 'same' output with
//   replicate borders); YCbCr -> RGB; clipped to [0, 1]; x 255 rounded half away from zero. An alpha channel
//   (gray + alpha, RGBA) is upscaled bicubically as CbCr and kept; the colour under fully transparent pixels is
//   first spread from the visible ones (their neighbours' mean, layer by layer), so edges get no dark fringes.
//
//   auto model = magmasr::SrcnnModel::load(weights_dir + "/srcnn_x3.safetensors");
//   model.to(magmasr::Device::cuda(0));                  // optional: the network on a GPU
//   magmasr::Picture hr = model.upscale(lr);             // lr: H x W x 1 to 4, 8-bit, interleaved
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "magmasr/device.hpp"
#include "magmasr/layers.hpp"

namespace magmasr {

/// An 8-bit picture: `height` rows of `width` pixels of `channels` (1: gray, 2: gray + alpha, 3: RGB, 4: RGBA)
/// interleaved samples.
struct Picture {
  int64_t height = 0, width = 0, channels = 1;
  std::vector<uint8_t> pixels;  // row-major, height * width * channels

  Picture() = default;
  /// A black picture; ValueError for a negative size or channel count.
  Picture(int64_t h, int64_t w, int64_t c);
};

/// SRCNN f1-f2-f3 with n1 and n2 filters as the original authors apply it to whole pictures: 'same' output
/// with replicate borders (magmasr.models.srcnn). ValueError for an even or non-positive kernel size.
std::shared_ptr<Sequential> srcnn(int64_t f1 = 9, int64_t f2 = 5, int64_t f3 = 5, int64_t n1 = 64, int64_t n2 = 32);

/// An SRCNN with the scale it was trained for and its weight file's metadata.
///
/// Threading: a SrcnnModel is not thread-safe. Its network keeps per-call state (each layer's forward stores or
/// clears the tensors a backward pass would need), so one model must not run upscale() / refine() from two
/// threads at once; load one model per thread instead (the weights are small). Copies of a SrcnnModel share one
/// network (a std::shared_ptr): what happens to one copy's network (to(), set_algo(), new weights) happens to
/// every copy's, and device() answers for all of them. For an independent model, load() the file again or build
/// another network (srcnn() + load_state_dict(a.net()->state_dict())).
class SrcnnModel {
 public:
  /// A magmasr SRCNN weight file (metadata architecture "srcnn", arch_kwargs over the 9-5-5 / 64 / 32
  /// defaults, scale), such as the shipped ${magmasr_WEIGHTS_DIR}/srcnn_x3.safetensors or one the Python
  /// package's SRModel.save writes (arch_kwargs may also hold seed=<integer>, ignored, padding=same and
  /// padding_mode=replicate). The arch_kwargs are checked against the stored tensors' shapes before the network
  /// is built. ValueError naming the file when it is not such a file; FileError when it cannot be read.
  static SrcnnModel load(const std::string& path);

  /// `net` must map a one-channel picture [N, 1, H, W] to [N, 1, H, W] (ValueError otherwise: other channel
  /// counts, a 'valid' convolution that shrinks the picture, layers that need another rank); `scale` in 1..16.
  /// Tiles (upscale's `tile`) give the whole picture's pixels when the network's layers are convolutions (also
  /// inside nested Sequentials) and pointwise layers such as ReLU.
  SrcnnModel(std::shared_ptr<Sequential> net, int64_t scale, std::map<std::string, std::string> metadata = {});

  /// Writes the weights and the metadata Python's SRModel.save writes, so that SrcnnModel::load and Python's
  /// magmasr.sr.ImageSR.load read the file back: this model's metadata(), then `extra`, then architecture =
  /// "srcnn", arch_kwargs = "f1=..,f2=..,f3=..,n1=..,n2=.." (read off the network) and scale. Atomic, as
  /// save_safetensors. ValueError when the network is not an SRCNN (conv1 relu1 conv2 relu2 conv3: square odd
  /// kernels with 'same' replicate padding and biases, 1 -> n1 -> n2 -> 1 channels), which no loader could rebuild.
  void save(const std::string& path, const std::map<std::string, std::string>& extra = {}) const;

  /// Moves the network to `device` (the bicubic and colour steps stay on the host, in double). On a GPU every
  /// convolution is pinned to the direct kernels (ConvAlgo::AutoDirect: the fastest of three kernels that sum in
  /// one order), whose sums do not depend on the block's shape, so that tiles give the whole picture's pixels;
  /// set another algorithm on the layers afterwards to let the selector choose among all strategies. On the CPU
  /// (also what the constructor sets there) ConvAlgo::Winograd: SRCNN 9-5-5's mapping layer 2-2.7x faster, within
  /// a few 1e-6 of the direct sums; upscale then cuts its tiles on the Winograd grid, so they stay exact. Set
  /// ConvAlgo::Auto on the layers for the direct sums.
  SrcnnModel& to(const Device& device);

  /// The upscaled picture (height * scale x width * scale, the input's channels); `scale` 0 is the model's
  /// own. With `tile`, the pipeline runs on tile x tile output pixels at a time, each from the input it needs
  /// plus a halo of the network's receptive radius: the memory of one tile instead of the whole upscaled
  /// picture's, and the same picture bit for bit. ValueError for an empty picture, channels other than 1 to 4,
  /// a pixel count that does not match (or whose product overflows), a scale outside 1..16 or a negative tile.
  Picture upscale(const Picture& in, int64_t scale = 0, int64_t tile = 0) const;

  /// How far (in pixels) an output pixel sees: per axis, the sum of the convolutions' reach on that axis
  /// (every layer, nested Sequentials included); the largest over the axes.
  int64_t receptive_radius() const;

  /// The network on one bicubic-upscaled channel (values / 255, row-major height x width): float32 out.
  /// ValueError when `y` does not hold height * width values (or that product overflows).
  std::vector<float> refine(const std::vector<double>& y, int64_t height, int64_t width) const;

  const std::shared_ptr<Sequential>& net() const { return net_; }
  int64_t scale() const { return scale_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Where the network is: its first parameter's device (the host for a network without parameters).
  Device device() const;

 private:
  // Winograd layers' tile grid: blocks start on multiples of `align` and read `extra` more pixels of halo.
  struct TileGrid {
    int64_t align = 1, extra = 0;
  };
  TileGrid tile_grid() const;

  std::shared_ptr<Sequential> net_;
  int64_t scale_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace magmasr
