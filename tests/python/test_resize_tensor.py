"""Tests of magmasr.image.imresize_tensor and magmasr.ops.resample_axis (the device-resident imresize).

``imresize_tensor`` must equal the NumPy ``imresize`` (the reference, bit-exact against MATLAB): exactly in
uint8 mode, to float32 precision in float mode; on random images of every layout, on every method and border,
and on Set5/Set14 against MATLAB's own outputs in ``shared/data/Set*/x{k}_matlab_lr`` (skipped without the
shared folder). The GPU tests (skipped without a GPU) check that the CUDA path equals the CPU path bit for bit
and stays on the device.
"""

from __future__ import annotations

import numpy as np
import pytest

import magmasr
from magmasr import image, ops

SCALES = [0.5, 1 / 3, 0.25, 0.37, 2.0, 2.7, 1.3, (0.6, 1.7), (1.0, 0.5)]


def _hwc_to_chw(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, -1, 0))


def _reference(img_chw: np.ndarray, uint8_mode: bool, **kw) -> np.ndarray:
    """imresize (H x W x C) applied to a [..., H, W] array, returned as [..., H', W']."""
    lead = img_chw.shape[:-2]
    flat = img_chw.reshape((-1,) + img_chw.shape[-2:])
    outs = []
    for plane in flat:
        src = plane.astype(np.uint8) if uint8_mode else plane.astype(np.float64)
        outs.append(image.imresize(src, uint8_mode=uint8_mode, **kw))
    out = np.stack(outs)
    return out.reshape(lead + out.shape[-2:])


# ---------------------------------------------------------------------------------------------------
# Against imresize on random images
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(23, 31), (3, 40, 37), (2, 3, 17, 29)])
def test_uint8_mode_equals_imresize_exactly(rng, shape, scale):
    img = rng.integers(0, 256, size=shape).astype(np.float32)
    out = image.imresize_tensor(img, scale, uint8_mode=True)
    ref = _reference(img, True, scale=scale)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(23, 31), (2, 3, 17, 29)])
def test_float_mode_matches_imresize(rng, shape, scale):
    img = rng.random(shape).astype(np.float32)
    out = image.imresize_tensor(img, scale)
    ref = _reference(img, False, scale=scale)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "nearest", "BOX", "triangle"])
@pytest.mark.parametrize("antialiasing", [True, False])
@pytest.mark.parametrize("border", ["replicate", "symmetric"])
def test_methods_borders_and_antialiasing(rng, method, antialiasing, border):
    img = rng.integers(0, 256, size=(2, 21, 26)).astype(np.float32)
    for scale in (0.4, 1.8):
        kw = dict(scale=scale, method=method, antialiasing=antialiasing, border=border)
        np.testing.assert_array_equal(image.imresize_tensor(img, uint8_mode=True, **kw), _reference(img, True, **kw))
        np.testing.assert_allclose(image.imresize_tensor(img, **kw), _reference(img, False, **kw), rtol=1e-5,
                                   atol=1e-4)


@pytest.mark.parametrize("output_shape", [(10, 50), (40, None), (None, 9), (23, 31), (23, 15)])
def test_output_shape_argument(rng, output_shape):
    img = rng.integers(0, 256, size=(3, 23, 31)).astype(np.float32)
    out = image.imresize_tensor(img, output_shape=output_shape, uint8_mode=True)
    np.testing.assert_array_equal(out, _reference(img, True, output_shape=output_shape))


def test_identity_resize_rounds_in_uint8_mode_and_copies_otherwise():
    img = np.array([[0.4, 0.5, 1.5], [254.5, 300.0, -3.0]], dtype=np.float32)
    out = image.imresize_tensor(img, 1.0, uint8_mode=True)
    np.testing.assert_array_equal(out, [[0, 1, 2], [255, 255, 0]])
    np.testing.assert_array_equal(out, image.imresize(img.astype(np.float64), 1.0, uint8_mode=True))
    same = image.imresize_tensor(img, 1.0)
    np.testing.assert_array_equal(same, img)
    assert not np.shares_memory(same, img)
    t = magmasr.as_tensor(img.copy())
    y = image.imresize_tensor(t, 1.0)
    assert isinstance(y, magmasr.Tensor)
    np.testing.assert_array_equal(np.asarray(y), img)
    assert not np.shares_memory(np.asarray(y), np.asarray(t))


def test_tensor_in_tensor_out_and_input_untouched(rng):
    arr = rng.random((1, 3, 30, 20)).astype(np.float32)
    keep = arr.copy()
    t = magmasr.as_tensor(arr)
    y = image.imresize_tensor(t, 0.5)
    assert isinstance(y, magmasr.Tensor)
    assert y.shape == (1, 3, 15, 10) and str(y.device) == "cpu"
    np.testing.assert_array_equal(arr, keep)
    # uint8 arrays are accepted and treated as 0..255 values
    u8 = rng.integers(0, 256, size=(12, 14), dtype=np.uint8)
    np.testing.assert_array_equal(image.imresize_tensor(u8, 0.5, uint8_mode=True), image.imresize(u8, 0.5))


def test_tables_are_cached_per_size_and_scale(rng):
    img = rng.random((2, 33, 35)).astype(np.float32)
    image.imresize_tensor(img, 0.5)
    before = image._device_table.cache_info()
    image.imresize_tensor(img, 0.5)
    after = image._device_table.cache_info()
    assert after.hits == before.hits + 2 and after.misses == before.misses


def test_imresize_tensor_errors():
    x = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        image.imresize_tensor(x)
    with pytest.raises(ValueError, match="method"):
        image.imresize_tensor(x, 2, method="lanczos9")
    with pytest.raises(ValueError, match="border"):
        image.imresize_tensor(x, 2, border="wrap")
    with pytest.raises(ValueError, match="rank"):
        image.imresize_tensor(np.zeros(4, dtype=np.float32), 2)
    with pytest.raises(ValueError, match="rank"):
        image.imresize_tensor(np.zeros((1,) * 6, dtype=np.float32), 2)
    with pytest.raises(ValueError, match="uint8 or floating"):
        image.imresize_tensor(np.zeros((4, 4), dtype=np.int32), 2)
    with pytest.raises(ValueError, match="empty"):
        image.imresize_tensor(np.zeros((0, 4), dtype=np.float32), 2)
    with pytest.raises(ValueError):
        image.imresize_tensor(x, -1)


# ---------------------------------------------------------------------------------------------------
# magmasr.ops.resample_axis and ResampleTable
# ---------------------------------------------------------------------------------------------------

def test_resample_axis_is_resize_along_axis(rng):
    x = rng.random((2, 3, 11, 13)).astype(np.float32)
    for axis in range(-4, 4):
        n = x.shape[axis]
        w, idx = image.contributions(n, 2 * n + 1, (2 * n + 1) / n)
        ref = image.resize_along_axis(x, axis % 4, w, idx)
        got = np.asarray(ops.resample_axis(x, axis, w, idx))
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
        table = ops.ResampleTable(w, idx, n)
        np.testing.assert_array_equal(np.asarray(ops.resample_axis(x, axis, table)), got)
        xu = rng.integers(0, 256, size=x.shape).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(ops.resample_axis(xu, axis, table, round_uint8=True)),
                                      image.resize_along_axis(xu, axis % 4, w, idx, uint8_mode=True))


def test_resample_table_properties():
    w, idx = image.contributions(10, 5, 0.5)
    t = ops.ResampleTable(w, idx, 10)
    assert (t.in_len, t.out_len, t.taps) == (10, 5, w.shape[1])
    assert str(t.device) == "cpu" and "ResampleTable(in_len=10" in repr(t)
    np.testing.assert_array_equal(t.weights, w)  # kept in float64
    assert t.weights.dtype == np.float64
    np.testing.assert_array_equal(t.indices, idx)
    assert t.to("cpu").in_len == 10


def test_resample_axis_errors():
    x = np.zeros((3, 5), dtype=np.float32)
    w = np.full((2, 2), 0.5)
    with pytest.raises(TypeError, match="integer"):
        ops.resample_axis(x, 1, w, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        ops.resample_axis(x, 1, w, np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="outside"):
        ops.resample_axis(x, 0, w, np.array([[0, 1], [2, 3]]))  # axis 0 has length 3
    with pytest.raises(ValueError, match="negative"):
        ops.resample_axis(x, 1, w, np.array([[0, -1], [2, 3]]))
    with pytest.raises(ValueError, match="out of range"):
        ops.resample_axis(x, 2, w, np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="out_len, taps"):
        ops.resample_axis(x, 1, np.ones(4), np.zeros(4, dtype=np.int32))
    table = ops.ResampleTable(w, np.zeros((2, 2), dtype=np.int32), 5)
    with pytest.raises(ValueError, match="length 5"):
        ops.resample_axis(x, 0, table)
    if not magmasr.cuda_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            ops.ResampleTable(w, np.zeros((2, 2), dtype=np.int32), 5, "cuda")


# ---------------------------------------------------------------------------------------------------
# Set5 / Set14 against MATLAB
# ---------------------------------------------------------------------------------------------------

def _matlab_cases(shared_dir):
    data = shared_dir / "data"
    if not (data / "Set5" / "x2_matlab_lr").is_dir() or not (data / "Set14" / "x2_matlab_lr").is_dir():
        pytest.skip(f"MATLAB reference images not found under {data}")
    iio = pytest.importorskip("imageio.v3")
    for subset in ("Set5", "Set14"):
        for k in (2, 3, 4):
            for hr in sorted((data / subset).glob("*.png")):
                ref = np.asarray(iio.imread(hr.parent / f"x{k}_matlab_lr" / hr.name))
                yield f"{subset} x{k} {hr.name}", k, np.asarray(iio.imread(hr)), ref


@pytest.mark.data
def test_matches_matlab_on_set5_set14_bit_exact(shared_dir):
    n = 0
    for name, k, hr, ref in _matlab_cases(shared_dir):
        lr = image.modcrop(hr, k)
        out = image.imresize_tensor(_hwc_to_chw(lr).astype(np.float32), 1 / k, uint8_mode=True)
        np.testing.assert_array_equal(out, _hwc_to_chw(ref).astype(np.float32), err_msg=name)
        n += 1
    assert n == 3 * 19


# ---------------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("uint8_mode", [False, True])
@pytest.mark.parametrize("scale", SCALES)
def test_gpu_equals_cpu_and_stays_on_device(gpu, rng, scale, uint8_mode):
    img = rng.integers(0, 256, size=(2, 3, 41, 37)).astype(np.float32)
    if not uint8_mode:
        img /= 255.0
    cpu_out = image.imresize_tensor(magmasr.as_tensor(img), scale, uint8_mode=uint8_mode)
    gpu_out = image.imresize_tensor(magmasr.as_tensor(img).to(gpu), scale, uint8_mode=uint8_mode)
    assert isinstance(gpu_out, magmasr.Tensor) and gpu_out.device == gpu
    assert gpu_out.shape == cpu_out.shape
    # Same double arithmetic, same order: identical, not merely close.
    np.testing.assert_array_equal(gpu_out.numpy(), np.asarray(cpu_out))


@pytest.mark.gpu
def test_gpu_resample_table_devices(gpu):
    w, idx = image.contributions(9, 4, 0.5)
    t = ops.ResampleTable(w, idx, 9, gpu)
    assert t.device == gpu
    np.testing.assert_array_equal(t.weights, w)
    np.testing.assert_array_equal(t.indices, idx)
    x = magmasr.as_tensor(np.arange(27, dtype=np.float32).reshape(3, 9))
    with pytest.raises(RuntimeError, match="device"):
        ops.resample_axis(x, 1, t)  # CPU input, GPU table
    np.testing.assert_array_equal(ops.resample_axis(x.to(gpu), 1, t).numpy(),
                                  np.asarray(ops.resample_axis(x, 1, t.to("cpu"))))


@pytest.mark.gpu
@pytest.mark.data
def test_gpu_matches_matlab_on_set5_set14_bit_exact(gpu, shared_dir):
    for name, k, hr, ref in _matlab_cases(shared_dir):
        x = magmasr.as_tensor(_hwc_to_chw(image.modcrop(hr, k)).astype(np.float32)).to(gpu)
        out = image.imresize_tensor(x, 1 / k, uint8_mode=True)
        assert out.device == gpu
        np.testing.assert_array_equal(out.numpy(), _hwc_to_chw(ref).astype(np.float32), err_msg=name)
