"""The magmasr command line, run in-process through magmasr.cli.main."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import magmasr
from magmasr import cli, image as im, metrics, models
from magmasr.sr import ImageSR


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def test_default_picture_writes_result_and_comparison(tmp_path, capsys):
    out = tmp_path / "astro.png"
    assert run("upscale", "--model", "bicubic", "--scale", "2", "-o", out, "--device", "cpu") == 0
    res, cmp_ = iio.imread(out), iio.imread(tmp_path / "astro_comparison.png")
    assert res.shape == (512, 512, 3) and res.dtype == np.uint8
    assert cmp_.shape == (192, 3 * 192 + 8, 3)
    assert "PSNR" in capsys.readouterr().err
    # An existing output is kept unless --overwrite.
    before = out.read_bytes()
    assert run("upscale", "--model", "bicubic", "--scale", "2", "-o", out, "--device", "cpu") == 2
    assert out.read_bytes() == before
    assert run("upscale", "--model", "bicubic", "--scale", "2", "-o", out, "--device", "cpu", "--overwrite") == 0


def test_image_and_folder_inputs_with_trained_weights(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "pics"
    folder.mkdir()
    iio.imwrite(folder / "a.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    iio.imwrite(folder / "b.png", rng.integers(0, 256, (18, 16), dtype=np.uint8))
    iio.imwrite(folder / "c.tif", rng.integers(0, 65536, (10, 12), dtype=np.uint16))
    weights = tmp_path / "m.safetensors"
    ImageSR.srcnn("9-1-5", scale=2).save(weights)
    assert run("upscale", folder, "-o", tmp_path / "out", "--scale", "2", "--weights", weights, "--device", "cpu") == 0
    assert iio.imread(tmp_path / "out" / "a.png").shape == (40, 48, 3)
    assert iio.imread(tmp_path / "out" / "b.png").shape == (36, 32)
    c = iio.imread(tmp_path / "out" / "c.png")
    assert c.shape == (20, 24) and c.dtype == np.uint16  # 16-bit stays 16-bit
    single = tmp_path / "single.png"
    assert run("upscale", folder / "a.png", "-o", single, "--scale", "2", "--weights", weights, "--device",
               "cpu") == 0
    np.testing.assert_array_equal(iio.imread(single), iio.imread(tmp_path / "out" / "a.png"))


@pytest.mark.parametrize("args,message", [
    (["upscale", "/nonexistent.png", "--model", "bicubic"], "no such file"),
    (["upscale", "{tmp}/notes.txt", "--model", "bicubic"], "unsupported format"),
    (["upscale", "{tmp}/broken.png", "--model", "bicubic"], "cannot read"),
    (["upscale", "--model", "bicubic", "-o", "{tmp}/missing_dir/x.png"], "no such folder"),
    (["upscale", "--model", "bicubic", "-o", "{tmp}/x.xyz"], "unsupported output format"),
    (["upscale", "--weights", "{tmp}/none.safetensors"], "no such file"),
    (["upscale", "--weights", "{tmp}/notes.txt", "-o", "{tmp}/y.png"], "cannot load"),
    (["upscale", "--device", "cuda", "--model", "bicubic"], "no usable CUDA GPU"),
    (["upscale", "--model", "bicubic", "--tile", "0", "-o", "{tmp}/z.png"], "--tile must be at least 1"),
    (["upscale", "{tmp}/empty.png", "--model", "bicubic"], "the file is empty"),
    (["upscale", "{tmp}/notes.png", "--model", "bicubic"], "not a valid PNG file"),
    (["upscale", "{tmp}/rgb16.tif", "--model", "bicubic", "-o", "{tmp}/r.png"], "cannot hold the 16-bit RGB"),
    (["upscale", "{tmp}/rgb16.tif", "--model", "bicubic", "-o", "{tmp}/r.jpg"], "cannot hold the 16-bit RGB"),
    (["upscale", "{tmp}/nan.tif", "--model", "bicubic"], "NaN or infinite"),
    (["upscale", "{tmp}/pics", "--model", "bicubic", "-o", "{tmp}/done"], "exists; pass --overwrite"),
    (["upscale", "{tmp}/twins", "--model", "bicubic"], "outputs would collide"),
])
def test_clear_errors_and_no_partial_outputs(tmp_path, capsys, args, message):
    rng = np.random.default_rng()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "notes.png").write_text("not an image either")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    iio.imwrite(tmp_path / "rgb16.tif", rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16))
    iio.imwrite(tmp_path / "nan.tif", np.where(rng.random((6, 7)) < 0.5, np.nan, 1.0).astype(np.float32))
    for d in ("pics", "done", "twins"):
        (tmp_path / d).mkdir()
    for name in ("a.png", "b.png"):  # done/b.png exists: nothing may be computed or written, a.png included
        iio.imwrite(tmp_path / "pics" / name, rng.integers(0, 256, (6, 7), dtype=np.uint8))
    iio.imwrite(tmp_path / "done" / "b.png", rng.integers(0, 256, (12, 14), dtype=np.uint8))
    iio.imwrite(tmp_path / "twins" / "a.png", rng.integers(0, 256, (6, 7), dtype=np.uint8))
    iio.imwrite(tmp_path / "twins" / "a.bmp", rng.integers(0, 256, (6, 7, 3), dtype=np.uint8))
    if "cuda" in args and __import__("magmasr").cuda_available():
        pytest.skip("a GPU is present")
    before = set(tmp_path.rglob("*"))
    assert run(*[a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2  # the banner line at most, then a one-line error
    assert set(tmp_path.rglob("*")) == before  # nothing half-written left behind


def test_output_can_be_an_existing_folder(tmp_path):
    """-o naming an existing folder puts the default file name there, for a picture and for a video; the input's
    own folder is left alone."""
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    img = np.random.default_rng().integers(0, 256, (12, 14, 3), dtype=np.uint8)
    iio.imwrite(src_dir / "p.png", img)
    assert run("upscale", src_dir / "p.png", "-o", out_dir, "--model", "bicubic", "--scale", "2", "--device",
               "cpu") == 0
    np.testing.assert_array_equal(iio.imread(out_dir / "p_x2.png"), im.imresize(img, 2))
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    writer = imageio_ffmpeg.write_frames(str(src_dir / "v.mp4"), (14, 12), fps=5, macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for _ in range(3):
        writer.send(np.ascontiguousarray(img))
    writer.close()
    assert run("upscale", src_dir / "v.mp4", "-o", out_dir, "--model", "bicubic", "--scale", "2", "--device",
               "cpu") == 0
    assert next(imageio_ffmpeg.read_frames(str(out_dir / "v_x2.mp4")))["size"] == (28, 24)
    assert sorted(p.name for p in src_dir.iterdir()) == ["p.png", "v.mp4"]


def test_scientific_pixel_types_keep_their_units_and_dtype(tmp_path):
    """Floating-point and 32-bit integer pictures (astronomy, microscopy) go through the network mapped onto
    [0, 1] by their minimum and maximum and come back in their own units and dtype, as TIFF. Independent check:
    a float picture that is an affine image of an 8-bit one (with 0 and 255 in it) upscales to the same affine
    image of the 8-bit result, up to the 8-bit result's rounding."""
    rng = np.random.default_rng()
    u8 = rng.integers(0, 256, (14, 17), dtype=np.uint8)
    u8[0, 0], u8[-1, -1] = 0, 255
    gain, offset = float(rng.uniform(0.5, 40.0)), float(rng.uniform(-500.0, 500.0))
    iio.imwrite(tmp_path / "u8.png", u8)
    iio.imwrite(tmp_path / "sky.tif", (u8 * gain + offset).astype(np.float32))
    iio.imwrite(tmp_path / "counts.tif", (u8.astype(np.int32) * 1000 - 70000))
    for name in ("u8.png", "sky.tif", "counts.tif"):  # the shipped SRCNN 9-1-5 x2
        assert run("upscale", tmp_path / name, "--scale", "2", "--arch", "9-1-5", "--device", "cpu") == 0
    ref = iio.imread(tmp_path / "u8_x2.png").astype(np.float64)
    sky = iio.imread(tmp_path / "sky_x2.tif")  # float pixels cannot go to PNG: the default name is .tif
    assert sky.dtype == np.float32 and sky.shape == (28, 34)
    np.testing.assert_allclose((sky - offset) / gain, ref, atol=0.5 + 1e-3)
    assert np.abs((sky - offset) / gain - ref).max() > 1e-3  # not rounded to 8-bit steps on the way
    counts = iio.imread(tmp_path / "counts_x2.tif")
    assert counts.dtype == np.int32
    np.testing.assert_allclose((counts + 70000) / 1000, ref, atol=0.5 + 1e-3)
    rgb16 = tmp_path / "rgb16.tif"
    iio.imwrite(rgb16, rng.integers(0, 65536, (9, 8, 3), dtype=np.uint16))
    assert run("upscale", rgb16, "--scale", "2", "--model", "bicubic", "--device", "cpu") == 0
    out = iio.imread(tmp_path / "rgb16_x2.tif")  # 16-bit RGB: PNG cannot hold it, so TIFF
    assert out.dtype == np.uint16 and out.shape == (18, 16, 3)
    expected = np.round(np.clip(im.imresize(iio.imread(rgb16) / 65535.0, 2), 0, 1) * 65535)
    np.testing.assert_array_equal(out, expected)


def test_training_refuses_outputs_it_could_not_write_before_any_work(tmp_path, capsys, monkeypatch):
    """A training run can take hours: an output it cannot write, or one that exists without --overwrite, is
    refused before the data is read, not after the last step."""
    from magmasr import train

    folder = tmp_path / "pics"
    folder.mkdir()
    iio.imwrite(folder / "a.png", np.random.default_rng().integers(0, 256, (60, 60), dtype=np.uint8))
    (tmp_path / "old.safetensors").write_bytes(b"keep me")

    def no_data(*a, **k):
        raise AssertionError("the data was read before the output was checked")

    monkeypatch.setattr(train.PatchDataset, "from_folder", no_data)
    monkeypatch.setattr(train.PatchDataset, "from_images", no_data)
    base = ["train", folder, "--arch", "9-1-5", "--steps", "1", "--batch", "4", "--device", "cpu"]
    for extra, message in [(["-o", tmp_path / "nowhere" / "m.safetensors"], "no such folder"),
                           (["-o", tmp_path / "pics"], "a folder; the trained model is a file"),
                           (["-o", tmp_path / "old.safetensors"], "exists; pass --overwrite"),
                           (["-o", tmp_path / "m.safetensors", "--checkpoint", tmp_path / "no" / "ck"], "no such folder"),
                           (["-o", tmp_path / "m.safetensors", "--log", tmp_path / "no" / "log.csv"], "no such folder")]:
        assert run(*base, *extra) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "old.safetensors").read_bytes() == b"keep me"
    monkeypatch.undo()
    assert run(*base, "-o", tmp_path / "old.safetensors", "--overwrite") == 0
    assert ImageSR.load(tmp_path / "old.safetensors").metadata["steps"] == "1"


def test_eval_refuses_pictures_too_small_to_score(tmp_path, capsys):
    folder = tmp_path / "small"
    folder.mkdir()
    iio.imwrite(folder / "ok.png", np.random.default_rng().integers(0, 256, (40, 40), dtype=np.uint8))
    iio.imwrite(folder / "tiny.png", np.random.default_rng().integers(0, 256, (16, 40), dtype=np.uint8))
    assert run("eval", folder, "--model", "bicubic", "--scale", "3", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "tiny.png: 39x15 pixels" in err and "at least 17x17" in err  # 3 shaved on each side + an 11x11 window
    assert run("eval", folder, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 0  # 16 >= 2 * 2 + 11


@pytest.mark.parametrize("size", ["10x", "0x5", "axb", "5x5x5"])
def test_bench_size_must_be_two_positive_integers(size, capsys):
    with pytest.raises(SystemExit) as e:
        run("bench", "--size", size)
    assert e.value.code == 2 and "expected HxW" in capsys.readouterr().err


def test_bench_times_what_upscale_runs(capsys):
    """`magmasr bench` on the CPU times the network as `upscale` runs it (Winograd's layers), or with --algo the
    strategy named; it says which."""
    assert run("bench", "--size", "24x32", "--device", "cpu", "--warmup", "0", "--repeat", "1") == 0
    out = capsys.readouterr().out
    assert re.search(r"SRCNN 9-5-5 inference 24x32 on cpu \(winograd\): median [0-9.]+ ms over 1 runs", out), out
    assert run("bench", "--size", "24x32", "--device", "cpu", "--repeat", "1", "--algo", "auto") == 0
    assert "on cpu (auto)" in capsys.readouterr().out


def test_bench_times_3dsrnet_on_a_window(capsys):
    """`magmasr bench --model 3dsrnet` times the network on a 5-frame window (published or poster, any scale), its
    TFLOP/s counted from the multiply-adds of the direct sums, here checked against the layer table written out:
    the published network's conv1-4 keep 5 frames, conv5 and conv6 are unpadded in depth (3, then 1 frame); the
    poster's conv4 and conv5 are unpadded in all three axes, its head a 3x3 2-D layer with scale^2 outputs."""
    from magmasr import cli
    from magmasr._core import from_numpy
    from magmasr.models import srcnn_preset
    from magmasr.video import VideoSR

    assert run("bench", "--model", "3dsrnet", "--size", "10x12", "--device", "cpu", "--warmup", "0",
               "--repeat", "1") == 0
    out = capsys.readouterr().out
    assert re.search(r"3DSRnet published x4 inference, a 5-frame window of 10x12, on cpu \(winograd\): median "
                     r"[0-9.]+ ms over 1 runs", out), out
    assert run("bench", "--model", "3dsrnet", "--arch", "poster", "--scale", "2", "--size", "10x12", "--device",
               "cpu", "--warmup", "0", "--repeat", "1", "--algo", "direct") == 0
    assert "3DSRnet poster x2 inference, a 5-frame window of 10x12, on cpu (direct)" in capsys.readouterr().out
    assert run("bench", "--model", "3dsrnet", "--arch", "9-5-5", "--device", "cpu") == 2
    assert "--arch of 3dsrnet: one of poster, published, got '9-5-5'" in capsys.readouterr().err
    assert run("bench", "--arch", "poster", "--device", "cpu") == 2
    assert "--arch of srcnn: one of 9-1-5, 9-3-5, 9-5-5, got 'poster'" in capsys.readouterr().err
    h, w = 13, 17
    window = from_numpy(np.zeros((1, 1, 5, h, w), np.float32))
    f, k = 64, 27
    assert cli.network_macs(VideoSR.tdsrnet(4).net, window) == h * w * k * (5 * f + 3 * 5 * f * f + 3 * f * f + 16 * f)
    f = 32
    poster = (5 * h * w * k * (f + 2 * f * f) + 3 * (h - 2) * (w - 2) * k * f * f
              + (h - 4) * (w - 4) * (k * f * f + 9 * f * 4))
    assert cli.network_macs(VideoSR.tdsrnet_poster(2).net, window) == poster
    picture = from_numpy(np.zeros((1, 1, h, w), np.float32))
    assert cli.network_macs(srcnn_preset("9-5-5"), picture) == h * w * (81 * 64 + 25 * 64 * 32 + 25 * 32)


def test_bench_times_a_training_step(capsys):
    """`magmasr bench --train` times forward, backward and an Adam update on what `magmasr train` feeds the
    network (SRCNN: 'valid' sub-images; 3DSRnet: 5-frame clips), Winograd's passes on the CPU, and says the rate;
    --size belongs to inference, --batch / --patch to --train, and a patch the network cannot take is refused."""
    quick = ["--device", "cpu", "--warmup", "0", "--repeat", "1"]
    assert run("bench", "--train", "--batch", "3", "--patch", "21", *quick) == 0
    out = capsys.readouterr().out
    assert re.search(r"SRCNN 9-5-5 training step, 3 sub-images of 21x21, on cpu \(winograd\): median [0-9.]+ ms "
                     r"over 1 runs, [0-9]+ sub-images/s", out), out
    assert run("bench", "--train", "--model", "3dsrnet", "--arch", "poster", "--scale", "2", "--batch", "2",
               "--patch", "10", *quick, "--algo", "direct") == 0
    out = capsys.readouterr().out
    assert re.search(r"3DSRnet poster x2 training step, 2 clips of 5x10x10, on cpu \(direct\): median [0-9.]+ ms "
                     r"over 1 runs, [0-9]+ clips/s", out), out
    for args, message in ((["--train", "--size", "20x20"], "--size is the picture or frame size of inference"),
                          (["--batch", "4"], "--batch and --patch go with --train"),
                          (["--train", "--batch", "0"], "--batch must be at least 1, got 0"),
                          (["--train", "--patch", "12"], "--patch 12: too small for the network")):
        assert run("bench", *args, *quick) == 2
        assert message in capsys.readouterr().err, args


def test_eval_prints_the_table(shared_dir, capsys):
    assert run("eval", shared_dir / "data" / "Set5", "--model", "bicubic", "--scale", "3", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "| baby |" in out and "mean" in out
    mean_line = [line for line in out.splitlines() if "mean" in line][0]
    assert abs(float(mean_line.split("|")[2]) - 30.39) <= 0.01  # bicubic x3, Set5, the published figure


def test_train_then_finetune_produce_loadable_models(tmp_path):
    from skimage import data

    folder = tmp_path / "train"
    folder.mkdir()
    iio.imwrite(folder / "cam.png", data.camera()[:120, :120])
    model = tmp_path / "m.safetensors"
    assert run("train", folder, "--arch", "9-1-5", "--scale", "3", "--steps", "3", "--batch", "8", "--device", "cpu",
               "-o", model) == 0
    loaded = ImageSR.load(model)
    assert loaded.scale == 3 and loaded.metadata["recipe"] == "scratch" and "magmasr train" in loaded.metadata["command"]
    assert "downscales" not in loaded.metadata
    aug = tmp_path / "aug.safetensors"
    assert run("train", folder, "--arch", "9-1-5", "--scale", "3", "--steps", "1", "--batch", "8", "--device", "cpu",
               "--downscales", "1,0.75", "-o", aug) == 0
    assert ImageSR.load(aug).metadata["downscales"] == "1,0.75"
    for bad in ("1,x", "1,1", "0", "1.2"):
        with pytest.raises(SystemExit) as e:
            run("train", folder, "--downscales", bad, "-o", tmp_path / "bad.safetensors")
        assert e.value.code == 2
    assert not (tmp_path / "bad.safetensors").exists()
    tuned = tmp_path / "t.safetensors"
    assert run("finetune", model, folder, "--recipe", "transfer_12", "--scale", "3", "--steps", "2", "--batch", "8",
               "--device", "cpu", "-o", tuned) == 0
    a, b = ImageSR.load(model).net.state_dict(), ImageSR.load(tuned).net.state_dict()
    np.testing.assert_array_equal(a["conv1.weight"], b["conv1.weight"])  # kept (frozen)
    assert not np.array_equal(a["conv3.weight"], b["conv3.weight"])      # retrained


def test_train_3dsrnet_on_synthetic_and_real_clips_then_resume(tmp_path, capsys):
    """3DSRnet trains from the command line on clips made from still images (simulated camera motion) and from
    a folder of frames; an interrupted run resumes from its checkpoint to the same weights; options of the
    other model are refused."""
    from skimage import data

    from magmasr.video import VideoSR

    stills, frames = tmp_path / "stills", tmp_path / "frames"
    stills.mkdir()
    frames.mkdir()
    iio.imwrite(stills / "cam.png", data.camera()[:160, :160])
    for t in range(6):  # a pan over the coins picture, 2 pixels a frame
        iio.imwrite(frames / f"{t:03d}.png", data.coins()[:64, 2 * t:2 * t + 64])
    common = ["--model", "3dsrnet", "--scale", "2", "--patch", "8", "--clips-per-image", "3", "--filters", "4",
              "--video", frames, "--batch", "4", "--lr", "1e-3", "--lr-schedule", "constant", "--seed", "2", "--device", "cpu"]
    whole = tmp_path / "whole.safetensors"
    assert run("train", stills, *common, "--steps", "6", "-o", whole) == 0
    model = VideoSR.load(whole)
    assert model.scale == 2 and model.arch.kwargs["filters"] == 4
    assert model.metadata["recipe"] == "3dsrnet_synthetic_clips_and_video" and str(frames) in model.metadata["data"]
    assert "clips of 5x8x8 LR frames" in capsys.readouterr().err
    # 3 synthetic clips + 2 windows x 16 patches of the 32x32 LR pan = 35 clips, 2 (5%) kept for validation.
    ck = tmp_path / "ck.safetensors"  # a run of 3 steps stands for one cut after 3 (constant rate: same schedule)
    assert run("train", stills, *common, "--steps", "3", "--checkpoint", ck, "-o", tmp_path / "half.safetensors") == 0
    resumed = tmp_path / "resumed.safetensors"
    assert run("train", stills, *common, "--steps", "6", "--checkpoint", ck, "-o", resumed) == 0
    a, b = VideoSR.load(whole).net.state_dict(), VideoSR.load(resumed).net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Fine-tuning starts from the trained weights (not from scratch) and keeps the architecture.
    tuned = tmp_path / "tuned.safetensors"
    ft = common[2:]  # the architecture comes from the weights: no --model, no --filters
    i = ft.index("--filters")
    ft = ft[:i] + ft[i + 2:]
    assert run("finetune", whole, stills, *ft, "--steps", "2", "--lr", "1e-4", "-o", tuned) == 0
    t = VideoSR.load(tuned)
    assert t.arch == model.arch and t.metadata["recipe"] == "3dsrnet_finetune_all_synthetic_clips_and_video"
    assert t.metadata["finetuned_from"] == whole.name and t.metadata["steps"] == "2"
    start, after = VideoSR.load(whole).net.state_dict(), t.net.state_dict()
    # Two Adam steps of 1e-4: the first moves a weight by lr, the second by at most
    # lr * sqrt(a^2/c + b^2/d) = 1.0014 lr (a, b, c, d: the bias-corrected moment weights of the two gradients).
    for k in start:
        assert 0 < np.abs(after[k] - start[k]).max() <= 2.0015e-4, k
    # Another scale from this one: conv1..conv5 carried over (one Adam step of 1e-6 from them), conv6 new.
    x3 = tmp_path / "x3.safetensors"
    ft3 = list(common)
    ft3[ft3.index("--scale") + 1] = "3"
    capsys.readouterr()
    assert run("train", stills, *ft3, "--init-from", whole, "--steps", "1", "--lr", "1e-6", "-o", x3) == 0
    assert f"conv1, conv2, conv3, conv4, conv5 start from {whole}; conv6 from scratch" in capsys.readouterr().err
    # the same scale: every layer carried over
    assert run("train", stills, *ft3, "--init-from", x3, "--steps", "1", "-o", tmp_path / "again.safetensors") == 0
    assert "conv6 start from" in (err := capsys.readouterr().err) and "no layer from scratch" in err
    m3 = VideoSR.load(x3)
    assert m3.scale == 3 and m3.metadata["init_from"] == f"{whole.name}: conv1, conv2, conv3, conv4, conv5"
    s3 = m3.net.state_dict()
    for k in start:
        if k.startswith("conv6"):
            assert s3[k].shape[0] == 9 and start[k].shape[0] == 4
        else:
            assert np.abs(s3[k] - start[k]).max() <= 1.01e-6, k
    capsys.readouterr()
    assert run("train", stills, *common, "--filters", "8", "--init-from", whole, "-o", tmp_path / "x.safetensors") == 2
    assert "no layer of it has the shapes" in capsys.readouterr().err
    assert run("finetune", whole, stills, *ft, "--recipe", "transfer_12", "-o", tmp_path / "x.safetensors") == 2
    assert "SRCNN recipe" in capsys.readouterr().err
    ft3 = list(ft)
    ft3[ft3.index("--scale") + 1] = "3"
    assert run("finetune", whole, stills, *ft3, "-o", tmp_path / "x.safetensors") == 2
    assert "is a x2 3DSRnet" in capsys.readouterr().err
    assert run("train", stills, *common, "--arch", "9-1-5", "-o", tmp_path / "x.safetensors") == 2
    assert "--arch 9-1-5: a 3DSRnet is published or poster" in capsys.readouterr().err
    assert run("train", stills, *common, "--nonlinear", "-o", tmp_path / "x.safetensors") == 2
    assert "--nonlinear is an SRCNN option" in capsys.readouterr().err
    assert run("train", stills, "--model", "3dsrnet", "--clips-per-image", "0", "-o", tmp_path / "x.safetensors") == 2
    assert "no training clips" in capsys.readouterr().err
    assert run("train", stills, *common, "--downscales", "1,0.8", "-o", tmp_path / "x.safetensors") == 2
    assert "--downscales is an SRCNN option" in capsys.readouterr().err
    for bad, message in ((["--val-fraction", "1"], "--val-fraction must be in [0, 1), got 1.0"),
                         (["--steps", "0"], "--steps must be at least 1, got 0")):
        for model_args in (["--model", "3dsrnet"], ["--arch", "9-1-5"]):
            assert run("train", stills, *model_args, *bad, "-o", tmp_path / "x.safetensors") == 2
            assert message in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_train_srcnn_955_grown_from_a_915(tmp_path, capsys):
    """`train --arch 9-5-5 --init-from a 9-1-5 file`: conv1 and conv3 copied, conv2's 1x1 the centre of the 5x5,
    so the whole-image model starts as the 9-1-5 (replicate borders: the same function everywhere); one step of
    a tiny rate keeps it there. The file says where it started."""
    from skimage import data

    folder = tmp_path / "imgs"
    folder.mkdir()
    iio.imwrite(folder / "cam.png", data.camera()[:96, :96])
    small = ImageSR.srcnn("9-1-5", 3, seed=4)
    src = tmp_path / "915.safetensors"
    small.save(src, recipe="test")
    out = tmp_path / "955.safetensors"
    assert run("train", folder, "--arch", "9-5-5", "--scale", "3", "--init-from", src, "--steps", "1", "--batch", "4",
               "--lr", "1e-9", "--val-fraction", "0", "--device", "cpu", "-o", out) == 0
    assert f"conv1, conv2 (embedded 1x1 in 5x5), conv3 start from {src}; no layer from scratch" \
        in capsys.readouterr().err
    big = ImageSR.load(out)
    assert (big.arch.kwargs["f2"], big.metadata["recipe"]) == (5, "init_from")
    assert big.metadata["init_from"] == "915.safetensors: conv1, conv2 (embedded 1x1 in 5x5), conv3"
    img = np.random.default_rng().random((20, 23))
    np.testing.assert_allclose(big.refine(img), small.refine(img), atol=1e-5)
    # a file of the other model is refused, naming the problem
    vid = tmp_path / "vid.safetensors"
    from magmasr.video import VideoSR

    VideoSR.tdsrnet(3, filters=2).save(vid)
    assert run("train", folder, "--arch", "9-5-5", "--init-from", vid, "--steps", "1", "--device", "cpu",
               "-o", tmp_path / "x.safetensors") == 2
    assert "no layer of it has the shapes of this model's" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_train_the_posters_3dsrnet_with_the_loss_on_its_valid_region(tmp_path, capsys, monkeypatch):
    """`train --model 3dsrnet --arch poster`: our poster's network (32 filters by default, conv4-5 unpadded, a
    sub-pixel head for the scale) on clips whose targets are cropped to what it predicts (2 LR pixels a side
    fewer); the saved file runs on whole frames and fine-tunes as itself."""
    from skimage import data

    from magmasr import train as train_mod
    from magmasr.video import VideoSR

    stills = tmp_path / "stills"
    stills.mkdir()
    iio.imwrite(stills / "cam.png", data.camera()[:200, :200])
    seen = {}
    fit = train_mod.fit

    def spy(net, data, **kw):
        seen.setdefault("shapes", (data.x.shape, data.y.shape))
        return fit(net, data, **kw)

    monkeypatch.setattr(train_mod, "fit", spy)
    common = ["--model", "3dsrnet", "--arch", "poster", "--scale", "4", "--patch", "10", "--clips-per-image", "4",
              "--batch", "2", "--steps", "2", "--val-fraction", "0", "--seed", "3", "--device", "cpu"]
    out = tmp_path / "poster.safetensors"
    assert run("train", stills, *common, "-o", out) == 0
    # LR clips of 5x10x10; the network predicts (10 - 4) x 4 = 24 HR pixels a side.
    assert seen["shapes"] == ((4, 1, 5, 10, 10), (4, 1, 24, 24))
    m = VideoSR.load(out)
    assert m.arch.name == "tdsrnet_poster" and m.arch.kwargs == {"head": "shuffle", "scale": 4, "filters": 32, "seed": 3}
    assert m.border == 2 and m.metadata["recipe"] == "3dsrnet_poster_synthetic_clips"
    assert m.net.num_parameters == 116_240
    # The cropped targets are the centre of the full ones (the clips themselves are unchanged).
    from magmasr.video import ClipDataset

    full = ClipDataset.synthetic([data.camera()[:200, :200]], 4, clips_per_image=4, patch=10, seed=3)
    crop = full.valid(2)
    np.testing.assert_array_equal(crop.x, full.x)
    np.testing.assert_array_equal(crop.y, full.y[..., 8:-8, 8:-8])
    # The file is recognised as a video model (finetune, upscale) and fine-tunes as the poster's network.
    assert cli._is_3dsrnet_file(out) and cli.default_video_model(4, str(out)) == "3dsrnet"
    tuned = tmp_path / "tuned.safetensors"
    assert run("finetune", out, stills, *common[4:], "-o", tuned) == 0
    t = VideoSR.load(tuned)
    assert t.arch == m.arch and t.metadata["recipe"] == "3dsrnet_poster_finetune_all_synthetic_clips"
    capsys.readouterr()
    assert run("train", stills, *common, "--patch", "4", "-o", tmp_path / "x.safetensors") == 2
    assert "--patch 4: clips of 4 LR pixels are too small" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.data
def test_finetune_the_authors_3dsrnet(shared_dir, tmp_path):
    """The original MatConvNet 3DSRnet is recognised as a 3DSRnet (not an SRCNN .mat) and fine-tuned whole."""
    from skimage import data

    from magmasr.video import VideoSR

    stills = tmp_path / "stills"
    stills.mkdir()
    iio.imwrite(stills / "cam.png", data.camera()[:192, :192])
    mat = shared_dir / "weights" / "3dsrnet_official" / "x4.mat"
    out = tmp_path / "tuned.safetensors"
    assert run("finetune", mat, stills, "--scale", "4", "--patch", "8", "--clips-per-image", "4", "--steps", "1",
               "--batch", "2", "--lr", "1e-5", "--device", "cpu", "-o", out) == 0
    before, after = VideoSR.from_3dsrnet_mat(mat, 4).net.state_dict(), VideoSR.load(out).net.state_dict()
    for k in before:
        assert 0 < np.abs(after[k] - before[k]).max() <= 1.01e-5, k  # one Adam step: lr at most


def test_eval_3dsrnet_on_sequence_folders(tmp_path, capsys):
    """`eval --model 3dsrnet` prints the authors' protocol figures per sequence and their mean, with single-frame
    SRCNN beside them; one sequence folder works too."""
    from skimage import data

    from magmasr.video import VideoSR, evaluate_video

    root = tmp_path / "vid"
    for name, pic in (("coins", data.coins()), ("moon", data.moon())):
        (root / name).mkdir(parents=True)
        for t in range(6):  # a diagonal pan, one pixel a frame
            iio.imwrite(root / name / f"{t:03d}.png", pic[t:t + 40, t:t + 44])
    weights = tmp_path / "v.safetensors"
    model = VideoSR.tdsrnet(2, filters=4, seed=5)
    model.save(weights)
    assert run("eval", root, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "--device", "cpu") == 0
    lines = [ln.split("|") for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    srcnn = cli.shipped_weights("srcnn", 2)
    base = {"SRCNN": ImageSR.load(srcnn)} if srcnn else {}
    expected = [evaluate_video(model, root / n, baselines=base) for n in ("coins", "moon")]
    assert [c.strip() for c in lines[1]][1:4] == ["coins", f"{expected[0].psnr:.2f}", f"{expected[0].psnr_bicubic:.2f}"]
    assert [c.strip() for c in lines[2]][1:3] == ["moon", f"{expected[1].psnr:.2f}"]
    assert lines[3][2].strip() == f"{(expected[0].psnr + expected[1].psnr) / 2:.2f}"
    if srcnn:
        assert lines[1][4].strip() == f"{expected[0].psnr_baselines['SRCNN']:.2f}"
    assert lines[1][-2].strip() == "2"  # centre frames 3..N-2 of 6
    assert run("eval", root / "moon", "--model", "3dsrnet", "--weights", weights, "--scale", "2",
               "--device", "cpu") == 0
    assert "| moon |" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert run("eval", tmp_path / "empty", "--model", "3dsrnet", "--weights", weights, "--scale", "2") == 2
    assert "no frames" in capsys.readouterr().err


def test_videos_default_to_3dsrnet_only_where_one_is_available(tmp_path, monkeypatch):
    from magmasr.video import VideoSR

    vid, img = tmp_path / "v.safetensors", tmp_path / "i.safetensors"
    VideoSR.tdsrnet(2, filters=4).save(vid)
    ImageSR.srcnn("9-1-5", scale=2).save(img)
    assert cli.default_video_model(2, str(vid)) == "3dsrnet"
    assert cli.default_video_model(2, str(img)) == "srcnn"
    monkeypatch.setattr(cli, "shipped_weights", lambda model, scale: vid if (model, scale) == ("3dsrnet", 4) else None)
    assert cli.default_video_model(4, None) == "3dsrnet"
    assert cli.default_video_model(3, None) == "srcnn"
    # --arch says which: a 3DSRnet variant means 3DSRnet, an SRCNN preset means SRCNN frame by frame.
    assert cli.default_video_model(3, None, "poster") == "3dsrnet"
    assert cli.default_video_model(4, None, "9-1-5") == "srcnn"


def test_arch_picks_a_shipped_model(tmp_path, capsys):
    """--arch 9-1-5 upscales with the shipped SRCNN 9-1-5 (the same pixels as the Python API's), the default
    with the 9-5-5; the two differ. A variant that does not ship, one of the other model, or --arch beside
    --weights is a clear error that writes nothing."""
    rng = np.random.default_rng()
    src = tmp_path / "in.png"
    iio.imwrite(src, rng.integers(0, 256, (21, 17, 3), dtype=np.uint8))
    for arch in ("9-1-5", None):
        out = tmp_path / f"out_{arch}.png"
        assert run("upscale", src, "-o", out, "--scale", "3", "--device", "cpu", *(["--arch", arch] if arch else [])) == 0
        expect = ImageSR.pretrained(3, arch or "9-5-5", device="cpu").upscale(iio.imread(src))
        np.testing.assert_array_equal(iio.imread(out), expect)
    assert not np.array_equal(iio.imread(tmp_path / "out_9-1-5.png"), iio.imread(tmp_path / "out_None.png"))
    before = set(tmp_path.iterdir())
    weights = tmp_path / "m.safetensors"
    for args, message in ((["--arch", "9-3-5"], "no SRCNN weights (srcnn_935) for x3"),
                          (["--model", "srcnn", "--arch", "poster"], "unknown SRCNN preset 'poster'"),
                          (["--arch", "poster"], "a folder of frames"),   # a 3DSRnet variant: not for one picture
                          (["--arch", "9-1-5", "--weights", weights], "does not go with --weights")):
        assert run("upscale", src, "-o", tmp_path / "x.png", "--scale", "3", "--device", "cpu", *args) == 2, args
        assert message in capsys.readouterr().err
    assert set(tmp_path.iterdir()) == before
    with pytest.raises(cli.CliError, match="unknown 3DSRnet variant '9-5-5'"):
        cli.shipped_kind("3dsrnet", "9-5-5")
    assert [cli.shipped_kind("3dsrnet", a) for a in (None, "published", "poster")] == \
        ["3dsrnet", "3dsrnet", "3dsrnet_poster"]


def test_models_lists_every_shipped_file(capsys):
    """One row per file in the package's weights folder, with the figures its metadata records."""
    from magmasr.sr import SHIPPED, shipped_models

    assert run("models") == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    files = sorted(SHIPPED.glob("*.safetensors"))
    assert len(rows) == len(files) == len(shipped_models())
    for r in shipped_models():
        line = next(x for x in rows if x.startswith(f"| {r['kind']} | x{r['scale']} |"))
        score = r.get("set5_psnr", r.get("vid4_calendar_psnr"))
        assert f"{score:.2f} dB" in line


def test_tiled_inference_is_identical_to_whole_image():
    rng = np.random.default_rng(3)
    model = ImageSR.srcnn("9-5-5", scale=2)
    y = im.imresize(rng.random((45, 53)), 2)
    whole = model.refine(y)
    for tile in (16, 37, 64):
        calls = []
        np.testing.assert_array_equal(model.refine(y, tile=tile, progress=lambda d, t: calls.append((d, t))), whole)
        total = -(-90 // tile) * -(-106 // tile)  # ceil(h / tile) * ceil(w / tile) over the 90 x 106 input
        assert calls == [(k, total) for k in range(1, total + 1)]


def test_tiled_upscale_reports_tiles_per_second(tmp_path, capsys):
    src = tmp_path / "p.png"
    iio.imwrite(src, np.random.default_rng().integers(0, 256, (30, 41, 3), dtype=np.uint8))
    assert run("upscale", src, "--scale", "2", "--arch", "9-1-5", "--tile", "32", "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "6/6 tiles of 32x32" in err and "tiles/s" in err  # 60 x 82 output: 2 x 3 tiles
    whole = tmp_path / "whole.png"
    assert run("upscale", src, "--scale", "2", "--arch", "9-1-5", "-o", whole, "--device", "cpu") == 0
    assert "tiles" not in capsys.readouterr().err
    np.testing.assert_array_equal(iio.imread(whole), iio.imread(tmp_path / "p_x2.png"))


@pytest.mark.parametrize("kind", ["rgb8", "gray16", "float32"])
def test_tiled_tiff_is_streamed_and_identical_to_whole_picture(tmp_path, capsys, kind):
    """A tiled picture written as TIFF goes to the file band by band; the file holds exactly the whole-picture
    result (bit for bit, in the input's dtype)."""
    rng = np.random.default_rng()
    shape = {"rgb8": (29, 35, 3), "gray16": (26, 31), "float32": (27, 30)}[kind]
    img = {"rgb8": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
           "gray16": lambda: rng.integers(0, 65536, shape, dtype=np.uint16),
           "float32": lambda: (rng.random(shape) * 900 - 40).astype(np.float32)}[kind]()
    src = tmp_path / "in.tif"
    iio.imwrite(src, img)
    whole, streamed = tmp_path / "whole.tif", tmp_path / "streamed.tif"
    common = ("--scale", "3", "--arch", "9-1-5", "--device", "cpu")
    assert run("upscale", src, "-o", whole, *common) == 0
    assert run("upscale", src, "-o", streamed, "--tile", "32", *common) == 0
    n = -(-shape[0] * 3 // 32) * -(-shape[1] * 3 // 32)  # ceil(H / 32) * ceil(W / 32) tiles
    assert f"{n}/{n} tiles of 32x32" in capsys.readouterr().err
    a, b = iio.imread(whole), iio.imread(streamed)
    assert b.dtype == img.dtype and b.shape == (shape[0] * 3, shape[1] * 3) + shape[2:]
    np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "streamed.tif", "whole.tif"]


def test_a_picture_too_big_for_memory_goes_to_tiff_or_is_refused(tmp_path, capsys, monkeypatch):
    """With little memory, a PNG output that would not fit is refused before any work, naming the way out; a
    TIFF output is tiled and streamed; a failure mid-stream leaves no file behind."""
    src = tmp_path / "in.png"
    iio.imwrite(src, np.random.default_rng().integers(0, 256, (40, 50, 3), dtype=np.uint8))
    monkeypatch.setattr(cli, "available_memory", lambda: 60_000)  # the 160 x 200 x 3 output is 96,000 bytes
    common = ("--scale", "4", "--arch", "9-1-5", "--device", "cpu")
    assert run("upscale", src, "-o", tmp_path / "out.png", *common) == 2
    assert "would not fit in memory" in capsys.readouterr().err and not (tmp_path / "out.png").exists()
    assert run("upscale", src, "-o", tmp_path / "out.tif", "--tile", "64", *common) == 0
    monkeypatch.undo()
    assert run("upscale", src, "-o", tmp_path / "ref.png", *common) == 0
    np.testing.assert_array_equal(iio.imread(tmp_path / "out.tif"), iio.imread(tmp_path / "ref.png"))

    def broken(self, *args, **kwargs):
        yield (0, 0), np.zeros((64, 64, 3), np.uint8)
        raise RuntimeError("the GPU fell off the bus")

    monkeypatch.setattr(ImageSR, "upscale_tiles", broken)
    before = set(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="fell off"):
        run("upscale", src, "-o", tmp_path / "half.tif", "--tile", "64", *common)
    assert set(tmp_path.iterdir()) == before  # no partial output, no temporary file


def test_video_is_streamed_with_its_audio(tmp_path, make_clip):
    import imageio_ffmpeg

    from magmasr.video import VideoSR

    src = make_clip(tmp_path / "clip.mp4", audio=True)
    weights = tmp_path / "v.safetensors"
    VideoSR.tdsrnet(2, filters=4).save(weights)
    out = tmp_path / "clip_x2.mp4"
    assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "--device", "cpu") == 0
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert meta["size"] == (96, 64) and meta.get("audio_codec") == "aac"
    assert sum(1 for _ in reader) == 10
    # Frame by frame with bicubic too; a x3 request with x2 weights is refused without leaving a file.
    assert run("upscale", src, "--model", "bicubic", "--scale", "3", "-o", tmp_path / "b.mp4", "--device", "cpu") == 0
    assert next(imageio_ffmpeg.read_frames(str(tmp_path / "b.mp4")))["size"] == (144, 96)
    before = set(tmp_path.iterdir())
    assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "3", "-o",
               tmp_path / "c.mp4", "--device", "cpu") == 2
    assert set(tmp_path.iterdir()) == before
    # --crf trades size for quality: 0 keeps the bicubic frames best, 40 makes the smallest file.
    sizes, errors = {}, {}
    for crf in (0, 10, 40):
        dst = tmp_path / f"crf{crf}.mp4"
        assert run("upscale", src, "--model", "bicubic", "--scale", "2", "--crf", str(crf), "-o", dst,
                   "--device", "cpu") == 0
        sizes[crf] = dst.stat().st_size
        frames = [np.frombuffer(f, np.uint8).reshape(64, 96, 3).astype(int)
                  for f in list(imageio_ffmpeg.read_frames(str(dst)))[1:]]
        ref = [np.frombuffer(f, np.uint8).reshape(64, 96, 3).astype(int)
               for f in list(imageio_ffmpeg.read_frames(str(tmp_path / "crf0.mp4")))[1:]]
        errors[crf] = float(np.mean([np.abs(a - b).mean() for a, b in zip(frames, ref)]))
    assert sizes[0] > sizes[10] > sizes[40] and errors[0] == 0 < errors[10] < errors[40]
    with pytest.raises(SystemExit):
        run("upscale", src, "--crf", "52")
    iio.imwrite(tmp_path / "still.png", np.zeros((8, 8), np.uint8))
    assert run("upscale", tmp_path / "still.png", "--crf", "20", "--model", "bicubic") == 2


def test_video_of_odd_output_size_and_bad_video_files(tmp_path, capsys):
    """An odd output size (45x33 x3 = 135x99, which H.264 in 4:2:0 cannot hold) is written at its exact size in
    4:4:4, every frame, close to the bicubic upscale of the decoded input; a non-video output name, an empty and a
    garbage video file get one-line errors and leave nothing behind."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    rng = np.random.default_rng()
    # Smooth frames, so that lossy coding does not dominate the comparison.
    yy, xx = np.mgrid[0:33, 0:45]
    phase = rng.uniform(0, 2 * np.pi, (3, 2))
    frames = [im.to_uint8(np.stack([0.5 + 0.2 * np.sin(xx / 6.0 + k + a) + 0.2 * np.cos(yy / 5.0 + b)
                                    for a, b in phase], axis=2)) for k in range(6)]
    src = tmp_path / "odd.avi"
    writer = imageio_ffmpeg.write_frames(str(src), (45, 33), fps=10, codec="mjpeg", pix_fmt_out="yuvj444p",
                                         quality=10, macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    decoded = [np.frombuffer(r, np.uint8).reshape(33, 45, 3) for r in list(imageio_ffmpeg.read_frames(str(src)))[1:]]
    out = tmp_path / "odd_x3.mp4"
    assert run("upscale", src, "--model", "bicubic", "--scale", "3", "-o", out, "--device", "cpu") == 0
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert meta["size"] == (135, 99)
    got = [np.frombuffer(r, np.uint8).reshape(99, 135, 3) for r in reader]
    assert len(got) == len(frames)
    for g, d in zip(got, decoded):
        want = im.imresize(d, 3)
        assert metrics.psnr(g, want) > 35.0  # H.264 at quality 8 on smooth content: 44-46 dB here; the next frame is < 20
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    capsys.readouterr()
    for args, message in [((src, "-o", tmp_path / "x.png"), "the output of a video is a video"),
                          ((tmp_path / "empty.mp4",), "the file is empty"),
                          ((tmp_path / "text.mp4",), "not a video ffmpeg can decode")]:
        before = set(tmp_path.iterdir())
        assert run("upscale", *args, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") <= 2
        assert set(tmp_path.iterdir()) == before


def test_video_without_model_uses_the_shipped_3dsrnet(tmp_path, capsys, make_clip):
    """Without --model a video at a scale where a 3DSRnet ships goes through it (and the result is the
    streaming pipeline's); at a scale without one, through SRCNN frame by frame, saying so."""
    import imageio_ffmpeg

    from magmasr.video import VideoSR

    scales = [k for k in (2, 3, 4) if cli.shipped_weights("3dsrnet", k)]
    if not scales:
        pytest.skip("no 3DSRnet ships in this checkout")
    # Lossless (FFV1), so that the frames read back are those written.
    src = make_clip(tmp_path / "clip.mkv", size="40x24", rate=5, seconds=1.2)
    assert run("upscale", src, "--scale", str(scales[0]), "--device", "cpu") == 0
    assert f"magmasr upscale: 3dsrnet x{scales[0]}" in capsys.readouterr().err
    out = tmp_path / f"clip_x{scales[0]}.mkv"
    frames = [np.frombuffer(f, np.uint8) for f in list(imageio_ffmpeg.read_frames(str(src)))[1:]]
    model = VideoSR.load(cli.shipped_weights("3dsrnet", scales[0]))
    expected = list(model.upscale_stream(f.reshape(24, 40, 3) for f in frames))
    got = list(imageio_ffmpeg.read_frames(str(out)))[1:]
    assert len(got) == len(expected) == 6
    for g, e in zip(got, expected):  # the writer's H.264 4:2:0 is lossy: compare the luma's PSNR, not the bits
        assert metrics.psnr(np.frombuffer(g, np.uint8).reshape(e.shape), e, test_y_channel=True) > 30
    missing = [k for k in (2, 3, 4) if k not in scales]
    if missing:
        assert run("upscale", src, "--scale", str(missing[0]), "--device", "cpu", "-o", tmp_path / "m.mkv") == 0
        err = capsys.readouterr().err
        assert f"no 3DSRnet x{missing[0]} ships" in err and f"magmasr upscale: srcnn x{missing[0]}" in err


def test_video_with_arch_poster_uses_the_posters_3dsrnet(tmp_path, capsys, make_clip):
    """--arch poster sends a video through the shipped 3DSRnet of the poster: the frames written are those of
    its streaming pipeline, and further from those of the published 3DSRnet."""
    import imageio_ffmpeg

    from magmasr.video import VideoSR

    src = make_clip(tmp_path / "clip.mkv", size="40x24", rate=5, seconds=1.2)
    assert run("upscale", src, "--scale", "4", "--arch", "poster", "--device", "cpu") == 0
    assert "magmasr upscale: 3dsrnet x4" in capsys.readouterr().err
    frames = [np.frombuffer(f, np.uint8).reshape(24, 40, 3) for f in list(imageio_ffmpeg.read_frames(str(src)))[1:]]
    got = [np.frombuffer(g, np.uint8).reshape(96, 160, 3)
           for g in list(imageio_ffmpeg.read_frames(str(tmp_path / "clip_x4.mkv")))[1:]]
    closeness = {}
    for variant in ("poster", "published"):
        expected = list(VideoSR.pretrained(4, variant, device="cpu").upscale_stream(iter(frames)))
        assert len(expected) == len(got) == 6
        closeness[variant] = np.mean([metrics.psnr(g, e, test_y_channel=True) for g, e in zip(got, expected)])
    assert closeness["poster"] > 30 and closeness["poster"] > closeness["published"] + 1, closeness


@pytest.mark.parametrize("gray", [False, True])
def test_a_folder_of_frames_through_3dsrnet(tmp_path, capsys, monkeypatch, gray):
    """--model 3dsrnet on a folder: one sequence in name order, each output the streaming pipeline's frame
    (gray stays gray), written under the same name; checked before anything is written (sizes, existing
    outputs); a failure half-way leaves no frame behind."""
    from magmasr.video import VideoSR

    rng = np.random.default_rng()
    weights = tmp_path / "v.safetensors"
    VideoSR.tdsrnet(2, filters=4, seed=int(rng.integers(1 << 30))).save(weights)
    src = tmp_path / "seq"
    src.mkdir()
    shape = (12, 10) if gray else (12, 10, 3)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(7)]
    for i, f in enumerate(frames):
        iio.imwrite(src / f"f{i:03d}.png", f)
    out = tmp_path / "up"
    assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "-o", out,
               "--device", "cpu") == 0
    expected = list(VideoSR.load(weights).upscale_stream(iter(frames)))
    assert sorted(p.name for p in out.iterdir()) == [f"f{i:03d}.png" for i in range(7)]
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(iio.imread(out / f"f{i:03d}.png"), e)
    # --tile (LR pixels) bounds memory without changing a pixel.
    assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "-o", tmp_path / "t",
               "--tile", "4", "--device", "cpu") == 0
    for i in range(7):
        np.testing.assert_array_equal(iio.imread(tmp_path / "t" / f"f{i:03d}.png"), iio.imread(out / f"f{i:03d}.png"))
    # Existing outputs are kept without --overwrite; a frame of another size is refused before any writing.
    capsys.readouterr()
    assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "-o", out,
               "--device", "cpu") == 2
    assert "exists (7 of the outputs do)" in capsys.readouterr().err
    iio.imwrite(src / "f007.png", rng.integers(0, 256, (14, 10) + shape[2:], dtype=np.uint8))
    assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "-o", tmp_path / "b",
               "--device", "cpu") == 2
    assert "have one size" in capsys.readouterr().err and not (tmp_path / "b").exists()
    (src / "f007.png").unlink()
    # A failure after some frames: none of them is left.
    real = VideoSR.upscale_stream

    def failing(self, it, *args):
        for k, frame in enumerate(real(self, it, *args)):
            if k == 4:
                raise RuntimeError("disk full")
            yield frame

    monkeypatch.setattr(VideoSR, "upscale_stream", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "-o", tmp_path / "c",
            "--device", "cpu")
    assert not (tmp_path / "c").exists()
    # A single picture is not a sequence.
    assert run("upscale", src / "f000.png", "--model", "3dsrnet", "--weights", weights, "--scale", "2",
               "--device", "cpu") == 2
    assert "a folder of frames" in capsys.readouterr().err


def test_auto_tile_bounds_the_working_set(monkeypatch):
    model = ImageSR.srcnn("9-5-5", scale=2)
    assert cli.auto_tile(model, (64, 64), "cpu") is None  # small pictures are not tiled
    # With 64 MiB free, a quarter is 16 MiB = 4 Mi floats; at 4 * 64 floats per pixel that is 16384 pixels.
    monkeypatch.setattr(cli, "available_memory", lambda: 16384 * 4096)
    tile = cli.auto_tile(model, (4000, 4000), "cpu")
    assert tile is not None and tile * tile <= 16384 and tile >= 64
    # 3DSRnet's maps are 5 frames deep: at 64 filters, 4 * 64 * 5 floats per LR pixel, 3276 pixels.
    from magmasr.video import VideoSR

    tile = cli.auto_tile(VideoSR.tdsrnet(4, filters=64), (1000, 1000), "cpu")
    assert tile == 64    # the floor: sqrt(3276) = 57 rounds down to 56, below it
    monkeypatch.setattr(cli, "available_memory", lambda: 163840 * 4096)
    tile = cli.auto_tile(VideoSR.tdsrnet(4, filters=64), (1000, 1000), "cpu")
    assert tile * tile <= 32768 and tile > 64     # 640 MiB free: 32768 LR pixels; 176 x 176 would be 30976


def test_cpu_pictures_go_in_tiles_of_at_most_cpu_tile(monkeypatch):
    """On the CPU a picture larger than CPU_TILE output pixels goes through in tiles of that size (feature maps
    reused instead of fresh pages), with the whole picture's pixels; a smaller one in one piece."""
    model = ImageSR.srcnn("9-5-5", scale=2, seed=3, n1=8, n2=8)
    seen = []
    real = model.upscale

    def upscale(img, scale=None, tile=None, progress=None, algo=None):
        seen.append(tile)
        return real(img, scale, tile=tile, progress=progress, algo=algo)

    monkeypatch.setattr(model, "upscale", upscale)
    monkeypatch.setattr(cli, "CPU_TILE", 32)
    img = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cli.upscale_array(model, img, 2, None, "cpu", show_tiles=False), real(img))
    assert seen == [32]
    seen.clear()
    cli.upscale_array(model, img[:15, :15], 2, None, "cpu", show_tiles=False)  # 30 x 30 output: one piece
    assert seen[0] is None or seen[0] >= 30


def test_the_command_line_upscales_large_pictures_in_cpu_tiles(tmp_path, capsys, monkeypatch):
    """`magmasr upscale` of a picture larger than CPU_TILE on the CPU: tiles (their progress line), the whole
    picture's pixels, also for an --tile the user gives (kept as given)."""
    monkeypatch.setattr(cli, "CPU_TILE", 16)
    img = np.random.default_rng(1).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "p.png", img)
    assert run("upscale", tmp_path / "p.png", "--scale", "2", "--device", "cpu") == 0
    assert "tiles of 16x16" in capsys.readouterr().err
    whole = ImageSR.pretrained(2, device="cpu").upscale(img)
    np.testing.assert_array_equal(iio.imread(tmp_path / "p_x2.png"), whole)
    assert run("upscale", tmp_path / "p.png", "--scale", "2", "--device", "cpu", "--tile", "20", "-o",
               tmp_path / "q.png") == 0
    assert "tiles of 20x20" in capsys.readouterr().err
    np.testing.assert_array_equal(iio.imread(tmp_path / "q.png"), whole)


def test_default_command_uses_the_shipped_weights_and_beats_bicubic(tmp_path, capsys):
    """The README's main job: `magmasr upscale` with no input and no options."""
    out = tmp_path / "astro.png"
    assert run("upscale", "-o", out, "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "srcnn x3" in err
    line = [x for x in err.splitlines() if x.startswith("PSNR")][0]  # "PSNR (Y) ...: bicubic A dB, srcnn B dB"
    bicubic, ours = (float(v.split()[-2]) for v in line.split(":")[1].split(","))
    assert ours > bicubic + 0.5
    assert iio.imread(out).shape == (510, 510, 3)


@pytest.mark.parametrize("alpha_of", ["gray", "rgb"])
def test_frames_with_an_alpha_channel_are_a_sequence_of_their_colour(tmp_path, alpha_of):
    """Gray + alpha and RGBA frames go through 3DSRnet as the gray or RGB frames they carry (read_image drops the
    alpha channel, as for a single picture): the same outputs as the frames without alpha."""
    from magmasr.video import VideoSR

    rng = np.random.default_rng()
    weights = tmp_path / "v.safetensors"
    VideoSR.tdsrnet(2, filters=4, seed=int(rng.integers(1 << 30))).save(weights)
    shape = (10, 9) if alpha_of == "gray" else (10, 9, 3)
    plain, with_alpha = tmp_path / "plain", tmp_path / "alpha"
    plain.mkdir(), with_alpha.mkdir()
    for i in range(6):
        f = rng.integers(0, 256, shape, dtype=np.uint8)
        a = rng.integers(0, 256, (10, 9, 1), dtype=np.uint8)
        iio.imwrite(plain / f"{i}.png", f)
        iio.imwrite(with_alpha / f"{i}.png", np.concatenate([f.reshape(10, 9, -1), a], axis=2))
    assert iio.imread(with_alpha / "0.png").shape == (10, 9, 2 if alpha_of == "gray" else 4)
    for src in (plain, with_alpha):
        assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2",
                   "-o", tmp_path / f"{src.name}_up", "--device", "cpu") == 0
    for i in range(6):
        a, b = iio.imread(tmp_path / "plain_up" / f"{i}.png"), iio.imread(tmp_path / "alpha_up" / f"{i}.png")
        assert a.shape == (20, 18) + shape[2:]
        np.testing.assert_array_equal(a, b)


def test_bicubic_on_16_bit_pictures_is_imresize_on_the_full_range(tmp_path):
    """--model bicubic on a 16-bit picture: MATLAB imresize of pixels / 65535 in floating point, clipped, x 65535
    and rounded, written as 16-bit (gray as PNG, RGB as TIFF)."""
    rng = np.random.default_rng()
    for name, shape in (("g.png", (13, 11)), ("c.tif", (9, 12, 3))):
        img = rng.integers(0, 65536, shape, dtype=np.uint16)
        iio.imwrite(tmp_path / name, img)
        out = tmp_path / ("up_" + name)
        assert run("upscale", tmp_path / name, "--model", "bicubic", "--scale", "3", "-o", out, "--device",
                   "cpu") == 0
        expected = np.round(np.clip(im.imresize(img.astype(np.float64) / 65535.0, 3), 0.0, 1.0) * 65535.0)
        got = iio.imread(out)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, expected.astype(np.uint16))


def test_finetune_starts_from_a_shipped_model_by_name(tmp_path, capsys, monkeypatch):
    """`magmasr finetune srcnn DATA --scale 3` fine-tunes the shipped model for that scale (--arch picks a
    preset or variant); a file of that name in the working folder wins; the wrong combinations are refused."""
    from skimage import data

    from magmasr.sr import shipped_weights

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "pics"
    folder.mkdir()
    iio.imwrite(folder / "cam.png", data.camera()[:100, :100])
    tuned = tmp_path / "t.safetensors"
    common = ("--steps", "1", "--batch", "4", "--lr", "1e-5", "--device", "cpu")
    for name, arch, kind in (("srcnn", None, "srcnn"), ("srcnn", "9-1-5", "srcnn_915")):
        shipped = shipped_weights(kind, 3)
        if shipped is None:
            continue
        extra = ("--arch", arch) if arch else ()
        assert run("finetune", name, folder, "--scale", "3", *extra, *common, "-o", tuned, "--overwrite") == 0
        assert f"fine-tuning the shipped {shipped.name}" in capsys.readouterr().err
        start, after = ImageSR.load(shipped), ImageSR.load(tuned)
        assert after.arch == start.arch
        a, b = start.net.state_dict(), after.net.state_dict()
        # One small Adam step from the shipped weights: every parameter moved, none far (lr 1e-5 bounds a step).
        for key in a:
            d = np.abs(np.asarray(a[key]) - np.asarray(b[key]))
            assert 0 < d.max() <= 1.1e-5, key
    assert run("finetune", "srcnn", folder, "--scale", "3", "--arch", "9-9-9", *common, "-o", tmp_path / "x") == 2
    assert "unknown SRCNN preset" in capsys.readouterr().err
    if shipped_weights("3dsrnet_poster", 2) is None:
        assert run("finetune", "3dsrnet", folder, "--scale", "2", "--arch", "poster", *common, "-o", tmp_path / "x") == 2
        assert "no 3dsrnet_poster x2 ships" in capsys.readouterr().err
    assert run("finetune", "nothing.safetensors", folder, *common, "-o", tmp_path / "x") == 2
    assert "no such weight file" in capsys.readouterr().err
    # A file named like a shipped model is that file; --arch does not go with a file.
    ImageSR.srcnn("9-1-5", scale=3).save(tmp_path / "srcnn")
    assert run("finetune", "srcnn", folder, "--scale", "3", *common, "-o", tuned, "--overwrite") == 0
    assert "shipped" not in capsys.readouterr().err
    assert ImageSR.load(tuned).preset == "9-1-5"
    assert run("finetune", "srcnn", folder, "--arch", "9-5-5", *common, "-o", tuned, "--overwrite") == 2
    assert "--arch picks one of the shipped models" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_on_a_gpu_the_command_line_pins_the_direct_kernels():
    """`magmasr upscale` on a GPU runs every convolution with the direct kernels ('auto_direct': the fastest of
    three that give the same bits), so its pixels do not depend on the tile size that the free memory leads to; on the CPU the layers are left as they are. (The device is set
    by hand: deciding needs no GPU.)"""
    from magmasr.video import VideoSR

    def algos(model):
        return {model.net[n].algo for n in model.net.names() if hasattr(model.net[n], "algo")}

    args = cli.build_parser().parse_args(["upscale"])
    for model in (ImageSR.srcnn("9-1-5", scale=2), VideoSR.tdsrnet(2, filters=4)):
        assert algos(cli._inference_setup(model, args)) == {"auto"}
        model.device = "cuda"
        assert algos(cli._inference_setup(model, args)) == {"auto_direct"}


def test_upscale_on_the_gpu_gives_the_direct_kernels_pixels_whatever_the_tile(gpu, tmp_path, capsys):
    """`magmasr upscale --device cuda` writes the pixels of ImageSR.upscale(algo='direct') on the GPU, whole or
    in tiles of any size, within one grey level of the CPU's, and says which GPU it ran on."""
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (23, 29, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "p.png", img)
    weights = tmp_path / "m.safetensors"
    ImageSR.srcnn("9-1-5", scale=2, seed=int(rng.integers(1 << 30))).save(weights)
    expected = ImageSR.load(weights).to("cuda").upscale(img, algo="direct")
    cpu = ImageSR.load(weights).upscale(img).astype(int)
    assert np.abs(expected.astype(int) - cpu).max() <= 1
    common = ("--scale", "2", "--weights", weights, "--device", "cuda")
    for tile in (None, 16, 21):
        out = tmp_path / f"gpu_{tile}.png"
        assert run("upscale", tmp_path / "p.png", "-o", out, *common, *(("--tile", tile) if tile else ())) == 0
        np.testing.assert_array_equal(iio.imread(out), expected, err_msg=f"tile {tile}")
    assert f"on cuda ({magmasr.cuda.device_name(0)})" in capsys.readouterr().err


def test_frames_through_3dsrnet_on_the_gpu(gpu, tmp_path):
    """A folder of frames through 3DSRnet with --device cuda: whole or in tiles, the pixels of the direct kernels
    on the GPU (VideoSR pinned to 'direct'), within one grey level of the CPU's."""
    from magmasr.video import VideoSR

    rng = np.random.default_rng()
    weights = tmp_path / "v.safetensors"
    VideoSR.tdsrnet(2, filters=8, seed=int(rng.integers(1 << 30))).save(weights)
    src = tmp_path / "seq"
    src.mkdir()
    frames = [rng.integers(0, 256, (13, 11, 3), dtype=np.uint8) for _ in range(6)]
    for i, f in enumerate(frames):
        iio.imwrite(src / f"f{i:03d}.png", f)
    expected = list(VideoSR.load(weights).to("cuda").upscale_stream(iter(frames), algo="direct"))
    cpu = list(VideoSR.load(weights).upscale_stream(iter(frames)))
    for tile in (None, 5):
        out = tmp_path / f"up_{tile}"
        assert run("upscale", src, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "-o", out,
                   "--device", "cuda", *(("--tile", tile) if tile else ())) == 0
        for i, (e, c) in enumerate(zip(expected, cpu)):
            got = iio.imread(out / f"f{i:03d}.png")
            np.testing.assert_array_equal(got, e, err_msg=f"frame {i}, tile {tile}")
            assert np.abs(got.astype(int) - c.astype(int)).max() <= 1


def test_upscale_and_eval_with_self_ensemble(tmp_path, capsys):
    """--ensemble writes the self-ensemble's pixels (ImageSR.ensemble) and eval labels its table; bicubic has no
    network to average and is refused."""
    rng = np.random.default_rng()
    weights = tmp_path / "m.safetensors"
    ImageSR.srcnn("9-1-5", scale=2, seed=int(rng.integers(1 << 30))).save(weights)
    img = rng.integers(0, 256, (15, 19, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "p.png", img)
    common = ("--scale", "2", "--weights", weights, "--device", "cpu")
    assert run("upscale", tmp_path / "p.png", "-o", tmp_path / "e.png", "--ensemble", *common) == 0
    model = ImageSR.load(weights)
    model.ensemble = True
    np.testing.assert_array_equal(iio.imread(tmp_path / "e.png"), model.upscale(img))
    assert run("upscale", tmp_path / "p.png", "-o", tmp_path / "b.png", "--model", "bicubic", "--ensemble") == 2
    assert "bicubic has none" in capsys.readouterr().err
    gt = tmp_path / "gt"
    gt.mkdir()
    iio.imwrite(gt / "a.png", rng.integers(0, 256, (24, 28, 3), dtype=np.uint8))
    assert run("eval", gt, "--ensemble", *common) == 0
    out = capsys.readouterr().out
    assert "**mean** (srcnn + self-ensemble, x2)" in out
    row = [line for line in out.splitlines() if line.startswith("| a ")][0]
    from magmasr.sr import evaluate_image_sr

    assert row.split("|")[2].strip() == f"{evaluate_image_sr(model, gt, 2)[0].psnr:.2f}"


# ------------------------------------------------------------------------ reading pictures as a viewer shows them
def _write_png16(path, pixels: np.ndarray, interlace: bool = False) -> None:
    """A 16-bit PNG written from the specification (an encoder independent of the one under test): rows filtered
    with the five filter types in turn (none, sub, up, average, Paeth), Adam7-interlaced when asked."""
    import struct
    import zlib

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[1 if pixels.ndim == 2 else pixels.shape[2]]
    h, w = pixels.shape[:2]
    px = pixels.reshape(h, w, -1).astype(">u2").view(np.uint8).reshape(h, w, -1).astype(np.int64)

    def filtered(img: np.ndarray) -> bytes:
        out = []
        for r in range(img.shape[0]):
            x = img[r]
            a = np.concatenate([np.zeros_like(x[:1]), x[:-1]])
            b = img[r - 1] if r else np.zeros_like(x)
            c = np.concatenate([np.zeros_like(b[:1]), b[:-1]])
            p = a + b - c
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
            paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            kind = r % 5
            pred = [np.zeros_like(x), a, b, (a + b) // 2, paeth][kind]
            out.append(bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes())
        return b"".join(out)

    if interlace:
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
        raw = b"".join(filtered(px[r::dr, c::dc]) for r, c, dr, dc in passes if px[r::dr, c::dc].size)
    else:
        raw = filtered(px)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, int(interlace))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels,interlace", [(3, False), (4, False), (2, False), (3, True)])
def test_16_bit_png_is_read_at_full_depth_and_stays_16_bit(tmp_path, channels, interlace):
    """Pillow reads 16-bit colour PNGs as 8-bit; magmasr keeps the 16 bits (RGB, RGBA, gray + alpha; the five
    filters and Adam7) and writes the upscaled picture as a 16-bit TIFF, its alpha channel too."""
    from magmasr.sr import image_info, read_image

    rng = np.random.default_rng(3)
    px = rng.integers(0, 65536, (13, 11, channels), dtype=np.uint16)
    px[..., 0] = np.arange(11 * 13).reshape(13, 11) * 401 % 65536  # low bytes that 8 bits would lose
    src = tmp_path / "deep.png"
    _write_png16(src, px, interlace)
    expected = px[..., :3] if channels >= 3 else px[..., 0]
    np.testing.assert_array_equal(read_image(src), expected)
    assert image_info(src) == (np.dtype(np.uint16), (13, 11), 3 if channels >= 3 else 1)
    np.testing.assert_array_equal(read_image(src, keep_alpha=True), px)
    assert image_info(src, keep_alpha=True) == (np.dtype(np.uint16), (13, 11), channels)
    assert run("upscale", src, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 0
    out = iio.imread(tmp_path / "deep_x2.tif")  # 16-bit colour or alpha: PNG (Pillow) cannot hold it
    assert out.dtype == np.uint16 and out.shape == (26, 22, channels)
    np.testing.assert_array_equal(out, np.round(np.clip(im.imresize(px / 65535.0, 2), 0, 1) * 65535))


def test_cmyk_jpeg_is_converted_to_rgb_everywhere(tmp_path):
    """A CMYK JPEG (print workflows) is the RGB picture Pillow's own conversion gives, for upscale, eval and
    train alike, not its 4 raw channels taken as RGBA (which inverts the colours)."""
    from PIL import Image

    from magmasr import train
    from magmasr.sr import read_unit_image

    rng = np.random.default_rng(4)
    rgb = np.clip(rng.normal(128, 60, (40, 44, 3)), 0, 255).astype(np.uint8)
    folder = tmp_path / "print"
    folder.mkdir()
    Image.fromarray(rgb).convert("CMYK").save(folder / "c.jpg", quality=95)
    with Image.open(folder / "c.jpg") as f:
        assert f.mode == "CMYK"
        expected = np.asarray(f.convert("RGB"))
    assert np.abs(expected.astype(int) - rgb).mean() < 8  # the colours, not their inverse
    assert run("upscale", folder / "c.jpg", "-o", tmp_path / "c.png", "--model", "bicubic", "--scale", "2",
               "--device", "cpu") == 0
    np.testing.assert_array_equal(iio.imread(tmp_path / "c.png"), im.imresize(expected, 2))
    np.testing.assert_array_equal(read_unit_image(folder / "c.jpg"), expected)  # eval and train read this
    ds = train.PatchDataset.from_folder(folder, 2, label=21)
    ref = train.PatchDataset.from_images([expected], 2, label=21)
    np.testing.assert_array_equal(ds.y, ref.y)


def test_exif_orientation_is_applied(tmp_path):
    """A JPEG whose EXIF says Orientation 6 (the camera turned a quarter clockwise) is shown rotated 90 degrees
    clockwise by every viewer; magmasr upscales what they show."""
    from PIL import Image

    from magmasr.sr import image_info

    raw = np.zeros((24, 40, 3), np.uint8)
    raw[:8, :] = (255, 0, 0)  # a red band along the stored top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    stored = iio.imread(tmp_path / "phone.jpg")
    shown = np.rot90(stored, -1)  # 90 degrees clockwise
    assert image_info(tmp_path / "phone.jpg")[1] == (40, 24)
    assert run("upscale", tmp_path / "phone.jpg", "-o", tmp_path / "up.png", "--model", "bicubic", "--scale", "2",
               "--device", "cpu") == 0
    out = iio.imread(tmp_path / "up.png")
    assert out.shape == (80, 48, 3)
    np.testing.assert_array_equal(out, im.imresize(np.ascontiguousarray(shown), 2))
    assert out[:, -8:, 0].mean() > 200 and out[:, :8, 0].mean() < 60  # the red band is now on the right


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_applied_as_viewers_do(tmp_path, orientation):
    """A TIFF's Orientation tag (274, EXIF's values) is applied as Pillow's exif_transpose does (the reference
    for 8-bit RGB), and image_info gives the shown size; 16-bit pictures, which Pillow cannot transpose, get
    the same rows and columns."""
    import tifffile
    from PIL import Image, ImageOps

    from magmasr.sr import image_info, read_image

    rng = np.random.default_rng(orientation)
    rgb = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    tag = [(274, "H", 1, orientation, False)]
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, extratags=tag)
    with Image.open(tmp_path / "rgb.tif") as f:
        shown = np.asarray(ImageOps.exif_transpose(f))
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), shown)
    assert image_info(tmp_path / "rgb.tif") == (np.dtype(np.uint8), shown.shape[:2], 3)
    deep = rgb[:, :, 0].astype(np.uint16) * 256 + 3
    tifffile.imwrite(tmp_path / "deep.tif", deep, extratags=tag)
    got = read_image(tmp_path / "deep.tif")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got // 256, shown[:, :, 0])  # same arrangement as the RGB
    assert image_info(tmp_path / "deep.tif") == (np.dtype(np.uint16), shown.shape[:2], 1)


def test_tiff_stacks_are_refused_and_planar_rgb_is_read(tmp_path, capsys):
    """A multi-page TIFF stack (one series of several pages) was read as a 3-D array and upscaled as garbage;
    it is refused naming the page count. RGB stored plane by plane is the same picture as interleaved RGB."""
    import tifffile

    from magmasr.sr import image_info, read_image

    rng = np.random.default_rng(7)
    stack = rng.integers(0, 256, (3, 12, 10), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")  # 3 gray pages, not planar RGB
    for f in (read_image, image_info):
        with pytest.raises(ValueError, match="a stack of 3 pictures"):
            f(tmp_path / "stack.tif")
    assert run("upscale", tmp_path / "stack.tif", "--model", "bicubic", "--scale", "2", "--device", "cpu") == 2
    assert "a stack of 3 pictures (a multi-page TIFF" in capsys.readouterr().err
    assert not (tmp_path / "stack_x2.tif").exists() and not (tmp_path / "stack_x2.png").exists()
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb)
    assert image_info(tmp_path / "planar.tif") == (np.dtype(np.uint8), (12, 10), 3)


def _eval_rows(capsys) -> dict[str, list[float]]:
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("image", "---") and not cells[0].startswith("**"):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


def test_eval_reads_every_pixel_type_as_upscale_does(tmp_path, capsys):
    """eval maps pictures onto [0, 1] as upscale does: 16-bit by 65535, 1-bit as 0 / 255, floating point
    outside [0, 1] by its minimum and maximum (not raw values, which gave 0 MSE and inf dB). Each is written
    here as an exact image of an 8-bit picture, so each must score as that picture does."""
    from PIL import Image

    rng = np.random.default_rng(5)
    u8 = rng.integers(0, 256, (36, 39), dtype=np.uint8)
    u8[0, 0], u8[-1, -1] = 0, 255
    bw = np.where(rng.random((36, 39)) < 0.5, 255, 0).astype(np.uint8)
    ref, test = tmp_path / "ref", tmp_path / "test"
    ref.mkdir()
    test.mkdir()
    for name in ("deep", "sky", "counts"):
        iio.imwrite(ref / f"{name}.png", u8)
    iio.imwrite(ref / "bw.png", bw)
    iio.imwrite(test / "deep.png", u8.astype(np.uint16) * 257)  # 16-bit gray PNG
    iio.imwrite(test / "sky.tif", (u8 * 37.5 - 400.0).astype(np.float64))
    iio.imwrite(test / "counts.tif", u8.astype(np.int32) * 1000 - 70000)
    Image.fromarray(bw > 0).convert("1").save(test / "bw.png")  # 1-bit
    rows = {}
    for folder in (ref, test):
        assert run("eval", folder, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 0
        rows[folder.name] = _eval_rows(capsys)
    assert set(rows["test"]) == {"deep", "sky", "counts", "bw"}
    for name, scores in rows["test"].items():
        assert np.isfinite(scores).all()
        np.testing.assert_allclose(scores, rows["ref"][name], atol=1e-2, err_msg=name)
    rgb16 = tmp_path / "rgb16"
    rgb16.mkdir()
    iio.imwrite(rgb16 / "r.tif", rng.integers(0, 256, (30, 33, 3), dtype=np.uint16) * 257)
    assert run("eval", rgb16, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 0
    assert np.isfinite(_eval_rows(capsys)["r"]).all()


def test_eval_reports_mse_and_mae_in_8_bit_levels(tmp_path, capsys):
    """The MSE column was in [0, 1]^2 units printed with 2 decimals (always 0.00); it is in 8-bit levels^2, so
    that PSNR = 10 log10(255^2 / MSE) holds between the columns."""
    rng = np.random.default_rng(6)
    for name in ("a", "b"):
        iio.imwrite(tmp_path / f"{name}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    assert run("eval", tmp_path, "--model", "bicubic", "--scale", "3", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "MSE (levels^2)" in out and "MAE (levels)" in out
    capsys.readouterr()
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("a", "b"):
            psnr, mae, mse = float(cells[1]), float(cells[3]), float(cells[4])
            assert mse > 1.0 and mae > 1.0
            np.testing.assert_allclose(10 * np.log10(255.0 ** 2 / mse), psnr, atol=0.01)


# ------------------------------------------------------------------------------ non-finite numbers and weights
@pytest.mark.parametrize("option", [["--lr", "inf"], ["--lr", "nan"], ["--max-shift", "nan"],
                                    ["--val-fraction", "nan"]])
def test_float_options_must_be_finite(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as e:
        run("train", tmp_path, "-o", tmp_path / "m.safetensors", *option)
    assert e.value.code == 2 and "expected a finite number" in capsys.readouterr().err


def test_training_that_diverges_stops_and_writes_no_model(tmp_path, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    iio.imwrite(folder / "a.png", np.random.default_rng(7).integers(0, 256, (60, 60), dtype=np.uint8))
    out = tmp_path / "m.safetensors"
    assert run("train", folder, "--arch", "9-1-5", "--optimizer", "sgd", "--lr", "1e6", "--lr-schedule",
               "constant", "--steps", "40", "--batch", "4", "--init", "default", "-o", out, "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "learning rate" in err
    assert "Traceback" not in err and not out.exists()


def test_weights_with_nan_values_are_refused(tmp_path, capsys):
    model = ImageSR.srcnn("9-1-5", scale=2)
    state = model.net.state_dict()
    state["conv1.weight"] = np.full_like(state["conv1.weight"], np.nan)
    model.net.load_state_dict(state)
    model.save(tmp_path / "nan.safetensors")
    iio.imwrite(tmp_path / "p.png", np.zeros((8, 8), np.uint8))
    assert run("upscale", tmp_path / "p.png", "--weights", tmp_path / "nan.safetensors", "--scale", "2",
               "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and err.count("\n") == 1
    assert not (tmp_path / "p_x2.png").exists()


@pytest.mark.parametrize("command", ["upscale", "eval"])
def test_a_3dsrnet_file_given_as_image_weights_is_a_one_line_error(tmp_path, capsys, command):
    from magmasr.video import VideoSR

    VideoSR.tdsrnet(2, filters=4).save(tmp_path / "v.safetensors")
    iio.imwrite(tmp_path / "p.png", np.zeros((40, 40), np.uint8))
    target = tmp_path / "p.png" if command == "upscale" else tmp_path
    assert run(command, target, "--weights", tmp_path / "v.safetensors", "--scale", "2", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "3DSRnet is a video model" in err and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------------- outputs and their folders
def test_unwritable_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A folder that cannot be written in (read-only, /proc) is found before the picture is computed, and the
    error names the output, not a temporary file."""
    import tempfile

    folder = tmp_path / "ro"
    folder.mkdir()
    iio.imwrite(tmp_path / "p.png", np.zeros((8, 8), np.uint8))
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied", str(Path(dir) / ".p_x2.tmp123"))
        return real(*a, dir=dir, **k)

    def no_work(*a, **k):
        raise AssertionError("the picture was computed before the output was checked")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(cli, "_upscale_file", no_work)
    monkeypatch.setattr(cli, "_upscale_default", no_work)
    cases = [(["upscale", tmp_path / "p.png", "-o", folder / "p.png"], str(folder / "p.png")),
             (["upscale", tmp_path / "p.png", "-o", folder], str(folder / "p_x2.png")),
             (["upscale", "-o", folder / "astro.png"], str(folder / "astro.png")),
             (["upscale", tmp_path / "p.png", "-o", "/proc/x.png"], "/proc/x.png")]
    for args, name in cases:
        if not Path("/proc").is_dir() and "/proc" in name:
            continue
        assert run(*args, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 2
        err = capsys.readouterr().err
        assert f"{name}: cannot write" in err and "tmp" not in err.replace(str(tmp_path), "")
        assert err.count("\n") <= 2
    (folder / "sub").mkdir()  # a folder input into it: nothing is created
    assert run("upscale", tmp_path / "ro" / "sub", "-o", folder / "out", "--model", "bicubic") == 2
    assert not (folder / "out").exists()


def test_folder_input_with_an_output_file_is_refused(tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    iio.imwrite(tmp_path / "pics" / "a.png", np.zeros((8, 8), np.uint8))
    iio.imwrite(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    assert run("upscale", tmp_path / "pics", "-o", tmp_path / "x.png", "--model", "bicubic") == 2
    err = capsys.readouterr().err
    assert "a file; the output of a folder of pictures is a folder" in err and "Traceback" not in err


def _truncated_png(path) -> None:
    iio.imwrite(path, np.random.default_rng(8).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-200])


@pytest.mark.parametrize("failure", ["damaged", "ctrl-c"])
def test_a_folder_is_all_or_nothing(tmp_path, capsys, monkeypatch, failure):
    """A picture that turns out damaged half way, or Ctrl-C, leaves the output folder as it was: no new file, the
    files that were there (one that --overwrite would have replaced included) untouched; and a folder the run
    created is removed. Ctrl-C ends with a one-line 'interrupted' and status 130."""
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(9)
    for name in ("a.png", "b.png", "d.png"):
        iio.imwrite(pics / name, rng.integers(0, 256, (10, 12), dtype=np.uint8))
    if failure == "damaged":
        _truncated_png(pics / "c.png")
        code, message = 2, "c.png: cannot read"
    else:
        real, calls = cli._upscale_file, []  # cleared before each run

        def interrupted(model, src, *a, **k):
            calls.append(src)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return real(model, src, *a, **k)

        monkeypatch.setattr(cli, "_upscale_file", interrupted)
        code, message = 130, "magmasr: interrupted"
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    iio.imwrite(out / "b.png", np.zeros((3, 3), np.uint8))
    before = {p: p.read_bytes() for p in out.iterdir()}
    assert run("upscale", pics, "-o", out, "--model", "bicubic", "--scale", "2", "--overwrite") == code
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"magmasr: {'error: ' if code == 2 else ''}") and message in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    if failure == "ctrl-c":
        calls.clear()
    assert run("upscale", pics, "-o", tmp_path / "new" / "deeper", "--model", "bicubic", "--scale", "2") == code
    assert not (tmp_path / "new").exists()


def test_default_picture_checks_both_outputs_first_and_takes_a_folder(tmp_path, capsys):
    (tmp_path / "astro_comparison.png").write_bytes(b"mine")
    assert run("upscale", "--model", "bicubic", "--scale", "2", "-o", tmp_path / "astro.png", "--device",
               "cpu") == 2
    assert "astro_comparison.png exists" in capsys.readouterr().err
    assert not (tmp_path / "astro.png").exists()
    assert (tmp_path / "astro_comparison.png").read_bytes() == b"mine"
    folder = tmp_path / "d"
    folder.mkdir()
    assert run("upscale", "--model", "bicubic", "--scale", "2", "-o", folder, "--device", "cpu") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut_x2.png", "astronaut_x2_comparison.png"]
    capsys.readouterr()
    assert run("upscale", "--model", "bicubic", "--scale", "2", "-o", f"{tmp_path / 'newdir'}/", "--device",
               "cpu") == 2
    assert "newdir/: no such folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- options and messages
@pytest.mark.parametrize("args,message", [
    (["upscale", "--model", "bicubic", "--weights", "{tmp}/w.safetensors"], "--model bicubic has none"),
    (["upscale", "--model", "bicubic", "--arch", "poster"], "--model bicubic has none"),
    (["eval", "{tmp}", "--model", "bicubic", "--arch", "9-1-5"], "--model bicubic has none"),
    (["upscale", "{tmp}/p.png", "--arch", "poster"], "--arch poster (a 3DSRnet variant) upscales a video"),
    (["upscale", "{tmp}/p.png", "-o", "{tmp}/p.png", "--overwrite", "--model", "bicubic"], "that is the input"),
    (["train", "{tmp}", "-o", "{tmp}/m.txt"], "a .safetensors file"),
    (["bench", "--size", "8x8", "--repeat", "0"], "--repeat must be at least 1"),
    (["bench", "--size", "8x8", "--warmup", "-1"], "--warmup must be 0 or more"),
    (["eval", "{tmp}/seq", "--model", "3dsrnet", "--scale", "2"], "002.png: 10x12 pixels, but the first frame"),
])
def test_contradictions_and_bad_values_get_a_clear_error(tmp_path, capsys, args, message):
    iio.imwrite(tmp_path / "p.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "seq").mkdir()
    for i, shape in enumerate([(12, 14), (12, 10), (12, 14), (12, 14), (12, 14)], 1):
        iio.imwrite(tmp_path / "seq" / f"{i:03d}.png", np.zeros(shape, np.uint8))
    before = set(tmp_path.rglob("*"))
    assert run(*[a.format(tmp=tmp_path) for a in args], "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert message in err and "--model 3dsrnet" not in err.replace("--model 3dsrnet upscales", "")
    assert "Traceback" not in err and set(tmp_path.rglob("*")) == before


def test_progress_lines_end_before_other_messages(tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in "abc":
        iio.imwrite(pics / f"{name}.png", np.zeros((6, 6), np.uint8))
    assert run("upscale", pics, "--model", "bicubic", "--scale", "2", "--device", "cpu") == 0
    lines = capsys.readouterr().err.split("\n")
    assert any("3/3 images" in line for line in lines)
    assert not any("images/s" in line and "->" in line for line in lines)
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "v.mp4"), (16, 12), fps=5, macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for _ in range(4):
        writer.send(np.zeros((12, 16, 3), np.uint8))
    writer.close()
    assert run("upscale", tmp_path / "v.mp4", "--model", "bicubic", "--scale", "2", "--device", "cpu") == 0
    lines = capsys.readouterr().err.split("\n")
    assert any("4/4 frames" in line for line in lines)  # the total, from the duration and the frame rate
    assert not any("frames/s" in line and "->" in line for line in lines)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_the_progress_line_is_rewritten_in_place(monkeypatch, tty):
    """On a terminal each update erases what a longer previous one left at the end of the line (fit's
    "(19.82 dB)" becomes "(9.50 dB)"); on a file no escape codes. fit's progress line is the command line's: a
    message of either after it starts on a line of its own."""
    from magmasr import _status

    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    line = _status.STDERR
    line.update("step 10/20 (19.82 dB)")
    line.update("step 20/20 (9.50 dB)")
    cli._say("saved")
    line.end()  # nothing open: nothing written
    erase = "\033[K" if tty else ""
    assert err.getvalue() == f"\rstep 10/20 (19.82 dB){erase}\rstep 20/20 (9.50 dB){erase}\nsaved\n"
    _status.QUIET.update("hidden")
    _status.QUIET.say("hidden")
    assert "hidden" not in err.getvalue()


def test_progress_says_how_long_is_left(tmp_path, capsys, monkeypatch):
    """The time left at the pace so far, in the progress lines of pictures, frames, tiles and training."""
    from magmasr import _status

    assert [_status.duration(s) for s in (0, 42.9, 60, 185, 3599, 3600, 3840, 90000)] == [
        "0 s", "42 s", "1 min 00 s", "3 min 05 s", "59 min 59 s", "1 h 00 min", "1 h 04 min", "25 h 00 min"]
    assert _status.time_left(1, 4, 10.0) == ", about 30 s left"
    assert _status.time_left(3, 4, 300.0) == ", about 1 min 40 s left"
    for done, total, elapsed in ((0, 4, 1.0), (4, 4, 9.0), (5, 4, 9.0), (2, None, 3.0), (2, 0, 3.0), (1, 4, 0.0)):
        assert _status.time_left(done, total, elapsed) == ""
    # Every update of the command line and of fit carries it (the clock stepped 2 s per reading).
    clock = iter(range(0, 10_000, 2))
    monkeypatch.setattr(cli.time, "perf_counter", lambda: float(next(clock)))
    cli._progress(1, 5, -2.0, "images")
    progress = cli._tile_progress(32)
    progress(1, 3)
    err = capsys.readouterr().err
    assert "1/5 images, 0.50 images/s, about 8 s left" in err
    assert "1/3 tiles of 32x32, 0.50 tiles/s, about 4 s left" in err
    from magmasr import train

    x = np.random.default_rng(0).random((40, 1, 9, 9), dtype=np.float32)
    data = train.PatchDataset(x, x[:, :, 2:-2, 2:-2].copy(), 3)
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    train.fit(models.srcnn(3, 1, 3, 4, 2, padding="valid"), data, steps=20, batch_size=8, device="cpu",
              progress=True)
    err = capsys.readouterr().err
    assert re.search(r"step 10/20 .* patches/s, about \d+ s left", err), err


def test_jpeg_output_is_high_quality(tmp_path):
    from PIL import Image, JpegImagePlugin

    rgb = np.random.default_rng(10).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "p.png", rgb)
    assert run("upscale", tmp_path / "p.png", "-o", tmp_path / "p.jpg", "--model", "bicubic", "--scale", "2",
               "--device", "cpu") == 0
    Image.fromarray(im.imresize(rgb, 2)).save(tmp_path / "ref.jpg", quality=95, subsampling=0)
    with Image.open(tmp_path / "p.jpg") as got, Image.open(tmp_path / "ref.jpg") as ref:
        assert JpegImagePlugin.get_sampling(got) == 0  # 4:4:4, no chroma subsampling
        assert got.quantization == ref.quantization


def _train_folder(tmp_path):
    from skimage import data

    folder = tmp_path / "pics"
    folder.mkdir()
    iio.imwrite(folder / "cam.png", data.camera()[:100, :100])
    return folder


def test_finetune_all_keeps_the_architecture_of_a_nonlinear_srcnn(tmp_path, capsys):
    folder = _train_folder(tmp_path)
    quick = ["--scale", "3", "--steps", "2", "--batch", "8", "--device", "cpu"]
    nl = tmp_path / "nl.safetensors"
    assert run("train", folder, "--nonlinear", "--arch", "9-1-5", *quick, "-o", nl) == 0
    tuned = tmp_path / "tuned.safetensors"
    assert run("finetune", nl, folder, "--recipe", "finetune_all", *quick, "--lr", "1e-6", "-o", tuned) == 0
    src, got = ImageSR.load(nl), ImageSR.load(tuned)
    assert got.arch == src.arch and "conv2b" in got.net.names()
    for k, v in src.net.state_dict().items():  # two steps of 1e-6 from the source: conv2b included
        assert np.abs(got.net.state_dict()[k] - v).max() <= 2.1e-6, k
    capsys.readouterr()
    assert run("finetune", nl, folder, "--recipe", "transfer_13", *quick, "-o", tmp_path / "x.safetensors") == 2
    assert "already has a trained conv2b" in capsys.readouterr().err
    assert run("finetune", nl, folder, "--recipe", "finetune_all", "--frozen-lr", "0.1", *quick,
               "-o", tmp_path / "x.safetensors") == 2
    assert "finetune_all trains every layer at --lr" in capsys.readouterr().err
    t12 = tmp_path / "t12.safetensors"
    assert run("finetune", nl, folder, "--recipe", "transfer_12", *quick, "-o", t12) == 0
    assert "its conv2b is not used" in capsys.readouterr().err
    assert ImageSR.load(t12).arch.name == "srcnn" and not (tmp_path / "x.safetensors").exists()


def test_a_checkpoint_of_another_run_or_a_model_file_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from magmasr import train

    folder = _train_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    iio.imwrite(other / "moon.png", __import__("skimage").data.moon()[:100, :100])
    quick = ["--arch", "9-1-5", "--scale", "3", "--batch", "8", "--device", "cpu", "--overwrite"]
    ck = tmp_path / "ck.safetensors"
    saved = []
    real = train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint", lambda path, model, opt, step, *a: (saved.append(step),
                                                                                      real(path, model, opt, step, *a)))
    assert run("train", folder, *quick, "--steps", "5", "--checkpoint", ck, "--checkpoint-every", "2",
               "-o", tmp_path / "a.safetensors") == 0
    assert saved == [2, 4, 5]
    capsys.readouterr()
    for args, message in [((folder, "--steps", "5", "--lr", "1e-4"), "lr: 0.001 in the checkpoint, 0.0001 now"),
                          ((other, "--steps", "5"), "the training data"),
                          ((folder, "--steps", "5", "--seed", "3"), "seed: 0 in the checkpoint, 3 now"),
                          ((folder, "--steps", "9"), "steps: 5 in the checkpoint, 9 now (the cosine schedule")]:
        assert run("train", *args, *quick, "--checkpoint", ck, "-o", tmp_path / "b.safetensors") == 2
        err = capsys.readouterr().err
        assert f"magmasr: error: {ck}: not a checkpoint of this run (" in err and message in err, err
        assert "Traceback" not in err and not (tmp_path / "b.safetensors").exists()
    model_file = tmp_path / "a.safetensors"
    assert run("train", folder, *quick, "--steps", "5", "--checkpoint", model_file, "-o", tmp_path / "b.safetensors") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"magmasr: error: --checkpoint {model_file}: not a checkpoint") and "sub-images" not in err
    assert run("train", folder, *quick, "--checkpoint-every", "0", "--checkpoint", ck, "-o", tmp_path / "b.safetensors") == 2
    assert "--checkpoint-every must be at least 1, got 0" in capsys.readouterr().err


def test_sgd_momentum_and_per_layer_rates_reach_fit(tmp_path, capsys, monkeypatch):
    """The SRCNN paper's recipe from the command line: SGD with momentum, 1e-5 on the last layer."""
    from magmasr import train

    folder = _train_folder(tmp_path)
    seen = {}
    real = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **kw: (seen.update(kw), real(*a, **kw))[1])
    quick = ["--arch", "9-1-5", "--scale", "3", "--steps", "1", "--batch", "8", "--device", "cpu"]
    assert run("train", folder, *quick, "--optimizer", "sgd", "--lr", "1e-4", "--momentum", "0.5", "--layer-lr",
               "conv3=1e-5", "-o", tmp_path / "m.safetensors") == 0
    assert seen["momentum"] == 0.5 and seen["lr_mult"] == {"conv3": pytest.approx(0.1)}
    capsys.readouterr()
    for args, message in [(["--momentum", "0.9"], "--momentum is SGD's"),
                          (["--layer-lr", "conv7=1e-5"], "no layer 'conv7'"),
                          (["--layer-lr", "conv3=1e-5", "--layer-lr", "conv3=1e-4"], "given more than once")]:
        assert run("train", folder, *quick, *args, "-o", tmp_path / "x.safetensors") == 2
        assert message in capsys.readouterr().err
    assert run("finetune", tmp_path / "m.safetensors", folder, "--recipe", "transfer_12", *quick[2:],
               "--layer-lr", "conv1=1e-5", "-o", tmp_path / "x.safetensors") == 2
    assert "conv1 is frozen by --recipe transfer_12" in capsys.readouterr().err


def test_an_interrupted_training_says_so_on_a_line_of_its_own(tmp_path, capsys, monkeypatch):
    from magmasr import train

    folder = _train_folder(tmp_path)
    calls = []
    real = train.augment

    def augment(*a):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(train, "augment", augment)
    assert run("train", folder, "--arch", "9-1-5", "--steps", "20", "--batch", "8", "--device", "cpu",
               "-o", tmp_path / "m.safetensors") == 130
    err = capsys.readouterr().err
    assert "step 10/20" in err and "magmasr: interrupted" in err.splitlines()


def test_eval_3dsrnet_checks_every_folder_before_the_table(tmp_path, capsys):
    from magmasr.video import VideoSR

    root = tmp_path / "vid"
    rng = np.random.default_rng(3)
    for name, n in (("long", 6), ("short", 4)):
        (root / name).mkdir(parents=True)
        for t in range(n):
            iio.imwrite(root / name / f"{t:03d}.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))
    weights = tmp_path / "v.safetensors"
    VideoSR.tdsrnet(2, filters=4).save(weights)
    args = ("eval", root, "--model", "3dsrnet", "--weights", weights, "--scale", "2", "--device", "cpu")
    assert run(*args) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{root / 'short'}: 4 frames, the protocol needs at least 5" in err
    (root / "short" / "000.png").unlink()
    for t in range(4, 6):
        iio.imwrite(root / "short" / f"{t:03d}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    assert run(*args) == 2
    out, err = capsys.readouterr()
    assert out == "" and "004.png: an RGB frame, but the first frame 001.png is gray" in err


def test_every_option_of_every_command_says_what_it_is():
    """`magmasr COMMAND --help` explains each argument (an option added without a help text shows only its
    name), and states the default of each numeric option that has one."""
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        for action in cmd._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"magmasr {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{label} has no help text"
            if action.type in (int, cli._finite) and action.default is not None and not action.choices:
                text = action.help % {"default": action.default} if "%(default)" in action.help else action.help
                shown = {f"default {action.default}", f"default {action.default:g}"}
                assert any(d in text for d in shown), f"{label}: the help does not give the default"


@pytest.mark.parametrize("colour", ["gray", "rgb", "palette"])
def test_an_alpha_channel_is_kept(tmp_path, capsys, colour):
    """A picture with transparency (gray + alpha, RGBA, a palette with a transparent entry) comes out with its
    alpha channel: the colour is what the same picture without alpha gives (bit for bit) once the colour under
    its fully transparent pixels is spread from the visible ones (test_alpha.py), the alpha MATLAB's
    bicubic upscale of the alpha (as CbCr, in floating point, rounded once). PNG and TIFF keep it (TIFF marks it
    as unassociated alpha, whole or streamed tile by tile); JPEG drops it and says so."""
    import tifffile
    from PIL import Image
    from test_alpha import bleed_reference

    from magmasr.sr import read_image

    rng = np.random.default_rng()
    h, w = 23, 31
    yy, xx = np.mgrid[:h, :w]
    alpha = np.clip(255 * (xx / w) + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)
    src = tmp_path / "sprite.png"
    if colour == "palette":
        p = Image.fromarray(rng.integers(0, 4, (h, w), dtype=np.uint8), "P")
        p.putpalette([0, 0, 0, 250, 20, 30, 20, 240, 60, 40, 50, 230])
        p.save(src, transparency=0)
    else:
        px = rng.integers(0, 256, (h, w, 1 if colour == "gray" else 3), dtype=np.uint8)
        Image.fromarray(np.concatenate([px, alpha[:, :, None]], axis=2)).save(src)
    stored = read_image(src, keep_alpha=True)
    assert stored.shape == (h, w, 2 if colour == "gray" else 4)
    bled = bleed_reference(stored)
    plain = tmp_path / "plain.png"
    iio.imwrite(plain, bled[:, :, 0] if colour == "gray" else bled[:, :, :3])
    assert run("upscale", plain, "--scale", "2", "--device", "cpu") == 0
    assert run("upscale", src, "--scale", "2", "--device", "cpu") == 0
    out, ref = iio.imread(tmp_path / "sprite_x2.png"), iio.imread(tmp_path / "plain_x2.png")
    assert out.shape == (2 * h, 2 * w, stored.shape[2]) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :-1], ref.reshape(2 * h, 2 * w, -1))
    a = stored[:, :, -1]
    np.testing.assert_array_equal(out[:, :, -1], im.to_uint8(np.clip(im.imresize(a / 255.0, 2), 0.0, 1.0)))
    if colour == "palette":  # the transparent entry's pixels stay transparent inside large areas of it
        assert a.min() == 0 and a.max() == 255
    # TIFF, whole and streamed tile by tile: the same pixels, the alpha marked as such
    for extra in ([], ["--tile", "16"]):
        dst = tmp_path / f"sprite{len(extra)}.tif"
        assert run("upscale", src, "--scale", "2", "--device", "cpu", "-o", dst, *extra) == 0
        with tifffile.TiffFile(dst) as t:
            assert [int(e) for e in t.pages[0].extrasamples] == [2]  # unassociated alpha
            np.testing.assert_array_equal(t.asarray(), out)
    capsys.readouterr()
    assert run("upscale", src, "--scale", "2", "--device", "cpu", "-o", tmp_path / "flat.jpg") == 0
    assert "alpha channel dropped: a .jpg file has none" in capsys.readouterr().err
    assert iio.imread(tmp_path / "flat.jpg").shape[:2] == (2 * h, 2 * w)
    assert iio.imread(tmp_path / "flat.jpg").ndim == (2 if colour == "gray" else 3)


def test_the_colour_profile_goes_with_the_pixels(tmp_path, capsys):
    """An embedded ICC profile (a phone's Display P3, a scanner's Adobe RGB: without it a viewer takes the
    pixels for sRGB and shows other colours) is written into PNG, JPEG, WebP and TIFF outputs, whole or streamed
    tile by tile, byte for byte; a profile of another colour space than the output's (a CMYK JPEG's, converted
    to RGB) is not carried over."""
    import tifffile
    from PIL import Image, ImageCms

    from magmasr.sr import image_icc_profile

    rgb_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb_icc = rgb_icc[:48] + b"magm" + rgb_icc[52:]  # another device model field: not Pillow's default sRGB
    gray_icc = rgb_icc[:16] + b"GRAY" + rgb_icc[20:]
    cmyk_icc = rgb_icc[:16] + b"CMYK" + rgb_icc[20:]
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (17, 21, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png", icc_profile=rgb_icc)
    Image.fromarray(rgb).save(tmp_path / "p.jpg", icc_profile=rgb_icc, quality=95)
    tifffile.imwrite(tmp_path / "p.tif", rgb, photometric="rgb", iccprofile=rgb_icc)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png", icc_profile=gray_icc)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", icc_profile=cmyk_icc)
    for name in ("p.png", "p.jpg", "p.tif"):
        assert image_icc_profile(tmp_path / name) == rgb_icc
    quick = ["--scale", "2", "--device", "cpu"]
    for src, dst, extra in [("p.png", "a.png", []), ("p.jpg", "a.jpg", []), ("p.tif", "a.tif", []),
                            ("p.png", "t.tif", ["--tile", "16"]), ("g.png", "g2.png", []), ("g.png", "g2.tif", []),
                            ("p.png", "a.bmp", []), ("p.png", "a.webp", [])]:
        assert run("upscale", tmp_path / src, "-o", tmp_path / dst, *quick, *extra) == 0
        want = None if dst.endswith(".bmp") else gray_icc if src.startswith("g") else rgb_icc
        assert image_icc_profile(tmp_path / dst) == want, (src, dst, extra)
    np.testing.assert_array_equal(iio.imread(tmp_path / "t.tif"), iio.imread(tmp_path / "a.png"))
    assert image_icc_profile(tmp_path / "c.jpg") == cmyk_icc
    assert run("upscale", tmp_path / "c.jpg", "-o", tmp_path / "c2.png", *quick) == 0
    assert image_icc_profile(tmp_path / "c2.png") is None
    assert iio.imread(tmp_path / "c2.png").shape == (34, 42, 3)


def test_webp_in_and_out(tmp_path, capsys):
    """WebP pictures are read (with their alpha channel) and written (lossy, quality 95, alpha kept); an animated
    WebP or PNG is refused with a one-line error, as a multi-page TIFF is, but a multi-picture JPEG is its photo;
    16-bit pixels cannot go into a WebP."""
    from PIL import Image

    rng = np.random.default_rng()
    yy, xx = np.mgrid[:24, :32]
    smooth = np.stack([128 + 100 * np.sin(xx / 5.0), 128 + 100 * np.cos(yy / 4.0), 128 + 0 * xx], axis=2)
    rgba = np.dstack([smooth.astype(np.uint8), (xx * 8).astype(np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "s.webp", lossless=True, exact=True)  # RGB kept where alpha is 0
    quick = ["--scale", "2", "--device", "cpu"]
    assert run("upscale", tmp_path / "s.webp", *quick) == 0  # default output: a PNG, exact
    out = iio.imread(tmp_path / "s_x2.png")
    assert out.shape == (48, 64, 4)
    iio.imwrite(tmp_path / "s.png", rgba)
    assert run("upscale", tmp_path / "s.png", "-o", tmp_path / "ref.png", *quick) == 0
    np.testing.assert_array_equal(out, iio.imread(tmp_path / "ref.png"))  # the same pixels as from a PNG
    assert run("upscale", tmp_path / "s.png", "-o", tmp_path / "o.webp", *quick) == 0
    back = np.asarray(Image.open(tmp_path / "o.webp"))
    assert back.shape == (48, 64, 4)
    assert np.abs(back.astype(int) - out.astype(int)).mean() < 3  # lossy, but close at quality 95
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    capsys.readouterr()
    assert run("upscale", tmp_path / "anim.webp", *quick) == 2
    assert "an animation of 3 frames" in capsys.readouterr().err
    pics = tmp_path / "pics"  # in a folder: refused from its header, before any picture is computed
    pics.mkdir()
    iio.imwrite(pics / "a.png", rgba)
    frames[0].save(pics / "b.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert run("upscale", pics, "-o", tmp_path / "pics_up", *quick) == 2
    assert "an animation of 3 frames" in capsys.readouterr().err and not (tmp_path / "pics_up").exists()
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])  # APNG: the same
    assert run("upscale", tmp_path / "anim.png", *quick) == 2
    assert "an animation of 3 frames" in capsys.readouterr().err
    # A camera's multi-picture JPEG (MPO: the photo, then a preview or a depth map) is its first picture.
    frames[0].save(tmp_path / "mpo.jpg", format="MPO", save_all=True, append_images=frames[1:], quality=95)
    from magmasr.sr import read_image

    np.testing.assert_array_equal(read_image(tmp_path / "mpo.jpg"), np.asarray(Image.open(tmp_path / "mpo.jpg")))
    iio.imwrite(tmp_path / "deep.tif", rng.integers(0, 65536, (6, 7), dtype=np.uint16))
    assert run("upscale", tmp_path / "deep.tif", "-o", tmp_path / "deep.webp", "--model", "bicubic", *quick) == 2
    assert "cannot hold the 16-bit gray" in capsys.readouterr().err


def test_a_photos_exif_goes_with_it(tmp_path):
    """The EXIF metadata of a photo (camera, date, GPS) goes into PNG, JPEG and WebP outputs, with the
    orientation reset to 1 (the pixels were turned upright when read) and the pixel dimensions set to the new
    size; a picture without EXIF gets none."""
    from PIL import Image

    rng = np.random.default_rng()
    stored = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)  # as the sensor wrote it: 20 wide, 12 high
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "EOS R5", 6  # 6: turn 90 degrees clockwise to view
    block = exif.get_ifd(0x8769)
    block[0x9003], block[0xA002], block[0xA003] = "2026:01:02 03:04:05", 20, 12
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0)})
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    for out in ("a.jpg", "a.png", "a.webp"):
        assert run("upscale", tmp_path / "photo.jpg", "-o", tmp_path / out, "--scale", "2", "--device", "cpu") == 0
        with Image.open(tmp_path / out) as f:
            assert f.size == (24, 40)  # upright: 12 wide, 20 high, x2
            got = f.getexif()
            assert (got[0x010F], got[0x0110], got[0x0112]) == ("Canon", "EOS R5", 1), out
            b = got.get_ifd(0x8769)
            assert (b[0x9003], b[0xA002], b[0xA003]) == ("2026:01:02 03:04:05", 24, 40), out
            assert got.get_ifd(0x8825)[1] == "N", out
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)
    assert run("upscale", tmp_path / "plain.jpg", "--scale", "2", "--device", "cpu") == 0
    with Image.open(tmp_path / "plain_x2.png") as f:
        assert not f.getexif()


def test_the_physical_pixel_size_scales_with_the_picture(tmp_path):
    """A recorded resolution (a slide scanner's 40,000 pixels per cm, i.e. 0.25 um pixels; a scanner's 300 dpi)
    is multiplied by the scale, so the picture keeps its physical size and its calibration: TIFF in its own
    unit (whole or streamed tile by tile), PNG and JPEG in dots per inch; a picture without one records none."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng()
    slide = rng.integers(0, 65536, (20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "slide.tif", slide, resolution=(40000.0, 20000.0), resolutionunit="CENTIMETER")
    quick = ["--scale", "3", "--device", "cpu"]
    for out, extra in (("a.tif", []), ("b.tif", ["--tile", "16"])):
        assert run("upscale", tmp_path / "slide.tif", "-o", tmp_path / out, *quick, *extra) == 0
        with tifffile.TiffFile(tmp_path / out) as t:
            assert t.pages[0].resolution == pytest.approx((120000.0, 60000.0)), out
            assert int(t.pages[0].resolutionunit) == 3, out
    rgb = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "scan.png", dpi=(300, 300))
    Image.fromarray(rgb).save(tmp_path / "scan.jpg", dpi=(72, 96), quality=95)
    for src, out, dpi in (("scan.png", "s.png", (900, 900)), ("scan.jpg", "s.jpg", (216, 288)),
                          ("slide.tif", "s2.png", (120000 * 2.54, 60000 * 2.54))):
        assert run("upscale", tmp_path / src, "-o", tmp_path / out, *quick) == 0
        with Image.open(tmp_path / out) as f:
            assert f.info["dpi"] == pytest.approx(dpi, rel=1e-3), (src, out)
    Image.fromarray(rgb).save(tmp_path / "none.png")
    assert run("upscale", tmp_path / "none.png", "-o", tmp_path / "n.tif", *quick) == 0
    with tifffile.TiffFile(tmp_path / "n.tif") as t:
        assert "XResolution" not in t.pages[0].tags or t.pages[0].resolution == (1.0, 1.0)


def test_a_tiff_extra_sample_is_kept_only_when_it_is_unassociated_alpha(tmp_path):
    """A TIFF's fourth sample is kept as alpha when it is marked unassociated alpha (what PNG's alpha is and what
    magmasr writes); padding (an unspecified extra sample) and premultiplied alpha are dropped, as before."""
    import tifffile

    from magmasr.sr import image_info, read_image

    rgba = np.random.default_rng().integers(0, 256, (9, 10, 4), dtype=np.uint8)
    for kind, kept in (("unassalpha", True), ("assocalpha", False), ("unspecified", False)):
        path = tmp_path / f"{kind}.tif"
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=[kind])
        want = rgba if kept else rgba[:, :, :3]
        np.testing.assert_array_equal(read_image(path, keep_alpha=True), want)
        assert image_info(path, keep_alpha=True)[2] == want.shape[2], kind
        assert run("upscale", path, "--scale", "2", "--model", "bicubic", "--device", "cpu") == 0
        assert iio.imread(tmp_path / f"{kind}_x2.png").shape == (18, 20, want.shape[2]), kind


def test_a_gif_is_read_but_not_written(tmp_path, capsys):
    """A still GIF (a palette, maybe a transparent entry) is read as RGB or RGBA and written as a PNG (a GIF's 256
    colours would undo the upscale), also from a folder; an animated GIF is refused; -o x.gif is an error."""
    from PIL import Image

    rng = np.random.default_rng()
    idx = np.repeat(np.repeat(rng.integers(0, 4, (6, 8), dtype=np.uint8), 3, axis=0), 3, axis=1)
    p = Image.fromarray(idx, "P")
    p.putpalette([0, 0, 0, 250, 20, 30, 20, 240, 60, 40, 50, 230])
    pics = tmp_path / "pics"
    pics.mkdir()
    p.save(pics / "logo.gif", transparency=0)
    quick = ["--scale", "2", "--device", "cpu"]
    assert run("upscale", pics / "logo.gif", *quick) == 0
    out = iio.imread(pics / "logo_x2.png")
    assert out.shape == (36, 48, 4)
    rgba = np.asarray(Image.open(pics / "logo.gif").convert("RGBA"))
    iio.imwrite(tmp_path / "same.png", rgba)
    assert run("upscale", tmp_path / "same.png", "-o", tmp_path / "same_x2.png", *quick) == 0
    np.testing.assert_array_equal(out, iio.imread(tmp_path / "same_x2.png"))
    (pics / "logo_x2.png").unlink()
    assert run("upscale", pics, "-o", tmp_path / "up", *quick) == 0
    assert (tmp_path / "up" / "logo.png").exists()
    capsys.readouterr()
    assert run("upscale", pics / "logo.gif", "-o", tmp_path / "x.gif", *quick) == 2
    assert "unsupported output format" in capsys.readouterr().err
    frames = [Image.fromarray(rng.integers(0, 4, (6, 8), dtype=np.uint8), "P") for _ in range(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert run("upscale", tmp_path / "anim.gif", *quick) == 2
    assert "an animation of 2 frames" in capsys.readouterr().err


def test_png_compression_level(tmp_path, capsys):
    """--png-compression sets zlib's level of PNG outputs (default 4): the same pixels at every level (bicubic's
    own, here), 0 stores the rows uncompressed (larger than the raw pixels, by the row filters and chunk headers,
    by less than 1%), 9 is no larger than the default; outside 0..9 it is a usage error."""
    yy, xx = np.mgrid[:60, :64]
    rgb = np.stack([128 + 90 * np.sin(xx / 3.0), 128 + 90 * np.cos(yy / 2.0), (xx * yy) % 256], axis=2)
    src = tmp_path / "p.png"
    iio.imwrite(src, rgb.astype(np.uint8))
    quick = ["--scale", "2", "--device", "cpu", "--model", "bicubic"]
    want = im.imresize(rgb.astype(np.uint8), 2)
    sizes = {}
    for level in (None, "0", "9"):
        dst = tmp_path / f"l{level}.png"
        assert run("upscale", src, "-o", dst, *quick, *(["--png-compression", level] if level else [])) == 0
        np.testing.assert_array_equal(iio.imread(dst), want)
        sizes[level] = dst.stat().st_size
    assert want.nbytes < sizes["0"] < 1.01 * want.nbytes
    assert sizes["9"] <= sizes[None] < sizes["0"]
    for bad in ("-1", "10", "fast"):
        with pytest.raises(SystemExit) as e:
            run("upscale", src, "--png-compression", bad, *quick)
        assert e.value.code == 2 and "0..9" in capsys.readouterr().err


def test_quality_of_jpeg_and_webp_outputs(tmp_path, capsys):
    """--quality sets the JPEG and WebP encoders' quality (default 95): a JPEG at 50 has Pillow's quantization
    tables for 50 and is smaller; outside 1..100 it is a usage error."""
    from PIL import Image

    yy, xx = np.mgrid[:40, :48]
    rgb = np.stack([128 + 90 * np.sin(xx / 3.0), 128 + 90 * np.cos(yy / 2.0), (xx * yy) % 256], axis=2)
    iio.imwrite(tmp_path / "p.png", rgb.astype(np.uint8))
    quick = ["--scale", "2", "--device", "cpu", "--model", "bicubic"]
    sizes = {}
    for q in (None, 50):
        dst = tmp_path / f"q{q}.jpg"
        assert run("upscale", tmp_path / "p.png", "-o", dst, *quick, *(["--quality", str(q)] if q else [])) == 0
        ref = tmp_path / f"ref{q}.jpg"
        Image.open(dst).save(ref, quality=q or 95, subsampling=0)
        with Image.open(dst) as got, Image.open(ref) as want:
            assert got.quantization == want.quantization
        sizes[q] = dst.stat().st_size
    assert sizes[50] < sizes[None]
    assert run("upscale", tmp_path / "p.png", "-o", tmp_path / "w50.webp", "--quality", "50", *quick) == 0
    assert run("upscale", tmp_path / "p.png", "-o", tmp_path / "w95.webp", *quick) == 0
    assert (tmp_path / "w50.webp").stat().st_size < (tmp_path / "w95.webp").stat().st_size
    for bad in ("0", "101", "high"):
        with pytest.raises(SystemExit) as e:
            run("upscale", tmp_path / "p.png", "--quality", bad, *quick)
        assert e.value.code == 2 and "1..100" in capsys.readouterr().err
