// Tensor-level functional ops: check shapes and devices, allocate outputs, dispatch to the CPU or CUDA kernels.
// Every op runs on the device of its inputs; inputs on different devices are a DeviceError.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "magmasr/geometry.hpp"
#include "magmasr/optim_params.hpp"
#include "magmasr/tensor.hpp"

namespace magmasr::ops {

/// Convolution options. `padding` has one entry per spatial dimension (2 for conv2d, 3 for conv3d) or a
/// single entry used for all; each is the number of samples added on both sides of that dimension.
struct ConvOptions {
  std::vector<int64_t> padding{0};
  PadMode mode = PadMode::Zeros;
  ConvAlgo algo = ConvAlgo::Auto;  // CUDA, and Winograd on the CPU
};

/// The geometry of conv(x, w) for x [N, Cin, (D,) H, W] and w [Cout, Cin, (kD,) kH, kW]; checks everything.
ConvGeom conv_geometry(const Shape& x, const Shape& w, const ConvOptions& opt);

/// y = conv(x, w) + bias (bias may be undefined), optionally followed by ReLU. Rank 4 (2-D) or 5 (3-D).
Tensor conv(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt, bool relu = false);
/// Gradient with respect to the input, of shape `x_shape`.
Tensor conv_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape, const ConvOptions& opt);
/// Gradients with respect to the weight and (when `with_bias`) the bias; the second is undefined otherwise.
std::pair<Tensor, Tensor> conv_backward_weight(const Tensor& x, const Tensor& dy, const Shape& w_shape,
                                               bool with_bias, const ConvOptions& opt);

Tensor relu(const Tensor& x);
/// dx = dy * (y > 0), with y the ReLU's output (or input: the sign is the same).
Tensor relu_backward(const Tensor& y, const Tensor& dy);

/// Mean squared error over all elements (computed in double).
double mse_loss(const Tensor& pred, const Tensor& target);
/// Gradient of scale * mse_loss(pred, target) with respect to pred.
Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float scale = 1.0f);

/// [N, C*r*r, H, W] -> [N, C, H*r, W*r] (PyTorch's PixelShuffle order) and its adjoint. The factor r must be
/// between 1 and kMaxPixelShuffleFactor (so that r*r fits in 31 bits); anything else is a ValueError.
constexpr int64_t kMaxPixelShuffleFactor = 46340;
/// The ValueError "<who>: upscale factor must be in [1, kMaxPixelShuffleFactor], got r" unless r is in range.
void check_pixel_shuffle_factor(const char* who, int64_t r);
Tensor pixel_shuffle(const Tensor& x, int64_t r);
Tensor pixel_shuffle_backward(const Tensor& dy, int64_t r);

Tensor add(const Tensor& a, const Tensor& b);
void add_(Tensor& a, const Tensor& b);  // a += b
Tensor scale(const Tensor& x, float alpha);

/// One in-place optimizer step (formulas in optim_params.hpp); state tensors shaped like p.
void sgd_update(Tensor& p, const Tensor& grad, Tensor& velocity, const SgdParams& hp);
void adam_update(Tensor& p, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& hp, int64_t step);

/// A 1-D resampling table (one axis of MATLAB's imresize, see magmasr.image.contributions), held on one device:
/// output sample j along the axis is sum_t weights[j, t] * input[indices[j, t]], for an input of length in_len.
/// The weights are double, as MATLAB's (float weights change exact x.5 ties, hence uint8 outputs).
/// Building a table checks it and copies it to `device` once (a host-to-device copy synchronises the device's
/// stream); resampling with it afterwards never goes back to the host, so a video pipeline keeps one table
/// per (size, scale) and reuses it for every frame. Copying a ResampleTable shares its storage.
class ResampleTable {
 public:
  ResampleTable() = default;
  /// weights and indices are row-major [out_len, taps] (taps = weights.size() / out_len); every index must
  /// lie in [0, in_len) (ValueError otherwise).
  ResampleTable(const std::vector<double>& weights, const std::vector<int32_t>& indices, int64_t out_len,
                int64_t in_len, const Device& device = Device::cpu());

  bool defined() const { return weights_ != nullptr; }
  int64_t in_len() const { return in_len_; }
  int64_t out_len() const { return out_len_; }
  int64_t taps() const { return taps_; }
  Device device() const { return weights_ ? weights_->device() : Device::cpu(); }
  /// Device (or host) pointers to the row-major [out_len, taps] tables.
  const double* weights() const { return static_cast<const double*>(weights_->data()); }
  const int32_t* indices() const { return static_cast<const int32_t*>(indices_->data()); }
  /// The tables, copied to the host.
  std::vector<double> weights_host() const;
  std::vector<int32_t> indices_host() const;
  /// This table if already on `device`, else a copy there.
  ResampleTable to(const Device& device) const;

 private:
  std::shared_ptr<Storage> weights_, indices_;
  int64_t in_len_ = 0, out_len_ = 0, taps_ = 0;
};

/// A resampling table on the host: row-major [out_len, taps] weights and indices (into an input of in_len).
struct HostResampleTable {
  std::vector<double> weights;
  std::vector<int32_t> indices;
  int64_t in_len = 0, out_len = 0, taps = 0;
};

/// MATLAB imresize's bicubic table for one axis, equal bit for bit to magmasr.image.contributions(in_len, out_len,
/// scale) (whose tests check it against MATLAB): Keys' cubic kernel with a = -0.5, the coordinate mapping
/// u = x / scale + 0.5 (1 - 1 / scale) (1-based x), the kernel stretched by 1 / scale when scale < 1
/// (antialiasing), rows normalised to sum to 1 (summed in NumPy's pairwise order), indices clamped into
/// [0, in_len) (replicated end points), columns whose weights are all zero dropped. `scale` is the factor given
/// to imresize (the output size is usually ceil(in_len * scale)). ValueError for lengths < 1 or a scale that is
/// not positive and finite.
HostResampleTable bicubic_contributions(int64_t in_len, int64_t out_len, double scale);
/// The same table, on `device`, ready for resample_axis.
ResampleTable bicubic_table(int64_t in_len, int64_t out_len, double scale, const Device& device = Device::cpu());

/// Resamples `x` along `axis` (negative counts from the end) with `table`: y has x's shape with that axis
/// of length table.out_len(); y[..., j, ...] = sum_t w[j, t] * x[..., idx[j, t], ...], accumulated in double.
/// With round_uint8 each output is rounded half away from zero and clamped to [0, 255] (MATLAB's uint8
/// mode). x.size(axis) must equal table.in_len() (ValueError) and the table must be on x's device (DeviceError).
Tensor resample_axis(const Tensor& x, int axis, const ResampleTable& table, bool round_uint8 = false);
/// The same with a table given on the host (row-major [out_len, taps], out_len = weights.size() / taps),
/// copied to x's device for this one call.
Tensor resample_axis(const Tensor& x, int axis, const std::vector<double>& weights,
                     const std::vector<int32_t>& indices, int64_t taps, bool round_uint8 = false);

}  // namespace magmasr::ops
