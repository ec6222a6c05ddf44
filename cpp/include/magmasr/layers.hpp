// Layers with named parameters, forward and backward, and a Sequential container.
//
// Training protocol: y = model.forward(x, /*training=*/true); dy = loss gradient; model.backward(dy);
// then an optimizer step. backward() overwrites the gradients of trainable parameters. A frozen layer
// (trainable == false) computes no weight gradient, and a Sequential computes no data gradient for the
// layers before its first trainable one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "magmasr/ops.hpp"
#include "magmasr/tensor.hpp"

namespace magmasr {

struct Parameter {
  std::string name;      // the layer-local name, "weight" or "bias"; Sequential::named_parameters() qualifies it
                         // with the layer's name ("conv1.weight")
  Tensor value;
  Tensor grad;           // allocated by the first backward that computes it
  float lr_mult = 1.0f;  // per-parameter learning-rate multiplier
  bool trainable = true; // follows the owning layer's trainable flag
};

class Layer {
 public:
  virtual ~Layer() = default;
  Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  virtual std::string type_name() const = 0;
  /// A one-line description of the configuration, e.g. "1->64, kernel 9x9, padding 4 (replicate)".
  virtual std::string describe() const { return ""; }
  /// Output shape for an input shape; ValueError for an input this layer cannot take.
  virtual Shape output_shape(const Shape& input) const = 0;
  /// With training = true the layer keeps what backward() needs.
  virtual Tensor forward(const Tensor& x, bool training) = 0;
  /// Gradient step back through the layer after forward(x, true). Returns dx when need_dx, else undefined.
  virtual Tensor backward(const Tensor& dy, bool need_dx) = 0;
  virtual std::vector<Parameter*> parameters() { return {}; }
  int64_t num_parameters();
  /// Moves the parameters (and the layer's state) to `device`.
  virtual void to(const Device& device);
  bool trainable() const { return trainable_; }
  virtual void set_trainable(bool t);
  /// True when backward() computes at least one weight gradient here (a container: in any of its layers).
  virtual bool learns();
  /// Drops the tensors kept for backward.
  virtual void clear_cache() {}

 protected:
  bool trainable_ = true;
};

/// Convolution of rank 2 or 3 (spatial dims), stride 1, with per-dimension padding and a border mode.
/// Weight [Cout, Cin, k...], bias [Cout]. Initialised like PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
class Conv : public Layer {
 public:
  Conv(int spatial_dims, int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
       std::vector<int64_t> padding, PadMode mode = PadMode::Zeros, bool bias = true, uint64_t seed = 0);
  std::string type_name() const override { return spatial_dims_ == 2 ? "Conv2d" : "Conv3d"; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(const Tensor& x, bool training) override;
  /// Forward with the ReLU fused (one pass over the output; Sequential fuses a Conv followed by a ReLU this way).
  /// In training it keeps its input for backward, as forward does; the ReLU layer keeps the output
  /// (ReLU::keep_output).
  Tensor forward_relu(const Tensor& x, bool training = false);
  Tensor backward(const Tensor& dy, bool need_dx) override;
  std::vector<Parameter*> parameters() override;
  void clear_cache() override { x_ = Tensor(); }

  int spatial_dims() const { return spatial_dims_; }
  int64_t in_channels() const { return cin_; }
  int64_t out_channels() const { return cout_; }
  const std::vector<int64_t>& kernel() const { return kernel_; }
  const std::vector<int64_t>& padding() const { return opt_.padding; }
  PadMode pad_mode() const { return opt_.mode; }
  bool has_bias() const { return bias_.value.defined(); }
  ConvAlgo algo() const { return opt_.algo; }
  void set_algo(ConvAlgo a) {
    check_conv_algo("Conv::set_algo", a);
    opt_.algo = a;
  }
  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }

 private:
  int spatial_dims_;
  int64_t cin_, cout_;
  std::vector<int64_t> kernel_;
  ops::ConvOptions opt_;
  Parameter weight_, bias_;
  Tensor x_;  // input kept for backward
};

class Conv2d : public Conv {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel, std::vector<int64_t> padding,
         PadMode mode = PadMode::Zeros, bool bias = true, uint64_t seed = 0)
      : Conv(2, in_channels, out_channels, std::move(kernel), std::move(padding), mode, bias, seed) {}
};

class Conv3d : public Conv {
 public:
  Conv3d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel, std::vector<int64_t> padding,
         PadMode mode = PadMode::Zeros, bool bias = true, uint64_t seed = 0)
      : Conv(3, in_channels, out_channels, std::move(kernel), std::move(padding), mode, bias, seed) {}
};

class ReLU : public Layer {
 public:
  std::string type_name() const override { return "ReLU"; }
  Shape output_shape(const Shape& input) const override { return input; }
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy, bool need_dx) override;
  void clear_cache() override { y_ = Tensor(); }
  /// What forward(x, true) keeps for backward, when a fused Conv::forward_relu computed y = relu(x) instead.
  void keep_output(const Tensor& y) { y_ = y; }

 private:
  Tensor y_;
};

/// Depth-to-space: [N, C*r*r, H, W] -> [N, C, H*r, W*r].
class PixelShuffle : public Layer {
 public:
  explicit PixelShuffle(int64_t upscale);
  std::string type_name() const override { return "PixelShuffle"; }
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy, bool need_dx) override;
  int64_t upscale() const { return r_; }

 private:
  int64_t r_;
};

/// Folds the depth axis into the channels: [N, C, D, H, W] -> [N, C*D, H, W] (3-D to 2-D features; no copy).
class FoldDepth : public Layer {
 public:
  std::string type_name() const override { return "FoldDepth"; }
  Shape output_shape(const Shape& input) const override;
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy, bool need_dx) override;

 private:
  Shape in_shape_;
};

class Sequential : public Layer {
 public:
  Sequential() = default;
  std::string type_name() const override { return "Sequential"; }
  /// Appends a layer; the name must be unique and made of letters, digits and '_' (default: its index).
  /// Appends `layer` (a ValueError if the name is taken, if `layer` is already in this network's tree: a layer
  /// keeps its activations for backward, so each is used once, or if `layer` contains this network).
  Sequential& add(std::shared_ptr<Layer> layer, std::string name = "");
  size_t size() const { return layers_.size(); }
  const std::shared_ptr<Layer>& at(size_t i) const;
  const std::shared_ptr<Layer>& get(const std::string& name) const;  // KeyError-like ValueError
  const std::string& name_at(size_t i) const;

  Shape output_shape(const Shape& input) const override;
  /// With training = false, a Conv directly followed by a ReLU runs as one fused kernel.
  Tensor forward(const Tensor& x, bool training) override;
  Tensor backward(const Tensor& dy, bool need_dx) override;
  std::vector<Parameter*> parameters() override;  // names prefixed "layer.param"
  /// (qualified name, parameter) pairs in order.
  std::vector<std::pair<std::string, Parameter*>> named_parameters();
  /// {qualified name ("conv1.weight"): the parameter's own tensor} for every parameter (handles, not copies:
  /// clone() them for a snapshot). save_safetensors(path, model.state_dict(), metadata) writes a weight file.
  std::map<std::string, Tensor> state_dict();
  /// Copies `state` into the parameters, each onto its own device (Tensor::copy_from), after checking everything
  /// (nothing is copied when a check fails): a ValueError lists every mis-shaped key as (name, expected, got);
  /// with `strict`, a ValueError lists all the missing and all the unexpected keys. Without `strict`, missing
  /// parameters keep their values and unexpected keys are ignored.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  void to(const Device& device) override;
  void set_trainable(bool t) override;
  bool learns() override;
  void clear_cache() override;
  /// A Keras-style table: layer, type, output shape, parameters; totals (trainable / frozen).
  std::string summary(const Shape& input_shape);

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
  std::vector<std::string> names_;
  std::vector<std::vector<Parameter*>> params_cache_;
};

}  // namespace magmasr
