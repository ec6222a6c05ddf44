// Tensor-level functional ops: check shapes and devices, allocate outputs, dispatch to the CPU or CUDA kernels.
// Every op runs on the device of its inputs; inputs on different devices are a DeviceError.
#pragma once

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
  ConvAlgo algo = ConvAlgo::Auto;  // CUDA only
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

/// [N, C*r*r, H, W] -> [N, C, H*r, W*r] (PyTorch's PixelShuffle order) and its adjoint.
Tensor pixel_shuffle(const Tensor& x, int64_t r);
Tensor pixel_shuffle_backward(const Tensor& dy, int64_t r);

Tensor add(const Tensor& a, const Tensor& b);
void add_(Tensor& a, const Tensor& b);  // a += b
Tensor scale(const Tensor& x, float alpha);

/// One in-place optimizer step (formulas in optim_params.hpp); state tensors shaped like p.
void sgd_update(Tensor& p, const Tensor& grad, Tensor& velocity, const SgdParams& hp);
void adam_update(Tensor& p, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& hp, int64_t step);

}  // namespace magmasr::ops
