// Python bindings (magmasr._core): a thin adapter over the C++ API. Tensors cross without copies through
// the buffer protocol (NumPy), DLPack (PyTorch, CuPy, NumPy) and __cuda_array_interface__; the GIL is
// released around every computation.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "cpu/gemm.hpp"
#include "cpu/image.hpp"
#include "dlpack.hpp"
#include "magmasr/magmasr.hpp"

namespace py = pybind11;
using namespace magmasr;
namespace dl = magmasr::dlpack;

namespace {

// ------------------------------------------------------------------------------------------ conversions

std::string type_name(const py::handle& o) { return py::str(py::type::of(o).attr("__name__")); }

// A release callback that drops a Python reference, taking the GIL (it may run in any thread).
std::function<void()> py_release(py::object owner) {
  auto* held = new py::object(std::move(owner));
  return [held] {
    if (!Py_IsInitialized()) return;  // interpreter shutting down: leak rather than crash
    py::gil_scoped_acquire gil;
    delete held;
  };
}

Tensor from_numpy(const py::object& obj) {
  if (!py::isinstance<py::array>(obj))
    throw TypeError("from_numpy: expected a numpy.ndarray, got " + type_name(obj));
  py::array arr = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<float>>(arr))  // an equivalent dtype, not necessarily the same object
    throw TypeError("expected a float32 array, got dtype " + std::string(py::str(arr.dtype())) +
                    "; convert with arr.astype(numpy.float32)");
  if (arr.ndim() < 1 || arr.ndim() > kMaxRank)
    throw ValueError("expected an array of rank 1 to 5, got rank " + std::to_string(arr.ndim()));
  if (!(arr.flags() & py::array::c_style))
    throw TypeError("expected a C-contiguous array; use numpy.ascontiguousarray(arr)");
  if (!arr.writeable())
    throw TypeError("expected a writeable array (magmasr shares its memory); pass arr.copy()");
  Shape shape(arr.shape(), arr.shape() + arr.ndim());
  for (int64_t d : shape)
    if (d < 1) throw ValueError("expected a non-empty array, got shape " + shape_str(shape));
  return Tensor::borrow(static_cast<float*>(arr.mutable_data()), shape, Device::cpu(), py_release(arr));
}

// ---- DLPack import
bool compact(const dl::DLTensor& t) {
  if (!t.strides) return true;
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.strides[i] != expect) return false;
    expect *= t.shape[i];
  }
  return true;
}

Tensor tensor_from_dltensor(const dl::DLTensor& t, bool read_only, std::function<void()> release) {
  auto fail = [&](auto exc) {
    release();
    throw exc;
  };
  if (!(t.dtype.code == dl::kDLFloat && t.dtype.bits == 32 && t.dtype.lanes == 1))
    fail(TypeError("from_dlpack: expected float32 data, got type code " + std::to_string(t.dtype.code) + " with " +
                   std::to_string(t.dtype.bits) + " bits"));
  if (t.ndim < 1 || t.ndim > kMaxRank)
    fail(ValueError("from_dlpack: expected rank 1 to 5, got rank " + std::to_string(t.ndim)));
  for (int i = 0; i < t.ndim; ++i)
    if (t.shape[i] < 1)
      fail(ValueError("from_dlpack: expected a non-empty tensor, got shape " + shape_str(Shape(t.shape, t.shape + t.ndim))));
  if (!compact(t)) fail(TypeError("from_dlpack: expected a contiguous (row-major) tensor; call .contiguous() first"));
  if (read_only) fail(TypeError("from_dlpack: the tensor is read-only; magmasr needs writeable memory"));
  Device dev;
  if (t.device.device_type == dl::kDLCPU || t.device.device_type == dl::kDLCUDAHost)
    dev = Device::cpu();
  else if (t.device.device_type == dl::kDLCUDA || t.device.device_type == dl::kDLCUDAManaged)
    dev = Device::cuda(t.device.device_id);
  else
    fail(TypeError("from_dlpack: unsupported device type " + std::to_string(t.device.device_type)));
  try {
    check_device(dev);
  } catch (...) {
    release();
    throw;
  }
  Shape shape(t.shape, t.shape + t.ndim);
  try {
    check_shape(shape);
  } catch (...) {
    release();
    throw;
  }
  if (dev.is_cuda()) {
    // Our kernels on the borrowed memory may still be queued on our stream when the tensor dies: let them
    // finish before the producer gets the memory back (its allocator may hand it out again at once).
    release = [r = std::move(release), d = dev.index()] {
      try {
        cuda::synchronize(d);
      } catch (...) {
      }
      r();
    };
  }
  auto* data = reinterpret_cast<float*>(static_cast<char*>(t.data) + t.byte_offset);
  return Tensor::borrow(data, shape, dev, std::move(release));
}

// Returns an imported DLPack tensor to its producer (either struct version), taking the GIL.
template <typename Managed>
std::function<void()> dlpack_release(Managed* m) {
  return [m] {
    if (m->deleter && Py_IsInitialized()) {
      py::gil_scoped_acquire gil;
      m->deleter(m);
    }
  };
}

Tensor from_dlpack(const py::object& obj) {
  if (!py::hasattr(obj, "__dlpack__"))
    throw TypeError("from_dlpack: " + type_name(obj) + " does not implement __dlpack__");
  py::object capsule;
  py::tuple dev_info = obj.attr("__dlpack_device__")();
  const int dev_type = dev_info[0].cast<int>(), dev_id = dev_info[1].cast<int>();
  py::object stream = py::none();
  if (dev_type == dl::kDLCUDA) {
    check_device(Device::cuda(dev_id));
    stream = py::int_(reinterpret_cast<uintptr_t>(cuda::stream(dev_id)));
  }
  try {
    capsule = obj.attr("__dlpack__")(py::arg("stream") = stream, py::arg("max_version") = py::make_tuple(1, 0));
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    capsule = obj.attr("__dlpack__")(py::arg("stream") = stream);
  }
  PyObject* cap = capsule.ptr();
  if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
    auto* m = static_cast<dl::DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    if (m->version.major > 1) throw TypeError("from_dlpack: DLPack version > 1 is not supported");
    PyCapsule_SetName(cap, "used_dltensor_versioned");
    return tensor_from_dltensor(m->dl_tensor, (m->flags & dl::kFlagReadOnly) != 0, dlpack_release(m));
  }
  if (PyCapsule_IsValid(cap, "dltensor")) {
    auto* m = static_cast<dl::DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    PyCapsule_SetName(cap, "used_dltensor");
    return tensor_from_dltensor(m->dl_tensor, false, dlpack_release(m));
  }
  throw TypeError("from_dlpack: __dlpack__ did not return a DLPack capsule");
}

// Any tensor-like argument: a Tensor, a float32 NumPy array (zero-copy), or a DLPack producer (zero-copy).
Tensor as_tensor(const py::handle& h, const char* what = "input") {
  if (py::isinstance<Tensor>(h)) return h.cast<Tensor>();
  py::object o = py::reinterpret_borrow<py::object>(h);
  if (py::isinstance<py::array>(o)) return from_numpy(o);
  if (py::hasattr(o, "__dlpack__")) return from_dlpack(o);
  throw TypeError(std::string(what) + ": expected a magmasr.Tensor, a float32 numpy.ndarray or a DLPack tensor, got " +
                  type_name(o));
}

// An integer: a Python int or anything with __index__ (NumPy integers), but not a bool.
bool is_integer(const py::handle& h) { return !py::isinstance<py::bool_>(h) && PyIndex_Check(h.ptr()); }

int64_t to_integer(const py::handle& h, const std::string& what) {
  if (!is_integer(h)) throw TypeError(what + ": expected an integer, got " + type_name(h));
  const py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
  if (!i) throw py::error_already_set();
  return i.cast<int64_t>();
}

Shape as_ints(const py::handle& h, const char* what) {
  if (!py::isinstance<py::sequence>(h) || py::isinstance<py::str>(h))
    throw TypeError(std::string(what) + ": expected a sequence of integers, got " + type_name(h));
  Shape s;
  for (auto v : py::reinterpret_borrow<py::sequence>(h)) {
    if (!is_integer(v))
      throw TypeError(std::string(what) + ": expected integers, got an item of type " + type_name(v));
    s.push_back(to_integer(v, what));
  }
  return s;
}

Shape as_shape(const py::handle& h) { return as_ints(h, "shape"); }

py::tuple shape_tuple(const Shape& s) {
  py::tuple t(s.size());
  for (size_t i = 0; i < s.size(); ++i) t[i] = py::int_(s[i]);
  return t;
}

Device as_device(const py::handle& h) {
  if (py::isinstance<Device>(h)) return h.cast<Device>();
  if (py::isinstance<py::str>(h)) return Device::parse(h.cast<std::string>());
  throw TypeError("device: expected 'cpu', 'cuda', 'cuda:N' or a magmasr.Device, got " + type_name(h));
}

// Padding for the functional API: an int or one int per spatial dimension.
std::vector<int64_t> as_padding(const py::handle& h) {
  if (is_integer(h)) return {to_integer(h, "padding")};
  if (py::isinstance<py::str>(h)) throw TypeError("padding: the functional ops take integers; 'same'/'valid' are for layers");
  return as_ints(h, "padding");
}

ops::ConvOptions conv_options(const py::handle& padding, const std::string& mode, const std::string& algo) {
  ops::ConvOptions o;
  o.padding = as_padding(padding);
  o.mode = pad_mode_from_string(mode);
  o.algo = conv_algo_from_string(algo);
  return o;
}

void require_rank(const Tensor& t, int rank, const char* op, const char* layout) {
  if (t.rank() != rank)
    throw ValueError(std::string(op) + ": expected input of rank " + std::to_string(rank) + " (" + layout +
                     "), got shape " + shape_str(t.shape()));
}

// A resampling table given from Python: weights [out_len, taps] (anything NumPy converts to float64, or a
// Tensor) and integer indices of the same shape.
struct HostTable {
  std::vector<double> weights;
  std::vector<int32_t> indices;
  int64_t out_len = 0, taps = 0;
};

HostTable host_table(const py::object& weights, const py::object& indices) {
  HostTable t;
  if (py::isinstance<Tensor>(weights)) {
    const Tensor w = weights.cast<Tensor>();
    if (w.rank() != 2) throw ValueError("weights: expected a [out_len, taps] table, got shape " + shape_str(w.shape()));
    t.out_len = w.size(0), t.taps = w.size(1);
    std::vector<float> v;
    {
      py::gil_scoped_release rel;
      v = w.to_vector();
    }
    t.weights.assign(v.begin(), v.end());
  } else {
    auto w = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(weights);
    if (!w) {
      PyErr_Clear();
      throw TypeError("weights: expected a float [out_len, taps] array, got " + type_name(weights));
    }
    if (w.ndim() != 2 || w.size() == 0)
      throw ValueError("weights: expected a non-empty [out_len, taps] array, got rank " + std::to_string(w.ndim()) +
                       " with " + std::to_string(w.size()) + " elements");
    t.out_len = w.shape(0), t.taps = w.shape(1);
    t.weights.assign(w.data(), w.data() + w.size());
  }
  py::array raw = py::array::ensure(indices);
  if (!raw) {
    PyErr_Clear();
    throw TypeError("indices: expected an integer [out_len, taps] array, got " + type_name(indices));
  }
  const char kind = raw.dtype().kind();
  if (kind != 'i' && kind != 'u')
    throw TypeError("indices: expected an integer array, got dtype " + std::string(py::str(raw.dtype())));
  auto idx = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(raw);
  if (!idx || idx.ndim() != 2 || idx.shape(0) != t.out_len || idx.shape(1) != t.taps)
    throw ValueError("indices: expected shape (" + std::to_string(t.out_len) + ", " + std::to_string(t.taps) +
                     ") like the weights, got " + std::string(py::str(raw.attr("shape"))));
  t.indices.resize(size_t(idx.size()));
  const int64_t* p = idx.data();
  for (size_t k = 0; k < t.indices.size(); ++k) {
    if (p[k] < 0 || p[k] > INT32_MAX)
      throw ValueError("indices: index " + std::to_string(p[k]) + " is negative or too large");
    t.indices[k] = int32_t(p[k]);
  }
  return t;
}

// ---- Host image steps of magmasr.image on NumPy arrays (cpu/image.hpp), private to the package

// Calls f with `data` (x's, or a pointer into it) typed as x's dtype: uint8, float32 or float64.
template <class F>
auto with_image_type(const py::array& x, const char* what, const void* data, F&& f) {
  if (py::isinstance<py::array_t<uint8_t>>(x)) return f(static_cast<const uint8_t*>(data));
  if (py::isinstance<py::array_t<float>>(x)) return f(static_cast<const float*>(data));
  if (py::isinstance<py::array_t<double>>(x)) return f(static_cast<const double*>(data));
  throw TypeError(std::string(what) + ": expected uint8, float32 or float64 data, got dtype " +
                  std::string(py::str(x.dtype())));
}

// The same with x's data, which must be C-contiguous.
template <class F>
auto with_image_data(const py::array& x, const char* what, F&& f) {
  if (!(x.flags() & py::array::c_style)) throw ValueError(std::string(what) + ": expected a C-contiguous array");
  return with_image_type(x, what, x.data(), std::forward<F>(f));
}

std::vector<py::ssize_t> array_shape(const py::array& x) { return {x.shape(), x.shape() + x.ndim()}; }

// A new uint8 (as_uint8) or float64 array of `shape`, filled by fill(a typed pointer to its data).
template <class F>
py::array filled_array(const std::vector<py::ssize_t>& shape, bool as_uint8, F&& fill) {
  if (as_uint8) {
    py::array_t<uint8_t> y(shape);
    fill(y.mutable_data());
    return std::move(y);
  }
  py::array_t<double> y(shape);
  fill(y.mutable_data());
  return std::move(y);
}

py::array host_resample(const py::array& x, int axis, const py::object& weights, const py::object& indices,
                        bool uint8_mode) {
  const int nd = int(x.ndim());
  if (nd < 1) throw ValueError("_resample_host: expected an array of rank >= 1");
  if (axis < -nd || axis >= nd)
    throw ValueError("_resample_host: axis " + std::to_string(axis) + " is out of range for rank " +
                     std::to_string(nd));
  if (axis < 0) axis += nd;
  const HostTable t = host_table(weights, indices);
  const int64_t in_len = x.shape(axis);
  for (int32_t i : t.indices)
    if (i >= in_len)
      throw ValueError("_resample_host: index " + std::to_string(i) + " is out of range for an axis of length " +
                       std::to_string(in_len));
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= x.shape(d);
  for (int d = axis + 1; d < nd; ++d) inner *= x.shape(d);
  std::vector<py::ssize_t> shape = array_shape(x);
  shape[size_t(axis)] = t.out_len;
  auto run = [&](auto* y) {
    return with_image_data(x, "_resample_host", [&](const auto* src) {
      py::gil_scoped_release rel;
      cpu::resample_host(outer, in_len, inner, t.out_len, t.taps, t.weights.data(), t.indices.data(), src, y);
      return 0;
    });
  };
  return filled_array(shape, uint8_mode, run);
}

py::array host_colour(const py::array& x, const py::object& matrix, const py::object& offset, bool clip01,
                      const std::optional<double>& uint8_factor) {
  const auto nd = x.ndim();
  if (nd < 1 || x.shape(nd - 1) != 3)
    throw ValueError("_colour_transform: expected an array [..., 3], got rank " + std::to_string(nd));
  auto m = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(matrix);
  auto off = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(offset);
  if (!m || !off || m.ndim() != 2 || m.shape(1) != 3 || off.ndim() != 1 || off.shape(0) != m.shape(0))
    throw ValueError("_colour_transform: expected a [rows, 3] matrix and a [rows] offset");
  // A grid of pixels: rows x cols with any strides for an H x W x 3 array whose channels are adjacent,
  // 1 x (size / 3) for a C-contiguous array of any rank.
  const py::ssize_t item = x.itemsize();
  int64_t rows = 1, cols = x.size() / 3, row_stride = 0, col_stride = 3;
  if (nd == 3 && x.strides(2) == item && x.strides(0) % item == 0 && x.strides(1) % item == 0) {
    rows = x.shape(0), cols = x.shape(1), row_stride = x.strides(0) / item, col_stride = x.strides(1) / item;
  } else if (!(x.flags() & py::array::c_style)) {
    throw ValueError("_colour_transform: expected an H x W x 3 array with adjacent channels, or a C-contiguous one");
  }
  std::vector<py::ssize_t> shape = array_shape(x);
  shape.back() = m.shape(0);
  auto run = [&](auto* out) {
    with_image_type(x, "_colour_transform", x.data(), [&](const auto* src) {
      py::gil_scoped_release rel;
      cpu::colour_transform(src, rows, cols, row_stride, col_stride, m.data(), off.data(), m.shape(0), clip01,
                            uint8_factor.value_or(1.0), out);
      return 0;
    });
  };
  return filled_array(shape, uint8_factor.has_value(), run);
}

py::array host_to_uint8(const py::array& x, double factor) {
  py::array_t<uint8_t> y(array_shape(x));
  uint8_t* out = y.mutable_data();
  with_image_data(x, "_scale_to_uint8", [&](const auto* src) {
    py::gil_scoped_release rel;
    cpu::scale_to_uint8(src, int64_t(x.size()), factor, out);
    return 0;
  });
  return std::move(y);
}

// A copy of x (H x W x C, C = 2 or 4, alpha last; uint8, uint16, float32 or float64) with the colour of its fully
// transparent pixels spread from the visible ones (cpu::bleed_transparent).
py::array host_bleed(const py::array& x) {
  if (x.ndim() != 3 || (x.shape(2) != 2 && x.shape(2) != 4))
    throw ValueError("_bleed_transparent: expected an H x W x 2 or H x W x 4 array (alpha last), got rank " +
                     std::to_string(x.ndim()) +
                     (x.ndim() == 3 ? " with " + std::to_string(x.shape(2)) + " channels" : ""));
  auto run = [&](auto tag) -> py::array {
    using T = decltype(tag);
    auto y = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(x);
    py::array_t<T> out(array_shape(x));
    std::copy_n(y.data(), y.size(), out.mutable_data());
    T* px = out.mutable_data();
    py::gil_scoped_release rel;
    cpu::bleed_transparent(px, x.shape(0), x.shape(1), x.shape(2));
    return std::move(out);
  };
  if (py::isinstance<py::array_t<uint8_t>>(x)) return run(uint8_t{});
  if (py::isinstance<py::array_t<uint16_t>>(x)) return run(uint16_t{});
  if (py::isinstance<py::array_t<float>>(x)) return run(float{});
  if (py::isinstance<py::array_t<double>>(x)) return run(double{});
  throw TypeError("_bleed_transparent: expected uint8, uint16, float32 or float64 data, got dtype " +
                  std::string(py::str(x.dtype())));
}

// ---- DLPack export
struct ExportCtx {
  Tensor tensor;
  Shape shape;
};

template <typename Managed>
void fill_dltensor(Managed* m, ExportCtx* ctx) {
  const Tensor& t = ctx->tensor;
  m->dl_tensor.data = t.data();
  m->dl_tensor.device = {t.device().is_cpu() ? dl::kDLCPU : dl::kDLCUDA, t.device().index()};
  m->dl_tensor.ndim = t.rank();
  m->dl_tensor.dtype = {dl::kDLFloat, 32, 1};
  m->dl_tensor.shape = ctx->shape.data();
  m->dl_tensor.strides = nullptr;
  m->dl_tensor.byte_offset = 0;
  m->manager_ctx = ctx;
}

py::capsule to_dlpack(const Tensor& t, bool versioned) {
  auto* ctx = new ExportCtx{t, t.shape()};
  if (versioned) {
    auto* m = new dl::DLManagedTensorVersioned{};
    m->version = {1, 0};
    m->flags = 0;
    fill_dltensor(m, ctx);
    m->deleter = [](dl::DLManagedTensorVersioned* self) {
      delete static_cast<ExportCtx*>(self->manager_ctx);
      delete self;
    };
    return py::capsule(m, "dltensor_versioned", [](PyObject* cap) {
      if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        auto* mm = static_cast<dl::DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
        mm->deleter(mm);
      }
    });
  }
  auto* m = new dl::DLManagedTensor{};
  fill_dltensor(m, ctx);
  m->deleter = [](dl::DLManagedTensor* self) {
    delete static_cast<ExportCtx*>(self->manager_ctx);
    delete self;
  };
  return py::capsule(m, "dltensor", [](PyObject* cap) {
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* mm = static_cast<dl::DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      mm->deleter(mm);
    }
  });
}

py::object optional_tensor(const Tensor& t) { return t.defined() ? py::cast(t) : py::none(); }

// Copies an array-like into an existing tensor (parameter assignment), checking the shape.
void assign(Tensor& dst, const py::handle& src, const std::string& what) {
  Tensor s;
  if (py::isinstance<Tensor>(src)) {
    s = src.cast<Tensor>();
  } else {
    // Numbers only: NumPy would turn None into NaN and the string '1.5' into 1.5.
    const py::array raw = py::array::ensure(src);
    if (!raw || std::string("biuf").find(raw.dtype().kind()) == std::string::npos)
      throw TypeError(what + ": expected an array of numbers, got " +
                      (raw ? "dtype " + std::string(py::str(raw.dtype())) : type_name(src)));
    py::array_t<float, py::array::c_style | py::array::forcecast> a =
        py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(raw);
    if (!a) throw TypeError(what + ": expected an array of numbers, got " + type_name(src));
    Shape shape(a.shape(), a.shape() + a.ndim());
    if (shape != dst.shape())
      throw ValueError(what + ": expected shape " + shape_str(dst.shape()) + ", got " + shape_str(shape));
    Tensor tmp = Tensor::empty(shape);
    std::memcpy(tmp.data(), a.data(), tmp.nbytes());
    s = tmp;
  }
  if (s.shape() != dst.shape())
    throw ValueError(what + ": expected shape " + shape_str(dst.shape()) + ", got " + shape_str(s.shape()));
  py::gil_scoped_release rel;
  dst.copy_from(s);
}

// A file path from str, bytes or os.PathLike.
std::string as_path(const py::handle& h) {
  py::object p = py::module_::import("os").attr("fspath")(h);
  return p.cast<std::string>();
}

// {name: tensor} from a mapping whose values are Tensors, float32 arrays or DLPack tensors.
std::map<std::string, Tensor> as_tensor_map(const py::handle& h, const char* what) {
  if (!py::isinstance<py::dict>(h)) throw TypeError(std::string(what) + ": expected a dict name -> tensor, got " + type_name(h));
  std::map<std::string, Tensor> out;
  for (auto item : py::reinterpret_borrow<py::dict>(h)) {
    if (!py::isinstance<py::str>(item.first))
      throw TypeError(std::string(what) + ": names must be str, got " + type_name(item.first));
    const std::string name = item.first.cast<std::string>();
    out[name] = as_tensor(item.second, name.c_str());
  }
  return out;
}

py::dict tensor_dict(const std::map<std::string, Tensor>& tensors) {
  py::dict out;
  for (const auto& [name, t] : tensors) out[py::str(name)] = py::cast(t);
  return out;
}

std::vector<Parameter*> as_params(const py::handle& h) {
  if (py::isinstance<Layer>(h)) return h.cast<Layer&>().parameters();
  std::vector<Parameter*> out;
  for (auto item : py::reinterpret_borrow<py::iterable>(h)) {
    if (!py::isinstance<Parameter>(item))
      throw TypeError("optimizer: expected a layer or an iterable of magmasr.nn.Parameter, got an item of type " +
                      type_name(item));
    out.push_back(item.cast<Parameter*>());
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "magmasr: fast image and video super-resolution (C++/CUDA core)";

  static py::exception<CudaError> cuda_error(m, "CudaError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const DeviceError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const CudaError& e) {
      py::set_error(cuda_error, e.what());
    } catch (const FileError& e) {
      // OSError(errno, message): Python picks the subclass (FileNotFoundError for ENOENT, ...).
      PyObject* args = Py_BuildValue("(is)", e.code(), e.what());
      PyErr_SetObject(PyExc_OSError, args);
      Py_XDECREF(args);
    } catch (const py::cast_error& e) {
      // An argument of the wrong type that no explicit check caught: a TypeError, as Python would raise
      // (pybind11 would make it a RuntimeError).
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.attr("__version__") = MAGMASR_VERSION_STRING;
  m.def("cuda_available", &cuda_available, "True when this build has CUDA and a GPU is usable (never raises).");
  m.def("cuda_compiled", &cuda_compiled, "True when the library was built with the CUDA backend.");
  m.def("cuda_device_count", &cuda_device_count);
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Threads for the CPU kernels (OpenMP).");
  m.def("get_num_threads", &get_num_threads);
  m.def("_cpu_kernels", &cpu::gemm_kernels,
        "The CPU matrix-product kernels in use: 'avx512', 'avx2' or 'generic' (MAGMASR_CPU_KERNELS caps the choice).");
  m.def(
      "_cpu_conv_strategy",
      [](const std::string& which) {
        MAGMASR_REQUIRE(cpu::set_conv_strategy(which), ValueError,
                        "the CPU convolution strategy is 'auto', 'taps' or 'columns', got '", which, "'");
      },
      py::arg("which"),
      "For benchmarks and tests: the strategy of the CPU convolution's forward and backward-weight passes for several "
      "output channels ('taps': the products read the padded input in place; 'columns': a column matrix per block; "
      "'auto': taps unless a slab would exceed 64 Mi floats). The forward strategies give the same bits; not "
      "thread-safe against running convolutions.");

  m.def("_resample_host", &host_resample, py::arg("x"), py::arg("axis"), py::arg("weights"), py::arg("indices"),
        py::arg("uint8_mode") = false,
        "magmasr.image.resize_along_axis on a C-contiguous uint8, float32 or float64 array: float64 sums (uint8 in "
        "uint8 mode), the NumPy reference's bits.");
  m.def("_colour_transform", &host_colour, py::arg("x"), py::arg("matrix"), py::arg("offset"),
        py::arg("clip01") = false, py::arg("uint8_factor") = py::none(),
        "x @ matrix.T + offset over the last axis (3 channels) of a uint8, float32 or float64 array (H x W x 3 with "
        "adjacent channels, or C-contiguous), each sum left to right, float64 out; clip01 clamps to [0, 1]; with "
        "uint8_factor, MATLAB's uint8 conversion of each result times it (magmasr.image._colour_transform).");
  m.def("_scale_to_uint8", &host_to_uint8, py::arg("x"), py::arg("factor") = 255.0,
        "MATLAB's uint8 conversion of x * factor (magmasr.image._saturate_uint8), for a C-contiguous uint8, "
        "float32 or float64 array.");
  m.def(
      "_cpu_cache_stats",
      [] {
        const HostCacheStats st = host_cache_stats();
        py::dict d;
        d["held_bytes"] = st.held_bytes, d["blocks"] = st.blocks, d["hits"] = st.hits, d["misses"] = st.misses;
        d["cap"] = st.cap;
        return d;
      },
      "The host block cache (magmasr::host_cache_stats): bytes and blocks held, hits, misses, cap.");
  m.def("_cpu_cache_clear", &host_cache_clear, "Frees the blocks the host block cache holds.");
  m.def("_winograd_tile", &winograd_tile, py::arg("kernel"), py::arg("cin"), py::arg("cout"),
        "The side of the output tiles with which algo='winograd' computes a layer with a kernel x kernel kernel in "
        "space (2-D, or 3-D with any depth kernel) and cin -> cout channels on the CPU (6 for 3x3, 4 for 5x5, with at least 8 channels in and out), 0 where "
        "it computes the layer directly.");
  m.def("_bleed_transparent", &host_bleed, py::arg("x"),
        "A copy of an H x W x 2 or 4 picture (alpha last) whose fully transparent pixels (alpha == 0) take, layer by "
        "layer outwards from the visible ones, the mean colour of their 8-neighbours already filled "
        "(magmasr.sr.ImageSR.upscale_tiles: no dark fringes from the colour stored under transparency).");

  // ---------------------------------------------------------------------------------------- Device
  py::class_<Device>(m, "Device")
      .def(py::init([](const std::string& s) { return Device::parse(s); }), py::arg("spec"))
      .def_property_readonly("type", [](const Device& d) { return d.is_cpu() ? "cpu" : "cuda"; })
      .def_property_readonly("index", &Device::index)
      .def("__str__", &Device::str)
      .def("__repr__", [](const Device& d) { return "Device('" + d.str() + "')"; })
      .def("__eq__", [](const Device& a, const py::object& b) {
        try {
          return a == as_device(b);
        } catch (...) {
          return false;
        }
      })
      .def("__hash__", [](const Device& d) { return py::hash(py::str(d.str())); });

  // ---------------------------------------------------------------------------------------- Tensor
  py::class_<Tensor>(m, "Tensor", py::buffer_protocol(), R"doc(
A float32 tensor of rank 1 to 5 on a device. Copying the Python object shares the data; use
clone() or to() to copy. np.asarray(t) views a CPU tensor without a copy; t.numpy() copies from a GPU.)doc")
      .def_buffer([](Tensor& t) -> py::buffer_info {
        if (!t.device().is_cpu())
          throw py::buffer_error("the tensor is on " + t.device().str() + "; use .numpy() to copy it to the host");
        std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end()), strides(shape.size());
        py::ssize_t s = sizeof(float);
        for (size_t i = shape.size(); i-- > 0;) {
          strides[i] = s;
          s *= shape[i];
        }
        return py::buffer_info(t.data(), sizeof(float), py::format_descriptor<float>::format(),
                               py::ssize_t(shape.size()), shape, strides);
      })
      .def_property_readonly("shape", [](const Tensor& t) { return shape_tuple(t.shape()); })
      .def_property_readonly("ndim", &Tensor::rank)
      .def_property_readonly("size", &Tensor::numel)
      .def_property_readonly("nbytes", &Tensor::nbytes)
      .def_property_readonly("dtype", [](const Tensor&) { return py::dtype::of<float>(); })
      .def_property_readonly("device", &Tensor::device)
      .def("__len__", [](const Tensor& t) { return t.size(0); })
      .def("__repr__", &Tensor::str)
      .def(
          "to", [](const Tensor& t, const py::object& dev) {
            const Device d = as_device(dev);
            py::gil_scoped_release rel;
            return t.to(d);
          },
          py::arg("device"), "This tensor if it is on `device` already, else a copy there.")
      .def(
          "cpu", [](const Tensor& t) {
            py::gil_scoped_release rel;
            return t.to(Device::cpu());
          })
      .def(
          "cuda", [](const Tensor& t, int index) {
            py::gil_scoped_release rel;
            return t.to(Device::cuda(index));
          },
          py::arg("index") = 0)
      .def("clone", &Tensor::clone, py::call_guard<py::gil_scoped_release>())
      .def("reshape", [](const Tensor& t, const py::args& args) {
        if (args.size() == 1 && !is_integer(args[0])) return t.reshape(as_shape(args[0]));
        return t.reshape(as_shape(args));
      })
      .def(
          "copy_", [](Tensor& t, const py::object& src) {
            assign(t, src, "Tensor.copy_");
            return t;
          },
          py::arg("src"), "Copies an array-like or a Tensor of the same shape (any device) into this tensor.")
      .def("fill_", [](Tensor& t, float v) {
        py::gil_scoped_release rel;
        t.fill_(v);
        return t;
      })
      .def(
          "numpy", [](const py::object& self) -> py::object {
            const Tensor& t = self.cast<const Tensor&>();
            if (t.device().is_cpu()) return py::module_::import("numpy").attr("asarray")(self);
            py::array_t<float> out(std::vector<py::ssize_t>(t.shape().begin(), t.shape().end()));
            {
              py::gil_scoped_release rel;
              Tensor host = Tensor::borrow(out.mutable_data(), t.shape(), Device::cpu(), nullptr);
              host.copy_from(t);
            }
            return std::move(out);
          },
          "A NumPy view of a CPU tensor (no copy), or a host copy of a GPU tensor.")
      .def("__dlpack_device__", [](const Tensor& t) {
        return py::make_tuple(t.device().is_cpu() ? int(dl::kDLCPU) : int(dl::kDLCUDA), t.device().index());
      })
      .def(
          "__dlpack__",
          [](const Tensor& t, const py::object& stream, const py::object& max_version, const py::object& dl_device,
             const py::object& copy) {
            const bool make_copy = !copy.is_none() && copy.cast<bool>();
            if (!dl_device.is_none()) {
              py::tuple dd = dl_device;
              const int want = dd[0].cast<int>();
              if (want != (t.device().is_cpu() ? int(dl::kDLCPU) : int(dl::kDLCUDA)))
                throw py::buffer_error("magmasr.Tensor.__dlpack__: cannot export to another device without a copy");
            }
            if (t.device().is_cuda() && !(py::isinstance<py::int_>(stream) && stream.cast<long long>() == -1)) {
              // The consumer's stream is unknown to us: finish our work before handing the memory over.
              py::gil_scoped_release rel;
              cuda::synchronize(t.device().index());
            }
            bool versioned = false;
            if (!max_version.is_none()) versioned = py::tuple(max_version)[0].cast<int>() >= 1;
            if (make_copy) {
              Tensor c;
              {
                py::gil_scoped_release rel;
                c = t.clone();
              }
              return to_dlpack(c, versioned);
            }
            return to_dlpack(t, versioned);
          },
          py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
          py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def_property_readonly("__cuda_array_interface__", [](const Tensor& t) -> py::dict {
        if (!t.device().is_cuda())
          throw py::attribute_error("__cuda_array_interface__: the tensor is on the CPU");
        py::dict d;
        d["shape"] = shape_tuple(t.shape());
        d["typestr"] = "<f4";
        d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(t.data()), false);
        d["version"] = 3;
        d["strides"] = py::none();
        d["stream"] = py::int_(reinterpret_cast<uintptr_t>(cuda::stream(t.device().index())));
        return d;
      });

  m.def("from_numpy", &from_numpy, py::arg("array"),
        "Wraps a float32, C-contiguous, writeable NumPy array without copying (the tensor keeps it alive).");
  m.def("from_dlpack", &from_dlpack, py::arg("obj"),
        "Wraps a DLPack producer (PyTorch, CuPy, NumPy, ...) without copying; float32, contiguous.");
  m.def(
      "as_tensor", [](const py::object& o) { return as_tensor(o); }, py::arg("obj"),
      "A Tensor as is, a float32 NumPy array or a DLPack tensor wrapped without copying.");
  m.def(
      "empty", [](const py::object& shape, const py::object& device) {
        return Tensor::empty(as_shape(shape), as_device(device));
      },
      py::arg("shape"), py::arg("device") = "cpu");
  m.def(
      "zeros", [](const py::object& shape, const py::object& device) {
        return Tensor::zeros(as_shape(shape), as_device(device));
      },
      py::arg("shape"), py::arg("device") = "cpu");
  m.def(
      "full", [](const py::object& shape, float value, const py::object& device) {
        return Tensor::full(as_shape(shape), value, as_device(device));
      },
      py::arg("shape"), py::arg("value"), py::arg("device") = "cpu");

  // ------------------------------------------------------------------------------------------- ops
  py::module_ ops_m = m.def_submodule("ops", "Functional ops on tensors (NumPy float32 arrays are accepted).");
  auto conv_fn = [](int sd) {
    return [sd](const py::object& x, const py::object& w, const py::object& bias, const py::object& padding,
                const std::string& padding_mode, bool relu, const std::string& algo) {
      const Tensor xt = as_tensor(x, "input"), wt = as_tensor(w, "weight");
      const Tensor bt = bias.is_none() ? Tensor() : as_tensor(bias, "bias");
      require_rank(xt, sd + 2, sd == 2 ? "conv2d" : "conv3d", sd == 2 ? "[N, C, H, W]" : "[N, C, D, H, W]");
      const ops::ConvOptions o = conv_options(padding, padding_mode, algo);
      py::gil_scoped_release rel;
      return ops::conv(xt, wt, bt, o, relu);
    };
  };
  const char* conv_doc = R"doc(Stride-1 correlation y = x * w + bias (no kernel flip), optionally with a fused ReLU.
padding: int or one int per spatial dimension, added on both sides; padding_mode 'zeros' or 'replicate';
algo (CUDA): 'auto', 'direct', 'direct_async', 'implicit_gemm', 'gemm' or 'auto_direct' (the fastest of the three
direct kernels, whose results are identical bit for bit); 'winograd': on the CPU, layers with 3x3 or 5x5 kernels in space
(2-D, or 3-D with any depth kernel) and at least 8 channels in and out by Winograd's F(6x6, 3x3) / F(4x4, 5x5)
(faster; outputs within a few 1e-5 of the direct sums relative to the output's scale,
their bits depending on their place in the grid of 6 x 6 / 4 x 4 output tiles), on a GPU as 'auto_direct'.)doc";
  for (int sd : {2, 3}) {
    const std::string name = sd == 2 ? "conv2d" : "conv3d";
    ops_m.def(name.c_str(), conv_fn(sd), py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
              py::arg("padding") = 0, py::arg("padding_mode") = "zeros", py::arg("relu") = false,
              py::arg("algo") = "auto", conv_doc);
    ops_m.def(
        (name + "_backward_data").c_str(),
        [sd](const py::object& dy, const py::object& w, const py::object& input_shape, const py::object& padding,
             const std::string& padding_mode, const std::string& algo) {
          const Tensor dyt = as_tensor(dy, "grad_output"), wt = as_tensor(w, "weight");
          const Shape xs = as_shape(input_shape);
          if (int(xs.size()) != sd + 2)
            throw ValueError("input_shape must have " + std::to_string(sd + 2) + " entries, got " + shape_str(xs));
          const ops::ConvOptions o = conv_options(padding, padding_mode, algo);
          py::gil_scoped_release rel;
          return ops::conv_backward_data(dyt, wt, xs, o);
        },
        py::arg("grad_output"), py::arg("weight"), py::arg("input_shape"), py::arg("padding") = 0,
        py::arg("padding_mode") = "zeros", py::arg("algo") = "auto", "Gradient of the convolution w.r.t. its input. algo as for the forward pass; 'winograd' on the CPU: with "
        "zero padding, the adjoint convolution (dy with the flipped, transposed weights) by Winograd where it "
        "applies (3x3 / 5x5 kernels in space, 8+ channels each way).");
    ops_m.def(
        (name + "_backward_weight").c_str(),
        [sd](const py::object& x, const py::object& dy, const py::object& weight_shape, bool bias,
             const py::object& padding, const std::string& padding_mode, const std::string& algo) {
          const Tensor xt = as_tensor(x, "input"), dyt = as_tensor(dy, "grad_output");
          require_rank(xt, sd + 2, sd == 2 ? "conv2d_backward_weight" : "conv3d_backward_weight",
                       sd == 2 ? "[N, C, H, W]" : "[N, C, D, H, W]");
          const Shape ws = as_shape(weight_shape);
          const ops::ConvOptions o = conv_options(padding, padding_mode, algo);
          std::pair<Tensor, Tensor> r;
          {
            py::gil_scoped_release rel;
            r = ops::conv_backward_weight(xt, dyt, ws, bias, o);
          }
          return py::make_tuple(r.first, optional_tensor(r.second));
        },
        py::arg("x"), py::arg("grad_output"), py::arg("weight_shape"), py::arg("bias") = true,
        py::arg("padding") = 0, py::arg("padding_mode") = "zeros", py::arg("algo") = "auto",
        "Gradients (weight, bias or None) of the convolution. algo as for the forward pass; 'winograd' on the CPU: "
        "the weight gradient of the layers Winograd computes by the adjoint of its transforms.");
  }
  ops_m.def(
      "relu", [](const py::object& x) {
        const Tensor t = as_tensor(x);
        py::gil_scoped_release rel;
        return ops::relu(t);
      },
      py::arg("x"));
  ops_m.def(
      "relu_backward", [](const py::object& y, const py::object& dy) {
        const Tensor a = as_tensor(y, "output"), b = as_tensor(dy, "grad_output");
        py::gil_scoped_release rel;
        return ops::relu_backward(a, b);
      },
      py::arg("y"), py::arg("grad_output"));
  ops_m.def(
      "mse_loss", [](const py::object& p, const py::object& t) {
        const Tensor a = as_tensor(p, "prediction"), b = as_tensor(t, "target");
        py::gil_scoped_release rel;
        return ops::mse_loss(a, b);
      },
      py::arg("prediction"), py::arg("target"), "Mean of (prediction - target)^2, accumulated in double.");
  ops_m.def(
      "mse_loss_backward", [](const py::object& p, const py::object& t, float scale) {
        const Tensor a = as_tensor(p, "prediction"), b = as_tensor(t, "target");
        py::gil_scoped_release rel;
        return ops::mse_loss_backward(a, b, scale);
      },
      py::arg("prediction"), py::arg("target"), py::arg("scale") = 1.0f,
      "Gradient of scale * mse_loss with respect to the prediction: 2 * scale * (p - t) / n.");
  ops_m.def(
      "pixel_shuffle", [](const py::object& x, int64_t r) {
        const Tensor t = as_tensor(x);
        py::gil_scoped_release rel;
        return ops::pixel_shuffle(t, r);
      },
      py::arg("x"), py::arg("upscale"));
  ops_m.def(
      "pixel_shuffle_backward", [](const py::object& dy, int64_t r) {
        const Tensor t = as_tensor(dy, "grad_output");
        py::gil_scoped_release rel;
        return ops::pixel_shuffle_backward(t, r);
      },
      py::arg("grad_output"), py::arg("upscale"));
  ops_m.def(
      "add", [](const py::object& a, const py::object& b) {
        const Tensor x = as_tensor(a), y = as_tensor(b);
        py::gil_scoped_release rel;
        return ops::add(x, y);
      },
      py::arg("a"), py::arg("b"));
  ops_m.def(
      "scale", [](const py::object& x, float alpha) {
        const Tensor t = as_tensor(x);
        py::gil_scoped_release rel;
        return ops::scale(t, alpha);
      },
      py::arg("x"), py::arg("alpha"));
  ops_m.def(
      "sgd_update",
      [](const py::object& p, const py::object& g, const py::object& v, float lr, float momentum,
         float weight_decay, bool nesterov) {
        Tensor pt = as_tensor(p, "param"), gt = as_tensor(g, "grad");
        Tensor vt = v.is_none() ? Tensor() : as_tensor(v, "velocity");
        const SgdParams hp{lr, momentum, weight_decay, nesterov};
        py::gil_scoped_release rel;
        ops::sgd_update(pt, gt, vt, hp);
      },
      py::arg("param"), py::arg("grad"), py::arg("velocity") = py::none(), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = 0.0f, py::arg("weight_decay") = 0.0f, py::arg("nesterov") = false,
      "In-place SGD step (PyTorch's rule).");
  ops_m.def(
      "adam_update",
      [](const py::object& p, const py::object& g, const py::object& mm, const py::object& vv, int64_t step,
         float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled) {
        Tensor pt = as_tensor(p, "param"), gt = as_tensor(g, "grad"), mt = as_tensor(mm, "m"),
               vt = as_tensor(vv, "v");
        const AdamParams hp{lr, beta1, beta2, eps, weight_decay, decoupled};
        py::gil_scoped_release rel;
        ops::adam_update(pt, gt, mt, vt, hp, step);
      },
      py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::arg("step"), py::kw_only(),
      py::arg("lr") = 1e-3f, py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f,
      py::arg("weight_decay") = 0.0f, py::arg("decoupled") = false, "In-place Adam step (step counts from 1).");

  py::class_<ops::ResampleTable>(ops_m, "ResampleTable", R"doc(A 1-D resampling table held on one device.

Output sample j along an axis is sum_t weights[j, t] * input[indices[j, t]] for an input of length in_len
(magmasr.image.contributions computes MATLAB's). Building it copies the table to `device` once; resample_axis
with it then never goes back to the host, so keep one per (size, scale) and reuse it for every frame.)doc")
      .def(py::init([](const py::object& weights, const py::object& indices, int64_t in_len, const py::object& device) {
             const HostTable t = host_table(weights, indices);
             const Device d = as_device(device);
             py::gil_scoped_release rel;
             return ops::ResampleTable(t.weights, t.indices, t.out_len, in_len, d);
           }),
           py::arg("weights"), py::arg("indices"), py::arg("in_len"), py::arg("device") = "cpu",
           "weights: float [out_len, taps] (kept in float64); indices: integers in [0, in_len), same shape.")
      .def_property_readonly("in_len", &ops::ResampleTable::in_len)
      .def_property_readonly("out_len", &ops::ResampleTable::out_len)
      .def_property_readonly("taps", &ops::ResampleTable::taps)
      .def_property_readonly("device", &ops::ResampleTable::device)
      .def_property_readonly(
          "weights",
          [](const ops::ResampleTable& t) {
            py::array_t<double> a({t.out_len(), t.taps()});
            std::vector<double> v;
            {
              py::gil_scoped_release rel;
              v = t.weights_host();
            }
            std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(double));
            return a;
          },
          "The weights, copied into a float64 [out_len, taps] array.")
      .def_property_readonly(
          "indices",
          [](const ops::ResampleTable& t) {
            py::array_t<int32_t> a({t.out_len(), t.taps()});
            std::vector<int32_t> v;
            {
              py::gil_scoped_release rel;
              v = t.indices_host();
            }
            std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(int32_t));
            return a;
          },
          "The indices, copied into an int32 [out_len, taps] array.")
      .def(
          "to", [](const ops::ResampleTable& t, const py::object& device) {
            const Device d = as_device(device);
            py::gil_scoped_release rel;
            return t.to(d);
          },
          py::arg("device"), "This table if it is on `device` already, else a copy there.")
      .def("__repr__", [](const ops::ResampleTable& t) {
        return "ResampleTable(in_len=" + std::to_string(t.in_len()) + ", out_len=" + std::to_string(t.out_len()) +
               ", taps=" + std::to_string(t.taps()) + ", device=" + t.device().str() + ")";
      });
  const char* resample_doc = R"doc(Separable 1-D resampling along `axis` (one pass of MATLAB's imresize).

y has x's shape with that axis of length out_len; y[..., j, ...] = sum_t weights[j, t] * x[..., indices[j, t], ...],
accumulated in double. round_uint8: round half away from zero and clamp to [0, 255] (MATLAB's uint8 mode).
The table is a ResampleTable on x's device, or weights (float [out_len, taps], used in float64) and indices
(integers in [0, x.shape[axis]), same shape), copied to x's device for this call.)doc";
  ops_m.def(
      "resample_axis",
      [](const py::object& x, int axis, const ops::ResampleTable& table, bool round_uint8) {
        const Tensor xt = as_tensor(x, "input");
        py::gil_scoped_release rel;
        return ops::resample_axis(xt, axis, table, round_uint8);
      },
      py::arg("x"), py::arg("axis"), py::arg("table"), py::arg("round_uint8") = false, resample_doc);
  ops_m.def(
      "resample_axis",
      [](const py::object& x, int axis, const py::object& weights, const py::object& indices, bool round_uint8) {
        const Tensor xt = as_tensor(x, "input");
        const HostTable t = host_table(weights, indices);
        py::gil_scoped_release rel;
        return ops::resample_axis(xt, axis, t.weights, t.indices, t.taps, round_uint8);
      },
      py::arg("x"), py::arg("axis"), py::arg("weights"), py::arg("indices"), py::arg("round_uint8") = false);

  ops_m.def(
      "bicubic_contributions",
      [](int64_t in_len, int64_t out_len, double scale) {
        ops::HostResampleTable t;
        {
          py::gil_scoped_release rel;
          t = ops::bicubic_contributions(in_len, out_len, scale);
        }
        py::array_t<double> w({t.out_len, t.taps});
        py::array_t<int64_t> idx({t.out_len, t.taps});
        std::memcpy(w.mutable_data(), t.weights.data(), t.weights.size() * sizeof(double));
        std::copy(t.indices.begin(), t.indices.end(), idx.mutable_data());
        return py::make_tuple(w, idx);
      },
      py::arg("in_len"), py::arg("out_len"), py::arg("scale"),
      "The C++ bicubic imresize table (ops::bicubic_contributions): (float64 weights, int64 indices), both\n"
      "[out_len, taps]; equal to magmasr.image.contributions(in_len, out_len, scale).");
  ops_m.def(
      "bicubic_table",
      [](int64_t in_len, int64_t out_len, double scale, const py::object& device) {
        const Device d = as_device(device);
        py::gil_scoped_release rel;
        return ops::bicubic_table(in_len, out_len, scale, d);
      },
      py::arg("in_len"), py::arg("out_len"), py::arg("scale"), py::arg("device") = "cpu",
      "bicubic_contributions(in_len, out_len, scale) as a ResampleTable on `device`.");

  // ---------------------------------------------------------------------------------------- weight files
  m.def(
      "load_safetensors",
      [](const py::object& path) {
        const std::string p = as_path(path);
        TensorFile f;
        {
          py::gil_scoped_release rel;
          f = load_safetensors(p);
        }
        return py::make_tuple(tensor_dict(f.tensors), py::cast(f.metadata));
      },
      py::arg("path"),
      "The C++ safetensors reader: (dict name -> CPU Tensor, dict metadata). F32 only (TypeError otherwise);\n"
      "ValueError naming the file and the fault for a malformed file; OSError when it cannot be read.");
  m.def(
      "_srcnn_upscale",
      [](const py::object& path, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> pixels,
         int64_t scale, const py::object& device, int64_t tile) {
        // The C++ SrcnnModel (magmasr/sr.hpp), for the tests that compare it with magmasr.sr.ImageSR.
        const std::string p = as_path(path);
        if (pixels.ndim() != 2 && !(pixels.ndim() == 3 && pixels.shape(2) >= 1 && pixels.shape(2) <= 4))
          throw ValueError("_srcnn_upscale: expected an H x W or H x W x C (C = 1 to 4) uint8 picture");
        Picture in(pixels.shape(0), pixels.shape(1), pixels.ndim() == 3 ? pixels.shape(2) : 1);
        std::memcpy(in.pixels.data(), pixels.data(), in.pixels.size());
        const Device d = as_device(device);
        Picture out;
        {
          py::gil_scoped_release rel;
          SrcnnModel model = SrcnnModel::load(p);
          model.to(d);
          out = model.upscale(in, scale, tile);
        }
        std::vector<py::ssize_t> shape{py::ssize_t(out.height), py::ssize_t(out.width)};
        if (pixels.ndim() == 3) shape.push_back(py::ssize_t(out.channels));
        py::array_t<uint8_t> result(shape);
        std::memcpy(result.mutable_data(), out.pixels.data(), out.pixels.size());
        return result;
      },
      py::arg("path"), py::arg("pixels"), py::arg("scale") = 0, py::arg("device") = "cpu", py::arg("tile") = 0);
  m.def(
      "save_safetensors",
      [](const py::object& path, const py::object& tensors, const py::object& metadata) {
        const std::string p = as_path(path);
        const auto t = as_tensor_map(tensors, "save_safetensors");
        std::map<std::string, std::string> meta;
        if (!metadata.is_none()) {
          if (!py::isinstance<py::dict>(metadata))
            throw TypeError("save_safetensors: metadata must be a dict str -> str, got " + type_name(metadata));
          for (auto kv : py::reinterpret_borrow<py::dict>(metadata)) {
            if (!py::isinstance<py::str>(kv.first) || !py::isinstance<py::str>(kv.second))
              throw TypeError("save_safetensors: metadata must map str -> str, got " + type_name(kv.first) + " -> " +
                              type_name(kv.second));
            meta[kv.first.cast<std::string>()] = kv.second.cast<std::string>();
          }
        }
        py::gil_scoped_release rel;
        save_safetensors(p, t, meta);
      },
      py::arg("path"), py::arg("tensors"), py::arg("metadata") = py::none(),
      "The C++ safetensors writer (atomic: a temporary file renamed into place); names sorted, F32.");

  // ------------------------------------------------------------------------------------------ layers
  py::module_ nn_m = m.def_submodule("nn", "Layers and containers.");
  py::class_<Parameter>(nn_m, "Parameter")
      .def_readonly("name", &Parameter::name)
      .def_property(
          "value", [](Parameter& p) { return p.value; },
          [](Parameter& p, const py::object& v) { assign(p.value, v, "Parameter " + p.name); })
      .def_property_readonly("grad", [](Parameter& p) { return optional_tensor(p.grad); })
      .def_property(
          "lr_mult", [](Parameter& p) { return p.lr_mult; },
          [](Parameter& p, float v) {
            if (!(v >= 0.0f && std::isfinite(v)))
              throw ValueError("Parameter " + p.name + ": lr_mult must be >= 0 and finite, got " + std::to_string(v));
            p.lr_mult = v;
          })
      .def_readonly("trainable", &Parameter::trainable)
      .def_property_readonly("shape", [](Parameter& p) { return shape_tuple(p.value.shape()); })
      .def("__repr__", [](Parameter& p) {
        return "Parameter(" + p.name + ", shape=" + shape_str(p.value.shape()) + ", lr_mult=" +
               std::to_string(p.lr_mult) + (p.trainable ? "" : ", frozen") + ")";
      });

  auto layer_forward = [](Layer& l, const py::object& x, bool training) {
    const Tensor t = as_tensor(x);
    py::gil_scoped_release rel;
    return l.forward(t, training);
  };
  py::class_<Layer, std::shared_ptr<Layer>>(nn_m, "Layer")
      .def("forward", layer_forward, py::arg("x"), py::arg("training") = false,
           "Runs the layer; training=True keeps what backward() needs.")
      .def("__call__", layer_forward, py::arg("x"), py::arg("training") = false)
      .def(
          "backward", [](Layer& l, const py::object& dy, bool need_dx) {
            const Tensor t = as_tensor(dy, "grad_output");
            Tensor dx;
            {
              py::gil_scoped_release rel;
              dx = l.backward(t, need_dx);
            }
            return optional_tensor(dx);
          },
          py::arg("grad_output"), py::arg("need_input_grad") = false,
          "Back-propagates after forward(x, training=True); fills the parameters' grad; returns the input "
          "gradient when need_input_grad, else None.")
      .def("output_shape", [](Layer& l, const py::object& s) { return shape_tuple(l.output_shape(as_shape(s))); },
           py::arg("input_shape"))
      .def("parameters", &Layer::parameters, py::return_value_policy::reference_internal)
      .def_property_readonly("num_parameters", &Layer::num_parameters)
      .def_property("trainable", &Layer::trainable, &Layer::set_trainable)
      .def_property_readonly("type_name", &Layer::type_name)
      .def(
          "to", [](Layer& l, const py::object& dev) {
            const Device d = as_device(dev);
            check_device(d);
            py::gil_scoped_release rel;
            l.to(d);
          },
          py::arg("device"), "Moves the parameters to `device` (in place).")
      .def("clear_cache", &Layer::clear_cache)
      .def("__repr__", [](Layer& l) {
        const std::string d = l.describe();
        return l.type_name() + "(" + d + ")";
      });

  py::class_<Conv, Layer, std::shared_ptr<Conv>>(nn_m, "Conv")
      .def_property_readonly("in_channels", &Conv::in_channels)
      .def_property_readonly("out_channels", &Conv::out_channels)
      .def_property_readonly("kernel_size", [](Conv& c) { return shape_tuple(c.kernel()); })
      .def_property_readonly("padding", [](Conv& c) { return shape_tuple(c.padding()); })
      .def_property_readonly("padding_mode", [](Conv& c) { return to_string(c.pad_mode()); })
      .def_property(
          "algo", [](Conv& c) { return to_string(c.algo()); },
          [](Conv& c, const std::string& a) { c.set_algo(conv_algo_from_string(a)); })
      .def_property(
          "weight", [](Conv& c) { return c.weight().value; },
          [](Conv& c, const py::object& v) { assign(c.weight().value, v, "Conv weight"); })
      .def_property(
          "bias", [](Conv& c) { return optional_tensor(c.bias().value); },
          [](Conv& c, const py::object& v) {
            if (!c.has_bias()) throw ValueError("this convolution has no bias");
            assign(c.bias().value, v, "Conv bias");
          })
      .def_property_readonly("weight_param", &Conv::weight, py::return_value_policy::reference_internal)
      .def_property_readonly("bias_param",
                             [](Conv& c) -> Parameter* { return c.has_bias() ? &c.bias() : nullptr; },
                             py::return_value_policy::reference_internal);

  auto make_conv = [](int sd) {
    return [sd](int64_t cin, int64_t cout, const py::object& kernel, const py::object& padding,
                const std::string& padding_mode, bool bias, uint64_t seed) {
      std::vector<int64_t> k = is_integer(kernel) ? std::vector<int64_t>{to_integer(kernel, "kernel_size")}
                                                  : as_ints(kernel, "kernel_size");
      if (k.size() == 1) k.assign(size_t(sd), k[0]);
      std::vector<int64_t> pad;
      if (py::isinstance<py::str>(padding)) {
        const std::string s = padding.cast<std::string>();
        if (s == "valid") {
          pad.assign(size_t(sd), 0);
        } else if (s == "same") {
          for (int64_t kk : k) {
            if (kk % 2 == 0) throw ValueError("padding='same' needs odd kernel sizes, got " + shape_str(k));
            pad.push_back(kk / 2);
          }
        } else {
          throw ValueError("padding must be 'same', 'valid', an int or a tuple, got '" + s + "'");
        }
      } else {
        pad = as_padding(padding);
      }
      if (sd == 2) return std::shared_ptr<Conv>(std::make_shared<Conv2d>(cin, cout, k, pad, pad_mode_from_string(padding_mode), bias, seed));
      return std::shared_ptr<Conv>(std::make_shared<Conv3d>(cin, cout, k, pad, pad_mode_from_string(padding_mode), bias, seed));
    };
  };
  py::class_<Conv2d, Conv, std::shared_ptr<Conv2d>>(nn_m, "_Conv2dBase");
  py::class_<Conv3d, Conv, std::shared_ptr<Conv3d>>(nn_m, "_Conv3dBase");
  nn_m.def("Conv2d", make_conv(2), py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"),
           py::arg("padding") = 0, py::arg("padding_mode") = "zeros", py::arg("bias") = true, py::arg("seed") = 0,
           "2-D convolution layer, weight [out, in, kH, kW]. padding: int, (ph, pw), 'same' or 'valid'.");
  nn_m.def("Conv3d", make_conv(3), py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"),
           py::arg("padding") = 0, py::arg("padding_mode") = "zeros", py::arg("bias") = true, py::arg("seed") = 0,
           "3-D convolution layer, weight [out, in, kD, kH, kW]. padding: int, (pd, ph, pw), 'same' or 'valid'.");

  py::class_<ReLU, Layer, std::shared_ptr<ReLU>>(nn_m, "ReLU").def(py::init<>());
  py::class_<PixelShuffle, Layer, std::shared_ptr<PixelShuffle>>(nn_m, "PixelShuffle")
      .def(py::init<int64_t>(), py::arg("upscale"))
      .def_property_readonly("upscale", &PixelShuffle::upscale);
  py::class_<FoldDepth, Layer, std::shared_ptr<FoldDepth>>(nn_m, "FoldDepth",
                                                           "[N, C, D, H, W] -> [N, C*D, H, W] (no copy).")
      .def(py::init<>());

  py::class_<Sequential, Layer, std::shared_ptr<Sequential>>(nn_m, "Sequential")
      .def(py::init([](const py::args& layers) {
        auto s = std::make_shared<Sequential>();
        for (auto item : layers) {
          if (py::isinstance<py::tuple>(item) && py::len(item) == 2) {
            py::tuple t = py::reinterpret_borrow<py::tuple>(item);
            if (!py::isinstance<py::str>(t[0]) || !py::isinstance<Layer>(t[1]))
              throw TypeError("Sequential: a (name, layer) pair needs a str and a layer, got (" + type_name(t[0]) +
                              ", " + type_name(t[1]) + ")");
            s->add(t[1].cast<std::shared_ptr<Layer>>(), t[0].cast<std::string>());
          } else if (py::isinstance<Layer>(item)) {
            s->add(item.cast<std::shared_ptr<Layer>>());
          } else {
            throw TypeError("Sequential: expected layers or (name, layer) pairs, got " + type_name(item));
          }
        }
        return s;
      }))
      .def("add", [](Sequential& s, const std::shared_ptr<Layer>& l, const std::string& name) -> Sequential& {
        return s.add(l, name);
      }, py::arg("layer"), py::arg("name") = "", py::return_value_policy::reference_internal)
      .def("__len__", &Sequential::size)
      .def("__getitem__", [](Sequential& s, const py::object& key) -> std::shared_ptr<Layer> {
        if (py::isinstance<py::str>(key)) return s.get(key.cast<std::string>());
        if (!is_integer(key)) throw TypeError("Sequential indices are layer names or integers, got " + type_name(key));
        long long i = to_integer(key, "Sequential index");
        if (i < 0) i += static_cast<long long>(s.size());
        if (i < 0 || size_t(i) >= s.size()) throw py::index_error("Sequential index out of range");
        return s.at(size_t(i));
      })
      .def("names", [](Sequential& s) {
        std::vector<std::string> out;
        for (size_t i = 0; i < s.size(); ++i) out.push_back(s.name_at(i));
        return out;
      })
      .def("named_parameters", &Sequential::named_parameters, py::return_value_policy::reference_internal)
      // The C++ Sequential::state_dict / load_state_dict, for tests (magmasr.nn defines the public ones).
      .def("_state_dict", [](Sequential& s) { return tensor_dict(s.state_dict()); })
      .def(
          "_load_state_dict",
          [](Sequential& s, const py::object& state, bool strict) {
            const auto st = as_tensor_map(state, "load_state_dict");
            py::gil_scoped_release rel;
            s.load_state_dict(st, strict);
          },
          py::arg("state"), py::arg("strict") = true)
      .def("summary_str", [](Sequential& s, const py::object& shape) { return s.summary(as_shape(shape)); },
           py::arg("input_shape"));

  // ------------------------------------------------------------------------------------------ optim
  py::module_ optim_m = m.def_submodule("optim", "Optimizers.");
  py::class_<Optimizer>(optim_m, "Optimizer")
      .def("step", &Optimizer::step, py::call_guard<py::gil_scoped_release>())
      .def("zero_grad", &Optimizer::zero_grad, py::call_guard<py::gil_scoped_release>())
      .def_property("lr", &Optimizer::lr, &Optimizer::set_lr)
      .def_property("steps", &Optimizer::steps, &Optimizer::set_steps)
      .def_property("param_steps", &Optimizer::param_steps, &Optimizer::set_param_steps,
                    "Updates each parameter has received (params() order); Adam's bias correction counts these.")
      .def("state", &Optimizer::state, py::return_value_policy::reference_internal,
           "The state tensors (momentum / moments) in parameter order, for checkpoints.")
      .def("params", &Optimizer::params, py::return_value_policy::reference_internal);
  py::class_<SGD, Optimizer>(optim_m, "SGD")
      .def(py::init([](const py::object& params, float lr, float momentum, float weight_decay, bool nesterov) {
             return std::make_unique<SGD>(as_params(params), SgdParams{lr, momentum, weight_decay, nesterov});
           }),
           py::arg("params"), py::arg("lr"), py::arg("momentum") = 0.0f, py::arg("weight_decay") = 0.0f,
           py::arg("nesterov") = false, py::keep_alive<1, 2>(),
           "SGD with momentum (PyTorch's rule); each parameter's rate is lr * its lr_mult.")
      .def_property_readonly("momentum", [](SGD& s) { return s.hyper().momentum; })
      .def_property_readonly("weight_decay", [](SGD& s) { return s.hyper().weight_decay; });
  py::class_<Adam, Optimizer>(optim_m, "Adam")
      .def(py::init([](const py::object& params, float lr, std::pair<float, float> betas, float eps,
                       float weight_decay, bool decoupled) {
             return std::make_unique<Adam>(as_params(params),
                                           AdamParams{lr, betas.first, betas.second, eps, weight_decay, decoupled});
           }),
           py::arg("params"), py::arg("lr") = 1e-3f, py::arg("betas") = std::make_pair(0.9f, 0.999f),
           py::arg("eps") = 1e-8f, py::arg("weight_decay") = 0.0f, py::arg("decoupled") = false,
           py::keep_alive<1, 2>(), "Adam (AdamW when decoupled); each parameter's rate is lr * its lr_mult.");

  // ------------------------------------------------------------------------------------------- cuda
  py::module_ cuda_m = m.def_submodule("cuda", "The CUDA runtime: devices and the caching allocator.");
  cuda_m.def("is_available", &cuda_available);
  cuda_m.def("device_count", &cuda_device_count);
  cuda_m.def(
      "device_name", [](int d) {
        check_device(Device::cuda(d));
        return cuda::device_name(d);
      },
      py::arg("device") = 0);
  cuda_m.def(
      "memory_stats", [](int d) {
        check_device(Device::cuda(d));
        const cuda::MemoryStats s = cuda::memory_stats(d);
        py::dict out;
        out["allocated_bytes"] = s.allocated_bytes;
        out["reserved_bytes"] = s.reserved_bytes;
        out["peak_allocated_bytes"] = s.peak_allocated_bytes;
        out["num_device_allocs"] = s.num_device_allocs;
        out["num_cache_hits"] = s.num_cache_hits;
        return out;
      },
      py::arg("device") = 0);
  cuda_m.def(
      "mem_get_info", [](int d) {
        check_device(Device::cuda(d));
        size_t free_b = 0, total_b = 0;
        cuda::mem_get_info(d, &free_b, &total_b);
        return py::make_tuple(free_b, total_b);
      },
      py::arg("device") = 0, "(free, total) device memory in bytes, as the driver reports it.");
  cuda_m.def(
      "empty_cache", [](int d) {
        check_device(Device::cuda(d));
        cuda::empty_cache(d);
      },
      py::arg("device") = 0);
  cuda_m.def(
      "synchronize", [](int d) {
        check_device(Device::cuda(d));
        py::gil_scoped_release rel;
        cuda::synchronize(d);
      },
      py::arg("device") = 0);
}
