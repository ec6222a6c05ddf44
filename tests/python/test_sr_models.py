"""Model builders (exact parameter counts), the SRCNN pipeline through magmasr's own kernels against the
published Set5 figures, and ImageSR's upscale / save / load."""
from __future__ import annotations

import numpy as np
import pytest

from magmasr import image as im
from magmasr import models
from magmasr.sr import ImageSR, evaluate_image_sr


def conv_params(cin, cout, *k):
    return cout * cin * int(np.prod(k)) + cout


def test_srcnn_presets_parameter_counts_and_shapes():
    for name, (f1, f2, f3) in models.SRCNN_PRESETS.items():
        m = models.srcnn_preset(name)
        assert m.num_parameters == conv_params(1, 64, f1, f1) + conv_params(64, 32, f2, f2) + conv_params(32, 1, f3, f3)
        assert m.output_shape((2, 1, 40, 36)) == (2, 1, 40, 36)  # 'same'
        v = models.srcnn_preset(name, padding="valid")
        assert v.output_shape((2, 1, 33, 33)) == (2, 1, 33 - f1 - f2 - f3 + 3, 33 - f1 - f2 - f3 + 3)
    assert models.srcnn_preset("9-5-5").num_parameters == 57281
    assert [n for n, _ in models.srcnn().named_parameters()] == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]


def test_srcnn_nonlinear_adds_one_conv_relu_and_shares_names():
    m = models.srcnn_nonlinear(fb=3)
    assert m.names() == ["conv1", "relu1", "conv2", "relu2", "conv2b", "relu2b", "conv3"]
    assert m.num_parameters == 57281 + conv_params(32, 32, 3, 3)


def test_tdsrnet_poster_counts():
    # The poster's total: five Conv3D 3x3x3 (1->32, then 32->32) and a 3x3 head with 4 outputs.
    shuffle = models.tdsrnet_poster("shuffle")
    assert shuffle.num_parameters == 112_772
    assert shuffle.output_shape((1, 1, 5, 64, 64)) == (1, 1, 120, 120)
    # The same network with a x4 sub-pixel head (16 outputs): 111,616 + 9 * 32 * 16 + 16.
    x4 = models.tdsrnet_poster("shuffle", scale=4)
    assert x4.num_parameters == 111_616 + 4_624 == 116_240
    assert x4.output_shape((1, 1, 5, 64, 64)) == (1, 1, 240, 240)
    # A 1-output head instead: 111,616 + 289 = 111,905. (The 112,505 cannot come from a 3x3 Conv2D
    # on 32 channels: 9 * 32 * c + c = 889 has no integer solution.)
    single = models.tdsrnet_poster("single")
    assert single.num_parameters == 111_905
    assert single.output_shape((1, 1, 5, 64, 64)) == (1, 1, 60, 60)


def test_tdsrnet_published_shapes():
    for scale in (2, 3, 4):
        m = models.tdsrnet(scale)
        assert m.output_shape((2, 1, 5, 16, 12)) == (2, 1, 16 * scale, 12 * scale)
        assert m.num_parameters == conv_params(1, 64, 3, 3, 3) + 4 * conv_params(64, 64, 3, 3, 3) + conv_params(
            64, scale * scale, 3, 3, 3)
    with pytest.raises(ValueError, match="5 frames"):
        models.tdsrnet(4, frames=3)


def test_builders_reject_bad_options():
    with pytest.raises(ValueError, match="padding"):
        models.srcnn(padding="full")
    with pytest.raises(ValueError, match="odd"):
        models.srcnn(f1=8)
    with pytest.raises(ValueError, match="preset"):
        models.srcnn_preset("9-9-9")


# The authors' SRCNN models and their published Set5 PSNR (dB).
OFFICIAL_SET5 = [("9-5-5_imagenet", 3, 32.75), ("9-5-5_imagenet", 2, 36.66), ("9-1-5_91images", 3, 32.39)]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("preset,scale,published", OFFICIAL_SET5)
def test_official_srcnn_weights_reproduce_published_set5(shared_dir, preset, scale, published):
    """The authors' weights, imported and run through magmasr's CPU kernels under their protocol, give the
    published Set5 PSNR to 0.02 dB (the published figures are rounded to 0.01 dB)."""
    _check_official_set5(shared_dir, preset, scale, published, "cpu")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("preset,scale,published", OFFICIAL_SET5)
def test_official_srcnn_weights_reproduce_published_set5_on_the_gpu(gpu, shared_dir, preset, scale, published):
    """The same on the GPU, whichever strategy ConvAlgo::Auto picks for each layer: 0.02 dB."""
    _check_official_set5(shared_dir, preset, scale, published, "cuda")


def _check_official_set5(shared_dir, preset, scale, published, device):
    path = shared_dir / "weights" / "srcnn_official" / preset / f"x{scale}.mat"
    model = ImageSR.from_srcnn_mat(path, scale).to(device)
    rows = evaluate_image_sr(model, shared_dir / "data" / "Set5", scale)
    assert len(rows) == 5
    mean = float(np.mean([r.psnr for r in rows]))
    assert abs(mean - published) <= 0.02, f"Set5 x{scale} {preset}: {mean:.3f} dB, published {published}"
    bicubic = {2: 33.66, 3: 30.39}[scale]
    assert abs(np.mean([r.psnr_bicubic for r in rows]) - bicubic) <= 0.02


@pytest.mark.parametrize("kind", ["rgb8", "gray8", "rgb16", "gray_float32", "rgb_float64"])
def test_tiled_upscale_is_the_whole_picture_bit_for_bit(kind):
    """upscale(tile=t) runs colour conversion, bicubic, network and back on t x t output pixels at a time, from
    only the input each needs; every tile size gives exactly the whole-picture result, and upscale_tiles
    yields row-major blocks that cover the picture once."""
    rng = np.random.default_rng()
    model = ImageSR.pretrained(3, "9-1-5", device="cpu")
    h, w = (int(v) for v in rng.integers(8, 30, 2))
    img = {"rgb8": lambda: rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
           "gray8": lambda: rng.integers(0, 256, (h, w), dtype=np.uint8),
           "rgb16": lambda: rng.integers(0, 65536, (h, w, 3), dtype=np.uint16),
           "gray_float32": lambda: rng.random((h, w)).astype(np.float32),
           "rgb_float64": lambda: rng.random((h, w, 3))}[kind]()
    whole = model.upscale(img)
    assert whole.dtype == img.dtype and whole.shape == (3 * h, 3 * w) + img.shape[2:]
    for tile in (1, 7, int(rng.integers(8, 40)), 3 * max(h, w)):
        np.testing.assert_array_equal(model.upscale(img, tile=tile), whole)
    covered = np.zeros((3 * h, 3 * w), int)
    corners = []
    for (r, c), block in model.upscale_tiles(img, tile=16):
        covered[r:r + block.shape[0], c:c + block.shape[1]] += 1
        corners.append((r, c))
        np.testing.assert_array_equal(block, whole[r:r + block.shape[0], c:c + block.shape[1]])
    assert (covered == 1).all() and corners == sorted(corners)


def test_tiled_upscale_on_the_gpu_is_exact_with_the_direct_kernels(gpu):
    """On the GPU, a picture cut into tiles runs the direct kernels, whose sums per output pixel do not depend on
    the block: every tile size gives exactly the whole picture computed with algo='direct'. The default whole
    picture ('auto': cuBLAS for some layers) and the CPU agree with it to within one grey level, nearly
    everywhere. algo='direct_async' (the tiled kernels' cp.async variant) and algo='implicit_gemm' (the same sums as
    an implicit GEMM), and 'auto_direct' (the fastest of the three per layer), give algo='direct' bit for bit. The
    same holds for 3DSRnet's tiled residual."""
    from magmasr.video import VideoSR

    rng = np.random.default_rng()
    model = ImageSR.pretrained(3, "9-5-5", device="cuda")
    img = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)  # 120 x 156 upscaled: 4 tile shapes per tile size
    direct = model.upscale(img, algo="direct")
    small = img[:19, :26]  # the other direct kernels on a crop (each costs minutes of the CPU emulator's time)
    direct_small = model.upscale(small, algo="direct")
    for algo in ("direct_async", "implicit_gemm", "auto_direct"):  # the same sums, same order
        np.testing.assert_array_equal(model.upscale(small, algo=algo), direct_small, err_msg=algo)
    # Each new block shape times the three direct kernels (auto_direct) once: one tile size here (its 20 tiles
    # have 4 shapes), two more through the command line (test_cli.py), two in C++ (test_sr.cpp).
    np.testing.assert_array_equal(model.upscale(img, tile=37), direct, err_msg="tile 37")
    whole = model.upscale(img).astype(int)
    cpu = ImageSR.pretrained(3, "9-5-5", device="cpu").upscale(img).astype(int)
    for a, b in ((direct.astype(int), whole), (whole, cpu)):
        assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 1e-3
    assert all(model.net[n].algo == "auto" for n in model.net.names() if hasattr(model.net[n], "algo"))

    video = VideoSR.tdsrnet(2, filters=16, seed=int(rng.integers(1 << 30))).to("cuda")
    window = rng.random((5, 21, 26)).astype(np.float32)
    expected = video.residual(window, algo="direct")
    for algo in ("direct_async", "implicit_gemm", "auto_direct"):
        np.testing.assert_array_equal(video.residual(window, algo=algo), expected, err_msg=algo)
    np.testing.assert_array_equal(video.residual(window, 11), expected, err_msg="tile 11")  # 6 tiles, 4 shapes


class _RecordingNet:
    """A network that notes the convolution strategy of each layer at every call."""

    def __init__(self, net):
        self.net, self.seen, self.fail = net, [], False

    def names(self):
        return self.net.names()

    def __getitem__(self, key):
        return self.net[key]

    def __call__(self, x):
        self.seen.append({self.net[n].algo for n in self.net.names() if hasattr(self.net[n], "algo")})
        if self.fail:
            raise RuntimeError("out of memory")
        return self.net(x)


def test_the_convolution_strategy_is_pinned_for_one_call_only():
    """`algo` pins every convolution's strategy for the call and restores the layers' own afterwards, also when
    the call fails; on the CPU a picture defaults to 'winograd', on a GPU a tiled one to 'auto_direct' (the
    fastest of the direct kernels, which all give the same bits)."""
    rng = np.random.default_rng()
    model = ImageSR.srcnn("9-1-5", scale=2, seed=int(rng.integers(1 << 30)))
    rec = model.net = _RecordingNet(model.net)
    img = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    reference = model.upscale(img)
    assert rec.seen == [{"winograd"}]
    # 9-1-5 has no layer that Winograd computes (a 1x1 mapping layer, one output channel at the end): the CPU's
    # direct sums whatever the strategy named.
    for algo in ("direct", "direct_async", "implicit_gemm", "gemm", "auto_direct", "winograd"):
        rec.seen.clear()
        np.testing.assert_array_equal(model.upscale(img, tile=8, algo=algo), reference)
        assert rec.seen == [{algo}] * 9  # 18 x 22 output pixels in 8 x 8 tiles
        assert {model.net[n].algo for n in model.net.names() if hasattr(model.net[n], "algo")} == {"auto"}
    rec.seen.clear()
    model.upscale(img, tile=8)
    assert rec.seen == [{"winograd"}] * 9
    with pytest.raises(ValueError, match="algo must be one of auto, direct, direct_async, implicit_gemm, gemm, "
                                         "auto_direct, winograd"):
        model.upscale(img, algo="fastest")
    rec.fail = True
    with pytest.raises(RuntimeError, match="out of memory"):
        model.upscale(img, algo="direct")
    assert rec.seen[-1] == {"direct"}
    assert {model.net[n].algo for n in model.net.names() if hasattr(model.net[n], "algo")} == {"auto"}
    # Which strategy a call pins, whatever the device (set by hand here: no GPU is needed to decide).
    model.device = "cuda"
    assert model._inference_algo(None, tiled=True) == "auto_direct"
    assert model._inference_algo(None, tiled=False) is None
    assert model._inference_algo("gemm", tiled=True) == "gemm"
    model.device = "cpu"
    assert model._inference_algo(None, tiled=True) is None


@pytest.mark.parametrize("arch", ["9-5-5", "9-3-5", "mixed"])
def test_winograd_pictures_are_close_to_the_direct_sums_and_tiles_stay_exact(arch):
    """On the CPU a picture runs its 3x3 and 5x5 layers by Winograd (the default): within one grey level of the
    direct sums (a few 1e-6 before rounding), and tiles of any size give the whole picture's pixels (cut on the
    tile grid of F(4x4, 5x5), F(6x6, 3x3), or both: 12), gray, RGB and RGBA. Not with the self-ensemble."""
    rng = np.random.default_rng()
    seed = int(rng.integers(1 << 30))
    if arch == "mixed":  # SRCNN with an added 3x3 layer after the 5x5 mapping layer: grid lcm(4, 6) = 12
        net = models.srcnn_nonlinear(9, 5, 5, 16, 8, fb=3, seed=seed)
        model = ImageSR(net, 2, models.Architecture("srcnn_nonlinear", {"f1": 9, "f2": 5, "f3": 5, "n1": 16,
                                                                        "n2": 8, "fb": 3}))
        assert model._tile_grid("winograd") == (12, 3 + 5)
    else:
        model = ImageSR.srcnn(arch, scale=2, seed=seed)
        assert model._tile_grid("winograd") == ((4, 3) if arch == "9-5-5" else (6, 5))
    assert model._tile_grid("auto") == (1, 0)
    for shape in ((23, 31), (29, 17, 3), (21, 26, 4)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        whole, direct = model.upscale(img), model.upscale(img, algo="auto")
        diff = np.abs(whole.astype(int) - direct.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05
        for tile in (5, 12, int(rng.integers(6, 40))):
            np.testing.assert_array_equal(model.upscale(img, tile=tile), whole, err_msg=f"tile {tile}, {shape}")
    # The Y path (refine) keeps the direct sums by default and takes 'winograd' on request, also exact in tiles.
    y = rng.random((30, 34)).astype(np.float32)
    np.testing.assert_array_equal(model.refine(y, tile=9), model.refine(y))
    w = model.refine(y, algo="winograd")
    np.testing.assert_array_equal(model.refine(y, tile=9, algo="winograd"), w)
    assert np.abs(w - model.refine(y)).max() < 1e-4
    model.ensemble = True
    with pytest.raises(ValueError, match="does not go with the self-ensemble"):
        model.upscale(img, algo="winograd")


def test_upscale_16_bit_is_the_float_path_rounded():
    rng = np.random.default_rng()
    model = ImageSR.pretrained(2, "9-1-5")
    img = rng.integers(0, 65536, (12, 15, 3), dtype=np.uint16)
    expected = np.round(model.upscale(img.astype(np.float64) / 65535.0) * 65535.0).astype(np.uint16)
    np.testing.assert_array_equal(model.upscale(img), expected)


def test_upscale_dtypes_shapes_and_save_load(tmp_path):
    rng = np.random.default_rng(0)
    model = ImageSR.srcnn("9-1-5", scale=2)
    rgb = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    out = model.upscale(rgb)
    assert out.shape == (26, 34, 3) and out.dtype == np.uint8
    gray = rng.random((9, 11)).astype(np.float32)
    g = model.upscale(gray, scale=3)
    assert g.shape == (27, 33) and g.dtype == np.float32 and 0 <= g.min() and g.max() <= 1
    with pytest.raises(ValueError, match="RGB"):
        model.upscale(rng.random((4, 4, 5)))
    with pytest.raises(TypeError, match="dtype"):
        model.upscale(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="image"):
        model.upscale(np.zeros((0, 4), dtype=np.uint8))
    path = tmp_path / "m.safetensors"
    model.save(path, recipe="test")
    back = ImageSR.load(path)
    assert back.scale == 2 and back.arch == model.arch and back.metadata["recipe"] == "test"
    np.testing.assert_array_equal(back.upscale(rgb), out)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_upscale_keeps_an_alpha_channel(dtype):
    """Gray + alpha and RGBA pictures: the colour channels are the upscale without alpha of the picture's colour,
    bit for bit, once the colour under fully transparent pixels has been spread from the visible ones
    (test_alpha.py), the alpha MATLAB's bicubic upscale of it in floating point, clipped and stored in the
    picture's type; tiles give the whole picture's bits."""
    from test_alpha import bleed_reference

    rng = np.random.default_rng()
    model = ImageSR.pretrained(2, "9-1-5", device="cpu")
    peak = {np.uint8: 255, np.uint16: 65535}.get(dtype)
    for channels in (2, 4):
        raw = rng.random((19, 23, channels))
        img = (np.round(raw * peak) if peak else raw).astype(dtype)
        img[3:9, 5:17, -1] = 0  # a transparent area whose stored colour is replaced
        out = model.upscale(img)
        assert out.shape == (38, 46, channels) and out.dtype == dtype
        bled = bleed_reference(img)
        colour = bled[:, :, 0] if channels == 2 else bled[:, :, :3]
        np.testing.assert_array_equal(out[:, :, :-1].reshape(model.upscale(colour).shape), model.upscale(colour))
        a = np.clip(im.imresize(img[:, :, -1].astype(np.float64) / (peak or 1), 2), 0.0, 1.0)
        expected = im.to_uint8(a) if dtype == np.uint8 else (
            np.round(a * 65535.0).astype(np.uint16) if dtype == np.uint16 else a.astype(dtype))
        np.testing.assert_array_equal(out[:, :, -1], expected)
        np.testing.assert_array_equal(model.upscale(img, tile=13), out)


def test_load_refuses_other_models_and_damaged_metadata_naming_the_file(tmp_path):
    from magmasr import weights
    from magmasr.video import VideoSR

    model = ImageSR.srcnn("9-1-5", scale=3, n1=8, n2=4)
    good = tmp_path / "good.safetensors"
    model.save(good)
    state, meta = weights.load(good)
    cases = [
        ({"architecture": "tdsrnet", "arch_kwargs": "scale=3"}, r"an image model is an SRCNN .* 'tdsrnet' \(a 3DSRnet is a video model"),
        ({"architecture": "foo"}, r"unknown architecture 'foo' \(this version of magmasr knows srcnn, srcnn_nonlinear"),
        ({"scale": "x3"}, r"scale must be a positive integer, got 'x3'"),
        ({"scale": "0"}, r"scale must be a positive integer, got '0'"),
        ({"arch_kwargs": "f1"}, r"arch_kwargs must be name=value items separated by commas, got 'f1'"),
        ({"arch_kwargs": "zz=1"}, r"unexpected keyword argument 'zz'"),
    ]
    for change, message in cases:
        bad = tmp_path / "bad.safetensors"
        weights.save(bad, state, {**meta, **change})
        with pytest.raises(ValueError, match=message) as info:
            ImageSR.load(bad)
        assert str(info.value).startswith(f"{bad}: "), change
    no_arch = {k: v for k, v in meta.items() if k != "architecture"}
    weights.save(tmp_path / "bare.safetensors", state, no_arch)
    with pytest.raises(ValueError, match=r"not a magmasr model file \(its metadata has no architecture\)"):
        ImageSR.load(tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match=r"a video model is a 3DSRnet"):
        VideoSR.load(good)
    # A diverged training run's NaN weights: refused, naming the tensors, instead of a black picture.
    broken = dict(state)
    broken["conv2.bias"] = np.full_like(state["conv2.bias"], np.nan)
    broken["conv1.weight"] = state["conv1.weight"].copy()
    broken["conv1.weight"].flat[3] = np.inf
    weights.save(tmp_path / "nan.safetensors", broken, meta)
    with pytest.raises(ValueError, match=r"the weights conv1.weight, conv2.bias hold NaN or infinite values"):
        ImageSR.load(tmp_path / "nan.safetensors")
    assert ImageSR.load(good).arch == model.arch


def test_upscale_refuses_fractional_scales_and_tiles():
    model = ImageSR.srcnn("9-1-5", scale=2, n1=4, n2=2)
    img = np.zeros((5, 6), np.uint8)
    for kw, message in [({"scale": 2.5}, r"scale must be an integer, got 2.5"),
                        ({"tile": 7.5}, r"tile must be an integer, got 7.5"),
                        ({"scale": "3"}, r"scale must be an integer, got '3'"),
                        ({"tile": 0}, r"tile must be >= 1, got 0")]:
        with pytest.raises((ValueError, TypeError), match=message):
            model.upscale(img, **kw)
    assert model.upscale(img, scale=3.0).shape == (15, 18)  # an integral float is an integer
    assert model.upscale(img, scale=np.int64(3)).shape == (15, 18)


def _d4(a: np.ndarray):
    """The 8 rotations and flips of a 2-D array as (forward, inverse) pairs, written with transposes and
    reversals (not np.rot90, which the library uses)."""
    t = lambda x: np.ascontiguousarray(x.T)  # noqa: E731
    h = lambda x: np.ascontiguousarray(x[:, ::-1])  # noqa: E731
    v = lambda x: np.ascontiguousarray(x[::-1, :])  # noqa: E731
    pairs = [(lambda x: x, lambda x: x), (h, h), (v, v), (lambda x: v(h(x)), lambda x: h(v(x))), (t, t),
             (lambda x: t(h(x)), lambda x: h(t(x))), (lambda x: t(v(x)), lambda x: v(t(x))),
             (lambda x: t(v(h(x))), lambda x: h(v(t(x))))]
    return pairs


def test_self_ensemble_is_the_mean_over_rotations_and_flips_and_stays_exact_in_tiles():
    rng = np.random.default_rng()
    model = ImageSR.srcnn("9-1-5", scale=2, seed=int(rng.integers(1 << 30)))
    y = rng.random((23, 30))
    plain = [inv(model.refine(fwd(y)).astype(np.float64)) for fwd, inv in _d4(y)]
    model.ensemble = True
    got = model.refine(y)
    np.testing.assert_allclose(got, np.mean(plain, axis=0), rtol=0, atol=1e-12)
    assert np.abs(got - plain[0]).max() > 1e-4  # not the plain network
    # Equivariant: a rotated or transposed input gives the rotated or transposed output.
    for fwd, inv in _d4(y)[1:]:
        np.testing.assert_allclose(inv(model.refine(fwd(y))), got, rtol=0, atol=1e-12)
    # The whole pipeline in tiles gives the whole picture's pixels, bit for bit.
    img = rng.integers(0, 256, (17, 21, 3), dtype=np.uint8)
    whole = model.upscale(img)
    for tile in (5, 16, 40):
        np.testing.assert_array_equal(model.upscale(img, tile=tile), whole)
    model.ensemble = False
    assert not np.array_equal(model.upscale(img), whole)
