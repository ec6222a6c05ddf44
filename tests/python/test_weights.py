"""Tests of magmasr.weights: safetensors files, strict checks, importers of the authors' weights.

The importer tests read ``shared/weights`` and ``shared/data`` (skipped when absent; ``MAGMASR_SHARED``
overrides the location) and check the imported weights end to end with forward passes written here in
NumPy, independently of the library: the SRCNN weights must reproduce the published Set5 PSNRs, and
the 3DSRnet weights must beat bicubic and single-frame SRCNN on Vid4 frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from magmasr import image, metrics, weights


def _shared() -> Path:
    env = os.environ.get("MAGMASR_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


SHARED = _shared()
WEIGHTS = SHARED / "weights"
DATA = SHARED / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared file not found: {path}")
    return path


def _read_png(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


# ---------------------------------------------------------------------------------------------------
# Native format
# ---------------------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "conv1.weight": rng.standard_normal((4, 1, 3, 3)),  # float64: stored as float32
        "conv1.bias": rng.standard_normal(4).astype(np.float32),
        "step": np.array([7], dtype=np.int64),
    }
    meta = {"architecture": "SRCNN", "scale": "3", "recipe": "9-5-5"}
    path = tmp_path / "m.safetensors"
    weights.save(path, tensors, meta)
    got, got_meta = weights.load(path)
    assert got_meta == meta
    assert set(got) == set(tensors)
    assert got["conv1.weight"].dtype == np.float32
    np.testing.assert_array_equal(got["conv1.weight"], tensors["conv1.weight"].astype(np.float32))
    np.testing.assert_array_equal(got["conv1.bias"], tensors["conv1.bias"])
    assert got["step"].dtype == np.int64 and got["step"][0] == 7
    # No metadata, and overwriting an existing file.
    weights.save(str(path), {"a": np.ones(3)})
    got, got_meta = weights.load(str(path))
    assert list(got) == ["a"] and got_meta == {}
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temporary left behind


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError):
        weights.save(tmp_path / "x.safetensors", {"a": np.ones(2)}, {"scale": 3})
    with pytest.raises(TypeError):
        weights.save(tmp_path / "x.safetensors", {1: np.ones(2)})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where", ["fsync", "replace", "write"])
def test_save_is_atomic(tmp_path, monkeypatch, where):
    path = tmp_path / "model.safetensors"
    weights.save(path, {"w": np.arange(6.0)}, {"version": "old"})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure in {where}")

    if where == "fsync":
        monkeypatch.setattr(weights.os, "fsync", boom)
    elif where == "replace":
        monkeypatch.setattr(weights.os, "replace", boom)
    else:
        real_fdopen = os.fdopen

        class FailingFile:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()
                return False

            def write(self, data):
                self.f.write(data[: len(data) // 2])  # a partial write, then the failure
                raise OSError("simulated failure in write (disk full)")

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(weights.os, "fdopen", lambda *a, **k: FailingFile(real_fdopen(*a, **k)))

    with pytest.raises(OSError, match="simulated"):
        weights.save(path, {"w": np.zeros(1000)}, {"version": "new"})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]  # no temporary file remains
    assert path.read_bytes() == before  # the old file is untouched
    assert weights.load(path)[1] == {"version": "old"}

    # A failed first write leaves nothing at all.
    fresh = tmp_path / "fresh.safetensors"
    monkeypatch.setattr(weights.os, "replace", boom)
    with pytest.raises(OSError):
        weights.save(fresh, {"w": np.zeros(3)})
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_scalars_keep_their_shape(tmp_path):
    path = tmp_path / "s.safetensors"
    weights.save(path, {"s": np.float32(3.5), "n": np.array(7, np.int64), "v": np.arange(3.0)[::-1]})
    got, _ = weights.load(path)
    assert got["s"].shape == () and got["s"] == np.float32(3.5)
    assert got["n"].shape == () and got["n"].dtype == np.int64 and got["n"] == 7
    np.testing.assert_array_equal(got["v"], [2.0, 1.0, 0.0])  # a reversed view is stored in its own order


def test_save_errors_name_the_file_asked_for(tmp_path):
    target = tmp_path / "no" / "such" / "m.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        weights.save(target, {"a": np.ones(2)})
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)


def test_importers_name_the_file_of_a_damaged_or_odd_model(tmp_path):
    import h5py
    import scipy.io

    # Strings where numbers belong.
    mat = tmp_path / "strings.mat"
    scipy.io.savemat(mat, {"weights_conv1": np.array(["abc"] * 4), "biases_conv1": np.zeros((1, 1)),
                           "weights_conv2": np.zeros((1, 1, 1)), "biases_conv2": np.zeros((1, 1)),
                           "weights_conv3": np.zeros((1, 1)), "biases_conv3": np.zeros((1, 1))})
    with pytest.raises(ValueError, match=rf"{mat}: weights_conv1 holds <U3 data, expected numbers"):
        weights.import_srcnn_mat(mat)
    # A 9-1-5 model whose conv2 was flattened to 2-D: conv2 is read as 1x1 and conv3's mismatch says so.
    rng = np.random.default_rng(0)
    flat = tmp_path / "flat.mat"
    scipy.io.savemat(flat, {"weights_conv1": rng.random((81, 4)), "biases_conv1": rng.random((4, 1)),
                            "weights_conv2": rng.random((4, 25 * 2)), "biases_conv2": rng.random((2, 1)),
                            "weights_conv3": rng.random((2, 25)), "biases_conv3": rng.random((1, 1))})
    with pytest.raises(ValueError, match=r"weights_conv2 is 2-D, so it was read as a 1x1 layer with n2 = 50"):
        weights.import_srcnn_mat(flat)
    # A truncated HDF5 file (3DSRnet, Keras): a ValueError naming it, not h5py's OSError.
    whole = tmp_path / "whole.h5"
    with h5py.File(whole, "w") as f:
        f.create_dataset("net/params/x", data=rng.random((64, 64)))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole.read_bytes()[:3000])
    for fn in (weights.import_3dsrnet_mat, weights.import_keras_h5):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: {cut}: cannot read the HDF5 file"):
            fn(cut)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        weights.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match="not a valid safetensors"):
        weights.load(bad)


# ---------------------------------------------------------------------------------------------------
# Strict checks
# ---------------------------------------------------------------------------------------------------

EXPECTED = {"conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,), "conv2.weight": (32, 64, 5, 5), "conv2.bias": (32,)}


def _state(**overrides):
    st = {k: np.zeros(s, dtype=np.float32) for k, s in EXPECTED.items()}
    st.update(overrides)
    return st


def test_check_state_ok():
    res = weights.check_state(EXPECTED, _state())
    assert res.ok and res.missing == [] and res.unexpected == []


def test_check_state_names_missing_unexpected_and_misshaped():
    st = _state(extra=np.zeros(2), **{"conv2.bias": np.zeros(31)})
    del st["conv1.bias"]
    with pytest.raises(KeyError) as e:
        weights.check_state(EXPECTED, st)
    msg = str(e.value)
    assert "missing keys: conv1.bias" in msg
    assert "unexpected keys: extra" in msg
    assert "conv2.bias (expected [32], got [31])" in msg
    assert not msg.startswith("'")  # readable, not a repr

    # Non-strict: missing and unexpected are reported, not raised...
    st = _state(extra=np.zeros(2))
    del st["conv1.bias"]
    res = weights.check_state(EXPECTED, st, strict=False)
    assert res.missing == ["conv1.bias"] and res.unexpected == ["extra"]
    # ...but a wrong shape is always an error.
    with pytest.raises(ValueError, match=r"conv1.weight \(expected \[64, 1, 9, 9\], got \[64, 1, 3, 3\]\)"):
        weights.check_state(EXPECTED, _state(**{"conv1.weight": np.zeros((64, 1, 3, 3))}), strict=False)


def test_load_with_expected(tmp_path):
    path = tmp_path / "w.safetensors"
    weights.save(path, _state(extra=np.zeros(1)))
    with pytest.raises(KeyError, match="unexpected keys: extra"):
        weights.load(path, expected=EXPECTED)
    tensors, _ = weights.load(path, expected=EXPECTED, strict=False)
    assert "extra" in tensors


# ---------------------------------------------------------------------------------------------------
# Importers: shapes and layouts
# ---------------------------------------------------------------------------------------------------

SRCNN_FILES = [
    ("9-5-5_imagenet", 2, 5), ("9-5-5_imagenet", 3, 5), ("9-5-5_imagenet", 4, 5),
    ("9-1-5_91images", 2, 1), ("9-1-5_91images", 3, 1), ("9-1-5_91images", 4, 1),
    ("9-1-5_imagenet", 3, 1), ("9-3-5_imagenet", 3, 3),
]


@pytest.mark.data
@pytest.mark.parametrize("model,scale,f2", SRCNN_FILES)
def test_import_srcnn_shapes(model, scale, f2):
    p = weights.import_srcnn_mat(_need(WEIGHTS / "srcnn_official" / model / f"x{scale}.mat"))
    expected = {
        "conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,),
        "conv2.weight": (32, 64, f2, f2), "conv2.bias": (32,),
        "conv3.weight": (1, 32, 5, 5), "conv3.bias": (1,),
    }
    weights.check_state(expected, p)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in p.values())


@pytest.mark.data
def test_import_srcnn_column_major_layout():
    import scipy.io

    path = _need(WEIGHTS / "srcnn_official" / "9-5-5_imagenet" / "x3.mat")
    raw = scipy.io.loadmat(str(path))
    p = weights.import_srcnn_mat(path)
    w1, w2, w3 = raw["weights_conv1"], raw["weights_conv2"], raw["weights_conv3"]
    rng = np.random.default_rng(0)
    for _ in range(50):
        o, r, c = rng.integers(64), rng.integers(9), rng.integers(9)
        assert p["conv1.weight"][o, 0, r, c] == np.float32(w1[r + 9 * c, o])
        i, j, r, c = rng.integers(32), rng.integers(64), rng.integers(5), rng.integers(5)
        assert p["conv2.weight"][i, j, r, c] == np.float32(w2[j, r + 5 * c, i])
        assert p["conv3.weight"][0, i, r, c] == np.float32(w3[i, r + 5 * c])
    np.testing.assert_array_equal(p["conv2.bias"], raw["biases_conv2"].ravel().astype(np.float32))


@pytest.mark.data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_import_3dsrnet_shapes(scale):
    p = weights.import_3dsrnet_mat(_need(WEIGHTS / "3dsrnet_official" / f"x{scale}.mat"))
    expected = {}
    for i in range(1, 7):
        cin = 1 if i == 1 else 64
        cout = scale * scale if i == 6 else 64
        expected[f"conv{i}.weight"] = (cout, cin, 3, 3, 3)
        expected[f"conv{i}.bias"] = (cout,)
    weights.check_state(expected, p)
    assert all(v.dtype == np.float32 for v in p.values())


@pytest.mark.data
def test_import_3dsrnet_axis_order():
    import h5py

    path = _need(WEIGHTS / "3dsrnet_official" / "x4.mat")
    p = weights.import_3dsrnet_mat(path)
    with h5py.File(path, "r") as f:
        params = f["net/params"]
        names = ["".join(map(chr, f[r][()].ravel())) for r in params["name"][:, 0]]
        raw = f[params["value"][names.index("conv_2f"), 0]][()]  # [Cout, Cin, kD, kW, kH]
    np.testing.assert_array_equal(p["conv2.weight"], raw.transpose(0, 1, 2, 4, 3))


@pytest.mark.data
@pytest.mark.parametrize("name,f2", [("m_model_adam_new30.h5", 1), ("3051crop_weight_200.h5", 3)])
def test_import_keras(name, f2):
    import h5py

    path = _need(WEIGHTS / "keras_srcnn" / name)
    p = weights.import_keras_h5(path)
    weights.check_state(
        {
            "conv1.weight": (128, 1, 9, 9), "conv1.bias": (128,),
            "conv2.weight": (64, 128, f2, f2), "conv2.bias": (64,),
            "conv3.weight": (1, 64, 5, 5), "conv3.bias": (1,),
        },
        p,
    )
    with h5py.File(path, "r") as f:
        w = f["convolution2d_1/convolution2d_1_W:0"][()]  # HWIO
    np.testing.assert_array_equal(p["conv1.weight"][5, 0], w[:, :, 0, 5])


@pytest.mark.data
def test_importers_reject_the_wrong_kind_of_file(tmp_path):
    import scipy.io

    srcnn = _need(WEIGHTS / "srcnn_official" / "9-5-5_imagenet" / "x3.mat")
    d3 = _need(WEIGHTS / "3dsrnet_official" / "x2.mat")
    keras = _need(WEIGHTS / "keras_srcnn" / "m_model_adam_new30.h5")
    with pytest.raises(ValueError, match="v7.3"):
        weights.import_srcnn_mat(d3)
    with pytest.raises(ValueError, match="not an SRCNN model"):
        other = tmp_path / "other.mat"
        scipy.io.savemat(other, {"weights_conv1": np.zeros((81, 64))})
        weights.import_srcnn_mat(other)
    with pytest.raises(ValueError, match="not a MATLAB v7.3 / HDF5"):
        weights.import_3dsrnet_mat(srcnn)
    with pytest.raises(ValueError, match="not a MatConvNet"):
        weights.import_3dsrnet_mat(keras)
    with pytest.raises(ValueError, match="not an HDF5"):
        weights.import_keras_h5(srcnn)
    with pytest.raises(ValueError, match="not a Keras"):
        weights.import_keras_h5(d3)
    with pytest.raises(FileNotFoundError):
        weights.import_srcnn_mat(tmp_path / "missing.mat")


@pytest.mark.data
def test_imported_weights_round_trip_through_safetensors(tmp_path):
    p = weights.import_srcnn_mat(_need(WEIGHTS / "srcnn_official" / "9-1-5_91images" / "x3.mat"))
    path = tmp_path / "srcnn_915_x3.safetensors"
    weights.save(path, p, {"architecture": "SRCNN", "preset": "9-1-5", "scale": "3"})
    got, meta = weights.load(path, expected={k: v.shape for k, v in p.items()})
    assert meta["preset"] == "9-1-5"
    for k in p:
        np.testing.assert_array_equal(got[k], p[k])


# ---------------------------------------------------------------------------------------------------
# Independent NumPy forward passes
# ---------------------------------------------------------------------------------------------------

def _conv2d_same_replicate(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of x [H, W, Cin] with w [Cout, Cin, kh, kw], 'same' size, replicate borders."""
    cout, cin, kh, kw = w.shape
    h, wd, _ = x.shape
    xp = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="edge")
    if cin * kh * kw <= 256:  # small fan-in: one im2col matmul
        cols = np.empty((h, wd, kh, kw, cin), dtype=np.float32)
        for dy in range(kh):
            for dx in range(kw):
                cols[:, :, dy, dx] = xp[dy:dy + h, dx:dx + wd]
        out = cols.reshape(h * wd, -1) @ w.transpose(2, 3, 1, 0).reshape(-1, cout)
    else:  # large fan-in: one matmul per tap, no big im2col buffer
        out = np.zeros((h * wd, cout), dtype=np.float32)
        for dy in range(kh):
            for dx in range(kw):
                out += xp[dy:dy + h, dx:dx + wd].reshape(h * wd, cin) @ w[:, :, dy, dx].T
    return out.reshape(h, wd, cout) + b


def _srcnn_forward(p: dict, y: np.ndarray) -> np.ndarray:
    x = y[:, :, None].astype(np.float32)
    x = np.maximum(_conv2d_same_replicate(x, p["conv1.weight"], p["conv1.bias"]), 0)
    x = np.maximum(_conv2d_same_replicate(x, p["conv2.weight"], p["conv2.bias"]), 0)
    return _conv2d_same_replicate(x, p["conv3.weight"], p["conv3.bias"])[:, :, 0]


def _srcnn_set5(p: dict, scale: int) -> tuple[float, float]:
    """The SRCNN authors' protocol on Set5: mean PSNR (dB) of SRCNN and of bicubic."""
    files = sorted(_need(DATA / "Set5").glob("*.png"))
    assert len(files) == 5
    ours, bic = [], []
    for f in files:
        im = _read_png(f)
        y = image.rgb2y(im) if im.ndim == 3 else im  # uint8 Y of MATLAB rgb2ycbcr
        gnd = image.modcrop(y, scale).astype(np.float64) / 255.0
        low = image.imresize(gnd, 1.0 / scale)  # floating point, not uint8 mode
        up = image.imresize(low, scale)
        out = _srcnn_forward(p, up)
        gnd8 = image.to_uint8(gnd)
        ours.append(metrics.psnr(image.to_uint8(out), gnd8, crop_border=scale))
        bic.append(metrics.psnr(image.to_uint8(up), gnd8, crop_border=scale))
    return float(np.mean(ours)), float(np.mean(bic))


@pytest.mark.data
@pytest.mark.parametrize(
    "model,scale,published,bicubic",
    [("9-5-5_imagenet", 3, 32.75, 30.39), ("9-5-5_imagenet", 2, 36.66, 33.66), ("9-1-5_91images", 3, 32.39, 30.39)],
)
def test_srcnn_reproduces_published_set5_psnr(model, scale, published, bicubic):
    p = weights.import_srcnn_mat(_need(WEIGHTS / "srcnn_official" / model / f"x{scale}.mat"))
    ours, bic = _srcnn_set5(p, scale)
    assert abs(bic - bicubic) <= 0.02, bic
    assert abs(ours - published) <= 0.02, ours


def _conv3d_zero_pad(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad_d: int) -> np.ndarray:
    """Correlation of x [D, H, W, Cin] with w [Cout, Cin, 3, 3, 3]; zero padding 1 in H, W and pad_d in D."""
    d, h, wd, cin = x.shape
    xp = np.pad(x, ((pad_d, pad_d), (1, 1), (1, 1), (0, 0)))
    do = d + 2 * pad_d - 2
    out = np.zeros((do * h * wd, w.shape[0]), dtype=np.float32)
    for kd in range(3):
        for kh in range(3):
            for kw in range(3):
                out += xp[kd:kd + do, kh:kh + h, kw:kw + wd].reshape(-1, cin) @ w[:, :, kd, kh, kw].T
    return out.reshape(do, h, wd, -1) + b


def _3dsrnet_residual(p: dict, frames: np.ndarray, scale: int) -> np.ndarray:
    """5 LR frames [5, H, W] -> the HR residual [H*scale, W*scale] (PyTorch pixel_shuffle order)."""
    x = frames[..., None].astype(np.float32)
    for i in range(1, 7):
        x = _conv3d_zero_pad(x, p[f"conv{i}.weight"], p[f"conv{i}.bias"], 1 if i <= 4 else 0)
        if i < 6:
            x = np.maximum(x, 0)
    assert x.shape[0] == 1
    h, w, _ = x.shape[1:]
    return x[0].reshape(h, w, scale, scale).transpose(0, 2, 1, 3).reshape(h * scale, w * scale)


@pytest.mark.data
@pytest.mark.parametrize("seq,centre", [("calendar", 20), ("city", 17)])
def test_3dsrnet_beats_bicubic_and_srcnn_on_vid4(seq, centre):
    """The authors' protocol (float Y / 255, float LR, residual on bicubic, peak 1, unrounded), on a
    384 x 384 HR crop of one centre frame to keep the test fast. The full sequences give, with these
    weights: calendar 22.43 dB (bicubic 20.38), city 26.83 (25.17); the paper's Vid4 average is 25.72."""
    k = 4
    p = weights.import_3dsrnet_mat(_need(WEIGHTS / "3dsrnet_official" / f"x{k}.mat"))
    p_srcnn = weights.import_srcnn_mat(_need(WEIGHTS / "srcnn_official" / "9-5-5_imagenet" / f"x{k}.mat"))
    folder = _need(DATA / "Vid4_Y" / seq)
    hr = [image.modcrop(_read_png(folder / f"{i:03d}.png"), k).astype(np.float32) / 255
          for i in range(centre - 2, centre + 3)]
    lr = [image.imresize(f, 1.0 / k) for f in hr]
    r0, c0, n = 24, 40, 96  # LR crop; the HR crop is k times it
    window = np.stack([f[r0:r0 + n, c0:c0 + n] for f in lr])
    bic_full = image.imresize(lr[2], k)
    hr_sl = (slice(k * r0, k * (r0 + n)), slice(k * c0, k * (c0 + n)))
    gt, bic = hr[2][hr_sl], bic_full[hr_sl]
    out = bic + _3dsrnet_residual(p, window, k)
    srcnn = _srcnn_forward(p_srcnn, bic_full[k * r0 - 8:k * (r0 + n) + 8, k * c0 - 8:k * (c0 + n) + 8])[8:-8, 8:-8]
    psnr_3d = metrics.psnr(out, gt, round_uint8=False)
    psnr_srcnn = metrics.psnr(srcnn, gt, round_uint8=False)
    psnr_bic = metrics.psnr(bic, gt, round_uint8=False)
    print(f"{seq} frame {centre:03d} crop, x{k}: 3DSRnet {psnr_3d:.2f} dB, SRCNN {psnr_srcnn:.2f}, "
          f"bicubic {psnr_bic:.2f}")
    assert psnr_srcnn > psnr_bic, (psnr_srcnn, psnr_bic)
    assert psnr_3d > psnr_srcnn + 0.3, (psnr_3d, psnr_srcnn)
    assert psnr_3d > psnr_bic + 0.8, (psnr_3d, psnr_bic)


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from magmasr import weights

    old = os.umask(0o022)
    try:
        weights.save(tmp_path / "w.safetensors", {"a": np.zeros(3, np.float32)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "w.safetensors").st_mode) == 0o644  # not mkstemp's 0600


def test_write_text_atomic_writes_verbatim_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    """The text writer of the logs and result tables: bytes as given (CSV's \\r\\n kept), permissions as for a
    plain file, and a failed rename leaves the previous file and no temporary file behind."""
    import magmasr._files as files

    rng = np.random.default_rng()
    text = "a,b\r\n" + "".join(f"{v:.6f},é\r\n" for v in rng.random(int(rng.integers(1, 20))))
    path = tmp_path / "log.csv"
    files.write_text_atomic(path, text)
    assert path.read_bytes() == text.encode("utf-8")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        files.write_text_atomic(path, "other")
    assert path.read_bytes() == text.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_overwriting_keeps_the_mode_follows_links_and_takes_long_names(tmp_path):
    """As the C++ AtomicFile: an existing file keeps its permission bits (a private 0600 file stays private), a
    symbolic link stays a link to a replaced file, and a name near the file system's limit can be written (the
    temporary name beside it is shortened)."""
    import stat

    import magmasr._files as files

    private = tmp_path / "private.safetensors"
    weights.save(private, {"a": np.zeros(2)})
    os.chmod(private, 0o600)
    weights.save(private, {"a": np.ones(2)})
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    np.testing.assert_array_equal(weights.load(private)[0]["a"], [1, 1])

    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "m.safetensors"
    weights.save(real, {"a": np.zeros(2)})
    link = tmp_path / "link.safetensors"
    link.symlink_to(Path("real") / "m.safetensors")  # relative, as users make them
    weights.save(link, {"a": np.full(2, 7.0)})
    assert link.is_symlink()
    np.testing.assert_array_equal(weights.load(real)[0]["a"], [7, 7])
    files.write_text_atomic(tmp_path / "t.txt", "x")
    (tmp_path / "t-link.txt").symlink_to(tmp_path / "t.txt")
    files.write_text_atomic(tmp_path / "t-link.txt", "y")
    assert (tmp_path / "t-link.txt").is_symlink() and (tmp_path / "t.txt").read_text() == "y"

    long = tmp_path / ("w" * (os.pathconf(tmp_path, "PC_NAME_MAX") - len(".safetensors")) + ".safetensors")
    weights.save(long, {"a": np.zeros(1)})
    assert weights.load(long)[0]["a"].shape == (1,)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
