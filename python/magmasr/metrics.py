"""Image-quality metrics with the conventions of the super-resolution literature.

All four functions compare two images of the same shape, ``H x W`` or ``H x W x C``, both ``uint8``
(0..255) or both floating point ([0, 1]), and share these keyword arguments:

=================  ===============  ==================================================================
keyword            default          meaning
=================  ===============  ==================================================================
``crop_border``    ``0``            pixels removed from each side before comparing; the literature
                                    shaves ``scale`` pixels (``shave`` in the SRCNN code)
``test_y_channel`` ``False``        compare only the Y channel of MATLAB ``rgb2ycbcr`` (BT.601 studio
                                    range, Y in 16..235) of RGB (``H x W x 3``) input; gray input
                                    (``H x W`` or ``H x W x 1``) is compared as it is
``round_uint8``    ``True``         float input is first put on the uint8 grid with MATLAB
                                    ``im2uint8`` (x * 255, rounded half away from zero, clipped to
                                    0..255): the published numbers are computed on saved uint8
                                    images. With ``False`` float input is compared unrounded and
                                    unclipped (the 3DSRnet protocol)
``data_range``     255 / 1.0        peak value for PSNR and SSIM's constants: 255 for uint8 input,
                                    1.0 for float input (in the units of the input; float images
                                    in other units, 0..255 or 0..65535, need ``round_uint8=False``)
=================  ===============  ==================================================================

The order of the steps is: ``round_uint8`` (float input only), then Y conversion (from uint8 RGB the Y
channel is itself rounded to uint8, as MATLAB's ``rgb2ycbcr`` on uint8 data returns it), then
``crop_border``, then the metric, computed in float64.

=========  ================================================================================================
metric     definition
=========  ================================================================================================
``psnr``   ``10 log10(data_range^2 / MSE)`` in dB over all pixels and channels; ``inf`` for identical images
``ssim``   Wang et al.'s ``ssim.m``: 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
           ``C = (K * data_range)^2``, local statistics with population (1/N) variances, mean of the SSIM
           map over the 'valid' region (no padding; the map is ``(H - 10) x (W - 10)``). No automatic
           downsampling (the 2009 ``ssim.m`` downsamples images larger than 256 px; the SR literature and
           BasicSR do not). Multi-channel images: the mean of the per-channel SSIMs. Equal to
           ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
           use_sample_covariance=False, data_range=...)``
``mse``    mean squared error, in the units of the input (0..255 for uint8, [0, 1] for float)
``mae``    mean absolute error, in the units of the input
=========  ================================================================================================

Errors: ``ValueError`` for images of different shapes, of different kinds (uint8 vs float), of
unsupported dtypes, empty images, images that ``crop_border`` (or SSIM's 11 x 11 window) leaves empty, float
images with NaN or infinite values (a metric of them would be meaningless: rounding would turn NaN into 0), and,
with ``round_uint8``, float images far outside [0, 1] (below -1 or above 2: clipping would hide the error of an
image in 0..255 units; values a little outside [0, 1], as a network outputs, are clipped as ``im2uint8`` does).
"""

from __future__ import annotations

import numpy as np

from . import image as _image
from ._checks import as_float, as_int

__all__ = ["psnr", "ssim", "mse", "mae", "gaussian_window", "prepare"]


def prepare(
    img1: np.ndarray,
    img2: np.ndarray,
    *,
    crop_border: int = 0,
    test_y_channel: bool = False,
    round_uint8: bool = True,
    data_range: float | None = None,
    fn: str = "metric",
) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate two images and apply the conventions above.

    Returns:
        ``(a, b, data_range)``: float64 arrays ``H x W x C`` in the units of the input, and the peak.
    """
    a = np.asarray(img1)
    b = np.asarray(img2)
    for name, x in (("img1", a), ("img2", b)):
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{fn}: {name} must be uint8 (0..255) or floating point ([0, 1]), got {x.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"{fn}: {name} must be H x W or H x W x C, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"{fn}: {name} is empty (shape {x.shape})")
        if x.dtype != np.uint8 and not np.all(np.isfinite(x)):
            raise ValueError(f"{fn}: {name} has NaN or infinite values")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: images must have the same shape, got {a.shape} and {b.shape}")
    if (a.dtype == np.uint8) != (b.dtype == np.uint8):
        raise ValueError(
            f"{fn}: images must be both uint8 or both floating point, got {a.dtype} and {b.dtype}"
        )
    crop_border = as_int(crop_border, "crop_border", fn, minimum=0)

    is_float = a.dtype != np.uint8
    if data_range is None:
        data_range = 1.0 if is_float else 255.0
    data_range = as_float(data_range, "data_range", fn, 0.0, exclusive=True)  # a string is a TypeError

    quantized = is_float and round_uint8
    if quantized:
        for name, x in (("img1", a), ("img2", b)):
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.0 or hi > 2.0:
                raise ValueError(
                    f"{fn}: float images are taken to be in [0, 1] (round_uint8 clips them to it, as MATLAB's "
                    f"im2uint8 does), but {name} has values in [{lo:g}, {hi:g}]: divide it by its peak (255 for "
                    f"8-bit units), or pass round_uint8=False and data_range"
                )
        a, b = _image.to_uint8(a), _image.to_uint8(b)

    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if test_y_channel and a.shape[2] != 1:
        if a.shape[2] != 3:
            raise ValueError(f"{fn}: test_y_channel needs RGB (H x W x 3) or gray input, got shape {a.shape}")
        a, b = _image.rgb2y(a)[:, :, None], _image.rgb2y(b)[:, :, None]

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if quantized:
        a /= 255.0
        b /= 255.0

    if crop_border:
        h, w = a.shape[:2]
        if 2 * crop_border >= h or 2 * crop_border >= w:
            raise ValueError(f"{fn}: crop_border={crop_border} leaves nothing of images of shape {img1.shape}")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b, data_range


def mse(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False, round_uint8: bool = True) -> float:
    """Mean squared error, in the units of the input; see the module docstring for the conventions."""
    a, b, _ = prepare(img1, img2, crop_border=crop_border, test_y_channel=test_y_channel,
                      round_uint8=round_uint8, fn="mse")
    return float(np.mean((a - b) ** 2))


def mae(img1, img2, *, crop_border: int = 0, test_y_channel: bool = False, round_uint8: bool = True) -> float:
    """Mean absolute error, in the units of the input; see the module docstring for the conventions."""
    a, b, _ = prepare(img1, img2, crop_border=crop_border, test_y_channel=test_y_channel,
                      round_uint8=round_uint8, fn="mae")
    return float(np.mean(np.abs(a - b)))


def psnr(
    img1,
    img2,
    *,
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float | None = None,
    round_uint8: bool = True,
) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images); see the module docstring."""
    a, b, peak = prepare(img1, img2, crop_border=crop_border, test_y_channel=test_y_channel,
                         round_uint8=round_uint8, data_range=data_range, fn="psnr")
    err = float(np.mean((a - b) ** 2))
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / err))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of the first two axes of ``x`` with the 1-D window ``g``."""
    n = g.shape[0]
    y = np.lib.stride_tricks.sliding_window_view(x, n, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(y, n, axis=1) @ g


def ssim(
    img1,
    img2,
    *,
    crop_border: int = 0,
    test_y_channel: bool = False,
    data_range: float | None = None,
    round_uint8: bool = True,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity as Wang et al.'s ``ssim.m`` computes it; see the module docstring."""
    win_size = as_int(win_size, "win_size", "ssim", minimum=1)
    if win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be odd (a window centred on a pixel), got {win_size}")
    sigma, k1, k2 = (as_float(v, name, "ssim", 0.0, exclusive=True) for name, v in (("sigma", sigma), ("k1", k1),
                                                                                     ("k2", k2)))
    a, b, peak = prepare(img1, img2, crop_border=crop_border, test_y_channel=test_y_channel,
                         round_uint8=round_uint8, data_range=data_range, fn="ssim")
    if a.shape[0] < win_size or a.shape[1] < win_size:
        raise ValueError(
            f"ssim: images of {a.shape[0]} x {a.shape[1]} pixels (after crop_border) are smaller than the "
            f"{win_size} x {win_size} window"
        )
    g = gaussian_window(win_size, sigma)
    c1 = (k1 * peak) ** 2
    c2 = (k2 * peak) ** 2
    mu1 = _filter_valid(a, g)
    mu2 = _filter_valid(b, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s11 = _filter_valid(a * a, g) - mu1_sq
    s22 = _filter_valid(b * b, g) - mu2_sq
    s12 = _filter_valid(a * b, g) - mu12
    ssim_map = ((2.0 * mu12 + c1) * (2.0 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s11 + s22 + c2))
    # Mean per channel, then over channels (equal weights since every channel has the same size).
    return float(np.mean(ssim_map.reshape(-1, ssim_map.shape[-1]).mean(axis=0)))
