"""Tests of magmasr.metrics against direct formulas and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest

from magmasr import image, metrics


def _pair(shape, seed=0, noise=20):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(np.int64) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


# ---------------------------------------------------------------------------------------------------
# PSNR, MSE, MAE
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(31, 40), (31, 40, 1), (31, 40, 3)])
def test_psnr_mse_mae_direct_formula_uint8(shape):
    a, b = _pair(shape)
    d = a.astype(np.float64) - b.astype(np.float64)
    assert metrics.mse(a, b) == pytest.approx(np.mean(d**2), rel=1e-12)
    assert metrics.mae(a, b) == pytest.approx(np.mean(np.abs(d)), rel=1e-12)
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255**2 / np.mean(d**2)), rel=1e-12)


def test_psnr_float_equals_uint8_when_on_grid():
    a, b = _pair((20, 30, 3), seed=1)
    fa, fb = a / 255.0, b / 255.0
    assert metrics.psnr(fa, fb) == pytest.approx(metrics.psnr(a, b), rel=1e-12)
    assert metrics.mse(fa, fb) == pytest.approx(metrics.mse(a, b) / 255**2, rel=1e-12)
    assert metrics.psnr(fa, fb, data_range=2.0) == pytest.approx(metrics.psnr(a, b) + 20 * np.log10(2), rel=1e-12)


def test_round_uint8_puts_float_images_on_the_grid():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (16, 16)).astype(np.float64) / 255
    out = gt + rng.uniform(-0.4, 0.4, gt.shape) / 255  # within half a level: rounds back to gt
    assert metrics.psnr(out, gt) == float("inf")
    assert metrics.mse(out, gt) == 0.0
    unrounded = metrics.psnr(out, gt, round_uint8=False)
    d = out - gt
    assert unrounded == pytest.approx(10 * np.log10(1 / np.mean(d**2)), rel=1e-12)
    # Values outside [0, 1] are clipped by the rounding (im2uint8), kept without it.
    assert metrics.mae(np.full((4, 4), 1.5), np.ones((4, 4))) == 0.0
    assert metrics.mae(np.full((4, 4), 1.5), np.ones((4, 4)), round_uint8=False) == pytest.approx(0.5)


def test_identical_images():
    a, _ = _pair((12, 12, 3))
    assert metrics.psnr(a, a) == float("inf")
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.mse(a, a) == 0.0 and metrics.mae(a, a) == 0.0


def test_crop_border():
    a, b = _pair((30, 40, 3), seed=3)
    k = 4
    ref = a[k:-k, k:-k].astype(np.float64) - b[k:-k, k:-k]
    assert metrics.mse(a, b, crop_border=k) == pytest.approx(np.mean(ref**2), rel=1e-12)
    assert metrics.psnr(a, b, crop_border=k) == pytest.approx(metrics.psnr(a[k:-k, k:-k], b[k:-k, k:-k]))
    assert metrics.ssim(a, b, crop_border=k) == pytest.approx(metrics.ssim(a[k:-k, k:-k], b[k:-k, k:-k]))
    # Changing only the border does not change the cropped metric.
    c = b.copy()
    c[:k] = 0
    c[:, -k:] = 255
    assert metrics.psnr(a, c, crop_border=k) == metrics.psnr(a, b, crop_border=k)


def test_y_channel():
    a, b = _pair((24, 24, 3), seed=4)
    ya, yb = image.rgb2y(a), image.rgb2y(b)
    assert ya.dtype == np.uint8
    assert metrics.psnr(a, b, test_y_channel=True) == pytest.approx(metrics.psnr(ya, yb), rel=1e-12)
    assert metrics.ssim(a, b, test_y_channel=True) == pytest.approx(metrics.ssim(ya, yb), rel=1e-12)
    assert metrics.psnr(a, b, test_y_channel=True, crop_border=3) == pytest.approx(
        metrics.psnr(ya[3:-3, 3:-3], yb[3:-3, 3:-3]), rel=1e-12
    )
    # Float RGB with rounding: the same as the uint8 path.
    assert metrics.psnr(a / 255.0, b / 255.0, test_y_channel=True) == pytest.approx(
        metrics.psnr(a, b, test_y_channel=True), rel=1e-12
    )
    # Without rounding: Y in float, unrounded.
    fy = metrics.psnr(a / 255.0, b / 255.0, test_y_channel=True, round_uint8=False)
    d = image.rgb2y(a / 255.0) - image.rgb2y(b / 255.0)
    assert fy == pytest.approx(10 * np.log10(1 / np.mean(d**2)), rel=1e-12)
    # Gray images pass through.
    assert metrics.psnr(ya, yb, test_y_channel=True) == metrics.psnr(ya, yb)


# ---------------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------------

def _skimage_ssim(a, b, data_range, channel_axis=None):
    from skimage.metrics import structural_similarity

    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range,
        channel_axis=channel_axis,
    )


@pytest.mark.parametrize("seed", range(4))
def test_ssim_matches_skimage_gray(seed):
    a, b = _pair((37 + seed, 45), seed=seed, noise=10 + 20 * seed)
    expected = _skimage_ssim(a.astype(np.float64), b.astype(np.float64), 255)
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-10)


def test_ssim_matches_skimage_rgb_and_float():
    a, b = _pair((40, 33, 3), seed=7, noise=40)
    expected = _skimage_ssim(a.astype(np.float64), b.astype(np.float64), 255, channel_axis=2)
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-10)
    fa, fb = a / 255.0, b / 255.0
    assert metrics.ssim(fa, fb) == pytest.approx(_skimage_ssim(fa, fb, 1.0, channel_axis=2), abs=1e-10)
    rng = np.random.default_rng(8)
    x, y = rng.random((30, 30)), rng.random((30, 30))
    assert metrics.ssim(x, y, round_uint8=False) == pytest.approx(_skimage_ssim(x, y, 1.0), abs=1e-10)


def test_ssim_brute_force_window():
    """SSIM from its definition: explicit 11 x 11 windows over the valid region."""
    a, b = _pair((14, 15), seed=9, noise=60)
    a, b = a.astype(np.float64), b.astype(np.float64)
    x = np.arange(11) - 5.0
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(14 - 10):
        for j in range(15 - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert metrics.ssim(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(np.mean(vals), abs=1e-10)


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim])
def test_data_range_must_be_a_positive_finite_number(fn):
    a = np.zeros((16, 16), dtype=np.uint8)
    for bad in (0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: data_range must be a finite number > 0"):
            fn(a, a, data_range=bad)
    for bad in ("255", b"1", [255]):
        with pytest.raises(TypeError, match="data_range must be a number"):
            fn(a, a, data_range=bad)
    assert fn(a, a, data_range=np.float32(255)) == fn(a, a)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.mse, metrics.mae])
def test_errors(fn):
    a = np.zeros((16, 16), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        fn(a, np.zeros((16, 15), dtype=np.uint8))
    with pytest.raises(ValueError, match="both uint8 or both floating"):
        fn(a, a.astype(np.float64))
    with pytest.raises(ValueError, match="int32"):
        fn(a.astype(np.int32), a.astype(np.int32))
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 16), dtype=np.uint8), np.zeros((0, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match="crop_border"):
        fn(a, a, crop_border=8)
    with pytest.raises(ValueError, match="crop_border"):
        fn(a, a, crop_border=-1)
    with pytest.raises(ValueError, match="H x W"):
        fn(np.zeros(16, dtype=np.uint8), np.zeros(16, dtype=np.uint8))
    with pytest.raises(ValueError, match="test_y_channel"):
        fn(np.zeros((16, 16, 4), dtype=np.uint8), np.zeros((16, 16, 4), dtype=np.uint8), test_y_channel=True)
    with pytest.raises(ValueError, match=r"crop_border must be an integer, got 2.7"):
        fn(a, a, crop_border=2.7)
    # NaN / infinity would be rounded to 0 and scored as a perfect match: refused.
    f = np.zeros((16, 16))
    for bad in (np.nan, np.inf):
        g = f.copy()
        g[3, 4] = bad
        with pytest.raises(ValueError, match=r"img2 has NaN or infinite values"):
            fn(f, g)
        with pytest.raises(ValueError, match=r"img1 has NaN or infinite values"):
            fn(g, f, round_uint8=False)
    # Floats in 0..255 units would all be clipped to 1.0 and scored as identical: refused with a hint;
    # round_uint8=False with data_range compares them as they are. A little outside [0, 1] is clipped.
    with pytest.raises(ValueError, match=r"img1 has values in \[100, 100\]: divide it by its peak"):
        fn(np.full((16, 16), 100.0), np.full((16, 16), 110.0))
    fn(np.full((16, 16), -0.2), np.full((16, 16), 1.3))


def test_psnr_of_floats_in_8_bit_units_needs_round_uint8_off():
    a = np.full((16, 16), 100.0)
    assert metrics.psnr(a, a + 10, data_range=255, round_uint8=False) == pytest.approx(10 * np.log10(255**2 / 100))


def test_ssim_parameters_are_checked():
    a = np.zeros((16, 16), np.uint8)
    for kw, message in [({"win_size": 0}, r"win_size must be >= 1, got 0"),
                        ({"win_size": 4}, r"win_size must be odd"),
                        ({"win_size": 7.5}, r"win_size must be an integer"),
                        ({"sigma": 0}, r"ssim: sigma must be a finite number > 0, got 0"),
                        ({"sigma": float("nan")}, r"sigma must be a finite number > 0, got nan"),
                        ({"k1": -0.01}, r"k1 must be a finite number > 0, got -0.01")]:
        with pytest.raises(ValueError, match=message):
            metrics.ssim(a, a, **kw)
    with pytest.raises(TypeError, match=r"ssim: k2 must be a number, got '0.03' \(str\)"):
        metrics.ssim(a, a, k2="0.03")


def test_ssim_window_larger_than_image():
    a = np.zeros((10, 30), dtype=np.uint8)
    with pytest.raises(ValueError, match="window"):
        metrics.ssim(a, a)
