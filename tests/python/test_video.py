"""3DSRnet: the imported official weights under the authors' protocol, the sliding window, training clips."""
from __future__ import annotations

import numpy as np
import pytest

from magmasr import image as im
from magmasr import train
from magmasr.sr import ImageSR
from magmasr.video import ClipDataset, VideoSR, evaluate_video, windows


def test_windows_repeat_the_edge_frames():
    assert list(windows(3)) == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]
    assert list(windows(7))[3] == [1, 2, 3, 4, 5]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("sequence", ["calendar", "city"])
def test_official_3dsrnet_x4_beats_bicubic_and_srcnn(shared_dir, sequence):
    """Every 4th centre frame of the sequence, whole frames, under the authors' test.m protocol: 3DSRnet must
    beat single-frame SRCNN 9-5-5 (the authors' x4 weights), which must beat bicubic."""
    model = VideoSR.from_3dsrnet_mat(shared_dir / "weights" / "3dsrnet_official" / "x4.mat", 4)
    srcnn = ImageSR.from_srcnn_mat(shared_dir / "weights" / "srcnn_official" / "9-5-5_imagenet" / "x4.mat", 4)
    r = evaluate_video(model, shared_dir / "data" / "Vid4_Y" / sequence, srcnn=srcnn, frames=slice(0, None, 4))
    assert r.frames >= 8
    assert r.psnr > r.psnr_srcnn + 0.3 > r.psnr_bicubic + 0.3, r
    # Bicubic under this protocol is independent of the network: the whole-sequence reference figures of
    # ../shared/data/README.md (20.39 / 25.17 dB) hold to within 0.3 dB on every 4th frame.
    assert abs(r.psnr_bicubic - {"calendar": 20.39, "city": 25.17}[sequence]) < 0.3


@pytest.mark.data
@pytest.mark.parametrize("sequence", ["calendar", "city"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_under_the_protocol_gives_the_reference_figures(shared_dir, scale, sequence):
    """Whole sequences: the bicubic column of the authors' test.m protocol does not depend on the network (a
    tiny untrained one here), and must be the figures of an independent implementation of that protocol
    (../shared/data/README.md, two decimals) to within 0.02 dB: calendar comes 0.01 dB under them at x3 and x4
    (20.378 for 20.39 at x4), the other four agree to the two decimals."""
    reference = {(4, "calendar"): 20.39, (4, "city"): 25.17, (3, "calendar"): 21.64, (3, "city"): 26.24,
                 (2, "calendar"): 23.72, (2, "city"): 29.45}[scale, sequence]
    model = VideoSR.tdsrnet(scale, filters=2, seed=0)
    r = evaluate_video(model, shared_dir / "data" / "Vid4_Y" / sequence)
    assert r.frames == {"calendar": 37, "city": 30}[sequence]
    assert abs(r.psnr_bicubic - reference) < 0.02, r.psnr_bicubic


def test_upscale_frames_sliding_window_shapes():
    model = VideoSR.tdsrnet(2, filters=4)
    lr = [np.random.default_rng(i).random((6, 7)) for i in range(3)]
    out = list(model.upscale_frames(lr))
    assert len(out) == 3 and all(o.shape == (12, 14) for o in out)
    with pytest.raises(ValueError, match="no frames"):
        list(model.upscale_frames([]))


def _responsive(build, rng, window):
    """A random draw ``build(seed)`` whose residual depends on its input, and its residual on ``window``. A small
    random network can have every ReLU off (about 1 draw in 300 with 6 filters, 1 in 20 with 4): it then ignores
    its frames, and a test comparing outputs of different inputs, paddings or tilings would prove nothing."""
    for _ in range(50):
        m = build(int(rng.integers(1 << 30)))
        r = m.residual(window)
        if not np.allclose(r, m.residual(rng.random(window.shape)), atol=1e-6):
            return m, r
    pytest.fail("50 random networks in a row ignore their input")


def test_posters_3dsrnet_pads_whole_frames_by_its_border():
    """The poster's network takes 2 LR pixels off each side (conv4 and conv5 unpadded): on whole frames the
    window is padded by 2, replicating its edges, so the residual has the frame's size x scale; further than
    its receptive field (6 LR pixels: six 3x3 layers) from the edges it equals the network on the unpadded
    frames, since neither the padding nor the zero padding of its 'same' layers reaches there."""
    rng = np.random.default_rng()
    scale = int(rng.integers(2, 5))
    h, w = (int(v) for v in rng.integers(15, 22, 2))
    win = rng.random((5, h, w))
    m, r = _responsive(lambda seed: VideoSR.tdsrnet_poster(scale, filters=6, seed=seed), rng, win)
    assert m.border == 2 and VideoSR.tdsrnet(scale, filters=4).border == 0
    assert r.shape == (scale * h, scale * w)
    from magmasr._core import from_numpy

    inner = m.net(from_numpy(win.astype(np.float32)[None, None])).numpy()[0, 0]
    assert inner.shape == (scale * (h - 4), scale * (w - 4))
    # LR pixel i of the frame is pixel i - 2 of the unpadded output; i in 6 .. h - 7 is out of reach of both.
    s = scale
    np.testing.assert_allclose(r[6 * s:-6 * s, 6 * s:-6 * s], inner[4 * s:-4 * s, 4 * s:-4 * s], rtol=1e-5, atol=1e-6)
    # at the edges the padding does matter: zeros instead of the edge pixels give another border
    zeros = np.pad(win, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    assert not np.allclose(r, m.net(from_numpy(zeros[None, None])).numpy()[0, 0], atol=1e-6)
    # the padding is the edge frames' own pixels: a window padded by hand gives the same border
    padded = np.pad(win, ((0, 0), (2, 2), (2, 2)), mode="edge").astype(np.float32)
    np.testing.assert_allclose(r, m.net(from_numpy(padded[None, None])).numpy()[0, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="a window is \\[5, h, w\\]"):
        m.residual(win[:4])


def test_video_models_refuse_other_networks():
    from magmasr import models

    with pytest.raises(ValueError, match="a video model is a 3DSRnet"):
        VideoSR(models.srcnn(), 3, models.Architecture("srcnn", {}))
    arch = models.Architecture("tdsrnet_poster", {"head": "single"})
    with pytest.raises(ValueError, match="sub-pixel head"):
        VideoSR(arch.build(), 2, arch)
    arch = models.Architecture("tdsrnet", {"scale": 4})
    with pytest.raises(ValueError, match="upscales x4, the model says x2"):
        VideoSR(arch.build(), 2, arch)


def test_clips_from_sequences_follow_the_protocol():
    rng = np.random.default_rng(0)
    seq = [rng.integers(16, 236, (40, 48), dtype=np.uint8) for _ in range(6)]
    ds = ClipDataset.from_sequences([seq], 2, patch=8, stride=8)
    # 2 clips in time (frames 0-4, 1-5) x 2 x 3 patches of 16x16 HR.
    assert ds.x.shape == (12, 1, 5, 8, 8) and ds.y.shape == (12, 1, 16, 16)
    hr = [im.to_float(f[:16, :16]) for f in seq[:5]]
    lr = [im.imresize(h, 0.5) for h in hr]
    np.testing.assert_allclose(ds.x[0, 0], np.stack(lr), atol=1e-6)
    np.testing.assert_allclose(ds.y[0, 0], hr[2] - im.imresize(lr[2], 2), atol=1e-6)


def test_synthetic_clips_move_and_train(tmp_path):
    from skimage import data as skdata

    ds = ClipDataset.synthetic([skdata.camera()], 2, clips_per_image=6, patch=12, max_shift=2.0, seed=1)
    assert ds.x.shape == (6, 1, 5, 12, 12)
    # The camera moves: consecutive frames differ, and differ more the further apart they are.
    d1 = np.abs(ds.x[:, :, 2] - ds.x[:, :, 3]).mean()
    d2 = np.abs(ds.x[:, :, 0] - ds.x[:, :, 4]).mean()
    assert 0 < d1 < d2
    # 3DSRnet learns the residual on them (a few Adam steps lower the training loss).
    model = VideoSR.tdsrnet(2, filters=8)
    res = train.fit(model.net, ds, steps=30, batch_size=6, lr=1e-3, device="cpu", progress=False, val=ds,
                    val_every=10)
    first, last = res.history[0]["val_psnr"], res.history[-1]["val_psnr"]
    assert last > first, res.history
    # fit trains the 3x3x3 layers by Winograd on the CPU: the direct sums' curve to float rounding.
    direct = train.fit(VideoSR.tdsrnet(2, filters=8).net, ds, steps=30, batch_size=6, lr=1e-3, device="cpu",
                       progress=False, val=ds, val_every=10, algo="auto")
    np.testing.assert_allclose([r["val_psnr"] for r in res.history], [r["val_psnr"] for r in direct.history],
                               rtol=0, atol=1e-3)
    assert [r["val_psnr"] for r in res.history] != [r["val_psnr"] for r in direct.history]


def test_streaming_equals_the_whole_sequence_and_holds_only_the_window():
    rng = np.random.default_rng(2)
    model = VideoSR.tdsrnet(2, filters=4, seed=3)
    rgb = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(7)]
    read = []

    def source():
        for i, f in enumerate(rgb):
            read.append(i)
            yield f

    out = []
    for k, frame in enumerate(model.upscale_stream(source())):
        # frame k leaves as soon as frame k + 2 is read (or the stream has ended)
        assert read[-1] == min(k + 2, len(rgb) - 1)
        out.append(frame)
    assert len(out) == 7 and out[0].shape == (20, 24, 3) and out[0].dtype == np.uint8
    # Y of the streamed frames = the sliding-window result on the whole sequence (then rounded).
    ycc = [im.rgb2ycbcr(im.to_float(f)) for f in rgb]
    ref = list(model.upscale_frames([c[:, :, 0] for c in ycc]))
    for k in range(7):
        up = im.imresize(ycc[k], 2)
        up[:, :, 0] = ref[k]
        expect = im.to_uint8(np.clip(im.ycbcr2rgb(np.clip(up, 0, 1)), 0, 1))
        np.testing.assert_array_equal(out[k], expect)


def test_streaming_gray_frames_is_the_network_on_them_and_one_kind_per_stream():
    """A gray frame is its own Y: the streamed result is the sliding-window result on the frames as they are
    (then rounded), gray out; frames of another size or kind, or not 8-bit, are refused by number."""
    rng = np.random.default_rng()
    model = VideoSR.tdsrnet_poster(2, filters=4, seed=int(rng.integers(1 << 30)))
    gray = [rng.integers(0, 256, (9, 11), dtype=np.uint8) for _ in range(6)]
    out = list(model.upscale_stream(iter(gray)))
    ref = list(model.upscale_frames([im.to_float(g) for g in gray]))
    assert len(out) == 6 and out[0].shape == (18, 22) and out[0].dtype == np.uint8
    for k in range(6):
        np.testing.assert_array_equal(out[k], im.to_uint8(np.clip(ref[k], 0, 1)))
    for bad, message in (([gray[0], gray[1][:, :10]], "frame 1 is"),
                         ([gray[0], np.stack([gray[1]] * 3, axis=2)], "frame 1 is"),
                         ([gray[0].astype(np.uint16)], "frame 0: expected uint8")):
        with pytest.raises(ValueError, match=message):
            list(model.upscale_stream(iter(bad)))


@pytest.mark.parametrize("variant", ["published", "poster"])
def test_tiled_residual_is_identical_to_the_whole_window(variant):
    """Tiles of LR pixels with a halo of the receptive radius (6 for both: six 3x3 layers in space, the poster's
    edge padding included) give the whole window's residual exactly, at the frame's edges too; a halo one
    pixel short does not (so the test can tell)."""
    from magmasr.sr import tiled

    rng = np.random.default_rng()
    build = VideoSR.tdsrnet if variant == "published" else VideoSR.tdsrnet_poster
    window = rng.random((5, 19, 26))
    for _ in range(20):  # a small random network may not use the outermost pixels of its receptive field
        model, whole = _responsive(lambda seed: build(2, filters=4, seed=seed), rng, window)
        assert model.receptive_radius == 6
        short = tiled(lambda b: model.residual(b), window.astype(np.float32), 8, model.receptive_radius - 1, 2)
        if np.abs(short - whole).max() > 1e-6:
            break
    else:
        pytest.fail("for 20 random networks in a row, a halo one pixel short made no difference")
    for tile in (5, 8, 13, 26):
        np.testing.assert_array_equal(model.residual(window, tile=tile), whole)
    gray = [rng.integers(0, 256, (19, 26), dtype=np.uint8) for _ in range(3)]
    for a, b in zip(model.upscale_stream(iter(gray), tile=7), model.upscale_stream(iter(gray))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["published", "poster"])
def test_winograd_video_is_close_to_the_direct_sums_and_tiles_stay_exact(variant):
    """On the CPU the main job (upscale_stream) runs the 3x3x3 layers of 8+ channels by Winograd's F(6x6, 3x3)
    per depth tap: within a few 1e-5 of the direct sums (one grey level at most after rounding), and tiles of
    any size give the whole window's bits (cut on the grid of 6 LR pixels, with 5 more halo per such layer: four
    in both variants, conv2-5; the first layer has one input channel, the heads fewer than 8 outputs). The other
    entry points keep the direct sums unless asked."""
    rng = np.random.default_rng()
    build = VideoSR.tdsrnet if variant == "published" else VideoSR.tdsrnet_poster
    model = build(2, filters=8, seed=int(rng.integers(1 << 30)))
    assert model._tile_grid("winograd") == (6, 4 * 5) and model._tile_grid("direct") == (1, 0)
    window = rng.random((5, 23, 37))
    direct, wino = model.residual(window), model.residual(window, algo="winograd")
    assert not np.array_equal(direct, wino)  # Winograd did run
    assert np.abs(wino - direct).max() < 1e-4 * max(1.0, np.abs(direct).max())
    for tile in (5, 12, int(rng.integers(6, 30))):
        np.testing.assert_array_equal(model.residual(window, tile=tile, algo="winograd"), wino, err_msg=f"tile {tile}")
    gray = [rng.integers(0, 256, (23, 37), dtype=np.uint8) for _ in range(4)]
    stream = list(model.upscale_stream(iter(gray)))
    for a, b in zip(stream, model.upscale_stream(iter(gray), algo="winograd")):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(stream, model.upscale_stream(iter(gray), tile=9)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(stream, model.upscale_stream(iter(gray), algo="direct")):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    ref = [im.to_uint8(np.clip(f, 0.0, 1.0)) for f in model.upscale_frames([im.to_float(g) for g in gray])]
    for a, b in zip(model.upscale_stream(iter(gray), algo="direct"), ref):
        np.testing.assert_array_equal(a, b)


def test_clip_dataset_split_is_a_disjoint_cover():
    rng = np.random.default_rng()
    n = int(rng.integers(20, 60))
    ds = ClipDataset(rng.random((n, 1, 5, 4, 4), dtype=np.float32), rng.random((n, 1, 8, 8), dtype=np.float32), 2)
    tr, va = ds.split(0.1, seed=int(rng.integers(1 << 30)))
    assert isinstance(tr, ClipDataset) and tr.scale == 2 and len(va) == max(1, round(0.1 * n))
    assert len(tr) + len(va) == n
    # Every clip lands on one side with its own target (the first pixel identifies a clip: random floats).
    keys = sorted(float(x[0, 0, 0, 0]) for x in np.concatenate([tr.x, va.x]))
    assert keys == sorted(float(x[0, 0, 0, 0]) for x in ds.x)
    for part in (tr, va):
        for x, y in zip(part.x, part.y):
            i = int(np.flatnonzero(ds.x[:, 0, 0, 0, 0] == x[0, 0, 0, 0])[0])
            np.testing.assert_array_equal(y, ds.y[i])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        ds.split(1.0)


def test_3dsrnet_self_ensemble_turns_every_frame_of_the_window_alike():
    """With `ensemble`, the residual is the mean over the 8 rotations and flips of the whole window (every
    frame turned alike), each output turned back; tiles give the same residual."""
    rng = np.random.default_rng()
    model = VideoSR.tdsrnet(2, filters=4, seed=int(rng.integers(1 << 30)))
    window = rng.random((5, 11, 14))
    turns = [(lambda w: w, lambda r: r), (lambda w: w[:, :, ::-1], lambda r: r[:, ::-1]),
             (lambda w: w[:, ::-1, :], lambda r: r[::-1, :]), (lambda w: w[:, ::-1, ::-1], lambda r: r[::-1, ::-1]),
             (lambda w: w.transpose(0, 2, 1), lambda r: r.T),
             (lambda w: w[:, :, ::-1].transpose(0, 2, 1), lambda r: r.T[:, ::-1]),
             (lambda w: w[:, ::-1, :].transpose(0, 2, 1), lambda r: r.T[::-1, :]),
             (lambda w: w[:, ::-1, ::-1].transpose(0, 2, 1), lambda r: r.T[::-1, ::-1])]
    expected = np.mean([inv(model.residual(np.ascontiguousarray(fwd(window)))) for fwd, inv in turns], axis=0)
    model.ensemble = True
    got = model.residual(window)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.residual(window, tile=4), got)


def test_read_frames_maps_deep_frames_and_names_a_frame_of_another_size(tmp_path):
    import imageio.v3 as iio

    from magmasr.video import read_frames

    u8 = np.random.default_rng(13).integers(0, 256, (12, 14), dtype=np.uint8)
    iio.imwrite(tmp_path / "001.png", u8)
    iio.imwrite(tmp_path / "002.png", u8.astype(np.uint16) * 257)  # 16-bit: by 65535, as upscale and eval
    frames = read_frames(tmp_path)
    assert frames[0].dtype == np.uint8
    np.testing.assert_allclose(frames[1], u8 / 255.0, atol=1e-12)
    iio.imwrite(tmp_path / "003.png", u8[:, :10])
    with pytest.raises(ValueError, match=r"003.png: 10x12 pixels, but the first frame 001.png is 14x12"):
        read_frames(tmp_path)


def test_frame_folders_mixing_gray_and_rgb_are_refused_naming_the_frame(tmp_path):
    import imageio.v3 as iio

    from magmasr.video import read_frames

    rng = np.random.default_rng(8)
    for t in range(6):
        rgb = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        iio.imwrite(tmp_path / f"{t:03d}.png", rgb[:, :, 0] if t == 3 else rgb)
    with pytest.raises(ValueError, match="003.png: a gray frame, but the first frame 000.png is RGB"):
        read_frames(tmp_path)
    with pytest.raises(ValueError, match="003.png: a gray frame"):
        ClipDataset.from_folders([tmp_path], 2, patch=8)


def test_clips_name_the_sequences_too_short_or_of_mixed_sizes(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(9)
    short = tmp_path / "short"
    short.mkdir()
    for t in range(4):
        iio.imwrite(short / f"{t:03d}.png", rng.integers(0, 256, (40, 48), dtype=np.uint8))
    with pytest.raises(ValueError, match=rf"fits in the sequences \({short}: 4 frames of 48x40\): a clip needs at "
                                         r"least 5 frames of at least 32x32 pixels"):
        ClipDataset.from_folders([short], 2, patch=16)
    frames = [rng.random((40, 40)) for _ in range(4)] + [rng.random((20, 20))]
    with pytest.raises(ValueError, match="sequence 0, frame 4 is 20x20 pixels, frame 0 is 40x40"):
        ClipDataset.from_sequences([frames], 2, patch=8)
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        ClipDataset.from_sequences([frames[:4]], 2, patch=8, stride=0)
