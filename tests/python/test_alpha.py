"""The colour under transparency ("alpha bleeding") before an upscale: magmasr._core._bleed_transparent (the C++
kernel ImageSR.upscale and the C++ SrcnnModel use) against the rule written out in NumPy, and what it is for: no
dark fringe where a picture stores black under its transparent pixels."""
from __future__ import annotations

import numpy as np
import pytest

from magmasr import _core
from magmasr.sr import ImageSR

NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]  # row-major


def bleed_reference(img: np.ndarray) -> np.ndarray:
    """Layer 0: alpha != 0. A transparent pixel with 8-neighbours in layers < k is in layer k and takes, per
    colour channel, their mean (sum in float64 in row-major neighbour order, / count; integers rounded half to
    even, float32 rounded to float32). Written independently of the C++ loop: whole layers at once."""
    out = np.array(img, copy=True)
    h, w, ch = img.shape
    layer = np.where(img[:, :, -1] != 0, 0, -1)
    if (layer == 0).all() or (layer < 0).all():
        return out
    vals = img[:, :, :-1].astype(np.float64)
    k = 1
    while (layer < 0).any():
        filled = np.pad(layer >= 0, 1)
        padded = np.pad(vals, ((1, 1), (1, 1), (0, 0)))
        total, count = np.zeros_like(vals), np.zeros((h, w), np.int64)
        for dr, dc in NEIGHBOURS:
            f = filled[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
            total = total + np.where(f[:, :, None], padded[1 + dr:1 + dr + h, 1 + dc:1 + dc + w], 0.0)
            count += f
        new = (layer < 0) & (count > 0)
        mean = total[new] / count[new][:, None]
        if np.issubdtype(img.dtype, np.integer):
            mean = np.rint(mean)
        elif img.dtype == np.float32:
            mean = mean.astype(np.float32).astype(np.float64)
        vals[new] = mean
        layer[new] = k
        k += 1
    out[:, :, :-1] = vals.astype(img.dtype)
    return out


def peak_of(dtype) -> int | None:
    return {np.uint8: 255, np.uint16: 65535}.get(dtype)


def random_picture(rng, dtype, channels, h, w) -> np.ndarray:
    """Random colour; alpha random with transparent rectangles, a transparent border and scattered holes."""
    peak = peak_of(dtype)
    raw = rng.random((h, w, channels))
    img = (np.round(raw * peak) if peak else raw).astype(dtype)
    a = img[:, :, -1]
    a[rng.random((h, w)) < 0.2] = 0
    for _ in range(3):
        r, c = rng.integers(0, h), rng.integers(0, w)
        a[r:r + int(rng.integers(1, h + 1)), c:c + int(rng.integers(1, w + 1))] = 0
    a[:, :int(rng.integers(0, 4))] = 0
    return img


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_bleeding_follows_the_rule_and_keeps_visible_pixels_and_alpha(dtype):
    rng = np.random.default_rng()
    for channels in (2, 4):
        for _ in range(4):
            img = random_picture(rng, dtype, channels, int(rng.integers(1, 40)), int(rng.integers(1, 40)))
            got = _core._bleed_transparent(img)
            assert got.dtype == img.dtype and got.shape == img.shape
            np.testing.assert_array_equal(got, bleed_reference(img))
            visible = img[:, :, -1] != 0
            np.testing.assert_array_equal(got[visible], img[visible])
            np.testing.assert_array_equal(got[:, :, -1], img[:, :, -1])
            if visible.any():  # every colour under transparency now lies within the visible colours' range
                # (for floats to the rounding of a mean: (x + x + x) / 3 may be x's neighbour)
                tol = 0.0 if peak_of(dtype) else 4 * float(np.finfo(dtype).eps)
                for p in range(channels - 1):
                    lo, hi = float(img[:, :, p][visible].min()), float(img[:, :, p][visible].max())
                    assert lo - tol <= float(got[:, :, p].min()) and float(got[:, :, p].max()) <= hi + tol


def test_bleeding_in_a_known_case_and_the_edge_cases():
    # One visible pixel in a 1 x 5 strip of gray + alpha: the colour spreads to both ends unchanged.
    strip = np.array([[[0, 0], [0, 0], [200, 255], [0, 0], [7, 0]]], np.uint8)
    np.testing.assert_array_equal(_core._bleed_transparent(strip)[0, :, 0], [200, 200, 200, 200, 200])
    # Two visible neighbours: the mean, half to even (100 and 103 -> 101.5 -> 102; 100 and 101 -> 100.5 -> 100).
    for right, mean in ((103, 102), (101, 100)):
        img = np.array([[[100, 255], [0, 0], [right, 255]]], np.uint8)
        assert _core._bleed_transparent(img)[0, 1, 0] == mean
    # Nothing visible, or nothing transparent: unchanged.
    rng = np.random.default_rng()
    clear = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    clear[:, :, 3] = 0
    np.testing.assert_array_equal(_core._bleed_transparent(clear), clear)
    opaque = rng.integers(1, 256, (5, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(_core._bleed_transparent(opaque), opaque)
    # A strided view is read as its values.
    big = random_picture(rng, np.uint8, 4, 20, 30)
    np.testing.assert_array_equal(_core._bleed_transparent(big[::2, ::3]), bleed_reference(big[::2, ::3]))
    with pytest.raises(ValueError, match="H x W x 2 or H x W x 4"):
        _core._bleed_transparent(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8, uint16, float32 or float64"):
        _core._bleed_transparent(np.zeros((4, 4, 2), np.int32))


def test_no_dark_fringe_around_an_upscaled_logo():
    """A red disk with an antialiased edge on a transparent background that stores black: the upscaled edge is
    red (before: up to a third darker, where bicubic and the network mixed in the black), and the disk's inside
    is what the picture without alpha gives."""
    yy, xx = np.mgrid[0:48, 0:48]
    alpha = np.clip((16 - np.hypot(yy - 24, xx - 24)) * 255 / 1.5, 0, 255).astype(np.uint8)
    img = np.zeros((48, 48, 4), np.uint8)
    img[:, :, :3] = (220, 40, 40)
    img[alpha == 0, :3] = 0
    img[:, :, 3] = alpha
    model = ImageSR.pretrained(3, "9-1-5", device="cpu")
    out = model.upscale(img)
    a = out[:, :, 3]
    edge = (a > 12) & (a < 243)
    assert edge.sum() > 500
    assert np.abs(out[edge, :3].astype(int) - (220, 40, 40)).max() <= 1
    # Well inside the disk (radius 48 px after x3, centred on 73.0): the black beyond its edge, 18 px away, lies
    # outside what bicubic (6 px) and the network (6 px) read.
    yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]]
    inside = np.hypot(yy - 73.0, xx - 73.0) < 30
    np.testing.assert_array_equal(out[inside, :3], model.upscale(np.ascontiguousarray(img[:, :, :3]))[inside])
