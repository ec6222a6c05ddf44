#include "magmasr/layers.hpp"

#include <cctype>
#include <cmath>
#include <iomanip>
#include <random>
#include <set>
#include <sstream>

#include "magmasr/error.hpp"

namespace magmasr {

// ------------------------------------------------------------------------------------------------ Layer

int64_t Layer::num_parameters() {
  int64_t n = 0;
  for (Parameter* p : parameters()) n += p->value.numel();
  return n;
}

void Layer::to(const Device& device) {
  for (Parameter* p : parameters()) {
    p->value = p->value.to(device);
    if (p->grad.defined()) p->grad = p->grad.to(device);
  }
  clear_cache();
}

bool Layer::learns() { return trainable_ && !parameters().empty(); }

void Layer::set_trainable(bool t) {
  trainable_ = t;
  for (Parameter* p : parameters()) p->trainable = t;
}

// ------------------------------------------------------------------------------------------------- Conv

Conv::Conv(int spatial_dims, int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
           std::vector<int64_t> padding, PadMode mode, bool bias, uint64_t seed)
    : spatial_dims_(spatial_dims), cin_(in_channels), cout_(out_channels), kernel_(std::move(kernel)) {
  MAGMASR_REQUIRE(spatial_dims == 2 || spatial_dims == 3, ValueError, "Conv: 2 or 3 spatial dimensions, got ",
                  spatial_dims);
  MAGMASR_REQUIRE(in_channels >= 1 && out_channels >= 1, ValueError, "Conv: channel counts must be >= 1, got ",
                  in_channels, " -> ", out_channels);
  if (kernel_.size() == 1) kernel_.assign(size_t(spatial_dims), kernel_[0]);
  MAGMASR_REQUIRE(kernel_.size() == size_t(spatial_dims), ValueError, "Conv", spatial_dims, "d: kernel needs 1 or ",
                  spatial_dims, " sizes, got ", kernel_.size());
  for (int64_t k : kernel_)
    MAGMASR_REQUIRE(k >= 1, ValueError, "Conv: kernel sizes must be >= 1, got ", shape_str(kernel_));
  if (padding.empty()) padding = {0};
  if (padding.size() == 1) padding.assign(size_t(spatial_dims), padding[0]);
  MAGMASR_REQUIRE(padding.size() == size_t(spatial_dims), ValueError, "Conv", spatial_dims,
                  "d: padding needs 1 or ", spatial_dims, " values, got ", padding.size());
  for (int64_t p : padding) MAGMASR_REQUIRE(p >= 0, ValueError, "Conv: padding must be >= 0, got ", shape_str(padding));
  check_pad_mode("Conv", mode);
  opt_.padding = padding;
  opt_.mode = mode;

  Shape wshape{cout_, cin_};
  for (int64_t k : kernel_) wshape.push_back(k);
  // Checked before any product of the sizes: huge channel counts would overflow them.
  try {
    check_shape(wshape);
  } catch (const ValueError& e) {
    throw ValueError(detail::cat(type_name(), " ", cin_, " -> ", cout_, " channels: weight ", e.what()));
  }
  const int64_t fan_in = shape_numel(wshape) / cout_;
  // PyTorch's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight and the bias.
  std::mt19937_64 rng(seed);
  const float bound = 1.0f / std::sqrt(float(fan_in));
  std::uniform_real_distribution<float> dist(-bound, bound);
  std::vector<float> wv(size_t(shape_numel(wshape)));
  for (float& v : wv) v = dist(rng);
  weight_ = Parameter{"weight", Tensor::from_vector(wv, wshape), Tensor(), 1.0f, true};
  if (bias) {
    std::vector<float> bv(static_cast<size_t>(cout_));
    for (float& v : bv) v = dist(rng);
    bias_ = Parameter{"bias", Tensor::from_vector(bv, {cout_}), Tensor(), 1.0f, true};
  }
}

std::string Conv::describe() const {
  std::ostringstream os;
  os << cin_ << "->" << cout_ << ", kernel ";
  for (size_t i = 0; i < kernel_.size(); ++i) os << (i ? "x" : "") << kernel_[i];
  os << ", padding ";
  for (size_t i = 0; i < opt_.padding.size(); ++i) os << (i ? "," : "") << opt_.padding[i];
  if (opt_.mode == PadMode::Replicate) os << " (replicate)";
  if (!has_bias()) os << ", no bias";
  return os.str();
}

Shape Conv::output_shape(const Shape& input) const {
  MAGMASR_REQUIRE(input.size() == size_t(spatial_dims_ + 2), ValueError, type_name(), " expects input of rank ",
                  spatial_dims_ + 2, " (", spatial_dims_ == 2 ? "[N, C, H, W]" : "[N, C, D, H, W]", "), got ",
                  shape_str(input));
  const ConvGeom g = ops::conv_geometry(input, weight_.value.shape(), opt_);
  if (spatial_dims_ == 2) return {g.N, g.Cout, g.oH(), g.oW()};
  return {g.N, g.Cout, g.oD(), g.oH(), g.oW()};
}

Tensor Conv::forward(const Tensor& x, bool training) {
  output_shape(x.shape());
  x_ = training ? x : Tensor();
  return ops::conv(x, weight_.value, bias_.value, opt_, false);
}

Tensor Conv::forward_relu(const Tensor& x, bool training) {
  output_shape(x.shape());
  x_ = training ? x : Tensor();
  return ops::conv(x, weight_.value, bias_.value, opt_, true);
}

Tensor Conv::backward(const Tensor& dy, bool need_dx) {
  MAGMASR_REQUIRE(x_.defined(), ValueError, type_name(), ".backward() needs a forward(x, training=True) first");
  if (trainable_) {
    auto [dw, db] = ops::conv_backward_weight(x_, dy, weight_.value.shape(), has_bias(), opt_);
    weight_.grad = dw;
    if (has_bias()) bias_.grad = db;
  }
  Tensor dx = need_dx ? ops::conv_backward_data(dy, weight_.value, x_.shape(), opt_) : Tensor();
  return dx;
}

std::vector<Parameter*> Conv::parameters() {
  if (has_bias()) return {&weight_, &bias_};
  return {&weight_};
}

// ------------------------------------------------------------------------------ ReLU, shuffle, fold

Tensor ReLU::forward(const Tensor& x, bool training) {
  Tensor y = ops::relu(x);
  y_ = training ? y : Tensor();
  return y;
}

Tensor ReLU::backward(const Tensor& dy, bool need_dx) {
  MAGMASR_REQUIRE(y_.defined(), ValueError, "ReLU.backward() needs a forward(x, training=True) first");
  return need_dx ? ops::relu_backward(y_, dy) : Tensor();
}

PixelShuffle::PixelShuffle(int64_t upscale) : r_(upscale) {
  ops::check_pixel_shuffle_factor("PixelShuffle", upscale);
}

std::string PixelShuffle::describe() const { return "x" + std::to_string(r_); }

Shape PixelShuffle::output_shape(const Shape& in) const {
  MAGMASR_REQUIRE(in.size() == 4 && in[1] % (r_ * r_) == 0, ValueError, "PixelShuffle(", r_,
                  ") expects [N, C*", r_ * r_, ", H, W], got ", shape_str(in));
  return {in[0], in[1] / (r_ * r_), in[2] * r_, in[3] * r_};
}

Tensor PixelShuffle::forward(const Tensor& x, bool) { return ops::pixel_shuffle(x, r_); }

Tensor PixelShuffle::backward(const Tensor& dy, bool need_dx) {
  return need_dx ? ops::pixel_shuffle_backward(dy, r_) : Tensor();
}

Shape FoldDepth::output_shape(const Shape& in) const {
  MAGMASR_REQUIRE(in.size() == 5, ValueError, "FoldDepth expects [N, C, D, H, W], got ", shape_str(in));
  return {in[0], in[1] * in[2], in[3], in[4]};
}

Tensor FoldDepth::forward(const Tensor& x, bool) {
  in_shape_ = x.shape();
  return x.reshape(output_shape(x.shape()));
}

Tensor FoldDepth::backward(const Tensor& dy, bool need_dx) {
  MAGMASR_REQUIRE(!in_shape_.empty(), ValueError, "FoldDepth.backward() needs a forward first");
  return need_dx ? dy.reshape(in_shape_) : Tensor();
}

// ------------------------------------------------------------------------------------------ Sequential

namespace {
// Every layer of the tree under `root`, `root` included (Sequentials nest); false when one was met twice.
bool collect_layers(const Layer* root, std::set<const Layer*>& out) {
  if (!out.insert(root).second) return false;
  bool once = true;
  if (const auto* seq = dynamic_cast<const Sequential*>(root))
    for (size_t i = 0; i < seq->size(); ++i) once = collect_layers(seq->at(i).get(), out) && once;
  return once;
}
}  // namespace

Sequential& Sequential::add(std::shared_ptr<Layer> layer, std::string name) {
  MAGMASR_REQUIRE(layer != nullptr, ValueError, "Sequential.add: no layer given");
  // A layer keeps its forward's input or output for backward, so one used twice would give wrong gradients; a
  // network inside itself would recurse forever.
  std::set<const Layer*> mine, theirs;
  collect_layers(this, mine);
  collect_layers(layer.get(), theirs);
  MAGMASR_REQUIRE(!theirs.count(this), ValueError, "Sequential.add: a network cannot contain itself");
  for (const Layer* l : theirs)
    MAGMASR_REQUIRE(!mine.count(l), ValueError,
                    "Sequential.add: the layer is in the network already; each layer can be used once (it keeps its "
                    "activations for backward): make another one");
  if (name.empty()) name = std::to_string(layers_.size());
  for (char c : name)
    MAGMASR_REQUIRE(std::isalnum(static_cast<unsigned char>(c)) || c == '_', ValueError,
                    "Sequential.add: layer names use letters, digits and '_', got '", name, "'");
  for (const auto& n : names_)
    MAGMASR_REQUIRE(n != name, ValueError, "Sequential.add: a layer named '", name, "' exists already");
  layers_.push_back(std::move(layer));
  names_.push_back(std::move(name));
  return *this;
}

const std::shared_ptr<Layer>& Sequential::at(size_t i) const {
  MAGMASR_REQUIRE(i < layers_.size(), ValueError, "Sequential: index ", i, " out of range (", layers_.size(),
                  " layers)");
  return layers_[i];
}

const std::string& Sequential::name_at(size_t i) const {
  at(i);
  return names_[i];
}

const std::shared_ptr<Layer>& Sequential::get(const std::string& name) const {
  for (size_t i = 0; i < names_.size(); ++i)
    if (names_[i] == name) return layers_[i];
  std::string known;
  for (const auto& n : names_) known += (known.empty() ? "" : ", ") + n;
  throw ValueError("Sequential: no layer named '" + name + "' (layers: " + known + ")");
}

Shape Sequential::output_shape(const Shape& input) const {
  Shape s = input;
  for (const auto& l : layers_) s = l->output_shape(s);
  return s;
}

Tensor Sequential::forward(const Tensor& x, bool training) {
  MAGMASR_REQUIRE(!layers_.empty(), ValueError, "Sequential.forward: the model has no layers");
  if (training) {
    // add() refuses a layer already in the network, but cannot see a layer added later to a nested Sequential
    // that this network holds; caught here, before backward would compute wrong gradients.
    std::set<const Layer*> seen;
    MAGMASR_REQUIRE(collect_layers(this, seen), ValueError,
                    "Sequential.forward: a layer appears twice in the network (added to a nested Sequential after "
                    "that was put in this one?); in training each layer can be used once (it keeps its activations "
                    "for backward): make another one");
  }
  Tensor h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    // A convolution followed by a ReLU: one pass over the output, in training too (the ReLU's backward needs only
    // its output, the convolution's only its input).
    auto* relu = i + 1 < layers_.size() ? dynamic_cast<ReLU*>(layers_[i + 1].get()) : nullptr;
    auto* conv = relu ? dynamic_cast<Conv*>(layers_[i].get()) : nullptr;
    if (conv) {
      h = conv->forward_relu(h, training);
      if (training) relu->keep_output(h);
      ++i;
      continue;
    }
    h = layers_[i]->forward(h, training);
  }
  return h;
}

Tensor Sequential::backward(const Tensor& dy, bool need_dx) {
  // The first layer whose weights learn: no layer before it needs a data gradient (unless the caller does).
  size_t first = layers_.size();
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i]->learns()) {
      first = i;
      break;
    }
  }
  Tensor g = dy;
  for (size_t i = layers_.size(); i-- > 0;) {
    const bool layer_needs_dx = need_dx || i > first;
    if (!layer_needs_dx && (i < first || !layers_[i]->learns())) break;
    g = layers_[i]->backward(g, layer_needs_dx);
    if (!layer_needs_dx) break;
  }
  return need_dx ? g : Tensor();
}

std::vector<std::pair<std::string, Parameter*>> Sequential::named_parameters() {
  std::vector<std::pair<std::string, Parameter*>> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (auto* seq = dynamic_cast<Sequential*>(layers_[i].get())) {
      for (auto& [n, p] : seq->named_parameters()) out.emplace_back(names_[i] + "." + n, p);
    } else {
      for (Parameter* p : layers_[i]->parameters()) out.emplace_back(names_[i] + "." + p->name, p);
    }
  }
  return out;
}

std::map<std::string, Tensor> Sequential::state_dict() {
  std::map<std::string, Tensor> out;
  for (auto& [name, p] : named_parameters()) out.emplace(name, p->value);
  return out;
}

void Sequential::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  const auto named = named_parameters();
  std::string misshaped, missing, unexpected;
  auto append = [](std::string& list, const std::string& item, const char* sep) {
    list += (list.empty() ? "" : sep) + item;
  };
  std::set<std::string> known;
  for (const auto& [name, p] : named) {
    known.insert(name);
    const auto it = state.find(name);
    if (it == state.end()) {
      append(missing, "'" + name + "'", ", ");
    } else if (!it->second.defined() || it->second.shape() != p->value.shape()) {
      append(misshaped, detail::cat("(", name, ", expected ", shape_str(p->value.shape()), ", got ",
                                    it->second.defined() ? shape_str(it->second.shape()) : "an undefined tensor", ")"),
             "; ");
    }
  }
  for (const auto& kv : state)
    if (!known.count(kv.first)) append(unexpected, "'" + kv.first + "'", ", ");
  MAGMASR_REQUIRE(misshaped.empty(), ValueError, "load_state_dict: mis-shaped parameters: ", misshaped);
  MAGMASR_REQUIRE(!strict || (missing.empty() && unexpected.empty()), ValueError,
                  "load_state_dict: the state does not match the model: missing [", missing, "], unexpected [",
                  unexpected, "]");
  for (const auto& [name, p] : named) {
    const auto it = state.find(name);
    if (it != state.end()) p->value.copy_from(it->second);
  }
}

std::vector<Parameter*> Sequential::parameters() {
  std::vector<Parameter*> out;
  for (auto& l : layers_)
    for (Parameter* p : l->parameters()) out.push_back(p);
  return out;
}

void Sequential::to(const Device& device) {
  check_device(device);
  for (auto& l : layers_) l->to(device);
}

void Sequential::set_trainable(bool t) {
  trainable_ = t;
  for (auto& l : layers_) l->set_trainable(t);
}

bool Sequential::learns() {
  for (auto& l : layers_)
    if (l->learns()) return true;
  return false;
}

void Sequential::clear_cache() {
  for (auto& l : layers_) l->clear_cache();
}

std::string Sequential::summary(const Shape& input_shape) {
  std::ostringstream os;
  const int w1 = 24, w2 = 22, w3 = 12;
  const std::string rule(size_t(w1 + w2 + w3 + 40), '=');
  os << rule << "\n"
     << std::left << std::setw(w1) << "Layer (type)" << std::setw(w2) << "Output shape" << std::right
     << std::setw(w3) << "Param #" << "  Configuration\n"
     << rule << "\n";
  Shape s = input_shape;
  int64_t total = 0, frozen = 0;
  os << std::left << std::setw(w1) << "input" << std::setw(w2) << shape_str(s) << std::right << std::setw(w3) << 0
     << "\n";
  for (size_t i = 0; i < layers_.size(); ++i) {
    s = layers_[i]->output_shape(s);
    const int64_t n = layers_[i]->num_parameters();
    total += n;
    int64_t layer_frozen = 0;
    for (Parameter* p : layers_[i]->parameters())
      if (!p->trainable) layer_frozen += p->value.numel();
    frozen += layer_frozen;
    std::string label = names_[i] + " (" + layers_[i]->type_name() + ")";
    std::string cfg = layers_[i]->describe();
    if (n > 0 && layer_frozen == n) cfg += cfg.empty() ? "frozen" : ", frozen";
    else if (layer_frozen > 0) cfg += (cfg.empty() ? "" : ", ") + std::to_string(layer_frozen) + " frozen";
    os << std::left << std::setw(w1) << label << std::setw(w2) << shape_str(s) << std::right << std::setw(w3) << n
       << "  " << cfg << "\n";
  }
  os << rule << "\n"
     << "Total params: " << total << "\n"
     << "Trainable params: " << total - frozen << "\n"
     << "Non-trainable params: " << frozen << "\n"
     << rule << "\n";
  return os.str();
}

}  // namespace magmasr
