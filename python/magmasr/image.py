"""Image preprocessing exactly as the super-resolution literature computes it (MATLAB conventions).

Everything here except ``imresize_tensor`` is NumPy/SciPy only, so it runs on any install and serves as the
reference for the C++/CUDA versions of the same operations.

Array conventions
-----------------
* Images are ``H x W`` (gray) or ``H x W x C`` arrays.
* ``uint8`` images hold 0..255; floating-point images hold [0, 1] (MATLAB's ``im2double`` convention).
* Functions keep the input's kind: uint8 in, uint8 out (rounded like MATLAB: half away from zero,
  saturated to 0..255); float in, float out (the input's float dtype; float64 internally).

Contents
--------
``imresize``
    MATLAB-compatible ``imresize`` (bicubic a = -0.5, bilinear, nearest), with MATLAB's antialiasing
    when shrinking, its border handling (end points replicated), its dimension order and its uint8 mode
    (round after each 1-D pass); bit-exact against MATLAB's outputs on Set5 and Set14. Built from
    ``contributions`` (the 1-D weight/index tables) and ``resize_along_axis`` (applies a table along
    one axis), so another backend can reuse the tables.
``imresize_tensor``
    The same resampling for magmasr Tensors ``[..., H, W]`` on any device (channels first), through
    ``magmasr.ops.resample_axis``: the tables are computed here once per (size, scale) and kept on the
    device, so a video pipeline never goes back to the host per frame. Equal to ``imresize`` bit for bit
    in uint8 mode.
``rgb2ycbcr``, ``ycbcr2rgb``, ``rgb2y``
    MATLAB's BT.601 studio-range conversions (Y in 16..235, Cb/Cr in 16..240 in 0..255 units).
``modcrop``, ``shave``
    Crop to a multiple of the scale; remove a border.
``to_float``, ``to_uint8``
    MATLAB ``im2double`` / ``im2uint8``.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from . import _core
from ._checks import as_int

if TYPE_CHECKING:
    from ._core import Tensor

__all__ = [
    "cubic",
    "triangle",
    "box",
    "KERNELS",
    "contributions",
    "resize_along_axis",
    "imresize",
    "imresize_region",
    "imresize_tensor",
    "rgb2ycbcr",
    "ycbcr2rgb",
    "rgb2y",
    "modcrop",
    "shave",
    "to_float",
    "to_uint8",
    "round_half_away",
]


# ---------------------------------------------------------------------------------------------------
# Rounding and type conversion
# ---------------------------------------------------------------------------------------------------

def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero, as MATLAB's ``round`` (NumPy's ``np.round`` rounds half to even), exactly:
    the fraction ``x - trunc(x)`` is exact in floating point, so a value just below a half (0.49999999999999994)
    rounds down, where ``floor(|x| + 0.5)`` would round the sum up to 1."""
    x = np.asarray(x)
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0.0)


def _saturate_uint8_numpy(x: np.ndarray) -> np.ndarray:
    """MATLAB's conversion of a double array to uint8: round half away from zero, then saturate. Clamped first,
    so only non-negative values are rounded: floor, plus one where the (exact) fraction is at least a half.
    The NumPy reference of the compiled kernel (magmasr._core._scale_to_uint8) that _saturate_uint8 runs."""
    y = np.clip(x, 0.0, 255.0)
    t = np.floor(y)
    y -= t
    t += y >= 0.5
    return t.astype(np.uint8)


#: dtypes the compiled host kernels (cpp/src/cpu/image.hpp) read directly; float16 is widened to float64 first
#: (exactly); any other float (longdouble) takes the NumPy reference, whose products are rounded differently.
_HOST_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))


def _host_array(x: np.ndarray) -> np.ndarray | None:
    """`x` as a C-contiguous array the compiled kernels take (the same values), or None when they cannot."""
    if x.dtype == np.float16:
        return np.ascontiguousarray(x, dtype=np.float64)
    return np.ascontiguousarray(x) if x.dtype in _HOST_DTYPES else None


def _saturate_uint8(x: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """MATLAB's uint8 conversion of ``x * factor`` (each product rounded to double first): the bits of
    ``_saturate_uint8_numpy(x.astype(np.float64) * factor)``, in one multi-threaded pass."""
    x = np.asarray(x)
    h = _host_array(x)
    if h is None:
        return _saturate_uint8_numpy(x.astype(np.float64) * factor)
    return _core._scale_to_uint8(h, float(factor))


def _check_image(img: np.ndarray, name: str = "img") -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"{name}: expected an H x W or H x W x C image, got an array of shape {img.shape}")
    if img.size == 0:
        raise ValueError(f"{name}: empty image of shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 (0..255) or floating point ([0, 1]) data, got {img.dtype}")
    return img


def to_float(img: np.ndarray, dtype=np.float64) -> np.ndarray:
    """MATLAB ``im2double``: uint8 0..255 -> float in [0, 1]; float input is returned as ``dtype``."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(dtype) / dtype(255.0)
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(dtype, copy=False)
    raise ValueError(f"to_float: expected uint8 or floating-point data, got {img.dtype}")


def to_uint8(img: np.ndarray) -> np.ndarray:
    """MATLAB ``im2uint8``: float in [0, 1] -> uint8 (x * 255, rounded half away from zero, saturated).

    uint8 input is returned unchanged (a copy is not made).
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.floating):
        return _saturate_uint8(img, 255.0)
    raise ValueError(f"to_uint8: expected uint8 or floating-point data, got {img.dtype}")


# ---------------------------------------------------------------------------------------------------
# imresize
# ---------------------------------------------------------------------------------------------------

def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``); support [-2, 2]."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))


def triangle(x: np.ndarray) -> np.ndarray:
    """Linear interpolation kernel (MATLAB's ``triangle``); support [-1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    return (x + 1.0) * ((-1.0 <= x) & (x < 0)) + (1.0 - x) * ((0 <= x) & (x <= 1.0))


def box(x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour kernel (MATLAB's ``box``); support [-0.5, 0.5)."""
    x = np.asarray(x, dtype=np.float64)
    return ((-0.5 <= x) & (x < 0.5)).astype(np.float64)


#: method name -> (kernel, kernel width); the names MATLAB accepts.
KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bicubic": (cubic, 4.0),
    "cubic": (cubic, 4.0),
    "bilinear": (triangle, 2.0),
    "triangle": (triangle, 2.0),
    "nearest": (box, 1.0),
    "box": (box, 1.0),
}


#: The largest resampling table ``contributions`` builds (entries; 2^27 float64 weights are 1 GiB). A
#: gigapixel picture shrunk by 10 needs about 10^6 x 42; only absurd factors (1e-9) go past it.
_MAX_TABLE = 1 << 27


def contributions(
    in_len: int,
    out_len: int,
    scale: float,
    kernel: Callable[[np.ndarray], np.ndarray] = cubic,
    kernel_width: float = 4.0,
    antialiasing: bool = True,
    border: str = "replicate",
) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D resampling table of MATLAB's ``imresize`` (its local function ``contributions``).

    Output sample ``i`` (0-based) is ``sum_p weights[i, p] * input[indices[i, p]]``.

    Args:
        in_len: input length along the axis (>= 1).
        out_len: output length along the axis (>= 1).
        scale: output / input scale factor along the axis (as given to ``imresize``, not necessarily
            ``out_len / in_len``).
        kernel: interpolation kernel, a vectorised function of the distance in input pixels.
        kernel_width: support width of ``kernel`` in input pixels at scale 1.
        antialiasing: when shrinking (``scale < 1``), stretch the kernel by ``1 / scale`` (MATLAB's default).
        border: how indices outside ``[0, in_len)`` are mapped back. ``"replicate"`` (default) is what
            MATLAB's ``imresize.m`` does ("Clamp out-of-range indices; has the effect of replicating
            end-points": ``x[-2] = x[-1] = x[0]``); it reproduces the MATLAB outputs in
            ``shared/data/Set*/x*_matlab_lr`` bit for bit. ``"symmetric"`` mirrors with the edge sample
            repeated (``x[-1] = x[0]``, ``x[-2] = x[1]``), the rule of several Python ports (BasicSR's
            ``matlab_functions``); it differs from MATLAB only in the outermost output pixels.

    Returns:
        ``(weights, indices)``: float64 ``[out_len, P]`` weights whose rows sum to 1, and int64
        ``[out_len, P]`` 0-based input indices, already mapped into ``[0, in_len)``. Columns whose
        weights are zero for every output are removed, as MATLAB does.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"contributions: lengths must be >= 1, got in_len={in_len}, out_len={out_len}")
    if not scale > 0:
        raise ValueError(f"contributions: scale must be > 0, got {scale}")
    if border not in ("replicate", "symmetric"):
        raise ValueError(f"contributions: border must be 'replicate' or 'symmetric', got {border!r}")
    if scale < 1 and antialiasing:
        def h(x, _k=kernel, _s=scale):
            return _s * _k(_s * x)
        kernel_width = kernel_width / scale
    else:
        h = kernel

    # 1-based output coordinates mapped into 1-based input coordinates (MATLAB's formula).
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    p = int(math.ceil(kernel_width)) + 2
    if out_len * p > _MAX_TABLE:
        raise ValueError(
            f"contributions: resampling {in_len} samples to {out_len} at scale {scale:g} needs a table of "
            f"{out_len} x {p} taps (over {_MAX_TABLE} entries); the scale is too small (or the output too large)"
        )
    indices = left[:, None] + np.arange(p, dtype=np.float64)[None, :]  # 1-based
    weights = h(u[:, None] - indices)
    weights = weights / np.sum(weights, axis=1, keepdims=True)

    indices = indices.astype(np.int64) - 1  # 0-based
    if border == "replicate":
        indices = np.clip(indices, 0, in_len - 1)
    elif border == "symmetric":
        # Mirror with the edge sample repeated: the sequence [0..n-1, n-1..0], indexed cyclically.
        aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
        indices = aux[np.mod(indices, 2 * in_len)]
    else:
        raise ValueError(f"contributions: border must be 'replicate' or 'symmetric', got {border!r}")

    keep = np.any(weights != 0, axis=0)
    return np.ascontiguousarray(weights[:, keep]), np.ascontiguousarray(indices[:, keep])


def resize_along_axis(
    img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray, uint8_mode: bool = False
) -> np.ndarray:
    """Apply a ``contributions`` table along ``axis`` of ``img``.

    The weighted sums are computed in float64. In ``uint8_mode`` the result is rounded half away from
    zero and saturated to uint8 (MATLAB's ``imresizemex`` on uint8 data); otherwise it is float64.
    Computed by a compiled multi-threaded kernel, bit for bit the NumPy formulas of
    ``_resize_along_axis_numpy`` (each product rounded, then added in tap order).
    """
    x = np.asarray(img)
    h = _host_array(x)
    if h is None or x.ndim == 0:
        return _resize_along_axis_numpy(x, axis, weights, indices, uint8_mode)
    return _core._resample_host(h, axis, weights, indices, bool(uint8_mode))


def _resize_along_axis_numpy(
    img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray, uint8_mode: bool = False
) -> np.ndarray:
    """resize_along_axis in NumPy: the reference the compiled kernel is tested against, and the path for
    dtypes it does not read (longdouble)."""
    x = np.asarray(img)
    if axis != 0:  # the resampled axis first and contiguous: each tap gathers whole rows
        x = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    out_len, p = weights.shape
    acc = np.zeros((out_len,) + x.shape[1:], dtype=np.float64)
    term = np.empty_like(acc)
    bshape = (out_len,) + (1,) * (x.ndim - 1)
    for j in range(p):  # each product rounded, then added in tap order (the C++ and CUDA kernels do the same)
        np.multiply(weights[:, j].reshape(bshape), x[indices[:, j]], out=term)
        acc += term
    if uint8_mode:
        acc = _saturate_uint8_numpy(acc)
    return np.moveaxis(acc, 0, axis)


def _output_plan(
    in_shape: tuple[int, int], scale, output_shape
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Scale factors and output size, with MATLAB's rules."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    if scale is not None:
        pair = [scale, scale] if np.isscalar(scale) else list(scale)
        if len(pair) != 2 or not all(isinstance(s, numbers.Real) for s in pair):
            raise ValueError(f"imresize: scale must be a number or a pair of numbers, got {scale!r}")
        scales = (float(pair[0]), float(pair[1]))
        if not all(s > 0 and math.isfinite(s) for s in scales):
            raise ValueError(f"imresize: scale factors must be positive and finite, got {scale!r}")
        # MATLAB: ceil(scale .* size), in double precision, with no tolerance: a product that rounding
        # pushes just above an integer (50 * 1.1 = 55.00000000000001) gives one more row, as in MATLAB.
        # (n * (1/k) is exact for every multiple n of k = 2, 3, 4 below 3000, so modcrop-ed images are safe.)
        out = [int(math.ceil(n * s)) for n, s in zip(in_shape, scales)]
        return scales, (out[0], out[1])

    shp = list(output_shape)
    if len(shp) != 2:
        raise ValueError(f"imresize: output_shape must be (rows, cols), got {output_shape!r}")
    if shp[0] is None and shp[1] is None:
        raise ValueError("imresize: output_shape cannot be (None, None)")
    shp = [None if n is None else as_int(n, "output_shape", "imresize", minimum=1) for n in shp]
    # MATLAB: a NaN (here None) entry keeps the aspect ratio.
    if shp[0] is None:
        s = shp[1] / in_shape[1]
        shp[0] = int(math.ceil(shp[1] * in_shape[0] / in_shape[1]))
        scales = (s, s)
    elif shp[1] is None:
        s = shp[0] / in_shape[0]
        shp[1] = int(math.ceil(shp[0] * in_shape[1] / in_shape[0]))
        scales = (s, s)
    else:
        scales = (shp[0] / in_shape[0], shp[1] / in_shape[1])
    out_shape = (int(shp[0]), int(shp[1]))
    if min(out_shape) < 1:
        raise ValueError(f"imresize: output_shape must be positive, got {output_shape!r}")
    return scales, out_shape


def _kernel_args(method: str, antialiasing: bool) -> tuple[Callable[[np.ndarray], np.ndarray], float, bool]:
    """(kernel, width, antialiasing) for a method name; MATLAB turns antialiasing off for nearest."""
    try:
        kernel, width = KERNELS[method.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"imresize: unknown method {method!r}; expected one of {sorted(KERNELS)}") from None
    if method.lower() in ("nearest", "box"):
        antialiasing = False
    return kernel, width, bool(antialiasing)


def _resize_plan(
    in_shape: tuple[int, int], scale, output_shape, method: str, antialiasing: bool, border: str
) -> tuple[tuple[int, int], list[tuple[int, int, int, float]]]:
    """MATLAB's plan for resizing an ``in_shape`` (rows, cols) image: the output size and the 1-D passes.

    Each pass is ``(d, in_len, out_len, scale)`` with ``d`` 0 for rows, 1 for columns, in MATLAB's order: the
    axis with the smallest scale factor first (a stable sort, so rows first when the scales are equal); an
    axis whose size and scale are unchanged is skipped, as MATLAB does.
    """
    _kernel_args(method, antialiasing)  # validates the method
    if border not in ("replicate", "symmetric"):
        raise ValueError(f"imresize: border must be 'replicate' or 'symmetric', got {border!r}")
    scales, out_shape = _output_plan(tuple(in_shape), scale, output_shape)
    order = sorted(range(2), key=lambda d: scales[d])  # stable: rows first on ties
    passes = [
        (d, int(in_shape[d]), out_shape[d], scales[d])
        for d in order
        if not (out_shape[d] == in_shape[d] and scales[d] == 1.0)
    ]
    return out_shape, passes


def imresize(
    img: np.ndarray,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int | None] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
    uint8_mode: bool | None = None,
    border: str = "replicate",
) -> np.ndarray:
    """MATLAB-compatible ``imresize`` for ``H x W`` and ``H x W x C`` images.

    Args:
        img: uint8 (0..255) or floating-point image.
        scale: a factor for both axes, or ``(row_scale, col_scale)``. The output size is
            ``ceil(scale * size)`` computed in double precision exactly as MATLAB does (so
            ``imresize(x, 1.1)`` of 50 rows gives 56 rows); pass ``output_shape`` to pin the size.
        output_shape: ``(rows, cols)`` instead of ``scale``; one entry may be ``None`` to keep the
            aspect ratio (MATLAB's ``NaN``).
        method: ``"bicubic"`` (``"cubic"``), ``"bilinear"`` (``"triangle"``) or ``"nearest"`` (``"box"``).
        antialiasing: MATLAB's ``'Antialiasing'`` (default true): when shrinking, the kernel is stretched
            by ``1 / scale``. MATLAB turns it off for ``nearest``; so does this function.
        uint8_mode: round and saturate to uint8 after each 1-D pass, as MATLAB does for uint8 input.
            Defaults to ``True`` for uint8 input and ``False`` for float input. ``True`` with float input
            treats the values as 0..255 and returns uint8; ``False`` with uint8 input returns float64
            values in 0..255 (no rounding).
        border: ``"replicate"`` (MATLAB, default) or ``"symmetric"``; see ``contributions``.

    Returns:
        The resized image: uint8 in uint8 mode, else the input's float dtype (float64 for uint8 input).

    The axes are resized one at a time in MATLAB's order: the axis with the smallest scale factor first
    (a stable sort, so rows first when the scales are equal), then the other one.
    """
    img = _check_image(img)
    if uint8_mode is None:
        uint8_mode = img.dtype == np.uint8
    _, passes = _resize_plan(img.shape[:2], scale, output_shape, method, antialiasing, border)
    out = img
    for d, in_len, out_len, s in passes:
        w, idx = contributions(in_len, out_len, s, *_kernel_args(method, antialiasing), border)
        out = resize_along_axis(out, d, w, idx, uint8_mode=uint8_mode)

    if uint8_mode:
        return out if out.dtype == np.uint8 else _saturate_uint8(out)
    if img.dtype == np.uint8:
        return out.astype(np.float64)
    return out.astype(img.dtype, copy=False)


class imresize_region:  # noqa: N801 - used like a function of the region, after a plan made once
    """``imresize(prepare(img), scale)[r0:r1, c0:c1]``, bit for bit, from only the input pixels that region
    needs: how a picture too large to resize whole (or to hold resized) is processed tile by tile.

    The 1-D tables of both axes are made once for the whole picture (``contributions``, in MATLAB's pass
    order); each region takes its rows of them, so every output sample is the same weighted sum, in the same
    order, as in the whole resize. ``prepare`` is applied to the input block before resizing; it must work
    pixel by pixel (a type conversion, a colour transform), so that it commutes with cropping.

        plan = imresize_region(img, 3, prepare=to_float)
        block = plan(0, 256, 512, 768)      # == imresize(to_float(img), 3)[0:256, 512:768]
    """

    def __init__(self, img: np.ndarray, scale, method: str = "bicubic", antialiasing: bool = True,
                 border: str = "replicate", prepare: Callable[[np.ndarray], np.ndarray] | None = None):
        if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"imresize_region: expected an H x W or H x W x C image, got shape {img.shape}")
        self.img, self.prepare = img, prepare
        self.out_shape, passes = _resize_plan(img.shape[:2], scale, None, method, antialiasing, border)
        args = _kernel_args(method, antialiasing)
        self.passes = [(d, *contributions(n_in, n_out, s, *args, border)) for d, n_in, n_out, s in passes]

    def input_range(self, axis: int, start: int, stop: int) -> tuple[int, int]:
        """The input rows (axis 0) or columns (axis 1) that output samples ``start:stop`` read."""
        for d, _, idx in self.passes:
            if d == axis:
                used = idx[start:stop]
                return int(used.min()), int(used.max()) + 1
        return start, stop  # an axis the resize leaves as it is

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if not (0 <= r0 < r1 <= self.out_shape[0] and 0 <= c0 < c1 <= self.out_shape[1]):
            raise ValueError(f"imresize_region: rows {r0}:{r1}, columns {c0}:{c1} is not a non-empty region of "
                             f"the {self.out_shape[0]} x {self.out_shape[1]} output")
        (a0, a1), (b0, b1) = self.input_range(0, r0, r1), self.input_range(1, c0, c1)
        block = self.img[a0:a1, b0:b1]
        block = _check_image(self.prepare(block) if self.prepare is not None else block)
        uint8_mode = block.dtype == np.uint8
        out, lo, want = block, (a0, b0), ((r0, r1), (c0, c1))
        for d, w, idx in self.passes:
            start, stop = want[d]
            out = resize_along_axis(out, d, w[start:stop], idx[start:stop] - lo[d], uint8_mode=uint8_mode)
        if uint8_mode:
            return out if out.dtype == np.uint8 else _saturate_uint8(out)
        if block.dtype == np.uint8:
            return out.astype(np.float64)
        return out.astype(block.dtype, copy=False)


@functools.lru_cache(maxsize=256)
def _device_table(
    in_len: int, out_len: int, scale: float, method: str, antialiasing: bool, border: str, device: str
):
    """The ``contributions`` table of one pass as a ``magmasr.ops.ResampleTable`` on ``device`` (cached:
    built and uploaded once per size, scale and device, so repeated calls never touch the host)."""
    from .ops import ResampleTable

    kernel, width, aa = _kernel_args(method, antialiasing)
    w, idx = contributions(in_len, out_len, scale, kernel, width, aa, border)
    return ResampleTable(w, idx, in_len, device)


@functools.lru_cache(maxsize=64)
def _identity_table(n: int, device: str):
    from .ops import ResampleTable

    return ResampleTable(np.ones((n, 1)), np.arange(n).reshape(n, 1), n, device)


def imresize_tensor(
    x: Tensor | np.ndarray,
    scale: float | Sequence[float] | None = None,
    output_shape: Sequence[int | None] | None = None,
    method: str = "bicubic",
    antialiasing: bool = True,
    uint8_mode: bool = False,
    border: str = "replicate",
) -> Tensor | np.ndarray:
    """MATLAB-compatible ``imresize`` of the last two axes of a tensor, on the tensor's device.

    The same algorithm as ``imresize`` (the same ``contributions`` tables, MATLAB's output size and its
    dimension order), applied with ``magmasr.ops.resample_axis``: on a CUDA tensor everything runs on the
    GPU and nothing comes back to the host. The tables are cached per (size, scale, method, device), so
    resizing frame after frame of one size uploads them once (``magmasr.image._device_table.cache_clear()``
    releases them).

    Args:
        x: a ``magmasr.Tensor`` on any device (or a DLPack tensor), or an array-like, of shape ``[..., H, W]``
            (``[H, W]``, ``[C, H, W]``, ``[N, C, H, W]`` ...; rank 2 to 5): channels first, unlike ``imresize``'s
            ``H x W x C``. Values: 0..255 in uint8 mode, any float otherwise.
        scale, output_shape, method, antialiasing, border: as for ``imresize``.
        uint8_mode: MATLAB's uint8 arithmetic: round half away from zero and saturate to 0..255 after each
            1-D pass (the output holds integers, as float32). For integer-valued input this equals
            ``imresize`` of the uint8 image bit for bit.

    Returns:
        A float32 ``[..., H', W']`` result: a ``magmasr.Tensor`` on ``x``'s device when ``x`` is a tensor, else a
        NumPy array. In float mode the intermediate pass is kept in float32 (``imresize`` keeps float64), so the
        two agree to about 1e-6 relative.
    """
    from . import _core
    from .ops import resample_axis

    if isinstance(x, _core.Tensor):
        t, as_numpy = x, False
    elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        t, as_numpy = _core.as_tensor(x), False
    else:
        arr = np.asarray(x)
        if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"imresize_tensor: expected uint8 or floating-point data, got {arr.dtype}")
        t = np.array(arr, dtype=np.float32, order="C", copy=True)  # writeable and owned: wrapped without a copy
        as_numpy = True
    shape = tuple(t.shape)
    if not 2 <= len(shape) <= 5:
        raise ValueError(f"imresize_tensor: expected a [..., H, W] tensor of rank 2 to 5, got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"imresize_tensor: empty input of shape {shape}")
    _, passes = _resize_plan(shape[-2:], scale, output_shape, method, antialiasing, border)
    device = str(t.device) if not as_numpy else "cpu"
    _, _, aa = _kernel_args(method, antialiasing)
    key_method = method.lower()

    out = t
    for d, in_len, out_len, s in passes:
        table = _device_table(in_len, out_len, float(s), key_method, aa, border, device)
        out = resample_axis(out, d - 2, table, round_uint8=bool(uint8_mode))
    if not passes:  # nothing to resize: MATLAB still converts to uint8 in uint8 mode
        if uint8_mode:
            out = resample_axis(out, -1, _identity_table(shape[-1], device), round_uint8=True)
        elif as_numpy:
            return out  # already a fresh float32 copy
        else:
            out = out.clone()
    return np.asarray(out) if as_numpy else out


# ---------------------------------------------------------------------------------------------------
# Colour conversion (MATLAB rgb2ycbcr / ycbcr2rgb, ITU-R BT.601, studio range)
# ---------------------------------------------------------------------------------------------------

#: MATLAB's RGB -> YCbCr matrix, for RGB in [0, 1] and YCbCr in 0..255 units.
YCBCR_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
#: MATLAB's YCbCr offset in 0..255 units.
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def _check_rgb(img: np.ndarray, fn: str) -> np.ndarray:
    img = _check_image(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{fn}: expected an H x W x 3 image, got shape {img.shape}")
    return img


def _colour_transform(img: np.ndarray, m: np.ndarray, offset: np.ndarray, rows=range(3), clip01: bool = False,
                      uint8_factor: float | None = None) -> np.ndarray:
    """``img @ m.T + offset`` over the last axis (3 channels; output channels `rows`) in float64, each pixel's
    sum written out left to right (``_colour_transform_numpy``), by a compiled kernel that reads H x W x 3 views
    in place; with `clip01` clamped to [0, 1] as np.clip; with `uint8_factor`, MATLAB's uint8 conversion of each
    result times it (``_saturate_uint8``), in the same pass. Each pixel's result depends on that pixel only, not
    on the array's size or layout (a BLAS matrix product may round differently from one block to the next), so a
    picture converted tile by tile is the picture converted whole, bit for bit."""
    rows = list(rows)
    img = np.asarray(img)
    if img.dtype not in _HOST_DTYPES:
        img = img.astype(np.float64)  # what the NumPy formulas compute on
    k = img.itemsize
    if not (img.ndim == 3 and img.strides[2] == k and img.strides[0] % k == 0 and img.strides[1] % k == 0):
        img = np.ascontiguousarray(img)
    return _core._colour_transform(img, m[rows], offset[rows], bool(clip01),
                                   None if uint8_factor is None else float(uint8_factor))


def _colour_transform_numpy(x: np.ndarray, m: np.ndarray, offset: np.ndarray, rows=range(3)) -> np.ndarray:
    """The NumPy reference of _colour_transform (without clipping), on float64 `x`."""
    return np.stack([x[..., 0] * m[i, 0] + x[..., 1] * m[i, 1] + x[..., 2] * m[i, 2] + offset[i] for i in rows],
                    axis=-1)


def rgb2ycbcr(img: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr``: RGB -> YCbCr, BT.601 studio range.

    uint8 in: ``Y = round(T/255 @ rgb + offset)`` (half away from zero, saturated), uint8 out.
    float in ([0, 1]): ``(T @ rgb + offset) / 255``, float out (Y in [16/255, 235/255]).
    """
    img = _check_rgb(img, "rgb2ycbcr")
    t = YCBCR_MATRIX / 255.0
    if img.dtype == np.uint8:
        return _colour_transform(img, t, YCBCR_OFFSET, uint8_factor=1.0)
    out = _colour_transform(img, t, YCBCR_OFFSET / 255.0)
    return out.astype(img.dtype, copy=False)


def ycbcr2rgb(img: np.ndarray) -> np.ndarray:
    """MATLAB ``ycbcr2rgb``: the inverse of ``rgb2ycbcr``.

    uint8 in: ``rgb = 255 * Tinv @ ycbcr - 255 * Tinv @ offset`` rounded and saturated, uint8 out.
    float in: ``255 * Tinv @ ycbcr - Tinv @ offset``, clipped to [0, 1] as MATLAB does, float out.
    """
    img = _check_rgb(img, "ycbcr2rgb")
    tinv, toff = _YCBCR_INVERSE
    t = 255.0 * tinv
    if img.dtype == np.uint8:
        return _colour_transform(img, t, -255.0 * toff, uint8_factor=1.0)
    out = _colour_transform(img, t, -toff, clip01=True)
    return out.astype(img.dtype, copy=False)


def _ycbcr2rgb_uint8(img: np.ndarray) -> np.ndarray:
    """``to_uint8(ycbcr2rgb(img))`` for a float YCbCr picture, bit for bit, in one pass over it for float64 (no
    float RGB picture in between)."""
    img = _check_rgb(img, "ycbcr2rgb")
    if img.dtype != np.float64:  # ycbcr2rgb rounds its result to img's dtype before the conversion
        return to_uint8(ycbcr2rgb(img))
    tinv, toff = _YCBCR_INVERSE
    return _colour_transform(img, 255.0 * tinv, -toff, clip01=True, uint8_factor=255.0)


def _inverse3(m: np.ndarray) -> np.ndarray:
    """The inverse of a 3 x 3 matrix by its adjugate, each entry by one written-out formula (Python floats: no
    fused multiply-adds), so that magmasr's C++ library (cpp/src/sr.cpp) computes the same numbers bit for bit;
    LAPACK's inverse may differ from it in the last bits from one build to the next."""
    a = [[float(v) for v in row] for row in m]
    adj = [[a[1][1] * a[2][2] - a[1][2] * a[2][1], a[0][2] * a[2][1] - a[0][1] * a[2][2],
            a[0][1] * a[1][2] - a[0][2] * a[1][1]],
           [a[1][2] * a[2][0] - a[1][0] * a[2][2], a[0][0] * a[2][2] - a[0][2] * a[2][0],
            a[0][2] * a[1][0] - a[0][0] * a[1][2]],
           [a[1][0] * a[2][1] - a[1][1] * a[2][0], a[0][1] * a[2][0] - a[0][0] * a[2][1],
            a[0][0] * a[1][1] - a[0][1] * a[1][0]]]
    det = a[0][0] * adj[0][0] + a[0][1] * adj[1][0] + a[0][2] * adj[2][0]
    return np.array([[v / det for v in row] for row in adj])


def _ycbcr_inverse() -> tuple[np.ndarray, np.ndarray]:
    """inv(YCBCR_MATRIX) and inv(YCBCR_MATRIX) @ YCBCR_OFFSET, each sum written out left to right."""
    tinv = _inverse3(YCBCR_MATRIX)
    off = [float(tinv[i, 0] * YCBCR_OFFSET[0] + tinv[i, 1] * YCBCR_OFFSET[1] + tinv[i, 2] * YCBCR_OFFSET[2])
           for i in range(3)]
    return tinv, np.array(off)


_YCBCR_INVERSE = _ycbcr_inverse()


def rgb2y(img: np.ndarray) -> np.ndarray:
    """The Y channel of MATLAB ``rgb2ycbcr`` (uint8 rounded for uint8 input, float for float input)."""
    img = _check_rgb(img, "rgb2y")
    if img.dtype == np.uint8:
        return _colour_transform(img, YCBCR_MATRIX / 255.0, YCBCR_OFFSET, rows=(0,), uint8_factor=1.0)[..., 0]
    y = _colour_transform(img, YCBCR_MATRIX / 255.0, YCBCR_OFFSET / 255.0, rows=(0,))[..., 0]
    return y.astype(img.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------
# Cropping
# ---------------------------------------------------------------------------------------------------

def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom rows and right columns so that H and W are multiples of ``scale`` (``modcrop.m``)."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"modcrop: expected an H x W or H x W x C image, got shape {img.shape}")
    scale = as_int(scale, "scale", "modcrop", minimum=1)
    h = img.shape[0] - img.shape[0] % scale
    w = img.shape[1] - img.shape[1] % scale
    return img[:h, :w, ...]


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side of the two spatial axes."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"shave: expected an H x W or H x W x C image, got shape {img.shape}")
    border = as_int(border, "border", "shave", minimum=0)
    if border == 0:
        return img
    if 2 * border >= img.shape[0] or 2 * border >= img.shape[1]:
        raise ValueError(f"shave: border {border} leaves nothing of an image of shape {img.shape}")
    return img[border:-border, border:-border, ...]


def detail_window(gray: np.ndarray, size: int, margin: int = 0) -> tuple[int, int]:
    """Top-left corner (row, col) of the ``size`` x ``size`` window of ``gray`` with the highest gradient
    energy (sum of squared ``np.gradient`` components), over every position at least ``margin`` pixels from
    the edges; the first in raster order on ties. Box sums come from a summed-area table, so the search is
    exhaustive at the cost of two cumulative sums."""
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ValueError(f"detail_window expects a 2-D image of at least 2x2 pixels, got shape {gray.shape}")
    if size < 1 or margin < 0:
        raise ValueError(f"detail_window: size must be >= 1 and margin >= 0, got {size} and {margin}")
    gy, gx = np.gradient(gray)
    table = np.pad((gy**2 + gx**2).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    inner = sums[margin:sums.shape[0] - margin, margin:sums.shape[1] - margin]
    if inner.size == 0:
        raise ValueError(f"a {gray.shape[0]}x{gray.shape[1]} image has no {size}x{size} window {margin} pixels "
                         "from its edges")
    r, c = np.unravel_index(np.argmax(inner), inner.shape)
    return int(r) + margin, int(c) + margin
