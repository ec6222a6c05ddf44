"""Weight files: the native safetensors format, strict state checks, and importers of published weights.

Native format
-------------
``save`` / ``load`` read and write `safetensors <https://huggingface.co/docs/safetensors>`_ files: a map
from parameter names to tensors plus a ``str -> str`` metadata map (architecture, scale, training recipe,
...). Floating-point tensors are stored as float32. Writes are atomic: the file is written to a temporary
file in the same directory, flushed to disk and renamed over the destination, so a reader sees either the
old file or the complete new one, never a partial file.

Parameter names and layouts
---------------------------
Names follow PyTorch's ``state_dict`` convention and are stable across versions:
``conv{i}.weight`` in ``[Cout, Cin, kH, kW]`` (2-D) or ``[Cout, Cin, kD, kH, kW]`` (3-D) and
``conv{i}.bias`` in ``[Cout]``, with ``i`` counting from 1. Every layer is a *correlation* (no kernel
flip), as in PyTorch, Keras, MatConvNet and MATLAB's ``imfilter``.

Importers
---------
``import_srcnn_mat``
    The SRCNN authors' MATLAB v5 models (``x2.mat``, ...): ``conv1..conv3``.
``import_3dsrnet_mat``
    The 3DSRnet authors' MatConvNet DagNN files (MATLAB v7.3 = HDF5): ``conv1..conv6``, with conv6's
    ``scale^2`` output channels in PyTorch ``pixel_shuffle`` order.
``import_keras_h5``
    Keras HDF5 weight files (Keras 1.x ``convolution2d_*`` groups or Keras 2 ``conv2d_*``; TensorFlow
    HWIO kernels): ``conv1..convN`` in layer order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ._files import finish, temp_beside

__all__ = [
    "save",
    "load",
    "check_state",
    "StateDictError",
    "StateCheck",
    "import_srcnn_mat",
    "import_3dsrnet_mat",
    "import_keras_h5",
]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------
# Native format
# ---------------------------------------------------------------------------------------------------

def _as_storable(name: str, value) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise TypeError(f"save: tensor names must be non-empty strings, got {name!r}")
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(f"save: tensor {name!r} has unsupported dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32, copy=False)
    # (np.ascontiguousarray would turn a 0-d scalar into shape (1,); a 0-d array is always contiguous)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def save(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) and ``metadata`` (str -> str) to a safetensors file, atomically.

    Floating-point arrays are stored as float32; integer and bool arrays keep their dtype. The file
    is first written to a temporary file next to ``path``, fsynced and then renamed over ``path``; on
    any failure the temporary file is removed and an existing ``path`` is left untouched. An existing
    ``path`` keeps its permission bits; a symbolic link stays a link (the file it leads to is replaced).
    """
    from safetensors.numpy import save as _st_save

    path = os.fspath(path)
    if not isinstance(tensors, Mapping):
        raise TypeError(f"save: tensors must be a mapping name -> array, got {type(tensors).__name__}")
    data = {name: _as_storable(name, value) for name, value in tensors.items()}
    meta = None
    if metadata is not None:
        meta = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"save: metadata must map str -> str, got {k!r}: {v!r}")
            meta[k] = v

    payload = _st_save(data, metadata=meta)
    try:
        fd, tmp, target = temp_beside(path)
    except OSError as e:  # name the file asked for, not the temporary one
        raise type(e)(e.errno, f"save: cannot write {path} ({e.strerror})") from None
    directory = os.path.dirname(os.path.abspath(target))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        finish(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable (best effort: not every platform can fsync a directory).
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def load(
    path: str | os.PathLike,
    expected: Mapping[str, tuple[int, ...]] | None = None,
    strict: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: returns ``(tensors, metadata)``.

    If ``expected`` (name -> shape) is given, the tensors are checked with ``check_state(expected,
    tensors, strict)`` before they are returned.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a valid safetensors file.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no such weight file: {path}")
    try:
        tensors: dict[str, np.ndarray] = {}
        with safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise ValueError(f"load: {path} is not a valid safetensors file ({type(e).__name__}: {e})") from e
    if expected is not None:
        check_state(expected, tensors, strict=strict)
    return tensors, metadata


# ---------------------------------------------------------------------------------------------------
# Strict state checks
# ---------------------------------------------------------------------------------------------------

class StateDictError(KeyError):
    """Missing or unexpected parameter names (a ``KeyError`` whose message is readable as is)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass
class StateCheck:
    """What ``check_state`` found: names sorted alphabetically."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def message(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing keys: " + ", ".join(self.missing))
        if self.unexpected:
            parts.append("unexpected keys: " + ", ".join(self.unexpected))
        if self.mismatched:
            parts.append(
                "mis-shaped keys: "
                + ", ".join(f"{n} (expected {list(e)}, got {list(g)})" for n, e, g in self.mismatched)
            )
        return "; ".join(parts)


def check_state(
    expected: Mapping[str, tuple[int, ...]],
    given: Mapping[str, np.ndarray],
    strict: bool = True,
) -> StateCheck:
    """Compare parameter names and shapes.

    Args:
        expected: name -> shape the model needs.
        given: name -> array (anything with ``.shape``) offered.
        strict: if true, missing and unexpected names are errors; if false they are only reported in
            the returned ``StateCheck`` (shape mismatches are always errors).

    Raises:
        StateDictError (a KeyError): missing or unexpected names (strict); the message names all of
            them, and any mis-shaped keys too.
        ValueError: a name present in both with a different shape; the message names each one with
            the expected and given shapes.
    """
    result = StateCheck(
        missing=sorted(set(expected) - set(given)),
        unexpected=sorted(set(given) - set(expected)),
        mismatched=sorted(
            (name, tuple(int(d) for d in expected[name]), tuple(int(d) for d in np.shape(given[name])))
            for name in set(expected) & set(given)
            if tuple(int(d) for d in expected[name]) != tuple(int(d) for d in np.shape(given[name]))
        ),
    )
    if strict and (result.missing or result.unexpected):
        raise StateDictError("state does not match the model: " + result.message())
    if result.mismatched:
        only = StateCheck(mismatched=result.mismatched)
        raise ValueError("state does not match the model: " + only.message())
    return result


# ---------------------------------------------------------------------------------------------------
# Importers
# ---------------------------------------------------------------------------------------------------

def _is_hdf5(path: str) -> bool:
    """True for HDF5 files (including MATLAB v7.3, whose HDF5 signature sits at offset 512)."""
    with open(path, "rb") as f:
        head = f.read(520)
    return head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE


def _square_side(n: int, what: str, path: str) -> int:
    k = int(round(math.sqrt(n)))
    if k * k != n:
        raise ValueError(f"import_srcnn_mat: {path}: {what} holds {n} taps per filter, not a square kernel")
    return k


def import_srcnn_mat(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Import an SRCNN model of Dong et al. (MATLAB v5 ``.mat``, float64) as float32 PyTorch tensors.

    File layout (``weights_conv*`` filters are stored column-major):
    ``weights_conv1`` (f1*f1, n1), ``biases_conv1`` (n1, 1), ``weights_conv2`` (n1, f2*f2, n2),
    ``biases_conv2`` (n2, 1), ``weights_conv3`` (n2, f3*f3), ``biases_conv3`` (1, 1).

    Returns:
        ``conv1.weight`` [n1, 1, f1, f1], ``conv1.bias`` [n1], ``conv2.weight`` [n2, n1, f2, f2],
        ``conv2.bias`` [n2], ``conv3.weight`` [1, n2, f3, f3], ``conv3.bias`` [1]; layers are
        correlations (the authors apply them with ``imfilter``, 'same' size, replicate borders).
    """
    import scipy.io

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"import_srcnn_mat: no such file: {path}")
    if _is_hdf5(path):
        raise ValueError(
            f"import_srcnn_mat: {path} is a MATLAB v7.3 / HDF5 file, not an SRCNN MATLAB v5 model "
            "(3DSRnet MatConvNet files go to import_3dsrnet_mat)"
        )
    try:
        m = scipy.io.loadmat(path)
    except Exception as e:
        raise ValueError(f"import_srcnn_mat: {path} is not a MATLAB .mat file ({e})") from e
    keys = ["weights_conv1", "biases_conv1", "weights_conv2", "biases_conv2", "weights_conv3", "biases_conv3"]
    missing = [k for k in keys if k not in m]
    if missing:
        found = sorted(k for k in m if not k.startswith("__"))
        raise ValueError(f"import_srcnn_mat: {path} is not an SRCNN model: missing {missing}; it holds {found}")

    def numeric(key: str) -> np.ndarray:
        a = np.asarray(m[key])
        if a.dtype.kind not in "biuf":
            raise ValueError(f"import_srcnn_mat: {path}: {key} holds {a.dtype} data, expected numbers")
        return a.astype(np.float64)

    w1, w2, w3 = numeric("weights_conv1"), numeric("weights_conv2"), numeric("weights_conv3")
    b1, b2, b3 = (numeric(k).ravel() for k in ("biases_conv1", "biases_conv2", "biases_conv3"))

    if w1.ndim != 2:
        raise ValueError(f"import_srcnn_mat: {path}: weights_conv1 has shape {w1.shape}, expected (f1*f1, n1)")
    n1 = w1.shape[1]
    f1 = _square_side(w1.shape[0], "weights_conv1", path)
    conv2_note = ""
    if w2.ndim == 2:  # a 1x1 conv2 may be stored without its singleton middle axis
        w2 = w2[:, None, :]
        conv2_note = f" (weights_conv2 is 2-D, so it was read as a 1x1 layer with n2 = {w2.shape[2]} filters)"
    if w2.ndim != 3 or w2.shape[0] != n1:
        raise ValueError(f"import_srcnn_mat: {path}: weights_conv2 has shape {w2.shape}, expected ({n1}, f2*f2, n2)")
    n2 = w2.shape[2]
    f2 = _square_side(w2.shape[1], "weights_conv2", path)
    if w3.ndim != 2 or w3.shape[0] != n2:
        raise ValueError(
            f"import_srcnn_mat: {path}: weights_conv3 has shape {w3.shape}, expected ({n2}, f3*f3){conv2_note}"
        )
    f3 = _square_side(w3.shape[1], "weights_conv3", path)
    if b1.shape != (n1,) or b2.shape != (n2,) or b3.shape != (1,):
        raise ValueError(
            f"import_srcnn_mat: {path}: bias shapes {b1.shape}, {b2.shape}, {b3.shape} do not match "
            f"n1={n1}, n2={n2}, 1 output"
        )

    # A column-major (Fortran) reshape of a length k*k vector v to k x k is v.reshape(k, k).T.
    conv1 = w1.T.reshape(n1, f1, f1).transpose(0, 2, 1)[:, None]          # [n1, 1, f1, f1]
    conv2 = w2.transpose(2, 0, 1).reshape(n2, n1, f2, f2).transpose(0, 1, 3, 2)  # [n2, n1, f2, f2]
    conv3 = w3.reshape(n2, f3, f3).transpose(0, 2, 1)[None]                # [1, n2, f3, f3]
    out = {
        "conv1.weight": conv1, "conv1.bias": b1,
        "conv2.weight": conv2, "conv2.bias": b2,
        "conv3.weight": conv3, "conv3.bias": b3,
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _open_h5(path: str, fn: str):
    """``h5py.File(path, 'r')``, with a damaged file (truncated, corrupt) reported as a ValueError naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{fn}: {path}: cannot read the HDF5 file ({e})") from None


def _h5_string(f, ref) -> str:
    data = f[ref][()]
    return "".join(chr(int(c)) for c in np.asarray(data).ravel())


def import_3dsrnet_mat(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Import 3DSRnet weights of Kim et al. (MatConvNet DagNN saved as MATLAB v7.3 / HDF5).

    The file's ``net.params`` holds ``conv_{i}f`` (MATLAB [kH, kW, kD, Cin, Cout], which h5py shows
    reversed as [Cout, Cin, kD, kW, kH]) and ``conv_{i}b``.

    Returns:
        ``conv{i}.weight`` [Cout, Cin, kD, kH, kW] and ``conv{i}.bias`` [Cout] for i = 1..6 (float32,
        correlations). With the spatial axes in this order, the last layer's ``scale^2`` output channels
        are already in PyTorch ``pixel_shuffle`` order (channel ``c = dy * scale + dx`` goes to sub-pixel
        row ``dy``, column ``dx``), checked against the published Vid4 results.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"import_3dsrnet_mat: no such file: {path}")
    if not _is_hdf5(path):
        raise ValueError(
            f"import_3dsrnet_mat: {path} is not a MATLAB v7.3 / HDF5 file (MATLAB v5 SRCNN models go to "
            "import_srcnn_mat)"
        )
    out: dict[str, np.ndarray] = {}
    with _open_h5(path, "import_3dsrnet_mat") as f:
        if "net" not in f or "params" not in f["net"]:
            raise ValueError(f"import_3dsrnet_mat: {path} is not a MatConvNet DagNN file (no net.params)")
        params = f["net/params"]
        try:
            names = [_h5_string(f, r) for r in np.asarray(params["name"]).ravel()]
            refs = list(np.asarray(params["value"]).ravel())
        except Exception as e:
            raise ValueError(f"import_3dsrnet_mat: {path}: cannot read net.params ({e})") from e
        for name, ref in zip(names, refs):
            value = np.asarray(f[ref][()])
            if len(name) < 6 or not name.startswith("conv_") or name[-1] not in "fb":
                raise ValueError(f"import_3dsrnet_mat: {path}: unexpected parameter {name!r}")
            idx = name[5:-1]
            if name.endswith("f"):
                if value.ndim != 5:
                    raise ValueError(f"import_3dsrnet_mat: {path}: {name} has shape {value.shape}, expected 5-D")
                out[f"conv{idx}.weight"] = np.swapaxes(value, -1, -2)
            else:
                out[f"conv{idx}.bias"] = value.ravel()

    expected = {f"conv{i}.{p}" for i in range(1, 7) for p in ("weight", "bias")}
    if set(out) != expected:
        raise ValueError(
            f"import_3dsrnet_mat: {path}: expected parameters conv1..conv6, got {sorted(out)}"
        )
    r = int(round(math.sqrt(out["conv6.weight"].shape[0])))
    if r * r != out["conv6.weight"].shape[0]:
        raise ValueError(f"import_3dsrnet_mat: {path}: conv6 has {out['conv6.weight'].shape[0]} outputs, not scale^2")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(out.items())}


def import_keras_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Import the convolution layers of a Keras HDF5 weight (or full model) file.

    Supports Keras 1.x (``convolution2d_i/convolution2d_i_W:0``, ``..._b:0``) and Keras 2
    (``conv2d_i/.../kernel:0``, ``bias:0``) files with TensorFlow ``HWIO`` kernels, in the order of the
    file's ``layer_names``. Layers without weights are skipped.

    Returns:
        ``conv{i}.weight`` [Cout, Cin, kH, kW] and ``conv{i}.bias`` [Cout], i = 1.. in layer order.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"import_keras_h5: no such file: {path}")
    if not _is_hdf5(path):
        raise ValueError(f"import_keras_h5: {path} is not an HDF5 file")
    out: dict[str, np.ndarray] = {}
    with _open_h5(path, "import_keras_h5") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ValueError(f"import_keras_h5: {path} is not a Keras weight file (no 'layer_names' attribute)")
        i = 0
        for raw in root.attrs["layer_names"]:
            lname = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[lname]
            wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
            if not wnames:
                continue
            arrays = [np.asarray(group[w]) for w in wnames]
            kernels = [a for a in arrays if a.ndim == 4]
            biases = [a for a in arrays if a.ndim == 1]
            if len(kernels) != 1 or len(biases) > 1 or len(arrays) != len(kernels) + len(biases):
                shapes = [a.shape for a in arrays]
                raise ValueError(
                    f"import_keras_h5: {path}: layer {lname!r} is not a 2-D convolution (weights {shapes})"
                )
            k = kernels[0]
            i += 1
            out[f"conv{i}.weight"] = k.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if biases:
                if biases[0].shape != (k.shape[3],):
                    raise ValueError(
                        f"import_keras_h5: {path}: layer {lname!r} has bias {biases[0].shape} for "
                        f"{k.shape[3]} outputs"
                    )
                out[f"conv{i}.bias"] = biases[0]
        if i == 0:
            raise ValueError(f"import_keras_h5: {path} holds no convolution weights")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
