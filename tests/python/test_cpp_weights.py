"""The C++ weight-file reader and writer, the C++ bicubic table and the C++ SRCNN pipeline, cross-checked with
independent implementations: the ``safetensors`` package, ``magmasr.image.contributions`` and
``magmasr.sr.ImageSR.upscale``. The C++ functions are reached through the private ``magmasr._core`` bindings; the
end-to-end check also runs the built ``srcnn_example`` when one is found (``$MAGMASR_EXAMPLE``, or the one
``.ci/run`` builds in ``build/ci-example``)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from magmasr import _core, models
from magmasr.image import contributions
from magmasr.sr import SHIPPED, ImageSR

REPO = Path(__file__).resolve().parents[2]

# Metadata a careless writer would get wrong: quotes, backslashes, control characters, non-ASCII (2-, 3- and
# 4-byte UTF-8, so JSON \u escapes with surrogate pairs when a writer escapes them), an empty value.
TRICKY_META = {
    "architecture": "srcnn",
    'quote"and\\backslash': 'a "quoted" value with \\ and /',
    "controls": "tab\tnewline\ncarriage\rbell\x07nul-free\x1f",
    "été": "€ 😀 日本語 \u2028",
    "empty": "",
}


def random_state(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Random float32 tensors of rank 1..5, with the awkward values too (NaN payloads, infinities, -0,
    subnormals)."""
    out = {}
    for i in range(n):
        shape = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 6))))
        bits = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32)
        out[f"layer{i}.{rng.choice(['weight', 'bias'])}{i}"] = bits.view(np.float32)
    return out


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).view(np.uint32)


# ------------------------------------------------------------------------------------------- the reader
@pytest.mark.parametrize("seed", range(4))
def test_cpp_reads_files_of_the_safetensors_package_bit_for_bit(tmp_path, seed):
    rng = np.random.default_rng(seed)
    state = random_state(rng, int(rng.integers(1, 8)))
    path = tmp_path / "w.safetensors"
    save_file(state, str(path), metadata=TRICKY_META)
    tensors, meta = _core.load_safetensors(path)
    assert meta == TRICKY_META
    assert sorted(tensors) == sorted(state)
    for name, value in state.items():
        assert tensors[name].shape == value.shape
        np.testing.assert_array_equal(bits(tensors[name]), bits(value), err_msg=name)


def test_cpp_reads_files_without_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(path))
    tensors, meta = _core.load_safetensors(str(path))
    assert meta == {}
    np.testing.assert_array_equal(np.asarray(tensors["a"]), np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.safetensors")), ids=lambda p: p.name)
def test_every_shipped_weight_file_loads_in_cpp(path):
    tensors, meta = _core.load_safetensors(path)
    ref = load_file(str(path))
    with safe_open(str(path), "np") as f:
        assert meta == (f.metadata() or {})
    assert sorted(tensors) == sorted(ref) and ref
    for name, value in ref.items():
        np.testing.assert_array_equal(bits(tensors[name]), bits(value), err_msg=name)
    assert meta["architecture"] and int(meta["scale"]) >= 2


def test_shipped_srcnn_x3_layout():
    tensors, meta = _core.load_safetensors(SHIPPED / "srcnn_x3.safetensors")
    assert {k: v.shape for k, v in tensors.items()} == {
        "conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,), "conv2.weight": (32, 64, 5, 5), "conv2.bias": (32,),
        "conv3.weight": (1, 32, 5, 5), "conv3.bias": (1,)}
    assert (meta["architecture"], meta["arch_kwargs"], meta["scale"]) == ("srcnn", "f1=9,f2=5,f3=5,n1=64,n2=32", "3")


def test_cpp_reader_errors_map_to_python_exceptions(tmp_path):
    good = (SHIPPED / "srcnn_x3.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[:-10])  # the data section 10 bytes short
    with pytest.raises(ValueError, match="cut.safetensors.*run past the data section"):
        _core.load_safetensors(cut)
    half = tmp_path / "half.safetensors"
    half.write_bytes(good[:100])  # inside the header
    with pytest.raises(ValueError, match="half.safetensors: the header length .* runs past the end of the file"):
        _core.load_safetensors(half)
    f16 = tmp_path / "f16.safetensors"
    save_file({"w": np.ones(3, np.float16)}, str(f16))
    with pytest.raises(TypeError, match="'w'.*F16"):
        _core.load_safetensors(f16)
    with pytest.raises(FileNotFoundError, match="none.safetensors"):
        _core.load_safetensors(tmp_path / "none.safetensors")


# ------------------------------------------------------------------------------------------- the writer
@pytest.mark.parametrize("seed", range(4))
def test_files_written_by_cpp_read_by_the_safetensors_package(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    state = random_state(rng, int(rng.integers(1, 8)))
    path = tmp_path / "w.safetensors"
    _core.save_safetensors(path, state, TRICKY_META)
    ref = load_file(str(path))
    with safe_open(str(path), "np") as f:
        assert f.metadata() == TRICKY_META
    assert sorted(ref) == sorted(state)
    for name, value in state.items():
        assert ref[name].dtype == np.float32 and ref[name].shape == value.shape
        np.testing.assert_array_equal(bits(ref[name]), bits(value), err_msg=name)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


def test_cpp_writer_refuses_bad_names_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "w.safetensors"
    _core.save_safetensors(path, {"a": np.ones(2, np.float32)})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="invalid tensor name"):
        _core.save_safetensors(path, {"__metadata__": np.ones(2, np.float32)})
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------- state dicts
def test_cpp_load_state_dict_strict_and_misshaped():
    net = models.srcnn(9, 1, 5, n1=8, n2=4)
    state = {k: np.asarray(v) for k, v in net._state_dict().items()}
    state.pop("conv2.bias")
    state["extra"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"missing \['conv2.bias'\], unexpected \['extra'\]"):
        net._load_state_dict(state)
    net._load_state_dict(state, strict=False)
    state["conv1.weight"] = np.zeros((8, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(conv1.weight, expected \[8, 1, 9, 9\], got \[8, 1, 3, 3\]\)"):
        net._load_state_dict(state, strict=False)


# ------------------------------------------------------------------------------------------- the table
def random_resizes(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    fixed = [(1, 3, 3.0), (2, 1, 0.5), (17, 51, 3.0), (64, 32, 0.5), (50, 55, 1.1), (300, 100, 1 / 3), (7, 7, 1.0),
             (9, 2, 0.2), (256, 2, 1 / 128), (10, 40, 4.0)]
    for in_len, out_len, scale in fixed:
        yield in_len, out_len, scale
    for _ in range(n):
        in_len = int(rng.integers(1, 400))
        scale = float(rng.choice([rng.uniform(0.03, 1.0), rng.uniform(1.0, 6.0), rng.integers(2, 5),
                                  1 / rng.integers(2, 5)]))
        yield in_len, max(1, int(np.ceil(in_len * scale))), scale


def test_cpp_bicubic_table_equals_contributions_bit_for_bit():
    for in_len, out_len, scale in random_resizes(400):
        w, idx = _core.ops.bicubic_contributions(in_len, out_len, scale)
        w_ref, idx_ref = contributions(in_len, out_len, scale)
        case = f"in_len={in_len}, out_len={out_len}, scale={scale!r}"
        assert w.shape == w_ref.shape, case
        # Every bit of every weight (zeros may differ in sign only: NumPy adds a masked-out term, a signed zero).
        assert np.array_equal(w == 0, w_ref == 0), case
        assert np.array_equal(w[w != 0].view(np.uint64), w_ref[w_ref != 0].view(np.uint64)), case
        np.testing.assert_array_equal(idx, idx_ref, err_msg=case)


def test_cpp_bicubic_table_object_and_errors():
    t = _core.ops.bicubic_table(20, 60, 3.0)
    w, idx = contributions(20, 60, 3.0)
    assert (t.in_len, t.out_len, t.taps) == (20, 60, w.shape[1])
    np.testing.assert_array_equal(t.weights, w)
    np.testing.assert_array_equal(t.indices, idx)
    with pytest.raises(ValueError, match="scale must be positive"):
        _core.ops.bicubic_contributions(4, 4, 0.0)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        _core.ops.bicubic_contributions(0, 4, 1.0)


# ---------------------------------------------------------------------------------- the whole pipeline
def gray_picture(h: int = 40, w: int = 48) -> np.ndarray:
    """A natural gray picture (scikit-image's camera man, the part with the face and the camera)."""
    from skimage import data

    return np.ascontiguousarray(data.camera()[80:80 + h, 200:200 + w])


def cpp_upscale(weights: Path, img: np.ndarray) -> np.ndarray:
    """srcnn_example's pipeline with every step in C++ (reader, load_state_dict, bicubic table, resampling,
    network): pixels / 255 in float32, rows then columns, clip, x 255 rounded half away from zero."""
    tensors, meta = _core.load_safetensors(weights)
    kwargs = {k: int(v) for k, v in (item.split("=") for item in meta["arch_kwargs"].split(","))}
    scale = int(meta["scale"])
    net = models.srcnn(**kwargs)
    net._load_state_dict(tensors)
    h, w = img.shape
    x = _core.from_numpy(np.ascontiguousarray((img.astype(np.float32) / np.float32(255))[None, None]))
    x = _core.ops.resample_axis(x, -2, _core.ops.bicubic_table(h, h * scale, float(scale)))
    x = _core.ops.resample_axis(x, -1, _core.ops.bicubic_table(w, w * scale, float(scale)))
    y = np.clip(np.asarray(net(x).numpy(), dtype=np.float64)[0, 0], 0.0, 1.0) * 255.0
    return np.floor(y + 0.5).astype(np.uint8)


def assert_same_picture(out: np.ndarray, ref: np.ndarray) -> None:
    """Equal, but for at most 0.1% of the pixels one grey level apart: for the float32 route through the C++ ops
    (Python resizes float64 pixels / 255 and keeps the row pass in float64; ops::resample_axis resizes float32
    pixels / 255 and rounds the row pass to float32), and for a network run on a GPU (other summation orders),
    either of which moves a few outputs across a rounding boundary x.5 / 255."""
    assert out.shape == ref.shape and out.dtype == ref.dtype == np.uint8
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels"
    assert np.count_nonzero(diff) <= 0.001 * diff.size, f"{np.count_nonzero(diff)} of {diff.size} pixels differ"


def test_cpp_pipeline_equals_imagesr_upscale():
    weights = SHIPPED / "srcnn_x3.safetensors"
    img = gray_picture()
    ref = ImageSR.load(weights).upscale(img)
    out = cpp_upscale(weights, img)
    assert_same_picture(out, ref)
    # ... and the network matters: plain bicubic is far from it.
    from magmasr.image import imresize

    assert np.abs(imresize(img, 3).astype(int) - ref.astype(int)).max() > 5


@pytest.mark.parametrize("name", ["srcnn_x2", "srcnn_x3", "srcnn_x4", "srcnn_915_x3"])
def test_cpp_srcnn_model_is_imagesr_upscale_bit_for_bit(name):
    """magmasr::SrcnnModel (the C++ library's whole pipeline: colour, bicubic and clipping in double, the
    network in float32) gives the Python package's pictures exactly, gray and RGB, with and without an alpha
    channel, at the model's scale and another one."""
    weights = SHIPPED / f"{name}.safetensors"
    if not weights.exists():
        pytest.skip(f"{weights.name} does not ship")
    from skimage import data

    rng = np.random.default_rng()
    model = ImageSR.load(weights)
    r0, c0, h, w = (int(v) for v in rng.integers([0, 0, 8, 8], [400, 400, 50, 50]))
    pictures = [gray_picture(int(rng.integers(20, 60)), int(rng.integers(20, 60))),
                np.ascontiguousarray(data.astronaut()[r0:r0 + h, c0:c0 + w]),
                rng.integers(0, 256, (int(rng.integers(1, 12)), int(rng.integers(1, 12)), 3), dtype=np.uint8)]
    pictures += [rng.integers(0, 256, (int(rng.integers(1, 30)), int(rng.integers(1, 30)), c), dtype=np.uint8)
                 for c in (2, 4)]  # gray + alpha, RGBA
    for img in pictures[-2:]:  # with transparent areas, whose colour both spread from the visible pixels
        img[:int(rng.integers(0, img.shape[0] + 1)), :int(rng.integers(0, img.shape[1] + 1)), -1] = 0
    for img in pictures:
        for scale in (0, 2, 1):
            got = _core._srcnn_upscale(weights, img, scale)
            want = model.upscale(img, scale or None)
            assert got.shape == want.shape and got.dtype == np.uint8
            np.testing.assert_array_equal(got, want, err_msg=f"{img.shape} x{scale or model.scale}")
    # In tiles (bounded memory): the same pixels.
    for img in (pictures[1], np.dstack([pictures[1], rng.integers(0, 256, pictures[1].shape[:2], dtype=np.uint8)])):
        want = model.upscale(img)
        for tile in (7, 16, int(rng.integers(20, 200))):
            np.testing.assert_array_equal(_core._srcnn_upscale(weights, img, tile=tile), want,
                                          err_msg=f"tile {tile}, {img.shape}")


def test_cpp_srcnn_model_refuses_bad_input(tmp_path):
    weights = SHIPPED / "srcnn_x3.safetensors"
    with pytest.raises(ValueError, match="H x W x C \\(C = 1 to 4\\)"):
        _core._srcnn_upscale(weights, np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="scale 17 is not in 1..16"):
        _core._srcnn_upscale(weights, np.zeros((4, 4), np.uint8), 17)
    with pytest.raises(ValueError, match="tile must be >= 0"):
        _core._srcnn_upscale(weights, np.zeros((4, 4), np.uint8), tile=-1)
    with pytest.raises(ValueError, match="empty picture"):
        _core._srcnn_upscale(weights, np.zeros((0, 4), np.uint8))
    other = tmp_path / "video.safetensors"
    from magmasr.video import VideoSR

    VideoSR.tdsrnet(2, filters=2).save(other)
    with pytest.raises(ValueError, match="architecture 'tdsrnet' is not 'srcnn'"):
        _core._srcnn_upscale(other, np.zeros((4, 4), np.uint8))
    with pytest.raises(OSError):
        _core._srcnn_upscale(tmp_path / "missing.safetensors", np.zeros((4, 4), np.uint8))


def write_pnm(path: Path, img: np.ndarray) -> None:
    """A binary PGM (gray) or PPM (RGB), with a comment in its header."""
    magic = b"P6" if img.ndim == 3 else b"P5"
    path.write_bytes(magic + b"\n# a comment\n%d %d\n255\n" % (img.shape[1], img.shape[0]) + img.tobytes())


def read_pnm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, w, h, maxval, rest = data.split(maxsplit=4)
    assert magic in (b"P5", b"P6") and maxval == b"255"
    return np.frombuffer(rest, np.uint8).reshape((int(h), int(w)) + ((3,) if magic == b"P6" else ()))


def example_binary() -> Path | None:
    env = os.environ.get("MAGMASR_EXAMPLE")
    for candidate in ([Path(env)] if env else []) + [REPO / "build/ci-example/srcnn_example"]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.skipif(example_binary() is None,
                    reason="no built srcnn_example ($MAGMASR_EXAMPLE or build/ci-example/, built by .ci/run)")
def test_srcnn_example_binary_equals_imagesr_upscale(tmp_path):
    from skimage import data

    weights = SHIPPED / "srcnn_x3.safetensors"
    for img, ext in ((gray_picture(), "pgm"), (np.ascontiguousarray(data.astronaut()[90:130, 200:250]), "ppm")):
        src, dst = tmp_path / f"in.{ext}", tmp_path / f"out.{ext}"
        write_pnm(src, img)
        run = subprocess.run([str(example_binary()), str(weights), str(src), str(dst)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        out = read_pnm(dst)
        # On the CPU, the Python package's pixels exactly: the same kernels, the same sums in the same order (the
        # micro-kernels are chosen by the processor, the same one for both builds here).
        if "(x3, cpu)" in run.stdout:
            np.testing.assert_array_equal(out, ImageSR.load(weights).upscale(img))
        else:
            assert_same_picture(out, ImageSR.load(weights).upscale(img))
    # A bad weight file: a clear error, exit status 1, no output written.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(weights.read_bytes()[:50])
    run = subprocess.run([str(example_binary()), str(bad), str(tmp_path / "in.ppm"), str(tmp_path / "x.pgm")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "bad.safetensors" in run.stderr and not (tmp_path / "x.pgm").exists()
