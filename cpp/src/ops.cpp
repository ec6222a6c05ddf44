// Tensor-level ops: argument checks, output allocation, and dispatch to magmasr::cpu or magmasr::cuda.
#include "magmasr/ops.hpp"

#include <cstring>

#include "backend.hpp"
#include "magmasr/error.hpp"

namespace magmasr::ops {
namespace {

void require_defined(const Tensor& t, const char* op, const char* what) {
  MAGMASR_REQUIRE(t.defined(), ValueError, op, ": ", what, " is an undefined tensor");
}

Device common_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Device d = (*ts.begin())->device();
  for (const Tensor* t : ts)
    if (t->defined())
      MAGMASR_REQUIRE(t->device() == d, DeviceError, op, ": all tensors must be on one device, got ", d.str(),
                      " and ", t->device().str());
  return d;
}

void require_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  MAGMASR_REQUIRE(a.shape() == b.shape(), ValueError, op, ": shapes must match, got ", shape_str(a.shape()),
                  " and ", shape_str(b.shape()));
}

}  // namespace

ConvGeom conv_geometry(const Shape& x, const Shape& w, const ConvOptions& opt) {
  const size_t r = x.size();
  MAGMASR_REQUIRE(r == 4 || r == 5, ValueError,
                  "convolution input must be [N, C, H, W] (2-D) or [N, C, D, H, W] (3-D), got shape ", shape_str(x));
  MAGMASR_REQUIRE(w.size() == r, ValueError, "convolution weight must have rank ", r, " ([Cout, Cin, ",
                  r == 4 ? "kH, kW" : "kD, kH, kW", "]) for an input of rank ", r, ", got shape ", shape_str(w));
  const size_t sd = r - 2;
  MAGMASR_REQUIRE(opt.padding.size() == 1 || opt.padding.size() == sd, ValueError, "padding needs 1 or ", sd,
                  " values for a ", sd, "-D convolution, got ", opt.padding.size());
  MAGMASR_REQUIRE(x[1] == w[1], ValueError, "convolution input has ", x[1], " channels but the weight expects ",
                  w[1], " (input ", shape_str(x), ", weight ", shape_str(w), ")");
  check_conv_algo("convolution", opt.algo);
  auto pad = [&](size_t i) { return opt.padding.size() == 1 ? opt.padding[0] : opt.padding[i]; };
  ConvGeom g;
  g.N = x[0];
  g.Cin = x[1];
  g.Cout = w[0];
  g.mode = opt.mode;
  if (sd == 3) {
    g.D = x[2], g.kD = w[2], g.pD = pad(0);
  }
  g.H = x[r - 2], g.W = x[r - 1];
  g.kH = w[r - 2], g.kW = w[r - 1];
  g.pH = pad(sd - 2), g.pW = pad(sd - 1);
  g.validate();
  return g;
}

static Shape conv_out_shape(const ConvGeom& g, size_t rank) {
  if (rank == 4) return {g.N, g.Cout, g.oH(), g.oW()};
  return {g.N, g.Cout, g.oD(), g.oH(), g.oW()};
}

// ConvAlgo::Winograd is a CPU strategy; on a GPU it stands for AutoDirect (geometry.hpp).
static ConvAlgo cuda_algo(ConvAlgo a) { return a == ConvAlgo::Winograd ? ConvAlgo::AutoDirect : a; }

Tensor conv(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvOptions& opt, bool relu) {
  require_defined(x, "conv", "input");
  require_defined(w, "conv", "weight");
  const ConvGeom g = conv_geometry(x.shape(), w.shape(), opt);
  if (bias.defined())
    MAGMASR_REQUIRE(bias.rank() == 1 && bias.numel() == g.Cout, ValueError, "convolution bias must have shape [",
                    g.Cout, "], got ", shape_str(bias.shape()));
  const Device d = common_device("conv", {&x, &w, &bias});
  Tensor y = Tensor::empty(conv_out_shape(g, x.shape().size()), d);
  const float* b = bias.defined() ? bias.data() : nullptr;
  if (d.is_cpu()) {
    if (opt.algo != ConvAlgo::Winograd || !cpu::conv_forward_winograd(g, x.data(), w.data(), b, y.data(), relu))
      cpu::conv_forward(g, x.data(), w.data(), b, y.data(), relu);
  } else {
    cuda::conv_forward(d.index(), g, x.data(), w.data(), b, y.data(), relu, cuda_algo(opt.algo));
  }
  return y;
}

Tensor conv_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape, const ConvOptions& opt) {
  require_defined(dy, "conv_backward_data", "output gradient");
  require_defined(w, "conv_backward_data", "weight");
  check_shape(x_shape);
  const ConvGeom g = conv_geometry(x_shape, w.shape(), opt);
  const Shape expect = conv_out_shape(g, x_shape.size());
  MAGMASR_REQUIRE(dy.shape() == expect, ValueError, "conv_backward_data: output gradient must have shape ",
                  shape_str(expect), ", got ", shape_str(dy.shape()));
  const Device d = common_device("conv_backward_data", {&dy, &w});
  Tensor dx = Tensor::empty(x_shape, d);
  if (d.is_cpu())
    cpu::conv_backward_data(g, dy.data(), w.data(), dx.data(), opt.algo == ConvAlgo::Winograd);
  else
    cuda::conv_backward_data(d.index(), g, dy.data(), w.data(), dx.data(), cuda_algo(opt.algo));
  return dx;
}

std::pair<Tensor, Tensor> conv_backward_weight(const Tensor& x, const Tensor& dy, const Shape& w_shape,
                                               bool with_bias, const ConvOptions& opt) {
  require_defined(x, "conv_backward_weight", "input");
  require_defined(dy, "conv_backward_weight", "output gradient");
  check_shape(w_shape);
  const ConvGeom g = conv_geometry(x.shape(), w_shape, opt);
  const Shape expect = conv_out_shape(g, x.shape().size());
  MAGMASR_REQUIRE(dy.shape() == expect, ValueError, "conv_backward_weight: output gradient must have shape ",
                  shape_str(expect), ", got ", shape_str(dy.shape()));
  const Device d = common_device("conv_backward_weight", {&x, &dy});
  Tensor dw = Tensor::empty(w_shape, d);
  Tensor db = with_bias ? Tensor::empty({g.Cout}, d) : Tensor();
  float* dbp = with_bias ? db.data() : nullptr;
  if (d.is_cpu())
    cpu::conv_backward_weight(g, x.data(), dy.data(), dw.data(), dbp, opt.algo == ConvAlgo::Winograd);
  else
    cuda::conv_backward_weight(d.index(), g, x.data(), dy.data(), dw.data(), dbp, cuda_algo(opt.algo));
  return {dw, db};
}

Tensor relu(const Tensor& x) {
  require_defined(x, "relu", "input");
  Tensor y = Tensor::empty(x.shape(), x.device());
  if (x.device().is_cpu())
    cpu::relu_forward(x.numel(), x.data(), y.data());
  else
    cuda::relu_forward(x.device().index(), x.numel(), x.data(), y.data());
  return y;
}

Tensor relu_backward(const Tensor& y, const Tensor& dy) {
  require_defined(y, "relu_backward", "output");
  require_defined(dy, "relu_backward", "output gradient");
  require_same_shape(y, dy, "relu_backward");
  const Device d = common_device("relu_backward", {&y, &dy});
  Tensor dx = Tensor::empty(y.shape(), d);
  if (d.is_cpu())
    cpu::relu_backward(y.numel(), y.data(), dy.data(), dx.data());
  else
    cuda::relu_backward(d.index(), y.numel(), y.data(), dy.data(), dx.data());
  return dx;
}

double mse_loss(const Tensor& pred, const Tensor& target) {
  require_defined(pred, "mse_loss", "prediction");
  require_defined(target, "mse_loss", "target");
  require_same_shape(pred, target, "mse_loss");
  const Device d = common_device("mse_loss", {&pred, &target});
  if (d.is_cpu()) return cpu::mse_loss(pred.numel(), pred.data(), target.data());
  return cuda::mse_loss(d.index(), pred.numel(), pred.data(), target.data());
}

Tensor mse_loss_backward(const Tensor& pred, const Tensor& target, float scale) {
  require_defined(pred, "mse_loss_backward", "prediction");
  require_defined(target, "mse_loss_backward", "target");
  require_same_shape(pred, target, "mse_loss_backward");
  const Device d = common_device("mse_loss_backward", {&pred, &target});
  Tensor g = Tensor::empty(pred.shape(), d);
  if (d.is_cpu())
    cpu::mse_grad(pred.numel(), pred.data(), target.data(), scale, g.data());
  else
    cuda::mse_grad(d.index(), pred.numel(), pred.data(), target.data(), scale, g.data());
  return g;
}

void check_pixel_shuffle_factor(const char* who, int64_t r) {
  MAGMASR_REQUIRE(r >= 1 && r <= kMaxPixelShuffleFactor, ValueError, who, ": upscale factor must be in [1, ",
                  kMaxPixelShuffleFactor, "], got ", r);
}

Tensor pixel_shuffle(const Tensor& x, int64_t r) {
  require_defined(x, "pixel_shuffle", "input");
  check_pixel_shuffle_factor("pixel_shuffle", r);
  MAGMASR_REQUIRE(x.rank() == 4, ValueError, "pixel_shuffle: input must be [N, C*r*r, H, W], got shape ",
                  shape_str(x.shape()));
  MAGMASR_REQUIRE(x.size(1) % (r * r) == 0, ValueError, "pixel_shuffle: ", x.size(1),
                  " channels are not divisible by r*r = ", r * r);
  const int64_t N = x.size(0), C = x.size(1) / (r * r), H = x.size(2), W = x.size(3);
  Tensor y = Tensor::empty({N, C, H * r, W * r}, x.device());
  if (x.device().is_cpu())
    cpu::pixel_shuffle_forward(N, C, H, W, r, x.data(), y.data());
  else
    cuda::pixel_shuffle_forward(x.device().index(), N, C, H, W, r, x.data(), y.data());
  return y;
}

Tensor pixel_shuffle_backward(const Tensor& dy, int64_t r) {
  require_defined(dy, "pixel_shuffle_backward", "output gradient");
  check_pixel_shuffle_factor("pixel_shuffle_backward", r);
  MAGMASR_REQUIRE(dy.rank() == 4 && dy.size(2) % r == 0 && dy.size(3) % r == 0, ValueError,
                  "pixel_shuffle_backward: gradient must be [N, C, H*r, W*r] with r = ", r, ", got shape ",
                  shape_str(dy.shape()));
  const int64_t N = dy.size(0), C = dy.size(1), H = dy.size(2) / r, W = dy.size(3) / r;
  Tensor dx = Tensor::empty({N, C * r * r, H, W}, dy.device());
  if (dy.device().is_cpu())
    cpu::pixel_shuffle_backward(N, C, H, W, r, dy.data(), dx.data());
  else
    cuda::pixel_shuffle_backward(dy.device().index(), N, C, H, W, r, dy.data(), dx.data());
  return dx;
}

Tensor add(const Tensor& a, const Tensor& b) {
  require_defined(a, "add", "first operand");
  require_defined(b, "add", "second operand");
  require_same_shape(a, b, "add");
  const Device d = common_device("add", {&a, &b});
  Tensor y = Tensor::empty(a.shape(), d);
  if (d.is_cpu())
    cpu::add(a.numel(), a.data(), b.data(), y.data());
  else
    cuda::add(d.index(), a.numel(), a.data(), b.data(), y.data());
  return y;
}

void add_(Tensor& a, const Tensor& b) {
  require_defined(a, "add_", "first operand");
  require_defined(b, "add_", "second operand");
  require_same_shape(a, b, "add_");
  const Device d = common_device("add_", {&a, &b});
  if (d.is_cpu())
    cpu::add(a.numel(), a.data(), b.data(), a.data());
  else
    cuda::add(d.index(), a.numel(), a.data(), b.data(), a.data());
}

Tensor scale(const Tensor& x, float alpha) {
  require_defined(x, "scale", "input");
  Tensor y = Tensor::empty(x.shape(), x.device());
  if (x.device().is_cpu())
    cpu::scale(x.numel(), alpha, x.data(), y.data());
  else
    cuda::scale(x.device().index(), x.numel(), alpha, x.data(), y.data());
  return y;
}

void sgd_update(Tensor& p, const Tensor& grad, Tensor& velocity, const SgdParams& hp) {
  require_defined(p, "sgd_update", "parameter");
  require_defined(grad, "sgd_update", "gradient");
  require_same_shape(p, grad, "sgd_update");
  if (hp.momentum != 0.0f) {
    MAGMASR_REQUIRE(velocity.defined(), ValueError, "sgd_update: momentum ", hp.momentum,
                    " needs a velocity tensor shaped like the parameter, got none");
    require_same_shape(p, velocity, "sgd_update");
  }
  const Device d = common_device("sgd_update", {&p, &grad, &velocity});
  float* v = velocity.defined() ? velocity.data() : nullptr;
  if (d.is_cpu())
    cpu::sgd_update(p.numel(), p.data(), grad.data(), v, hp);
  else
    cuda::sgd_update(d.index(), p.numel(), p.data(), grad.data(), v, hp);
}

void adam_update(Tensor& p, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& hp, int64_t step) {
  require_defined(p, "adam_update", "parameter");
  require_defined(grad, "adam_update", "gradient");
  require_defined(m, "adam_update", "first moment");
  require_defined(v, "adam_update", "second moment");
  require_same_shape(p, grad, "adam_update");
  require_same_shape(p, m, "adam_update");
  require_same_shape(p, v, "adam_update");
  MAGMASR_REQUIRE(step >= 1, ValueError, "adam_update: step must be >= 1, got ", step);
  const Device d = common_device("adam_update", {&p, &grad, &m, &v});
  if (d.is_cpu())
    cpu::adam_update(p.numel(), p.data(), grad.data(), m.data(), v.data(), hp, step);
  else
    cuda::adam_update(d.index(), p.numel(), p.data(), grad.data(), m.data(), v.data(), hp, step);
}

// ------------------------------------------------------------------------------------------ resampling

namespace {

// Copies `bytes` bytes between two storages on any devices (as Tensor::copy_from does).
void copy_storage(const Storage& dst, const Storage& src, size_t bytes) {
  const Device d = dst.device(), s = src.device();
  if (d.is_cpu() && s.is_cpu()) {
    std::memcpy(dst.data(), src.data(), bytes);
  } else if (d.is_cuda() && s.is_cuda() && d.index() != s.index()) {
    // Between two GPUs: the copy goes on the destination's stream, which does not wait for the source's, and
    // the source block must not go back to its pool while the copy may still read it: synchronise both.
    cuda::synchronize(s.index());
    cuda::copy(dst.data(), true, src.data(), true, bytes, d.index());
    cuda::synchronize(d.index());
  } else {
    const int dev = d.is_cuda() ? d.index() : s.index();
    cuda::copy(dst.data(), d.is_cuda(), src.data(), s.is_cuda(), bytes, dev);
  }
}

// A host vector viewed as CPU storage (no copy, nothing to release).
template <typename T>
std::shared_ptr<Storage> host_view(const std::vector<T>& v) {
  return Storage::borrow(Device::cpu(), const_cast<T*>(v.data()), v.size() * sizeof(T), nullptr);
}

template <typename T>
std::shared_ptr<Storage> upload(const std::vector<T>& v, const Device& device) {
  auto s = Storage::allocate(device, v.size() * sizeof(T));
  copy_storage(*s, *host_view(v), v.size() * sizeof(T));  // synchronises a CUDA stream: ready on return
  return s;
}

template <typename T>
std::vector<T> download(const Storage& s) {
  std::vector<T> v(s.bytes() / sizeof(T));
  copy_storage(*host_view(v), s, s.bytes());
  return v;
}

}  // namespace

ResampleTable::ResampleTable(const std::vector<double>& weights, const std::vector<int32_t>& indices,
                             int64_t out_len, int64_t in_len, const Device& device)
    : in_len_(in_len), out_len_(out_len) {
  MAGMASR_REQUIRE(in_len >= 1 && out_len >= 1, ValueError, "ResampleTable: lengths must be >= 1, got in_len=",
                  in_len, ", out_len=", out_len);
  MAGMASR_REQUIRE(!weights.empty() && int64_t(weights.size()) % out_len == 0, ValueError, "ResampleTable: ",
                  weights.size(), " weights do not form ", out_len, " rows of taps");
  taps_ = int64_t(weights.size()) / out_len;
  MAGMASR_REQUIRE(indices.size() == weights.size(), ValueError, "ResampleTable: the weights are [", out_len, ", ",
                  taps_, "] but there are ", indices.size(), " indices (expected ", weights.size(), ")");
  MAGMASR_REQUIRE(taps_ <= (int64_t(1) << 30), ValueError, "ResampleTable: too many taps (", taps_, ")");
  for (size_t k = 0; k < indices.size(); ++k)
    MAGMASR_REQUIRE(indices[k] >= 0 && indices[k] < in_len, ValueError, "ResampleTable: index ", indices[k],
                    " at [", int64_t(k) / taps_, ", ", int64_t(k) % taps_, "] is outside [0, ", in_len,
                    "); indices must already be mapped into the input");
  check_device(device);
  weights_ = upload(weights, device);
  indices_ = upload(indices, device);
}

std::vector<double> ResampleTable::weights_host() const {
  MAGMASR_REQUIRE(defined(), ValueError, "ResampleTable: the table is empty");
  return download<double>(*weights_);
}

std::vector<int32_t> ResampleTable::indices_host() const {
  MAGMASR_REQUIRE(defined(), ValueError, "ResampleTable: the table is empty");
  return download<int32_t>(*indices_);
}

ResampleTable ResampleTable::to(const Device& device) const {
  MAGMASR_REQUIRE(defined(), ValueError, "ResampleTable.to: the table is empty");
  if (device == this->device()) return *this;
  check_device(device);
  ResampleTable t;
  t.in_len_ = in_len_, t.out_len_ = out_len_, t.taps_ = taps_;
  t.weights_ = Storage::allocate(device, weights_->bytes());
  copy_storage(*t.weights_, *weights_, weights_->bytes());
  t.indices_ = Storage::allocate(device, indices_->bytes());
  copy_storage(*t.indices_, *indices_, indices_->bytes());
  return t;
}

Tensor resample_axis(const Tensor& x, int axis, const ResampleTable& table, bool round_uint8) {
  require_defined(x, "resample_axis", "input");
  MAGMASR_REQUIRE(table.defined(), ValueError, "resample_axis: the resampling table is empty");
  const int r = x.rank();
  MAGMASR_REQUIRE(axis >= -r && axis < r, ValueError, "resample_axis: axis ", axis, " is out of range for an input of ",
                  "shape ", shape_str(x.shape()));
  const int a = axis < 0 ? axis + r : axis;
  MAGMASR_REQUIRE(x.size(a) == table.in_len(), ValueError, "resample_axis: the table expects an axis of length ",
                  table.in_len(), " but axis ", axis, " of the input ", shape_str(x.shape()), " has length ",
                  x.size(a));
  MAGMASR_REQUIRE(table.device() == x.device(), DeviceError, "resample_axis: the table is on ", table.device().str(),
                  " but the input is on ", x.device().str(), "; move it with table.to(device)");
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < a; ++d) outer *= x.size(d);
  for (int d = a + 1; d < r; ++d) inner *= x.size(d);
  Shape ys = x.shape();
  ys[a] = table.out_len();
  const Device dev = x.device();
  Tensor y = Tensor::empty(ys, dev);
  if (dev.is_cpu())
    cpu::resample_axis(outer, table.in_len(), inner, table.out_len(), table.taps(), table.weights(),
                       table.indices(), x.data(), y.data(), round_uint8);
  else
    cuda::resample_axis(dev.index(), outer, table.in_len(), inner, table.out_len(), table.taps(),
                        table.weights(), table.indices(), x.data(), y.data(), round_uint8);
  return y;
}

Tensor resample_axis(const Tensor& x, int axis, const std::vector<double>& weights,
                     const std::vector<int32_t>& indices, int64_t taps, bool round_uint8) {
  require_defined(x, "resample_axis", "input");
  const int r = x.rank();
  MAGMASR_REQUIRE(axis >= -r && axis < r, ValueError, "resample_axis: axis ", axis, " is out of range for an input of ",
                  "shape ", shape_str(x.shape()));
  MAGMASR_REQUIRE(taps >= 1 && !weights.empty() && int64_t(weights.size()) % taps == 0, ValueError,
                  "resample_axis: ", weights.size(), " weights do not form rows of ", taps, " taps");
  const ResampleTable table(weights, indices, int64_t(weights.size()) / taps, x.size(axis), x.device());
  return resample_axis(x, axis, table, round_uint8);
}

}  // namespace magmasr::ops
