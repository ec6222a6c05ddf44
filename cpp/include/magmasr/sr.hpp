// Super-resolution of whole pictures with SRCNN: load a magmasr weight file, upscale an 8-bit gray or RGB
// picture. The same pipeline, bit for bit on the CPU, as the Python package's magmasr.sr.ImageSR.upscale:
//
//   pixels / 255 (double); RGB -> YCbCr (MATLAB rgb2ycbcr, BT.601 studio range); MATLAB-compatible bicubic
//   upscaling of every channel (rows first, in double); Y through the network (float32, 'same' output with
//   replicate borders); YCbCr -> RGB; clipped to [0, 1]; x 255 rounded half away from zero.
//
//   auto model = magmasr::SrcnnModel::load(weights_dir + "/srcnn_x3.safetensors");
//   model.to(magmasr::Device::cuda(0));                  // optional: the network on a GPU
//   magmasr::Picture hr = model.upscale(lr);             // lr: H x W x 1 or 3, 8-bit, interleaved
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "magmasr/device.hpp"
#include "magmasr/layers.hpp"

namespace magmasr {

/// An 8-bit picture: `height` rows of `width` pixels of `channels` (1: gray, 3: RGB) interleaved samples.
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
class SrcnnModel {
 public:
  /// A magmasr SRCNN weight file (metadata architecture "srcnn", arch_kwargs over the 9-5-5 / 64 / 32
  /// defaults, scale), such as the shipped ${magmasr_WEIGHTS_DIR}/srcnn_x3.safetensors. ValueError naming the
  /// file when it is not one; FileError when it cannot be read.
  static SrcnnModel load(const std::string& path);
  SrcnnModel(std::shared_ptr<Sequential> net, int64_t scale, std::map<std::string, std::string> metadata = {});

  /// Moves the network to `device` (the bicubic and colour steps stay on the host, in double). On a GPU every
  /// convolution is pinned to the direct kernels (ConvAlgo::AutoDirect: the fastest of three kernels that sum in
  /// one order), whose sums do not depend on the block's shape, so that tiles give the whole picture's pixels;
  /// set another algorithm on the layers afterwards to let the selector choose among all strategies.
  SrcnnModel& to(const Device& device);

  /// The upscaled picture (height * scale x width * scale, the input's channels); `scale` 0 is the model's
  /// own. With `tile`, the pipeline runs on tile x tile output pixels at a time, each from the input it needs
  /// plus a halo of the network's receptive radius: the memory of one tile instead of the whole upscaled
  /// picture's, and the same picture bit for bit. ValueError for an empty picture, channels other than 1 or 3,
  /// a pixel count that does not match, a scale outside 1..16 or a negative tile.
  Picture upscale(const Picture& in, int64_t scale = 0, int64_t tile = 0) const;

  /// How far (in pixels) an output pixel sees: the sum of the convolutions' kernel radii.
  int64_t receptive_radius() const;

  /// The network on one bicubic-upscaled channel (values / 255, row-major height x width): float32 out.
  std::vector<float> refine(const std::vector<double>& y, int64_t height, int64_t width) const;

  const std::shared_ptr<Sequential>& net() const { return net_; }
  int64_t scale() const { return scale_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const Device& device() const { return device_; }

 private:
  std::shared_ptr<Sequential> net_;
  int64_t scale_;
  std::map<std::string, std::string> metadata_;
  Device device_ = Device::cpu();
};

}  // namespace magmasr
